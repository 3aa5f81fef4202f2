"""trgnet_fast._native: loading of the optional compiled module, its switches and build info."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from trgnet_fast import _native
from trgnet_fast.backend import backend_status

INFO_KEYS = {"available", "reason", "source", "path", "cuda", "cuda_archs", "cuda_runtime", "torch"}


def run_python(code: str, env_extra: dict, timeout=300) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    for name in ("TRGNET_NO_NATIVE", "TRGNET_NO_JIT"):
        if name not in env_extra:
            env.pop(name, None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_available_and_build_info_are_consistent():
    ok, why = _native.available()
    assert isinstance(ok, bool) and isinstance(why, str)
    info = _native.native_build_info()
    assert set(info) == INFO_KEYS
    assert info["available"] == ok
    if ok:
        assert why == "" and info["source"] in ("installed", "jit") and info["path"]
        assert info["cuda"] == _native.has_cuda()
        import torch
        assert info["torch"] == torch.__version__
        assert hasattr(torch.ops.trgnet, "linear_attention")
    else:
        assert why and info["source"] is None and not _native.has_cuda()


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_required_backends_are_usable(backend, required_backends):
    """Under $TRGNET_REQUIRE_BACKENDS (CI) a missing or broken native module, or a Triton that cannot run, fails
    here with the reason, besides failing every test that needs the backend."""
    if backend not in required_backends:
        pytest.skip(f"the {backend} backend is not required (set TRGNET_REQUIRE_BACKENDS={backend} to require it)")
    # where the tests run it: the native module's CPU kernels (and its CUDA kernels on a GPU); Triton on the GPU,
    # else in its CPU interpreter (tests/conftest.py)
    gpu = ["cuda"] if torch.cuda.is_available() else []
    devices = {"cuda": ["cpu", *gpu], "triton": gpu or ["cpu"]}[backend]
    status = {d: backend_status(d)[backend] for d in devices}
    unusable = {d: why for d, (ok, why) in status.items() if not ok}
    assert not unusable, f"required {backend} backend unusable: {unusable}; native: {_native.native_build_info()}"


def test_no_native_env_disables_the_module():
    proc = run_python("""
        import json, torch
        from trgnet_fast import _native
        from trgnet_fast.backend import backend_status
        from trgnet_fast.ops.linear_attention import linear_attention
        q = torch.randn(1, 3, 1, 2)
        out = linear_attention(q, q, q, backend="torch")
        try:
            linear_attention(q, q, q, backend="cuda")
            err = ""
        except RuntimeError as exc:
            err = str(exc)
        print(json.dumps({"available": _native.available(), "cuda_status": backend_status("cpu")["cuda"],
                          "err": err, "module": "trgnet_fast._C" in __import__("sys").modules}))
    """, {"TRGNET_NO_NATIVE": "1"})
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["available"] == [False, "disabled by TRGNET_NO_NATIVE=1"]
    assert res["cuda_status"][0] is False and "TRGNET_NO_NATIVE" in res["cuda_status"][1]
    assert "TRGNET_NO_NATIVE" in res["err"]
    assert res["module"] is False
    assert "compiling" not in proc.stderr


def test_no_jit_env_without_installed_module_reports_why():
    # Hide the installed module; with TRGNET_NO_JIT=1 nothing is compiled and the reason says so.
    proc = run_python("""
        import json, sys
        sys.modules["trgnet_fast._C"] = None
        from trgnet_fast import _native
        print(json.dumps(_native.available()))
    """, {"TRGNET_NO_JIT": "1"})
    assert proc.returncode == 0, proc.stderr
    ok, why = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ok is False and "TRGNET_NO_JIT=1" in why
    assert "compiling" not in proc.stderr


def test_sources_are_found_for_the_jit_build():
    root = _native.sources_root()
    assert root is not None
    names = {p.name for p in _native.source_files(root, with_cuda=True)}
    assert {"module.cpp", "linear_attention.cpp", "linear_attention_cuda.cpp", "linear_attention.cu"} <= names
    assert "linear_attention_cuda.cpp" not in {p.name for p in _native.source_files(root, with_cuda=False)}


@pytest.mark.skipif(not os.environ.get("TRGNET_TEST_JIT"),
                    reason="the JIT build takes a minute or more; set TRGNET_TEST_JIT=1 to run it")
def test_jit_build_from_the_shipped_sources(tmp_path):
    code = """
        import json, sys, torch
        sys.modules["trgnet_fast._C"] = None
        from trgnet_fast import _native
        from trgnet_fast.ops.linear_attention import linear_attention
        from trgnet_fast.ops.linear_attention.reference import linear_attention_reference
        q = torch.randn(2, 7, 2, 3, dtype=torch.float64)
        err = (linear_attention(q, q, q, backend="cuda") - linear_attention_reference(q, q, q)).abs().max()
        print(json.dumps({"info": _native.native_build_info(), "err": err.item()}))
    """
    env = {"TORCH_EXTENSIONS_DIR": str(tmp_path)}
    for attempt in range(2):  # the second run must reuse the cached build silently
        proc = run_python(code, env, timeout=900)
        assert proc.returncode == 0, proc.stderr
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        assert res["info"]["source"] == "jit" and res["err"] < 1e-12
        assert proc.stderr.count("compiling the native extension") == (1 if attempt == 0 else 0), proc.stderr
