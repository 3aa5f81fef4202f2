"""Argument checks of trgnet_fast.ops.multiscale_graph_conv:

* the public function, every ``backend=`` value: a ``ValueError`` naming the argument (the op validates once:
  itself for torch / cuda, the raw Triton op for triton);
* the raw native ops ``torch.ops.trgnet.multiscale_graph_conv`` (+ ``_backward``): the C++ checks
  (``RuntimeError``);
* the raw Triton ops ``torch.ops.trgnet_triton.multiscale_graph_conv`` (+ ``_backward``): a non-contiguous
  adjacency / weight / bias, a mistyped or misshaped argument is a ``ValueError`` naming the op and the argument;
  valid calls, non-contiguous x / grad_out included (the kernels take their strides), match the float64 reference.
  Tiny shapes: on a CPU-only machine the kernels run in Triton's interpreter.
"""
from __future__ import annotations

import pytest
import torch

from multiscale_cases import NAMES, make_inputs
from op_checks import (BACKEND_DEVICE, DEVICE, TOL, api_backends, assert_native_op_rejects,
                       assert_raw_triton_op_rejects_case, needs, non_contiguous, raw_triton_op_cases, rel_err,
                       run_with_grads, triton_ops, with_arg)
from trgnet_fast.ops.multiscale_graph_conv import OP_NAME, multiscale_graph_conv
from trgnet_fast.ops.multiscale_graph_conv.reference import multiscale_graph_conv_reference
from trgnet_fast.ops.registry import OPS

SPEC = OPS[OP_NAME]
F64_TOL = TOL[torch.float64]


# ----------------------------------------------------------------------------------------------
# the public function

BAD_INPUTS = {  # case -> ((x, a, w, b) -> bad arguments, argument named in the message)
    "x_not_tensor": (lambda x, a, w, b: (x.tolist(), a, w, b), "x"),
    "x_3d": (lambda x, a, w, b: (x[0], a, w, b), "x"),
    "x_int": (lambda x, a, w, b: (x.long(), a, w, b), "x"),
    "adjacency_cols": (lambda x, a, w, b: (x, a[:, :4], w, b), "adjacency"),
    "adjacency_rows": (lambda x, a, w, b: (x, a[:7], w, b), "adjacency"),
    "weight_cols": (lambda x, a, w, b: (x, a, w[:, :5], b), "weight"),
    "weight_3d": (lambda x, a, w, b: (x, a, w[:, :, None], b), "weight"),
    "bias_shape": (lambda x, a, w, b: (x, a, w, b[:5]), "bias"),
    "weight_dtype": (lambda x, a, w, b: (x, a, w.float(), b), "weight"),
    "bias_dtype": (lambda x, a, w, b: (x, a, w, b.float()), "bias"),
    "adjacency_dtype": (lambda x, a, w, b: (x, a.float(), w, b), "adjacency"),
    "weight_device": (lambda x, a, w, b: (x, a, w.to("meta"), b), "weight"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
@pytest.mark.parametrize("backend", api_backends(SPEC))
def test_rejects_bad_inputs(case, backend):
    change, name = BAD_INPUTS[case]
    args = change(*make_inputs(1, 3, 4, 5, 2, 6, device=BACKEND_DEVICE.get(backend, "cpu")))
    with pytest.raises(ValueError, match=f"multiscale_graph_conv: {name}:"):
        multiscale_graph_conv(*args, backend=backend)


# ----------------------------------------------------------------------------------------------
# the raw native ops (C++ checks)

def test_native_rejects_bad_inputs(native):
    x, a, w, b = make_inputs(1, 3, 4, 5, 2, 6, dtype=torch.float32)
    assert_native_op_rejects(native.multiscale_graph_conv, [
        ((x.transpose(2, 3).contiguous().transpose(2, 3), a, w, b), "argument 'x': expected a contiguous"),
        ((x[0], a, w, b), "argument 'x': expected a 4-D tensor"),
        ((x.int(), a.int(), w.int(), b.int()), "argument 'x': expected dtype"),
        ((x, a[:, :4].contiguous(), w, b), "argument 'adjacency': expected shape"),
        ((x, a[:7].contiguous(), w, b), "argument 'adjacency': expected shape"),
        ((x, a.double(), w, b), "argument 'adjacency': expected dtype"),
        ((x, a, w[:, :5].contiguous(), b), "argument 'weight': expected shape"),
        ((x, a, w[:, :, None, None], b), "argument 'weight': expected shape"),
        ((x, a, w.t().contiguous().t(), b), "argument 'weight': expected a contiguous"),
        ((x, a, w, b[:5].contiguous()), "argument 'bias': expected shape"),
        ((x, a, w, b.half()), "argument 'bias': expected dtype"),
    ])
    g = torch.randn(1, 6, 4, 5)
    assert_native_op_rejects(native.multiscale_graph_conv_backward, [
        ((g[:, :5].contiguous(), x, a, w), "argument 'grad_out': expected shape"),
        ((g.double(), x, a, w), "argument 'grad_out': expected dtype"),
        ((g.transpose(2, 3).contiguous().transpose(2, 3), x, a, w), "argument 'grad_out': expected a contiguous"),
        ((g, x, a, w[:, :5].contiguous()), "argument 'weight': expected shape"),
    ])


# ----------------------------------------------------------------------------------------------
# the raw Triton ops: valid float64 arguments in schema order, and one bad argument at a time

def _forward_args():
    x, adjacency, weight, bias = make_inputs(2, 3, 4, 5, 2, 4, device=DEVICE)  # (N, C, T, V, S, C_out)
    return {"x": x, "adjacency": adjacency, "weight": weight, "bias": bias}


def _backward_args():
    forward = _forward_args()
    grad_out = torch.randn(2, 4, 4, 5, dtype=torch.float64, device=DEVICE)
    return {"grad_out": grad_out, "x": forward["x"], "adjacency": forward["adjacency"], "weight": forward["weight"]}


VALID_ARGS = {OP_NAME: _forward_args, f"{OP_NAME}_backward": _backward_args}


@needs("triton", DEVICE)
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_raw_triton_op_valid_calls_match_reference(layout):
    """x and grad_out with any strides are valid (the kernels take them)."""
    ops = triton_ops()
    args = _backward_args()
    if layout == "strided":
        args = with_arg("x", non_contiguous)(with_arg("grad_out", non_contiguous)(args))
    grad_out, x, adjacency, weight = args.values()
    bias = torch.randn(weight.shape[0], dtype=torch.float64, device=DEVICE)
    ref_out, ref_grads = run_with_grads(multiscale_graph_conv_reference, [x, adjacency, weight, bias], grad_out)
    assert rel_err(ops.multiscale_graph_conv(x, adjacency, weight, bias), ref_out) <= F64_TOL
    grads = ops.multiscale_graph_conv_backward(grad_out, x, adjacency, weight)
    for name, g, r in zip(NAMES, grads, ref_grads):
        assert rel_err(g, r) <= F64_TOL, name


# (id, change of the valid arguments, argument named, start of the message after "<name>: expected ")
FORWARD_CASES = [
    ("weight-non-contiguous", with_arg("weight", non_contiguous), "weight", "a contiguous tensor"),
    ("adjacency-non-contiguous", with_arg("adjacency", non_contiguous), "adjacency", "a contiguous tensor"),
    ("bias-non-contiguous", with_arg("bias", lambda t: t.repeat_interleave(2)[::2]), "bias", "a contiguous tensor"),
    ("weight-dtype", with_arg("weight", lambda t: t.float()), "weight", "dtype torch.float64 (same as x)"),
    ("bias-dtype", with_arg("bias", lambda t: t.half()), "bias", "dtype torch.float64 (same as x)"),
    ("adjacency-shape", with_arg("adjacency", lambda t: t[:-1].contiguous()), "adjacency", "shape (S*V, V)"),
    ("weight-shape", with_arg("weight", lambda t: t[:, :-1].contiguous()), "weight", "shape (C_out, S*C)"),
    ("bias-shape", with_arg("bias", lambda t: t[:-1].contiguous()), "bias", "shape (C_out,)"),
    ("x-rank", with_arg("x", lambda t: t[0]), "x", "a 4-D tensor"),
    ("x-int", lambda a: {n: t.int() for n, t in a.items()}, "x", "a floating dtype"),
]

BACKWARD_CASES = [
    ("weight-non-contiguous", with_arg("weight", non_contiguous), "weight", "a contiguous tensor"),
    ("adjacency-non-contiguous", with_arg("adjacency", non_contiguous), "adjacency", "a contiguous tensor"),
    ("grad_out-dtype", with_arg("grad_out", lambda t: t.float()), "grad_out", "dtype torch.float64 (same as x)"),
    ("grad_out-shape", with_arg("grad_out", lambda t: t[:, :-1]), "grad_out", "shape (N, C_out, T, V)"),
    ("weight-shape", with_arg("weight", lambda t: t[:-1, :-1].contiguous()), "weight", "shape (C_out, S*C)"),
]


@needs("triton", DEVICE)
@pytest.mark.parametrize("op, case", raw_triton_op_cases(OP_NAME, FORWARD_CASES, BACKWARD_CASES))
def test_raw_triton_op_rejects_bad_argument(op, case):
    assert_raw_triton_op_rejects_case(op, case, VALID_ARGS)
