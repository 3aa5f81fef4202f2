"""The packed-vs-padded benchmark (benchmarks/packing.py): its epoch counts on hand-made lengths with known answers,
its padded batches against the trainer's loader, its length draws against make_synthetic and their stated shape,
and the whole --quick report."""
from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import packing  # noqa: E402
from trgnet_fast.data import make_synthetic  # noqa: E402
from trgnet_fast.training.config import load_config  # noqa: E402
from trgnet_fast.training.data import train_loader  # noqa: E402


@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_epoch_counts_of_five_long_videos_and_a_short_one(epoch):
    """B = 2: three padded batches whatever the order, each padded to 100 frames (the 10-frame video is padded
    by 90); budget ceil(2 × 510 / 6) = 170: the 100-frame videos cannot share a pack, the short one joins one."""
    counts = packing.epoch_counts([100, 100, 100, 100, 100, 10], batch_size=2, seed=3, epoch=epoch)
    assert counts["padded"] == {"steps": 3, "videos": 6, "frames": 600, "real_frames": 510,
                                "padding_share": pytest.approx(0.15), "max_videos_per_batch": 2}
    assert counts["packed"] == {"steps": 5, "videos": 6, "frames": 510, "real_frames": 510, "padding_share": 0.0,
                                "max_videos_per_batch": 2, "frame_budget": 170, "mean_fill": pytest.approx(0.6)}


def test_epoch_counts_drop_the_last_partial_padded_batch_only():
    counts = packing.epoch_counts([50] * 5, batch_size=2, seed=0, epoch=0)
    assert counts["padded"] == {"steps": 2, "videos": 4, "frames": 200, "real_frames": 200, "padding_share": 0.0,
                                "max_videos_per_batch": 2}
    assert counts["packed"] == {"steps": 3, "videos": 5, "frames": 250, "real_frames": 250, "padding_share": 0.0,
                                "max_videos_per_batch": 2, "frame_budget": 100, "mean_fill": pytest.approx(250 / 300)}


def test_padded_batches_are_the_published_loaders(tmp_path):
    class Videos:  # the loader's sampler only needs the length; its batch sampler never reads an item
        def __len__(self):
            return 13

    cfg = load_config("synthetic", ["train.batch_size=4", "train.seed=7"])
    loader, sampler = train_loader(Videos(), cfg, rank=0, world=1)
    for epoch in (0, 5):
        sampler.set_epoch(epoch)
        # data.augment pairs each index with its batch's SAEP seed (trgnet_fast/data/seeded_batches.py)
        indices = [[index for index, _ in batch] for batch in loader.batch_sampler]
        assert packing.padded_batches(13, 4, seed=7, epoch=epoch) == indices


def test_synthetic_lengths_are_make_synthetics(tmp_path):
    settings = {"n_train": 4, "seed": 5, "min_frames": 20, "max_frames": 60}
    make_synthetic(tmp_path, n_val=0, n_test=0, **settings)
    made = [np.load(tmp_path / "features" / f"train_{i:04d}.npy").shape[0] for i in range(4)]
    assert packing.synthetic_lengths(settings) == made


def test_lognormal_lengths_have_the_stated_mean_and_cv():
    lengths = packing.lognormal_lengths(20_000, 4940, 0.25, seed=1)
    stats = packing.length_stats(lengths)
    assert stats["mean"] == pytest.approx(4940, abs=0.5) and stats["cv"] == pytest.approx(0.25, abs=0.01)
    assert min(packing.lognormal_lengths(1000, 3, 2.0, seed=0)) == 2  # clipped to the shortest readable video


def test_quick_report(tmp_path, capsys):
    assert packing.main(["--quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "packing.json").read_text())
    text = (tmp_path / "packing.md").read_text()
    assert "ASSUMED lognormal" in text and text.strip() in capsys.readouterr().out
    assert set(data["counts"]) == {"pku", "synthetic", "synthetic-pku-shape"}
    for name, counts in data["counts"].items():
        n, batch = counts["lengths"]["videos"], counts["batch_size"]
        for epoch in counts["epochs"]:
            padded, packed = epoch["padded"], epoch["packed"]
            assert padded["steps"] == n // batch and padded["videos"] == padded["steps"] * batch
            assert padded["frames"] >= padded["real_frames"]
            assert packed["frames"] == packed["real_frames"] == counts["lengths"]["frames"]
            assert packed["padding_share"] == 0.0 and packed["videos"] == n
            assert packed["steps"] >= math.ceil(packed["frames"] / packed["frame_budget"])
            assert packed["frame_budget"] == math.ceil(batch * counts["lengths"]["frames"] / n)
    pku = data["counts"]["pku"]["summary"]
    assert pku["padded"]["padding_share"] > 0 and pku["packed"]["padding_share"] == 0.0

    timing = data["timing"]
    assert set(timing["modes"]) == {"padded-published", "padded-correct", "packed"}
    steps = data["meta"]["args"]["steps"]
    for mode, r in timing["modes"].items():
        assert len(r["times_s"]) == steps and min(r["times_s"]) > 0 and r["real_frames_per_s"] > 0, mode
    packed, padded = timing["modes"]["packed"], timing["modes"]["padded-correct"]
    assert packed["mean_frames_per_step"] == packed["mean_real_frames_per_step"]
    assert padded["mean_frames_per_step"] >= packed["mean_frames_per_step"]
    assert statistics.fmean(padded["frames_per_step"]) == padded["mean_frames_per_step"]
    assert timing["packed_speedup"]["padded-correct"] == pytest.approx(padded["median_s"] / packed["median_s"])


def test_an_unusable_backend_falls_back_to_torch_with_a_note(monkeypatch):
    monkeypatch.setattr(packing, "backend_status", lambda device: {"torch": (True, ""), "cuda": (False, "no _C")})
    assert packing.resolve_backend("torch") == ("torch", None)
    backend, note = packing.resolve_backend("cuda")
    assert backend == "torch" and "'cuda' unusable here (no _C)" in note
