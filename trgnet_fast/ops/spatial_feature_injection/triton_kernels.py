"""Triton kernels of the fused spatial feature injection (SFI, docs/model.md#sfi,
docs/kernels.md#spatial_feature_injection).

Math, layouts and shapes: the package docstring (``trgnet_fast/ops/spatial_feature_injection/__init__.py``). The
kernels are built from the fused AttModule's Triton infrastructure (``trgnet_fast/ops/att_module/triton_kernels.py``
and ``triton_math.py``), imported, not copied: the (CP, BT) channel x frame tiles of the (N, C, T) tensors (C padded
to the power of two CP >= 16, BT = ``FRAME_TILE`` frames), the products (``_mm*``: tf32x3 for fp32 and 16-bit
inputs, IEEE fp64 dots for fp64), the dropout hash (stream 0, ``ATTENTION_STREAM``, on u as an (N, C, T) tensor),
the work split and launch options (``_geometry`` and its ``TARGET_SLOTS``, ``TILE_LAUNCH``, ``REDUCE_BLOCK``), the
weight-gradient partials accumulated in each program's own workspace slot (``_accumulate_matrix``'s scheme) and the
poisonable allocation (``_empty``).

The group operand: g[t] (G V,) with channel k = v G + c is read straight from group (N, G, T, V) through its four
strides (any layout: STI hands over a channel slice), in blocks of KB = min(``GROUP_BLOCK``, GP) channels (GP = G V
padded to a power of two >= 16, G V <= 512): conv_s is a loop s = conv_s_bias + sum_blocks W_s[:, blk] g[blk], so
no (CP, GP) operand is ever live (at G V = 512 it would be 128 fp32 registers per thread on its own).

Work split (the AttModule's, without sequences: every frame is independent and all frames are valid): grid
(N, n_chunks); program (n, j) handles tiles j*TPP .. j*TPP + TPP - 1 (BT frames each) of row n, TPP chosen so that
N * n_chunks is about TARGET_SLOTS. Sums in the state dtype (fp32; fp64 for fp64 inputs); 16-bit inputs are loaded
to fp32 and the outputs stored back in the inputs' dtype. GELU is the erf form, GELU'(a) = Phi(a) + a phi(a).

Forward (1 launch):

* ``_sfi_fwd_kernel``: per tile s = W_s g + b_s (blocked over the group channels), f = W_f[:, :C] h + W_f[:, C:] s
  + b_f, a = W_1 f + b_1, u = GELU(a) r, out = (W_2 u + b_2 + h) m; stores out.

Backward (2 launches), recomputing s, f, a, u from the inputs (nothing but the inputs is saved) and r from the seed:

* ``_sfi_bwd_kernel``: per tile g' = g m, gu = W_2^T g', ga = gu r GELU'(a), gf = W_1^T ga,
  grad_h = g' + W_f[:, :C]^T gf, gs = W_f[:, C:]^T gf, grad_group[blk] = W_s[:, blk]^T gs (stored block by block
  into the contiguous (N, G, T, V) grad_group); the weight-gradient partials g' u^T, ga f^T, gf s^T, gf h^T and
  gs g[blk]^T accumulated in the program's own workspace slot (``_accumulate_padded``: (CP, CP) register
  accumulators next to the tile's products spill on sm_90, see ``triton_math._accumulate_matrix``; the slot's
  blocks are padded so the offsets are compile-time constants and need no mask), the bias partials (sums of g',
  ga, gf, gs) in registers, stored at the end. Every program clears its slot first, so a program without a tile
  leaves zero partials. Register pressure: GELU and GELU' are evaluated where used, h is reloaded rather than held
  across the chain, the group block loop accumulates gs g[blk]^T before it computes grad_group[blk] (orders
  picked with the offline sm_90 compile of ``benchmarks/kernel_report.py``, see its report of this op).
* ``_sfi_reduce_grads_kernel``: the 8 weight / bias gradient partials summed over the slots in slot order
  (deterministic, no atomics), unpadded, cast to the weights' dtype.

Workspace slot (state dtype), padded blocks: conv_s_weight (CP, GP) at 0, conv_s_bias CP, fusion_weight's h half
(CP, CP) and s half (CP, CP), fusion_bias CP, ff1_weight (CP, CP), ff1_bias CP, ff2_weight (CP, CP), ff2_bias CP:
GS = CP GP + 4 CP^2 + 4 CP values per slot (``grad_slot_size``; offsets ``_segments``).

Memory: nothing saved but the inputs. The forward allocates only out; the backward grad_group, grad_h, the weight
gradients and the workspace S GS values, S = N * n_chunks <= ~TARGET_SLOTS + N (fp32 at N = 8, T = 6000, C = 64,
G V = 200: CP = 64, GP = 256, S = 256, 33.8 MB).

Registered as ``torch.ops.trgnet_triton.spatial_feature_injection`` / ``spatial_feature_injection_backward``
(``triton_op`` + ``wrap_triton``, autograd via ``register_autograd``, the native op's schemas).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from trgnet_fast.ops._checks import check_triton_tensor
# private helpers of the AttModule's launcher module, reused as they are: block sizes and launch options, the
# geometry (grid, tiles per program), the dropout arguments and the (poisonable) allocation
from trgnet_fast.ops.att_module.triton_kernels import FRAME_TILE, REDUCE_BLOCK, TILE_LAUNCH, _dropout_args, _empty, \
    _geometry
from trgnet_fast.ops.att_module.triton_math import (
    ATTENTION_STREAM, _frame_mask, _keep_scale, _linear, _load_matrix, _load_tile, _load_vector,
    _mm, _mm_nt, _mm_tn, _store_tile, _tile_frames, _tiles_in_chunk, _two_floats)
from trgnet_fast.ops.spatial_feature_injection.autograd import make_backward, setup_context
from trgnet_fast.ops.spatial_feature_injection.validation import (state_dtype, validate_backward_inputs,
                                                                  validate_inputs)

__all__ = ["spatial_feature_injection_triton", "spatial_feature_injection_backward_triton", "FRAME_TILE",
           "GROUP_BLOCK", "grad_slot_size"]

GROUP_BLOCK = 64  # KB: group channels per conv_s product block (the largest; fewer when G V is small)
DROPOUT_STREAM = ATTENTION_STREAM  # stream 0 of the AttModule's hash (reference.DROPOUT_STREAM)


def _padded(c: int, group_channels: int) -> tuple[int, int]:
    """(CP, GP): C and G V padded to powers of two >= 16."""
    return triton.next_power_of_2(max(c, 16)), triton.next_power_of_2(max(group_channels, 16))


def grad_slot_size(c: int, group_channels: int) -> int:
    """GS, the values of one program's weight-gradient slot (module docstring): padded (CP, GP) and (CP, CP)
    blocks, (CP,) vectors."""
    cp, gp = _padded(c, group_channels)
    return cp * gp + 4 * cp * cp + 4 * cp


# ------------------------------------------------------------------------------------------------
# device helpers

@triton.jit
def _segments(CP: tl.constexpr, GP: tl.constexpr):
    """Offsets in a slot (all compile-time) of conv_s b, fusion w's h half, its s half, fusion b, ff1 w, ff1 b,
    ff2 w, ff2 b (conv_s w at 0)."""
    bs: tl.constexpr = CP * GP
    wfh: tl.constexpr = bs + CP
    wfs: tl.constexpr = wfh + CP * CP
    bf: tl.constexpr = wfs + CP * CP
    w1: tl.constexpr = bf + CP
    b1: tl.constexpr = w1 + CP * CP
    w2: tl.constexpr = b1 + CP
    b2: tl.constexpr = w2 + CP * CP
    return bs, wfh, wfs, bf, w1, b1, w2, b2


@triton.jit
def _block_channels(k0, GV, G, KB: tl.constexpr):
    """Group channels k0 .. k0 + KB - 1 (k = v G + c): (k, k < G V, c, v)."""
    rk = k0 + tl.arange(0, KB)
    k_ok = rk < GV
    return rk, k_ok, rk % G, rk // G


@triton.jit
def _load_group_block(ptr, n, k0, t_loc, GV, G, T, s0, s1, s2, s3, KB: tl.constexpr, ACC: tl.constexpr):
    """(KB, BT) block of g = flatten_joints(group)[n] at channels k0.. and frames t_loc, read through group's
    strides; zero past G V and T."""
    rk, k_ok, c, v = _block_channels(k0, GV, G, KB)
    off = (tl.cast(n, tl.int64) * s0 + tl.cast(c, tl.int64)[:, None] * s1 + tl.cast(v, tl.int64)[:, None] * s3
           + tl.cast(t_loc, tl.int64)[None, :] * s2)
    return tl.load(ptr + off, mask=k_ok[:, None] & (t_loc < T)[None, :], other=0.0).to(ACC)


@triton.jit
def _load_conv_s_block(ptr, k0, rc, c_ok, GV, KB: tl.constexpr, ACC: tl.constexpr):
    """(CP, KB) columns k0.. of conv_s_weight (C, G V), zero-padded."""
    rk = k0 + tl.arange(0, KB)
    return tl.load(ptr + rc[:, None] * GV + rk[None, :], mask=c_ok[:, None] & (rk < GV)[None, :],
                   other=0.0).to(ACC)


@triton.jit
def _accumulate_padded(ptr, value, ROWS: tl.constexpr, COLS: tl.constexpr, LD: tl.constexpr):
    """M += value for the padded (ROWS, COLS) block M[o, i] = ptr[o LD + i] of the program's own slot: compile-time
    offsets and no mask (the padded rows and columns accumulate the zeros of the padded operands), so no (CP, CP)
    offset or mask tensor is live next to the tile's products (``_accumulate_matrix`` with a padded layout; the
    barrier orders the next read after every thread's write)."""
    off = tl.arange(0, ROWS)[:, None] * LD + tl.arange(0, COLS)[None, :]
    tl.store(ptr + off, tl.load(ptr + off) + value)
    tl.debug_barrier()


@triton.jit
def _clear(ptr, size, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """Zeroes ``size`` values at ptr."""
    for k0 in range(0, size, BLOCK):
        r = k0 + tl.arange(0, BLOCK)
        tl.store(ptr + r, tl.zeros((BLOCK,), ACC), mask=r < size)


@triton.jit
def _gelu_and_grad(a):
    """(GELU(a), GELU'(a)) of the erf form: a Phi(a) and Phi(a) + a phi(a)."""
    cdf = 0.5 * (1.0 + tl.math.erf(a * tl.full((), 0.7071067811865476, a.dtype)))
    pdf = tl.exp(-0.5 * a * a) * tl.full((), 0.3989422804014327, a.dtype)
    return a * cdf, cdf + a * pdf


@triton.jit
def _recompute(group_ptr, h_ptr, ws_ptr, bs_ptr, wf_ptr, bf_ptr, w1_ptr, b1_ptr, n, t_loc, rc, c_ok,
               C, T, GV, G, s0, s1, s2, s3, BT: tl.constexpr, CP: tl.constexpr, KB: tl.constexpr,
               ACC: tl.constexpr):
    """The tile's h, s = W_s g + b_s, f = W_f [h; s] + b_f and a = W_1 f + b_1 (each (CP, BT))."""
    s = tl.zeros((CP, BT), ACC) + _load_vector(bs_ptr, rc, c_ok, ACC)[:, None]
    for k0 in tl.range(0, GV, KB):
        s += _mm(_load_conv_s_block(ws_ptr, k0, rc, c_ok, GV, KB, ACC),
                 _load_group_block(group_ptr, n, k0, t_loc, GV, G, T, s0, s1, s2, s3, KB, ACC), ACC)
    hc = _load_tile(h_ptr, n, 0, t_loc, T, rc, c_ok, C, T, ACC)  # after the loop: not live across it
    f = (_mm(_load_matrix(wf_ptr, rc, c_ok, 2 * C, 1).to(ACC), hc, ACC)
         + _mm(_load_matrix(wf_ptr + C, rc, c_ok, 2 * C, 1).to(ACC), s, ACC)
         + _load_vector(bf_ptr, rc, c_ok, ACC)[:, None])
    a = _linear(w1_ptr, b1_ptr, f, rc, c_ok, C, ACC)
    return hc, s, f, a


# ------------------------------------------------------------------------------------------------
# forward

@triton.jit
def _sfi_fwd_kernel(group_ptr, h_ptr, mask_ptr, seed_ptr, ws_ptr, bs_ptr, wf_ptr, bf_ptr, w1_ptr, b1_ptr, w2_ptr,
                    b2_ptr, out_ptr,
                    C, T, GV, G, s0, s1, s2, s3, TPP, thr, sc_hi, sc_lo,
                    HAS_MASK: tl.constexpr, DROP: tl.constexpr, BT: tl.constexpr, CP: tl.constexpr,
                    KB: tl.constexpr):
    n = tl.program_id(0)
    chunk = tl.program_id(1)
    ACC = tl.float64 if h_ptr.dtype.element_ty == tl.float64 else tl.float32
    rc = tl.arange(0, CP)
    c_ok = rc < C
    for i in tl.range(0, _tiles_in_chunk(chunk, T, TPP, BT), disable_licm=True):  # weights reloaded per tile
        t_loc = _tile_frames(chunk, i, TPP, BT)
        hc, s, f, a = _recompute(group_ptr, h_ptr, ws_ptr, bs_ptr, wf_ptr, bf_ptr, w1_ptr, b1_ptr, n, t_loc, rc,
                                 c_ok, C, T, GV, G, s0, s1, s2, s3, BT, CP, KB, ACC)
        act, _ = _gelu_and_grad(a)
        r = _keep_scale(seed_ptr, n, 0, t_loc, rc, C, T, thr, _two_floats(sc_hi, sc_lo, ACC), DROPOUT_STREAM, DROP,
                        ACC)
        m = _frame_mask(mask_ptr, n, 0, t_loc, T, T, HAS_MASK, ACC)[None, :]
        out = (_linear(w2_ptr, b2_ptr, act * r, rc, c_ok, C, ACC) + hc) * m
        _store_tile(out_ptr, out, n, 0, t_loc, T, T, rc, c_ok, C, T)


# ------------------------------------------------------------------------------------------------
# backward

@triton.jit
def _sfi_bwd_kernel(g_ptr, group_ptr, h_ptr, mask_ptr, seed_ptr, ws_ptr, bs_ptr, wf_ptr, bf_ptr, w1_ptr, b1_ptr,
                    w2_ptr, dgroup_ptr, dh_ptr, wg_ws_ptr,
                    C, T, GV, G, s0, s1, s2, s3, TPP, n_chunks, GS, thr, sc_hi, sc_lo,
                    HAS_MASK: tl.constexpr, DROP: tl.constexpr, BT: tl.constexpr, CP: tl.constexpr,
                    KB: tl.constexpr, GP: tl.constexpr):
    n = tl.program_id(0)
    chunk = tl.program_id(1)
    ACC = wg_ws_ptr.dtype.element_ty
    rc = tl.arange(0, CP)
    c_ok = rc < C
    slot = wg_ws_ptr + (tl.cast(n, tl.int64) * n_chunks + chunk) * GS
    off_bs, off_wfh, off_wfs, off_bf, off_w1, off_b1, off_w2, off_b2 = _segments(CP, GP)
    _clear(slot, GS, 1024, ACC)  # the matrices accumulate in the slot; the vectors are overwritten at the end
    tl.debug_barrier()
    dbs = tl.zeros((CP,), ACC)
    dbf = tl.zeros((CP,), ACC)
    db1 = tl.zeros((CP,), ACC)
    db2 = tl.zeros((CP,), ACC)
    for i in tl.range(0, _tiles_in_chunk(chunk, T, TPP, BT), disable_licm=True):  # weights reloaded per tile
        t_loc = _tile_frames(chunk, i, TPP, BT)
        _, s, f, a = _recompute(group_ptr, h_ptr, ws_ptr, bs_ptr, wf_ptr, bf_ptr, w1_ptr, b1_ptr, n, t_loc, rc,
                                c_ok, C, T, GV, G, s0, s1, s2, s3, BT, CP, KB, ACC)
        r = _keep_scale(seed_ptr, n, 0, t_loc, rc, C, T, thr, _two_floats(sc_hi, sc_lo, ACC), DROPOUT_STREAM, DROP,
                        ACC)
        m = _frame_mask(mask_ptr, n, 0, t_loc, T, T, HAS_MASK, ACC)[None, :]
        gp = _load_tile(g_ptr, n, 0, t_loc, T, rc, c_ok, C, T, ACC) * m  # 0 past T
        # out = W_2 u + b_2 + h (times m); u = GELU(a) r, a = W_1 f + b_1
        ga = _mm_tn(_load_matrix(w2_ptr, rc, c_ok, C, 1).to(ACC), gp, ACC) * r * _gelu_and_grad(a)[1]
        _accumulate_padded(slot + off_w2, _mm_nt(gp, _gelu_and_grad(a)[0] * r, ACC), CP, CP, CP)
        db2 += tl.sum(gp, axis=1)
        _accumulate_padded(slot + off_w1, _mm_nt(ga, f, ACC), CP, CP, CP)
        db1 += tl.sum(ga, axis=1)
        # f = W_f [h; s] + b_f
        gf = _mm_tn(_load_matrix(w1_ptr, rc, c_ok, C, 1).to(ACC), ga, ACC)
        _store_tile(dh_ptr, gp + _mm_tn(_load_matrix(wf_ptr, rc, c_ok, 2 * C, 1).to(ACC), gf, ACC),
                    n, 0, t_loc, T, T, rc, c_ok, C, T)
        _accumulate_padded(slot + off_wfs, _mm_nt(gf, s, ACC), CP, CP, CP)
        hc = _load_tile(h_ptr, n, 0, t_loc, T, rc, c_ok, C, T, ACC)  # reloaded: not held live from _recompute
        _accumulate_padded(slot + off_wfh, _mm_nt(gf, hc, ACC), CP, CP, CP)
        dbf += tl.sum(gf, axis=1)
        # s = W_s g + b_s, g read through group's strides, grad_group contiguous (N, G, T, V)
        gs = _mm_tn(_load_matrix(wf_ptr + C, rc, c_ok, 2 * C, 1).to(ACC), gf, ACC)
        dbs += tl.sum(gs, axis=1)
        t_ok = t_loc < T
        for k0 in tl.range(0, GV, KB):
            _accumulate_padded(slot + k0, _mm_nt(gs, _load_group_block(group_ptr, n, k0, t_loc, GV, G, T, s0, s1, s2,
                                                                          s3, KB, ACC), ACC), CP, KB, GP)
            rk, k_ok, c, v = _block_channels(k0, GV, G, KB)
            off = ((tl.cast(n, tl.int64) * G + c[:, None]) * T + t_loc[None, :]) * (GV // G) + v[:, None]
            dg = _mm_tn(_load_conv_s_block(ws_ptr, k0, rc, c_ok, GV, KB, ACC), gs, ACC)
            tl.store(dgroup_ptr + off, dg.to(dgroup_ptr.dtype.element_ty), mask=k_ok[:, None] & t_ok[None, :])
    tl.store(slot + off_bs + rc, dbs)
    tl.store(slot + off_bf + rc, dbf)
    tl.store(slot + off_b1 + rc, db1)
    tl.store(slot + off_b2 + rc, db2)


@triton.jit
def _reduce_segment(ws_ptr, out_ptr, off, size, cols, LD, out_ld, block, slots, GS, BLOCK: tl.constexpr):
    """Block ``block`` of a (size / cols, cols) gradient, slot entry (o, i) at off + o LD + i (the padded layout),
    summed over the slots in slot order (deterministic), cast, stored at out_ptr[o out_ld + i]."""
    if block * BLOCK < size:
        r = block * BLOCK + tl.arange(0, BLOCK)
        ok = r < size
        row = r // cols
        col = r % cols
        src = off + row * LD + col
        acc = tl.zeros((BLOCK,), ws_ptr.dtype.element_ty)
        for s in range(0, slots):
            acc += tl.load(ws_ptr + tl.cast(s, tl.int64) * GS + src, mask=ok, other=0.0)
        tl.store(out_ptr + row * out_ld + col, acc.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _sfi_reduce_grads_kernel(wg_ws_ptr, slots, GS, C, GV, gsw_ptr, gsb_ptr, gfw_ptr, gfb_ptr, g1w_ptr, g1b_ptr,
                             g2w_ptr, g2b_ptr, CP: tl.constexpr, GP: tl.constexpr, BLOCK: tl.constexpr):
    block = tl.program_id(0)
    off_bs, off_wfh, off_wfs, off_bf, off_w1, off_b1, off_w2, off_b2 = _segments(CP, GP)
    _reduce_segment(wg_ws_ptr, gsw_ptr, 0, C * GV, GV, GP, GV, block, slots, GS, BLOCK)
    _reduce_segment(wg_ws_ptr, gsb_ptr, off_bs, C, C, CP, C, block, slots, GS, BLOCK)
    _reduce_segment(wg_ws_ptr, gfw_ptr, off_wfh, C * C, C, CP, 2 * C, block, slots, GS, BLOCK)
    _reduce_segment(wg_ws_ptr, gfw_ptr + C, off_wfs, C * C, C, CP, 2 * C, block, slots, GS, BLOCK)
    _reduce_segment(wg_ws_ptr, gfb_ptr, off_bf, C, C, CP, C, block, slots, GS, BLOCK)
    _reduce_segment(wg_ws_ptr, g1w_ptr, off_w1, C * C, C, CP, C, block, slots, GS, BLOCK)
    _reduce_segment(wg_ws_ptr, g1b_ptr, off_b1, C, C, CP, C, block, slots, GS, BLOCK)
    _reduce_segment(wg_ws_ptr, g2w_ptr, off_w2, C * C, C, CP, C, block, slots, GS, BLOCK)
    _reduce_segment(wg_ws_ptr, g2b_ptr, off_b2, C, C, CP, C, block, slots, GS, BLOCK)


# ------------------------------------------------------------------------------------------------
# launchers

_GRADS = tuple[(torch.Tensor,) * 10]


def _shape_args(group, geo) -> tuple:
    """(C, T, G V, G, group's 4 strides, TPP), the leading scalar arguments of the tiled kernels."""
    _, g, _, v = group.shape
    return (geo.C, geo.T, g * v, g, *group.stride(), geo.TPP)


def _layout(geo, group, mask) -> dict:
    group_channels = group.shape[1] * group.shape[3]
    kb = min(GROUP_BLOCK, _padded(geo.C, group_channels)[1])
    return dict(HAS_MASK=mask is not None, BT=geo.BT, CP=geo.CP, KB=kb)


@triton_op("trgnet_triton::spatial_feature_injection", mutates_args=())
def spatial_feature_injection_triton(group: torch.Tensor, h: torch.Tensor, mask: torch.Tensor | None,
                                     conv_s_weight: torch.Tensor, conv_s_bias: torch.Tensor,
                                     fusion_weight: torch.Tensor, fusion_bias: torch.Tensor,
                                     ff1_weight: torch.Tensor, ff1_bias: torch.Tensor, ff2_weight: torch.Tensor,
                                     ff2_bias: torch.Tensor, dropout_seed: torch.Tensor | None,
                                     dropout: float) -> torch.Tensor:
    """The fused SFI (package docstring): out (N, C, T). One launch. Raises ``ValueError`` as
    ``validation.validate_inputs(kernel=True)``."""
    weights = (conv_s_weight, conv_s_bias, fusion_weight, fusion_bias, ff1_weight, ff1_bias, ff2_weight, ff2_bias)
    validate_inputs("trgnet_triton::spatial_feature_injection", group, h, mask, weights, dropout_seed, dropout,
                    kernel=True)
    check_triton_tensor("trgnet_triton::spatial_feature_injection", "group", group)
    out = _empty(h.shape, h.dtype, h.device)
    if h.numel() == 0:
        return out
    geo = _geometry(h, None, 1)
    wrap_triton(_sfi_fwd_kernel)[geo.grid](
        group, h, mask if mask is not None else h, dropout_seed if dropout_seed is not None else h,  # never read
        *weights, out, *_shape_args(group, geo), *_dropout_args(dropout), DROP=dropout > 0,
        **_layout(geo, group, mask), **TILE_LAUNCH)
    return out


@triton_op("trgnet_triton::spatial_feature_injection_backward", mutates_args=())
def spatial_feature_injection_backward_triton(grad_out: torch.Tensor, group: torch.Tensor, h: torch.Tensor,
                                              mask: torch.Tensor | None, conv_s_weight: torch.Tensor,
                                              conv_s_bias: torch.Tensor, fusion_weight: torch.Tensor,
                                              fusion_bias: torch.Tensor, ff1_weight: torch.Tensor,
                                              ff1_bias: torch.Tensor, ff2_weight: torch.Tensor,
                                              ff2_bias: torch.Tensor, dropout_seed: torch.Tensor | None,
                                              dropout: float) -> _GRADS:
    """Gradients of ``spatial_feature_injection_triton``'s out w.r.t. group (contiguous (N, G, T, V)), h and the 8
    weights and biases, given grad_out (N, C, T). Two launches. Raises ``ValueError`` as
    ``validation.validate_backward_inputs``."""
    weights = (conv_s_weight, conv_s_bias, fusion_weight, fusion_bias, ff1_weight, ff1_bias, ff2_weight, ff2_bias)
    validate_backward_inputs("trgnet_triton::spatial_feature_injection_backward", grad_out, group, h, mask, weights,
                             dropout_seed, dropout)
    dev = h.device
    grad_group = _empty(tuple(group.shape), group.dtype, dev)  # contiguous, whatever group's strides
    grad_h = _empty(h.shape, h.dtype, dev)
    if h.numel() == 0:  # no frame (or no channel): every gradient is 0
        return (grad_group.zero_(), grad_h, *(torch.zeros_like(w) for w in weights))
    geo = _geometry(h, None, 1)
    group_channels = group.shape[1] * group.shape[3]
    GS = grad_slot_size(geo.C, group_channels)
    GP = _padded(geo.C, group_channels)[1]
    weight_grads = [_empty(w.shape, w.dtype, dev) for w in weights]
    wg_ws = _empty((geo.slots, GS), state_dtype(h.dtype), dev)
    wrap_triton(_sfi_bwd_kernel)[geo.grid](
        grad_out, group, h, mask if mask is not None else h, dropout_seed if dropout_seed is not None else h,
        *weights[:7], grad_group, grad_h, wg_ws, *_shape_args(group, geo), geo.n_chunks, GS,
        *_dropout_args(dropout), DROP=dropout > 0, GP=GP, **_layout(geo, group, mask), **TILE_LAUNCH)
    largest = max(geo.C * group_channels, geo.C * geo.C)
    wrap_triton(_sfi_reduce_grads_kernel)[(triton.cdiv(largest, REDUCE_BLOCK),)](
        wg_ws, geo.slots, GS, geo.C, group_channels, *weight_grads, CP=geo.CP, GP=GP, BLOCK=REDUCE_BLOCK)
    return (grad_group, grad_h, *weight_grads)


spatial_feature_injection_triton.register_autograd(make_backward(spatial_feature_injection_backward_triton),
                                                   setup_context=setup_context)
