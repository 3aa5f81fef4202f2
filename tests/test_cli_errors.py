"""User errors of every `trgnet` verb end as one line ``trgnet <verb>: error: <message>`` on stderr with exit
status 2 and no traceback; ``--debug`` / ``TRGNET_DEBUG=1`` re-raise them; internal errors keep their traceback.

`info` has no user error to test: it takes no value or file (only ``--json``, a flag) and reads no
configuration, so whatever it raises is internal.
"""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from tiny_model import KW, tiny_model
from trgnet_fast import cli
from trgnet_fast.data import make_synthetic
from trgnet_fast.ops.registry import OPS
from trgnet_fast.training.checkpoint import EXPECTED, FORMAT
from trgnet_fast.training.config import ConfigError

TRGNET = os.path.join(os.path.dirname(sys.executable), "trgnet")  # the console script of this environment


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths below, and nothing written into the checkout
    monkeypatch.delenv("TRGNET_DEBUG", raising=False)


def user_error(capsys, argv, *named) -> str:
    """Run ``trgnet argv`` in this process, check the one-line user error and return its message."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    prefix = f"trgnet {argv[0]}: error: "
    assert err.startswith(prefix) and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for text in named:
        assert text in err, (text, err)
    return err[len(prefix):-1]


def _touch(path):
    open(path, "w").close()


class _RunsCode:
    """Pickles as a call of ``_touch(marker)``: unpickling this object runs code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return _touch, (self.marker,)


@pytest.fixture
def crafted(tmp_path):
    """(a shared-looking checkpoint whose unpickling would create ``marker``, marker)."""
    marker = tmp_path / "code_ran"
    path = tmp_path / "shared_best.pt"
    torch.save({"format": FORMAT, "model": _RunsCode(str(marker))}, path)
    return path, marker


# ------------------------------------------------------------------------------------------------- per verb
def test_parity_unknown_op(capsys):
    assert user_error(capsys, ["parity", "--op", "nope", "--op", "linear_attention"]) == \
        f"--op: unknown op 'nope'; the ops are {', '.join(sorted(OPS))}"


@pytest.mark.parametrize("argv, named", [
    (["--config", "nope"], ["config 'nope': neither a preset (synthetic, "]),
    (["--set", "train.epoch=3"], ["unknown config key 'train.epoch'"]),
    (["--epochs", "0"], ["config key 'train.epochs': expected ", "≥ 1, got 0"]),
    (["--data", "/nonexistent", "--out", "run"], ["/nonexistent/train.csv: split csv not found"]),
    (["--device", "gpu0", "--out", "run"], ["train.device': expected auto", "cuda:N, got 'gpu0'"]),
], ids=["unknown-preset", "unknown-key", "bad-value", "missing-data", "bad-device"])
def test_train(capsys, argv, named):
    user_error(capsys, ["train", *argv], *named)


def test_train_that_diverges(tmp_path, capsys):
    """A run whose weights become non-finite ends as a user error naming epoch and step, and writes no checkpoint."""
    make_synthetic(tmp_path / "data", n_train=8, n_val=0, n_test=0, seed=1, min_frames=48, max_frames=64,
                   min_segment=10, max_segment=24)
    user_error(capsys, ["train", "--data", str(tmp_path / "data"), "--out", "run", "--epochs", "1", "--no-progress",
                        "--set", "optim.lr=1e30", "--set", "train.batch_size=2", "--set", "data.val_every=4",
                        *(f"--set={o}" for o in ("model.n_features=16", "model.n_layers=2", "model.n_refine_layers=2",
                                                 "text.joint_graph=physical", "text.action_embeddings=null",
                                                 "text.action_graph=null"))],
               "epoch 1, steps 1-3: the loss and the updated weights became non-finite at step 2; stopping")
    assert not list((tmp_path / "run").glob("*.pt"))


def test_train_config_file_that_is_not_yaml(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("train: {epochs: [1,\n")
    user_error(capsys, ["train", "--config", "bad.yaml"], "bad.yaml: not valid YAML: ", 'line 2')


def test_eval_missing_checkpoint(capsys):
    assert user_error(capsys, ["eval", "--checkpoint", "missing.pt"]) == "missing.pt: checkpoint not found"


def test_eval_truncated_checkpoint(tmp_path, capsys):
    torch.save({"format": FORMAT, "model": {"w": torch.zeros(1000)}}, "best.pt")
    data = (tmp_path / "best.pt").read_bytes()
    (tmp_path / "best.pt").write_bytes(data[: len(data) // 2])
    user_error(capsys, ["eval", "--checkpoint", "best.pt"],
               "best.pt: cannot read it as a PyTorch checkpoint (truncated, corrupt")


def test_eval_published_state_dict_is_not_a_trainer_checkpoint(capsys):
    torch.save({"conv_cls.weight": torch.zeros(3, 4, 1), "conv_cls.bias": torch.zeros(3)}, "best_model.prm")
    user_error(capsys, ["eval", "--checkpoint", "best_model.prm"], "best_model.prm: not a trainer checkpoint: ",
               "got a bare state_dict of model weights")


@pytest.mark.parametrize("argv", [["predict", "--out", "pred"], ["viz-graphs", "--video", "v"]])
def test_checkpoint_that_would_run_code_is_refused(crafted, capsys, argv):
    path, marker = crafted
    msg = user_error(capsys, [*argv, "--checkpoint", str(path)])
    assert msg.startswith(f"{path}: refused: loading it needs the Python object {__name__}._touch")
    assert "arbitrary code" in msg and "If you trust its source" in msg
    assert not marker.exists()
    # the file really carries code: the unsafe loader runs it
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("verb", [["eval"], ["predict", "--out", "pred"], ["viz-graphs", "--video", "v"]])
@pytest.mark.parametrize("device", ["gpu", "meta"])
def test_unknown_device(capsys, verb, device):
    """The device is checked before the checkpoint is read (viz-graphs and a non-cpu/cuda torch device type such
    as meta failed inside torch with a traceback)."""
    assert user_error(capsys, [*verb, "--checkpoint", "missing.pt", "--device", device]) == \
        f"--device: expected auto, cpu, cuda or cuda:N, got '{device}'"


def _save(path, obj):
    if path.endswith(".npy"):
        np.save(path, obj)
    elif path.endswith(".pkl"):
        with open(path, "wb") as f:
            pickle.dump(obj, f)
    else:
        with open(path, "w") as f:
            f.write(obj)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4:UserWarning")  # torch's, about the raw pickle
@pytest.mark.parametrize("name, obj, kind", [("notes.txt", "epoch 3: loss 0.1\n", "it is a text file"),
                                             ("x.npy", np.zeros(3), "it is a NumPy .npy array"),
                                             ("l.pkl", [1, 2], "it is a plain pickle (pickle.dump)")])
def test_eval_of_a_file_that_is_no_checkpoint(capsys, name, obj, kind):
    """Said what the file is (was: an opcode number or a KeyError) and what a trainer checkpoint holds."""
    _save(name, obj)
    msg = user_error(capsys, ["eval", "--checkpoint", name])
    assert msg.startswith(f"{name}: cannot read it as a PyTorch checkpoint (truncated, corrupt or not written by "
                          f"torch.save): {kind}")
    assert msg.endswith(f"; {EXPECTED}") and "'model_kwargs', 'config', 'class_names', 'joint_graph'" in msg


def test_eval_of_a_trainer_checkpoint_without_entries(capsys):
    torch.save({"format": FORMAT, "model": {"w": torch.zeros(1)}, "config": {}}, "part.pt")  # was a KeyError
    assert user_error(capsys, ["eval", "--checkpoint", "part.pt"]) == \
        f"part.pt: trainer checkpoint without ['model_kwargs', 'class_names', 'joint_graph']: {EXPECTED}"


@pytest.mark.parametrize("argv, message", [
    (["--max-segments", "-1"], "--max-segments: expected ≥ 1 (segments plotted), got -1"),
    (["--max-segments", "0"], "--max-segments: expected ≥ 1 (segments plotted), got 0"),
    (["--frames", "a,b"], "--frames: expected comma-separated integer frame indices, e.g. 0,10,20, got 'a,b'"),
    (["--n-classes", "0"], "--n-classes: expected ≥ 1, got 0"),
], ids=["max-segments-negative", "max-segments-0", "frames-not-ints", "n-classes-0"])
def test_viz_graphs_bad_arguments_before_the_checkpoint_is_read(capsys, argv, message):
    """Were silent (a negative --max-segments dropped segments, 0 all of them; --n-classes 0 was inferred) or a
    bare int() error."""
    assert user_error(capsys, ["viz-graphs", "--checkpoint", "missing.pt", "--video", "v", *argv]) == message


@pytest.fixture
def viz_inputs(tmp_path):
    """(tiny trainer-style checkpoint, 10-frame feature file) for viz-graphs."""
    torch.save({"model": tiny_model().state_dict(), "model_kwargs": KW, "class_names": list("abcde"),
                "joint_graph": torch.eye(25)}, "ck.pt")
    np.save("vid.npy", np.ones((12, 25, 10), np.float32))
    return ["viz-graphs", "--checkpoint", "ck.pt", "--video", "vid.npy", "--out", "viz"]


@pytest.mark.parametrize("make, argv, message", [
    (lambda: None, ["--frames", "0,10"], "--frames: expected frame indices in [0, 10) for vid, got [10]"),
    (lambda: np.save("lab.npy", np.zeros(9, np.int64)), ["--labels", "lab.npy"],
     "--labels lab.npy: expected 10 frame labels (the frames of --video), got 9"),
    (lambda: np.save("lab.npy", np.full(10, 7)), ["--labels", "lab.npy"],
     "lab.npy: expected class ids in 0..4 or 255 (ignored frame), got [7]"),
    (lambda: np.save("vid.npy", np.ones((12, 25, 1), np.float32)), [],
     "vid.npy: expected a video of at least 2 frames (the model's InstanceNorm normalises over time), got 1"),
    (lambda: np.save("vid.npy", np.ones((12, 25, 10), bool)), [],
     "vid.npy: expected real-valued (integer or float) features, got dtype bool"),
], ids=["frame-out-of-range", "labels-length", "labels-class", "one-frame", "bool-features"])
def test_viz_graphs_bad_video_inputs(capsys, viz_inputs, make, argv, message):
    make()
    assert user_error(capsys, [*viz_inputs, *argv]) == message
    assert not os.path.exists("viz")  # refused before anything is written


def test_text_graphs_embeddings_dir_must_hold_the_embeddings(tmp_path, capsys):
    """A missing or empty --embeddings-dir fell back to the text encoder without a word."""
    args = ["text-graphs", "--dataset", "PKU-view", "--no-cache", "--no-plots", "--embeddings-dir"]
    assert user_error(capsys, [*args, "/nonexistent"]) == "--embeddings-dir /nonexistent: no such folder"
    os.mkdir("emb")
    assert user_error(capsys, [*args, "emb"]) == \
        "--embeddings-dir emb: holds neither PKU-view_joints_pool.npy nor PKU-view_actions_pool.npy"


def test_average_splits_missing_csv(capsys):
    user_error(capsys, ["average-splits", "missing.csv"], "missing.csv")


def test_make_synthetic_out_is_a_file(tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    user_error(capsys, ["make-synthetic", "--out", "taken"], "taken")


def test_make_synthetic_bad_frame_counts(capsys):
    user_error(capsys, ["make-synthetic", "--out", "syn", "--min-frames", "10", "--max-frames", "5"],
               "--min-frames: expected ≤ --max-frames (5), got 10")
    user_error(capsys, ["make-synthetic", "--out", "syn", "--n-train", "0", "--n-val", "0", "--n-test", "0"],
               "--n-train, --n-val, --n-test: expected at least one video")


@pytest.mark.parametrize("flag, value, low", [("--n-train", "-1", 0), ("--n-val", "-2", 0), ("--seed", "-1", 0),
                                              ("--min-frames", "1", 2), ("--n-test", "abc", 0)])
def test_make_synthetic_flag_out_of_range(capsys, flag, value, low):
    with pytest.raises(SystemExit) as e:
        cli.main(["make-synthetic", "--out", "syn", flag, value])
    assert e.value.code == 2
    shown = repr(value) if not value.lstrip("-").isdigit() else value
    assert f"argument {flag}: expected an integer ≥ {low}, got {shown}" in capsys.readouterr().err


def test_convert_pku_missing_skeletons(tmp_path, capsys):
    user_error(capsys, ["convert-pku", "--skeletons", "/nonexistent", "--labels", str(tmp_path), "--out", "o"],
               "/nonexistent")


def test_convert_pku_negative_frame_base(tmp_path, capsys):
    """Was silent: every label range shifted past its frames."""
    assert user_error(capsys, ["convert-pku", "--skeletons", str(tmp_path), "--labels", str(tmp_path), "--out", "o",
                               "--frame-base", "-1"]) == \
        "frame_base: expected the number of the first frame in the label files (0 or 1), got -1"


def test_text_graphs_unknown_dataset(capsys):
    user_error(capsys, ["text-graphs", "--dataset", "nope", "--no-cache", "--no-plots"], "dataset: expected one of",
               "got 'nope'")


def test_viz_graphs_missing_checkpoint(capsys):
    assert user_error(capsys, ["viz-graphs", "--checkpoint", "missing.pt", "--video", "v"]) == \
        "missing.pt: checkpoint not found"


def test_argparse_usage_errors_are_unchanged(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--epochs", "x"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: trgnet train") and "trgnet train: error: argument --epochs: invalid int" in err


# ------------------------------------------------------------------------------------- debug and internal
@pytest.mark.parametrize("argv", [["--debug", "train", "--config", "nope"], ["train", "--config", "nope", "--debug"]],
                         ids=["before-verb", "after-verb"])
def test_debug_flag_reraises(argv):
    with pytest.raises(ConfigError, match="config 'nope'"):
        cli.main(argv)


def test_debug_environment_variable_reraises(monkeypatch, capsys):
    monkeypatch.setenv("TRGNET_DEBUG", "0")
    user_error(capsys, ["train", "--config", "nope"], "config 'nope'")
    monkeypatch.setenv("TRGNET_DEBUG", "1")
    with pytest.raises(ConfigError, match="config 'nope'"):
        cli.main(["train", "--config", "nope"])


@pytest.mark.parametrize("error", [RuntimeError, KeyError, TypeError, AssertionError, IndexError])
def test_internal_errors_keep_their_traceback(monkeypatch, capsys, error):
    from trgnet_fast.training import commands

    def broken(args):
        raise error("internal failure")

    monkeypatch.setattr(commands, "average_splits", broken)
    with pytest.raises(error, match="internal failure"):
        cli.main(["average-splits", "any.csv"])
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------------------------------- real processes
def test_console_script_exit_status_and_stderr():
    result = subprocess.run([TRGNET, "eval", "--checkpoint", "missing.pt"], capture_output=True, text=True)
    assert (result.returncode, result.stderr, result.stdout) == (
        2, "trgnet eval: error: missing.pt: checkpoint not found\n", "")


def test_torchrun_user_error_on_rank0_only_does_not_hang(tmp_path):
    """Only rank 0 creates the output directory, so only it fails on ``--out <a file>``: it prints its line
    once and exits; torchrun then stops rank 1 (which is waiting for rank 0) instead of hanging."""
    make_synthetic(tmp_path / "data", n_train=4, n_val=0, n_test=1, seed=0, min_frames=20, max_frames=30)
    (tmp_path / "taken").write_text("")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             TRGNET, "train", "--data", "data", "--out", "taken", "--epochs", "1", "--no-progress"],
                            capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode != 0
    assert result.stderr.count("trgnet train: error: ") == 1
    assert "trgnet train: error: taken: File exists\n" in result.stderr
