"""Skeleton layouts: which skeleton each dataset uses, its joint count and its bones
(docs/model.md#skeleton-graphs).

A dataset name selects a skeleton layout:

    dataset                        layout     joints V
    "PKU-subject", "PKU-view"      PKU        25 (Kinect v2)
    "LARA"                         LARA       19
    "MCFS-130", "MCFS-22"          BODY_25    25 (OpenPose)
    "TCG-15"                       TCG-15     17

Plain tables and lookups with no dependencies, so that data, text and model code can all use them; the
graph-convolution adjacency built from these bones is in ``trgnet_fast/model/graph.py``.
"""
from __future__ import annotations

DATASET_LAYOUTS = {
    "PKU-subject": "PKU",
    "PKU-view": "PKU",
    "LARA": "LARA",
    "MCFS-130": "BODY_25",
    "MCFS-22": "BODY_25",
    "TCG-15": "TCG-15",
}
DATASETS = tuple(DATASET_LAYOUTS)

LAYOUT_JOINTS = {"PKU": 25, "LARA": 19, "BODY_25": 25, "TCG-15": 17}

# The BODY_25 bones are published with 1-based joint numbers.
_BODY_25_EDGES_ONE_BASED = (
    (2, 9), (1, 2), (16, 1), (18, 16), (17, 1), (19, 17), (6, 2), (7, 6), (8, 7), (3, 2), (4, 3), (5, 4),
    (10, 9), (11, 10), (12, 11), (25, 12), (23, 12), (24, 23), (13, 9), (14, 13), (15, 14), (22, 15),
    (20, 15), (21, 20),
)

# Undirected bones, 0-based joint indices.
LAYOUT_EDGES = {
    "PKU": (
        (12, 0), (13, 12), (14, 13), (15, 14), (16, 0), (17, 16), (18, 17), (19, 18), (1, 0), (20, 1),
        (2, 20), (3, 2), (4, 20), (5, 4), (6, 5), (7, 6), (21, 7), (22, 6), (8, 20), (9, 8), (10, 9),
        (11, 10), (24, 10), (23, 11),
    ),
    "LARA": (
        (1, 0), (2, 1), (3, 2), (4, 3), (5, 0), (6, 5), (7, 6), (8, 7), (9, 0), (10, 9), (11, 9), (12, 10),
        (13, 12), (14, 13), (15, 9), (16, 15), (17, 16), (18, 17),
    ),
    "BODY_25": tuple((i - 1, j - 1) for i, j in _BODY_25_EDGES_ONE_BASED),
    "TCG-15": (
        (1, 9), (9, 0), (0, 3), (3, 5), (5, 6), (0, 10), (10, 12), (12, 13), (0, 16), (16, 2), (2, 8),
        (8, 7), (7, 4), (2, 15), (15, 14), (14, 11),
    ),
}


def skeleton_layout(dataset: str) -> str:
    """Layout name ("PKU" | "LARA" | "BODY_25" | "TCG-15") of a dataset name."""
    if dataset not in DATASET_LAYOUTS:
        raise ValueError(f"dataset: expected one of {DATASETS}, got {dataset!r}")
    return DATASET_LAYOUTS[dataset]


def num_joints(dataset: str) -> int:
    """Number of skeleton joints V the model uses for ``dataset``."""
    return LAYOUT_JOINTS[skeleton_layout(dataset)]
