"""The README's two commands (set-up + main job, tests) are what CI runs, word for word."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [b.strip() for b in blocks]


def test_ci_runs_the_readme_commands_word_for_word():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    for number, command in enumerate(commands, 1):
        marker = ci_lines.index(f"# README, command {number}:")
        assert ci_lines[marker + 1] == command


def test_first_command_ends_with_the_main_job():
    """Set-up ends with training on the synthetic default and evaluating on its test split."""
    assert _readme_commands()[0].endswith("&& trgnet train --test")
