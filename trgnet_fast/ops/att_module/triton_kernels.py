"""Triton kernels of the fused AttModule (docs/model.md#attmodule, docs/kernels.md#att_module).

Math, layouts and shapes: the package docstring (``trgnet_fast/ops/att_module/__init__.py``). Device helpers:
``triton_math.py`` ((CP, BT) channel x frame tiles, per-head states as block-diagonal (CP, CP) matrices).

Work split: every tiled kernel runs on a grid (N, n_chunks); program (n, j) handles tiles j*TPP .. j*TPP + TPP - 1
(BT frames each) of sequence n, found on the device from cu_seqlens (no host sync). Programs whose chunk starts past
their sequence's end run no tile (they only write zero partials): at most N * n_chunks programs, n_chunks =
cdiv(cdiv(T, BT), TPP) with TPP chosen so that N * n_chunks is about ``TARGET_SLOTS`` (for a packed row of N
sequences each sequence's grid row spans the row, so up to N - 1 of every N programs are idle, a bounded waste).
Every reduction over frames is a per-program partial (in registers; the (C, C) weight-gradient partials of the
key/value and conv backward kernels in the program's own workspace slot, see ``triton_math._accumulate_matrix``),
then a fixed-order sum over the chunks (deterministic, no atomics). Statistics, states and accumulations in fp32
(fp64 for fp64 inputs); the InstanceNorm statistics are per-tile mean and M2 combined with Chan's formula. The
dilated conv reads its halo (t - d, t + d) straight from x with masked loads, so any dilation works at any T
(d >= BT, d >= T included).

Forward (4 launches):

* ``_am_fwd_stats_kernel``: conv + ReLU of each tile, tile mean / M2 per channel combined over the chunk ->
  stats workspace (mean, M2).
* ``_am_fwd_kv_kernel``: combines the sequence's stats partials (mean, rstd), recomputes o, q = InstanceNorm(o),
  K, V (of q, or of values), phi(K); partial KV = phi(K) V^T (block-diagonal) and ksum -> state workspace.
* ``_am_reduce_state_kernel`` (one program per sequence): KV / ksum partials summed in chunk order -> kv_state,
  key_sum; the stats combined once more -> norm_stats.
* ``_am_fwd_output_kernel``: recomputes o, q, Q, the attention a, p = (W_o a + b_o) r1 m, u = alpha p + o,
  out = (x + (W_c u + b_c) r2) m; stores out (0 on frames outside every sequence).

Backward (6 launches), recomputing o, q, Q, K, V, a, p, u, the masks and the dropout keep masks from x (values),
norm_stats, kv_state, key_sum and the seed:

* ``_am_bwd_query_kernel``: dy = g m r2, du = W_c^T dy, dp = alpha du, dpre = dp r1 m, da = W_o^T dpre, the
  attention's query side (dQ) and partial dKV, dksum; partial grads of W_c, b_c, W_o, b_o, W_q, b_q, alpha;
  writes W_q^T dQ into the dq buffer.
* ``_am_reduce_state_kernel``: dKV / dksum summed in chunk order.
* ``_am_bwd_key_value_kernel``: dK, dV from dKV, dksum; partial grads of W_k, b_k, W_v, b_v; dq += W_k^T dK
  (+ W_v^T dV, encoder) in the dq buffer, or grad_values = W_v^T dV (decoder); partial sums of dq and dq q.
* ``_am_bwd_norm_kernel``: the InstanceNorm and ReLU backward: dpre_conv = (du + rstd (dq - mean(dq) -
  q mean(dq q))) [o > 0], written over dq in the dq buffer.
* ``_am_bwd_conv_kernel``: grad_x = g m + sum_k W_k^T dpre_conv[t - (k - 1) d]; partial grads of the conv
  weight and bias.
* ``_am_reduce_grads_kernel``: the 13 weight / bias / alpha gradient partials summed in slot order, cast.

Memory: saved for the backward only the inputs, norm_stats (N, 2, C), kv_state (N, H, D, D), key_sum (N, H, D).
Intermediate of the backward: the dq buffer (B, C, T) in the state dtype (4 B C T bytes in fp32: 12.3 MB at B = 8,
C = 64, T = 6000). Workspaces (state dtype, S = N * n_chunks <= ~TARGET_SLOTS + N slots): forward stats S * 2 * CP,
states S * (CP^2 + CP); backward dKV S * (CP^2 + CP), dq sums S * 2 * CP, weight grads S * (8 C^2 + 6 C + 1)
(fp32 at B = 8, T = 6000, C = 64: S = 256, 34.0 MB + 4.3 MB + 0.1 MB).

Products and registers: every product is one ``tl.dot`` over all CP channels (K = 64 at C = 64). fp32 and 16-bit
inputs compute in fp32 with ``input_precision="tf32x3"`` (three TF32 tensor-core products, about fp32 accuracy): IEEE
fp32 FMA dots (the linear attention's choice, at K = 16) hold whole operand rows per thread and spill on sm_90 at
K = 64 even in a kernel of one dot. fp64: IEEE fp64 tensor-core dots (explicit product-sums, the linear attention's
fp64 fallback, spill ~17 KB per thread here and take minutes to compile). The tile loops are ``tl.range(...,
disable_licm=True)`` and load the weights and states inside: hoisted out of the loop, ten (CP, CP) operands stay live
across it. Launch: BT = 16 frames, 8 warps, 1 stage (``FRAME_TILE``, ``TILE_LAUNCH``; picked with the offline sm_90
compile of ``benchmarks/kernel_report.py``'s mechanics, see the report of this op for the measured registers).

Registered as ``torch.ops.trgnet_triton.att_module`` / ``att_module_backward`` (``triton_op`` + ``wrap_triton``,
autograd via ``register_autograd``, the native op's schemas). Block sizes: :func:`_geometry` (no autotune).
"""
from __future__ import annotations

import dataclasses
import struct

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from trgnet_fast.ops._checks import check_triton_tensor
from trgnet_fast.ops.att_module.autograd import make_backward, setup_context
from trgnet_fast.ops.att_module.reference import dropout_threshold
from trgnet_fast.ops.att_module.triton_math import (
    ATTENTION_STREAM, MODULE_STREAM, _accumulate_matrix, _attend, _chan_combine, _clear_matrix, _combine_chunk_stats,
    _conv_relu, _frame_mask, _grad_slot, _keep_scale, _linear, _load_blockdiag, _load_matrix, _load_norm_stats,
    _load_tile, _load_vector, _mm, _mm_nt, _mm_tn, _reduce_grad_segment, _same_head, _sequence_of, _store_blockdiag,
    _store_grad_vector, _store_matrix, _store_tile, _tile_frames, _tiles_in_chunk, _two_floats)
from trgnet_fast.ops.att_module.validation import state_dtype, validate_backward_inputs, validate_inputs
from trgnet_fast.ops.linear_attention.triton_kernels import _empty

TARGET_SLOTS = 256  # programs (and partial slots) per tiled launch aimed at: bounds the workspaces
REDUCE_BLOCK = 1024  # gradient elements per program of the final weight-gradient reduction
# launch options of the tiled kernels: 8 warps (fewer spills than 4 on sm_90), one stage (the tile loops gain
# nothing from multi-buffered loads, which cost shared memory)
TILE_LAUNCH = {"num_warps": 8, "num_stages": 1}
FRAME_TILE = 16  # BT, frames per tile (32 spills more on sm_90 at C = 64)


# ------------------------------------------------------------------------------------------------
# forward

@triton.jit
def _am_fwd_stats_kernel(x_ptr, cu_ptr, cw_ptr, cb_ptr, stats_ws_ptr,
                         C, T, N, dil, TPP, n_chunks,
                         HAS_CU: tl.constexpr, PACKED: tl.constexpr, BT: tl.constexpr, CP: tl.constexpr):
    n = tl.program_id(0)
    chunk = tl.program_id(1)
    ACC = stats_ws_ptr.dtype.element_ty
    row, start, length, end = _sequence_of(cu_ptr, n, N, T, HAS_CU, PACKED)
    rc = tl.arange(0, CP)
    c_ok = rc < C
    mean = tl.zeros((CP,), ACC)
    m2 = tl.zeros((CP,), ACC)
    for i in tl.range(0, _tiles_in_chunk(chunk, length, TPP, BT), disable_licm=True):  # weights reloaded per tile
        t_loc = _tile_frames(chunk, i, TPP, BT)
        t_ok = t_loc < length
        o, x_mid = _conv_relu(x_ptr, cw_ptr, cb_ptr, row, start, t_loc, length, dil, rc, c_ok, C, T, ACC)
        nb = tl.sum(t_ok.to(ACC), axis=0)
        tile_mean = tl.sum(tl.where(t_ok[None, :], o, 0.0), axis=1) / nb
        dev = tl.where(t_ok[None, :], o - tile_mean[:, None], 0.0)
        mean, m2 = _chan_combine(tl.cast(i * BT, ACC), mean, m2, nb, tile_mean, tl.sum(dev * dev, axis=1))
    slot = n * n_chunks + chunk
    tl.store(stats_ws_ptr + (2 * slot) * CP + rc, mean)
    tl.store(stats_ws_ptr + (2 * slot + 1) * CP + rc, m2)


@triton.jit
def _am_fwd_kv_kernel(x_ptr, values_ptr, cu_ptr, cw_ptr, cb_ptr, wk_ptr, bk_ptr, wv_ptr, bv_ptr,
                      stats_ws_ptr, kv_ws_ptr, ks_ws_ptr,
                      C, T, N, dil, TPP, n_chunks, eps_hi, eps_lo,
                      HAS_CU: tl.constexpr, PACKED: tl.constexpr, HAS_VALUES: tl.constexpr,
                      BT: tl.constexpr, CP: tl.constexpr):
    n = tl.program_id(0)
    chunk = tl.program_id(1)
    ACC = kv_ws_ptr.dtype.element_ty
    row, start, length, end = _sequence_of(cu_ptr, n, N, T, HAS_CU, PACKED)
    rc = tl.arange(0, CP)
    c_ok = rc < C
    mean, rstd = _combine_chunk_stats(stats_ws_ptr, n, n_chunks, length, TPP * BT, rc,
                                      _two_floats(eps_hi, eps_lo, ACC), CP)
    kv = tl.zeros((CP, CP), ACC)
    ks = tl.zeros((CP,), ACC)
    for i in tl.range(0, _tiles_in_chunk(chunk, length, TPP, BT), disable_licm=True):  # weights reloaded per tile
        t_loc = _tile_frames(chunk, i, TPP, BT)
        valid = c_ok[:, None] & (t_loc < length)[None, :]
        o, x_mid = _conv_relu(x_ptr, cw_ptr, cb_ptr, row, start, t_loc, length, dil, rc, c_ok, C, T, ACC)
        q = (o - mean[:, None]) * rstd[:, None]
        phik = tl.where(valid, tl.sigmoid(_linear(wk_ptr, bk_ptr, q, rc, c_ok, C, ACC)), 0.0)
        if HAS_VALUES:
            v_in = _load_tile(values_ptr, row, start, t_loc, length, rc, c_ok, C, T, ACC)
        else:
            v_in = q
        kv += _mm_nt(phik, _linear(wv_ptr, bv_ptr, v_in, rc, c_ok, C, ACC), ACC)
        ks += tl.sum(phik, axis=1)
    slot = n * n_chunks + chunk
    _store_matrix(kv_ws_ptr + tl.cast(slot, tl.int64) * CP * CP, kv, rc, c_ok, CP, 1)
    tl.store(ks_ws_ptr + slot * CP + rc, ks)


@triton.jit
def _am_reduce_state_kernel(kv_ws_ptr, ks_ws_ptr, kv_ptr, ks_ptr, stats_ws_ptr, stats_ptr, cu_ptr,
                            C, D, T, N, TPP, n_chunks, eps_hi, eps_lo,
                            WITH_STATS: tl.constexpr, HAS_CU: tl.constexpr, PACKED: tl.constexpr,
                            BT: tl.constexpr, CP: tl.constexpr):
    n = tl.program_id(0)
    ACC = kv_ws_ptr.dtype.element_ty
    row, start, length, end = _sequence_of(cu_ptr, n, N, T, HAS_CU, PACKED)
    rc = tl.arange(0, CP)
    c_ok = rc < C
    kv = tl.zeros((CP, CP), ACC)
    ks = tl.zeros((CP,), ACC)
    for j in range(0, tl.cdiv(length, TPP * BT)):  # chunk order: deterministic
        slot = n * n_chunks + j
        kv += tl.load(kv_ws_ptr + tl.cast(slot, tl.int64) * CP * CP + rc[:, None] * CP + rc[None, :],
                      mask=c_ok[:, None] & c_ok[None, :], other=0.0)
        ks += tl.load(ks_ws_ptr + slot * CP + rc)
    _store_blockdiag(kv_ptr, kv, n, rc, _same_head(rc, c_ok, D), C, D)
    tl.store(ks_ptr + n * C + rc, ks, mask=c_ok)
    if WITH_STATS:
        mean, rstd = _combine_chunk_stats(stats_ws_ptr, n, n_chunks, length, TPP * BT, rc,
                                          _two_floats(eps_hi, eps_lo, ACC), CP)
        tl.store(stats_ptr + (2 * n) * C + rc, mean, mask=c_ok)
        tl.store(stats_ptr + (2 * n + 1) * C + rc, rstd, mask=c_ok)


@triton.jit
def _recompute_attention(x_ptr, mask_ptr, seed_ptr, cw_ptr, cb_ptr, wq_ptr, bq_ptr, kv_ptr, kse, mean, rstd, n, row,
                         start, t_loc, length, dil, rc, c_ok, C, D, T, thr1, s1_hi, s1_lo, thr2, s2_hi, s2_lo,
                         HAS_MASK: tl.constexpr, DROP1: tl.constexpr, DROP2: tl.constexpr, ACC: tl.constexpr):
    """The layer up to the attention output for one tile, as the output kernel and the query-side backward both
    need it: o (conv + ReLU), the x tile, q (normalised), phi(Q), a and its denominator, the frame mask m, the
    attention dropout's keep-and-scale times m (r1 m) and the module dropout's keep-and-scale r2."""
    o, xc = _conv_relu(x_ptr, cw_ptr, cb_ptr, row, start, t_loc, length, dil, rc, c_ok, C, T, ACC)
    q = (o - mean[:, None]) * rstd[:, None]
    phiq, a, den = _attend(q, wq_ptr, bq_ptr, kv_ptr, kse, n, rc, c_ok, t_loc < length, C, D, ACC)
    m = _frame_mask(mask_ptr, row, start, t_loc, length, T, HAS_MASK, ACC)[None, :]
    r1m = _keep_scale(seed_ptr, row, start, t_loc, rc, C, T, thr1, _two_floats(s1_hi, s1_lo, ACC), ATTENTION_STREAM,
                      DROP1, ACC) * m
    r2 = _keep_scale(seed_ptr, row, start, t_loc, rc, C, T, thr2, _two_floats(s2_hi, s2_lo, ACC), MODULE_STREAM,
                     DROP2, ACC)
    return o, xc, q, phiq, a, den, m, r1m, r2


@triton.jit
def _am_fwd_output_kernel(x_ptr, mask_ptr, cu_ptr, seed_ptr, cw_ptr, cb_ptr, wq_ptr, bq_ptr, wo_ptr, bo_ptr,
                          wc_ptr, bc_ptr, alpha_ptr, stats_ptr, kv_ptr, ks_ptr, out_ptr,
                          C, D, T, N, dil, TPP, n_chunks, eps_hi, eps_lo, thr1, s1_hi, s1_lo, thr2, s2_hi, s2_lo,
                          HAS_CU: tl.constexpr, PACKED: tl.constexpr, HAS_MASK: tl.constexpr,
                          DROP1: tl.constexpr, DROP2: tl.constexpr, BT: tl.constexpr, CP: tl.constexpr):
    n = tl.program_id(0)
    chunk = tl.program_id(1)
    ACC = stats_ptr.dtype.element_ty
    row, start, length, end = _sequence_of(cu_ptr, n, N, T, HAS_CU, PACKED)
    rc = tl.arange(0, CP)
    c_ok = rc < C
    mean, rstd = _load_norm_stats(stats_ptr, n, rc, c_ok, C)
    kse = _load_vector(ks_ptr + n * C, rc, c_ok, ACC) + _two_floats(eps_hi, eps_lo, ACC)
    alpha = tl.load(alpha_ptr).to(ACC)
    for i in tl.range(0, _tiles_in_chunk(chunk, end - start, TPP, BT), disable_licm=True):  # weights reloaded per tile
        t_loc = _tile_frames(chunk, i, TPP, BT)
        if (chunk * TPP + i) * BT < length:
            o, xc, q, phiq, a, den, m, r1m, r2 = _recompute_attention(
                x_ptr, mask_ptr, seed_ptr, cw_ptr, cb_ptr, wq_ptr, bq_ptr, kv_ptr, kse, mean, rstd, n, row, start,
                t_loc, length, dil, rc, c_ok, C, D, T, thr1, s1_hi, s1_lo, thr2, s2_hi, s2_lo, HAS_MASK, DROP1, DROP2,
                ACC)
            u = alpha * (_linear(wo_ptr, bo_ptr, a, rc, c_ok, C, ACC) * r1m) + o
            out = (xc + _linear(wc_ptr, bc_ptr, u, rc, c_ok, C, ACC) * r2) * m
        else:
            out = tl.zeros((CP, BT), ACC)
        _store_tile(out_ptr, out, row, start, t_loc, length, end, rc, c_ok, C, T)


# ------------------------------------------------------------------------------------------------
# backward

@triton.jit
def _am_bwd_query_kernel(g_ptr, x_ptr, mask_ptr, cu_ptr, seed_ptr, cw_ptr, cb_ptr, wq_ptr, bq_ptr, wo_ptr, bo_ptr,
                         wc_ptr, bc_ptr, alpha_ptr, stats_ptr, kv_ptr, ks_ptr, dq_ptr, dkv_ws_ptr, dks_ws_ptr,
                         wg_ws_ptr,
                         C, D, T, N, dil, TPP, n_chunks, G, eps_hi, eps_lo, thr1, s1_hi, s1_lo, thr2, s2_hi, s2_lo,
                         HAS_CU: tl.constexpr, PACKED: tl.constexpr, HAS_MASK: tl.constexpr,
                         DROP1: tl.constexpr, DROP2: tl.constexpr, BT: tl.constexpr, CP: tl.constexpr):
    n = tl.program_id(0)
    chunk = tl.program_id(1)
    ACC = stats_ptr.dtype.element_ty
    row, start, length, end = _sequence_of(cu_ptr, n, N, T, HAS_CU, PACKED)
    rc = tl.arange(0, CP)
    c_ok = rc < C
    mean, rstd = _load_norm_stats(stats_ptr, n, rc, c_ok, C)
    kse = _load_vector(ks_ptr + n * C, rc, c_ok, ACC) + _two_floats(eps_hi, eps_lo, ACC)
    alpha = tl.load(alpha_ptr).to(ACC)
    # register accumulators here (measured on sm_90: accumulating in the slot as the other backward kernels do
    # spills more in this kernel, 1.8 KB against 1.4 KB per thread)
    dwq = tl.zeros((CP, CP), ACC)
    dwo = tl.zeros((CP, CP), ACC)
    dwc = tl.zeros((CP, CP), ACC)
    dkv = tl.zeros((CP, CP), ACC)
    dbq = tl.zeros((CP,), ACC)
    dbo = tl.zeros((CP,), ACC)
    dbc = tl.zeros((CP,), ACC)
    dks = tl.zeros((CP,), ACC)
    dalpha = tl.zeros((CP,), ACC)
    for i in tl.range(0, _tiles_in_chunk(chunk, length, TPP, BT), disable_licm=True):  # weights reloaded per tile
        t_loc = _tile_frames(chunk, i, TPP, BT)
        o, x_mid, q, phiq, a, den, m, r1m, r2 = _recompute_attention(
            x_ptr, mask_ptr, seed_ptr, cw_ptr, cb_ptr, wq_ptr, bq_ptr, kv_ptr, kse, mean, rstd, n, row, start, t_loc,
            length, dil, rc, c_ok, C, D, T, thr1, s1_hi, s1_lo, thr2, s2_hi, s2_lo, HAS_MASK, DROP1, DROP2, ACC)
        r2m = r2 * m
        wo = _load_matrix(wo_ptr, rc, c_ok, C, 1).to(ACC)
        p = (_mm(wo, a, ACC) + _load_vector(bo_ptr, rc, c_ok, ACC)[:, None]) * r1m
        # the module's output side: out = (x + (W_c u + b_c) r2) m, u = alpha p + o (g is 0 outside the sequence)
        dy = _load_tile(g_ptr, row, start, t_loc, length, rc, c_ok, C, T, ACC) * r2m
        du = _mm_tn(_load_matrix(wc_ptr, rc, c_ok, C, 1).to(ACC), dy, ACC)
        dwc += _mm_nt(dy, alpha * p + o, ACC)
        dbc += tl.sum(dy, axis=1)
        dalpha += tl.sum(du * p, axis=1)
        dpre = alpha * du * r1m
        dwo += _mm_nt(dpre, a, ACC)
        dbo += tl.sum(dpre, axis=1)
        da = _mm_tn(wo, dpre, ACC)
        # the attention's query side (a = num / den per head), dnum = da / den, dden = -sum_head(da a) / den
        dnum = da / den
        same = _same_head(rc, c_ok, D)
        dden = -_mm(same.to(ACC), da * a, ACC) / den
        kv = _load_blockdiag(kv_ptr, n, rc, same, C, D)
        dq_att = phiq * (1.0 - phiq) * (_mm(kv, dnum, ACC) + kse[:, None] * dden)
        dkv += _mm_nt(phiq, dnum, ACC)
        dks += tl.sum(phiq * dden, axis=1)
        dwq += _mm_nt(dq_att, q, ACC)
        dbq += tl.sum(dq_att, axis=1)
        _store_tile(dq_ptr, _mm_tn(_load_matrix(wq_ptr, rc, c_ok, C, 1).to(ACC), dq_att, ACC),
                    row, start, t_loc, length, start + length, rc, c_ok, C, T)
    slot = n * n_chunks + chunk
    _store_matrix(dkv_ws_ptr + tl.cast(slot, tl.int64) * CP * CP, dkv, rc, c_ok, CP, 1)
    tl.store(dks_ws_ptr + slot * CP + rc, dks)
    _store_matrix(_grad_slot(wg_ws_ptr, slot, G, 2, C), dwq, rc, c_ok, C, 1)
    _store_grad_vector(wg_ws_ptr, slot, G, 3, dbq, rc, c_ok, C)
    _store_matrix(_grad_slot(wg_ws_ptr, slot, G, 8, C), dwo, rc, c_ok, C, 1)
    _store_grad_vector(wg_ws_ptr, slot, G, 9, dbo, rc, c_ok, C)
    _store_matrix(_grad_slot(wg_ws_ptr, slot, G, 10, C), dwc, rc, c_ok, C, 1)
    _store_grad_vector(wg_ws_ptr, slot, G, 11, dbc, rc, c_ok, C)
    tl.store(_grad_slot(wg_ws_ptr, slot, G, 12, C), tl.sum(dalpha, axis=0))


@triton.jit
def _am_bwd_key_value_kernel(x_ptr, values_ptr, cu_ptr, cw_ptr, cb_ptr, wk_ptr, bk_ptr, wv_ptr, bv_ptr,
                             stats_ptr, dkv_ptr, dks_ptr, dq_ptr, dvalues_ptr, sums_ws_ptr, wg_ws_ptr,
                             C, D, T, N, dil, TPP, n_chunks, G,
                             HAS_CU: tl.constexpr, PACKED: tl.constexpr, HAS_VALUES: tl.constexpr,
                             BT: tl.constexpr, CP: tl.constexpr):
    n = tl.program_id(0)
    chunk = tl.program_id(1)
    ACC = stats_ptr.dtype.element_ty
    row, start, length, end = _sequence_of(cu_ptr, n, N, T, HAS_CU, PACKED)
    rc = tl.arange(0, CP)
    c_ok = rc < C
    mean, rstd = _load_norm_stats(stats_ptr, n, rc, c_ok, C)
    dks = _load_vector(dks_ptr + n * C, rc, c_ok, ACC)
    slot = n * n_chunks + chunk
    dwk = _grad_slot(wg_ws_ptr, slot, G, 4, C)  # accumulated in the slot: _accumulate_matrix
    dwv = _grad_slot(wg_ws_ptr, slot, G, 6, C)
    _clear_matrix(dwk, rc, c_ok, C, 1, ACC, CP)
    _clear_matrix(dwv, rc, c_ok, C, 1, ACC, CP)
    dbk = tl.zeros((CP,), ACC)
    dbv = tl.zeros((CP,), ACC)
    sum_dq = tl.zeros((CP,), ACC)
    sum_dqq = tl.zeros((CP,), ACC)
    if not HAS_VALUES:
        end = start + length  # grad_values is written by the decoder only: no padding to clear
    for i in tl.range(0, _tiles_in_chunk(chunk, end - start, TPP, BT), disable_licm=True):  # weights reloaded per tile
        t_loc = _tile_frames(chunk, i, TPP, BT)
        if (chunk * TPP + i) * BT < length:
            valid = c_ok[:, None] & (t_loc < length)[None, :]
            o, x_mid = _conv_relu(x_ptr, cw_ptr, cb_ptr, row, start, t_loc, length, dil, rc, c_ok, C, T, ACC)
            q = (o - mean[:, None]) * rstd[:, None]
            phik = tl.where(valid, tl.sigmoid(_linear(wk_ptr, bk_ptr, q, rc, c_ok, C, ACC)), 0.0)
            if HAS_VALUES:
                v_in = _load_tile(values_ptr, row, start, t_loc, length, rc, c_ok, C, T, ACC)
            else:
                v_in = q
            # KV = sum_t phi(K) V^T, ksum = sum_t phi(K): dK = phi'(K) (dKV V + dksum), dV = dKV^T phi(K)
            dkv = _load_blockdiag(dkv_ptr, n, rc, _same_head(rc, c_ok, D), C, D)  # in the loop: see _attend
            dphik = _mm(dkv, _linear(wv_ptr, bv_ptr, v_in, rc, c_ok, C, ACC), ACC) + dks[:, None]
            dk = tl.where(valid, phik * (1.0 - phik) * dphik, 0.0)
            dv = _mm_tn(dkv, phik, ACC)
            _accumulate_matrix(dwk, _mm_nt(dk, q, ACC), rc, c_ok, C, 1)
            dbk += tl.sum(dk, axis=1)
            _accumulate_matrix(dwv, _mm_nt(dv, v_in, ACC), rc, c_ok, C, 1)
            dbv += tl.sum(dv, axis=1)
            dv_in = _mm_tn(_load_matrix(wv_ptr, rc, c_ok, C, 1).to(ACC), dv, ACC)
            dq = (_load_tile(dq_ptr, row, start, t_loc, length, rc, c_ok, C, T, ACC)
                  + _mm_tn(_load_matrix(wk_ptr, rc, c_ok, C, 1).to(ACC), dk, ACC))
            if not HAS_VALUES:
                dq += dv_in
            dq = tl.where(valid, dq, 0.0)
            sum_dq += tl.sum(dq, axis=1)
            sum_dqq += tl.sum(dq * q, axis=1)
            _store_tile(dq_ptr, dq, row, start, t_loc, length, start + length, rc, c_ok, C, T)
        else:
            dv_in = tl.zeros((CP, BT), ACC)
        if HAS_VALUES:
            _store_tile(dvalues_ptr, dv_in, row, start, t_loc, length, end, rc, c_ok, C, T)
    tl.store(sums_ws_ptr + (2 * slot) * CP + rc, sum_dq)
    tl.store(sums_ws_ptr + (2 * slot + 1) * CP + rc, sum_dqq)
    _store_grad_vector(wg_ws_ptr, slot, G, 5, dbk, rc, c_ok, C)
    _store_grad_vector(wg_ws_ptr, slot, G, 7, dbv, rc, c_ok, C)


@triton.jit
def _am_bwd_norm_kernel(g_ptr, x_ptr, mask_ptr, cu_ptr, seed_ptr, cw_ptr, cb_ptr, wc_ptr, stats_ptr, sums_ws_ptr,
                        dq_ptr,
                        C, T, N, dil, TPP, n_chunks, thr2, s2_hi, s2_lo,
                        HAS_CU: tl.constexpr, PACKED: tl.constexpr, HAS_MASK: tl.constexpr,
                        DROP2: tl.constexpr, BT: tl.constexpr, CP: tl.constexpr):
    n = tl.program_id(0)
    chunk = tl.program_id(1)
    ACC = stats_ptr.dtype.element_ty
    row, start, length, end = _sequence_of(cu_ptr, n, N, T, HAS_CU, PACKED)
    rc = tl.arange(0, CP)
    c_ok = rc < C
    mean, rstd = _load_norm_stats(stats_ptr, n, rc, c_ok, C)
    sum_dq = tl.zeros((CP,), ACC)
    sum_dqq = tl.zeros((CP,), ACC)
    for j in range(0, tl.cdiv(length, TPP * BT)):  # chunk order: every program gets the same sums
        slot = n * n_chunks + j
        sum_dq += tl.load(sums_ws_ptr + (2 * slot) * CP + rc)
        sum_dqq += tl.load(sums_ws_ptr + (2 * slot + 1) * CP + rc)
    inv_len = 1.0 / tl.cast(tl.maximum(length, 1), ACC)
    mean_dq = sum_dq * inv_len
    mean_dqq = sum_dqq * inv_len
    for i in tl.range(0, _tiles_in_chunk(chunk, length, TPP, BT), disable_licm=True):  # weights reloaded per tile
        t_loc = _tile_frames(chunk, i, TPP, BT)
        o, x_mid = _conv_relu(x_ptr, cw_ptr, cb_ptr, row, start, t_loc, length, dil, rc, c_ok, C, T, ACC)
        q = (o - mean[:, None]) * rstd[:, None]
        m = _frame_mask(mask_ptr, row, start, t_loc, length, T, HAS_MASK, ACC)[None, :]
        r2m = _keep_scale(seed_ptr, row, start, t_loc, rc, C, T, thr2, _two_floats(s2_hi, s2_lo, ACC),
                          MODULE_STREAM, DROP2, ACC) * m
        dy = _load_tile(g_ptr, row, start, t_loc, length, rc, c_ok, C, T, ACC) * r2m
        du = _mm_tn(_load_matrix(wc_ptr, rc, c_ok, C, 1).to(ACC), dy, ACC)  # u = alpha p + o: do += du
        dq = _load_tile(dq_ptr, row, start, t_loc, length, rc, c_ok, C, T, ACC)
        do = du + rstd[:, None] * (dq - mean_dq[:, None] - q * mean_dqq[:, None])
        _store_tile(dq_ptr, tl.where(o > 0.0, do, 0.0), row, start, t_loc, length, start + length, rc, c_ok, C, T)


@triton.jit
def _conv_tap_backward(w_ptr, dw_ptr, k, dpre, x_ptr, dpre_ptr, row, start, t_loc, length, dil, rc, c_ok, C, T,
                       ACC: tl.constexpr):
    """Tap k of the conv backward on a tile: accumulates dpre x[t + (k-1) d]^T into the tap's weight-gradient
    partial (conv_weight layout (C, C, 3) at dw_ptr) and returns W_k^T dpre[t - (k-1) d] (its part of grad_x)."""
    shift = (k - 1) * dil
    _accumulate_matrix(dw_ptr + k, _mm_nt(dpre, _load_tile(x_ptr, row, start, t_loc + shift, length, rc, c_ok, C, T,
                                                           ACC), ACC), rc, c_ok, 3 * C, 3)
    w = _load_matrix(w_ptr + k, rc, c_ok, 3 * C, 3).to(ACC)
    return _mm_tn(w, _load_tile(dpre_ptr, row, start, t_loc - shift, length, rc, c_ok, C, T, ACC), ACC)


@triton.jit
def _am_bwd_conv_kernel(g_ptr, x_ptr, mask_ptr, cu_ptr, cw_ptr, dpre_ptr, dx_ptr, wg_ws_ptr,
                        C, T, N, dil, TPP, n_chunks, G,
                        HAS_CU: tl.constexpr, PACKED: tl.constexpr, HAS_MASK: tl.constexpr,
                        BT: tl.constexpr, CP: tl.constexpr):
    n = tl.program_id(0)
    chunk = tl.program_id(1)
    ACC = dpre_ptr.dtype.element_ty
    row, start, length, end = _sequence_of(cu_ptr, n, N, T, HAS_CU, PACKED)
    rc = tl.arange(0, CP)
    c_ok = rc < C
    slot = n * n_chunks + chunk
    dw = _grad_slot(wg_ws_ptr, slot, G, 0, C)  # conv_weight's (C, C, 3) partial, accumulated in the slot
    _clear_matrix(dw, rc, c_ok, 3 * C, 3, ACC, CP)
    _clear_matrix(dw + 1, rc, c_ok, 3 * C, 3, ACC, CP)
    _clear_matrix(dw + 2, rc, c_ok, 3 * C, 3, ACC, CP)
    db = tl.zeros((CP,), ACC)
    for i in tl.range(0, _tiles_in_chunk(chunk, end - start, TPP, BT), disable_licm=True):  # weights reloaded per tile
        t_loc = _tile_frames(chunk, i, TPP, BT)
        if (chunk * TPP + i) * BT < length:
            dpre = _load_tile(dpre_ptr, row, start, t_loc, length, rc, c_ok, C, T, ACC)
            m = _frame_mask(mask_ptr, row, start, t_loc, length, T, HAS_MASK, ACC)[None, :]
            dx = _load_tile(g_ptr, row, start, t_loc, length, rc, c_ok, C, T, ACC) * m  # out = (x + ...) m
            dx += _conv_tap_backward(cw_ptr, dw, 0, dpre, x_ptr, dpre_ptr, row, start, t_loc, length, dil, rc, c_ok,
                                     C, T, ACC)
            dx += _conv_tap_backward(cw_ptr, dw, 1, dpre, x_ptr, dpre_ptr, row, start, t_loc, length, dil, rc, c_ok,
                                     C, T, ACC)
            dx += _conv_tap_backward(cw_ptr, dw, 2, dpre, x_ptr, dpre_ptr, row, start, t_loc, length, dil, rc, c_ok,
                                     C, T, ACC)
            db += tl.sum(dpre, axis=1)
        else:
            dx = tl.zeros((CP, BT), ACC)
        _store_tile(dx_ptr, dx, row, start, t_loc, length, end, rc, c_ok, C, T)
    _store_grad_vector(wg_ws_ptr, slot, G, 1, db, rc, c_ok, C)


@triton.jit
def _am_reduce_grads_kernel(wg_ws_ptr, slots, G, C, gcw_ptr, gcb_ptr, gqw_ptr, gqb_ptr, gkw_ptr, gkb_ptr,
                            gvw_ptr, gvb_ptr, gow_ptr, gob_ptr, gcow_ptr, gcob_ptr, galpha_ptr,
                            BLOCK: tl.constexpr):
    block = tl.program_id(0)
    _reduce_grad_segment(wg_ws_ptr, gcw_ptr, 0, block, slots, G, C, BLOCK)
    _reduce_grad_segment(wg_ws_ptr, gcb_ptr, 1, block, slots, G, C, BLOCK)
    _reduce_grad_segment(wg_ws_ptr, gqw_ptr, 2, block, slots, G, C, BLOCK)
    _reduce_grad_segment(wg_ws_ptr, gqb_ptr, 3, block, slots, G, C, BLOCK)
    _reduce_grad_segment(wg_ws_ptr, gkw_ptr, 4, block, slots, G, C, BLOCK)
    _reduce_grad_segment(wg_ws_ptr, gkb_ptr, 5, block, slots, G, C, BLOCK)
    _reduce_grad_segment(wg_ws_ptr, gvw_ptr, 6, block, slots, G, C, BLOCK)
    _reduce_grad_segment(wg_ws_ptr, gvb_ptr, 7, block, slots, G, C, BLOCK)
    _reduce_grad_segment(wg_ws_ptr, gow_ptr, 8, block, slots, G, C, BLOCK)
    _reduce_grad_segment(wg_ws_ptr, gob_ptr, 9, block, slots, G, C, BLOCK)
    _reduce_grad_segment(wg_ws_ptr, gcow_ptr, 10, block, slots, G, C, BLOCK)
    _reduce_grad_segment(wg_ws_ptr, gcob_ptr, 11, block, slots, G, C, BLOCK)
    _reduce_grad_segment(wg_ws_ptr, galpha_ptr, 12, block, slots, G, C, BLOCK)


# ------------------------------------------------------------------------------------------------
# launchers

def _split_double(value: float) -> tuple[float, float]:
    """(hi, lo) fp32 parts of a double, hi + lo == value to ~2^-48 relative (kernels add them in their ACC)."""
    hi = struct.unpack("f", struct.pack("f", value))[0]  # round to fp32 on the host, no tensor
    return hi, float(value) - hi


@dataclasses.dataclass(frozen=True)
class _Geometry:
    """Shapes, tiling and the scalar / constexpr arguments shared by the tiled kernels of one call."""
    B: int
    C: int
    T: int
    N: int
    H: int
    D: int
    CP: int
    BT: int
    TPP: int
    n_chunks: int
    packed: bool
    has_cu: bool

    @property
    def grid(self):
        return (self.N, self.n_chunks)

    @property
    def slots(self):
        return self.N * self.n_chunks

    @property
    def grad_slot_size(self):
        return 8 * self.C * self.C + 6 * self.C + 1


def _geometry(x, cu_seqlens, heads) -> _Geometry:
    """Block sizes: CP = C padded to a power of two >= 16 (``tl.dot`` needs K >= 16); BT = FRAME_TILE frames; TPP
    tiles per program so that N * n_chunks is about TARGET_SLOTS."""
    b, c, t = x.shape
    n = b if cu_seqlens is None else cu_seqlens.shape[0] - 1
    cp = triton.next_power_of_2(max(c, 16))
    bt = FRAME_TILE
    tiles = triton.cdiv(t, bt)
    tpp = max(1, triton.cdiv(tiles, max(1, TARGET_SLOTS // max(n, 1))))
    return _Geometry(B=b, C=c, T=t, N=n, H=heads, D=c // heads, CP=cp, BT=bt, TPP=tpp,
                     n_chunks=max(1, triton.cdiv(tiles, tpp)), packed=cu_seqlens is not None and b != n,
                     has_cu=cu_seqlens is not None)


def _dropout_args(p: float) -> tuple[int, float, float]:
    """(threshold, scale hi, scale lo) of one dropout stream."""
    return (dropout_threshold(p), *_split_double(1.0 / (1.0 - p)))


_GRADS = tuple[(torch.Tensor,) * 15]


@triton_op("trgnet_triton::att_module", mutates_args=())
def att_module_triton(x: torch.Tensor, values: torch.Tensor | None, mask: torch.Tensor | None,
                      cu_seqlens: torch.Tensor | None, conv_weight: torch.Tensor, conv_bias: torch.Tensor,
                      query_weight: torch.Tensor, query_bias: torch.Tensor, key_weight: torch.Tensor,
                      key_bias: torch.Tensor, value_weight: torch.Tensor, value_bias: torch.Tensor,
                      out_weight: torch.Tensor, out_bias: torch.Tensor, conv_out_weight: torch.Tensor,
                      conv_out_bias: torch.Tensor, alpha: torch.Tensor, dropout_seed: torch.Tensor | None,
                      dilation: int, heads: int, norm_eps: float, attention_eps: float, attention_dropout: float,
                      dropout: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fused AttModule forward (package docstring): returns out (B, C, T), norm_stats (N, 2, C), kv_state
    (N, H, D, D), key_sum (N, H, D). Raises ``ValueError`` as ``validation.validate_inputs(kernel=True)``."""
    weights = (conv_weight, conv_bias, query_weight, query_bias, key_weight, key_bias, value_weight, value_bias,
               out_weight, out_bias, conv_out_weight, conv_out_bias)
    validate_inputs("trgnet_triton::att_module", x, values, mask, cu_seqlens, weights, alpha, dropout_seed,
                    dilation, heads, norm_eps, attention_eps, attention_dropout, dropout, kernel=True)
    check_triton_tensor("trgnet_triton::att_module", "x", x)
    geo = _geometry(x, cu_seqlens, heads)
    sdt = state_dtype(x.dtype)
    dev = x.device
    out = _empty(x.shape, x.dtype, dev)
    norm_stats = _empty((geo.N, 2, geo.C), sdt, dev)
    kv_state = _empty((geo.N, heads, geo.D, geo.D), sdt, dev)
    key_sum = _empty((geo.N, heads, geo.D), sdt, dev)
    if geo.N == 0 or geo.C == 0:
        return out, norm_stats, kv_state, key_sum
    cp, layout = geo.CP, dict(HAS_CU=geo.has_cu, PACKED=geo.packed, BT=geo.BT, CP=geo.CP)
    cu = cu_seqlens if geo.has_cu else x  # never read without cu_seqlens (likewise mask, values, seed below)
    stats_ws = _empty((geo.slots, 2, cp), sdt, dev)
    kv_ws = _empty((geo.slots, cp, cp), sdt, dev)
    ks_ws = _empty((geo.slots, cp), sdt, dev)
    norm_eps2 = _split_double(norm_eps)
    wrap_triton(_am_fwd_stats_kernel)[geo.grid](
        x, cu, conv_weight, conv_bias, stats_ws, geo.C, geo.T, geo.N, dilation, geo.TPP, geo.n_chunks, **layout,
        **TILE_LAUNCH)
    wrap_triton(_am_fwd_kv_kernel)[geo.grid](
        x, values if values is not None else x, cu, conv_weight, conv_bias, key_weight, key_bias, value_weight,
        value_bias, stats_ws, kv_ws, ks_ws, geo.C, geo.T, geo.N, dilation, geo.TPP, geo.n_chunks, *norm_eps2,
        HAS_VALUES=values is not None, **layout, **TILE_LAUNCH)
    wrap_triton(_am_reduce_state_kernel)[(geo.N,)](
        kv_ws, ks_ws, kv_state, key_sum, stats_ws, norm_stats, cu, geo.C, geo.D, geo.T, geo.N, geo.TPP,
        geo.n_chunks, *norm_eps2, WITH_STATS=True, **layout, **TILE_LAUNCH)
    wrap_triton(_am_fwd_output_kernel)[geo.grid](
        x, mask if mask is not None else x, cu, dropout_seed if dropout_seed is not None else x, conv_weight,
        conv_bias, query_weight, query_bias, out_weight, out_bias, conv_out_weight, conv_out_bias, alpha,
        norm_stats, kv_state, key_sum, out, geo.C, geo.D, geo.T, geo.N, dilation, geo.TPP, geo.n_chunks,
        *_split_double(attention_eps), *_dropout_args(attention_dropout), *_dropout_args(dropout),
        HAS_MASK=mask is not None, DROP1=attention_dropout > 0, DROP2=dropout > 0, **layout, **TILE_LAUNCH)
    return out, norm_stats, kv_state, key_sum


@triton_op("trgnet_triton::att_module_backward", mutates_args=())
def att_module_backward_triton(grad_out: torch.Tensor, x: torch.Tensor, values: torch.Tensor | None,
                               mask: torch.Tensor | None, cu_seqlens: torch.Tensor | None,
                               conv_weight: torch.Tensor, conv_bias: torch.Tensor, query_weight: torch.Tensor,
                               query_bias: torch.Tensor, key_weight: torch.Tensor, key_bias: torch.Tensor,
                               value_weight: torch.Tensor, value_bias: torch.Tensor, out_weight: torch.Tensor,
                               out_bias: torch.Tensor, conv_out_weight: torch.Tensor, conv_out_bias: torch.Tensor,
                               alpha: torch.Tensor, dropout_seed: torch.Tensor | None, norm_stats: torch.Tensor,
                               kv_state: torch.Tensor, key_sum: torch.Tensor, dilation: int, heads: int,
                               norm_eps: float, attention_eps: float, attention_dropout: float,
                               dropout: float) -> _GRADS:
    """Gradients of ``att_module_triton``'s out w.r.t. x, values (an empty (0,) tensor in encoder mode), the 12
    weights and biases and alpha, given grad_out (B, C, T) and the saved norm_stats, kv_state, key_sum. Raises
    ``ValueError`` as ``validation.validate_backward_inputs``."""
    weights = (conv_weight, conv_bias, query_weight, query_bias, key_weight, key_bias, value_weight, value_bias,
               out_weight, out_bias, conv_out_weight, conv_out_bias)
    validate_backward_inputs("trgnet_triton::att_module_backward", grad_out, x, values, mask, cu_seqlens, weights,
                             alpha, dropout_seed, norm_stats, kv_state, key_sum, dilation, heads, norm_eps,
                             attention_eps, attention_dropout, dropout)
    geo = _geometry(x, cu_seqlens, heads)
    sdt = state_dtype(x.dtype)
    dev = x.device
    grad_x = _empty(x.shape, x.dtype, dev)
    grad_values = _empty(x.shape, x.dtype, dev) if values is not None else x.new_empty((0,))
    weight_grads = [_empty(w.shape, w.dtype, dev) for w in weights]
    grad_alpha = _empty((), alpha.dtype, dev)
    if geo.N == 0 or geo.C == 0:
        return (grad_x, grad_values, *weight_grads, grad_alpha)
    cp, layout = geo.CP, dict(HAS_CU=geo.has_cu, PACKED=geo.packed, BT=geo.BT, CP=geo.CP)
    cu = cu_seqlens if geo.has_cu else x  # never read without cu_seqlens (likewise mask, values, seed below)
    mask_arg = mask if mask is not None else x
    seed = dropout_seed if dropout_seed is not None else x
    dq_buf = _empty(x.shape, sdt, dev)
    dkv_ws = _empty((geo.slots, cp, cp), sdt, dev)
    dks_ws = _empty((geo.slots, cp), sdt, dev)
    sums_ws = _empty((geo.slots, 2, cp), sdt, dev)
    wg_ws = _empty((geo.slots, geo.grad_slot_size), sdt, dev)
    dkv = _empty(kv_state.shape, sdt, dev)
    dks = _empty(key_sum.shape, sdt, dev)
    drop1, drop2 = _dropout_args(attention_dropout), _dropout_args(dropout)
    flags = dict(HAS_MASK=mask is not None, **layout)
    wrap_triton(_am_bwd_query_kernel)[geo.grid](
        grad_out, x, mask_arg, cu, seed, conv_weight, conv_bias, query_weight, query_bias, out_weight, out_bias,
        conv_out_weight, conv_out_bias, alpha, norm_stats, kv_state, key_sum, dq_buf, dkv_ws, dks_ws, wg_ws,
        geo.C, geo.D, geo.T, geo.N, dilation, geo.TPP, geo.n_chunks, geo.grad_slot_size,
        *_split_double(attention_eps), *drop1, *drop2,
        DROP1=attention_dropout > 0, DROP2=dropout > 0, **flags, **TILE_LAUNCH)
    wrap_triton(_am_reduce_state_kernel)[(geo.N,)](
        dkv_ws, dks_ws, dkv, dks, sums_ws, norm_stats, cu, geo.C, geo.D, geo.T, geo.N, geo.TPP, geo.n_chunks,
        *_split_double(norm_eps), WITH_STATS=False, **layout, **TILE_LAUNCH)
    wrap_triton(_am_bwd_key_value_kernel)[geo.grid](
        x, values if values is not None else x, cu, conv_weight, conv_bias, key_weight, key_bias, value_weight,
        value_bias, norm_stats, dkv, dks, dq_buf, grad_values if values is not None else x, sums_ws, wg_ws,
        geo.C, geo.D, geo.T, geo.N, dilation, geo.TPP, geo.n_chunks, geo.grad_slot_size,
        HAS_VALUES=values is not None, **layout, **TILE_LAUNCH)
    wrap_triton(_am_bwd_norm_kernel)[geo.grid](
        grad_out, x, mask_arg, cu, seed, conv_weight, conv_bias, conv_out_weight, norm_stats, sums_ws, dq_buf,
        geo.C, geo.T, geo.N, dilation, geo.TPP, geo.n_chunks, *drop2, DROP2=dropout > 0, **flags,
        **TILE_LAUNCH)
    wrap_triton(_am_bwd_conv_kernel)[geo.grid](
        grad_out, x, mask_arg, cu, conv_weight, dq_buf, grad_x, wg_ws, geo.C, geo.T, geo.N, dilation, geo.TPP,
        geo.n_chunks, geo.grad_slot_size, **flags, **TILE_LAUNCH)
    wrap_triton(_am_reduce_grads_kernel)[(triton.cdiv(3 * geo.C * geo.C, REDUCE_BLOCK),)](
        wg_ws, geo.slots, geo.grad_slot_size, geo.C, *weight_grads, grad_alpha, BLOCK=REDUCE_BLOCK)
    return (grad_x, grad_values, *weight_grads, grad_alpha)


att_module_triton.register_autograd(make_backward(att_module_backward_triton), setup_context=setup_context)
