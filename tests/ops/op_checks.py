"""Drivers shared by the fused-op tests of every op (``tests/ops/<op>/``): which fused backends run here and
on which device, their raw ops, the error measure, the gradient runner, the precision switch, the determinism,
opcheck, poisoned-memory, launch, 16-bit parity and torch.compile checks, and the argument checks of the raw ops.

The op tests import this module by name: ``tests/ops`` is on ``sys.path`` because pytest's default
(``prepend``) import mode puts the folder of ``tests/ops/conftest.py`` there (test modules and helpers are
named uniquely, e.g. ``test_linear_attention_backends.py``, since every folder is a top-level entry).
"""
from __future__ import annotations

import contextlib
import importlib
import re

import pytest
import torch

import backend_marks
from trgnet_fast import _native
from trgnet_fast.ops.registry import OPS

# where the tests run the Triton kernels: on the GPU, or in Triton's CPU interpreter (tests/conftest.py)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRETED = DEVICE == "cpu"
NO_BF16 = "Triton's CPU interpreter cannot run bfloat16 (numpy has no bfloat16); it runs on a GPU"
# the device of each fused backend's CPU-runnable tests: the native op's C++ kernels take CPU tensors (its CUDA
# kernels have the ``gpu`` tests), Triton runs where DEVICE says
BACKEND_DEVICE = {"cuda": "cpu", "triton": DEVICE}

# parity tolerances against float64 (docs/architecture.md#parity): fp64 and fp32 (IEEE fp32 dots)
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
# fp32 parity tolerance against float64 by PyTorch's float32 matmul precision (docs/architecture.md#parity): IEEE fp32
# dots ("highest", the default) or TF32 tensor-core dots ("high"; the Triton graph convs follow it)
FP32_TOL = {"highest": 1e-5, "high": 1e-3}
# a TF32 dot of random normal data is off by ~1e-4 relative; IEEE fp32 by ~1e-7: above this, TF32 ran
TF32_ENGAGED = 1e-6


# ----------------------------------------------------------------------------------------------
# fused backends: where they run, why not, their raw ops

def unusable(backend: str, device: str | None = None) -> str | None:
    """Why ``backend`` cannot run on ``device`` (default: ``BACKEND_DEVICE``) here (None: it can)."""
    return backend_marks.unusable(backend, device or BACKEND_DEVICE[backend])


def needs(backend: str, device: str | None = None):
    """``needs_backend`` mark of a test of ``backend`` on ``device`` (default ``BACKEND_DEVICE``), with why it
    cannot run here: tests/conftest.py skips the test with the reason, or fails it when the run requires the
    backend (``$TRGNET_REQUIRE_BACKENDS``). ``device="cuda"`` (the ``gpu`` tests): the usability on the GPU, judged
    only where one is present (without one the ``gpu`` marker skips the test with its own reason)."""
    return backend_marks.needs(backend, device or BACKEND_DEVICE[backend])


def shape_id(shape) -> str:
    """The test id of a shape: its sizes joined by "x"."""
    return "x".join(map(str, shape))


def _dtype_id(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def fused_backends(spec, dtypes=None, device: str | None = None, only: tuple[str, ...] | None = None):
    """pytest params of ``spec``'s fused backends (``OpSpec.backends``; those of ``only`` when given), crossed with
    ``dtypes`` when given (then params ``(backend, dtype)``), each marked by ``needs`` for ``device`` (default
    ``BACKEND_DEVICE``), and skipped where Triton's CPU interpreter cannot run the dtype."""
    params = []
    for backend in (b for b in spec.backends if only is None or b in only):
        for dtype in (dtypes if dtypes is not None else (None,)):
            values = (backend,) if dtype is None else (backend, dtype)
            name = backend if dtype is None else f"{backend}-{_dtype_id(dtype)}"
            marks = [needs(backend, device)]
            if backend == "triton" and (device or BACKEND_DEVICE[backend]) == "cpu" and dtype == torch.bfloat16:
                marks.append(pytest.mark.skip(reason=NO_BF16))
            params.append(pytest.param(*values, id=name, marks=marks))
    return params


def fused_backend_cases(spec, cases):
    """pytest params ``(backend, case, dtype)`` of ``spec``'s fused backends (marked as by ``fused_backends``) crossed
    with the names of ``cases`` and float64 / float32, with the ids ``<backend>-<case>-fp64`` / ``-fp32``."""
    return [pytest.param(backend.values[0], case, dtype, id=f"{backend.id}-{case}-{dtype_id}", marks=backend.marks)
            for backend in fused_backends(spec) for case in cases
            for dtype, dtype_id in ((torch.float64, "fp64"), (torch.float32, "fp32"))]


def backend_on(backend: str, device: str):
    """pytest param ``(backend, device)`` with the id ``<backend>-<device>``: marked ``gpu`` on "cuda", and by
    ``needs``."""
    marks = [pytest.mark.gpu] if device == "cuda" else []
    return pytest.param(backend, device, id=f"{backend}-{device}", marks=[*marks, needs(backend, device)])


def backends_and_devices(spec, exclude=()):
    """``backend_on`` params of each of ``spec``'s fused backends on the device of its CPU-runnable tests
    (``BACKEND_DEVICE``) and on the GPU, less the ``(backend, device)`` pairs of ``exclude``."""
    return [backend_on(b, d) for b in spec.backends for d in dict.fromkeys((BACKEND_DEVICE[b], "cuda"))
            if (b, d) not in exclude]


def api_backends(spec):
    """pytest params of the public function's ``backend=`` values: "auto" and every backend implementing the op
    (``OpSpec.implemented``), each on CPU tensors (Triton: where the Triton tests run), the fused ones marked by
    ``needs``."""
    return [pytest.param(backend, id=backend, marks=needs(backend) if backend in BACKEND_DEVICE else ())
            for backend in ("auto", *spec.implemented)]


def triton_ops():
    """``torch.ops.trgnet_triton`` with every registry op's Triton ops registered (importing each
    ``OpSpec.triton_module`` registers them; done on first use, not at collection)."""
    for spec in OPS.values():
        importlib.import_module(spec.triton_module)
    return torch.ops.trgnet_triton


def raw_ops(backend: str):
    """The raw ops of a fused backend, one schema for both: ``torch.ops.trgnet`` (native) or
    ``torch.ops.trgnet_triton``."""
    return _native.ops() if backend == "cuda" else triton_ops()


def floating_to(inputs: dict, dtype: torch.dtype) -> dict:
    """``inputs`` with every floating tensor converted to ``dtype``."""
    return {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in inputs.items()}


def non_contiguous(t: torch.Tensor) -> torch.Tensor:
    """The values of t in a non-contiguous layout (last two dims stored transposed)."""
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


@contextlib.contextmanager
def float32_matmul_precision(value: str):
    """``torch.set_float32_matmul_precision(value)`` inside the block, the previous value restored after."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(value)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


# ----------------------------------------------------------------------------------------------
# errors and gradients

def rel_err(x, ref, floor=0.0):
    """||x - ref|| / max(||ref||, floor), in float64."""
    x, ref = x.detach().double(), ref.detach().double()
    return ((x - ref).norm() / ref.norm().clamp_min(max(floor, 1e-300))).item()


def run_with_grads(fn, inputs, grad_out):
    """(out, grads) of ``fn(*inputs)`` on fresh leaf copies (clone keeps the strides of dense views), for
    the cotangent ``grad_out``."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, leaves, grad_out.to(out.dtype))
    return out.detach(), grads


# ----------------------------------------------------------------------------------------------
# checks

def assert_bitwise_deterministic(forward, backward, inputs, backward_inputs):
    """Two runs of ``forward(*inputs)`` and of ``backward(grad_out, *backward_inputs)`` agree bit for bit and
    are finite; returns the forward output."""
    y1, y2 = forward(*inputs), forward(*inputs)
    assert torch.isfinite(y1).all() and torch.equal(y1, y2)
    g = torch.randn_like(y1)
    for t1, t2 in zip(backward(g, *backward_inputs), backward(g, *backward_inputs)):
        assert torch.isfinite(t1).all() and torch.equal(t1, t2)
    return y1


def assert_raw_ops_deterministic(forward, backward, args, backward_args):
    """Two runs of the raw ``forward(*args)`` (one output or a tuple) agree bit for bit, and two runs of ``backward``
    on ``backward_args(outputs)`` (one cotangent for both) agree bit for bit and are finite; returns the
    gradients."""
    first, second = forward(*args), forward(*args)
    assert all(torch.equal(a, b) for a, b in zip(_as_tuple(first), _as_tuple(second)))
    call = backward_args(first)
    grads = [backward(*call) for _ in range(2)]
    assert all(torch.equal(a, b) and torch.isfinite(a).all() for a, b in zip(*grads))
    return grads[0]


def _as_tuple(outputs):
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


def opcheck_raw_ops(forward, backward, args, differentiable, backward_calls, backend: str, device: str,
                    triton_gpu_utils: tuple[str, ...] | None = None) -> None:
    """``torch.library.opcheck`` (schema, fake tensors, autograd registration) of a fused backend's raw ``forward``
    op on ``args``, those at the indices ``differentiable`` requiring grad, and of its ``backward`` op on each
    argument tuple of ``backward_calls(detached args)``. Under Triton's CPU interpreter the schema only: a
    triton_op's fake implementation runs the interpreter on fake tensors and fails
    (docs/architecture.md#triton-interpreter); Triton on the GPU: ``triton_gpu_utils`` where given, else every
    check."""
    kwargs = {}
    if backend == "triton" and device == "cpu":
        kwargs["test_utils"] = ("test_schema",)
    elif backend == "triton" and triton_gpu_utils is not None:
        kwargs["test_utils"] = triton_gpu_utils
    args = list(args)
    for i in differentiable:
        args[i] = args[i].requires_grad_(True)
    torch.library.opcheck(forward.default, tuple(args), **kwargs)
    for backward_args in backward_calls([a.detach() if isinstance(a, torch.Tensor) else a for a in args]):
        torch.library.opcheck(backward.default, tuple(backward_args), **kwargs)


def record_launches(monkeypatch, kernels) -> list[str]:
    """The list that from now on records, in order, the name of every kernel the launchers of ``kernels`` (a
    ``triton_kernels`` module) launch: each launch goes through its ``wrap_triton``."""
    original = kernels.wrap_triton
    launches = []

    def counting_wrap(kernel):
        launches.append(getattr(kernel, "__name__", None) or kernel.fn.__name__)
        return original(kernel)

    monkeypatch.setattr(kernels, "wrap_triton", counting_wrap)
    return launches


def poison_allocator(*shapes, dtype=torch.float32, device="cuda"):
    """Fill blocks of the caching allocator with NaN so that outputs allocated next start as NaN (a kernel
    that leaves an element unwritten then shows up as a non-finite output)."""
    blocks = [torch.full(s, float("nan"), dtype=dtype, device=device) for s in shapes]
    del blocks


def assert_compiled_matches_eager(model, inputs, tol):
    """``torch.compile(model, fullgraph=True)`` traces without a graph break and gives eager's output and the
    gradients (of the sum of squares) w.r.t. the parameters and the inputs that require grad, within ``tol``."""
    leaves = [t for t in inputs if t.requires_grad] + list(model.parameters())
    eager = model(*inputs)
    eager_grads = torch.autograd.grad(eager.square().sum(), leaves)
    out = torch.compile(model, fullgraph=True)(*inputs)
    grads = torch.autograd.grad(out.square().sum(), leaves)
    assert rel_err(out, eager) <= tol
    for i, (g, e) in enumerate(zip(grads, eager_grads)):
        assert rel_err(g, e) <= tol, f"gradient {i} of {len(leaves)}"


def assert_compiled_function_matches_eager(fn, leaves, tol):
    """``torch.compile(fn, fullgraph=True)`` of a scalar function of ``leaves`` traces without a graph break and gives
    eager's value and gradients within ``tol``."""
    eager = fn(*leaves)
    eager_grads = torch.autograd.grad(eager, leaves)
    compiled = torch.compile(fn, fullgraph=True)(*leaves)
    grads = torch.autograd.grad(compiled, leaves)
    assert rel_err(compiled, eager) <= tol
    assert all(rel_err(g, e) <= tol for g, e in zip(grads, eager_grads))


def assert_same_float32_result(function, inputs: dict, like_inputs: dict) -> None:
    """``function(**inputs)`` is float32 and equals ``function(**like_inputs)`` to 1e-6 relative."""
    got = function(**inputs)
    assert got.dtype == torch.float32 and torch.allclose(got, function(**like_inputs), rtol=1e-6, atol=0)


def assert_16bit_parity(fused, reference, reference64, grad_errors, inputs, grad_out, poison=lambda: None,
                        slack=0.0):
    """A fused op on 16-bit ``inputs``: output and gradients finite, in that dtype, and each within 2x the error
    (against float64) of the plain-PyTorch ``reference`` run in the same dtype (docs/architecture.md#parity),
    plus ``slack`` (small shapes, where the reference's own error can be tiny by chance).
    ``reference64(inputs, grad_out) -> (out, grads)`` in float64; ``grad_errors(grads, ref_grads, inputs,
    grad_out) -> {name: error}``; ``poison()`` runs right before the fused call (NaN-filled memory for its
    outputs)."""
    dtype = inputs[0].dtype
    ref_out, ref_grads = reference64(inputs, grad_out)
    low_out, low_grads = run_with_grads(reference, inputs, grad_out)
    poison()
    out, grads = run_with_grads(fused, inputs, grad_out)
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert rel_err(out, ref_out) <= 2 * rel_err(low_out, ref_out) + slack
    errs = grad_errors(grads, ref_grads, inputs, grad_out)
    low_errs = grad_errors(low_grads, ref_grads, inputs, grad_out)
    for (name, err), g in zip(errs.items(), grads):
        assert g.dtype == dtype and torch.isfinite(g).all(), name
        assert err <= 2 * low_errs[name] + slack, (name, err, low_errs[name])


def assert_fp64_or_fp16_parity(errors, reference, reference64, inputs, grad_out):
    """``errors(inputs, grad_out) -> (out, {name: error})`` of a fused op: fp64 inputs within 1e-10
    everywhere; fp16 inputs: the output within 2x the fp16 reference's error (+1e-3)."""
    _, errs = errors(inputs, grad_out)
    if inputs[0].dtype == torch.float64:
        assert max(errs.values()) <= 1e-10, errs
        return
    low_out, _ = run_with_grads(reference, inputs, grad_out)
    ref_out, _ = reference64(inputs, grad_out)
    assert errs["out"] <= 2 * rel_err(low_out, ref_out) + 1e-3, errs


# ----------------------------------------------------------------------------------------------
# argument checks of the raw ops (Triton and native)

def with_arg(name: str, change):
    """``args -> args`` with argument ``name`` replaced by ``change(args[name])`` (a bad-argument case)."""
    return lambda args: args | {name: change(args[name])}


def assert_raw_triton_op_rejects(op: str, args: dict, name: str, expected: str) -> None:
    """``torch.ops.trgnet_triton.<op>(*args)`` (``args`` in schema order) raises a ``ValueError`` reading
    ``trgnet_triton::<op>: <name>: expected <expected>...``."""
    message = re.escape(f"trgnet_triton::{op}: {name}: expected {expected}")
    with pytest.raises(ValueError, match=message):
        getattr(triton_ops(), op)(*args.values())


def assert_raw_triton_op_rejects_non_contiguous(op: str, args: dict, names) -> None:
    """``assert_raw_triton_op_rejects`` of each argument of ``names`` in a non-contiguous layout: the kernels index
    it as a flat row-major tensor."""
    for name in names:
        assert_raw_triton_op_rejects(op, args | {name: non_contiguous(args[name])}, name, "a contiguous tensor")


def raw_triton_op_cases(op: str, forward_cases, backward_cases):
    """pytest params ``(op, case)`` of the bad-argument cases ``(id, change, name, expected)`` of the raw Triton op
    ``op`` and of its backward op, with the ids ``<op>-<case id>``."""
    cases = [(op, case) for case in forward_cases] + [(f"{op}_backward", case) for case in backward_cases]
    return [pytest.param(op, case, id=f"{op}-{case[0]}") for op, case in cases]


def assert_raw_triton_op_rejects_case(op: str, case, valid_args) -> None:
    """A ``raw_triton_op_cases`` case: ``change`` of the op's valid arguments (``valid_args[op]()``, in schema order)
    is refused with the message ``assert_raw_triton_op_rejects`` reads."""
    _, change, name, expected = case
    assert_raw_triton_op_rejects(op, change(valid_args[op]()), name, expected)


def assert_native_op_rejects(op, cases, *trailing) -> None:
    """The raw native ``op`` (its C++ checks) raises a ``RuntimeError`` matching ``message`` on ``(*args, *trailing)``
    for each ``(args, message)`` of ``cases``."""
    for args, message in cases:
        with pytest.raises(RuntimeError, match=message):
            op(*args, *trailing)
