"""Fixtures of the op tests: the native extension (skips with the reason when unavailable)."""
import pytest
import torch

from trgnet_fast import _native


@pytest.fixture(scope="session")
def native():
    """``torch.ops.trgnet`` with the native ops registered; skips when the extension is unavailable."""
    ok, why = _native.available()
    if not ok:
        pytest.skip(f"native extension trgnet_fast._C unavailable: {why}")
    return _native.ops()


@pytest.fixture(scope="session")
def native_cuda(native):
    """As ``native``, and also skips without a CUDA device or without the CUDA kernels."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device; none is present")
    if not _native.has_cuda():
        pytest.skip("trgnet_fast._C was built without the CUDA kernels")
    return native
