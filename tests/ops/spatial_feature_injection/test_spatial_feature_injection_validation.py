"""Argument checks of trgnet_fast.ops.spatial_feature_injection: the public function, every ``backend=`` value,
raises a ``ValueError`` naming the argument, what is expected and what was received; the raw Triton ops also refuse
what their kernels cannot index."""
from __future__ import annotations

import re

import pytest
import torch

from op_checks import BACKEND_DEVICE, api_backends, assert_raw_triton_op_rejects, needs, non_contiguous, triton_ops
from spatial_feature_injection_cases import RAW_ARGS, case_inputs, raw_args, size
from trgnet_fast.ops.registry import OPS
from trgnet_fast.ops.spatial_feature_injection import OP_NAME, spatial_feature_injection

SPEC = OPS[OP_NAME]


def _inputs(device="cpu", **overrides):
    s = size(2, 7, c=8, g=4, v=3, masked=True, dropout=True)
    return case_inputs(s | overrides, torch.float32, device, seed=0)


def _set(name, value):
    return lambda i: i | {name: value(i[name]) if callable(value) else value}


BAD_INPUTS = [  # (id, inputs -> bad inputs, message fragment)
    ("h-rank", _set("h", lambda h: h[0]), "h: expected a 3-D tensor (B, C, T)"),
    ("h-int", _set("h", lambda h: h.int()), "h: expected a floating dtype"),
    ("h-list", _set("h", lambda h: h.tolist()), "h: expected a torch.Tensor"),
    ("group-rank", _set("group", lambda g: g[0]), "group: expected a 4-D tensor (N, G, T, V)"),
    ("group-frames", _set("group", lambda g: g[:, :, :5]), "group: expected a 4-D tensor (N, G, T, V)"),
    ("group-dtype", _set("group", lambda g: g.double()), "group: expected dtype"),
    ("group-joints", _set("group", lambda g: g[..., :2]), "conv_s_weight: expected shape"),
    ("mask-shape", _set("mask", lambda m: m[:, 0]), "mask: expected shape (B, 1, T)"),
    ("mask-bool", _set("mask", lambda m: m.bool()), "mask: expected dtype"),
    ("fusion-weight-shape", _set("fusion_weight", lambda w: w[:, :8]), "fusion_weight: expected shape"),
    ("ff1-weight-3d", _set("ff1_weight", lambda w: w[..., None]), "ff1_weight: expected shape"),
    ("ff2-bias-dtype", _set("ff2_bias", lambda b: b.double()), "ff2_bias: expected dtype"),
    ("seed-dtype", _set("dropout_seed", lambda s: s.int()), "dropout_seed: expected dtype"),
    ("seed-missing", _set("dropout_seed", None), "dropout_seed: expected a (1,) int64 tensor"),
    ("dropout-1", _set("dropout", 1.0), "dropout: expected a probability in [0, 1)"),
    ("dropout-str", _set("dropout", "0.3"), "dropout: expected a probability in [0, 1)"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda c: c[0])
@pytest.mark.parametrize("backend", api_backends(SPEC))
def test_public_function_rejects_bad_inputs(case, backend):
    _, change, message = case
    inputs = change(_inputs(BACKEND_DEVICE.get(backend, "cpu")))
    with pytest.raises(ValueError, match=rf"\b{re.escape(message)}"):
        spatial_feature_injection(**inputs, backend=backend)


@needs("triton")
def test_raw_triton_ops_reject_what_their_kernels_cannot_index():
    inputs = _inputs(BACKEND_DEVICE["triton"])
    args = dict(zip(RAW_ARGS, raw_args(inputs)))
    triton_ops()
    op = "spatial_feature_injection"
    assert_raw_triton_op_rejects(op, args | {"h": non_contiguous(args["h"])}, "h", "a contiguous tensor")
    assert_raw_triton_op_rejects(op, args | {"ff1_weight": non_contiguous(args["ff1_weight"])}, "ff1_weight",
                                 "a contiguous tensor")
    wide = _inputs(BACKEND_DEVICE["triton"], C=260)
    assert_raw_triton_op_rejects(op, dict(zip(RAW_ARGS, raw_args(wide))), "h", "at most 256 channels")
    joints = _inputs(BACKEND_DEVICE["triton"], G=8, V=65)
    assert_raw_triton_op_rejects(op, dict(zip(RAW_ARGS, raw_args(joints))), "group", "G V <= 512")
