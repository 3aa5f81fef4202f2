"""Fixtures of the op tests (``tests/ops/<op>/``): the native extension and the raw ops of a fused backend.

pytest's default (``prepend``) import mode puts this folder on ``sys.path`` when it loads this file, so the op
tests of the sub-folders import the shared drivers (``op_checks``, ``hypothesis_cases``) by name."""
import pytest
import torch

from op_checks import raw_ops
from trgnet_fast import _native


@pytest.fixture(scope="session")
def native(backend_unusable):
    """``torch.ops.trgnet`` with the native ops registered; skips when the extension is unavailable (fails when
    the run requires the cuda backend: ``$TRGNET_REQUIRE_BACKENDS``)."""
    ok, why = _native.available()
    if not ok:
        backend_unusable("cuda", f"native extension trgnet_fast._C unavailable: {why}")
    return _native.ops()


@pytest.fixture(scope="session")
def native_cuda(native, backend_unusable):
    """As ``native``, and also skips without a CUDA device or without the CUDA kernels (fails without the kernels
    when the run requires the cuda backend)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device; none is present")
    if not _native.has_cuda():
        backend_unusable("cuda", "trgnet_fast._C was built without the CUDA kernels")
    return native


@pytest.fixture
def ops(backend):
    """The raw ops of the test's ``backend`` parameter (``torch.ops.trgnet`` for "cuda", ``torch.ops.trgnet_triton``
    for "triton"; one schema), for tests parametrised with ``op_checks.fused_backends`` (which skips a backend
    that cannot run here)."""
    return raw_ops(backend)
