"""Build of trgnet_fast: the Python package plus the optional compiled module trgnet_fast._C.

Metadata and the package list live in pyproject.toml; this file adds the native extension and
the shipped kernel sources.

    pip install --no-build-isolation .      builds trgnet_fast._C against the torch in this env
    pip install --no-build-isolation -e .   the same, with _C placed in-place in trgnet_fast/
    pip install .                            (build isolation: torch is not importable) pure-Python
                                             install; _C is compiled on first use (trgnet_fast/_native.py)

trgnet_fast._C always holds the C++ CPU kernels. The CUDA kernels (kernels/*.cu) and their
dispatch (csrc/*_cuda.cpp) are added when torch has CUDA (torch.version.cuda) and a CUDA
toolkit is found (CUDA_HOME / nvcc), or when TRGNET_FORCE_CUDA=1 (then failing loudly if they
cannot be built). Environment:
    TRGNET_NO_NATIVE=1       skip the native build (pure-Python install)
    TRGNET_FORCE_CUDA=1      require the CUDA kernels
    TORCH_CUDA_ARCH_LIST     CUDA archs (default "9.0": H100 / H200)
    MAX_JOBS                 parallel compile jobs: ninja runs that many compilers (nvcc / c++) at once
                             (default: the number of CPUs this process may use, so that each compiler has a
                             core; ninja's own default would start CPUs + 2)
The translation units are compiled in parallel by ninja; the kernels of one op may be split over several
(kernels/<op>.cu, kernels/<op>_<part>.cu) so that no single nvcc run bounds the build.
The csrc/ and kernels/ sources are always shipped as trgnet_fast/_sources/ for the JIT build.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SOURCE_DIRS = ("csrc", "kernels")
SOURCE_SUFFIXES = (".cpp", ".cu", ".cuh", ".h")
DEFAULT_CUDA_ARCH_LIST = "9.0"


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip() not in ("", "0")


def _say(msg: str) -> None:
    print(f"trgnet_fast setup: {msg}", file=sys.stderr, flush=True)


class BuildPyWithSources(build_py):
    """build_py that also copies csrc/ and kernels/ into trgnet_fast/_sources/."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's csrc/ and kernels/ directly
        dest = Path(self.build_lib) / "trgnet_fast" / "_sources"
        for sub in SOURCE_DIRS:
            for src in sorted((ROOT / sub).iterdir()):
                if src.is_file() and src.suffix in SOURCE_SUFFIXES:
                    (dest / sub).mkdir(parents=True, exist_ok=True)
                    self.copy_file(str(src), str(dest / sub / src.name))


def _default_max_jobs() -> None:
    """MAX_JOBS (read by torch.utils.cpp_extension for ninja -j), when unset: the usable CPUs."""
    if not os.environ.get("MAX_JOBS", "").strip():
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        os.environ["MAX_JOBS"] = str(max(1, cpus))


def _sources(with_cuda: bool) -> list[str]:
    # Same list as trgnet_fast/_native.py:source_files and CMakeLists.txt (relative paths).
    csrc = sorted(p for p in (ROOT / "csrc").glob("*.cpp") if not p.stem.endswith("_cuda"))
    if with_cuda:
        csrc += sorted((ROOT / "csrc").glob("*_cuda.cpp")) + sorted((ROOT / "kernels").glob("*.cu"))
    return [str(p.relative_to(ROOT)) for p in csrc]


def _native_extension():
    """(ext_modules, cmdclass entries) for trgnet_fast._C, or ([], {}) for a pure-Python install."""
    if _flag("TRGNET_NO_NATIVE"):
        _say("TRGNET_NO_NATIVE=1: installing without trgnet_fast._C")
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except Exception as exc:  # build isolation: no torch in the build environment
        _say(f"torch is not importable at build time ({exc.__class__.__name__}: {exc}); installing "
             "without trgnet_fast._C (it is compiled on first use; for a prebuilt module use "
             "'pip install --no-build-isolation .')")
        return [], {}

    force = _flag("TRGNET_FORCE_CUDA")
    has_cuda_torch = torch.version.cuda is not None
    has_toolkit = cpp_extension.CUDA_HOME is not None
    with_cuda = has_cuda_torch and has_toolkit
    if force and not with_cuda:
        why = (f"torch {torch.__version__} is built without CUDA" if not has_cuda_torch
               else "no CUDA toolkit found (set CUDA_HOME or put nvcc on PATH)")
        raise RuntimeError(f"TRGNET_FORCE_CUDA=1 but the CUDA kernels cannot be built: {why}")

    macros = [("TRGNET_TORCH_VERSION", torch.__version__)]
    cxx_flags = ["-O3", "-g0", "-std=c++17"]
    if with_cuda:
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_CUDA_ARCH_LIST
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs  # read by cpp_extension for the -gencode flags
        macros += [("TRGNET_WITH_CUDA", None),
                   ("TRGNET_CUDA_ARCHS", "_".join(archs.replace(";", " ").split()))]
        ext = cpp_extension.CUDAExtension(
            "trgnet_fast._C", _sources(True), define_macros=macros,
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++17"]})
        _say(f"building trgnet_fast._C with CPU and CUDA kernels (archs {archs}, "
             f"CUDA_HOME {cpp_extension.CUDA_HOME})")
    else:
        ext = cpp_extension.CppExtension(
            "trgnet_fast._C", _sources(False), define_macros=macros,
            extra_compile_args={"cxx": cxx_flags})
        why = "torch has no CUDA" if not has_cuda_torch else "no CUDA toolkit found"
        _say(f"building trgnet_fast._C with the CPU kernels only ({why})")
    _default_max_jobs()
    _say(f"compiling with ninja, MAX_JOBS={os.environ['MAX_JOBS']} parallel jobs")
    build_ext = cpp_extension.BuildExtension.with_options(use_ninja=True, no_python_abi_suffix=False)
    return [ext], {"build_ext": build_ext}


ext_modules, native_cmdclass = _native_extension()

setup(
    ext_modules=ext_modules,
    cmdclass={"build_py": BuildPyWithSources, **native_cmdclass},
    zip_safe=False,
)
