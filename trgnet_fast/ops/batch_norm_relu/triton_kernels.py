"""Triton kernels of the fused BatchNorm + residual + ReLU (docs/model.md#spatial-block-sp,
docs/kernels.md#batch_norm_relu).

Math, layouts and shapes: the package docstring (``trgnet_fast/ops/batch_norm_relu/__init__.py``). With
m[n, t] = frame_mask[n, 0, t, 0] (1 when None), per channel c over every (n, t, v):

    count = max(1, sum m),  mean = sum m x / count,  var = sum m (x - mean)^2 / count,  invstd = 1 / sqrt(var + eps)
    out   = ReLU((x - mean) invstd weight + bias + residual)
    g = grad_out [out > 0]:  grad_bias = sum g,  grad_weight = invstd sum g (x - mean),
    grad_x = weight invstd (g - m (grad_bias + x^ grad_weight) / count),  grad_residual = g

Work split: every kernel runs on a grid (C, S). Channel c's values are N rows of TV = T V contiguous positions
(row n at offset (n C + c) TV of x, out, grad_out and the other (N, C, T, V) tensors); each row is cut into
NB = cdiv(TV, BLOCK) blocks of BLOCK contiguous positions, and the N NB blocks of the channel (block b: row b // NB,
positions (b % NB) BLOCK ...) are dealt to the S chunks in contiguous ranges: chunk j runs blocks
[j per, min((j + 1) per, N NB)), per = cdiv(N NB, S). S is chosen on the host from the shapes only (no device value
is read: no host sync) so that C S is about ``TARGET_PROGRAMS`` (a few programs per SM of an H100 / H200), at most
``MAX_CHUNKS`` (the slots each program merges) and at most N NB, then lowered to cdiv(N NB, per) so that no chunk is
empty (``_chunks``). The frame mask of position tv of row n is frame_mask[n T + tv // V].

Element-wise math in the state dtype (fp32; fp64 for fp64 inputs); 16-bit inputs are loaded and converted, the
outputs stored back in x's dtype. Every reduction is a per-lane (BLOCK,) accumulator over the chunk's blocks (state
dtype), summed over the lanes in fp64 into the program's own workspace slot (c, j) of a (C, S, 3) fp64 workspace;
each program of the second launch merges its channel's S slots in slot order itself, in fp64 (every program of a
channel the same way: bit-identical statistics, no atomics, no finalize launch; deterministic). Why fp64 past the
lanes: the shifted sum s1 = sum m (x - K) has the magnitude count |K - mean|, far above count |mean| for a channel of
mean ~0, and its fp32 rounding (about an ulp of count |K|) becomes mean's error: relative to mean, 8e-6 for an
N(0, 1) x of (3, 4, 63, 19) and 6e-5 at (8, 4, 1000, 25) with fp32 lane sums and merge, 9e-8 and 2e-6 with fp64 ones
(PyTorch's fp32 mean: 8e-8 and 7e-8; what is left is the rounding of each x - K in the state dtype). The lanes hold
few values each; the workspace is tiny and the lane sums and the merge run once per program.

Forward (2 launches):

* ``_bnr_stats_kernel``: with the shift K = x[0, c, 0, 0] (any value is exact; a sample of the channel keeps the
  one-pass variance free of cancellation when |mean| >> std), the chunk sums of m (x - K), m (x - K)^2 and m.
* ``_bnr_apply_kernel``: merges the slots: count = max(1, sum m), mean = K + s1 / count (0 when sum m = 0, as the
  formula: K would be a wrong shift-back there), var = max(s2 / count - (s1 / count)^2, 0) (in fp64, rounded to the
  state dtype), invstd; program (c, 0) stores mean[c], var[c]; every program writes out for its chunk.

Backward (2 launches), from grad_out, out, x and the forward's mean and var (nothing else saved):

* ``_bnr_bwd_reduce_kernel``: g = grad_out [out > 0]; the chunk sums of g, g (x - mean) and m (the count again).
* ``_bnr_bwd_apply_kernel``: merges the slots: grad_bias = sum g, grad_weight = invstd sum g (x - mean); program
  (c, 0) stores grad_weight[c], grad_bias[c] (state dtype); every program writes grad_x, and grad_residual = g when
  residual_grad, for its chunk.

x with no element (N T V = 0 or C = 0): nothing is launched; mean and var are 0 (count 1), grad_weight and grad_bias 0.

Memory: the forward allocates out, mean, var and the workspace of C S 3 fp64 values (S <= MAX_CHUNKS, C S <= about
TARGET_PROGRAMS + C: 24 KB at C = 64, S = 16); autograd saves x, out, frame_mask, weight, mean, var. The backward
allocates grad_x, grad_residual (when asked for), grad_weight, grad_bias and the same workspace.

Registered as ``torch.ops.trgnet_triton.batch_norm_relu`` / ``batch_norm_relu_backward`` (``triton_op`` +
``wrap_triton``, autograd via ``register_autograd``, the native op's schemas).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

# private helpers of the AttModule's launcher module and device helpers, reused as they are: the host double split
# of eps and its device sum, the (poisonable) allocation
from trgnet_fast.ops._checks import check_triton_tensor
from trgnet_fast.ops.att_module.triton_kernels import _empty, _split_double
from trgnet_fast.ops.att_module.triton_math import _two_floats
from trgnet_fast.ops.batch_norm_relu.autograd import make_backward, setup_context
from trgnet_fast.ops.batch_norm_relu.validation import state_dtype, validate_backward_inputs, validate_inputs

__all__ = ["batch_norm_relu_triton", "batch_norm_relu_backward_triton", "BLOCK", "TARGET_PROGRAMS", "MAX_CHUNKS"]

BLOCK = 1024  # contiguous positions of a row per block (8 values per thread at 4 warps)
TARGET_PROGRAMS = 1024  # C S aimed at: about 8 programs per SM of a 132-SM H100 / H200
MAX_CHUNKS = 128  # most slots a program merges (bounds the merge loop at small C)
PARTIALS = 3  # values per workspace slot (fp64)
LAUNCH = {"num_warps": 4, "num_stages": 1}  # streaming loops: nothing to gain from multi-buffered loads


# ------------------------------------------------------------------------------------------------
# device helpers

@triton.jit
def _chunk_range(j, per, total):
    """[first, last) blocks of chunk j."""
    first = j * per
    return first, tl.minimum(first + per, total)


@triton.jit
def _block(b, c, C, TV, NB, BLOCK: tl.constexpr):
    """Row n of block b, its positions tv (BLOCK,) in the row, which are in the row, and their offsets in an
    (N, C, T, V) tensor (int64)."""
    n = b // NB
    tv = (b - n * NB) * BLOCK + tl.arange(0, BLOCK)
    ok = tv < TV
    return n, tv, ok, (n * C + c).to(tl.int64) * TV + tv


@triton.jit
def _frame_weight(mask_ptr, n, tv, ok, T, V, HAS_MASK: tl.constexpr, ACC: tl.constexpr):
    """m of the positions tv of row n: frame_mask[n T + tv // V] (1 without a mask), 0 outside the row."""
    if HAS_MASK:
        m = tl.load(mask_ptr + n * T + tv // V, mask=ok, other=0.0).to(ACC)
    else:
        m = tl.where(ok, 1.0, 0.0).to(ACC)
    return m


@triton.jit
def _load(ptr, offs, ok, ACC: tl.constexpr):
    return tl.load(ptr + offs, mask=ok, other=0.0).to(ACC)


@triton.jit
def _relu_gate(g_ptr, out_ptr, offs, ok, ACC: tl.constexpr):
    """g = grad_out [out > 0] in ACC (0 outside the row)."""
    return tl.where(tl.load(out_ptr + offs, mask=ok, other=0.0) > 0, _load(g_ptr, offs, ok, ACC), 0.0)


@triton.jit
def _store_partials(ws_ptr, slot, a, b, m):
    """The lane sums (in fp64) of the three (BLOCK,) accumulators into workspace slot ``slot``."""
    tl.store(ws_ptr + slot * 3, tl.sum(a.to(tl.float64), axis=0))
    tl.store(ws_ptr + slot * 3 + 1, tl.sum(b.to(tl.float64), axis=0))
    tl.store(ws_ptr + slot * 3 + 2, tl.sum(m.to(tl.float64), axis=0))


@triton.jit
def _merge_partials(ws_ptr, c, S):
    """The three sums of channel c (fp64): its S workspace slots added in slot order (one masked 4-lane load per
    slot)."""
    k = tl.arange(0, 4)
    acc = tl.zeros((4,), tl.float64)
    for slot in range(c * S, c * S + S):
        acc += tl.load(ws_ptr + slot * 3 + k, mask=k < 3, other=0.0)
    return (tl.sum(tl.where(k == 0, acc, 0.0), axis=0), tl.sum(tl.where(k == 1, acc, 0.0), axis=0),
            tl.sum(tl.where(k == 2, acc, 0.0), axis=0))


@triton.jit
def _invstd(var, eps, ACC: tl.constexpr):
    """1 / sqrt(var + eps), the root IEEE-rounded (tl.sqrt of fp32 may be the approximate one; sqrt_rn takes fp32
    only)."""
    if ACC == tl.float64:
        root = tl.sqrt(var + eps)
    else:
        root = tl.sqrt_rn(var + eps)
    return 1.0 / root


# ------------------------------------------------------------------------------------------------
# forward

@triton.jit
def _bnr_stats_kernel(x_ptr, mask_ptr, ws_ptr, C, T, V, TV, NB, total, per, S,
                      HAS_MASK: tl.constexpr, BLOCK: tl.constexpr):
    c = tl.program_id(0)
    j = tl.program_id(1)
    ACC = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    shift = tl.load(x_ptr + c.to(tl.int64) * TV).to(ACC)  # K = x[0, c, 0, 0]
    s1 = tl.zeros((BLOCK,), ACC)
    s2 = tl.zeros((BLOCK,), ACC)
    sm = tl.zeros((BLOCK,), ACC)
    first, last = _chunk_range(j, per, total)
    for b in range(first, last):
        n, tv, ok, offs = _block(b, c, C, TV, NB, BLOCK)
        m = _frame_weight(mask_ptr, n, tv, ok, T, V, HAS_MASK, ACC)
        d = _load(x_ptr, offs, ok, ACC) - shift
        md = m * d
        s1 += md
        s2 += md * d
        sm += m
    _store_partials(ws_ptr, c * S + j, s1, s2, sm)


@triton.jit
def _bnr_apply_kernel(x_ptr, res_ptr, w_ptr, b_ptr, ws_ptr, out_ptr, mean_ptr, var_ptr, C, TV, NB, total, per, S,
                      eps_hi, eps_lo, HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr):
    c = tl.program_id(0)
    j = tl.program_id(1)
    ACC = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    s1, s2, sm = _merge_partials(ws_ptr, c, S)  # fp64, as the statistics from them (a few scalar operations)
    count = tl.maximum(sm, 1.0)
    d1 = s1 / count
    shift = tl.load(x_ptr + c.to(tl.int64) * TV).to(tl.float64)
    mean = tl.where(sm > 0, shift + d1, 0.0).to(ACC)  # no valid position: mean = 0 / 1, not the shift
    var = tl.maximum(s2 / count - d1 * d1, 0.0).to(ACC)
    invstd = _invstd(var, _two_floats(eps_hi, eps_lo, ACC), ACC)
    if j == 0:
        tl.store(mean_ptr + c, mean)
        tl.store(var_ptr + c, var)
    scale = invstd * tl.load(w_ptr + c)
    bias = tl.load(b_ptr + c)
    first, last = _chunk_range(j, per, total)
    for b in range(first, last):
        n, tv, ok, offs = _block(b, c, C, TV, NB, BLOCK)
        pre = (_load(x_ptr, offs, ok, ACC) - mean) * scale + bias
        if HAS_RESIDUAL:
            pre += _load(res_ptr, offs, ok, ACC)
        tl.store(out_ptr + offs, tl.maximum(pre, 0.0).to(out_ptr.dtype.element_ty), mask=ok)


# ------------------------------------------------------------------------------------------------
# backward

@triton.jit
def _bnr_bwd_reduce_kernel(g_ptr, out_ptr, x_ptr, mask_ptr, mean_ptr, ws_ptr, C, T, V, TV, NB, total, per, S,
                           HAS_MASK: tl.constexpr, BLOCK: tl.constexpr):
    c = tl.program_id(0)
    j = tl.program_id(1)
    ACC = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    mean = tl.load(mean_ptr + c)
    sg = tl.zeros((BLOCK,), ACC)
    sgx = tl.zeros((BLOCK,), ACC)
    sm = tl.zeros((BLOCK,), ACC)
    first, last = _chunk_range(j, per, total)
    for b in range(first, last):
        n, tv, ok, offs = _block(b, c, C, TV, NB, BLOCK)
        g = _relu_gate(g_ptr, out_ptr, offs, ok, ACC)
        sg += g
        sgx += g * (_load(x_ptr, offs, ok, ACC) - mean)
        sm += _frame_weight(mask_ptr, n, tv, ok, T, V, HAS_MASK, ACC)
    _store_partials(ws_ptr, c * S + j, sg, sgx, sm)


@triton.jit
def _bnr_bwd_apply_kernel(g_ptr, out_ptr, x_ptr, mask_ptr, w_ptr, mean_ptr, var_ptr, ws_ptr, dx_ptr, dres_ptr,
                          gw_ptr, gb_ptr, C, T, V, TV, NB, total, per, S, eps_hi, eps_lo,
                          HAS_MASK: tl.constexpr, RESIDUAL_GRAD: tl.constexpr, BLOCK: tl.constexpr):
    c = tl.program_id(0)
    j = tl.program_id(1)
    ACC = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    sg, sgx, sm = _merge_partials(ws_ptr, c, S)  # fp64
    inv_count = 1.0 / tl.maximum(sm, 1.0).to(ACC)  # in ACC: an fp64 one cost 8 B of stack on sm_90
    mean = tl.load(mean_ptr + c)
    invstd = _invstd(tl.load(var_ptr + c), _two_floats(eps_hi, eps_lo, ACC), ACC)
    grad_bias = sg.to(ACC)
    grad_weight = sgx.to(ACC) * invstd
    if j == 0:
        tl.store(gw_ptr + c, grad_weight)
        tl.store(gb_ptr + c, grad_bias)
    scale = tl.load(w_ptr + c) * invstd
    first, last = _chunk_range(j, per, total)
    for b in range(first, last):
        n, tv, ok, offs = _block(b, c, C, TV, NB, BLOCK)
        g = _relu_gate(g_ptr, out_ptr, offs, ok, ACC)
        x_hat = (_load(x_ptr, offs, ok, ACC) - mean) * invstd
        m = _frame_weight(mask_ptr, n, tv, ok, T, V, HAS_MASK, ACC)
        dx = (g - (grad_bias + x_hat * grad_weight) * (m * inv_count)) * scale
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=ok)
        if RESIDUAL_GRAD:
            tl.store(dres_ptr + offs, g.to(dres_ptr.dtype.element_ty), mask=ok)


# ------------------------------------------------------------------------------------------------
# launchers

def _chunks(x) -> tuple[int, int, int, int]:
    """(NB, total, per, S) of x (N, C, T, V), from the shapes only: NB blocks per row, total = N NB blocks per
    channel, per blocks per chunk, S chunks (S >= 1, none empty; see the module docstring)."""
    n, c, t, v = x.shape
    nb = triton.cdiv(t * v, BLOCK)
    total = n * nb
    s = max(1, min(total, MAX_CHUNKS, triton.cdiv(TARGET_PROGRAMS, c)))
    per = triton.cdiv(total, s)
    return nb, total, per, triton.cdiv(total, per)


def _shape_args(x) -> tuple:
    """(C, T, V, TV), the leading shape arguments of the kernels."""
    _, c, t, v = x.shape
    return c, t, v, t * v


_GRADS = tuple[(torch.Tensor,) * 4]


@triton_op("trgnet_triton::batch_norm_relu", mutates_args=())
def batch_norm_relu_triton(x: torch.Tensor, residual: torch.Tensor | None, frame_mask: torch.Tensor | None,
                           weight: torch.Tensor, bias: torch.Tensor,
                           eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fused BatchNorm + residual + ReLU (package docstring): (out (N, C, T, V) in x's dtype, mean (C,), var (C,)
    in the state dtype). Two launches. Raises ``ValueError`` as ``validation.validate_inputs(kernel=True)``."""
    op = "trgnet_triton::batch_norm_relu"
    validate_inputs(op, x, residual, frame_mask, weight, bias, eps, kernel=True)
    check_triton_tensor(op, "x", x)
    sdt = state_dtype(x.dtype)
    dev = x.device
    out = _empty(x.shape, x.dtype, dev)
    if x.numel() == 0:  # no position (or no channel): mean 0, var 0 (count 1)
        return out, torch.zeros(x.shape[1:2], dtype=sdt, device=dev), torch.zeros(x.shape[1:2], dtype=sdt, device=dev)
    c, t, v, tv = _shape_args(x)
    nb, total, per, s = _chunks(x)
    mean = _empty((c,), sdt, dev)
    var = _empty((c,), sdt, dev)
    ws = _empty((c, s, PARTIALS), torch.float64, dev)
    wrap_triton(_bnr_stats_kernel)[(c, s)](
        x, frame_mask if frame_mask is not None else x, ws, c, t, v, tv, nb, total, per, s,  # mask never read if None
        HAS_MASK=frame_mask is not None, BLOCK=BLOCK, **LAUNCH)
    wrap_triton(_bnr_apply_kernel)[(c, s)](
        x, residual if residual is not None else x, weight, bias, ws, out, mean, var, c, tv, nb, total, per, s,
        *_split_double(eps), HAS_RESIDUAL=residual is not None, BLOCK=BLOCK, **LAUNCH)
    return out, mean, var


@triton_op("trgnet_triton::batch_norm_relu_backward", mutates_args=())
def batch_norm_relu_backward_triton(grad_out: torch.Tensor, out: torch.Tensor, x: torch.Tensor,
                                    frame_mask: torch.Tensor | None, weight: torch.Tensor, mean: torch.Tensor,
                                    var: torch.Tensor, eps: float, residual_grad: bool) -> _GRADS:
    """Gradients of ``batch_norm_relu_triton``'s out w.r.t. x, the residual, weight and bias, given grad_out
    (N, C, T, V), the forward's out, x, frame_mask, weight and statistics: (grad_x, grad_residual (an empty (0,)
    tensor of x's dtype unless ``residual_grad``), grad_weight, grad_bias). Two launches. Raises ``ValueError`` as
    ``validation.validate_backward_inputs(kernel=True)``."""
    op = "trgnet_triton::batch_norm_relu_backward"
    validate_backward_inputs(op, grad_out, out, x, frame_mask, weight, mean, var, eps, residual_grad, kernel=True)
    check_triton_tensor(op, "x", x)
    sdt = state_dtype(x.dtype)
    dev = x.device
    grad_x = _empty(x.shape, x.dtype, dev)
    grad_residual = _empty(x.shape, x.dtype, dev) if residual_grad else x.new_empty((0,))
    if x.numel() == 0:  # no position (or no channel): the parameters' gradients are 0
        return grad_x, grad_residual, torch.zeros_like(weight), torch.zeros_like(weight)
    c, t, v, tv = _shape_args(x)
    nb, total, per, s = _chunks(x)
    grad_weight = _empty((c,), sdt, dev)
    grad_bias = _empty((c,), sdt, dev)
    ws = _empty((c, s, PARTIALS), torch.float64, dev)
    mask_arg = frame_mask if frame_mask is not None else x  # never read without a mask
    wrap_triton(_bnr_bwd_reduce_kernel)[(c, s)](
        grad_out, out, x, mask_arg, mean, ws, c, t, v, tv, nb, total, per, s,
        HAS_MASK=frame_mask is not None, BLOCK=BLOCK, **LAUNCH)
    wrap_triton(_bnr_bwd_apply_kernel)[(c, s)](
        grad_out, out, x, mask_arg, weight, mean, var, ws, grad_x, grad_residual if residual_grad else x,
        grad_weight, grad_bias, c, t, v, tv, nb, total, per, s, *_split_double(eps),
        HAS_MASK=frame_mask is not None, RESIDUAL_GRAD=residual_grad, BLOCK=BLOCK, **LAUNCH)
    return grad_x, grad_residual, grad_weight, grad_bias


batch_norm_relu_triton.register_autograd(make_backward(batch_norm_relu_backward_triton), setup_context=setup_context)
