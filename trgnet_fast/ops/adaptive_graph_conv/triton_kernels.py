"""Triton kernels of the fused adaptive graph conv (formula and gradients in
``trgnet_fast/ops/adaptive_graph_conv/__init__.py``).

    F[n,t,u,v] = beta * tanh(p[n,t,u] - q[n,t,v]) + J[u,v]
    Y[n,c,t,u] = sum_v (F[n,t,u,v] + G[n,c,u,v]) * X[n,c,t,v]

Shapes (contiguous, one dtype: fp32 / fp16 / bf16 / fp64): x (N, C, T, V); p, q (N, T, V); beta (1,);
G = channel_graph (N, C, V, V); J = joint_graph (V, V); out (N, C, T, V).

Kernels (fp32 accumulation, fp64 for fp64; no atomics; V padded to VP = next power of two >= 16 with
masked loads, so padded joints contribute zeros):

* ``_agc_fwd_kernel`` — one program per (chunk of frames, block of CB channels, n). Holds G for its
  channels (CB, VP, VP) and J in registers; per frame it builds F_t from p_t, q_t (never stored),
  and computes both aggregations in one reduction: Y_t = sum_v (F_t + G) * X_t. Fuses the frame-graph
  build, the two einsums and their sum (the published code writes F (N, T, V, V) and both partial
  outputs to global memory).
* ``_agc_bwd_frame_kernel`` — one program per (chunk of frames, n), all C channels. Per frame:
  dF_t = dY_t^T . X_t (a (VP x C) by (C x VP) dot; IEEE fp32, or TF32 when PyTorch's float32 matmul precision
  allows it, ``trgnet_fast/ops/_precision.py``), then th = tanh(p_u - q_v) recomputed, dp_t and dq_t
  stored, dbeta and dJ accumulated into this program's partial slot. dF never reaches global memory.
* ``_agc_bwd_channel_kernel`` — one program per (chunk of frames, channel block, n). Per frame:
  dX_t = sum_u (F_t + G) * dY_t (F_t rebuilt), dG accumulated in registers into this program's
  partial slot.

The per-program partials (dbeta, dJ, dG) are reduced afterwards in a fixed order (``torch.sum`` over
the slot axis), so every gradient is deterministic.

Not fused: the next layer (BatchNorm, then the residual add and ReLU) — in training its statistics are sums
over all of (N, T, V) and their gradient needs Y again in the backward, so an epilogue writing partial sums
would save one read of Y in the forward and add one to the backward; ReLU comes after BN and the residual.

Registered as ``torch.ops.trgnet_triton.adaptive_graph_conv`` and ``..._backward`` (``triton_op`` +
``wrap_triton``, same schemas as the native ops) with ``register_autograd``, so torch.compile traces them.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from trgnet_fast.ops._checks import check_triton_tensor
from trgnet_fast.ops._precision import dot_precision
from trgnet_fast.ops._autograd import make_backward
from trgnet_fast.ops.adaptive_graph_conv.autograd import setup_context
from trgnet_fast.ops.adaptive_graph_conv.validation import validate_backward_inputs, validate_inputs

# (channels per program CB, warps) per kernel and element size (4: fp32, 2: fp16/bf16, 8: fp64): a CB x 32 x 32
# register tile; picked with benchmarks/kernel_report.py so that no kernel spills registers on sm_90 at the
# benchmark shape (bf16 needs CB = 4 in the channel backward). Not yet timed on a GPU. The forward splits T
# finely (no partials to store), the backward less (its channel kernel stores a (V, V) dG partial per
# program and channel).
CONFIGS = {
    "forward": {4: (8, 8), 2: (8, 8), 8: (8, 8)},
    "backward_channel": {4: (8, 8), 2: (4, 8), 8: (4, 8)},
}
FRAME_KERNEL_WARPS = 8
TARGET_PROGRAMS_FORWARD = 8192  # programs aimed at (frames per program grow beyond)
TARGET_PROGRAMS_BACKWARD = 2048


@triton.jit
def _tanh(x):
    # tanh from exp(-2|x|): no overflow, and the interpreter has no libdevice tanh
    e = tl.exp(-2.0 * tl.abs(x))
    th = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -th, th)


@triton.jit
def _frame_tanh(p_ptr, q_ptr, row_off, u, V, acc_dtype: tl.constexpr):
    """th[u, v] = tanh(p[row, u] - q[row, v]) for one frame; zeros outside V."""
    pu = tl.load(p_ptr + row_off + u, mask=u < V, other=0.0).to(acc_dtype)
    qv = tl.load(q_ptr + row_off + u, mask=u < V, other=0.0).to(acc_dtype)
    return _tanh(pu[:, None] - qv[None, :])


@triton.jit
def _channel_block(j_ptr, beta_ptr, g_ptr, C, V, CB: tl.constexpr, VP: tl.constexpr, acc_dtype: tl.constexpr):
    """The setup of a program over (frame chunk, channel block, n): n, joints u (VP), channels cb (CB); J
    (VP, VP), beta, and G of the channels cb (CB, VP u, VP v) with its offsets and mask; the (CB, VP) mask of
    an X row. Zeros outside C and V."""
    n = tl.program_id(2).to(tl.int64)
    u = tl.arange(0, VP)
    cb = tl.program_id(1) * CB + tl.arange(0, CB)
    uv_mask = (u < V)[:, None] & (u < V)[None, :]
    joint = tl.load(j_ptr + u[:, None] * V + u[None, :], mask=uv_mask, other=0.0).to(acc_dtype)
    beta = tl.load(beta_ptr).to(acc_dtype)
    g_off = ((n * C + cb[:, None, None]) * V + u[None, :, None]) * V + u[None, None, :]
    g_mask = (cb < C)[:, None, None] & uv_mask[None, :, :]
    graph = tl.load(g_ptr + g_off, mask=g_mask, other=0.0).to(acc_dtype)
    cv_mask = (cb < C)[:, None] & (u < V)[None, :]
    return n, u, cb, joint, beta, graph, g_off, g_mask, cv_mask


@triton.jit
def _frame_graph_and_rows(p_ptr, q_ptr, beta, joint, n, cb, t, C, T, V, u, acc_dtype: tl.constexpr):
    """F_t = beta * tanh(p_u - q_v) + J (VP, VP) of frame t, and the offsets (CB, VP) of X[n, cb, t, :]."""
    frame = beta * _frame_tanh(p_ptr, q_ptr, (n * T + t) * V, u, V, acc_dtype) + joint
    return frame, ((n * C + cb[:, None]) * T + t) * V + u[None, :]


@triton.jit
def _agc_fwd_kernel(x_ptr, p_ptr, q_ptr, beta_ptr, g_ptr, j_ptr, y_ptr,
                    C, T, V, FRAMES,
                    CB: tl.constexpr, VP: tl.constexpr, ACC_FP64: tl.constexpr):
    acc_dtype = tl.float64 if ACC_FP64 else tl.float32
    chunk = tl.program_id(0)
    n, u, cb, joint, beta, graph, g_off, g_mask, cv_mask = _channel_block(j_ptr, beta_ptr, g_ptr, C, V, CB, VP,
                                                                          acc_dtype)
    for i in range(FRAMES):
        t = chunk * FRAMES + i
        if t < T:
            frame, row = _frame_graph_and_rows(p_ptr, q_ptr, beta, joint, n, cb, t, C, T, V, u, acc_dtype)
            x_t = tl.load(x_ptr + row, mask=cv_mask, other=0.0).to(acc_dtype)
            y_t = tl.sum((frame[None, :, :] + graph) * x_t[:, None, :], axis=2)  # [c, u]
            tl.store(y_ptr + row, y_t.to(y_ptr.dtype.element_ty), mask=cv_mask)


@triton.jit
def _agc_bwd_frame_kernel(dy_ptr, x_ptr, p_ptr, q_ptr, beta_ptr, dp_ptr, dq_ptr, dj_part_ptr, dbeta_part_ptr,
                          C, T, V, FRAMES, NCHUNK,
                          CP: tl.constexpr, VP: tl.constexpr, ACC_FP64: tl.constexpr, DOT: tl.constexpr):
    acc_dtype = tl.float64 if ACC_FP64 else tl.float32
    chunk = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    slot = n * NCHUNK + chunk
    u = tl.arange(0, VP)
    c = tl.arange(0, CP)
    cv_mask = (c < C)[:, None] & (u < V)[None, :]
    beta = tl.load(beta_ptr).to(acc_dtype)
    dj_acc = tl.zeros((VP, VP), dtype=acc_dtype)
    dbeta_acc = tl.zeros((VP, VP), dtype=acc_dtype)
    for i in range(FRAMES):
        t = chunk * FRAMES + i
        if t < T:
            row = ((n * C + c[:, None]) * T + t) * V + u[None, :]  # (CP, VP)
            dy_t = tl.load(dy_ptr + row, mask=cv_mask, other=0.0)  # [c, u]
            x_t = tl.load(x_ptr + row, mask=cv_mask, other=0.0)  # [c, v]
            d_frame = tl.dot(tl.trans(dy_t), x_t, out_dtype=acc_dtype, input_precision=DOT)  # [u, v]
            th = _frame_tanh(p_ptr, q_ptr, (n * T + t) * V, u, V, acc_dtype)
            dj_acc += d_frame
            dbeta_acc += d_frame * th
            d_pre = d_frame * beta * (1.0 - th * th)
            tl.store(dp_ptr + (n * T + t) * V + u, tl.sum(d_pre, axis=1).to(dp_ptr.dtype.element_ty), mask=u < V)
            tl.store(dq_ptr + (n * T + t) * V + u, (-tl.sum(d_pre, axis=0)).to(dq_ptr.dtype.element_ty),
                     mask=u < V)
    tl.store(dj_part_ptr + slot * VP * VP + u[:, None] * VP + u[None, :], dj_acc)
    tl.store(dbeta_part_ptr + slot, tl.sum(tl.sum(dbeta_acc, axis=1), axis=0))


@triton.jit
def _agc_bwd_channel_kernel(dy_ptr, x_ptr, p_ptr, q_ptr, beta_ptr, g_ptr, j_ptr, dx_ptr, dg_part_ptr,
                            C, T, V, FRAMES, NCHUNK,
                            CB: tl.constexpr, VP: tl.constexpr, ACC_FP64: tl.constexpr):
    acc_dtype = tl.float64 if ACC_FP64 else tl.float32
    chunk = tl.program_id(0)
    n, u, cb, joint, beta, graph, g_off, g_mask, cv_mask = _channel_block(j_ptr, beta_ptr, g_ptr, C, V, CB, VP,
                                                                          acc_dtype)
    dg_acc = tl.zeros((CB, VP, VP), dtype=acc_dtype)
    for i in range(FRAMES):
        t = chunk * FRAMES + i
        if t < T:
            frame, row = _frame_graph_and_rows(p_ptr, q_ptr, beta, joint, n, cb, t, C, T, V, u, acc_dtype)
            dy_t = tl.load(dy_ptr + row, mask=cv_mask, other=0.0).to(acc_dtype)  # [c, u]
            x_t = tl.load(x_ptr + row, mask=cv_mask, other=0.0).to(acc_dtype)  # [c, v]
            dx_t = tl.sum((frame[None, :, :] + graph) * dy_t[:, :, None], axis=1)  # [c, v]
            tl.store(dx_ptr + row, dx_t.to(dx_ptr.dtype.element_ty), mask=cv_mask)
            dg_acc += dy_t[:, :, None] * x_t[:, None, :]
    # partial slot layout (NCHUNK, N, C, V, V): this program's channels, unpadded
    dg_off = (chunk * tl.num_programs(2) * C * V * V) + g_off
    tl.store(dg_part_ptr + dg_off, dg_acc, mask=g_mask)


def _pad(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def _frames_per_program(t: int, other_programs: int, target: int) -> int:
    """Frames each program walks so that about ``target`` programs run."""
    chunks = max(1, min(t, target // max(1, other_programs)))
    return triton.cdiv(t, chunks)


@triton_op("trgnet_triton::adaptive_graph_conv", mutates_args=())
def adaptive_graph_conv_triton(x: torch.Tensor, p: torch.Tensor, q: torch.Tensor, beta: torch.Tensor,
                               channel_graph: torch.Tensor, joint_graph: torch.Tensor) -> torch.Tensor:
    """Forward. Contiguous x (N, C, T, V), p, q (N, T, V), beta (1,), channel_graph (N, C, V, V),
    joint_graph (V, V). Returns (N, C, T, V), dtype of x. Raises ``ValueError`` for inputs the kernels
    cannot index (``validation.validate_inputs`` with ``kernel=True``)."""
    validate_inputs("trgnet_triton::adaptive_graph_conv", x, p, q, beta, channel_graph, joint_graph, kernel=True)
    check_triton_tensor("trgnet_triton::adaptive_graph_conv", "x", x)
    n, c, t, v = x.shape
    y = torch.empty_like(x)
    if t == 0:
        return y  # no frames: nothing to launch (the grid would be empty)
    channel_block, warps = CONFIGS["forward"][x.dtype.itemsize]
    c_blocks = triton.cdiv(c, channel_block)
    frames = _frames_per_program(t, n * c_blocks, TARGET_PROGRAMS_FORWARD)
    grid = (triton.cdiv(t, frames), c_blocks, n)
    wrap_triton(_agc_fwd_kernel)[grid](
        x, p, q, beta, channel_graph, joint_graph, y, c, t, v, frames,
        CB=channel_block, VP=_pad(v), ACC_FP64=x.dtype == torch.float64, num_warps=warps)
    return y


@triton_op("trgnet_triton::adaptive_graph_conv_backward", mutates_args=())
def adaptive_graph_conv_backward_triton(
        grad_out: torch.Tensor, x: torch.Tensor, p: torch.Tensor, q: torch.Tensor, beta: torch.Tensor,
        channel_graph: torch.Tensor, joint_graph: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward. grad_out (N, C, T, V) contiguous; the rest as in the forward. Returns the gradients of
    (x, p, q, beta, channel_graph, joint_graph), each with its input's shape and dtype. Raises ``ValueError``
    as the forward, or for a grad_out unlike x."""
    validate_backward_inputs("trgnet_triton::adaptive_graph_conv_backward", grad_out, x, p, q, beta, channel_graph,
                             joint_graph)
    n, c, t, v = x.shape
    vp = _pad(v)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    fp64 = x.dtype == torch.float64
    if t == 0:  # no frames: the gradients of x, p, q are empty, those of the graphs and beta zero
        return (torch.empty_like(x), torch.empty_like(p), torch.empty_like(q), torch.zeros_like(beta),
                torch.zeros_like(channel_graph), torch.zeros_like(joint_graph))

    frames = _frames_per_program(t, n, TARGET_PROGRAMS_BACKWARD)
    nchunk = triton.cdiv(t, frames)
    dp, dq = torch.empty_like(p), torch.empty_like(q)
    dj_part = torch.empty((n * nchunk, vp, vp), device=x.device, dtype=acc)
    dbeta_part = torch.empty((n * nchunk,), device=x.device, dtype=acc)
    wrap_triton(_agc_bwd_frame_kernel)[(nchunk, n)](
        grad_out, x, p, q, beta, dp, dq, dj_part, dbeta_part, c, t, v, frames, nchunk,
        CP=_pad(c), VP=vp, ACC_FP64=fp64, DOT=dot_precision(x.dtype), num_warps=FRAME_KERNEL_WARPS)

    channel_block, warps = CONFIGS["backward_channel"][x.dtype.itemsize]
    c_blocks = triton.cdiv(c, channel_block)
    frames = _frames_per_program(t, n * c_blocks, TARGET_PROGRAMS_BACKWARD)
    nchunk = triton.cdiv(t, frames)
    dx = torch.empty_like(x)
    dg_part = torch.empty((nchunk, n, c, v, v), device=x.device, dtype=acc)
    wrap_triton(_agc_bwd_channel_kernel)[(nchunk, c_blocks, n)](
        grad_out, x, p, q, beta, channel_graph, joint_graph, dx, dg_part, c, t, v, frames, nchunk,
        CB=channel_block, VP=vp, ACC_FP64=fp64, num_warps=warps)

    # fixed-order reductions of the per-program partials (deterministic)
    dg = dg_part.sum(0).to(channel_graph.dtype)
    dj = dj_part.sum(0)[:v, :v].to(joint_graph.dtype)
    dbeta = dbeta_part.sum(0, keepdim=True).to(beta.dtype)
    return dx, dp, dq, dbeta, dg, dj


adaptive_graph_conv_triton.register_autograd(make_backward(adaptive_graph_conv_backward_triton),
                                             setup_context=setup_context)
