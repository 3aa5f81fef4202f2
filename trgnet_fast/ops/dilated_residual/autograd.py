"""Autograd of the fused dilated residual layer, shared by the native op ``trgnet::dilated_residual`` and the
Triton op ``trgnet_triton::dilated_residual`` (one schema, ``trgnet_fast/ops/dilated_residual/__init__.py``): the
fake (meta) kernels, what the forward saves (its inputs: the activations are recomputed by the backward) and the
backward, which runs the registration's own backward op."""
from __future__ import annotations

import torch

from trgnet_fast import _native
from trgnet_fast.ops._autograd import register_native_op
from trgnet_fast.ops.dilated_residual.validation import validate_inputs

OP_NAME = "dilated_residual"
N_TENSOR_INPUTS = 8  # x, mask, cu_seqlens, 4 weights and biases, dropout_seed


def fake_forward(x, mask, cu_seqlens, *rest):
    # dtypes, shapes, scalars: the C++ checks never run here
    validate_inputs(f"trgnet::{OP_NAME}", x, mask, cu_seqlens, rest[:4], *rest[4:])
    return torch.empty_like(x)


def fake_backward(grad_out, x, mask, cu_seqlens, *rest):
    weights = rest[:4]
    return (torch.empty_like(x), *(torch.empty_like(w) for w in weights))


def setup_context(ctx, inputs, output):
    """Saves the 8 tensor inputs (None where absent); the scalars on the context."""
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(*inputs[:N_TENSOR_INPUTS])
    ctx.scalars = tuple(inputs[N_TENSOR_INPUTS:])


def make_backward(backward_op):
    """The ``register_autograd`` backward that runs ``backward_op`` (native or Triton) on the saved tensors.
    Returns one gradient per forward input: x, mask / cu_seqlens None, the 4 weights and biases, then None for
    dropout_seed and the scalars."""
    def backward(ctx, grad_out):
        if grad_out is None:  # gradients are not materialised: out took no part in the loss
            return (None,) * (N_TENSOR_INPUTS + len(ctx.scalars))
        grad_x, *weight_grads = backward_op(grad_out.contiguous(), *ctx.saved_tensors, *ctx.scalars)
        return (grad_x, None, None, *weight_grads, None, *(None for _ in ctx.scalars))
    return backward


def register_native() -> None:
    """Fake kernels and autograd of ``trgnet::dilated_residual`` (run once the native library is loaded)."""
    register_native_op(OP_NAME, fake_forward, fake_backward,
                       make_backward(torch.ops.trgnet.dilated_residual_backward), setup_context)


_native.on_load(register_native)
