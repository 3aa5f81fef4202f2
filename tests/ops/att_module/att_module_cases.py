"""The drivers of the fused-AttModule tests (``tests/ops/att_module/``: reference, fused backends, validation,
property-based): ``op_cases.OpCases`` of the registry entry (``trgnet_fast/ops/att_module/spec.py``)."""
from __future__ import annotations

from op_cases import OpCases
from trgnet_fast.ops.att_module.spec import SPEC, size
from trgnet_fast.ops.att_module.validation import WEIGHT_NAMES

# the raw ops' arguments in schema order (the package docstring of trgnet_fast/ops/att_module): the 18 tensors, then
# the 6 scalars (the backward takes grad_out first and the saved states between the two)
TENSOR_ARGS = ("x", "values", "mask", "cu_seqlens", *WEIGHT_NAMES, "alpha", "dropout_seed")
SCALAR_ARGS = ("dilation", "heads", "norm_eps", "attention_eps", "attention_dropout", "dropout")
RAW_ARGS = TENSOR_ARGS + SCALAR_ARGS

CASES = OpCases(SPEC, RAW_ARGS, state_inputs=("alpha",))
case_inputs, raw_args, run, reference_run = CASES.case_inputs, CASES.raw_args, CASES.run, CASES.reference_run
fused, assert_close_to_reference = CASES.fused, CASES.assert_close_to_reference

__all__ = ["size", "case_inputs", "raw_args", "run", "reference_run", "fused", "assert_close_to_reference",
           "TENSOR_ARGS", "SCALAR_ARGS", "RAW_ARGS"]
