"""Shared fixtures of the training tests: tiny synthetic datasets on disk (helpers: train_helpers.py)."""
import pytest

from trgnet_fast.data import make_synthetic


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """8 training videos (2 carved for validation), 3 test videos, 48–64 frames each."""
    root = tmp_path_factory.mktemp("tiny_synthetic")
    make_synthetic(root, n_train=8, n_val=0, n_test=3, seed=1, min_frames=48, max_frames=64,
                   min_segment=10, max_segment=24)
    return str(root)


@pytest.fixture(scope="session")
def equal_length_data(tmp_path_factory):
    """8 training videos of exactly 48 frames (for DDP-vs-single comparisons without padding effects)."""
    root = tmp_path_factory.mktemp("equal_synthetic")
    make_synthetic(root, n_train=8, n_val=0, n_test=2, seed=2, min_frames=48, max_frames=48,
                   min_segment=10, max_segment=24)
    return str(root)
