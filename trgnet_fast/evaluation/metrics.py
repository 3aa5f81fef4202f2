"""Temporal action segmentation metrics with the MS-TCN/ASRF conventions (docs/model.md#metrics).

Single-video functions work on 1-D int label sequences ``(T,)`` (numpy, torch or lists);
:class:`SegmentationMetrics` accumulates raw counts over videos (and across processes).

Conventions reproduced from the published code:

* frames whose ground truth equals ``ignore_index`` (255: the padding label, and the label of ignored
  frames inside a video) are dropped from both sequences before anything else (accuracy, confusion matrix,
  segments, Edit, F1); the remaining frames are joined, so two same-label runs either side of an ignored
  run form one segment. Boundary scores use every frame (the published meter masks padding only);
* accuracy is micro (correct frames / all frames, all videos); Edit is macro (mean over videos);
  F1@τ counts (TP/FP/FN) are summed over videos before the F1 is formed;
* segment ends: a segment's ``end`` is the **start of the next segment** (whether or not that one is
  background); the final segment of a sequence ends at ``T - 1`` by default (``f1_end="published"``: the
  published metric, from ASRF/DeST) or at ``T`` with ``f1_end="mstcn"`` (MS-TCN's current ``eval.py``).
  IoU is ``(min(end) - max(start)) / (max(end) - min(start))`` without ``+1``. With the published end a
  final segment of a single frame has ``start == end``: its IoU with a final single-frame GT segment is
  ``0/0 = nan``, which is never ``>= τ`` (and ``argmax`` picks the first nan), and with a longer final GT
  segment it is 0; with the MS-TCN end both are > 0. The two conventions differ only there;
* F1 = ``100 · 2PR / (P + R + 1e-7)`` (published epsilon; ``eps`` configurable), 0 when undefined;
* the published code excludes segments of a class literally **named** ``"background"``; here the
  background set is explicit (class indices and/or names), default: nothing excluded.
  ``background="published"`` mimics the published rule (the class named "background" if any).

Deviations where the published code would crash: no GT segments → every predicted segment is a FP
(published: ``argmax`` of an empty array); Edit with no segments on either side → 100.
"""
from __future__ import annotations

import csv
import math
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from trgnet_fast.evaluation.postprocess import boundary_peaks
from trgnet_fast.data.labels import IGNORE_INDEX
from trgnet_fast.fileio import prepared_path

__all__ = [
    "DEFAULT_IOU_THRESHOLDS",
    "F1_ENDS",
    "resolve_background",
    "frame_accuracy",
    "get_segments",
    "levenshtein",
    "edit_score",
    "segment_counts",
    "f1_from_counts",
    "f1_scores",
    "boundary_counts",
    "SegmentationMetrics",
    "average_splits",
    "write_split_average",
]

DEFAULT_IOU_THRESHOLDS: Tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
F1_EPS = 1e-7
F1_ENDS: Tuple[str, ...] = ("published", "mstcn")  # end of a sequence's final segment: T - 1 | T

BackgroundSpec = Union[None, str, int, Iterable[Union[int, str]]]


# ----------------------------------------------------------------------------------------- helpers
def _labels_1d(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D label sequence (T,), got shape {tuple(a.shape)}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.floating) and np.all(np.mod(a, 1) == 0):
            a = a.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integer class labels, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def _pair(pred, gt, ignore_index: Optional[int] = IGNORE_INDEX) -> Tuple[np.ndarray, np.ndarray]:
    p = _labels_1d(pred, "pred")
    g = _labels_1d(gt, "gt")
    if p.shape[0] != g.shape[0]:
        raise ValueError(f"pred and gt must have the same length, got pred T={p.shape[0]} and gt T={g.shape[0]}")
    if ignore_index is not None:
        keep = g != ignore_index
        p, g = p[keep], g[keep]
    return p, g


def _check_f1_end(f1_end) -> str:
    if f1_end not in F1_ENDS:
        raise ValueError(f"f1_end: expected one of {F1_ENDS}, got {f1_end!r}")
    return f1_end


def resolve_background(background: BackgroundSpec, class_names: Optional[Sequence[str]] = None) -> frozenset:
    """Background specification → frozenset of class indices.

    Args:
        background: ``None`` (nothing excluded), ``"published"`` (the class literally named
            ``"background"`` if ``class_names`` has one — the published rule), or an int / class name /
            iterable of ints and names. Names must appear in ``class_names``.
        class_names: list of K class names (index = class id), needed to resolve names.
    """
    if background is None:
        return frozenset()
    if isinstance(background, str) and background == "published":
        names = list(class_names) if class_names is not None else []
        return frozenset(i for i, n in enumerate(names) if n == "background")
    if isinstance(background, (str, int, np.integer)):
        background = [background]
    out = set()
    for item in background:
        if isinstance(item, str):
            if class_names is None or item not in list(class_names):
                raise ValueError(f"background class name {item!r} is not in class_names")
            out.add(list(class_names).index(item))
        elif isinstance(item, (int, np.integer)):
            out.add(int(item))
        else:
            raise ValueError(f"background entries must be class indices or names, got {item!r}")
    return frozenset(out)


# ----------------------------------------------------------------------------------------- frame level
def frame_accuracy(pred, gt, ignore_index: Optional[int] = IGNORE_INDEX) -> float:
    """Frame accuracy in percent of one video (frames with ``gt == ignore_index`` dropped).

    Args: pred, gt: int labels ``(T,)``. Returns 0.0 for a video without valid frames.
    """
    p, g = _pair(pred, gt, ignore_index)
    return 100.0 * float((p == g).sum()) / p.shape[0] if p.shape[0] else 0.0


# ----------------------------------------------------------------------------------------- segments
def get_segments(
    labels, background: Iterable[int] = (), f1_end: str = "published"
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of identical labels, MS-TCN/ASRF index convention.

    Args:
        labels: int ``(T,)``.
        background: class indices whose runs are dropped.
        f1_end: end of the final run: ``"published"`` → ``T - 1``, ``"mstcn"`` → ``T``.
    Returns:
        ``(seg_labels, starts, ends)`` int64 arrays ``(S,)``: ``end`` = start of the next run, or the
        final end above for the last run (so ``end - start`` is the run length, except for the last run
        under ``"published"``: length minus one).
    """
    _check_f1_end(f1_end)
    a = _labels_1d(labels, "labels")
    t = a.shape[0]
    if t == 0:
        e = np.zeros(0, dtype=np.int64)
        return e, e.copy(), e.copy()
    change = np.nonzero(a[1:] != a[:-1])[0] + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    ends = np.concatenate([change, [t if f1_end == "mstcn" else t - 1]]).astype(np.int64)
    seg = a[starts]
    bg = np.asarray(sorted(background), dtype=np.int64)
    if bg.size:
        keep = ~np.isin(seg, bg)
        seg, starts, ends = seg[keep], starts[keep], ends[keep]
    return seg, starts, ends


def levenshtein(a: Sequence, b: Sequence) -> int:
    """Edit distance (unit insertion/deletion/substitution) between two sequences (row-vectorised DP)."""
    a = np.asarray(a)
    b = np.asarray(b)
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return max(n, m)
    ar = np.arange(m + 1)
    prev = ar.copy()
    for i in range(1, n + 1):
        cost = (b != a[i - 1]).astype(np.int64)
        tmp = np.empty(m + 1, dtype=np.int64)
        tmp[0] = i
        tmp[1:] = np.minimum(prev[1:] + 1, prev[:-1] + cost)
        # row[j] = min_k<=j (tmp[k] + j - k): the insertion chain, via a running minimum
        prev = np.minimum.accumulate(tmp - ar) + ar
    return int(prev[-1])


def edit_score(pred, gt, background: Iterable[int] = (), ignore_index: Optional[int] = IGNORE_INDEX) -> float:
    """Segmental edit score of one video: ``100 · (1 − lev(pred_segs, gt_segs) / max(len))``.

    Returns 100.0 when neither sequence has a segment (published code divides by zero there).
    """
    p, g = _pair(pred, gt, ignore_index)
    ps = get_segments(p, background)[0]
    gs = get_segments(g, background)[0]
    denom = max(len(ps), len(gs))
    if denom == 0:
        return 100.0
    return (1.0 - levenshtein(ps, gs) / denom) * 100.0


def _counts_from_segments(pseg, gseg, thresholds: Sequence[float]) -> np.ndarray:
    pl, ps, pe = pseg
    gl, gs, ge = gseg
    out = np.zeros((len(thresholds), 3), dtype=np.int64)
    if len(gl) == 0:
        out[:, 1] = len(pl)
        return out
    inter = np.minimum(pe[:, None], ge[None, :]) - np.maximum(ps[:, None], gs[None, :])
    union = np.maximum(pe[:, None], ge[None, :]) - np.minimum(ps[:, None], gs[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = (1.0 * inter / union) * (pl[:, None] == gl[None, :])
    best = np.argmax(iou, axis=1)  # first nan wins, as np.argmax does in the published code
    best_iou = iou[np.arange(len(pl)), best]
    for k, th in enumerate(thresholds):
        hits = np.zeros(len(gl), dtype=bool)
        tp = 0
        ok = best_iou >= th  # nan → False
        for j in np.nonzero(ok)[0]:
            if not hits[best[j]]:
                hits[best[j]] = True
                tp += 1
        out[k] = (tp, len(pl) - tp, len(gl) - int(hits.sum()))
    return out


def segment_counts(
    pred,
    gt,
    thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
    background: Iterable[int] = (),
    ignore_index: Optional[int] = IGNORE_INDEX,
    f1_end: str = "published",
) -> np.ndarray:
    """MS-TCN segment matching counts of one video.

    Each predicted segment (in temporal order) takes the same-label GT segment of highest IoU
    (``argmax``; different-label entries count as 0); it is a TP if that IoU ``>= τ`` and the GT segment is
    unused, else a FP (no fallback to the second best). FN = unused GT segments. ``f1_end``: end of the
    final segment, see :func:`get_segments`.

    Returns:
        int64 ``(len(thresholds), 3)`` rows ``(tp, fp, fn)``.
    """
    p, g = _pair(pred, gt, ignore_index)
    return _counts_from_segments(get_segments(p, background, f1_end), get_segments(g, background, f1_end),
                                 thresholds)


def f1_from_counts(tp, fp, fn, eps: float = F1_EPS) -> float:
    """F1 in percent from summed counts: ``100 · 2PR/(P+R+eps)``; P or R with a zero denominator → 0."""
    tp, fp, fn = float(tp), float(fp), float(fn)
    prec = tp / (tp + fp) if tp + fp > 0 else 0.0
    rec = tp / (tp + fn) if tp + fn > 0 else 0.0
    f1 = 2.0 * prec * rec / (prec + rec + eps)
    return 0.0 if math.isnan(f1) else 100.0 * f1


def _f1_key(th: float) -> str:
    return f"F1@{int(round(th * 100))}"


BOUNDARY_KEYS = ("BoundaryAcc", "BoundaryPrecision", "BoundaryRecall", "BoundaryF1")


def score_keys(iou_thresholds) -> List[str]:
    """The scores :meth:`SegmentationMetrics.summary` gives with boundary scores, in its order (counts left out)."""
    return [_f1_key(t) for t in iou_thresholds] + ["Edit", "Acc", *BOUNDARY_KEYS]


def f1_scores(
    pred,
    gt,
    thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
    background: Iterable[int] = (),
    ignore_index: Optional[int] = IGNORE_INDEX,
    f1_end: str = "published",
) -> Dict[str, float]:
    """F1@τ of one video, keys ``"F1@10"``, ``"F1@25"``, … (τ · 100, rounded); ``f1_end`` as in
    :func:`get_segments`."""
    c = segment_counts(pred, gt, thresholds, background, ignore_index, f1_end)
    return {_f1_key(th): f1_from_counts(*c[k]) for k, th in enumerate(thresholds)}


# ----------------------------------------------------------------------------------------- boundaries
def boundary_counts(
    boundary_pred, boundary_gt, threshold: float = 0.5, tolerance: int = 5, mask=None
) -> Tuple[int, int, int, int]:
    """Boundary detection counts of one video (published ``BoundaryScoreMeter``).

    Args:
        boundary_pred, boundary_gt: ``(T,)`` (or ``(1, T)``) arrays, thresholded **as given** — the
            published evaluation passes the model's raw boundary *logits* here (no sigmoid), so its
            0.5 threshold acts on logits.
        threshold: values ``< threshold`` zeroed before peak picking (:func:`boundary_peaks`).
        tolerance: a predicted peak is a TP if its nearest GT peak is within ``tolerance`` frames and
            still unused; otherwise FP. FN = unused GT peaks.
        mask: optional bool validity mask of the same shape.
    Returns:
        ``(tp, fp, fn, n_frames)``; the published frame "accuracy" is
        ``(tp + tn) / n_frames`` with ``tn = n_frames − tp − fp − fn``.

    Note (published behaviour, reproduced): peaks are *strict* local maxima, and the DeST GT boundary
    arrays mark both frames of each transition (a plateau), so GT peaks are usually only frame 0 plus
    isolated marks.
    """
    def _flat(x, name):
        a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        a = a.astype(np.float64).reshape(-1) if a.ndim == 2 and a.shape[0] == 1 else a.astype(np.float64)
        if a.ndim != 1:
            raise ValueError(f"{name} must have shape (T,) or (1, T), got {tuple(np.shape(x))}")
        return a

    bp = _flat(boundary_pred, "boundary_pred")
    bg = _flat(boundary_gt, "boundary_gt")
    if bp.shape[0] != bg.shape[0]:
        raise ValueError(
            f"boundary_pred and boundary_gt must have the same length, got {bp.shape[0]} and {bg.shape[0]}"
        )
    if mask is not None:
        m = _flat(mask, "mask").astype(bool)
        if m.shape[0] != bp.shape[0]:
            raise ValueError(f"mask must have length {bp.shape[0]}, got {m.shape[0]}")
        bp, bg = bp[m], bg[m]
    n = bp.shape[0]
    if n == 0:
        return 0, 0, 0, 0
    pi = boundary_peaks(bp, threshold)
    gi = boundary_peaks(bg, threshold)
    dist = np.abs(gi[None, :] - pi[:, None])
    nearest = np.argmin(dist, axis=1)
    near_d = dist[np.arange(len(pi)), nearest]
    hits = np.zeros(len(gi), dtype=bool)
    tp = 0
    for j in np.nonzero(near_d <= tolerance)[0]:
        if not hits[nearest[j]]:
            hits[nearest[j]] = True
            tp += 1
    return tp, len(pi) - tp, len(gi) - int(hits.sum()), n


# ----------------------------------------------------------------------------------------- accumulator
class SegmentationMetrics:
    """Accumulates Acc / Edit / F1@τ (and optional boundary scores) over videos.

    Args:
        num_classes: K; enables the confusion matrix (rows = GT, columns = prediction — the effective
            layout of the published ``_fast_hist`` call despite its swapped argument names).
        class_names: optional K names (used to resolve background names and in CSV/plots).
        background: see :func:`resolve_background` (default: nothing excluded).
        iou_thresholds: F1 thresholds (default 0.1, 0.25, 0.5, 0.75, 0.9).
        ignore_index: GT label of frames to drop (padding and ignored frames, 255); class ids must stay
            below it (num_classes ≤ ignore_index).
        boundary_threshold, boundary_tolerance: boundary metric parameters (0.5, 5 frames).
        f1_end: end of a sequence's final segment for F1, ``"published"`` (T − 1) or ``"mstcn"`` (T); see
            :func:`get_segments`.

    Raw counts (summable across processes): ``n_videos, n_frames, n_correct, edit_sum``, per-threshold
    ``tp/fp/fn``, boundary ``b_videos, b_frames, b_tp, b_fp, b_fn`` and the K×K confusion matrix.
    For DDP: ``t = m.to_tensor(); dist.all_reduce(t); m.from_tensor(t)`` then ``summary()``
    (per-video rows stay local; merge them with :meth:`state_dict`/:meth:`merge` if needed).
    """

    _SCALARS = ("n_videos", "n_frames", "n_correct", "edit_sum", "b_videos", "b_frames", "b_tp", "b_fp", "b_fn")

    def __init__(
        self,
        num_classes: Optional[int] = None,
        class_names: Optional[Sequence[str]] = None,
        background: BackgroundSpec = None,
        iou_thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
        ignore_index: Optional[int] = IGNORE_INDEX,
        boundary_threshold: float = 0.5,
        boundary_tolerance: int = 5,
        f1_end: str = "published",
    ) -> None:
        if class_names is not None:
            class_names = list(class_names)
            if num_classes is None:
                num_classes = len(class_names)
            elif num_classes != len(class_names):
                raise ValueError(f"class_names has {len(class_names)} entries but num_classes={num_classes}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if num_classes is not None and ignore_index is not None and 0 <= ignore_index < num_classes:
            raise ValueError(f"num_classes: {num_classes} classes include the ignore_index {ignore_index} "
                             f"(its frames would be dropped); at most {ignore_index} classes are supported")
        thr = tuple(float(t) for t in iou_thresholds)
        if not thr or any(not (0.0 <= t <= 1.0) for t in thr):
            raise ValueError(f"iou_thresholds must be a non-empty list of values in [0, 1], got {iou_thresholds}")
        self.num_classes = num_classes
        self.class_names = class_names
        self.background = resolve_background(background, class_names)
        self.iou_thresholds = thr
        self.ignore_index = ignore_index
        self.boundary_threshold = float(boundary_threshold)
        self.boundary_tolerance = int(boundary_tolerance)
        self.f1_end = _check_f1_end(f1_end)
        self.reset()

    # -- state ---------------------------------------------------------------------------------
    def reset(self) -> None:
        for k in self._SCALARS:
            setattr(self, k, 0.0 if k == "edit_sum" else 0)
        self.seg_counts = np.zeros((len(self.iou_thresholds), 3), dtype=np.int64)
        k = self.num_classes or 0
        self.confusion = np.zeros((k, k), dtype=np.int64)
        self._videos: List[dict] = []

    @property
    def f1_keys(self) -> List[str]:
        return [_f1_key(t) for t in self.iou_thresholds]

    # -- update --------------------------------------------------------------------------------
    def update(self, pred, gt, name: Optional[str] = None, boundary_pred=None, boundary_gt=None) -> dict:
        """Add one video.

        Args:
            pred: int ``(T,)`` predicted labels (e.g. after :func:`refinement_with_boundary`).
            gt: int ``(T,)`` ground-truth labels (``ignore_index`` frames dropped).
            name: video name for the per-video table (default ``video{i}``).
            boundary_pred, boundary_gt: optional ``(T,)``/``(1, T)`` boundary arrays (both or neither);
                see :func:`boundary_counts` (thresholded as given).
        Returns:
            this video's row (same keys as :meth:`per_video`).
        """
        p, g = _pair(pred, gt, self.ignore_index)
        if (boundary_pred is None) != (boundary_gt is None):
            raise ValueError("boundary_pred and boundary_gt must be given together")
        if self.num_classes is not None:
            k = self.num_classes
            for arr, nm in ((p, "pred"), (g, "gt")):
                if arr.size and (arr.min() < 0 or arr.max() >= k):
                    raise ValueError(f"{nm} has labels outside [0, {k}) (min {arr.min()}, max {arr.max()})")
            self.confusion += np.bincount(g * k + p, minlength=k * k).reshape(k, k)
        pseg = get_segments(p, self.background, self.f1_end)
        gseg = get_segments(g, self.background, self.f1_end)
        n_correct = int((p == g).sum())
        denom = max(len(pseg[0]), len(gseg[0]))
        edit = 100.0 if denom == 0 else (1.0 - levenshtein(pseg[0], gseg[0]) / denom) * 100.0
        counts = _counts_from_segments(pseg, gseg, self.iou_thresholds)

        self.n_videos += 1
        self.n_frames += int(p.shape[0])
        self.n_correct += n_correct
        self.edit_sum += edit
        self.seg_counts += counts
        row = {
            "name": name if name is not None else f"video{len(self._videos)}",
            "n_frames": int(p.shape[0]),
            "Acc": 100.0 * n_correct / p.shape[0] if p.shape[0] else 0.0,
            "Edit": edit,
        }
        for key, c in zip(self.f1_keys, counts):
            row[key] = f1_from_counts(*c)
        row["n_pred_segments"] = int(len(pseg[0]))
        row["n_gt_segments"] = int(len(gseg[0]))
        if boundary_pred is not None:
            tp, fp, fn, nb = boundary_counts(
                boundary_pred, boundary_gt, self.boundary_threshold, self.boundary_tolerance
            )
            self.b_videos += 1
            self.b_frames += nb
            self.b_tp += tp
            self.b_fp += fp
            self.b_fn += fn
            row.update(self._boundary_scores(tp, fp, fn, nb))
        self._videos.append(row)
        return row

    # -- scores --------------------------------------------------------------------------------
    @staticmethod
    def _boundary_scores(tp, fp, fn, n) -> Dict[str, float]:
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        tn = n - tp - fp - fn
        return {
            "BoundaryAcc": 100.0 * (tp + tn) / n if n else 0.0,
            "BoundaryPrecision": 100.0 * prec,
            "BoundaryRecall": 100.0 * rec,
            "BoundaryF1": f1_from_counts(tp, fp, fn),
        }

    def summary(self) -> Dict[str, float]:
        """Scores over all videos so far: ``F1@10 … F1@90, Edit, Acc`` (+ boundary scores if any,
        + ``n_videos, n_frames``). Acc micro, Edit macro, F1 from summed counts."""
        out: Dict[str, float] = {}
        for key, c in zip(self.f1_keys, self.seg_counts):
            out[key] = f1_from_counts(*c)
        out["Edit"] = self.edit_sum / self.n_videos if self.n_videos else 0.0
        out["Acc"] = 100.0 * self.n_correct / self.n_frames if self.n_frames else 0.0
        if self.b_videos:
            out.update(self._boundary_scores(self.b_tp, self.b_fp, self.b_fn, self.b_frames))
        out["n_videos"] = int(self.n_videos)
        out["n_frames"] = int(self.n_frames)
        return out

    def per_video(self) -> List[dict]:
        """One dict per video (in update order): name, n_frames, Acc, Edit, F1@…, segment counts and
        boundary scores when given."""
        return [dict(r) for r in self._videos]

    def per_class(self) -> Dict[str, np.ndarray]:
        """Frame-level per-class scores from the confusion matrix (needs ``num_classes``):
        ``precision, recall (= per-class accuracy), f1`` in percent and ``support`` (GT frames), each (K,)."""
        if self.num_classes is None:
            raise ValueError("per_class() needs num_classes (or class_names) at construction")
        c = self.confusion.astype(np.float64)
        tp = np.diag(c)
        with np.errstate(divide="ignore", invalid="ignore"):
            prec = np.nan_to_num(tp / c.sum(axis=0))
            rec = np.nan_to_num(tp / c.sum(axis=1))
            f1 = np.nan_to_num(2 * prec * rec / (prec + rec))
        return {"precision": 100 * prec, "recall": 100 * rec, "f1": 100 * f1, "support": c.sum(axis=1)}

    # -- merging / DDP ---------------------------------------------------------------------------
    def _layout(self) -> List[Tuple[str, int]]:
        k = self.num_classes or 0
        return [(s, 1) for s in self._SCALARS] + [("seg_counts", self.seg_counts.size), ("confusion", k * k)]

    def to_tensor(self) -> torch.Tensor:
        """All raw counts as one flat float64 tensor (sum-reducible with ``all_reduce``)."""
        parts = [np.asarray([float(getattr(self, s))]) for s in self._SCALARS]
        parts += [self.seg_counts.reshape(-1).astype(np.float64), self.confusion.reshape(-1).astype(np.float64)]
        return torch.from_numpy(np.concatenate(parts))

    def from_tensor(self, t: torch.Tensor) -> "SegmentationMetrics":
        """Load raw counts from :meth:`to_tensor` output (e.g. after all-reduce). Per-video rows are kept."""
        v = t.detach().cpu().double().numpy().reshape(-1) if isinstance(t, torch.Tensor) else np.asarray(t, float)
        size = sum(n for _, n in self._layout())
        if v.shape[0] != size:
            raise ValueError(f"tensor must have {size} entries for this configuration, got {v.shape[0]}")
        i = 0
        for s in self._SCALARS:
            setattr(self, s, float(v[i]) if s == "edit_sum" else int(round(v[i])))
            i += 1
        n = self.seg_counts.size
        self.seg_counts = np.rint(v[i : i + n]).astype(np.int64).reshape(self.seg_counts.shape)
        i += n
        k = self.num_classes or 0
        self.confusion = np.rint(v[i : i + k * k]).astype(np.int64).reshape(k, k)
        return self

    def state_dict(self) -> dict:
        """Picklable raw state: config, counts and per-video rows."""
        return {
            "config": self.state_dict_config(),
            "counts": {s: getattr(self, s) for s in self._SCALARS},
            "seg_counts": self.seg_counts.copy(),
            "confusion": self.confusion.copy(),
            "videos": self.per_video(),
        }

    def load_state_dict(self, state: dict) -> "SegmentationMetrics":
        self._check_config(state["config"])
        for s, v in state["counts"].items():
            setattr(self, s, v)
        self.seg_counts = np.asarray(state["seg_counts"], dtype=np.int64).copy()
        self.confusion = np.asarray(state["confusion"], dtype=np.int64).copy()
        self._videos = [dict(r) for r in state["videos"]]
        return self

    def _check_config(self, cfg: dict) -> None:
        mine = self.state_dict_config()
        for key, val in cfg.items():
            if mine.get(key) != val:
                raise ValueError(f"cannot merge metrics with different {key}: {mine.get(key)!r} vs {val!r}")

    def state_dict_config(self) -> dict:
        return {
            "num_classes": self.num_classes,
            "iou_thresholds": list(self.iou_thresholds),
            "background": sorted(self.background),
            "ignore_index": self.ignore_index,
            "boundary_threshold": self.boundary_threshold,
            "boundary_tolerance": self.boundary_tolerance,
            "f1_end": self.f1_end,
        }

    def merge(self, other: Union["SegmentationMetrics", dict]) -> "SegmentationMetrics":
        """Add another accumulator's counts (or its :meth:`state_dict`) into this one; per-video rows
        are appended. Configurations must match."""
        state = other.state_dict() if isinstance(other, SegmentationMetrics) else other
        self._check_config(state["config"])
        for s in self._SCALARS:
            setattr(self, s, getattr(self, s) + state["counts"][s])
        self.seg_counts = self.seg_counts + np.asarray(state["seg_counts"], dtype=np.int64)
        self.confusion = self.confusion + np.asarray(state["confusion"], dtype=np.int64)
        self._videos.extend(dict(r) for r in state["videos"])
        return self

    # -- output --------------------------------------------------------------------------------
    def columns(self) -> List[str]:
        cols = ["name", "n_frames"] + self.f1_keys + ["Edit", "Acc"]
        if self.b_videos:
            cols += list(BOUNDARY_KEYS)
        return cols

    def write_csv(self, path: Union[str, os.PathLike]) -> str:
        """Per-video CSV (one row per video, update order) plus a final row named ``all`` holding
        :meth:`summary` (its ``n_frames`` = total frames). Returns the path."""
        cols = self.columns()
        path = prepared_path(path)
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            for r in self._videos:
                w.writerow({c: _fmt(r.get(c, "")) for c in cols})
            s = dict(self.summary(), name="all")
            w.writerow({c: _fmt(s.get(c, "")) for c in cols})
        return path


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.6f}"
    return v


# ----------------------------------------------------------------------------------------- splits
def _read_all_row(path) -> Dict[str, float]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    all_rows = [r for r in rows if r.get("name") == "all"]
    if not all_rows:
        raise ValueError(f"{path} has no row named 'all' (expected a SegmentationMetrics.write_csv file)")
    out = {}
    for k, v in all_rows[-1].items():
        if k == "name" or v in ("", None):
            continue
        try:
            out[k] = float(v)
        except ValueError:
            continue
    return out


def average_splits(csv_paths: Sequence[Union[str, os.PathLike]]) -> Dict[str, float]:
    """Mean over splits (e.g. MCFS-130's 5 folds) of each split's ``all`` row.

    Every metric is averaged with equal weight per split (the usual cross-split protocol; counts
    are *not* pooled). Only columns present in every file are kept; ``n_videos``/``n_frames`` are
    averaged too if present; ``n_splits`` is added.
    """
    paths = list(csv_paths)
    if not paths:
        raise ValueError("csv_paths must name at least one CSV file")
    return _mean_of_rows([_read_all_row(p) for p in paths])


def _mean_of_rows(rows: List[Dict[str, float]]) -> Dict[str, float]:
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    out = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    out["n_splits"] = len(rows)
    return out


def write_split_average(csv_paths: Sequence[Union[str, os.PathLike]], out_path) -> Dict[str, float]:
    """Write a CSV with one row per split (``name`` = file path, its ``all`` row) and a ``mean`` row
    (:func:`average_splits`). Returns the mean dict."""
    paths = list(csv_paths)
    if not paths:
        raise ValueError("csv_paths must name at least one CSV file")
    rows = [_read_all_row(p) for p in paths]
    mean = _mean_of_rows(rows)
    cols = ["name"] + [k for k in mean if k != "n_splits"]
    out_path = prepared_path(out_path)
    with open(out_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for p, r in zip(paths, rows):
            w.writerow({"name": os.fspath(p), **{k: _fmt(r[k]) for k in cols[1:]}})
        w.writerow({"name": "mean", **{k: _fmt(mean[k]) for k in cols[1:]}})
    return mean
