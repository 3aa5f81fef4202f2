import logging

import pytest
import torch

from trgnet_fast import _native, backend
from trgnet_fast.ops.registry import OPS

LA = OPS["linear_attention"].name


def test_requested_backend_reads_argument_then_env(monkeypatch):
    monkeypatch.setenv(backend.ENV_VAR, "TORCH")
    assert backend.requested_backend(None) == "torch"
    assert backend.requested_backend("cuda") == "cuda"
    monkeypatch.delenv(backend.ENV_VAR)
    assert backend.requested_backend(None) == "auto"


def test_bad_backend_names_are_errors_naming_the_source(monkeypatch):
    with pytest.raises(ValueError, match=r"backend: expected one of .* got 'fast'"):
        backend.requested_backend("fast")
    monkeypatch.setenv(backend.ENV_VAR, "gpu")
    with pytest.raises(ValueError, match=r"\$TRGNET_BACKEND: expected one of .* got 'gpu'"):
        backend.requested_backend(None)


def test_unknown_op_is_an_error():
    with pytest.raises(ValueError, match="unknown op 'no_such_op'"):
        backend.resolve_backend("no_such_op", "auto", "cpu")


def test_unimplemented_backend_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(backend._IMPLEMENTED, "fake_op", {"torch", "cuda"})
    with pytest.raises(RuntimeError, match=r"backend 'triton' does not implement 'fake_op' \(implemented: "):
        backend.resolve_backend("fake_op", "triton", "cpu")


def test_unusable_backend_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(_native, "available", lambda: (False, "not built in this test"))
    monkeypatch.setitem(backend._IMPLEMENTED, "fake_op", {"torch", "cuda"})
    with pytest.raises(RuntimeError, match="backend 'cuda' is not usable for 'fake_op' on cpu: not built"):
        backend.resolve_backend("fake_op", "cuda", "cpu")


def test_auto_on_cpu_falls_back_to_torch_with_one_log_line(monkeypatch, caplog):
    monkeypatch.setattr(backend, "_logged_fallbacks", set())
    with caplog.at_level(logging.INFO, logger="trgnet_fast"):
        assert backend.resolve_backend(LA, "auto", "cpu") == "torch"
        assert backend.resolve_backend(LA, None, torch.device("cpu")) == "torch"
    lines = [r for r in caplog.records if "uses the torch reference" in r.getMessage()]
    assert len(lines) == 1


def test_auto_on_cuda_prefers_fused_backends(monkeypatch):
    fake = {"torch": (True, ""), "triton": (True, ""), "cuda": (True, "")}
    monkeypatch.setattr(backend, "_usable", lambda name, device: fake[name])
    monkeypatch.setitem(backend._IMPLEMENTED, "fake_op", {"torch", "triton", "cuda"})
    assert backend.resolve_backend("fake_op", "auto", "cuda") == "cuda"
    fake["cuda"] = (False, "no")
    assert backend.resolve_backend("fake_op", "auto", "cuda") == "triton"


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    ok, why = backend.backend_status("cpu")["triton"]
    assert not ok and "TRITON_INTERPRET=1" in why
