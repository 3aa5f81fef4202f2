"""One training step (Trainer.train_step) without host syncs, and the host reads of its results
(docs/training.md#no-host-syncs)."""
import numpy as np
import pytest
import torch

from train_helpers import text_files, tiny_overrides
from trgnet_fast.host_sync import HostSyncError, NoHostSync
from trgnet_fast.losses import LossTargets
from trgnet_fast.training import Trainer, load_config
from trgnet_fast.training.data import train_loader
from trgnet_fast.training.trainer import LOSS_KEYS


@pytest.fixture()
def trainer_and_batch(tiny_data, tmp_path):
    """A set-up trainer with every loss term on (SAEP, grad clipping, Adam) and a batch from its own loader."""
    extra = text_files(tmp_path) + ["optim.grad_clip=1.0", "text.joint_graph=learned"]
    cfg = load_config("synthetic", tiny_overrides(tiny_data, str(tmp_path / "out"), extra=extra))
    trainer = Trainer(cfg, log=lambda m: None, progress=False)
    trainer.setup()
    loader, _ = train_loader(trainer.splits["train"], cfg, 0, 1, loss_targets=trainer.criterion.target_builder())
    return trainer, next(iter(loader))


def test_a_training_step_from_the_loader_issues_no_host_sync(trainer_and_batch):
    trainer, batch = trainer_and_batch
    assert trainer.text.use_aris_abs and trainer.text.use_aris_rel and trainer.cfg["data"]["augment"]
    trainer.train_step(batch)  # Adam's state exists from here on: a steady-state step
    counters = [state["step"] for state in trainer.optimizer.state.values()]  # host values even on a GPU
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with NoHostSync(host_tensors=counters):
        result = trainer.train_step(batch)
    assert any(not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters()))  # it did train
    terms = dict(zip(LOSS_KEYS, result.tolist()))
    assert terms["aris_abs"] > 0 and terms["aris_rel"] > 0 and np.isfinite(list(terms.values())).all()
    # the guard holds the step to it: without the collate's loss targets and segment bound the loss counts segments
    # on the host
    assert isinstance(batch["loss_targets"], LossTargets)
    del batch["max_segments"], batch["loss_targets"]
    with pytest.raises(HostSyncError, match="nonzero"):
        with NoHostSync(host_tensors=counters):
            trainer.train_step(batch)


def test_read_losses_averages_and_refuses_non_finite_losses():
    sums = torch.tensor([4.0, 2.0, 1.0, 0.5, 0.25, 0.25, 30.0, 40.0], dtype=torch.float64)
    row = Trainer.read_losses(sums, 2, "epoch 1")
    assert row == {"total": 2.0, "ce": 1.0, "gstmse": 0.5, "boundary": 0.25, "aris_abs": 0.125,
                   "aris_rel": 0.125, "acc": 75.0}
    sums[1] = float("nan")
    with pytest.raises(FloatingPointError, match="epoch 3, steps 4-6: the loss became non-finite \\(ce\\)"):
        Trainer.read_losses(sums, 3, "epoch 3, steps 4-6")


def test_training_stops_at_a_non_finite_loss_naming_epoch_and_steps(tiny_data, tmp_path, monkeypatch):
    cfg = load_config("synthetic", tiny_overrides(tiny_data, str(tmp_path), extra=["train.log_every=2"]))
    trainer = Trainer(cfg, log=lambda m: None, progress=False)
    trainer.setup()
    real_step, calls = trainer.train_step, []

    def step(batch):
        calls.append(1)
        result = real_step(batch)
        return result * float("inf") if len(calls) == 3 else result
    monkeypatch.setattr(trainer, "train_step", step)
    with pytest.raises(FloatingPointError, match="epoch 1, steps 3-3: the loss became non-finite"):
        trainer.train_epoch(1)  # 3 steps (6 videos, batch 2): read after steps 2 and 3
    assert len(calls) == 3
