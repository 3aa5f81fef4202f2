"""Per-batch random seeds for augmentation in the data loader (docs/model.md#saep-augmentation).

SAEP runs in the training collate, on the CPU, in the loader's workers (as published: "torch RNG inside DataLoader
workers"). Its randomness comes from one generator per batch seeded with :func:`batch_seed` — a function of the
training seed, the rank, the epoch and the batch's position in the epoch only — so the augmentation of a batch is
the same whatever the number of workers, after a resume, and on every run with the same seed.

:class:`SeededBatches` wraps a batch sampler and pairs every index of a batch with the batch's seed;
:class:`SeededItems` wraps the dataset and hands the seed on as the item's ``augment_seed``; the collate reads it
back with :func:`batch_generator`.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

SEED_KEY = "augment_seed"
_MASK64 = (1 << 64) - 1


def _mix(value: int) -> int:
    """SplitMix64's finaliser: neighbouring inputs give unrelated 64-bit outputs."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def batch_seed(seed: int, rank: int, epoch: int, batch: int) -> int:
    """The augmentation seed of batch ``batch`` of ``epoch`` on ``rank`` (a 63-bit int, torch.Generator's range)."""
    value = 0
    for part in (seed, rank, epoch, batch):
        value = _mix(value ^ (int(part) & _MASK64))
    return value >> 1


class SeededBatches:
    """A batch sampler whose batches are lists of (dataset index, the batch's :func:`batch_seed`).

    batches: the batch sampler to wrap (its batches' order is the loader's); seed, rank: the run's training seed and
    this process's rank; epochs: the object whose ``set_epoch`` sets the order of an epoch (the sampler inside
    ``batches``, or ``batches`` itself), called by :meth:`set_epoch`.
    """

    def __init__(self, batches, seed: int, rank: int, epochs=None):
        self.batches, self.seed, self.rank = batches, int(seed), int(rank)
        self.epochs = batches if epochs is None else epochs
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epochs.set_epoch(epoch)
        self.epoch = int(epoch)

    def __iter__(self):
        for number, indices in enumerate(self.batches):
            seed = batch_seed(self.seed, self.rank, self.epoch, number)
            yield [(index, seed) for index in indices]

    def __len__(self) -> int:
        return len(self.batches)


class SeededItems(Dataset):
    """``dataset`` indexed by (index, seed) pairs (:class:`SeededBatches`): its item, with the seed added as
    ``augment_seed``."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        return {**self.dataset[index], SEED_KEY: seed}


def batch_generator(items: list[dict], where: str) -> torch.Generator:
    """A CPU generator seeded with the batch's seed (the ``augment_seed`` of its items, which
    :class:`SeededItems` adds). Raises ValueError naming ``where`` when the items carry no seed, or several."""
    seeds = {item.get(SEED_KEY) for item in items}
    if None in seeds or len(seeds) != 1:
        raise ValueError(f"{where}: augment: expected items with one '{SEED_KEY}' (a loader with SeededBatches and "
                         f"SeededItems), got {sorted(seeds, key=str)}")
    return torch.Generator().manual_seed(seeds.pop())
