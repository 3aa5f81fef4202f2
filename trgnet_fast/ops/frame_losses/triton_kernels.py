"""Triton kernels of the fused per-frame loss terms (docs/model.md#losses, docs/kernels.md#frame_losses).

Math, shapes and dtypes: the package docstring (``trgnet_fast/ops/frame_losses/__init__.py``). A row is one
(stage, sample) pair: logits[s, n] (K, T) and/or boundary_logits[s, n] (T,) (rows r < max(S, R) · N, s = r // N,
n = r % N). A tile is BK x BT: every class (BK = K rounded up to a power of two) of BT frames, so each frame's class
logsumexp is a register reduction; a frame's pair partners (next_frame, previous_frame) are read as gathered columns.
Sums in the compute dtype (fp32; fp64 for fp64 logits); every reduction over frames goes through per-program
partials summed in a fixed order (deterministic, no atomics).

Forward (2 launches, 3 with the time axis):

* ``_fl_time_lse_kernel`` (time axis; grid S·N): lse1 / lse2 of every class over the row's pair-starting / pair-ending
  frames, an online logsumexp over the row's tiles -> time_lse (S, N, 2, K).
* ``_fl_frames_kernel`` (grid rows x T tiles): each frame's CE, GS-TMSE and BCE, weighted and scaled by the stage
  means -> one (3,) partial per program.
* ``_fl_sum_kernel`` (one program): the partials summed in program order -> terms (3,).

Backward (1 launch, 2 with the time axis), recomputing every per-frame quantity:

* ``_fl_time_q_kernel`` (time axis; grid S·N): Q_k = Σ_u q_k(u) over the row, the lse's share of the gradient.
* ``_fl_frames_backward_kernel`` (grid rows x T tiles): grad_logits (CE + GS-TMSE at the frame as pair start, and as
  pair end through q of its previous frame) and grad_boundary_logits.

Memory: the forward saves its inputs and time_lse (S·N·2·K values); the backward allocates Q (S·N·K) and the
outputs.

Registered as ``torch.ops.trgnet_triton.frame_losses`` / ``frame_losses_backward`` (``triton_op`` + ``wrap_triton``,
autograd via ``register_autograd``, the native op's schemas).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from trgnet_fast.ops._checks import check_triton_tensor
from trgnet_fast.ops.frame_losses.autograd import make_backward, setup_context
from trgnet_fast.ops.frame_losses.reference import compute_dtype
from trgnet_fast.ops.frame_losses.validation import time_lse_shape, validate_backward_inputs, validate_inputs

TILE_ELEMENTS = 2048  # BK * BT of a tile: BT = 32 frames at PKU's K = 52 (BK = 64)
SUM_BLOCK = 256  # partials per step of the final sum
LAUNCH = {"num_warps": 4, "num_stages": 1}


def _tile(k: int) -> tuple[int, int]:
    """(BK, BT) of a tile for K classes."""
    bk = triton.next_power_of_2(k)
    return bk, max(16, TILE_ELEMENTS // bk)


# ------------------------------------------------------------------------------------------------
# device helpers

@triton.jit
def _partner(index_ptr, row_t, t, tm, T):
    """The partner frame of each frame of the tile (next_frame / previous_frame), whether it has one (another frame,
    in range), and the partner index made safe to read (the frame itself without one)."""
    other = tl.load(index_ptr + row_t + t, mask=tm, other=0)
    has = tm & (other != t) & (other >= 0) & (other < T)
    return tl.where(has, other, tl.where(tm, t, 0)), has


@triton.jit
def _load_columns(z_row, cols, k, km, col_mask, T, ACC: tl.constexpr):
    """(BK, BT) logits of the frames ``cols`` in the compute dtype, 0 on masked frames and padding classes."""
    return tl.load(z_row + k[:, None] * T + cols[None, :], mask=km[:, None] & col_mask[None, :], other=0.0).to(ACC)


@triton.jit
def _class_lse(z, km):
    """Per frame (column) logsumexp over the K classes of a (BK, BT) tile (``km``: the real classes)."""
    z = tl.where(km[:, None], z, float("-inf"))
    top = tl.max(z, axis=0)
    return top + tl.log(tl.sum(tl.exp(z - top[None, :]), axis=0))


@triton.jit
def _pair_difference(z_u, z_v, lse_u, lse_v, l2, l1, TIME_AXIS: tl.constexpr):
    """d_k of the pairs (u, v) column by column: time axis z_v - z_u - (l2 - l1), classes (z_v - lse_v) - (z_u -
    lse_u)."""
    if TIME_AXIS:
        d = z_v - z_u - (l2 - l1)[:, None]
    else:
        d = (z_v - lse_v[None, :]) - (z_u - lse_u[None, :])
    return d


@triton.jit
def _pair_gradient(d, pair, km, pair_w, thr2):
    """q = 2 · pair_weight · d where the pair exists and d² is not clamped, else 0 (BK, BT)."""
    keep = km[:, None] & pair[None, :] & (d * d <= thr2)
    return tl.where(keep, 2.0 * pair_w[None, :] * d, 0.0)


@triton.jit
def _time_lses(lse_ptr, row, k, km, K):
    """lse2, lse1 (BK,) of a row from time_lse (S, N, 2, K) (0 on the padding classes)."""
    base = lse_ptr + row * 2 * K
    return tl.load(base + k, mask=km, other=0.0), tl.load(base + K + k, mask=km, other=0.0)


@triton.jit
def _row_time_lses(lse_ptr, row, k, km, K, TIME_AXIS: tl.constexpr, BK: tl.constexpr, ACC: tl.constexpr):
    """``_time_lses`` on the time axis; zeros (nothing read: time_lse is empty) on the class axis."""
    if TIME_AXIS:
        l2, l1 = _time_lses(lse_ptr, row, k, km, K)
    else:
        l2 = tl.zeros([BK], ACC)
        l1 = tl.zeros([BK], ACC)
    return l2, l1


@triton.jit
def _softplus_neg(x):
    """softplus(-x) = log1p(exp(-|x|)) + max(-x, 0), log1p by log(u) · e / (u - 1) (exact where u rounds to 1)."""
    e = tl.exp(-tl.abs(x))
    u = 1.0 + e
    log1p = tl.where(u == 1.0, e, tl.log(u) * (e / tl.where(u == 1.0, 1.0, u - 1.0)))
    return log1p + tl.maximum(-x, 0.0)


@triton.jit
def _sigmoid_neg(x):
    """sigmoid(-x) without overflow."""
    e = tl.exp(-tl.abs(x))
    return tl.where(x >= 0, e / (1.0 + e), 1.0 / (1.0 + e))


# ------------------------------------------------------------------------------------------------
# forward

@triton.jit
def _fl_time_lse_kernel(z_ptr, next_ptr, prev_ptr, lse_ptr, N, K, T, BK: tl.constexpr, BT: tl.constexpr,
                        ACC: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)  # s * N + n
    n = row % N
    z_row = z_ptr + row * K * T
    k = tl.arange(0, BK)
    km = k < K
    top1 = tl.full([BK], float("-inf"), ACC)
    top2 = tl.full([BK], float("-inf"), ACC)
    sum1 = tl.zeros([BK], ACC)
    sum2 = tl.zeros([BK], ACC)
    for t0 in range(0, T, BT):
        t = t0 + tl.arange(0, BT)
        tm = t < T
        z = _load_columns(z_row, t, k, km, tm, T, ACC)
        _, starts = _partner(next_ptr, n * T, t, tm, T)
        _, ends = _partner(prev_ptr, n * T, t, tm, T)
        # online logsumexp over the frames of each set; an empty running max is taken as 0 (nothing is added)
        z1 = tl.where(starts[None, :], z, float("-inf"))
        new1 = tl.maximum(top1, tl.max(z1, axis=1))
        safe1 = tl.where(new1 == float("-inf"), 0.0, new1)
        sum1 = sum1 * tl.exp(top1 - safe1) + tl.sum(tl.exp(z1 - safe1[:, None]), axis=1)
        top1 = new1
        z2 = tl.where(ends[None, :], z, float("-inf"))
        new2 = tl.maximum(top2, tl.max(z2, axis=1))
        safe2 = tl.where(new2 == float("-inf"), 0.0, new2)
        sum2 = sum2 * tl.exp(top2 - safe2) + tl.sum(tl.exp(z2 - safe2[:, None]), axis=1)
        top2 = new2
    lse1 = tl.where(sum1 > 0, top1 + tl.log(tl.where(sum1 > 0, sum1, 1.0)), 0.0)
    lse2 = tl.where(sum2 > 0, top2 + tl.log(tl.where(sum2 > 0, sum2, 1.0)), 0.0)
    tl.store(lse_ptr + row * 2 * K + k, lse2, mask=km)
    tl.store(lse_ptr + row * 2 * K + K + k, lse1, mask=km)


@triton.jit
def _fl_frames_kernel(z_ptr, label_ptr, ce_w_ptr, next_ptr, pair_w_ptr, b_ptr, yb_ptr, bce_w_ptr, pos_w_ptr,
                      lse_ptr, part_ptr, S, R, N, K, T, thr2, TIME_AXIS: tl.constexpr, BK: tl.constexpr,
                      BT: tl.constexpr, ACC: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)  # s * N + n, over max(S, R) stages
    j = tl.program_id(1)
    s = row // N
    n = row % N
    t = j * BT + tl.arange(0, BT)
    tm = t < T
    ce = tl.full([], 0.0, ACC)
    gst = tl.full([], 0.0, ACC)
    bce = tl.full([], 0.0, ACC)
    if s < S:
        z_row = z_ptr + row * K * T
        k = tl.arange(0, BK)
        km = k < K
        z = _load_columns(z_row, t, k, km, tm, T, ACC)
        lse = _class_lse(z, km)
        y = tl.load(label_ptr + n * T + t, mask=tm, other=-1)
        in_range = tm & (y >= 0) & (y < K)
        z_y = tl.sum(tl.where(k[:, None] == y[None, :], z, 0.0), axis=0)
        ce_w = tl.load(ce_w_ptr + n * T + t, mask=tm, other=0.0)
        ce = tl.sum(tl.where(tm, ce_w * tl.where(in_range, lse - z_y, 0.0), 0.0), axis=0) / S
        v, pair = _partner(next_ptr, n * T, t, tm, T)
        z_v = _load_columns(z_row, v, k, km, tm, T, ACC)
        l2, l1 = _row_time_lses(lse_ptr, row, k, km, K, TIME_AXIS, BK, ACC)
        lse_v = lse if TIME_AXIS else _class_lse(z_v, km)
        d = _pair_difference(z, z_v, lse, lse_v, l2, l1, TIME_AXIS)
        d = tl.where(km[:, None] & pair[None, :], d, 0.0)
        per_pair = tl.sum(tl.minimum(d * d, thr2), axis=0)
        pair_w = tl.load(pair_w_ptr + n * T + t, mask=tm, other=0.0)
        gst = tl.sum(tl.where(pair, pair_w * per_pair, 0.0), axis=0) / (S * K)
    if s < R:
        x = tl.load(b_ptr + row * T + t, mask=tm, other=0.0).to(ACC)
        yb = tl.load(yb_ptr + n * T + t, mask=tm, other=0.0)
        bce_w = tl.load(bce_w_ptr + n * T + t, mask=tm, other=0.0)
        pos_w = tl.load(pos_w_ptr)
        loss = (1.0 - yb) * x + (1.0 + (pos_w - 1.0) * yb) * _softplus_neg(x)
        bce = tl.sum(tl.where(tm, bce_w * loss, 0.0), axis=0) / R
    slot = part_ptr + (row * tl.num_programs(1) + j) * 3
    tl.store(slot, ce)
    tl.store(slot + 1, gst)
    tl.store(slot + 2, bce)


@triton.jit
def _fl_sum_kernel(part_ptr, terms_ptr, P, BLOCK: tl.constexpr, ACC: tl.constexpr):
    i = tl.arange(0, BLOCK)
    ce = tl.zeros([BLOCK], ACC)
    gst = tl.zeros([BLOCK], ACC)
    bce = tl.zeros([BLOCK], ACC)
    for p0 in range(0, P, BLOCK):
        m = p0 + i < P
        ce += tl.load(part_ptr + (p0 + i) * 3, mask=m, other=0.0)
        gst += tl.load(part_ptr + (p0 + i) * 3 + 1, mask=m, other=0.0)
        bce += tl.load(part_ptr + (p0 + i) * 3 + 2, mask=m, other=0.0)
    tl.store(terms_ptr, tl.sum(ce, axis=0))
    tl.store(terms_ptr + 1, tl.sum(gst, axis=0))
    tl.store(terms_ptr + 2, tl.sum(bce, axis=0))


# ------------------------------------------------------------------------------------------------
# backward

@triton.jit
def _fl_time_q_kernel(z_ptr, next_ptr, pair_w_ptr, lse_ptr, q_ptr, N, K, T, thr2, BK: tl.constexpr,
                      BT: tl.constexpr, ACC: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    n = row % N
    z_row = z_ptr + row * K * T
    k = tl.arange(0, BK)
    km = k < K
    l2, l1 = _time_lses(lse_ptr, row, k, km, K)
    total = tl.zeros([BK], ACC)
    for t0 in range(0, T, BT):
        t = t0 + tl.arange(0, BT)
        tm = t < T
        z = _load_columns(z_row, t, k, km, tm, T, ACC)
        v, pair = _partner(next_ptr, n * T, t, tm, T)
        z_v = _load_columns(z_row, v, k, km, tm, T, ACC)
        d = _pair_difference(z, z_v, l1, l1, l2, l1, True)  # the time axis reads no class lse
        pair_w = tl.load(pair_w_ptr + n * T + t, mask=tm, other=0.0)
        total += tl.sum(_pair_gradient(d, pair, km, pair_w, thr2), axis=1)
    tl.store(q_ptr + row * K + k, total, mask=km)


@triton.jit
def _fl_frames_backward_kernel(g_ptr, z_ptr, label_ptr, ce_w_ptr, next_ptr, prev_ptr, pair_w_ptr, b_ptr, yb_ptr,
                               bce_w_ptr, pos_w_ptr, lse_ptr, q_ptr, gz_ptr, gb_ptr, S, R, N, K, T, thr2,
                               TIME_AXIS: tl.constexpr, BK: tl.constexpr, BT: tl.constexpr, ACC: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1)
    s = row // N
    n = row % N
    t = j * BT + tl.arange(0, BT)
    tm = t < T
    if s < S:
        g_ce = tl.load(g_ptr) / S
        g_gst = tl.load(g_ptr + 1) / (S * K)
        z_row = z_ptr + row * K * T
        k = tl.arange(0, BK)
        km = k < K
        z = _load_columns(z_row, t, k, km, tm, T, ACC)
        lse = _class_lse(z, km)
        softmax = tl.where(km[:, None], tl.exp(z - lse[None, :]), 0.0)
        y = tl.load(label_ptr + n * T + t, mask=tm, other=-1)
        in_range = tm & (y >= 0) & (y < K)
        ce_w = tl.load(ce_w_ptr + n * T + t, mask=tm, other=0.0)
        one_hot = tl.where(k[:, None] == y[None, :], 1.0, 0.0)
        grad = tl.where(in_range[None, :], (g_ce * ce_w)[None, :] * (softmax - one_hot), 0.0)
        l2, l1 = _row_time_lses(lse_ptr, row, k, km, K, TIME_AXIS, BK, ACC)
        # the frame as the start of its pair (u = t, v = next)
        v, pair = _partner(next_ptr, n * T, t, tm, T)
        z_v = _load_columns(z_row, v, k, km, tm, T, ACC)
        lse_v = lse if TIME_AXIS else _class_lse(z_v, km)
        pair_w = tl.load(pair_w_ptr + n * T + t, mask=tm, other=0.0)
        q_start = _pair_gradient(_pair_difference(z, z_v, lse, lse_v, l2, l1, TIME_AXIS), pair, km, pair_w, thr2)
        # the frame as the end of the pair of its previous frame (u = p, v = t)
        p, ends = _partner(prev_ptr, n * T, t, tm, T)
        z_p = _load_columns(z_row, p, k, km, tm, T, ACC)
        lse_p = lse if TIME_AXIS else _class_lse(z_p, km)
        pair_w_p = tl.load(pair_w_ptr + n * T + p, mask=tm, other=0.0)
        q_end = _pair_gradient(_pair_difference(z_p, z, lse_p, lse, l2, l1, TIME_AXIS), ends, km, pair_w_p, thr2)
        e = g_gst * (q_end - q_start)
        if TIME_AXIS:
            q_row = tl.load(q_ptr + row * K + k, mask=km, other=0.0)
            share1 = tl.exp(tl.where(pair[None, :], z - l1[:, None], float("-inf")))  # pair: the frame starts one
            share2 = tl.exp(tl.where(ends[None, :], z - l2[:, None], float("-inf")))
            grad += e + (g_gst * q_row)[:, None] * (share1 - share2)
        else:
            grad += e - softmax * tl.sum(tl.where(km[:, None], e, 0.0), axis=0)[None, :]
        tl.store(gz_ptr + row * K * T + k[:, None] * T + t[None, :], grad.to(gz_ptr.dtype.element_ty),
                 mask=km[:, None] & tm[None, :])
    if s < R:
        g_bce = tl.load(g_ptr + 2) / R
        x = tl.load(b_ptr + row * T + t, mask=tm, other=0.0).to(ACC)
        yb = tl.load(yb_ptr + n * T + t, mask=tm, other=0.0)
        bce_w = tl.load(bce_w_ptr + n * T + t, mask=tm, other=0.0)
        pos_w = tl.load(pos_w_ptr)
        grad_b = g_bce * bce_w * ((1.0 - yb) - (1.0 + (pos_w - 1.0) * yb) * _sigmoid_neg(x))
        tl.store(gb_ptr + row * T + t, grad_b.to(gb_ptr.dtype.element_ty), mask=tm)


# ------------------------------------------------------------------------------------------------
# launchers

def _acc_dtype(dtype: torch.dtype):
    return tl.float64 if compute_dtype(dtype) == torch.float64 else tl.float32


@triton_op("trgnet_triton::frame_losses", mutates_args=())
def frame_losses_triton(logits: torch.Tensor, labels: torch.Tensor, ce_weight: torch.Tensor,
                        next_frame: torch.Tensor, previous_frame: torch.Tensor, pair_weight: torch.Tensor,
                        boundary_logits: torch.Tensor, boundary: torch.Tensor, boundary_weight: torch.Tensor,
                        pos_weight: torch.Tensor, threshold: float,
                        time_axis: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """terms (3,) and time_lse (package docstring). 2 launches, 3 with the time axis. Raises ``ValueError`` as
    ``validation.validate_inputs(kernel=True)``."""
    op = "trgnet_triton::frame_losses"
    tensors = (logits, labels, ce_weight, next_frame, previous_frame, pair_weight, boundary_logits, boundary,
               boundary_weight, pos_weight)
    validate_inputs(op, tensors, threshold, time_axis, kernel=True)
    check_triton_tensor(op, "logits", logits)
    s, n, k, t = logits.shape
    r = boundary_logits.shape[0]
    acc = compute_dtype(logits.dtype)
    bk, bt = _tile(k)
    time_lse = torch.empty(time_lse_shape(s, n, k, time_axis), dtype=acc, device=logits.device)
    if time_axis:
        wrap_triton(_fl_time_lse_kernel)[(s * n,)](logits, next_frame, previous_frame, time_lse, n, k, t, BK=bk,
                                                   BT=bt, ACC=_acc_dtype(logits.dtype), **LAUNCH)
    grid = (max(s, r) * n, triton.cdiv(t, bt))
    partials = torch.empty((grid[0] * grid[1], 3), dtype=acc, device=logits.device)
    wrap_triton(_fl_frames_kernel)[grid](
        logits, labels, ce_weight, next_frame, pair_weight, boundary_logits, boundary, boundary_weight, pos_weight,
        time_lse if time_axis else partials, partials, s, r, n, k, t, threshold * threshold, TIME_AXIS=time_axis,
        BK=bk, BT=bt, ACC=_acc_dtype(logits.dtype), **LAUNCH)
    terms = torch.empty((3,), dtype=acc, device=logits.device)
    wrap_triton(_fl_sum_kernel)[(1,)](partials, terms, partials.shape[0], BLOCK=SUM_BLOCK,
                                      ACC=_acc_dtype(logits.dtype))
    return terms, time_lse


@triton_op("trgnet_triton::frame_losses_backward", mutates_args=())
def frame_losses_backward_triton(grad_terms: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
                                 ce_weight: torch.Tensor, next_frame: torch.Tensor, previous_frame: torch.Tensor,
                                 pair_weight: torch.Tensor, boundary_logits: torch.Tensor, boundary: torch.Tensor,
                                 boundary_weight: torch.Tensor, pos_weight: torch.Tensor, time_lse: torch.Tensor,
                                 threshold: float, time_axis: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``frame_losses_triton``'s terms w.r.t. logits and boundary_logits given grad_terms (3,). 1 launch,
    2 with the time axis. Raises ``ValueError`` as ``validation.validate_backward_inputs``."""
    tensors = (logits, labels, ce_weight, next_frame, previous_frame, pair_weight, boundary_logits, boundary,
               boundary_weight, pos_weight)
    validate_backward_inputs("trgnet_triton::frame_losses_backward", grad_terms, tensors, time_lse, threshold,
                             time_axis)
    s, n, k, t = logits.shape
    r = boundary_logits.shape[0]
    acc = _acc_dtype(logits.dtype)
    bk, bt = _tile(k)
    thr2 = threshold * threshold
    q = torch.empty((s, n, k) if time_axis else (0,), dtype=compute_dtype(logits.dtype), device=logits.device)
    if time_axis:
        wrap_triton(_fl_time_q_kernel)[(s * n,)](logits, next_frame, pair_weight, time_lse, q, n, k, t, thr2, BK=bk,
                                                 BT=bt, ACC=acc, **LAUNCH)
    grad_logits = torch.empty_like(logits)
    grad_boundary = torch.empty_like(boundary_logits)
    wrap_triton(_fl_frames_backward_kernel)[(max(s, r) * n, triton.cdiv(t, bt))](
        grad_terms, logits, labels, ce_weight, next_frame, previous_frame, pair_weight, boundary_logits, boundary,
        boundary_weight, pos_weight, time_lse if time_axis else grad_terms, q if time_axis else grad_terms,
        grad_logits, grad_boundary, s, r, n, k, t, thr2, TIME_AXIS=time_axis, BK=bk, BT=bt, ACC=acc, **LAUNCH)
    return grad_logits, grad_boundary


frame_losses_triton.register_autograd(make_backward(frame_losses_backward_triton), setup_context=setup_context)
