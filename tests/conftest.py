"""Test-wide setup: Triton's CPU interpreter when there is no GPU, and the `gpu` marker."""
import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()

# Read by @triton.jit when kernel modules are imported, so it must be set before any test imports them.
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; none is present on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
