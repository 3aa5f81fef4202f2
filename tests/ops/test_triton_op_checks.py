"""Input checks of the raw Triton ops ``torch.ops.trgnet_triton.*`` (forward and backward of linear_attention,
multiscale_graph_conv and adaptive_graph_conv).

The kernels index flat row-major layouts in one dtype, so the ops themselves (not only the Python wrappers)
reject a non-contiguous, mistyped, misplaced or misshaped argument with a ``ValueError`` naming the op and the
argument; valid calls (non-contiguous x / grad_out of multiscale_graph_conv included: its kernels take strides)
still match the float64 references. Tiny shapes: on a CPU-only machine the kernels run in Triton's interpreter.
"""
from __future__ import annotations

import importlib
import re

import pytest
import torch

from attention_cases import EPS, make_inputs, state_reference
from graph_conv_cases import AGC_NAMES, TOL, agc_inputs, msgc_inputs
from op_checks import rel_err, run_with_grads
from trgnet_fast.backend import backend_status
from trgnet_fast.ops.adaptive_graph_conv import adaptive_graph_conv_reference
from trgnet_fast.ops.linear_attention import linear_attention_reference
from trgnet_fast.ops.multiscale_graph_conv import multiscale_graph_conv_reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
F64_TOL = TOL[torch.float64]

pytestmark = [
    pytest.mark.skipif(not backend_status(DEVICE)["triton"][0],
                       reason=f"triton backend unusable: {backend_status(DEVICE)['triton'][1]}"),
]


def _ops():
    """``torch.ops.trgnet_triton`` with the three ops registered (importing their modules registers them; not
    at collection, so that the module skips cleanly without triton)."""
    for module in ("linear_attention", "multiscale_graph_conv", "adaptive_graph_conv"):
        importlib.import_module(f"trgnet_fast.triton.{module}")
    return torch.ops.trgnet_triton


def _non_contiguous(t):
    """The values of t in a non-contiguous layout (last two dims stored transposed)."""
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


# ----------------------------------------------------------------------------------------------
# valid float64 arguments of each op, in schema order

# every sample keeps >= 2 frames, so dq and dk are not O(eps) (see gradient_error_floors)
KEY_MASK = torch.tensor([[1, 1, 0, 1, 1], [1, 0, 1, 1, 0]], dtype=torch.bool, device=DEVICE)


def _attention_args():
    q, k, v, _ = make_inputs(2, 5, 2, 3, 4, device=DEVICE)  # (N, T, H, D, E)
    return {"q": q, "k": k, "v": v, "key_mask": KEY_MASK, "eps": EPS}


def _attention_backward_args():
    q, k, v, key_mask, eps = _attention_args().values()
    kv_state, key_sum = state_reference(k, v, key_mask)  # float64 state
    return {"grad_out": torch.randn_like(v), "q": q, "k": k, "v": v, "key_mask": key_mask, "kv_state": kv_state,
            "key_sum": key_sum, "eps": eps}


def _multiscale_args():
    x, adjacency, weight, bias = msgc_inputs(2, 3, 4, 5, 2, 4, device=DEVICE)  # (N, C, T, V, S, C_out)
    return {"x": x, "adjacency": adjacency, "weight": weight, "bias": bias}


def _multiscale_backward_args():
    forward = _multiscale_args()
    grad_out = torch.randn(2, 4, 4, 5, dtype=torch.float64, device=DEVICE)
    return {"grad_out": grad_out, "x": forward["x"], "adjacency": forward["adjacency"], "weight": forward["weight"]}


def _adaptive_args():
    return dict(zip(AGC_NAMES, agc_inputs(2, 3, 4, 5, device=DEVICE)))  # (N, C, T, V)


def _adaptive_backward_args():
    forward = _adaptive_args()
    return {"grad_out": torch.randn_like(forward["x"]), **forward}


VALID_ARGS = {
    "linear_attention": _attention_args,
    "linear_attention_backward": _attention_backward_args,
    "multiscale_graph_conv": _multiscale_args,
    "multiscale_graph_conv_backward": _multiscale_backward_args,
    "adaptive_graph_conv": _adaptive_args,
    "adaptive_graph_conv_backward": _adaptive_backward_args,
}


# ----------------------------------------------------------------------------------------------
# rejected arguments: (id, replacement of one argument given the valid ones, argument named, start of the
# message after "<name>: expected ")

def _with(name, change):
    return lambda args: args | {name: change(args[name])}


ATTENTION_CASES = [
    ("q-non-contiguous", _with("q", _non_contiguous), "q", "a contiguous tensor"),
    ("v-non-contiguous", _with("v", _non_contiguous), "v", "a contiguous tensor"),
    ("mask-non-contiguous", _with("key_mask", _non_contiguous), "key_mask", "a contiguous tensor"),
    ("k-dtype", _with("k", lambda t: t.float()), "k", "dtype torch.float64 (same as q)"),
    ("mask-dtype", _with("key_mask", lambda t: t.float()), "key_mask", "dtype torch.bool"),
    ("k-shape", _with("k", lambda t: t[..., :2].contiguous()), "k", "shape (N, T, H, D)"),
    ("v-shape", _with("v", lambda t: t[:, :4].contiguous()), "v", "shape (N, T, H, E)"),
    ("mask-shape", _with("key_mask", lambda t: t[:, :4].contiguous()), "key_mask", "shape (N, T)"),
    ("q-rank", _with("q", lambda t: t[0]), "q", "a 4-D tensor"),
    ("k-device", _with("k", lambda t: t.to("meta")), "k", "device"),
    ("fp8", lambda a: a | {n: a[n].to(torch.float8_e5m2) for n in "qkv"}, "q",
     "dtype float32, float64, float16 or bfloat16"),
]

ATTENTION_BACKWARD_CASES = [
    ("grad_out-non-contiguous", _with("grad_out", _non_contiguous), "grad_out", "a contiguous tensor"),
    ("k-non-contiguous", _with("k", _non_contiguous), "k", "a contiguous tensor"),
    ("kv_state-non-contiguous", _with("kv_state", _non_contiguous), "kv_state", "a contiguous tensor"),
    ("grad_out-dtype", _with("grad_out", lambda t: t.float()), "grad_out", "dtype torch.float64 (same as q)"),
    ("kv_state-dtype", _with("kv_state", lambda t: t.float()), "kv_state",
     "dtype torch.float64 (float64 for float64 inputs, else float32)"),
    ("grad_out-shape", _with("grad_out", lambda t: t[..., :2].contiguous()), "grad_out", "shape (N, T, H, E)"),
    ("key_sum-shape", _with("key_sum", lambda t: t[..., :2].contiguous()), "key_sum", "shape (N, H, D)"),
    ("v-shape", _with("v", lambda t: t[:, :4].contiguous()), "v", "shape (N, T, H, E)"),
]

MULTISCALE_CASES = [
    ("weight-non-contiguous", _with("weight", _non_contiguous), "weight", "a contiguous tensor"),
    ("adjacency-non-contiguous", _with("adjacency", _non_contiguous), "adjacency", "a contiguous tensor"),
    ("bias-non-contiguous", _with("bias", lambda t: t.repeat_interleave(2)[::2]), "bias", "a contiguous tensor"),
    ("weight-dtype", _with("weight", lambda t: t.float()), "weight", "dtype torch.float64 (same as x)"),
    ("bias-dtype", _with("bias", lambda t: t.half()), "bias", "dtype torch.float64 (same as x)"),
    ("adjacency-shape", _with("adjacency", lambda t: t[:-1].contiguous()), "adjacency", "shape (S*V, V)"),
    ("weight-shape", _with("weight", lambda t: t[:, :-1].contiguous()), "weight", "shape (C_out, S*C)"),
    ("bias-shape", _with("bias", lambda t: t[:-1].contiguous()), "bias", "shape (C_out,)"),
    ("x-rank", _with("x", lambda t: t[0]), "x", "a 4-D tensor"),
    ("x-int", lambda a: {n: t.int() for n, t in a.items()}, "x", "a floating dtype"),
]

MULTISCALE_BACKWARD_CASES = [
    ("weight-non-contiguous", _with("weight", _non_contiguous), "weight", "a contiguous tensor"),
    ("adjacency-non-contiguous", _with("adjacency", _non_contiguous), "adjacency", "a contiguous tensor"),
    ("grad_out-dtype", _with("grad_out", lambda t: t.float()), "grad_out", "dtype torch.float64 (same as x)"),
    ("grad_out-shape", _with("grad_out", lambda t: t[:, :-1]), "grad_out", "shape (N, C_out, T, V)"),
    ("weight-shape", _with("weight", lambda t: t[:-1, :-1].contiguous()), "weight", "shape (C_out, S*C)"),
]

ADAPTIVE_CASES = [
    ("x-non-contiguous", _with("x", _non_contiguous), "x", "a contiguous tensor"),
    ("q-non-contiguous", _with("q", _non_contiguous), "q", "a contiguous tensor"),
    ("channel_graph-non-contiguous", _with("channel_graph", _non_contiguous), "channel_graph",
     "a contiguous tensor"),
    ("p-dtype", _with("p", lambda t: t.float()), "p", "dtype torch.float64 (same as x)"),
    ("joint_graph-dtype", _with("joint_graph", lambda t: t.half()), "joint_graph", "dtype torch.float64 (same as x)"),
    ("p-shape", _with("p", lambda t: t[:, :-1].contiguous()), "p", "shape (N, T, V)"),
    ("beta-shape", _with("beta", lambda t: t.reshape(())), "beta", "shape (1,)"),
    ("channel_graph-shape", _with("channel_graph", lambda t: t[:, :-1].contiguous()), "channel_graph",
     "shape (N, C, V, V)"),
    ("joint_graph-shape", _with("joint_graph", lambda t: t[:-1].contiguous()), "joint_graph", "shape (V, V)"),
    ("p-device", _with("p", lambda t: t.to("meta")), "p", "device"),
]

ADAPTIVE_BACKWARD_CASES = [
    ("grad_out-non-contiguous", _with("grad_out", _non_contiguous), "grad_out", "a contiguous tensor"),
    ("joint_graph-non-contiguous", _with("joint_graph", _non_contiguous), "joint_graph", "a contiguous tensor"),
    ("grad_out-dtype", _with("grad_out", lambda t: t.float()), "grad_out", "dtype torch.float64 (same as x)"),
    ("grad_out-shape", _with("grad_out", lambda t: t[:, :-1].contiguous()), "grad_out", "shape (N, C, T, V)"),
    ("joint_graph-shape", _with("joint_graph", lambda t: t[:, :-1].contiguous()), "joint_graph", "shape (V, V)"),
]

BAD_ARGUMENT_CASES = [
    (op, case)
    for op, cases in (("linear_attention", ATTENTION_CASES),
                      ("linear_attention_backward", ATTENTION_BACKWARD_CASES),
                      ("multiscale_graph_conv", MULTISCALE_CASES),
                      ("multiscale_graph_conv_backward", MULTISCALE_BACKWARD_CASES),
                      ("adaptive_graph_conv", ADAPTIVE_CASES),
                      ("adaptive_graph_conv_backward", ADAPTIVE_BACKWARD_CASES))
    for case in cases
]


@pytest.mark.parametrize("op, case", BAD_ARGUMENT_CASES, ids=[f"{op}-{case[0]}" for op, case in BAD_ARGUMENT_CASES])
def test_raw_op_rejects_bad_argument(op, case):
    _, change, name, expected = case
    args = change(VALID_ARGS[op]())
    message = re.escape(f"trgnet_triton::{op}: {name}: expected {expected}")
    with pytest.raises(ValueError, match=message):
        getattr(_ops(), op)(*args.values())


def test_contiguity_message_gives_shape_and_strides():
    args = _with("q", _non_contiguous)(_attention_args())
    with pytest.raises(ValueError, match=re.escape("got shape (2, 5, 2, 3) with strides (30, 6, 1, 2)")):
        _ops().linear_attention(*args.values())


# ----------------------------------------------------------------------------------------------
# valid calls still run and match the float64 references

def test_linear_attention_valid_calls_match_reference():
    ops = _ops()
    args = _attention_backward_args()
    grad_out, q, k, v = args["grad_out"], args["q"], args["k"], args["v"]
    out, kv_state, key_sum = ops.linear_attention(q, k, v, KEY_MASK, EPS)
    reference = lambda q, k, v: linear_attention_reference(q, k, v, KEY_MASK, EPS)  # noqa: E731
    ref_out, ref_grads = run_with_grads(reference, [q, k, v], grad_out)
    assert rel_err(out, ref_out) <= F64_TOL
    grads = ops.linear_attention_backward(grad_out, q, k, v, KEY_MASK, kv_state, key_sum, EPS)
    for name, g, r in zip("qkv", grads, ref_grads):
        assert rel_err(g, r) <= F64_TOL, name


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_multiscale_graph_conv_valid_calls_match_reference(layout):
    """x and grad_out with any strides are valid (the kernels take them)."""
    ops = _ops()
    args = _multiscale_backward_args()
    if layout == "strided":
        args = _with("x", _non_contiguous)(_with("grad_out", _non_contiguous)(args))
    grad_out, x, adjacency, weight = args.values()
    bias = torch.randn(weight.shape[0], dtype=torch.float64, device=DEVICE)
    ref_out, ref_grads = run_with_grads(multiscale_graph_conv_reference, [x, adjacency, weight, bias], grad_out)
    assert rel_err(ops.multiscale_graph_conv(x, adjacency, weight, bias), ref_out) <= F64_TOL
    grads = ops.multiscale_graph_conv_backward(grad_out, x, adjacency, weight)
    for name, g, r in zip(("x", "adjacency", "weight", "bias"), grads, ref_grads):
        assert rel_err(g, r) <= F64_TOL, name


def test_adaptive_graph_conv_valid_calls_match_reference():
    ops = _ops()
    args = _adaptive_backward_args()
    grad_out, *inputs = args.values()
    ref_out, ref_grads = run_with_grads(adaptive_graph_conv_reference, inputs, grad_out)
    assert rel_err(ops.adaptive_graph_conv(*inputs), ref_out) <= F64_TOL
    grads = ops.adaptive_graph_conv_backward(grad_out, *inputs)
    for name, g, r in zip(list(args)[1:], grads, ref_grads):
        assert rel_err(g, r) <= F64_TOL, name
