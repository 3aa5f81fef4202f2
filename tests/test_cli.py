import json
import subprocess
import sys

from trgnet_fast import cli


def test_info_json_lists_versions_backends_and_ops(capsys):
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["torch"] and info["python"]
    assert set(info["backends"]["cpu"]) == {"torch", "triton", "cuda"}
    assert "linear_attention" in info["ops"]


def test_info_text(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "backends on cpu:" in out and "linear_attention" in out


def test_parity_command_passes_on_cpu(capsys):
    assert cli.main(["parity", "--device", "cpu", "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and " passed, 0 failed" in out


def test_console_script_is_installed():
    # the entry point of the installed distribution, not the source tree
    result = subprocess.run([sys.executable, "-c", "from importlib.metadata import entry_points;"
                             "print([e.value for e in entry_points(group='console_scripts')"
                             " if e.name == 'trgnet'])"], capture_output=True, text=True, check=True)
    assert "trgnet_fast.cli:main" in result.stdout


import pytest  # noqa: E402

TRAINING_COMMANDS = ("train", "eval", "predict", "average-splits", "make-synthetic", "convert-pku")


@pytest.mark.parametrize("command", TRAINING_COMMANDS + ("info", "parity"))
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: trgnet {command}") and "options:" in out


def test_top_level_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for command in TRAINING_COMMANDS:
        assert command in out


def test_train_rejects_unknown_config_key(capsys):
    assert cli.main(["train", "--set", "train.epoch=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trgnet train: error: override 'train.epoch=3': unknown config key 'train.epoch'; "
                          "valid keys here: batch_size, ")


def test_make_synthetic_command(tmp_path, capsys):
    out = tmp_path / "syn"
    assert cli.main(["make-synthetic", "--out", str(out), "--n-train", "2", "--n-val", "0", "--n-test", "1",
                     "--min-frames", "20", "--max-frames", "30"]) == 0
    assert (out / "train.csv").is_file() and (out / "mapping.txt").is_file()
    assert len((out / "train.csv").read_text().splitlines()) == 3
