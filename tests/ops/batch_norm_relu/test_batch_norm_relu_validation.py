"""Argument checks of trgnet_fast.ops.batch_norm_relu: the public functions, every ``backend=`` value, raise a
``ValueError`` naming the argument, what is expected and what was received; the raw Triton ops also refuse what their
kernels cannot index."""
from __future__ import annotations

import re

import pytest
import torch

from validation_cases import assert_public_function_rejects, replaced, tensor_cases
from batch_norm_relu_cases import CASES as CASES_OF_OP
from batch_norm_relu_cases import case_inputs, size
from op_checks import (BACKEND_DEVICE, api_backends, assert_raw_triton_op_rejects,
                       assert_raw_triton_op_rejects_non_contiguous, needs)
from trgnet_fast.ops.batch_norm_relu import OP_NAME, batch_norm_relu, batch_norm_relu_backward
from trgnet_fast.ops.registry import OPS

SPEC = OPS[OP_NAME]


def _inputs(device="cpu", **overrides):
    return case_inputs(size(2, 7, c=4, v=17, masked=True, residual=True) | overrides, torch.float32, device, seed=0)


BAD_INPUTS = [  # (id, inputs -> bad inputs, message fragment)
    *tensor_cases("x", "a 4-D tensor (N, C, T, V)"),
    ("x-empty", replaced("x", lambda x: x[:, :, :0]), "x: expected T >= 1"),
    ("residual-shape", replaced("residual", lambda r: r[:, :, :3]), "residual: expected shape (N, C, T, V) of x"),
    ("residual-dtype", replaced("residual", lambda r: r.double()), "residual: expected dtype"),
    ("residual-list", replaced("residual", lambda r: r.tolist()), "residual: expected a tensor or None"),
    ("mask-shape", replaced("frame_mask", lambda m: m[:, :, :, 0]), "frame_mask: expected shape (N, 1, T, 1)"),
    ("mask-bool", replaced("frame_mask", lambda m: m.bool()), "frame_mask: expected dtype"),
    ("mask-device", replaced("frame_mask", lambda m: m.to("meta")), "frame_mask: expected device"),
    ("weight-shape", replaced("weight", lambda w: w[:3]), "weight: expected shape (C,)"),
    ("bias-int", replaced("bias", lambda b: b.int()), "bias: expected a floating dtype"),
    ("eps-0", replaced("eps", 0.0), "eps: expected a finite float > 0"),
    ("eps-nan", replaced("eps", float("nan")), "eps: expected a finite float > 0"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda c: c[0])
@pytest.mark.parametrize("backend", api_backends(SPEC))
def test_public_function_rejects_bad_inputs(case, backend):
    """x, residual, the frame mask, the parameters and eps: a ValueError naming the argument."""
    assert_public_function_rejects(batch_norm_relu, case, backend, _inputs)


def test_parameters_in_any_float_dtype_are_taken_in_the_state_dtype():
    inputs = _inputs()
    out = batch_norm_relu(**inputs | {"weight": inputs["weight"].double(), "bias": inputs["bias"].half()},
                          backend="torch")
    assert out.dtype == torch.float32


BAD_BACKWARD = [  # (id, argument index in the backward's positional arguments, change, message fragment)
    ("grad-shape", 0, lambda g: g[:1], "grad_out: expected shape (N, C, T, V) of x"),
    ("out-dtype", 1, lambda o: o.double(), "out: expected dtype"),
    ("mean-dtype", 5, lambda m: m.double(), "mean: expected dtype torch.float32 (the state dtype"),
    ("var-shape", 6, lambda v: v[:2], "var: expected shape (C,)"),
]


@pytest.mark.parametrize("case", BAD_BACKWARD, ids=lambda c: c[0])
@pytest.mark.parametrize("backend", api_backends(SPEC))
def test_backward_rejects_bad_inputs(case, backend):
    name, index, change, message = case
    inputs = _inputs(BACKEND_DEVICE.get(backend, "cpu"))
    out, mean, var = batch_norm_relu(**inputs, statistics=True, backend="torch")
    args = [torch.randn_like(out), out, inputs["x"], inputs["frame_mask"], inputs["weight"], mean, var]
    args[index] = change(args[index])
    with pytest.raises(ValueError, match=rf"\b{re.escape(message)}"):
        batch_norm_relu_backward(*args, eps=1e-5, residual_grad=True, backend=backend)


@needs("triton")
def test_raw_triton_ops_reject_what_their_kernels_cannot_index():
    """Non-contiguous x and residual, a weight outside the state dtype."""
    args = CASES_OF_OP.raw_args_by_name(_inputs(BACKEND_DEVICE["triton"]))
    assert_raw_triton_op_rejects_non_contiguous(OP_NAME, args, ("x", "residual"))
    assert_raw_triton_op_rejects(OP_NAME, args | {"weight": args["weight"].half()}, "weight",
                                 "dtype torch.float32 (the state dtype")
