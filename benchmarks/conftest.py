"""pytest configuration of the micro-benchmarks (benchmarks/test_micro.py).

They are not part of the test suite: they are collected only when benchmarks/ (or a file in it) is named
on the command line, e.g. ``pytest benchmarks/ --benchmark-only``. A plain ``pytest`` from the repository
root therefore never runs them, even without ``testpaths`` in the pytest configuration.
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # workload, bench


def _named_explicitly(config) -> bool:
    for arg in config.invocation_params.args:
        if arg.startswith("-"):
            continue
        path = Path(config.invocation_params.dir, arg.split("::", 1)[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path, config):
    if collection_path.suffix == ".py" and collection_path.parent == HERE and not _named_explicitly(config):
        return True
    return None

