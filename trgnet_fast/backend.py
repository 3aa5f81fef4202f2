"""Backend selection for the fused ops.

Backends:
  ``torch``  plain-PyTorch reference (always usable, any device);
  ``triton`` Triton kernels (CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``);
  ``cuda``   the compiled extension ``trgnet_fast._C``: CUDA kernels for CUDA tensors, and
             its C++ CPU kernels for CPU tensors;
  ``auto``   the fastest implemented and usable one for the tensors' device, else ``torch``
             (logged once per op and reason).

The choice is made per call (``backend=``), per model (``TRGNet(..., backend=...)``) or
globally with the environment variable ``TRGNET_BACKEND``.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os

import torch

BACKENDS = ("auto", "torch", "triton", "cuda")
ENV_VAR = "TRGNET_BACKEND"

log = logging.getLogger("trgnet_fast")

# op name -> backends that implement it (filled by each op module at import)
_IMPLEMENTED: dict[str, set[str]] = {}
_logged_fallbacks: set[tuple[str, str]] = set()


def register_op(op: str, backends) -> None:
    """Declare which backends implement ``op`` (called by the op's module)."""
    _IMPLEMENTED[op] = {"torch", *backends}


def implemented_backends(op: str) -> set[str]:
    if op not in _IMPLEMENTED:
        raise ValueError(f"unknown op {op!r}; known ops: {sorted(_IMPLEMENTED)}")
    return set(_IMPLEMENTED[op])


def triton_interpreting() -> bool:
    """Whether Triton runs its CPU interpreter (TRITON_INTERPRET set and not 0)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=None)
def _triton_importable() -> tuple[bool, str]:
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed"
    try:
        import triton  # noqa: F401
    except Exception as exc:  # a broken triton install must not break the package
        return False, f"triton fails to import: {exc}"
    return True, ""


def _usable(name: str, device: torch.device) -> tuple[bool, str]:
    """(usable on ``device``, reason when not) for one concrete backend."""
    if name == "torch":
        return True, ""
    if name == "triton":
        ok, why = _triton_importable()
        if ok and device.type == "cpu" and not triton_interpreting():
            return False, "triton runs on CPU tensors only with TRITON_INTERPRET=1"
        if ok and device.type == "cuda" and not torch.cuda.is_available():
            return False, "no CUDA device"
        return ok, why
    from trgnet_fast import _native  # may compile the extension on first use

    ok, why = _native.available()
    if ok and device.type == "cuda" and not _native.has_cuda():
        return False, "trgnet_fast._C was built without CUDA kernels"
    return ok, why


def backend_status(device: torch.device | str | None = None) -> dict[str, tuple[bool, str]]:
    """For each concrete backend: (usable on ``device``, reason when not)."""
    device = torch.device(device if device is not None else "cpu")
    return {name: _usable(name, device) for name in ("torch", "triton", "cuda")}


def _preference(device: torch.device) -> tuple[str, ...]:
    # On CPU the reference (vectorised ATen) is the default; the extension's CPU kernels
    # exist for parity and CPU-only deployment and are chosen explicitly with "cuda".
    return ("cuda", "triton") if device.type == "cuda" else ()


def requested_backend(backend: str | None) -> str:
    """``backend`` if given, else ``$TRGNET_BACKEND``, else ``auto``; validated."""
    name = backend if backend is not None else os.environ.get(ENV_VAR, "auto")
    name = name.strip().lower()
    if name not in BACKENDS:
        src = "backend" if backend is not None else f"${ENV_VAR}"
        raise ValueError(f"{src}: expected one of {BACKENDS}, got {name!r}")
    return name


@torch.compiler.assume_constant_result
def resolve_backend(op: str, backend: str | None, device: torch.device | str) -> str:
    """The concrete backend ('torch' | 'triton' | 'cuda') that runs ``op`` on ``device``.

    An explicitly requested backend that is not implemented for ``op`` or not usable on
    ``device`` raises ``RuntimeError`` saying why; ``auto`` falls back to ``torch``.
    Under torch.compile the choice is made once, when the graph is traced (so the probing of
    the native module never enters the graph).
    """
    device = torch.device(device)
    name = requested_backend(backend)
    implemented = implemented_backends(op)
    if name != "auto":
        if name not in implemented:
            raise RuntimeError(
                f"backend {name!r} does not implement {op!r} (implemented: {sorted(implemented)})")
        ok, why = _usable(name, device)
        if not ok:
            raise RuntimeError(f"backend {name!r} is not usable for {op!r} on {device.type}: {why}")
        return name
    # only the preferred candidates are probed (probing "cuda" may compile the extension)
    reasons = []
    for cand in _preference(device):
        ok, why = _usable(cand, device) if cand in implemented else (False, "not implemented")
        if ok:
            return cand
        reasons.append(f"{cand}: {why}")
    key = (op, device.type)
    if key not in _logged_fallbacks:
        _logged_fallbacks.add(key)
        reasons = "; ".join(reasons) or "no fused backend is preferred on CPU"
        log.info("trgnet_fast: %s on %s uses the torch reference (%s)", op, device.type, reasons)
    return "torch"


@torch.compiler.assume_constant_result
def model_backend(op: str, backend: str | None, device: torch.device | str) -> str:
    """The backend a model layer uses for ``op``, given the model-wide ``backend``.

    Rule: a model-wide backend that does not implement ``op`` runs the op's torch reference (the
    published computation) instead of raising; "auto" resolves as usual; an implemented explicit
    backend is used (and raises when not usable on ``device``).
    """
    name = requested_backend(backend)
    if name != "auto" and name not in implemented_backends(op):
        return "torch"
    return resolve_backend(op, name, device)
