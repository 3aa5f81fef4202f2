"""Autograd of the fused SFI, shared by the native op ``trgnet::spatial_feature_injection`` and the Triton op
``trgnet_triton::spatial_feature_injection`` (one schema, ``trgnet_fast/ops/spatial_feature_injection/__init__.py``):
the fake (meta) kernels, what the forward saves (its inputs: the activations are recomputed by the backward) and the
backward, which runs the registration's own backward op."""
from __future__ import annotations

import torch

from trgnet_fast import _native
from trgnet_fast.ops._autograd import register_native_op
from trgnet_fast.ops.spatial_feature_injection.validation import validate_inputs

OP_NAME = "spatial_feature_injection"
N_TENSOR_INPUTS = 12  # group, h, mask, 8 weights and biases, dropout_seed


def fake_forward(group, h, mask, *rest):
    # dtypes, shapes, dropout: the C++ checks never run here
    validate_inputs(f"trgnet::{OP_NAME}", group, h, mask, rest[:8], *rest[8:])
    return torch.empty_like(h)


def fake_backward(grad_out, group, h, mask, *rest):
    weights = rest[:8]
    grad_group = group.new_empty(tuple(group.shape))  # contiguous, whatever group's strides
    return (grad_group, torch.empty_like(h), *(torch.empty_like(w) for w in weights))


def setup_context(ctx, inputs, output):
    """Saves the 12 tensor inputs (None where absent); dropout on the context."""
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(*inputs[:N_TENSOR_INPUTS])
    ctx.scalars = tuple(inputs[N_TENSOR_INPUTS:])


def make_backward(backward_op):
    """The ``register_autograd`` backward that runs ``backward_op`` (native or Triton) on the saved tensors.
    Returns one gradient per forward input: group, h, mask None, the 8 weights and biases, then None for
    dropout_seed and dropout."""
    def backward(ctx, grad_out):
        if grad_out is None:  # gradients are not materialised: out took no part in the loss
            return (None,) * (N_TENSOR_INPUTS + len(ctx.scalars))
        grad_group, grad_h, *weight_grads = backward_op(grad_out.contiguous(), *ctx.saved_tensors, *ctx.scalars)
        return (grad_group, grad_h, None, *weight_grads, None, *(None for _ in ctx.scalars))
    return backward


def register_native() -> None:
    """Fake kernels and autograd of ``trgnet::spatial_feature_injection`` (run once the native library is loaded)."""
    register_native_op(OP_NAME, fake_forward, fake_backward,
                       make_backward(torch.ops.trgnet.spatial_feature_injection_backward), setup_context)


_native.on_load(register_native)
