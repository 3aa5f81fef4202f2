"""Parity tests of trgnet_fast.ops.multiscale_graph_conv.

* the reference against an explicit evaluation of the published formula written here;
* the Triton backend (CPU interpreter here, CUDA on the GPU machine) against the float64
  reference: forward and the gradients of x, adjacency, weight, bias; non-contiguous x;
  poisoned outputs; determinism; opcheck;
* input validation (ValueError naming the argument);
* GPU tests (marked ``gpu``): PKU-sized fp32 / bf16 parity, torch.compile of a module using the op.

Tolerances (docs/architecture.md#parity): ||out - ref|| / ||ref|| against float64: fp64 <= 1e-10, fp32 <= 1e-5,
bf16 <= 2x the error of the bf16 PyTorch reference. Fresh random inputs every run.
"""
from __future__ import annotations

import pytest
import torch

from graph_conv_cases import TOL, MultiscaleFront, assert_16bit_parity, msgc_grad_errors
from graph_conv_cases import msgc_inputs as make_inputs
from graph_conv_cases import msgc_reference64 as reference64
from op_checks import (FP32_TOL, TF32_ENGAGED, assert_bitwise_deterministic, assert_compiled_matches_eager,
                       float32_matmul_precision, rel_err)
from op_checks import run_with_grads as run
from trgnet_fast.backend import backend_status, implemented_backends, model_backend
from trgnet_fast.ops.multiscale_graph_conv import (
    OP_NAME,
    multiscale_graph_conv,
    multiscale_graph_conv_reference,
)

TRITON_OK, TRITON_WHY = backend_status("cuda" if torch.cuda.is_available() else "cpu")["triton"]
needs_triton = pytest.mark.skipif(not TRITON_OK, reason=f"triton backend unusable: {TRITON_WHY}")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def triton(*args):
    return multiscale_graph_conv(*args, backend="triton")


SHAPES = [  # N, C, T, V, S, O
    (2, 3, 5, 17, 2, 8),
    (1, 4, 9, 19, 13, 8),
    (2, 3, 1, 25, 2, 8),
    (1, 4, 9, 25, 13, 8),
]


# ----------------------------------------------------------------------------------------------
# reference

@pytest.mark.parametrize("shape", [(2, 3, 4, 5, 3, 7), (1, 2, 1, 17, 13, 4)])
def test_reference_matches_explicit_formula(shape):
    """Y[n,o,t,v] = b[o] + sum_{s,c,u} W[o, s*C+c] A[s*V+v, u] X[n,c,t,u], evaluated scale by scale."""
    N, C, T, V, S, O = shape
    x, a, w, b = make_inputs(*shape)
    expected = b[None, :, None, None].expand(N, O, T, V).clone()
    for s in range(S):
        a_s = a[s * V:(s + 1) * V]  # (V, V): [v, u]
        w_s = w[:, s * C:(s + 1) * C]  # (O, C)
        z = torch.einsum("vu,nctu->nctv", a_s, x)
        expected += torch.einsum("oc,nctv->notv", w_s, z)
    got = multiscale_graph_conv_reference(x, a, w, b)
    assert rel_err(got, expected) < 1e-13
    # the 4-D conv weight is accepted too
    assert rel_err(multiscale_graph_conv_reference(x, a, w[:, :, None, None], b), expected) < 1e-13


def test_backend_registration():
    assert implemented_backends(OP_NAME) == {"torch", "triton", "cuda"}
    # an explicit model-wide "cuda" runs the native op (its C++ kernels on CPU tensors) when the
    # extension is usable, and raises saying why when it is not
    if backend_status("cpu")["cuda"][0]:
        assert model_backend(OP_NAME, "cuda", "cpu") == "cuda"
    else:
        with pytest.raises(RuntimeError, match="not usable"):
            model_backend(OP_NAME, "cuda", "cpu")
    assert model_backend(OP_NAME, "torch", "cpu") == "torch"
    assert model_backend(OP_NAME, "auto", "cpu") == "torch"


# ----------------------------------------------------------------------------------------------
# Triton backend

@needs_triton
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_triton_forward_and_grads(shape, dtype):
    inputs = make_inputs(*shape, dtype=dtype, device=DEVICE)
    N, C, T, V, S, O = shape
    grad_out = torch.randn(N, O, T, V, dtype=torch.float64, device=DEVICE)
    ref_out, ref_grads = reference64(inputs, grad_out)
    out, grads = run(triton, inputs, grad_out)
    assert out.dtype == dtype and out.shape == (N, O, T, V)
    errs = {"out": rel_err(out, ref_out)}
    for name, g, r, t in zip(("x", "adjacency", "weight", "bias"), grads, ref_grads, inputs):
        assert g.dtype == dtype and g.shape == t.shape
        errs[name] = rel_err(g, r)
    assert all(e <= TOL[dtype] for e in errs.values()), errs


@needs_triton
def test_dot_precision_follows_torch_float32_matmul_precision():
    from trgnet_fast.triton._precision import dot_precision

    with float32_matmul_precision("highest"):
        assert dot_precision(torch.float32) == "ieee"
    for setting in ("high", "medium"):
        with float32_matmul_precision(setting):
            assert dot_precision(torch.float32) == "tf32"
            assert dot_precision(torch.float64) == "ieee"
            assert dot_precision(torch.bfloat16) == "ieee"  # 16-bit dots use the tensor cores anyway


@needs_triton
def test_triton_runs_with_tf32_allowed():
    # the interpreter computes "tf32" dots in fp32, so on CPU this checks the launch path, not the rounding
    inputs = make_inputs(1, 4, 9, 19, 13, 8, dtype=torch.float32, device=DEVICE)
    grad_out = torch.randn(1, 8, 9, 19, dtype=torch.float64, device=DEVICE)
    ref_out, ref_grads = reference64(inputs, grad_out)
    with float32_matmul_precision("high"):
        out, grads = run(triton, inputs, grad_out)
    errs = [rel_err(out, ref_out)] + [rel_err(g, r) for g, r in zip(grads, ref_grads)]
    assert max(errs) <= FP32_TOL["high"], errs


def test_triton_non_contiguous_inputs():
    N, C, T, V, S, O = 2, 3, 7, 17, 2, 8
    _, a, w, b = make_inputs(N, C, T, V, S, O, device=DEVICE)
    x = torch.randn(N, C, V, T, dtype=torch.float64, device=DEVICE).transpose(2, 3)  # the model's swap
    assert not x.is_contiguous()
    grad_out = torch.randn(N, O, T, V, dtype=torch.float64, device=DEVICE).transpose(2, 3).contiguous()
    grad_out = grad_out.transpose(2, 3)  # non-contiguous upstream gradient as well
    ref_out, ref_grads = reference64([x, a, w, b], grad_out)
    out, grads = run(triton, [x, a, w, b], grad_out)
    assert rel_err(out, ref_out) <= 1e-10
    for g, r in zip(grads, ref_grads):
        assert rel_err(g, r) <= 1e-10


@needs_triton
def test_triton_writes_every_element_and_is_deterministic():
    """Poisoned (NaN) output memory never leaks through; two runs agree bit for bit."""
    from trgnet_fast.triton import multiscale_graph_conv as kernels

    shape = (2, 3, 9, 19, 2, 8)
    x, a, w, b = make_inputs(*shape, dtype=torch.float32, device=DEVICE)
    poison = torch.full((1 << 16,), float("nan"), device=DEVICE)
    del poison  # the caching allocator hands the NaN-filled block to the op's outputs
    assert_bitwise_deterministic(kernels.multiscale_graph_conv_triton, kernels.multiscale_graph_conv_backward_triton,
                                 (x, a, w, b), (x, a, w))


@needs_triton
def test_triton_fp16_close_to_reference():
    """fp16 output and gradients within 2x the error of the fp16 PyTorch reference
    (docs/architecture.md#parity; + 1e-4 for this small shape)."""
    shape = (1, 3, 5, 17, 2, 8)
    inputs = make_inputs(*shape, dtype=torch.float16, device=DEVICE)
    grad_out = torch.randn(1, 8, 5, 17, dtype=torch.float16, device=DEVICE)
    assert_16bit_parity(triton, multiscale_graph_conv_reference, reference64, msgc_grad_errors, inputs, grad_out,
                        slack=1e-4)


@needs_triton
def test_triton_opcheck():
    from trgnet_fast.triton import multiscale_graph_conv  # noqa: F401 (registers the ops)

    x, a, w, b = make_inputs(1, 2, 3, 5, 2, 4, dtype=torch.float64, device=DEVICE)
    # Under the CPU interpreter a triton_op's fake implementation runs the interpreter on fake
    # tensors and fails (triton_op under torch.compile fails on CPU, docs/architecture.md#triton-interpreter):
    # schema only there.
    utils = ("test_schema", "test_faketensor") if DEVICE == "cuda" else ("test_schema",)
    torch.library.opcheck(torch.ops.trgnet_triton.multiscale_graph_conv.default, (x, a, w, b),
                          test_utils=utils)
    g = torch.randn(1, 4, 3, 5, dtype=torch.float64, device=DEVICE)
    torch.library.opcheck(torch.ops.trgnet_triton.multiscale_graph_conv_backward.default, (g, x, a, w),
                          test_utils=utils)


@needs_triton
def test_triton_gradcheck():
    x, a, w, b = (t.requires_grad_(True) for t in make_inputs(1, 2, 2, 5, 2, 4, device=DEVICE))
    assert torch.autograd.gradcheck(triton, (x, a, w, b), fast_mode=True)


# ----------------------------------------------------------------------------------------------
# validation

def _bad(case):
    x, a, w, b = make_inputs(1, 3, 4, 5, 2, 6)
    return {
        "x_not_tensor": ((x.tolist(), a, w, b), "x"),
        "x_3d": ((x[0], a, w, b), "x"),
        "x_int": ((x.long(), a, w, b), "x"),
        "adjacency_cols": ((x, a[:, :4], w, b), "adjacency"),
        "adjacency_rows": ((x, a[:7], w, b), "adjacency"),
        "weight_cols": ((x, a, w[:, :5], b), "weight"),
        "weight_3d": ((x, a, w[:, :, None], b), "weight"),
        "bias_shape": ((x, a, w, b[:5]), "bias"),
        "weight_dtype": ((x, a, w.float(), b), "weight"),
        "bias_dtype": ((x, a, w, b.float()), "bias"),
        "adjacency_dtype": ((x, a.float(), w, b), "adjacency"),
        "weight_device": ((x, a, w.to("meta"), b), "weight"),
    }[case]


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("case", ["x_not_tensor", "x_3d", "x_int", "adjacency_cols", "adjacency_rows",
                                  "weight_cols", "weight_3d", "bias_shape", "weight_dtype", "bias_dtype",
                                  "adjacency_dtype", "weight_device"])
def test_rejects_bad_inputs(case, backend):
    args, name = _bad(case)
    with pytest.raises(ValueError, match=f"multiscale_graph_conv: {name}:"):
        multiscale_graph_conv(*args, backend=backend)


def test_unknown_backend_is_rejected():
    x, a, w, b = make_inputs(1, 3, 4, 5, 2, 6)
    with pytest.raises(ValueError, match="backend"):
        multiscale_graph_conv(x, a, w, b, backend="nope")


# ----------------------------------------------------------------------------------------------
# GPU

PKU = (8, 12, 6000, 25, 13, 64)


@pytest.mark.gpu
@needs_triton
@pytest.mark.parametrize("precision", ["highest", "high"])
@pytest.mark.parametrize("shape", [PKU, (3, 12, 63, 17, 13, 64), (2, 12, 7, 19, 13, 64), (2, 12, 1, 25, 13, 64)])
def test_cuda_fp32_parity(shape, precision):
    inputs = make_inputs(*shape, dtype=torch.float32, device="cuda")
    N, C, T, V, S, O = shape
    grad_out = torch.randn(N, O, T, V, dtype=torch.float64, device="cuda")
    ref_out, ref_grads = reference64(inputs, grad_out)
    with float32_matmul_precision(precision):
        out, grads = run(triton, inputs, grad_out)
    errs = [rel_err(out, ref_out)] + [rel_err(g, r) for g, r in zip(grads, ref_grads)]
    assert max(errs) <= FP32_TOL[precision], errs
    if precision == "high":  # the dots really ran in TF32
        assert errs[0] > TF32_ENGAGED, errs


@pytest.mark.gpu
@needs_triton
def test_cuda_bf16_parity():
    inputs = make_inputs(*PKU, dtype=torch.bfloat16, device="cuda")
    N, C, T, V, S, O = PKU
    grad_out = torch.randn(N, O, T, V, dtype=torch.float64, device="cuda")
    assert_16bit_parity(triton, multiscale_graph_conv_reference, reference64, msgc_grad_errors, inputs, grad_out)


@pytest.mark.gpu
@needs_triton
def test_cuda_torch_compile_matches_eager():
    model = MultiscaleFront(lambda x, a, w, b: multiscale_graph_conv(x, a, w, b, backend="triton"), "cuda")
    assert_compiled_matches_eager(model, (torch.randn(2, 12, 25, 50, device="cuda"),), 1e-6)
