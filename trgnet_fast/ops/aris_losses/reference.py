"""Plain-PyTorch reference of the fused ARIS terms (the yardstick of every test, parity row and benchmark).
Formulas, shapes and dtypes in the package docstring (``trgnet_fast/ops/aris_losses/__init__.py``); written from
them directly, in the compute dtype (float64 for float64 features, else float32)."""
from __future__ import annotations

import torch

# the normalisation floor of F.normalize (the published f̂ = f / max(‖f‖, 1e-12))
NORM_EPS = 1e-12
# the bias of a dropped column: exp underflows to exactly 0 (the loss's KL target, trgnet_fast/losses/terms.py)
DROPPED_BIAS = -1e30


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the op computes and returns in for features of ``dtype``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def dropped_bias(valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(M, M): DROPPED_BIAS where a valid row meets a padding column, else 0."""
    dropped = valid[:, None] & ~valid[None, :]
    return torch.where(dropped, DROPPED_BIAS, 0.0).to(dtype)


def kl_rows(pred: torch.Tensor, weight: torch.Tensor, log_weight: torch.Tensor, bias: torch.Tensor,
            rows: torch.Tensor) -> torch.Tensor:
    """(1/rows) Σ_ij w_ij (lw_ij − log_softmax_j(pred_i + bias_i)_j) of (M, M) inputs."""
    log_p = torch.log_softmax(pred + bias, dim=1)
    return (weight * (log_weight - log_p)).sum() / rows


def segment_features(features, frame_segment, segment_count, segment_valid) -> torch.Tensor:
    """(M, D) mean of each valid slot's frames (those with frame_segment == its index), 0 for padding slots."""
    n, d, t = features.shape
    m = segment_count.shape[0]
    dtype = segment_count.dtype
    slot = torch.where((frame_segment >= 0) & (frame_segment < m), frame_segment, m)  # m: no slot
    sums = torch.zeros(m + 1, d, dtype=dtype, device=features.device)
    sums = sums.index_add(0, slot.reshape(-1), features.to(dtype).transpose(1, 2).reshape(n * t, d))[:m]
    return torch.where(segment_valid[:, None], sums / segment_count[:, None], 0.0)


def headed_segment_features(features, frame_segment, segment_count, segment_valid, head_weight=None,
                            head_bias=None) -> torch.Tensor:
    """(M, D) f: the segment means of the features (N, D, T), or with the head (head_weight (D, C), head_bias (D,))
    the head applied to the segment means of the features (N, C, T); 0 for padding slots."""
    f = segment_features(features, frame_segment, segment_count, segment_valid)
    if head_weight is None:
        return f
    return torch.where(segment_valid[:, None], torch.addmm(head_bias, f, head_weight.T), 0.0)


def aris_losses_reference(features, frame_segment, segment_video, segment_start, segment_count, segment_valid,
                          segment_label, unit_embeddings, logit_scale, absolute_weight, absolute_log_weight,
                          relative_weight, relative_log_weight, head_weight=None, head_bias=None) -> torch.Tensor:
    """(2,) [absolute, relative] by the package docstring's formulas. Shapes: features (N, D, T) (with the head
    (N, C, T)); frame_segment (N, T); segment_video, segment_start, segment_count, segment_valid, segment_label (M,);
    unit_embeddings (K, D); logit_scale (1,); the four weights (M, M); head_weight (D, C) and head_bias (D,), or
    None. segment_video and segment_start are where the kernels read a slot's frames; the reference finds them
    through frame_segment (the contract: both name the same frames)."""
    dtype = compute_dtype(features.dtype)
    f = headed_segment_features(features, frame_segment, segment_count, segment_valid, head_weight, head_bias)
    valid = segment_valid
    rows = valid.sum().clamp(min=1).to(dtype)
    bias = dropped_bias(valid, dtype)

    norm = torch.linalg.vector_norm(f, dim=1, keepdim=True)
    unit_f = f / norm.clamp(min=NORM_EPS)
    k = unit_embeddings.shape[0]
    e = unit_embeddings[segment_label.clamp(0, k - 1)]
    logits = logit_scale.reshape(()) * (unit_f @ e.T)
    absolute = (kl_rows(logits, absolute_weight, absolute_log_weight, bias, rows)
                + kl_rows(logits.T, absolute_weight, absolute_log_weight, bias, rows)) / 2

    paired = valid[:, None] & valid[None, :]
    diff = f[:, None, :] - f[None, :, :]
    # sqrt of a sum of squares, with the gradient 0 at distance 0 (cdist's convention), also on the diagonal: the
    # inner where keeps sqrt's infinite slope at 0 out of the gradient
    sq = diff.square().sum(-1)
    nonzero = sq > 0
    dist = torch.where(nonzero, torch.where(nonzero, sq, 1.0).sqrt(), 0.0)
    dist = torch.where(paired, dist, 0.0)
    largest = dist.max()  # ties share the gradient evenly (torch's max), as in the published code
    similarity = 1 - dist / (largest + torch.finfo(dtype).tiny)
    relative = kl_rows(similarity, relative_weight, relative_log_weight, bias, rows)
    return torch.stack([absolute, relative])


def gradient_error_floors(inputs: dict, grad_out: torch.Tensor) -> dict[str, float]:
    """Denominator floors of the relative errors of the gradients (features, logit_scale and, with the head,
    head_weight and head_bias): a quarter of the root-sum-square of the elementary products each one sums (the rule
    of the other ops' floors, docs/architecture.md#parity). A KL gradient W_i·p_ij − w_ij cancels (to exactly 0 with
    one segment: p = w), and so does the normalisation's f̂-projection: rounding scales with the parts, not with
    their difference. Parts per pair: (ga/(2·rows))·(Wa_i p^L_ij + wa_ij + Wa_j p^Lᵀ_ji + wa_ji) for L_ij (times
    |f̂_i·ê_j| for logit_scale, |s|/‖f_i‖ for f_i), (gr/rows)·(Wr_i p^P_ij + wr_ij)/(dmax + tiny) for d_ij and d_ji
    (unit direction vectors); a frame's share is 1/count of its segment's. With the head, f_i's parts reach a frame
    through Wᵀ (at most its spectral norm), head_weight through m_iᵀ and head_bias as they are. ``inputs``: the
    keyword inputs of ``aris_losses_reference``; grad_out (2,)."""
    x = {k: v.detach().double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
         for k, v in inputs.items()}
    ga, gr = grad_out.detach().double().abs().tolist()
    valid = x["segment_valid"]
    head_weight = x.get("head_weight")
    means = segment_features(x["features"], x["frame_segment"], x["segment_count"], valid)
    f = headed_segment_features(x["features"], x["frame_segment"], x["segment_count"], valid, head_weight,
                                x.get("head_bias"))
    rows = valid.sum().clamp(min=1).double()
    bias = dropped_bias(valid, torch.float64)
    k = x["unit_embeddings"].shape[0]
    unit_f = f / torch.linalg.vector_norm(f, dim=1, keepdim=True).clamp(min=NORM_EPS)
    cos = unit_f @ x["unit_embeddings"][x["segment_label"].clamp(0, k - 1)].T
    scale = float(x["logit_scale"].reshape(()))
    logits = scale * cos

    def parts(pred, weight):  # (M, M): W_i p_ij + w_ij
        return weight.sum(1, keepdim=True) * torch.softmax(pred + bias, dim=1) + weight

    wa, wr = x["absolute_weight"], x["relative_weight"]
    g_parts = ga / (2 * rows) * (parts(logits, wa) + parts(logits.T, wa).T)
    tiny = torch.finfo(torch.float64).tiny
    paired = valid[:, None] & valid[None, :]
    dist = torch.where(paired, torch.cdist(f, f), 0.0)
    similarity = 1 - dist / (dist.max() + tiny)
    d_parts = torch.where(paired, gr / rows * parts(similarity, wr) / (dist.max() + tiny), 0.0)
    norms = torch.linalg.vector_norm(f, dim=1).clamp(min=NORM_EPS)
    absolute = abs(scale) * g_parts.square().sum(1).sqrt() / norms
    relative = (d_parts + d_parts.T).square().sum(1).sqrt()
    parts = absolute.square() + relative.square()  # (M,): the squared size of f_i's gradient parts
    features = (parts / x["segment_count"]).sum().sqrt()
    floors = {"logit_scale": 0.25 * float((g_parts * cos).norm())}
    if head_weight is None:
        return floors | {"features": 0.25 * float(features)}
    spectral = float(torch.linalg.matrix_norm(head_weight, 2))
    return floors | {"features": 0.25 * spectral * float(features),
                     "head_weight": 0.25 * float((parts * means.square().sum(1)).sum().sqrt()),
                     "head_bias": 0.25 * float(parts.sum().sqrt())}
