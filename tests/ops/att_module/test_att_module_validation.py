"""Argument checks of trgnet_fast.ops.att_module:

* the public function, every ``backend=`` value: a ``ValueError`` naming the argument, what is expected and what
  was received (the op validates once: itself for torch / cuda, the raw Triton op for triton);
* the raw native ops ``torch.ops.trgnet.att_module`` (+ ``_backward``): the C++ checks (``RuntimeError``);
* the raw Triton ops ``torch.ops.trgnet_triton.att_module`` (+ ``_backward``): ``ValueError`` naming the op and the
  argument, for what their kernels cannot index (non-contiguous tensors, C > 256) as well.
"""
from __future__ import annotations

import pytest
import torch

from att_module_cases import CASES as CASES_OF_OP
from att_module_cases import case_inputs, size
from validation_cases import (DROPOUT_SEED_CASES, MASK_CASES, SEQUENCE_OFFSET_CASES, assert_public_function_rejects,
                        replaced, tensor_cases)
from op_checks import (BACKEND_DEVICE, api_backends, assert_raw_triton_op_rejects,
                       assert_raw_triton_op_rejects_non_contiguous, needs)
from trgnet_fast.ops.att_module import OP_NAME, att_module
from trgnet_fast.ops.registry import OPS

SPEC = OPS[OP_NAME]


def _inputs(device="cpu", **overrides):
    s = size(2, 7, c=8, heads=4, dilation=2, mode="decoder", layout="rows", masked=True, dropout=True)
    return case_inputs(s | overrides, torch.float32, device, seed=0)


BAD_INPUTS = [  # (id, inputs -> bad inputs, message fragment)
    *tensor_cases("x", "a 3-D tensor (B, C, T)"),
    ("values-shape", replaced("values", lambda v: v[:, :, :5]), "values: expected shape"),
    ("values-dtype", replaced("values", lambda v: v.double()), "values: expected dtype"),
    ("values-device", replaced("values", lambda v: v.to("meta")), "values: expected device"),
    *MASK_CASES,
    ("conv-weight-shape", replaced("conv_weight", lambda w: w[..., :1]), "conv_weight: expected shape"),
    ("query-weight-dtype", replaced("query_weight", lambda w: w.double()), "query_weight: expected dtype"),
    ("conv-out-weight-2d", replaced("conv_out_weight", lambda w: w[..., 0]), "conv_out_weight: expected shape"),
    ("out-bias-shape", replaced("out_bias", lambda b: b[:3]), "out_bias: expected shape"),
    ("alpha-shape", replaced("alpha", lambda a: a.reshape(1)), "alpha: expected shape"),
    ("alpha-int", replaced("alpha", lambda a: torch.tensor(1)), "alpha: expected dtype"),
    *DROPOUT_SEED_CASES,
    *SEQUENCE_OFFSET_CASES,
    ("dilation-0", replaced("dilation", 0), "dilation: expected an integer >= 1"),
    ("heads-3", replaced("heads", 3), "heads: expected a divisor of the channels C = 8"),
    ("heads-0", replaced("heads", 0), "heads: expected an integer >= 1"),
    ("norm-eps-0", lambda i: i | {"norm_eps": 0.0}, "norm_eps: expected a finite float > 0"),
    ("attention-eps-nan", lambda i: i | {"attention_eps": float("nan")}, "attention_eps: expected a finite float"),
    ("dropout-1", replaced("dropout", 1.0), "dropout: expected a probability in [0, 1)"),
    ("attention-dropout-neg", replaced("attention_dropout", -0.1), "attention_dropout: expected a probability"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda c: c[0])
@pytest.mark.parametrize("backend", api_backends(SPEC))
def test_public_function_rejects_bad_inputs(case, backend):
    """x, values, the mask, the weights, alpha, the seed, the offsets and the scalars: a ValueError naming
    the argument."""
    assert_public_function_rejects(att_module, case, backend, _inputs)


def test_encoder_and_decoder_need_no_values_or_take_them():
    """values None is the encoder (no check fires); a mask and cu_seqlens of None are the published layout."""
    inputs = _inputs(mode="encoder", layout="published", masked=False, dropout=False)
    assert inputs["values"] is None and inputs["mask"] is None and inputs["cu_seqlens"] is None
    assert att_module(**inputs, backend="torch").shape == inputs["x"].shape


@needs("triton")
def test_raw_triton_ops_reject_what_their_kernels_cannot_index():
    """What the kernels cannot index: non-contiguous x and query weight, more than 256 channels; and alpha outside
    the state dtype (float64 for float32 inputs)."""
    args = CASES_OF_OP.raw_args_by_name(_inputs(BACKEND_DEVICE["triton"]))
    assert_raw_triton_op_rejects_non_contiguous(OP_NAME, args, ("x", "query_weight"))
    assert_raw_triton_op_rejects(OP_NAME, args | {"alpha": args["alpha"].double()}, "alpha", "dtype")
    wide = CASES_OF_OP.raw_args_by_name(_inputs(BACKEND_DEVICE["triton"], C=260))
    assert_raw_triton_op_rejects(OP_NAME, wide, "x", "at most 256 channels")
