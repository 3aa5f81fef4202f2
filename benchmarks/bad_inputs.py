"""Bad-input battery: feeds trgnet_fast hundreds of wrong inputs and counts how each one is answered.

Groups: ``model`` (TRGNet.forward), ``ops`` (every public fused op x backend torch/triton/cuda), ``data`` (the readers
of trgnet_fast/data/), ``config`` (load_config overrides of every DEFAULTS key) and ``cli`` (every ``trgnet`` verb
through ``trgnet_fast.cli.main`` in-process).

Each case says which names a clear error must contain (argument / key / flag / file name, and where sensible the
expected or received value). Outcomes:

    clear    raised an error (CLI: exit 2 with a one-line message) that names them
    handled  a valid (or tolerable) input gave a correct result (checked against the torch reference)
    unclear  raised, but the message lacks them, or an internal error type (IndexError, KeyError, ...) from an API,
             or a valid input was refused
    crash    the process died or hung, or an internal error escaped a CLI verb
    silent   no error and the result is wrong or meaningless

Usage::

    python benchmarks/bad_inputs.py --out benchmarks/results/bad_inputs_after.json [--only GROUP ...]

Every group runs in a worker subprocess that reports case by case; when a worker dies or stops reporting, the case
it was running is a crash and a fresh worker resumes after it, so one segfault loses nothing else. Sizes are tiny:
the battery takes a few minutes on one CPU core (TRITON_INTERPRET=1 runs the Triton kernels on the CPU).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

GROUPS = ("model", "ops", "data", "config", "cli")
OUTCOMES = ("clear", "handled", "unclear", "crash", "silent")
# error types that mean a bug rather than an answer to the input
INTERNAL_ERRORS = (AssertionError, IndexError, KeyError, AttributeError, ZeroDivisionError, NameError,
                   UnboundLocalError, RecursionError)
CASE_TIMEOUT_S = 60   # one case with no result for this long counts as hung
MESSAGE_CHARS = 300


class CaseTimeout(BaseException):
    """Raised by the per-case alarm (a BaseException so that no ``except Exception`` of the code under test eats
    it)."""


@dataclass
class Case:
    group: str
    name: str
    desc: str
    run: Callable[[], object]
    names: tuple = ()
    # None: the input must be refused. Otherwise the input may be handled: check(result) returns None when the
    # result is right, else why it is wrong (silent); a clear refusal is fine too unless must_work.
    check: Callable[[object], str | None] | None = None
    must_work: bool = False
    cli: bool = False


# ---------------------------------------------------------------------------------------------------- classifying

def mentions(text: str, token: str) -> bool:
    """Whether ``text`` names ``token`` (case-insensitive; an identifier only as a whole word)."""
    if re.fullmatch(r"\w+", token):
        return re.search(rf"(?<![\w]){re.escape(token)}(?![\w])", text, re.IGNORECASE) is not None
    return token.lower() in text.lower()


def names_any(text: str, token) -> bool:
    """``token``: a name, or a tuple of alternatives of which ``text`` must name one."""
    return any(mentions(text, t) for t in token) if isinstance(token, tuple) else mentions(text, token)


def _error_outcome(case: Case, exc: BaseException) -> tuple[str, str]:
    message = f"{type(exc).__name__}: {exc}"
    if case.must_work:
        return "unclear", "refused a valid input: " + message
    if isinstance(exc, INTERNAL_ERRORS):
        return "unclear", message
    missing = [n for n in case.names if not names_any(str(exc), n)]
    if missing:
        return "unclear", f"(lacks {missing}) {message}"
    return "clear", message


def _cli_outcome(case: Case, result) -> tuple[str, str]:
    code, err = result
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    if code == 0:
        return "silent", f"exit 0; stderr: {last}"
    if code != 2:
        return "unclear", f"exit {code}; stderr: {last}"
    # argparse prints its usage lines before the error line; the package prints exactly one line
    ok_shape = last.startswith("trgnet") and "error:" in last
    missing = [n for n in case.names if not names_any(last, _flag_alternatives(n))]
    if not ok_shape or missing:
        return "unclear", f"exit 2 (lacks {missing}); stderr: {' | '.join(lines)[-600:]}"
    return "clear", last


def _flag_alternatives(name):
    """A flag (``--min-frames``) may be named as its parameter (``min_frames``) too."""
    if isinstance(name, str) and name.startswith("--"):
        return (name, name[2:].replace("-", "_"))
    return name


def run_case(case: Case) -> dict:
    """Run one case under a per-case alarm and classify it."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_TIMEOUT_S)
    try:
        result = case.run()
        outcome, message = _result_outcome(case, result)
    except CaseTimeout:
        outcome, message = "crash", f"hung: no result in {CASE_TIMEOUT_S} s"
    except SystemExit as e:  # argparse exits 2 on bad usage; the battery reads that through cli_call
        outcome, message = "crash", f"SystemExit({e.code}) escaped"
    except Exception as e:  # noqa: BLE001 - classifying every error is the point
        if case.cli:
            outcome, message = "crash", f"{type(e).__name__} escaped the CLI: {e}"
        else:
            outcome, message = _error_outcome(case, e)
    finally:
        signal.alarm(0)
    return {"group": case.group, "name": case.name, "input": case.desc, "outcome": outcome,
            "message": " ".join(str(message).split())[:MESSAGE_CHARS]}


def _alarm(signum, frame):
    raise CaseTimeout()


def _result_outcome(case: Case, result) -> tuple[str, str]:
    if case.cli:
        return _cli_outcome(case, result)
    if case.check is None:
        return "silent", f"no error; result {describe(result)}"
    problem = case.check(result)
    if problem:
        return "silent", problem
    return "handled", f"result {describe(result)}"


def describe(value) -> str:
    import torch
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)} {value.dtype} {value.device}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(describe(v) for v in value[:4]) + (", ..." if len(value) > 4 else "") + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {describe(v)}" for k, v in list(value.items())[:6]) + "}"
    return repr(value)[:80]


# ------------------------------------------------------------------------------------------------ result checks

def close_to(reference, atol=1e-4, rtol=1e-4):
    """A check: the result equals ``reference`` (a tensor) within tolerances."""
    def check(result):
        import torch
        if not isinstance(result, torch.Tensor) or result.shape != reference.shape:
            return f"expected a tensor{tuple(reference.shape)}, got {describe(result)}"
        if result.device.type == "meta":
            return None
        got, want = result.detach().double().cpu(), reference.detach().double().cpu()
        if not torch.allclose(got, want, atol=atol, rtol=rtol, equal_nan=True):
            return f"wrong values: max |diff| {float((got - want).abs().nan_to_num(float('inf')).max()):.3g}"
        return None
    return check


def _tensors(value):
    import torch
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def finite_shape(shape):
    """A check: finite tensors, the first (the model's logits) of ``shape``."""
    def check(result):
        import torch
        tensors = _tensors(result)
        if not tensors or tuple(tensors[0].shape) != tuple(shape):
            return f"expected shape {tuple(shape)}, got {describe(result)}"
        if not all(bool(torch.isfinite(t).all()) for t in tensors):
            return "non-finite outputs"
        return None
    return check


# -------------------------------------------------------------------------------------------------------- model

MODEL_KW = dict(in_channel=12, n_features=8, n_classes=5, n_stages=2, n_layers=2, n_refine_layers=2, n_stages_asb=2,
                n_stages_brb=2, SFI_layer=[1], dataset="PKU-subject", text_dim=8)


def model_cases() -> list[Case]:
    import torch
    from trgnet_fast.model.trgnet import TRGNet

    torch.manual_seed(0)
    models = {}
    for mode in ("published", "correct"):
        for backend in ("torch", "triton", "cuda"):
            models[mode, backend] = TRGNet(**MODEL_KW, backend=backend, mask_mode=mode).eval()
    n, c, v, t = 2, 12, 25, 16
    x = torch.randn(n, c, v, t)
    mask = torch.ones(n, 1, t)
    mask[1, :, 10:] = 0
    graph = torch.rand(v, v)
    cases: list[Case] = []

    def add(name, desc, args, names=(), check=None, mode="published", backend="torch", train=False, must_work=False):
        model = models[mode, backend]

        def run():
            model.train(train)
            try:
                with torch.no_grad():
                    return model(*args())
            finally:
                model.eval()
        cases.append(Case("model", f"{backend}/{mode}{'/train' if train else ''}/{name}", desc, run, tuple(names),
                          check, must_work))

    def with_x(new):
        return lambda: (new() if callable(new) else new, mask, graph)

    def with_mask(new, mode_x=x):
        return lambda: (mode_x, new() if callable(new) else new, graph)

    def with_graph(new):
        return lambda: (x, mask, new() if callable(new) else new)

    def nan_at(tensor, value, index=(0, 0, 0, 0)):
        out = tensor.clone()
        out[index] = value
        return out

    out_shape = (n, MODEL_KW["n_classes"], t)
    for backend in ("torch", "triton", "cuda"):
        b = backend
        add("valid", "valid input (control)", lambda: (x, mask, graph), check=finite_shape(out_shape), backend=b,
            must_work=True)
        add("x-nan", "x with one NaN", with_x(nan_at(x, float("nan"))), ("x",), backend=b)
        add("x-inf", "x with one +inf", with_x(nan_at(x, float("inf"))), ("x",), backend=b)
        add("x-ninf", "x with one -inf", with_x(nan_at(x, float("-inf"))), ("x",), backend=b)
        add("graph-nan", "joint_graph with one NaN", with_graph(nan_at(graph, float("nan"), (0, 0))),
            ("joint_graph",), backend=b)
        add("graph-inf", "joint_graph with one inf", with_graph(nan_at(graph, float("inf"), (0, 0))),
            ("joint_graph",), backend=b)
        add("T=0", "x (2, 12, 25, 0), mask (2, 1, 0)", lambda: (x[..., :0], mask[..., :0], graph), ("T",),
            check=finite_shape((n, 5, 0)), backend=b)
        # one frame: a result, or a refusal naming x and T (InstanceNorm over one frame is undefined in torch)
        add("T=1", "x (2, 12, 25, 1): a one-frame video", lambda: (x[..., :1], mask[..., :1], graph), ("x", "T"),
            check=finite_shape((n, 5, 1)), backend=b)
        add("N=0", "x (0, 12, 25, 16), mask (0, 1, 16)", lambda: (x[:0], mask[:0], graph), ("N",),
            check=finite_shape((0, 5, t)), backend=b)
        add("T==V", "x (2, 12, 25, 25): T equals V (valid)",
            lambda: (torch.randn(n, c, v, v), torch.ones(n, 1, v), graph), check=finite_shape((n, 5, v)), backend=b,
            must_work=True)
        add("mask-2", "mask with a value 2", with_mask(nan_at(mask, 2.0, (0, 0, 0))), ("mask",), backend=b)
        add("mask-neg", "mask with a value -1", with_mask(nan_at(mask, -1.0, (0, 0, 0))), ("mask",), backend=b)
        add("mask-half", "float mask with a value 0.5", with_mask(nan_at(mask, 0.5, (0, 0, 0))), ("mask",), backend=b)
        add("mask-nan", "mask with a NaN", with_mask(nan_at(mask, float("nan"), (0, 0, 0))), ("mask",), backend=b)
        add("correct/holes", "mask_mode=correct, mask row 1 0 1 (not right-padded)",
            with_mask(nan_at(mask, 0.0, (0, 0, 3))), ("mask",), mode="correct", backend=b)
        add("correct/left-pad", "mask_mode=correct, left-padded row (0 0 1 1 ...)",
            with_mask(lambda: torch.cat([torch.zeros(n, 1, 4), torch.ones(n, 1, t - 4)], -1)), ("mask",),
            mode="correct", backend=b)
        add("correct/valid", "mask_mode=correct, right-padded mask (valid)", lambda: (x, mask, graph),
            check=finite_shape(out_shape), mode="correct", backend=b, must_work=True)
        add("T=1", "training mode, x (2, 12, 25, 1)", lambda: (x[..., :1], mask[..., :1], graph), ("x", "T"),
            check=finite_shape((n, 5, 1)), backend=b, train=True)
        add("x-meta", "x on the meta device", with_x(lambda: x.to("meta")), ("x", "meta"), backend=b)
    add("x-list", "x a nested Python list", with_x(lambda: x.tolist()), ("x",))
    add("x-numpy", "x a numpy array", with_x(lambda: x.numpy()), ("x",))
    add("x-None", "x None", with_x(lambda: None), ("x",))
    add("x-3d", "x 3-D (2, 12, 25)", with_x(x[..., 0]), ("x",))
    add("x-5d", "x 5-D (1, 2, 12, 25, 16)", with_x(x[None]), ("x",))
    add("x-Cin", "x with 11 channels (expected 12)", with_x(x[:, :11]), ("x", "12", "11"))
    add("x-V", "x with 24 joints (expected 25)", with_x(x[:, :, :24]), ("x", "25", "24"))
    add("x-NCTV", "x passed as (N, C, T, V)", with_x(x.transpose(2, 3).contiguous()), ("x",))
    for dtype in ("int64", "int32", "uint8", "bool", "complex64", "float8_e4m3fn"):
        add(f"x-{dtype}", f"x of dtype {dtype}", with_x(lambda d=dtype: x.to(getattr(torch, d))), ("x", dtype))
    for dtype in ("float64", "float16", "bfloat16"):
        add(f"x-{dtype}", f"x of dtype {dtype} (model float32)", with_x(lambda d=dtype: x.to(getattr(torch, d))),
            ("x", dtype), check=finite_shape(out_shape))
    add("mask-3d-wrong-T", "mask (2, 1, 17) vs T=16", with_mask(lambda: torch.ones(n, 1, t + 1)), ("mask",))
    add("mask-2d", "mask (2, 16)", with_mask(lambda: torch.ones(n, t)), ("mask",))
    add("mask-wrong-N", "mask (3, 1, 16)", with_mask(lambda: torch.ones(n + 1, 1, t)), ("mask",))
    add("mask-None", "mask None", with_mask(lambda: None), ("mask",))
    add("mask-int", "int64 0/1 mask (valid)", with_mask(lambda: mask.long()), check=finite_shape(out_shape))
    add("mask-bool", "bool mask (valid)", with_mask(lambda: mask.bool()), check=finite_shape(out_shape),
        must_work=True)
    add("mask-complex", "complex mask", with_mask(lambda: mask.to(torch.complex64)), ("mask",))
    add("mask-meta", "mask on the meta device", with_mask(lambda: mask.to("meta")), ("mask", "meta"))
    add("mask-all-zero", "all-zero mask (every frame padded)", with_mask(lambda: torch.zeros(n, 1, t)), ("mask",),
        check=finite_shape(out_shape))
    add("graph-shape", "joint_graph (24, 24)", with_graph(graph[:24, :24]), ("joint_graph", "25"))
    add("graph-1d", "joint_graph (25,)", with_graph(graph[0]), ("joint_graph",))
    add("graph-batched", "joint_graph (2, 25, 25)", with_graph(graph.expand(n, v, v)), ("joint_graph",))
    add("graph-int", "joint_graph int64", with_graph(graph.long()), ("joint_graph",))
    add("graph-bool", "joint_graph bool", with_graph(graph > 0.5), ("joint_graph",))
    add("graph-complex", "joint_graph complex64", with_graph(graph.to(torch.complex64)), ("joint_graph",))
    add("graph-meta", "joint_graph on meta", with_graph(lambda: graph.to("meta")), ("joint_graph", "meta"))
    add("graph-None", "joint_graph None", with_graph(lambda: None), ("joint_graph",))
    add("graph-f64", "joint_graph float64 (x float32)", with_graph(graph.double()), ("joint_graph",),
        check=finite_shape(out_shape))
    return cases


# ---------------------------------------------------------------------------------------------------------- ops

def _op_sizes():
    from trgnet_fast.ops.adaptive_graph_conv.spec import size as agc
    from trgnet_fast.ops.aris_losses.spec import size as aris
    from trgnet_fast.ops.att_module.spec import size as att
    from trgnet_fast.ops.batch_norm_relu.spec import size as bnr
    from trgnet_fast.ops.dilated_residual.spec import size as drl
    from trgnet_fast.ops.frame_losses.spec import size as fl
    from trgnet_fast.ops.linear_attention.spec import size as lin
    from trgnet_fast.ops.multiscale_graph_conv.spec import size as msg
    from trgnet_fast.ops.spatial_feature_injection.spec import size as sfi
    return {
        "linear_attention": lin(2, 8, h=2, d=4, e=4, masked=True),
        "multiscale_graph_conv": msg(2, 5, v=5, c=3, o=4, s=2),
        "adaptive_graph_conv": agc(2, 5, v=5, c=3),
        "att_module": att(2, 12, c=8, heads=2, dilation=2, mode="decoder", layout="rows", min_length=4),
        "dilated_residual": drl(2, 12, c=4, dilation=2, layout="rows", min_length=4),
        "batch_norm_relu": bnr(2, 6, c=3, v=5, masked=True, residual=True),
        "spatial_feature_injection": sfi(2, 6, c=4, g=2, v=3, masked=True),
        "frame_losses": fl(2, 3, 3, 5, 9, class_weight=True),
        # with the feature head, as the training step runs it (its arguments get the same mutations)
        "aris_losses": aris(2, 3, 9, 4, run=3, spare=2, head=5),
    }


# size keys that are dimensions, the zero-size cases (att_module's and dilated_residual's N = 0 needs no rows)
ZERO_DIMS = {"linear_attention": ("N", "T", "H", "D", "E"), "multiscale_graph_conv": ("N", "C", "T", "V", "O"),
             "adaptive_graph_conv": ("N", "C", "T", "V"), "att_module": ("T", "C"),
             "dilated_residual": ("T", "C"), "batch_norm_relu": ("N", "C", "T", "V"), "spatial_feature_injection": ("N", "T", "C", "G", "V"),
             "frame_losses": ("S", "R", "N", "K", "T"), "aris_losses": ("N", "D", "T", "head")}
# scalar (non-tensor) arguments and bad values for them: value -> must it be refused?
BAD_SCALARS = {
    "linear_attention": {"eps": (float("nan"), -1.0, float("inf"), 0.0)},
    "att_module": {"norm_eps": (float("nan"), -1.0, 0.0), "attention_eps": (float("nan"), -1.0, 0.0),
                   "dropout": (-0.1, 1.0, float("nan")), "attention_dropout": (-0.1, 1.0, float("nan")),
                   "dilation": (0, -1), "heads": (0, 3, -2)},
    "dilated_residual": {"dropout": (-0.1, 1.0, float("nan")), "dilation": (0, -1)},
    "batch_norm_relu": {"eps": (float("nan"), -1.0, float("inf"), 0.0)},
    "spatial_feature_injection": {"dropout": (-0.1, 1.0, float("nan"))},
    "frame_losses": {"threshold": (float("nan"), -1.0, 0.0, float("inf")), "time_axis": (1, "time")},
}
ZERO_OK_SCALARS = {"eps", "norm_eps", "attention_eps"}  # 0 may be valid: held to the torch backend's answer
# frames a mask excludes (by the op's contract) : op -> (masked inputs, how the mask is given)
MASKED_INPUTS = {"linear_attention": ("k", "v", "q"), "att_module": ("x", "values"),
                 "dilated_residual": ("x",), "spatial_feature_injection": ("h", "group")}


def op_cases() -> list[Case]:
    import torch
    from trgnet_fast.ops.registry import OPS

    sizes = _op_sizes()
    cases: list[Case] = []
    for op, spec in OPS.items():
        base = spec.make_inputs(sizes[op], torch.float32, "cpu", torch.Generator().manual_seed(0))
        reference = spec.fused(**base, backend="torch")
        for backend in ("torch", "triton", "cuda"):
            cases += _op_tensor_cases(spec, base, reference, backend)
            cases += _op_scalar_cases(spec, base, backend)
            cases += _op_zero_cases(spec, sizes[op], backend)
            cases += _op_masked_nan_cases(spec, base, backend)
            cases += _op_precision_cases(spec, base, backend)
    return cases


def _op_case(spec, backend, name, desc, inputs, names=(), check=None, must_work=False):
    return Case("ops", f"{spec.name}/{backend}/{name}", desc,
                lambda: spec.fused(**inputs(), backend=backend), tuple(names), check, must_work)


def _non_contiguous(t):
    """Same values, non-contiguous strides (a strided view of a wider buffer)."""
    import torch
    wide = torch.empty(*t.shape, 2, dtype=t.dtype)
    wide[..., 0] = t
    return wide[..., 0]


# (op, argument): a 0-d tensor is documented valid (no rank-1 case), the last dim is free (size+1 is valid), the
# dtype is converted by contract (the dtypes named are valid)
ZERO_DIM_OK = {("adaptive_graph_conv", "beta"), ("aris_losses", "logit_scale")}
FREE_LAST_DIM = {("linear_attention", "v"), ("dilated_residual", "x")}
CONVERTED_DTYPE = {("att_module", "alpha"): ("float64", "float8_e4m3fn"),
                   # the BatchNorm's parameters: any supported floating dtype, taken in the state dtype
                   **{("batch_norm_relu", name): ("float64",) for name in ("weight", "bias")},
                   # another supported floating dtype is converted by contract (float8 is refused)
                   **{("frame_losses", name): ("float64",) for name in ("ce_weight", "pair_weight", "boundary",
                                                                         "boundary_weight", "pos_weight")},
                   # float64 features: the other floating inputs follow them (their compute dtype)
                   **{("aris_losses", name): ("float64",) for name in (
                       "features", "segment_count", "unit_embeddings", "logit_scale", "absolute_weight",
                       "absolute_log_weight", "relative_weight", "relative_log_weight", "head_weight", "head_bias")}}


def _tensor_mutations(op, arg, t):
    """(label, description, function) of the bad variants of one tensor argument."""
    import torch
    floating = t.is_floating_point()
    muts = [("rank+1", "one extra leading dim", lambda a: a.unsqueeze(0)),
            ("size+1", "last dim one longer", lambda a: torch.cat([a, a[..., :1]], -1) if a.dim() else a.reshape(1, 1))]
    if t.dim() > 0 and (op, arg) not in ZERO_DIM_OK:
        muts.append(("rank-1", "first dim dropped", lambda a: a[0]))
    for dtype in ("int32", "bool", "complex64", "float8_e4m3fn"):
        if dtype == "int32" and not floating:
            dtype = "float32"
        if getattr(torch, dtype) != t.dtype:
            muts.append((dtype, f"dtype {dtype}", lambda a, d=dtype: a.to(getattr(torch, d))))
    if floating:
        muts.append(("float64", "float64 while the others are float32", lambda a: a.double()))
    muts.append(("meta", "on the meta device (others on cpu)", lambda a: a.to("meta")))
    return muts


def _op_tensor_cases(spec, base, reference, backend) -> list[Case]:
    import torch
    cases = []
    for arg, value in base.items():
        if not isinstance(value, torch.Tensor):
            continue
        for label, desc, fn in _tensor_mutations(spec.name, arg, value):
            def inputs(arg=arg, fn=fn):
                return {**base, arg: fn(base[arg])}
            names, check = _mutation_expectation(spec, base, arg, label, inputs())
            cases.append(_op_case(spec, backend, f"{arg}/{label}", f"{arg}: {desc}", inputs, names, check))
        if value.dim() > 0:
            def strided(arg=arg):
                return {**base, arg: _non_contiguous(base[arg])}
            cases.append(_op_case(spec, backend, f"{arg}/non-contiguous", f"{arg}: non-contiguous (valid)", strided,
                                  check=close_to(reference), must_work=True))
    cases.append(_op_case(spec, backend, "all/meta", "every tensor on the meta device",
                          lambda: {k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in base.items()},
                          ("meta",), check=close_to(reference)))
    cases += _op_sequence_cases(spec, base, backend)
    return cases


def _mutation_expectation(spec, base, arg, label, inputs):
    """(names a clear error must contain, check of a result or None) of one tensor mutation."""
    import torch
    valid = ((spec.name, arg) in FREE_LAST_DIM and label == "size+1") or (
        label in CONVERTED_DTYPE.get((spec.name, arg), ()))
    if valid:
        return (), _torch_result_check(spec, inputs)
    if label == "size+1":  # a mismatch between two arguments: naming either is clear
        return (tuple(k for k, v in base.items() if isinstance(v, torch.Tensor)),), None
    if label == "meta":
        return (arg, "meta"), None
    if label in ("int32", "float32", "bool", "complex64", "float8_e4m3fn", "float64"):
        return (arg, label), None
    return (arg,), None


def _op_sequence_cases(spec, base, backend) -> list[Case]:
    """Bad masks / cu_seqlens values (shapes are covered by the generic mutations)."""
    import torch
    cases = []
    if base.get("cu_seqlens") is not None:
        t = base["x"].shape[-1]
        bad = {"decreasing": torch.tensor([0, 9, 5], dtype=torch.int32),
               "past-T": torch.tensor([0, 5, t + 7], dtype=torch.int32),
               "negative": torch.tensor([-3, 5, t], dtype=torch.int32),
               "nonzero-start": torch.tensor([2, 5, t], dtype=torch.int32),
               "wrong-count": torch.tensor([0, t], dtype=torch.int32)}
        for label, value in bad.items():
            cases.append(_op_case(spec, backend, f"cu_seqlens/{label}", f"cu_seqlens {value.tolist()} (T={t})",
                                  lambda v=value: {**base, "cu_seqlens": v}, ("cu_seqlens",)))
    if "mask" in base and base["mask"] is None:  # the ops' frame mask (N, 1, T) in the op's dtype
        x = base["x"]
        ones = torch.ones(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
        bad_masks = {"2d": ones[:, 0], "T+1": torch.cat([ones, ones[..., :1]], -1), "N+1": torch.cat([ones, ones[:1]]),
                     "int32": ones.int(), "complex64": ones.to(torch.complex64), "meta": ones.to("meta")}
        for label, value in bad_masks.items():
            names = ("mask", label) if label in ("int32", "complex64", "meta") else ("mask",)
            cases.append(_op_case(spec, backend, f"mask/{label}", f"mask {describe(value)}",
                                  lambda v=value: {**base, "mask": v}, names))
    if spec.name == "att_module":
        cases.append(_op_case(spec, backend, "dropout-without-seed", "dropout 0.5 with dropout_seed None",
                              lambda: {**base, "dropout": 0.5}, ("dropout_seed",)))
        cases.append(_op_case(spec, backend, "dropout_seed/float", "dropout_seed float32 (1,)",
                              lambda: {**base, "dropout": 0.5, "dropout_seed": torch.ones(1)}, ("dropout_seed",)))
    if spec.name == "linear_attention":
        km = base["key_mask"]
        cases.append(_op_case(spec, backend, "key_mask/float01", "key_mask float 0/1 instead of bool",
                              lambda: {**base, "key_mask": km.float()}, ("key_mask",),
                              check=close_to(spec.fused(**base, backend="torch"))))
        cases.append(_op_case(spec, backend, "key_mask/all-false-row", "a row whose key_mask is all False",
                              lambda: {**base, "key_mask": torch.cat([km[:1], torch.zeros_like(km[1:])])},
                              ("key_mask",), check=_finite_result))
    return cases


def _finite_result(result):
    import torch
    return None if bool(torch.isfinite(result).all()) else "non-finite output"


def _op_scalar_cases(spec, base, backend) -> list[Case]:
    cases = []
    for arg, values in BAD_SCALARS.get(spec.name, {}).items():
        for value in values:
            check = None
            if value == 0.0 and arg in ZERO_OK_SCALARS:
                check = _torch_result_check(spec, {**base, arg: value})
            cases.append(_op_case(spec, backend, f"{arg}={value}", f"{arg} = {value}",
                                  lambda a=arg, v=value: {**base, a: v}, (arg,), check))
    return cases


def _torch_result_check(spec, inputs):
    """close_to the torch backend's result, or None (must refuse) when the torch backend refuses ``inputs``."""
    try:
        return close_to(spec.fused(**inputs, backend="torch"))
    except Exception:  # noqa: BLE001 - the op's own contract refuses the value
        return None


def _op_zero_cases(spec, size, backend) -> list[Case]:
    import torch
    cases = []
    for dim in ZERO_DIMS[spec.name]:
        s = {**size, dim: 0}
        try:
            inputs = spec.make_inputs(s, torch.float32, "cpu", torch.Generator().manual_seed(0))
        except Exception:  # noqa: BLE001 - the size cannot even be built; nothing to feed the op
            continue
        try:
            check = close_to(spec.reference(**inputs))
        except Exception:  # noqa: BLE001 - the reference refuses it: an empty result is all a backend may return
            check = _empty_result
        cases.append(_op_case(spec, backend, f"zero-size/{dim}=0", f"{dim} = 0", lambda i=inputs: i, (), check))
    return cases


def _empty_result(result):
    import torch
    if isinstance(result, torch.Tensor) and result.numel() == 0:
        return None
    return f"the torch reference refuses this input, this backend returns {describe(result)}"


def _op_masked_nan_cases(spec, base, backend) -> list[Case]:
    """NaN in frames the op's contract excludes: the outputs on the valid frames must not change."""
    import torch
    if spec.name not in MASKED_INPUTS:
        return []
    valid = _valid_frames(spec.name, base)  # (N, T) bool
    cases = []
    for arg in MASKED_INPUTS[spec.name]:
        if base.get(arg) is None:
            continue
        poisoned = base[arg].clone()
        _frames_view(spec.name, arg, poisoned)[~valid] = float("nan")
        clean = spec.fused(**base, backend="torch")

        def check(result, clean=clean):
            import torch
            got, want = _frames_view(spec.name, "out", result), _frames_view(spec.name, "out", clean)
            if not isinstance(result, torch.Tensor) or got.shape != want.shape:
                return f"got {describe(result)}"
            if not torch.allclose(got[valid], want[valid], atol=1e-4, rtol=1e-4):
                return "outputs on valid frames changed (NaN leaked from excluded frames)"
            return None
        cases.append(_op_case(spec, backend, f"{arg}/nan-in-masked-frames", f"{arg}: NaN in every excluded frame",
                              lambda a=arg, p=poisoned: {**base, a: p}, (), check))
    return cases


def _valid_frames(op, base):
    """(N, T) bool: the frames the op's contract lets reach the valid outputs."""
    import torch
    if op == "linear_attention":
        return base["key_mask"].clone()
    if op == "spatial_feature_injection":
        return base["mask"][:, 0] > 0
    cu = base["cu_seqlens"].tolist()
    t = base["x"].shape[-1]
    frames = torch.zeros(len(cu) - 1, t, dtype=torch.bool)
    for row, (a, b) in enumerate(zip(cu[:-1], cu[1:])):
        frames[row, : b - a] = True
    return frames


def _frames_view(op, arg, t):
    """``t`` as (N, T, ...) so that [valid] picks frames."""
    if op == "linear_attention":
        return t  # (N, T, H, D)
    if op == "spatial_feature_injection" and arg == "group":
        return t.permute(0, 2, 1, 3)  # (N, G, T, V) -> (N, T, G, V)
    return t.transpose(1, 2)  # (N, C, T) -> (N, T, C)


def _op_precision_cases(spec, base, backend) -> list[Case]:
    """16-bit inputs: computed within bf16/fp16 accuracy of the float64 reference, or clearly refused (Triton on
    the CPU refuses bf16 by contract)."""
    import torch
    cases = []
    ref64 = spec.reference(**_cast(base, torch.float64))
    for dtype in ("bfloat16", "float16"):
        def check(result):
            if not isinstance(result, torch.Tensor) or result.shape != ref64.shape:
                return f"got {describe(result)}"
            err = float((result.double() - ref64).abs().max())
            scale = max(1.0, float(ref64.abs().max()))
            return None if err <= 0.06 * scale else f"16-bit result off by {err:.3g} (scale {scale:.3g})"
        cases.append(_op_case(spec, backend, f"all/{dtype}", f"every floating input {dtype} on the CPU",
                              lambda d=dtype: _cast(base, getattr(torch, d)), (dtype,), check))
    return cases


def _cast(inputs, dtype):
    import torch
    from trgnet_fast.ops.att_module.validation import state_dtype
    out = {}
    for k, v in inputs.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            v = v.to(state_dtype(dtype) if k == "alpha" else dtype)
        out[k] = v
    return out


# --------------------------------------------------------------------------------------------------------- data

def _npy(path, array):
    import numpy as np
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, array)


def _write(path, text, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as f:
        f.write(text)


def _valid_pku_video(t=20):
    import numpy as np
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((t, 150)).astype(np.float32)
    labels = np.repeat(np.arange(4), t // 4).astype(np.int64)
    boundary = np.zeros(t, np.float32)
    boundary[[0, 5, 6, 10, 11, 15, 16]] = 1
    return raw, labels, boundary


def _csv_dataset(root, feature=None, label=None, boundary=None, csv_text=None):
    """A one-video published csv dataset under ``root``: a part None is written valid, "missing" not at all, bytes
    as they are, anything else with np.save; returns a function loading item 0."""
    import numpy as np
    from trgnet_fast.data.datasets import CsvSegmentationDataset
    raw, labels, bounds = _valid_pku_video()
    for sub, value, default in (("features", feature, raw), ("gt_arr", label, labels),
                                ("gt_boundary_arr", boundary, bounds)):
        path = os.path.join(root, sub, "v.npy")
        if isinstance(value, bytes):
            _write(path, value, "wb")
        elif isinstance(value, str) and value == "missing":
            os.makedirs(os.path.dirname(path), exist_ok=True)
        else:
            _npy(path, default if value is None else np.asarray(value))
    csv_path = os.path.join(root, "split.csv")
    _write(csv_path, csv_text if csv_text is not None
           else "feature,label,boundary\n/features/v.npy,/gt_arr/v.npy,/gt_boundary_arr/v.npy\n")
    return lambda: CsvSegmentationDataset(csv_path, root, "PKU-subject", num_classes=5)[0]


def _npy_bytes(array, allow_pickle=False) -> bytes:
    import numpy as np
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def _truncated_npy(array) -> bytes:
    data = _npy_bytes(array)
    return data[: len(data) // 2]


def _item_check(t):
    """A check for a valid item of t frames."""
    def check(item):
        import torch
        if not isinstance(item, dict) or item["feature"].shape[-1] != t or item["label"].shape != (t,):
            return f"got {describe(item)}"
        if not bool(torch.isfinite(item["feature"]).all()):
            return "non-finite features"
        return None
    return check


def data_cases(tmp) -> list[Case]:
    import numpy as np
    raw, labels, bounds = _valid_pku_video()
    t = raw.shape[0]
    cases: list[Case] = []
    counter = iter(range(10 ** 6))

    def root():
        return os.path.join(tmp, f"d{next(counter)}")

    def add(name, desc, run, names=(), check=None, must_work=False):
        cases.append(Case("data", name, desc, run, tuple(names), check, must_work))

    nan_raw = raw.copy()
    nan_raw[3, 7] = np.nan
    inf_raw = raw.copy()
    inf_raw[0, 0] = np.inf
    bad_features = {
        "missing": ("missing", "the feature file does not exist"),
        "empty": (b"", "0-byte file"),
        "truncated": (_truncated_npy(raw), "the first half of a valid .npy"),
        "garbage": (b"not an npy file at all\n" * 4, "text bytes"),
        "pickled": (_npy_bytes(np.array([{"a": 1}] * t, dtype=object), allow_pickle=True),
                    "an object array (needs pickle)"),
        "shape-149": (raw[:, :149], "(T, 149)"),
        "shape-1d": (raw[:, 0], "(T,)"),
        "shape-4d": (raw[None, None], "(1, 1, T, 150)"),
        "complex": (raw.astype(np.complex64), "complex64"),
        "bool": (raw > 0, "bool"),
        "str": (raw.astype(str)[:, :150], "unicode strings"),
        "nan": (nan_raw, "one NaN"),
        "inf": (inf_raw, "one inf"),
        "0-frame": (raw[:0], "(0, 150): a video without frames"),
        "built-wrong-C": (np.zeros((11, 25, t), np.float32), "built (11, 25, T)"),
        "built-nan": (np.full((12, 25, t), np.nan, np.float32), "built (12, 25, T), all NaN"),
    }
    for label, (value, desc) in bad_features.items():
        add(f"csv/feature/{label}", f"feature file: {desc}", _csv_dataset(root(), feature=value), ("v.npy",))
    one = _valid_pku_video()
    add("csv/feature/1-frame", "a one-frame video (features, labels, boundary of 1 frame)",
        _csv_dataset(root(), feature=one[0][:1], label=one[1][:1], boundary=one[2][:1]), ("v.npy",),
        check=_item_check(1))
    add("csv/feature/int", "integer features (T, 150) int64", _csv_dataset(root(), feature=raw.astype(np.int64)),
        ("v.npy",), check=_item_check(t))
    bad_labels = {
        "missing": ("missing", "the label file does not exist"),
        "empty": (b"", "0-byte file"),
        "truncated": (_truncated_npy(labels), "half a .npy"),
        "2d": (labels[None], "(1, T)"),
        "float-frac": (labels + 0.5, "non-integral floats"),
        "nan": (np.where(np.arange(t) == 3, np.nan, labels), "a NaN label"),
        "complex": (labels.astype(np.complex64), "complex"),
        "bool": (labels > 1, "bool"),
        "str": (labels.astype(str), "strings"),
        "out-of-range": (np.where(np.arange(t) == 3, 5, labels), "class id 5 with 5 classes"),
        "negative": (np.where(np.arange(t) == 3, -1, labels), "class id -1"),
        "300": (np.where(np.arange(t) == 3, 300, labels), "class id 300"),
        "short": (labels[:-1], "T-1 labels"),
        "long": (np.concatenate([labels, labels[:1]]), "T+1 labels"),
        "0-length": (labels[:0], "no labels"),
    }
    for label, (value, desc) in bad_labels.items():
        add(f"csv/label/{label}", f"label file: {desc}", _csv_dataset(root(), label=value), ("v.npy",))
    add("csv/label/255", "label 255 (ignored frame, valid)",
        _csv_dataset(root(), label=np.where(np.arange(t) == 3, 255, labels)), check=_item_check(t), must_work=True)
    bad_boundaries = {
        "missing": ("missing", "the boundary file does not exist"),
        "empty": (b"", "0-byte file"),
        "truncated": (_truncated_npy(bounds), "half a .npy"),
        "2d": (bounds[None], "(1, T)"),
        "nan": (np.where(np.arange(t) == 3, np.nan, bounds), "a NaN"),
        "str": (bounds.astype(str), "strings"),
        "complex": (bounds.astype(np.complex64), "complex"),
        "value-2": (np.where(np.arange(t) == 3, 2.0, bounds), "a value 2"),
        "value-neg": (np.where(np.arange(t) == 3, -1.0, bounds), "a value -1"),
        "value-half": (np.where(np.arange(t) == 3, 0.5, bounds), "a value 0.5"),
        "short": (bounds[:-1], "T-1 values"),
        "long": (np.concatenate([bounds, bounds[:1]]), "T+1 values"),
    }
    for label, (value, desc) in bad_boundaries.items():
        add(f"csv/boundary/{label}", f"boundary file: {desc}", _csv_dataset(root(), boundary=value), ("v.npy",))
    add("csv/boundary/bool", "bool boundary (valid 0/1)", _csv_dataset(root(), boundary=bounds > 0),
        check=_item_check(t))
    bad_csvs = {
        "empty": ("", "empty csv"),
        "bad-header": ("a,b,c\n/features/v.npy,/gt_arr/v.npy,/gt_boundary_arr/v.npy\n", "wrong header"),
        "2-columns": ("feature,label,boundary\n/features/v.npy,/gt_arr/v.npy\n", "a 2-column row"),
        "no-rows": ("feature,label,boundary\n", "header only"),
        "missing-target": ("feature,label,boundary\n/features/x.npy,/gt_arr/v.npy,/gt_boundary_arr/v.npy\n",
                           "a row naming a missing feature file"),
        "dir-row": ("feature,label,boundary\n/features,/gt_arr/v.npy,/gt_boundary_arr/v.npy\n",
                    "a row naming a directory"),
    }
    for label, (text, desc) in bad_csvs.items():
        names = ("x.npy",) if label == "missing-target" else ("features",) if label == "dir-row" else ("split.csv",)
        add(f"csv/split/{label}", f"split csv: {desc}", _csv_dataset(root(), csv_text=text), names)

    def missing_csv():
        from trgnet_fast.data.datasets import CsvSegmentationDataset
        return CsvSegmentationDataset(os.path.join(tmp, "nope.csv"), tmp, "PKU-subject")[0]
    add("csv/split/missing", "split csv does not exist", missing_csv, ("nope.csv",))
    cases += _mapping_cases(tmp, root)
    cases += _mstcn_cases(tmp, root)
    cases += _pku_cases(tmp, root)
    return cases


def _mapping_cases(tmp, root) -> list[Case]:
    from trgnet_fast.data.labels import read_mapping
    bad = {"empty": ("", "empty file"), "blank": ("\n\n", "blank lines only"),
           "non-int-id": ("a walk\n", "non-integer id"), "gap": ("0 walk\n2 run\n", "ids 0, 2"),
           "start-1": ("1 walk\n2 run\n", "ids from 1"), "duplicate": ("0 walk\n1 walk\n", "duplicate names"),
           "one-token": ("0\n", "an id without a name"), "binary": (b"\xff\xfe\x00\x01bad", "non-UTF-8 bytes"),
           "negative": ("-1 walk\n", "id -1")}
    cases = []
    for label, (text, desc) in bad.items():
        path = os.path.join(root(), "mapping.txt")
        _write(path, text, "wb" if isinstance(text, bytes) else "w")
        cases.append(Case("data", f"mapping/{label}", f"mapping.txt: {desc}", lambda p=path: read_mapping(p),
                          ("mapping.txt",)))
    cases.append(Case("data", "mapping/missing", "mapping.txt missing",
                      lambda: read_mapping(os.path.join(tmp, "none", "mapping.txt")), ("mapping.txt",)))
    cases.append(Case("data", "mapping/directory", "mapping path is a directory",
                      lambda: read_mapping(tmp), (os.path.basename(tmp),)))
    return cases


def _mstcn_root(r, feature=None, gt=None, bundle="v.txt\n", mapping="0 walk\n1 run\n2 sit\n", layout="CTVM"):
    import numpy as np
    from trgnet_fast.data.datasets import MSTCNDataset
    t = 12
    rng = np.random.default_rng(1)
    _write(os.path.join(r, "mapping.txt"), mapping)
    _write(os.path.join(r, "splits", "test.bundle"), bundle)
    _write(os.path.join(r, "groundTruth", "v.txt"), gt if gt is not None else "walk\n" * 6 + "run\n" * 6)
    if isinstance(feature, bytes):
        _write(os.path.join(r, "features", "v.npy"), feature, "wb")
    else:
        default = rng.standard_normal((3, t, 25, 2)).astype(np.float32)
        if layout == "CVT":
            default = rng.standard_normal((12, 25, t)).astype(np.float32)
        _npy(os.path.join(r, "features", "v.npy"), default if feature is None else feature)
    return lambda: MSTCNDataset(r, "test.bundle", "PKU-subject", feature_layout=layout)[0]


def _mstcn_cases(tmp, root) -> list[Case]:
    import numpy as np
    rng = np.random.default_rng(2)
    good = rng.standard_normal((3, 12, 25, 2)).astype(np.float32)
    nan = good.copy()
    nan[0, 2, 3, 0] = np.nan
    cases = []

    def add(name, desc, run, names, check=None):
        cases.append(Case("data", f"mstcn/{name}", desc, run, names, check))
    add("gt/unknown-class", "groundTruth names a class not in mapping.txt",
        _mstcn_root(root(), gt="walk\n" * 6 + "jump\n" * 6), ("v.txt", "jump"))
    add("gt/empty", "empty groundTruth file", _mstcn_root(root(), gt=""), ("v.txt",))
    add("gt/short", "groundTruth 11 lines for 12 frames", _mstcn_root(root(), gt="walk\n" * 11), ("v.txt",))
    add("gt/long", "groundTruth 13 lines for 12 frames", _mstcn_root(root(), gt="walk\n" * 13), ("v.txt",))
    add("bundle/empty", "empty split bundle", _mstcn_root(root(), bundle=""), ("test.bundle",))
    add("bundle/unknown-video", "bundle lists a video without files", _mstcn_root(root(), bundle="w.txt\n"),
        ("w",))
    add("mapping/empty", "empty mapping.txt", _mstcn_root(root(), mapping=""), ("mapping.txt",))
    add("feature/3d", "CTVM feature (3, 12, 25)", _mstcn_root(root(), feature=good[..., 0]), ("v.npy",))
    add("feature/V=24", "CTVM feature with 24 joints", _mstcn_root(root(), feature=good[:, :, :24]), ("v.npy",))
    add("feature/C=2", "CTVM feature with 2 channels", _mstcn_root(root(), feature=good[:2]), ("v.npy",))
    add("feature/nan", "CTVM feature with a NaN", _mstcn_root(root(), feature=nan), ("v.npy",))
    add("feature/0-frame", "CTVM feature (3, 0, 25, 2)", _mstcn_root(root(), feature=good[:, :0]), ("v.npy",))
    add("feature/complex", "CTVM complex64 feature", _mstcn_root(root(), feature=good.astype(np.complex64)),
        ("v.npy",))
    add("feature/str", "CTVM string feature", _mstcn_root(root(), feature=good.astype(str)), ("v.npy",))
    add("feature/bool", "CTVM bool feature", _mstcn_root(root(), feature=good > 0), ("v.npy",))
    add("feature/empty", "0-byte feature file", _mstcn_root(root(), feature=b""), ("v.npy",))
    add("feature/1-frame", "CTVM one-frame video with one groundTruth line",
        _mstcn_root(root(), feature=good[:, :1], gt="walk\n"), ("v.npy",), check=_item_check(1))
    add("cvt/wrong-V", "CVT feature (12, 24, 12)", _mstcn_root(root(), feature=np.zeros((12, 24, 12), np.float32),
                                                          layout="CVT"), ("v.npy",))
    add("cvt/wrong-C", "CVT feature (11, 25, 12)", _mstcn_root(root(), feature=np.zeros((11, 25, 12), np.float32),
                                                          layout="CVT"), ("v.npy",))
    add("cvt/complex", "CVT complex feature",
        _mstcn_root(root(), feature=np.zeros((12, 25, 12), np.complex64), layout="CVT"), ("v.npy",))
    add("cvt/str", "CVT string feature", _mstcn_root(root(), feature=np.zeros((12, 25, 12)).astype(str),
                                                    layout="CVT"), ("v.npy",))
    return cases


def _text_file_cases(root, kind: str, what: str, file_name: str, files: dict, read) -> list:
    """One case per ``label: (content, description)`` of ``files``: the content written (bytes as they are) to
    ``file_name`` in a fresh ``root()`` folder, read by ``read(path)``; a clear error names the file."""
    cases = []
    for label, (text, desc) in files.items():
        path = os.path.join(root(), file_name)
        _write(path, text, "wb" if isinstance(text, bytes) else "w")
        cases.append(Case("data", f"pku/{kind}/{label}", f"{what}: {desc}", lambda p=path: read(p), (file_name,)))
    return cases


def _pku_cases(tmp, root) -> list[Case]:
    from trgnet_fast.data.pku_convert import read_cross_subject, read_label_txt, read_skeleton_txt
    row = " ".join(["0.5"] * 150) + "\n"
    skeletons = {"empty": ("", "empty file"), "non-numeric": (row.replace("0.5", "abc", 1), "a word"),
                 "149": (" ".join(["0.5"] * 149) + "\n", "149 numbers"),
                 "151": (" ".join(["0.5"] * 151) + "\n", "151 numbers"),
                 "nan": (row.replace("0.5", "nan", 1) * 3, "a 'nan' value"),
                 "inf": (row.replace("0.5", "inf", 1) * 3, "an 'inf' value"),
                 "binary": (b"\xff\xfe\x00", "non-UTF-8 bytes")}
    cases = _text_file_cases(root, "skeleton", "skeleton txt", "A001.txt", skeletons, read_skeleton_txt)
    cases.append(Case("data", "pku/skeleton/missing", "skeleton txt missing",
                      lambda: read_skeleton_txt(os.path.join(tmp, "none.txt")), ("none.txt",)))
    label_files = {"class-0": ("0,1,5,1\n", "class 0"), "class-52": ("52,1,5,1\n", "class 52"),
                   "end<start": ("3,9,5,1\n", "end before start"), "words": ("a,b,c,d\n", "not numbers"),
                   "2-fields": ("3,1\n", "2 fields"), "negative": ("3,-5,-1,1\n", "negative frames"),
                   "past-end": ("3,50,60,1\n", "a segment past the video's 20 frames"),
                   "float": ("3,1.5,5,1\n", "a fractional frame"), "binary": (b"\xff\xfe", "non-UTF-8 bytes")}
    cases += _text_file_cases(root, "label", "label txt", "A001-L.txt", label_files, lambda p: read_label_txt(p, 20))
    splits = {"empty": ("", "empty"), "no-heading": ("A001 A002\n", "ids before any heading"),
              "train-only": ("Training videos: A001\n", "no test section"),
              "binary": (b"\xff\xfe\x00", "non-UTF-8 bytes")}
    cases += _text_file_cases(root, "cross-subject", "cross-subject file", "cross_subject.txt", splits,
                              read_cross_subject)
    cases.append(Case("data", "pku/cross-subject/missing", "cross-subject file missing",
                      lambda: read_cross_subject(os.path.join(tmp, "cs_none.txt")), ("cs_none.txt",)))
    return cases


# ------------------------------------------------------------------------------------------------------- config

# per key: bad override values (YAML text). Keys not listed get the generic values of their default's type.
GENERIC_BAD = {
    bool: ("2", "abc", "[1]", ".nan"),
    int: ("abc", "1.5", ".nan", ".inf", "-5", "[1]"),
    float: ("abc", ".nan", ".inf", "-1.0", "[1]"),
    str: ("123", "[a, b]", "{a: 1}"),
    list: ("abc", "5", "{a: 1}"),
}
EXTRA_BAD = {
    "name": ('""',), "dataset": ("bogus",), "data.format": ("bogus",), "data.feature_format": ("bogus",),
    "data.feature_layout": ("bogus",), "data.val_every": ("0", "1"), "data.num_workers": ("-1",),
    "data.synthetic.n_train": ("0",), "data.synthetic.n_val": ("-1",), "data.synthetic.n_test": ("-1",),
    "data.synthetic.min_frames": ("0",), "data.synthetic.max_frames": ("0", "10"),
    "model.n_features": ("0",), "model.n_stages": ("0",), "model.n_layers": ("0",), "model.n_refine_layers": ("0",),
    "model.n_stages_asb": ("0",), "model.n_stages_brb": ("0",), "model.mask_mode": ("bogus",),
    "loss.lambda_b": (), "optim.lr": ("0",), "optim.betas": ("[1.5, 0.9]", "[0.9]", "[.nan, 0.9]", "[-0.1, 0.9]"),
    "optim.eps": ("0",), "train.epochs": ("0",), "train.batch_size": ("0",), "train.device": ("bogus", "cuda:x"),
    "train.best_metric": ("bogus",), "train.eval_every": ("0",), "train.log_every": ("0",),
    "eval.refinement": ("bogus",), "eval.boundary_th": ("1.5",), "eval.tolerance": (),
    "eval.iou_thresholds": ("[]", "[1.5]", "[-0.5]", "[.nan]", "[a]"), "eval.f1_end": ("bogus",),
    "text.pooling": ("bogus",), "text.joint_graph": ("bogus",), "text.action_embeddings": ("bogus",),
    "text.action_graph": ("bogus",),
}
# valid values among the generic ones (torch.manual_seed takes any int)
GENERIC_OK = {"train.seed": ("-5",)}
# None-default keys: their bad values
NONE_KEYS_BAD = {
    "output_dir": ("123", "[a]"), "data.dir": ("123", "[a]"), "data.train_csv": ("123",), "data.test_csv": ("123",),
    "data.val_csv": ("123",), "data.mapping": ("123",),
    "model.in_channel": ("abc", "0", "-1", "1.5", ".nan"), "model.n_classes": ("abc", "0", "-1", "300", ".inf"),
    "model.SFI_layer": ("abc", "[99]", "[-1]", "[1, 1]", "[1.5]"), "model.backend": ("bogus", "123"),
    "text.encoder": ("123",), "text.descriptions": ("123",), "text.dataset": ("bogus", "123"),
    "text.embeddings_dir": ("123",), "text.cache_dir": ("123",), "text.text_dim": ("abc", "0", "-1", "1.5"),
    "optim.grad_clip": ("abc", "-1", "0", ".nan"), "train.max_steps_per_epoch": ("abc", "0", "-1", "1.5"),
    "eval.background": ("1.5", "{a: 1}"),
}


def _leaves(schema, prefix=""):
    for key, value in schema.items():
        if isinstance(value, dict):
            yield from _leaves(value, prefix + key + ".")
        else:
            yield prefix + key, value


def config_cases() -> list[Case]:
    from trgnet_fast.training.config import DEFAULTS, load_config
    cases = []
    for key, default in _leaves(DEFAULTS):
        if default is None:
            values = NONE_KEYS_BAD.get(key, ("{a: 1}",))
        else:
            kind = bool if isinstance(default, bool) else type(default)
            values = tuple(v for v in GENERIC_BAD[kind] if v not in GENERIC_OK.get(key, ()))
            values += tuple(EXTRA_BAD.get(key, ()))
        for value in dict.fromkeys(values):
            item = f"{key}={value}"
            cases.append(Case("config", item, f"load_config('synthetic', ['{item}'])",
                              lambda i=item: load_config("synthetic", [i]), (key,)))
    cases.append(Case("config", "unknown-key", "load_config override of an unknown key",
                      lambda: load_config("synthetic", ["train.epochz=3"]), ("train.epochz",)))
    cases.append(Case("config", "no-equals", "override without '='",
                      lambda: load_config("synthetic", ["train.epochs"]), ("train.epochs",)))
    cases.append(Case("config", "section-scalar", "a section set to a scalar",
                      lambda: load_config("synthetic", ["train=3"]), ("train",)))
    cases.append(Case("config", "bad-yaml", "override value that is not YAML",
                      lambda: load_config("synthetic", ["train.epochs=[1"]), ("train.epochs",)))
    cases.append(Case("config", "missing-file", "config path that does not exist",
                      lambda: load_config("/nonexistent/cfg.yaml"), ("cfg.yaml",)))
    return cases


# ---------------------------------------------------------------------------------------------------------- cli

TINY_TRAIN = ["--set", "model.n_features=8", "--set", "model.n_layers=2", "--set", "model.n_refine_layers=2",
              "--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=1", "--set", "train.batch_size=2",
              "--set", "text.joint_graph=physical", "--set", "text.action_embeddings=null",
              "--set", "text.action_graph=null", "--no-progress", "--device", "cpu"]


def cli_call(argv):
    """(exit code, stderr) of ``trgnet argv`` in-process; stdout is discarded."""
    from trgnet_fast.cli import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else 1
    return code, err.getvalue()


def _cli_fixtures(tmp):
    """A tiny synthetic dataset and a checkpoint trained one step on it."""
    data = os.path.join(tmp, "synth")
    code, err = cli_call(["make-synthetic", "--out", data, "--n-train", "4", "--n-val", "1", "--n-test", "2",
                          "--min-frames", "40", "--max-frames", "60"])
    if code != 0:
        raise RuntimeError(f"cli fixture: make-synthetic failed: {err}")
    run = os.path.join(tmp, "run")
    code, err = cli_call(["train", "--data", data, "--out", run, *TINY_TRAIN])
    if code != 0:
        raise RuntimeError(f"cli fixture: train failed: {err}")
    return data, os.path.join(run, "last.pt")


def cli_cases(tmp) -> list[Case]:
    data, ckpt = _cli_fixtures(tmp)
    junk = os.path.join(tmp, "junk.pt")
    _write(junk, b"\x00not a checkpoint", "wb")
    text = os.path.join(tmp, "notes.txt")
    _write(text, "hello\n")
    bad_csv = os.path.join(tmp, "metrics_bad.csv")
    _write(bad_csv, "video,F1@50\nall,abc\n")
    skels, labels, bad_labels, empty = (os.path.join(tmp, d) for d in ("skel", "lab", "badlab", "empty"))
    _write(os.path.join(skels, "0002-M.txt"), (" ".join(["0.5"] * 150) + "\n") * 4)
    _write(os.path.join(labels, "0002-M.txt"), "1,1,2,1\n")
    _write(os.path.join(bad_labels, "0002-M.txt"), "99,1,2,1\n")
    os.makedirs(empty)
    out = lambda name: os.path.join(tmp, "out", name)  # noqa: E731 - a one-line path helper
    train = ["train", "--data", data, "--out", os.path.join(tmp, "tr"), *TINY_TRAIN]
    viz = ["viz-graphs", "--checkpoint", ckpt, "--video", "test_0000", "--data", data]  # a video of the test split
    verbs = {
        "info": [(["info", "--bogus"], ("--bogus",))],
        "parity": [(["parity", "--op", "nope", "--small"], ("--op", "nope")),
                   (["parity", "--dtype", "int8"], ("--dtype", "int8")),
                   (["parity", "--device", "tpu"], ("--device", "tpu")),
                   (["parity", "--backend", "opencl"], ("--backend", "opencl")),
                   (["parity", "--seed", "abc"], ("--seed", "abc")),
                   (["parity", "--device", "cuda", "--small", "--op", "linear_attention"], ("cuda",))],
        "train": [(train + ["--epochs", "0"], ("train.epochs",)),
                  (train + ["--epochs", "-3"], ("train.epochs",)),
                  (train + ["--epochs", "abc"], ("--epochs",)),
                  (train + ["--config", "nope"], ("nope",)),
                  (train + ["--config", text], ("notes.txt",)),
                  (train + ["--set", "optim.lr=-1"], ("optim.lr",)),
                  (train + ["--set", "optim.lr=.nan"], ("optim.lr",)),
                  (train + ["--set", "train.batch_size=0"], ("train.batch_size",)),
                  (train + ["--set", "nokey=1"], ("nokey",)),
                  (train + ["--set", "train.epochs"], ("train.epochs",)),
                  (train + ["--device", "bogus"], ("bogus",)),
                  (train + ["--device", "cuda:7"], ("cuda:7",)),
                  (train + ["--set", "model.n_layers=0"], ("model.n_layers",)),
                  (train + ["--set", "model.SFI_layer=[9]"], ("SFI_layer",)),
                  (train + ["--set", "model.backend=bogus"], ("backend", "bogus")),
                  (train + ["--set", "eval.boundary_th=5"], ("eval.boundary_th",)),
                  (train + ["--set", "train.best_metric=bogus"], ("train.best_metric",)),
                  (train + ["--set", "data.train_csv=nope.csv"], ("nope.csv",)),
                  (train + ["--set", "model.n_classes=300"], ("n_classes",)),
                  (["train", "--data", os.path.join(tmp, "nodata"), "--out", out("t1"), *TINY_TRAIN], ("nodata",)),
                  (["train", "--data", text, "--out", out("t2"), *TINY_TRAIN], ("notes.txt",)),
                  (["train", "--out", text, "--data", data, *TINY_TRAIN], ("notes.txt",))],
        "eval": [(["eval", "--checkpoint", os.path.join(tmp, "none.pt")], ("none.pt",)),
                 (["eval", "--checkpoint", junk], ("junk.pt",)),
                 (["eval", "--checkpoint", text], ("notes.txt",)),
                 (["eval", "--checkpoint", tmp], (os.path.basename(tmp),)),
                 (["eval", "--checkpoint", ckpt, "--split", "dev"], ("--split", "dev")),
                 (["eval", "--checkpoint", ckpt, "--device", "bogus", "--out", out("e1")], ("bogus",)),
                 (["eval", "--checkpoint", ckpt, "--data", os.path.join(tmp, "nodata"), "--out", out("e2")],
                  ("nodata",)),
                 (["eval", "--checkpoint", ckpt, "--out", text], ("notes.txt",)),
                 (["eval", "--checkpoint", ckpt, "--f1-end", "x"], ("--f1-end", "x"))],
        "predict": [(["predict", "--checkpoint", os.path.join(tmp, "none.pt"), "--out", out("p1")], ("none.pt",)),
                    (["predict", "--checkpoint", junk, "--out", out("p2")], ("junk.pt",)),
                    (["predict", "--checkpoint", ckpt], ("--out",)),
                    (["predict", "--checkpoint", ckpt, "--out", text], ("notes.txt",)),
                    (["predict", "--checkpoint", ckpt, "--out", out("p3"), "--device", "cuda:9"], ("cuda:9",)),
                    (["predict", "--checkpoint", ckpt, "--out", out("p4"), "--data", text], ("notes.txt",))],
        "average-splits": [(["average-splits", os.path.join(tmp, "none.csv")], ("none.csv",)),
                           (["average-splits", text], ("notes.txt",)),
                           (["average-splits", bad_csv], ("metrics_bad.csv",)),
                           (["average-splits", junk], ("junk.pt",)),
                           (["average-splits", tmp], (os.path.basename(tmp),))],
        "make-synthetic": [(["make-synthetic", "--out", out("s1"), "--n-train", "-1"], ("--n-train",)),
                           (["make-synthetic", "--out", out("s2"), "--n-train", "0", "--n-val", "0", "--n-test", "0"],
                            ("--n-train",)),
                           (["make-synthetic", "--out", out("s3"), "--min-frames", "0"], ("--min-frames",)),
                           (["make-synthetic", "--out", out("s4"), "--min-frames", "50", "--max-frames", "10"],
                            ("--max-frames",)),
                           (["make-synthetic", "--out", out("s5"), "--n-val", "-2"], ("--n-val",)),
                           (["make-synthetic", "--out", out("s6"), "--seed", "-1", "--n-train", "1"], ("--seed",)),
                           (["make-synthetic", "--out", text], ("notes.txt",)),
                           (["make-synthetic", "--out", out("s7"), "--n-train", "abc"], ("--n-train",))],
        "convert-pku": [(["convert-pku", "--skeletons", os.path.join(tmp, "nosk"), "--labels", labels, "--out",
                          out("c1")], ("nosk",)),
                        (["convert-pku", "--skeletons", skels, "--labels", os.path.join(tmp, "nolab"), "--out",
                          out("c2")], ("nolab",)),
                        (["convert-pku", "--skeletons", text, "--labels", text, "--out", out("c3")], ("notes.txt",)),
                        (["convert-pku", "--skeletons", empty, "--labels", labels, "--out", out("c4")], ("empty",)),
                        (["convert-pku", "--skeletons", skels, "--labels", labels, "--out", out("c5"), "--frame-base",
                          "-4"], ("--frame-base",)),
                        (["convert-pku", "--skeletons", skels, "--labels", labels, "--out", out("c6"),
                          "--cross-subject", os.path.join(tmp, "nocs.txt")], ("nocs.txt",)),
                        (["convert-pku", "--skeletons", skels, "--labels", labels, "--out", out("c7"),
                          "--class-names", os.path.join(tmp, "nocls.txt")], ("nocls.txt",)),
                        (["convert-pku", "--skeletons", skels, "--labels", bad_labels, "--out", out("c8")],
                         ("0002-M.txt",))],
        "text-graphs": [(["text-graphs", "--dataset", "bogus", "--out", out("g1")], ("--dataset", "bogus")),
                        (["text-graphs", "--dataset", "PKU-subject", "--pooling", "max"], ("--pooling", "max")),
                        (["text-graphs", "--dataset", "PKU-subject", "--encoder", os.path.join(tmp, "noenc"),
                          "--out", out("g2")], ("noenc",)),
                        (["text-graphs", "--dataset", "PKU-subject", "--embeddings-dir", os.path.join(tmp, "noemb"),
                          "--out", out("g3")], ("noemb",)),
                        (["text-graphs", "--dataset", "PKU-subject", "--descriptions", os.path.join(tmp, "nod.txt"),
                          "--out", out("g4")], ("nod.txt",)),
                        (["text-graphs", "--dataset", "PKU-subject", "--class-names", os.path.join(tmp, "noc.txt"),
                          "--out", out("g5")], ("noc.txt",))],
        "viz-graphs": [(["viz-graphs", "--checkpoint", os.path.join(tmp, "none.pt"), "--video", "x"], ("none.pt",)),
                       (["viz-graphs", "--checkpoint", junk, "--video", "x"], ("junk.pt",)),
                       (["viz-graphs", "--checkpoint", ckpt, "--video", "novideo", "--data", data, "--out", out("v1")],
                        ("novideo",)),
                       (["viz-graphs", "--checkpoint", ckpt, "--video", text, "--out", out("v2")], ("notes.txt",)),
                       (["viz-graphs", "--checkpoint", ckpt, "--video", "novideo.npy", "--out", out("v3")],
                        ("novideo.npy",)),
                       (viz + ["--max-segments", "-1", "--out", out("v4")], ("--max-segments",)),
                       (viz + ["--frames", "a,b", "--out", out("v5")], ("--frames",)),
                       (viz + ["--frames", "99999", "--out", out("v8")], ("--frames", "99999")),
                       (viz + ["--joint-graph", "bogus", "--out", out("v6")], ("bogus",)),
                       (["viz-graphs", "--checkpoint", ckpt, "--video", "x", "--n-classes", "abc"], ("--n-classes",)),
                       (viz + ["--device", "bogus", "--out", out("v7")], ("bogus",))],
        "top": [(["--bogus"], ("--bogus",)), (["nosuchverb"], ("nosuchverb",)), ([], ("command",))],
    }
    cases = []
    for verb, items in verbs.items():
        for argv, names in items:
            shown = " ".join(a.replace(tmp, "$TMP") for a in argv).replace(" ".join(TINY_TRAIN), "<tiny-run flags>")
            cases.append(Case("cli", f"{verb}: {shown}", f"trgnet {shown}", lambda a=argv: cli_call(a), tuple(names),
                              cli=True))
    return cases


# ------------------------------------------------------------------------------------------------------ running

def build_cases(group: str, tmp: str) -> list[Case]:
    builders = {"model": model_cases, "ops": op_cases, "data": lambda: data_cases(tmp),
                "config": config_cases, "cli": lambda: cli_cases(tmp)}
    cases = builders[group]()
    names = [c.name for c in cases]
    if len(set(names)) != len(names):  # results are keyed by name
        raise ValueError(f"{group}: duplicate case names {sorted({n for n in names if names.count(n) > 1})}")
    return cases


def worker(group: str, skip: set[str], report, wanted=None) -> None:
    """Run ``group``'s cases not in ``skip`` (and in ``wanted`` when given), writing 'begin NAME' before and a JSON
    line after each."""
    import warnings
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory(prefix=f"bad_inputs_{group}_") as tmp:
        for case in build_cases(group, tmp):
            if case.name in skip or (wanted is not None and case.name not in wanted):
                continue
            report.write(f"begin {json.dumps({'name': case.name, 'input': case.desc})}\n")
            report.flush()
            report.write(json.dumps(run_case(case)) + "\n")
            report.flush()


def _read_report(path):
    """(finished case records, {name, input} of the case begun but not finished, or None)."""
    done, pending = [], None
    with open(path) as f:
        for line in f:
            if line.startswith("begin "):
                pending = json.loads(line[6:])
            elif line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by the death of the worker
                done.append(record)
                pending = None
    return done, pending


def run_group(group: str, only_cases=None) -> list[dict]:
    """Run a group in worker subprocesses; a worker that dies or hangs marks its current case a crash and a new
    worker resumes after it."""
    records: list[dict] = []
    skip: set[str] = set()
    while True:
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
            report_path = f.name
        skip_path = report_path + ".skip"
        with open(skip_path, "w") as f:
            json.dump(sorted(skip), f)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", group, "--report", report_path,
               "--skip", skip_path]
        if only_cases:
            cmd += ["--cases", json.dumps(list(only_cases))]
        # the workers (not this process: it may be a test session) run the Triton interpreter on one thread
        env = {"TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1", **os.environ}
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        last_size, last_change = -1, time.monotonic()
        while proc.poll() is None:
            time.sleep(0.5)
            size = os.path.getsize(report_path)
            if size != last_size:
                last_size, last_change = size, time.monotonic()
            elif time.monotonic() - last_change > CASE_TIMEOUT_S + 30:
                proc.kill()
        stderr = proc.stderr.read()
        proc.wait()
        done, pending = _read_report(report_path)
        os.unlink(report_path)
        os.unlink(skip_path)
        records += done
        skip |= {r["name"] for r in done}
        if proc.returncode == 0 and pending is None:
            return records
        if pending is None:  # died outside any case (e.g. while building the cases)
            records.append({"group": group, "name": "<setup>", "input": "building the group's cases",
                            "outcome": "crash", "message": stderr.strip()[-MESSAGE_CHARS:]})
            return records
        why = f"worker died (exit {proc.returncode})" if proc.returncode not in (None, -9) else "worker hung"
        records.append({"group": group, **pending, "outcome": "crash", "message": f"{why}: {stderr.strip()[-250:]}"})
        skip.add(pending["name"])


def count(records) -> dict:
    counts: dict = {}
    for r in records:
        row = counts.setdefault(r["group"], {o: 0 for o in OUTCOMES})
        row[r["outcome"]] += 1
    counts["total"] = {o: sum(row[o] for g, row in counts.items() if g != "total") for o in OUTCOMES}
    return counts


def format_table(counts) -> str:
    header = f"{'group':8s} " + " ".join(f"{o:>8s}" for o in OUTCOMES) + f" {'cases':>8s}"
    lines = [header, "-" * len(header)]
    for group, row in counts.items():
        lines.append(f"{group:8s} " + " ".join(f"{row[o]:8d}" for o in OUTCOMES) + f" {sum(row.values()):8d}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="JSON file for the per-case results and the counts")
    parser.add_argument("--only", action="append", choices=GROUPS, help="only this group (repeatable)")
    parser.add_argument("--worker", choices=GROUPS, help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    parser.add_argument("--skip", help=argparse.SUPPRESS)
    parser.add_argument("--cases", help="only the cases of these names (a JSON list; with one --only)")
    args = parser.parse_args(argv)
    if args.worker:
        with open(args.skip) as f:
            skip = set(json.load(f))
        wanted = set(json.loads(args.cases)) if args.cases else None
        with open(args.report, "a") as report:
            worker(args.worker, skip, report, wanted)
        return 0
    import trgnet_fast
    start = time.monotonic()
    records = []
    for group in args.only or GROUPS:
        t0 = time.monotonic()
        only_cases = json.loads(args.cases) if args.cases else None
        records += run_group(group, only_cases)
        print(f"{group}: {sum(r['group'] == group for r in records)} cases in {time.monotonic() - t0:.0f} s",
              file=sys.stderr)
    counts = count(records)
    print(format_table(counts))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"trgnet_fast": trgnet_fast.__file__, "seconds": round(time.monotonic() - start, 1),
                       "counts": counts, "cases": records}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
