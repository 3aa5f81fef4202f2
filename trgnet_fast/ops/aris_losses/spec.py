"""Registry entry of the fused ARIS terms: inputs of a size (labelled runs with ignored frames and padding slots, the
segment slots and KL targets the loss's target builder would give), parity sizes, the benchmark variant with its
FLOP and byte models, the Triton kernels it launches and the emulation cases (``trgnet_fast/ops/spec.py``)."""
from __future__ import annotations

import torch

from trgnet_fast.ops.aris_losses import BACKENDS, aris_losses
from trgnet_fast.ops.aris_losses.reference import aris_losses_reference, compute_dtype, gradient_error_floors
from trgnet_fast.ops.aris_losses.validation import STATE_NAMES
from trgnet_fast.ops.spec import BenchVariant, OpSpec

IGNORED = 255  # a frame in no segment
PKU_CLASSES = 52
TEXT_DIM = 768
MODEL_CHANNELS = 64  # the encoder feature's channels: the feature head's input
TEMPERATURE = 10.0  # the published KLLoss target temperature


def size(n, d, t, k, run=5, spare=3, ties=False, head=None) -> dict:
    """N videos of T frames, D feature channels, K classes; labels in runs of about ``run`` frames; ``spare`` padding
    slots past the batch's segments; ``ties``: two segments of equal features (the max distance is shared);
    ``head``: None, or C: the op takes (N, C, T) features and a (D, C) feature head."""
    return {"N": n, "D": d, "T": t, "K": k, "run": run, "spare": spare, "ties": ties, "head": head}


def _labels(sz, generator) -> torch.Tensor:
    """(N, T) runs of random classes; row 1 ends in padding, row 2 has an ignored run inside, row 3 is all ignored."""
    n, t, run = sz["N"], sz["T"], sz["run"]
    runs = torch.randint(0, sz["K"], (n, -(-t // run)), generator=generator)
    labels = runs.repeat_interleave(run, dim=1)[:, :t].clone()
    if n > 1 and t > 3:
        labels[1, t - max(1, t // 4):] = IGNORED
    if n > 2 and t > 6:
        labels[2, t // 3:t // 3 + 2] = IGNORED
    if n > 3:
        labels[3] = IGNORED
    return labels


def slots(labels: torch.Tensor, spare: int):
    """The segment slots of the published scan, per row (docs/model.md#aris-segments): the maximal runs of one
    label, less every run followed by an ignored frame. Returns frame_segment (N, T) (M for no slot), video, start,
    count, label (M,) and valid (M,), with ``spare`` padding slots after the segments."""
    n, t = labels.shape
    found = []
    for row in range(n):
        begin = 0
        for frame in range(1, t + 1):
            if frame < t and labels[row, frame] == labels[row, begin]:
                continue
            followed_by_ignored = frame < t and labels[row, frame] == IGNORED
            if labels[row, begin] != IGNORED and not followed_by_ignored:
                found.append((row, begin, frame - begin, int(labels[row, begin])))
            begin = frame
    m = len(found) + spare
    frame_segment = torch.full((n, t), m, dtype=torch.int64)
    video, start, count, label = (torch.zeros(m, dtype=torch.int64) for _ in range(4))
    count += 1  # padding slots: 1
    for i, (row, begin, length, cls) in enumerate(found):
        frame_segment[row, begin:begin + length] = i
        video[i], start[i], count[i], label[i] = row, begin, length, cls
    return frame_segment, video, start, count, label, torch.arange(m) < len(found)


def kl_target(target: torch.Tensor, valid: torch.Tensor):
    """weight, log_weight (M, M) of the published KLLoss target softmax(10 · target) over each valid row's valid
    columns, 0 elsewhere."""
    pair = valid[:, None] & valid[None, :]
    log_q = torch.log_softmax((TEMPERATURE * target).masked_fill(~pair, float("-inf")), dim=1)
    return torch.where(pair, log_q.exp(), 0.0), torch.where(pair, log_q, 0.0)


def make_inputs(sz, dtype, device, generator):
    """Keyword inputs of ``aris_losses`` for size ``sz``: features ~ N(0, 1) + a per-segment offset (segments that
    differ, as trained features do); unit-norm embeddings; the published logit_scale ln(1/0.07); a random (K, K) TAG
    in [0, 1] for the relative target. With a head of C channels: (N, C, T) features so made, and Conv1d's default
    initialisation for the head's weight and bias, U(±1/√C) (the model's ``conv_feature``)."""
    n, t, k, c = sz["N"], sz["T"], sz["K"], sz.get("head")
    d = sz["D"] if c is None else c
    acc = compute_dtype(dtype)
    labels = _labels(sz, generator)
    frame_segment, video, start, count, label, valid = slots(labels, sz["spare"])
    m = count.shape[0]
    offsets = torch.randn(m + 1, d, generator=generator, dtype=torch.float64)
    features = torch.randn((n, d, t), generator=generator, dtype=torch.float64)
    features = features + offsets[frame_segment].permute(0, 2, 1)
    if sz["ties"] and int(valid.sum()) >= 3:
        # segments 0 and 1: the same constant features, far from the rest: the largest distance is d(0, j) = d(1, j)
        # for the farthest j, four tied entries of the max (and d(0, 1) = 0). Integers: every sum of them, hence
        # both means, is exact whatever the segments' lengths
        for i in (0, 1):
            features[video[i], :, start[i]:start[i] + count[i]] = (10 * offsets[0]).round()[:, None]
    if c is not None:
        d = sz["D"]
        bound = c ** -0.5
        head = {name: (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound
                for name, shape in (("head_weight", (d, c)), ("head_bias", (d,)))}
    embeddings = torch.nn.functional.normalize(torch.randn(k, d, generator=generator, dtype=torch.float64), dim=1)
    tag = torch.rand(k, k, generator=generator, dtype=torch.float64)
    absolute = kl_target((label[:, None] == label[None, :]).to(torch.float64), valid)
    relative = kl_target(tag[label[:, None], label[None, :]], valid)

    def state(x):
        return x.to(device=device, dtype=acc)

    inputs = {"features": features.to(device=device, dtype=dtype), "frame_segment": frame_segment.to(device),
              "segment_video": video.to(device), "segment_start": start.to(device), "segment_count": state(count),
              "segment_valid": valid.to(device), "segment_label": label.to(device),
              "unit_embeddings": state(embeddings), "logit_scale": state(torch.tensor([2.6592600369262695])),
              "absolute_weight": state(absolute[0]), "absolute_log_weight": state(absolute[1]),
              "relative_weight": state(relative[0]), "relative_log_weight": state(relative[1])}
    if c is not None:
        inputs |= {name: state(value) for name, value in head.items()}
    return inputs


def _bench_sizes(n, t):
    # PKU-MMD: about 40 labelled runs per video (actions and the background between them), so runs of ~T/40 frames
    return size(n, TEXT_DIM, t, PKU_CLASSES, run=max(1, t // 40), spare=8)


def _head_bench_sizes(n, t):
    # the model's use: the encoder's 64-channel feature with conv_feature (64 -> 768) as the head
    return size(n, TEXT_DIM, t, PKU_CLASSES, run=max(1, t // 40), spare=8, head=MODEL_CHANNELS)


def _slots_of(sz) -> int:
    return sz["N"] * -(-sz["T"] // sz["run"]) + sz["spare"]


def _frame_channels(sz) -> int:
    """Channels of the (N, ·, T) features the op reads: D, or the head's C."""
    return sz["D"] if sz.get("head") is None else sz["head"]


def flops(sz):
    # the segment means: one add per feature value; the M x M part: L and Lᵀ, d (3 M² D each way, twice in the
    # backward), the gradient of f (2 M² D), a few per pair for the softmaxes; the head: 2 M C D forward, 4 M C D
    # backward
    m, d = _slots_of(sz), sz["D"]
    means = sz["N"] * _frame_channels(sz) * sz["T"]
    head = 0 if sz.get("head") is None else 2 * m * sz["head"] * d
    return {"fwd": means + 6 * m * m * d + head, "bwd": means + 10 * m * m * d + 2 * head}


def min_bytes(sz, itemsize):
    # fwd: read the features (+ the (N, T) int64 frame_segment is not read); bwd: write their gradient and read
    # frame_segment
    values = sz["N"] * _frame_channels(sz) * sz["T"] * itemsize
    return {"fwd": values, "bwd": values + 8 * sz["N"] * sz["T"]}


SPEC = OpSpec(
    name="aris_losses",
    backends=BACKENDS,
    reference=aris_losses_reference,
    fused=aris_losses,
    make_inputs=make_inputs,
    grad_inputs=("features", "logit_scale", "head_weight", "head_bias"),
    grad_error_floor=gradient_error_floors,
    parity_sizes={
        "cpu": [size(4, 7, 31, 5), size(3, 16, 40, 3, run=4, ties=True), size(1, 1, 1, 1, spare=1),
                size(5, 33, 23, 6, run=2, spare=0), size(4, 37, 29, 5, head=3), size(2, 1, 9, 2, spare=1, head=1)],
        "cuda": [_bench_sizes(8, 6000), size(8, 768, 6000, 52, run=150, ties=True),
                 size(3, 1000, 777, 13, run=1), size(1, 5, 3001, 2, run=500), _head_bench_sizes(8, 6000),
                 size(3, 70, 777, 13, run=3, head=33)],
    },
    triton_module="trgnet_fast.ops.aris_losses.triton_kernels",
    # the backward starts with the forward's projections kernel again (recomputed, not saved)
    triton_kernels=("_al_means_kernel", "_al_projections_kernel", "_al_rows_kernel", "_al_similarity_kernel",
                    "_al_sum_kernel", "_al_projections_kernel", "_al_bwd_partials_kernel", "_al_bwd_coefficients_kernel",
                    "_al_bwd_segment_grad_kernel", "_al_bwd_frames_kernel"),
    bench=(BenchVariant("aris_losses", _bench_sizes, flops, min_bytes,
                        note="ARIS absolute + relative on e0 (D = 768, K = 52, ~40 segments per video)"),
           BenchVariant("aris_losses.head", _head_bench_sizes, flops, min_bytes,
                        note="the same from the encoder feature (C = 64) through the 64 -> 768 feature head",
                        triton_kernels=("_al_means_kernel", "_al_head_kernel", "_al_projections_kernel",
                                        "_al_rows_kernel", "_al_similarity_kernel", "_al_sum_kernel",
                                        "_al_projections_kernel", "_al_bwd_partials_kernel",
                                        "_al_bwd_coefficients_kernel", "_al_bwd_segment_grad_kernel",
                                        "_al_bwd_head_params_kernel", "_al_bwd_head_input_kernel",
                                        "_al_bwd_frames_kernel"))),
    emulation_min_cases=86,
    state_inputs=STATE_NAMES,
)
