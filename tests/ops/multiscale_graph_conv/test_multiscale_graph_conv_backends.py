"""Parity of the fused backends of trgnet_fast.ops.multiscale_graph_conv, each test parametrised over the op's
``OpSpec.backends`` (``trgnet_fast/ops/multiscale_graph_conv/spec.py``):

* ``cuda``: the native op ``torch.ops.trgnet.multiscale_graph_conv``, its C++ kernels on CPU tensors (the CUDA
  kernels in the ``gpu`` tests);
* ``triton``: ``torch.ops.trgnet_triton.multiscale_graph_conv``, on the GPU or in Triton's CPU interpreter
  (``TRITON_INTERPRET=1``, set by tests/conftest.py; slow: small shapes).

Forward and the gradients of x, adjacency, weight and bias against the float64 reference in fp64, fp32 and 16
bits; odd shapes (V in {17, 19, 25}, T = 1, several reduction chunks of 64 frames); non-contiguous x and
grad_out, the 4-D conv weight; poisoned (NaN-filled) output memory and determinism; T = 0; opcheck; gradcheck;
torch.compile of the model's front end; the GPU tests (marked ``gpu``) at the PKU-MMD size. Backend-specific:
Triton's fp32 dots follow ``torch.set_float32_matmul_precision`` (TF32 allowed), the native CUDA kernels
against its C++ kernels. A backend that cannot run here is skipped with the reason.

Tolerances (docs/architecture.md#parity): ||out - ref|| / ||ref|| against float64: fp64 <= 1e-10, fp32 <= 1e-5
(1e-3 with TF32 dots), bf16 / fp16 <= 2x the error of the same-dtype PyTorch reference. Fresh random inputs
every run.
"""
from __future__ import annotations

import pytest
import torch

from multiscale_cases import MultiscaleFront, errors, fused, grad_errors, make_inputs, reference64
from op_checks import (BACKEND_DEVICE, FP32_TOL, INTERPRETED, TF32_ENGAGED, TOL, assert_16bit_parity,
                       assert_bitwise_deterministic, assert_compiled_matches_eager, assert_fp64_or_fp16_parity,
                       backends_and_devices, float32_matmul_precision, fused_backends, needs, opcheck_raw_ops,
                       poison_allocator, rel_err, shape_id)
from op_checks import run_with_grads as run
from trgnet_fast.ops.multiscale_graph_conv import OP_NAME, multiscale_graph_conv
from trgnet_fast.ops.multiscale_graph_conv.reference import multiscale_graph_conv_reference
from trgnet_fast.ops.registry import OPS

SPEC = OPS[OP_NAME]


SHAPES = [  # N, C, T, V, S, O
    (2, 3, 5, 17, 2, 8),
    (1, 4, 9, 19, 13, 8),
    (2, 3, 1, 25, 2, 8),
    (1, 4, 9, 25, 13, 8),
    (3, 5, 7, 25, 3, 7),
    (1, 2, 67, 17, 1, 3),  # several reduction chunks of 64 frames
]


# ----------------------------------------------------------------------------------------------
# every fused backend, on CPU tensors (native C++ kernels; Triton's interpreter) or on the GPU (Triton)

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_forward_and_grads(backend, shape, dtype):
    inputs = make_inputs(*shape, dtype=dtype, device=BACKEND_DEVICE[backend])
    N, C, T, V, S, O = shape
    grad_out = torch.randn(N, O, T, V, dtype=torch.float64, device=BACKEND_DEVICE[backend])
    out, errs = errors(backend, inputs, grad_out)
    assert out.dtype == dtype and out.shape == (N, O, T, V)
    assert all(e <= TOL[dtype] for e in errs.values()), errs


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_non_contiguous_inputs_and_4d_weight(backend):
    N, C, T, V, S, O = 2, 3, 7, 17, 2, 8
    device = BACKEND_DEVICE[backend]
    _, a, w, b = make_inputs(N, C, T, V, S, O, device=device)
    x = torch.randn(N, C, V, T, dtype=torch.float64, device=device).transpose(2, 3)  # the model's (V, T) swap
    assert not x.is_contiguous()
    grad_out = torch.randn(N, O, V, T, dtype=torch.float64, device=device).transpose(2, 3)  # non-contiguous too
    ref_out, ref_grads = reference64([x, a, w, b], grad_out)
    for weight_4d in (False, True):  # the (C_out, S*C, 1, 1) conv weight is accepted too
        conv = fused(backend)
        call = (lambda *t: conv(t[0], t[1], t[2][:, :, None, None], t[3])) if weight_4d else conv
        out, grads = run(call, [x, a, w, b], grad_out)
        assert rel_err(out, ref_out) <= 1e-10
        for g, r in zip(grads, ref_grads):
            assert rel_err(g, r) <= 1e-10


@pytest.mark.parametrize("shape, slack", [((1, 3, 5, 17, 2, 8), 1e-4), ((2, 4, 9, 25, 3, 8), 1e-3)],
                         ids=["1x3x5x17x2x8", "2x4x9x25x3x8"])
@pytest.mark.parametrize("backend, dtype", fused_backends(SPEC, (torch.float16, torch.bfloat16)))
def test_16bit_close_to_reference(backend, dtype, shape, slack):
    """16-bit output and gradients within 2x the error of the same-dtype PyTorch reference
    (docs/architecture.md#parity; + ``slack`` for these small shapes)."""
    device = BACKEND_DEVICE[backend]
    inputs = make_inputs(*shape, dtype=dtype, device=device)
    N, C, T, V, S, O = shape
    # the cotangent exactly representable in `dtype`: the float64 reference sees what the runs see
    grad_out = torch.randn(N, O, T, V, dtype=torch.float64, device=device).to(dtype).double()
    assert_16bit_parity(fused(backend), multiscale_graph_conv_reference, reference64, grad_errors, inputs, grad_out,
                        slack=slack)


# the interpreter runs ~0.1 s per program: a small shape for Triton there
DETERMINISM_SHAPE = {"cuda": (2, 5, 150, 25, 3, 16),
                     "triton": (2, 3, 9, 19, 2, 8) if INTERPRETED else (2, 5, 150, 25, 3, 16)}


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_writes_every_element_and_is_deterministic(ops, backend):
    """Poisoned (NaN) output memory never leaks through; two runs of the raw forward and backward ops agree bit
    for bit."""
    device = BACKEND_DEVICE[backend]
    x, a, w, b = make_inputs(*DETERMINISM_SHAPE[backend], dtype=torch.float32, device=device)
    poison_allocator((1 << 16,), device=device)
    assert_bitwise_deterministic(ops.multiscale_graph_conv, ops.multiscale_graph_conv_backward, (x, a, w, b),
                                 (x, a, w))


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_empty_time(ops, backend):
    x, a, w, b = make_inputs(2, 3, 0, 17, 2, 5, dtype=torch.float32, device=BACKEND_DEVICE[backend])
    y = ops.multiscale_graph_conv(x, a, w, b)
    assert y.shape == (2, 5, 0, 17)
    dx, da, dw, db = ops.multiscale_graph_conv_backward(torch.empty_like(y), x, a, w)
    assert dx.shape == x.shape and not da.any() and not dw.any() and not db.any()


OPCHECK_SHAPE = {"cpu": (2, 3, 5, 17, 2, 4), "cuda": (2, 3, 33, 17, 2, 8)}


@pytest.mark.parametrize("backend, device", backends_and_devices(SPEC))
def test_opcheck(ops, backend, device):
    """Schema, fake-tensor and autograd registration checks of the forward op (x, adjacency, weight and bias
    requiring grad) and the backward op (Triton on the GPU: schema and fake tensors)."""
    N, C, T, V, S, O = OPCHECK_SHAPE[device]

    def backward_calls(inputs):
        x, a, w, _ = inputs
        return [(torch.randn(N, O, T, V, dtype=torch.float64, device=device), x, a, w)]

    opcheck_raw_ops(ops.multiscale_graph_conv, ops.multiscale_graph_conv_backward,
                    make_inputs(*OPCHECK_SHAPE[device], device=device), range(4), backward_calls, backend, device,
                    triton_gpu_utils=("test_schema", "test_faketensor"))


# (shape, fast_mode): the interpreter runs ~0.1 s per program, gradcheck a forward per input element
GRADCHECK = {"cuda": ((2, 2, 3, 5, 2, 3), False), "triton": ((1, 2, 2, 5, 2, 4), True)}


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_gradcheck(backend):
    shape, fast_mode = GRADCHECK[backend]
    x, a, w, b = (t.requires_grad_(True) for t in make_inputs(*shape, device=BACKEND_DEVICE[backend]))
    assert torch.autograd.gradcheck(fused(backend), (x, a, w, b), fast_mode=fast_mode)


# triton_op under torch.compile fails on Triton's CPU interpreter (docs/architecture.md#triton-interpreter): the
# Triton backend compiles on the GPU only
@pytest.mark.parametrize("backend, device", backends_and_devices(SPEC, exclude={("triton", "cpu")}))
def test_torch_compile_matches_eager(backend, device):
    """torch.compile(fullgraph=True) of the model's SP front end traces the fused op and matches eager."""
    x = torch.randn(2, 12, 25, 9 if device == "cpu" else 50, device=device, requires_grad=True)
    model = MultiscaleFront(lambda x, a, w, b: multiscale_graph_conv(x, a, w, b, backend=backend), device)
    assert_compiled_matches_eager(model, (x,), 1e-6)


# ----------------------------------------------------------------------------------------------
# Triton only: the precision of its fp32 dots

@needs("triton")
def test_dot_precision_follows_torch_float32_matmul_precision():
    from trgnet_fast.ops._precision import dot_precision

    with float32_matmul_precision("highest"):
        assert dot_precision(torch.float32) == "ieee"
    for setting in ("high", "medium"):
        with float32_matmul_precision(setting):
            assert dot_precision(torch.float32) == "tf32"
            assert dot_precision(torch.float64) == "ieee"
            assert dot_precision(torch.bfloat16) == "ieee"  # 16-bit dots use the tensor cores anyway


@needs("triton")
def test_triton_runs_with_tf32_allowed():
    # the interpreter computes "tf32" dots in fp32, so on CPU this checks the launch path, not the rounding
    device = BACKEND_DEVICE["triton"]
    inputs = make_inputs(1, 4, 9, 19, 13, 8, dtype=torch.float32, device=device)
    grad_out = torch.randn(1, 8, 9, 19, dtype=torch.float64, device=device)
    ref_out, ref_grads = reference64(inputs, grad_out)
    with float32_matmul_precision("high"):
        out, grads = run(fused("triton"), inputs, grad_out)
    errs = [rel_err(out, ref_out)] + [rel_err(g, r) for g, r in zip(grads, ref_grads)]
    assert max(errs) <= FP32_TOL["high"], errs


# ----------------------------------------------------------------------------------------------
# GPU: CUDA kernels of the native op, Triton compiled

PKU = (8, 12, 6000, 25, 13, 64)
GPU_SHAPES = [PKU, (3, 12, 63, 17, 13, 64), (2, 12, 7, 19, 13, 64), (2, 12, 1, 25, 13, 64),
              (4, 6, 300, 19, 13, 64),
              (2, 5, 33, 25, 2, 70),    # C_out > 64: two register blocks of output channels
              (2, 20, 17, 25, 3, 16),   # C > 16: two forward channel chunks
              (1, 3, 40, 64, 2, 8)]     # V = 64 (largest): 4 frames per forward tile


@pytest.mark.gpu
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=shape_id)
@pytest.mark.parametrize("backend", fused_backends(SPEC, device="cuda"))
def test_gpu_fp32_parity(backend, shape):
    """IEEE fp32 dots ("highest"): output and gradients finite and within 1e-5, the second call's outputs in
    poisoned memory."""
    inputs = make_inputs(*shape, dtype=torch.float32, device="cuda")
    N, C, T, V, S, O = shape
    grad_out = torch.randn(N, O, T, V, dtype=torch.float64, device="cuda")
    ref_out, ref_grads = reference64(inputs, grad_out)
    with float32_matmul_precision("highest"):
        for _ in range(2):  # second call: outputs in poisoned memory
            poison_allocator((N, O, T, V), (N, C, T, V), (S * V, V), (O, S * C), (O,), (1 << 22,))
            out, grads = run(fused(backend), inputs, grad_out)
            assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
            errs = [rel_err(out, ref_out)] + [rel_err(g, r) for g, r in zip(grads, ref_grads)]
            assert max(errs) <= FP32_TOL["highest"], errs


@pytest.mark.gpu
@pytest.mark.parametrize("shape", GPU_SHAPES[:4], ids=shape_id)
@pytest.mark.parametrize("backend", fused_backends(SPEC, device="cuda", only=("triton",)))
def test_triton_gpu_tf32_parity(backend, shape):
    """With TF32 allowed ("high") the Triton fp32 dots run on the tensor cores: within 1e-3, and really TF32."""
    inputs = make_inputs(*shape, dtype=torch.float32, device="cuda")
    N, C, T, V, S, O = shape
    grad_out = torch.randn(N, O, T, V, dtype=torch.float64, device="cuda")
    ref_out, ref_grads = reference64(inputs, grad_out)
    with float32_matmul_precision("high"):
        out, grads = run(fused(backend), inputs, grad_out)
    errs = [rel_err(out, ref_out)] + [rel_err(g, r) for g, r in zip(grads, ref_grads)]
    assert max(errs) <= FP32_TOL["high"], errs
    assert errs[0] > TF32_ENGAGED, errs  # the dots really ran in TF32


@pytest.mark.gpu
@pytest.mark.parametrize("backend", fused_backends(SPEC, device="cuda"))
def test_gpu_bf16_parity(backend):
    inputs = make_inputs(*PKU, dtype=torch.bfloat16, device="cuda")
    N, C, T, V, S, O = PKU
    # the cotangent exactly representable in bf16: the float64 reference sees what the runs see
    grad_out = torch.randn(N, O, T, V, dtype=torch.float64, device="cuda").bfloat16().double()
    assert_16bit_parity(fused(backend), multiscale_graph_conv_reference, reference64, grad_errors, inputs, grad_out,
                        poison=lambda: poison_allocator((N, O, T, V), (N, C, T, V), dtype=torch.bfloat16))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=["fp64", "fp16"])
@pytest.mark.parametrize("backend", fused_backends(SPEC, device="cuda"))
def test_gpu_other_dtypes(backend, dtype):
    shape = (2, 12, 129, 25, 13, 64)
    inputs = make_inputs(*shape, dtype=dtype, device="cuda")
    grad_out = torch.randn(2, 64, 129, 25, dtype=torch.float64, device="cuda")
    assert_fp64_or_fp16_parity(lambda i, g: errors(backend, i, g), multiscale_graph_conv_reference, reference64,
                               inputs, grad_out)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", fused_backends(SPEC, device="cuda"))
def test_gpu_deterministic(ops, backend):
    x, a, w, b = make_inputs(4, 12, 3001, 25, 13, 64, dtype=torch.float32, device="cuda")
    assert_bitwise_deterministic(ops.multiscale_graph_conv, ops.multiscale_graph_conv_backward, (x, a, w, b),
                                 (x, a, w))


@pytest.mark.gpu
def test_cuda_matches_cpu_kernels(native_cuda):
    """The native op's CUDA kernels agree with its C++ kernels (float64), forward and backward."""
    small = [t.double() for t in make_inputs(2, 3, 37, 19, 3, 8)]
    cpu = native_cuda.multiscale_graph_conv(*small)
    gpu = native_cuda.multiscale_graph_conv(*(t.cuda() for t in small))
    assert rel_err(gpu.cpu(), cpu) <= 1e-13
    gs = torch.randn_like(cpu)
    for c, d in zip(native_cuda.multiscale_graph_conv_backward(gs, *small[:3]),
                    native_cuda.multiscale_graph_conv_backward(gs.cuda(), *(t.cuda() for t in small[:3]))):
        assert rel_err(d.cpu(), c) <= 1e-13
