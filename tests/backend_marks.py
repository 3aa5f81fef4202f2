"""The ``needs_backend`` mark of a test that runs a fused backend (tests/conftest.py skips such a test with the
reason where the backend cannot run, or fails it when ``$TRGNET_REQUIRE_BACKENDS`` names the backend; see
tests/README.md). Shared by the op, model, training and benchmark tests (a uniquely named module: ``tests/`` is on
``sys.path``)."""
from __future__ import annotations

import pytest
import torch

from trgnet_fast.backend import backend_status


def unusable(backend: str, device: str) -> str | None:
    """Why ``backend`` cannot run on ``device`` here (None: it can)."""
    ok, why = backend_status(device)[backend]
    return None if ok else f"{backend} backend unusable on {device}: {why}"


def needs(backend: str, device: str = "cpu"):
    """``needs_backend`` mark of a test of ``backend`` on ``device``. ``device="cuda"`` (the ``gpu`` tests): judged
    only where a GPU is present (without one the ``gpu`` marker skips the test with its own reason)."""
    gpu_absent = device == "cuda" and not torch.cuda.is_available()
    return pytest.mark.needs_backend(backend, None if gpu_absent else unusable(backend, device))
