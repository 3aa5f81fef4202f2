"""TRG-Net: text-derived relational graph-enhanced network for skeleton action segmentation
(arXiv 2503.15126; docs/model.md#data-flow)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from trgnet_fast.backend import requested_backend
from trgnet_fast.model.attention import AttModule, LinearAttention
from trgnet_fast.model.dropout_seeds import DropoutSeeds
from trgnet_fast.model.masking import check_mask_mode, sequence_offsets
from trgnet_fast.model.packing import PackedSequences
from trgnet_fast.model.spatial import MultiScaleGraphConv
from trgnet_fast.model.text_heads import TextFeatures
from trgnet_fast.model.temporal import (DilatedResidualLayer, RefinementDecoder, SingleStageTCN,
                                        SpatialFeatureInjection, SpatioTemporalEncoder)
from trgnet_fast.model.validation import validate_inputs, validate_packed
from trgnet_fast.skeletons import num_joints


def decoder_alpha(stage: int) -> float:
    """Attention weight of refinement stage ``stage`` (0-based): exp(-3 * stage)."""
    return math.exp(-3 * stage)


_HASHED_LAYERS = (AttModule, DilatedResidualLayer, SpatialFeatureInjection)  # layers with hashed dropout masks


class TRGNet(nn.Module):
    """TRG-Net with the published parameter names (published checkpoints load with ``strict=True``).

    Args:
        in_channel: input channels C_in per joint (12 PKU/LARA, 2 MCFS, 6 TCG-15).
        n_features: hidden width C (64 in every published config).
        n_classes: number of action classes K.
        n_stages: default for ``n_stages_asb`` and ``n_stages_brb``.
        n_layers: encoder AttModules (dilations 1, 2, ..., 2^(n_layers-1)).
        n_refine_layers: layers of every decoder stage and of every boundary TCN stage.
        n_stages_asb: 1 + number of refinement decoder stages (stage s uses alpha = exp(-3 s)).
        n_stages_brb: 1 + number of boundary TCN stages.
        SFI_layer: encoder layer indices (distinct, in [0, n_layers)) preceded by an SFI fusion;
            default 1..n_layers-1.
        dataset: "PKU-subject" | "PKU-view" | "LARA" | "MCFS-130" | "MCFS-22" | "TCG-15"; selects the
            skeleton (V = 25, 25, 19, 25, 25, 17).
        text_dim: width of the text-embedding feature heads (768 for BERT-base embeddings).
        backend: backend of every fused op (the AttModules, the SFI fusions and the boundary branch's dilated
            residual layers as one op each, linear attention, multi-scale graph conv, adaptive graph conv):
            "auto" | "torch" | "triton" | "cuda"; None reads $TRGNET_BACKEND at every call, else "auto".
        mask_mode: "published" (default: padded frames take part in the BatchNorm statistics, CTRGC's temporal
            means, InstanceNorm, the attention sums and the dilated convs' halos, as published) or "correct" (all
            of them over each video's own frames, so a video's outputs do not depend on its batch's padding; the
            mask must be right-padded; docs/model.md#mask-correct-mode); "correct" also runs packed batches
            (``forward(..., packed=...)``, docs/model.md#packed-batches).

    forward(x, mask, joint_graph, check_values=True, packed=None):
        x: (N, C_in, V, T): joints (dim 2) before frames (dim 3), N >= 1, T >= 2 (the AttModules' InstanceNorm
            normalises over the frames, in eval too), in the parameters' dtype. Data laid out (N, C_in, T, V) must
            be transposed first (x.transpose(2, 3)): the shape check catches it only when T != V, and an input
            with T == V is taken as (N, C_in, V, T) silently.
        mask: (N, 1, T) bool or 0/1; joint_graph: (V, V) floating TJG.
        Training mode returns ([logits_0, ..., logits_A], [b_0, ..., b_B], [e_0, ..., e_A], logit_scale)
        with logits (N, K, T), boundary logits b (N, 1, T), text-space features e (N, text_dim, T) and
        logit_scale (1,), where A = n_stages_asb - 1 and B = n_stages_brb - 1 (with ``defer_text_heads`` each
        e_s as ``TextFeatures``: its head and the head's (N, n_features, T) input).
        Eval mode returns (final logits (N, K, T), final boundary logits (N, 1, T)) and skips the
        text-space heads, which do not affect these outputs.
    """

    def __init__(self, in_channel: int, n_features: int, n_classes: int, n_stages: int, n_layers: int,
                 n_refine_layers: int = 10, n_stages_asb: int | None = None,
                 n_stages_brb: int | None = None, SFI_layer: Sequence[int] | None = None,
                 dataset: str = "PKU-subject", text_dim: int = 768, backend: str | None = None,
                 mask_mode: str = "published"):
        super().__init__()
        self.mask_mode = check_mask_mode(mask_mode)
        n_stages_asb = n_stages if n_stages_asb is None else n_stages_asb
        n_stages_brb = n_stages if n_stages_brb is None else n_stages_brb
        if n_stages_asb < 1 or n_stages_brb < 1:
            raise ValueError(
                f"n_stages_asb, n_stages_brb: expected >= 1, got {n_stages_asb}, {n_stages_brb}")
        sfi_layers = list(range(1, n_layers)) if SFI_layer is None else [int(i) for i in SFI_layer]
        if len(set(sfi_layers)) != len(sfi_layers) or not all(0 <= i < n_layers for i in sfi_layers):
            raise ValueError(
                f"SFI_layer: expected distinct layer indices in [0, {n_layers}), got {SFI_layer}")

        self.in_channel = in_channel
        self.n_classes = n_classes
        self.dataset = dataset
        self.num_joints = num_joints(dataset)

        # Submodules are created in the published order so that a given seed draws the same
        # initial parameters as the published code.
        self.logit_scale = nn.Parameter(torch.full((1,), math.log(1 / 0.07)))
        self.SP = MultiScaleGraphConv(in_channel, n_features, dataset)
        self.STI = SpatioTemporalEncoder(self.num_joints, n_features, n_layers, sorted(sfi_layers))
        self.conv_cls = nn.Conv1d(n_features, n_classes, 1)
        self.conv_bound = nn.Conv1d(n_features, 1, 1)
        self.conv_feature = nn.Conv1d(n_features, text_dim, 1)
        asb = [RefinementDecoder(n_classes, n_features, n_refine_layers, decoder_alpha(s))
               for s in range(n_stages_asb - 1)]
        conv_asb_feature = [nn.Conv1d(n_features, text_dim, 1) for _ in range(n_stages_asb - 1)]
        brb = [SingleStageTCN(1, n_features, 1, n_refine_layers) for _ in range(n_stages_brb - 1)]
        self.asb = nn.ModuleList(asb)
        self.brb = nn.ModuleList(brb)
        self.conv_asb_feature = nn.ModuleList(conv_asb_feature)

        self.set_backend(backend)
        # one seed draw per forward for every hashed layer (docs/model.md#dropout-seeds); a plain attribute, no state
        self._dropout_seeds = DropoutSeeds()
        for module in self.modules():
            if isinstance(module, _HASHED_LAYERS):
                module.seed_slot = self._dropout_seeds.add_slot()

    def set_backend(self, backend: str | None) -> None:
        """Select the backend of every fused op: the AttModules, their linear attention, the SFI fusions, the
        boundary branch's dilated residual layers and the SP block's multi-scale and adaptive graph convs (None:
        $TRGNET_BACKEND / auto). SP falls back to the published computation for an op the backend does not
        implement (see ``MultiScaleGraphConv``)."""
        if backend is not None:
            requested_backend(backend)  # raises ValueError for an unknown name
        self.backend = backend
        for module in self.modules():
            if isinstance(module, (AttModule, DilatedResidualLayer, LinearAttention, MultiScaleGraphConv,
                                   SpatialFeatureInjection)):
                module.backend = backend

    def set_dropout_masks(self, kind: str) -> None:
        """How the torch path of the AttModules, SFI fusions and dilated residual layers draws its dropout masks:
        "torch" (``nn.Dropout``, the default) or "hashed" (the fused ops' seed hash, so that every backend drops the
        same elements; docs/model.md#attmodule). The fused backends always hash."""
        if kind not in ("torch", "hashed"):
            raise ValueError(f"kind: expected 'torch' or 'hashed', got {kind!r}")
        for module in self.modules():
            if isinstance(module, _HASHED_LAYERS):
                module.dropout_masks = kind

    def forward(self, x: torch.Tensor, mask: torch.Tensor, joint_graph: torch.Tensor, check_values: bool = True,
                packed: PackedSequences | None = None, defer_text_heads: bool = False):
        """See the class docstring for shapes and return values. check_values: also check that x and
        joint_graph are finite and mask is 0/1, which reads the device (a host sync on a GPU); False checks
        shapes, dtypes and devices only, for inputs already checked (the trainer's batches: the readers refuse
        non-finite files). packed: None, or the sequences of a packed batch (x (1, C_in, V, T) with the S videos
        concatenated along T, mask (1, 1, T) all ones; mask-correct mode only; docs/model.md#packed-batches):
        then every output is packed the same way (``trgnet_fast.model.packing.unpack`` gives the padded layout).
        defer_text_heads: in training, return the text-space features as ``TextFeatures`` (each head with its
        (N, C, T) input, not applied; docs/model.md#deferred-text-heads) instead of e (N, D, T): the trainer's
        step, whose loss forms only e0's segment means."""
        self._dropout_seeds.start()
        try:
            return self._forward(x, mask, joint_graph, check_values, packed, defer_text_heads)
        finally:
            self._dropout_seeds.stop()

    def _forward(self, x, mask, joint_graph, check_values, packed, defer_text_heads):
        correct = self.mask_mode == "correct"
        validate_inputs(x, mask, joint_graph, self.in_channel, self.num_joints, self.logit_scale.device,
                        self.logit_scale.dtype, check_values, right_padded=correct)
        if packed is not None:
            if not correct:
                raise ValueError("packed: packed batches need mask_mode='correct' (every statistic over each "
                                 f"sequence's frames), got a model with mask_mode={self.mask_mode!r}")
            validate_packed(packed, x, mask, check_values)
        mask = mask.to(x.dtype)
        joint_graph = joint_graph.to(x.dtype)
        # mask-correct mode: every statistic over each video's own frames (docs/model.md#mask-correct-mode); a
        # packed batch has no padded frame, its sequences are given by their offsets
        if packed is not None:
            cu, frame_mask = packed.cu_seqlens, None
        else:
            cu = sequence_offsets(mask) if correct else None
            frame_mask = mask[..., None] if correct else None

        # STI masks SP's output itself: on the fused backends it saves that output, not the masked copy
        feature = self.STI(self.SP(x, joint_graph, frame_mask, packed), mask, mask_input=True, cu_seqlens=cu,
                           packed=packed)
        logits = self.conv_cls(feature)
        boundary = self.conv_bound(feature)

        if not self.training:
            for stage in self.asb:
                logits, _ = stage(torch.softmax(logits, dim=1) * mask, feature * mask, mask, cu)
            for stage in self.brb:
                boundary = stage(torch.sigmoid(boundary), mask, cu)
            return logits, boundary

        def text_features(head: nn.Conv1d, hidden: torch.Tensor):
            return TextFeatures.of(head, hidden) if defer_text_heads else head(hidden)

        all_logits, all_boundaries = [logits], [boundary]
        all_features = [text_features(self.conv_feature, feature)]
        # Published quirk: in training each decoder stage after the first attends to the previous
        # stage's hidden state instead of the encoder feature (in eval all stages use the encoder feature).
        values = feature
        for stage, feature_head in zip(self.asb, self.conv_asb_feature):
            logits, values = stage(torch.softmax(logits, dim=1) * mask, values * mask, mask, cu)
            all_logits.append(logits)
            all_features.append(text_features(feature_head, values))
        for stage in self.brb:
            boundary = stage(torch.sigmoid(boundary), mask, cu)
            all_boundaries.append(boundary)
        return all_logits, all_boundaries, all_features, self.logit_scale
