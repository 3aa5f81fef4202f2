"""Packed batches (docs/model.md#packed-batches): the videos of a batch concatenated along time, no padded frame
stored or computed; batches filled up to a frame budget instead of a fixed video count."""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset, Sampler

from trgnet_fast.data.collate import check_batch, padded_targets
from trgnet_fast.data.datasets import unwrap_subsets
from trgnet_fast.data.seeded_batches import batch_generator
from trgnet_fast.model.packing import packed_sequences, unpack


def pack_collate(batch: list[dict], loss_targets=None, augment=None) -> dict:
    """Concatenate dataset items along time (the items and their checks as :func:`~trgnet_fast.data.collate.collate`).

    With S items of T_i frames, T = sum_i T_i and T_max = max_i T_i returns::

        x          (1, C, V, T) float32, the features one after another, no padding (augmented with ``augment``)
        mask       (1, 1, T) bool, all True (every stored frame is a real one)
        packed     ``PackedSequences`` of the S lengths (CPU tensors), for the model and ``unpack``
        labels, boundary, lengths, names, max_segments, loss_targets
                   exactly as ``collate`` returns them: the loss keeps the padded (S, ..., T_max) layout
        loss_mask  (S, 1, T_max) bool, ``collate``'s ``mask``

    augment: as ``collate``'s, per sequence (the same draws as for the padded batch). The padded x (S, C, V, T_max)
    is built only for the loss targets' GS-TMSE pair weights, here on the CPU.
    """
    check_batch(batch, "pack_collate")
    x = torch.cat([item["feature"] for item in batch], dim=2).to(torch.float32)[None]
    packed = packed_sequences([item["feature"].shape[2] for item in batch])
    if augment is not None:
        x = augment(x, generator=batch_generator(batch, "pack_collate"), packed=packed)
    targets = padded_targets(batch, max(packed.lengths), loss_targets,
                             None if loss_targets is None else unpack(x, packed))
    loss_mask = targets.pop("mask")  # "mask" is the packed input's
    return {"x": x, "mask": torch.ones(1, 1, x.shape[-1], dtype=torch.bool), "packed": packed, "loss_mask": loss_mask,
            **targets}


def _check_int(value, name: str, minimum: int) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}: expected an int ≥ {minimum}, got {value!r}")
    return int(value)


def _check_lengths(lengths: Sequence[int]) -> tuple[int, ...]:
    bad = [n for n in lengths if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1]
    if len(lengths) == 0 or bad:
        raise ValueError(f"lengths: expected a non-empty sequence of ints ≥ 1 (frames per video), got "
                         f"{len(lengths)} values, bad ones {bad[:8]}")
    return tuple(int(n) for n in lengths)


def video_order(n: int, seed: int, epoch: int, shuffle: bool) -> list[int]:
    """The videos' order in ``epoch``: a permutation of range(n) drawn from a generator seeded with seed + epoch
    (as ``DistributedSampler`` draws it, so resume reproduces it), or file order without ``shuffle``."""
    if not shuffle:
        return list(range(n))
    generator = torch.Generator()
    generator.manual_seed(seed + epoch)
    return torch.randperm(n, generator=generator).tolist()


def first_fit(order: Sequence[int], lengths: Sequence[int], frame_budget: int) -> list[list[int]]:
    """Packs of video indices: each video of ``order`` goes into the first pack whose frames plus its own stay
    within ``frame_budget``, else opens a new pack. A video over the budget (it cannot be split) opens a pack
    that nothing else fits into."""
    packs: list[list[int]] = []
    totals: list[int] = []
    for index in order:
        n = lengths[index]
        slot = next((p for p, total in enumerate(totals) if total + n <= frame_budget), len(packs))
        if slot == len(packs):
            packs.append([])
            totals.append(0)
        packs[slot].append(index)
        totals[slot] += n
    return packs


def deal(packs: list[list[int]], rank: int, world: int) -> list[list[int]]:
    """Rank ``rank``'s share of ``packs`` (pack i to rank i % world), the list first padded with repeats of its
    leading packs (cyclically, as ``DistributedSampler`` pads) to a multiple of world: under DDP every rank
    must run the same number of steps."""
    padded = math.ceil(len(packs) / world) * world
    repeats = packs * math.ceil(padded / len(packs))
    return repeats[:padded][rank::world]


class FrameBudgetBatchSampler(Sampler):
    """Batches of video indices (for ``DataLoader(batch_sampler=...)``) holding at most ``frame_budget`` frames
    each, a video over the budget alone, built by :func:`first_fit` over the epoch's :func:`video_order`.

    lengths: the videos' frame counts (``frame_counts``); the packs are built identically on every rank, then
    dealt by :func:`deal`, so all ranks run ``len(self)`` steps. Call ``set_epoch`` before each epoch (as with
    ``DistributedSampler``); the batches are a function of (lengths, frame_budget, seed, epoch, rank, world).
    """

    def __init__(self, lengths: Sequence[int], frame_budget: int, seed: int = 0, rank: int = 0, world: int = 1,
                 shuffle: bool = True):
        self.lengths = _check_lengths(lengths)
        self.frame_budget = _check_int(frame_budget, "frame_budget", 1)
        self.world = _check_int(world, "world", 1)
        if not isinstance(rank, numbers.Integral) or isinstance(rank, bool) or not 0 <= rank < self.world:
            raise ValueError(f"rank: expected an int in 0..{self.world - 1} (world {self.world}), got {rank!r}")
        self.rank = int(rank)
        self.seed = _check_int(seed, "seed", 0)
        self.shuffle = bool(shuffle)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Build this rank's batches of ``epoch`` (≥ 0), so that ``len(self)`` is known before iterating."""
        self.epoch = _check_int(epoch, "epoch", 0)
        order = video_order(len(self.lengths), self.seed, self.epoch, self.shuffle)
        self._batches = deal(first_fit(order, self.lengths, self.frame_budget), self.rank, self.world)

    def __iter__(self):
        return (list(batch) for batch in self._batches)

    def __len__(self) -> int:
        return len(self._batches)


def frame_counts(dataset: Dataset) -> list[int]:
    """The item frame counts (``feature``'s T) of the videos of ``dataset`` — a CsvSegmentationDataset or
    MSTCNDataset, or a (nested) Subset of one — read from the label files only (``num_frames``)."""
    dataset, indices = unwrap_subsets(dataset)
    if not hasattr(dataset, "num_frames"):
        raise TypeError(f"dataset: expected a CsvSegmentationDataset or MSTCNDataset (or a Subset of one), got "
                        f"{type(dataset).__name__}")
    return [dataset.num_frames(i) for i in indices]


def batch_frames(batches: Sequence[Sequence[int]], lengths: Sequence[int], packed: bool) -> int:
    """Frames stored (and computed) for ``batches`` of video indices with frame counts ``lengths``: the sum of
    the lengths when ``packed``, else S · T_max per batch (the padded collate's (S, ..., T_max))."""
    if packed:
        return sum(lengths[i] for batch in batches for i in batch)
    return sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)
