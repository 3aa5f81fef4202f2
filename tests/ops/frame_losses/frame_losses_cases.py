"""The drivers of the fused per-frame loss tests (``tests/ops/frame_losses/``): ``op_cases.OpCases`` of the registry
entry (``trgnet_fast/ops/frame_losses/spec.py``) with the parity check of its (3,) terms and both gradients."""
from __future__ import annotations

import torch

from op_cases import OpCases
from op_checks import rel_err
from trgnet_fast.ops.frame_losses.spec import SPEC, size
from trgnet_fast.ops.frame_losses.validation import TENSOR_NAMES

# the raw ops' arguments in schema order (the package docstring of trgnet_fast/ops/frame_losses): the 10 tensors,
# then the 2 scalars (the backward takes grad_terms first and time_lse before the scalars)
SCALAR_ARGS = ("threshold", "time_axis")
RAW_ARGS = TENSOR_NAMES + SCALAR_ARGS


class FrameLossesCases(OpCases):
    """``OpCases`` of the loss: its output is the (3,) terms, in the compute dtype."""

    def assert_close_to_reference(self, inputs: dict, backend: str, tol: float, dtype=None) -> dict:
        """``backend``'s terms and both gradients (finite, logits' dtype) within ``OpCases.tolerances`` of the float64
        reference (``tol``, or twice a plain float32 run's error). Returns the errors by name."""
        grad_terms = torch.randn(3, dtype=torch.float64)
        ref_out, ref_grads = self.reference_run(inputs, grad_terms)
        out, grads = self.run(self.fused(backend), inputs, grad_terms, dtype)
        dtype = dtype or inputs["logits"].dtype
        assert out.shape == (3,) and out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        assert torch.isfinite(out).all()
        errors = {"out": rel_err(out, ref_out)}
        for name, g in grads.items():
            assert torch.isfinite(g).all() and g.dtype == dtype and g.shape == ref_grads[name].shape, name
            errors[name] = rel_err(g, ref_grads[name])
        bounds = self.tolerances(inputs, grad_terms, ref_out, ref_grads, {}, tol, dtype)
        worse = {name: (e, bounds[name]) for name, e in errors.items() if not e <= bounds[name]}
        assert not worse, ("(error, bound)", worse)
        return errors


# the weights, targets and pos_weight stay in the compute dtype (float32 for 16-bit logits)
CASES = FrameLossesCases(SPEC, RAW_ARGS, state_inputs=SPEC.state_inputs)
case_inputs, raw_args, run, reference_run = CASES.case_inputs, CASES.raw_args, CASES.run, CASES.reference_run
fused, assert_close_to_reference = CASES.fused, CASES.assert_close_to_reference

__all__ = ["size", "case_inputs", "raw_args", "run", "reference_run", "fused", "assert_close_to_reference",
           "RAW_ARGS", "SCALAR_ARGS"]
