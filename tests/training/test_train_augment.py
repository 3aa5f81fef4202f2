"""SAEP in the training loader (docs/model.md#saep-augmentation): a batch's augmentation is a function of the seed, the
rank, the epoch and the batch's place only — the same with or without loader workers and in a new loader (as after a
resume), different in another epoch or on another rank; the loss targets' GS-TMSE pair weights come from the
augmented batch."""
import torch

from train_helpers import text_files, tiny_overrides
from trgnet_fast.losses.terms import gs_tmse_weights
from trgnet_fast.training import Trainer, load_config
from trgnet_fast.training.data import train_loader


def _batches(trainer, epoch, workers=0, rank=0, world=1):
    cfg = {**trainer.cfg, "data": {**trainer.cfg["data"], "num_workers": workers}}
    loader, sampler = train_loader(trainer.splits["train"], cfg, rank, world, trainer.criterion.target_builder())
    sampler.set_epoch(epoch)
    return list(loader)


def _same(a, b) -> bool:
    return a["names"] == b["names"] and torch.equal(a["x"], b["x"])


def test_augmented_batches_depend_on_seed_rank_epoch_and_place_only(tiny_data, tmp_path):
    cfg = load_config("synthetic", tiny_overrides(tiny_data, str(tmp_path / "out"), extra=text_files(tmp_path)))
    assert cfg["data"]["augment"]
    trainer = Trainer(cfg, log=lambda m: None, progress=False)
    trainer.setup()
    first = _batches(trainer, epoch=1)
    assert len(first) == 3  # 6 training videos, batch size 2
    with_workers = _batches(trainer, epoch=1, workers=2)
    assert len(with_workers) == 3
    for a, b in zip(first, with_workers):
        assert _same(a, b) and torch.equal(a["loss_targets"].pair_weight, b["loss_targets"].pair_weight)
        assert torch.equal(a["loss_targets"].pair_weight, gs_tmse_weights(a["x"], a["loss_targets"].pairs))
    assert not any(_same(a, b) for a, b in zip(first, _batches(trainer, epoch=2)))
    # rank 1 of 2: another share of the videos, with other seeds (batch_seed takes the rank)
    ranks = [_batches(trainer, epoch=1, rank=rank, world=2)[0] for rank in (0, 1)]
    assert not _same(*ranks)
