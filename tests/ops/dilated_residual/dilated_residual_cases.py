"""The drivers of the fused dilated-residual tests (``tests/ops/dilated_residual/``): ``op_cases.OpCases`` of the
registry entry (``trgnet_fast/ops/dilated_residual/spec.py``)."""
from __future__ import annotations

from op_cases import OpCases
from trgnet_fast.ops.dilated_residual.spec import SPEC, size
from trgnet_fast.ops.dilated_residual.validation import WEIGHT_NAMES

# the raw ops' arguments in schema order (the package docstring of trgnet_fast/ops/dilated_residual): the 8 tensors,
# then the 2 scalars (the backward takes grad_out first)
TENSOR_ARGS = ("x", "mask", "cu_seqlens", *WEIGHT_NAMES, "dropout_seed")
SCALAR_ARGS = ("dilation", "dropout")
RAW_ARGS = TENSOR_ARGS + SCALAR_ARGS

CASES = OpCases(SPEC, RAW_ARGS)
case_inputs, raw_args, run, reference_run = CASES.case_inputs, CASES.raw_args, CASES.run, CASES.reference_run
fused, assert_close_to_reference = CASES.fused, CASES.assert_close_to_reference

__all__ = ["size", "case_inputs", "raw_args", "run", "reference_run", "fused", "assert_close_to_reference",
           "TENSOR_ARGS", "SCALAR_ARGS", "RAW_ARGS"]
