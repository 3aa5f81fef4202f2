"""Text-derived graphs from embeddings (docs/model.md#tjg-and-tag): Graph = 1 − D / max D, D_ij = ‖E_i − E_j‖₂."""
from __future__ import annotations

import numpy as np
import torch


def pairwise_l2(embeddings) -> torch.Tensor:
    """(K, K) float64 Euclidean distances, computed row by row from differences (no ‖a‖²+‖b‖²−2ab
    cancellation), exactly symmetric with a zero diagonal."""
    e = torch.as_tensor(np.asarray(embeddings), dtype=torch.float64)
    if e.ndim != 2:
        raise ValueError(f"embeddings: expected a (K, D) matrix, got shape {tuple(e.shape)}")
    d = torch.stack([torch.linalg.vector_norm(e - e[i], dim=1) for i in range(e.shape[0])]) if len(e) else \
        torch.zeros(0, 0, dtype=torch.float64)
    d = 0.5 * (d + d.T)
    d.fill_diagonal_(0.0)
    return d


def distance_graph(embeddings) -> torch.Tensor:
    """(K, K) float32 graph 1 − D/max D: symmetric, diagonal 1, values in [0, 1], 0 at the farthest pair(s).

    Identical embeddings give 1 (as in the published LARA TJG). When all embeddings coincide (or K = 1) the
    graph is all ones."""
    d = pairwise_l2(embeddings)
    dmax = d.max() if d.numel() else torch.tensor(0.0, dtype=torch.float64)
    g = torch.ones_like(d) if dmax <= 0 else 1.0 - d / dmax
    g = g.clamp(0.0, 1.0)
    g.fill_diagonal_(1.0)
    return g.float()


def graph_stats(graph) -> dict:
    """Off-diagonal min / mean / max of a square graph (as quoted in docs/model.md#tjg-and-tag)."""
    g = torch.as_tensor(graph, dtype=torch.float64)
    k = g.shape[0]
    if k < 2:
        return {"min": 1.0, "mean": 1.0, "max": 1.0}
    off = g[~torch.eye(k, dtype=torch.bool)]
    return {"min": float(off.min()), "mean": float(off.mean()), "max": float(off.max())}
