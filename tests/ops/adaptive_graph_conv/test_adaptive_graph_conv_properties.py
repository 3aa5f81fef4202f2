"""Property-based parity tests (hypothesis) of the fused ``adaptive_graph_conv``.

Hypothesis draws the shapes (N 1-3, C 1-6, T 1-13, V in {17, 19, 25} or a small random V; beta of shape (1,) or
()), the memory layout of every input independently (contiguous; transposed storage: x with the model's (V, T)
swap, ``randn(N, C, V, T).transpose(2, 3)``, p and q (N, V, T) storage, the channel graph (V, V) swapped, J
transposed; or a strided slice: the odd elements (storage offset 1, stride 2) of a buffer twice as long in the
last dim, the gaps NaN, for every input incl. beta) and the seed of the input values. For every fused backend of
the op's spec (``OpSpec.backends``) that really runs here (``triton``: CUDA, or the CPU interpreter with
``TRITON_INTERPRET=1`` from tests/conftest.py; ``cuda``: the native extension, its C++ kernels on CPU tensors, its
CUDA kernels on a GPU), the forward and the gradients of every input are compared with the float64 reference,
run on exactly the values the backend sees (inputs and cotangent drawn in float64, rounded to the dtype, widened
back). A backend that cannot run here is skipped with the reason.

Dtypes: float64 and float32 in one test, float16 and bfloat16 in another (bfloat16 skipped, with that reason, for
triton under its CPU interpreter, which cannot run it; it runs on a GPU). Tolerances, ||out-ref||/||ref|| against
float64 as ``hypothesis_cases.check_parity`` judges them (docs/architecture.md#parity): fp64 <= 1e-10, fp32 <= 1e-5,
16 bits <= 2x the error of the plain-PyTorch reference run in that dtype on the same inputs and cotangent, never
below fp32's 1e-5 (the fused kernels accumulate in fp32: where the 16-bit reference is exact, their fp32 rounding is
all that is left). dbeta, a reduction down to one number, and dJ, a sum over the frames, are measured against at
least the L2 norm of their summands (``gradient_error_floors``), the typical size of a sum of that many random-sign
terms: a chance cancellation of the exact sum must not turn rounding into a failure (the same floor for the fused
error and for the 16-bit reference's).

The interpreter is slow (~0.1 s per program): shapes are tiny, few examples for triton on CPU, more for the
compiled kernels.
"""
from __future__ import annotations

from functools import partial

import pytest
import torch
from hypothesis import strategies as st

from hypothesis_cases import GRAPH_CONV_DRAWS, check_drawn_cases, check_parity, examples, layouts
from op_checks import DEVICE, fused_backends
from trgnet_fast.ops.adaptive_graph_conv import OP_NAME, adaptive_graph_conv
from trgnet_fast.ops.adaptive_graph_conv.reference import adaptive_graph_conv_reference, gradient_error_floors
from trgnet_fast.ops.registry import OPS

SPEC = OPS[OP_NAME]
DIMS = {"x": (2, 3), "p": (1, 2), "q": (1, 2), "beta": None, "channel_graph": (2, 3), "joint_graph": (0, 1)}


def values(N, C, T, V, scalar_beta, seed):
    """float64 x, p, q, beta, G, J and the cotangent from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, T, V, generator=gen, dtype=torch.float64)
    p = torch.randn(N, T, V, generator=gen, dtype=torch.float64)
    q = torch.randn(N, T, V, generator=gen, dtype=torch.float64)
    beta = torch.randn((() if scalar_beta else (1,)), generator=gen, dtype=torch.float64)
    g = torch.randn(N, C, V, V, generator=gen, dtype=torch.float64) / V ** 0.5
    j = torch.randn(V, V, generator=gen, dtype=torch.float64).abs() / V ** 0.5
    grad_out = torch.randn(N, C, T, V, generator=gen, dtype=torch.float64)
    return [x, p, q, beta, g, j], grad_out


def check(backend, dtype, N, C, T, V, scalar_beta, seed, drawn_layouts):
    inputs, grad_out = values(N, C, T, V, scalar_beta, seed)
    check_parity(tuple(DIMS), adaptive_graph_conv_reference, lambda *a_: adaptive_graph_conv(*a_, backend=backend),
                 inputs, grad_out, dtype, drawn_layouts, DIMS, gradient_error_floors)


DRAWS = dict(scalar_beta=st.booleans(), drawn_layouts=layouts(DIMS), **GRAPH_CONV_DRAWS)


@pytest.mark.parametrize("backend", fused_backends(SPEC, device=DEVICE))
def test_adaptive_graph_conv_property(backend):
    """fp64 / fp32: the output and the gradients of x, p, q, beta and both graphs within TOL of the float64
    reference."""
    check_drawn_cases(partial(check, backend), examples(backend, 6, 50),
                      dtype=st.sampled_from([torch.float64, torch.float32]), **DRAWS)


@pytest.mark.parametrize("backend, dtype", fused_backends(SPEC, (torch.float16, torch.bfloat16), device=DEVICE))
def test_adaptive_graph_conv_property_16bit(backend, dtype):
    """fp16 / bf16: the output and the gradients of x, p, q, beta and both graphs within 2x the error of the
    same-dtype PyTorch reference (not below 1e-5)."""
    check_drawn_cases(partial(check, backend, dtype), examples(backend, 5, 50), **DRAWS)
