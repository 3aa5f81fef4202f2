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
