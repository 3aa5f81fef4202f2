"""Class mappings, frame labels, boundary targets and temporal downsampling
(docs/model.md#labels-and-boundaries)."""
from __future__ import annotations

import os

import numpy as np
import torch

from trgnet_fast.fileio import open_text
from trgnet_fast.skeletons import skeleton_layout

# The label of frames that count nowhere: padding (collate) and ignored frames inside a video (so labelled in
# gt_arr). Losses and metrics skip them; class ids must stay below it.
IGNORE_INDEX = 255

# Temporal downsampling rate per skeleton layout (LARA ×4, all others 1; docs/model.md#temporal-downsampling).
_RATE = {"PKU": 1, "LARA": 4, "TCG-15": 1, "BODY_25": 1}


def temporal_rate(dataset: str) -> int:
    """Temporal downsampling rate the reference loader applies for ``dataset`` (LARA 4, others 1)."""
    return _RATE[skeleton_layout(dataset)]


def read_mapping(path: str | os.PathLike) -> list[str]:
    """Class names from a ``mapping.txt`` of lines "id name" (ids 0..K-1, in order, contiguous).

    Blank lines are skipped; the name is everything after the first run of whitespace. Returns the K names
    indexed by id. Raises FileNotFoundError / ValueError naming the file (and line) on bad input.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: class mapping file not found")
    names: list[str] = []
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise ValueError(f"{path}:{lineno}: expected 'id name', got {line!r}")
            try:
                idx = int(parts[0])
            except ValueError:
                raise ValueError(f"{path}:{lineno}: expected an integer class id, got {parts[0]!r}") from None
            if idx != len(names):
                raise ValueError(f"{path}:{lineno}: expected class id {len(names)} (ids must be 0..K-1 in order), "
                                 f"got {idx}")
            names.append(parts[1].strip())
    if not names:
        raise ValueError(f"{path}: class mapping file is empty")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{path}: duplicate class names {dup}")
    return names


def write_mapping(path: str | os.PathLike, names: list[str]) -> None:
    """Write ``mapping.txt`` lines "id name" for ``names`` (names must not contain newlines)."""
    with open(path, "w", encoding="utf-8") as f:
        for i, name in enumerate(names):
            if not name or "\n" in name or name != name.strip():
                raise ValueError(f"class name {name!r} is empty or has surrounding/embedded whitespace breaks")
            f.write(f"{i} {name}\n")


def read_ground_truth(path: str | os.PathLike, class_to_id: dict[str, int]) -> np.ndarray:
    """MS-TCN ``groundTruth/<video>.txt`` (one class name per frame and line) → (T,) int64 labels.

    Raises ValueError naming the file and line for a name that is not in the mapping, or for an empty file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: ground-truth file not found")
    labels = []
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            name = line.strip()
            if not name:
                continue
            if name not in class_to_id:
                raise ValueError(f"{path}:{lineno}: class {name!r} is not in the class mapping")
            labels.append(class_to_id[name])
    if not labels:
        raise ValueError(f"{path}: ground-truth file has no frames")
    return np.asarray(labels, dtype=np.int64)


def boundary_from_labels(labels: np.ndarray) -> np.ndarray:
    """Boundary target of a label sequence (DeST utility, docs/model.md#labels-and-boundaries).

    labels: (T,) ints → (T,) float32 with 1 at frame 0 and, for every change ``labels[i] != labels[i-1]``,
    at frames i and i+1 (two positives per transition). The i+1 write is skipped when i is the last frame
    (the published generator would index out of range there, docs/model.md#published-quirks).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"boundary_from_labels: expected non-empty (T,) labels, got shape {labels.shape}")
    T = labels.shape[0]
    boundary = np.zeros(T, dtype=np.float32)
    boundary[0] = 1.0
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    boundary[change] = 1.0
    after = change + 1
    boundary[after[after < T]] = 1.0
    return boundary


def downsample(features: np.ndarray, labels: np.ndarray, boundary: np.ndarray, rate: int):
    """Temporal downsampling, the published TempDownSamp (docs/model.md#temporal-downsampling).

    features: (..., T) → (..., ceil(T/rate)) = features[..., ::rate]; labels: (T,) → labels[::rate];
    boundary: (T,) → zeros of the new length with 1 at ``idx // rate`` for every idx where the full-rate
    boundary is exactly 1.0 (as published: other values, e.g. a smoothed 0.5, leave no mark), so a boundary
    on a dropped frame is kept. rate 1 returns the inputs unchanged. Works on numpy arrays and torch tensors.
    """
    if rate == 1:
        return features, labels, boundary
    if rate < 1:
        raise ValueError(f"downsample: rate must be ≥ 1, got {rate}")
    new_labels = labels[::rate]
    if hasattr(boundary, "new_zeros"):  # torch tensor
        new_boundary = boundary.new_zeros(new_labels.shape[0])
        new_boundary[(boundary == 1.0).nonzero().flatten() // rate] = 1.0
    else:
        new_boundary = np.zeros(new_labels.shape[0], dtype=np.asarray(boundary).dtype)
        new_boundary[np.flatnonzero(np.asarray(boundary) == 1.0) // rate] = 1.0
    return features[..., ::rate], new_labels, new_boundary


def label_runs(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs of a padded label batch, as tensor ops on its device.

    labels: (N, T) integer. Returns member (N, T) bool: frames not equal to ``ignore_index``; start (N, T)
    bool: the first frame of every maximal run of equal labels among them (a run ends at an ignored frame).
    """
    member = labels != ignore_index
    start = member.clone()
    if labels.shape[1] > 1:
        start[:, 1:] &= (labels[:, 1:] != labels[:, :-1]) | ~member[:, :-1]
    return member, start
