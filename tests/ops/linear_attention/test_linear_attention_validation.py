"""Argument checks of trgnet_fast.ops.linear_attention:

* the public function, every ``backend=`` value: a ``ValueError`` naming the argument (the op validates once:
  itself for torch / cuda, the raw Triton op for triton);
* the raw native ops ``torch.ops.trgnet.linear_attention`` (+ ``_backward``): the C++ checks (``RuntimeError``);
* the raw Triton ops ``torch.ops.trgnet_triton.linear_attention`` (+ ``_backward``): the kernels index flat
  row-major layouts in one dtype, so the ops themselves reject a non-contiguous, mistyped, misplaced or misshaped
  argument with a ``ValueError`` naming the op and the argument; valid calls still match the float64 reference.
  Tiny shapes: on a CPU-only machine the kernels run in Triton's interpreter.
"""
from __future__ import annotations

import re

import pytest
import torch

from attention_cases import EPS, make_inputs, state_reference
from op_checks import (BACKEND_DEVICE, DEVICE, TOL, api_backends, assert_native_op_rejects,
                       assert_raw_triton_op_rejects_case, needs, non_contiguous, raw_triton_op_cases, rel_err,
                       run_with_grads, triton_ops, with_arg)
from trgnet_fast.ops.linear_attention import OP_NAME, linear_attention
from trgnet_fast.ops.linear_attention.reference import linear_attention_reference
from trgnet_fast.ops.registry import OPS

SPEC = OPS[OP_NAME]
F64_TOL = TOL[torch.float64]


# ----------------------------------------------------------------------------------------------
# the public function

BAD_INPUTS = [  # (id, (q, k, v, mask) -> bad arguments, argument named in the message)
    ("q-rank", lambda q, k, v, mask: (q[0], k, v, mask), "q"),
    ("q-int", lambda q, k, v, mask: (q.int(), k.int(), v.int(), mask), "q"),
    ("k-shape", lambda q, k, v, mask: (q, k[..., :4], v, mask), "k"),
    ("v-shape", lambda q, k, v, mask: (q, k, v[:, :6], mask), "v"),
    ("k-dtype", lambda q, k, v, mask: (q, k.double(), v, mask), "k"),
    ("v-dtype", lambda q, k, v, mask: (q, k, v.half(), mask), "v"),
    ("k-device", lambda q, k, v, mask: (q, k.to("meta"), v, mask), "k"),
    ("mask-shape", lambda q, k, v, mask: (q, k, v, mask[:, :6]), "key_mask"),
    ("mask-dtype", lambda q, k, v, mask: (q, k, v, mask.float()), "key_mask"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda c: c[0])
@pytest.mark.parametrize("backend", api_backends(SPEC))
def test_wrapper_rejects_bad_inputs(case, backend):
    _, change, name = case
    inputs = make_inputs(2, 7, 4, 5, 3, dtype=torch.float32, device=BACKEND_DEVICE.get(backend, "cpu"), masked=True)
    with pytest.raises(ValueError, match=rf"\b{name}: expected"):
        linear_attention(*change(*inputs), eps=EPS, backend=backend)


@pytest.mark.parametrize("eps", [float("nan"), float("inf"), -1e-6, 0.0, 0])
@pytest.mark.parametrize("backend", api_backends(SPEC))
def test_eps_must_be_finite_and_positive(eps, backend):
    """eps keeps the denominator phi(q) . (key sum + eps) away from 0: with every key of a sample masked the key
    sum is 0, and eps = 0 gave NaN on every backend (NaN / inf eps: NaN everywhere)."""
    q, k, v, mask = make_inputs(2, 5, 2, 3, 4, device=BACKEND_DEVICE.get(backend, "cpu"), masked=True)
    mask[0] = False
    with pytest.raises(ValueError, match=re.escape(f"linear_attention: eps: expected a finite float > 0, got {eps!r}")):
        linear_attention(q, k, v, mask, eps=eps, backend=backend)


@pytest.mark.parametrize("fill", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("backend", api_backends(SPEC))
def test_non_finite_masked_key_frames_take_no_part(fill, backend):
    """NaN / inf in the keys and values of masked frames: the torch backend multiplied them by 0 (NaN) and
    poisoned every output of the sample. Every backend now gives the outputs of zeros there, and gradients that
    are finite everywhere and exactly 0 on the masked frames of k and v."""
    q, k, v, _ = make_inputs(2, 7, 3, 5, 3, device=BACKEND_DEVICE.get(backend, "cpu"))
    mask = torch.tensor([[1, 1, 0, 1, 0, 0, 1], [0, 1, 1, 1, 1, 1, 0]], dtype=torch.bool, device=q.device)
    masked = ~mask[:, :, None, None]
    results = []
    for value in (0.0, fill):
        leaves = [q.clone().requires_grad_(True), k.masked_fill(masked, value).requires_grad_(True),
                  v.masked_fill(masked, value).requires_grad_(True)]
        out = linear_attention(*leaves, mask, eps=EPS, backend=backend)
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view_as(out))
        results.append((out.detach(), [t.grad for t in leaves]))
    (out_zero, grads_zero), (out_fill, grads_fill) = results
    assert torch.equal(out_fill, out_zero)
    for name, g_fill, g_zero in zip("qkv", grads_fill, grads_zero):
        assert torch.isfinite(g_fill).all(), name
        assert torch.equal(g_fill, g_zero), name
    for g in grads_fill[1:]:
        assert not g.masked_select(masked).any()


# ----------------------------------------------------------------------------------------------
# the raw native ops (C++ checks)

def test_native_rejects_bad_inputs(native):
    q, k, v, mask = make_inputs(2, 7, 4, 5, 3, dtype=torch.float32, masked=True)
    op = native.linear_attention
    assert_native_op_rejects(op, [
        ((q.transpose(1, 2).contiguous().transpose(1, 2), k, v, mask), "argument 'q': expected a contiguous"),
        ((q[0], k, v, mask), "argument 'q': expected a 4-D tensor"),
        ((q, k[..., :4].contiguous(), v, mask), "argument 'k': expected shape"),
        ((q, k, v[:, :6].contiguous(), mask), "argument 'v': expected shape"),
        ((q, k, v.double(), mask), "argument 'v': expected dtype"),
        ((q, k, v, mask.float()), "argument 'key_mask': expected dtype"),
        ((q, k, v, mask[:, :6].contiguous()), "argument 'key_mask': expected shape"),
        ((q.int(), k.int(), v.int(), mask), "argument 'q': expected dtype"),
    ], EPS)

    out, kv_state, key_sum = op(q, k, v, mask, EPS)
    g = torch.randn_like(out)
    assert_native_op_rejects(native.linear_attention_backward, [
        ((g[..., :2].contiguous(), q, k, v, mask, kv_state, key_sum), "argument 'grad_out': expected shape"),
        ((g, q, k, v, mask, kv_state.double(), key_sum), "argument 'kv_state': expected dtype"),
        ((g, q, k, v, mask, kv_state, key_sum[..., :4].contiguous()), "argument 'key_sum': expected shape"),
    ], EPS)


@pytest.mark.gpu
def test_cuda_rejects_large_head_dims(native_cuda):
    q, k, v, _ = make_inputs(1, 7, 1, 65, 4, dtype=torch.float32, device="cuda")
    with pytest.raises(RuntimeError, match="head dims"):
        native_cuda.linear_attention(q, k, v, None, EPS)


# ----------------------------------------------------------------------------------------------
# the raw Triton ops: valid float64 arguments in schema order, and one bad argument at a time

# every sample keeps >= 2 frames, so dq and dk are not O(eps) (see gradient_error_floors)
KEY_MASK = [[1, 1, 0, 1, 1], [1, 0, 1, 1, 0]]


def _forward_args():
    q, k, v, _ = make_inputs(2, 5, 2, 3, 4, device=DEVICE)  # (N, T, H, D, E)
    return {"q": q, "k": k, "v": v, "key_mask": torch.tensor(KEY_MASK, dtype=torch.bool, device=DEVICE), "eps": EPS}


def _backward_args():
    q, k, v, key_mask, eps = _forward_args().values()
    kv_state, key_sum = state_reference(k, v, key_mask)  # float64 state
    return {"grad_out": torch.randn_like(v), "q": q, "k": k, "v": v, "key_mask": key_mask, "kv_state": kv_state,
            "key_sum": key_sum, "eps": eps}


VALID_ARGS = {OP_NAME: _forward_args, f"{OP_NAME}_backward": _backward_args}

# (id, change of the valid arguments, argument named, start of the message after "<name>: expected ")
FORWARD_CASES = [
    ("q-non-contiguous", with_arg("q", non_contiguous), "q", "a contiguous tensor"),
    ("v-non-contiguous", with_arg("v", non_contiguous), "v", "a contiguous tensor"),
    ("mask-non-contiguous", with_arg("key_mask", non_contiguous), "key_mask", "a contiguous tensor"),
    ("k-dtype", with_arg("k", lambda t: t.float()), "k", "dtype torch.float64 (same as q)"),
    ("mask-dtype", with_arg("key_mask", lambda t: t.float()), "key_mask", "dtype torch.bool"),
    ("k-shape", with_arg("k", lambda t: t[..., :2].contiguous()), "k", "shape (N, T, H, D)"),
    ("v-shape", with_arg("v", lambda t: t[:, :4].contiguous()), "v", "shape (N, T, H, E)"),
    ("mask-shape", with_arg("key_mask", lambda t: t[:, :4].contiguous()), "key_mask", "shape (N, T)"),
    ("q-rank", with_arg("q", lambda t: t[0]), "q", "a 4-D tensor"),
    ("k-device", with_arg("k", lambda t: t.to("meta")), "k", "device"),
    ("fp8", lambda a: a | {n: a[n].to(torch.float8_e5m2) for n in "qkv"}, "q",
     "dtype float32, float64, float16 or bfloat16"),
]

BACKWARD_CASES = [
    ("grad_out-non-contiguous", with_arg("grad_out", non_contiguous), "grad_out", "a contiguous tensor"),
    ("k-non-contiguous", with_arg("k", non_contiguous), "k", "a contiguous tensor"),
    ("kv_state-non-contiguous", with_arg("kv_state", non_contiguous), "kv_state", "a contiguous tensor"),
    ("grad_out-dtype", with_arg("grad_out", lambda t: t.float()), "grad_out", "dtype torch.float64 (same as q)"),
    ("kv_state-dtype", with_arg("kv_state", lambda t: t.float()), "kv_state",
     "dtype torch.float64 (float64 for float64 inputs, else float32)"),
    ("grad_out-shape", with_arg("grad_out", lambda t: t[..., :2].contiguous()), "grad_out", "shape (N, T, H, E)"),
    ("key_sum-shape", with_arg("key_sum", lambda t: t[..., :2].contiguous()), "key_sum", "shape (N, H, D)"),
    ("v-shape", with_arg("v", lambda t: t[:, :4].contiguous()), "v", "shape (N, T, H, E)"),
]


@needs("triton", DEVICE)
@pytest.mark.parametrize("op, case", raw_triton_op_cases(OP_NAME, FORWARD_CASES, BACKWARD_CASES))
def test_raw_triton_op_rejects_bad_argument(op, case):
    assert_raw_triton_op_rejects_case(op, case, VALID_ARGS)


@needs("triton", DEVICE)
def test_contiguity_message_gives_shape_and_strides():
    args = with_arg("q", non_contiguous)(_forward_args())
    with pytest.raises(ValueError, match=re.escape("got shape (2, 5, 2, 3) with strides (30, 6, 1, 2)")):
        triton_ops().linear_attention(*args.values())


@needs("triton", DEVICE)
def test_raw_triton_op_valid_calls_match_reference():
    ops = triton_ops()
    args = _backward_args()
    grad_out, q, k, v, key_mask = (args[n] for n in ("grad_out", "q", "k", "v", "key_mask"))
    out, kv_state, key_sum = ops.linear_attention(q, k, v, key_mask, EPS)
    reference = lambda q, k, v: linear_attention_reference(q, k, v, key_mask, EPS)  # noqa: E731
    ref_out, ref_grads = run_with_grads(reference, [q, k, v], grad_out)
    assert rel_err(out, ref_out) <= F64_TOL
    grads = ops.linear_attention_backward(grad_out, q, k, v, key_mask, kv_state, key_sum, EPS)
    for name, g, r in zip("qkv", grads, ref_grads):
        assert rel_err(g, r) <= F64_TOL, name
