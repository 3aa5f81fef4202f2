"""Property-based parity of every fused linear-attention backend (hypothesis): shapes, dtypes, mask patterns
and the memory layout of every input drawn at random, each case against the float64 reference.

Drawn: N 1-2, T 1-40, H 1-2, head dims D and E each from {1, 2, 3, 5, 8, 9, 15, 16} or 17-64 (the 16-, 32-
and 64-wide padded kernel paths of the CUDA kernels, Triton's power-of-two paddings); the key mask (none,
random, tail, only the last frame); the layout of q, k, v and the mask, each independently: contiguous,
transposed storage (q, k, v head-major (N, H, T, D) storage as in the model; the mask (T, N) storage) or a
strided slice (the odd elements of a buffer twice as long in the last dim, the gaps poisoned: NaN, or the
negated mask); the seed of the input values. Forward and the gradients of q, k and v are checked.

Backends (the op's ``OpSpec.backends``): triton (CPU interpreter here) and the native op ``cuda`` (C++ CPU kernels
here, CUDA kernels on a GPU); a backend not usable here is skipped with the reason. Dtypes: float64 and float32
for both; float16 for both; bfloat16 for the native op, and for triton on a GPU only (Triton's CPU interpreter
cannot run bfloat16: skipped with that reason).

Tolerances (||out-ref||/||ref|| against a float64 reference, docs/architecture.md#parity; fp64 as in the op
tests): fp64 <= 1e-10, fp32 <= 1e-5 relative; float16 and bfloat16: <= 2x the error
(against the same float64 reference) of ``linear_attention_reference`` run in that 16-bit dtype on the same
inputs and cotangent (the parity rule), and never below fp32's 1e-5: the fused kernels compute in fp32, and
where the 16-bit reference is exact by structure (D = 1: dq = 0 exactly; one key: dq, dk O(eps)) their fp32
rounding is all that is left. The float64 reference sees exactly the 16-bit values (inputs and
cotangent are drawn, then rounded, then widened). The gradients are measured against max(||ref||, floor)
with the floors of ``gradient_error_floors`` (the root-sum-square of the products each gradient sums: they
cancel exactly with one key per sample or D = 1, and by chance for a few random-sign terms, while rounding
scales with the products), for every dtype.

The interpreter is slow (~ms per program): few examples for triton on CPU, more for compiled kernels.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_cases import EPS, grad_floors, make_inputs, make_mask, reference_grads
from hypothesis_cases import examples, seeded, with_layout
from op_checks import DEVICE, TOL, fused_backends, rel_err
from trgnet_fast.ops.linear_attention import OP_NAME, linear_attention
from trgnet_fast.ops.registry import OPS

SPEC = OPS[OP_NAME]


# ----------------------------------------------------------------------------------------------
# layouts: same values, other strides

LAYOUTS = ("contiguous", "transposed", "strided")


# ----------------------------------------------------------------------------------------------
# strategies and inputs

HEAD_DIMS = st.one_of(st.sampled_from([1, 2, 3, 5, 8, 9, 15, 16]), st.integers(17, 64))
DRAWS = dict(N=st.integers(1, 2), T=st.integers(1, 40), H=st.integers(1, 2), D=HEAD_DIMS, E=HEAD_DIMS,
             mask_kind=st.sampled_from(["none", "random", "tail", "one"]),
             layouts=st.tuples(*[st.sampled_from(LAYOUTS)] * 4),  # q, k, v, mask
             seed=st.integers(0, 2 ** 32 - 1))


def draw_inputs(N, T, H, D, E, mask_kind, layouts, dtype):
    """q, k, v (leaves requiring grad) and the mask in the drawn layouts; values from the current RNG."""
    q, k, v, _ = make_inputs(N, T, H, D, E, dtype=dtype, device=DEVICE)
    mask = make_mask(mask_kind, N, T, DEVICE)
    q, k, v = (with_layout(t, lay, (1, 2)).requires_grad_(True) for t, lay in zip((q, k, v), layouts))
    if mask is not None:
        mask = with_layout(mask, layouts[3], (0, 1))
    return q, k, v, mask


def bound(dtype, low, ref, floor=0.0) -> float:
    """Largest error allowed in ``dtype`` (module docstring): ``TOL`` for fp64 / fp32; for 16 bits 2x the
    error of ``low`` (the reference run in that dtype) against ``ref``, and not below fp32's 1e-5."""
    if dtype in TOL:
        return TOL[dtype]
    return max(2 * rel_err(low, ref, floor), TOL[torch.float32])


def check(q, k, v, mask, backend):
    """``backend``'s output and q, k, v gradients: finite, in q's dtype, and within the dtype's ``bound`` of
    the float64 reference (module docstring). Gradient errors against max(||ref||, ``grad_floors``)."""
    dtype = q.dtype
    N, T, H, _ = q.shape
    # the cotangent exactly representable in `dtype`: the float64 reference sees what the runs see
    grad_out = torch.randn(N, T, H, v.shape[3], dtype=torch.float64, device=q.device).to(dtype)
    ref, ref_grads = reference_grads(q, k, v, mask, grad_out)  # float64, of the dtype's values
    low = low_grads = None
    if dtype.itemsize == 2:
        low, low_grads = reference_grads(q, k, v, mask, grad_out, dtype=dtype)
    out = linear_attention(q, k, v, mask, EPS, backend=backend)
    assert out.dtype == dtype and out.shape == ref.shape
    assert torch.isfinite(out).all()
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    floors = grad_floors(grad_out, q, k, v, mask)
    errs = {"out": (rel_err(out, ref), bound(dtype, low, ref))}
    for i, (name, g, r) in enumerate(zip("qkv", grads, ref_grads)):
        assert g.dtype == dtype and g.shape == r.shape, name
        assert torch.isfinite(g).all(), name
        low_g = None if low_grads is None else low_grads[i]
        errs[name] = (rel_err(g, r, floors[name]), bound(dtype, low_g, r, floors[name]))
    bad = {name: e for name, e in errs.items() if not e[0] <= e[1]}
    assert not bad, ("(error, bound)", bad, errs)


# ----------------------------------------------------------------------------------------------
# tests

@pytest.mark.parametrize("backend", fused_backends(SPEC, device=DEVICE))
def test_fused_backend_property(backend):
    """fp64 / fp32: forward and gradients within TOL of the float64 reference."""
    @settings(max_examples=examples(backend, 16, 40), deadline=None)
    @given(dtype=st.sampled_from([torch.float32, torch.float64]), **DRAWS)
    def case(N, T, H, D, E, mask_kind, layouts, seed, dtype):
        with seeded(seed):
            q, k, v, mask = draw_inputs(N, T, H, D, E, mask_kind, layouts, dtype)
            check(q, k, v, mask, backend)
    case()


@pytest.mark.parametrize("backend, dtype", fused_backends(SPEC, (torch.float16, torch.bfloat16), device=DEVICE))
def test_fused_backend_property_16bit(backend, dtype):
    """fp16 / bf16: forward and gradients within 2x the error of the same-dtype PyTorch reference."""
    @settings(max_examples=examples(backend, 16, 40), deadline=None)
    @given(**DRAWS)
    def case(N, T, H, D, E, mask_kind, layouts, seed):
        with seeded(seed):
            q, k, v, mask = draw_inputs(N, T, H, D, E, mask_kind, layouts, dtype)
            check(q, k, v, mask, backend)
    case()
