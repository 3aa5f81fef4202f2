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

__all__ = ["frame_log_probs", "cross_entropy", "gs_tmse", "gs_tmse_pairs", "GsTmsePairs", "repeat_pairs",
           "boundary_bce", "boundary_pos_weight", "kl_loss", "aris_absolute", "aris_relative", "pairwise_distance",
           "relative_similarity"]


def _acc(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


def frame_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """(N, K, T) logits → (N·T, K) log-probabilities over classes, frame-major and contiguous
    (the class reduction then runs over contiguous memory; rows are gathered cheaply)."""
    n, k, t = logits.shape
    return F.log_softmax(_acc(logits).transpose(1, 2).reshape(n * t, k), dim=1)


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
    return F.nll_loss(log_probs, labels.reshape(-1), weight=w, ignore_index=ignore_index)


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
    """The logits-independent part of GS-TMSE (see :func:`gs_tmse_pairs`); N·T frames, frame-major.

    next_flat (N·T,) long: flat index of the next valid frame of the same row (the frame itself where there
    is none); weight (N·T,): Gaussian similarity of the pair (frame, next valid frame), 0 where the frame
    starts no pair; count (N,) long: pairs per sample; first (N, T) bool: frames that start a pair (every
    valid frame but a row's last); second (N, T) bool: frames that end a pair (every valid frame but a row's
    first).
    """

    next_flat: torch.Tensor
    weight: torch.Tensor
    count: torch.Tensor
    first: torch.Tensor
    second: torch.Tensor


def gs_tmse_pairs(x: torch.Tensor, labels: torch.Tensor, sigma: float = 1.0,
                  ignore_index: int = IGNORE_INDEX) -> GsTmsePairs:
    """The pairs of consecutive valid frames of each sample and their Gaussian similarity weights, shared
    by all logit stages. x: (N, C, V, T) raw model input; labels: (N, T)."""
    n, t = labels.shape
    valid = labels != ignore_index
    nxt = _next_valid_index(valid)
    has_pair = valid & (nxt < t)  # frame u is the first of a compacted pair (u, nxt[u])
    rows = torch.arange(n, device=labels.device)[:, None] * t
    own = rows + torch.arange(t, device=labels.device)
    next_flat = torch.where(has_pair, rows + nxt, own).reshape(-1)
    s = _acc(x).detach().reshape(n, -1, t).transpose(1, 2).reshape(n * t, -1)  # (N·T, C·V)
    dist = torch.linalg.vector_norm(s.index_select(0, next_flat) - s, dim=1)
    w = torch.exp(-dist / (2.0 * sigma * sigma)) * has_pair.reshape(-1)
    second = valid & (valid.long().cumsum(1) > 1)
    return GsTmsePairs(next_flat, w, has_pair.sum(1), has_pair, second)


def repeat_pairs(pairs: GsTmsePairs, times: int) -> GsTmsePairs:
    """The pairs of a batch of N samples for the batch repeated ``times`` times along N (the logit stages stacked:
    sample s·N + n is sample n), without recomputing the similarity weights."""
    if times == 1:
        return pairs
    frames = pairs.first.numel()  # N·T
    offsets = torch.arange(times, device=pairs.next_flat.device)[:, None] * frames
    return GsTmsePairs((pairs.next_flat[None, :] + offsets).reshape(-1), pairs.weight.repeat(times),
                       pairs.count.repeat(times), pairs.first.repeat(times, 1), pairs.second.repeat(times, 1))


def _masked_logsumexp(z: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """(N, K): logsumexp over the frames of ``frames`` (N, T) of z (N, K, T). A row without frames takes
    every frame instead (finite, and only ever used with weight 0), so no -inf enters a gradient."""
    frames = frames | ~frames.any(1, keepdim=True)
    return z.masked_fill(~frames[:, None, :], float("-inf")).logsumexp(2)


def gs_tmse(logits: torch.Tensor, x: torch.Tensor, labels: torch.Tensor, threshold: float = 4.0,
            sigma: float = 1.0, ignore_index: int = IGNORE_INDEX, log_softmax_over: str = "time",
            log_probs: torch.Tensor | None = None, pairs: GsTmsePairs | None = None) -> torch.Tensor:
    """GS-TMSE: Gaussian-similarity-weighted, clamped temporal MSE of log-softmaxed logits
    (docs/model.md#gs-tmse).

    logits: (N, K, T); x: (N, C, V, T) raw (augmented) model input, the similarity source (no gradient
    flows into x); labels: (N, T) long, ``ignore_index`` frames are removed per sample (compaction, order
    kept). Per sample, with z (K, T') its compacted logits and (u, v) the T'−1 pairs of consecutive
    compacted frames: w = exp(-‖x[:, :, v] - x[:, :, u]‖₂ / (2σ²)), ℓ_k = min((a_k,v - b_k,u)², threshold²),
    loss_n = mean over (k, pair) of w·ℓ_k; result = mean over the batch. a and b are log-softmaxes:

    * ``log_softmax_over="time"`` (the published code): a = log_softmax of z[:, 1:] and b = log_softmax of
      z[:, :-1], each over its own frames (time), per class row — two different normalisers;
    * ``log_softmax_over="classes"``: a = b = log_softmax of z over classes, per frame (MS-TCN's TMSE).

    A sample with fewer than two valid frames has no pair and contributes 0 (the published code would
    produce NaN). log_probs: optional precomputed ``frame_log_probs(logits)`` (classes only); pairs:
    optional precomputed ``gs_tmse_pairs(x, labels, sigma, ignore_index)``.
    """
    n, k, t = logits.shape
    if pairs is None:
        pairs = gs_tmse_pairs(x, labels, sigma, ignore_index)
    if log_softmax_over == "classes":
        lp = frame_log_probs(logits) if log_probs is None else log_probs
        diff = lp.index_select(0, pairs.next_flat) - lp
    elif log_softmax_over == "time":
        z = _acc(logits)
        # a_k,v - b_k,u = (z_k,v - z_k,u) - (lse over the second frames - lse over the first frames)
        shift = _masked_logsumexp(z, pairs.second) - _masked_logsumexp(z, pairs.first)  # (N, K)
        zf = z.transpose(1, 2).reshape(n * t, k)
        diff = (zf.index_select(0, pairs.next_flat) - zf).reshape(n, t, k) - shift[:, None, :]
        diff = diff.reshape(n * t, k)
    else:
        raise ValueError(f"log_softmax_over: expected 'time' or 'classes', got {log_softmax_over!r}")
    sq = diff.pow(2).clamp(max=threshold * threshold)
    per_frame = (sq.sum(1) * pairs.weight.to(sq.dtype)).reshape(n, t)
    per_sample = per_frame.sum(1) / (pairs.count.clamp(min=1).to(sq.dtype) * k)
    return per_sample.mean()


def boundary_bce(boundary_logits: torch.Tensor, boundary: torch.Tensor, mask: torch.Tensor,
                 pos_weight: torch.Tensor | float) -> torch.Tensor:
    """Boundary loss (docs/model.md#boundary-loss): BCEWithLogits(pos_weight), mean over each sample's
    valid frames, summed and divided by N.

    boundary_logits, boundary, mask: (N, 1, T); pos_weight: scalar (float or 0-d / (1,) tensor).
    """
    z = _acc(boundary_logits)
    if not torch.is_tensor(pos_weight):
        pos_weight = torch.tensor(float(pos_weight), device=z.device, dtype=z.dtype)
    per = F.binary_cross_entropy_with_logits(z, boundary.to(z.dtype), reduction="none",
                                             pos_weight=pos_weight.to(z.dtype))
    m = mask.to(z.dtype)
    per_sample = (per * m).sum(dim=(1, 2)) / m.sum(dim=(1, 2)).clamp(min=1)
    return per_sample.sum() / z.shape[0]


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


def _pair_mask(valid: torch.Tensor | None) -> torch.Tensor | None:
    """(M, M) bool: both segments real; None if every slot is (``valid`` None)."""
    return None if valid is None else valid[:, None] & valid[None, :]


def kl_loss(pred: torch.Tensor, target: torch.Tensor, temperature: float = 10.0,
            valid: torch.Tensor | None = None) -> torch.Tensor:
    """Published "KLLoss": q = row-softmax(temperature·target), log p = row-log-softmax(pred),
    value (1/M)·Σ_i KL(q_i ‖ p_i) for (M, M) inputs; 0 for M = 0.

    valid: optional (M,) bool, False for padding slots (``extract_segments(max_segments=...)``): the value is
    that of the (M', M') submatrix of the valid rows and columns, M' = valid.sum(), and padding gets no
    gradient.
    """
    m = pred.shape[0]
    pred = _acc(pred)
    target = temperature * target.to(pred.dtype)
    pair = _pair_mask(valid)
    if pair is not None:
        # a padding row keeps its columns (finite, then dropped); a real row loses the padding columns
        dropped = ~(pair | ~valid[:, None])
        target, pred = target.masked_fill(dropped, float("-inf")), pred.masked_fill(dropped, float("-inf"))
    log_q = F.log_softmax(target, dim=1)
    log_p = F.log_softmax(pred, dim=1)
    terms = log_q.exp() * (log_q - log_p)
    if pair is None:
        return terms.sum() / max(m, 1)
    # where, not a product with the mask: dropped columns hold 0·(-inf − -inf) = NaN
    return torch.where(pair, terms, 0.0).sum() / valid.sum().clamp(min=1).to(pred.dtype)


def aris_absolute(segment_features: torch.Tensor, segment_labels: torch.Tensor,
                  action_embeddings: torch.Tensor, logit_scale: torch.Tensor,
                  valid: torch.Tensor | None = None) -> torch.Tensor:
    """ARIS absolute term (docs/model.md#aris-absolute) *without* its 0.8 weight:
    (KL(L_img, G) + KL(L_txt, G)) / 2.

    segment_features: (M, D) segment means of e0; segment_labels: (M,) long; action_embeddings:
    (K, D); logit_scale: (1,) or 0-d, used linearly. L_img = s·f̂ t̂ᵀ, L_txt = L_imgᵀ,
    G_ij = [label_i == label_j]. valid: optional (M,) bool, False for padding slots (:func:`kl_loss`).
    """
    f = F.normalize(_acc(segment_features), dim=1)
    e = F.normalize(action_embeddings.to(f.dtype)[segment_labels], dim=1)
    logits_img = logit_scale.to(f.dtype).reshape(()) * (f @ e.T)
    g = (segment_labels[:, None] == segment_labels[None, :]).to(f.dtype)
    return (kl_loss(logits_img, g, valid=valid) + kl_loss(logits_img.T, g, valid=valid)) / 2


def pairwise_distance(f: torch.Tensor) -> torch.Tensor:
    """(M, M) Euclidean distances between the rows of f (M, D), computed directly (no Gram matrix,
    so no cancellation); gradient 0 at zero distance."""
    return torch.cdist(f[None], f[None], compute_mode="donot_use_mm_for_euclid_dist")[0]


def relative_similarity(segment_features: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """P = 1 - d / max d with d the pairwise distances of the un-normalised features
    (docs/model.md#aris-relative); with ``valid`` (M,) bool, max d runs over pairs of valid rows only.

    If max d = 0 (M = 1, or all features equal) the division is by a tiny positive number instead,
    so P = 1 everywhere (every segment is maximally similar to itself) and nothing is NaN.
    """
    d = pairwise_distance(_acc(segment_features))
    if d.numel() == 0:
        return d
    pair = _pair_mask(valid)
    largest = (d if pair is None else d.masked_fill(~pair, 0.0)).max()
    return 1 - d / largest.clamp(min=torch.finfo(d.dtype).tiny)


def aris_relative(segment_features: torch.Tensor, segment_labels: torch.Tensor,
                  action_graph: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """ARIS relative term (docs/model.md#aris-relative) *without* its 1.0 weight: KL(P, TAG_sub),
    TAG_sub = TAG[label_i, label_j].

    segment_features: (M, D); segment_labels: (M,) long; action_graph: (K, K) TAG; valid: optional (M,)
    bool, False for padding slots (:func:`kl_loss`).
    """
    p = relative_similarity(segment_features, valid)
    tag_sub = action_graph.to(p.dtype)[segment_labels[:, None], segment_labels[None, :]]
    return kl_loss(p, tag_sub, valid=valid)
