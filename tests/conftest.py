"""Test-wide setup: Triton's CPU interpreter when there is no GPU, the `gpu` marker, and the fused backends a run
requires (``$TRGNET_REQUIRE_BACKENDS``, see tests/README.md): a test that needs an unusable backend skips with
the reason, or fails with it when the run requires that backend (CI must not pass on a broken native build)."""
import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
REQUIRE_ENV = "TRGNET_REQUIRE_BACKENDS"
FUSED_BACKENDS = ("cuda", "triton")

# Read by @triton.jit when kernel modules are imported, so it must be set before any test imports them.
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def read_required_backends() -> frozenset[str]:
    """The fused backends ``$TRGNET_REQUIRE_BACKENDS`` names (comma-separated; unset or empty: none)."""
    names = {n.strip().lower() for n in os.environ.get(REQUIRE_ENV, "").split(",") if n.strip()}
    unknown = sorted(names - set(FUSED_BACKENDS))
    if unknown:
        raise pytest.UsageError(f"${REQUIRE_ENV}: expected a comma-separated subset of {FUSED_BACKENDS}, "
                                f"got {os.environ[REQUIRE_ENV]!r} (unknown: {', '.join(unknown)})")
    return frozenset(names)


def skip_or_fail(backend: str, why: str) -> None:
    """Skip the running test because ``backend`` cannot run here (``why``), or fail it when the run requires
    ``backend``."""
    if backend in read_required_backends():
        pytest.fail(f"{why} (the {backend} backend is required by ${REQUIRE_ENV}="
                    f"{os.environ[REQUIRE_ENV]!r})", pytrace=False)
    pytest.skip(why)


def pytest_configure(config):
    read_required_backends()  # a bad value stops the run before collection
    config.addinivalue_line(
        "markers", "needs_backend(backend, why): the test runs the fused `backend`; `why` (None: usable) is why it "
                   "cannot run here: skipped with it, failed when $TRGNET_REQUIRE_BACKENDS names the backend")


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; none is present on this machine")
    required = read_required_backends()
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)
        for backend, why in _unusable_backends(item):
            if backend not in required:  # the required ones fail in pytest_runtest_setup
                item.add_marker(pytest.mark.skip(reason=why))


def pytest_runtest_setup(item):
    for backend, why in _unusable_backends(item):
        skip_or_fail(backend, why)


def _unusable_backends(item):
    """(backend, why) of the item's ``needs_backend`` marks whose backend cannot run here."""
    return [tuple(m.args) for m in item.iter_markers("needs_backend") if m.args[1] is not None]


@pytest.fixture(scope="session")
def backend_unusable():
    """``skip_or_fail(backend, why)`` for fixtures and tests that find a backend unusable while running."""
    return skip_or_fail


@pytest.fixture(scope="session")
def required_backends() -> frozenset[str]:
    """The fused backends this run requires (``$TRGNET_REQUIRE_BACKENDS``)."""
    return read_required_backends()
