"""TRG-Net training losses (docs/model.md#losses), vectorized on the device (no per-frame host work)."""
from trgnet_fast.losses.segments import Segments, extract_segments, segment_means
from trgnet_fast.losses.terms import (GsTmsePairs, aris_absolute, aris_relative, boundary_bce, boundary_pos_weight,
                                      cross_entropy, frame_log_probs, gs_tmse, gs_tmse_pairs, kl_loss,
                                      pairwise_distance, relative_similarity, repeat_pairs)
from trgnet_fast.losses.trgnet_loss import TRGNetLoss

__all__ = ["Segments", "extract_segments", "segment_means", "GsTmsePairs", "aris_absolute",
           "aris_relative", "boundary_bce", "boundary_pos_weight", "cross_entropy", "frame_log_probs", "gs_tmse",
           "gs_tmse_pairs", "kl_loss", "pairwise_distance", "relative_similarity", "repeat_pairs", "TRGNetLoss"]
