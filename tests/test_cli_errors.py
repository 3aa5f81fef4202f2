"""User errors of every `trgnet` verb end as one line ``trgnet <verb>: error: <message>`` on stderr with exit
status 2 and no traceback; ``--debug`` / ``TRGNET_DEBUG=1`` re-raise them; internal errors keep their traceback.

`info` has no user error to test: it takes no value or file (only ``--json``, a flag) and reads no
configuration, so whatever it raises is internal.
"""
import os
import subprocess
import sys

import pytest
import torch

from trgnet_fast import cli
from trgnet_fast.data import make_synthetic
from trgnet_fast.training.checkpoint import FORMAT
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
    assert "got unknown ['nope']" in user_error(capsys, ["parity", "--op", "nope", "--op", "linear_attention"],
                                                "--op: expected op names from [")


@pytest.mark.parametrize("argv, named", [
    (["--config", "nope"], ["config 'nope': neither a preset (synthetic, "]),
    (["--set", "train.epoch=3"], ["unknown config key 'train.epoch'"]),
    (["--epochs", "0"], ["config key 'train.epochs': expected ≥ 1, got 0"]),
    (["--data", "/nonexistent", "--out", "run"], ["/nonexistent/train.csv: split csv not found"]),
    (["--device", "gpu0", "--out", "run"], ["device: expected auto, cpu, cuda or cuda:N, got 'gpu0'"]),
], ids=["unknown-preset", "unknown-key", "bad-value", "missing-data", "bad-device"])
def test_train(capsys, argv, named):
    user_error(capsys, ["train", *argv], *named)


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


def test_average_splits_missing_csv(capsys):
    user_error(capsys, ["average-splits", "missing.csv"], "missing.csv")


def test_make_synthetic_out_is_a_file(tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    user_error(capsys, ["make-synthetic", "--out", "taken"], "taken")


def test_make_synthetic_bad_frame_counts(capsys):
    user_error(capsys, ["make-synthetic", "--out", "syn", "--min-frames", "10", "--max-frames", "5"],
               "min_frames ≤ max_frames, got 10, 5")


def test_convert_pku_missing_skeletons(tmp_path, capsys):
    user_error(capsys, ["convert-pku", "--skeletons", "/nonexistent", "--labels", str(tmp_path), "--out", "o"],
               "/nonexistent")


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
