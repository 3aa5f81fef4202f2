"""Argument checks of trgnet_fast.ops.adaptive_graph_conv (x, p, q, beta, the channel and the joint graph), from the
outside in:

* ``adaptive_graph_conv`` with each ``backend=`` value raises a ``ValueError`` naming the bad argument (torch and
  cuda validate in the function, triton in its raw op);
* the C++ checks of the raw native ops ``torch.ops.trgnet.adaptive_graph_conv`` and ``_backward`` raise a
  ``RuntimeError``;
* the raw Triton ops ``torch.ops.trgnet_triton.adaptive_graph_conv`` and ``_backward`` take valid float64 arguments
  to the float64 reference's values and refuse, with a ``ValueError`` naming the op and the argument, what their
  kernels cannot index (they read flat row-major layouts of one dtype): a non-contiguous, mistyped, misplaced or
  misshaped argument. The shapes are tiny: without a GPU the kernels run in Triton's interpreter.
"""
from __future__ import annotations

import pytest
import torch

from adaptive_cases import NAMES, make_inputs
from op_checks import (BACKEND_DEVICE, DEVICE, TOL, api_backends, assert_native_op_rejects,
                       assert_raw_triton_op_rejects_case, needs, non_contiguous, raw_triton_op_cases, rel_err,
                       run_with_grads, triton_ops, with_arg)
from trgnet_fast.ops.adaptive_graph_conv import OP_NAME, adaptive_graph_conv
from trgnet_fast.ops.adaptive_graph_conv.reference import adaptive_graph_conv_reference
from trgnet_fast.ops.registry import OPS

SPEC = OPS[OP_NAME]
F64_TOL = TOL[torch.float64]


# ----------------------------------------------------------------------------------------------
# the public function

def _replace(name, change):
    """inputs (in NAMES order) -> the inputs with ``name`` replaced by ``change(inputs[name])``."""
    index = NAMES.index(name)
    return lambda *inputs: (*inputs[:index], change(inputs[index]), *inputs[index + 1:])


BAD_INPUTS = {  # case -> (inputs -> bad arguments, argument named in the message)
    "x_not_tensor": (_replace("x", lambda t: t.tolist()), "x"),
    "x_3d": (_replace("x", lambda t: t[0]), "x"),
    "x_int": (_replace("x", lambda t: t.long()), "x"),
    "p_shape": (_replace("p", lambda t: t[:, :3]), "p"),
    "q_shape": (_replace("q", lambda t: t[..., :4]), "q"),
    "beta_shape": (_replace("beta", lambda t: torch.zeros(2, dtype=t.dtype, device=t.device)), "beta"),
    "channel_graph_shape": (_replace("channel_graph", lambda t: t[:, :2]), "channel_graph"),
    "joint_graph_shape": (_replace("joint_graph", lambda t: t[:4]), "joint_graph"),
    "p_dtype": (_replace("p", lambda t: t.float()), "p"),
    "beta_dtype": (_replace("beta", lambda t: t.float()), "beta"),
    "joint_graph_dtype": (_replace("joint_graph", lambda t: t.float()), "joint_graph"),
    "channel_graph_device": (_replace("channel_graph", lambda t: t.to("meta")), "channel_graph"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
@pytest.mark.parametrize("backend", api_backends(SPEC))
def test_rejects_bad_inputs(case, backend):
    change, name = BAD_INPUTS[case]
    args = change(*make_inputs(1, 3, 4, 5, device=BACKEND_DEVICE.get(backend, "cpu")))
    with pytest.raises(ValueError, match=f"adaptive_graph_conv: {name}:"):
        adaptive_graph_conv(*args, backend=backend)


# ----------------------------------------------------------------------------------------------
# the raw native ops (C++ checks)

def test_native_rejects_bad_inputs(native):
    x, p, q, beta, G, J = make_inputs(2, 3, 4, 5, dtype=torch.float32)
    nc = non_contiguous
    assert_native_op_rejects(native.adaptive_graph_conv, [
        ((nc(x), p, q, beta, G, J), "argument 'x': expected a contiguous"),
        ((x[0], p, q, beta, G, J), "argument 'x': expected a 4-D tensor"),
        ((x.int(), p.int(), q.int(), beta.int(), G.int(), J.int()), "argument 'x': expected dtype"),
        ((x, p[:, :3].contiguous(), q, beta, G, J), "argument 'p': expected shape"),
        ((x, p.double(), q, beta, G, J), "argument 'p': expected dtype"),
        ((x, p, nc(q), beta, G, J), "argument 'q': expected a contiguous"),
        ((x, p, q, beta.reshape(()), G, J), "argument 'beta': expected shape"),
        ((x, p, q, beta.half(), G, J), "argument 'beta': expected dtype"),
        ((x, p, q, beta, G[:, :2].contiguous(), J), "argument 'channel_graph': expected shape"),
        ((x, p, q, beta, nc(G), J), "argument 'channel_graph': expected a contiguous"),
        ((x, p, q, beta, G, J[:4].contiguous()), "argument 'joint_graph': expected shape"),
        ((x, p, q, beta, G, J.bfloat16()), "argument 'joint_graph': expected dtype"),
    ])
    g = torch.randn_like(x)
    assert_native_op_rejects(native.adaptive_graph_conv_backward, [
        ((g[:, :2].contiguous(), x, p, q, beta, G, J), "argument 'grad_out': expected shape"),
        ((g.double(), x, p, q, beta, G, J), "argument 'grad_out': expected dtype"),
        ((nc(g), x, p, q, beta, G, J), "argument 'grad_out': expected a contiguous"),
        ((g, x, p, q, beta, G, J[:, :4].contiguous()), "argument 'joint_graph': expected shape"),
    ])


# ----------------------------------------------------------------------------------------------
# the raw Triton ops: valid float64 arguments in schema order, and one bad argument at a time

def _forward_args():
    return dict(zip(NAMES, make_inputs(2, 3, 4, 5, device=DEVICE)))  # (N, C, T, V)


def _backward_args():
    forward = _forward_args()
    return {"grad_out": torch.randn_like(forward["x"]), **forward}


VALID_ARGS = {OP_NAME: _forward_args, f"{OP_NAME}_backward": _backward_args}


@needs("triton", DEVICE)
def test_raw_triton_op_valid_calls_match_reference():
    ops = triton_ops()
    args = _backward_args()
    grad_out, *inputs = args.values()
    ref_out, ref_grads = run_with_grads(adaptive_graph_conv_reference, inputs, grad_out)
    assert rel_err(ops.adaptive_graph_conv(*inputs), ref_out) <= F64_TOL
    grads = ops.adaptive_graph_conv_backward(grad_out, *inputs)
    for name, g, r in zip(NAMES, grads, ref_grads):
        assert rel_err(g, r) <= F64_TOL, name


# (id, change of the valid arguments, argument named, start of the message after "<name>: expected ")
FORWARD_CASES = [
    ("x-non-contiguous", with_arg("x", non_contiguous), "x", "a contiguous tensor"),
    ("q-non-contiguous", with_arg("q", non_contiguous), "q", "a contiguous tensor"),
    ("channel_graph-non-contiguous", with_arg("channel_graph", non_contiguous), "channel_graph",
     "a contiguous tensor"),
    ("p-dtype", with_arg("p", lambda t: t.float()), "p", "dtype torch.float64 (same as x)"),
    ("joint_graph-dtype", with_arg("joint_graph", lambda t: t.half()), "joint_graph",
     "dtype torch.float64 (same as x)"),
    ("p-shape", with_arg("p", lambda t: t[:, :-1].contiguous()), "p", "shape (N, T, V)"),
    ("beta-shape", with_arg("beta", lambda t: t.reshape(())), "beta", "shape (1,)"),
    ("channel_graph-shape", with_arg("channel_graph", lambda t: t[:, :-1].contiguous()), "channel_graph",
     "shape (N, C, V, V)"),
    ("joint_graph-shape", with_arg("joint_graph", lambda t: t[:-1].contiguous()), "joint_graph", "shape (V, V)"),
    ("p-device", with_arg("p", lambda t: t.to("meta")), "p", "device"),
]

BACKWARD_CASES = [
    ("grad_out-non-contiguous", with_arg("grad_out", non_contiguous), "grad_out", "a contiguous tensor"),
    ("joint_graph-non-contiguous", with_arg("joint_graph", non_contiguous), "joint_graph", "a contiguous tensor"),
    ("grad_out-dtype", with_arg("grad_out", lambda t: t.float()), "grad_out", "dtype torch.float64 (same as x)"),
    ("grad_out-shape", with_arg("grad_out", lambda t: t[:, :-1].contiguous()), "grad_out", "shape (N, C, T, V)"),
    ("joint_graph-shape", with_arg("joint_graph", lambda t: t[:, :-1].contiguous()), "joint_graph", "shape (V, V)"),
]


@needs("triton", DEVICE)
@pytest.mark.parametrize("op, case", raw_triton_op_cases(OP_NAME, FORWARD_CASES, BACKWARD_CASES))
def test_raw_triton_op_rejects_bad_argument(op, case):
    assert_raw_triton_op_rejects_case(op, case, VALID_ARGS)
