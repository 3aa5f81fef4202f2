"""Dropout seeds of the hashed layers (AttModule, SFI, dilated residual; docs/model.md#dropout-seeds)."""
from __future__ import annotations

import torch

SEED_RANGE = 2 ** 62  # dropout seeds are drawn in [0, SEED_RANGE)


def draw_dropout_seeds(device, count: int = 1) -> torch.Tensor:
    """(count,) int64 dropout seeds from torch's generator of ``device`` (no host sync; capturable on CUDA)."""
    return torch.randint(SEED_RANGE, (count,), device=device)


class DropoutSeeds:
    """The dropout seeds of one model's hashed layers, drawn as one (slots,) tensor per forward.

    One ``randint`` per forward instead of one per layer (49 launches fewer per training step at the published
    config). Each layer owns a slot (``add_slot``); within a forward (``start`` … ``stop``) ``seed(slot, device)``
    returns the slot's (1,) view of that forward's draw, made at the forward's first call. Outside a forward (a layer
    called on its own) every call draws a fresh seed, as before.
    """

    def __init__(self):
        self.slots = 0
        self._active = False
        self._drawn: torch.Tensor | None = None

    def add_slot(self) -> "SeedSlot":
        self.slots += 1
        return SeedSlot(self, self.slots - 1)

    def start(self) -> None:
        self._active, self._drawn = True, None

    def stop(self) -> None:
        self._active, self._drawn = False, None

    def seed(self, slot: int, device) -> torch.Tensor:
        """(1,) int64: slot ``slot``'s seed of the current forward (a view, no op), or a fresh draw outside one."""
        if not self._active:
            return draw_dropout_seeds(device)
        if self._drawn is None:
            self._drawn = draw_dropout_seeds(device, self.slots)
        return self._drawn[slot:slot + 1]


class SeedSlot:
    """A layer's slot in a model's ``DropoutSeeds``."""

    def __init__(self, source: DropoutSeeds, index: int):
        self.source, self.index = source, index

    def seed(self, device) -> torch.Tensor:
        return self.source.seed(self.index, device)


def layer_dropout_seed(slot: SeedSlot | None, device) -> torch.Tensor:
    """(1,) int64 dropout seed of a layer: from its model's per-forward draw, or fresh for a layer without a slot."""
    return draw_dropout_seeds(device) if slot is None else slot.seed(device)
