"""Argument checks of trgnet_fast.ops.spatial_feature_injection: the public function, every ``backend=`` value,
raises a ``ValueError`` naming the argument, what is expected and what was received; the raw Triton ops also refuse
what their kernels cannot index."""
from __future__ import annotations

import pytest
import torch

from validation_cases import DROPOUT_SEED_CASES, MASK_CASES, assert_public_function_rejects, replaced, tensor_cases
from op_checks import (BACKEND_DEVICE, api_backends, assert_raw_triton_op_rejects,
                       assert_raw_triton_op_rejects_non_contiguous, needs)
from spatial_feature_injection_cases import CASES as CASES_OF_OP
from spatial_feature_injection_cases import case_inputs, size
from trgnet_fast.ops.registry import OPS
from trgnet_fast.ops.spatial_feature_injection import OP_NAME, spatial_feature_injection

SPEC = OPS[OP_NAME]


def _inputs(device="cpu", **overrides):
    s = size(2, 7, c=8, g=4, v=3, masked=True, dropout=True)
    return case_inputs(s | overrides, torch.float32, device, seed=0)


BAD_INPUTS = [  # (id, inputs -> bad inputs, message fragment)
    *tensor_cases("h", "a 3-D tensor (B, C, T)"),
    ("group-rank", replaced("group", lambda g: g[0]), "group: expected a 4-D tensor (N, G, T, V)"),
    ("group-frames", replaced("group", lambda g: g[:, :, :5]), "group: expected a 4-D tensor (N, G, T, V)"),
    ("group-dtype", replaced("group", lambda g: g.double()), "group: expected dtype"),
    ("group-joints", replaced("group", lambda g: g[..., :2]), "conv_s_weight: expected shape"),
    *MASK_CASES,
    ("fusion-weight-shape", replaced("fusion_weight", lambda w: w[:, :8]), "fusion_weight: expected shape"),
    ("ff1-weight-3d", replaced("ff1_weight", lambda w: w[..., None]), "ff1_weight: expected shape"),
    ("ff2-bias-dtype", replaced("ff2_bias", lambda b: b.double()), "ff2_bias: expected dtype"),
    *DROPOUT_SEED_CASES,
    ("dropout-1", replaced("dropout", 1.0), "dropout: expected a probability in [0, 1)"),
    ("dropout-str", replaced("dropout", "0.3"), "dropout: expected a probability in [0, 1)"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda c: c[0])
@pytest.mark.parametrize("backend", api_backends(SPEC))
def test_public_function_rejects_bad_inputs(case, backend):
    """h, group, the mask, the weights, the seed and dropout: a ValueError naming the argument."""
    assert_public_function_rejects(spatial_feature_injection, case, backend, _inputs)


@needs("triton")
def test_raw_triton_ops_reject_what_their_kernels_cannot_index():
    """Non-contiguous h and ff1 weight, more than 256 channels, more than 512 group channels G V."""
    device = BACKEND_DEVICE["triton"]
    args = CASES_OF_OP.raw_args_by_name(_inputs(device))
    assert_raw_triton_op_rejects_non_contiguous(OP_NAME, args, ("h", "ff1_weight"))
    assert_raw_triton_op_rejects(OP_NAME, CASES_OF_OP.raw_args_by_name(_inputs(device, C=260)), "h",
                                 "at most 256 channels")
    assert_raw_triton_op_rejects(OP_NAME, CASES_OF_OP.raw_args_by_name(_inputs(device, G=8, V=65)), "group",
                                 "G V <= 512")
