#!/usr/bin/env python
"""The whole TRG-Net training step and N=1 inference, every provider side by side in one run.

    python benchmarks/train_step.py --device cuda                      # N=8, T=6000, every provider, train + infer
    python benchmarks/train_step.py --device cuda --providers reference,cuda-graph,triton-graph --out DIR
    python benchmarks/train_step.py --device cuda --what infer --infer-T 12000
    python benchmarks/train_step.py --device cpu --small --threads 2 --out DIR   # tiny model, N=2, T=128: seconds

The measurement of the goal "≤ 8 ms per training step at N=8, T=6000 on an H200; N=1 inference ≤ 1.5 ms; peak
≤ 2 GiB" (``GOAL``; each table ends with the fastest provider against it).

**train** — one step of the trainer as it trains: ``Trainer.train_step`` (trgnet_fast/training/trainer.py) on the
objects ``Trainer.setup`` builds for the published config ``PKU-subject`` (``bench/anatomy_blocks.py:
build_trainer_step``: the model, ``TRGNetLoss`` with every term — CE, GS-TMSE, boundary BCE, ARIS absolute and
relative — on random action embeddings (K, 768) and TAG (K, K) of the published shapes, Adam, ``TrainStep``). The
batch (N, T) is benchmarks/workload.py's padded random batch (lengths U[T/2, T], the first full), augmented (SAEP) and
given its loss targets on the CPU as the training collate does; it is the same CPU batch for every provider, and
every step moves it to the device (``train_step`` does: one pinned copy per dtype) → forward (train mode) → loss →
backward → Adam → the (8,) tensor of loss terms and accuracy counts (no host read in the step).

**infer** — ``model.eval()``, ``torch.no_grad()``, N=1, T = ``--infer-T`` frames, no padding, the trainer's
joint graph; every call copies the CPU batch {x, mask} to the device and runs the eval forward
(``check_values=False`` as in the trainer: the input value checks would read the device) → the final logits and
boundary logits concatenated, (1, K + 1, T): what the evaluation's ``graphed_forward`` returns, so that every provider
(eager, compiled, graphed) does the same work.

Providers (the fused ones with ``model.mask_mode`` = ``--mask-mode``, default correct, which the graph providers need;
the torch-backend ones with ``--reference-mask-mode``, default published: the published code's computation, which
the goal is stated against):

* ``reference`` — backend torch, eager;
* ``compile`` / ``compile-ro`` — backend torch; train: ``trainer.step`` (the ``TrainStep`` module: model + loss)
  through ``torch.compile(dynamic=False)`` (``mode="reduce-overhead"`` for compile-ro, CUDA only), backward and Adam
  as the trainer runs them; infer: the compiled model;
* ``cuda`` / ``triton`` — the fused backends, eager;
* ``cuda-compile`` / ``cuda-compile-ro`` — the cuda backend's fused ops (custom ops with fake kernels) under
  ``torch.compile`` as the compile providers run it: compile's own CUDA graphs against the hand capture below;
* ``cuda-graph`` / ``triton-graph`` (CUDA only) — the fused backends with ``train.cuda_graphs``: the trainer's
  ``GraphedSteps`` (trgnet_fast/training/cuda_graphs.py; fused Adam; 2 eager steps, then one capture, then replays);
  infer: the evaluation's ``graphed_forward`` (trgnet_fast/training/evaluate.py), called with the CPU batch each time.

On the CPU, ``compile`` (inductor's C++ compile of the whole step: minutes) and the Triton providers (the Triton
interpreter: minutes per step) run only when named in ``--providers``; a provider that cannot run on the device is
listed as skipped with the reason, a failing one (exception, OOM) with its error, and the run goes on.

Timing: per provider and mode, ``--warmup`` steps (≥ 3: the graph providers capture on the 3rd), each timed apart
(the first is the compile / JIT / capture step), then ``--repeat`` timed steps, each wall-timed between two device
synchronisations (the step itself never syncs). Median, min, max, IQR (p75 − p25) in ms; frames per second =
N·T / median; speed-up = reference median / provider median. CUDA memory: the allocator's cache is emptied before
the last warm-up step, its peak statistics reset after the warm-up, ``max_memory_allocated`` and
``max_memory_reserved`` read after the timed steps (a CUDA graph replays in its private pool: its working memory is
in "reserved", not in "allocated"). Everything is freed between providers (``torch._dynamo.reset()`` after a
compiled one). ``--time-budget S``: a provider is not started when the time left is under its estimate (a compiled
one: ``--compile-estimate-s``; another: the longest uncompiled run so far of that mode); it is listed as skipped.
SIGINT / SIGTERM stop the run and still write the tables.

Output: markdown on stdout (progress on stderr, ``--no-progress`` silences it); ``--out DIR`` also writes
``train_step.md`` and ``train_step.json`` (the raw per-step times, the statistics, the arguments, the command and
bench/environment.py's device and versions). See benchmarks/README.md#train_steppy.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shlex
import signal
import sys
import time
import traceback
from dataclasses import dataclass

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/ and workload, as benchmarks/run.py imports them

import workload  # noqa: E402
from bench.anatomy_blocks import DATASET, build_trainer_step  # noqa: E402
from bench.environment import describe  # noqa: E402
from bench.plan import error_string  # noqa: E402
from bench.report import format_ms, machine_lines  # noqa: E402
from bench.providers import (cleanup, clear_counters, compile_counters, compile_fn, mark_step,  # noqa: E402
                             set_recompile_limit)
from bench.timing import stats  # noqa: E402

from trgnet_fast.backend import backend_status  # noqa: E402
from trgnet_fast.model.masking import MASK_MODES  # noqa: E402
from trgnet_fast.training.cuda_graphs import GraphedSteps  # noqa: E402
from trgnet_fast.training.evaluate import graphed_forward  # noqa: E402
from trgnet_fast.training.text import PUBLISHED_TEXT_DIM  # noqa: E402
from trgnet_fast.training.trainer import LOSS_KEYS  # noqa: E402
from trgnet_fast.training.transfer import to_device  # noqa: E402

GiB = 2 ** 30
WHATS = ("train", "infer")
MIN_WARMUP = 3  # GraphedSteps: 2 eager steps per layout, the 3rd captures (and replays)
# --small: a shallow, narrow model of the same structure (every block kept), for the CPU test
SMALL_MODEL = {"n_features": 16, "n_stages": 2, "n_layers": 2, "n_refine_layers": 2, "n_stages_asb": 2,
               "n_stages_brb": 2}
SMALL_SIZE = (2, 128)
DEFAULT_SIZE = (8, 6000)
# the goal this script measures
GOAL = {"device": "H200", "train": {"N": 8, "T": 6000, "ms": 8.0}, "infer": {"N": 1, "T": 6000, "ms": 1.5},
        "peak_gib": 2.0}


@dataclass(frozen=True)
class Provider:
    name: str
    backend: str  # the model's (and the loss's) backend
    compiled: str | None = None  # bench.providers' "compile" or "compile-ro"
    graphs: bool = False  # CUDA graphs of the whole step (trgnet_fast.training.cuda_graphs.GraphedSteps)

    @property
    def needs_cuda(self) -> bool:
        return self.graphs or self.compiled == "compile-ro"


# in run order (cheap first: the compiles last) and table order
PROVIDERS = {p.name: p for p in (
    Provider("reference", "torch"),
    Provider("cuda", "cuda"),
    Provider("triton", "triton"),
    Provider("cuda-graph", "cuda", graphs=True),
    Provider("triton-graph", "triton", graphs=True),
    Provider("compile", "torch", compiled="compile"),
    Provider("compile-ro", "torch", compiled="compile-ro"),
    # torch.compile over the fused ops (registered custom ops with fake kernels): against the hand capture
    Provider("cuda-compile", "cuda", compiled="compile"),
    Provider("cuda-compile-ro", "cuda", compiled="compile-ro"),
)}


class Interrupted(BaseException):  # not an Exception: no `except Exception` may swallow it
    pass


def _on_signal(signum, frame):
    raise Interrupted(f"signal {signal.Signals(signum).name}")


# ------------------------------------------------------------------------------------------------ arguments
def _positive(name: str, value, minimum=1):
    if value is not None and value < minimum:
        raise ValueError(f"--{name}: expected an int ≥ {minimum}, got {value}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    p.add_argument("--N", type=int, default=None, help="training batch (default 8; --small: 2)")
    p.add_argument("--T", type=int, default=None, help="frames per training video (default 6000; --small: 128)")
    p.add_argument("--infer-T", type=int, default=None, help="frames of the N=1 inference video (default: --T)")
    p.add_argument("--what", default="train,infer", help="comma list of train, infer (default both)")
    p.add_argument("--providers", default=None,
                   help=f"comma list of {', '.join(PROVIDERS)} (default all; on the CPU compile and the Triton "
                        "ones only when named)")
    p.add_argument("--mask-mode", choices=MASK_MODES, default="correct",
                   help="model.mask_mode of the fused providers (default correct: the graph providers need it)")
    p.add_argument("--reference-mask-mode", choices=MASK_MODES, default="published",
                   help="model.mask_mode of the torch-backend providers (reference, compile, compile-ro; default "
                        "published: the published code's computation, which the goal is stated against; in correct "
                        "mode the torch AttModules loop over the videos on the host)")
    p.add_argument("--warmup", type=int, default=5, help=f"warm-up steps per provider (≥ {MIN_WARMUP}; default 5)")
    p.add_argument("--repeat", type=int, default=20, help="timed steps per provider (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, the batch and the text inputs")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds for the whole run: providers not started by then (or whose estimate no longer "
                        "fits) are listed as skipped")
    p.add_argument("--compile-estimate-s", type=float, default=None,
                   help="a compiled provider is not started with less of --time-budget left (default 120 on "
                        "CUDA, 600 on the CPU)")
    p.add_argument("--small", action="store_true",
                   help=f"a tiny model ({', '.join(f'{k}={v}' for k, v in SMALL_MODEL.items())}) at "
                        f"N={SMALL_SIZE[0]}, T={SMALL_SIZE[1]} unless --N/--T say otherwise: the CPU test")
    p.add_argument("--out", default=None, help="directory for train_step.md and train_step.json")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)

    try:
        for name in ("N", "repeat", "threads"):
            _positive(name, getattr(args, name))
        for name in ("T", "infer_T"):  # the AttModules' InstanceNorm normalises over the frames
            _positive(name.replace("_", "-"), getattr(args, name), minimum=2)
        if args.warmup < MIN_WARMUP:
            raise ValueError(f"--warmup: expected an int ≥ {MIN_WARMUP} (the graph providers run 2 eager steps, "
                             f"then capture on the 3rd), got {args.warmup}")
        if args.time_budget is not None and not args.time_budget > 0:
            raise ValueError(f"--time-budget: expected seconds > 0, got {args.time_budget}")
        if args.compile_estimate_s is not None and not args.compile_estimate_s >= 0:
            raise ValueError(f"--compile-estimate-s: expected seconds ≥ 0, got {args.compile_estimate_s}")
    except ValueError as exc:
        p.error(str(exc))

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(args.device)
    except (RuntimeError, ValueError):
        p.error(f"--device: expected cpu, cuda or cuda:N, got {args.device!r}")
    if device.type not in ("cpu", "cuda"):
        p.error(f"--device: expected cpu, cuda or cuda:N, got {args.device!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            p.error(f"--device: {args.device!r} but no CUDA device is usable here (torch.cuda.is_available() is "
                    "False)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            p.error(f"--device: {args.device!r} but there are {torch.cuda.device_count()} CUDA device(s)")

    args.what = _comma_list(p, "--what", args.what, WHATS)
    args.providers_named = args.providers is not None
    args.providers = _comma_list(p, "--providers", args.providers, tuple(PROVIDERS)) if args.providers_named \
        else list(PROVIDERS)
    small_n, small_t = SMALL_SIZE if args.small else DEFAULT_SIZE
    args.N = args.N or small_n
    args.T = args.T or small_t
    args.infer_T = args.infer_T or args.T
    if args.compile_estimate_s is None:
        args.compile_estimate_s = 120.0 if device.type == "cuda" else 600.0
    args.model_overrides = SMALL_MODEL if args.small else {}
    return args


def model_overrides(provider: Provider, args) -> dict:
    """The model config of ``provider``: --small's model, and its mask mode (--reference-mask-mode for the torch
    backend, --mask-mode for the fused ones)."""
    mask_mode = args.reference_mask_mode if provider.backend == "torch" else args.mask_mode
    return {"mask_mode": mask_mode, **args.model_overrides}


def _comma_list(p: argparse.ArgumentParser, option: str, text: str, known: tuple) -> list[str]:
    """The items of a comma list, each one of ``known`` (in ``known``'s order, duplicates dropped)."""
    items = [v.strip() for v in text.split(",") if v.strip()]
    if not items:
        p.error(f"{option}: expected a comma list of {', '.join(known)}, got {text!r}")
    unknown = [v for v in items if v not in known]
    if unknown:
        p.error(f"{option}: expected a comma list of {', '.join(known)}, got {text!r} (unknown: "
                f"{', '.join(unknown)})")
    return [k for k in known if k in items]


def setup_device(args) -> torch.device:
    device = torch.device(args.device)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    set_recompile_limit(64)
    return device


def skip_reason(provider: Provider, device: torch.device, args) -> str | None:
    """Why ``provider`` does not run here (None: it runs)."""
    if provider.needs_cuda and device.type != "cuda":
        return f"needs a CUDA device (CUDA graphs); --device is {device.type}"
    if provider.graphs and args.mask_mode != "correct":
        return f"CUDA graphs need --mask-mode correct (padding to length buckets), got {args.mask_mode}"
    usable, why = backend_status(device.type)[provider.backend]
    if not usable:
        return f"{provider.backend} backend unusable on {device.type}: {why}"
    if device.type == "cpu" and not args.providers_named:
        if provider.backend == "triton":
            return ("Triton on the CPU runs in its interpreter (minutes per step); name it in --providers to run "
                    "it anyway")
        if provider.compiled:
            return ("inductor's C++ compile of the whole step takes minutes on a small CPU; name it in --providers "
                    "to run it anyway")
    return None


# ------------------------------------------------------------------------------------------------ the steps
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Runnable:
    """One provider's step, ready to call (``step()`` returns the step's result tensor), and what the report says
    of it."""
    step: object
    check: object  # result tensor -> error string or None (read once, after the timed steps)
    params: int
    graphed: GraphedSteps | None = None


def train_runnable(provider: Provider, args, device: torch.device) -> Runnable:
    """The trainer's step on ``provider``: ``Trainer.train_step`` on the published PKU objects (``build_trainer_step``),
    its ``TrainStep`` compiled for the compile providers, with ``train.cuda_graphs`` for the graph providers."""
    parts = build_trainer_step(args.N, args.T, provider.backend, seed=args.seed,
                               model_overrides=model_overrides(provider, args),
                               text_dim=PUBLISHED_TEXT_DIM, device=device, cuda_graphs=provider.graphs)
    if provider.compiled:
        # Trainer._step calls trainer.step(...): the compiled TrainStep (model + loss); backward and Adam stay eager
        parts.trainer.step = compile_fn(parts.trainer.step, provider.compiled)

    def step():
        mark_step(provider.compiled)
        return parts.run()

    def check(result: torch.Tensor) -> str | None:
        values = result.tolist()
        bad = [k for k, v in zip(LOSS_KEYS, values) if not math.isfinite(v)]
        return f"non-finite loss terms after the timed steps: {', '.join(bad)}" if bad else None

    return Runnable(step, check, sum(p.numel() for p in parts.model.parameters()), parts.trainer.graphed_steps)


def infer_runnable(provider: Provider, args, device: torch.device) -> Runnable:
    """The eval forward at N=1, T=--infer-T on ``provider``, from the CPU batch {x, mask} to the final logits and
    boundary logits as one tensor (1, K + 1, T), for every provider."""
    parts = build_trainer_step(1, args.infer_T, provider.backend, seed=args.seed,
                               model_overrides=model_overrides(provider, args),
                               text_dim=PUBLISHED_TEXT_DIM, device=device)
    model, joint_graph = parts.model.eval(), parts.trainer.joint_graph  # the trainer's model and joint graph
    del parts  # the loss, Adam and the training batch are not needed
    inputs = workload.make_model_inputs(1, args.infer_T, "cpu", args.seed, DATASET, padded=False)
    batch = {"x": inputs["x"], "mask": inputs["mask"]}  # on the CPU, as a loader gives it
    forward_model = compile_fn(model, provider.compiled) if provider.compiled else model

    def forward(tree) -> torch.Tensor:  # the output of graphed_forward below (float32 here: no autocast)
        with torch.no_grad():
            logits, boundary = forward_model(tree["x"], tree["mask"], joint_graph, check_values=False)
        return torch.cat([logits, boundary], 1)

    # the evaluation's graphed forward (trgnet_fast/training/evaluate.py): logits and boundary logits as one tensor
    graphed = graphed_forward(model, joint_graph, device) if provider.graphs else None

    def step():
        if graphed is not None:
            return graphed(batch)  # copies the batch into the graph's static buffers, replays
        mark_step(provider.compiled)
        return forward(to_device(batch, device))

    def check(result: torch.Tensor) -> str | None:
        return None if bool(torch.isfinite(result).all()) else "non-finite logits after the timed calls"

    return Runnable(step, check, sum(p.numel() for p in model.parameters()), graphed)


def time_steps(run: Runnable, device: torch.device, warmup: int, repeat: int) -> dict:
    """``warmup`` steps, each timed apart (the first compiles / JIT-builds, the graph providers capture on the 3rd),
    then ``repeat`` timed steps, each between two device synchronisations; CUDA peak memory over the timed steps."""
    cuda = device.type == "cuda"
    warm_ms = []
    for i in range(warmup):
        if cuda and i == warmup - 1:
            # the reserved peak then counts one step's working set (and a graph's pool), not the earlier steps' cache
            gc.collect()
            torch.cuda.empty_cache()
        sync(device)
        start = time.perf_counter()
        result = run.step()
        sync(device)
        warm_ms.append((time.perf_counter() - start) * 1e3)
        del result
    if cuda:
        gc.collect()
        torch.cuda.reset_peak_memory_stats(device)
    times_ms = []
    result = None
    for _ in range(repeat):
        result = None
        sync(device)
        start = time.perf_counter()
        result = run.step()
        sync(device)
        times_ms.append((time.perf_counter() - start) * 1e3)
    out = {"warmup_ms": warm_ms, "first_step_s": warm_ms[0] / 1e3, "times_ms": times_ms, **stats(times_ms)}
    out["iqr_ms"] = out["p75_ms"] - out["p25_ms"]
    if cuda:
        out.update(peak_bytes=torch.cuda.max_memory_allocated(device),
                   peak_reserved_bytes=torch.cuda.max_memory_reserved(device))
    else:
        out.update(peak_bytes=None, peak_reserved_bytes=None)
    problem = run.check(result)  # one host read, after the clock
    if problem:
        raise FloatingPointError(problem)
    return out


def run_task(what: str, provider: Provider, args, device: torch.device) -> dict:
    """One (mode, provider) measurement; a failure becomes an ``error`` record, never an exception."""
    record = {"what": what, "provider": provider.name, "backend": provider.backend, "compiled": provider.compiled,
              "cuda_graphs": provider.graphs, "N": args.N if what == "train" else 1,
              "T": args.T if what == "train" else args.infer_T}
    start = time.perf_counter()
    run = None
    try:
        if provider.compiled:
            torch._dynamo.reset()
            clear_counters()
        run = (train_runnable if what == "train" else infer_runnable)(provider, args, device)
        record["build_s"] = time.perf_counter() - start
        record["params"] = run.params
        record.update(time_steps(run, device, args.warmup, args.repeat))
        record["frames_per_s"] = record["N"] * record["T"] / (record["median_ms"] / 1e3)
        if run.graphed is not None:
            record["graph_layouts"] = run.graphed.layouts
            record["graph_eager_steps"] = sum(run.graphed.eager_steps.values())
        if provider.compiled:
            record["compile_counters"] = compile_counters()
        record["status"] = "ok"
    except Interrupted:
        raise
    except Exception as exc:
        record.update(status="error", error=error_string(exc), traceback=traceback.format_exc(limit=8))
    finally:
        del run
        record["task_s"] = time.perf_counter() - start
        cleanup(device, compiled=provider.compiled is not None)
    return record


# ------------------------------------------------------------------------------------------------ the run
def budget_skip(what: str, provider: Provider, args, started: float, records: list[dict]) -> str | None:
    """The time-budget reason not to start (``what``, ``provider``), or None."""
    if args.time_budget is None:
        return None
    left = args.time_budget - (time.perf_counter() - started)
    if provider.compiled:
        estimate, basis = args.compile_estimate_s, "--compile-estimate-s"
    else:
        done = [r["task_s"] for r in records if r["what"] == what and r["status"] != "skipped" and not r["compiled"]]
        estimate, basis = max(done, default=0.0), f"the longest uncompiled {what} run so far"
    if left <= 0:
        return f"time budget: the {args.time_budget:g} s of --time-budget are used up"
    if left < estimate:
        return (f"time budget: {left:.0f} s of --time-budget {args.time_budget:g} s left, this provider needs "
                f"~{estimate:.0f} s ({basis})")
    return None


def plan(args, device: torch.device) -> list[tuple[str, Provider, str | None]]:
    """(mode, provider, skip reason) in run order: uncompiled providers first (train then infer each), the
    compiled ones last."""
    providers = [PROVIDERS[name] for name in args.providers]
    order = [p for p in providers if not p.compiled] + [p for p in providers if p.compiled]
    return [(what, p, skip_reason(p, device, args)) for p in order for what in WHATS if what in args.what]


def skipped(what: str, provider: Provider, args, reason: str) -> dict:
    return {"what": what, "provider": provider.name, "backend": provider.backend, "compiled": provider.compiled,
            "cuda_graphs": provider.graphs, "N": args.N if what == "train" else 1,
            "T": args.T if what == "train" else args.infer_T, "status": "skipped", "reason": reason}


def speedups(records: list[dict]) -> None:
    """``speedup``: the reference's median / the provider's, per mode (ok records only)."""
    for what in WHATS:
        ref = next((r for r in records if r["what"] == what and r["provider"] == "reference" and r["status"] == "ok"),
                   None)
        for r in records:
            if r["what"] == what and r["status"] == "ok":
                r["speedup"] = ref["median_ms"] / r["median_ms"] if ref else None


# ------------------------------------------------------------------------------------------------ report
def _gib(v: int | None) -> str:
    return "–" if v is None else f"{v / GiB:.2f}"


def _note(r: dict) -> str:
    if r["status"] == "skipped":
        return f"skipped: {r['reason']}"
    if r["status"] == "error":
        return f"ERROR {r['error']}"
    notes = []
    if r.get("compile_counters") is not None:
        cc = r["compile_counters"]
        notes.append(f"{cc['graph_breaks']} graph breaks, {cc['unique_graphs']} graphs"
                     + (f", CUDA graphs skipped {cc['cudagraph_skips']}×" if cc.get("cudagraph_skips") else ""))
    if r.get("graph_layouts") is not None:
        notes.append(f"{r['graph_layouts']} captured layout(s) after {r['graph_eager_steps']} eager steps, capture "
                     f"step {r['warmup_ms'][min(r['graph_eager_steps'], len(r['warmup_ms']) - 1)] / 1e3:.2f} s")
    return "; ".join(notes)


def _row(r: dict) -> list[str]:
    if r["status"] != "ok":
        return [r["provider"], "–", "–", "–", "–", "–", "–", "–", "–", "–", _note(r)]
    speedup = f"{r['speedup']:.2f}×" if r.get("speedup") else "–"
    return [r["provider"], *(format_ms(r[k]) for k in ("median_ms", "min_ms", "max_ms", "iqr_ms")),
            _gib(r["peak_bytes"]), _gib(r["peak_reserved_bytes"]), f"{r['frames_per_s']:,.0f}", speedup,
            f"{r['first_step_s']:.2f}", _note(r)]


def _goal_line(what: str, rows: list[dict], device: torch.device, env: dict) -> str:
    goal = GOAL[what]
    text = (f"Goal: ≤ {goal['ms']:g} ms at N={goal['N']}, T={goal['T']} on an {GOAL['device']}, peak ≤ "
            f"{GOAL['peak_gib']:g} GiB.")
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return text + " Nothing measured."
    best = min(ok, key=lambda r: r["median_ms"])
    text += f" Fastest here: {best['provider']} {format_ms(best['median_ms'])} ms"
    comparable = (device.type == "cuda" and GOAL["device"] in str(env.get("gpu", ""))
                  and (best["N"], best["T"]) == (goal["N"], goal["T"]))
    if best["peak_reserved_bytes"] is not None:
        text += f", peak {_gib(best['peak_bytes'])} GiB allocated / {_gib(best['peak_reserved_bytes'])} GiB reserved"
    if not comparable:
        return text + f" (not comparable: this run is N={best['N']}, T={best['T']} on {env.get('gpu') or 'the CPU'})."
    met_time = best["median_ms"] <= goal["ms"]
    met_mem = best["peak_reserved_bytes"] <= GOAL["peak_gib"] * GiB
    return text + (f": time {'met' if met_time else 'NOT met'}, memory (reserved) {'met' if met_mem else 'NOT met'}.")


def markdown(meta: dict, records: list[dict], device: torch.device) -> str:
    env, a = meta["env"], meta["args"]
    commit = env["git_commit"]
    commit = commit[:12] if len(commit) == 40 else commit
    lines = [f"# TRG-Net training step and inference — {env['host']} — "
             f"{env.get('gpu') or 'CPU: ' + str(env.get('cpu'))} — {env['date_utc']}", "",
             f"- command: `{meta['command']}`",
             f"- versions: torch {env['torch']} (CUDA {env['torch_cuda'] or 'none'}), triton {env['triton']}, python "
             f"{env['python']}, trgnet_fast {env['trgnet_fast']}, commit {commit}"
             + (f" (+{env['git_dirty_files']} uncommitted files)" if env.get("git_dirty_files") else "")]
    lines += machine_lines(env, device.type == "cuda")
    lines.append("- backends usable: " + ", ".join(f"{k}: {'yes' if v['usable'] else 'no'}"
                                                   for k, v in env["backends"][device.type].items()))
    lines.append(f"- config: {DATASET} (published), model.mask_mode {a['mask_mode']} (fused providers) / "
                 f"{a['reference_mask_mode']} (torch-backend providers)"
                 + (f", --small model overrides {json.dumps(SMALL_MODEL)}" if a["small"] else "")
                 + f", text dim {PUBLISHED_TEXT_DIM}, fp32, seed {a['seed']}; {a['warmup']} warm-up + "
                   f"{a['repeat']} timed steps per provider")
    lines.append(f"- wall time {meta.get('wall_s', 0):.0f} s" + (f"; **{meta['interrupted']}**"
                                                                  if meta.get("interrupted") else ""))
    lines += ["", "Times: wall ms per step between two device synchronisations; IQR = p75 − p25; × = reference "
              "median / provider median (> 1 is faster); peak: CUDA max allocated / max reserved over the timed "
              "steps (a CUDA graph's working memory is in its private pool: reserved, not allocated); 1st s: the "
              "first warm-up step (compile, JIT, cuDNN autotuning).", ""]
    titles = {"train": "Training step — Trainer.train_step: batch to the device → forward → TRGNetLoss (every "
                       "term) → backward → Adam",
              "infer": "Inference — eval, no grad, batch to the device → forward → final and boundary logits"}
    header = ["provider", "median ms", "min", "max", "IQR", "peak GiB", "reserved GiB", "frames/s",
              "× reference", "1st s", "note"]
    for what in WHATS:
        rows = [r for r in records if r["what"] == what]
        if not rows:
            continue
        lines += [f"## {titles[what]}, N={rows[0]['N']}, T={rows[0]['T']}", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_row(r)) + " |" for r in rows]
        lines += ["", _goal_line(what, rows, device, env), ""]
    return "\n".join(lines)


def write_outputs(out: str | None, meta: dict, records: list[dict], device: torch.device) -> str:
    text = markdown(meta, records, device)
    if out:
        os.makedirs(out, exist_ok=True)
        for name, content in (("train_step.md", text),
                              ("train_step.json", json.dumps({"meta": meta, "records": records}, indent=1,
                                                             default=str))):
            tmp = os.path.join(out, name + ".tmp")
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(content)
            os.replace(tmp, os.path.join(out, name))
    return text


def main(argv=None) -> int:
    args = parse_args(argv)
    device = setup_device(args)
    say = (lambda msg: None) if args.no_progress else (lambda msg: print(f"[train_step] {msg}", file=sys.stderr,
                                                                          flush=True))
    started = time.perf_counter()
    meta = {"env": describe(device), "command": shlex.join(["python", "benchmarks/train_step.py", *args.argv]),
            "args": {k: v for k, v in vars(args).items() if k != "argv"}, "goal": GOAL,
            "small_model": SMALL_MODEL if args.small else None}
    tasks = plan(args, device)
    records: list[dict] = []
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in handlers:
        signal.signal(sig, _on_signal)
    say(f"{len(tasks)} runs ({sum(reason is None for *_, reason in tasks)} to start) on {device}: train N={args.N} "
        f"T={args.T}, infer N=1 T={args.infer_T}" + (f" -> {args.out}" if args.out else ""))
    try:
        for i, (what, provider, reason) in enumerate(tasks, 1):
            reason = reason or budget_skip(what, provider, args, started, records)
            if reason is not None:
                records.append(skipped(what, provider, args, reason))
                say(f"[{i}/{len(tasks)}] {what} {provider.name}: skipped ({reason})")
                continue
            say(f"[{i}/{len(tasks)}] {what} {provider.name}: running")
            record = run_task(what, provider, args, device)
            records.append(record)
            if record["status"] == "ok":
                say(f"[{i}/{len(tasks)}] {what} {provider.name}: median {record['median_ms']:.3f} ms (min "
                    f"{record['min_ms']:.3f}, max {record['max_ms']:.3f}, n={record['n']}), 1st step "
                    f"{record['first_step_s']:.2f} s [{record['task_s']:.1f} s]")
            else:
                say(f"[{i}/{len(tasks)}] {what} {provider.name}: {record['error']} [{record['task_s']:.1f} s]")
            speedups(records)
            meta["wall_s"] = time.perf_counter() - started
            write_outputs(args.out, meta, records, device)
    except (Interrupted, KeyboardInterrupt) as exc:
        meta["interrupted"] = f"interrupted ({exc or 'KeyboardInterrupt'}): later runs not started"
        done = {(r["what"], r["provider"]) for r in records}
        records += [skipped(what, provider, args, f"not run: {meta['interrupted']}")
                    for what, provider, _ in tasks if (what, provider.name) not in done]
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    speedups(records)
    meta["wall_s"] = time.perf_counter() - started
    if hasattr(os, "getloadavg"):
        meta["env"]["loadavg_end"] = list(os.getloadavg())
    text = write_outputs(args.out, meta, records, device)
    if args.out:
        say(f"wrote {os.path.join(args.out, 'train_step.md')} and train_step.json")
    print(text, flush=True)
    return 130 if meta.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
