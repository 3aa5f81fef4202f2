"""End-to-end training on a tiny synthetic dataset: logs, checkpoints, loss decrease, eval/predict, resume."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from train_helpers import tiny_overrides
from trgnet_fast import cli
from trgnet_fast.training import Trainer, load_checkpoint, load_config


def _rows(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run"))
    cfg = load_config("synthetic", tiny_overrides(tiny_data, out, epochs=3))
    Trainer(cfg, log=lambda m: None, progress=False).fit()
    return out


def test_training_writes_logs_checkpoints_and_loss_decreases(trained):
    out = trained
    for name in ("last.pt", "best.pt", "log.csv", "log.jsonl", "config.yaml"):
        assert os.path.isfile(os.path.join(out, name)), name
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["train_total"] < rows[0]["train_total"]
    assert all(r["val_n_videos"] == 2 for r in rows)  # every 4th of 8 training videos carved for validation
    with open(os.path.join(out, "log.csv")) as f:
        lines = f.read().splitlines()
    assert lines[0].startswith("epoch,train_total") and len(lines) == 4
    last = load_checkpoint(os.path.join(out, "last.pt"))
    best = load_checkpoint(os.path.join(out, "best.pt"))
    assert last["epoch"] == 3 and best["epoch"] == last["best_epoch"] == rows[-1]["best_epoch"]
    assert best["val"]["F1@50"] == pytest.approx(last["best_score"])
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


def test_eval_and_predict_commands(trained, tmp_path, capsys):
    ck = os.path.join(trained, "best.pt")
    assert cli.main(["eval", "--checkpoint", ck, "--out", str(tmp_path / "ev"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "F1@50" in out and "Edit" in out and "Acc" in out
    with open(tmp_path / "ev" / "metrics_test.csv") as f:
        lines = f.read().splitlines()
    assert len(lines) == 1 + 3 + 1 and lines[-1].startswith("all,")  # header, 3 test videos, summary row
    pred = tmp_path / "pred"
    assert cli.main(["predict", "--checkpoint", ck, "--out", str(pred), "--device", "cpu"]) == 0
    txts = sorted(os.listdir(pred / "predictions"))
    pngs = sorted(os.listdir(pred / "plots"))
    assert len(txts) == 3 and len(pngs) == 3 and pngs[0].endswith(".png")
    assert (pred / "plots" / pngs[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    names = set(load_checkpoint(ck)["class_names"])
    frames = (pred / "predictions" / txts[0]).read_text().splitlines()
    assert 48 <= len(frames) <= 64 and set(frames) <= names
    assert cli.main(["average-splits", str(tmp_path / "ev" / "metrics_test.csv"),
                     str(pred / "metrics_test.csv"), "--out", str(tmp_path / "avg.csv")]) == 0
    assert "mean over 2 splits" in capsys.readouterr().out and (tmp_path / "avg.csv").is_file()


def _train_cmd(data, out, epochs, resume=False):
    cmd = [sys.executable, "-m", "trgnet_fast.cli", "train", "--config", "synthetic", "--no-progress"]
    for o in tiny_overrides(data, out, epochs=epochs, extra=["train.batch_size=1"]):
        cmd += ["--set", o]
    return cmd + (["--resume"] if resume else [])


def test_kill_and_resume_matches_uninterrupted_run(tiny_data, tmp_path):
    """SIGKILL a training subprocess after its first checkpoint (i.e. inside epoch 2), resume it, and compare
    with an uninterrupted run of the same seed: log rows continue without duplicates and the final weights,
    optimizer state and best score are identical."""
    epochs = 2
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    ref, run = str(tmp_path / "ref"), str(tmp_path / "run")
    # the uninterrupted reference runs in this process (same code path as the CLI, without a second start-up)
    cfg = load_config("synthetic", tiny_overrides(tiny_data, ref, epochs=epochs, extra=["train.batch_size=1"]))
    Trainer(cfg, log=lambda m: None, progress=False).fit()

    proc = subprocess.Popen(_train_cmd(tiny_data, run, epochs), cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = os.path.join(run, "last.pt")
    deadline = time.time() + 120
    while not os.path.exists(last) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(last)["epoch"]
    assert killed_at < epochs, "the run finished before it could be killed"

    subprocess.run(_train_cmd(tiny_data, run, epochs, resume=True), check=True, cwd=tmp_path, env=env,
                   capture_output=True)
    assert [r["epoch"] for r in _rows(run)] == list(range(1, epochs + 1))
    a, b = load_checkpoint(os.path.join(ref, "last.pt")), load_checkpoint(last)
    assert a["epoch"] == b["epoch"] == epochs
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k, v in a["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg"], b["optimizer"]["state"][k]["exp_avg"])
    assert a["best_score"] == b["best_score"] and a["best_epoch"] == b["best_epoch"]
    ra, rb = _rows(ref), _rows(run)
    assert [r["train_total"] for r in ra] == [r["train_total"] for r in rb]
