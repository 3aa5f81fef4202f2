import os
import random

import numpy as np
import pytest
import torch

from trgnet_fast.training import checkpoint as ckpt


def test_atomic_save_roundtrip(tmp_path):
    path = tmp_path / "a.pt"
    ckpt.atomic_save({"x": torch.arange(3)}, path)
    assert torch.equal(ckpt.load_checkpoint(str(path))["x"], torch.arange(3))
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
    assert ckpt.load_checkpoint(str(path))["epoch"] == 1
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
    assert ckpt.load_checkpoint(str(path))["epoch"] == 1


def test_rng_state_roundtrip():
    ckpt.seed_everything(3)
    state = ckpt.rng_state()
    a = (random.random(), np.random.rand(), torch.rand(2))
    ckpt.set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(2))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
