"""Device helpers of the fused AttModule's Triton kernels (``triton_kernels.py``): sequence and tile geometry,
loads and stores of (CP, BT) channel x frame tiles, the matrix products, the recomputed activations (conv + ReLU,
the attention on block-diagonal states), the dropout hash, and the layout of the weight-gradient workspace.

Tiles are (CP, BT): all C channels (padded to the power of two CP >= 16, padded rows are zero) of BT frames, frames
contiguous in memory as in the (B, C, T) tensors. The per-head states are handled as block-diagonal (CP, CP)
matrices (entry (d, e) is zero unless channels d and e belong to the same head), so every product of the op is one
``tl.dot`` over all channels whatever the head size D (odd D included).
"""
from __future__ import annotations

import triton
import triton.language as tl


# The stream constants of the dropout hash (reference.py: _STREAM_CONSTANTS).
ATTENTION_STREAM = tl.constexpr(0x9E3779B9)
MODULE_STREAM = tl.constexpr(0x7F4A7C15)
# segments of the weight-gradient workspace: conv w, conv b, query w, b, key w, b, value w, b, out w, b,
# conv_out w, b, alpha
N_GRAD_SEGMENTS = tl.constexpr(13)


# ------------------------------------------------------------------------------------------------
# products. Not IEEE fp32 FMA dots (linear_attention's choice for its K = 16): with K = CP = 64 an FMA dot holds
# whole operand rows per thread and spills on sm_90 even alone; "tf32x3" (three TF32 tensor-core products,
# ~fp32 accuracy) does not. fp64: IEEE fp64 tensor-core dots (they lower on sm_90 at these shapes with 8 warps;
# explicit product-sums as in linear_attention's _frames_dot spill ~17 KB per thread and compile for minutes).

@triton.jit
def _mm_tn(a, b, ACC: tl.constexpr):
    """a^T @ b of (K, M) and (K, N) tiles (a transposed weight times a tile), in ACC."""
    if ACC == tl.float64:
        return tl.dot(tl.trans(a), b, input_precision="ieee", out_dtype=ACC)
    return tl.dot(tl.trans(a), b, input_precision="tf32x3", out_dtype=ACC)


@triton.jit
def _mm(a, b, ACC: tl.constexpr):
    """a @ b of (M, K) and (K, N) tiles, in ACC."""
    return _mm_tn(tl.trans(a), b, ACC)


@triton.jit
def _mm_nt(a, b, ACC: tl.constexpr):
    """a @ b^T of (M, BT) and (N, BT) tiles: the sum over the frames of a tile, in ACC."""
    return _mm_tn(tl.trans(a), tl.trans(b), ACC)


# ------------------------------------------------------------------------------------------------
# geometry

@triton.jit
def _sequence_of(cu_ptr, n, N, T, HAS_CU: tl.constexpr, PACKED: tl.constexpr):
    """(row, first row frame, length, store end) of sequence n. Store end: the row frames up to which the kernels
    that write (B, C, T) outputs store — the sequence itself, and for the last sequence of a row also the frames
    after it (padding: written as 0)."""
    if HAS_CU:
        first = tl.load(cu_ptr + n)
        if PACKED:
            row = n * 0
            start = first
        else:
            row = n
            start = first * 0
        length = tl.maximum(tl.minimum(tl.load(cu_ptr + n + 1) - first, T - start), 0)  # never past the row
        if PACKED:
            end = tl.where(n == N - 1, T, start + length)
        else:
            end = T + n * 0
    else:
        row = n
        start = n * 0
        length = T + n * 0
        end = T + n * 0
    return row, start, length, end


@triton.jit
def _tiles_in_chunk(chunk, extent, TPP, BT: tl.constexpr):
    """How many of the TPP tiles of frames [chunk*TPP*BT, ...) of a sequence start before ``extent``."""
    return tl.minimum(tl.maximum(tl.cdiv(extent, BT) - chunk * TPP, 0), TPP)


@triton.jit
def _tile_frames(chunk, i, TPP, BT: tl.constexpr):
    """Sequence-local frame indices of tile i of a chunk."""
    return (chunk * TPP + i) * BT + tl.arange(0, BT)


@triton.jit
def _same_head(rc, c_ok, D):
    """(CP, CP) bool: channels d and e are real and belong to one head (the block-diagonal pattern)."""
    return (rc[:, None] // D == rc[None, :] // D) & c_ok[:, None] & c_ok[None, :]


# ------------------------------------------------------------------------------------------------
# loads and stores

@triton.jit
def _load_tile(ptr, row, start, t_loc, length, rc, c_ok, C, T, ACC: tl.constexpr):
    """(CP, BT) tile of a (B, C, T) tensor at sequence-local frames t_loc; zero outside the sequence (the conv's
    zero padding) and on padded channels."""
    ok = c_ok[:, None] & ((t_loc >= 0) & (t_loc < length))[None, :]
    off = (tl.cast(row, tl.int64) * C + rc[:, None]) * T + start + t_loc[None, :]
    return tl.load(ptr + off, mask=ok, other=0.0).to(ACC)


@triton.jit
def _store_tile(ptr, value, row, start, t_loc, length, end, rc, c_ok, C, T):
    """Stores a (CP, BT) tile at sequence-local frames t_loc up to row frame ``end``; 0 past the sequence."""
    t_ok = t_loc < length
    ok = c_ok[:, None] & (start + t_loc < end)[None, :]
    off = (tl.cast(row, tl.int64) * C + rc[:, None]) * T + start + t_loc[None, :]
    tl.store(ptr + off, tl.where(t_ok[None, :], value, 0.0).to(ptr.dtype.element_ty), mask=ok)


@triton.jit
def _load_matrix(ptr, rc, c_ok, row_stride, col_stride):
    """(CP, CP) matrix M[o, i] = ptr[o * row_stride + i * col_stride] (a Linear weight: C, 1; a conv tap k:
    ptr + k, 3C, 3), zero-padded."""
    return tl.load(ptr + rc[:, None] * row_stride + rc[None, :] * col_stride,
                   mask=c_ok[:, None] & c_ok[None, :], other=0.0)


@triton.jit
def _load_vector(ptr, rc, c_ok, ACC: tl.constexpr):
    return tl.load(ptr + rc, mask=c_ok, other=0.0).to(ACC)


@triton.jit
def _frame_mask(mask_ptr, row, start, t_loc, length, T, HAS_MASK: tl.constexpr, ACC: tl.constexpr):
    """(BT,) the mask m of the frames (1 without a mask), 0 outside the sequence."""
    t_ok = t_loc < length
    if HAS_MASK:
        m = tl.load(mask_ptr + tl.cast(row, tl.int64) * T + start + t_loc, mask=t_ok, other=0.0).to(ACC)
    else:
        m = tl.where(t_ok, 1.0, 0.0).to(ACC)
    return m


@triton.jit
def _load_blockdiag(ptr, n, rc, same, C, D):
    """One sequence's (H, D, D) state as a block-diagonal (CP, CP) matrix: entry (d, e) = S[d // D, d % D, e % D]
    for channels of one head, else 0 (flat index n*C*D + d*D + e % D)."""
    return tl.load(ptr + n * C * D + rc[:, None] * D + rc[None, :] % D, mask=same, other=0.0)


@triton.jit
def _store_blockdiag(ptr, value, n, rc, same, C, D):
    tl.store(ptr + n * C * D + rc[:, None] * D + rc[None, :] % D, value.to(ptr.dtype.element_ty), mask=same)


@triton.jit
def _load_norm_stats(stats_ptr, n, rc, c_ok, C):
    """(mean, rstd) of sequence n from norm_stats (N, 2, C)."""
    mean = tl.load(stats_ptr + (2 * n) * C + rc, mask=c_ok, other=0.0)
    rstd = tl.load(stats_ptr + (2 * n + 1) * C + rc, mask=c_ok, other=0.0)
    return mean, rstd


@triton.jit
def _two_floats(hi, lo, ACC: tl.constexpr):
    """A host double passed as two fp32 parts (Triton passes Python floats as fp32): exact enough for fp64."""
    return tl.cast(hi, ACC) + tl.cast(lo, ACC)


# ------------------------------------------------------------------------------------------------
# statistics

@triton.jit
def _chan_combine(na, mean_a, m2_a, nb, mean_b, m2_b):
    """(mean, M2) of the union of two frame sets of na and nb frames (Chan et al.); nb = 0 leaves a unchanged."""
    w = nb / tl.maximum(na + nb, 1.0)
    delta = mean_b - mean_a
    return mean_a + delta * w, m2_a + m2_b + delta * delta * (na * w)


@triton.jit
def _combine_chunk_stats(ws_ptr, n, n_chunks, length, chunk_frames, rc, eps, CP: tl.constexpr):
    """(mean, rstd) of sequence n from the per-chunk (mean, M2) partials, combined in chunk order (every program
    that needs them combines them the same way: bit-identical results)."""
    ACC = ws_ptr.dtype.element_ty
    mean = tl.zeros((CP,), ACC)
    m2 = tl.zeros((CP,), ACC)
    for j in range(0, tl.cdiv(length, chunk_frames)):
        slot = n * n_chunks + j
        na = tl.cast(j * chunk_frames, ACC)
        nb = tl.cast(tl.minimum(chunk_frames, length - j * chunk_frames), ACC)
        mean, m2 = _chan_combine(na, mean, m2, nb, tl.load(ws_ptr + (2 * slot) * CP + rc),
                                 tl.load(ws_ptr + (2 * slot + 1) * CP + rc))
    var = m2 / tl.cast(tl.maximum(length, 1), ACC)
    if ACC == tl.float64:
        root = tl.sqrt(var + eps)
    else:
        root = tl.sqrt_rn(var + eps)  # IEEE-rounded (tl.sqrt of fp32 may be the approximate one)
    return mean, 1.0 / root


# ------------------------------------------------------------------------------------------------
# recomputed activations

@triton.jit
def _conv_relu(x_ptr, cw_ptr, cb_ptr, row, start, t_loc, length, dil, rc, c_ok, C, T, ACC: tl.constexpr):
    """o = ReLU(conv_bias + sum_k conv_weight[:, :, k] x[t + (k - 1) d]) of a tile, and the x tile (tap 1)."""
    xc = _load_tile(x_ptr, row, start, t_loc, length, rc, c_ok, C, T, ACC)
    acc = _mm(_load_matrix(cw_ptr + 1, rc, c_ok, 3 * C, 3).to(ACC), xc, ACC)
    acc += _mm(_load_matrix(cw_ptr, rc, c_ok, 3 * C, 3).to(ACC),
               _load_tile(x_ptr, row, start, t_loc - dil, length, rc, c_ok, C, T, ACC), ACC)
    acc += _mm(_load_matrix(cw_ptr + 2, rc, c_ok, 3 * C, 3).to(ACC),
               _load_tile(x_ptr, row, start, t_loc + dil, length, rc, c_ok, C, T, ACC), ACC)
    o = tl.maximum(acc + _load_vector(cb_ptr, rc, c_ok, ACC)[:, None], 0.0)
    return o, xc


@triton.jit
def _linear(w_ptr, b_ptr, inp, rc, c_ok, C, ACC: tl.constexpr):
    """W inp + b of a (CP, BT) tile (nn.Linear over the channels)."""
    return _mm(_load_matrix(w_ptr, rc, c_ok, C, 1).to(ACC), inp, ACC) + _load_vector(b_ptr, rc, c_ok, ACC)[:, None]


@triton.jit
def _attend(q, wq_ptr, bq_ptr, kv_ptr, kse, n, rc, c_ok, t_ok, C, D, ACC: tl.constexpr):
    """phi(Q), a = phi(Q) KV / (phi(Q) . kse) per head and the denominator (replicated over each head's channels),
    from sequence n's KV (loaded here, block-diagonal, inside the caller's tile loop: a (CP, CP) operand kept live
    across the loop costs registers) and kse = ksum + eps."""
    same = _same_head(rc, c_ok, D)
    phiq = tl.where(c_ok[:, None], tl.sigmoid(_linear(wq_ptr, bq_ptr, q, rc, c_ok, C, ACC)), 0.0)
    num = _mm_tn(_load_blockdiag(kv_ptr, n, rc, same, C, D), phiq, ACC)
    den = _mm_tn(tl.where(same, kse[:, None], 0.0), phiq, ACC)
    # padded channels and frames past the sequence: 1. There q is far from the statistics, phi(Q) can underflow to
    # 0 and 0 / 0 would reach the tile's sums through the backward's products
    den = tl.where(c_ok[:, None] & t_ok[None, :], den, 1.0)
    return phiq, num / den, den


# ------------------------------------------------------------------------------------------------
# dropout (reference.py: dropout_keep_mask), uint32 arithmetic

@triton.jit
def _fmix32(h):
    """MurmurHash3's 32-bit finaliser of uint32 values."""
    h ^= h >> 16
    h *= tl.full((), 0x85EBCA6B, tl.uint32)
    h ^= h >> 13
    h *= tl.full((), 0xC2B2AE35, tl.uint32)
    h ^= h >> 16
    return h


@triton.jit
def _keep_scale(seed_ptr, row, start, t_loc, rc, C, T, threshold, scale, STREAM: tl.constexpr,
                ON: tl.constexpr, ACC: tl.constexpr):
    """(CP, BT) keep-and-scale factors of one dropout stream (scale or 0), or 1 when the stream is off. The key is
    hashed from the device seed here (a few integer ops), so the host never reads it."""
    if ON:
        seed = tl.load(seed_ptr)
        hi = ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32)
        lo = (seed & 0xFFFFFFFF).to(tl.uint32)
        key = _fmix32(_fmix32(hi ^ tl.full((), STREAM, tl.uint32)) ^ lo)
        index = ((tl.cast(row, tl.int64) * C + rc[:, None]) * T + start + t_loc[None, :]).to(tl.uint32)
        bits = _fmix32(_fmix32(index + key) ^ key)
        return tl.where((bits >> 8).to(tl.int32) >= threshold, scale, 0.0).to(ACC)
    else:
        return tl.full((1, 1), 1.0, ACC)


# ------------------------------------------------------------------------------------------------
# weight-gradient workspace: one slot of G = 8 C^2 + 6 C + 1 values per program, 13 segments in the order of the
# backward's outputs (conv_weight as (C, C, 3), Linear weights (C, C), biases (C,), alpha)

@triton.jit
def _grad_segment(SEG: tl.constexpr, C):
    """(offset, size) of gradient segment SEG in a slot."""
    if SEG == 0:
        off = C * 0
        size = 3 * C * C
    elif SEG == N_GRAD_SEGMENTS - 1:
        off = 8 * C * C + 6 * C
        size = C * 0 + 1
    else:
        off = 3 * C * C + C + (SEG // 2 - 1) * (C * C + C) + (SEG % 2) * C * C
        size = C if SEG % 2 == 1 else C * C
    return off, size


@triton.jit
def _grad_slot(ws_ptr, slot, G, SEG: tl.constexpr, C):
    """Pointer to segment SEG of a program's slot."""
    off, size = _grad_segment(SEG, C)
    return ws_ptr + tl.cast(slot, tl.int64) * G + off


@triton.jit
def _store_grad_vector(ws_ptr, slot, G, SEG: tl.constexpr, value, rc, c_ok, C):
    tl.store(_grad_slot(ws_ptr, slot, G, SEG, C) + rc, value, mask=c_ok)


@triton.jit
def _store_matrix(ptr, value, rc, c_ok, row_stride, col_stride):
    """Stores the (C, C) matrix M[o, i] = ptr[o * row_stride + i * col_stride] (see _load_matrix)."""
    tl.store(ptr + rc[:, None] * row_stride + rc[None, :] * col_stride, value, mask=c_ok[:, None] & c_ok[None, :])


@triton.jit
def _clear_matrix(ptr, rc, c_ok, row_stride, col_stride, ACC: tl.constexpr, CP: tl.constexpr):
    """Zeroes a (C, C) accumulator of _accumulate_matrix."""
    _store_matrix(ptr, tl.zeros((CP, CP), ACC), rc, c_ok, row_stride, col_stride)
    tl.debug_barrier()


@triton.jit
def _accumulate_matrix(ptr, value, rc, c_ok, row_stride, col_stride):
    """M += value for the (C, C) matrix M[o, i] = ptr[o * row_stride + i * col_stride] in the program's own
    workspace slot. The backward's weight-gradient partials accumulate there rather than in registers: a (CP, CP)
    register accumulator per weight next to the tile's (CP, CP) x (CP, BT) products spills on sm_90 at C = 64.
    One program owns the slot (deterministic); the barrier orders the next tile's read after every thread's
    write."""
    off = rc[:, None] * row_stride + rc[None, :] * col_stride
    ok = c_ok[:, None] & c_ok[None, :]
    tl.store(ptr + off, tl.load(ptr + off, mask=ok, other=0.0) + value, mask=ok)
    tl.debug_barrier()


@triton.jit
def _reduce_grad_segment(ws_ptr, out_ptr, SEG: tl.constexpr, block, slots, G, C, BLOCK: tl.constexpr):
    """Block ``block`` of segment SEG summed over the slots in slot order (deterministic), cast, stored."""
    off, size = _grad_segment(SEG, C)
    if block * BLOCK < size:
        r = block * BLOCK + tl.arange(0, BLOCK)
        ok = r < size
        acc = tl.zeros((BLOCK,), ws_ptr.dtype.element_ty)
        for s in range(0, slots):
            acc += tl.load(ws_ptr + tl.cast(s, tl.int64) * G + off + r, mask=ok, other=0.0)
        tl.store(out_ptr + r, acc.to(out_ptr.dtype.element_ty), mask=ok)
