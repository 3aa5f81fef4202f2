"""Inputs, runners and checks shared by the fused-AttModule tests (``tests/ops/att_module/``: reference, fused
backends, validation, property-based). Inputs come from the registry entry (``trgnet_fast/ops/att_module/spec.py``:
``make_inputs``, ``size``)."""
from __future__ import annotations

import torch

from op_checks import rel_err
from trgnet_fast.ops.att_module import att_module
from trgnet_fast.ops.att_module.reference import att_module_reference, gradient_error_floors
from trgnet_fast.ops.att_module.spec import SPEC, make_inputs, size
from trgnet_fast.ops.att_module.validation import WEIGHT_NAMES, state_dtype

# the raw ops' arguments in schema order (the package docstring of trgnet_fast/ops/att_module): the 18 tensors, then
# the 6 scalars (the backward takes grad_out first and the saved states between the two)
TENSOR_ARGS = ("x", "values", "mask", "cu_seqlens", *WEIGHT_NAMES, "alpha", "dropout_seed")
SCALAR_ARGS = ("dilation", "heads", "norm_eps", "attention_eps", "attention_dropout", "dropout")
RAW_ARGS = TENSOR_ARGS + SCALAR_ARGS

__all__ = ["size", "case_inputs", "raw_args", "run", "reference_run", "assert_close_to_reference"]


def case_inputs(s: dict, dtype=torch.float64, device="cpu", seed: int | None = None) -> dict:
    """Keyword inputs of ``att_module`` for size ``s`` (fresh random values unless ``seed`` is given)."""
    generator = torch.Generator()
    generator.manual_seed(seed) if seed is not None else generator.seed()
    return make_inputs(s, dtype, device, generator)


def raw_args(inputs: dict) -> list:
    """``inputs`` (every argument, as ``make_inputs`` gives them) in the raw ops' schema order."""
    return [inputs[name] for name in RAW_ARGS]


def run(fn, inputs: dict, grad_out: torch.Tensor | None = None, dtype: torch.dtype | None = None):
    """(out, {name: gradient}) of ``fn(**inputs)`` on fresh leaf copies (floating tensors cast to ``dtype`` when
    given; alpha to float64 for float64, else float32); gradients of <out, grad_out> (none without grad_out)."""
    leaves = {}
    for name, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and dtype is not None:
            target = state_dtype(dtype) if name == "alpha" else dtype
            value = value.to(target)
        if name in SPEC.grad_inputs and value is not None and grad_out is not None:
            value = value.detach().clone().requires_grad_(True)
        leaves[name] = value
    out = fn(**leaves)
    if grad_out is None:
        return out.detach(), {}
    names = SPEC.grad_names(inputs)
    if not out.requires_grad:  # every sequence empty: the reference's output is a constant 0
        return out.detach(), {n: torch.zeros_like(leaves[n]) for n in names}
    # a leaf no frame reaches (e.g. values when every sequence is empty) has a zero gradient
    grads = torch.autograd.grad(out, [leaves[n] for n in names], grad_out.to(out.dtype), allow_unused=True,
                                materialize_grads=True)
    return out.detach(), dict(zip(names, grads))


def reference_run(inputs: dict, grad_out: torch.Tensor | None = None, dtype=torch.float64):
    """The reference's (out, gradients), evaluated in ``dtype``."""
    return run(att_module_reference, inputs, grad_out, dtype)


def fused(backend: str):
    return lambda **kw: att_module(**kw, backend=backend)


# float64's unit roundoff over float32's: a quantity a float32 implementation computes with relative error E
# (cancellation included) a float64 one computes with about E * 2^-29
FP64_OVER_FP32 = 2.0 ** -29
ROUNDINGS = 5
def _rounded_differently(inputs: dict, seed: int) -> dict:
    """``inputs`` with every floating tensor but the 0/1 mask moved by a relative N(0, 2^-24) step: the same
    problem as float32 rounding would pose it had it rounded the other way."""
    generator = torch.Generator().manual_seed(seed)

    def nudge(t):
        noise = torch.randn(t.shape, generator=generator, dtype=torch.float64).to(t.device)
        return t * (1 + noise * 2.0 ** -24)

    return {name: nudge(v) if isinstance(v, torch.Tensor) and v.is_floating_point() and name != "mask" else v
            for name, v in inputs.items()}


def tolerances(inputs: dict, grad_out: torch.Tensor, ref_out, ref_grads, floors, tol: float, dtype) -> dict:
    """Per quantity: ``tol``, or 2x the error a plain PyTorch float32 run of the reference makes on it (for a
    float64 run: that error times ``FP64_OVER_FP32``), whichever is larger. That error is a random variable of
    the rounding (input rounding alone moves it by 2x and more in ill-conditioned cases: few frames, one channel),
    so it is the largest of ``ROUNDINGS`` float32 runs (the inputs as given and rounded other ways,
    ``_rounded_differently``). It loosens nothing on well-conditioned quantities; where the formula cancels (one
    frame: InstanceNorm's backward; few keys: dQ, dK; sums of products of both signs such as alpha's gradient)
    it measures how far a correct implementation can be from the float64 reference
    (docs/architecture.md#parity)."""
    runs = [reference_run(inputs if k == 0 else _rounded_differently(inputs, k), grad_out, torch.float32)
            for k in range(ROUNDINGS)]
    scale = FP64_OVER_FP32 if dtype == torch.float64 else 1.0
    bounds = {"out": max(tol, 2 * scale * max(rel_err(out, ref_out) for out, _ in runs))}
    for name, ref in ref_grads.items():
        low = max(rel_err(grads[name], ref, floors.get(name, 0.0)) for _, grads in runs)
        bounds[name] = max(tol, 2 * scale * low)
    return bounds


def assert_close_to_reference(inputs: dict, backend: str, tol: float, dtype=None):
    """``backend``'s output and every gradient (finite, in the inputs' dtype) within ``tolerances`` of the float64
    reference, relative to max(the reference's norm, ``gradient_error_floors`` of the op's reference.py). Returns the errors by name."""
    grad_out = torch.randn_like(inputs["x"], dtype=torch.float64)
    ref_out, ref_grads = reference_run(inputs, grad_out)
    out, grads = run(fused(backend), inputs, grad_out, dtype)
    dtype = dtype or inputs["x"].dtype
    assert out.dtype == dtype and torch.isfinite(out).all()
    floors = gradient_error_floors(inputs, grad_out)
    errors = {"out": rel_err(out, ref_out)}
    for name, g in grads.items():
        assert torch.isfinite(g).all(), name
        assert g.shape == ref_grads[name].shape, name
        errors[name] = rel_err(g, ref_grads[name], floors.get(name, 0.0))
    bounds = tolerances(inputs, grad_out, ref_out, ref_grads, floors, tol, dtype)
    worse = {name: (e, bounds[name]) for name, e in errors.items() if not e <= bounds[name]}
    assert not worse, ("(error, bound)", worse)
    return errors
