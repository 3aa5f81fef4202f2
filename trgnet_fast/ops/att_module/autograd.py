"""Autograd of the fused AttModule, shared by the native op ``trgnet::att_module`` and the Triton op
``trgnet_triton::att_module`` (one schema, ``trgnet_fast/ops/att_module/__init__.py``): the fake (meta) kernels,
what the forward saves (its inputs and the small statistics and states: the activations are recomputed by the
backward) and the backward, which runs the registration's own backward op."""
from __future__ import annotations

import torch

from trgnet_fast import _native
from trgnet_fast.ops._autograd import register_native_op
from trgnet_fast.ops.att_module.validation import state_dtype, validate_inputs

OP_NAME = "att_module"
N_TENSOR_INPUTS = 18  # x, values, mask, cu_seqlens, 12 weights and biases, alpha, dropout_seed


def fake_forward(x, values, mask, cu_seqlens, conv_weight, *rest):
    # dtypes, shapes, scalars: the C++ checks never run here
    validate_inputs(f"trgnet::{OP_NAME}", x, values, mask, cu_seqlens, (conv_weight, *rest[:11]), *rest[11:])
    heads = rest[14]
    b, c, _ = x.shape
    n = b if cu_seqlens is None else cu_seqlens.shape[0] - 1
    d = c // heads
    sdt = state_dtype(x.dtype)
    return (torch.empty_like(x), x.new_empty((n, 2, c), dtype=sdt), x.new_empty((n, heads, d, d), dtype=sdt),
            x.new_empty((n, heads, d), dtype=sdt))


def fake_backward(grad_out, x, values, mask, cu_seqlens, *rest):
    weights, alpha = rest[:12], rest[12]
    grad_values = torch.empty_like(values) if values is not None else x.new_empty((0,))
    return (torch.empty_like(x), grad_values, *(torch.empty_like(w) for w in weights), torch.empty_like(alpha))


def setup_context(ctx, inputs, output):
    """Saves the 18 tensor inputs (None where absent) and the statistics/states; the scalars on the context."""
    _, norm_stats, kv_state, key_sum = output
    ctx.mark_non_differentiable(norm_stats, kv_state, key_sum)
    ctx.set_materialize_grads(False)  # no zero-filled gradients of the states (the backward ignores them)
    ctx.save_for_backward(*inputs[:N_TENSOR_INPUTS], norm_stats, kv_state, key_sum)
    ctx.scalars = tuple(inputs[N_TENSOR_INPUTS:])


def make_backward(backward_op):
    """The ``register_autograd`` backward that runs ``backward_op`` (native or Triton) on the saved tensors.
    Returns one gradient per forward input: x, values (None in encoder mode), mask / cu_seqlens None, the 12
    weights and biases, alpha, then None for dropout_seed and the scalars."""
    def backward(ctx, grad_out, _grad_norm_stats, _grad_kv_state, _grad_key_sum):
        saved = ctx.saved_tensors
        if grad_out is None:  # gradients are not materialised: out took no part in the loss
            return (None,) * (N_TENSOR_INPUTS + len(ctx.scalars))
        grads = backward_op(grad_out.contiguous(), *saved, *ctx.scalars)
        grad_x, grad_values, weight_grads, grad_alpha = grads[0], grads[1], grads[2:14], grads[14]
        values = saved[1]
        return (grad_x, grad_values if values is not None else None, None, None, *weight_grads, grad_alpha,
                None, *(None for _ in ctx.scalars))
    return backward


def register_native() -> None:
    """Fake kernels and autograd of ``trgnet::att_module`` (run once the native library is loaded)."""
    register_native_op(OP_NAME, fake_forward, fake_backward,
                       make_backward(torch.ops.trgnet.att_module_backward), setup_context)


_native.on_load(register_native)
