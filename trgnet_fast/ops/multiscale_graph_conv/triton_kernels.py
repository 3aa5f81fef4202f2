"""Triton kernels of the fused multi-scale graph conv (docs/architecture.md#why-these-ops).

    Y[n,o,t,v] = b[o] + sum_{s,c,u} W[o, s*C + c] * A[s*V + v, u] * X[n,c,t,u]

Shapes: x (N, C, T, V) any strides; adjacency A (S*V, V); weight W (C_out, S*C) (the 1x1 conv weight
viewed 2-D, scale-major input channels); bias b (C_out,); out Y (N, C_out, T, V), dtype of x.
All four tensors share one dtype (fp32 / fp16 / bf16 / fp64) and one device.

Kernels (no autotune; block sizes per dtype in ``CONFIGS``):

* ``_msgc_fwd_kernel`` — one program per (T-tile of BT frames, n). Fuses the 13-scale joint
  aggregation, the scale-major stacking and the 1x1 conv + bias: the X tile (C, BT, V) is held as a
  (C*BT, V) register tile; for each scale s, Z_s = X . A_s^T (a (C*BT)xV by VxV dot), reshaped in
  registers to (C, BT*V), then Y += W_s . Z_s (C_out x C by C x BT*V); bias added; Y stored once.
  The (N, S*C, T, V) support never exists in global memory.
* ``_msgc_bwd_input_kernel`` — one program per (chunk of TILES T-tiles, n): per tile and scale,
  H_s = W_s^T . dY (never stored) and dX += H_s . A_s (over joints); dX written once per tile; fuses the
  bias gradient (a per-program partial sum of dY).
* ``_msgc_bwd_param_kernel`` — one program per (scale s, chunk of TILES T-tiles, n), s the fastest grid
  axis so that the S programs of a chunk read its X and dY tiles from L2: H_s recomputed,
  dA_s += H_s^T . X, Z_s = X . A_s^T recomputed, dW_s += dY . Z_s^T, both accumulated in registers over
  the chunk and stored once into the program's partial slot.
  The partial slots (dA, dW, db) are reduced afterwards in a fixed order (``torch.sum`` over the slot
  axis), so the gradients are deterministic; no atomics. Splitting the backward in two keeps each kernel's
  live set in registers (one fused kernel spilled kilobytes per thread in fp32 and read-modify-wrote its
  partials in global memory per tile and scale; ``benchmarks/kernel_report.py`` shows both).

Not fused: the MLP's BatchNorm and ReLU that follow — in training the BN statistics are sums over all of
(N, T, V) whose gradient needs Y again in the backward (an epilogue writing partial sums would save one read
of Y in the forward and add one to the backward), and ReLU comes after BN.

Padding: V -> VP (power of two >= 16), C -> CP (>= 16), C_out -> OP (>= 16) with masked loads
(zeros), so every ``tl.dot`` has K >= 16. Accumulation is fp32 (fp64 for fp64 inputs); matmul
operands stay in the input dtype (tensor cores for fp16/bf16); fp32 dots are IEEE, or TF32 when PyTorch's
float32 matmul precision allows it (``trgnet_fast.ops._precision``: the ``DOT`` constexpr).

Registered as ``torch.ops.trgnet_triton.multiscale_graph_conv`` and
``torch.ops.trgnet_triton.multiscale_graph_conv_backward`` (``torch.library.triton_op`` +
``wrap_triton``), with ``register_autograd`` on the forward, so torch.compile can trace them.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from trgnet_fast.ops._checks import check_triton_tensor
from trgnet_fast.ops._precision import dot_precision
from trgnet_fast.ops._autograd import make_backward
from trgnet_fast.ops.multiscale_graph_conv.autograd import setup_context
from trgnet_fast.ops.multiscale_graph_conv.validation import validate_backward_inputs, validate_inputs

# (frames per tile BT, warps) per kernel and element size (4: fp32, 2: fp16/bf16, 8: fp64), picked with
# benchmarks/kernel_report.py so that no kernel spills registers on sm_90 at the benchmark shape (fp32 "ieee"
# dots run on the CUDA cores and hold their operands in registers); not yet timed on a GPU.
CONFIGS = {
    "forward": {4: (2, 8), 2: (4, 8), 8: (1, 8)},
    "backward_input": {4: (1, 8), 2: (1, 8), 8: (1, 8)},
    "backward_param": {4: (1, 8), 2: (2, 8), 8: (1, 8)},
}
TARGET_INPUT_PROGRAMS = 4096  # dX programs aimed at (each stores one db partial)
TARGET_PARAM_SLOTS = 256  # dA/dW partial slots per scale aimed at (S programs each)


def _config(kernel: str, dtype: torch.dtype) -> tuple[int, int]:
    return CONFIGS[kernel][dtype.itemsize]


def _chunks(t: int, block_t: int, n: int, target: int) -> tuple[int, int]:
    """(tiles per program, programs per sample) for ``target`` programs over n samples of t frames."""
    tiles = triton.cdiv(t, block_t)
    per_program = max(1, triton.cdiv(n * tiles, target))
    return per_program, triton.cdiv(tiles, per_program)


@triton.jit
def _tile_layout(C, V, C_OUT, BT: tl.constexpr, CP: tl.constexpr, VP: tl.constexpr, OP: tl.constexpr):
    """Index vectors of the register tiles and the masks of W_s and A_s: r, rc = rows (c, t_local) of a
    (CP*BT, VP) X tile and their channel; u = joints; o = output channels; cc = input channels; col, cv =
    columns (t_local, v) of an (OP, BT*VP) Y / dY tile and their joint."""
    r = tl.arange(0, CP * BT)
    u = tl.arange(0, VP)
    o = tl.arange(0, OP)
    cc = tl.arange(0, CP)
    col = tl.arange(0, BT * VP)
    w_mask = (o < C_OUT)[:, None] & (cc < C)[None, :]
    a_mask = (u < V)[:, None] & (u < V)[None, :]
    return r, r // BT, u, o, cc, col, col % VP, w_mask, a_mask


@triton.jit
def _rows_tile(n, t0, r, rc, u, C, T, V, sn, sc, st, sv, BT: tl.constexpr):
    """Offsets and mask of the (CP*BT, VP) tile (row c*BT + t_local, column v) of frames t0.. of an
    (N, C, T, V) tensor with strides (sn, sc, st, sv)."""
    rt = t0 + r % BT
    mask = ((rc < C) & (rt < T))[:, None] & (u < V)[None, :]
    return n * sn + rc[:, None] * sc + rt[:, None] * st + u[None, :] * sv, mask


@triton.jit
def _cols_tile(n, t0, o, col, cv, C_OUT, T, V, sn, so, st, sv, VP: tl.constexpr):
    """Offsets and mask of the (OP, BT*VP) tile (row o, column t_local*VP + v) of frames t0.. of an
    (N, C_out, T, V) tensor with strides (sn, so, st, sv)."""
    ct = t0 + col // VP
    mask = (o < C_OUT)[:, None] & ((ct < T) & (cv < V))[None, :]
    return n * sn + o[:, None] * so + ct[None, :] * st + cv[None, :] * sv, mask


@triton.jit
def _scale_operands(a_ptr, w_ptr, s, u, o, cc, C, V, S, a_mask, w_mask):
    """A_s as (VP v, VP u) and W_s = W[:, s*C:(s+1)*C] as (OP, CP), zero-padded."""
    a_s = tl.load(a_ptr + (s * V + u[:, None]) * V + u[None, :], mask=a_mask, other=0.0)
    w_s = tl.load(w_ptr + o[:, None] * (S * C) + s * C + cc[None, :], mask=w_mask, other=0.0)
    return a_s, w_s


@triton.jit
def _msgc_fwd_kernel(x_ptr, a_ptr, w_ptr, b_ptr, y_ptr,
                     C, T, V, C_OUT, S,
                     sxn, sxc, sxt, sxv,
                     syn, syc, syt, syv,
                     BT: tl.constexpr, CP: tl.constexpr, VP: tl.constexpr, OP: tl.constexpr,
                     DOT: tl.constexpr):
    n = tl.program_id(1).to(tl.int64)
    t0 = tl.program_id(0) * BT
    r, rc, u, o, cc, col, cv, w_mask, a_mask = _tile_layout(C, V, C_OUT, BT, CP, VP, OP)
    x_off, x_mask = _rows_tile(n, t0, r, rc, u, C, T, V, sxn, sxc, sxt, sxv, BT)
    x2 = tl.load(x_ptr + x_off, mask=x_mask, other=0.0)  # rows (c, t_local), columns u
    acc = tl.zeros((OP, BT * VP), dtype=tl.float64 if x2.dtype == tl.float64 else tl.float32)
    for s in range(S):
        # A_s^T[u, v] = A[s*V + v, u]
        a_t = tl.load(a_ptr + (s * V + u[None, :]) * V + u[:, None], mask=a_mask, other=0.0)
        z = tl.dot(x2, a_t, input_precision=DOT)  # (CP*BT, VP): rows (c, t), columns v
        z2 = tl.reshape(z.to(x2.dtype), (CP, BT * VP))  # (c, (t, v))
        w_s = tl.load(w_ptr + o[:, None] * (S * C) + s * C + cc[None, :], mask=w_mask, other=0.0)
        acc += tl.dot(w_s, z2, input_precision=DOT)
    bias = tl.load(b_ptr + o, mask=o < C_OUT, other=0.0)
    acc += bias.to(acc.dtype)[:, None]
    y_off, y_mask = _cols_tile(n, t0, o, col, cv, C_OUT, T, V, syn, syc, syt, syv, VP)
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=y_mask)


@triton.jit
def _msgc_bwd_input_kernel(a_ptr, w_ptr, dy_ptr, dx_ptr, db_ptr,
                           C, T, V, C_OUT, S, TILES, NCHUNK,
                           sgn, sgc, sgt, sgv,
                           sdn, sdc, sdt, sdv,
                           BT: tl.constexpr, CP: tl.constexpr, VP: tl.constexpr, OP: tl.constexpr,
                           DOT: tl.constexpr):
    chunk = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    r, rc, u, o, cc, col, cv, w_mask, a_mask = _tile_layout(C, V, C_OUT, BT, CP, VP, OP)
    db_acc = tl.zeros((OP,), dtype=db_ptr.dtype.element_ty)
    for i in range(TILES):
        t0 = (chunk * TILES + i) * BT
        g_off, g_mask = _cols_tile(n, t0, o, col, cv, C_OUT, T, V, sgn, sgc, sgt, sgv, VP)
        g = tl.load(dy_ptr + g_off, mask=g_mask, other=0.0)
        db_acc += tl.sum(g.to(db_acc.dtype), axis=1)
        dx_acc = tl.zeros((CP * BT, VP), dtype=db_acc.dtype)
        for s in range(S):
            a_s, w_s = _scale_operands(a_ptr, w_ptr, s, u, o, cc, C, V, S, a_mask, w_mask)
            h = tl.dot(tl.trans(w_s), g, input_precision=DOT)  # (CP, BT*VP): c, (t, v)
            h2 = tl.reshape(h.to(g.dtype), (CP * BT, VP))  # (c, t), v
            dx_acc += tl.dot(h2, a_s, input_precision=DOT)  # (c, t), u
        dx_off, dx_mask = _rows_tile(n, t0, r, rc, u, C, T, V, sdn, sdc, sdt, sdv, BT)
        tl.store(dx_ptr + dx_off, dx_acc.to(dx_ptr.dtype.element_ty), mask=dx_mask)
    tl.store(db_ptr + (n * NCHUNK + chunk) * OP + o, db_acc)


@triton.jit
def _msgc_bwd_param_kernel(x_ptr, a_ptr, w_ptr, dy_ptr, da_ptr, dw_ptr,
                           C, T, V, C_OUT, S, TILES, NCHUNK,
                           sxn, sxc, sxt, sxv,
                           sgn, sgc, sgt, sgv,
                           BT: tl.constexpr, CP: tl.constexpr, VP: tl.constexpr, OP: tl.constexpr,
                           DOT: tl.constexpr):
    s = tl.program_id(0)  # fastest grid axis: the S programs of one chunk share its X, dY tiles in L2
    chunk = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    slot = n * NCHUNK + chunk  # this program's partial slot
    r, rc, u, o, cc, col, cv, w_mask, a_mask = _tile_layout(C, V, C_OUT, BT, CP, VP, OP)
    a_s, w_s = _scale_operands(a_ptr, w_ptr, s, u, o, cc, C, V, S, a_mask, w_mask)
    acc_dtype = da_ptr.dtype.element_ty
    da_acc = tl.zeros((VP, VP), dtype=acc_dtype)
    dw_acc = tl.zeros((OP, CP), dtype=acc_dtype)
    for i in range(TILES):
        t0 = (chunk * TILES + i) * BT
        x_off, x_mask = _rows_tile(n, t0, r, rc, u, C, T, V, sxn, sxc, sxt, sxv, BT)
        x2 = tl.load(x_ptr + x_off, mask=x_mask, other=0.0)
        g_off, g_mask = _cols_tile(n, t0, o, col, cv, C_OUT, T, V, sgn, sgc, sgt, sgv, VP)
        g = tl.load(dy_ptr + g_off, mask=g_mask, other=0.0)
        h = tl.dot(tl.trans(w_s), g, input_precision=DOT)  # (CP, BT*VP): c, (t, v)
        h2 = tl.reshape(h.to(x2.dtype), (CP * BT, VP))  # (c, t), v
        da_acc += tl.dot(tl.trans(h2), x2, input_precision=DOT)  # v, u
        z = tl.dot(x2, tl.trans(a_s), input_precision=DOT)  # (c, t), v
        z2 = tl.reshape(z.to(x2.dtype), (CP, BT * VP))
        dw_acc += tl.dot(g, tl.trans(z2), input_precision=DOT)  # o, c
    tl.store(da_ptr + (slot * S + s) * (VP * VP) + u[:, None] * VP + u[None, :], da_acc)
    tl.store(dw_ptr + (slot * S + s) * (OP * CP) + o[:, None] * CP + cc[None, :], dw_acc)


def _pad(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@triton_op("trgnet_triton::multiscale_graph_conv", mutates_args=())
def multiscale_graph_conv_triton(x: torch.Tensor, adjacency: torch.Tensor, weight: torch.Tensor,
                                 bias: torch.Tensor) -> torch.Tensor:
    """Forward. x (N, C, T, V); adjacency (S*V, V) contiguous; weight (C_out, S*C) contiguous;
    bias (C_out,) contiguous. Returns (N, C_out, T, V) contiguous, dtype of x. Raises ``ValueError`` for
    inputs the kernels cannot index (``validation.validate_inputs`` with ``kernel=True``)."""
    validate_inputs("trgnet_triton::multiscale_graph_conv", x, adjacency, weight, bias, kernel=True)
    check_triton_tensor("trgnet_triton::multiscale_graph_conv", "x", x)
    n, c, t, v = x.shape
    c_out = weight.shape[0]
    s = adjacency.shape[0] // v
    y = torch.empty((n, c_out, t, v), device=x.device, dtype=x.dtype)
    block_t, warps = _config("forward", x.dtype)
    grid = (triton.cdiv(t, block_t), n)
    wrap_triton(_msgc_fwd_kernel)[grid](
        x, adjacency, weight, bias, y, c, t, v, c_out, s,
        x.stride(0), x.stride(1), x.stride(2), x.stride(3),
        y.stride(0), y.stride(1), y.stride(2), y.stride(3),
        BT=block_t, CP=_pad(c), VP=_pad(v), OP=_pad(c_out), DOT=dot_precision(x.dtype), num_warps=warps)
    return y


@triton_op("trgnet_triton::multiscale_graph_conv_backward", mutates_args=())
def multiscale_graph_conv_backward_triton(
        grad_out: torch.Tensor, x: torch.Tensor, adjacency: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward. grad_out (N, C_out, T, V) any strides; x, adjacency, weight as in the forward.
    Returns (grad_x (N, C, T, V), grad_adjacency (S*V, V), grad_weight (C_out, S*C), grad_bias (C_out,)),
    each in its input's dtype (grad_bias in the weight's dtype). Raises ``ValueError`` as
    ``validation.validate_backward_inputs``."""
    validate_backward_inputs("trgnet_triton::multiscale_graph_conv_backward", grad_out, x, adjacency, weight)
    n, c, t, v = x.shape
    c_out = weight.shape[0]
    s = adjacency.shape[0] // v
    cp, vp, op = _pad(c), _pad(v), _pad(c_out)
    acc = _acc_dtype(x.dtype)
    dx = torch.empty((n, c, t, v), device=x.device, dtype=x.dtype)

    block_t, warps = _config("backward_input", x.dtype)
    per_program, nchunk = _chunks(t, block_t, n, TARGET_INPUT_PROGRAMS)
    db_part = torch.empty((n * nchunk, op), device=x.device, dtype=acc)
    wrap_triton(_msgc_bwd_input_kernel)[(nchunk, n)](
        adjacency, weight, grad_out, dx, db_part,
        c, t, v, c_out, s, per_program, nchunk,
        grad_out.stride(0), grad_out.stride(1), grad_out.stride(2), grad_out.stride(3),
        dx.stride(0), dx.stride(1), dx.stride(2), dx.stride(3),
        BT=block_t, CP=cp, VP=vp, OP=op, DOT=dot_precision(x.dtype), num_warps=warps)

    block_t, warps = _config("backward_param", x.dtype)
    per_program, nchunk = _chunks(t, block_t, n, TARGET_PARAM_SLOTS)
    da_part = torch.empty((n * nchunk, s, vp, vp), device=x.device, dtype=acc)
    dw_part = torch.empty((n * nchunk, s, op, cp), device=x.device, dtype=acc)
    wrap_triton(_msgc_bwd_param_kernel)[(s, nchunk, n)](
        x, adjacency, weight, grad_out, da_part, dw_part,
        c, t, v, c_out, s, per_program, nchunk,
        x.stride(0), x.stride(1), x.stride(2), x.stride(3),
        grad_out.stride(0), grad_out.stride(1), grad_out.stride(2), grad_out.stride(3),
        BT=block_t, CP=cp, VP=vp, OP=op, DOT=dot_precision(x.dtype), num_warps=warps)
    # fixed-order reduction of the per-program partials (deterministic)
    da = da_part.sum(0)[:, :v, :v].reshape(s * v, v).to(adjacency.dtype)
    dw = dw_part.sum(0)[:, :c_out, :c].permute(1, 0, 2).reshape(c_out, s * c).to(weight.dtype)
    db = db_part.sum(0)[:c_out].to(weight.dtype)
    return dx, da, dw, db


multiscale_graph_conv_triton.register_autograd(make_backward(multiscale_graph_conv_backward_triton),
                                               setup_context=setup_context)
