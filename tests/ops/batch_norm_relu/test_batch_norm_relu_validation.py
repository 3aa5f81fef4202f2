"""Argument checks of trgnet_fast.ops.batch_norm_relu: the public functions, every ``backend=`` value, raise a
``ValueError`` naming the argument, what is expected and what was received; the raw Triton ops also refuse what their
kernels cannot index."""
from __future__ import annotations

import re

import pytest
import torch

from batch_norm_relu_cases import RAW_ARGS, case_inputs, raw_args, size
from op_checks import BACKEND_DEVICE, api_backends, assert_raw_triton_op_rejects, needs, non_contiguous, triton_ops
from trgnet_fast.ops.batch_norm_relu import OP_NAME, batch_norm_relu, batch_norm_relu_backward
from trgnet_fast.ops.registry import OPS

SPEC = OPS[OP_NAME]


def _inputs(device="cpu", **overrides):
    return case_inputs(size(2, 7, c=4, v=17, masked=True, residual=True) | overrides, torch.float32, device, seed=0)


def _set(name, value):
    return lambda i: i | {name: value(i[name]) if callable(value) else value}


BAD_INPUTS = [  # (id, inputs -> bad inputs, message fragment)
    ("x-rank", _set("x", lambda x: x[0]), "x: expected a 4-D tensor (N, C, T, V)"),
    ("x-int", _set("x", lambda x: x.int()), "x: expected a floating dtype"),
    ("x-list", _set("x", lambda x: x.tolist()), "x: expected a torch.Tensor"),
    ("x-empty", _set("x", lambda x: x[:, :, :0]), "x: expected T >= 1"),
    ("residual-shape", _set("residual", lambda r: r[:, :, :3]), "residual: expected shape (N, C, T, V) of x"),
    ("residual-dtype", _set("residual", lambda r: r.double()), "residual: expected dtype"),
    ("residual-list", _set("residual", lambda r: r.tolist()), "residual: expected a tensor or None"),
    ("mask-shape", _set("frame_mask", lambda m: m[:, :, :, 0]), "frame_mask: expected shape (N, 1, T, 1)"),
    ("mask-bool", _set("frame_mask", lambda m: m.bool()), "frame_mask: expected dtype"),
    ("mask-device", _set("frame_mask", lambda m: m.to("meta")), "frame_mask: expected device"),
    ("weight-shape", _set("weight", lambda w: w[:3]), "weight: expected shape (C,)"),
    ("bias-int", _set("bias", lambda b: b.int()), "bias: expected a floating dtype"),
    ("eps-0", _set("eps", 0.0), "eps: expected a finite float > 0"),
    ("eps-nan", _set("eps", float("nan")), "eps: expected a finite float > 0"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda c: c[0])
@pytest.mark.parametrize("backend", api_backends(SPEC))
def test_public_function_rejects_bad_inputs(case, backend):
    name, change, message = case
    inputs = change(_inputs(BACKEND_DEVICE.get(backend, "cpu")))
    with pytest.raises(ValueError, match=rf"\b{re.escape(message)}"):
        batch_norm_relu(**inputs, backend=backend)


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
    inputs = _inputs(BACKEND_DEVICE["triton"])
    args = dict(zip(RAW_ARGS, raw_args(inputs)))
    triton_ops()
    op = "batch_norm_relu"
    for name in ("x", "residual"):
        assert_raw_triton_op_rejects(op, args | {name: non_contiguous(args[name])}, name, "a contiguous tensor")
    assert_raw_triton_op_rejects(op, args | {"weight": args["weight"].half()}, "weight",
                                 "dtype torch.float32 (the state dtype")
