"""Parity of every available backend of every fused op against the float64 reference.

`trgnet parity` prints the table; the tests call :func:`run_parity` and assert on its rows.
Tolerances (docs/architecture.md#parity): ‖out − ref‖ / ‖ref‖ ≤ 1e-5 in float32 (1e-12 in float64); in
bf16/fp16 at most twice the error of the same-dtype PyTorch reference on the same inputs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from trgnet_fast.backend import backend_status
from trgnet_fast.ops.registry import OPS
from trgnet_fast.ops.spec import OpSpec

ABS_TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}
LOW_PRECISION = (torch.bfloat16, torch.float16)
DEFAULT_DTYPES = {"cpu": (torch.float32, torch.float64),
                  "cuda": (torch.float32, torch.bfloat16, torch.float16)}


@dataclass(frozen=True)
class ParityRow:
    op: str
    backend: str
    device: str
    dtype: str
    size: str
    quantity: str  # "out" or "grad_<input>"
    rel_err: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.rel_err <= self.tolerance  # False for NaN


def relative_error(out: torch.Tensor, ref: torch.Tensor, floor: float = 0.0) -> float:
    """‖out − ref‖ / max(‖ref‖, floor) in float64 (inf when out has a different shape)."""
    if out.shape != ref.shape:
        return float("inf")
    ref = ref.double()
    return ((out.double() - ref).norm() / ref.norm().clamp_min(max(floor, 1e-300))).item()


def _forward(fn, inputs, grad_names):
    """Run fn on fresh leaf copies of ``inputs``; return (out, leaves that take gradients)."""
    leaves = {name: (value.detach().clone().requires_grad_(True) if name in grad_names else value)
              for name, value in inputs.items()}
    return fn(**leaves), [leaves[n] for n in grad_names]


def _forward_backward(fn, inputs, grad_names, grad_out):
    """(out, {name: gradient of <out, grad_out>}) for fn on fresh copies of ``inputs``."""
    out, leaves = _forward(fn, inputs, grad_names)
    grads = torch.autograd.grad(out, leaves, grad_out.to(out.dtype))
    return out, dict(zip(grad_names, grads))


def _as_dtype(inputs, dtype, state_inputs=()):
    """The floating inputs in ``dtype``; the op's ``state_inputs`` in its compute dtype (float32 for 16 bits)."""
    state = torch.float64 if dtype == torch.float64 else torch.float32
    return {k: (v.to(state if k in state_inputs else dtype) if isinstance(v, torch.Tensor) and v.is_floating_point()
                else v)
            for k, v in inputs.items()}


def _size_label(size: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in size.items() if v is not False)


def parity_rows_for(spec: OpSpec, backend: str, size: dict, dtype: torch.dtype,
                    device: torch.device, generator: torch.Generator) -> list[ParityRow]:
    """Rows for one (op, backend, size, dtype): the output and each input gradient."""
    inputs64 = spec.make_inputs(size, torch.float64, device, generator)
    inputs = _as_dtype(inputs64, dtype, spec.state_inputs)
    grad_names = spec.grad_names(inputs64)
    ref_out, ref_leaves = _forward(spec.reference, inputs64, grad_names)
    grad_out = torch.randn(ref_out.shape, generator=generator).to(device=device, dtype=torch.float64)
    ref_grads = dict(zip(grad_names, torch.autograd.grad(ref_out, ref_leaves, grad_out)))

    def fused(**kw):
        return spec.fused(**kw, backend=backend)

    out, grads = _forward_backward(fused, inputs, grad_names, grad_out)
    measured = {"out": (out, ref_out)}
    measured.update({f"grad_{n}": (grads[n], ref_grads[n]) for n in grad_names})

    floors = spec.grad_error_floor(inputs64, grad_out) if spec.grad_error_floor else {}
    if not isinstance(floors, dict):  # one floor for every gradient
        floors = dict.fromkeys(spec.grad_inputs, floors)
    floor = {"out": 0.0, **{f"grad_{n}": floors.get(n, 0.0) for n in grad_names}}
    if dtype in LOW_PRECISION:
        low_out, low_grads = _forward_backward(spec.reference, inputs, grad_names, grad_out)
        baseline = {"out": low_out, **{f"grad_{n}": low_grads[n] for n in grad_names}}
        tolerance = {q: 2.0 * relative_error(baseline[q], ref, floor[q])
                     for q, (_, ref) in measured.items()}
    else:
        tolerance = {q: ABS_TOLERANCE[dtype] for q in measured}

    return [ParityRow(spec.name, backend, device.type, str(dtype).replace("torch.", ""),
                      _size_label(size), q, relative_error(got, ref, floor[q]), tolerance[q])
            for q, (got, ref) in measured.items()]


def run_parity(device="cpu", ops=None, backends=None, dtypes=None, sizes=None, seed=None,
               progress=None, size_set: str | None = None) -> list[ParityRow]:
    """Check every requested (op, usable backend, dtype, size) against the float64 reference.

    device: where everything runs; ops/backends/dtypes: filters (None = all available);
    sizes: override the op's own parity sizes (list of size dicts); size_set: which of the op's
    parity size lists to use ("cpu": the small odd shapes, "cuda": paper-size; default: the
    device's); seed: None draws a fresh one.
    The torch backend is checked in float32/float64 only: in bf16/fp16 it is the yardstick.
    """
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but no CUDA device is available")
    generator = torch.Generator().manual_seed(
        seed if seed is not None else int(time.time_ns() % (2**31)))
    dtypes = tuple(dtypes) if dtypes else DEFAULT_DTYPES[device.type]
    status = backend_status(device)
    rows: list[ParityRow] = []
    for name, spec in OPS.items():
        if ops and name not in ops:
            continue
        usable = [b for b in sorted(spec.implemented) if status[b][0]
                  and (backends is None or b in backends)]
        for size in sizes or spec.parity_sizes[size_set or device.type]:
            for dtype in dtypes:
                for backend in usable:
                    if backend == "torch" and dtype in LOW_PRECISION:
                        continue
                    if progress:
                        progress(f"{name} {backend} {dtype} {_size_label(size)}")
                    rows.extend(parity_rows_for(spec, backend, size, dtype, device, generator))
    return rows


def format_table(rows: list[ParityRow]) -> str:
    head = ("op", "backend", "device", "dtype", "size", "quantity", "rel_err", "tol", "ok")
    body = [(r.op, r.backend, r.device, r.dtype, r.size, r.quantity, f"{r.rel_err:.2e}",
             f"{r.tolerance:.1e}", "PASS" if r.ok else "FAIL") for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])
