"""Fixtures of the loss tests."""
import pytest
import torch

import loss_loops


@pytest.fixture
def ref():
    """The loop implementations (a uniquely named module: `conftest` is ambiguous on sys.path)."""
    return loss_loops


@pytest.fixture
def gen():
    g = torch.Generator()
    g.manual_seed(int(torch.randint(0, 2**31 - 1, ())))  # fresh inputs every run
    return g

