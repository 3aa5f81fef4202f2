"""Post-processing of frame-wise class scores (docs/model.md#inference-and-post-processing).

Everything here runs on the CPU with numpy; torch tensors are accepted and detached/copied to numpy.
Inputs follow the model's output layout: class logits ``(K, T)`` for one video or ``(N, K, T)`` for a
batch, boundary logits/probabilities ``(1, T)`` / ``(N, 1, T)``, validity mask ``(1, T)`` / ``(N, 1, T)``.

Published behaviour that is reproduced on purpose (and where we deviate) is stated per function.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

__all__ = [
    "argmax_prediction",
    "boundary_probabilities",
    "boundary_peaks",
    "refinement_with_boundary",
    "relabeling",
    "gaussian_smoothing",
    "gaussian_kernel",
]


def _to_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - defensive
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}") from exc


def _as_batch_scores(logits, name: str = "logits") -> Tuple[np.ndarray, bool]:
    """(K,T) or (N,K,T) -> ((N,K,T) float array, was_single)."""
    x = _to_numpy(logits, name)
    if x.ndim == 2:
        x, single = x[None], True
    elif x.ndim == 3:
        single = False
    else:
        raise ValueError(f"{name} must have shape (K, T) or (N, K, T), got {tuple(x.shape)}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be floating point (class scores), got dtype {x.dtype}")
    if x.shape[1] < 1 or x.shape[2] < 1:
        raise ValueError(f"{name} must have K >= 1 classes and T >= 1 frames, got {tuple(x.shape)}")
    return x, single


def argmax_prediction(logits):
    """Frame-wise class prediction: argmax over the class axis.

    Args:
        logits: ``(K, T)`` or ``(N, K, T)`` class scores (logits or probabilities).
    Returns:
        int64 labels ``(T,)`` or ``(N, T)`` (numpy; a torch tensor if ``logits`` was one).

    The published code first turns logits into probabilities with a softmax that has no
    max-subtraction (``exp(x)/sum exp(x)`` in float32) and then takes the argmax. That equals the argmax
    of the logits except when some logit exceeds ~88.7 (float32 ``exp`` overflow → inf/nan), or for a
    batch with N == K > 1 (its ``(N,K,T) / (N,T)`` division then broadcasts per class and can change the
    argmax; for other N > 1 it raises). We take the argmax of the scores directly (first maximum on ties,
    like numpy).
    """
    x, single = _as_batch_scores(logits)
    pred = np.argmax(x, axis=1).astype(np.int64)
    pred = pred[0] if single else pred
    return torch.from_numpy(pred) if isinstance(logits, torch.Tensor) else pred


def boundary_probabilities(boundary) -> np.ndarray:
    """Boundary logits → probabilities with the published detector
    (docs/model.md#inference-and-post-processing, step 2).

    Args:
        boundary: ``(1, T)``, ``(N, 1, T)`` or ``(T,)`` logits or probabilities.
    Returns:
        An array of the same shape. If **every** value of the whole array (all videos, padding
        included) lies in [0, 1] it is treated as probabilities and returned unchanged (this is the
        published detector: logits that happen to lie in [0, 1] are *not* passed through a sigmoid).
        Otherwise ``1 / (1 + exp(-x))`` is computed in the input dtype and cast to float32, as published
        (float32 saturates to exactly 1.0 for logits above ~17, which can create plateaus that are not
        strict peaks).
    """
    b = _to_numpy(boundary, "boundary")
    if not np.issubdtype(b.dtype, np.floating):
        b = b.astype(np.float32)
    if b.size and b.min() >= 0 and b.max() <= 1:
        return b
    with np.errstate(over="ignore"):
        prob = 1 / (1 + np.exp(-b))
    return prob.astype(np.float32)


def boundary_peaks(prob, threshold: float = 0.5) -> np.ndarray:
    """Indices of boundary peaks in one video's boundary probabilities (published ``argrelmax``).

    Args:
        prob: ``(T,)`` probabilities (valid frames only), T >= 1.
        threshold: values ``< threshold`` are zeroed first.
    Returns:
        int64 indices: frame 0 always, plus every ``t`` in ``1..T-2`` with ``p[t] > p[t-1]`` and
        ``p[t] > p[t+1]`` (strict, after zeroing). The last frame is never a peak; plateaus of equal
        values are never peaks. The input is not modified.
    """
    p = _to_numpy(prob, "prob")
    if p.ndim != 1:
        raise ValueError(f"prob must have shape (T,), got {tuple(p.shape)}")
    if p.shape[0] < 1:
        raise ValueError("prob must have at least one frame")
    p = np.where(p < threshold, 0.0, p)
    inner = np.nonzero((p[:-2] < p[1:-1]) & (p[2:] < p[1:-1]))[0] + 1
    return np.concatenate([np.zeros(1, dtype=np.int64), inner.astype(np.int64)])


def _check_boundary_and_mask(boundary, mask, n: int, t: int):
    b = _to_numpy(boundary, "boundary")
    if b.ndim == 2:
        b = b[None]
    if b.ndim != 3 or b.shape[0] != n or b.shape[1] != 1 or b.shape[2] != t:
        raise ValueError(
            f"boundary must have shape (1, T) or (N, 1, T) matching logits (N={n}, T={t}), "
            f"got {tuple(_to_numpy(boundary, 'boundary').shape)}"
        )
    if mask is None:
        m = np.ones((n, 1, t), dtype=bool)
    else:
        m = _to_numpy(mask, "mask")
        if m.ndim == 2:
            m = m[None]
        if m.ndim != 3 or m.shape != (n, 1, t):
            raise ValueError(
                f"mask must have shape (1, T) or (N, 1, T) matching logits (N={n}, T={t}), "
                f"got {tuple(_to_numpy(mask, 'mask').shape)}"
            )
        m = m.astype(bool)
    return b, m


def refinement_with_boundary(
    logits,
    boundary,
    mask=None,
    threshold: float = 0.5,
    tie_break: str = "published",
):
    """ASRF-style refinement: majority vote of the argmax labels between boundary peaks
    (docs/model.md#inference-and-post-processing).

    Args:
        logits: ``(K, T)`` or ``(N, K, T)`` raw class logits (float).
        boundary: ``(1, T)`` or ``(N, 1, T)`` boundary logits or probabilities (see
            :func:`boundary_probabilities` for the published detector).
        mask: optional bool ``(1, T)`` / ``(N, 1, T)`` validity mask (default: all frames valid).
        threshold: boundary probability threshold (TRG-Net configs: 0.5).
        tie_break: how ties between majority classes of an interval are broken.

            * ``"published"`` (default): classes tied for the largest count are visited in increasing
              index; a class wins if the float32 sum of its **raw logits** over the interval is strictly
              larger than the best so far, the best starting at **0**. If no tied class has a positive
              sum, the published code keeps the class chosen for the *previous* interval (a stale loop
              variable, carried across videos of the batch). Where the published code would crash
              (no previous interval in the call) we fall back to ``"max_logit_sum"``.
            * ``"max_logit_sum"``: the tied class with the largest logit sum (first on equal sums).

    Returns:
        int64 labels ``(T,)`` or ``(N, T)`` (numpy; torch if ``logits`` was a tensor).

    Procedure per video (published): peaks = :func:`boundary_peaks` of the valid frames' probabilities;
    ``T`` (the full, padded length, as published) is appended; each interval ``[p_j, p_{j+1})`` gets the
    most frequent argmax label (``bincount``), ties broken as above. With padding, the last interval
    therefore also covers (and votes with) the padded frames, as in the published code.
    """
    if tie_break not in ("published", "max_logit_sum"):
        raise ValueError(f"tie_break must be 'published' or 'max_logit_sum', got {tie_break!r}")
    x, single = _as_batch_scores(logits)
    n, k, t = x.shape
    b, m = _check_boundary_and_mask(boundary, mask, n, t)
    prob = boundary_probabilities(b)
    preds = np.argmax(x, axis=1).astype(np.int64)
    out = preds.copy()
    prev_mode: Optional[int] = None
    for i in range(n):
        valid = prob[i, 0][m[i, 0]]
        if valid.shape[0] == 0:
            raise ValueError(f"mask of video {i} has no valid frame")
        starts = boundary_peaks(valid, threshold)
        edges = np.append(starts, t)
        lengths = np.diff(edges)
        seg_id = np.repeat(np.arange(len(starts)), lengths)
        counts = np.bincount(seg_id * k + preds[i], minlength=len(starts) * k).reshape(len(starts), k)
        top = counts.max(axis=1, keepdims=True)
        is_mode = counts == top
        modes = np.argmax(is_mode, axis=1)  # first (lowest-index) mode
        n_modes = is_mode.sum(axis=1)
        for j in np.nonzero(n_modes > 1)[0]:
            a, e = edges[j], edges[j + 1]
            tied = np.nonzero(is_mode[j])[0]
            sums = [x[i, c, a:e].sum() for c in tied]  # float32 numpy sums, as published
            chosen = None
            if tie_break == "published":
                best = 0
                for c, s in zip(tied, sums):
                    if best < s:
                        chosen, best = int(c), s
                if chosen is None:
                    prev = modes[j - 1] if j > 0 else prev_mode
                    chosen = int(prev) if prev is not None else None
            if chosen is None:
                chosen = int(tied[int(np.argmax(sums))])
            modes[j] = chosen
        out[i, :] = np.repeat(modes, lengths)
        prev_mode = int(modes[-1])
    out = out[0] if single else out
    return torch.from_numpy(out) if isinstance(logits, torch.Tensor) else out


def relabeling(labels_or_logits, theta_t: int = 15):
    """Relabel short segments with the label before them (published ``_relabeling``, θ_t = 15).

    Args:
        labels_or_logits: int labels ``(T,)`` / ``(N, T)`` or float scores ``(K, T)`` / ``(N, K, T)``
            (argmax taken first).
        theta_t: runs of length ``<= theta_t`` are relabelled.
    Returns:
        int64 labels with the input's batch layout.

    Reproduces the published frame loop exactly, working on runs of the *original* sequence:

    * every run except the last with length ``<= theta_t`` is overwritten with the current value of
      the frame just before it — for the first run that index is ``-1``, i.e. the **last frame** of
      the video (published quirk);
    * for the last run of length ``cnt <= theta_t`` the published code overwrites the slice
      ``[T-1-cnt, T-1)`` (shifted one frame left, so the final frame keeps its label) with the value at
      ``T-2-cnt`` (index ``-1`` → last frame when that is negative; an empty slice when the whole
      video is one run);
    * videos of a single frame are returned unchanged (the published loop would crash).
    Not used by any TRG-Net config.
    """
    arr = _to_numpy(labels_or_logits, "labels_or_logits")
    if np.issubdtype(arr.dtype, np.floating):
        preds = np.asarray(argmax_prediction(arr))
    else:
        preds = arr.astype(np.int64)
    single = preds.ndim == 1
    if single:
        preds = preds[None]
    if preds.ndim != 2:
        raise ValueError(f"labels_or_logits must be labels (T,)/(N,T) or scores (K,T)/(N,K,T), got {arr.shape}")
    preds = preds.copy()
    t = preds.shape[1]
    for i in range(preds.shape[0]):
        if t < 2:
            continue
        p = preds[i]
        change = np.nonzero(p[1:] != p[:-1])[0] + 1
        run_starts = np.concatenate([[0], change])
        run_ends = np.concatenate([change, [t]])
        for s, e in zip(run_starts[:-1], run_ends[:-1]):  # every run but the last
            if e - s <= theta_t:
                p[s:e] = p[s - 1]  # s - 1 == -1 → last frame (published quirk)
        cnt = t - run_starts[-1]
        if cnt <= theta_t:
            j = t - 1
            lo = j - cnt
            # published: preds[j - cnt : j] = preds[j - cnt - 1]; python slice semantics for lo = -1
            p[slice(lo, j)] = p[lo - 1]
    out = preds[0] if single else preds
    return torch.from_numpy(out) if isinstance(labels_or_logits, torch.Tensor) else out


def gaussian_kernel(kernel_size: int = 15, sigma: float = 1.0) -> torch.Tensor:
    """Published 1-D Gaussian kernel ``(kernel_size,)``: density values at ``0..k-1`` centred at
    ``(k-1)/2``, **not** renormalised to sum 1 (the published normalisation is commented out)."""
    if kernel_size < 1:
        raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
    grid = torch.arange(kernel_size, dtype=torch.float32)
    mean = (kernel_size - 1) / 2
    return torch.exp(-(((grid - mean) / sigma) ** 2) / 2) / (sigma * np.sqrt(2 * np.pi))


def gaussian_smoothing(logits, kernel_size: int = 15, sigma: float = 1.0):
    """Gaussian smoothing of class probabilities, then argmax (published ``_smoothing``, kernel 15).

    Args:
        logits: ``(K, T)`` or ``(N, K, T)`` logits (a softmax is applied unless the scores already
            sum to 1 over classes, the published detector) or probabilities.
    Returns:
        int64 labels ``(T,)`` / ``(N, T)``.

    Depthwise ``conv1d`` with the kernel of :func:`gaussian_kernel` after reflect padding of
    ``(k-1)//2`` frames on both sides (T must exceed that padding). Deviation: our softmax subtracts
    the max (the published one does not, and broadcasts correctly only for N = 1).
    Not used by any TRG-Net config.
    """
    x, single = _as_batch_scores(logits)
    sums = x.sum(axis=1).astype(np.float32)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if not np.allclose(sums, np.ones_like(sums)):
        xt = torch.softmax(xt, dim=1)
    pad = (kernel_size - 1) // 2
    if pad >= xt.shape[-1]:
        raise ValueError(f"logits must have T > {pad} frames for kernel_size {kernel_size}, got T={xt.shape[-1]}")
    c = xt.shape[1]
    w = gaussian_kernel(kernel_size, sigma).view(1, 1, -1).repeat(c, 1, 1)
    sm = torch.nn.functional.conv1d(torch.nn.functional.pad(xt, (pad, pad), mode="reflect"), w, groups=c)
    out = sm.argmax(dim=1).numpy().astype(np.int64)
    out = out[0] if single else out
    return torch.from_numpy(out) if isinstance(logits, torch.Tensor) else out
