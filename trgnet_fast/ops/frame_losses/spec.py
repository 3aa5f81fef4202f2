"""Registry entry of the fused per-frame loss terms: inputs of a size (labels with ignored runs, the pair indices and
weights the loss's target builder would give), parity sizes, the benchmark variant with its FLOP and byte models, the
Triton kernels it launches and the emulation cases (``trgnet_fast/ops/spec.py``)."""
from __future__ import annotations

import torch

from trgnet_fast.ops.frame_losses import BACKENDS, frame_losses
from trgnet_fast.ops.frame_losses.reference import compute_dtype, frame_losses_reference
from trgnet_fast.ops.frame_losses.validation import STATE_NAMES
from trgnet_fast.ops.spec import BenchVariant, OpSpec, randn

IGNORED = 255  # a label outside [0, K): the frame takes no part in CE or GS-TMSE
PKU_CLASSES = 52


def size(s, r, n, k, t, time_axis=True, ignored=True, class_weight=False) -> dict:
    """S logit stages and R boundary stages of N samples, K classes, T frames; ``ignored``: runs of ignored labels
    (inside a row, at its end, a row with one labelled frame); ``class_weight``: CE weights per class."""
    return {"S": s, "R": r, "N": n, "K": k, "T": t, "time_axis": time_axis, "ignored": ignored,
            "class_weight": class_weight}


def _labels(sz, generator) -> torch.Tensor:
    n, t = sz["N"], sz["T"]
    labels = torch.randint(0, sz["K"], (n, t), generator=generator)
    if sz["ignored"]:
        if t > 2:  # row 0 keeps labelled frames: the batch has some
            labels[0, t // 3:t // 3 + max(1, t // 8)] = IGNORED  # a run inside a row
        if n > 1:
            labels[1, t - max(1, t // 5):] = IGNORED  # padding at the end
        if n > 2:
            labels[2, 1:] = IGNORED  # one labelled frame: no pair
    return labels


def _pairs(labels: torch.Tensor):
    """next_frame, previous_frame (N, T): the neighbouring labelled frames, the frame itself where there is none."""
    n, t = labels.shape
    next_frame = torch.arange(t).repeat(n, 1)
    previous_frame = next_frame.clone()
    for row in range(n):
        frames = (labels[row] != IGNORED).nonzero().flatten()
        next_frame[row, frames[:-1]] = frames[1:]
        previous_frame[row, frames[1:]] = frames[:-1]
    return next_frame, previous_frame


def make_inputs(sz, dtype, device, generator):
    """Keyword inputs of ``frame_losses`` for size ``sz``: logits ~ 3 N(0, 1) (confident and unsure frames), boundary
    logits ~ 2 N(0, 1); the weights as the loss's target builder makes them (CE: per-class weights over their sum on
    the labelled frames; GS-TMSE: a similarity in [0.2, 1] over (N · the row's pairs); BCE: 1 / (N · the row's
    labelled frames)), boundary targets 0/1, pos_weight 3.7, the published threshold 4."""
    s, r, n, k, t = sz["S"], sz["R"], sz["N"], sz["K"], sz["T"]
    acc = compute_dtype(dtype)
    labels = _labels(sz, generator)
    valid = labels != IGNORED
    class_weight = torch.rand(k, generator=generator, dtype=torch.float64) + 0.5 if sz["class_weight"] \
        else torch.ones(k, dtype=torch.float64)
    frame_class_weight = torch.where(valid, class_weight[labels.clamp(max=k - 1)], 0.0)
    next_frame, previous_frame = _pairs(labels)
    starts = next_frame != torch.arange(t)
    similarity = 0.2 + 0.8 * torch.rand((n, t), generator=generator, dtype=torch.float64)
    pair_weight = torch.where(starts, similarity, 0.0) / (n * starts.sum(1, keepdim=True).clamp(min=1))
    boundary_weight = valid / (n * valid.sum(1, keepdim=True).clamp(min=1))
    boundary = (torch.rand((n, t), generator=generator) < 0.2).to(torch.float64)

    def weights(w):
        return w.to(device=device, dtype=acc)

    return {"logits": 3 * randn((s, n, k, t), dtype, device, generator),
            "labels": labels.to(device), "ce_weight": weights(frame_class_weight / frame_class_weight.sum()),
            "next_frame": next_frame.to(device), "previous_frame": previous_frame.to(device),
            "pair_weight": weights(pair_weight),
            "boundary_logits": 2 * randn((r, n, t), dtype, device, generator), "boundary": weights(boundary),
            "boundary_weight": weights(boundary_weight),
            "pos_weight": torch.tensor([3.7], dtype=acc, device=device),
            "threshold": 4.0, "time_axis": sz["time_axis"]}


def _bench_sizes(n, t):
    return size(2, 3, n, PKU_CLASSES, t, ignored=False)  # the PKU config's loss: 2 logit and 3 boundary stages


def flops(sz):
    # per logit and frame: ~10 FLOP forward (class lse, the pair difference and its square, weights), ~20 backward
    # (softmax, both pair gradients, the time-lse shares); per boundary frame ~10 each way
    logits = sz["S"] * sz["N"] * sz["K"] * sz["T"]
    bounds = sz["R"] * sz["N"] * sz["T"]
    return {"fwd": 10 * logits + 10 * bounds, "bwd": 20 * logits + 10 * bounds}


def min_bytes(sz, itemsize):
    # fwd: read the logits and boundary logits (+ 7 (N, T) per-frame inputs, 8 B each); bwd: read them, write their
    # gradients
    logits = (sz["S"] * sz["K"] + sz["R"]) * sz["N"] * sz["T"] * itemsize
    frames = 7 * 8 * sz["N"] * sz["T"]
    return {"fwd": logits + frames, "bwd": 2 * logits + frames}


SPEC = OpSpec(
    name="frame_losses",
    backends=BACKENDS,
    reference=frame_losses_reference,
    fused=frame_losses,
    make_inputs=make_inputs,
    grad_inputs=("logits", "boundary_logits"),
    parity_sizes={
        "cpu": [size(2, 3, 4, 7, 23), size(3, 2, 3, 52, 70, time_axis=False, class_weight=True),
                size(1, 1, 1, 1, 5), size(2, 3, 3, 11, 37, class_weight=True)],
        "cuda": [size(2, 3, 8, 52, 6000), size(2, 3, 8, 52, 6000, time_axis=False),
                 size(3, 1, 5, 1000, 777, class_weight=True), size(1, 4, 7, 13, 3001)],
    },
    triton_module="trgnet_fast.ops.frame_losses.triton_kernels",
    triton_kernels=("_fl_time_lse_kernel", "_fl_frames_kernel", "_fl_sum_kernel", "_fl_time_q_kernel",
                    "_fl_frames_backward_kernel"),
    bench=(BenchVariant("frame_losses", _bench_sizes, flops, min_bytes,
                        note="CE + GS-TMSE (time axis) + boundary BCE of TRGNet's 2 logit and 3 boundary stages "
                             "(K = 52)"),),
    emulation_min_cases=40,
    state_inputs=STATE_NAMES,
)
