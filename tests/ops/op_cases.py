"""Inputs, runners and the reference check shared by the tests of the fused ops with keyword inputs (``att_module``,
``dilated_residual``, ``spatial_feature_injection``, ``batch_norm_relu``, the losses): one :class:`OpCases` per op,
built from its registry entry (``trgnet_fast/ops/<op>/spec.py``: ``make_inputs``, ``reference``, ``fused``,
``grad_inputs``, ``grad_error_floor``, ``parity_sizes``), and the checks every such op's tests run through it; the
runners of the ops with positional tensor inputs (the graph convs): one :class:`PositionalOpCases` per op."""
from __future__ import annotations

import torch

from hypothesis_cases import seeded, with_layout
from op_checks import (BACKEND_DEVICE, DEVICE, INTERPRETED, TOL, assert_compiled_function_matches_eager,
                       record_launches, rel_err, run_with_grads)
from trgnet_fast.ops.att_module.validation import state_dtype

# float64's unit roundoff over float32's: a quantity a float32 implementation computes with relative error E
# (cancellation included) a float64 one computes with about E * 2^-29
FP64_OVER_FP32 = 2.0 ** -29
ROUNDINGS = 5


def _rounded_differently(inputs: dict, seed: int) -> dict:
    """``inputs`` with every floating tensor but the 0/1 mask moved by a relative N(0, 2^-24) step: the same
    problem as float32 rounding would pose it had it rounded the other way."""
    generator = torch.Generator().manual_seed(seed)

    def nudge(t):
        noise = torch.randn(t.shape, generator=generator, dtype=torch.float64).to(t.device)
        return t * (1 + noise * 2.0 ** -24)

    return {name: nudge(v) if isinstance(v, torch.Tensor) and v.is_floating_point() and name != "mask" else v
            for name, v in inputs.items()}


class OpCases:
    """The test drivers of one op.

    spec: its ``OpSpec``; raw_args: the raw ops' arguments in schema order (tensors, then scalars);
    state_inputs: the inputs kept in the state dtype (float64 for float64, else float32) whatever the inputs'
    dtype (the AttModule's alpha); output_like: the input whose shape and dtype the output has.
    """

    def __init__(self, spec, raw_args: tuple[str, ...], state_inputs: tuple[str, ...] = (), output_like: str = "x"):
        self.spec = spec
        self.raw_arg_names = raw_args
        self.state_inputs = state_inputs
        self.output_like = output_like

    def case_inputs(self, s: dict, dtype=torch.float64, device="cpu", seed: int | None = None) -> dict:
        """Keyword inputs of the op for size ``s`` (fresh random values unless ``seed`` is given)."""
        generator = torch.Generator()
        generator.manual_seed(seed) if seed is not None else generator.seed()
        return self.spec.make_inputs(s, dtype, device, generator)

    def raw_args(self, inputs: dict) -> list:
        """``inputs`` (every argument, as ``make_inputs`` gives them) in the raw ops' schema order."""
        return [inputs[name] for name in self.raw_arg_names]

    def raw_args_by_name(self, inputs: dict) -> dict:
        """``raw_args`` keyed by the arguments' names (in schema order)."""
        return dict(zip(self.raw_arg_names, self.raw_args(inputs)))

    def run(self, fn, inputs: dict, grad_out: torch.Tensor | None = None, dtype: torch.dtype | None = None):
        """(out, {name: gradient}) of ``fn(**inputs)`` on fresh leaf copies (floating tensors cast to ``dtype``
        when given, the state inputs to its state dtype); gradients of <out, grad_out> (none without grad_out)."""
        leaves = {}
        for name, value in inputs.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point() and dtype is not None:
                value = value.to(state_dtype(dtype) if name in self.state_inputs else dtype)
            if name in self.spec.grad_inputs and value is not None and grad_out is not None:
                value = value.detach().clone().requires_grad_(True)
            leaves[name] = value
        out = fn(**leaves)
        if grad_out is None:
            return out.detach(), {}
        names = self.spec.grad_names(inputs)
        if not out.requires_grad:  # every sequence empty: the reference's output is a constant 0
            return out.detach(), {n: torch.zeros_like(leaves[n]) for n in names}
        # a leaf no frame reaches (e.g. values when every sequence is empty) has a zero gradient
        grads = torch.autograd.grad(out, [leaves[n] for n in names], grad_out.to(out.dtype), allow_unused=True,
                                    materialize_grads=True)
        return out.detach(), dict(zip(names, grads))

    def reference_run(self, inputs: dict, grad_out: torch.Tensor | None = None, dtype=torch.float64):
        """The reference's (out, gradients), evaluated in ``dtype``."""
        return self.run(self.spec.reference, inputs, grad_out, dtype)

    def fused(self, backend: str):
        return lambda **kw: self.spec.fused(**kw, backend=backend)

    def tolerances(self, inputs: dict, grad_out: torch.Tensor, ref_out, ref_grads, floors, tol: float,
                   dtype) -> dict:
        """Per quantity: ``tol``, or 2x the error a plain PyTorch float32 run of the reference makes on it (for a
        float64 run: that error times ``FP64_OVER_FP32``), whichever is larger. That error is a random variable of
        the rounding (input rounding alone moves it by 2x and more in ill-conditioned cases: few frames, one
        channel), so it is the largest of ``ROUNDINGS`` float32 runs (the inputs as given and rounded other ways,
        ``_rounded_differently``). It loosens nothing on well-conditioned quantities; where the formula cancels
        (one frame: InstanceNorm's backward; few keys: dQ, dK; sums of products of both signs such as alpha's
        gradient) it measures how far a correct implementation can be from the float64 reference
        (docs/architecture.md#parity)."""
        runs = [self.reference_run(inputs if k == 0 else _rounded_differently(inputs, k), grad_out, torch.float32)
                for k in range(ROUNDINGS)]
        scale = FP64_OVER_FP32 if dtype == torch.float64 else 1.0
        bounds = {"out": max(tol, 2 * scale * max(rel_err(out, ref_out) for out, _ in runs))}
        for name, ref in ref_grads.items():
            low = max(rel_err(grads[name], ref, floors.get(name, 0.0)) for _, grads in runs)
            bounds[name] = max(tol, 2 * scale * low)
        return bounds

    def assert_close_to_reference(self, inputs: dict, backend: str, tol: float, dtype=None):
        """``backend``'s output and every gradient (finite, in the inputs' dtype) within ``tolerances`` of the
        float64 reference, relative to max(the reference's norm, the op's ``gradient_error_floors``). Returns the
        errors by name."""
        grad_out = torch.randn_like(inputs[self.output_like], dtype=torch.float64)
        ref_out, ref_grads = self.reference_run(inputs, grad_out)
        out, grads = self.run(self.fused(backend), inputs, grad_out, dtype)
        dtype = dtype or inputs[self.output_like].dtype
        assert out.dtype == dtype and torch.isfinite(out).all()
        floors = self.spec.grad_error_floor(inputs, grad_out)
        errors = {"out": rel_err(out, ref_out)}
        for name, g in grads.items():
            assert torch.isfinite(g).all(), name
            assert g.shape == ref_grads[name].shape, name
            errors[name] = rel_err(g, ref_grads[name], floors.get(name, 0.0))
        bounds = self.tolerances(inputs, grad_out, ref_out, ref_grads, floors, tol, dtype)
        worse = {name: (e, bounds[name]) for name, e in errors.items() if not e <= bounds[name]}
        assert not worse, ("(error, bound)", worse)
        return errors

    def assert_case_close_to_reference(self, s: dict, backend: str, dtype) -> None:
        """``assert_close_to_reference`` of ``dtype`` runs on fresh inputs of size ``s`` on the backend's device, within
        TOL[dtype]."""
        inputs = self.case_inputs(s, device=BACKEND_DEVICE[backend])
        self.assert_close_to_reference(inputs, backend, TOL[dtype], dtype)

    def assert_seeded_case_close_to_reference(self, s: dict, backend: str, seed: int, dtype,
                                              layouts: dict | None = None) -> None:
        """As ``assert_case_close_to_reference`` on the inputs of ``seed`` (a hypothesis draw reproduces them), each
        input of ``layouts`` (name: (layout, dims), ``hypothesis_cases.with_layout``) in that memory layout."""
        with seeded(seed):
            inputs = self.case_inputs(s, device=BACKEND_DEVICE[backend], seed=seed)
            for name, (layout, dims) in (layouts or {}).items():
                inputs[name] = with_layout(inputs[name], layout, dims)
            self.assert_close_to_reference(inputs, backend, TOL[dtype], dtype)

    def assert_gpu_paper_size_close_to_reference(self, backend: str, index: int) -> None:
        """The GPU kernels at the op's ``parity_sizes["cuda"][index]``: float32 output and every gradient against the
        float64 reference."""
        inputs = self.case_inputs(self.spec.parity_sizes["cuda"][index], device="cuda")
        self.assert_close_to_reference(inputs, backend, TOL[torch.float32], torch.float32)

    def assert_gradcheck(self, s: dict, backend: str, names: tuple[str, ...]) -> None:
        """Finite differences (``torch.autograd.gradcheck``, its fast mode under Triton's CPU interpreter) of the
        fused op w.r.t. the inputs ``names``, on fresh float64 inputs of size ``s``."""
        inputs = self.case_inputs(s, device=BACKEND_DEVICE[backend])
        leaves = [inputs[n].detach().clone().requires_grad_(True) for n in names]

        def f(*tensors):
            return self.fused(backend)(**inputs | dict(zip(names, tensors)))

        assert torch.autograd.gradcheck(f, leaves, fast_mode=INTERPRETED and backend == "triton")

    def assert_compiled_sum_matches_eager(self, s: dict, backend: str, device, names: tuple[str, ...],
                                          tol: float) -> None:
        """``op_checks.assert_compiled_function_matches_eager`` of the sum of the fused op's output as a function of
        the inputs ``names`` (fresh float64 inputs of size ``s`` on ``device``), within ``tol``."""
        torch._dynamo.reset()
        inputs = self.case_inputs(s, device=device)
        leaves = [inputs[n].clone().requires_grad_(True) for n in names]

        def total(*tensors):
            return self.fused(backend)(**inputs | dict(zip(names, tensors))).sum()

        assert_compiled_function_matches_eager(total, leaves, tol)

    def assert_float64_parity(self, fn, inputs: dict, grad_out: torch.Tensor | None = None) -> None:
        """``fn(**inputs)``'s output and every gradient (of ``grad_out``, default a fresh float64 one), each finite and
        in the dtype and shape of what it is of, within TOL[float64] of the float64 reference; the gradients' errors
        relative to max(||ref||, the op's ``gradient_error_floors``)."""
        like = inputs[self.output_like]
        grad_out = torch.randn_like(like, dtype=torch.float64) if grad_out is None else grad_out
        out, grads = self.run(fn, inputs, grad_out)
        ref_out, ref_grads = self.reference_run(inputs, grad_out)
        floors = self.spec.grad_error_floor(inputs, grad_out)
        assert out.dtype == like.dtype and out.shape == like.shape and torch.isfinite(out).all()
        assert set(grads) == set(self.spec.grad_inputs)
        errors = {"out": rel_err(out, ref_out)}
        for name, g in grads.items():
            assert g.dtype == inputs[name].dtype and g.shape == inputs[name].shape and torch.isfinite(g).all(), name
            errors[name] = rel_err(g, ref_grads[name], floors.get(name, 0.0))
        assert max(errors.values()) <= TOL[torch.float64], errors

    def poisoned_run(self, monkeypatch, fn, inputs: dict):
        """(out, gradients) of ``fn`` (a Triton op) with every buffer its launchers allocate poisoned (NaN: the
        linear attention's ``POISON_OUTPUTS`` switch that ``_empty`` reads), checked on the way: they have the float64
        parity and equal an unpoisoned run's bit for bit (every element written)."""
        grad_out = torch.randn_like(inputs[self.output_like])
        clean_out, clean_grads = self.run(fn, inputs, grad_out)
        monkeypatch.setattr("trgnet_fast.ops.linear_attention.triton_kernels.POISON_OUTPUTS", True)
        self.assert_float64_parity(fn, inputs, grad_out)
        out, grads = self.run(fn, inputs, grad_out)
        assert torch.equal(out, clean_out)
        for name, g in grads.items():
            assert torch.equal(g, clean_grads[name]), name
        return out, grads

    def assert_launches_are_the_registry_kernels(self, monkeypatch, kernels, forward, backward, s: dict,
                                                 forward_launches: int) -> None:
        """The raw Triton launchers ``forward`` and ``backward`` of ``kernels`` on inputs of size ``s``: forward and
        backward through autograd launch the registry's kernels (``OpSpec.triton_kernels``) in order, the backward
        alone those after the ``forward_launches`` of the forward."""
        launches = record_launches(monkeypatch, kernels)
        inputs = self.case_inputs(s, device=DEVICE)
        out, _ = self.run(lambda **kw: forward(*self.raw_args(kw)), inputs, torch.randn_like(inputs[self.output_like]))
        assert launches == list(self.spec.triton_kernels)
        launches.clear()
        backward(torch.randn_like(out), *self.raw_args(inputs))
        assert launches == list(self.spec.triton_kernels[forward_launches:])

    def assert_empty_sequences_and_uncovered_frames(self, s: dict, backend: str, device, tol: float) -> None:
        """Padded rows (size ``s``: 3 rows of T = 12, "rows" layout) with lengths 5, 0, 4: the empty row and the
        frames past each length are 0 in the output and in grad_x; the rest equals the reference."""
        inputs = self.case_inputs(s, device=device)
        inputs["cu_seqlens"] = torch.tensor([0, 5, 5, 9], dtype=torch.int32, device=inputs["x"].device)
        errors = self.assert_close_to_reference(inputs, backend, tol)
        out, grads = self.run(self.fused(backend), inputs, torch.randn_like(inputs["x"]))
        covered = torch.zeros_like(out, dtype=torch.bool)
        covered[0, :, :5] = covered[2, :, :4] = True
        assert torch.equal(out[~covered], torch.zeros_like(out[~covered]))
        assert torch.equal(grads["x"][~covered], torch.zeros_like(out[~covered]))
        assert errors["out"] <= tol

    def assert_dropout_follows_the_seed(self, s: dict, backend: str, device, no_dropout: dict,
                                        min_change: float = 0.05) -> None:
        """Dropout on (size ``s``): the fused op equals the reference with the same seed (its masks), differs (by
        more than ``min_change`` relative) from the op with ``no_dropout`` (the probabilities at 0, no seed) and from
        another seed."""
        inputs = self.case_inputs(s, device=device)
        out, _ = self.run(self.fused(backend), inputs)
        ref, _ = self.reference_run(inputs)
        assert rel_err(out, ref) <= 1e-10
        off, _ = self.run(self.fused(backend), inputs | no_dropout | {"dropout_seed": None})
        other, _ = self.run(self.fused(backend), inputs | {"dropout_seed": inputs["dropout_seed"] + 1})
        assert rel_err(out, off) > min_change and rel_err(out, other) > min_change

    def assert_16bit_forward_and_grads(self, s: dict, backend: str, device, dtype=torch.float16) -> None:
        """``dtype`` (fp16 / bf16) inputs (size ``s``; fp32 sums, the state inputs kept in fp32): output and gradients
        in ``dtype`` within 2x the error of the reference run in ``dtype`` against the float64 reference (+1e-3 at
        small sizes)."""
        inputs = self.case_inputs(s, device=device)
        inputs = {k: (v.to(dtype).double() if isinstance(v, torch.Tensor) and v.is_floating_point()
                      and k not in self.state_inputs else v)
                  for k, v in inputs.items()}  # the float64 reference sees exactly the 16-bit values
        grad_out = torch.randn_like(inputs[self.output_like]).to(dtype).double()
        self.assert_16bit_close_to_reference(inputs, grad_out, backend, dtype)

    def assert_16bit_close_to_reference(self, inputs: dict, grad_out: torch.Tensor, backend: str, dtype,
                                        out_dtype=None, out_slack: float = 1e-3) -> None:
        """``backend`` run in ``dtype`` (fp16 / bf16; the state inputs in fp32) on ``inputs`` (float64, exactly
        representable in ``dtype``): the output, in ``out_dtype`` (default ``dtype``), within 2x the error of the
        reference run in ``dtype`` against the float64 reference (+ ``out_slack``), each gradient, in its input's
        dtype, likewise (+1e-3)."""
        ref_out, ref_grads = self.reference_run(inputs, grad_out)
        low_out, low_grads = self.reference_run(inputs, grad_out, dtype)
        out, grads = self.run(self.fused(backend), inputs, grad_out, dtype)
        assert out.dtype == (out_dtype or dtype)
        assert rel_err(out, ref_out) <= 2 * rel_err(low_out, ref_out) + out_slack
        for name, g in grads.items():
            assert g.dtype == (torch.float32 if name in self.state_inputs else dtype), name
            assert rel_err(g, ref_grads[name]) <= 2 * rel_err(low_grads[name], ref_grads[name]) + 1e-3, name


class PositionalOpCases:
    """The runners of an op with positional tensor inputs: ``function`` (the public function, which takes
    ``backend=``), the ``names`` of its inputs, its plain-PyTorch ``reference`` and ``grad_errors(grads, ref_grads,
    inputs, grad_out) -> {name: error}`` (relative errors, with the op's gradient floors)."""

    def __init__(self, function, names: tuple[str, ...], reference, grad_errors):
        self.function = function
        self.names = names
        self.reference = reference
        self.grad_errors = grad_errors

    def fused(self, backend: str):
        return lambda *args: self.function(*args, backend=backend)

    def reference64(self, inputs, grad_out):
        """(out, grads) of the reference in float64."""
        return run_with_grads(self.reference, [t.double() for t in inputs], grad_out.double())

    def errors(self, backend: str, inputs, grad_out):
        """(out, {"out": error, <input>: gradient error}) of ``backend``; every gradient in its input's dtype and
        shape."""
        ref_out, ref_grads = self.reference64(inputs, grad_out)
        out, grads = run_with_grads(self.fused(backend), inputs, grad_out)
        for name, g, t in zip(self.names, grads, inputs):
            assert g.dtype == t.dtype and g.shape == t.shape, name
        return out, {"out": rel_err(out, ref_out), **self.grad_errors(grads, ref_grads, inputs, grad_out)}
