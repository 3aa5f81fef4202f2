#!/usr/bin/env python
"""trgnet_fast benchmark suite: the whole TRGNet model and every fused op, all providers side by side.

    python benchmarks/run.py                               # CPU: small sizes, a few minutes on 2 cores
    python benchmarks/run.py --device cuda --sizes paper   # N=8, T in {1500, 3000, 6000, 12000}

Providers: eager (plain-PyTorch reference), compile (torch.compile of the reference, default mode),
compile-ro (torch.compile mode="reduce-overhead", CUDA graphs, CUDA only), triton, cuda (trgnet_fast
backends). Unavailable providers are reported as skipped with the reason; a failing cell (OOM, compile
error, ...) is recorded as an error string and the run goes on.

Writes results.json (every raw timing) and results.md into --out and prints the markdown last.
See benchmarks/README.md. This file is the command line and the loop over the cells; the cells, timing,
providers, environment and report are in benchmarks/bench/ (its ``__init__`` lists the modules); what is
timed: the op registry's ``BENCH_VARIANTS`` (trgnet_fast/ops/registry.py) and benchmarks/workload.py.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import signal
import socket
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from trgnet_fast.ops.registry import BENCH_VARIANTS  # noqa: E402

from bench.environment import describe  # noqa: E402
from bench.model import run_model_cell  # noqa: E402
from bench.ops import OpRunner  # noqa: E402
from bench.plan import DTYPES, MODEL_MODES, OP_MODES, PRESETS, PROVIDERS, error_string, parse_sizes, plan  # noqa: E402
from bench.providers import cleanup, clear_counters, compile_counters, set_recompile_limit  # noqa: E402
from bench.report import write_outputs  # noqa: E402
from bench.timing import copy_bandwidth  # noqa: E402


class Interrupted(BaseException):  # not an Exception: no `except Exception` may swallow it
    pass


def _on_signal(signum, frame):
    raise Interrupted(f"signal {signal.Signals(signum).name}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="default: cuda if available, else cpu")
    p.add_argument("--sizes", default=None,
                   help="cpu | paper | a T list like 1500,6000 (default: paper on cuda, cpu on cpu)")
    p.add_argument("--what", default="model,ops", help="comma list of model, ops (default both)")
    p.add_argument("--providers", default=",".join(PROVIDERS), help=f"comma list of {', '.join(PROVIDERS)}")
    p.add_argument("--ops", default=None, help=f"comma list of ops (default all: {', '.join(BENCH_VARIANTS)})")
    p.add_argument("--op-modes", default=",".join(OP_MODES))
    p.add_argument("--model-modes", default=",".join(MODEL_MODES))
    p.add_argument("--batch", type=int, default=None, help="model training batch N (default: preset's)")
    p.add_argument("--op-batch", type=int, default=None, help="op batch N (default 8)")
    p.add_argument("--op-sizes", default=None, help="T list for the ops (default: preset's; with a T-list "
                                                    "--sizes the same list)")
    p.add_argument("--compile-sizes", default=None,
                   help="T values (or all/none) where the model runs compile providers "
                        "(default: 6000 if present, else the smallest T)")
    p.add_argument("--op-compile-sizes", default=None, help="same for the ops (default all)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp32", help="op input dtype (the model runs fp32)")
    p.add_argument("--repeat", type=int, default=None,
                   help="timed calls per cell (default: model 20 cuda / 5 cpu, ops 100 cuda / 20 cpu)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls after the first (default 3 / ops 10)")
    p.add_argument("--max-cell-s", type=float, default=None,
                   help="stop a cell's timed loop after this many seconds (at least 3 calls; default 10 cuda / 20 cpu)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds for the whole run: cells not started by then are marked skipped")
    p.add_argument("--compile-estimate-s", type=float, default=None,
                   help="a model compile cell is not started with less budget left (default 90 cuda / 120 cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="default benchmark_results/<host>-<device>-<date>/")
    p.add_argument("--flush-l2", action=argparse.BooleanOptionalAction, default=True,
                   help="CUDA: overwrite a 256 MiB buffer before each timed op call (default on)")
    p.add_argument("--device-time-calls", type=int, default=10,
                   help="CUDA op cells: calls profiled for the GPU-busy-time column (torch profiler; 0: off)")
    p.add_argument("--copy-mib", type=int, default=256,
                   help="MiB of the device-to-device copy measured once as the bandwidth reference of the op "
                        "GB/s columns (0: not measured)")
    p.add_argument("--cpu-memory", action=argparse.BooleanOptionalAction, default=True,
                   help="CPU: one extra profiled call per cell for the peak-memory column (default on)")
    p.add_argument("--tf32", choices=("default", "on", "off"), default="default",
                   help="CUDA TF32 for matmul+cuDNN (default: leave torch's defaults)")
    p.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=True,
                   help="torch.backends.cudnn.benchmark (the published code sets it; default on)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="tqdm bar (default: when stderr is a terminal)")
    args = p.parse_args(argv)
    if args.copy_mib < 0:
        p.error(f"--copy-mib: expected MiB >= 0 (0: no copy-rate reference), got {args.copy_mib}")

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")
    cuda = args.device == "cuda"
    if args.sizes is None:
        args.sizes = "paper" if cuda else "cpu"
    if args.sizes in PRESETS:
        pre = PRESETS[args.sizes]
        model_T, op_T = list(pre["T"]), list(pre["op_T"])
        batch, op_batch = pre["batch"], pre["op_batch"]
    else:
        try:
            model_T = [int(v) for v in args.sizes.split(",") if v.strip()]
        except ValueError:
            p.error(f"--sizes: cpu, paper or a comma list of T, got {args.sizes!r}")
        op_T = list(model_T)
        batch, op_batch = (8 if cuda else 2), 8
    if args.op_sizes:
        op_T = [int(v) for v in args.op_sizes.split(",") if v.strip()]
    args.model_T, args.op_T = model_T, op_T
    args.batch = args.batch or batch
    args.op_batch = args.op_batch or op_batch
    if cuda:
        default_compile = [6000] if 6000 in model_T else [min(model_T)]
    else:  # inductor's C++ compile of the whole model takes minutes on a small CPU
        default_compile = []
    args.compile_T = parse_sizes(args.compile_sizes, default_compile, model_T)
    args.op_compile_T = parse_sizes(args.op_compile_sizes, list(op_T) if cuda else [min(op_T)], op_T)
    args.what = [w.strip() for w in args.what.split(",") if w.strip()]
    for w in args.what:
        if w not in ("model", "ops"):
            p.error(f"--what: model and/or ops, got {w!r}")
    args.providers = [v.strip() for v in args.providers.split(",") if v.strip()]
    for v in args.providers:
        if v not in PROVIDERS:
            p.error(f"--providers: unknown {v!r} (known: {', '.join(PROVIDERS)})")
    args.ops = [v.strip() for v in args.ops.split(",")] if args.ops else None
    args.op_modes = [m.strip() for m in args.op_modes.split(",") if m.strip()]
    args.model_modes = [m.strip() for m in args.model_modes.split(",") if m.strip()]
    for m in args.op_modes:
        if m not in OP_MODES:
            p.error(f"--op-modes: unknown {m!r}")
    for m in args.model_modes:
        if m not in MODEL_MODES:
            p.error(f"--model-modes: unknown {m!r}")
    args.model_repeat = args.repeat or (20 if cuda else 5)
    args.op_repeat = args.repeat or (100 if cuda else 20)
    args.model_warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    args.op_warmup = args.warmup if args.warmup is not None else (10 if cuda else 3)
    args.max_cell_s = args.max_cell_s or (10.0 if cuda else 20.0)
    args.compile_estimate_s = args.compile_estimate_s or (90.0 if cuda else 120.0)
    if args.out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        args.out = os.path.join("benchmark_results", f"{socket.gethostname()}-{args.device}-{stamp}")
    return args


def _setup_torch(args) -> torch.device:
    """The benchmarked device (CUDA: with its index), with the threads, TF32 and cuDNN settings of ``args``."""
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        if args.tf32 != "default":
            torch.backends.cuda.matmul.allow_tf32 = args.tf32 == "on"
            torch.backends.cudnn.allow_tf32 = args.tf32 == "on"
        torch.backends.cudnn.benchmark = args.cudnn_benchmark
    set_recompile_limit(64)
    return device


def _run_cell(c, args, device, ops: OpRunner) -> tuple[dict, str]:
    """(the cell's result, its progress line): a failure becomes an ``error`` result, never an exception."""
    compiled = c.provider.startswith("compile")
    try:
        if c.kind == "model" and compiled:
            torch._dynamo.reset()
        clear_counters()
        res = (run_model_cell(c, args, device) if c.kind == "model" else ops.run(c, args, device))
        res["status"] = "ok"
        if compiled:
            res["compile_counters"] = compile_counters()
        msg = (f"{res['median_ms']:.3f} ms (p10 {res['p10_ms']:.3f}, p90 {res['p90_ms']:.3f}, "
               f"n={res['n']}, 1st {res['first_call_s']:.2f} s)")
    except Interrupted:
        raise
    except Exception as exc:
        res = {"status": "error", "error": error_string(exc), "traceback": traceback.format_exc(limit=8)}
        msg = "ERROR " + res["error"]
    return res, msg


def main(argv=None) -> int:
    args = parse_args(argv)
    device = _setup_torch(args)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    t_start = time.perf_counter()
    cells, plan_notes = plan(args, device)
    meta = {"env": describe(device), "args": {k: v for k, v in vars(args).items()}, "plan": plan_notes}
    if args.copy_mib > 0 and "ops" in args.what:
        try:
            meta["copy_bandwidth"] = copy_bandwidth(device, args.copy_mib)
            print(f"# copy rate: {meta['copy_bandwidth']['gbps']:.0f} GB/s ({args.copy_mib} MiB)", flush=True)
        except Exception as exc:  # a failed reference must not lose the benchmark
            meta["copy_bandwidth"] = {"error": error_string(exc)}
        cleanup(device, compiled=False)
    print(f"# {len(cells)} cells ({sum(c.skip is None for c in cells)} to run) -> {args.out}", flush=True)
    for k in ("gpu", "cpu", "torch", "triton", "git_commit"):
        if meta["env"].get(k):
            print(f"#   {k}: {meta['env'][k]}", flush=True)

    load = meta["env"].get("loadavg_start")
    if device.type == "cpu" and load and load[0] >= 0.5:
        print(f"# WARNING: load average {load[0]:.2f}: other work is running; with {torch.get_num_threads()} "
              "torch threads the CPU timings will be noisy (OpenMP oversubscription) — consider --threads 1",
              flush=True)

    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    bar = None
    if progress:
        try:
            from tqdm import tqdm
            bar = tqdm(total=sum(c.skip is None for c in cells), file=sys.stderr, dynamic_ncols=True)
        except ImportError:
            bar = None

    def say(msg):
        (bar.write if bar is not None else print)(msg)
        sys.stdout.flush()

    ops = OpRunner()
    todo = [c for c in cells if c.skip is None]
    try:
        for i, c in enumerate(todo, 1):
            elapsed = time.perf_counter() - t_start
            left = args.time_budget - elapsed if args.time_budget else math.inf
            compiled = c.provider.startswith("compile")
            if left <= 0 or (c.kind == "model" and compiled and left < args.compile_estimate_s):
                c.skip = (f"time budget: {max(left, 0):.0f} s of --time-budget {args.time_budget:.0f} s left"
                          + (f" (a model compile needs ~{args.compile_estimate_s:.0f} s)" if left > 0 else ""))
                say(f"[{i}/{len(todo)}] {c.key}: skipped ({c.skip})")
                if bar is not None:
                    bar.update(1)
                continue
            if bar is not None:
                bar.set_description(f"{c.kind} {c.name} {c.mode} {c.provider} T={c.size['T']}")
            t0 = time.perf_counter()
            res, msg = _run_cell(c, args, device, ops)
            res["cell_s"] = time.perf_counter() - t0
            c.result = res
            say(f"[{i}/{len(todo)}] {c.key}: {msg} [{res['cell_s']:.1f} s]")
            if bar is not None:
                bar.update(1)
            cleanup(device, compiled=c.kind == "model" and compiled)
            meta["wall_s"] = time.perf_counter() - t_start
            write_outputs(args.out, meta, cells, args.providers, device)
    except (Interrupted, KeyboardInterrupt) as exc:
        reason = str(exc) or "KeyboardInterrupt"
        meta["interrupted"] = f"interrupted ({reason}): later cells not run"
        for c in todo:
            if c.skip is None and not c.result:
                c.skip = f"not run: {meta['interrupted']}"
    finally:
        if bar is not None:
            bar.close()
    meta["wall_s"] = time.perf_counter() - t_start
    if hasattr(os, "getloadavg"):
        meta["env"]["loadavg_end"] = list(os.getloadavg())
    md = write_outputs(args.out, meta, cells, args.providers, device)
    print(f"\n# wrote {os.path.join(args.out, 'results.json')} and results.md\n", flush=True)
    print(md, flush=True)
    return 130 if meta.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
