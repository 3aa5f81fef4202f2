"""Triton kernels of the non-causal linear attention (docs/model.md#linear-attention,
docs/architecture.md#why-these-ops).

Math and notation as in ``trgnet_fast/ops/linear_attention/__init__.py`` and ``kernels/linear_attention.cuh``
(phi = sigmoid, m = key mask or 1, state S = [KV, ksum]). Layout: q, k (N, T, H, D), v (N, T, H, E),
contiguous; one program handles one (n, h) pair and one tile of BLOCK_T frames. The state is kept
in fp32 (fp64 for float64 inputs) whatever the input dtype; every reduction over T is a fixed-order
two-stage sum (per-tile partials, then one program per (n, h) adds the tiles in order): no atomics,
bit-wise deterministic.

Kernels (what each one fuses):

* ``_la_fwd_state_kernel`` (forward pass 1): load k, v, mask of a tile, phi(k) * m, the tile's
  partial KV = phi(k)^T v (one ``tl.dot``) and partial ksum = sum_t phi(k) -> workspace.
* ``_la_reduce_tiles_kernel`` (forward pass 2 and backward reduce): sum of the tile partials in tile
  order -> state (N, H, D, E) and (N, H, D) (KV / ksum in the forward, dKV / dksum in the backward).
* ``_la_fwd_output_kernel`` (forward pass 3): phi(q), numerator phi(q) KV (``tl.dot``), denominator
  phi(q).(ksum + eps), division, cast and store of out.
* ``_la_bwd_query_kernel`` (backward pass A): phi(q), numerator and denominator recomputed from
  the saved state, dN = [g / den, dden], dq = phi'(q) (dN S^T) and the tile's partial
  dS = phi(q)^T dN -> workspace, all in one pass over q and g.
* ``_la_bwd_key_kernel`` (backward pass B): dk = m phi'(k) (v dKV^T + dksum), dv = m phi(k) dKV,
  one pass over k, v, mask.

The launchers are registered as ``torch.ops.trgnet_triton.linear_attention`` and
``..._backward`` (``torch.library.triton_op`` + ``wrap_triton``, same schemas as the native
``trgnet::`` ops, autograd via ``register_autograd``), so torch.compile traces them without a graph
break (on CUDA; under the CPU interpreter torch.compile / fake tensors cannot run them).
Forward: 3 launches (partials, reduce, output); backward: 3 launches (query pass, reduce, key pass).

Block sizes come from :func:`block_sizes` (a single config, no autotune). Head dims are padded to
powers of two >= 16 (``tl.dot`` needs K >= 16 on the GPU) and masked. The dots use
``input_precision="ieee"`` so fp32 results meet the 1e-5 parity tolerance (no TF32: the op is
bandwidth-bound); in fp64 the two products over the frame axis are explicit sums (``_frames_dot``).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from trgnet_fast.ops._checks import check_triton_tensor
from trgnet_fast.ops.linear_attention.autograd import make_backward, setup_context
from trgnet_fast.ops.linear_attention.validation import state_dtype, validate_backward_inputs, validate_inputs


@triton.jit
def _tile_indices(T, H, D, E, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr):
    """Program (n*H + h, T-tile) of the tiled kernels: its frame / D / E index ranges and bounds masks."""
    nh = tl.program_id(0)
    tile = tl.program_id(1)
    rt = tile * BLOCK_T + tl.arange(0, BLOCK_T)
    rd = tl.arange(0, BLOCK_D)
    re = tl.arange(0, BLOCK_E)
    return nh, tile, nh // H, nh % H, rt, rd, re, rt < T, rd < D, re < E


@triton.jit
def _load_state(mat_ptr, vec_ptr, nh, rd, re, d_ok, e_ok, D, E):
    """One (n, h)'s (D, E) state matrix and (D,) vector (KV and ksum + eps, or their gradients)."""
    mat = tl.load(mat_ptr + nh * D * E + rd[:, None] * E + re[None, :], mask=d_ok[:, None] & e_ok[None, :],
                  other=0.0)
    return mat, tl.load(vec_ptr + nh * D + rd, mask=d_ok, other=0.0)


@triton.jit
def _frames_dot(a, b, ACC: tl.constexpr):
    """a^T b, the sum over the frame axis of (BLOCK_T, X) and (BLOCK_T, Y) tiles -> (X, Y), in ACC. fp32:
    ``tl.dot`` in IEEE precision. fp64: an explicit product-sum — Triton 3.6 cannot lower every fp64 dot with
    K > 16 on sm_90 ("fp64 don't support largeK MMA": the masked state kernel at BLOCK_T = 64)."""
    if ACC == tl.float64:
        return tl.sum(a[:, :, None] * b[:, None, :], axis=0)
    return tl.dot(tl.trans(a), b, input_precision="ieee", out_dtype=ACC)


@triton.jit
def _la_fwd_state_kernel(k_ptr, v_ptr, mask_ptr, kv_ws_ptr, ks_ws_ptr,
                          T, H, D, E, n_tiles,
                          HAS_MASK: tl.constexpr, BLOCK_T: tl.constexpr,
                          BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr):
    nh, tile, n, h, rt, rd, re, t_ok, d_ok, e_ok = _tile_indices(T, H, D, E, BLOCK_T, BLOCK_D, BLOCK_E)
    ACC = kv_ws_ptr.dtype.element_ty
    if HAS_MASK:
        m = tl.load(mask_ptr + n * T + rt, mask=t_ok, other=0) != 0
        t_ok = t_ok & m
    k_off = ((n * T + rt[:, None]) * H + h) * D + rd[None, :]
    k = tl.load(k_ptr + k_off, mask=t_ok[:, None] & d_ok[None, :], other=0.0).to(ACC)
    phik = tl.where(t_ok[:, None] & d_ok[None, :], tl.sigmoid(k), 0.0)
    v_off = ((n * T + rt[:, None]) * H + h) * E + re[None, :]
    v = tl.load(v_ptr + v_off, mask=t_ok[:, None] & e_ok[None, :], other=0.0).to(ACC)
    kv = _frames_dot(phik, v, ACC)  # (BLOCK_D, BLOCK_E)
    ks = tl.sum(phik, axis=0)  # (BLOCK_D,)
    ws = nh * n_tiles + tile
    tl.store(kv_ws_ptr + ws * BLOCK_D * BLOCK_E + rd[:, None] * BLOCK_E + re[None, :], kv)
    tl.store(ks_ws_ptr + ws * BLOCK_D + rd, ks)


@triton.jit
def _la_reduce_tiles_kernel(kv_ws_ptr, ks_ws_ptr, kv_ptr, ks_ptr, D, E, n_tiles,
                         BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr):
    nh = tl.program_id(0)
    ACC = kv_ws_ptr.dtype.element_ty
    rd = tl.arange(0, BLOCK_D)
    re = tl.arange(0, BLOCK_E)
    kv = tl.zeros((BLOCK_D, BLOCK_E), dtype=ACC)
    ks = tl.zeros((BLOCK_D,), dtype=ACC)
    for i in range(0, n_tiles):  # fixed order: deterministic
        ws = nh * n_tiles + i
        kv += tl.load(kv_ws_ptr + ws * BLOCK_D * BLOCK_E + rd[:, None] * BLOCK_E + re[None, :])
        ks += tl.load(ks_ws_ptr + ws * BLOCK_D + rd)
    d_ok = rd < D
    tl.store(kv_ptr + nh * D * E + rd[:, None] * E + re[None, :], kv,
             mask=d_ok[:, None] & (re[None, :] < E))
    tl.store(ks_ptr + nh * D + rd, ks, mask=d_ok)


@triton.jit
def _la_fwd_output_kernel(q_ptr, kv_ptr, kse_ptr, out_ptr, T, H, D, E,
                   BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr):
    nh, tile, n, h, rt, rd, re, t_ok, d_ok, e_ok = _tile_indices(T, H, D, E, BLOCK_T, BLOCK_D, BLOCK_E)
    ACC = kv_ptr.dtype.element_ty
    kv, kse = _load_state(kv_ptr, kse_ptr, nh, rd, re, d_ok, e_ok, D, E)
    q_off = ((n * T + rt[:, None]) * H + h) * D + rd[None, :]
    q = tl.load(q_ptr + q_off, mask=t_ok[:, None] & d_ok[None, :], other=0.0).to(ACC)
    phiq = tl.where(d_ok[None, :], tl.sigmoid(q), 0.0)
    num = tl.dot(phiq, kv, input_precision="ieee", out_dtype=ACC)  # (BLOCK_T, BLOCK_E)
    den = tl.sum(phiq * kse[None, :], axis=1)
    den = tl.where(t_ok, den, 1.0)
    out = num / den[:, None]
    o_off = ((n * T + rt[:, None]) * H + h) * E + re[None, :]
    tl.store(out_ptr + o_off, out.to(out_ptr.dtype.element_ty), mask=t_ok[:, None] & e_ok[None, :])


@triton.jit
def _la_bwd_query_kernel(g_ptr, q_ptr, kv_ptr, kse_ptr, dq_ptr, dkv_ws_ptr, dks_ws_ptr,
                           T, H, D, E, n_tiles,
                           BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr):
    nh, tile, n, h, rt, rd, re, t_ok, d_ok, e_ok = _tile_indices(T, H, D, E, BLOCK_T, BLOCK_D, BLOCK_E)
    ACC = kv_ptr.dtype.element_ty
    kv, kse = _load_state(kv_ptr, kse_ptr, nh, rd, re, d_ok, e_ok, D, E)
    q_off = ((n * T + rt[:, None]) * H + h) * D + rd[None, :]
    td = t_ok[:, None] & d_ok[None, :]
    q = tl.load(q_ptr + q_off, mask=td, other=0.0).to(ACC)
    phiq = tl.where(td, tl.sigmoid(q), 0.0)
    g_off = ((n * T + rt[:, None]) * H + h) * E + re[None, :]
    g = tl.load(g_ptr + g_off, mask=t_ok[:, None] & e_ok[None, :], other=0.0).to(ACC)
    num = tl.dot(phiq, kv, input_precision="ieee", out_dtype=ACC)  # (BLOCK_T, BLOCK_E)
    den = tl.sum(phiq * kse[None, :], axis=1)
    den = tl.where(t_ok, den, 1.0)  # padded frames: g = 0, keep 0 / 1 = 0
    dnv = g / den[:, None]  # dN[:, :E]
    dden = -tl.sum(g * num, axis=1) / (den * den)  # dN[:, E]
    # dq = phi'(q) * (dN S^T) with S = [KV, ksum + eps]
    sdn = tl.dot(dnv, tl.trans(kv), input_precision="ieee", out_dtype=ACC) + dden[:, None] * kse[None, :]
    dq = phiq * (1.0 - phiq) * sdn
    tl.store(dq_ptr + q_off, dq.to(dq_ptr.dtype.element_ty), mask=td)
    # partial dS = phi(q)^T dN
    dkv = _frames_dot(phiq, dnv, ACC)  # (BLOCK_D, BLOCK_E)
    dks = tl.sum(phiq * dden[:, None], axis=0)
    ws = nh * n_tiles + tile
    tl.store(dkv_ws_ptr + ws * BLOCK_D * BLOCK_E + rd[:, None] * BLOCK_E + re[None, :], dkv)
    tl.store(dks_ws_ptr + ws * BLOCK_D + rd, dks)


@triton.jit
def _la_bwd_key_kernel(k_ptr, v_ptr, mask_ptr, dkv_ptr, dks_ptr, dk_ptr, dv_ptr, T, H, D, E,
                         HAS_MASK: tl.constexpr, BLOCK_T: tl.constexpr,
                         BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr):
    nh, tile, n, h, rt, rd, re, t_ok, d_ok, e_ok = _tile_indices(T, H, D, E, BLOCK_T, BLOCK_D, BLOCK_E)
    ACC = dkv_ptr.dtype.element_ty
    if HAS_MASK:
        m = (tl.load(mask_ptr + n * T + rt, mask=t_ok, other=0) != 0).to(ACC)
    else:
        m = tl.full((BLOCK_T,), 1.0, ACC)
    dkv, dks = _load_state(dkv_ptr, dks_ptr, nh, rd, re, d_ok, e_ok, D, E)
    td = t_ok[:, None] & d_ok[None, :]
    te = t_ok[:, None] & e_ok[None, :]
    k_off = ((n * T + rt[:, None]) * H + h) * D + rd[None, :]
    k = tl.load(k_ptr + k_off, mask=td, other=0.0).to(ACC)
    sk = tl.where(td, tl.sigmoid(k), 0.0)
    v_off = ((n * T + rt[:, None]) * H + h) * E + re[None, :]
    v = tl.load(v_ptr + v_off, mask=te, other=0.0).to(ACC)
    # dk = m phi'(k) (dS [v, 1]),  dv = m (phi(k) dKV); row t of both reads only frame t's k and v, so a masked
    # frame's rows are selected to 0 at the end (a NaN there times m = 0 would stay NaN). The dot operands stay
    # unselected: selecting them makes Triton 3.6 pick an fp64 MMA layout it cannot lower for sm_90.
    keep = m[:, None] != 0
    dsv = tl.dot(v, tl.trans(dkv), input_precision="ieee", out_dtype=ACC) + dks[None, :]
    dk = tl.where(keep, sk * (1.0 - sk) * dsv, 0.0)
    dv = tl.where(keep, tl.dot(sk, dkv, input_precision="ieee", out_dtype=ACC), 0.0)
    tl.store(dk_ptr + k_off, dk.to(dk_ptr.dtype.element_ty), mask=td)
    tl.store(dv_ptr + v_off, dv.to(dv_ptr.dtype.element_ty), mask=te)


def block_sizes(T: int, D: int, E: int) -> tuple[int, int, int]:
    """(BLOCK_T, BLOCK_D, BLOCK_E): head dims padded to powers of two >= 16; the frame tile is 128
    for head dims <= 32 and 64 above (register budget of the (BLOCK_T, BLOCK_D/E) tiles), never
    more than T rounded up to a power of two (>= 16)."""
    block_d = triton.next_power_of_2(max(D, 16))
    block_e = triton.next_power_of_2(max(E, 16))
    block_t = 128 if max(block_d, block_e) <= 32 else 64
    block_t = min(block_t, triton.next_power_of_2(max(T, 16)))
    return block_t, block_d, block_e


# ------------------------------------------------------------------------------------------------
# Launchers, registered as torch.library.triton_op so torch.compile traces them (no graph break)

# Debug switch for tests: when True every buffer the launchers allocate (outputs, state, workspace)
# starts filled with NaN, so an element a kernel fails to write shows up in the results.
POISON_OUTPUTS = False


def _empty(shape, dtype, device):
    if POISON_OUTPUTS:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def _reduce_over_tiles(kv_ws, ks_ws, NH, D, E, n_tiles, block_d, block_e):
    kv = _empty((NH, D, E), kv_ws.dtype, kv_ws.device)
    ks = _empty((NH, D), kv_ws.dtype, kv_ws.device)
    wrap_triton(_la_reduce_tiles_kernel)[(NH,)](kv_ws, ks_ws, kv, ks, D, E, n_tiles,
                                                BLOCK_D=block_d, BLOCK_E=block_e)
    return kv, ks


@triton_op("trgnet_triton::linear_attention", mutates_args=())
def linear_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            key_mask: torch.Tensor | None, eps: float
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k: (N, T, H, D), v: (N, T, H, E) contiguous, one dtype and device; key_mask (N, T) bool or
    None. Returns out (N, T, H, E) (dtype of q), kv_state (N, H, D, E) and key_sum (N, H, D) without
    eps (fp32, fp64 for float64 inputs), as ``trgnet::linear_attention``. Raises ``ValueError`` for
    inputs the kernels cannot index (``validation.validate_inputs`` with ``kernel=True``)."""
    validate_inputs("trgnet_triton::linear_attention", q, k, v, key_mask, eps, kernel=True)
    check_triton_tensor("trgnet_triton::linear_attention", "q", q)
    N, T, H, D = q.shape
    E = v.shape[3]
    NH = N * H
    sdt = state_dtype(q.dtype)
    out = _empty((N, T, H, E), q.dtype, q.device)
    if NH == 0 or T == 0 or D == 0 or E == 0:
        return (out.zero_(), torch.zeros((N, H, D, E), dtype=sdt, device=q.device),
                torch.zeros((N, H, D), dtype=sdt, device=q.device))
    bt, bd, be = block_sizes(T, D, E)
    n_tiles = triton.cdiv(T, bt)
    kv_ws = _empty((NH, n_tiles, bd, be), sdt, q.device)
    ks_ws = _empty((NH, n_tiles, bd), sdt, q.device)
    has_mask = key_mask is not None
    mask_arg = key_mask if has_mask else k  # never read without a mask
    wrap_triton(_la_fwd_state_kernel)[(NH, n_tiles)](
        k, v, mask_arg, kv_ws, ks_ws, T, H, D, E, n_tiles,
        HAS_MASK=has_mask, BLOCK_T=bt, BLOCK_D=bd, BLOCK_E=be)
    kv, ks = _reduce_over_tiles(kv_ws, ks_ws, NH, D, E, n_tiles, bd, be)
    kse = ks + eps  # eps added in the state dtype (exact for float64)
    wrap_triton(_la_fwd_output_kernel)[(NH, n_tiles)](
        q, kv, kse, out, T, H, D, E, BLOCK_T=bt, BLOCK_D=bd, BLOCK_E=be)
    return out, kv.view(N, H, D, E), ks.view(N, H, D)


@triton_op("trgnet_triton::linear_attention_backward", mutates_args=())
def linear_attention_backward_triton(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                     key_mask: torch.Tensor | None, kv_state: torch.Tensor,
                                     key_sum: torch.Tensor, eps: float
                                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dq, dk, dv) of ``linear_attention_triton``'s out, given grad_out (N, T, H, E)
    contiguous and the saved state kv_state (N, H, D, E), key_sum (N, H, D); same schema as
    ``trgnet::linear_attention_backward``. Raises ``ValueError`` as ``validation.validate_backward_inputs``."""
    validate_backward_inputs("trgnet_triton::linear_attention_backward", grad_out, q, k, v, key_mask, kv_state,
                             key_sum, eps)
    N, T, H, D = q.shape
    E = v.shape[3]
    NH = N * H
    dq = _empty(q.shape, q.dtype, q.device)
    dk = _empty(k.shape, k.dtype, k.device)
    dv = _empty(v.shape, v.dtype, v.device)
    if NH == 0 or T == 0 or D == 0 or E == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    bt, bd, be = block_sizes(T, D, E)
    n_tiles = triton.cdiv(T, bt)
    sdt = kv_state.dtype
    kv = kv_state.reshape(NH, D, E)
    kse = key_sum.reshape(NH, D) + eps
    dkv_ws = _empty((NH, n_tiles, bd, be), sdt, q.device)
    dks_ws = _empty((NH, n_tiles, bd), sdt, q.device)
    wrap_triton(_la_bwd_query_kernel)[(NH, n_tiles)](
        grad_out, q, kv, kse, dq, dkv_ws, dks_ws, T, H, D, E, n_tiles,
        BLOCK_T=bt, BLOCK_D=bd, BLOCK_E=be)
    dkv, dks = _reduce_over_tiles(dkv_ws, dks_ws, NH, D, E, n_tiles, bd, be)
    has_mask = key_mask is not None
    mask_arg = key_mask if has_mask else k
    wrap_triton(_la_bwd_key_kernel)[(NH, n_tiles)](
        k, v, mask_arg, dkv, dks, dk, dv, T, H, D, E,
        HAS_MASK=has_mask, BLOCK_T=bt, BLOCK_D=bd, BLOCK_E=be)
    return dq, dk, dv


linear_attention_triton.register_autograd(make_backward(linear_attention_backward_triton),
                                          setup_context=setup_context)
