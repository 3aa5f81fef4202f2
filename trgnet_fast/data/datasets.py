"""Map-style datasets yielding one video per item (docs/model.md#input-data).

Every item is a dict::

    feature   float32 tensor (C_in, V, T)   model input, after feature construction and downsampling
    label     int64 tensor (T,)             class ids 0..K-1, or 255 for an ignored frame
    boundary  float32 tensor (T,)           boundary target (1 at frame 0 and around every label change)
    name      str                           video name (file stem)

Frames labelled 255 in ``gt_arr`` are ignored frames, as in the published pipeline: 255 is the ignore index
of the classification losses, of the training accuracy and of every metric (and the label padding of
:func:`~trgnet_fast.data.collate.collate`). Class counts above 255 are refused, since class 255 would then be
ignored everywhere.

Two on-disk layouts are read:

* :class:`CsvSegmentationDataset` — the published (DeST/TRG-Net) layout: a csv with header
  ``feature,label,boundary`` whose rows are paths relative to ``dataset_dir`` (``features/*.npy``,
  ``gt_arr/*.npy``, ``gt_boundary_arr/*.npy``).
* :class:`MSTCNDataset` — the MS-TCN layout: ``groundTruth/<video>.txt``, ``mapping.txt``,
  ``splits/*.bundle``, ``features/<video>.npy``.

Both classes also give a video's full-frame-rate boundary array without reading its features
(``full_rate_boundary`` / ``boundary_source``): the boundary BCE ``pos_weight`` is counted on those; and its
item's frame count (``num_frames``, from the labels): the packed batches' frame budget.

Data files are checked as they are read, and a bad one raises ValueError naming it: features must be real
numbers (not complex, bool or strings), boundaries 0 or 1, and a video must keep at least 2 frames after
downsampling (the model's InstanceNorm normalises over time).

Feature and label lengths must agree exactly (ValueError otherwise): the published loader's length alignment
slices the joint axis instead of time, so we refuse mismatches rather than silently slicing
(docs/model.md#published-quirks).
"""
from __future__ import annotations

import csv
import os

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from trgnet_fast.data.features import (BUILT_SHAPE, check_num_frames, check_real_dtype, features_from_array,
                                       features_from_ctvm)
from trgnet_fast.data.labels import (IGNORE_INDEX, boundary_from_labels, downsample, read_ground_truth, read_mapping,
                                     temporal_rate)
from trgnet_fast.fileio import open_text
from trgnet_fast.skeletons import skeleton_layout


def load_npy(path: str) -> np.ndarray:
    """np.load with errors that name the file (missing, unreadable, pickled objects)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: file not found")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:  # corrupt header, truncated data, pickled content, ...
        raise ValueError(f"{path}: not a readable .npy array ({type(e).__name__}: {e})") from e
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{path}: expected a single .npy array, got {type(arr).__name__}")
    return arr


def check_labels(labels: np.ndarray, path: str, num_classes: int | None) -> np.ndarray:
    """Frame labels read from ``path`` as (T,) int64: integral values in 0..num_classes-1 or 255 (ignored)."""
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"{path}: expected non-empty frame labels (T,), got shape {labels.shape}")
    if np.issubdtype(labels.dtype, np.floating):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise ValueError(f"{path}: expected integer class ids, got non-integral values")
    elif not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: expected integer class ids, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    bad = labels < 0
    if num_classes is not None:
        bad |= (labels >= num_classes) & (labels != IGNORE_INDEX)
    if bad.any():
        bound = f"0..{num_classes - 1}" if num_classes is not None else "≥ 0"
        raise ValueError(f"{path}: expected class ids in {bound} or {IGNORE_INDEX} (ignored frame), got "
                         f"{np.unique(labels[bad])[:8].tolist()}")
    return labels


def check_num_classes(num_classes: int, where: str) -> None:
    """Refuse class counts whose ids would reach the ignore label 255 (class 255 would be ignored)."""
    if num_classes > IGNORE_INDEX:
        raise ValueError(f"{where}: at most {IGNORE_INDEX} classes are supported (label {IGNORE_INDEX} marks "
                         f"ignored frames), got {num_classes}")


def read_boundary(path: str) -> np.ndarray:
    """A ``gt_boundary_arr`` file as stored (full frame rate, dtype kept): a non-empty (T,) array of 0s and 1s
    (bool, integer or float)."""
    boundary = load_npy(path)
    if boundary.ndim != 1 or boundary.size == 0:
        raise ValueError(f"{path}: expected boundary (T,) with T ≥ 1, got shape {boundary.shape}")
    real = boundary.dtype == bool or np.issubdtype(boundary.dtype, np.integer) or \
        np.issubdtype(boundary.dtype, np.floating)
    if not real:
        raise ValueError(f"{path}: expected boundary values 0 or 1 (bool, integer or float), got dtype "
                         f"{boundary.dtype}")
    bad = (boundary != 0) & (boundary != 1)  # NaN included
    if bad.any():
        raise ValueError(f"{path}: expected boundary values 0 or 1, got {np.unique(boundary[bad])[:8].tolist()}")
    return boundary


def downsampled_frames(num_frames: int, path: str, rate: int) -> int:
    """The length ``downsample`` leaves of a video of ``num_frames`` frames (ceil(num_frames / rate)), refused
    below the model's minimum as a ValueError naming ``path``."""
    frames = len(range(0, num_frames, rate))
    check_num_frames(frames, path, rate)
    return frames


def _check_features(feat: np.ndarray, path: str, rate: int) -> None:
    if not np.all(np.isfinite(feat)):
        raise ValueError(f"{path}: features contain NaN or inf")
    downsampled_frames(feat.shape[-1], path, rate)


def _make_item(feature, labels, boundary, name, rate) -> dict:
    feature, labels, boundary = downsample(feature, labels, boundary, rate)
    return {
        "feature": torch.from_numpy(np.ascontiguousarray(feature, dtype=np.float32)),
        "label": torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
        "boundary": torch.from_numpy(np.ascontiguousarray(boundary, dtype=np.float32)),
        "name": name,
    }


def join_dataset_path(dataset_dir: str, rel: str) -> str:
    """Published csv path joining: ``dataset_dir + rel`` by concatenation (rows start with "/");
    rows without a leading slash are joined with a separator."""
    dataset_dir = os.fspath(dataset_dir)
    if rel.startswith("/") or rel.startswith(os.sep):
        return dataset_dir + rel
    return os.path.join(dataset_dir, rel)


def read_csv_rows(csv_path: str) -> list[tuple[str, str, str]]:
    """Rows (feature, label, boundary) of a published split csv; errors name the file and line."""
    csv_path = os.fspath(csv_path)
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"{csv_path}: split csv not found")
    with open_text(csv_path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != ["feature", "label", "boundary"]:
            raise ValueError(f"{csv_path}: expected header 'feature,label,boundary', got {header!r}")
        rows = []
        for lineno, row in enumerate(reader, 2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 3:
                raise ValueError(f"{csv_path}:{lineno}: expected 3 columns (feature,label,boundary), got {row!r}")
            rows.append(tuple(c.strip() for c in row))
    if not rows:
        raise ValueError(f"{csv_path}: split csv lists no videos")
    return rows


class _CachedDataset(Dataset):
    def __init__(self, cache: bool):
        self.cache = cache
        self._cache: dict[int, dict] = {}

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} videos")
        index %= len(self)
        if self.cache and index in self._cache:
            item = self._cache[index]
            return {k: (v.clone() if torch.is_tensor(v) else v) for k, v in item.items()}
        item = self._load(index)
        if self.cache:
            self._cache[index] = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in item.items()}
        return item

    def _load(self, index: int) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError


class CsvSegmentationDataset(_CachedDataset):
    """Videos listed in a published split csv (header ``feature,label,boundary``).

    csv_path: the csv; dataset_dir: prefix of the row paths (joined as in :func:`join_dataset_path`);
    dataset: dataset key ("PKU-subject", "PKU-view", "LARA", "TCG-15", "MCFS-130", "MCFS-22").
    feature_format: how ``features/*.npy`` is stored — "raw" (docs/model.md#features: the raw shape, e.g. PKU
    (T, 150), built here with ``build_features``), "built" (already (C_in, V, T)), or "auto" (decided per file
    by shape; see ``features_from_array``). Labels ``gt_arr/*.npy`` are (T,) ints, boundaries
    ``gt_boundary_arr/*.npy`` (T,) floats; their lengths must equal the feature length T.
    num_classes: when given (at most 255), labels must lie in 0..num_classes-1 or be 255 (ignored frame).
    rate: temporal downsampling (default per dataset: LARA 4, others 1).
    cache: keep loaded items in memory.
    """

    def __init__(self, csv_path, dataset_dir, dataset: str, feature_format: str = "auto",
                 num_classes: int | None = None, rate: int | None = None, cache: bool = False):
        super().__init__(cache)
        skeleton_layout(dataset)
        self.csv_path = os.fspath(csv_path)
        self.dataset_dir = os.fspath(dataset_dir)
        self.dataset = dataset
        self.feature_format = feature_format
        if num_classes is not None:
            check_num_classes(num_classes, "num_classes")
        self.num_classes = num_classes
        self.rate = temporal_rate(dataset) if rate is None else int(rate)
        self.rows = [tuple(join_dataset_path(self.dataset_dir, c) for c in row) for row in read_csv_rows(self.csv_path)]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def names(self) -> list[str]:
        return [os.path.splitext(os.path.basename(r[0]))[0] for r in self.rows]

    def boundary_source(self, index: int) -> str:
        """Path of video ``index``'s ``gt_boundary_arr`` file."""
        return self.rows[index][2]

    def full_rate_boundary(self, index: int) -> np.ndarray:
        """Video ``index``'s boundary array as stored (before temporal downsampling); features are not read."""
        return read_boundary(self.boundary_source(index))

    def num_frames(self, index: int) -> int:
        """The frame count of video ``index``'s item (its ``feature``'s T, after temporal downsampling), from its
        ``gt_arr`` labels alone (features are not read): the packed batches' frame budget
        (docs/model.md#packed-batches)."""
        label_path = self.rows[index][1]
        labels = check_labels(load_npy(label_path), label_path, self.num_classes)
        return downsampled_frames(labels.shape[0], label_path, self.rate)

    def _load(self, index: int) -> dict:
        feat_path, label_path, boundary_path = self.rows[index]
        feature = features_from_array(load_npy(feat_path), self.dataset, feat_path, self.feature_format)
        _check_features(feature, feat_path, self.rate)
        labels = check_labels(load_npy(label_path), label_path, self.num_classes)
        boundary = read_boundary(boundary_path)
        T = feature.shape[-1]
        if labels.shape[0] != T:
            raise ValueError(f"length mismatch: {feat_path} has {T} frames but {label_path} has "
                             f"{labels.shape[0]} labels")
        if boundary.shape[0] != T:
            raise ValueError(f"length mismatch: {feat_path} has {T} frames but {boundary_path} has "
                             f"{boundary.shape[0]} boundary values")
        name = os.path.splitext(os.path.basename(feat_path))[0]
        return _make_item(feature, labels, boundary.astype(np.float32), name, self.rate)


def unwrap_subsets(dataset: Dataset) -> tuple[Dataset, list[int]]:
    """(the dataset under any nesting of ``torch.utils.data.Subset``, the indices there of ``dataset``'s items in
    order), e.g. for the training part of a carved split (:func:`carve_validation`)."""
    indices = list(range(len(dataset)))
    while isinstance(dataset, Subset):
        indices = [dataset.indices[i] for i in indices]
        dataset = dataset.dataset
    return dataset, indices


def carve_validation(n: int, every: int) -> tuple[list[int], list[int]]:
    """Positions (train, val) of a training list of ``n`` videos, by the published ``make_csv_files`` rule
    (docs/model.md#csv-layout):
    position j (0-based, in list order) goes to validation when ``j % every == every - 1`` — with the
    published every = 10 that is j = 9, 19, 29, … (the 10th, 20th, … video) — all others stay in training.
    Both lists keep the list order. A list shorter than ``every`` yields no validation video (as published).
    every must be ≥ 2: with 1 every video would go to validation.
    """
    if every < 2:
        raise ValueError(f"every: expected ≥ 2 (1 would move every training video to validation), got {every}")
    val = list(range(every - 1, n, every))
    return [j for j in range(n) if j % every != every - 1], val


def read_bundle(path: str) -> list[str]:
    """Video names (without ``.txt``) listed in an MS-TCN ``splits/*.bundle`` file, one per line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: split file not found")
    with open_text(path) as f:
        names = [ln.strip() for ln in f if ln.strip()]
    if not names:
        raise ValueError(f"{path}: split file lists no videos")
    return [n[:-4] if n.endswith(".txt") else n for n in names]


class MSTCNDataset(_CachedDataset):
    """Videos in the MS-TCN layout under ``root``.

    root/mapping.txt ("id name" lines), root/groundTruth/<video>.txt (one class NAME per frame),
    root/features/<video>.npy, and a split file (``split_file`` as given, or root/splits/<split_file>) listing
    ``<video>.txt`` per line.
    feature_layout: "CTVM" — features are raw skeletons (C, T, V, M), turned into model input by
    ``features_from_ctvm`` (PKU: (3,T,25,2) → (12,25,T); LARA (6,T,19,1); TCG (3,T,17,1); MCFS (≥2,T,25,1));
    "CVT" — features are already the model input (C_in, V, T).
    The boundary target is computed from the labels. rate: temporal downsampling (default per dataset).
    """

    def __init__(self, root, split_file, dataset: str, feature_layout: str = "CTVM", rate: int | None = None,
                 cache: bool = False):
        super().__init__(cache)
        skeleton_layout(dataset)
        if feature_layout not in ("CTVM", "CVT"):
            raise ValueError(f"feature_layout: expected 'CTVM' or 'CVT', got {feature_layout!r}")
        self.root = os.fspath(root)
        self.dataset = dataset
        self.feature_layout = feature_layout
        self.rate = temporal_rate(dataset) if rate is None else int(rate)
        split_file = os.fspath(split_file)
        if not os.path.isfile(split_file) and os.path.isfile(os.path.join(self.root, "splits", split_file)):
            split_file = os.path.join(self.root, "splits", split_file)
        self.split_file = split_file
        self.videos = read_bundle(split_file)
        mapping = os.path.join(self.root, "mapping.txt")
        self.classes = read_mapping(mapping)
        check_num_classes(len(self.classes), mapping)
        self.class_to_id = {n: i for i, n in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def names(self) -> list[str]:
        return list(self.videos)

    def boundary_source(self, index: int) -> str:
        """Path of video ``index``'s ``groundTruth`` file (its boundary target is derived from the labels)."""
        return os.path.join(self.root, "groundTruth", self.videos[index] + ".txt")

    def full_rate_boundary(self, index: int) -> np.ndarray:
        """Video ``index``'s boundary target at the full frame rate (derived from its labels; features are
        not read)."""
        return boundary_from_labels(read_ground_truth(self.boundary_source(index), self.class_to_id))

    def num_frames(self, index: int) -> int:
        """The frame count of video ``index``'s item (its ``feature``'s T, after temporal downsampling), from its
        ``groundTruth`` file alone (features are not read): the packed batches' frame budget
        (docs/model.md#packed-batches)."""
        gt_path = self.boundary_source(index)
        return downsampled_frames(read_ground_truth(gt_path, self.class_to_id).shape[0], gt_path, self.rate)

    def _load(self, index: int) -> dict:
        video = self.videos[index]
        feat_path = os.path.join(self.root, "features", video + ".npy")
        gt_path = self.boundary_source(index)
        arr = check_real_dtype(load_npy(feat_path), feat_path)
        if self.feature_layout == "CTVM":
            if arr.ndim != 4:
                raise ValueError(f"{feat_path}: expected a (C, T, V, M) skeleton array, got shape {arr.shape}")
            try:
                feature = features_from_ctvm(arr, self.dataset)
            except ValueError as e:
                raise ValueError(f"{feat_path}: {e}") from None
        else:
            C, V = BUILT_SHAPE[skeleton_layout(self.dataset)]
            if arr.ndim != 3 or arr.shape[:2] != (C, V):
                raise ValueError(f"{feat_path}: expected features ({C}, {V}, T), got shape {arr.shape}")
            feature = np.asarray(arr, dtype=np.float32)
        _check_features(feature, feat_path, self.rate)
        labels = read_ground_truth(gt_path, self.class_to_id)
        T = feature.shape[-1]
        if labels.shape[0] != T:
            raise ValueError(f"length mismatch: {feat_path} has {T} frames but {gt_path} has {labels.shape[0]} labels")
        return _make_item(feature, labels, boundary_from_labels(labels), video, self.rate)
