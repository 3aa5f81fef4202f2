import os
import random

import numpy as np
import pytest
import torch

from trgnet_fast.training import checkpoint as ckpt


def test_atomic_save_roundtrip(tmp_path):
    path = tmp_path / "a.pt"
    ckpt.atomic_save({"x": torch.arange(3)}, path)
    assert torch.equal(ckpt.safe_load(path)["x"], torch.arange(3))
    assert os.listdir(tmp_path) == ["a.pt"]


def test_crash_during_write_leaves_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.atomic_save({"epoch": 1}, path)
    before = path.read_bytes()

    real_save = torch.save

    def crashing_save(obj, f):  # writes part of the file, then dies
        real_save(obj, f)
        f.flush()
        raise KeyboardInterrupt("simulated crash in the middle of writing")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.atomic_save({"epoch": 2, "big": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert ckpt.safe_load(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]  # the temporary file was removed


def test_crash_before_replace_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "best.pt"
    ckpt.atomic_save({"epoch": 1}, path)

    def no_replace(src, dst):
        raise OSError("simulated power loss before rename")

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(OSError):
        ckpt.atomic_save({"epoch": 2}, path)
    monkeypatch.undo()
    assert ckpt.safe_load(path)["epoch"] == 1


def _assert_same(a, b, where="state"):
    """Nested equality of dicts / lists / tuples / tensors (bitwise) / plain values."""
    assert type(a) is type(b), where
    if torch.is_tensor(a):
        assert a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu()), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _draws():
    return random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(3)


def test_rng_state_survives_the_safe_loader_exactly(tmp_path):
    """Every stream, including the second half of a gaussian pair (python's gauss_next, numpy's has_gauss /
    cached_gaussian), comes back bitwise from a file read with weights_only=True."""
    ckpt.seed_everything(5)
    random.gauss(0, 1)
    np.random.randn()
    state = ckpt.rng_state()
    assert state["python"][2] is not None and state["numpy"]["has_gauss"] == 1
    expected = _draws()
    ckpt.atomic_save({"rng": state}, tmp_path / "rng.pt")
    ckpt.seed_everything(6)
    loaded = ckpt.safe_load(tmp_path / "rng.pt")["rng"]
    _assert_same(loaded, state)
    ckpt.set_rng_state(loaded)
    _assert_same(_draws(), expected)


def test_resume_restores_every_rng_stream(tiny_data, tmp_path):
    """The resume path (checkpoint file → Trainer._restore) sets python, numpy and torch to exactly the saved states
    (distinctive states are planted in last.pt, with half-used gaussian pairs). SAEP has no state to restore: its
    batches' seeds are a function of (seed, rank, epoch, batch) (trgnet_fast/data/seeded_batches.py); a checkpoint
    of an earlier version that still holds an "aug" generator state resumes too."""
    from train_helpers import tiny_overrides
    from trgnet_fast.training import Trainer, load_config

    cfg = load_config("synthetic", tiny_overrides(tiny_data, str(tmp_path), epochs=1))
    Trainer(cfg, log=lambda m: None, progress=False).fit()
    last = tmp_path / "last.pt"
    state = ckpt.load_checkpoint(last)
    ckpt.seed_everything(12345)
    random.gauss(0, 1)
    np.random.randn()
    planted = {"rng": ckpt.rng_state()}
    state["rng"] = [{**planted, "aug": torch.Generator().manual_seed(678).get_state()}]
    ckpt.atomic_save(state, last)
    trainer = Trainer(cfg, resume=True, log=lambda m: None, progress=False)
    trainer.setup()
    assert trainer.start_epoch == 1
    _assert_same({"rng": ckpt.rng_state()}, planted)


def test_missing_file_and_directory_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt: checkpoint not found"):
        ckpt.load_checkpoint(str(tmp_path / "missing.pt"))
    with pytest.raises(IsADirectoryError, match=f"{tmp_path}: expected a checkpoint file, got a directory"):
        ckpt.load_checkpoint(str(tmp_path))


def _truncated(path):
    torch.save({"format": ckpt.FORMAT, "model": {"w": torch.zeros(1000)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4:UserWarning")  # torch's, about the raw pickle
@pytest.mark.parametrize("damage", ["truncated", "empty", "text", "raw pickle"])
def test_unreadable_file_is_a_checkpoint_error_naming_it(tmp_path, damage):
    import pickle
    path = tmp_path / "bad.pt"
    if damage == "truncated":
        _truncated(path)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "text":
        path.write_text("epochs: 3\n")
    else:  # a plain pickle of plain values, not written by torch.save
        path.write_bytes(pickle.dumps({"epoch": 1}, protocol=4))
    with pytest.raises(ckpt.CheckpointError) as e:
        ckpt.load_checkpoint(str(path))
    assert str(e.value).startswith(f"{path}: cannot read it as a PyTorch checkpoint (truncated, corrupt")
    assert "\n" not in str(e.value)


def test_old_format_checkpoint_is_refused_and_says_why(tmp_path):
    """What the previous trainer wrote: numpy's RNG state as pickled numpy objects."""
    path = tmp_path / "last.pt"
    torch.save({"format": "trgnet_fast.train/1", "model": {}, "rng": [{"rng": {"numpy": np.random.get_state()}}]},
               path)
    with pytest.raises(ckpt.CheckpointError) as e:
        ckpt.load_checkpoint(str(path))
    msg = str(e.value)
    assert msg.startswith(f"{path}: refused: loading it needs the Python object numpy")
    assert "older trgnet_fast" in msg and "weights_only=False" in msg


@pytest.mark.parametrize("obj, got", [
    ({"conv.weight": torch.zeros(2), "conv.bias": torch.zeros(2)}, "got a bare state_dict of model weights"),
    ({"epoch": 3, "weights": [1.0]}, "got a dict with keys ['epoch', 'weights']"),
    ([torch.zeros(1)], "got a list"),
    ({"format": "trgnet_fast.train/1", "epoch": 3}, "checkpoint format 'trgnet_fast.train/1'"),
])
def test_other_files_are_not_trainer_checkpoints(tmp_path, obj, got):
    path = tmp_path / "model.prm"
    torch.save(obj, path)
    with pytest.raises(ckpt.CheckpointError) as e:
        ckpt.load_checkpoint(str(path))
    assert str(e.value).startswith(f"{path}: ") and got in str(e.value)
    assert f"format {ckpt.FORMAT!r}" in str(e.value)


@pytest.mark.filterwarnings("ignore:no text inputs")
def test_checkpoint_finds_relative_data_from_another_directory(tmp_path, monkeypatch, capsys):
    """Trained in A with a relative data.dir and split csvs relative to A (the published ./csv next to
    ./datasets layout): eval and viz-graphs run from B (they looked for the data relative to B), and --data
    still points eval at the dataset after it moved."""
    from train_helpers import tiny_overrides
    from trgnet_fast import cli
    from trgnet_fast.data import make_synthetic
    from trgnet_fast.training import Trainer, load_config

    a, b = tmp_path / "A", tmp_path / "B"
    make_synthetic(a / "datasets", n_train=4, n_val=0, n_test=2, seed=0, min_frames=30, max_frames=40)
    (a / "csv").mkdir()
    for split in ("train", "test"):
        os.replace(a / "datasets" / f"{split}.csv", a / "csv" / f"{split}.csv")
    monkeypatch.chdir(a)
    cfg = load_config("synthetic", tiny_overrides("datasets", "run", epochs=1, extra=[
        "data.train_csv=csv/train.csv", "data.test_csv=csv/test.csv", "data.val_csv=null"]))
    Trainer(cfg, log=lambda m: None, progress=False).fit()
    data = ckpt.load_checkpoint("run/best.pt")["config"]["data"]
    assert (data["dir"], data["train_csv"], data["test_csv"]) == (
        str(a / "datasets"), str(a / "csv" / "train.csv"), str(a / "csv" / "test.csv"))

    b.mkdir()
    monkeypatch.chdir(b)
    best = str(a / "run" / "best.pt")
    assert cli.main(["eval", "--checkpoint", best, "--device", "cpu", "--out", "ev"]) == 0
    assert cli.main(["viz-graphs", "--checkpoint", best, "--video", "test_0000", "--out", "viz"]) == 0
    assert os.path.isfile(b / "ev" / "metrics_test.csv") and os.path.isfile(b / "viz" / "test_0000_graphs.npz")
    os.replace(a / "datasets", tmp_path / "moved")
    assert cli.main(["eval", "--checkpoint", best, "--device", "cpu", "--out", "ev2", "--data",
                     str(tmp_path / "moved")]) == 0
    capsys.readouterr()
