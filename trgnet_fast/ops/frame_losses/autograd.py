"""Autograd of the fused per-frame loss terms, shared by the native op ``trgnet::frame_losses`` and the Triton op
``trgnet_triton::frame_losses`` (one schema, ``trgnet_fast/ops/frame_losses/__init__.py``): the fake (meta) kernels,
what the forward saves (its inputs and the small time_lse: everything per frame is recomputed) and the backward,
which runs the registration's own backward op."""
from __future__ import annotations

import torch

from trgnet_fast import _native
from trgnet_fast.ops._autograd import register_native_op
from trgnet_fast.ops.frame_losses.reference import compute_dtype
from trgnet_fast.ops.frame_losses.validation import TENSOR_NAMES, time_lse_shape, validate_inputs

OP_NAME = "frame_losses"
N_TENSOR_INPUTS = len(TENSOR_NAMES)


def fake_forward(*args):
    tensors, (threshold, time_axis) = args[:N_TENSOR_INPUTS], args[N_TENSOR_INPUTS:]
    # dtypes, shapes, scalars: the C++ checks never run here
    validate_inputs(f"trgnet::{OP_NAME}", tensors, threshold, time_axis)
    logits = tensors[0]
    s, n, k, _ = logits.shape
    acc = compute_dtype(logits.dtype)
    return (logits.new_empty((3,), dtype=acc), logits.new_empty(time_lse_shape(s, n, k, time_axis), dtype=acc))


def fake_backward(grad_terms, logits, *rest):
    return torch.empty_like(logits), torch.empty_like(rest[5])  # boundary_logits


def setup_context(ctx, inputs, output):
    """Saves the tensor inputs and time_lse; the scalars on the context."""
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # no zero-filled gradient of time_lse (the backward ignores it)
    ctx.save_for_backward(*inputs[:N_TENSOR_INPUTS], output[1])
    ctx.scalars = tuple(inputs[N_TENSOR_INPUTS:])


def make_backward(backward_op):
    """The ``register_autograd`` backward that runs ``backward_op`` (native or Triton) on the saved tensors.
    Returns one gradient per forward input: logits, None for the labels-only inputs, boundary_logits, None for the
    targets, weights and scalars."""
    def backward(ctx, grad_terms, _grad_time_lse):
        if grad_terms is None:  # gradients are not materialised: the terms' gradient is undefined (gradcheck asks)
            return (None,) * (N_TENSOR_INPUTS + len(ctx.scalars))
        *tensors, time_lse = ctx.saved_tensors
        grad_logits, grad_boundary = backward_op(grad_terms.contiguous(), *tensors, time_lse, *ctx.scalars)
        return (grad_logits, None, None, None, None, None, grad_boundary, None, None, None,
                *(None for _ in ctx.scalars))
    return backward


def register_native() -> None:
    """Fake kernels and autograd of ``trgnet::frame_losses`` (run once the native library is loaded)."""
    register_native_op(OP_NAME, fake_forward, fake_backward,
                       make_backward(torch.ops.trgnet.frame_losses_backward), setup_context)


_native.on_load(register_native)
