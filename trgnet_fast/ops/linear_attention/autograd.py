"""Autograd of the linear attention, shared by the native op ``trgnet::linear_attention`` and the Triton op
``trgnet_triton::linear_attention`` (one schema): the fake (meta) kernels, the context both forwards save and
the backward formula, which runs the registration's own backward op."""
from __future__ import annotations

import torch

from trgnet_fast import _native
from trgnet_fast.ops._autograd import register_native_op
from trgnet_fast.ops.linear_attention.validation import validate_inputs

OP_NAME = "linear_attention"


def fake_forward(q, k, v, key_mask, eps):
    validate_inputs(f"trgnet::{OP_NAME}", q, k, v, key_mask, eps)  # dtypes, shapes: the C++ checks never run here
    N, T, H, D = q.shape
    E = v.shape[3]
    state = torch.float64 if q.dtype == torch.float64 else torch.float32
    return (q.new_empty((N, T, H, E)), q.new_empty((N, H, D, E), dtype=state),
            q.new_empty((N, H, D), dtype=state))


def fake_backward(grad_out, q, k, v, key_mask, kv_state, key_sum, eps):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def setup_context(ctx, inputs, output):
    """Saves q, k, v, key_mask and the (non-differentiable) state outputs; eps on the context."""
    q, k, v, key_mask, eps = inputs
    _, kv_state, key_sum = output
    ctx.mark_non_differentiable(kv_state, key_sum)
    ctx.save_for_backward(q, k, v, key_mask, kv_state, key_sum)
    ctx.eps = eps


def make_backward(backward_op):
    """The ``register_autograd`` backward that runs ``backward_op`` (native or Triton) on the saved tensors."""
    def backward(ctx, grad_out, _grad_kv_state, _grad_key_sum):
        q, k, v, key_mask, kv_state, key_sum = ctx.saved_tensors
        grad_q, grad_k, grad_v = backward_op(grad_out.contiguous(), q, k, v, key_mask, kv_state, key_sum, ctx.eps)
        return grad_q, grad_k, grad_v, None, None
    return backward


def register_native() -> None:
    """Fake kernels and autograd of ``trgnet::linear_attention`` (run once the native library is loaded)."""
    register_native_op(OP_NAME, fake_forward, fake_backward,
                       make_backward(torch.ops.trgnet.linear_attention_backward), setup_context)


_native.on_load(register_native)
