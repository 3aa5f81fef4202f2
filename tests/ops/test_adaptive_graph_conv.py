"""Parity tests of trgnet_fast.ops.adaptive_graph_conv.

* the reference against the published CTRGC formulas (docs/model.md#ctrgc) evaluated element by element,
  and against the model's CTRGC module;
* the Triton backend (CPU interpreter here, CUDA on the GPU machine) against the float64 reference:
  forward and the gradients of all six inputs; non-contiguous inputs; poisoned outputs; determinism;
  opcheck; gradcheck;
* input validation (ValueError naming the argument);
* GPU tests (marked ``gpu``): PKU-sized fp32 / bf16 parity, torch.compile of a module using the op.

Tolerances (docs/architecture.md#parity): ||out - ref|| / ||ref|| against float64: fp64 <= 1e-10, fp32 <= 1e-5,
bf16 <= 2x the error of the bf16 PyTorch reference. Fresh random inputs every run. The beta gradient
is measured against the root-sum-square of its terms (``gradient_error_floors``).
"""
from __future__ import annotations

import math

import pytest
import torch

from graph_conv_cases import AGC_NAMES as NAMES
from graph_conv_cases import TOL, assert_16bit_parity
from graph_conv_cases import agc_grad_errors as grad_errors
from graph_conv_cases import agc_inputs as make_inputs
from graph_conv_cases import agc_reference64 as reference64
from op_checks import (FP32_TOL, TF32_ENGAGED, assert_bitwise_deterministic, assert_compiled_matches_eager,
                       float32_matmul_precision, rel_err)
from op_checks import run_with_grads as run
from trgnet_fast.backend import backend_status
from trgnet_fast.ops.adaptive_graph_conv import adaptive_graph_conv, adaptive_graph_conv_reference

TRITON_OK, TRITON_WHY = backend_status("cuda" if torch.cuda.is_available() else "cpu")["triton"]
needs_triton = pytest.mark.skipif(not TRITON_OK, reason=f"triton backend unusable: {TRITON_WHY}")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def triton(*args):
    return adaptive_graph_conv(*args, backend="triton")


def errors(inputs, grad_out, out, grads, ref_out, ref_grads):
    for name, g, t in zip(NAMES, grads, inputs):
        assert g.dtype == t.dtype and g.shape == t.shape, name
    return {"out": rel_err(out, ref_out), **grad_errors(grads, ref_grads, inputs, grad_out)}


SHAPES = [  # N, C, T, V
    (2, 5, 7, 17),
    (1, 3, 9, 19),
    (2, 4, 1, 25),
    (1, 17, 6, 25),  # C > one channel block, not a multiple of it
]


# ----------------------------------------------------------------------------------------------
# reference

def test_reference_matches_published_formula():
    """docs/model.md#ctrgc: G_f[n,t,u,v] = beta tanh(p[n,t,u] - q[n,t,v]) + J[u,v];
    y[n,c,t,u] = sum_v G_f[n,t,u,v] x[n,c,t,v] + sum_v G_c[n,c,u,v] x[n,c,t,v], element by element."""
    N, C, T, V = 2, 3, 4, 5
    x, p, q, beta, G, J = make_inputs(N, C, T, V)
    got = adaptive_graph_conv_reference(x, p, q, beta, G, J)
    b = beta.item()
    for n in range(N):
        for t in range(T):
            for u in range(V):
                frame = [b * math.tanh(p[n, t, u].item() - q[n, t, v].item()) + J[u, v].item() for v in range(V)]
                for c in range(C):
                    y = sum((frame[v] + G[n, c, u, v].item()) * x[n, c, t, v].item() for v in range(V))
                    assert abs(got[n, c, t, u].item() - y) <= 1e-12 * (1 + abs(y))


def test_reference_is_the_model_ctrgc_aggregation():
    """CTRGC(x) == op(conv3(x), mean conv1(x), mean conv2(x), beta, alpha conv4(...) + J, J)."""
    from trgnet_fast.model.spatial import CTRGC

    N, C, T, V = 2, 16, 5, 19
    module = CTRGC(C).double()
    x = torch.randn(N, C, T, V, dtype=torch.float64)
    joint = torch.rand(V, V, dtype=torch.float64)
    alpha, beta = torch.randn(1, dtype=torch.float64), torch.randn(1, dtype=torch.float64)
    a, b, x3 = module.conv1(x), module.conv2(x), module.conv3(x)
    relation = torch.tanh(a.mean(2)[..., :, None] - b.mean(2)[..., None, :])
    channel = alpha * module.conv4(relation) + joint
    expected = adaptive_graph_conv_reference(x3, a.mean(1), b.mean(1), beta, channel, joint)
    assert rel_err(module(x, joint, alpha, beta), expected) <= 1e-13


# ----------------------------------------------------------------------------------------------
# Triton backend

@needs_triton
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_triton_forward_and_grads(shape, dtype):
    inputs = make_inputs(*shape, dtype=dtype, device=DEVICE)
    grad_out = torch.randn(shape, dtype=torch.float64, device=DEVICE)
    ref_out, ref_grads = reference64(inputs, grad_out)
    out, grads = run(triton, inputs, grad_out)
    assert out.dtype == dtype and out.shape == shape
    errs = errors(inputs, grad_out, out, grads, ref_out, ref_grads)
    assert all(e <= TOL[dtype] for e in errs.values()), errs


@needs_triton
def test_triton_non_contiguous_inputs_and_scalar_beta():
    N, C, T, V = 2, 3, 7, 17
    _, p, q, beta, G, J = make_inputs(N, C, T, V, device=DEVICE)
    x = torch.randn(N, C, V, T, dtype=torch.float64, device=DEVICE).transpose(2, 3)
    p = p.transpose(1, 2).contiguous().transpose(1, 2)
    G = G.transpose(2, 3).contiguous().transpose(2, 3)
    assert not (x.is_contiguous() or p.is_contiguous() or G.is_contiguous())
    beta = beta.reshape(())
    grad_out = torch.randn(N, C, V, T, dtype=torch.float64, device=DEVICE).transpose(2, 3)
    inputs = [x, p, q, beta, G, J]
    ref_out, ref_grads = reference64(inputs, grad_out)
    out, grads = run(triton, inputs, grad_out)
    errs = errors(inputs, grad_out, out, grads, ref_out, ref_grads)
    assert all(e <= 1e-10 for e in errs.values()), errs


@needs_triton
def test_triton_writes_every_element_and_is_deterministic():
    """Poisoned (NaN) output memory never leaks through; two runs agree bit for bit."""
    from trgnet_fast.triton import adaptive_graph_conv as kernels

    inputs = make_inputs(2, 6, 9, 19, dtype=torch.float32, device=DEVICE)
    poison = torch.full((1 << 16,), float("nan"), device=DEVICE)
    del poison  # the caching allocator hands the NaN-filled block to the op's outputs
    assert_bitwise_deterministic(kernels.adaptive_graph_conv_triton, kernels.adaptive_graph_conv_backward_triton,
                                 inputs, inputs)


@needs_triton
def test_triton_fp16_close_to_reference():
    """fp16 output and gradients within 2x the error of the fp16 PyTorch reference
    (docs/architecture.md#parity; + 1e-4 for this small shape)."""
    shape = (1, 5, 4, 17)
    inputs = make_inputs(*shape, dtype=torch.float16, device=DEVICE)
    grad_out = torch.randn(shape, dtype=torch.float16, device=DEVICE)
    assert_16bit_parity(triton, adaptive_graph_conv_reference, reference64, grad_errors, inputs, grad_out,
                        slack=1e-4)


@needs_triton
def test_triton_opcheck():
    from trgnet_fast.triton import adaptive_graph_conv  # noqa: F401 (registers the ops)

    inputs = make_inputs(1, 2, 3, 5, device=DEVICE)
    # Under the CPU interpreter a triton_op's fake implementation runs the interpreter on fake
    # tensors and fails (docs/architecture.md#triton-interpreter): schema only there.
    utils = ("test_schema", "test_faketensor") if DEVICE == "cuda" else ("test_schema",)
    torch.library.opcheck(torch.ops.trgnet_triton.adaptive_graph_conv.default, tuple(inputs), test_utils=utils)
    g = torch.randn(1, 2, 3, 5, dtype=torch.float64, device=DEVICE)
    torch.library.opcheck(torch.ops.trgnet_triton.adaptive_graph_conv_backward.default, (g, *inputs),
                          test_utils=utils)


@needs_triton
def test_triton_gradcheck():
    inputs = [t.requires_grad_(True) for t in make_inputs(1, 2, 2, 5, device=DEVICE)]
    assert torch.autograd.gradcheck(triton, tuple(inputs), fast_mode=True)


# ----------------------------------------------------------------------------------------------
# validation

def _bad(case):
    x, p, q, beta, G, J = make_inputs(1, 3, 4, 5)
    return {
        "x_not_tensor": ((x.tolist(), p, q, beta, G, J), "x"),
        "x_3d": ((x[0], p, q, beta, G, J), "x"),
        "x_int": ((x.long(), p, q, beta, G, J), "x"),
        "p_shape": ((x, p[:, :3], q, beta, G, J), "p"),
        "q_shape": ((x, p, q[..., :4], beta, G, J), "q"),
        "beta_shape": ((x, p, q, torch.zeros(2, dtype=x.dtype), G, J), "beta"),
        "channel_graph_shape": ((x, p, q, beta, G[:, :2], J), "channel_graph"),
        "joint_graph_shape": ((x, p, q, beta, G, J[:4]), "joint_graph"),
        "p_dtype": ((x, p.float(), q, beta, G, J), "p"),
        "beta_dtype": ((x, p, q, beta.float(), G, J), "beta"),
        "joint_graph_dtype": ((x, p, q, beta, G, J.float()), "joint_graph"),
        "channel_graph_device": ((x, p, q, beta, G.to("meta"), J), "channel_graph"),
    }[case]


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("case", ["x_not_tensor", "x_3d", "x_int", "p_shape", "q_shape", "beta_shape",
                                  "channel_graph_shape", "joint_graph_shape", "p_dtype", "beta_dtype",
                                  "joint_graph_dtype", "channel_graph_device"])
def test_rejects_bad_inputs(case, backend):
    args, name = _bad(case)
    with pytest.raises(ValueError, match=f"adaptive_graph_conv: {name}:"):
        adaptive_graph_conv(*args, backend=backend)


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend"):
        adaptive_graph_conv(*make_inputs(1, 3, 4, 5), backend="nope")


# ----------------------------------------------------------------------------------------------
# GPU

PKU = (8, 64, 6000, 25)


@pytest.mark.gpu
@needs_triton
@pytest.mark.parametrize("precision", ["highest", "high"])
@pytest.mark.parametrize("shape", [PKU, (3, 64, 63, 17), (2, 16, 7, 19), (2, 64, 1, 25)])
def test_cuda_fp32_parity(shape, precision):
    inputs = make_inputs(*shape, dtype=torch.float32, device="cuda")
    grad_out = torch.randn(shape, dtype=torch.float64, device="cuda")
    ref_out, ref_grads = reference64(inputs, grad_out)
    with float32_matmul_precision(precision):
        out, grads = run(triton, inputs, grad_out)
    errs = errors(inputs, grad_out, out, grads, ref_out, ref_grads)
    assert max(errs.values()) <= FP32_TOL[precision], errs
    if precision == "high":  # dF = dY^T X (the one dot) ran in TF32: it feeds dp and dq
        assert max(errs["p"], errs["q"]) > TF32_ENGAGED, errs


@pytest.mark.gpu
@needs_triton
def test_cuda_bf16_parity():
    inputs = make_inputs(*PKU, dtype=torch.bfloat16, device="cuda")
    grad_out = torch.randn(PKU, dtype=torch.float64, device="cuda")
    assert_16bit_parity(triton, adaptive_graph_conv_reference, reference64, grad_errors, inputs, grad_out)


@pytest.mark.gpu
@needs_triton
def test_cuda_torch_compile_matches_eager():
    class Core(torch.nn.Module):
        def __init__(self):
            super().__init__()
            _, _, _, beta, G, J = make_inputs(2, 64, 50, 25, dtype=torch.float32, device="cuda")
            self.beta, self.G, self.J = (torch.nn.Parameter(t) for t in (beta, G, J))

        def forward(self, x, p, q):
            return torch.relu(adaptive_graph_conv(x, p, q, self.beta, self.G, self.J, backend="triton"))

    x, p, q = make_inputs(2, 64, 50, 25, dtype=torch.float32, device="cuda")[:3]
    assert_compiled_matches_eager(Core(), (x, p, q), 1e-6)
