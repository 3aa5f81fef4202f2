"""Loading of the optional compiled extension ``trgnet_fast._C``.

Order of attempts (the first that works wins; the result is cached for the process):

1. ``trgnet_fast._C`` as installed by ``pip install --no-build-isolation .`` (or ``-e .``);
2. unless ``TRGNET_NO_JIT=1``: a just-in-time build of the same sources with
   ``torch.utils.cpp_extension.load`` (the ``csrc/`` and ``kernels/`` folders shipped inside the
   package as ``trgnet_fast/_sources``, or those of a source checkout), cached in torch's
   extensions folder (``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``). The
   first build prints one line to stderr and takes a minute or two; later runs reuse it.

``TRGNET_NO_NATIVE=1`` disables the native module altogether. Nothing here raises: failures
make :func:`available` return ``(False, reason)``.

The CUDA kernels are part of the module when it was built against a CUDA torch with a CUDA
toolkit present (``has_cuda()``); otherwise the module holds the C++ CPU kernels only.
"""
from __future__ import annotations

import importlib
import os
import sys
import threading
from pathlib import Path

ENV_NO_NATIVE = "TRGNET_NO_NATIVE"
ENV_NO_JIT = "TRGNET_NO_JIT"
JIT_NAME = "trgnet_fast_C"
DEFAULT_CUDA_ARCH_LIST = "9.0"

_lock = threading.Lock()
_state: dict | None = None  # {"module", "reason", "source", "build_dir"}
# Callbacks adding the Python side (fake kernels, autograd) of native ops, run once the library is loaded.
# Each op's ``autograd.py`` adds its own when imported; this module knows no op.
_load_hooks: list = []


def on_load(hook) -> None:
    """Run ``hook()`` once the native library is loaded: at once when it already is, else right after
    loading. A hook that raises makes the native module unavailable, with the error as the reason."""
    with _lock:
        _load_hooks.append(hook)
        loaded = _state is not None and _state["module"] is not None
    if loaded:
        _run_hooks(_state, [hook])


def _run_hooks(state: dict, hooks) -> None:
    try:
        for hook in hooks:
            hook()
    except Exception as exc:
        state.update(module=None, reason=f"registering the native ops failed: {exc!r}")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip() not in ("", "0")


def sources_root() -> Path | None:
    """Folder holding ``csrc/`` and ``kernels/``: the copy shipped in the package, else the checkout."""
    here = Path(__file__).resolve().parent
    for root in (here / "_sources", here.parent):
        if (root / "csrc" / "module.cpp").is_file() and (root / "kernels").is_dir():
            return root
    return None


def source_files(root: Path, with_cuda: bool) -> list[Path]:
    """The translation units of the extension (same list as setup.py and CMakeLists.txt)."""
    files = sorted(p for p in (root / "csrc").glob("*.cpp") if not p.stem.endswith("_cuda"))
    if with_cuda:
        files += sorted((root / "csrc").glob("*_cuda.cpp"))
        files += sorted((root / "kernels").glob("*.cu"))
    return files


def _dependency_files(root: Path) -> list[Path]:
    return [p for sub in ("csrc", "kernels") for p in (root / sub).iterdir()
            if p.suffix in (".cpp", ".cu", ".cuh", ".h")]


def _try_installed():
    try:
        return importlib.import_module("trgnet_fast._C"), ""
    except ModuleNotFoundError as exc:
        if exc.name != "trgnet_fast._C":
            return None, f"trgnet_fast._C failed to import: {exc}"
        return None, "trgnet_fast._C is not installed"
    except Exception as exc:  # e.g. built against another torch (undefined symbols)
        return None, f"trgnet_fast._C failed to import: {exc}"


def _jit_with_cuda() -> bool:
    import torch
    from torch.utils import cpp_extension

    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


def _jit_build_dir() -> Path:
    from torch.utils import cpp_extension

    return Path(cpp_extension._get_build_directory(JIT_NAME, verbose=False))


def _looks_built(build_dir: Path, root: Path) -> bool:
    libs = list(build_dir.glob(f"{JIT_NAME}*.so"))
    if not libs:
        return False
    newest_src = max(p.stat().st_mtime for p in _dependency_files(root))
    return max(p.stat().st_mtime for p in libs) >= newest_src


def _jit_flags(with_cuda: bool) -> tuple[list[str], list[str]]:
    import torch

    cflags = ["-O3", "-g0", "-std=c++17", f"-DTRGNET_TORCH_VERSION={torch.__version__}"]
    cuda_flags = ["-O3", "-std=c++17"]
    if with_cuda:
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_CUDA_ARCH_LIST
        tag = "_".join(archs.replace(";", " ").split())
        cflags += ["-DTRGNET_WITH_CUDA", f"-DTRGNET_CUDA_ARCHS={tag}"]
        cuda_flags += ["-DTRGNET_WITH_CUDA"]
    return cflags, cuda_flags


def _try_jit():
    root = sources_root()
    if root is None:
        return None, "no csrc/ and kernels/ sources found for a JIT build", None
    try:
        from torch.utils import cpp_extension

        with_cuda = _jit_with_cuda()
        build_dir = _jit_build_dir()
        if not _looks_built(build_dir, root):
            what = "CPU + CUDA kernels" if with_cuda else "CPU kernels"
            print(f"trgnet_fast: compiling the native extension ({what}) into {build_dir}; "
                  "this happens once and takes a minute or two", file=sys.stderr, flush=True)
        cflags, cuda_flags = _jit_flags(with_cuda)
        old_arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
        if with_cuda and old_arch is None:
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCH_LIST
        try:
            module = cpp_extension.load(
                name=JIT_NAME,
                sources=[str(p) for p in source_files(root, with_cuda)],
                extra_cflags=cflags,
                extra_cuda_cflags=cuda_flags,
                with_cuda=with_cuda,
                verbose=False,
            )
        finally:
            if with_cuda and old_arch is None:
                os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
        return module, "", str(build_dir)
    except Exception as exc:
        msg = str(exc).strip().splitlines()
        tail = " | ".join(line.strip() for line in msg[-6:] if line.strip())
        return None, f"JIT build of the native extension failed: {tail}", None


def _load_state() -> dict:
    global _state
    if _state is not None:
        return _state
    with _lock:
        if _state is not None:
            return _state
        state = {"module": None, "reason": "", "source": None, "build_dir": None}
        if _flag(ENV_NO_NATIVE):
            state["reason"] = f"disabled by {ENV_NO_NATIVE}=1"
        else:
            try:
                import torch  # noqa: F401  (the extension links against libtorch)
            except Exception as exc:
                state["reason"] = f"torch fails to import: {exc}"
            else:
                module, reason = _try_installed()
                if module is not None:
                    state.update(module=module, source="installed")
                elif _flag(ENV_NO_JIT):
                    state["reason"] = f"{reason}; JIT build disabled by {ENV_NO_JIT}=1"
                else:
                    module, jit_reason, build_dir = _try_jit()
                    if module is not None:
                        state.update(module=module, source="jit", build_dir=build_dir)
                    else:
                        state["reason"] = f"{reason}; {jit_reason}"
        if state["module"] is not None:
            _run_hooks(state, _load_hooks)  # before publishing: no caller sees the ops without autograd
        _state = state
        return state


def load():
    """The native module (``trgnet_fast._C`` or its JIT build), or None when unavailable."""
    return _load_state()["module"]


def available() -> tuple[bool, str]:
    """(True, "") when the native ops are registered, else (False, reason)."""
    state = _load_state()
    return state["module"] is not None, state["reason"]


def ops():
    """``torch.ops.trgnet`` with every native op ready (fake kernels + autograd registered).

    Loads the extension (compiling it on first use); raises ``RuntimeError`` with the reason when it
    is unavailable.
    """
    ok, why = available()
    if not ok:
        raise RuntimeError(f"trgnet_fast native extension unavailable: {why}")
    import torch

    return torch.ops.trgnet


def has_cuda() -> bool:
    """True when the native module is available and was built with the CUDA kernels."""
    module = load()
    return bool(module is not None and module.has_cuda())


def native_build_info() -> dict:
    """How the native module was obtained and built, for ``trgnet info``.

    Keys: available, reason, source ("installed" | "jit" | None), path, cuda (built with CUDA
    kernels), cuda_archs, cuda_runtime (CUDART_VERSION at build), torch (torch version at build).
    """
    state = _load_state()
    module = state["module"]
    info = {"available": module is not None, "reason": state["reason"], "source": state["source"],
            "path": getattr(module, "__file__", None), "cuda": False, "cuda_archs": None,
            "cuda_runtime": None, "torch": None}
    if module is not None:
        info.update(module.build_info())
    return info


def _reset_for_tests() -> None:
    """Forget the cached load result (tests only; an already loaded library stays loaded)."""
    global _state
    with _lock:
        _state = None
