"""Training and evaluation on data with ignored (255) frames and without a validation split; eval's f1_end."""
import csv
import os

import numpy as np
import pytest
import torch

from train_helpers import tiny_overrides
from trgnet_fast import cli
from trgnet_fast.data import IGNORE_INDEX as IGN
from trgnet_fast.data import collate, make_synthetic
from trgnet_fast.evaluation import F1_ENDS, SegmentationMetrics
from trgnet_fast.training import Trainer, load_checkpoint, load_config
from trgnet_fast.training import evaluate as evaluate_module
from trgnet_fast.training.config import ConfigError
from trgnet_fast.training.trainer import LOSS_KEYS

WITH_IGNORED = ("train_0000", "train_0003", "test_0000")

pytestmark = pytest.mark.filterwarnings("ignore:no text inputs")


@pytest.fixture(scope="module")
def ignored_data(tmp_path_factory):
    """5 training videos (fewer than data.val_every = 10: no validation video), 2 test videos; runs of 255 at
    the start, in the middle and at the end of three label files. Returns (root, {video: labels})."""
    root = tmp_path_factory.mktemp("ignored")
    rng = np.random.default_rng()
    make_synthetic(root, n_train=5, n_val=0, n_test=2, seed=int(rng.integers(1 << 30)), min_frames=40,
                   max_frames=48, min_segment=8, max_segment=16)
    labels = {}
    for name in ("train_0000", "train_0001", "train_0002", "train_0003", "train_0004", "test_0000", "test_0001"):
        path = root / "gt_arr" / f"{name}.npy"
        lab = np.load(path)
        if name in WITH_IGNORED:
            mid = int(rng.integers(8, len(lab) - 12))
            lab[:3] = lab[mid:mid + 5] = lab[-2:] = IGN
            np.save(path, lab)
        labels[name] = lab
    return str(root), labels


@pytest.fixture(scope="module")
def run(ignored_data, tmp_path_factory):
    root, _ = ignored_data
    out = str(tmp_path_factory.mktemp("run"))
    cfg = load_config("synthetic", tiny_overrides(root, out, epochs=2, extra=["data.val_every=10"]))
    trainer = Trainer(cfg, log=lambda m: None, progress=False)
    row = trainer.fit()
    return trainer, row, out


def test_trains_without_validation_and_ignores_255_frames(run, ignored_data):
    trainer, row, out = run
    _, labels = ignored_data
    assert len(trainer.splits["val"]) == 0 and len(trainer.splits["train"]) == 5
    assert row["epoch"] == 2 and row["val_Acc"] == "" and row["best_epoch"] == 0
    best = load_checkpoint(os.path.join(out, "best.pt"))
    assert best["epoch"] == 2 and best["val"] is None  # no validation: the last epoch is best.pt
    batch = collate([trainer.splits["train"][i] for i in (0, 3)])  # train_0000, train_0003: both with 255 runs
    *terms, correct, frames = trainer.train_step(batch).tolist()
    valid = sum(int((labels[n] != IGN).sum()) for n in ("train_0000", "train_0003"))
    assert frames == valid == int((batch["labels"] != IGN).sum()) and 0 <= correct <= valid
    assert len(terms) == len(LOSS_KEYS) and all(np.isfinite(terms))


def _metric_rows(path):
    with open(path, newline="") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    return rows


@pytest.fixture()
def f1_end_seen(monkeypatch):
    """The f1_end every SegmentationMetrics of the evaluation code is built with."""
    seen = []

    class Spy(SegmentationMetrics):
        def __init__(self, *args, **kwargs):
            seen.append(kwargs["f1_end"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "SegmentationMetrics", Spy)
    return seen


def test_eval_excludes_ignored_frames_and_f1_end_override(run, ignored_data, tmp_path, f1_end_seen, capsys):
    _, _, out = run
    _, labels = ignored_data
    ck = os.path.join(out, "best.pt")

    def evaluate(checkpoint, *flag):
        assert cli.main(["eval", "--checkpoint", checkpoint, "--out", str(tmp_path / "ev"), "--device", "cpu",
                         *flag]) == 0
        return f1_end_seen[-1]

    assert evaluate(ck) == "published"  # the checkpoint's eval.f1_end (default)
    assert evaluate(ck, "--f1-end", "mstcn") == "mstcn"
    state = load_checkpoint(ck)
    state["config"]["eval"]["f1_end"] = "mstcn"
    torch.save(state, tmp_path / "mstcn.pt")
    assert evaluate(str(tmp_path / "mstcn.pt")) == "mstcn"
    assert evaluate(str(tmp_path / "mstcn.pt"), "--f1-end", "published") == "published"
    del state["config"]["eval"]["f1_end"]  # written before the key existed: evaluated with the published end
    torch.save(state, tmp_path / "legacy.pt")
    assert evaluate(str(tmp_path / "legacy.pt")) == "published"
    rows = _metric_rows(tmp_path / "ev" / "metrics_test.csv")
    for name in ("test_0000", "test_0001"):
        assert int(rows[name]["n_frames"]) == int((labels[name] != IGN).sum())
    assert int(rows["test_0000"]["n_frames"]) == len(labels["test_0000"]) - 10
    assert int(rows["all"]["n_frames"]) == sum(int((labels[n] != IGN).sum()) for n in ("test_0000", "test_0001"))
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.main(["eval", "--checkpoint", ck, "--f1-end", "T"])
    assert "--f1-end: invalid choice: 'T' (choose from 'published', 'mstcn')" in capsys.readouterr().err


def test_predict_writes_every_frame_including_ignored_ones(run, ignored_data, tmp_path):
    _, _, out = run
    _, labels = ignored_data
    assert cli.main(["predict", "--checkpoint", os.path.join(out, "best.pt"), "--out", str(tmp_path),
                     "--device", "cpu"]) == 0
    for name in ("test_0000", "test_0001"):
        assert len((tmp_path / "predictions" / f"{name}.txt").read_text().splitlines()) == len(labels[name])
        assert (tmp_path / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_f1_end_config_key():
    assert load_config("synthetic")["eval"]["f1_end"] == "published"
    for value in F1_ENDS:
        assert load_config("synthetic", [f"eval.f1_end={value}"])["eval"]["f1_end"] == value
    for bad in ("MSTCN", "T", "ends"):
        with pytest.raises(ConfigError, match=rf"config key 'eval\.f1_end': expected one of \('published', "
                                              rf"'mstcn'\), got '{bad}'"):
            load_config("synthetic", [f"eval.f1_end={bad}"])
    with pytest.raises(ConfigError, match=r"config key 'eval\.f1_end': expected a string, got 1"):
        load_config("synthetic", ["eval.f1_end=1"])


def test_eval_of_an_empty_validation_split_is_a_user_error(run, capsys):
    _, _, out = run
    assert cli.main(["eval", "--checkpoint", os.path.join(out, "best.pt"), "--split", "val",
                     "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trgnet eval: error: --split val: the run's validation split is empty")
    assert "data.val_every=10" in err and "Traceback" not in err
