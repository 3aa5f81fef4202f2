"""Argument checks of trgnet_fast.ops.dilated_residual: the public function, every ``backend=`` value, raises a
``ValueError`` naming the argument, what is expected and what was received; the raw Triton ops also refuse what
their kernels cannot index."""
from __future__ import annotations

import pytest
import torch

from validation_cases import (DROPOUT_SEED_CASES, MASK_CASES, SEQUENCE_OFFSET_CASES, assert_public_function_rejects,
                        replaced, tensor_cases)
from dilated_residual_cases import CASES as CASES_OF_OP
from dilated_residual_cases import case_inputs, size
from op_checks import (BACKEND_DEVICE, api_backends, assert_raw_triton_op_rejects,
                       assert_raw_triton_op_rejects_non_contiguous, needs)
from trgnet_fast.ops.dilated_residual import OP_NAME, dilated_residual
from trgnet_fast.ops.registry import OPS

SPEC = OPS[OP_NAME]


def _inputs(device="cpu", **overrides):
    s = size(2, 7, c=8, dilation=2, layout="rows", masked=True, dropout=True)
    return case_inputs(s | overrides, torch.float32, device, seed=0)


BAD_INPUTS = [  # (id, inputs -> bad inputs, message fragment)
    *tensor_cases("x", "a 3-D tensor (B, C, T)"),
    *MASK_CASES,
    ("mask-device", replaced("mask", lambda m: m.to("meta")), "mask: expected device"),
    ("conv-weight-shape", replaced("conv_weight", lambda w: w[..., :1]), "conv_weight: expected shape"),
    ("conv-bias-dtype", replaced("conv_bias", lambda b: b.double()), "conv_bias: expected dtype"),
    ("conv-out-weight-2d", replaced("conv_out_weight", lambda w: w[..., 0]), "conv_out_weight: expected shape"),
    ("conv-out-bias-shape", replaced("conv_out_bias", lambda b: b[:3]), "conv_out_bias: expected shape"),
    *DROPOUT_SEED_CASES,
    *SEQUENCE_OFFSET_CASES,
    ("dilation-0", replaced("dilation", 0), "dilation: expected an integer >= 1"),
    ("dilation-float", replaced("dilation", 2.5), "dilation: expected an integer >= 1"),
    ("dropout-1", replaced("dropout", 1.0), "dropout: expected a probability in [0, 1)"),
    ("dropout-nan", replaced("dropout", float("nan")), "dropout: expected a probability in [0, 1)"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda c: c[0])
@pytest.mark.parametrize("backend", api_backends(SPEC))
def test_public_function_rejects_bad_inputs(case, backend):
    """x, the mask, the weights, the seed, the offsets, dilation and dropout: a ValueError naming the
    argument."""
    assert_public_function_rejects(dilated_residual, case, backend, _inputs)


def test_no_mask_no_offsets_no_dropout_is_the_published_eval_layer():
    inputs = _inputs(layout="published", masked=False, dropout=False)
    assert inputs["mask"] is None and inputs["cu_seqlens"] is None and inputs["dropout_seed"] is None
    assert dilated_residual(**inputs, backend="torch").shape == inputs["x"].shape


@needs("triton")
def test_raw_triton_ops_reject_what_their_kernels_cannot_index():
    """Non-contiguous x and conv weight, more than 256 channels."""
    args = CASES_OF_OP.raw_args_by_name(_inputs(BACKEND_DEVICE["triton"]))
    assert_raw_triton_op_rejects_non_contiguous(OP_NAME, args, ("x", "conv_weight"))
    wide = CASES_OF_OP.raw_args_by_name(_inputs(BACKEND_DEVICE["triton"], C=260))
    assert_raw_triton_op_rejects(OP_NAME, wide, "x", "at most 256 channels")
