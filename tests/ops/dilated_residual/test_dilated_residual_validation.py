"""Argument checks of trgnet_fast.ops.dilated_residual: the public function, every ``backend=`` value, raises a
``ValueError`` naming the argument, what is expected and what was received; the raw Triton ops also refuse what
their kernels cannot index."""
from __future__ import annotations

import re

import pytest
import torch

from dilated_residual_cases import RAW_ARGS, case_inputs, raw_args, size
from op_checks import BACKEND_DEVICE, api_backends, assert_raw_triton_op_rejects, needs, non_contiguous, triton_ops
from trgnet_fast.ops.dilated_residual import OP_NAME, dilated_residual
from trgnet_fast.ops.registry import OPS

SPEC = OPS[OP_NAME]


def _inputs(device="cpu", **overrides):
    s = size(2, 7, c=8, dilation=2, layout="rows", masked=True, dropout=True)
    return case_inputs(s | overrides, torch.float32, device, seed=0)


def _set(name, value):
    return lambda i: i | {name: value(i[name]) if callable(value) else value}


BAD_INPUTS = [  # (id, inputs -> bad inputs, message fragment)
    ("x-rank", _set("x", lambda x: x[0]), "x: expected a 3-D tensor (B, C, T)"),
    ("x-int", _set("x", lambda x: x.int()), "x: expected a floating dtype"),
    ("x-list", _set("x", lambda x: x.tolist()), "x: expected a torch.Tensor"),
    ("mask-shape", _set("mask", lambda m: m[:, 0]), "mask: expected shape (B, 1, T)"),
    ("mask-bool", _set("mask", lambda m: m.bool()), "mask: expected dtype"),
    ("mask-device", _set("mask", lambda m: m.to("meta")), "mask: expected device"),
    ("conv-weight-shape", _set("conv_weight", lambda w: w[..., :1]), "conv_weight: expected shape"),
    ("conv-bias-dtype", _set("conv_bias", lambda b: b.double()), "conv_bias: expected dtype"),
    ("conv-out-weight-2d", _set("conv_out_weight", lambda w: w[..., 0]), "conv_out_weight: expected shape"),
    ("conv-out-bias-shape", _set("conv_out_bias", lambda b: b[:3]), "conv_out_bias: expected shape"),
    ("seed-dtype", _set("dropout_seed", lambda s: s.int()), "dropout_seed: expected dtype"),
    ("seed-missing", _set("dropout_seed", None), "dropout_seed: expected a (1,) int64 tensor"),
    ("cu-dtype", _set("cu_seqlens", lambda c: c.long()), "cu_seqlens: expected dtype"),
    ("cu-count", _set("cu_seqlens", lambda c: c[:2]), "cu_seqlens: expected N + 1 offsets"),
    ("cu-rank", _set("cu_seqlens", lambda c: c[None]), "cu_seqlens: expected a 1-D tensor"),
    ("cu-decreasing", _set("cu_seqlens", lambda c: c.flip(0)),
     "cu_seqlens: expected non-decreasing offsets starting at 0"),
    ("cu-too-long", _set("cu_seqlens", lambda c: torch.arange(3, dtype=torch.int32) * 8),
     "cu_seqlens: expected a row's sequence to fit T = 7 frames, got 8"),
    ("dilation-0", _set("dilation", 0), "dilation: expected an integer >= 1"),
    ("dilation-float", _set("dilation", 2.5), "dilation: expected an integer >= 1"),
    ("dropout-1", _set("dropout", 1.0), "dropout: expected a probability in [0, 1)"),
    ("dropout-nan", _set("dropout", float("nan")), "dropout: expected a probability in [0, 1)"),
]


OFFSET_VALUE_CASES = ("cu-decreasing", "cu-too-long")


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda c: c[0])
@pytest.mark.parametrize("backend", api_backends(SPEC))
def test_public_function_rejects_bad_inputs(case, backend):
    name, change, message = case
    device = BACKEND_DEVICE.get(backend, "cpu")
    if name in OFFSET_VALUE_CASES and device != "cpu":
        pytest.skip("cu_seqlens values are checked on CPU tensors only (on a GPU reading them is a host sync)")
    inputs = change(_inputs(device))
    with pytest.raises(ValueError, match=rf"\b{re.escape(message)}"):
        dilated_residual(**inputs, backend=backend)


def test_no_mask_no_offsets_no_dropout_is_the_published_eval_layer():
    inputs = _inputs(layout="published", masked=False, dropout=False)
    assert inputs["mask"] is None and inputs["cu_seqlens"] is None and inputs["dropout_seed"] is None
    assert dilated_residual(**inputs, backend="torch").shape == inputs["x"].shape


@needs("triton")
def test_raw_triton_ops_reject_what_their_kernels_cannot_index():
    inputs = _inputs(BACKEND_DEVICE["triton"])
    args = dict(zip(RAW_ARGS, raw_args(inputs)))
    triton_ops()
    op = "dilated_residual"
    assert_raw_triton_op_rejects(op, args | {"x": non_contiguous(args["x"])}, "x", "a contiguous tensor")
    assert_raw_triton_op_rejects(op, args | {"conv_weight": non_contiguous(args["conv_weight"])}, "conv_weight",
                                 "a contiguous tensor")
    wide = _inputs(BACKEND_DEVICE["triton"], C=260)
    assert_raw_triton_op_rejects(op, dict(zip(RAW_ARGS, raw_args(wide))), "x", "at most 256 channels")
