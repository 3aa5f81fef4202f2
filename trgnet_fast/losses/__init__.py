"""TRG-Net training losses (docs/model.md#losses), vectorized on the device (no per-frame host work)."""
from trgnet_fast.losses.segments import Segments, extract_segments, segment_means
from trgnet_fast.losses.targets import LossTargetBuilder, LossTargets
from trgnet_fast.losses.terms import (GsTmsePairs, KLTarget, absolute_target, aris_absolute, aris_relative,
                                      boundary_bce, boundary_frame_weight, boundary_pos_weight, cross_entropy,
                                      frame_log_probs, gs_tmse, gs_tmse_pairs, gs_tmse_weights, kl_divergence, kl_loss,
                                      kl_target, pairwise_distance, relative_similarity, relative_target)
from trgnet_fast.losses.trgnet_loss import TRGNetLoss

__all__ = ["Segments", "extract_segments", "segment_means", "LossTargetBuilder", "LossTargets", "GsTmsePairs",
           "KLTarget", "absolute_target", "aris_absolute", "aris_relative", "boundary_bce", "boundary_frame_weight",
           "boundary_pos_weight", "cross_entropy", "frame_log_probs", "gs_tmse", "gs_tmse_pairs", "gs_tmse_weights",
           "kl_divergence", "kl_loss", "kl_target", "pairwise_distance", "relative_similarity", "relative_target",
           "TRGNetLoss"]
