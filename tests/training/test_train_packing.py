"""Training and evaluation on packed batches (data.packing, docs/training.md#packed-batches): the same losses and
gradients as the padded batch of the same videos in mask-correct mode, no host sync in a step, DDP with packs."""
import os

import pytest
import torch
import torch.multiprocessing as mp

from test_train_ddp import _free_port, _worker
from train_helpers import assert_same_step, float64_step, setup_trainer, text_files, tiny_overrides
from trgnet_fast.data import collate, pack_collate
from trgnet_fast.host_sync import NoHostSync
from trgnet_fast.training import Trainer, load_checkpoint, load_config
from trgnet_fast.training.config import ConfigError
from trgnet_fast.training.data import eval_loader, frame_budget, train_loader
from trgnet_fast.training.evaluate import run_inference
from trgnet_fast.training.trainer import LOSS_KEYS, disable_dropout

PACKED = ["data.packing=true", "model.mask_mode=correct"]
pytestmark = pytest.mark.filterwarnings("ignore:no text inputs")  # the tiny configs train without ARIS text terms


def test_a_packed_training_step_from_the_loader_issues_no_host_sync(tiny_data, tmp_path):
    trainer = setup_trainer(tiny_data, tmp_path / "out", [*PACKED, *text_files(tmp_path), "optim.grad_clip=1.0"])
    loader, sampler = train_loader(trainer.splits["train"], trainer.cfg, 0, 1,
                                   loss_targets=trainer.criterion.target_builder())
    batch = next(iter(loader))
    # the default budget: train.batch_size (2) × the mean length, so a pack holds about 2 videos, no padding
    assert batch["x"].shape[0] == 1 and batch["x"].shape[-1] == int(batch["lengths"].sum())
    # data.augment: the FrameBudgetBatchSampler inside SeededBatches (trgnet_fast/data/seeded_batches.py)
    assert sum(batch["lengths"].tolist()) <= sampler.batches.frame_budget and len(sampler) >= 2
    trainer.train_step(batch)
    counters = [state["step"] for state in trainer.optimizer.state.values()]
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with NoHostSync(host_tensors=counters):
        result = trainer.train_step(batch)
    assert any(not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters()))
    terms = dict(zip(LOSS_KEYS, result.tolist()))
    assert terms["aris_abs"] > 0 and terms["aris_rel"] > 0 and all(torch.isfinite(result).tolist())
    assert result[-1] == batch["lengths"].sum()  # the valid frames counted for the accuracy


def test_packed_step_equals_the_padded_step_of_the_same_videos(tiny_data, tmp_path):
    """Train mode, dropout off, float64: every loss term, the final logits and every gradient of the packed batch
    equal the padded batch's."""
    trainer = setup_trainer(tiny_data, tmp_path / "out", [*PACKED, *text_files(tmp_path)])
    disable_dropout(trainer.step.double())
    items = [trainer.splits["train"][i] for i in range(4)]
    assert len({item["feature"].shape[-1] for item in items}) > 1  # different lengths: the padded batch pads
    builder = trainer.criterion.target_builder(torch.float64)
    padded, packed = (float64_step(trainer, batch) for batch in (collate(items, builder), pack_collate(items, builder)))
    assert_same_step(padded, packed, collate(items)["mask"])


def test_packed_evaluation_gives_the_batch_1_results(tiny_data, tmp_path):
    """Validation on packs of several videos: the same logits per video as one video per batch."""
    trainer = setup_trainer(tiny_data, tmp_path / "out", [*PACKED, "data.frame_budget=200"])
    outputs = []
    for packing in (True, False):
        trainer.cfg["data"]["packing"] = packing
        loader = eval_loader(trainer.splits["train"], trainer.cfg)
        got = {}
        run_inference(trainer.model, loader, trainer.cfg, trainer.class_names, trainer.joint_graph, trainer.device,
                      on_video=lambda name, pred, gt, logits, boundary: got.update({name: (pred, logits)}))
        outputs.append((got, len(loader)))
    (packed, n_packed), (single, n_single) = outputs
    assert n_packed < n_single == len(single) == len(packed) == 6
    for name, (pred, logits) in single.items():
        assert packed[name][1].shape == logits.shape
        assert torch.allclose(packed[name][1], logits, rtol=1e-5, atol=1e-5 * float(logits.abs().max())), name


def test_packed_training_runs_end_to_end_and_resumes_its_packs(tiny_data, tmp_path):
    out = tmp_path / "run"
    cfg = load_config("synthetic", tiny_overrides(tiny_data, str(out), epochs=2, extra=PACKED))
    summary = Trainer(cfg, log=lambda m: None, progress=False).fit()
    assert summary["val_n_videos"] == 2 and summary["epoch"] == 2
    assert all(torch.isfinite(torch.tensor([summary[f"train_{k}"] for k in LOSS_KEYS])).tolist())
    assert load_checkpoint(os.path.join(out, "last.pt"))["config"]["data"]["packing"] is True


def test_packing_needs_mask_correct_mode(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="'data.packing': expected model.mask_mode: correct with packed batches"):
        load_config("synthetic", tiny_overrides(tiny_data, str(tmp_path), extra=["data.packing=true"]))
    with pytest.raises(ConfigError, match="'data.frame_budget'"):
        load_config("synthetic", tiny_overrides(tiny_data, str(tmp_path), extra=[*PACKED, "data.frame_budget=0"]))


def test_ddp_ranks_run_their_own_packs_and_stay_identical(tiny_data, tmp_path):
    """2 gloo processes on packed batches: each rank its own packs, the same number of steps (else a collective would
    hang), identical parameters after training; the validation metrics count every video once."""
    out = str(tmp_path)
    cfg = load_config("synthetic", tiny_overrides(tiny_data, out, epochs=1,
                                                  extra=[*PACKED, "model.dropout=false", "train.max_steps_per_epoch=2"]))
    mp.spawn(_worker, args=(2, _free_port(), cfg, out), nprocs=2, join=True)
    r0, r1 = (torch.load(os.path.join(out, f"rank{r}.pt")) for r in range(2))
    assert torch.equal(r0["flat"], r1["flat"]) and torch.equal(r0["gathered"][0], r0["gathered"][1])
    assert r0["summary"]["val_n_videos"] == 2


def test_frame_budget_default_is_batch_size_times_the_mean_length():
    cfg = {"data": {"frame_budget": None}, "train": {"batch_size": 2}}
    assert frame_budget(cfg, [3, 4, 6]) == 9  # ceil(2 · 13 / 3)
    assert frame_budget(cfg, [5, 5]) == 10
    cfg["data"]["frame_budget"] = 7
    assert frame_budget(cfg, [3, 4, 6]) == 7
    assert frame_budget({"data": {}, "train": {"batch_size": 3}}, [4]) == 12  # a checkpoint's config without the key
