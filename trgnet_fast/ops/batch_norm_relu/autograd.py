"""Autograd of the fused BatchNorm + residual + ReLU, shared by the native op ``trgnet::batch_norm_relu`` and the
Triton op ``trgnet_triton::batch_norm_relu`` (one schema, ``trgnet_fast/ops/batch_norm_relu/__init__.py``): the
fake (meta) kernels, what the forward saves (x, out and the statistics) and the backward, which runs the
registration's own backward op."""
from __future__ import annotations

import torch

from trgnet_fast import _native
from trgnet_fast.ops._autograd import register_native_op
from trgnet_fast.ops.batch_norm_relu.validation import state_dtype, validate_backward_inputs, validate_inputs

OP_NAME = "batch_norm_relu"


def fake_forward(x, residual, frame_mask, weight, bias, eps):
    validate_inputs(f"trgnet::{OP_NAME}", x, residual, frame_mask, weight, bias, eps)  # the C++ checks never run here
    c = x.shape[1]
    return torch.empty_like(x), x.new_empty((c,), dtype=state_dtype(x.dtype)), x.new_empty((c,), dtype=state_dtype(x.dtype))


def fake_backward(grad_out, out, x, frame_mask, weight, mean, var, eps, residual_grad):
    validate_backward_inputs(f"trgnet::{OP_NAME}_backward", grad_out, out, x, frame_mask, weight, mean, var, eps,
                             residual_grad)
    grad_residual = torch.empty_like(x) if residual_grad else x.new_empty((0,))
    return torch.empty_like(x), grad_residual, torch.empty_like(weight), torch.empty_like(weight)


def setup_context(ctx, inputs, output):
    """Saves x, frame_mask, weight, out and the statistics; eps and whether a residual was given on the context."""
    x, residual, frame_mask, weight, _bias, eps = inputs
    out, mean, var = output
    ctx.mark_non_differentiable(mean, var)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(out, x, frame_mask, weight, mean, var)
    ctx.eps, ctx.has_residual = eps, residual is not None


def make_backward(backward_op):
    """The ``register_autograd`` backward that runs ``backward_op`` (native or Triton) on the saved tensors: one
    gradient per forward input (x, residual or None, None for frame_mask, weight, bias, None for eps)."""
    def backward(ctx, grad_out, _grad_mean, _grad_var):
        if grad_out is None:  # gradients are not materialised: out took no part in the loss
            return (None,) * 6
        out, x, frame_mask, weight, mean, var = ctx.saved_tensors
        residual_grad = ctx.has_residual and ctx.needs_input_grad[1]
        grad_x, grad_residual, grad_weight, grad_bias = backward_op(
            grad_out.contiguous(), out, x, frame_mask, weight, mean, var, ctx.eps, residual_grad)
        return grad_x, grad_residual if residual_grad else None, None, grad_weight, grad_bias, None
    return backward


def register_native() -> None:
    """Fake kernels and autograd of ``trgnet::batch_norm_relu`` (run once the native library is loaded)."""
    register_native_op(OP_NAME, fake_forward, fake_backward,
                       make_backward(torch.ops.trgnet.batch_norm_relu_backward), setup_context)


_native.on_load(register_native)
