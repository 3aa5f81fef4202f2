"""Tests of the native (C++ / CUDA) backend of trgnet_fast.ops.adaptive_graph_conv.

* CPU kernels of the extension (``backend="cuda"`` on CPU tensors, or the raw
  ``torch.ops.trgnet.adaptive_graph_conv``) against the float64 reference: forward and the
  gradients of x, p, q, beta, channel_graph and joint_graph; fp64 and fp32; odd shapes
  (V in {17, 19, 25}, T = 1); opcheck, gradcheck, argument checks of the raw op, determinism;
* GPU tests (marked ``gpu``): CUDA kernels at the PKU-MMD size (C = 64) in fp32 and bf16, poisoned
  (NaN-filled) allocator memory, determinism, CPU/GPU agreement, torch.compile.

Tolerances (docs/architecture.md#parity): ||out - ref|| / ||ref|| against float64: fp64 <= 1e-10, fp32 <= 1e-5,
bf16 <= 2x the error of the bf16 PyTorch reference. Fresh random inputs every run.

grad_beta is one sum of N*T*V*V terms dF * th of both signs: now and then it nearly cancels, and its
relative error then grows without bound in any finite precision (the fp32 PyTorch reference exceeds
1e-5 in ~1% of draws at small sizes). Its error is measured against max(|ref|, ||dF * th||_2), the
size the sum has without cancellation (``gradient_error_floors``).
"""
from __future__ import annotations

import pytest
import torch

from graph_conv_cases import AGC_NAMES as NAMES
from graph_conv_cases import TOL, assert_16bit_parity, assert_fp64_or_fp16_parity
from graph_conv_cases import agc_grad_errors as grad_errors
from graph_conv_cases import agc_inputs as make_inputs
from graph_conv_cases import agc_reference64 as reference64
from op_checks import assert_bitwise_deterministic, assert_compiled_matches_eager, poison_allocator, rel_err
from op_checks import run_with_grads as run
from trgnet_fast.ops.adaptive_graph_conv import (
    adaptive_graph_conv,
    adaptive_graph_conv_reference,
    gradient_error_floors,
)


def fused(*args):
    return adaptive_graph_conv(*args, backend="cuda")


def errors(inputs, grad_out, fn=fused):
    ref_out, ref_grads = reference64(inputs, grad_out)
    out, grads = run(fn, inputs, grad_out)
    errs = {"out": rel_err(out, ref_out)}
    for name, g, t in zip(NAMES, grads, inputs):
        assert g.dtype == t.dtype and g.shape == t.shape, name
    errs.update(grad_errors(grads, ref_grads, inputs, grad_out))
    return out, errs


SHAPES = [  # N, C, T, V
    (2, 5, 7, 17),
    (1, 3, 9, 19),
    (2, 4, 1, 25),
    (3, 6, 11, 25),
    (1, 2, 67, 17),  # several reduction chunks of 64 frames
]


# ----------------------------------------------------------------------------------------------
# CPU kernels of the extension

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_native_cpu_forward_and_grads(native, shape, dtype):
    inputs = make_inputs(*shape, dtype=dtype)
    grad_out = torch.randn(*shape, dtype=torch.float64)
    out, errs = errors(inputs, grad_out)
    assert out.dtype == dtype and out.shape == shape
    assert all(e <= TOL[dtype] for e in errs.values()), errs


def test_native_cpu_non_contiguous_inputs_and_scalar_beta(native):
    N, C, T, V = 2, 3, 7, 17
    x, p, q, beta, G, J = make_inputs(N, C, T, V)
    x = torch.randn(N, C, V, T, dtype=torch.float64).transpose(2, 3)
    p = torch.randn(N, V, T, dtype=torch.float64).transpose(1, 2)
    G = G.transpose(2, 3)
    assert not (x.is_contiguous() or p.is_contiguous() or G.is_contiguous())
    inputs = [x, p, q, beta.reshape(()), G, J]
    grad_out = torch.randn(N, C, V, T, dtype=torch.float64).transpose(2, 3)
    out, errs = errors(inputs, grad_out)
    assert all(e <= 1e-10 for e in errs.values()), errs


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_native_cpu_half_precision(native, dtype):
    shape = (2, 4, 9, 25)
    inputs = make_inputs(*shape, dtype=dtype)
    # the cotangent exactly representable in `dtype`: the float64 reference sees what the runs see
    grad_out = torch.randn(*shape, dtype=torch.float64).to(dtype).double()
    assert_16bit_parity(fused, adaptive_graph_conv_reference, reference64, grad_errors, inputs, grad_out, slack=1e-3)


def test_native_cpu_deterministic(native):
    inputs = make_inputs(2, 5, 150, 25, dtype=torch.float32)
    assert_bitwise_deterministic(native.adaptive_graph_conv, native.adaptive_graph_conv_backward, inputs, inputs)


def test_native_cpu_empty_time(native):
    inputs = make_inputs(2, 3, 0, 17, dtype=torch.float32)
    y = native.adaptive_graph_conv(*inputs)
    assert y.shape == (2, 3, 0, 17)
    grads = native.adaptive_graph_conv_backward(torch.empty_like(y), *inputs)
    for g, t in zip(grads, inputs):
        assert g.shape == t.shape and not g.any()


def test_native_opcheck(native):
    inputs = [t.requires_grad_(True) for t in make_inputs(2, 3, 5, 17)]
    torch.library.opcheck(native.adaptive_graph_conv.default, tuple(inputs))
    g = torch.randn(2, 3, 5, 17, dtype=torch.float64)
    torch.library.opcheck(native.adaptive_graph_conv_backward.default, (g, *(t.detach() for t in inputs)))


def test_native_gradcheck(native):
    inputs = [t.requires_grad_(True) for t in make_inputs(2, 2, 3, 5)]
    assert torch.autograd.gradcheck(fused, tuple(inputs))


def test_native_rejects_bad_inputs(native):
    x, p, q, beta, G, J = make_inputs(2, 3, 4, 5, dtype=torch.float32)
    op = native.adaptive_graph_conv
    nc = lambda t: t.transpose(-1, -2).contiguous().transpose(-1, -2)  # noqa: E731 (non-contiguous copy)
    cases = [
        ((nc(x), p, q, beta, G, J), "argument 'x': expected a contiguous"),
        ((x[0], p, q, beta, G, J), "argument 'x': expected a 4-D tensor"),
        ((x.int(), p.int(), q.int(), beta.int(), G.int(), J.int()), "argument 'x': expected dtype"),
        ((x, p[:, :3].contiguous(), q, beta, G, J), "argument 'p': expected shape"),
        ((x, p.double(), q, beta, G, J), "argument 'p': expected dtype"),
        ((x, p, nc(q), beta, G, J), "argument 'q': expected a contiguous"),
        ((x, p, q, beta.reshape(()), G, J), "argument 'beta': expected shape"),
        ((x, p, q, beta.half(), G, J), "argument 'beta': expected dtype"),
        ((x, p, q, beta, G[:, :2].contiguous(), J), "argument 'channel_graph': expected shape"),
        ((x, p, q, beta, nc(G), J), "argument 'channel_graph': expected a contiguous"),
        ((x, p, q, beta, G, J[:4].contiguous()), "argument 'joint_graph': expected shape"),
        ((x, p, q, beta, G, J.bfloat16()), "argument 'joint_graph': expected dtype"),
    ]
    for args, msg in cases:
        with pytest.raises(RuntimeError, match=msg):
            op(*args)
    bwd = native.adaptive_graph_conv_backward
    g = torch.randn_like(x)
    cases = [
        ((g[:, :2].contiguous(), x, p, q, beta, G, J), "argument 'grad_out': expected shape"),
        ((g.double(), x, p, q, beta, G, J), "argument 'grad_out': expected dtype"),
        ((nc(g), x, p, q, beta, G, J), "argument 'grad_out': expected a contiguous"),
        ((g, x, p, q, beta, G, J[:, :4].contiguous()), "argument 'joint_graph': expected shape"),
    ]
    for args, msg in cases:
        with pytest.raises(RuntimeError, match=msg):
            bwd(*args)


# ----------------------------------------------------------------------------------------------
# GPU (CUDA kernels)

PKU = (8, 64, 6000, 25)
GPU_SHAPES = [PKU, (3, 64, 63, 17), (2, 16, 7, 19), (2, 64, 1, 25), (4, 48, 300, 19), (2, 5, 33, 25),
              (1, 4, 20, 64)]  # V = 64 (largest): smaller tiles


@pytest.mark.gpu
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cuda_fp32_parity(native_cuda, shape):
    N, C, T, V = shape
    inputs = make_inputs(*shape, dtype=torch.float32, device="cuda")
    grad_out = torch.randn(*shape, dtype=torch.float64, device="cuda")
    ref_out, ref_grads = reference64(inputs, grad_out)
    for _ in range(2):  # second call: outputs in poisoned memory
        poison_allocator(shape, shape, (N, T, V), (N, T, V), (N, C, V, V), (V, V), (1,), (1 << 22,))
        out, grads = run(fused, inputs, grad_out)
        assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
        errs = [rel_err(out, ref_out), *grad_errors(grads, ref_grads, inputs, grad_out).values()]
        assert max(errs) <= 1e-5, dict(zip(("out",) + NAMES, errs))


@pytest.mark.gpu
def test_cuda_bf16_parity(native_cuda):
    N, C, T, V = PKU
    inputs = make_inputs(*PKU, dtype=torch.bfloat16, device="cuda")
    # the cotangent exactly representable in bf16: the float64 reference sees what the runs see
    grad_out = torch.randn(*PKU, dtype=torch.float64, device="cuda").bfloat16().double()
    assert_16bit_parity(fused, adaptive_graph_conv_reference, reference64, grad_errors, inputs, grad_out,
                        poison=lambda: poison_allocator(PKU, PKU, (N, C, V, V), dtype=torch.bfloat16))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=["fp64", "fp16"])
def test_cuda_other_dtypes(native_cuda, dtype):
    shape = (2, 64, 129, 25)
    inputs = make_inputs(*shape, dtype=dtype, device="cuda")
    grad_out = torch.randn(*shape, dtype=torch.float64, device="cuda")
    assert_fp64_or_fp16_parity(errors, adaptive_graph_conv_reference, reference64, inputs, grad_out)


@pytest.mark.gpu
def test_cuda_deterministic_and_matches_cpu(native_cuda):
    inputs = make_inputs(4, 64, 3001, 25, dtype=torch.float32, device="cuda")
    assert_bitwise_deterministic(native_cuda.adaptive_graph_conv, native_cuda.adaptive_graph_conv_backward,
                                 inputs, inputs)
    small = make_inputs(2, 9, 37, 19)
    cpu = native_cuda.adaptive_graph_conv(*small)
    gpu = native_cuda.adaptive_graph_conv(*(t.cuda() for t in small))
    assert rel_err(gpu.cpu(), cpu) <= 1e-13
    gs = torch.randn_like(cpu)
    floor = gradient_error_floors(gs, *small)["beta"]
    for name, c, d in zip(NAMES, native_cuda.adaptive_graph_conv_backward(gs, *small),
                          native_cuda.adaptive_graph_conv_backward(gs.cuda(), *(t.cuda() for t in small))):
        assert rel_err(d.cpu(), c, floor if name == "beta" else 0.0) <= 1e-13, name


@pytest.mark.gpu
def test_cuda_opcheck(native_cuda):
    inputs = [t.requires_grad_(True) for t in make_inputs(2, 9, 33, 17, device="cuda")]
    torch.library.opcheck(native_cuda.adaptive_graph_conv.default, tuple(inputs))


class Aggregate(torch.nn.Module):
    """The native op with learnable beta, J and p, q as learnable weighted channel sums of x (elementwise +
    reduction: no TF32 conv whose algorithm could differ between eager and compiled)."""

    def __init__(self, device, C=64, V=25):
        super().__init__()
        _, _, _, beta, _, J = make_inputs(1, C, 1, V, dtype=torch.float32, device=device)
        self.beta, self.J = torch.nn.Parameter(beta), torch.nn.Parameter(J)
        self.wp = torch.nn.Parameter(torch.randn(C, device=device) / C ** 0.5)
        self.wq = torch.nn.Parameter(torch.randn(C, device=device) / C ** 0.5)

    def forward(self, x, G):
        p = (x * self.wp[:, None, None]).sum(1)  # (N, T, V)
        q = (x * self.wq[:, None, None]).sum(1)
        return torch.ops.trgnet.adaptive_graph_conv(x, p, q, self.beta, G, self.J)


@pytest.mark.gpu
def test_cuda_torch_compile_matches_eager(native_cuda):
    x, _, _, _, G, _ = make_inputs(2, 64, 50, 25, dtype=torch.float32, device="cuda")
    assert_compiled_matches_eager(Aggregate("cuda"), (x.requires_grad_(True), G), 1e-5)


def test_cpu_torch_compile_matches_eager(native):
    x, _, _, _, G, _ = make_inputs(2, 16, 9, 19, dtype=torch.float32)
    assert_compiled_matches_eager(Aggregate("cpu", C=16, V=19), (x.requires_grad_(True), G), 1e-5)
