"""The individual TRG-Net loss terms (reference-spec §3.2–§3.6), vectorized on the device.

No function here calls ``.item()``/``.tolist()`` or loops over frames, pairs or segments in Python.
Every term is computed in float32 (or float64 if given float64) whatever the input dtype.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from trgnet_fast.losses.segments import IGNORE_INDEX

__all__ = ["frame_log_probs", "cross_entropy", "gs_tmse", "gs_tmse_pairs", "boundary_bce", "boundary_pos_weight", "kl_loss",
           "aris_absolute", "aris_relative", "pairwise_distance", "relative_similarity"]


def _acc(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


def frame_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """(N, K, T) logits → (N·T, K) log-probabilities over classes, frame-major and contiguous
    (the class reduction then runs over contiguous memory; rows are gathered cheaply)."""
    n, k, t = logits.shape
    return F.log_softmax(_acc(logits).transpose(1, 2).reshape(n * t, k), dim=1)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, class_weight: torch.Tensor | None = None,
                  ignore_index: int = IGNORE_INDEX, log_probs: torch.Tensor | None = None) -> torch.Tensor:
    """§3.2: CE over classes, mean over the non-ignored frames of the batch (weighted mean with weights).

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


def gs_tmse_pairs(x: torch.Tensor, labels: torch.Tensor, sigma: float = 1.0,
                  ignore_index: int = IGNORE_INDEX):
    """The logits-independent part of GS-TMSE, shared by all logit stages.

    x: (N, C, V, T); labels: (N, T). Returns (next_flat (N·T,) long: flat index of the next valid
    frame of the same row (the frame itself where there is none), weight (N·T,): the Gaussian
    similarity w of the pair (frame, next valid frame), 0 where the frame starts no pair,
    pairs (N,): number of pairs per sample).
    """
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
    return next_flat, w, has_pair.sum(1)


def gs_tmse(logits: torch.Tensor, x: torch.Tensor, labels: torch.Tensor, threshold: float = 4.0,
            sigma: float = 1.0, ignore_index: int = IGNORE_INDEX, log_probs: torch.Tensor | None = None,
            pairs=None) -> torch.Tensor:
    """§3.3 GS-TMSE: Gaussian-similarity-weighted, clamped temporal MSE of log-probabilities.

    logits: (N, K, T); x: (N, C, V, T) raw (augmented) model input, the similarity source (no
    gradient flows into x); labels: (N, T) long, ``ignore_index`` frames are removed per sample
    (compaction, order kept). Per sample: for each pair of consecutive *valid* frames (u, v) after
    compaction, w = exp(-‖x[:, :, v] - x[:, :, u]‖₂ / (2σ²)), ℓ_k = min((log p_v,k - log p_u,k)², threshold²);
    loss_n = mean over (k, pair) of w·ℓ_k; result = mean over the batch. A sample with fewer than two
    valid frames has no pair and contributes 0 (the published code would produce NaN).
    log_probs / pairs: optional precomputed ``frame_log_probs(logits)`` / ``gs_tmse_pairs(x, labels)``.
    """
    n, k, t = logits.shape
    if log_probs is None:
        log_probs = frame_log_probs(logits)
    next_flat, w, n_pairs = gs_tmse_pairs(x, labels, sigma, ignore_index) if pairs is None else pairs
    sq = (log_probs.index_select(0, next_flat) - log_probs).pow(2).clamp(max=threshold * threshold)
    per_frame = (sq.sum(1) * w.to(sq.dtype)).reshape(n, t)
    per_sample = per_frame.sum(1) / (n_pairs.clamp(min=1).to(sq.dtype) * k)
    return per_sample.mean()


def boundary_bce(boundary_logits: torch.Tensor, boundary: torch.Tensor, mask: torch.Tensor,
                 pos_weight: torch.Tensor | float) -> torch.Tensor:
    """§3.4: BCEWithLogits(pos_weight), mean over each sample's valid frames, summed and divided by N.

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


def boundary_pos_weight(boundary_arrays: Iterable) -> float:
    """§3.4: (total frames) / (positive frames) over a training set's boundary arrays.

    boundary_arrays: iterable of 1-D (or any shape) 0/1 arrays or tensors, one per video; positives
    are counted as the array sum (ASRF's rule, equal to the number of ones for 0/1 arrays).
    Raises ValueError if there are no frames or no positives.
    """
    total, positive = 0, 0.0
    for b in boundary_arrays:
        a = b.detach().cpu().numpy() if torch.is_tensor(b) else np.asarray(b)
        total += a.size
        positive += float(a.astype(np.float64).sum())
    if total == 0 or positive <= 0:
        raise ValueError(f"boundary_arrays: need frames and positive frames, got {total} frames, "
                         f"{positive} positives")
    return total / positive


def kl_loss(pred: torch.Tensor, target: torch.Tensor, temperature: float = 10.0) -> torch.Tensor:
    """Published "KLLoss": q = row-softmax(temperature·target), log p = row-log-softmax(pred),
    value (1/M)·Σ_i KL(q_i ‖ p_i) for (M, M) inputs; 0 for M = 0."""
    m = pred.shape[0]
    pred = _acc(pred)
    log_q = F.log_softmax(temperature * target.to(pred.dtype), dim=1)
    log_p = F.log_softmax(pred, dim=1)
    return (log_q.exp() * (log_q - log_p)).sum() / max(m, 1)


def aris_absolute(segment_features: torch.Tensor, segment_labels: torch.Tensor,
                  action_embeddings: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """§3.5 ARIS absolute term *without* its 0.8 weight: (KL(L_img, G) + KL(L_txt, G)) / 2.

    segment_features: (M, D) segment means of e0; segment_labels: (M,) long; action_embeddings:
    (K, D); logit_scale: (1,) or 0-d, used linearly. L_img = s·f̂ t̂ᵀ, L_txt = L_imgᵀ,
    G_ij = [label_i == label_j].
    """
    f = F.normalize(_acc(segment_features), dim=1)
    e = F.normalize(action_embeddings.to(f.dtype)[segment_labels], dim=1)
    logits_img = logit_scale.to(f.dtype).reshape(()) * (f @ e.T)
    g = (segment_labels[:, None] == segment_labels[None, :]).to(f.dtype)
    return (kl_loss(logits_img, g) + kl_loss(logits_img.T, g)) / 2


def pairwise_distance(f: torch.Tensor) -> torch.Tensor:
    """(M, M) Euclidean distances between the rows of f (M, D), computed directly (no Gram matrix,
    so no cancellation); gradient 0 at zero distance."""
    return torch.cdist(f[None], f[None], compute_mode="donot_use_mm_for_euclid_dist")[0]


def relative_similarity(segment_features: torch.Tensor) -> torch.Tensor:
    """P = 1 - d / max d with d the pairwise distances of the un-normalised features (§3.6).

    If max d = 0 (M = 1, or all features equal) the division is by a tiny positive number instead,
    so P = 1 everywhere (every segment is maximally similar to itself) and nothing is NaN.
    """
    d = pairwise_distance(_acc(segment_features))
    if d.numel() == 0:
        return d
    return 1 - d / d.max().clamp(min=torch.finfo(d.dtype).tiny)


def aris_relative(segment_features: torch.Tensor, segment_labels: torch.Tensor,
                  action_graph: torch.Tensor) -> torch.Tensor:
    """§3.6 ARIS relative term *without* its 1.0 weight: KL(P, TAG_sub), TAG_sub = TAG[label_i, label_j].

    segment_features: (M, D); segment_labels: (M,) long; action_graph: (K, K) TAG.
    """
    p = relative_similarity(segment_features)
    tag_sub = action_graph.to(p.dtype)[segment_labels[:, None], segment_labels[None, :]]
    return kl_loss(p, tag_sub)
