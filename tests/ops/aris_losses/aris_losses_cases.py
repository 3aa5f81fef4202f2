"""The drivers of the fused ARIS tests (``tests/ops/aris_losses/``): ``op_cases.OpCases`` of the registry entry
(``trgnet_fast/ops/aris_losses/spec.py``) and the parity check of its (2,) terms and both gradients."""
from __future__ import annotations

import torch

from op_cases import OpCases
from op_checks import rel_err
from trgnet_fast.ops.aris_losses.reference import compute_dtype
from trgnet_fast.ops.aris_losses.spec import SPEC, size
from trgnet_fast.ops.aris_losses.autograd import SAVED_INPUTS
from trgnet_fast.ops.aris_losses.validation import HEAD_NAMES, TENSOR_NAMES

# the raw forward's arguments in schema order (the package docstring of trgnet_fast/ops/aris_losses): 13 tensors,
# then the optional feature head's weight and bias
RAW_ARGS = TENSOR_NAMES + HEAD_NAMES
HEAD_WEIGHT = RAW_ARGS.index("head_weight")

# the slot counts, embeddings, logit_scale, targets and the head stay in the compute dtype (float32 for 16-bit
# features)
CASES = OpCases(SPEC, RAW_ARGS, state_inputs=SPEC.state_inputs)
case_inputs, run, reference_run = CASES.case_inputs, CASES.run, CASES.reference_run
fused = CASES.fused


def raw_args(inputs: dict) -> list:
    """``inputs`` in the raw forward's schema order, None for an absent head."""
    return [inputs.get(name) for name in RAW_ARGS]


def backward_args(args: list, outputs) -> list:
    """The raw backward's tensor arguments after grad_terms (before features_dtype), from the raw forward's
    arguments ``args`` and its outputs (terms, segment_features, row_lse, max_distance, segment_means)."""
    return [*(args[i] for i in SAVED_INPUTS), *outputs[1:4], args[HEAD_WEIGHT], outputs[4]]


def check_result(out, grads, ref_out, ref_grads, dtype, floors) -> dict:
    """The dtypes, shapes and finiteness of a run's terms and gradients; returns their errors against the
    reference's (relative to max(the reference's norm, the op's gradient floor))."""
    acc = compute_dtype(dtype)
    assert out.shape == (2,) and out.dtype == acc and torch.isfinite(out).all()
    errors = {"out": rel_err(out, ref_out)}
    for name, g in grads.items():
        assert torch.isfinite(g).all() and g.shape == ref_grads[name].shape, name
        assert g.dtype == (dtype if name == "features" else acc), name
        errors[name] = rel_err(g, ref_grads[name], floors.get(name, 0.0))
    return errors


def assert_close_to_reference(inputs: dict, backend: str, tol: float, dtype=None) -> dict:
    """``backend``'s terms and every gradient within ``OpCases.tolerances`` of the float64 reference (``tol``, or
    twice a plain float32 run's error). Returns the errors by name."""
    grad_terms = torch.randn(2, dtype=torch.float64)
    ref_out, ref_grads = reference_run(inputs, grad_terms)
    out, grads = run(fused(backend), inputs, grad_terms, dtype)
    floors = SPEC.grad_error_floor(inputs, grad_terms)
    errors = check_result(out, grads, ref_out, ref_grads, dtype or inputs["features"].dtype, floors)
    bounds = CASES.tolerances(inputs, grad_terms, ref_out, ref_grads, floors, tol, dtype or inputs["features"].dtype)
    worse = {name: (e, bounds[name]) for name, e in errors.items() if not e <= bounds[name]}
    assert not worse, ("(error, bound)", worse)
    return errors


__all__ = ["size", "case_inputs", "raw_args", "backward_args", "run", "reference_run", "fused",
           "assert_close_to_reference", "check_result", "RAW_ARGS"]
