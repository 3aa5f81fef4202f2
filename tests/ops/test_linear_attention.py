"""Parity tests of trgnet_fast.ops.linear_attention.

* the reference against a direct O(T^2) evaluation of the same formula (float64);
* the native op (extension's C++ CPU kernels, reached through backend="cuda" on CPU tensors)
  against the float64 reference: forward, state, gradients, opcheck, gradcheck;
* input validation (ValueError from the wrapper, RuntimeError from the C++ checks);
* GPU tests (marked ``gpu``): CUDA kernels vs the float64 reference at larger shapes, fp32 and bf16,
  poisoned outputs, determinism, torch.compile.

Tolerances (docs/architecture.md#parity): ||out - ref|| / ||ref|| against a float64 reference, fp32 <= 1e-5,
bf16 / fp16 <= 2x the error of the same-dtype PyTorch reference. Fresh random inputs every run.
"""
from __future__ import annotations

import pytest
import torch

from attention_cases import (EPS, assert_attention_compiles, grad_floors, make_inputs, reference_grads, rel_err,
                             state_reference)
from op_checks import poison_allocator
from trgnet_fast.backend import implemented_backends
from trgnet_fast.ops.linear_attention import OP_NAME, linear_attention, linear_attention_reference


# ----------------------------------------------------------------------------------------------
# helpers

def quadratic_attention(q, k, v, key_mask=None, eps=EPS):
    """Direct O(T^2) evaluation: w_ls = phi(q_l).phi(k_s) m_s,
    out_l = sum_s w_ls v_s / (sum_s w_ls + eps * sum_d phi(q_l)[d])."""
    pq, pk = torch.sigmoid(q), torch.sigmoid(k)
    w = torch.einsum("nlhd,nshd->nhls", pq, pk)  # (N, H, T, T)
    if key_mask is not None:
        w = w * key_mask[:, None, None, :].to(w.dtype)
    num = torch.einsum("nhls,nshe->nlhe", w, v)
    den = w.sum(-1).permute(0, 2, 1) + eps * pq.sum(-1)  # (N, T, H)
    return num / den[..., None]


SHAPES = [  # (N, T, H, D, E): odd T, odd and typical head dims
    (2, 1, 1, 16, 16),
    (2, 7, 4, 5, 3),
    (1, 63, 4, 16, 16),
    (2, 300, 1, 64, 5),
    (3, 300, 4, 16, 64),
]


# ----------------------------------------------------------------------------------------------
# reference

@pytest.mark.parametrize("masked", [False, True], ids=["published", "masked"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_reference_matches_quadratic_evaluation(shape, masked):
    q, k, v, mask = make_inputs(*shape, masked=masked)
    out = linear_attention_reference(q, k, v, mask, EPS)
    assert out.shape == (*shape[:3], shape[4]) and out.dtype == torch.float64
    assert rel_err(out, quadratic_attention(q, k, v, mask, EPS)) <= 1e-12


def test_backend_registration():
    assert "cuda" in implemented_backends(OP_NAME)


# ----------------------------------------------------------------------------------------------
# native op on CPU (the extension's C++ kernels)

@pytest.mark.parametrize("masked", [False, True], ids=["published", "masked"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_native_cpu_forward_and_grads(native, shape, dtype, masked):
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    q, k, v, mask = make_inputs(*shape, dtype=dtype, masked=masked, requires_grad=True)
    grad_out = torch.randn(*shape[:3], shape[4], dtype=torch.float64)
    ref, ref_grads = reference_grads(q, k, v, mask, grad_out)

    floors = grad_floors(grad_out, q, k, v, mask)

    out = linear_attention(q, k, v, mask, EPS, backend="cuda")
    assert out.dtype == dtype and out.shape == ref.shape
    assert rel_err(out, ref) <= tol
    out.backward(grad_out.to(dtype))
    for name, t, g in zip("qkv", (q, k, v), ref_grads):
        assert t.grad.dtype == dtype, name
        assert rel_err(t.grad, g, floors[name]) <= tol, name

    _, kv_state, key_sum = native.linear_attention(q.detach(), k.detach(), v.detach(), mask, EPS)
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    assert kv_state.dtype == key_sum.dtype == state_dtype
    kv_ref, ks_ref = state_reference(k, v, mask)
    assert rel_err(kv_state, kv_ref) <= tol and rel_err(key_sum, ks_ref) <= tol


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_native_cpu_16bit_inputs_keep_an_fp32_state(native, dtype):
    """The state of 16-bit inputs is fp32 and accumulated in fp32: fp32 error against the float64 state of the
    same (rounded) inputs, where a 16-bit accumulation would be off by ~1e-3."""
    q, k, v, mask = make_inputs(2, 63, 2, 16, 16, dtype=dtype, masked=True)
    _, kv_state, key_sum = native.linear_attention(q, k, v, mask, EPS)
    kv_ref, ks_ref = state_reference(k.double(), v.double(), mask)
    assert kv_state.dtype == key_sum.dtype == torch.float32
    assert rel_err(kv_state, kv_ref) <= 1e-6 and rel_err(key_sum, ks_ref) <= 1e-6


@pytest.mark.parametrize("masked", [False, True], ids=["published", "masked"])
def test_native_cpu_non_contiguous_inputs(native, masked):
    N, T, H, D, E = 2, 63, 4, 5, 7
    # (N, H, T, D) tensors viewed as (N, T, H, D): non-contiguous, as after a head transpose
    q = torch.randn(N, H, T, D, dtype=torch.float64).transpose(1, 2).requires_grad_(True)
    k = torch.randn(N, H, T, D, dtype=torch.float64).transpose(1, 2).requires_grad_(True)
    v = torch.randn(N, T, H, 2 * E, dtype=torch.float64)[..., ::2].requires_grad_(True)
    mask = (torch.rand(N, 2 * T) < 0.7)[:, ::2] if masked else None
    assert not q.is_contiguous() and not v.is_contiguous()
    grad_out = torch.randn(N, T, H, E, dtype=torch.float64)
    ref, ref_grads = reference_grads(q, k, v, mask, grad_out)
    out = linear_attention(q, k, v, mask, EPS, backend="cuda")
    out.backward(grad_out)
    assert rel_err(out, ref) <= 1e-11
    for t, g in zip((q, k, v), ref_grads):
        assert rel_err(t.grad, g) <= 1e-11


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_native_cpu_half_precision(native, dtype):
    q, k, v, mask = make_inputs(2, 63, 4, 16, 16, dtype=dtype, masked=True)
    ref = linear_attention_reference(q.double(), k.double(), v.double(), mask, EPS)
    same_dtype_ref = linear_attention_reference(q, k, v, mask, EPS)
    out = linear_attention(q, k, v, mask, EPS, backend="cuda")
    assert out.dtype == dtype
    assert rel_err(out, ref) <= 2 * rel_err(same_dtype_ref, ref) + 1e-4


def test_native_cpu_deterministic_and_empty(native):
    q, k, v, mask = make_inputs(2, 300, 4, 16, 16, dtype=torch.float32, masked=True)
    a = native.linear_attention(q, k, v, mask, EPS)
    b = native.linear_attention(q, k, v, mask, EPS)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    # T = 0: empty output, zero state
    q, k, v, _ = make_inputs(2, 0, 3, 4, 5, dtype=torch.float32)
    out, kv_state, key_sum = native.linear_attention(q, k, v, None, EPS)
    assert out.shape == (2, 0, 3, 5) and kv_state.shape == (2, 3, 4, 5) and key_sum.shape == (2, 3, 4)
    assert not kv_state.any() and not key_sum.any()


@pytest.mark.parametrize("masked", [False, True], ids=["published", "masked"])
def test_native_opcheck(native, masked):
    q, k, v, mask = make_inputs(2, 7, 2, 3, 5, masked=masked, requires_grad=True)
    torch.library.opcheck(native.linear_attention.default, (q, k, v, mask, EPS))
    out, kv_state, key_sum = native.linear_attention(q.detach(), k.detach(), v.detach(), mask, EPS)
    grad_out = torch.randn_like(out)
    torch.library.opcheck(native.linear_attention_backward.default,
                          (grad_out, q.detach(), k.detach(), v.detach(), mask, kv_state, key_sum, EPS))


@pytest.mark.parametrize("masked", [False, True], ids=["published", "masked"])
def test_native_gradcheck(native, masked):
    q, k, v, mask = make_inputs(2, 5, 2, 3, 4, masked=masked, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: linear_attention(a, b, c, mask, EPS, backend="cuda"),
                                    (q, k, v))


def test_native_state_outputs_are_not_differentiable(native):
    q, k, v, _ = make_inputs(1, 7, 2, 3, 4, requires_grad=True)
    out, kv_state, key_sum = native.linear_attention(q, k, v, None, EPS)
    assert out.requires_grad and not kv_state.requires_grad and not key_sum.requires_grad


# ----------------------------------------------------------------------------------------------
# input validation

def _bad_inputs():
    q, k, v, mask = make_inputs(2, 7, 4, 5, 3, dtype=torch.float32, masked=True)
    return [  # (id, (q, k, v, mask), argument named in the message)
        ("q-rank", (q[0], k, v, mask), "q"),
        ("q-int", (q.int(), k.int(), v.int(), mask), "q"),
        ("k-shape", (q, k[..., :4], v, mask), "k"),
        ("v-shape", (q, k, v[:, :6], mask), "v"),
        ("k-dtype", (q, k.double(), v, mask), "k"),
        ("v-dtype", (q, k, v.half(), mask), "v"),
        ("k-device", (q, k.to("meta"), v, mask), "k"),
        ("mask-shape", (q, k, v, mask[:, :6]), "key_mask"),
        ("mask-dtype", (q, k, v, mask.float()), "key_mask"),
    ]


@pytest.mark.parametrize("case", _bad_inputs(), ids=lambda c: c[0])
@pytest.mark.parametrize("backend", ["torch", "auto", "triton"])
def test_wrapper_rejects_bad_inputs(case, backend):
    _, args, name = case
    with pytest.raises(ValueError, match=rf"\b{name}: expected"):
        linear_attention(*args, eps=EPS, backend=backend)


def test_native_rejects_bad_inputs(native):
    q, k, v, mask = make_inputs(2, 7, 4, 5, 3, dtype=torch.float32, masked=True)
    op = native.linear_attention
    cases = [
        ((q.transpose(1, 2).contiguous().transpose(1, 2), k, v, mask), "argument 'q': expected a contiguous"),
        ((q[0], k, v, mask), "argument 'q': expected a 4-D tensor"),
        ((q, k[..., :4].contiguous(), v, mask), "argument 'k': expected shape"),
        ((q, k, v[:, :6].contiguous(), mask), "argument 'v': expected shape"),
        ((q, k, v.double(), mask), "argument 'v': expected dtype"),
        ((q, k, v, mask.float()), "argument 'key_mask': expected dtype"),
        ((q, k, v, mask[:, :6].contiguous()), "argument 'key_mask': expected shape"),
        ((q.int(), k.int(), v.int(), mask), "argument 'q': expected dtype"),
    ]
    for args, msg in cases:
        with pytest.raises(RuntimeError, match=msg):
            op(*args, EPS)

    out, kv_state, key_sum = op(q, k, v, mask, EPS)
    bwd = native.linear_attention_backward
    g = torch.randn_like(out)
    cases = [
        ((g[..., :2].contiguous(), q, k, v, mask, kv_state, key_sum), "argument 'grad_out': expected shape"),
        ((g, q, k, v, mask, kv_state.double(), key_sum), "argument 'kv_state': expected dtype"),
        ((g, q, k, v, mask, kv_state, key_sum[..., :4].contiguous()), "argument 'key_sum': expected shape"),
    ]
    for args, msg in cases:
        with pytest.raises(RuntimeError, match=msg):
            bwd(*args, EPS)


# ----------------------------------------------------------------------------------------------
# GPU (CUDA kernels)

GPU_SHAPES = [
    (8, 4097, 4, 16, 16),  # TRG-Net's heads, odd long T (several reduction chunks)
    (2, 300, 2, 64, 64),   # largest head dims
    (3, 63, 3, 5, 7),      # odd head dims
    (1, 1, 1, 1, 1),
]


@pytest.mark.gpu
@pytest.mark.parametrize("masked", [False, True], ids=["published", "masked"])
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cuda_fp32_parity(native_cuda, shape, masked):
    N, T, H, D, E = shape
    q, k, v, mask = make_inputs(*shape, dtype=torch.float32, device="cuda", masked=masked, requires_grad=True)
    grad_out = torch.randn(N, T, H, E, dtype=torch.float64, device="cuda")
    ref, ref_grads = reference_grads(q, k, v, mask, grad_out)
    poison_allocator((N, T, H, E), (N, H, D, E), (N, H, D), (N, T, H, D), (N, T, H, D), (N, T, H, E))
    out = linear_attention(q, k, v, mask, EPS, backend="cuda")
    out.backward(grad_out.float())
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) <= 1e-5
    for name, t, g in zip("qkv", (q, k, v), ref_grads):
        assert torch.isfinite(t.grad).all(), name
        assert rel_err(t.grad, g, grad_floors(grad_out, q, k, v, mask)[name]) <= 1e-5, name
    _, kv_state, key_sum = native_cuda.linear_attention(q.detach(), k.detach(), v.detach(), mask, EPS)
    kv_ref, ks_ref = state_reference(k, v, mask)
    assert rel_err(kv_state, kv_ref) <= 1e-5 and rel_err(key_sum, ks_ref) <= 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(8, 4097, 4, 16, 16), (2, 300, 2, 64, 64)], ids=lambda s: "x".join(map(str, s)))
def test_cuda_bf16_parity(native_cuda, shape):
    N, T, H, D, E = shape
    q, k, v, mask = make_inputs(*shape, dtype=torch.bfloat16, device="cuda", masked=True, requires_grad=True)
    grad_out = torch.randn(N, T, H, E, dtype=torch.float64, device="cuda")
    ref, ref_grads = reference_grads(q, k, v, mask, grad_out)
    bf_ref, bf_grads = reference_grads(q, k, v, mask, grad_out, dtype=torch.bfloat16)
    out = linear_attention(q, k, v, mask, EPS, backend="cuda")
    out.backward(grad_out.bfloat16())
    assert out.dtype == torch.bfloat16
    assert rel_err(out, ref) <= 2 * rel_err(bf_ref, ref)
    for name, t, g, gb in zip("qkv", (q, k, v), ref_grads, bf_grads):
        assert t.grad.dtype == torch.bfloat16
        assert rel_err(t.grad, g) <= 2 * rel_err(gb, g), name


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=["fp64", "fp16"])
def test_cuda_other_dtypes(native_cuda, dtype):
    q, k, v, mask = make_inputs(2, 129, 4, 16, 16, dtype=dtype, device="cuda", masked=True)
    ref = linear_attention_reference(q.double(), k.double(), v.double(), mask, EPS)
    out = linear_attention(q, k, v, mask, EPS, backend="cuda")
    if dtype == torch.float64:
        assert rel_err(out, ref) <= 1e-12
    else:
        assert rel_err(out, ref) <= 2 * rel_err(linear_attention_reference(q, k, v, mask, EPS), ref) + 1e-4


@pytest.mark.gpu
def test_cuda_deterministic(native_cuda):
    q, k, v, mask = make_inputs(4, 5000, 4, 16, 16, dtype=torch.float32, device="cuda", masked=True)
    a = native_cuda.linear_attention(q, k, v, mask, EPS)
    b = native_cuda.linear_attention(q, k, v, mask, EPS)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    g = torch.randn_like(a[0])
    ga = native_cuda.linear_attention_backward(g, q, k, v, mask, a[1], a[2], EPS)
    gb = native_cuda.linear_attention_backward(g, q, k, v, mask, a[1], a[2], EPS)
    assert all(torch.equal(x, y) for x, y in zip(ga, gb))


@pytest.mark.gpu
def test_cuda_matches_cpu_kernels(native_cuda):
    q, k, v, mask = make_inputs(2, 300, 4, 16, 16, dtype=torch.float64, masked=True)
    cpu = native_cuda.linear_attention(q, k, v, mask, EPS)
    gpu = native_cuda.linear_attention(q.cuda(), k.cuda(), v.cuda(), mask.cuda(), EPS)
    for a, b in zip(cpu, gpu):
        assert rel_err(b.cpu(), a) <= 1e-13


@pytest.mark.gpu
def test_cuda_rejects_large_head_dims(native_cuda):
    q, k, v, _ = make_inputs(1, 7, 1, 65, 4, dtype=torch.float32, device="cuda")
    with pytest.raises(RuntimeError, match="head dims"):
        native_cuda.linear_attention(q, k, v, None, EPS)


@pytest.mark.gpu
def test_cuda_opcheck(native_cuda):
    q, k, v, mask = make_inputs(2, 33, 2, 16, 8, device="cuda", masked=True, requires_grad=True)
    torch.library.opcheck(native_cuda.linear_attention.default, (q, k, v, mask, EPS))


def _native_attend(q, k, v, mask):
    return torch.ops.trgnet.linear_attention(q, k, v, mask, EPS)[0]


@pytest.mark.gpu
def test_cuda_torch_compile_matches_eager(native_cuda):
    assert_attention_compiles(_native_attend, "cuda")


def test_cpu_torch_compile_matches_eager(native):
    # the same traced graph with the extension's CPU kernels (fake kernel + autograd registration)
    assert_attention_compiles(_native_attend, "cpu", T=33)
