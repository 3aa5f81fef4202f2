"""The 13-scale k-hop adjacency of TRG-Net's spatial block (docs/model.md#skeleton-graphs), built from the
bones of the skeleton layouts in ``trgnet_fast/skeletons.py``."""
from __future__ import annotations

import torch

from trgnet_fast.skeletons import LAYOUT_EDGES, LAYOUT_JOINTS, skeleton_layout

NUM_SCALES = 13


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
