"""The drivers of the fused BatchNorm + residual + ReLU tests (``tests/ops/batch_norm_relu/``): ``op_cases.OpCases`` of
the registry entry (``trgnet_fast/ops/batch_norm_relu/spec.py``)."""
from __future__ import annotations

from op_cases import OpCases
from trgnet_fast.ops.batch_norm_relu.spec import SPEC, frame_mask_of, size
from trgnet_fast.ops.batch_norm_relu.validation import PARAMETER_NAMES

# the raw forward op's arguments in schema order (the package docstring of trgnet_fast/ops/batch_norm_relu)
RAW_ARGS = ("x", "residual", "frame_mask", *PARAMETER_NAMES, "eps")

CASES = OpCases(SPEC, RAW_ARGS, state_inputs=PARAMETER_NAMES)
case_inputs, raw_args, run, reference_run = CASES.case_inputs, CASES.raw_args, CASES.run, CASES.reference_run
fused, assert_close_to_reference = CASES.fused, CASES.assert_close_to_reference

__all__ = ["size", "frame_mask_of", "case_inputs", "raw_args", "run", "reference_run", "fused",
           "assert_close_to_reference", "RAW_ARGS"]
