"""The drivers of the fused-SFI tests (``tests/ops/spatial_feature_injection/``): ``op_cases.OpCases`` of the registry
entry (``trgnet_fast/ops/spatial_feature_injection/spec.py``)."""
from __future__ import annotations

from op_cases import OpCases
from trgnet_fast.ops.spatial_feature_injection.spec import SPEC, size
from trgnet_fast.ops.spatial_feature_injection.validation import WEIGHT_NAMES

# the raw ops' arguments in schema order (the package docstring of trgnet_fast/ops/spatial_feature_injection): the 12
# tensors, then dropout (the backward takes grad_out first)
TENSOR_ARGS = ("group", "h", "mask", *WEIGHT_NAMES, "dropout_seed")
SCALAR_ARGS = ("dropout",)
RAW_ARGS = TENSOR_ARGS + SCALAR_ARGS

CASES = OpCases(SPEC, RAW_ARGS, output_like="h")
case_inputs, raw_args, run, reference_run = CASES.case_inputs, CASES.raw_args, CASES.run, CASES.reference_run
fused, assert_close_to_reference = CASES.fused, CASES.assert_close_to_reference

__all__ = ["size", "case_inputs", "raw_args", "run", "reference_run", "fused", "assert_close_to_reference",
           "TENSOR_ARGS", "SCALAR_ARGS", "RAW_ARGS"]
