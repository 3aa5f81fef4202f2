"""Argument checks of trgnet_fast.ops.att_module:

* the public function, every ``backend=`` value: a ``ValueError`` naming the argument, what is expected and what
  was received (the op validates once: itself for torch / cuda, the raw Triton op for triton);
* the raw native ops ``torch.ops.trgnet.att_module`` (+ ``_backward``): the C++ checks (``RuntimeError``);
* the raw Triton ops ``torch.ops.trgnet_triton.att_module`` (+ ``_backward``): ``ValueError`` naming the op and the
  argument, for what their kernels cannot index (non-contiguous tensors, C > 256) as well.
"""
from __future__ import annotations

import re

import pytest
import torch

from att_module_cases import RAW_ARGS, case_inputs, raw_args, size
from op_checks import BACKEND_DEVICE, api_backends, assert_raw_triton_op_rejects, needs, non_contiguous, triton_ops
from trgnet_fast.ops.att_module import OP_NAME, att_module
from trgnet_fast.ops.registry import OPS

SPEC = OPS[OP_NAME]


def _inputs(device="cpu", **overrides):
    s = size(2, 7, c=8, heads=4, dilation=2, mode="decoder", layout="rows", masked=True, dropout=True)
    return case_inputs(s | overrides, torch.float32, device, seed=0)


def _set(name, value):
    return lambda i: i | {name: value(i[name]) if callable(value) else value}


BAD_INPUTS = [  # (id, inputs -> bad inputs, message fragment)
    ("x-rank", _set("x", lambda x: x[0]), "x: expected a 3-D tensor (B, C, T)"),
    ("x-int", _set("x", lambda x: x.int()), "x: expected a floating dtype"),
    ("x-list", _set("x", lambda x: x.tolist()), "x: expected a torch.Tensor"),
    ("values-shape", _set("values", lambda v: v[:, :, :5]), "values: expected shape"),
    ("values-dtype", _set("values", lambda v: v.double()), "values: expected dtype"),
    ("values-device", _set("values", lambda v: v.to("meta")), "values: expected device"),
    ("mask-shape", _set("mask", lambda m: m[:, 0]), "mask: expected shape (B, 1, T)"),
    ("mask-bool", _set("mask", lambda m: m.bool()), "mask: expected dtype"),
    ("conv-weight-shape", _set("conv_weight", lambda w: w[..., :1]), "conv_weight: expected shape"),
    ("query-weight-dtype", _set("query_weight", lambda w: w.double()), "query_weight: expected dtype"),
    ("conv-out-weight-2d", _set("conv_out_weight", lambda w: w[..., 0]), "conv_out_weight: expected shape"),
    ("out-bias-shape", _set("out_bias", lambda b: b[:3]), "out_bias: expected shape"),
    ("alpha-shape", _set("alpha", lambda a: a.reshape(1)), "alpha: expected shape"),
    ("alpha-int", _set("alpha", lambda a: torch.tensor(1)), "alpha: expected dtype"),
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
    ("heads-3", _set("heads", 3), "heads: expected a divisor of the channels C = 8"),
    ("heads-0", _set("heads", 0), "heads: expected an integer >= 1"),
    ("norm-eps-0", lambda i: i | {"norm_eps": 0.0}, "norm_eps: expected a finite float > 0"),
    ("attention-eps-nan", lambda i: i | {"attention_eps": float("nan")}, "attention_eps: expected a finite float"),
    ("dropout-1", _set("dropout", 1.0), "dropout: expected a probability in [0, 1)"),
    ("attention-dropout-neg", _set("attention_dropout", -0.1), "attention_dropout: expected a probability"),
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
        att_module(**inputs, backend=backend)


def test_encoder_and_decoder_need_no_values_or_take_them():
    """values None is the encoder (no check fires); a mask and cu_seqlens of None are the published layout."""
    inputs = _inputs(mode="encoder", layout="published", masked=False, dropout=False)
    assert inputs["values"] is None and inputs["mask"] is None and inputs["cu_seqlens"] is None
    assert att_module(**inputs, backend="torch").shape == inputs["x"].shape


@needs("triton")
def test_raw_triton_ops_reject_what_their_kernels_cannot_index():
    inputs = _inputs(BACKEND_DEVICE["triton"])
    args = dict(zip(RAW_ARGS, raw_args(inputs)))
    triton_ops()
    assert_raw_triton_op_rejects("att_module", args | {"x": non_contiguous(args["x"])}, "x", "a contiguous tensor")
    assert_raw_triton_op_rejects("att_module", args | {"query_weight": non_contiguous(args["query_weight"])},
                                 "query_weight", "a contiguous tensor")
    assert_raw_triton_op_rejects("att_module", args | {"alpha": args["alpha"].double()}, "alpha", "dtype")
    wide = _inputs(BACKEND_DEVICE["triton"], C=260)
    assert_raw_triton_op_rejects("att_module", dict(zip(RAW_ARGS, raw_args(wide))), "x", "at most 256 channels")
