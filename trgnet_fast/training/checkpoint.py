"""Atomic checkpoints, safe loading and RNG-state capture (for exact ``--resume``).

Checkpoints are read with ``torch.load(..., weights_only=True)`` only: a pickle that needs any other Python
object (which could run arbitrary code while loading) is refused. The trainer therefore stores nothing but
tensors, numbers, strings, None and dicts/lists/tuples of them; the RNG states are encoded that way by
:func:`rng_state`."""
from __future__ import annotations

import os
import pickle
import random
import re
import tempfile

import numpy as np
import torch

FORMAT = "trgnet_fast.train/2"  # the "format" entry of trainer checkpoints (/1 pickled numpy objects)
# Entries of a trainer checkpoint besides "format" that `trgnet eval` / `predict` read.
REQUIRED_KEYS = ("model", "model_kwargs", "config", "class_names", "joint_graph")
EXPECTED = (f"expected a checkpoint written by `trgnet train` (last.pt / best.pt): a torch.save'd dict of "
            f"format {FORMAT!r} with the entries {', '.join(map(repr, REQUIRED_KEYS))}")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: refused by the safe loader, unreadable, or of the wrong kind."""


def atomic_write(path: str, write_fn) -> str:
    """Write ``path`` atomically: ``write_fn(file_object)`` writes a temporary file in the same directory,
    which is flushed, fsynced and then ``os.replace``d over ``path`` (the directory is fsynced too). A crash
    at any point leaves either the old file or the new one, never a partial file."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # directories cannot be fsynced on every platform
        pass
    return path


def atomic_save(obj, path: str) -> str:
    """``torch.save(obj, path)`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def with_absolute_data_paths(state: dict) -> dict:
    """A copy of trainer checkpoint ``state`` whose config finds the data from any directory: data.dir becomes
    the absolute ``data_root`` the trainer recorded, and a csv / mapping path that training found relative to
    the current directory (not under data.dir) becomes absolute. Paths under data.dir stay relative to it, so
    ``--data`` still points eval at data that moved."""
    from trgnet_fast.training.data import resolve
    root = state["data_root"]
    data = dict(state["config"]["data"], dir=root)
    for key in ("train_csv", "val_csv", "test_csv", "mapping"):
        path = data.get(key)
        if path and not os.path.isabs(path) and resolve(path, root) == path:
            data[key] = os.path.abspath(path)
    return dict(state, config=dict(state["config"], data=data))


def rng_state() -> dict:
    """RNG states of python, numpy, torch (CPU) and every CUDA device, in forms the safe loader accepts:
    python's is ``random.getstate()`` as is (a tuple of ints, then None or a float); numpy's legacy
    ``(name, key, pos, has_gauss, cached_gaussian)`` tuple becomes a dict holding the uint32 key as an int64
    tensor; torch's and CUDA's are byte tensors."""
    name, key, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state = {"python": random.getstate(),
             "numpy": {"bit_generator": str(name), "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured (tensors may live on any device)."""
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["bit_generator"], n["key"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda = [s.cpu() for s in state["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def safe_load(path: str, map_location="cpu"):
    """``torch.load(path, weights_only=True)``. A missing path raises FileNotFoundError; a file that needs
    a Python object to unpickle (refused: that could run code), or that cannot be read at all (truncated,
    corrupt, not written by ``torch.save``), raises :class:`CheckpointError` naming the file."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: expected a checkpoint file, got a directory")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: checkpoint not found")
    unreadable = f"{path}: cannot read it as a PyTorch checkpoint (truncated, corrupt or not written by torch.save)"
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found is None:  # not a refused object: bytes that are no pickle the safe loader reads
            operand = re.search(r"Unsupported operand \d+", str(e))
            detail = _file_kind(path) or (operand.group(0) if operand else _first_sentence(e))
            raise CheckpointError(f"{unreadable}: {detail}") from e
        raise CheckpointError(
            f"{path}: refused: loading it needs the Python object {found.group(1)}, which the safe loader "
            "(torch.load with weights_only=True) does not allow because unpickling it could run arbitrary code. "
            "It was written by an older trgnet_fast (checkpoints before format "
            f"{FORMAT!r} held numpy objects) or by other code. If you trust its source, load it yourself with "
            "torch.load(..., weights_only=False) and save the tensors you need (e.g. its 'model' state_dict) "
            "with torch.save") from e
    except Exception as e:  # torch.load fails on damaged files with many types (RuntimeError, EOFError, ...)
        detail = _file_kind(path) or f"{type(e).__name__} {_first_sentence(e)}".rstrip()
        raise CheckpointError(f"{unreadable}: {detail}") from e


def _file_kind(path: str) -> str:
    """What a file torch.load cannot read is instead, when its first bytes tell (else "")."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"\x93NUMPY"):
        return "it is a NumPy .npy array"
    # pickle protocol ≥ 2, but not the pickled magic number that starts torch.save's legacy (non-zip) format
    if head.startswith(b"\x80") and not head.startswith(b"\x80\x02\x8a\x0a"):
        return "it is a plain pickle (pickle.dump), not a torch.save file"
    if head and b"\0" not in head and _is_utf8(head):
        return "it is a text file"
    return ""


def _is_utf8(data: bytes) -> bool:
    """Whether ``data`` decodes as UTF-8, allowing a multi-byte character cut off at its end."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.reason == "unexpected end of data"
    return True


def _first_sentence(e: Exception) -> str:
    """The first sentence of ``e``'s message (torch's errors go on with generic advice)."""
    lines = str(e).strip().splitlines()
    return re.split(r"(?<=\.)\s", lines[0], maxsplit=1)[0] if lines else ""


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """A checkpoint written by the trainer (``last.pt`` / ``best.pt``), loaded with :func:`safe_load`;
    anything else (e.g. a bare model state_dict) raises :class:`CheckpointError` naming the file."""
    try:
        state = safe_load(path, map_location)
    except CheckpointError as e:
        raise CheckpointError(f"{e}; {EXPECTED}") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a trainer checkpoint: {EXPECTED}, got a {type(state).__name__}")
    fmt = state.get("format")
    if fmt is None:
        bare = bool(state) and all(torch.is_tensor(v) for v in state.values())
        kind = ("a bare state_dict of model weights (`trgnet viz-graphs` reads those, given --dataset / "
                "--n-classes)" if bare
                else f"a dict with keys {sorted(map(str, state))[:6]}")
        raise CheckpointError(f"{path}: not a trainer checkpoint: {EXPECTED}, got {kind}")
    if fmt != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {fmt!r} (an older or newer trgnet_fast); {EXPECTED}")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: trainer checkpoint without {missing}: {EXPECTED}")
    return state
