"""Plain-PyTorch reference of the fused per-frame loss terms (the yardstick of every test, parity row and benchmark).
Formulas, shapes and dtypes in the package docstring (``trgnet_fast/ops/frame_losses/__init__.py``); written from
them directly, in the compute dtype (float64 for float64 logits, else float32)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the op computes and returns in for logits of ``dtype``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _masked_logsumexp(z: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """(S, N, K, T), (N, T) bool -> (S, N, K): logsumexp over the frames of each row; 0 for a row without frames."""
    lse = z.masked_fill(~frames[:, None, :], float("-inf")).logsumexp(-1)
    return torch.where(frames.any(-1)[:, None], lse, torch.zeros_like(lse))


def _pair_starts(index: torch.Tensor) -> torch.Tensor:
    """(N, T) int64 partner indices -> bool: the frame has a partner (another frame, in range)."""
    own = torch.arange(index.shape[-1], device=index.device)
    return (index != own) & (index >= 0) & (index < index.shape[-1])


def time_logsumexps(z: torch.Tensor, next_frame: torch.Tensor, previous_frame: torch.Tensor) -> torch.Tensor:
    """(S, N, 2, K) [lse2, lse1]: z's logsumexp over time on the frames that end a pair, and on those that start
    one (the op's ``time_lse``); z (S, N, K, T) in the compute dtype."""
    return torch.stack([_masked_logsumexp(z, _pair_starts(previous_frame)),
                        _masked_logsumexp(z, _pair_starts(next_frame))], dim=2)


def frame_losses_reference(logits, labels, ce_weight, next_frame, previous_frame, pair_weight, boundary_logits,
                           boundary, boundary_weight, pos_weight, *, threshold: float = 4.0,
                           time_axis: bool = True) -> torch.Tensor:
    """(3,) [CE, GS-TMSE, BCE] by the package docstring's formulas. Shapes: logits (S, N, K, T); labels, ce_weight,
    next_frame, previous_frame, pair_weight, boundary, boundary_weight (N, T); boundary_logits (R, N, T);
    pos_weight (1,)."""
    dtype = compute_dtype(logits.dtype)
    z = logits.to(dtype)
    s, n, k, t = z.shape
    lse_c = z.logsumexp(2)  # (S, N, T)
    in_range = (labels >= 0) & (labels < k)
    z_label = z.gather(2, labels.clamp(0, k - 1).expand(s, n, t)[:, :, None]).squeeze(2)
    ce_frames = torch.where(in_range, lse_c - z_label, torch.zeros_like(z_label))
    ce = (ce_weight * ce_frames).sum() / s

    pair = _pair_starts(next_frame)
    v = next_frame.clamp(0, t - 1)[:, None, :].expand(s, n, k, t)
    if time_axis:
        lse2, lse1 = time_logsumexps(z, next_frame, previous_frame).unbind(2)
        d = z.gather(3, v) - z - (lse2 - lse1)[..., None]
    else:
        log_probs = z - lse_c[:, :, None, :]
        d = log_probs.gather(3, v) - log_probs
    per_pair = d.square().clamp(max=threshold * threshold).sum(2)  # (S, N, T)
    gstmse = torch.where(pair, pair_weight * per_pair, torch.zeros_like(per_pair)).sum() / (s * k)

    b = boundary_logits.to(dtype)
    per_frame = F.binary_cross_entropy_with_logits(b, boundary.expand_as(b), reduction="none", pos_weight=pos_weight)
    bce = (boundary_weight * per_frame).sum() / b.shape[0]
    return torch.stack([ce, gstmse, bce])
