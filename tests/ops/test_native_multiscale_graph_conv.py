"""Tests of the native (C++ / CUDA) backend of trgnet_fast.ops.multiscale_graph_conv.

* CPU kernels of the extension (``backend="cuda"`` on CPU tensors, or the raw
  ``torch.ops.trgnet.multiscale_graph_conv``) against the float64 reference: forward and the
  gradients of x, adjacency, weight and bias; fp64 and fp32; odd shapes (V in {17, 19, 25}, T = 1);
  opcheck, gradcheck, argument checks of the raw op, determinism;
* GPU tests (marked ``gpu``): CUDA kernels at the PKU-MMD size in fp32 and bf16, poisoned
  (NaN-filled) allocator memory, determinism, CPU/GPU agreement, torch.compile.

Tolerances (docs/architecture.md#parity): ||out - ref|| / ||ref|| against float64: fp64 <= 1e-10, fp32 <= 1e-5,
bf16 <= 2x the error of the bf16 PyTorch reference. Fresh random inputs every run.
"""
from __future__ import annotations

import pytest
import torch

from graph_conv_cases import (TOL, MultiscaleFront, assert_16bit_parity, assert_fp64_or_fp16_parity,
                              msgc_grad_errors)
from graph_conv_cases import msgc_inputs as make_inputs
from graph_conv_cases import msgc_reference64 as reference64
from op_checks import assert_bitwise_deterministic, assert_compiled_matches_eager, poison_allocator, rel_err
from op_checks import run_with_grads as run
from trgnet_fast.ops.multiscale_graph_conv import multiscale_graph_conv, multiscale_graph_conv_reference

def fused(*args):
    return multiscale_graph_conv(*args, backend="cuda")


def errors(inputs, grad_out, fn=fused):
    ref_out, ref_grads = reference64(inputs, grad_out)
    out, grads = run(fn, inputs, grad_out)
    for name, g, t in zip(("x", "adjacency", "weight", "bias"), grads, inputs):
        assert g.dtype == t.dtype and g.shape == t.shape, name
    return out, {"out": rel_err(out, ref_out), **msgc_grad_errors(grads, ref_grads, inputs, grad_out)}


SHAPES = [  # N, C, T, V, S, O
    (2, 3, 5, 17, 2, 8),
    (1, 4, 9, 19, 13, 8),
    (2, 3, 1, 25, 2, 8),
    (3, 5, 7, 25, 3, 7),
    (1, 2, 67, 17, 1, 3),  # several reduction chunks of 64 frames
]


# ----------------------------------------------------------------------------------------------
# CPU kernels of the extension

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_native_cpu_forward_and_grads(native, shape, dtype):
    inputs = make_inputs(*shape, dtype=dtype)
    N, C, T, V, S, O = shape
    grad_out = torch.randn(N, O, T, V, dtype=torch.float64)
    out, errs = errors(inputs, grad_out)
    assert out.dtype == dtype and out.shape == (N, O, T, V)
    assert all(e <= TOL[dtype] for e in errs.values()), errs


def test_native_cpu_non_contiguous_inputs_and_4d_weight(native):
    N, C, T, V, S, O = 2, 3, 7, 17, 2, 8
    _, a, w, b = make_inputs(N, C, T, V, S, O)
    x = torch.randn(N, C, V, T, dtype=torch.float64).transpose(2, 3)  # the model's (V, T) swap
    assert not x.is_contiguous()
    grad_out = torch.randn(N, O, V, T, dtype=torch.float64).transpose(2, 3)
    ref_out, ref_grads = reference64([x, a, w, b], grad_out)
    out, grads = run(lambda *t: fused(t[0], t[1], t[2][:, :, None, None], t[3]), [x, a, w, b], grad_out)
    assert rel_err(out, ref_out) <= 1e-10
    for g, r in zip(grads, ref_grads):
        assert rel_err(g, r) <= 1e-10


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_native_cpu_half_precision(native, dtype):
    shape = (2, 4, 9, 25, 3, 8)
    inputs = make_inputs(*shape, dtype=dtype)
    # the cotangent exactly representable in `dtype`: the float64 reference sees what the runs see
    grad_out = torch.randn(2, 8, 9, 25, dtype=torch.float64).to(dtype).double()
    assert_16bit_parity(fused, multiscale_graph_conv_reference, reference64, msgc_grad_errors, inputs, grad_out,
                        slack=1e-3)


def test_native_cpu_deterministic(native):
    x, a, w, b = make_inputs(2, 5, 150, 25, 3, 16, dtype=torch.float32)
    assert_bitwise_deterministic(native.multiscale_graph_conv, native.multiscale_graph_conv_backward,
                                 (x, a, w, b), (x, a, w))


def test_native_cpu_empty_time(native):
    x, a, w, b = make_inputs(2, 3, 0, 17, 2, 5, dtype=torch.float32)
    y = native.multiscale_graph_conv(x, a, w, b)
    assert y.shape == (2, 5, 0, 17)
    dx, da, dw, db = native.multiscale_graph_conv_backward(torch.empty_like(y), x, a, w)
    assert dx.shape == x.shape and not da.any() and not dw.any() and not db.any()


def test_native_opcheck(native):
    x, a, w, b = (t.requires_grad_(True) for t in make_inputs(2, 3, 5, 17, 2, 4))
    torch.library.opcheck(native.multiscale_graph_conv.default, (x, a, w, b))
    g = torch.randn(2, 4, 5, 17, dtype=torch.float64)
    torch.library.opcheck(native.multiscale_graph_conv_backward.default,
                          (g, x.detach(), a.detach(), w.detach()))


def test_native_gradcheck(native):
    x, a, w, b = (t.requires_grad_(True) for t in make_inputs(2, 2, 3, 5, 2, 3))
    assert torch.autograd.gradcheck(fused, (x, a, w, b))


def test_native_rejects_bad_inputs(native):
    x, a, w, b = make_inputs(1, 3, 4, 5, 2, 6, dtype=torch.float32)
    op = native.multiscale_graph_conv
    cases = [
        ((x.transpose(2, 3).contiguous().transpose(2, 3), a, w, b), "argument 'x': expected a contiguous"),
        ((x[0], a, w, b), "argument 'x': expected a 4-D tensor"),
        ((x.int(), a.int(), w.int(), b.int()), "argument 'x': expected dtype"),
        ((x, a[:, :4].contiguous(), w, b), "argument 'adjacency': expected shape"),
        ((x, a[:7].contiguous(), w, b), "argument 'adjacency': expected shape"),
        ((x, a.double(), w, b), "argument 'adjacency': expected dtype"),
        ((x, a, w[:, :5].contiguous(), b), "argument 'weight': expected shape"),
        ((x, a, w[:, :, None, None], b), "argument 'weight': expected shape"),
        ((x, a, w.t().contiguous().t(), b), "argument 'weight': expected a contiguous"),
        ((x, a, w, b[:5].contiguous()), "argument 'bias': expected shape"),
        ((x, a, w, b.half()), "argument 'bias': expected dtype"),
    ]
    for args, msg in cases:
        with pytest.raises(RuntimeError, match=msg):
            op(*args)
    bwd = native.multiscale_graph_conv_backward
    g = torch.randn(1, 6, 4, 5)
    cases = [
        ((g[:, :5].contiguous(), x, a, w), "argument 'grad_out': expected shape"),
        ((g.double(), x, a, w), "argument 'grad_out': expected dtype"),
        ((g.transpose(2, 3).contiguous().transpose(2, 3), x, a, w), "argument 'grad_out': expected a contiguous"),
        ((g, x, a, w[:, :5].contiguous()), "argument 'weight': expected shape"),
    ]
    for args, msg in cases:
        with pytest.raises(RuntimeError, match=msg):
            bwd(*args)


# ----------------------------------------------------------------------------------------------
# GPU (CUDA kernels)

PKU = (8, 12, 6000, 25, 13, 64)
GPU_SHAPES = [PKU, (3, 12, 63, 17, 13, 64), (2, 12, 7, 19, 13, 64), (2, 12, 1, 25, 13, 64),
              (4, 6, 300, 19, 13, 64),
              (2, 5, 33, 25, 2, 70),    # C_out > 64: two register blocks of output channels
              (2, 20, 17, 25, 3, 16),   # C > 16: two forward channel chunks
              (1, 3, 40, 64, 2, 8)]     # V = 64 (largest): 4 frames per forward tile


@pytest.mark.gpu
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cuda_fp32_parity(native_cuda, shape):
    inputs = make_inputs(*shape, dtype=torch.float32, device="cuda")
    N, C, T, V, S, O = shape
    grad_out = torch.randn(N, O, T, V, dtype=torch.float64, device="cuda")
    ref_out, ref_grads = reference64(inputs, grad_out)
    for _ in range(2):  # second call: outputs in poisoned memory
        poison_allocator((N, O, T, V), (N, C, T, V), (S * V, V), (O, S * C), (O,), (1 << 22,))
        out, grads = run(fused, inputs, grad_out)
        assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
        errs = [rel_err(out, ref_out)] + [rel_err(g, r) for g, r in zip(grads, ref_grads)]
        assert max(errs) <= 1e-5, errs


@pytest.mark.gpu
def test_cuda_bf16_parity(native_cuda):
    inputs = make_inputs(*PKU, dtype=torch.bfloat16, device="cuda")
    N, C, T, V, S, O = PKU
    # the cotangent exactly representable in bf16: the float64 reference sees what the runs see
    grad_out = torch.randn(N, O, T, V, dtype=torch.float64, device="cuda").bfloat16().double()
    assert_16bit_parity(fused, multiscale_graph_conv_reference, reference64, msgc_grad_errors, inputs, grad_out,
                        poison=lambda: poison_allocator((N, O, T, V), (N, C, T, V), dtype=torch.bfloat16))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=["fp64", "fp16"])
def test_cuda_other_dtypes(native_cuda, dtype):
    shape = (2, 12, 129, 25, 13, 64)
    inputs = make_inputs(*shape, dtype=dtype, device="cuda")
    grad_out = torch.randn(2, 64, 129, 25, dtype=torch.float64, device="cuda")
    assert_fp64_or_fp16_parity(errors, multiscale_graph_conv_reference, reference64, inputs, grad_out)


@pytest.mark.gpu
def test_cuda_deterministic_and_matches_cpu(native_cuda):
    x, a, w, b = make_inputs(4, 12, 3001, 25, 13, 64, dtype=torch.float32, device="cuda")
    assert_bitwise_deterministic(native_cuda.multiscale_graph_conv, native_cuda.multiscale_graph_conv_backward,
                                 (x, a, w, b), (x, a, w))
    small = [t.double() for t in make_inputs(2, 3, 37, 19, 3, 8)]
    cpu = native_cuda.multiscale_graph_conv(*small)
    gpu = native_cuda.multiscale_graph_conv(*(t.cuda() for t in small))
    assert rel_err(gpu.cpu(), cpu) <= 1e-13
    gs = torch.randn_like(cpu)
    for c, d in zip(native_cuda.multiscale_graph_conv_backward(gs, *small[:3]),
                    native_cuda.multiscale_graph_conv_backward(gs.cuda(), *(t.cuda() for t in small[:3]))):
        assert rel_err(d.cpu(), c) <= 1e-13


@pytest.mark.gpu
def test_cuda_opcheck(native_cuda):
    x, a, w, b = (t.requires_grad_(True) for t in make_inputs(2, 3, 33, 17, 2, 8, device="cuda"))
    torch.library.opcheck(native_cuda.multiscale_graph_conv.default, (x, a, w, b))


def _native_multiscale(x, a, w, b):
    return torch.ops.trgnet.multiscale_graph_conv(x.contiguous(), a, w, b)


@pytest.mark.gpu
def test_cuda_torch_compile_matches_eager(native_cuda):
    x = torch.randn(2, 12, 25, 50, device="cuda", requires_grad=True)
    assert_compiled_matches_eager(MultiscaleFront(_native_multiscale, "cuda"), (x,), 1e-6)


def test_cpu_torch_compile_matches_eager(native):
    x = torch.randn(2, 12, 25, 9, requires_grad=True)
    assert_compiled_matches_eager(MultiscaleFront(_native_multiscale, "cpu"), (x,), 1e-6)
