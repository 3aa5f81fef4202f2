"""The ARIS terms of the TRG-Net loss — the absolute (contrastive) and the relative (action-graph) alignment of the
encoder's segment features — as one fused op (docs/model.md#aris-absolute, docs/model.md#aris-relative,
docs/kernels.md#aris_losses).

The M segment slots and their KL targets depend on the labels alone; ``trgnet_fast/losses/targets.py`` builds them
on the CPU, in the data loader (slots past the batch's segments are padding: ``segment_valid`` False). With
features e (N, D, T) (the encoder head's e0), valid_i = segment_valid[i], rows = max(Σ_i valid_i, 1):

    f_i     = (1/count_i) Σ_{t = start_i}^{start_i + count_i − 1} e[video_i, :, t]  for a valid slot, 0 for padding
              (count_i = segment_count[i], start_i = segment_start[i], video_i = segment_video[i])
    bias_ij = −1e30 where a valid row i meets a padding column j, else 0 (a padding column drops out of a real row)
    KL(X; w, lw) = (1/rows) Σ_ij w_ij · (lw_ij − log_softmax_j(X_i· + bias_i·)_j)      (the published "KLLoss")
    f̂_i = f_i / max(‖f_i‖, 1e-12),  ê_i = unit_embeddings[label_i],  L_ij = s · f̂_i·ê_j   (s = logit_scale)
    absolute = ½ · (KL(L; wa, lwa) + KL(Lᵀ; wa, lwa))                 (wa, lwa = absolute_weight, absolute_log_weight)
    d_ij = ‖f_i − f_j‖ where valid_i and valid_j, else 0;  dmax = max_ij d_ij
    P_ij = 1 − d_ij / (dmax + tiny)                                    (tiny: the compute dtype's smallest normal)
    relative = KL(P; wr, lwr)                                          (wr, lwr = relative_weight, relative_log_weight)

Backward (grad_terms = (ga, gr)); p the softmax of each KL's prediction row (with the bias), W_i = Σ_j w_ij:

    G_ij   = ga/(2·rows) · [(Wa_i · p^L_ij − wa_ij) + (Wa_j · p^Lᵀ_ji − wa_ji)]            the gradient of L_ij
    grad s = Σ_ij G_ij · f̂_i·ê_j;   g_i = s · Σ_j G_ij ê_j
    grad f_i (absolute) = (g_i − f̂_i (f̂_i·g_i)) / ‖f_i‖ where ‖f_i‖ > 1e-12, else g_i / 1e-12
    H_ij   = gr/rows · (Wr_i · p^P_ij − wr_ij)                                             the gradient of P_ij
    grad dmax = Σ_ij H_ij d_ij / (dmax + tiny)²; c = the number of the M² entries d_ij equal to dmax (padding pairs'
              zeros included): dmax's gradient goes to them evenly (torch's max, as published)
    δ_ij   = −H_ij / (dmax + tiny) + [d_ij = dmax] · grad dmax / c   for a pair of valid slots, 0 otherwise
    grad f_i (relative) = Σ_j (δ_ij + δ_ji) (f_i − f_j) / d_ij over the j with d_ij > 0 (0 at distance 0)
    grad e[n, :, t] = grad f_i / count_i for i = frame_segment[n, t] when 0 ≤ i < M, else 0

With the feature head (``head_weight`` W (D, C), ``head_bias`` b (D,): the model's ``conv_feature``, e0 = W x + b),
the op takes the head's input x (N, C, T) as ``features`` and never forms e0 (N, D, T): a segment's mean of e0 is
the head applied to its mean of x (the mean is linear), so

    m_i = (1/count_i) Σ_{t = start_i}^{start_i + count_i − 1} x[video_i, :, t]  for a valid slot, 0 for padding
    f_i = W m_i + b                                                             for a valid slot, 0 for padding

and the rest is as above. Its backward, with γ_i = grad f_i (0 for padding slots):

    grad W = Σ_i γ_i m_iᵀ;   grad b = Σ_i γ_i;   grad x[n, :, t] = Wᵀ γ_i / count_i for i = frame_segment[n, t]

frame_segment[n, t] must name exactly the frames of the slots' ranges (``extract_segments`` builds both): the
kernels average over the ranges and spread the gradient through frame_segment; the reference finds the frames
through frame_segment alone. A valid slot's label must lie in [0, K) and its range in [0, T) (the op reads no index
out of range but does not check the values: that would wait for the device). The targets are the loss's KL targets
(``trgnet_fast/losses/terms.py:kl_target``): wa = softmax(10·[label_i = label_j]) and wr = softmax(10·TAG[label_i,
label_j]) over each valid row's valid columns, lw = log w there, both 0 elsewhere.

Shapes: features (N, D, T) (with the head: (N, C, T)) float32, float64, float16 or bfloat16; frame_segment (N, T)
int64; segment_video, segment_start, segment_label (M,) int64; segment_count (M,); segment_valid (M,) bool;
unit_embeddings (K, D) (rows of norm 1: the op does not normalise them); logit_scale (1,); the four weights (M, M);
head_weight (D, C) and head_bias (D,), both or neither. The raw ops take the floating inputs other than the features
in the compute dtype (float64 for float64 features, else float32), which is also the dtype of the result (the public
function converts them); every tensor on one device.

Op schemas (the native ``trgnet::`` in csrc/aris_losses.cpp and the Triton ``trgnet_triton::`` in
``triton_kernels.py`` share them)::

    aris_losses(Tensor features, Tensor frame_segment, Tensor segment_video, Tensor segment_start,
        Tensor segment_count, Tensor segment_valid, Tensor segment_label, Tensor unit_embeddings, Tensor logit_scale,
        Tensor absolute_weight, Tensor absolute_log_weight, Tensor relative_weight, Tensor relative_log_weight,
        Tensor? head_weight, Tensor? head_bias)
        -> (Tensor terms, Tensor segment_features, Tensor row_lse, Tensor max_distance, Tensor segment_means)
    aris_losses_backward(Tensor grad_terms, Tensor frame_segment, Tensor segment_count, Tensor segment_valid,
        Tensor segment_label, Tensor unit_embeddings, Tensor logit_scale, Tensor absolute_weight,
        Tensor relative_weight, Tensor segment_features, Tensor row_lse, Tensor max_distance, Tensor? head_weight,
        Tensor segment_means, ScalarType features_dtype)
        -> (Tensor grad_features, Tensor grad_logit_scale, Tensor grad_head_weight, Tensor grad_head_bias)

terms (2,) = [absolute, relative] in the compute dtype. Saved for the backward (all in the compute dtype, none of
the size of the features): segment_features (M, D) = f; row_lse (3, M) = the logsumexp of every row of L + bias, of
Lᵀ + bias and of P + bias; max_distance (2,) = [dmax, c]; segment_means (M, C) = m with the head, an empty (0,)
tensor without. The backward recomputes L, d and P from f (the same d as the forward, bit for bit: the ties are
found by equality) and returns grad_features (N, D, T) (with the head (N, C, T)) in features_dtype, grad_logit_scale
(1,) and, with the head, grad_head_weight (D, C) and grad_head_bias (D,) in the compute dtype (without: empty (0,)
tensors); gradients flow into the features, logit_scale and the head only.
"""
from __future__ import annotations

import torch

from trgnet_fast import _native
from trgnet_fast.backend import register_op, resolve_backend
from trgnet_fast.ops._checks import check_nonempty
from trgnet_fast.ops.aris_losses.autograd import OP_NAME
from trgnet_fast.ops.aris_losses.reference import aris_losses_reference
from trgnet_fast.ops.aris_losses.validation import (TENSOR_NAMES, check_argument_types, in_compute_dtype,
                                                    validate_inputs)

BACKENDS = ("cuda", "triton")
register_op(OP_NAME, BACKENDS)


def aris_losses(features, frame_segment, segment_video, segment_start, segment_count, segment_valid, segment_label,
                unit_embeddings, logit_scale, absolute_weight, absolute_log_weight, relative_weight,
                relative_log_weight, *, head_weight=None, head_bias=None,
                backend: str | None = None) -> torch.Tensor:
    """[absolute, relative] ARIS terms (formulas and shapes in the module docstring).

    Args:
        features: (N, D, T) the encoder's feature head e0, or with the head (N, C, T) its input. frame_segment: (N, T)
            int64 segment slot of every frame (any value outside [0, M): none). segment_video, segment_start: (M,) int64
            where each slot's frames begin. segment_count: (M,) its number of frames (padding slots: 1). segment_valid:
            (M,) bool, False for padding slots. segment_label: (M,) int64 class of each slot. unit_embeddings: (K, D)
            the unit-norm action text embeddings. logit_scale: (1,) or 0-d, used linearly. absolute_weight,
            absolute_log_weight, relative_weight, relative_log_weight: (M, M) the two KL targets. The floating inputs
            other than the features may come in any supported floating dtype: they are converted to the compute dtype.
        head_weight, head_bias: None, or the feature head's (D, C) weight and (D,) bias (both): the op then forms
            each segment's mean of e0 = head_weight · features + head_bias from the features' segment mean, without
            e0 (N, D, T).
        backend: "auto" | "torch" | "triton" | "cuda" | None, see ``trgnet_fast.backend``.

    Returns:
        terms: (2,) [absolute, relative] in the compute dtype; differentiable w.r.t. features, logit_scale and the
        head.

    Raises:
        ValueError: bad shapes (an empty dimension among them) / dtypes / devices (before any kernel runs).
        RuntimeError: the requested backend is not usable.
    """
    if isinstance(logit_scale, torch.Tensor) and logit_scale.dim() == 0:
        logit_scale = logit_scale.reshape(1)  # a view: the model's parameter may be 0-d or (1,)
    tensors = (features, frame_segment, segment_video, segment_start, segment_count, segment_valid, segment_label,
               unit_embeddings, logit_scale, absolute_weight, absolute_log_weight, relative_weight,
               relative_log_weight, head_weight, head_bias)
    check_argument_types(OP_NAME, tensors)
    head = () if head_weight is None else (("head_weight", head_weight, "(D, C)"), ("head_bias", head_bias, "(D,)"))
    check_nonempty(OP_NAME, (("features", features, "(N, C, T)" if head else "(N, D, T)"),
                             ("segment_count", segment_count, "(M,)"), ("unit_embeddings", unit_embeddings, "(K, D)"),
                             *head))
    tensors = in_compute_dtype(OP_NAME, tensors)
    impl = resolve_backend(OP_NAME, backend, features.device.type)
    contiguous = tuple(None if t is None else t.contiguous() for t in tensors)
    if impl == "triton":
        from trgnet_fast.ops.aris_losses.triton_kernels import aris_losses_triton

        return aris_losses_triton(*contiguous)[0]
    validate_inputs(OP_NAME, tensors)
    if impl == "torch":
        return aris_losses_reference(*tensors)
    if impl == "cuda":
        return _native.ops().aris_losses(*contiguous)[0]
    raise AssertionError(impl)  # every registered backend is dispatched above


__all__ = ["aris_losses", "aris_losses_reference", "TENSOR_NAMES", "BACKENDS"]
