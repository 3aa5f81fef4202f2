"""Helpers shared by the property-based (hypothesis) op tests (``tests/ops/<op>/test_<op>_properties.py`` and the
property tests of ``test_<op>_backends.py``): how many examples to draw and the run over them, the same values in
other memory layouts, and the parity check of a drawn case."""
from __future__ import annotations

import contextlib

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from op_checks import DEVICE, INTERPRETED, TOL, rel_err
from op_checks import run_with_grads as reference_grads_of


def examples(backend: str, interpreted: int, compiled: int) -> int:
    """Hypothesis examples per run: few under the Triton CPU interpreter, more for compiled kernels."""
    return interpreted if backend == "triton" and INTERPRETED else compiled


def check_drawn_cases(check, max_examples: int, **draws) -> None:
    """``check(**drawn)`` on ``max_examples`` hypothesis draws of the strategies ``draws`` (no deadline: an example
    can take seconds in Triton's CPU interpreter)."""
    @settings(max_examples=max_examples, deadline=None)
    @given(**draws)
    def case(**drawn):
        check(**drawn)

    case()


@contextlib.contextmanager
def seeded(seed: int):
    """The block runs on a fork of the RNGs (CPU, and the current GPU) seeded with ``seed``: a drawn seed
    reproduces the input values, and the global RNG state is left as it was."""
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if DEVICE == "cuda" else []):
        torch.manual_seed(seed)
        yield


def with_layout(t: torch.Tensor, layout: str, dims: tuple[int, int] | None = None) -> torch.Tensor:
    """``t``'s values in ``layout``: "contiguous"; "transposed": storage with dims ``dims`` swapped;
    "strided": the odd elements (storage offset 1, stride 2) of a buffer twice as long in the last dim (a 0-d
    tensor: the second element of a 2-element buffer), the gaps poisoned (NaN; for a bool tensor its
    negation) so that a kernel reading them shows up."""
    if layout == "contiguous":
        out = t.contiguous()
    elif layout == "transposed":
        out = t.transpose(*dims).contiguous().transpose(*dims)
        assert not out.is_contiguous() or min(t.shape[dims[0]], t.shape[dims[1]]) == 1
    elif layout == "strided":
        last = t.shape[-1] if t.dim() else 1
        src = t.reshape(*t.shape[:-1], last)
        buf = torch.empty(*src.shape[:-1], 2 * last, dtype=t.dtype, device=t.device)
        buf[..., 0::2] = ~src if t.dtype == torch.bool else float("nan")
        out = buf[..., 1::2]
        out.copy_(src)
        out = out.reshape(t.shape)  # a view (0-d: of the buffer's second element)
        assert out.storage_offset() == 1 and (not out.is_contiguous() or last == 1)
    else:
        raise ValueError(layout)
    assert torch.equal(out, t)
    return out


def layouts(dims_by_input: dict[str, tuple[int, int] | None]):
    """One layout per input: "transposed" only where the input has ``dims`` to swap (not None)."""
    return st.fixed_dictionaries({
        name: st.sampled_from(("contiguous", "strided") if dims is None else ("contiguous", "transposed", "strided"))
        for name, dims in dims_by_input.items()})


def joints():
    """Joint counts: the datasets' (17, 19, 25) or a small random V."""
    return st.one_of(st.sampled_from([17, 19, 25]), st.integers(1, 8))


# draws of the graph convs: N, C (input channels), T, V and the seed of the values
GRAPH_CONV_DRAWS = dict(N=st.integers(1, 3), C=st.integers(1, 6), T=st.integers(1, 13), V=joints(),
                        seed=st.integers(0, 2 ** 32 - 1))


def fused_grads(fn, inputs, grad_out):
    """(out, grads) of ``fn(*inputs)``, the inputs kept in their layouts (``detach`` is a view)."""
    leaves = [t.detach().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    return out.detach(), torch.autograd.grad(out, leaves, grad_out)


def check_parity(names, reference, fused, values, grad_out64, dtype, drawn_layouts, dims, floors_of):
    """``fused`` vs the float64 ``reference`` on ``values`` (float64, contiguous) rounded to ``dtype`` and
    put in ``drawn_layouts``: output and gradients finite, in that dtype and shape, each error within TOL (fp64),
    or within 2x the same error of ``reference`` run in ``dtype`` and not below TOL[float32] (fp32 and 16 bits: the
    rule of docs/architecture.md#parity; in fp32 it loosens only ill-conditioned draws, such as a one-joint
    adjacency gradient summed over products of both signs, where a plain float32 run errs by ~1e-5 too).
    ``floors_of(grad_out64, *inputs64) -> {name: floor}`` (denominator floors of reduction gradients)."""
    lowp = [t.to(device=DEVICE, dtype=dtype) for t in values]
    grad_out = grad_out64.to(device=DEVICE, dtype=dtype)
    inputs64 = [t.double().cpu() for t in lowp]  # exactly what the runs see
    grad64 = grad_out.double().cpu()
    inputs = [with_layout(t, drawn_layouts[name], dims[name]) for name, t in zip(names, lowp)]

    ref_out, ref_grads = reference_grads_of(reference, inputs64, grad64)
    out, grads = fused_grads(fused, inputs, grad_out)
    floors = floors_of(grad64, *inputs64)
    assert out.dtype == dtype and out.shape == ref_out.shape
    assert torch.isfinite(out).all()
    errs = {"out": rel_err(out.cpu(), ref_out)}
    for name, g, r, t in zip(names, grads, ref_grads, inputs):
        assert g.dtype == dtype and g.shape == t.shape, name
        assert torch.isfinite(g).all(), name
        errs[name] = rel_err(g.cpu(), r, floors.get(name, 0.0))
    if dtype == torch.float64:
        errs = {k: (e, TOL[dtype]) for k, e in errs.items()}
    else:  # the same errors of the reference run in `dtype`
        low_out, low_grads = reference_grads_of(reference, lowp, grad_out)
        low = {"out": rel_err(low_out.cpu(), ref_out)}
        low.update({name: rel_err(g.cpu(), r, floors.get(name, 0.0))
                    for name, g, r in zip(names, low_grads, ref_grads)})
        errs = {k: (e, max(2 * low[k], TOL[torch.float32])) for k, e in errs.items()}
    bad = {k: e for k, e in errs.items() if not e[0] <= e[1]}
    assert not bad, ("(error, bound)", bad, errs)
