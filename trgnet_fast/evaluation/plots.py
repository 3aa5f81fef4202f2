"""Qualitative outputs: segmentation barcodes, per-class bar charts, MS-TCN prediction files.

matplotlib is imported lazily with the non-interactive Agg backend (never a GUI backend), so importing
this module is cheap and works headless.
"""
from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch

from trgnet_fast.data.labels import IGNORE_INDEX
from trgnet_fast.fileio import prepared_path

__all__ = ["class_colors", "plot_barcode", "plot_per_class", "write_predictions"]

PathLike = Union[str, os.PathLike]


def _plt():
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib (pip install matplotlib)") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _labels(x, name: str) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D label sequence (T,), got shape {tuple(a.shape)}")
    return a.astype(np.int64)


def class_colors(num_classes: int) -> np.ndarray:
    """Fixed RGBA colour per class index, ``(K, 4)``; the same class always gets the same colour.

    Up to 10 classes use ``tab10``, up to 60 ``tab20``/``tab20b``/``tab20c`` (dark shades first);
    larger K (e.g. MCFS-130) samples ``gist_ncar`` with a golden-ratio stride.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    _plt()  # clear error if matplotlib is missing; forces the Agg backend
    import matplotlib

    if num_classes <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return np.asarray([cmap(i) for i in range(num_classes)])
    # dark shades first, then light ones, so that neighbouring indices differ in hue
    order = list(range(0, 20, 2)) + list(range(1, 20, 2))
    base = [matplotlib.colormaps[n](i) for n in ("tab20", "tab20b", "tab20c") for i in order]
    if num_classes <= len(base):
        return np.asarray(base[:num_classes])
    cmap = matplotlib.colormaps["gist_ncar"]
    # golden-ratio stride over the colormap: distinct, deterministic
    pos = (np.arange(num_classes) * 0.6180339887) % 1.0
    return np.asarray([cmap(0.05 + 0.9 * p) for p in pos])


def plot_barcode(
    path: PathLike,
    gt,
    preds: Union[Sequence, Mapping[str, Sequence], np.ndarray, torch.Tensor],
    num_classes: Optional[int] = None,
    class_names: Optional[Sequence[str]] = None,
    boundary=None,
    title: Optional[str] = None,
    width_px: int = 1200,
    row_height_px: int = 60,
    dpi: int = 100,
    ignore_index: Optional[int] = IGNORE_INDEX,
) -> str:
    """Write a PNG of GT vs prediction(s) as colour barcodes (one row each, time on x).

    Args:
        path: output ``.png`` path (folders created).
        gt: int ``(T,)`` ground truth.
        preds: one ``(T,)`` prediction, a list of them, or ``{row_name: (T,)}``.
        num_classes: K for the colour table (default: ``len(class_names)`` or max label + 1).
        class_names: optional names for the legend (legend lists only classes present).
        boundary: optional ``(T,)`` (or ``(1, T)``) boundary probability curve drawn in an extra row.
        title: figure title (e.g. the video name).
        width_px, row_height_px, dpi: the image is exactly ``width_px`` wide and
            ``row_height_px · (rows + 1)`` high (one extra row for legend/margins).
        ignore_index: GT frames with this label are drawn white.
    Returns:
        the path written.
    """
    g = _labels(gt, "gt")
    if isinstance(preds, Mapping):
        rows = [(str(k), _labels(v, f"preds[{k!r}]")) for k, v in preds.items()]
    elif isinstance(preds, (np.ndarray, torch.Tensor)) and np.ndim(preds) == 1:
        rows = [("prediction", _labels(preds, "preds"))]
    else:
        rows = [(f"prediction {i}" if len(preds) > 1 else "prediction", _labels(p, f"preds[{i}]"))
                for i, p in enumerate(preds)]
    for nm, p in rows:
        if p.shape[0] != g.shape[0]:
            raise ValueError(f"preds ({nm}) has length {p.shape[0]} but gt has length {g.shape[0]}")
    rows = [("ground truth", g)] + rows
    bcurve = None
    if boundary is not None:
        b = boundary.detach().cpu().numpy() if isinstance(boundary, torch.Tensor) else np.asarray(boundary)
        bcurve = b.reshape(-1).astype(np.float64)
        if bcurve.shape[0] != g.shape[0]:
            raise ValueError(f"boundary has length {bcurve.shape[0]} but gt has length {g.shape[0]}")
    valid_all = np.concatenate([r[1][r[1] != ignore_index] if ignore_index is not None else r[1] for r in rows])
    if num_classes is None:
        num_classes = len(class_names) if class_names is not None else int(valid_all.max(initial=0)) + 1
    if valid_all.size and (valid_all.min() < 0 or valid_all.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}) (got min {valid_all.min()}, max {valid_all.max()})")
    colors = class_colors(num_classes)

    plt = _plt()
    n_rows = len(rows) + (1 if bcurve is not None else 0)
    fig_h = row_height_px * (n_rows + 1) / dpi
    fig = plt.figure(figsize=(width_px / dpi, fig_h), dpi=dpi)
    try:
        left, right = 0.14, 0.80
        gap = 1.0 / (n_rows + 1)
        t = g.shape[0]
        for r, (nm, lab) in enumerate(rows):
            ax = fig.add_axes([left, 1 - gap * (r + 1.5) + 0.1 * gap, right - left, 0.8 * gap])
            rgba = colors[np.clip(lab, 0, num_classes - 1)].copy()
            if ignore_index is not None:
                rgba[lab == ignore_index] = (1, 1, 1, 1)
            ax.imshow(rgba[None], aspect="auto", interpolation="nearest", extent=(0, t, 0, 1))
            ax.set_yticks([])
            if r < len(rows) - 1 or bcurve is not None:
                ax.set_xticks([])
            else:
                ax.tick_params(labelsize=7)
            ax.set_ylabel(nm, rotation=0, ha="right", va="center", fontsize=8)
        if bcurve is not None:
            ax = fig.add_axes([left, 1 - gap * (n_rows + 0.5) + 0.1 * gap, right - left, 0.8 * gap])
            ax.plot(np.arange(t) + 0.5, bcurve, lw=0.8, color="k")
            ax.set_xlim(0, t)
            ax.set_ylim(min(0.0, float(bcurve.min())), max(1.0, float(bcurve.max())))
            ax.set_yticks([])
            ax.set_ylabel("boundary", rotation=0, ha="right", va="center", fontsize=8)
            ax.tick_params(labelsize=7)
        present = np.unique(valid_all)
        if present.size:
            from matplotlib.patches import Patch

            handles = [
                Patch(color=colors[c], label=(class_names[c] if class_names is not None else str(c)))
                for c in present
            ]
            ncol = max(1, int(np.ceil(len(handles) / max(1, int(fig_h * dpi / 11)))))
            fig.legend(handles=handles, loc="center left", bbox_to_anchor=(right + 0.01, 0.5),
                       fontsize=6, frameon=False, ncol=min(ncol, 4), handlelength=1.0)
        if title:
            fig.suptitle(title, fontsize=9, y=1 - 0.1 * gap, va="top")
        path = prepared_path(path)
        fig.savefig(path, dpi=dpi)  # no bbox_inches='tight': keeps the exact pixel size
    finally:
        plt.close(fig)
    return path


def plot_per_class(
    path: PathLike,
    scores: Mapping[str, Sequence[float]],
    class_names: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    width_px: int = 1200,
    height_px: int = 400,
    dpi: int = 100,
) -> str:
    """Grouped bar chart of per-class scores, e.g. ``SegmentationMetrics.per_class()`` (keys such as
    ``"f1"``, ``"recall"``; non-score keys like ``"support"`` are skipped). Returns the path."""
    keys = [k for k in scores if k != "support"]
    if not keys:
        raise ValueError("scores must contain at least one per-class score array")
    vals = [np.asarray(scores[k], dtype=np.float64).reshape(-1) for k in keys]
    k = vals[0].shape[0]
    if any(v.shape[0] != k for v in vals):
        raise ValueError("all score arrays must have the same length (number of classes)")
    if class_names is not None and len(class_names) != k:
        raise ValueError(f"class_names has {len(class_names)} entries but scores have {k} classes")
    plt = _plt()
    fig = plt.figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    try:
        ax = fig.add_axes([0.06, 0.25, 0.92, 0.65])
        w = 0.8 / len(keys)
        x = np.arange(k)
        for i, (nm, v) in enumerate(zip(keys, vals)):
            ax.bar(x + (i - (len(keys) - 1) / 2) * w, v, width=w, label=nm)
        ax.set_xticks(x)
        ax.set_xticklabels(class_names if class_names is not None else [str(i) for i in x],
                           rotation=90, fontsize=max(3, min(8, int(600 / max(k, 1)))))
        ax.set_xlim(-0.5, k - 0.5)
        ax.set_ylabel("%")
        ax.legend(fontsize=7)
        if title:
            ax.set_title(title, fontsize=9)
        path = prepared_path(path)
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)
    return path


def write_predictions(path: PathLike, labels, class_names: Sequence[str]) -> str:
    """Write frame-wise predictions in the MS-TCN text format: one class **name** per line (T lines).

    Args:
        path: output text file (folders created).
        labels: int ``(T,)`` class indices.
        class_names: K names; index ``i`` ↔ ``class_names[i]``.
    """
    lab = _labels(labels, "labels")
    names = list(class_names)
    if lab.size and (lab.min() < 0 or lab.max() >= len(names)):
        raise ValueError(f"labels must lie in [0, {len(names)}) to index class_names, got min {lab.min()}, max {lab.max()}")
    path = prepared_path(path)
    with open(path, "w") as f:
        f.write("".join(f"{names[i]}\n" for i in lab))
    return path
