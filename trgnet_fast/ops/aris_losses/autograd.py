"""Autograd of the fused ARIS terms, shared by the native op ``trgnet::aris_losses`` and the Triton op
``trgnet_triton::aris_losses`` (one schema, ``trgnet_fast/ops/aris_losses/__init__.py``): the fake (meta) kernels,
what the forward saves (the slot inputs, the targets' weights and its small outputs: not the features) and the
backward, which runs the registration's own backward op."""
from __future__ import annotations

import torch

from trgnet_fast import _native
from trgnet_fast.ops._autograd import register_native_op
from trgnet_fast.ops.aris_losses.reference import compute_dtype
from trgnet_fast.ops.aris_losses.validation import TENSOR_NAMES, validate_inputs

OP_NAME = "aris_losses"
# where the backward's inputs sit among the forward's: frame_segment, segment_count, segment_valid, segment_label,
# unit_embeddings, logit_scale, absolute_weight, relative_weight
SAVED_INPUTS = tuple(TENSOR_NAMES.index(name) for name in (
    "frame_segment", "segment_count", "segment_valid", "segment_label", "unit_embeddings", "logit_scale",
    "absolute_weight", "relative_weight"))


def fake_forward(*tensors):
    validate_inputs(f"trgnet::{OP_NAME}", tensors)  # dtypes, shapes: the C++ checks never run here
    features, count, head_weight = tensors[0], tensors[4], tensors[len(TENSOR_NAMES)]
    m, d = count.shape[0], features.shape[1] if head_weight is None else head_weight.shape[0]
    acc = compute_dtype(features.dtype)
    means = (0,) if head_weight is None else (m, features.shape[1])
    return (features.new_empty((2,), dtype=acc), features.new_empty((m, d), dtype=acc),
            features.new_empty((3, m), dtype=acc), features.new_empty((2,), dtype=acc),
            features.new_empty(means, dtype=acc))


def fake_backward(grad_terms, frame_segment, *rest):
    segment_features, head_weight, segment_means, features_dtype = rest[-6], rest[-3], rest[-2], rest[-1]
    n, t = frame_segment.shape
    c = segment_features.shape[1] if head_weight is None else head_weight.shape[1]
    return (segment_features.new_empty((n, c, t), dtype=features_dtype), segment_features.new_empty((1,)),
            segment_features.new_empty((0,) if head_weight is None else tuple(head_weight.shape)),
            segment_features.new_empty((0,) if head_weight is None else (head_weight.shape[0],)))


def setup_context(ctx, inputs, output):
    """Saves the backward's inputs (the head's weight among them, when given) and the forward's four saved outputs;
    the features' dtype on the context."""
    ctx.mark_non_differentiable(*output[1:])
    ctx.set_materialize_grads(False)  # no zero-filled gradients of the saved outputs (the backward ignores them)
    segment_features, row_lse, max_distance, segment_means = output[1:]
    ctx.save_for_backward(*(inputs[i] for i in SAVED_INPUTS), segment_features, row_lse, max_distance,
                          inputs[len(TENSOR_NAMES)], segment_means)
    ctx.features_dtype = inputs[0].dtype


def make_backward(backward_op):
    """The ``register_autograd`` backward that runs ``backward_op`` (native or Triton) on the saved tensors. Returns
    one gradient per forward input: features, None for the slot inputs and embeddings, logit_scale, None for the
    targets, then the head's weight and bias (None without the head)."""
    def backward(ctx, grad_terms, *_grad_saved):
        if grad_terms is None:  # gradients are not materialised: the terms' gradient is undefined (gradcheck asks)
            return (None,) * (len(TENSOR_NAMES) + 2)
        grad_features, grad_scale, grad_weight, grad_bias = backward_op(grad_terms.contiguous(), *ctx.saved_tensors,
                                                                        ctx.features_dtype)
        head = ctx.saved_tensors[-2] is not None
        return (grad_features, None, None, None, None, None, None, None, grad_scale, None, None, None, None,
                grad_weight if head else None, grad_bias if head else None)
    return backward


def register_native() -> None:
    """Fake kernels and autograd of ``trgnet::aris_losses`` (run once the native library is loaded)."""
    register_native_op(OP_NAME, fake_forward, fake_backward,
                       make_backward(torch.ops.trgnet.aris_losses_backward), setup_context)


_native.on_load(register_native)
