"""Triton kernels of the fused dilated residual layer (docs/model.md#boundary-branch,
docs/kernels.md#dilated_residual).

Math, layouts and shapes: the package docstring (``trgnet_fast/ops/dilated_residual/__init__.py``). The op is the
AttModule without its attention branch, and these kernels are the AttModule's (``trgnet_fast/ops/att_module/
triton_kernels.py``) without it: the same (CP, BT) channel x frame tiles, sequence geometry, masked halo loads of
the dilated conv (any dilation at any T: d >= BT, d >= T included), dropout hash (stream 1, ``MODULE_STREAM``),
products (``_mm*``: tf32x3 for fp32 and 16-bit inputs, IEEE fp64 dots for fp64), launch options and block sizes
(``_geometry`` and its ``TARGET_SLOTS``, ``FRAME_TILE``, ``TILE_LAUNCH``, ``REDUCE_BLOCK``), all imported from there.

Work split (as the AttModule's): every tiled kernel runs on a grid (N, n_chunks); program (n, j) handles tiles
j*TPP .. j*TPP + TPP - 1 (BT frames each) of sequence n, found on the device from cu_seqlens (no host sync). Every
reduction over frames is a per-program partial in the program's own workspace slot, summed over the slots in slot
order by the last kernel (deterministic, no atomics). Sums (conv accumulations, weight gradients) in the state dtype
(fp32; fp64 for fp64 inputs).

Forward (1 launch):

* ``_dr_fwd_kernel``: per tile pre = conv_bias + sum_k W_k x[t + (k - 1) d], o = ReLU(pre), z = W_out o + b_out,
  out = (x + z r) m; stores out, 0 on the frames outside every sequence (the padding of a row, an empty sequence).

Backward (3 launches), recomputing pre and o from x (nothing but the inputs is saved) and r from the seed:

* ``_dr_bwd_pre_kernel``: gz = g m r, go = W_out^T gz, gpre = go [pre > 0] -> the gpre buffer (state dtype,
  (B, C, T), written on the sequences' frames only); per-slot partials of grad_conv_out_weight = sum_t gz o^T
  (a register accumulator) and grad_conv_out_bias = sum_t gz.
* ``_dr_bwd_input_kernel``: the AttModule's ``_am_bwd_conv_kernel`` (called, not copied: the same conv backward on a
  gpre workspace): grad_x = g m + sum_k W_k^T gpre[t - (k - 1) d] (0 outside every sequence); per-slot partials of
  grad_conv_weight[:, :, k] = sum_t gpre[t] x[t + (k - 1) d]^T (accumulated in the slot) and grad_conv_bias.
* ``_dr_reduce_grads_kernel``: the four partials summed in slot order, cast to the weights' dtype.

Workspace slot: the first four segments of the AttModule's weight-gradient slot (``triton_math._grad_segment``),
conv_weight (3 C^2), conv_bias (C), then conv_out_weight (C^2) and conv_out_bias (C) where the AttModule keeps the
query weight and bias (same offsets and sizes): G = 4 C^2 + 2 C values per slot, so the AttModule's slot helpers,
conv backward kernel and segment reduction apply unchanged.

Memory: nothing saved but the inputs. Backward intermediates (state dtype, S = N * n_chunks <= ~TARGET_SLOTS + N
slots): the gpre buffer B C T values, the weight-gradient workspace S (4 C^2 + 2 C) values (fp32 at B = 8,
T = 6000, C = 64: S = 256, 12.3 MB + 16.9 MB). The forward allocates only out.

Registered as ``torch.ops.trgnet_triton.dilated_residual`` / ``dilated_residual_backward`` (``triton_op`` +
``wrap_triton``, autograd via ``register_autograd``, the native op's schemas).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

# private helpers of the AttModule's launcher module, reused as they are: the conv backward kernel (called by
# _dr_bwd_input_kernel), the block sizes and launch options, the host double split and dropout arguments, the
# (poisonable) allocation
from trgnet_fast.ops._checks import check_triton_tensor
from trgnet_fast.ops.att_module.triton_kernels import (
    FRAME_TILE, REDUCE_BLOCK, TILE_LAUNCH, _am_bwd_conv_kernel, _dropout_args, _empty, _geometry)
from trgnet_fast.ops.att_module.triton_math import (
    MODULE_STREAM, _conv_relu, _frame_mask, _grad_slot, _keep_scale, _linear, _load_matrix, _load_tile, _mm_nt,
    _mm_tn, _reduce_grad_segment, _sequence_of, _store_grad_vector, _store_matrix, _store_tile, _tile_frames,
    _tiles_in_chunk, _two_floats)
from trgnet_fast.ops.dilated_residual.autograd import make_backward, setup_context
from trgnet_fast.ops.dilated_residual.validation import state_dtype, validate_backward_inputs, validate_inputs

__all__ = ["dilated_residual_triton", "dilated_residual_backward_triton", "FRAME_TILE", "grad_slot_size"]

# segments of a weight-gradient slot (the AttModule's segment numbers, see the module docstring)
CONV_WEIGHT_SEG = tl.constexpr(0)
CONV_BIAS_SEG = tl.constexpr(1)
CONV_OUT_WEIGHT_SEG = tl.constexpr(2)  # the AttModule's query weight segment: offset 3 C^2 + C, C^2 values
CONV_OUT_BIAS_SEG = tl.constexpr(3)  # its query bias segment: offset 4 C^2 + C, C values


def grad_slot_size(c: int) -> int:
    """G, the values of one program's weight-gradient slot: conv w, conv b, conv_out w, conv_out b."""
    return 4 * c * c + 2 * c


# ------------------------------------------------------------------------------------------------
# forward

@triton.jit
def _dr_fwd_kernel(x_ptr, mask_ptr, cu_ptr, seed_ptr, cw_ptr, cb_ptr, wo_ptr, bo_ptr, out_ptr,
                   C, T, N, dil, TPP, thr, s_hi, s_lo,
                   HAS_CU: tl.constexpr, PACKED: tl.constexpr, HAS_MASK: tl.constexpr, DROP: tl.constexpr,
                   BT: tl.constexpr, CP: tl.constexpr):
    n = tl.program_id(0)
    chunk = tl.program_id(1)
    ACC = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    row, start, length, end = _sequence_of(cu_ptr, n, N, T, HAS_CU, PACKED)
    rc = tl.arange(0, CP)
    c_ok = rc < C
    for i in tl.range(0, _tiles_in_chunk(chunk, end - start, TPP, BT), disable_licm=True):  # weights reloaded per tile
        t_loc = _tile_frames(chunk, i, TPP, BT)
        if (chunk * TPP + i) * BT < length:
            o, xc = _conv_relu(x_ptr, cw_ptr, cb_ptr, row, start, t_loc, length, dil, rc, c_ok, C, T, ACC)
            m = _frame_mask(mask_ptr, row, start, t_loc, length, T, HAS_MASK, ACC)[None, :]
            r = _keep_scale(seed_ptr, row, start, t_loc, rc, C, T, thr, _two_floats(s_hi, s_lo, ACC),
                            MODULE_STREAM, DROP, ACC)
            out = (xc + _linear(wo_ptr, bo_ptr, o, rc, c_ok, C, ACC) * r) * m
        else:
            out = tl.zeros((CP, BT), ACC)
        _store_tile(out_ptr, out, row, start, t_loc, length, end, rc, c_ok, C, T)


# ------------------------------------------------------------------------------------------------
# backward

@triton.jit
def _dr_bwd_pre_kernel(g_ptr, x_ptr, mask_ptr, cu_ptr, seed_ptr, cw_ptr, cb_ptr, wo_ptr, gpre_ptr, wg_ws_ptr,
                       C, T, N, dil, TPP, n_chunks, G, thr, s_hi, s_lo,
                       HAS_CU: tl.constexpr, PACKED: tl.constexpr, HAS_MASK: tl.constexpr, DROP: tl.constexpr,
                       BT: tl.constexpr, CP: tl.constexpr):
    n = tl.program_id(0)
    chunk = tl.program_id(1)
    ACC = gpre_ptr.dtype.element_ty
    row, start, length, end = _sequence_of(cu_ptr, n, N, T, HAS_CU, PACKED)
    rc = tl.arange(0, CP)
    c_ok = rc < C
    dwo = tl.zeros((CP, CP), ACC)
    dbo = tl.zeros((CP,), ACC)
    for i in tl.range(0, _tiles_in_chunk(chunk, length, TPP, BT), disable_licm=True):  # weights reloaded per tile
        t_loc = _tile_frames(chunk, i, TPP, BT)
        o, xc = _conv_relu(x_ptr, cw_ptr, cb_ptr, row, start, t_loc, length, dil, rc, c_ok, C, T, ACC)
        m = _frame_mask(mask_ptr, row, start, t_loc, length, T, HAS_MASK, ACC)[None, :]
        rm = _keep_scale(seed_ptr, row, start, t_loc, rc, C, T, thr, _two_floats(s_hi, s_lo, ACC),
                         MODULE_STREAM, DROP, ACC) * m
        gz = _load_tile(g_ptr, row, start, t_loc, length, rc, c_ok, C, T, ACC) * rm  # 0 past the sequence
        dwo += _mm_nt(gz, o, ACC)
        dbo += tl.sum(gz, axis=1)
        go = _mm_tn(_load_matrix(wo_ptr, rc, c_ok, C, 1).to(ACC), gz, ACC)
        _store_tile(gpre_ptr, tl.where(o > 0.0, go, 0.0), row, start, t_loc, length, start + length, rc, c_ok, C, T)
    slot = n * n_chunks + chunk  # idle programs store zero partials
    _store_matrix(_grad_slot(wg_ws_ptr, slot, G, CONV_OUT_WEIGHT_SEG, C), dwo, rc, c_ok, C, 1)
    _store_grad_vector(wg_ws_ptr, slot, G, CONV_OUT_BIAS_SEG, dbo, rc, c_ok, C)


@triton.jit
def _dr_bwd_input_kernel(g_ptr, x_ptr, mask_ptr, cu_ptr, cw_ptr, gpre_ptr, dx_ptr, wg_ws_ptr,
                         C, T, N, dil, TPP, n_chunks, G,
                         HAS_CU: tl.constexpr, PACKED: tl.constexpr, HAS_MASK: tl.constexpr,
                         BT: tl.constexpr, CP: tl.constexpr):
    # grad_x = g m + sum_k W_k^T gpre[t - (k - 1) d]; conv weight / bias partials in segments 0 / 1 of the slot
    _am_bwd_conv_kernel(g_ptr, x_ptr, mask_ptr, cu_ptr, cw_ptr, gpre_ptr, dx_ptr, wg_ws_ptr,
                        C, T, N, dil, TPP, n_chunks, G, HAS_CU, PACKED, HAS_MASK, BT, CP)


@triton.jit
def _dr_reduce_grads_kernel(wg_ws_ptr, slots, G, C, gcw_ptr, gcb_ptr, gow_ptr, gob_ptr, BLOCK: tl.constexpr):
    block = tl.program_id(0)
    _reduce_grad_segment(wg_ws_ptr, gcw_ptr, CONV_WEIGHT_SEG, block, slots, G, C, BLOCK)
    _reduce_grad_segment(wg_ws_ptr, gcb_ptr, CONV_BIAS_SEG, block, slots, G, C, BLOCK)
    _reduce_grad_segment(wg_ws_ptr, gow_ptr, CONV_OUT_WEIGHT_SEG, block, slots, G, C, BLOCK)
    _reduce_grad_segment(wg_ws_ptr, gob_ptr, CONV_OUT_BIAS_SEG, block, slots, G, C, BLOCK)


# ------------------------------------------------------------------------------------------------
# launchers

_GRADS = tuple[(torch.Tensor,) * 5]


def _layout(geo, mask) -> dict:
    return dict(HAS_CU=geo.has_cu, PACKED=geo.packed, HAS_MASK=mask is not None, BT=geo.BT, CP=geo.CP)


@triton_op("trgnet_triton::dilated_residual", mutates_args=())
def dilated_residual_triton(x: torch.Tensor, mask: torch.Tensor | None, cu_seqlens: torch.Tensor | None,
                            conv_weight: torch.Tensor, conv_bias: torch.Tensor, conv_out_weight: torch.Tensor,
                            conv_out_bias: torch.Tensor, dropout_seed: torch.Tensor | None, dilation: int,
                            dropout: float) -> torch.Tensor:
    """The fused dilated residual layer (package docstring): out (B, C, T). One launch. Raises ``ValueError`` as
    ``validation.validate_inputs(kernel=True)``."""
    weights = (conv_weight, conv_bias, conv_out_weight, conv_out_bias)
    validate_inputs("trgnet_triton::dilated_residual", x, mask, cu_seqlens, weights, dropout_seed, dilation,
                    dropout, kernel=True)
    check_triton_tensor("trgnet_triton::dilated_residual", "x", x)
    geo = _geometry(x, cu_seqlens, 1)
    out = _empty(x.shape, x.dtype, x.device)
    if x.numel() == 0:
        return out
    wrap_triton(_dr_fwd_kernel)[geo.grid](
        x, mask if mask is not None else x, cu_seqlens if geo.has_cu else x,  # never read when absent
        dropout_seed if dropout_seed is not None else x, conv_weight, conv_bias, conv_out_weight, conv_out_bias,
        out, geo.C, geo.T, geo.N, dilation, geo.TPP, *_dropout_args(dropout), DROP=dropout > 0,
        **_layout(geo, mask), **TILE_LAUNCH)
    return out


@triton_op("trgnet_triton::dilated_residual_backward", mutates_args=())
def dilated_residual_backward_triton(grad_out: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None,
                                     cu_seqlens: torch.Tensor | None, conv_weight: torch.Tensor,
                                     conv_bias: torch.Tensor, conv_out_weight: torch.Tensor,
                                     conv_out_bias: torch.Tensor, dropout_seed: torch.Tensor | None, dilation: int,
                                     dropout: float) -> _GRADS:
    """Gradients of ``dilated_residual_triton``'s out w.r.t. x and the four weights and biases, given grad_out
    (B, C, T). Three launches. Raises ``ValueError`` as ``validation.validate_backward_inputs``."""
    weights = (conv_weight, conv_bias, conv_out_weight, conv_out_bias)
    validate_backward_inputs("trgnet_triton::dilated_residual_backward", grad_out, x, mask, cu_seqlens, weights,
                             dropout_seed, dilation, dropout)
    geo = _geometry(x, cu_seqlens, 1)
    sdt = state_dtype(x.dtype)
    dev = x.device
    grad_x = _empty(x.shape, x.dtype, dev)
    if x.numel() == 0:  # no frame (or no channel): the weights' gradients are 0
        return (grad_x, *(torch.zeros_like(w) for w in weights))
    weight_grads = [_empty(w.shape, w.dtype, dev) for w in weights]
    G = grad_slot_size(geo.C)
    layout = _layout(geo, mask)
    mask_arg = mask if mask is not None else x  # never read when absent (likewise cu_seqlens, the seed)
    cu = cu_seqlens if geo.has_cu else x
    gpre = _empty(x.shape, sdt, dev)
    wg_ws = _empty((geo.slots, G), sdt, dev)
    wrap_triton(_dr_bwd_pre_kernel)[geo.grid](
        grad_out, x, mask_arg, cu, dropout_seed if dropout_seed is not None else x, conv_weight, conv_bias,
        conv_out_weight, gpre, wg_ws, geo.C, geo.T, geo.N, dilation, geo.TPP, geo.n_chunks, G,
        *_dropout_args(dropout), DROP=dropout > 0, **layout, **TILE_LAUNCH)
    wrap_triton(_dr_bwd_input_kernel)[geo.grid](
        grad_out, x, mask_arg, cu, conv_weight, gpre, grad_x, wg_ws, geo.C, geo.T, geo.N, dilation, geo.TPP,
        geo.n_chunks, G, **layout, **TILE_LAUNCH)
    wrap_triton(_dr_reduce_grads_kernel)[(triton.cdiv(3 * geo.C * geo.C, REDUCE_BLOCK),)](
        wg_ws, geo.slots, G, geo.C, *weight_grads, BLOCK=REDUCE_BLOCK)
    return (grad_x, *weight_grads)


dilated_residual_triton.register_autograd(make_backward(dilated_residual_backward_triton),
                                          setup_context=setup_context)
