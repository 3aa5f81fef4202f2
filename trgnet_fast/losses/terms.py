"""The individual TRG-Net loss terms (docs/model.md#losses), vectorized on the device.

No function here calls ``.item()``/``.tolist()`` or loops over frames, pairs or segments in Python.
Every term is computed in float32 (or float64 if given float64) whatever the input dtype.
"""
from __future__ import annotations

from typing import Iterable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from trgnet_fast.data.labels import IGNORE_INDEX

__all__ = ["frame_log_probs", "cross_entropy", "cross_entropy_frame_weight", "gs_tmse", "gs_tmse_pairs",
           "gs_tmse_weights", "GsTmsePairs", "boundary_bce", "boundary_frame_weight", "boundary_pos_weight", "KLTarget",
           "kl_target", "kl_divergence",
           "kl_loss", "aris_absolute", "absolute_target", "aris_relative", "relative_target", "pairwise_distance",
           "relative_similarity"]


def _acc(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


def frame_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """(..., K, T) logits → (..., K, T) log-probabilities over the classes (dim -2), in float32 / float64."""
    return F.log_softmax(_acc(logits), dim=-2)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, class_weight: torch.Tensor | None = None,
                  ignore_index: int = IGNORE_INDEX, log_probs: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy (docs/model.md#cross-entropy): CE over classes, mean over the non-ignored frames of
    the batch (weighted mean with weights).

    logits: (N, K, T); labels: (N, T) long; class_weight: optional (K,);
    log_probs: optional precomputed ``frame_log_probs(logits)`` (shared with GS-TMSE).
    """
    if log_probs is None:
        log_probs = frame_log_probs(logits)
    w = None if class_weight is None else class_weight.to(log_probs.dtype)
    return F.nll_loss(log_probs, labels, weight=w, ignore_index=ignore_index)


def cross_entropy_frame_weight(labels: torch.Tensor, class_weight: torch.Tensor | None = None,
                               ignore_index: int = IGNORE_INDEX, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, T) weight of every frame's CE, the mean of :func:`cross_entropy` folded in: class_weight[y] (1 without
    weights) over their sum on the batch's labelled frames, 0 on ignored frames; NaN everywhere when no frame is
    labelled (0 / 0, where F.nll_loss's mean is NaN too). labels: (N, T) long; class_weight: optional (K,)."""
    valid = labels != ignore_index
    if class_weight is None:
        weight = valid.to(dtype)
    else:
        weight = torch.where(valid, class_weight.to(dtype)[labels.masked_fill(~valid, 0)], 0.0)
    return weight / weight.sum()


def _next_valid_index(valid: torch.Tensor) -> torch.Tensor:
    """(N, T) long: index of the next valid frame after t in the same row, T if there is none."""
    n, t = valid.shape
    idx = torch.arange(t, device=valid.device).expand(n, t)
    own = torch.where(valid, idx, torch.full_like(idx, t))
    # suffix minimum over frames > t
    suffix_min = own.flip(1).cummin(1).values.flip(1)
    nxt = torch.full_like(idx, t)
    nxt[:, :-1] = suffix_min[:, 1:]
    return nxt


class GsTmsePairs(NamedTuple):
    """The labels-only part of GS-TMSE (see :func:`gs_tmse_pairs`) for a batch of N samples of T frames.

    next_frame (N, 1, T) long: time index of the next valid frame of the same row (the frame itself where there
    is none); weight (N, T) float: 1 / (N · pairs of the sample) on the frames that start a pair (every valid
    frame but a row's last), 0 elsewhere — the per-sample mean and the batch mean in one factor;
    time_bias (2, N, 1, T) float: [0] 0 on the frames that end a pair, [1] on those that start one, -inf elsewhere
    (a row without such frames: 0 everywhere — finite, and only ever used with weight 0), added to logits before
    the time-axis logsumexp (both in one op); previous_frame (N, T) long: time index of the previous valid frame of
    the same row (the frame itself where there is none; the inverse of next_frame on the pairs, for the fused
    ``frame_losses`` op).
    """

    next_frame: torch.Tensor
    weight: torch.Tensor
    time_bias: torch.Tensor
    previous_frame: torch.Tensor


def _frame_bias(frames: torch.Tensor, dtype) -> torch.Tensor:
    """(..., N, T) bool → (..., N, 1, T): 0 on ``frames``, -inf elsewhere; a row without frames takes every frame."""
    frames = frames | ~frames.any(-1, keepdim=True)
    return torch.zeros(frames.shape, dtype=dtype, device=frames.device).masked_fill(~frames, float("-inf"))[..., None, :]


def gs_tmse_pairs(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                  dtype: torch.dtype = torch.float32) -> GsTmsePairs:
    """The pairs of consecutive valid frames of each sample, from the labels (N, T) only; float parts in ``dtype``."""
    n, t = labels.shape
    valid = labels != ignore_index
    nxt = _next_valid_index(valid)
    has_pair = valid & (nxt < t)  # frame u is the first of a compacted pair (u, nxt[u])
    own = torch.arange(t, device=labels.device).expand(n, t)
    second = valid & (valid.long().cumsum(1) > 1)
    weight = has_pair.to(dtype) / (has_pair.sum(1, keepdim=True).clamp(min=1).to(dtype) * max(n, 1))
    # the previous valid frame: the running maximum of the valid frames' indices, shifted by one
    last_valid = torch.where(valid, own, torch.full_like(own, -1)).cummax(1).values
    previous = torch.cat([last_valid.new_full((n, 1), -1), last_valid[:, :-1]], dim=1)
    return GsTmsePairs(torch.where(has_pair, nxt, own)[:, None], weight,
                       _frame_bias(torch.stack([second, has_pair]), dtype), torch.where(second, previous, own))


def gs_tmse_weights(x: torch.Tensor, pairs: GsTmsePairs, sigma: float = 1.0) -> torch.Tensor:
    """(N, T) Gaussian similarity exp(-‖x[..., v] - x[..., u]‖₂ / (2σ²)) of every pair (u, v) times the pair's
    ``pairs.weight``, 0 where no pair starts; x: (N, C, V, T) raw model input (no gradient flows into it)."""
    n, t = x.shape[0], x.shape[-1]
    s = _acc(x).detach().reshape(n, -1, t)  # (N, C·V, T)
    dist = torch.linalg.vector_norm(s.gather(2, pairs.next_frame.expand_as(s)) - s, dim=1)
    return torch.exp(dist * (-1.0 / (2.0 * sigma * sigma))) * pairs.weight.to(dist.dtype)


def gs_tmse(logits: torch.Tensor, x: torch.Tensor, labels: torch.Tensor, threshold: float = 4.0,
            sigma: float = 1.0, ignore_index: int = IGNORE_INDEX, log_softmax_over: str = "time",
            log_probs: torch.Tensor | None = None, pairs: GsTmsePairs | None = None,
            weights: torch.Tensor | None = None) -> torch.Tensor:
    """GS-TMSE: Gaussian-similarity-weighted, clamped temporal MSE of log-softmaxed logits
    (docs/model.md#gs-tmse).

    logits: (N, K, T), or (S, N, K, T) for S stages sharing the labels (the mean over stages); x: (N, C, V, T)
    raw (augmented) model input, the similarity source (no gradient flows into x); labels: (N, T) long,
    ``ignore_index`` frames are removed per sample (compaction, order kept). Per sample, with z (K, T') its
    compacted logits and (u, v) the T'−1 pairs of consecutive compacted frames:
    w = exp(-‖x[:, :, v] - x[:, :, u]‖₂ / (2σ²)), ℓ_k = min((a_k,v - b_k,u)², threshold²),
    loss_n = mean over (k, pair) of w·ℓ_k; result = mean over the batch. a and b are log-softmaxes:

    * ``log_softmax_over="time"`` (the published code): a = log_softmax of z[:, 1:] and b = log_softmax of
      z[:, :-1], each over its own frames (time), per class row — two different normalisers;
    * ``log_softmax_over="classes"``: a = b = log_softmax of z over classes, per frame (MS-TCN's TMSE).

    A sample with fewer than two valid frames has no pair and contributes 0 (the published code would
    produce NaN). log_probs: optional precomputed ``frame_log_probs(logits)`` (classes only); pairs: optional
    precomputed ``gs_tmse_pairs(labels, ignore_index)``; weights: optional ``gs_tmse_weights(x, pairs, sigma)``
    (the pair weights of the mean folded in).
    """
    k, t = logits.shape[-2:]
    if pairs is None:
        pairs = gs_tmse_pairs(labels, ignore_index, _acc(logits).dtype)
    if weights is None:
        weights = gs_tmse_weights(x, pairs, sigma)
    next_frame = pairs.next_frame.expand(logits.shape)
    if log_softmax_over == "classes":
        lp = frame_log_probs(logits) if log_probs is None else log_probs
        diff = lp.gather(-1, next_frame) - lp
    elif log_softmax_over == "time":
        z = _acc(logits)
        # a_k,v - b_k,u = (z_k,v - z_k,u) - (lse over the second frames - lse over the first frames)
        # (..., 2, N, K); unbind, not two selects: its backward is one stack, theirs two scatters and a sum
        second, first = (z.unsqueeze(-4) + pairs.time_bias.to(z.dtype)).logsumexp(-1).unbind(-3)
        shift = second - first
        diff = z.gather(-1, next_frame) - z - shift[..., None]
    else:
        raise ValueError(f"log_softmax_over: expected 'time' or 'classes', got {log_softmax_over!r}")
    sq = diff.square().clamp(max=threshold * threshold)
    stages = sq.numel() // max(weights.numel() * k, 1)
    return (sq.sum(-2) * weights.to(sq.dtype)).sum() / (k * max(stages, 1))


def boundary_frame_weight(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, 1, T) weight of every frame's BCE: mask / (N · max(valid frames of the sample, 1))."""
    m = mask.to(dtype)
    return m / (m.sum(dim=(1, 2), keepdim=True).clamp(min=1) * max(m.shape[0], 1))


def boundary_bce(boundary_logits: torch.Tensor, boundary: torch.Tensor, mask: torch.Tensor,
                 pos_weight: torch.Tensor | float, frame_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Boundary loss (docs/model.md#boundary-loss): BCEWithLogits(pos_weight), mean over each sample's
    valid frames, summed and divided by N.

    boundary_logits: (N, 1, T), or (S, N, 1, T) for S stages (the mean over stages); boundary, mask: (N, 1, T);
    pos_weight: scalar (float or 0-d / (1,) tensor); frame_weight: optional ``boundary_frame_weight(mask)``.
    """
    z = _acc(boundary_logits)
    if not torch.is_tensor(pos_weight):
        pos_weight = torch.tensor(float(pos_weight), device=z.device, dtype=z.dtype)
    if frame_weight is None:
        frame_weight = boundary_frame_weight(mask, z.dtype)
    per = F.binary_cross_entropy_with_logits(z, boundary.to(z.dtype).expand_as(z), reduction="none",
                                             pos_weight=pos_weight.to(z.dtype))
    stages = z.numel() // max(boundary.numel(), 1)
    return (per * frame_weight.to(z.dtype)).sum() / max(stages, 1)


def boundary_pos_weight(boundary_arrays: Iterable, sources: Iterable[str] | None = None) -> float:
    """BCE ``pos_weight`` = (total frames) / (positive frames) over a training set's boundary arrays
    (docs/model.md#boundary-loss).

    boundary_arrays: iterable of arrays or tensors (any shape), one per video — the published code counts
    the full-rate ``gt_boundary_arr`` files of the training csv (before any temporal downsampling).
    sources: optional names (e.g. file paths), one per array, used in error messages.

    As published, every value is cast to int64 (truncation toward zero: 0.5 → 0, 1.7 → 1) and the frames
    equal to 1 are the positives; every frame counts towards the total. Values whose cast is neither 0 nor
    1 (≤ −1, ≥ 2, NaN, ±inf) raise ValueError naming the source: the published count crashes on most of
    them (and silently counts −1 as a positive, −2 as a negative). Raises ValueError if there are no frames
    or no positives.
    """
    names = None if sources is None else list(sources)
    total = positive = count = 0
    for count, b in enumerate(boundary_arrays, 1):
        where = f"boundary array {count - 1}" if names is None or count > len(names) else names[count - 1]
        a = b.detach().cpu().numpy() if torch.is_tensor(b) else np.asarray(b)
        if not (a.dtype == bool or np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
            raise ValueError(f"{where}: expected numeric boundary values, got dtype {a.dtype}")
        bad = ~((a > -1) & (a < 2))  # exactly the values whose int64 cast is not 0 or 1 (±inf included), NaN
        if bad.any():
            raise ValueError(f"{where}: expected boundary values that cast to 0 or 1 (in (-1, 2)), got "
                             f"{np.unique(a[bad])[:5].tolist()}")
        total += a.size
        positive += int(np.count_nonzero(a.astype(np.int64)))
    if names is not None and count != len(names):
        raise ValueError(f"sources: expected one name per boundary array ({count}), got {len(names)}")
    if total == 0 or positive == 0:
        raise ValueError(f"boundary_arrays: need frames and positive frames, got {total} frames, "
                         f"{positive} positives")
    return total / positive


# a dropped column of a KL prediction: exp underflows to exactly 0, and 0 · (its log-softmax) stays 0 (with -inf
# it would be 0 · -inf = NaN)
_DROPPED = -1e30


class KLTarget(NamedTuple):
    """The prediction-independent part of the published KLLoss over the rows of an (M, M) matrix (:func:`kl_target`).

    weight (M, M): q = row-softmax(temperature · target) on the pairs of valid slots, 0 elsewhere; log_weight
    (M, M): log q there, 0 elsewhere; bias (M, M): 0, or a large negative number on the columns a prediction
    row drops (a real row's padding columns); rows (): the number of valid rows (≥ 1), the mean's divisor.
    """

    weight: torch.Tensor
    log_weight: torch.Tensor
    bias: torch.Tensor
    rows: torch.Tensor


def _pair_mask(valid: torch.Tensor) -> torch.Tensor:
    """(M, M) bool: both segments real."""
    return valid[:, None] & valid[None, :]


def kl_target(target: torch.Tensor, temperature: float = 10.0, valid: torch.Tensor | None = None,
              dtype: torch.dtype | None = None) -> KLTarget:
    """The KL target of an (M, M) ``target`` matrix (:class:`KLTarget`); valid: optional (M,) bool, False for
    padding slots (``extract_segments(max_segments=...)``); dtype: of the float parts (default: target's, at
    least float32)."""
    target = temperature * target.to(dtype or _acc(target).dtype)
    m = target.shape[0]
    if valid is None:
        valid = torch.ones(m, dtype=torch.bool, device=target.device)
    pair = _pair_mask(valid)
    # a padding row keeps its columns (finite, then weighted 0); a real row loses the padding columns
    dropped = ~(pair | ~valid[:, None])
    log_q = F.log_softmax(target.masked_fill(dropped, float("-inf")), dim=1)
    log_weight = torch.where(pair, log_q, 0.0)  # where, not a product: dropped entries hold -inf
    return KLTarget(torch.where(pair, log_q.exp(), 0.0), log_weight, torch.where(dropped, _DROPPED, 0.0).to(target.dtype),
                    valid.sum().clamp(min=1).to(target.dtype))


def kl_divergence(pred: torch.Tensor, target: KLTarget) -> torch.Tensor:
    """Published "KLLoss" of (..., M, M) predictions against one target: (1/M')·Σ_i KL(q_i ‖ p_i) over the valid
    rows i and columns, log p = row-log-softmax(pred); (...) values, 0 for M = 0."""
    log_p = F.log_softmax(pred + target.bias.to(pred.dtype), dim=-1)
    terms = target.weight.to(pred.dtype) * (target.log_weight.to(pred.dtype) - log_p)
    return terms.sum((-2, -1)) / target.rows.to(pred.dtype)


def kl_loss(pred: torch.Tensor, target: torch.Tensor, temperature: float = 10.0,
            valid: torch.Tensor | None = None) -> torch.Tensor:
    """Published "KLLoss": q = row-softmax(temperature·target), log p = row-log-softmax(pred),
    value (1/M)·Σ_i KL(q_i ‖ p_i) for (M, M) inputs; 0 for M = 0.

    valid: optional (M,) bool, False for padding slots (``extract_segments(max_segments=...)``): the value is
    that of the (M', M') submatrix of the valid rows and columns, M' = valid.sum(), and padding gets no
    gradient.
    """
    pred = _acc(pred)
    return kl_divergence(pred, kl_target(target, temperature, valid, pred.dtype))


def aris_absolute(segment_features: torch.Tensor, segment_labels: torch.Tensor,
                  action_embeddings: torch.Tensor, logit_scale: torch.Tensor,
                  valid: torch.Tensor | None = None, target: KLTarget | None = None,
                  embeddings_normalized: bool = False) -> torch.Tensor:
    """ARIS absolute term (docs/model.md#aris-absolute) *without* its 0.8 weight:
    (KL(L_img, G) + KL(L_txt, G)) / 2.

    segment_features: (M, D) segment means of e0; segment_labels: (M,) long; action_embeddings:
    (K, D); logit_scale: (1,) or 0-d, used linearly. L_img = s·f̂ t̂ᵀ, L_txt = L_imgᵀ,
    G_ij = [label_i == label_j]. valid: optional (M,) bool, False for padding slots (:func:`kl_loss`);
    target: optional precomputed ``absolute_target(segment_labels, valid)``; embeddings_normalized: the rows of
    action_embeddings are already t̂ (``F.normalize(action_embeddings, dim=1)``: the same values).
    """
    f = F.normalize(_acc(segment_features), dim=1)
    e = action_embeddings.to(f.dtype)
    e = e[segment_labels] if embeddings_normalized else F.normalize(e[segment_labels], dim=1)
    logits_img = logit_scale.to(f.dtype).reshape(()) * (f @ e.T)
    if target is None:
        target = absolute_target(segment_labels, valid, f.dtype)
    return kl_divergence(torch.stack([logits_img, logits_img.T]), target).mean()


def absolute_target(segment_labels: torch.Tensor, valid: torch.Tensor | None = None,
                    dtype: torch.dtype = torch.float32) -> KLTarget:
    """The KL target of the ARIS absolute term: G_ij = [label_i == label_j] (:func:`kl_target`)."""
    return kl_target(segment_labels[:, None] == segment_labels[None, :], valid=valid, dtype=dtype)


def pairwise_distance(f: torch.Tensor) -> torch.Tensor:
    """(M, M) Euclidean distances between the rows of f (M, D), computed directly (no Gram matrix,
    so no cancellation); gradient 0 at zero distance."""
    return torch.cdist(f[None], f[None], compute_mode="donot_use_mm_for_euclid_dist").squeeze(0)


def relative_similarity(segment_features: torch.Tensor, valid: torch.Tensor | None = None,
                        unpaired: torch.Tensor | None = None) -> torch.Tensor:
    """P = 1 - d / max d with d the pairwise distances of the un-normalised features
    (docs/model.md#aris-relative); with ``valid`` (M,) bool, max d runs over pairs of valid rows only
    (unpaired: optional precomputed (M, M) bool, True where a slot of the pair is padding).

    If max d = 0 (M = 1, or all features equal) the division is by a tiny positive number instead,
    so P = 1 everywhere (every segment is maximally similar to itself) and nothing is NaN. Pairs with a padding slot
    get P = 1 too (their d is taken as 0): finite whatever max d is, and weighted 0 by the loss (a padding pair's
    d over a max d of 0 would be inf, and 0 · inf is NaN).
    """
    d = pairwise_distance(_acc(segment_features))
    if d.numel() == 0:
        return d
    if unpaired is None and valid is not None:
        unpaired = ~_pair_mask(valid)
    if unpaired is not None:
        d = d.masked_fill(unpaired, 0.0)
    largest = d.max()  # ties share the gradient, as published
    # + tiny instead of clamp(min=tiny): the same divisor (tiny vanishes in any normal max d, and 0 + tiny = tiny),
    # and a backward without the clamp's mask ops
    return 1 - d / (largest + torch.finfo(d.dtype).tiny)


def relative_target(segment_labels: torch.Tensor, action_graph: torch.Tensor, valid: torch.Tensor | None = None,
                    dtype: torch.dtype = torch.float32) -> KLTarget:
    """The KL target of the ARIS relative term: TAG_sub = TAG[label_i, label_j] (:func:`kl_target`)."""
    tag_sub = action_graph.to(dtype)[segment_labels[:, None], segment_labels[None, :]]
    return kl_target(tag_sub, valid=valid, dtype=dtype)


def aris_relative(segment_features: torch.Tensor, segment_labels: torch.Tensor,
                  action_graph: torch.Tensor, valid: torch.Tensor | None = None,
                  target: KLTarget | None = None, unpaired: torch.Tensor | None = None) -> torch.Tensor:
    """ARIS relative term (docs/model.md#aris-relative) *without* its 1.0 weight: KL(P, TAG_sub),
    TAG_sub = TAG[label_i, label_j].

    segment_features: (M, D); segment_labels: (M,) long; action_graph: (K, K) TAG; valid: optional (M,)
    bool, False for padding slots (:func:`kl_loss`); target, unpaired: optional precomputed
    ``relative_target(segment_labels, action_graph, valid)`` and ``~(valid_i & valid_j)``.
    """
    p = relative_similarity(segment_features, valid, unpaired)
    if target is None:
        target = relative_target(segment_labels, action_graph, valid, p.dtype)
    return kl_divergence(p, target)
