"""What the op registry knows about a fused op (``OpSpec``) and one benchmarked variant of it (``BenchVariant``).

Each op's folder holds its ``spec.py`` with one ``SPEC``; ``trgnet_fast/ops/registry.py`` lists them. Everything
that iterates over ops reads the spec: ``trgnet parity`` and ``trgnet info``, the benchmarks and the kernel report,
the CUDA-emulation harness and the parametrised tests. This module sits below every op (it imports none).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

BENCH_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def randn(shape, dtype, device, generator) -> torch.Tensor:
    """Standard-normal values drawn in float32 on the generator's device, then moved: a CPU generator gives
    every device and dtype the same values."""
    values = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return values.to(device=device, dtype=dtype)


@dataclass(frozen=True)
class BenchVariant:
    """One benchmarked form of an op (an op may have several, e.g. ``linear_attention.masked``).

    name       benchmark key: the op name, or ``<op>.<variant>``
    sizes      (N, T) -> the size dict the op's ``make_inputs`` takes (also the kernel report's shapes)
    flops      size -> {"fwd": FLOP, "bwd": FLOP}, or None when unknown
    min_bytes  (size, itemsize) -> {"fwd": bytes, "bwd": bytes}: each input read once, each output written
               once (None: unknown)
    triton_kernels  the Triton kernels this variant's forward + backward launch, in launch order, where they are
               not the op's (``OpSpec.triton_kernels``; None: the op's)
    """
    name: str
    sizes: Callable[[int, int], dict]
    flops: Callable[[dict], dict] | None = None
    min_bytes: Callable[[dict, int], dict] | None = None
    note: str = ""
    dtypes: tuple = field(default=BENCH_DTYPES)
    triton_kernels: tuple[str, ...] | None = None


@dataclass(frozen=True)
class OpSpec:
    """A fused op as the registry describes it.

    name               the op: ``trgnet::<name>`` (native), ``trgnet_triton::<name>`` (Triton), the folder
                       ``trgnet_fast/ops/<name>/``, the sources ``csrc/<name>*.cpp`` and ``kernels/<name>*``
    backends           fused backends implementing it (the plain-PyTorch ``torch`` always does)
    reference          reference(**inputs) -> Tensor, the op's ``reference.py``
    fused              fused(**inputs, backend=name) -> Tensor, the public function
    make_inputs        (size dict, dtype, device, generator) -> dict of keyword inputs
    grad_inputs        the inputs that take gradients, in the op's argument order
    parity_sizes       device type ("cpu" | "cuda") -> size dicts of ``trgnet parity`` and the tests
    grad_error_floor   (inputs, grad_out) -> denominator floors of gradient errors (a float, or {input: floor});
                       None: plain relative errors
    triton_module      the module whose import registers ``torch.ops.trgnet_triton.<name>`` (and ``_backward``)
    triton_kernels     the Triton kernels one forward + backward launches, in launch order (first launch each)
    bench              benchmarked variants (sizes, FLOP and byte models)
    emulation_min_cases  fewest PASS lines the op's CPU emulation driver (tests/kernels/emulation) must print
    state_inputs       floating inputs the op takes in its compute dtype (float32 for 16-bit inputs, float64 for
                       float64): ``trgnet parity`` gives them to every run in that dtype instead of the run's dtype
    """
    name: str
    backends: tuple[str, ...]
    reference: Callable
    fused: Callable
    make_inputs: Callable
    grad_inputs: tuple[str, ...]
    parity_sizes: dict[str, list[dict]]
    triton_module: str
    triton_kernels: tuple[str, ...]
    bench: tuple[BenchVariant, ...]
    emulation_min_cases: int
    grad_error_floor: Callable | None = None
    state_inputs: tuple[str, ...] = ()

    def grad_names(self, inputs: dict) -> list[str]:
        """The ``grad_inputs`` that ``inputs`` holds (an optional tensor input may be None: att_module's values
        in encoder mode)."""
        return [name for name in self.grad_inputs if inputs.get(name) is not None]

    @property
    def implemented(self) -> tuple[str, ...]:
        """Every backend that runs the op: ``torch`` and the fused ones."""
        return ("torch", *self.backends)
