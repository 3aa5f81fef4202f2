"""Parity of the fused backends of trgnet_fast.ops.adaptive_graph_conv, each test parametrised over the op's
``OpSpec.backends`` (``trgnet_fast/ops/adaptive_graph_conv/spec.py``):

* ``cuda``: the native op ``torch.ops.trgnet.adaptive_graph_conv``, its C++ kernels on CPU tensors (the CUDA
  kernels in the ``gpu`` tests);
* ``triton``: ``torch.ops.trgnet_triton.adaptive_graph_conv``, on the GPU or in Triton's CPU interpreter
  (``TRITON_INTERPRET=1``, set by tests/conftest.py; slow: small shapes).

Forward and the gradients of x, p, q, beta, channel_graph and joint_graph against the float64 reference in fp64,
fp32 and 16 bits; odd shapes (V in {17, 19, 25}, T = 1, C beyond one channel block, several reduction chunks of
64 frames); non-contiguous inputs and a 0-d beta; poisoned (NaN-filled) output memory and determinism; T = 0;
opcheck; gradcheck; torch.compile; the GPU tests (marked ``gpu``) at the PKU-MMD size (C = 64).
Backend-specific: Triton's dot follows ``torch.set_float32_matmul_precision`` (TF32 allowed), the native CUDA
kernels against its C++ kernels. A backend that cannot run here is skipped with the reason.

Tolerances (docs/architecture.md#parity): ||out - ref|| / ||ref|| against float64: fp64 <= 1e-10, fp32 <= 1e-5
(1e-3 with TF32 dots), bf16 / fp16 <= 2x the error of the same-dtype PyTorch reference. Fresh random inputs
every run.

grad_beta is one sum of N*T*V*V terms dF * th of both signs: now and then it nearly cancels, and its
relative error then grows without bound in any finite precision (the fp32 PyTorch reference exceeds
1e-5 in ~1% of draws at small sizes). Its error is measured against max(|ref|, ||dF * th||_2), the
size the sum has without cancellation (``gradient_error_floors``).
"""
from __future__ import annotations

import pytest
import torch

from adaptive_cases import NAMES, errors, fused, grad_errors, make_inputs, reference64
from op_checks import (BACKEND_DEVICE, FP32_TOL, INTERPRETED, TF32_ENGAGED, TOL, assert_16bit_parity,
                       assert_bitwise_deterministic, assert_compiled_matches_eager, assert_fp64_or_fp16_parity,
                       backends_and_devices, float32_matmul_precision, fused_backends, opcheck_raw_ops,
                       poison_allocator, rel_err, shape_id)
from op_checks import run_with_grads as run
from trgnet_fast.ops.adaptive_graph_conv import OP_NAME, adaptive_graph_conv
from trgnet_fast.ops.adaptive_graph_conv.reference import adaptive_graph_conv_reference, gradient_error_floors
from trgnet_fast.ops.registry import OPS

SPEC = OPS[OP_NAME]


SHAPES = [  # N, C, T, V
    (2, 5, 7, 17),
    (1, 3, 9, 19),
    (2, 4, 1, 25),
    (1, 17, 6, 25),  # C > one channel block, not a multiple of it
    (3, 6, 11, 25),
    (1, 2, 67, 17),  # several reduction chunks of 64 frames
]


# ----------------------------------------------------------------------------------------------
# every fused backend, on CPU tensors (native C++ kernels; Triton's interpreter) or on the GPU (Triton)

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_forward_and_grads(backend, shape, dtype):
    inputs = make_inputs(*shape, dtype=dtype, device=BACKEND_DEVICE[backend])
    grad_out = torch.randn(*shape, dtype=torch.float64, device=BACKEND_DEVICE[backend])
    out, errs = errors(backend, inputs, grad_out)
    assert out.dtype == dtype and out.shape == shape
    assert all(e <= TOL[dtype] for e in errs.values()), errs


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_non_contiguous_inputs_and_scalar_beta(backend):
    N, C, T, V = 2, 3, 7, 17
    device = BACKEND_DEVICE[backend]
    _, p, q, beta, G, J = make_inputs(N, C, T, V, device=device)
    x = torch.randn(N, C, V, T, dtype=torch.float64, device=device).transpose(2, 3)
    p = p.transpose(1, 2).contiguous().transpose(1, 2)
    G = G.transpose(2, 3).contiguous().transpose(2, 3)
    assert not (x.is_contiguous() or p.is_contiguous() or G.is_contiguous())
    inputs = [x, p, q, beta.reshape(()), G, J]
    grad_out = torch.randn(N, C, V, T, dtype=torch.float64, device=device).transpose(2, 3)
    _, errs = errors(backend, inputs, grad_out)
    assert all(e <= 1e-10 for e in errs.values()), errs


@pytest.mark.parametrize("shape, slack", [((1, 5, 4, 17), 1e-4), ((2, 4, 9, 25), 1e-3)], ids=["1x5x4x17", "2x4x9x25"])
@pytest.mark.parametrize("backend, dtype", fused_backends(SPEC, (torch.float16, torch.bfloat16)))
def test_16bit_close_to_reference(backend, dtype, shape, slack):
    """16-bit output and gradients within 2x the error of the same-dtype PyTorch reference
    (docs/architecture.md#parity; + ``slack`` for these small shapes)."""
    device = BACKEND_DEVICE[backend]
    inputs = make_inputs(*shape, dtype=dtype, device=device)
    # the cotangent exactly representable in `dtype`: the float64 reference sees what the runs see
    grad_out = torch.randn(*shape, dtype=torch.float64, device=device).to(dtype).double()
    assert_16bit_parity(fused(backend), adaptive_graph_conv_reference, reference64, grad_errors, inputs, grad_out,
                        slack=slack)


# the interpreter runs ~0.1 s per program: a small shape for Triton there
DETERMINISM_SHAPE = {"cuda": (2, 5, 150, 25), "triton": (2, 6, 9, 19) if INTERPRETED else (2, 5, 150, 25)}


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_writes_every_element_and_is_deterministic(ops, backend):
    """Poisoned (NaN) output memory never leaks through; two runs of the raw forward and backward ops agree bit
    for bit."""
    device = BACKEND_DEVICE[backend]
    inputs = make_inputs(*DETERMINISM_SHAPE[backend], dtype=torch.float32, device=device)
    poison_allocator((1 << 16,), device=device)
    assert_bitwise_deterministic(ops.adaptive_graph_conv, ops.adaptive_graph_conv_backward, inputs, inputs)


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_empty_time(ops, backend):
    inputs = make_inputs(2, 3, 0, 17, dtype=torch.float32, device=BACKEND_DEVICE[backend])
    y = ops.adaptive_graph_conv(*inputs)
    assert y.shape == (2, 3, 0, 17)
    grads = ops.adaptive_graph_conv_backward(torch.empty_like(y), *inputs)
    for g, t in zip(grads, inputs):
        assert g.shape == t.shape and not g.any()


OPCHECK_SHAPE = {"cpu": (2, 3, 5, 17), "cuda": (2, 9, 33, 17)}


@pytest.mark.parametrize("backend, device", backends_and_devices(SPEC))
def test_opcheck(ops, backend, device):
    """Schema, fake-tensor and autograd registration checks of the forward and backward ops, every input requiring
    grad (Triton on the GPU: schema and fake tensors)."""
    def backward_calls(inputs):
        return [(torch.randn(*OPCHECK_SHAPE[device], dtype=torch.float64, device=device), *inputs)]

    opcheck_raw_ops(ops.adaptive_graph_conv, ops.adaptive_graph_conv_backward,
                    make_inputs(*OPCHECK_SHAPE[device], device=device), range(len(NAMES)), backward_calls, backend,
                    device, triton_gpu_utils=("test_schema", "test_faketensor"))


# (shape, fast_mode): the interpreter runs ~0.1 s per program, gradcheck a forward per input element
GRADCHECK = {"cuda": ((2, 2, 3, 5), False), "triton": ((1, 2, 2, 5), True)}


@pytest.mark.parametrize("backend", fused_backends(SPEC))
def test_gradcheck(backend):
    shape, fast_mode = GRADCHECK[backend]
    inputs = [t.requires_grad_(True) for t in make_inputs(*shape, device=BACKEND_DEVICE[backend])]
    assert torch.autograd.gradcheck(fused(backend), tuple(inputs), fast_mode=fast_mode)


class Aggregate(torch.nn.Module):
    """The op with learnable beta, J and p, q as learnable weighted channel sums of x (elementwise + reduction: no
    TF32 conv whose algorithm could differ between eager and compiled)."""

    def __init__(self, backend, device, C=64, V=25):
        super().__init__()
        self.backend = backend
        _, _, _, beta, _, J = make_inputs(1, C, 1, V, dtype=torch.float32, device=device)
        self.beta, self.J = torch.nn.Parameter(beta), torch.nn.Parameter(J)
        self.wp = torch.nn.Parameter(torch.randn(C, device=device) / C ** 0.5)
        self.wq = torch.nn.Parameter(torch.randn(C, device=device) / C ** 0.5)

    def forward(self, x, G):
        p = (x * self.wp[:, None, None]).sum(1)  # (N, T, V)
        q = (x * self.wq[:, None, None]).sum(1)
        return adaptive_graph_conv(x, p, q, self.beta, G, self.J, backend=self.backend)


class Core(torch.nn.Module):
    """ReLU of the op with learnable beta, channel graph and joint graph."""

    def __init__(self, backend, N, C, T, V, device):
        super().__init__()
        self.backend = backend
        _, _, _, beta, G, J = make_inputs(N, C, T, V, dtype=torch.float32, device=device)
        self.beta, self.G, self.J = (torch.nn.Parameter(t) for t in (beta, G, J))

    def forward(self, x, p, q):
        return torch.relu(adaptive_graph_conv(x, p, q, self.beta, self.G, self.J, backend=self.backend))


COMPILE_SHAPE = {"cpu": (2, 16, 9, 19), "cuda": (2, 64, 50, 25)}  # N, C, T, V
# triton_op under torch.compile fails on Triton's CPU interpreter (docs/architecture.md#triton-interpreter): the
# Triton backend compiles on the GPU only
COMPILE_CASES = backends_and_devices(SPEC, exclude={("triton", "cpu")})


@pytest.mark.parametrize("backend, device", COMPILE_CASES)
def test_torch_compile_matches_eager(backend, device):
    """torch.compile(fullgraph=True) traces the fused op (fake kernel + autograd, no graph break): p and q
    computed from x in the graph, gradients of x and the parameters."""
    N, C, T, V = COMPILE_SHAPE[device]
    x, _, _, _, G, _ = make_inputs(N, C, T, V, dtype=torch.float32, device=device)
    assert_compiled_matches_eager(Aggregate(backend, device, C=C, V=V), (x.requires_grad_(True), G), 1e-5)


@pytest.mark.parametrize("backend, device", COMPILE_CASES)
def test_torch_compile_of_learnable_graphs_matches_eager(backend, device):
    """As above with beta, G and J learnable and x, p, q given: the gradients of the parameters within 1e-6."""
    N, C, T, V = COMPILE_SHAPE[device]
    x, p, q = make_inputs(N, C, T, V, dtype=torch.float32, device=device)[:3]
    assert_compiled_matches_eager(Core(backend, N, C, T, V, device), (x, p, q), 1e-6)


# ----------------------------------------------------------------------------------------------
# GPU: CUDA kernels of the native op, Triton compiled

PKU = (8, 64, 6000, 25)
GPU_SHAPES = [PKU, (3, 64, 63, 17), (2, 16, 7, 19), (2, 64, 1, 25), (4, 48, 300, 19), (2, 5, 33, 25),
              (1, 4, 20, 64)]  # V = 64 (largest): smaller tiles


@pytest.mark.gpu
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=shape_id)
@pytest.mark.parametrize("backend", fused_backends(SPEC, device="cuda"))
def test_gpu_fp32_parity(backend, shape):
    """IEEE fp32 dots ("highest"): output and gradients finite and within 1e-5, the second call's outputs in
    poisoned memory."""
    N, C, T, V = shape
    inputs = make_inputs(*shape, dtype=torch.float32, device="cuda")
    grad_out = torch.randn(*shape, dtype=torch.float64, device="cuda")
    ref_out, ref_grads = reference64(inputs, grad_out)
    with float32_matmul_precision("highest"):
        for _ in range(2):  # second call: outputs in poisoned memory
            poison_allocator(shape, shape, (N, T, V), (N, T, V), (N, C, V, V), (V, V), (1,), (1 << 22,))
            out, grads = run(fused(backend), inputs, grad_out)
            assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
            errs = [rel_err(out, ref_out), *grad_errors(grads, ref_grads, inputs, grad_out).values()]
            assert max(errs) <= FP32_TOL["highest"], dict(zip(("out",) + NAMES, errs))


@pytest.mark.gpu
@pytest.mark.parametrize("shape", GPU_SHAPES[:4], ids=shape_id)
@pytest.mark.parametrize("backend", fused_backends(SPEC, device="cuda", only=("triton",)))
def test_triton_gpu_tf32_parity(backend, shape):
    """With TF32 allowed ("high") the Triton dot dF = dY^T X runs on the tensor cores: within 1e-3, and really
    TF32 (it feeds dp and dq)."""
    inputs = make_inputs(*shape, dtype=torch.float32, device="cuda")
    grad_out = torch.randn(shape, dtype=torch.float64, device="cuda")
    with float32_matmul_precision("high"):
        _, errs = errors(backend, inputs, grad_out)
    assert max(errs.values()) <= FP32_TOL["high"], errs
    assert max(errs["p"], errs["q"]) > TF32_ENGAGED, errs


@pytest.mark.gpu
@pytest.mark.parametrize("backend", fused_backends(SPEC, device="cuda"))
def test_gpu_bf16_parity(backend):
    N, C, T, V = PKU
    inputs = make_inputs(*PKU, dtype=torch.bfloat16, device="cuda")
    # the cotangent exactly representable in bf16: the float64 reference sees what the runs see
    grad_out = torch.randn(*PKU, dtype=torch.float64, device="cuda").bfloat16().double()
    assert_16bit_parity(fused(backend), adaptive_graph_conv_reference, reference64, grad_errors, inputs, grad_out,
                        poison=lambda: poison_allocator(PKU, PKU, (N, C, V, V), dtype=torch.bfloat16))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=["fp64", "fp16"])
@pytest.mark.parametrize("backend", fused_backends(SPEC, device="cuda"))
def test_gpu_other_dtypes(backend, dtype):
    shape = (2, 64, 129, 25)
    inputs = make_inputs(*shape, dtype=dtype, device="cuda")
    grad_out = torch.randn(*shape, dtype=torch.float64, device="cuda")
    assert_fp64_or_fp16_parity(lambda i, g: errors(backend, i, g), adaptive_graph_conv_reference, reference64,
                               inputs, grad_out)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", fused_backends(SPEC, device="cuda"))
def test_gpu_deterministic(ops, backend):
    inputs = make_inputs(4, 64, 3001, 25, dtype=torch.float32, device="cuda")
    assert_bitwise_deterministic(ops.adaptive_graph_conv, ops.adaptive_graph_conv_backward, inputs, inputs)


@pytest.mark.gpu
def test_cuda_matches_cpu_kernels(native_cuda):
    """The native op's CUDA kernels agree with its C++ kernels (float64), forward and backward."""
    small = make_inputs(2, 9, 37, 19)
    cpu = native_cuda.adaptive_graph_conv(*small)
    gpu = native_cuda.adaptive_graph_conv(*(t.cuda() for t in small))
    assert rel_err(gpu.cpu(), cpu) <= 1e-13
    gs = torch.randn_like(cpu)
    floor = gradient_error_floors(gs, *small)["beta"]
    for name, c, d in zip(NAMES, native_cuda.adaptive_graph_conv_backward(gs, *small),
                          native_cuda.adaptive_graph_conv_backward(gs.cuda(), *(t.cuda() for t in small))):
        assert rel_err(d.cpu(), c, floor if name == "beta" else 0.0) <= 1e-13, name
