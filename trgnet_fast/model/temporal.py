"""Temporal parts of TRG-Net: the STI encoder with its SFI fusions, the refinement decoder and the
boundary TCN (docs/model.md#temporal-encoder-sti, docs/model.md#decoder-refinement,
docs/model.md#boundary-branch)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trgnet_fast.backend import model_backend
from trgnet_fast.model.attention import AttModule
from trgnet_fast.model.autocast import cast_all, fused_dtype
from trgnet_fast.model.channel_dropout import ScaledConv1x1, feature_dropout_noise
from trgnet_fast.model.dropout_seeds import SeedSlot, layer_dropout_seed
from trgnet_fast.model.packing import PackedSequences, sequence_channel_noise
from trgnet_fast.ops.att_module.autograd import OP_NAME as ATT_MODULE_OP
from trgnet_fast.ops.att_module.reference import hashed_dropout
from trgnet_fast.ops.dilated_residual import dilated_residual
from trgnet_fast.ops.dilated_residual.autograd import OP_NAME as DILATED_RESIDUAL_OP
from trgnet_fast.ops.dilated_residual.reference import DROPOUT_STREAM as DILATED_RESIDUAL_DROPOUT_STREAM
from trgnet_fast.ops.spatial_feature_injection import spatial_feature_injection
from trgnet_fast.ops.spatial_feature_injection.autograd import OP_NAME as SFI_OP
from trgnet_fast.ops.spatial_feature_injection.reference import DROPOUT_STREAM as SFI_DROPOUT_STREAM

GROUP_CHANNELS = 8  # channels of each spatial group and of the temporal group that STI splits off


def flatten_joints(groups: torch.Tensor) -> torch.Tensor:
    """(N, C, T, V) → (N, V * C, T) with channel index v * C + c (joint-major)."""
    n, c, t, v = groups.shape
    return groups.permute(0, 3, 1, 2).reshape(n, v * c, t)


class SpatialFeatureInjection(nn.Module):
    """SFI: fuses one 8-channel spatial group into the temporal stream.

    s = conv_s(flatten_joints(group)); c = conv_fusion(cat[h, s]); h' = (FF(c) + h) * mask, FF applied
    per frame: Linear → GELU → Dropout(0.3) → Linear.

    ``backend`` (set by ``TRGNet.set_backend``) picks, through ``trgnet_fast.backend.model_backend``, whether the
    fusion runs as the fused op ``trgnet_fast.ops.spatial_feature_injection`` ("triton", "cuda") or as the modules
    below ("torch"). Dropout masks as the AttModule's (``dropout_masks``; docs/model.md#attmodule).
    """

    def __init__(self, num_joints: int, channels: int):
        super().__init__()
        self.backend: str | None = None
        self.dropout_masks = "torch"
        self.seed_slot: SeedSlot | None = None  # set by TRGNet
        self.conv_s = nn.Conv1d(num_joints * GROUP_CHANNELS, channels, 1)
        self.ff = nn.Sequential(
            nn.Linear(channels, channels),
            nn.GELU(),
            nn.Dropout(0.3),
            nn.Linear(channels, channels),
        )
        self.conv_fusion = nn.Conv1d(2 * channels, channels, 1)

    def forward(self, group: torch.Tensor, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """group: (N, 8, T, V); h: (N, C, T); mask: (N, 1, T) float 0/1. Returns (N, C, T)."""
        dropout = self.ff[2]
        p = dropout.p if dropout.training else 0.0
        impl = model_backend(SFI_OP, self.backend, h.device.type)
        hashed = impl != "torch" or self.dropout_masks == "hashed"
        seed = layer_dropout_seed(self.seed_slot, h.device) if hashed and p > 0 else None
        first, second = self.ff[0], self.ff[3]
        if impl != "torch":
            tensors = cast_all(fused_dtype(h, impl), group, h, mask, self.conv_s.weight, self.conv_s.bias,
                               self.conv_fusion.weight, self.conv_fusion.bias, first.weight, first.bias, second.weight,
                               second.bias)
            return spatial_feature_injection(*tensors, dropout=p, dropout_seed=seed, backend=impl)
        s = self.conv_s(flatten_joints(group))
        fused = self.conv_fusion(torch.cat([h, s], dim=1)).transpose(1, 2)
        if seed is None:
            out = self.ff(fused)
        else:  # the hashed mask is drawn in the op's (N, C, T) layout
            hidden = hashed_dropout(self.ff[1](first(fused)).transpose(1, 2), seed, SFI_DROPOUT_STREAM, p)
            out = second(hidden.transpose(1, 2))
        return (out.transpose(1, 2) + h) * mask


class SpatioTemporalEncoder(nn.Module):
    """STI: channel masking, a 1×1 split into spatial groups + one temporal group, then ``n_layers``
    encoder AttModules (dilation 2^i), with SFI_(j) before layer ``sfi_layers[j]``.

    forward: x (N, C, T, V) → F (N, C, T), masked.

    On the fused backends (the backend of STI's AttModules, set by ``TRGNet.set_backend``, resolving to "triton"
    or "cuda"), in training, the input mask, the channel masking and ``conv_in`` run as one autograd function
    (``trgnet_fast/model/channel_dropout.py``) that saves x, the mask and the (N, C, 1, 1) channel mask instead of
    conv_in's (N, C, T, V) input and recomputes that input in the backward; the same values, the same channel masks.
    """

    # False: the fused backends run the modules as the torch backend does (the tests' yardstick).
    _recompute = True

    def __init__(self, num_joints: int, channels: int, n_layers: int, sfi_layers: Sequence[int],
                 channel_masking_rate: float = 0.3):
        super().__init__()
        self.sfi_layers = tuple(sfi_layers)
        self.dropout = nn.Dropout2d(p=channel_masking_rate)
        self.conv_in = nn.Conv2d(channels, (len(self.sfi_layers) + 1) * GROUP_CHANNELS, kernel_size=1)
        self.conv_t = nn.Conv1d(num_joints * GROUP_CHANNELS, channels, 1)
        self.SFI_layers = nn.ModuleList(
            [SpatialFeatureInjection(num_joints, channels) for _ in self.sfi_layers])
        self.layers = nn.ModuleList(
            [AttModule(2 ** i, channels, "encoder", alpha=1.0) for i in range(n_layers)])
        self.conv_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, mask_input: bool = False,
                cu_seqlens: torch.Tensor | None = None, packed: PackedSequences | None = None) -> torch.Tensor:
        """x: (N, C, T, V) spatial features, masked unless ``mask_input`` (then STI zeroes the padded frames itself
        before conv_in: TRGNet passes SP's output so); mask: (N, 1, T) float 0/1; cu_seqlens: None or the (N + 1,)
        offsets of mask-correct mode (``AttModule``), or a packed batch's (S + 1,) offsets; packed: None or that
        batch's sequences (the channel masking then drops channels per sequence). Returns (N, C, T)."""
        z = self._input_stage(x, mask, mask_input) if packed is None else self._packed_input_stage(x, packed)
        spatial_groups = z[:, :-GROUP_CHANNELS].split(GROUP_CHANNELS, dim=1)
        h = self.conv_t(flatten_joints(z[:, -GROUP_CHANNELS:]))
        injections = dict(zip(self.sfi_layers, zip(self.SFI_layers, spatial_groups)))
        for index, layer in enumerate(self.layers):
            if index in injections:
                sfi, group = injections[index]
                h = sfi(group, h, mask)
            h = layer(h, None, mask, cu_seqlens)
        return self.conv_out(h) * mask

    def _input_stage(self, x: torch.Tensor, mask: torch.Tensor, mask_input: bool) -> torch.Tensor:
        """conv_in(Dropout2d(x · mask or x)) (N, C_in, T, V) → (N, 80, T, V) at the published config."""
        if self._recompute_input(x):
            noise = feature_dropout_noise(x, self.dropout.p)  # Dropout2d's channel mask, drawn as it draws it
            return ScaledConv1x1.apply(x, mask[..., None] if mask_input else None, noise, self.conv_in.weight,
                                       self.conv_in.bias)
        if mask_input:
            x = x * mask[..., None]
        return self.conv_in(self.dropout(x))

    def _packed_input_stage(self, x: torch.Tensor, packed: PackedSequences) -> torch.Tensor:
        """``_input_stage`` of a packed batch (no padded frame to mask): Dropout2d's channel mask is drawn per
        sequence, as for the same videos in a padded batch, not once for the whole pack."""
        p = self.dropout.p
        if not self.dropout.training or p == 0.0:
            return self.conv_in(x)
        noise = sequence_channel_noise(x, packed, p) if p < 1.0 else x.new_zeros(1, x.shape[1], 1, 1)
        if self._recompute_input(x):
            return ScaledConv1x1.apply(x, None, noise, self.conv_in.weight, self.conv_in.bias)
        return self.conv_in(x * noise)

    def _recompute_input(self, x: torch.Tensor) -> bool:
        """Whether the input stage runs ``ScaledConv1x1``: on the fused backends (those of STI's fused AttModules),
        in training with 0 < p < 1 and grad enabled (else there is nothing to save), not under autocast (its casts
        are conv_in's) nor while torch.compile traces (as SP: docs/model.md#spatial-block-sp)."""
        if not (self._recompute and self.layers and self.dropout.training and 0.0 < self.dropout.p < 1.0
                and torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type)
                and not torch.compiler.is_compiling()):
            return False
        return model_backend(ATT_MODULE_OP, self.layers[0].backend, x.device.type) != "torch"


class RefinementDecoder(nn.Module):
    """One action-segmentation refinement stage: conv_in, ``n_layers`` decoder AttModules whose
    attention values are the encoder feature, conv_out.

    forward: class probabilities (N, K, T) → logits (N, K, T) (not masked) and hidden (N, C, T) (masked).
    """

    def __init__(self, n_classes: int, channels: int, n_layers: int, alpha: float):
        super().__init__()
        self.conv_in = nn.Conv1d(n_classes, channels, 1)
        self.layers = nn.ModuleList(
            [AttModule(2 ** i, channels, "decoder", alpha) for i in range(n_layers)])
        self.conv_out = nn.Conv1d(channels, n_classes, 1)

    def forward(self, probabilities: torch.Tensor, encoder_feature: torch.Tensor, mask: torch.Tensor,
                cu_seqlens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """probabilities: (N, K, T); encoder_feature: (N, C, T) masked; mask: (N, 1, T) float 0/1; cu_seqlens: None
        or the (N + 1,) offsets of mask-correct mode."""
        hidden = self.conv_in(probabilities)
        for layer in self.layers:
            hidden = layer(hidden, encoder_feature, mask, cu_seqlens)
        return self.conv_out(hidden), hidden


class DilatedResidualLayer(nn.Module):
    """(x + Dropout(0.5)(conv_in(ReLU(conv_dilated(x))))) * mask, conv_dilated k3 with dilation d.

    ``backend`` (set by ``TRGNet.set_backend``) picks, through ``trgnet_fast.backend.model_backend``, whether the
    layer runs as the fused op ``trgnet_fast.ops.dilated_residual`` ("triton", "cuda") or as the modules below
    ("torch"). Dropout masks as the AttModule's (``dropout_masks``; docs/model.md#attmodule): the fused op hashes a
    seed drawn from torch's generator; the torch path uses ``nn.Dropout`` unless ``dropout_masks`` is "hashed".
    """

    def __init__(self, dilation: int, channels: int):
        super().__init__()
        self.dilation = dilation
        self.backend: str | None = None
        self.dropout_masks = "torch"
        self.seed_slot: SeedSlot | None = None  # set by TRGNet
        self.conv_dilated = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.conv_in = nn.Conv1d(channels, channels, 1)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, C, T); mask: (N, 1, T) float 0/1; cu_seqlens: None (published: the dilated conv's halo reads the
        padded frames) or the (N + 1,) offsets of mask-correct mode (zero padding at each video's end, through the
        op's reference on "torch"). Returns (N, C, T)."""
        p = self.dropout.p if self.dropout.training else 0.0
        impl = model_backend(DILATED_RESIDUAL_OP, self.backend, x.device.type)
        hashed = impl != "torch" or self.dropout_masks == "hashed" or cu_seqlens is not None
        seed = layer_dropout_seed(self.seed_slot, x.device) if hashed and p > 0 else None
        if impl != "torch" or cu_seqlens is not None:
            tensors = cast_all(fused_dtype(x, impl), x, mask, self.conv_dilated.weight, self.conv_dilated.bias,
                               self.conv_in.weight, self.conv_in.bias)
            return dilated_residual(*tensors, dilation=self.dilation, dropout=p, dropout_seed=seed,
                                    cu_seqlens=cu_seqlens, backend=impl)
        out = self.conv_in(torch.relu(self.conv_dilated(x)))
        out = self.dropout(out) if seed is None else hashed_dropout(out, seed, DILATED_RESIDUAL_DROPOUT_STREAM, p)
        return (x + out) * mask


class SingleStageTCN(nn.Module):
    """Boundary refinement stage (MS-TCN single stage): conv_in, ``n_layers`` dilated residual layers
    (dilation 2^i), conv_out, masked.

    forward: x (N, C_in, T) → (N, C_out, T).
    """

    def __init__(self, in_channels: int, channels: int, out_channels: int, n_layers: int):
        super().__init__()
        self.conv_in = nn.Conv1d(in_channels, channels, 1)
        self.layers = nn.ModuleList([DilatedResidualLayer(2 ** i, channels) for i in range(n_layers)])
        self.conv_out = nn.Conv1d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, C_in, T); mask: (N, 1, T) float 0/1; cu_seqlens: None or the (N + 1,) offsets of mask-correct
        mode. Returns (N, C_out, T)."""
        out = self.conv_in(x)
        for layer in self.layers:
            out = layer(out, mask, cu_seqlens)
        return self.conv_out(out) * mask
