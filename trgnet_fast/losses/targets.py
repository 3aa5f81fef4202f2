"""The labels-only part of the TRG-Net loss, built once per batch (docs/model.md#loss-targets).

Everything the loss derives from the labels and the mask alone — the GS-TMSE pairs, the boundary loss's frame
weights, the ARIS segments and the ARIS KL targets — is index and mask bookkeeping: about two hundred small ops on
the device per step. :class:`LossTargetBuilder` builds it as tensors; the training collate runs it on the CPU in
the data loader's workers (``data.collate(..., loss_targets=...)``), so the step gets it with the batch, and
``TRGNetLoss`` builds it on the labels' device when it is not given.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from trgnet_fast.data.labels import IGNORE_INDEX
from trgnet_fast.losses.segments import Segments, extract_segments
from trgnet_fast.losses.terms import (GsTmsePairs, KLTarget, absolute_target, boundary_frame_weight,
                                      cross_entropy_frame_weight, gs_tmse_pairs, gs_tmse_weights, relative_target)


class LossTargets(NamedTuple):
    """The labels-only part of the loss for an (N, T) label batch with M segment slots.

    pairs: GS-TMSE pairs (``gs_tmse_pairs``); boundary_weight (N, 1, T): per-frame weight of the boundary BCE
    (``boundary_frame_weight``); segments: ARIS segments (``extract_segments``), None without ARIS terms;
    unpaired (M, M) bool: a slot of the pair is padding; absolute, relative: the ARIS KL targets
    (``absolute_target``, ``relative_target``), None for a term switched off; ce_weight (N, T): per-frame weight of
    the cross-entropy (``cross_entropy_frame_weight``; the fused ``frame_losses`` op's input).
    """

    pairs: GsTmsePairs
    boundary_weight: torch.Tensor
    segments: Segments | None
    unpaired: torch.Tensor | None
    absolute: KLTarget | None
    relative: KLTarget | None
    ce_weight: torch.Tensor
    pair_weight: torch.Tensor | None = None


class LossTargetBuilder:
    """Builds :class:`LossTargets` from (labels (N, T), mask (N, 1, T), max_segments); picklable, so that data
    loader workers can run it.

    action_graph: (K, K) TAG (needed when ``use_aris_rel``); published_quirks: the ARIS segment rule
    (``extract_segments``); dtype: of the float parts (float32 for float32 training, float64 for float64 losses);
    class_weight: optional (K,) CE class weights.
    """

    def __init__(self, action_graph: torch.Tensor | None, published_quirks: bool = True,
                 ignore_index: int = IGNORE_INDEX, use_aris_abs: bool = True, use_aris_rel: bool = True,
                 dtype: torch.dtype = torch.float32, class_weight: torch.Tensor | None = None):
        if use_aris_rel and action_graph is None:
            raise ValueError("action_graph: the ARIS relative term needs the (K, K) TAG, got None")
        self.action_graph = None if action_graph is None else action_graph.detach().to("cpu", dtype)
        self.class_weight = None if class_weight is None else class_weight.detach().to("cpu", dtype)
        self.published_quirks = bool(published_quirks)
        self.ignore_index = int(ignore_index)
        self.use_aris_abs, self.use_aris_rel = bool(use_aris_abs), bool(use_aris_rel)
        self.dtype = dtype

    def __call__(self, labels: torch.Tensor, mask: torch.Tensor, max_segments: int | None = None,
                 x: torch.Tensor | None = None, batch_length: int | None = None) -> LossTargets:
        """labels: (N, T) integer, ``ignore_index`` on padding; mask: (N, 1, T) bool or 0/1; max_segments: a static
        bound on the ARIS segments (``data.segment_capacity``), or None to count them (a host sync on a GPU); x: None,
        or the (augmented) (N, C, V, T) model input, whose GS-TMSE pair weights are then built here too;
        batch_length: the batch's longest video when T is a length bucket beyond it (``extract_segments``)."""
        labels = labels.long()
        pairs = gs_tmse_pairs(labels, self.ignore_index, self.dtype)
        pair_weight = None
        if x is not None:
            if x.dim() != 4 or x.shape[0] != labels.shape[0] or x.shape[-1] != labels.shape[1]:
                raise ValueError(f"x: expected shape (N, C, V, T) with (N, T) = {tuple(labels.shape)}, got "
                                 f"{tuple(x.shape)}")
            pair_weight = gs_tmse_weights(x, pairs).to(self.dtype)
        boundary_weight = boundary_frame_weight(mask, self.dtype)
        class_weight = None if self.class_weight is None else self.class_weight.to(labels.device)
        ce_weight = cross_entropy_frame_weight(labels, class_weight, self.ignore_index, self.dtype)
        if not (self.use_aris_abs or self.use_aris_rel):
            return LossTargets(pairs, boundary_weight, None, None, None, None, ce_weight, pair_weight)
        segments = extract_segments(labels, published_quirks=self.published_quirks, ignore_index=self.ignore_index,
                                    max_segments=max_segments, batch_length=batch_length)
        valid = segments.valid
        absolute = absolute_target(segments.label, valid, self.dtype) if self.use_aris_abs else None
        relative = None
        if self.use_aris_rel:
            relative = relative_target(segments.label, self.action_graph.to(labels.device), valid, self.dtype)
        return LossTargets(pairs, boundary_weight, segments, ~(valid[:, None] & valid[None, :]), absolute, relative,
                           ce_weight, pair_weight)
