"""The TRGNet workload the benchmarks time: the published model, a padded random batch and a training loss.

Shared by ``benchmarks/run.py`` (model cells), ``benchmarks/test_micro.py`` and ``benchmarks/bench_losses.py``,
so all of them time exactly the same model and inputs. The fused ops' benchmark sizes and FLOP/byte models
are in the op registry (``trgnet_fast/ops/registry.py``: ``BENCH_VARIANTS``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def random_lengths(n: int, t: int, gen: torch.Generator, device) -> torch.Tensor:
    """Sequence lengths of a padded batch: the first sample fills T, the others U[T/2, T]."""
    lengths = torch.randint(max(1, t // 2), t + 1, (n,), generator=gen, device=device)
    lengths[0] = t
    return lengths


def length_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """(N, T) bool: True on the first lengths[n] frames."""
    return torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]


DATASET = "PKU-subject"


def model_config(dataset: str = DATASET) -> dict:
    from trgnet_fast.model import default_config
    return default_config(dataset)


def build_model(device, backend: str | None, seed: int, dataset: str = DATASET):
    """TRGNet with the published config for ``dataset`` and deterministic initial weights."""
    from trgnet_fast import TRGNet
    torch.manual_seed(seed)
    model = TRGNet(**model_config(dataset), backend=backend)
    return model.to(device)


def make_model_inputs(n: int, t: int, device, seed: int, dataset: str = DATASET, *, padded: bool = True):
    """Fresh random inputs of one batch.

    Returns dict(x (N,C,V,T), mask (N,1,T) bool, joint_graph (V,V), labels (N,T) long with 255 on padding,
    boundary (N,1,T) float 0/1 at label changes). ``padded``: lengths U[T/2, T] (first sample full);
    else every sample is T long.
    """
    from trgnet_fast.skeletons import num_joints
    cfg = model_config(dataset)
    c, k = cfg["in_channel"], cfg["n_classes"]
    v = num_joints(dataset)
    gen = torch.Generator().manual_seed(seed)  # drawn on CPU so every device gets the same numbers
    x = torch.randn((n, c, v, t), generator=gen)
    lengths = random_lengths(n, t, gen, "cpu") if padded else torch.full((n,), t)
    valid = length_mask(lengths, t)
    # text-joint-graph-like: symmetric, values in [0, 1), unit diagonal
    j = torch.rand((v, v), generator=gen)
    joint_graph = (j + j.T) / 2
    joint_graph.fill_diagonal_(1.0)
    # piecewise-constant labels (~1 segment per 150 frames, like PKU's ~35 segments per 5000 frames)
    labels = torch.full((n, t), 255, dtype=torch.long)
    for i in range(n):
        length = int(lengths[i])
        n_seg = max(1, length // 150)
        cuts = torch.randperm(max(1, length - 1), generator=gen)[: n_seg - 1] + 1
        bounds = torch.cat([torch.tensor([0]), cuts.sort().values, torch.tensor([length])])
        classes = torch.randint(0, k, (n_seg,), generator=gen)
        labels[i, :length] = torch.repeat_interleave(classes, bounds.diff())
    change = torch.zeros((n, t))
    change[:, 1:] = ((labels[:, 1:] != labels[:, :-1]) & valid[:, 1:]).float()
    out = {"x": x, "mask": valid[:, None, :], "joint_graph": joint_graph, "labels": labels,
           "boundary": change[:, None, :]}
    return {name: val.to(device) for name, val in out.items()}


def train_loss(outputs, labels, boundary, mask, feature_weight: float = 1e-3):
    """Training-step loss that touches every output of the train-mode forward.

    CE on both logit stages (ignore 255) + 0.1 x mean masked BCE over the boundary stages +
    ``feature_weight`` x logit_scale x mean of the 768-d feature heads. (The published ARIS/GS-TMSE
    losses are benchmarked separately; this is the model's share of a step.)
    """
    logits, bounds, feats, logit_scale = outputs
    loss = sum(F.cross_entropy(z, labels, ignore_index=255) for z in logits) / len(logits)
    w = mask.to(bounds[0].dtype)
    bce = sum(F.binary_cross_entropy_with_logits(b, boundary, weight=w, reduction="sum") for b in bounds)
    loss = loss + 0.1 * bce / (len(bounds) * w.sum())
    loss = loss + feature_weight * logit_scale * sum(e.mean() for e in feats)
    return loss
