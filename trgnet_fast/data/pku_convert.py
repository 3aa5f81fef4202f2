"""Convert the raw PKU-MMD phase-1 release into the published csv layout (docs/model.md#csv-layout).

Input (raw release):

* ``skeleton_dir/<video>.txt`` — one frame per line, 150 whitespace-separated floats = 2 persons × 25 joints ×
  xyz (Kinect v2 order); video names look like ``0002-L`` (view L, M or R).
* ``label_dir/<video>.txt`` — one action per line ``class,start,end,confidence`` with classes 1..51.

Decisions (documented, **unverified** against the DeST release):

* Class ids: 0 = ``NONE`` (background: frames outside every labelled action), 1..51 = the PKU-MMD action
  classes with their own 1-based ids, 52 classes in all. Names come from ``class_names`` (a file of 51 names, one
  per line in class order, or an "id name" mapping of 51 or 52 lines); without it they are ``action_01`` …
  ``action_51``.
* Frame ranges: ``start``/``end`` are inclusive frame numbers; ``frame_base`` (default 1) is the number of the
  first frame, so label frames ``start - frame_base .. end - frame_base`` (clipped to the video). Later lines
  overwrite earlier ones where actions overlap.
* Splits: cross-view (``PKU-view``) trains on the M and R views and tests on L. Cross-subject (``PKU-subject``)
  needs the official split file (not downloadable here): pass ``cross_subject_file``, a text file with a
  section whose heading line contains "train" followed by video ids, and one whose heading contains "test" or
  "valid", ids separated by commas and/or whitespace; an id without a view suffix (``0002``) stands for all its
  views.
* Validation: the published ``make_csv_files`` rule (:func:`~trgnet_fast.data.datasets.carve_validation`):
  the training video at 0-based position j goes to val1 instead of train1 when j % 10 == 9 (the 10th, 20th,
  … video). The published script applies it in the order of the DeST release's ``splits/train.*`` files; the
  raw release has no such list (and directory listings have no defined order), so here the training list is
  sorted by video name. Fewer than 10 training videos give an empty val1.

Output (under ``out_dir``; one copy of the data shared by both splits)::

    out_dir/PKU/features/<video>.npy          built features float32 (12, 25, T)
    out_dir/PKU/gt_arr/<video>.npy            int64 (T,)
    out_dir/PKU/gt_boundary_arr/<video>.npy   float32 (T,)
    out_dir/PKU/mapping.txt
    out_dir/csv/PKU-view/{train1,val1,test1}.csv      rows "/PKU/features/<video>.npy,..."
    out_dir/csv/PKU-subject/{train1,val1,test1}.csv   (only with cross_subject_file)

Read with ``CsvSegmentationDataset(out_dir/csv/PKU-view/train1.csv, out_dir, "PKU-view")``.
"""
from __future__ import annotations

import math
import os
import re

import numpy as np

from trgnet_fast.data.datasets import carve_validation
from trgnet_fast.data.features import build_features, check_num_frames
from trgnet_fast.data.labels import boundary_from_labels, write_mapping
from trgnet_fast.fileio import open_text

NUM_ACTIONS = 51
BACKGROUND = "NONE"
_VIEW_RE = re.compile(r"^(\d+)-([LMR])$")


def read_skeleton_txt(path: str) -> np.ndarray:
    """Raw PKU-MMD skeleton text file → (T, 150) float32; errors name the file and line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: skeleton file not found")
    rows = []
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                vals = [float(v) for v in line.split()]
            except ValueError:
                raise ValueError(f"{path}:{lineno}: expected 150 numbers, got a non-numeric value") from None
            if len(vals) != 150:
                raise ValueError(f"{path}:{lineno}: expected 150 numbers (2 persons × 25 joints × xyz), "
                                 f"got {len(vals)}")
            if not all(math.isfinite(v) for v in vals):  # float() reads "nan" and "inf"
                raise ValueError(f"{path}:{lineno}: expected finite coordinates, got "
                                 f"{[v for v in vals if not math.isfinite(v)][:3]}")
            rows.append(vals)
    check_num_frames(len(rows), path)
    return np.asarray(rows, dtype=np.float32)


def read_label_txt(path: str, num_frames: int, frame_base: int = 1) -> np.ndarray:
    """Raw PKU-MMD label file (``class,start,end,confidence`` lines) → (num_frames,) int64, 0 = NONE."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: label file not found")
    labels = np.zeros(num_frames, dtype=np.int64)
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = [p.strip() for p in line.replace(" ", "").split(",") if p.strip()]
            if len(parts) < 3:
                raise ValueError(f"{path}:{lineno}: expected 'class,start,end,confidence', got {line.strip()!r}")
            try:
                cls, start, end = int(parts[0]), int(parts[1]), int(parts[2])
            except ValueError:
                raise ValueError(f"{path}:{lineno}: expected integers class,start,end, got {line.strip()!r}") from None
            if not 1 <= cls <= NUM_ACTIONS:
                raise ValueError(f"{path}:{lineno}: expected class 1..{NUM_ACTIONS}, got {cls}")
            if end < start:
                raise ValueError(f"{path}:{lineno}: end frame {end} before start frame {start}")
            # a segment may run past the video's last frame (clipped); one that starts before the first frame or
            # after the last is a wrong frame base or a label file of another video
            if start < frame_base or start - frame_base >= num_frames:
                raise ValueError(f"{path}:{lineno}: segment {start}..{end} starts outside the video's frames "
                                 f"{frame_base}..{num_frames - 1 + frame_base} (frame base {frame_base})")
            labels[start - frame_base:min(end - frame_base, num_frames - 1) + 1] = cls
    return labels


def _class_names(class_names: str | None) -> list[str]:
    if class_names is None:
        return [BACKGROUND] + [f"action_{i:02d}" for i in range(1, NUM_ACTIONS + 1)]
    with open_text(class_names) as f:
        lines = [ln.strip() for ln in f if ln.strip()]
    if all(re.match(r"^\d+\s+\S", ln) for ln in lines):
        lines = [ln.split(maxsplit=1)[1].strip() for ln in lines]
    if len(lines) == NUM_ACTIONS:
        lines = [BACKGROUND] + lines
    if len(lines) != NUM_ACTIONS + 1:
        raise ValueError(f"{class_names}: expected {NUM_ACTIONS} class names (or a {NUM_ACTIONS + 1}-line mapping), "
                         f"got {len(lines)} lines")
    return [ln.replace(" ", "_") for ln in lines]


def read_cross_subject(path: str) -> tuple[set[str], set[str]]:
    """(train ids, test ids) from a cross-subject split file (format in the module docstring)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: cross-subject split file not found")
    sections: dict[str, set[str]] = {"train": set(), "test": set()}
    current = None
    with open_text(path) as f:
        for line in f:
            low = line.lower()
            if "train" in low:
                current, line = "train", line.split(":", 1)[1] if ":" in line else ""
            elif "test" in low or "valid" in low:
                current, line = "test", line.split(":", 1)[1] if ":" in line else ""
            ids = [t for t in re.split(r"[\s,]+", line) if t]
            if ids and current is None:
                raise ValueError(f"{path}: video ids before a 'train' or 'test' heading")
            if current:
                sections[current].update(ids)
    if not sections["train"] or not sections["test"]:
        raise ValueError(f"{path}: expected non-empty 'train' and 'test' sections")
    return sections["train"], sections["test"]


def _in(video: str, ids: set[str]) -> bool:
    return video in ids or video.split("-")[0] in ids


def _write_csv(path: str, videos: list[str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("feature,label,boundary\n")
        for v in videos:
            f.write(f"/PKU/features/{v}.npy,/PKU/gt_arr/{v}.npy,/PKU/gt_boundary_arr/{v}.npy\n")


def _split_csvs(csv_dir: str, train: list[str], test: list[str]) -> dict:
    train = sorted(train)
    keep, held = carve_validation(len(train), 10)
    paths = {}
    for name, vids in (("train1", [train[j] for j in keep]), ("val1", [train[j] for j in held]),
                       ("test1", sorted(test))):
        paths[name] = os.path.join(csv_dir, f"{name}.csv")
        _write_csv(paths[name], vids)
    return paths


def convert_pku_mmd(skeleton_dir: str, label_dir: str, out_dir: str, cross_subject_file: str | None = None,
                    class_names: str | None = None, frame_base: int = 1) -> dict:
    """Convert the raw PKU-MMD phase-1 release (see the module docstring). Videos are the ``*.txt`` files of
    ``skeleton_dir`` with a label file of the same name. Returns dict(videos, mapping, csv: {split: {name: path}})."""
    if frame_base < 0:
        raise ValueError(f"frame_base: expected the number of the first frame in the label files (0 or 1), got "
                         f"{frame_base}")
    videos = sorted(os.path.splitext(n)[0] for n in os.listdir(skeleton_dir) if n.endswith(".txt"))
    if not videos:
        raise ValueError(f"{skeleton_dir}: no skeleton .txt files found")
    data = os.path.join(out_dir, "PKU")
    for sub in ("features", "gt_arr", "gt_boundary_arr"):
        os.makedirs(os.path.join(data, sub), exist_ok=True)
    mapping = os.path.join(data, "mapping.txt")
    write_mapping(mapping, _class_names(class_names))
    for v in videos:
        skel_path = os.path.join(skeleton_dir, v + ".txt")
        raw = read_skeleton_txt(skel_path)
        labels = read_label_txt(os.path.join(label_dir, v + ".txt"), raw.shape[0], frame_base)
        np.save(os.path.join(data, "features", v + ".npy"), build_features(raw, "PKU-view", skel_path))
        np.save(os.path.join(data, "gt_arr", v + ".npy"), labels)
        np.save(os.path.join(data, "gt_boundary_arr", v + ".npy"), boundary_from_labels(labels))
    result = {"videos": videos, "mapping": mapping, "csv": {}}
    views = {v: _VIEW_RE.match(v) for v in videos}
    bad = [v for v, m in views.items() if m is None]
    if bad:
        raise ValueError(f"{skeleton_dir}: cannot read the view of {bad[:5]} (expected names like 0002-L)")
    result["csv"]["PKU-view"] = _split_csvs(
        os.path.join(out_dir, "csv", "PKU-view"),
        [v for v in videos if views[v].group(2) in "MR"], [v for v in videos if views[v].group(2) == "L"])
    if cross_subject_file is not None:
        train_ids, test_ids = read_cross_subject(cross_subject_file)
        result["csv"]["PKU-subject"] = _split_csvs(
            os.path.join(out_dir, "csv", "PKU-subject"),
            [v for v in videos if _in(v, train_ids)], [v for v in videos if _in(v, test_ids)])
    return result
