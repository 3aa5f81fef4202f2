"""Packed variable-length batches (docs/model.md#packed-batches): S videos concatenated along the time axis of one
row, no padded frame stored or computed; every layer keeps to its sequence's frames."""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from trgnet_fast.model.channel_dropout import feature_dropout_noise


class PackedSequences(NamedTuple):
    """S sequences packed along the time axis of a (1, ..., T) batch, T = sum(lengths).

    cu_seqlens (S + 1,) int32: offsets of the sequences (the fused ops' packed layout); lengths: the S lengths as
    host ints (the shapes built from them need no device read); frame_sequence (T,) int64: the sequence of every
    packed frame; unpack_index (S, T_max) int64: the packed frame of every padded position (s, t) with
    t < lengths[s], 0 beyond; valid (S, T_max) bool: t < lengths[s]. All tensors on one device.
    """

    cu_seqlens: torch.Tensor
    lengths: tuple
    frame_sequence: torch.Tensor
    unpack_index: torch.Tensor
    valid: torch.Tensor

    @property
    def num_sequences(self) -> int:
        return len(self.lengths)

    @property
    def total_frames(self) -> int:
        return sum(self.lengths)


def packed_sequences(lengths: Sequence[int]) -> PackedSequences:
    """The :class:`PackedSequences` of sequences of ``lengths`` (S ≥ 1 host ints, each ≥ 1), built on the CPU (the
    data loader's collate; ``training.transfer.to_device`` moves it with the batch)."""
    lengths = tuple(int(n) for n in lengths)
    if not lengths or min(lengths) < 1:
        raise ValueError(f"lengths: expected at least one sequence, each of >= 1 frames, got {list(lengths)}")
    sizes = torch.tensor(lengths, dtype=torch.int64)
    starts = torch.cumsum(sizes, 0) - sizes
    cu = torch.cat([sizes.new_zeros(1), torch.cumsum(sizes, 0)]).to(torch.int32)
    frame_sequence = torch.repeat_interleave(torch.arange(len(lengths)), sizes)
    positions = torch.arange(max(lengths))
    valid = positions[None, :] < sizes[:, None]
    unpack_index = torch.where(valid, starts[:, None] + positions[None, :], 0)
    return PackedSequences(cu, lengths, frame_sequence, unpack_index, valid)


def unpack(x: torch.Tensor, packed: PackedSequences) -> torch.Tensor:
    """The padded layout of a packed tensor: x (1, ..., T) → (S, ..., T_max), zero beyond each sequence's length
    (as the padded collate's). Differentiable (the gradient of the padded positions is dropped)."""
    if x.shape[0] != 1 or x.shape[-1] != packed.total_frames:
        raise ValueError(f"x: expected a packed tensor (1, ..., {packed.total_frames}), got shape {tuple(x.shape)}")
    out = x[0].index_select(-1, packed.unpack_index.reshape(-1)).unflatten(-1, packed.unpack_index.shape)
    out = out.movedim(-2, 0)  # (S, ..., T_max)
    valid = packed.valid.view(packed.valid.shape[0], *([1] * (out.dim() - 2)), packed.valid.shape[1])
    return torch.where(valid, out, out.new_zeros(()))


def sequence_means(x: torch.Tensor, packed: PackedSequences) -> torch.Tensor:
    """Mean over each sequence's frames: x (1, C, T, V) → (S, C, 1, V), as one contraction with the (S, T)
    averaging matrix (deterministic, no atomics)."""
    sizes = torch.tensor(packed.lengths, dtype=x.dtype).to(x.device)
    sequences = torch.arange(packed.num_sequences, device=x.device)
    average = (packed.frame_sequence[None, :] == sequences[:, None]).to(x.dtype) / sizes[:, None]
    return torch.einsum("st,ctv->scv", average, x[0])[:, :, None]


def sequence_channel_noise(x: torch.Tensor, packed: PackedSequences, p: float) -> torch.Tensor:
    """Dropout2d's channel mask drawn per sequence (``feature_dropout_noise`` of the (S, C, T, V) padded batch: the
    same draw) and laid out per packed frame: x (1, C, T, V) → (1, C, T, 1). 0 < p < 1."""
    noise = feature_dropout_noise(x.expand(packed.num_sequences, -1, -1, -1), p)[:, :, 0, 0]  # (S, C)
    return noise.index_select(0, packed.frame_sequence).t()[None, :, :, None]
