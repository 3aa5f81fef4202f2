"""Parity of the fused backends of trgnet_fast.ops.linear_attention, each test parametrised over the op's
``OpSpec.backends`` (``trgnet_fast/ops/linear_attention/spec.py``):

* ``cuda``: the native op ``torch.ops.trgnet.linear_attention``, its C++ kernels on CPU tensors (the CUDA
  kernels in the ``gpu`` tests);
* ``triton``: ``torch.ops.trgnet_triton.linear_attention``, on the GPU or in Triton's CPU interpreter
  (``TRITON_INTERPRET=1``, set by tests/conftest.py; slow, ~2 ms per program: small shapes).

Forward, gradients and the state outputs against the float64 reference in float64, fp32 and 16 bits;
non-contiguous inputs; determinism; T = 0; opcheck; gradcheck; torch.compile; the GPU tests (marked ``gpu``) at
TRG-Net's sizes. Backend-specific: Triton's block sizes and poisoned buffers (``POISON_OUTPUTS``), the native
CUDA kernels against its C++ kernels. A backend that cannot run here is skipped with the reason.

Tolerances (docs/architecture.md#parity): ||out - ref|| / ||ref|| against a float64 reference, fp64 <= 1e-12,
fp32 <= 1e-5, bf16 / fp16 <= 2x the error of the same-dtype PyTorch reference; the gradients against
max(||ref||, ``gradient_error_floors``). Fresh random inputs every run.
"""
from __future__ import annotations

import pytest
import torch

from attention_cases import (EPS, assert_attention_compiles, check_forward_backward, make_inputs, reference_grads,
                             state_reference)
from op_checks import (BACKEND_DEVICE, INTERPRETED, assert_bitwise_deterministic, backends_and_devices, fused_backends,
                       poison_allocator, rel_err)
from trgnet_fast.ops.linear_attention import OP_NAME, linear_attention
from trgnet_fast.ops.linear_attention.reference import linear_attention_reference
from trgnet_fast.ops.registry import OPS

SPEC = OPS[OP_NAME]
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}
MASKED = pytest.mark.parametrize("masked", [False, True], ids=["published", "masked"])
SHAPE_ID = lambda s: "x".join(map(str, s))  # noqa: E731

SHAPES = [  # (N, T, H, D, E): odd T, odd and typical head dims, several frame tiles (T = 300)
    (2, 1, 1, 16, 16),
    (2, 7, 4, 5, 3),
    (2, 7, 2, 5, 5),
    (1, 33, 2, 16, 5),
    (2, 33, 1, 5, 16),
    (1, 63, 4, 16, 16),
    (2, 300, 1, 64, 5),
    (3, 300, 4, 16, 64),
]


def _triton_kernels():
    import trgnet_fast.ops.linear_attention.triton_kernels as kernels

    return kernels


# ----------------------------------------------------------------------------------------------
# every fused backend, on CPU tensors (native C++ kernels; Triton's interpreter) or on the GPU (Triton)

@MASKED
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_ID)
@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_forward_and_grads(ops, backend, shape, dtype, masked):
    q, k, v, mask = make_inputs(*shape, dtype=dtype, device=BACKEND_DEVICE[backend], masked=masked,
                                requires_grad=True)
    check_forward_backward(q, k, v, mask, TOL[dtype], backend)
    # the saved state of the raw op: fp32 (fp64 for float64 inputs), key_sum without eps
    _, kv_state, key_sum = ops.linear_attention(q.detach(), k.detach(), v.detach(), mask, EPS)
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    assert kv_state.dtype == key_sum.dtype == state_dtype
    kv_ref, ks_ref = state_reference(k, v, mask)
    assert rel_err(kv_state, kv_ref) <= TOL[dtype] and rel_err(key_sum, ks_ref) <= TOL[dtype]


@MASKED
@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_state_outputs(ops, backend, masked):
    q, k, v, mask = make_inputs(2, 33, 2, 5, 7, device=BACKEND_DEVICE[backend], masked=masked)
    out, kv_state, key_sum = ops.linear_attention(q, k, v, mask, EPS)
    kv_ref, ks_ref = state_reference(k, v, mask)
    assert kv_state.shape == (2, 2, 5, 7) and key_sum.shape == (2, 2, 5)
    assert kv_state.dtype == key_sum.dtype == torch.float64
    assert rel_err(kv_state, kv_ref) <= 1e-12 and rel_err(key_sum, ks_ref) <= 1e-12
    # fp32 inputs keep an fp32 state
    _, kv32, ks32 = ops.linear_attention(q.float(), k.float(), v.float(), mask, EPS)
    assert kv32.dtype == ks32.dtype == torch.float32
    assert rel_err(kv32, kv_ref) <= 1e-6 and rel_err(ks32, ks_ref) <= 1e-6
    # fp16 inputs keep an fp32 state too (accumulated in fp32: fp32 error on the fp16-rounded inputs)
    q16, k16, v16 = (t.half() for t in (q, k, v))
    _, kv16, ks16 = ops.linear_attention(q16, k16, v16, mask, EPS)
    kv16_ref, ks16_ref = state_reference(k16.double(), v16.double(), mask)
    assert kv16.dtype == ks16.dtype == torch.float32
    assert rel_err(kv16, kv16_ref) <= 1e-6 and rel_err(ks16, ks16_ref) <= 1e-6


@pytest.mark.parametrize("backend, dtype", fused_backends(SPEC, (torch.float16, torch.bfloat16)))
def test_16bit_inputs_keep_an_fp32_state(ops, backend, dtype):
    """The state of 16-bit inputs is fp32 and accumulated in fp32: fp32 error against the float64 state of the
    same (rounded) inputs, where a 16-bit accumulation would be off by ~1e-3."""
    q, k, v, mask = make_inputs(2, 63, 2, 16, 16, dtype=dtype, device=BACKEND_DEVICE[backend], masked=True)
    _, kv_state, key_sum = ops.linear_attention(q, k, v, mask, EPS)
    kv_ref, ks_ref = state_reference(k.double(), v.double(), mask)
    assert kv_state.dtype == key_sum.dtype == torch.float32
    assert rel_err(kv_state, kv_ref) <= 1e-6 and rel_err(key_sum, ks_ref) <= 1e-6


@pytest.mark.parametrize("backend, dtype", fused_backends(SPEC, (torch.float16, torch.bfloat16)))
def test_16bit_forward_and_grads(backend, dtype):
    """16-bit inputs (fp32 state): output and gradients within 2x the error of the same-dtype PyTorch reference
    (+1e-4 for this small shape)."""
    N, T, H, D, E = 2, 63, 4, 16, 16
    device = BACKEND_DEVICE[backend]
    q, k, v, mask = make_inputs(N, T, H, D, E, dtype=dtype, device=device, masked=True, requires_grad=True)
    grad_out = torch.randn(N, T, H, E, dtype=torch.float64, device=device)
    ref, ref_grads = reference_grads(q, k, v, mask, grad_out)
    low_ref, low_grads = reference_grads(q, k, v, mask, grad_out, dtype=dtype)
    out = linear_attention(q, k, v, mask, EPS, backend=backend)
    assert out.dtype == dtype
    assert rel_err(out, ref) <= 2 * rel_err(low_ref, ref) + 1e-4
    grads = torch.autograd.grad(out, (q, k, v), grad_out.to(dtype))
    for name, g, r, low in zip("qkv", grads, ref_grads, low_grads):
        assert g.dtype == dtype, name
        assert rel_err(g, r) <= 2 * rel_err(low, r) + 1e-4, name


@MASKED
@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_non_contiguous_inputs(backend, masked):
    N, T, H, D, E = 2, 63, 4, 5, 7
    device = BACKEND_DEVICE[backend]
    # (N, H, T, D) tensors viewed as (N, T, H, D): non-contiguous, as after a head transpose
    q = torch.randn(N, H, T, D, dtype=torch.float64, device=device).transpose(1, 2).requires_grad_(True)
    k = torch.randn(N, H, T, D, dtype=torch.float64, device=device).transpose(1, 2).requires_grad_(True)
    v = torch.randn(N, T, H, 2 * E, dtype=torch.float64, device=device)[..., ::2].requires_grad_(True)
    mask = (torch.rand(N, 2 * T, device=device) < 0.7)[:, ::2] if masked else None
    assert not q.is_contiguous() and not v.is_contiguous()
    if masked:
        assert not mask.is_contiguous()
    check_forward_backward(q, k, v, mask, 1e-11, backend)


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_state_outputs_are_not_differentiable(ops, backend):
    q, k, v, _ = make_inputs(1, 7, 2, 3, 4, device=BACKEND_DEVICE[backend], requires_grad=True)
    out, kv_state, key_sum = ops.linear_attention(q, k, v, None, EPS)
    assert out.requires_grad and not kv_state.requires_grad and not key_sum.requires_grad


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_deterministic(ops, backend):
    """Forward (output and state) and backward agree bit for bit over two runs."""
    q, k, v, mask = make_inputs(2, 300, 4, 16, 16, dtype=torch.float32, device=BACKEND_DEVICE[backend], masked=True)
    a = ops.linear_attention(q, k, v, mask, EPS)
    b = ops.linear_attention(q, k, v, mask, EPS)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert_bitwise_deterministic(lambda *t: ops.linear_attention(*t, EPS)[0],
                                 lambda g, *t: ops.linear_attention_backward(g, *t, a[1], a[2], EPS),
                                 (q, k, v, mask), (q, k, v, mask))


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_empty_sequence(ops, backend):
    """T = 0: empty output, zero state."""
    q, k, v, _ = make_inputs(2, 0, 3, 4, 5, dtype=torch.float32, device=BACKEND_DEVICE[backend])
    out, kv_state, key_sum = ops.linear_attention(q, k, v, None, EPS)
    assert out.shape == (2, 0, 3, 5) and kv_state.shape == (2, 3, 4, 5) and key_sum.shape == (2, 3, 4)
    assert not kv_state.any() and not key_sum.any()


OPCHECK_SHAPE = {"cpu": (2, 7, 2, 3, 5), "cuda": (2, 33, 2, 16, 8)}


@MASKED
@pytest.mark.parametrize("backend, device", backends_and_devices(SPEC))
def test_opcheck(ops, backend, device, masked):
    """Schema, fake-tensor and autograd registration checks of the forward and backward ops. Under Triton's CPU
    interpreter a triton_op's fake implementation runs the interpreter on fake tensors and fails
    (docs/architecture.md#triton-interpreter): the schema only there."""
    utils = ("test_schema",) if backend == "triton" and device == "cpu" else None
    kwargs = {} if utils is None else {"test_utils": utils}
    q, k, v, mask = make_inputs(*OPCHECK_SHAPE[device], device=device, masked=masked, requires_grad=True)
    torch.library.opcheck(ops.linear_attention.default, (q, k, v, mask, EPS), **kwargs)
    out, kv_state, key_sum = ops.linear_attention(q.detach(), k.detach(), v.detach(), mask, EPS)
    torch.library.opcheck(ops.linear_attention_backward.default,
                          (torch.randn_like(out), q.detach(), k.detach(), v.detach(), mask, kv_state, key_sum, EPS),
                          **kwargs)


# the interpreter runs ~2 ms per program and gradcheck a forward per input element: a tiny shape for Triton there
GRADCHECK_SHAPE = {"cuda": (2, 5, 2, 3, 4), "triton": (1, 3, 1, 2, 2) if INTERPRETED else (2, 5, 2, 3, 4)}


@MASKED
@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_gradcheck(backend, masked):
    q, k, v, mask = make_inputs(*GRADCHECK_SHAPE[backend], device=BACKEND_DEVICE[backend], masked=masked,
                                requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: linear_attention(a, b, c, mask, EPS, backend=backend),
                                    (q, k, v))


# triton_op under torch.compile fails on Triton's CPU interpreter (docs/architecture.md#triton-interpreter): the
# Triton backend compiles on the GPU only
@pytest.mark.parametrize("backend, device", backends_and_devices(SPEC, exclude={("triton", "cpu")}))
def test_torch_compile_matches_eager(backend, device):
    """torch.compile(fullgraph=True) of linear projections around the op traces the fused op (fake kernel +
    autograd registration, no graph break) and matches eager."""
    assert_attention_compiles(lambda q, k, v, mask: linear_attention(q, k, v, mask, EPS, backend=backend), device,
                              T=33 if device == "cpu" else 257)


# ----------------------------------------------------------------------------------------------
# Triton only

def test_triton_block_sizes():
    block_sizes = _triton_kernels().block_sizes
    assert block_sizes(1, 5, 3) == (16, 16, 16)
    assert block_sizes(6000, 16, 16) == (128, 16, 16)
    assert block_sizes(6000, 64, 64) == (64, 64, 64)
    assert block_sizes(33, 17, 64) == (64, 32, 64)


@MASKED
@pytest.mark.parametrize("backend", fused_backends(SPEC, only=("triton",)))
def test_triton_poisoned_buffers_are_all_written(ops, monkeypatch, backend, masked):
    """Every buffer starts as NaN (outputs, state, workspace): nothing unwritten may leak out."""
    monkeypatch.setattr(_triton_kernels(), "POISON_OUTPUTS", True)
    q, k, v, mask = make_inputs(2, 33, 2, 5, 16, dtype=torch.float32, device=BACKEND_DEVICE[backend], masked=masked,
                                requires_grad=True)
    check_forward_backward(q, k, v, mask, 1e-5, backend)
    out, kv_state, key_sum = ops.linear_attention(q.detach(), k.detach(), v.detach(), mask, EPS)
    assert torch.isfinite(kv_state).all() and torch.isfinite(key_sum).all()


# ----------------------------------------------------------------------------------------------
# GPU: CUDA kernels of the native op, Triton compiled

GPU_SHAPES = [
    (8, 6000, 4, 16, 16),  # TRG-Net's heads at the benchmark length
    (8, 4097, 4, 16, 16),  # odd long T (several reduction chunks)
    (3, 4097, 2, 64, 64),  # largest head dims, long T
    (2, 300, 2, 64, 64),   # largest head dims
    (3, 63, 3, 5, 7),      # odd head dims
    (1, 1, 1, 1, 1),
]


@pytest.mark.gpu
@MASKED
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=SHAPE_ID)
@pytest.mark.parametrize("backend", fused_backends(SPEC, device="cuda"))
def test_gpu_fp32_parity(ops, backend, shape, masked):
    """Output and gradients within 1e-5 of float64, in poisoned (NaN-filled) memory; the state as well."""
    N, T, H, D, E = shape
    q, k, v, mask = make_inputs(*shape, dtype=torch.float32, device="cuda", masked=masked, requires_grad=True)
    check_forward_backward(q, k, v, mask, 1e-5, backend, poison=lambda: poison_allocator(
        (N, T, H, E), (N, H, D, E), (N, H, D), (N, T, H, D), (N, T, H, D), (N, T, H, E)))
    _, kv_state, key_sum = ops.linear_attention(q.detach(), k.detach(), v.detach(), mask, EPS)
    kv_ref, ks_ref = state_reference(k, v, mask)
    assert rel_err(kv_state, kv_ref) <= 1e-5 and rel_err(key_sum, ks_ref) <= 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(8, 6000, 4, 16, 16), (8, 4097, 4, 16, 16), (2, 300, 2, 64, 64)], ids=SHAPE_ID)
@pytest.mark.parametrize("backend", fused_backends(SPEC, device="cuda"))
def test_gpu_bf16_parity(backend, shape):
    N, T, H, D, E = shape
    q, k, v, mask = make_inputs(*shape, dtype=torch.bfloat16, device="cuda", masked=True, requires_grad=True)
    grad_out = torch.randn(N, T, H, E, dtype=torch.float64, device="cuda")
    ref, ref_grads = reference_grads(q, k, v, mask, grad_out)
    bf_ref, bf_grads = reference_grads(q, k, v, mask, grad_out, dtype=torch.bfloat16)
    out = linear_attention(q, k, v, mask, EPS, backend=backend)
    assert out.dtype == torch.bfloat16
    assert rel_err(out, ref) <= 2 * rel_err(bf_ref, ref)
    grads = torch.autograd.grad(out, (q, k, v), grad_out.bfloat16())
    for name, g, r, rb in zip("qkv", grads, ref_grads, bf_grads):
        assert g.dtype == torch.bfloat16, name
        assert rel_err(g, r) <= 2 * rel_err(rb, r), name


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=["fp64", "fp16"])
@pytest.mark.parametrize("backend", fused_backends(SPEC, device="cuda"))
def test_gpu_other_dtypes(backend, dtype):
    q, k, v, mask = make_inputs(2, 129, 4, 16, 16, dtype=dtype, device="cuda", masked=True)
    ref = linear_attention_reference(q.double(), k.double(), v.double(), mask, EPS)
    out = linear_attention(q, k, v, mask, EPS, backend=backend)
    if dtype == torch.float64:
        assert rel_err(out, ref) <= 1e-12
    else:
        assert rel_err(out, ref) <= 2 * rel_err(linear_attention_reference(q, k, v, mask, EPS), ref) + 1e-4


@pytest.mark.gpu
@pytest.mark.parametrize("backend", fused_backends(SPEC, device="cuda"))
def test_gpu_fp64_forward_and_grads(backend):
    q, k, v, mask = make_inputs(2, 1000, 4, 16, 16, dtype=torch.float64, device="cuda", masked=True,
                                requires_grad=True)
    check_forward_backward(q, k, v, mask, 1e-10, backend)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", fused_backends(SPEC, device="cuda"))
def test_gpu_deterministic(ops, backend):
    q, k, v, mask = make_inputs(4, 5000, 4, 16, 16, dtype=torch.float32, device="cuda", masked=True)
    a = ops.linear_attention(q, k, v, mask, EPS)
    b = ops.linear_attention(q, k, v, mask, EPS)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    g = torch.randn_like(a[0])
    ga = ops.linear_attention_backward(g, q, k, v, mask, a[1], a[2], EPS)
    gb = ops.linear_attention_backward(g, q, k, v, mask, a[1], a[2], EPS)
    assert all(torch.equal(x, y) for x, y in zip(ga, gb))


@pytest.mark.gpu
def test_cuda_matches_cpu_kernels(native_cuda):
    """The native op's CUDA kernels agree with its C++ kernels (float64)."""
    q, k, v, mask = make_inputs(2, 300, 4, 16, 16, dtype=torch.float64, masked=True)
    cpu = native_cuda.linear_attention(q, k, v, mask, EPS)
    gpu = native_cuda.linear_attention(q.cuda(), k.cuda(), v.cuda(), mask.cuda(), EPS)
    for a, b in zip(cpu, gpu):
        assert rel_err(b.cpu(), a) <= 1e-13
