"""Plots of the text priors (TJG/TAG heatmaps) and of a trained model's adaptive graphs.

Adaptive-graph extraction does not modify the model: a forward pre-hook on ``model.SP.CTRGCN`` captures the
CTRGC input X_m (N, C, T, V), the joint graph J and the scalars α, β, and the graphs are recomputed from the
module's own conv1/conv2/conv4 (docs/model.md#ctrgc):

    a = conv1(X_m), b = conv2(X_m)                      (N, 8, T, V)
    G_f[n,t,u,v] = β · tanh(mean_r a[n,r,t,u] − mean_r b[n,r,t,v]) + J[u,v]          (N, T, V, V)
    G_c[n,c,u,v] = α · conv4(tanh(mean_t a[n,:,t,u] − mean_t b[n,:,t,v]))[c] + J[u,v]  (N, C, V, V)

and G_c is reported averaged over the C channels, (N, V, V).
"""
from __future__ import annotations

import os

import numpy as np
import torch


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _short(name: str, n: int = 28) -> str:
    name = str(name)
    return name if len(name) <= n else name[: n - 1] + "…"


def _heatmap(ax, graph, names, title, vmin=0.0, vmax=1.0, fontsize=None):
    g = np.asarray(graph, dtype=np.float64)
    im = ax.imshow(g, cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
    k = g.shape[0]
    if names is not None and k <= 140:
        fs = fontsize or max(2.5, min(8.0, 300.0 / max(k, 1)))
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xticklabels([_short(n) for n in names], rotation=90, fontsize=fs)
        ax.set_yticklabels([_short(n) for n in names], fontsize=fs)
    ax.set_title(title, fontsize=9)
    return im


def plot_graph(graph, names, path, title="", vmin=0.0, vmax=1.0) -> str:
    """Heatmap of a square graph with ``names`` on both axes; writes ``path`` (PNG) and returns it."""
    plt = _plt()
    k = np.asarray(graph).shape[0]
    size = min(24.0, max(6.0, 0.18 * k + 3))
    fig, ax = plt.subplots(figsize=(size, size))
    im = _heatmap(ax, graph, names, title, vmin, vmax)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@torch.no_grad()
def ctrgc_graphs(ctrgc, x_m: torch.Tensor, joint_graph: torch.Tensor, alpha, beta, frames=None) -> dict:
    """Recompute the CTRGC graphs from its input. frames: None (all) or frame indices.

    Returns frame_graph (N, F, V, V), channel_graph (N, V, V) (mean over channels) and channel_graph_full
    (N, C, V, V)."""
    a, b = ctrgc.conv1(x_m), ctrgc.conv2(x_m)
    p, q = a.mean(dim=1), b.mean(dim=1)  # (N, T, V)
    if frames is not None:
        idx = torch.as_tensor(list(frames), dtype=torch.long, device=p.device)
        p, q = p[:, idx], q[:, idx]
    j = joint_graph.to(x_m.dtype)
    frame_graph = beta * torch.tanh(p[..., :, None] - q[..., None, :]) + j
    relation = torch.tanh(a.mean(dim=2)[..., :, None] - b.mean(dim=2)[..., None, :])  # (N, 8, V, V)
    channel_full = alpha * ctrgc.conv4(relation) + j
    return {"frame_graph": frame_graph, "channel_graph": channel_full.mean(dim=1), "channel_graph_full": channel_full}


@torch.no_grad()
def extract_adaptive_graphs(model, x: torch.Tensor, mask: torch.Tensor, joint_graph: torch.Tensor,
                            frames=None) -> dict:
    """Run ``model`` (eval mode, restored afterwards) on one batch and return the adaptive graphs of its CTRGC:
    frame_graph (N, F, V, V) at ``frames`` (default all T), channel_graph (N, V, V), channel_graph_full,
    alpha, beta (floats), joint_graph (V, V) and the model's logits (N, K, T)."""
    captured = {}

    def hook(module, args):
        captured["args"] = args

    ctrgc = model.SP.CTRGCN
    handle = ctrgc.register_forward_pre_hook(hook)
    was_training = model.training
    model.eval()
    try:
        out = model(x, mask, joint_graph)
    finally:
        handle.remove()
        model.train(was_training)
    if "args" not in captured:
        raise RuntimeError("model.SP.CTRGCN was not called during the forward pass; cannot extract graphs")
    x_m, j, alpha, beta = captured["args"][:4]
    res = ctrgc_graphs(ctrgc, x_m, j, alpha, beta, frames)
    res.update(alpha=float(alpha.reshape(-1)[0]), beta=float(beta.reshape(-1)[0]), joint_graph=j,
               logits=out[0] if isinstance(out, (tuple, list)) else out)
    return res


def segments_of(labels) -> list[tuple[int, int, int]]:
    """[(label, start, end_exclusive), ...] of a 1-D label sequence."""
    lab = np.asarray(labels).reshape(-1)
    if lab.size == 0:
        return []
    change = np.flatnonzero(np.diff(lab)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [lab.size]])
    return [(int(lab[s]), int(s), int(e)) for s, e in zip(starts, ends)]


def plot_segment_graphs(frame_graph, channel_graph, labels, class_names, joint_names, out_dir, prefix="video",
                        max_segments: int = 12, joint_graph=None, residual: bool = False) -> list[str]:
    """Per action segment of ``labels``: the frame graph G_f averaged over the segment and at its middle frame;
    plus G_c (channel mean) and, if given, J. frame_graph (T, V, V), channel_graph (V, V). ``residual``: plot
    G_f − J (the input-dependent part β·tanh(p_u − q_v); needs joint_graph). Returns the PNGs."""
    plt = _plt()
    fg = torch.as_tensor(frame_graph).float().cpu().numpy()
    label_f = "G_f"
    if residual:
        if joint_graph is None:
            raise ValueError("residual=True needs joint_graph")
        fg = fg - torch.as_tensor(joint_graph).float().cpu().numpy()[None]
        label_f = "G_f−J"
    segs = [s for s in segments_of(labels) if s[2] > s[1]][:max_segments]
    os.makedirs(out_dir, exist_ok=True)
    files = []
    if segs:
        n = len(segs)
        cols = min(n, 4)
        rows = 2 * ((n + cols - 1) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.0 * rows), squeeze=False)
        lo, hi = float(fg.min()), float(fg.max())
        if hi <= lo:
            hi = lo + 1e-6
        for ax in axes.ravel():
            ax.axis("off")
        im = None
        for i, (lab, s, e) in enumerate(segs):
            r, c = 2 * (i // cols), i % cols
            name = class_names[lab] if class_names is not None and 0 <= lab < len(class_names) else str(lab)
            mid = (s + e - 1) // 2
            for rr, (g, what) in enumerate(((fg[s:e].mean(0), f"mean t∈[{s},{e})"), (fg[mid], f"t={mid}"))):
                ax = axes[r + rr, c]
                ax.axis("on")
                im = _heatmap(ax, g, joint_names if len(joint_names or []) <= 30 else None,
                              f"{_short(name, 24)}: {label_f} {what}", lo, hi, fontsize=4)
        fig.suptitle(f"{prefix}: frame-level adaptive graph {label_f} per segment", fontsize=10)
        fig.tight_layout(rect=(0, 0, 0.93, 1))
        fig.colorbar(im, cax=fig.add_axes((0.945, 0.15, 0.012, 0.7)))
        p = os.path.join(out_dir, f"{prefix}_frame_graphs.png")
        fig.savefig(p, dpi=100)
        plt.close(fig)
        files.append(p)
    cg = torch.as_tensor(channel_graph).float().cpu().numpy()
    files.append(plot_graph(cg, joint_names, os.path.join(out_dir, f"{prefix}_channel_graph.png"),
                            f"{prefix}: channel-level graph G_c (mean over channels)", float(cg.min()),
                            max(float(cg.max()), float(cg.min()) + 1e-6)))
    if joint_graph is not None:
        files.append(plot_graph(torch.as_tensor(joint_graph).float().cpu().numpy(), joint_names,
                                os.path.join(out_dir, f"{prefix}_joint_graph.png"), f"{prefix}: joint graph J"))
    return files
