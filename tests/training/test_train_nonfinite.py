"""Training stops at the first step that breaks it (a non-finite loss or non-finite updated weights), naming the
epoch and the step, and never writes non-finite weights over a good checkpoint (docs/training.md#non-finite-stops)."""
import math
import re
from pathlib import Path

import pytest
import torch

from train_helpers import tiny_overrides
from trgnet_fast.host_sync import NoHostSync
from trgnet_fast.training import Trainer, load_checkpoint, load_config
from trgnet_fast.training.trainer import check_health, healthy, update_health

CHECKPOINTS = ("last.pt", "best.pt")


def _config(tiny_data, out_dir, epochs=1, extra=()):
    return load_config("synthetic", tiny_overrides(tiny_data, str(out_dir), epochs=epochs, extra=extra))


@pytest.mark.parametrize("extra, broken", [
    (["optim.lr=1e30"], "the loss and the updated weights became non-finite at step 2"),
    (["loss.gstmse_weight=1e300"], "the loss and the updated weights became non-finite at step 1"),
])
def test_a_diverging_run_stops_naming_epoch_and_first_broken_step(tiny_data, tmp_path, extra, broken):
    trainer = Trainer(_config(tiny_data, tmp_path, extra=extra), log=lambda m: None, progress=False)
    with pytest.raises(FloatingPointError, match=f"epoch 1, steps 1-3: {broken}; stopping"):
        trainer.fit()  # 3 steps (6 training videos, batch 2), read once after step 3
    assert not any((tmp_path / name).exists() for name in CHECKPOINTS)


class BreakWeightsAt(Trainer):
    """A trainer whose optimizer step ``step`` of epoch ``epoch`` leaves an infinite weight while that step's loss
    is finite; it keeps the checkpoint bytes found when that epoch starts in ``good_checkpoints``."""

    def __init__(self, cfg, epoch: int, step: int):
        super().__init__(cfg, log=lambda m: None, progress=False)
        self.break_epoch, self.break_step = epoch, step

    def train_epoch(self, epoch: int) -> dict:
        if epoch == self.break_epoch:
            self.good_checkpoints = {n: Path(self.out_dir, n).read_bytes() for n in CHECKPOINTS}
            real_step, calls = self.optimizer.step, []

            def step(*args, **kwargs):
                real_step(*args, **kwargs)
                calls.append(1)
                if len(calls) == self.break_step:
                    with torch.no_grad():
                        next(self.model.parameters()).view(-1)[0] = math.inf
            self.optimizer.step = step
        return super().train_epoch(epoch)


def test_weights_broken_at_the_last_step_of_an_epoch_keep_the_good_checkpoints(tiny_data, tmp_path):
    # step 3 is the last one of epoch 2: no later loss would show the broken weights before validation and saving
    trainer = BreakWeightsAt(_config(tiny_data, tmp_path, epochs=3), epoch=2, step=3)
    with pytest.raises(FloatingPointError, match=r"epoch 2, steps 1-3: the updated weights became non-finite "
                                                 r"\(the loss was still finite\) at step 3; stopping"):
        trainer.fit()
    assert {n: (tmp_path / n).read_bytes() for n in CHECKPOINTS} == trainer.good_checkpoints
    assert load_checkpoint(str(tmp_path / "last.pt"))["epoch"] == 1


def test_save_refuses_non_finite_weights_and_keeps_the_checkpoints(tiny_data, tmp_path):
    trainer = Trainer(_config(tiny_data, tmp_path), log=lambda m: None, progress=False)
    trainer.setup()
    trainer.save(1, None, is_best=True)
    good = {n: (tmp_path / n).read_bytes() for n in CHECKPOINTS}
    bn = next(name for name, _ in trainer.model.named_buffers() if name.endswith("running_var"))
    trainer.model.get_buffer(bn).fill_(math.nan)  # a buffer: the step health only watches the trained weights
    with pytest.raises(FloatingPointError, match=rf"epoch 2: not saving .*last\.pt: non-finite values in "
                                                 rf"{re.escape(bn)}; the checkpoints"):
        trainer.save(2, None, is_best=True)
    assert {n: (tmp_path / n).read_bytes() for n in CHECKPOINTS} == good


def test_step_health_names_the_first_broken_step_without_host_syncs():
    weights = [torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)]
    health = healthy(torch.device("cpu"))
    with NoHostSync():
        health = update_health(health, torch.tensor(1.0), weights)
    with torch.no_grad():
        weights[1][0] = math.inf
    with NoHostSync():
        health = update_health(health, torch.tensor(2.0), weights)  # step 2: finite loss, broken weights
        health = update_health(health, torch.tensor(math.nan), weights)  # a later step changes nothing
    assert health.tolist() == [1.0, 0.0, 2.0]
    with pytest.raises(FloatingPointError, match=r"epoch 4, steps 1-3: the updated weights became non-finite "
                                                 r"\(the loss was still finite\) at step 2"):
        check_health(health.tolist(), "epoch 4, steps 1-3")
    check_health(healthy(torch.device("cpu")).tolist(), "epoch 1, steps 1-1")  # nothing broken
