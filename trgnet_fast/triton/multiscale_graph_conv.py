"""Triton kernels of the fused multi-scale graph conv (issue 5, op 1; design.md §4).

    Y[n,o,t,v] = b[o] + sum_{s,c,u} W[o, s*C + c] * A[s*V + v, u] * X[n,c,t,u]

Shapes: x (N, C, T, V) any strides; adjacency A (S*V, V); weight W (C_out, S*C) (the 1x1 conv weight
viewed 2-D, scale-major input channels); bias b (C_out,); out Y (N, C_out, T, V), dtype of x.
All four tensors share one dtype (fp32 / fp16 / bf16 / fp64) and one device.

Kernels (one block-size configuration, no autotune):

* ``_msgc_fwd_kernel`` — one program per (T-tile of BT frames, n). Fuses the 13-scale joint
  aggregation, the scale-major stacking and the 1x1 conv + bias: the X tile (C, BT, V) is held as a
  (C*BT, V) register tile; for each scale s, Z_s = X . A_s^T (a (C*BT)xV by VxV dot), reshaped in
  registers to (C, BT*V), then Y += W_s . Z_s (C_out x C by C x BT*V); bias added; Y stored once.
  The (N, S*C, T, V) support never exists in global memory.
* ``_msgc_bwd_kernel`` — one program per (chunk of TILES T-tiles, n). Fuses, per tile and scale:
  H_s = W_s^T . dY (recomputed, never stored), dX += H_s . A_s (over joints), Z_s recomputed from X,
  dA_s partial += H_s^T . X, dW_s partial += dY . Z_s^T, db partial += sum dY. dX is written once
  per tile; dA/dW/db partials are per-program slots (no atomics) reduced afterwards in a fixed order
  (``torch.sum`` over the program axis), so the gradients are deterministic.

Padding: V -> VP (power of two >= 16), C -> CP (>= 16), C_out -> OP (>= 16) with masked loads
(zeros), so every ``tl.dot`` has K >= 16. Accumulation is fp32 (fp64 for fp64 inputs); matmul
operands stay in the input dtype (tensor cores for fp16/bf16; fp32 uses IEEE precision, no TF32).

Registered as ``torch.ops.trgnet_triton.multiscale_graph_conv`` and
``torch.ops.trgnet_triton.multiscale_graph_conv_backward`` (``torch.library.triton_op`` +
``wrap_triton``), with ``register_autograd`` on the forward, so torch.compile can trace them.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from trgnet_fast.ops._autograd import make_backward
from trgnet_fast.ops.multiscale_graph_conv import save_backward_context

BLOCK_T = 8  # frames per tile
NUM_WARPS = 8
TARGET_BWD_PROGRAMS = 512  # backward programs (partials slots) aimed at; more tiles per program beyond


@triton.jit
def _msgc_fwd_kernel(x_ptr, a_ptr, w_ptr, b_ptr, y_ptr,
                     C, T, V, C_OUT, S,
                     sxn, sxc, sxt, sxv,
                     syn, syc, syt, syv,
                     BT: tl.constexpr, CP: tl.constexpr, VP: tl.constexpr, OP: tl.constexpr):
    pid_t = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    t0 = pid_t * BT
    # X tile as (CP*BT, VP): row r = c*BT + t_local, column u
    r = tl.arange(0, CP * BT)
    rc = r // BT
    rt = t0 + r % BT
    u = tl.arange(0, VP)
    x_mask = ((rc < C) & (rt < T))[:, None] & (u < V)[None, :]
    x2 = tl.load(x_ptr + n * sxn + rc[:, None] * sxc + rt[:, None] * sxt + u[None, :] * sxv,
                 mask=x_mask, other=0.0)
    o = tl.arange(0, OP)
    cc = tl.arange(0, CP)
    w_mask = (o < C_OUT)[:, None] & (cc < C)[None, :]
    a_mask = (u < V)[:, None] & (u < V)[None, :]
    acc = tl.zeros((OP, BT * VP), dtype=tl.float64 if x2.dtype == tl.float64 else tl.float32)
    for s in range(S):
        # A_s^T[u, v] = A[s*V + v, u]
        a_t = tl.load(a_ptr + (s * V + u[None, :]) * V + u[:, None], mask=a_mask, other=0.0)
        z = tl.dot(x2, a_t, input_precision="ieee")  # (CP*BT, VP): rows (c, t), columns v
        z2 = tl.reshape(z.to(x2.dtype), (CP, BT * VP))  # (c, (t, v))
        w_s = tl.load(w_ptr + o[:, None] * (S * C) + s * C + cc[None, :], mask=w_mask, other=0.0)
        acc += tl.dot(w_s, z2, input_precision="ieee")
    bias = tl.load(b_ptr + o, mask=o < C_OUT, other=0.0)
    acc += bias.to(acc.dtype)[:, None]
    col = tl.arange(0, BT * VP)
    ct = t0 + col // VP
    cv = col % VP
    y_mask = (o < C_OUT)[:, None] & ((ct < T) & (cv < V))[None, :]
    tl.store(y_ptr + n * syn + o[:, None] * syc + ct[None, :] * syt + cv[None, :] * syv,
             acc.to(y_ptr.dtype.element_ty), mask=y_mask)


@triton.jit
def _msgc_bwd_kernel(x_ptr, a_ptr, w_ptr, dy_ptr, dx_ptr, da_ptr, dw_ptr, db_ptr,
                     C, T, V, C_OUT, S, TILES, NCHUNK,
                     sxn, sxc, sxt, sxv,
                     sgn, sgc, sgt, sgv,
                     sdn, sdc, sdt, sdv,
                     BT: tl.constexpr, CP: tl.constexpr, VP: tl.constexpr, OP: tl.constexpr):
    chunk = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    slot = n * NCHUNK + chunk  # this program's partial slot
    r = tl.arange(0, CP * BT)
    rc = r // BT
    u = tl.arange(0, VP)
    o = tl.arange(0, OP)
    cc = tl.arange(0, CP)
    col = tl.arange(0, BT * VP)
    cv = col % VP
    w_mask = (o < C_OUT)[:, None] & (cc < C)[None, :]
    a_mask = (u < V)[:, None] & (u < V)[None, :]
    # partial-slot offsets: dA (slot, S, VP, VP), dW (slot, S, OP, CP), db (slot, OP)
    da_off = u[:, None] * VP + u[None, :]
    dw_off = o[:, None] * CP + cc[None, :]
    db_acc = tl.zeros((OP,), dtype=db_ptr.dtype.element_ty)
    for i in range(TILES):
        t0 = (chunk * TILES + i) * BT
        rt = t0 + r % BT
        x_mask = ((rc < C) & (rt < T))[:, None] & (u < V)[None, :]
        x2 = tl.load(x_ptr + n * sxn + rc[:, None] * sxc + rt[:, None] * sxt + u[None, :] * sxv,
                     mask=x_mask, other=0.0)
        ct = t0 + col // VP
        g_mask = (o < C_OUT)[:, None] & ((ct < T) & (cv < V))[None, :]
        g = tl.load(dy_ptr + n * sgn + o[:, None] * sgc + ct[None, :] * sgt + cv[None, :] * sgv,
                    mask=g_mask, other=0.0)
        db_acc += tl.sum(g.to(db_acc.dtype), axis=1)
        dx_acc = tl.zeros((CP * BT, VP), dtype=db_acc.dtype)
        for s in range(S):
            a_s = tl.load(a_ptr + (s * V + u[:, None]) * V + u[None, :], mask=a_mask, other=0.0)  # [v, u]
            w_s = tl.load(w_ptr + o[:, None] * (S * C) + s * C + cc[None, :], mask=w_mask, other=0.0)
            h = tl.dot(tl.trans(w_s), g, input_precision="ieee")  # (CP, BT*VP): c, (t, v)
            h2 = tl.reshape(h.to(x2.dtype), (CP * BT, VP))  # (c, t), v
            dx_acc += tl.dot(h2, a_s, input_precision="ieee")  # (c, t), u
            da = tl.dot(tl.trans(h2), x2, input_precision="ieee")  # v, u
            da_ptrs = da_ptr + (slot * S + s) * (VP * VP) + da_off
            tl.store(da_ptrs, tl.load(da_ptrs) + da.to(db_acc.dtype))
            z = tl.dot(x2, tl.trans(a_s), input_precision="ieee")  # (c, t), v
            z2 = tl.reshape(z.to(x2.dtype), (CP, BT * VP))
            dw = tl.dot(g, tl.trans(z2), input_precision="ieee")  # o, c
            dw_ptrs = dw_ptr + (slot * S + s) * (OP * CP) + dw_off
            tl.store(dw_ptrs, tl.load(dw_ptrs) + dw.to(db_acc.dtype))
        tl.store(dx_ptr + n * sdn + rc[:, None] * sdc + rt[:, None] * sdt + u[None, :] * sdv,
                 dx_acc.to(dx_ptr.dtype.element_ty), mask=x_mask)
    tl.store(db_ptr + slot * OP + o, db_acc)


def _pad(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@triton_op("trgnet_triton::multiscale_graph_conv", mutates_args=())
def multiscale_graph_conv_triton(x: torch.Tensor, adjacency: torch.Tensor, weight: torch.Tensor,
                                 bias: torch.Tensor) -> torch.Tensor:
    """Forward. x (N, C, T, V); adjacency (S*V, V) contiguous; weight (C_out, S*C) contiguous;
    bias (C_out,) contiguous. Returns (N, C_out, T, V) contiguous, dtype of x."""
    n, c, t, v = x.shape
    c_out = weight.shape[0]
    s = adjacency.shape[0] // v
    y = torch.empty((n, c_out, t, v), device=x.device, dtype=x.dtype)
    grid = (triton.cdiv(t, BLOCK_T), n)
    wrap_triton(_msgc_fwd_kernel)[grid](
        x, adjacency, weight, bias, y, c, t, v, c_out, s,
        x.stride(0), x.stride(1), x.stride(2), x.stride(3),
        y.stride(0), y.stride(1), y.stride(2), y.stride(3),
        BT=BLOCK_T, CP=_pad(c), VP=_pad(v), OP=_pad(c_out), num_warps=NUM_WARPS)
    return y


@triton_op("trgnet_triton::multiscale_graph_conv_backward", mutates_args=())
def multiscale_graph_conv_backward_triton(
        grad_out: torch.Tensor, x: torch.Tensor, adjacency: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward. grad_out (N, C_out, T, V) any strides; x, adjacency, weight as in the forward.
    Returns (grad_x (N, C, T, V), grad_adjacency (S*V, V), grad_weight (C_out, S*C), grad_bias (C_out,)),
    each in its input's dtype (grad_bias in the weight's dtype)."""
    n, c, t, v = x.shape
    c_out = weight.shape[0]
    s = adjacency.shape[0] // v
    cp, vp, op = _pad(c), _pad(v), _pad(c_out)
    tiles = triton.cdiv(t, BLOCK_T)
    per_prog = max(1, triton.cdiv(n * tiles, TARGET_BWD_PROGRAMS))
    nchunk = triton.cdiv(tiles, per_prog)
    slots = n * nchunk
    acc = _acc_dtype(x.dtype)
    dx = torch.empty((n, c, t, v), device=x.device, dtype=x.dtype)
    da_part = torch.zeros((slots, s, vp, vp), device=x.device, dtype=acc)
    dw_part = torch.zeros((slots, s, op, cp), device=x.device, dtype=acc)
    db_part = torch.empty((slots, op), device=x.device, dtype=acc)
    wrap_triton(_msgc_bwd_kernel)[(nchunk, n)](
        x, adjacency, weight, grad_out, dx, da_part, dw_part, db_part,
        c, t, v, c_out, s, per_prog, nchunk,
        x.stride(0), x.stride(1), x.stride(2), x.stride(3),
        grad_out.stride(0), grad_out.stride(1), grad_out.stride(2), grad_out.stride(3),
        dx.stride(0), dx.stride(1), dx.stride(2), dx.stride(3),
        BT=BLOCK_T, CP=cp, VP=vp, OP=op, num_warps=NUM_WARPS)
    # fixed-order reduction of the per-program partials (deterministic)
    da = da_part.sum(0)[:, :v, :v].reshape(s * v, v).to(adjacency.dtype)
    dw = dw_part.sum(0)[:, :c_out, :c].permute(1, 0, 2).reshape(c_out, s * c).to(weight.dtype)
    db = db_part.sum(0)[:c_out].to(weight.dtype)
    return dx, da, dw, db


multiscale_graph_conv_triton.register_autograd(
    make_backward(torch.ops.trgnet_triton.multiscale_graph_conv_backward), setup_context=save_backward_context)
