"""Triton kernels of the fused ARIS terms (docs/model.md#aris-absolute, docs/model.md#aris-relative,
docs/kernels.md#aris_losses).

Math, shapes and dtypes: the package docstring (``trgnet_fast/ops/aris_losses/__init__.py``). Everything is
computed in the compute dtype (fp32; fp64 for fp64 features); 16-bit features are loaded and widened. Every
reduction is a fixed-order sum of per-program partials (deterministic, no atomics) and nothing is read on the host.

No M x M matrix is kept from one direction to the other (the forward keeps d between two of its kernels): a "row"
program i walks the columns j in blocks of BJ. The logits need no pass over D per pair: L_ij = s · proj[i, label_j]
/ ‖f_i‖ and Lᵀ_ij = L_ji = s · proj[j, label_i] / ‖f_j‖, with proj = f Eᵀ (M, K) computed once per direction. The
distances do: ``_squared_distances`` sums (f_i − f_j)² over D in blocks of BD for a block of columns. The ties of
the largest distance are found by equality, so d must come out bit for bit the same in every kernel, and d_ij ==
d_ji: every kernel computes it with that one helper, at the same BJ, BD and number of warps (the same register
layout, so the same order of the sum; checked in the compiled sm_90 TTGIR), with an explicit fma (the square of
f_i − f_j is that of f_j − f_i).

Forward (5 launches):

* ``_al_means_kernel`` (grid M x D blocks): f, the mean of each valid slot's frames, read as BD x BT tiles of the
  slot's contiguous frame range (the only pass over the (N, D, T) features); padding slots 0. With the feature head
  it averages the (N, C, T) input into m (M, C), and ``_al_head_kernel`` (grid M x D blocks) gives f = W m + b for
  the valid slots (6 launches).
* ``_al_projections_kernel`` (grid M): ‖f_i‖ and proj[i, k] = f_i·e_k.
* ``_al_rows_kernel`` (grid M): row i of L + bias and Lᵀ + bias -> their logsumexps (online) and the row's share of
  the absolute term; row i of d -> the distance workspace, its maximum and how many of its M entries equal it.
* ``_al_similarity_kernel`` (grid M): dmax and c from the row maxima and counts (every program alike; program 0 writes
  max_distance); row i of P + bias from the stored distances -> its logsumexp and share of the relative term.
* ``_al_sum_kernel`` (one program): the row shares summed in row order -> terms (2,).

Backward (5 launches), recomputing L, d and P from the saved f, row_lse and max_distance:

* ``_al_projections_kernel`` again (nothing of it is saved).
* ``_al_bwd_partials_kernel`` (grid M): W_i = Σ_j w_ij of both targets, and row i's shares of grad s =
  Σ_ij G_ij f̂_i·ê_j and of grad dmax = Σ_ij H_ij d_ij / (dmax + tiny)² (G's second half summed over the row of Lᵀ,
  so that a row needs its own W only).
* ``_al_bwd_coefficients_kernel`` (grid M): both shares summed in row order (every program alike; program 0 writes
  grad_logit_scale); row i of G and of c_ij = (δ_ij + δ_ji) / d_ij -> the coefficient workspace, with the row's
  f̂_i·g_i / s = Σ_j G_ij f̂_i·ê_j and Σ_j c_ij.
* ``_al_bwd_segment_grad_kernel`` (grid M x D blocks): g_i = s Σ_j G_ij ê_j and Σ_j c_ij f_j -> grad f_i (the
  normalisation's backward and the distances' gradient) / count_i, 0 for padding slots. With the feature head
  grad f_i = γ_i itself, then ``_al_bwd_head_params_kernel`` (grid D blocks x C blocks: Σ_i γ_i m_iᵀ and Σ_i γ_i,
  slots in order) and ``_al_bwd_head_input_kernel`` (grid M x C blocks: Wᵀ γ_i / count_i) (7 launches).
* ``_al_bwd_frames_kernel`` (grid N x T blocks x D blocks): every element of grad_features written once: the row
  of grad f / count (with the head: Wᵀ γ / count, C wide) of the frame's slot, or 0 (the only pass over the
  gradient; no memset).

Memory: the forward returns f (M, D), row_lse (3, M) and max_distance (2,) for the backward (the autograd glue
saves them with the inputs other than the features); its workspace is the projections (M, K) and norms (M,), the
distances (M, M), the row shares and maxima (M, 3) and the row counts (M,) int32. The backward's: the projections
and norms again, W (2, M), the row shares (M, 2), G and c (2, M, M), the row sums (M, 2) and grad f (M, D). At
M = 400, D = 768, K = 52 in fp32: 0.73 MB forward, 2.6 MB backward.

Registered as ``torch.ops.trgnet_triton.aris_losses`` / ``aris_losses_backward`` (``triton_op`` + ``wrap_triton``,
autograd via ``register_autograd``, the native op's schemas).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from trgnet_fast.ops._checks import check_backend_dtype, check_triton_tensor
from trgnet_fast.ops.aris_losses.autograd import make_backward, setup_context
from trgnet_fast.ops.aris_losses.reference import DROPPED_BIAS, NORM_EPS, compute_dtype
from trgnet_fast.ops.aris_losses.validation import validate_backward_inputs, validate_inputs

FRAME_TILE = (16, 128)  # (BD, BT) of the mean and frame-gradient tiles: T is the contiguous axis
PAIR_TILE = (32, 64)  # (BJ, BD) of every M x M pass; fixed, with LAUNCH: d is the same bits in every kernel
HEAD_TILE = (32, 64)  # (BC, BD) of the feature head's small (M, C) x (C, D) products
SUM_BLOCK = 256  # rows per step of the fixed-order sums
LAUNCH = {"num_warps": 4, "num_stages": 1}  # the same in every kernel: the layout fixes the order of d's sum

_DROPPED = tl.constexpr(DROPPED_BIAS)
_FLOOR = tl.constexpr(NORM_EPS)


# ------------------------------------------------------------------------------------------------
# device helpers

@triton.jit
def _sqrt(x, ACC: tl.constexpr):
    """IEEE-rounded square root (tl.sqrt of fp32 may be the approximate one; sqrt_rn takes fp32 only)."""
    if ACC == tl.float64:
        root = tl.sqrt(x)
    else:
        root = tl.sqrt_rn(x)
    return root


@triton.jit
def _const(value: tl.constexpr, ACC: tl.constexpr):
    """``value`` rounded once to the compute dtype (a Python float in an expression would be an fp32 constant)."""
    return tl.full([], value, ACC)


@triton.jit
def _row_count(valid_ptr, M, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """rows = max(Σ valid, 1) in the compute dtype."""
    total = tl.zeros([BLOCK], tl.int32)
    for m0 in range(0, M, BLOCK):
        k = m0 + tl.arange(0, BLOCK)
        total += (tl.load(valid_ptr + k, mask=k < M, other=0) != 0).to(tl.int32)
    return tl.maximum(tl.sum(total, axis=0), 1).to(ACC)


@triton.jit
def _label(label_ptr, j, jm, K):
    """The labels of slots j clamped to [0, K) (0 where ``jm`` is False)."""
    return tl.minimum(tl.maximum(tl.load(label_ptr + j, mask=jm, other=0), 0), K - 1)


@triton.jit
def _valid(valid_ptr, j, jm):
    """segment_valid of slots j (False where ``jm`` is False)."""
    return tl.load(valid_ptr + j, mask=jm, other=0) != 0


@triton.jit
def _norm(f_ptr, i, D, BD: tl.constexpr, ACC: tl.constexpr):
    """‖f_i‖ of row i of f (M, D)."""
    acc = tl.zeros([BD], ACC)
    for d0 in range(0, D, BD):
        d = d0 + tl.arange(0, BD)
        x = tl.load(f_ptr + i * D + d, mask=d < D, other=0.0)
        acc += x * x
    return _sqrt(tl.sum(acc, axis=0), ACC)


@triton.jit
def _cosines(proj_ptr, norm_ptr, i, label_i, norm_i, j, jm, label_j, K, ACC: tl.constexpr):
    """f̂_i·ê_j and f̂_j·ê_i (BJ,) from the projections (0 past M); ``norm_i`` already floored."""
    floor = _const(_FLOOR, ACC)
    cos_l = tl.load(proj_ptr + i * K + label_j, mask=jm, other=0.0) / norm_i
    norm_j = tl.maximum(tl.load(norm_ptr + j, mask=jm, other=0.0), floor)
    return cos_l, tl.load(proj_ptr + j * K + label_i, mask=jm, other=0.0) / norm_j


@triton.jit
def _squared_distances(f_ptr, i, j, jm, D, BJ: tl.constexpr, BD: tl.constexpr, ACC: tl.constexpr):
    """Σ_d (f_i − f_j)² of row i against the columns j (BJ,) (0 past M). The one place they are summed (fixed
    channel order, explicit fma): see the module docstring."""
    sq = tl.zeros([BJ, BD], ACC)
    for d0 in range(0, D, BD):
        d = d0 + tl.arange(0, BD)
        dm = d < D
        f_i = tl.load(f_ptr + i * D + d, mask=dm, other=0.0)
        f_j = tl.load(f_ptr + j[:, None] * D + d[None, :], mask=jm[:, None] & dm[None, :], other=0.0)
        diff = f_i[None, :] - f_j
        sq = tl.fma(diff, diff, sq)
    return tl.sum(sq, axis=1)


@triton.jit
def _distances(f_ptr, i, j, jm, pair, D, TINY: tl.constexpr, BJ: tl.constexpr, BD: tl.constexpr,
               ACC: tl.constexpr):
    """d_ij (BJ,): sqrt(max(sq, tiny)) where sq > 0 for a pair of valid slots, else 0 (the reference's clamp)."""
    sq = _squared_distances(f_ptr, i, j, jm, D, BJ, BD, ACC)
    root = _sqrt(tl.maximum(sq, _const(TINY, ACC)), ACC)
    return tl.where(pair & (sq > 0), root, 0.0)


@triton.jit
def _bias(valid_row, valid_col, ACC: tl.constexpr):
    """−1e30 where a valid row meets a padding column, else 0."""
    return tl.where(valid_row & ~valid_col, _const(_DROPPED, ACC), 0.0)


@triton.jit
def _lse_step(top, total, z):
    """The running (max, Σ exp(z − max)) of a row after its block z (−inf past M). The first block holds column 0,
    so the max is finite from then on."""
    new = tl.maximum(top, tl.max(z, axis=0))
    return new, total * tl.exp(top - new) + tl.sum(tl.exp(z - new), axis=0)


@triton.jit
def _sum_column(ptr, M, WIDTH: tl.constexpr, COL: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """Σ_i ptr[i, COL] of an (M, WIDTH) buffer, in a fixed order."""
    total = tl.zeros([BLOCK], ACC)
    for m0 in range(0, M, BLOCK):
        k = m0 + tl.arange(0, BLOCK)
        total += tl.load(ptr + k * WIDTH + COL, mask=k < M, other=0.0)
    return tl.sum(total, axis=0)


# ------------------------------------------------------------------------------------------------
# both directions

@triton.jit
def _al_projections_kernel(f_ptr, e_ptr, proj_ptr, norm_ptr, K, D, BK: tl.constexpr, BD: tl.constexpr,
                           ACC: tl.constexpr):
    i = tl.program_id(0).to(tl.int64)
    tl.store(norm_ptr + i, _norm(f_ptr, i, D, BD, ACC))
    for k0 in range(0, K, BK):
        k = k0 + tl.arange(0, BK)
        km = k < K
        acc = tl.zeros([BK, BD], ACC)
        for d0 in range(0, D, BD):
            d = d0 + tl.arange(0, BD)
            dm = d < D
            f_i = tl.load(f_ptr + i * D + d, mask=dm, other=0.0)
            e = tl.load(e_ptr + k[:, None] * D + d[None, :], mask=km[:, None] & dm[None, :], other=0.0)
            acc += e * f_i[None, :]
        tl.store(proj_ptr + i * K + k, tl.sum(acc, axis=1), mask=km)


# ------------------------------------------------------------------------------------------------
# forward

@triton.jit
def _al_means_kernel(x_ptr, video_ptr, start_ptr, count_ptr, valid_ptr, f_ptr, N, D, T, BD: tl.constexpr,
                     BT: tl.constexpr, ACC: tl.constexpr):
    i = tl.program_id(0).to(tl.int64)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    dm = d < D
    valid = tl.load(valid_ptr + i) != 0
    count = tl.load(count_ptr + i)
    video = tl.minimum(tl.maximum(tl.load(video_ptr + i), 0), N - 1)
    start = tl.load(start_ptr + i)
    lo = tl.maximum(start, 0)
    hi = tl.minimum(start + count.to(tl.int64), T)  # the range clamped to [0, T)
    hi = tl.where(valid, hi, lo)  # padding slots read nothing
    base = x_ptr + video * D * T + d[:, None].to(tl.int64) * T
    acc = tl.zeros([BD, BT], ACC)
    for t0 in range(lo, hi, BT):
        t = t0 + tl.arange(0, BT)
        acc += tl.load(base + t[None, :], mask=dm[:, None] & (t < hi)[None, :], other=0.0).to(ACC)
    mean = tl.where(valid, tl.sum(acc, axis=1) / count, 0.0)
    tl.store(f_ptr + i * D + d, mean, mask=dm)


@triton.jit
def _al_rows_kernel(f_ptr, proj_ptr, norm_ptr, label_ptr, valid_ptr, scale_ptr, wa_ptr, lwa_ptr, dist_ptr, lse_ptr,
                    stat_ptr, cnt_ptr, M, K, D, TINY: tl.constexpr, BJ: tl.constexpr, BD: tl.constexpr,
                    BLOCK: tl.constexpr, ACC: tl.constexpr):
    i = tl.program_id(0).to(tl.int64)
    valid_i = tl.load(valid_ptr + i) != 0
    label_i = _label(label_ptr, i, True, K)
    s = tl.load(scale_ptr)
    norm_i = tl.maximum(tl.load(norm_ptr + i), _const(_FLOOR, ACC))
    top_l = tl.full([], float("-inf"), ACC)
    sum_l = tl.zeros([], ACC)
    top_t = tl.full([], float("-inf"), ACC)
    sum_t = tl.zeros([], ACC)
    kl_l = tl.zeros([BJ], ACC)  # Σ w (lw − z): the KL row is that + W · lse
    kl_t = tl.zeros([BJ], ACC)
    w_sum = tl.zeros([BJ], ACC)
    d_max = tl.zeros([], ACC)  # d >= 0
    d_cnt = tl.zeros([], tl.int32)
    for j0 in range(0, M, BJ):
        j = j0 + tl.arange(0, BJ)
        jm = j < M
        valid_j = _valid(valid_ptr, j, jm)
        label_j = _label(label_ptr, j, jm, K)
        cos_l, cos_t = _cosines(proj_ptr, norm_ptr, i, label_i, norm_i, j, jm, label_j, K, ACC)
        bias = _bias(valid_i, valid_j, ACC)
        z_l = s * cos_l + bias
        z_t = s * cos_t + bias
        top_l, sum_l = _lse_step(top_l, sum_l, tl.where(jm, z_l, float("-inf")))
        top_t, sum_t = _lse_step(top_t, sum_t, tl.where(jm, z_t, float("-inf")))
        w = tl.load(wa_ptr + i * M + j, mask=jm, other=0.0)
        lw = tl.load(lwa_ptr + i * M + j, mask=jm, other=0.0)
        kl_l += tl.where(jm, w * (lw - z_l), 0.0)
        kl_t += tl.where(jm, w * (lw - z_t), 0.0)
        w_sum += w
        dist = _distances(f_ptr, i, j, jm, valid_i & valid_j, D, TINY, BJ, BD, ACC)
        tl.store(dist_ptr + i * M + j, dist, mask=jm)
        dist = tl.where(jm, dist, -1.0)
        new_max = tl.maximum(d_max, tl.max(dist, axis=0))
        d_cnt = tl.where(d_max == new_max, d_cnt, 0) + tl.sum((dist == new_max).to(tl.int32), axis=0)
        d_max = new_max
    lse_l = top_l + tl.log(sum_l)
    lse_t = top_t + tl.log(sum_t)
    w_row = tl.sum(w_sum, axis=0)
    rows = _row_count(valid_ptr, M, BLOCK, ACC)
    absolute = ((tl.sum(kl_l, axis=0) + w_row * lse_l) + (tl.sum(kl_t, axis=0) + w_row * lse_t)) / (2 * rows)
    tl.store(lse_ptr + i, lse_l)
    tl.store(lse_ptr + M + i, lse_t)
    tl.store(stat_ptr + i * 3, absolute)
    tl.store(stat_ptr + i * 3 + 2, d_max)
    tl.store(cnt_ptr + i, d_cnt)


@triton.jit
def _al_similarity_kernel(dist_ptr, valid_ptr, wr_ptr, lwr_ptr, lse_ptr, stat_ptr, cnt_ptr, maxd_ptr, M,
                          TINY: tl.constexpr, BJ: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    i = tl.program_id(0).to(tl.int64)
    top = tl.zeros([BLOCK], ACC)
    for m0 in range(0, M, BLOCK):
        k = m0 + tl.arange(0, BLOCK)
        top = tl.maximum(top, tl.load(stat_ptr + k * 3 + 2, mask=k < M, other=0.0))
    d_max = tl.max(top, axis=0)
    ties = tl.zeros([BLOCK], tl.int64)  # c counts among all M² entries
    for m0 in range(0, M, BLOCK):
        k = m0 + tl.arange(0, BLOCK)
        row_max = tl.load(stat_ptr + k * 3 + 2, mask=k < M, other=-1.0)
        ties += tl.where(row_max == d_max, tl.load(cnt_ptr + k, mask=k < M, other=0), 0).to(tl.int64)
    if i == 0:
        tl.store(maxd_ptr, d_max)
        tl.store(maxd_ptr + 1, tl.sum(ties, axis=0).to(ACC))
    den = d_max + _const(TINY, ACC)
    valid_i = tl.load(valid_ptr + i) != 0
    top_p = tl.full([], float("-inf"), ACC)
    sum_p = tl.zeros([], ACC)
    kl = tl.zeros([BJ], ACC)
    w_sum = tl.zeros([BJ], ACC)
    for j0 in range(0, M, BJ):
        j = j0 + tl.arange(0, BJ)
        jm = j < M
        dist = tl.load(dist_ptr + i * M + j, mask=jm, other=0.0)
        z = 1.0 - dist / den + _bias(valid_i, _valid(valid_ptr, j, jm), ACC)
        top_p, sum_p = _lse_step(top_p, sum_p, tl.where(jm, z, float("-inf")))
        w = tl.load(wr_ptr + i * M + j, mask=jm, other=0.0)
        lw = tl.load(lwr_ptr + i * M + j, mask=jm, other=0.0)
        kl += tl.where(jm, w * (lw - z), 0.0)
        w_sum += w
    lse_p = top_p + tl.log(sum_p)
    rows = _row_count(valid_ptr, M, BLOCK, ACC)
    tl.store(lse_ptr + 2 * M + i, lse_p)
    tl.store(stat_ptr + i * 3 + 1, (tl.sum(kl, axis=0) + tl.sum(w_sum, axis=0) * lse_p) / rows)


@triton.jit
def _al_sum_kernel(stat_ptr, terms_ptr, M, BLOCK: tl.constexpr, ACC: tl.constexpr):
    tl.store(terms_ptr, _sum_column(stat_ptr, M, 3, 0, BLOCK, ACC))
    tl.store(terms_ptr + 1, _sum_column(stat_ptr, M, 3, 1, BLOCK, ACC))


# ------------------------------------------------------------------------------------------------
# backward

@triton.jit
def _al_bwd_partials_kernel(g_ptr, f_ptr, proj_ptr, norm_ptr, label_ptr, valid_ptr, scale_ptr, wa_ptr, wr_ptr,
                            lse_ptr, maxd_ptr, wsum_ptr, part_ptr, M, K, D, TINY: tl.constexpr, BJ: tl.constexpr,
                            BD: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    i = tl.program_id(0).to(tl.int64)
    valid_i = tl.load(valid_ptr + i) != 0
    label_i = _label(label_ptr, i, True, K)
    s = tl.load(scale_ptr)
    den = tl.load(maxd_ptr) + _const(TINY, ACC)
    wa_row = tl.zeros([BJ], ACC)
    wr_row = tl.zeros([BJ], ACC)
    for j0 in range(0, M, BJ):  # W_i first: the terms below are formed element by element, as autograd's
        j = j0 + tl.arange(0, BJ)
        wa_row += tl.load(wa_ptr + i * M + j, mask=j < M, other=0.0)
        wr_row += tl.load(wr_ptr + i * M + j, mask=j < M, other=0.0)
    wa_i = tl.sum(wa_row, axis=0)
    wr_i = tl.sum(wr_row, axis=0)
    lse_l = tl.load(lse_ptr + i)
    lse_t = tl.load(lse_ptr + M + i)
    lse_p = tl.load(lse_ptr + 2 * M + i)
    norm_i = tl.maximum(tl.load(norm_ptr + i), _const(_FLOOR, ACC))
    scale_part = tl.zeros([BJ], ACC)
    max_part = tl.zeros([BJ], ACC)
    for j0 in range(0, M, BJ):
        j = j0 + tl.arange(0, BJ)
        jm = j < M
        valid_j = _valid(valid_ptr, j, jm)
        cos_l, cos_t = _cosines(proj_ptr, norm_ptr, i, label_i, norm_i, j, jm, _label(label_ptr, j, jm, K), K,
                                ACC)
        bias = _bias(valid_i, valid_j, ACC)
        dist = _distances(f_ptr, i, j, jm, valid_i & valid_j, D, TINY, BJ, BD, ACC)
        wa = tl.load(wa_ptr + i * M + j, mask=jm, other=0.0)
        wr = tl.load(wr_ptr + i * M + j, mask=jm, other=0.0)
        p_l = tl.exp(s * cos_l + bias - lse_l)
        p_t = tl.exp(s * cos_t + bias - lse_t)
        p_p = tl.exp(1.0 - dist / den + bias - lse_p)
        scale_part += tl.where(jm, (wa_i * p_l - wa) * cos_l + (wa_i * p_t - wa) * cos_t, 0.0)
        # d / den / den: (dmax + tiny)² underflows when dmax = 0
        max_part += tl.where(jm, (wr_i * p_p - wr) * (dist / den / den), 0.0)
    rows = _row_count(valid_ptr, M, BLOCK, ACC)
    tl.store(wsum_ptr + i, wa_i)
    tl.store(wsum_ptr + M + i, wr_i)
    tl.store(part_ptr + i * 2, tl.load(g_ptr) / (2 * rows) * tl.sum(scale_part, axis=0))
    tl.store(part_ptr + i * 2 + 1, tl.load(g_ptr + 1) / rows * tl.sum(max_part, axis=0))


@triton.jit
def _al_bwd_coefficients_kernel(g_ptr, f_ptr, proj_ptr, norm_ptr, label_ptr, valid_ptr, scale_ptr, wa_ptr, wr_ptr,
                                lse_ptr, maxd_ptr, wsum_ptr, part_ptr, coef_ptr, rsum_ptr, gscale_ptr, M, K, D,
                                TINY: tl.constexpr, BJ: tl.constexpr, BD: tl.constexpr, BLOCK: tl.constexpr,
                                ACC: tl.constexpr):
    i = tl.program_id(0).to(tl.int64)
    grad_max = _sum_column(part_ptr, M, 2, 1, BLOCK, ACC)
    if i == 0:
        tl.store(gscale_ptr, _sum_column(part_ptr, M, 2, 0, BLOCK, ACC))
    valid_i = tl.load(valid_ptr + i) != 0
    label_i = _label(label_ptr, i, True, K)
    s = tl.load(scale_ptr)
    rows = _row_count(valid_ptr, M, BLOCK, ACC)
    k_abs = tl.load(g_ptr) / (2 * rows)
    k_rel = tl.load(g_ptr + 1) / rows
    d_max = tl.load(maxd_ptr)
    den = d_max + _const(TINY, ACC)
    tie = grad_max / tl.load(maxd_ptr + 1)  # dmax's gradient, shared by the c entries equal to it
    wa_i = tl.load(wsum_ptr + i)
    wr_i = tl.load(wsum_ptr + M + i)
    lse_l = tl.load(lse_ptr + i)
    lse_p = tl.load(lse_ptr + 2 * M + i)
    norm_i = tl.maximum(tl.load(norm_ptr + i), _const(_FLOOR, ACC))
    dot = tl.zeros([BJ], ACC)
    c_sum = tl.zeros([BJ], ACC)
    for j0 in range(0, M, BJ):
        j = j0 + tl.arange(0, BJ)
        jm = j < M
        valid_j = _valid(valid_ptr, j, jm)
        cos_l, _ = _cosines(proj_ptr, norm_ptr, i, label_i, norm_i, j, jm, _label(label_ptr, j, jm, K), K, ACC)
        logit = s * cos_l  # L_ij = Lᵀ_ji
        dist = _distances(f_ptr, i, j, jm, valid_i & valid_j, D, TINY, BJ, BD, ACC)
        sim = 1.0 - dist / den  # P_ij = P_ji (d is symmetric bit for bit)
        bias_ij = _bias(valid_i, valid_j, ACC)
        bias_ji = _bias(valid_j, valid_i, ACC)
        wa_j = tl.load(wsum_ptr + j, mask=jm, other=0.0)
        wr_j = tl.load(wsum_ptr + M + j, mask=jm, other=0.0)
        lse_t_j = tl.load(lse_ptr + M + j, mask=jm, other=0.0)
        lse_p_j = tl.load(lse_ptr + 2 * M + j, mask=jm, other=0.0)
        wa_ij = tl.load(wa_ptr + i * M + j, mask=jm, other=0.0)
        wa_ji = tl.load(wa_ptr + j * M + i, mask=jm, other=0.0)
        wr_ij = tl.load(wr_ptr + i * M + j, mask=jm, other=0.0)
        wr_ji = tl.load(wr_ptr + j * M + i, mask=jm, other=0.0)
        grad_l = k_abs * ((wa_i * tl.exp(logit + bias_ij - lse_l) - wa_ij)
                          + (wa_j * tl.exp(logit + bias_ji - lse_t_j) - wa_ji))
        grad_p = k_rel * ((wr_i * tl.exp(sim + bias_ij - lse_p) - wr_ij)
                          + (wr_j * tl.exp(sim + bias_ji - lse_p_j) - wr_ji))  # H_ij + H_ji
        delta = tl.where(valid_i & valid_j, tl.where(dist == d_max, 2 * tie, 0.0) - grad_p / den, 0.0)
        coef = tl.where(dist > 0, delta / tl.where(dist > 0, dist, 1.0), 0.0)
        grad_l = tl.where(jm, grad_l, 0.0)
        coef = tl.where(jm, coef, 0.0)
        tl.store(coef_ptr + i * M + j, grad_l, mask=jm)
        tl.store(coef_ptr + (M + i) * M + j, coef, mask=jm)
        dot += grad_l * cos_l
        c_sum += coef
    tl.store(rsum_ptr + i * 2, tl.sum(dot, axis=0))
    tl.store(rsum_ptr + i * 2 + 1, tl.sum(c_sum, axis=0))


@triton.jit
def _al_bwd_segment_grad_kernel(f_ptr, e_ptr, norm_ptr, label_ptr, valid_ptr, count_ptr, scale_ptr, coef_ptr,
                                rsum_ptr, gf_ptr, M, K, D, PER_FRAME: tl.constexpr, BJ: tl.constexpr,
                                BD: tl.constexpr, ACC: tl.constexpr):
    i = tl.program_id(0).to(tl.int64)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    dm = d < D
    acc_g = tl.zeros([BJ, BD], ACC)
    acc_c = tl.zeros([BJ, BD], ACC)
    for j0 in range(0, M, BJ):
        j = j0 + tl.arange(0, BJ)
        jm = j < M
        tile = jm[:, None] & dm[None, :]
        grad_l = tl.load(coef_ptr + i * M + j, mask=jm, other=0.0)
        coef = tl.load(coef_ptr + (M + i) * M + j, mask=jm, other=0.0)
        e_j = tl.load(e_ptr + _label(label_ptr, j, jm, K)[:, None] * D + d[None, :], mask=tile, other=0.0)
        acc_g += grad_l[:, None] * e_j
        acc_c += coef[:, None] * tl.load(f_ptr + j[:, None] * D + d[None, :], mask=tile, other=0.0)
    s = tl.load(scale_ptr)
    g = s * tl.sum(acc_g, axis=0)
    f_i = tl.load(f_ptr + i * D + d, mask=dm, other=0.0)
    norm = tl.load(norm_ptr + i)
    norm_i = tl.maximum(norm, _const(_FLOOR, ACC))
    dot = s * tl.load(rsum_ptr + i * 2)  # f̂_i·g_i
    absolute = tl.where(norm > _const(_FLOOR, ACC), g - f_i / norm_i * dot, g) / norm_i
    relative = f_i * tl.load(rsum_ptr + i * 2 + 1) - tl.sum(acc_c, axis=0)
    valid = tl.load(valid_ptr + i) != 0
    grad = absolute + relative
    if PER_FRAME:  # each of the slot's frames gets grad f_i / count_i
        grad = grad / tl.load(count_ptr + i)
    tl.store(gf_ptr + i * D + d, tl.where(valid, grad, 0.0), mask=dm)


@triton.jit
def _al_head_kernel(m_ptr, w_ptr, b_ptr, valid_ptr, f_ptr, C, D, BC: tl.constexpr, BD: tl.constexpr,
                    ACC: tl.constexpr):
    """f_i = W m_i + b for a valid slot, 0 for padding (a BD block of f_i per program)."""
    i = tl.program_id(0).to(tl.int64)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    dm = d < D
    acc = tl.zeros([BD, BC], ACC)
    for c0 in range(0, C, BC):
        c = c0 + tl.arange(0, BC)
        cm = c < C
        w = tl.load(w_ptr + d[:, None].to(tl.int64) * C + c[None, :], mask=dm[:, None] & cm[None, :], other=0.0)
        acc += w * tl.load(m_ptr + i * C + c, mask=cm, other=0.0)[None, :]
    f = tl.sum(acc, axis=1) + tl.load(b_ptr + d, mask=dm, other=0.0)
    tl.store(f_ptr + i * D + d, tl.where(tl.load(valid_ptr + i) != 0, f, 0.0), mask=dm)


@triton.jit
def _al_bwd_head_input_kernel(gf_ptr, w_ptr, count_ptr, gm_ptr, C, D, BC: tl.constexpr, BD: tl.constexpr,
                              ACC: tl.constexpr):
    """grad m_i / count_i = Wᵀ γ_i / count_i (a BC block per program; γ_i is 0 for padding slots)."""
    i = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    cm = c < C
    acc = tl.zeros([BD, BC], ACC)
    for d0 in range(0, D, BD):
        d = d0 + tl.arange(0, BD)
        dm = d < D
        w = tl.load(w_ptr + d[:, None].to(tl.int64) * C + c[None, :], mask=dm[:, None] & cm[None, :], other=0.0)
        acc += w * tl.load(gf_ptr + i * D + d, mask=dm, other=0.0)[:, None]
    tl.store(gm_ptr + i * C + c, tl.sum(acc, axis=0) / tl.load(count_ptr + i), mask=cm)


@triton.jit
def _al_bwd_head_params_kernel(gf_ptr, m_ptr, gw_ptr, gb_ptr, M, C, D, BC: tl.constexpr, BD: tl.constexpr,
                               ACC: tl.constexpr):
    """grad W = Σ_i γ_i m_iᵀ and grad b = Σ_i γ_i over the slots in order (a BD x BC block of grad W per program;
    the programs of the first C block also write grad b)."""
    d = tl.program_id(0) * BD + tl.arange(0, BD)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    dm = d < D
    cm = c < C
    acc_w = tl.zeros([BD, BC], ACC)
    acc_b = tl.zeros([BD], ACC)
    for i in range(0, M):
        g = tl.load(gf_ptr + i * D + d, mask=dm, other=0.0)
        acc_w += g[:, None] * tl.load(m_ptr + i * C + c, mask=cm, other=0.0)[None, :]
        acc_b += g
    tl.store(gw_ptr + d[:, None].to(tl.int64) * C + c[None, :], acc_w, mask=dm[:, None] & cm[None, :])
    if tl.program_id(1) == 0:
        tl.store(gb_ptr + d, acc_b, mask=dm)


@triton.jit
def _al_bwd_frames_kernel(gf_ptr, seg_ptr, out_ptr, M, D, T, BD: tl.constexpr, BT: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1) * BT + tl.arange(0, BT)
    d = tl.program_id(2) * BD + tl.arange(0, BD)
    tm = t < T
    dm = d < D
    slot = tl.load(seg_ptr + n * T + t, mask=tm, other=-1)
    inside = (slot >= 0) & (slot < M)
    grad = tl.load(gf_ptr + tl.where(inside, slot, 0)[None, :] * D + d[:, None], mask=dm[:, None] & inside[None, :],
                   other=0.0)
    tl.store(out_ptr + (n * D + d[:, None]) * T + t[None, :], grad.to(out_ptr.dtype.element_ty),
             mask=dm[:, None] & tm[None, :])


# ------------------------------------------------------------------------------------------------
# launchers

def _acc_dtype(dtype: torch.dtype):
    return tl.float64 if compute_dtype(dtype) == torch.float64 else tl.float32


def _projections(f: torch.Tensor, unit_embeddings: torch.Tensor, acc) -> tuple[torch.Tensor, torch.Tensor]:
    """proj (M, K) = f Eᵀ and the norms ‖f_i‖ (M,)."""
    m, d = f.shape
    k = unit_embeddings.shape[0]
    proj = torch.empty((m, k), dtype=f.dtype, device=f.device)
    norms = torch.empty((m,), dtype=f.dtype, device=f.device)
    bk, bd = PAIR_TILE
    wrap_triton(_al_projections_kernel)[(m,)](f, unit_embeddings, proj, norms, k, d, BK=bk, BD=bd, ACC=acc,
                                              **LAUNCH)
    return proj, norms


@triton_op("trgnet_triton::aris_losses", mutates_args=())
def aris_losses_triton(features: torch.Tensor, frame_segment: torch.Tensor, segment_video: torch.Tensor,
                       segment_start: torch.Tensor, segment_count: torch.Tensor, segment_valid: torch.Tensor,
                       segment_label: torch.Tensor, unit_embeddings: torch.Tensor, logit_scale: torch.Tensor,
                       absolute_weight: torch.Tensor, absolute_log_weight: torch.Tensor,
                       relative_weight: torch.Tensor, relative_log_weight: torch.Tensor,
                       head_weight: torch.Tensor | None, head_bias: torch.Tensor | None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """terms (2,), segment_features (M, D), row_lse (3, M), max_distance (2,), segment_means (M, C) or (0,)
    (package docstring). 5 launches, 6 with the head. Raises ``ValueError`` as
    ``validation.validate_inputs(kernel=True)``."""
    op = "trgnet_triton::aris_losses"
    tensors = (features, frame_segment, segment_video, segment_start, segment_count, segment_valid, segment_label,
               unit_embeddings, logit_scale, absolute_weight, absolute_log_weight, relative_weight,
               relative_log_weight, head_weight, head_bias)
    validate_inputs(op, tensors, kernel=True)
    check_triton_tensor(op, "features", features)
    n, c, t = features.shape
    m, k = segment_count.shape[0], unit_embeddings.shape[0]
    d = c if head_weight is None else head_weight.shape[0]
    acc, ACC = compute_dtype(features.dtype), _acc_dtype(features.dtype)
    tiny = torch.finfo(acc).tiny
    empty = dict(dtype=acc, device=features.device)
    bd, bt = FRAME_TILE
    bj, bp = PAIR_TILE
    means = torch.empty((m, c), **empty)
    wrap_triton(_al_means_kernel)[(m, triton.cdiv(c, bd))](
        features, segment_video, segment_start, segment_count, segment_valid, means, n, c, t, BD=bd, BT=bt, ACC=ACC,
        **LAUNCH)
    if head_weight is None:
        f, means = means, torch.empty((0,), **empty)
    else:
        f = torch.empty((m, d), **empty)
        hc, hd = HEAD_TILE
        wrap_triton(_al_head_kernel)[(m, triton.cdiv(d, hd))](
            means, head_weight, head_bias, segment_valid, f, c, d, BC=hc, BD=hd, ACC=ACC, **LAUNCH)
    proj, norms = _projections(f, unit_embeddings, ACC)
    dist = torch.empty((m, m), **empty)
    row_lse = torch.empty((3, m), **empty)
    stats = torch.empty((m, 3), **empty)  # per row: absolute share, relative share, max of d
    counts = torch.empty((m,), dtype=torch.int32, device=features.device)
    wrap_triton(_al_rows_kernel)[(m,)](
        f, proj, norms, segment_label, segment_valid, logit_scale, absolute_weight, absolute_log_weight, dist,
        row_lse, stats, counts, m, k, d, TINY=tiny, BJ=bj, BD=bp, BLOCK=SUM_BLOCK, ACC=ACC, **LAUNCH)
    max_distance = torch.empty((2,), **empty)
    wrap_triton(_al_similarity_kernel)[(m,)](
        dist, segment_valid, relative_weight, relative_log_weight, row_lse, stats, counts, max_distance, m,
        TINY=tiny, BJ=bj, BLOCK=SUM_BLOCK, ACC=ACC, **LAUNCH)
    terms = torch.empty((2,), **empty)
    wrap_triton(_al_sum_kernel)[(1,)](stats, terms, m, BLOCK=SUM_BLOCK, ACC=ACC, **LAUNCH)
    return terms, f, row_lse, max_distance, means


@triton_op("trgnet_triton::aris_losses_backward", mutates_args=())
def aris_losses_backward_triton(grad_terms: torch.Tensor, frame_segment: torch.Tensor, segment_count: torch.Tensor,
                                segment_valid: torch.Tensor, segment_label: torch.Tensor,
                                unit_embeddings: torch.Tensor, logit_scale: torch.Tensor,
                                absolute_weight: torch.Tensor, relative_weight: torch.Tensor,
                                segment_features: torch.Tensor, row_lse: torch.Tensor, max_distance: torch.Tensor,
                                head_weight: torch.Tensor | None, segment_means: torch.Tensor,
                                features_dtype: torch.dtype
                                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """grad_features (N, D, T) (with the head (N, C, T)) in ``features_dtype``, grad_logit_scale (1,),
    grad_head_weight (D, C) and grad_head_bias (D,) (without the head: (0,) each) given grad_terms (2,). 5 launches,
    7 with the head. Raises ``ValueError`` as ``validation.validate_backward_inputs``."""
    op = "trgnet_triton::aris_losses_backward"
    tensors = (frame_segment, segment_count, segment_valid, segment_label, unit_embeddings, logit_scale,
               absolute_weight, relative_weight)
    validate_backward_inputs(op, grad_terms, tensors, segment_features, row_lse, max_distance, head_weight,
                             segment_means, features_dtype)
    check_triton_tensor(op, "grad_terms", grad_terms)
    check_backend_dtype("triton", grad_terms.device, features_dtype, f"{op}: features_dtype: ")
    n, t = frame_segment.shape
    m, d = segment_features.shape
    k = unit_embeddings.shape[0]
    acc, ACC = segment_features.dtype, _acc_dtype(segment_features.dtype)
    tiny = torch.finfo(acc).tiny
    empty = dict(dtype=acc, device=grad_terms.device)
    bj, bp = PAIR_TILE
    proj, norms = _projections(segment_features, unit_embeddings, ACC)
    pair_args = (segment_features, proj, norms, segment_label, segment_valid, logit_scale, absolute_weight,
                 relative_weight, row_lse, max_distance)
    weight_sums = torch.empty((2, m), **empty)
    shares = torch.empty((m, 2), **empty)  # per row: grad logit_scale, grad dmax
    wrap_triton(_al_bwd_partials_kernel)[(m,)](
        grad_terms, *pair_args, weight_sums, shares, m, k, d, TINY=tiny, BJ=bj, BD=bp, BLOCK=SUM_BLOCK, ACC=ACC,
        **LAUNCH)
    coef = torch.empty((2, m, m), **empty)  # G and c
    row_sums = torch.empty((m, 2), **empty)  # Σ_j G_ij f̂_i·ê_j, Σ_j c_ij
    grad_scale = torch.empty((1,), **empty)
    wrap_triton(_al_bwd_coefficients_kernel)[(m,)](
        grad_terms, *pair_args, weight_sums, shares, coef, row_sums, grad_scale, m, k, d, TINY=tiny, BJ=bj, BD=bp,
        BLOCK=SUM_BLOCK, ACC=ACC, **LAUNCH)
    head = head_weight is not None
    grad_f = torch.empty((m, d), **empty)
    wrap_triton(_al_bwd_segment_grad_kernel)[(m, triton.cdiv(d, bp))](
        segment_features, unit_embeddings, norms, segment_label, segment_valid, segment_count, logit_scale, coef,
        row_sums, grad_f, m, k, d, PER_FRAME=not head, BJ=bj, BD=bp, ACC=ACC, **LAUNCH)
    if head:  # grad_f holds γ: the head's gradients, and the frames' rows Wᵀ γ_i / count_i
        c = head_weight.shape[1]
        hc, hd = HEAD_TILE
        grad_weight, grad_bias = torch.empty((d, c), **empty), torch.empty((d,), **empty)
        wrap_triton(_al_bwd_head_params_kernel)[(triton.cdiv(d, hd), triton.cdiv(c, hc))](
            grad_f, segment_means, grad_weight, grad_bias, m, c, d, BC=hc, BD=hd, ACC=ACC, **LAUNCH)
        grad_rows = torch.empty((m, c), **empty)
        wrap_triton(_al_bwd_head_input_kernel)[(m, triton.cdiv(c, hc))](
            grad_f, head_weight, segment_count, grad_rows, c, d, BC=hc, BD=hd, ACC=ACC, **LAUNCH)
    else:
        c, grad_rows = d, grad_f
        grad_weight, grad_bias = torch.empty((0,), **empty), torch.empty((0,), **empty)
    bd, bt = FRAME_TILE
    grad_features = torch.empty((n, c, t), dtype=features_dtype, device=grad_terms.device)
    wrap_triton(_al_bwd_frames_kernel)[(n, triton.cdiv(t, bt), triton.cdiv(c, bd))](
        grad_rows, frame_segment, grad_features, m, c, t, BD=bd, BT=bt, **LAUNCH)
    return grad_features, grad_scale, grad_weight, grad_bias


aris_losses_triton.register_autograd(make_backward(aris_losses_backward_triton), setup_context=setup_context)
