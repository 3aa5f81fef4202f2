"""Mask-correct mode (docs/model.md#mask-correct-mode): statistics over each video's own frames."""
from __future__ import annotations

import torch
from torch import nn

from trgnet_fast.ops.batch_norm_relu.reference import batch_statistics

MASK_MODES = ("published", "correct")


def check_mask_mode(mask_mode: str) -> str:
    if mask_mode not in MASK_MODES:
        raise ValueError(f"mask_mode: expected one of {MASK_MODES}, got {mask_mode!r}")
    return mask_mode


def sequence_offsets(mask: torch.Tensor) -> torch.Tensor:
    """(N + 1,) int32 offsets of the padded rows' sequences (cu_seqlens of the fused ops' padded layout with per-row
    lengths) from a right-padded mask (N, 1, T) 0/1; on the mask's device, no host sync."""
    lengths = mask.reshape(mask.shape[0], -1).sum(1, dtype=torch.int32)
    return torch.cat([lengths.new_zeros(1), lengths.cumsum(0, dtype=torch.int32)])


def masked_temporal_mean(x: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """Mean over each video's valid frames: x (N, C, T, V), frame_mask (N, 1, T, 1) 0/1 → (N, C, 1, V); a video
    without frames gets 0."""
    frames = frame_mask.sum(2, keepdim=True).clamp(min=1)
    return (x * frame_mask).sum(2, keepdim=True) / frames


def update_running_statistics(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor,
                              count: torch.Tensor | int) -> None:
    """``bn``'s running statistics after a batch of statistics (mean, biased var) over ``count`` values (an int, or
    a 0-d tensor), by nn.BatchNorm2d's rule (momentum, or the cumulative average for momentum None; the unbiased
    variance)."""
    if not bn.track_running_stats:
        return
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        correction = count / max(count - 1, 1) if isinstance(count, int) else count / (count - 1).clamp(min=1)
        unbiased = var * correction
        bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), momentum)
        bn.running_var.lerp_(unbiased.to(bn.running_var.dtype), momentum)


def masked_batch_norm(x: torch.Tensor, bn: nn.BatchNorm2d, frame_mask: torch.Tensor) -> torch.Tensor:
    """``bn(x)`` in training mode with the batch statistics taken over the valid frames only: x (N, C, T, V),
    frame_mask (N, 1, T, 1) 0/1. Mean and biased variance over the (n, t, v) with frame_mask 1 normalise x; the
    running statistics follow nn.BatchNorm2d's rule (momentum, or the cumulative average for momentum None; the
    unbiased variance) with those statistics. Padded frames are normalised too (their values are masked later)."""
    centred, mean, var, count = batch_statistics(x, frame_mask)
    update_running_statistics(bn, mean, var, count)
    out = centred * torch.rsqrt(var + bn.eps)[None, :, None, None]
    if bn.affine:
        out = out * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]
    return out
