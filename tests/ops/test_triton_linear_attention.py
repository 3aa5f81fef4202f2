"""Parity tests of the Triton backend of trgnet_fast.ops.linear_attention.

On a CPU-only machine the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, set by
tests/conftest.py), which is slow (~2 ms per program): shapes here are tiny. GPU tests (marked
``gpu``) check the TRG-Net sizes in fp32 and bf16 and torch.compile.

Tolerances (docs/architecture.md#parity): ||out - ref|| / ||ref|| against a float64 reference: fp64 <= 1e-10,
fp32 <= 1e-5, bf16 <= 2x the error of the same-dtype PyTorch reference. Fresh random inputs every run.
"""
from __future__ import annotations

import functools

import pytest
import torch

from attention_cases import EPS, TOL, assert_attention_compiles, reference_grads, rel_err, state_reference
from attention_cases import check_forward_backward as _check_forward_backward
from attention_cases import make_inputs as _make_inputs
from trgnet_fast.backend import backend_status, implemented_backends
from trgnet_fast.ops.linear_attention import OP_NAME, linear_attention

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
make_inputs = functools.partial(_make_inputs, device=DEVICE)
check_forward_backward = functools.partial(_check_forward_backward, backend="triton")

pytestmark = [
    pytest.mark.skipif(not backend_status(DEVICE)["triton"][0],
                       reason=f"triton backend unusable: {backend_status(DEVICE)['triton'][1]}"),
]


def _tl():
    import trgnet_fast.triton.linear_attention as tl_la

    return tl_la


# ----------------------------------------------------------------------------------------------
# shapes

SHAPES = [  # (N, T, H, D, E)
    (2, 1, 1, 16, 16),
    (2, 7, 2, 5, 5),
    (1, 33, 2, 16, 5),
    (2, 33, 1, 5, 16),
]


# ----------------------------------------------------------------------------------------------
# CPU (interpreter) or GPU: small shapes

def test_backend_registration():
    assert {"cuda", "triton"} <= implemented_backends(OP_NAME)


@pytest.mark.parametrize("masked", [False, True], ids=["published", "masked"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_triton_forward_and_grads(shape, dtype, masked):
    q, k, v, mask = make_inputs(*shape, dtype=dtype, masked=masked, requires_grad=True)
    check_forward_backward(q, k, v, mask, TOL[dtype])


@pytest.mark.parametrize("masked", [False, True], ids=["published", "masked"])
def test_triton_non_contiguous_inputs(masked):
    N, T, H, D, E = 2, 19, 2, 5, 7
    q = torch.randn(N, H, T, D, dtype=torch.float64, device=DEVICE).transpose(1, 2).requires_grad_(True)
    k = torch.randn(N, H, T, D, dtype=torch.float64, device=DEVICE).transpose(1, 2).requires_grad_(True)
    v = torch.randn(N, T, H, 2 * E, dtype=torch.float64, device=DEVICE)[..., ::2].requires_grad_(True)
    mask = (torch.rand(N, 2 * T, device=DEVICE) < 0.7)[:, ::2] if masked else None
    assert not q.is_contiguous() and not v.is_contiguous()
    if masked:
        assert not mask.is_contiguous()
    check_forward_backward(q, k, v, mask, 1e-10)


@pytest.mark.parametrize("masked", [False, True], ids=["published", "masked"])
def test_triton_state_outputs(masked):
    tl_la = _tl()
    q, k, v, mask = make_inputs(2, 33, 2, 5, 7, masked=masked)
    out, kv_state, key_sum = tl_la.linear_attention_fwd(q, k, v, mask, EPS)
    kv_ref, ks_ref = state_reference(k, v, mask)
    assert kv_state.shape == (2, 2, 5, 7) and key_sum.shape == (2, 2, 5)
    assert kv_state.dtype == key_sum.dtype == torch.float64
    assert rel_err(kv_state, kv_ref) <= 1e-12 and rel_err(key_sum, ks_ref) <= 1e-12
    # fp32 inputs keep an fp32 state
    _, kv32, ks32 = tl_la.linear_attention_fwd(q.float(), k.float(), v.float(), mask, EPS)
    assert kv32.dtype == ks32.dtype == torch.float32
    assert rel_err(kv32, kv_ref) <= 1e-6 and rel_err(ks32, ks_ref) <= 1e-6
    # fp16 inputs keep an fp32 state too (accumulated in fp32: fp32 error on the fp16-rounded inputs)
    q16, k16, v16 = (t.half() for t in (q, k, v))
    _, kv16, ks16 = tl_la.linear_attention_fwd(q16, k16, v16, mask, EPS)
    kv16_ref, ks16_ref = state_reference(k16.double(), v16.double(), mask)
    assert kv16.dtype == ks16.dtype == torch.float32
    assert rel_err(kv16, kv16_ref) <= 1e-6 and rel_err(ks16, ks16_ref) <= 1e-6


def test_triton_fp16():
    """fp16 inputs (fp32 state): within 2x the error of the fp16 PyTorch reference (bf16: GPU only,
    the interpreter does not emulate it)."""
    q, k, v, mask = make_inputs(2, 33, 2, 16, 16, dtype=torch.float16, masked=True, requires_grad=True)
    grad_out = torch.randn(2, 33, 2, 16, dtype=torch.float64, device=DEVICE)
    ref, ref_grads = reference_grads(q, k, v, mask, grad_out)
    half_ref, half_grads = reference_grads(q, k, v, mask, grad_out, dtype=torch.float16)
    out = linear_attention(q, k, v, mask, EPS, backend="triton")
    assert out.dtype == torch.float16
    assert rel_err(out, ref) <= 2 * rel_err(half_ref, ref) + 1e-4
    grads = torch.autograd.grad(out, (q, k, v), grad_out.half())
    for name, g, r, rh in zip("qkv", grads, ref_grads, half_grads):
        assert g.dtype == torch.float16, name
        assert rel_err(g, r) <= 2 * rel_err(rh, r) + 1e-4, name


def test_triton_state_outputs_are_not_differentiable():
    q, k, v, _ = make_inputs(1, 7, 2, 3, 4, requires_grad=True)
    out, kv_state, key_sum = _tl().linear_attention_fwd(q, k, v, None, EPS)
    assert out.requires_grad and not kv_state.requires_grad and not key_sum.requires_grad


@pytest.mark.parametrize("masked", [False, True], ids=["published", "masked"])
def test_triton_poisoned_buffers_are_all_written(monkeypatch, masked):
    """Every buffer starts as NaN (outputs, state, workspace): nothing unwritten may leak out."""
    monkeypatch.setattr(_tl(), "POISON_OUTPUTS", True)
    q, k, v, mask = make_inputs(2, 33, 2, 5, 16, dtype=torch.float32, masked=masked, requires_grad=True)
    check_forward_backward(q, k, v, mask, 1e-5)
    out, kv_state, key_sum = _tl().linear_attention_fwd(q.detach(), k.detach(), v.detach(), mask, EPS)
    assert torch.isfinite(kv_state).all() and torch.isfinite(key_sum).all()


def test_triton_deterministic():
    tl_la = _tl()
    q, k, v, mask = make_inputs(2, 33, 2, 16, 16, dtype=torch.float32, masked=True)
    a = tl_la.linear_attention_fwd(q, k, v, mask, EPS)
    b = tl_la.linear_attention_fwd(q, k, v, mask, EPS)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    g = torch.randn_like(a[0])
    ga = tl_la.linear_attention_bwd(g, q, k, v, mask, a[1], a[2], EPS)
    gb = tl_la.linear_attention_bwd(g, q, k, v, mask, a[1], a[2], EPS)
    assert all(torch.equal(x, y) for x, y in zip(ga, gb))


def test_triton_empty_sequence():
    q, k, v, _ = make_inputs(2, 0, 3, 4, 5, dtype=torch.float32)
    out, kv_state, key_sum = _tl().linear_attention_fwd(q, k, v, None, EPS)
    assert out.shape == (2, 0, 3, 5) and kv_state.shape == (2, 3, 4, 5) and key_sum.shape == (2, 3, 4)
    assert not kv_state.any() and not key_sum.any()


def test_triton_gradcheck():
    q, k, v, mask = make_inputs(1, 3, 1, 2, 2, masked=True, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: linear_attention(a, b, c, mask, EPS, backend="triton"),
                                    (q, k, v))


def test_triton_block_sizes():
    block_sizes = _tl().block_sizes
    assert block_sizes(1, 5, 3) == (16, 16, 16)
    assert block_sizes(6000, 16, 16) == (128, 16, 16)
    assert block_sizes(6000, 64, 64) == (64, 64, 64)
    assert block_sizes(33, 17, 64) == (64, 32, 64)


# ----------------------------------------------------------------------------------------------
# GPU

@pytest.mark.gpu
@pytest.mark.parametrize("masked", [False, True], ids=["published", "masked"])
def test_triton_gpu_fp32_parity(masked):
    N, T, H, D, E = 8, 6000, 4, 16, 16
    q, k, v, mask = make_inputs(N, T, H, D, E, dtype=torch.float32, device="cuda", masked=masked,
                                requires_grad=True)
    check_forward_backward(q, k, v, mask, 1e-5)


@pytest.mark.gpu
def test_triton_gpu_fp32_large_head_dims():
    q, k, v, mask = make_inputs(3, 4097, 2, 64, 64, dtype=torch.float32, device="cuda", masked=True,
                                requires_grad=True)
    check_forward_backward(q, k, v, mask, 1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(8, 6000, 4, 16, 16), (2, 300, 2, 64, 64)],
                         ids=lambda s: "x".join(map(str, s)))
def test_triton_gpu_bf16_parity(shape):
    N, T, H, D, E = shape
    q, k, v, mask = make_inputs(*shape, dtype=torch.bfloat16, device="cuda", masked=True, requires_grad=True)
    grad_out = torch.randn(N, T, H, E, dtype=torch.float64, device="cuda")
    ref, ref_grads = reference_grads(q, k, v, mask, grad_out)
    bf_ref, bf_grads = reference_grads(q, k, v, mask, grad_out, dtype=torch.bfloat16)
    out = linear_attention(q, k, v, mask, EPS, backend="triton")
    assert out.dtype == torch.bfloat16
    assert rel_err(out, ref) <= 2 * rel_err(bf_ref, ref)
    grads = torch.autograd.grad(out, (q, k, v), grad_out.bfloat16())
    for name, g, r, rb in zip("qkv", grads, ref_grads, bf_grads):
        assert g.dtype == torch.bfloat16, name
        assert rel_err(g, r) <= 2 * rel_err(rb, r), name


@pytest.mark.gpu
def test_triton_gpu_fp64_and_deterministic():
    q, k, v, mask = make_inputs(2, 1000, 4, 16, 16, dtype=torch.float64, device="cuda", masked=True,
                                requires_grad=True)
    check_forward_backward(q, k, v, mask, 1e-10)
    tl_la = _tl()
    q32, k32, v32 = (t.detach().float() for t in (q, k, v))
    a = tl_la.linear_attention_fwd(q32, k32, v32, mask, EPS)
    b = tl_la.linear_attention_fwd(q32, k32, v32, mask, EPS)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.gpu
@pytest.mark.parametrize("masked", [False, True], ids=["published", "masked"])
def test_triton_opcheck(masked):
    """Fake-tensor / schema / autograd registration checks; the interpreter cannot run kernels on
    fake tensors, so CUDA only."""
    tl_la = _tl()
    q, k, v, mask = make_inputs(2, 33, 2, 16, 8, device="cuda", masked=masked, requires_grad=True)
    torch.library.opcheck(tl_la.linear_attention_fwd, (q, k, v, mask, EPS))
    out, kv_state, key_sum = tl_la.linear_attention_fwd(q.detach(), k.detach(), v.detach(), mask, EPS)
    torch.library.opcheck(tl_la.linear_attention_bwd, (torch.randn_like(out), q.detach(), k.detach(),
                                                       v.detach(), mask, kv_state, key_sum, EPS))


@pytest.mark.gpu
def test_triton_torch_compile_matches_eager():
    """torch.compile(fullgraph=True) traces the triton_op (no graph break); CPU interpreter: skipped
    (triton_op under torch.compile fails on CPU: docs/architecture.md#triton-interpreter)."""
    assert_attention_compiles(
        lambda q, k, v, mask: linear_attention(q, k, v, mask, EPS, backend="triton"), "cuda")
