"""Skeleton layouts and the 13-scale k-hop adjacency of TRG-Net's spatial block (docs/model.md#skeleton-graphs).

A dataset name selects a skeleton layout:

    dataset                        layout     joints V
    "PKU-subject", "PKU-view"      PKU        25 (Kinect v2)
    "LARA"                         LARA       19
    "MCFS-130", "MCFS-22"          BODY_25    25 (OpenPose)
    "TCG-15"                       TCG-15     17
"""
from __future__ import annotations

import torch

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

NUM_SCALES = 13


def skeleton_layout(dataset: str) -> str:
    """Layout name ("PKU" | "LARA" | "BODY_25" | "TCG-15") of a dataset name."""
    if dataset not in DATASET_LAYOUTS:
        raise ValueError(f"dataset: expected one of {DATASETS}, got {dataset!r}")
    return DATASET_LAYOUTS[dataset]


def num_joints(dataset: str) -> int:
    """Number of skeleton joints V the model uses for ``dataset``."""
    return LAYOUT_JOINTS[skeleton_layout(dataset)]


def binary_adjacency(dataset: str) -> torch.Tensor:
    """Symmetric 0/1 bone adjacency without self loops: (V, V) float32."""
    layout = skeleton_layout(dataset)
    adjacency = torch.zeros(LAYOUT_JOINTS[layout], LAYOUT_JOINTS[layout], dtype=torch.float32)
    for i, j in LAYOUT_EDGES[layout]:
        adjacency[i, j] = adjacency[j, i] = 1.0
    return adjacency


def k_hop_adjacency(adjacency: torch.Tensor, k: int) -> torch.Tensor:
    """A_k = I for k = 0, else (joints exactly k hops apart) + I.

    adjacency: (V, V) 0/1; returns (V, V) float64 0/1.
    """
    eye = torch.eye(adjacency.shape[0], dtype=torch.float64)
    if k == 0:
        return eye
    reach = adjacency.to(torch.float64) + eye
    within_k = torch.linalg.matrix_power(reach, k).clamp(max=1.0)
    within_k_minus_1 = torch.linalg.matrix_power(reach, k - 1).clamp(max=1.0)
    return within_k - within_k_minus_1 + eye


def symmetric_normalize(adjacency: torch.Tensor) -> torch.Tensor:
    """D^-1/2 A D^-1/2 with D = diag(row sums): (V, V) float64 in, (V, V) float32 out."""
    # D^-1/2 is rounded to float32 before the product, as the published graph code does, so that
    # A_powers equals the published values wherever the published float32 power is correctly rounded;
    # numpy's SIMD np.power (numpy 2.x on AVX-512) can be 1 float32 ulp off, so a few published entries
    # can differ by <= 3e-8 relative depending on the numpy build (docs/model.md#skeleton-graphs).
    inv_sqrt_degree = adjacency.sum(dim=1).pow(-0.5).float().double()
    return (inv_sqrt_degree[:, None] * adjacency * inv_sqrt_degree[None, :]).float()


def multiscale_adjacency(adjacency: torch.Tensor, num_scales: int = NUM_SCALES) -> torch.Tensor:
    """Normalised k-hop adjacencies for k = 0..num_scales-1 stacked along rows.

    adjacency: (V, V) 0/1; returns (num_scales * V, V) float32, row k * V + v = scale k, joint v.
    """
    return torch.cat([symmetric_normalize(k_hop_adjacency(adjacency, k)) for k in range(num_scales)])
