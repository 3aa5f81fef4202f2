#!/usr/bin/env python
"""trgnet_fast benchmark suite: the whole TRGNet model and every fused op, all providers side by side.

    python benchmarks/run.py                               # CPU: small sizes, a few minutes on 2 cores
    python benchmarks/run.py --device cuda --sizes paper   # N=8, T in {1500, 3000, 6000, 12000}

Providers: eager (plain-PyTorch reference), compile (torch.compile of the reference, default mode),
compile-ro (torch.compile mode="reduce-overhead", CUDA graphs, CUDA only), triton, cuda (trgnet_fast
backends). Unavailable providers are reported as skipped with the reason; a failing cell (OOM, compile
error, ...) is recorded as an error string and the run goes on.

Writes results.json (every raw timing) and results.md into --out and prints the markdown last.
See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import traceback
import zlib
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import bench_registry as reg  # noqa: E402

PROVIDERS = ("eager", "compile", "compile-ro", "triton", "cuda")
OP_MODES = ("fwd", "bwd", "fwd+bwd")
MODEL_MODES = ("train", "infer")
PRESETS = {
    # model train batch, op batch, T list
    "cpu": {"batch": 2, "op_batch": 8, "T": [128, 512], "op_T": [1500, 6000]},
    "paper": {"batch": 8, "op_batch": 8, "T": [1500, 3000, 6000, 12000], "op_T": [1500, 3000, 6000, 12000]},
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MiB = 2 ** 20


class Interrupted(BaseException):  # not an Exception: no `except Exception` may swallow it
    pass


def _on_signal(signum, frame):
    raise Interrupted(f"signal {signal.Signals(signum).name}")


# ------------------------------------------------------------------------------------------------
# cells
# ------------------------------------------------------------------------------------------------

@dataclass
class Cell:
    kind: str            # "model" | "op"
    name: str            # "trgnet" | op registry name
    mode: str            # train | infer | fwd | bwd | fwd+bwd
    provider: str
    size: dict
    priority: int = 0
    skip: str | None = None
    result: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        size = ",".join(f"{k}={v}" for k, v in self.size.items())
        return f"{self.kind}:{self.name}:{self.mode}:{self.provider}:{size}"

    def seed(self, base: int) -> int:
        # same inputs for every provider of one (what, mode, size): the seed ignores the provider
        size = ",".join(f"{k}={v}" for k, v in self.size.items())
        return (base * 1_000_003 + zlib.crc32(f"{self.kind}:{self.name}:{self.mode}:{size}".encode())) % 2**31

    def to_json(self) -> dict:
        out = {"kind": self.kind, "name": self.name, "mode": self.mode, "provider": self.provider,
               "size": self.size}
        if self.skip is not None:
            out["status"], out["reason"] = "skipped", self.skip
        else:
            out.update(self.result)
        return out


# ------------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------------

def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _L2Flush:
    """Writes a buffer larger than the GPU's L2 before each timed call (as triton.testing.do_bench)."""

    def __init__(self, device):
        self.buf = torch.empty(256 * MiB // 4, dtype=torch.int32, device=device)

    def __call__(self):
        self.buf.zero_()


def _cpu_peak_delta(fn, pre=None, min_s=0.05):
    """Peak of live tensor bytes allocated during calls of ``fn`` (torch profiler memory events)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        t0 = time.perf_counter()
        while True:
            args = pre() if pre else None
            fn(args) if pre else fn()
            del args
            if time.perf_counter() - t0 >= min_s:
                break
    events = sorted(prof.profiler.function_events, key=lambda e: e.time_range.start)
    live = peak = 0
    for e in events:
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def measure(fn, device, *, pre=None, warmup: int, repeat: int, max_s: float, sync_each: bool,
            flush: _L2Flush | None, cpu_memory: bool) -> dict:
    """Time ``fn``.

    ``pre`` (untimed) runs before each call and its return value is passed to ``fn`` (the bwd modes
    run the forward there). The first call is timed on its own (compile time for the compile
    providers), then ``warmup`` calls, then up to ``repeat`` timed calls (stopping after ``max_s``
    seconds once 3 are done). CUDA: one event pair per call. CPU: perf_counter.
    """
    def call():
        if pre is None:
            fn()
        else:
            args = pre()
            fn(args)

    t0 = time.perf_counter()
    call()
    _sync(device)
    first_s = time.perf_counter() - t0
    for _ in range(warmup):
        call()
    _sync(device)

    cuda = device.type == "cuda"
    if cuda:
        gc.collect()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times_ms: list[float] = []
    events = []
    loop0 = time.perf_counter()
    for i in range(repeat):
        args = pre() if pre is not None else None
        if flush is not None:
            flush()
        if cuda:
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn(args) if pre is not None else fn()
            e.record()
            events.append((s, e))
            if sync_each:
                e.synchronize()
        else:
            t = time.perf_counter()
            fn(args) if pre is not None else fn()
            times_ms.append((time.perf_counter() - t) * 1e3)
        del args
        if i >= 2 and time.perf_counter() - loop0 > max_s:
            break
    _sync(device)
    if cuda:
        times_ms = [s.elapsed_time(e) for s, e in events]
        peak = torch.cuda.max_memory_allocated(device)
        mem = {"peak_bytes": peak, "peak_delta_bytes": peak - base, "mem_kind": "cuda max_memory_allocated"}
    elif cpu_memory:
        try:
            delta = _cpu_peak_delta(fn, pre)
            mem = {"peak_bytes": None, "peak_delta_bytes": delta,
                   "mem_kind": "cpu: peak live tensor bytes during the call (torch profiler)"}
        except Exception as exc:  # the memory probe must never lose the timings
            mem = {"peak_bytes": None, "peak_delta_bytes": None, "mem_kind": f"n/a ({exc})"}
    else:
        mem = {"peak_bytes": None, "peak_delta_bytes": None, "mem_kind": "n/a"}
    return {"first_call_s": first_s, "times_ms": times_ms, **_stats(times_ms), **mem}


def device_busy_ms(fn, *, pre=None, flush: _L2Flush | None = None, calls: int = 10) -> float:
    """Mean GPU busy time per call of ``fn``: the summed durations of the device activities (kernels, memsets,
    copies) in a torch-profiler (CUPTI) window of ``calls`` calls, minus those launched by ``pre`` and by the
    L2 flush (run inside a record_function range whose device time is subtracted). Unlike the event timing
    it excludes host overhead and launch gaps, so it is the time to compare with bandwidth or FLOP floors."""
    from torch.profiler import ProfilerActivity, profile, record_function

    untimed = "trgnet_bench_untimed"
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            with record_function(untimed):
                args = pre() if pre is not None else None
                if flush is not None:
                    flush()
            fn(args) if pre is not None else fn()
            del args
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    device_type = torch.autograd.DeviceType
    events = prof.events()
    busy = sum(e.time_range.elapsed_us() for e in events
               if e.device_type != device_type.CPU and not e.is_user_annotation)
    excluded = sum(e.device_time_total for e in events if e.name == untimed and e.device_type == device_type.CPU)
    return (busy - excluded) / calls / 1e3


def copy_bandwidth(device, mib: int, calls: int = 20) -> dict:
    """The device's copy rate, the floor the bandwidth-bound ops are judged against (target: linear
    attention forward >= 70 % of it, docs/architecture.md#targets): ``dst.copy_(src)`` of ``mib`` MiB, bytes
    read + written counted. Median of the timed copies (events on CUDA, perf_counter on CPU); on CUDA also
    from the GPU busy time (profiler)."""
    src = torch.ones(mib * MiB // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    res = measure(lambda: dst.copy_(src), device, warmup=3, repeat=calls, max_s=5.0, sync_each=False, flush=None,
                  cpu_memory=False)
    moved = 2 * src.numel() * src.element_size()
    out = {"mib": mib, "bytes_moved": moved, "median_ms": res["median_ms"], "p10_ms": res["p10_ms"],
           "p90_ms": res["p90_ms"], "gbps": moved / (res["median_ms"] * 1e-3) / 1e9}
    if device.type == "cuda":
        busy = device_busy_ms(lambda: dst.copy_(src), calls=calls)
        out.update(busy_ms=busy, gbps_busy=moved / (busy * 1e-3) / 1e9)
    return out


def _copy_share(gbps: float | None, copy: dict | None, key: str) -> str:
    """`` = N % of copy`` for a GB/s figure against the measured copy rate ``copy[key]`` (empty without one)."""
    if not gbps or not copy or not copy.get(key):
        return ""
    return f" = {100 * gbps / copy[key]:.0f} % of copy"


def _pct(sorted_vals, p):
    if len(sorted_vals) == 1:
        return sorted_vals[0]
    k = (len(sorted_vals) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def _stats(times):
    s = sorted(times)
    return {"n": len(s), "median_ms": statistics.median(s), "mean_ms": statistics.fmean(s),
            "min_ms": s[0], "max_ms": s[-1], "p10_ms": _pct(s, 10), "p25_ms": _pct(s, 25),
            "p75_ms": _pct(s, 75), "p90_ms": _pct(s, 90),
            "std_ms": statistics.stdev(s) if len(s) > 1 else 0.0}


# ------------------------------------------------------------------------------------------------
# providers
# ------------------------------------------------------------------------------------------------

def _set_recompile_limit(n):
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), n))


def _compile(fn, provider):
    if provider == "compile":
        return torch.compile(fn, dynamic=False)
    return torch.compile(fn, mode="reduce-overhead", dynamic=False)


def _mark_step(provider):
    if provider == "compile-ro":
        torch.compiler.cudagraph_mark_step_begin()


class OpRunner:
    """Builds the callables of one op cell. Compiled functions are kept per (op, provider) so the
    modes and sizes of an op share the compile cache (static shapes: one graph per size)."""

    def __init__(self):
        self.compiled: dict[tuple, object] = {}

    def fn(self, spec: reg.BenchOp, provider: str):
        ref, fused = spec.load()
        if provider == "eager":
            return ref
        if provider in ("compile", "compile-ro"):
            key = (spec.name, provider)
            if key not in self.compiled:
                self.compiled[key] = _compile(ref, provider)
            return self.compiled[key]
        return lambda *a, **kw: fused(*a, backend=provider, **kw)

    def run(self, cell: Cell, args, device) -> dict:
        spec = reg.OPS[cell.name]
        f = self.fn(spec, cell.provider)
        dtype = DTYPES[args.dtype]
        gen = torch.Generator(device=device)
        gen.manual_seed(cell.seed(args.seed))
        inputs, kwargs = spec.make_inputs(cell.size, dtype, device, gen)
        provider = cell.provider
        flush = _L2Flush(device) if (device.type == "cuda" and args.flush_l2) else None
        common = dict(warmup=args.op_warmup, repeat=args.op_repeat, max_s=args.max_cell_s,
                      sync_each=False, flush=flush, cpu_memory=args.cpu_memory)
        if cell.mode == "fwd":
            def step():
                _mark_step(provider)
                with torch.no_grad():
                    f(*inputs, **kwargs)
            res = measure(step, device, **common)
        else:
            leaves = [a.detach().requires_grad_(True) if torch.is_tensor(a) and a.is_floating_point() else a
                      for a in inputs]
            diff = reg.grad_inputs(leaves)
            with torch.no_grad():
                out_shape = f(*inputs, **kwargs).shape
            grad_out = reg.randn(out_shape, gen=gen, device=device, dtype=dtype)
            if cell.mode == "fwd+bwd":
                def step():
                    _mark_step(provider)
                    out = f(*leaves, **kwargs)
                    torch.autograd.grad(out, diff, grad_out)
                res = measure(step, device, **common)
            else:  # bwd: the forward runs untimed before each timed backward
                def fwd():
                    _mark_step(provider)
                    return f(*leaves, **kwargs)

                def bwd(out):
                    torch.autograd.grad(out, diff, grad_out)
                res = measure(bwd, device, pre=fwd, **common)
        if device.type == "cuda" and args.device_time_calls > 0:
            timed, pre = (bwd, fwd) if cell.mode == "bwd" else (step, None)
            try:
                res["device_ms"] = device_busy_ms(timed, pre=pre, flush=flush, calls=args.device_time_calls)
            except Exception as exc:  # the profiler must never lose the timings
                res["device_ms_error"] = _error_string(exc)
        itemsize = torch.empty((), dtype=dtype).element_size()
        work = _op_work(spec, cell.size, cell.mode, itemsize)
        res.update(work)
        if work.get("min_bytes"):
            res["gbps_min_bytes"] = work["min_bytes"] / (res["median_ms"] * 1e-3) / 1e9
            if res.get("device_ms"):
                res["gbps_device"] = work["min_bytes"] / (res["device_ms"] * 1e-3) / 1e9
        if work.get("flops"):
            res["gflops"] = work["flops"] / (res["median_ms"] * 1e-3) / 1e9
        return res


def _op_work(spec, size, mode, itemsize) -> dict:
    out = {}
    parts = {"fwd": ("fwd",), "bwd": ("bwd",), "fwd+bwd": ("fwd", "bwd")}[mode]
    if spec.flops:
        fl = spec.flops(size)
        out["flops"] = sum(fl[p] for p in parts)
    if spec.min_bytes:
        by = spec.min_bytes(size, itemsize)
        out["min_bytes"] = sum(by[p] for p in parts)
    return out


def run_model_cell(cell: Cell, args, device) -> dict:
    provider = cell.provider
    backend = provider if provider in ("triton", "cuda") else "torch"
    seed = cell.seed(args.seed)
    n, t = cell.size["N"], cell.size["T"]
    model = reg.build_model(device, backend, seed=args.seed)
    data = reg.make_model_inputs(n, t, device, seed, padded=cell.mode == "train")
    x, mask, jg = data["x"], data["mask"], data["joint_graph"]
    common = dict(warmup=args.model_warmup, repeat=args.model_repeat, max_s=args.max_cell_s,
                  sync_each=True, flush=None, cpu_memory=args.cpu_memory)
    if cell.mode == "train":
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def fwd_loss(x, mask, jg, labels, boundary):
            return reg.train_loss(model(x, mask, jg), labels, boundary, mask)

        fl = fwd_loss if provider not in ("compile", "compile-ro") else _compile(fwd_loss, provider)

        def step():
            _mark_step(provider)
            opt.zero_grad(set_to_none=True)
            loss = fl(x, mask, jg, data["labels"], data["boundary"])
            loss.backward()
            opt.step()
        res = measure(step, device, **common)
    else:
        model.eval()
        fm = model if provider not in ("compile", "compile-ro") else _compile(model, provider)

        def step():
            _mark_step(provider)
            with torch.no_grad():
                fm(x, mask, jg)
        res = measure(step, device, **common)
    res["params"] = sum(p.numel() for p in model.parameters())
    return res


# ------------------------------------------------------------------------------------------------
# planning
# ------------------------------------------------------------------------------------------------

def _parse_sizes(text: str | None, default: list[int], all_sizes: list[int]) -> list[int]:
    if text is None:
        return default
    text = text.strip().lower()
    if text == "all":
        return list(all_sizes)
    if text == "none":
        return []
    return [int(v) for v in text.split(",") if v.strip()]


def _backend_reason(provider: str, op_names: list[str], device) -> str | None:
    """Why ``provider`` (a trgnet_fast backend) cannot run these ops on ``device``; None if it can."""
    from trgnet_fast.backend import backend_status, implemented_backends
    ok, why = backend_status(device)[provider]
    if not ok:
        return f"{provider} backend not usable on {device.type}: {why}"
    missing = [op for op in op_names if provider not in implemented_backends(op)]
    if missing and len(missing) == len(op_names):
        return f"{provider} backend implements none of {', '.join(sorted(set(missing)))} yet"
    return None


def plan(args, device) -> tuple[list[Cell], dict]:
    from trgnet_fast.backend import registered_ops
    cells: list[Cell] = []
    notes: dict = {}
    what = set(args.what)
    cuda = device.type == "cuda"
    # priority classes: cheap and essential first, so a time budget drops the expensive tail
    PRI = {"op": 0, "model-eager": 1, "model-fused": 2, "op-compile": 3, "model-compile": 4, "model-ro": 5}

    if "ops" in what:
        names = args.ops or list(reg.OPS)
        for name in names:
            if name not in reg.OPS:
                raise SystemExit(f"unknown op {name!r}; known: {', '.join(reg.OPS)}")
            spec = reg.OPS[name]
            try:
                spec.load()
                load_err = None
            except Exception as exc:
                load_err = f"op module fails to import: {type(exc).__name__}: {exc}"
            for t in args.op_T:
                size = spec.sizes(args.op_batch, t)
                for mode in args.op_modes:
                    for prov in args.providers:
                        c = Cell("op", name, mode, prov, size)
                        c.priority = PRI["op-compile"] if prov.startswith("compile") else PRI["op"]
                        if load_err:
                            c.skip = load_err
                        elif prov == "compile-ro" and not cuda:
                            c.skip = "reduce-overhead (CUDA graphs) is CUDA only"
                        elif prov.startswith("compile") and t not in args.op_compile_T:
                            c.skip = f"compile providers only at T in {args.op_compile_T} (--op-compile-sizes)"
                        elif prov in ("triton", "cuda"):
                            c.skip = _backend_reason(prov, [spec.op_name], device)
                        cells.append(c)

    if "model" in what:
        model_err = None
        try:
            import trgnet_fast.model  # noqa: F401  (imports every op module the model uses)
            from trgnet_fast import TRGNet  # noqa: F401
        except Exception as exc:
            model_err = f"TRGNet not importable: {type(exc).__name__}: {exc}"
        model_ops = registered_ops()
        notes["model_ops"] = model_ops
        for mode in args.model_modes:
            sizes = args.model_T
            for t in sizes:
                n = args.batch if mode == "train" else 1
                size = {"N": n, "T": t, "V": 25, "K": 52}
                for prov in args.providers:
                    c = Cell("model", "trgnet", mode, prov, size)
                    c.priority = {"eager": PRI["model-eager"], "compile": PRI["model-compile"],
                                  "compile-ro": PRI["model-ro"]}.get(prov, PRI["model-fused"])
                    if model_err:
                        c.skip = model_err
                    elif prov == "compile-ro" and not cuda:
                        c.skip = "reduce-overhead (CUDA graphs) is CUDA only"
                    elif prov.startswith("compile") and not args.compile_T:
                        c.skip = ("model compile is off by default on CPU (inductor compiles the model for "
                                  "minutes); --compile-sizes 128 turns it on")
                    elif prov.startswith("compile") and t not in args.compile_T:
                        c.skip = (f"compile providers only at T in {args.compile_T} (--compile-sizes; "
                                  "a first compile of the model takes ~1 min)")
                    elif prov in ("triton", "cuda"):
                        c.skip = _backend_reason(prov, model_ops, device)
                    cells.append(c)
    # stable sort: keeps (what, mode, size, provider) order inside a priority class
    cells.sort(key=lambda c: c.priority)
    return cells, notes


# ------------------------------------------------------------------------------------------------
# environment
# ------------------------------------------------------------------------------------------------

def _cmd(args, timeout=15) -> str | None:
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        return r.stdout.strip() if r.returncode == 0 else None
    except Exception:
        return None


def environment(device) -> dict:
    from trgnet_fast.backend import backend_status, implemented_backends, registered_ops
    import trgnet_fast
    env = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "trgnet_fast": getattr(trgnet_fast, "__version__", None),
        "trgnet_fast_path": os.path.dirname(trgnet_fast.__file__),
        "git_commit": _cmd(["git", "-C", reg.REPO_ROOT, "rev-parse", "HEAD"]) or "unknown (no commit)",
        "git_dirty_files": None,
        "cpu": None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "env": {k: os.environ.get(k) for k in ("TRGNET_BACKEND", "TRITON_INTERPRET", "CUDA_VISIBLE_DEVICES",
                                                "OMP_NUM_THREADS") if os.environ.get(k) is not None},
    }
    status = _cmd(["git", "-C", reg.REPO_ROOT, "status", "--porcelain"])
    if status is not None:
        env["git_dirty_files"] = len([ln for ln in status.splitlines() if ln.strip()])
    try:
        import triton
        env["triton"] = triton.__version__
    except Exception as exc:
        env["triton"] = f"not importable ({type(exc).__name__})"
    try:
        import numpy
        env["numpy"] = numpy.__version__
    except Exception:
        env["numpy"] = None
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    env["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from trgnet_fast import _native
        env["native"] = list(_native.available())
    except Exception as exc:
        env["native"] = [False, str(exc)]
    env["backend_status"] = {k: list(v) for k, v in backend_status(device).items()}
    env["implemented_backends"] = {op: sorted(implemented_backends(op)) for op in registered_ops()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update({
            "gpu": torch.cuda.get_device_name(device),
            "gpu_capability": f"{p.major}.{p.minor}",
            "gpu_memory_gib": round(p.total_memory / 2**30, 1),
            "gpu_sms": p.multi_processor_count,
            "driver": _cmd(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]),
            "cudnn": torch.backends.cudnn.version(),
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
        })
    return env


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------

def _fmt_ms(v):
    if v is None:
        return "–"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _short_commit(commit: str) -> str:
    return commit[:12] if len(commit) == 40 and all(ch in "0123456789abcdef" for ch in commit) else commit


def _size_label(size: dict, keys=("N", "T")) -> str:
    return " ".join(f"{k}={size[k]}" for k in keys if k in size)


class Footnotes:
    def __init__(self):
        self.items: dict[str, int] = {}

    def ref(self, text: str) -> str:
        if text not in self.items:
            self.items[text] = len(self.items) + 1
        return f"[{self.items[text]}]"

    def render(self) -> list[str]:
        return [f"[{i}] {t}" for t, i in self.items.items()]


def _mode_title(kind, mode, n):
    return {
        ("model", "train"): f"model — training step (forward + loss + backward + Adam), N={n}",
        ("model", "infer"): f"model — inference (eval, no grad), N={n}",
    }.get((kind, mode), f"{mode}, N={n}")


def render_markdown(meta: dict, cells: list[Cell], providers: list[str], device) -> str:
    env = meta["env"]
    cuda = device.type == "cuda"
    lines = [f"# trgnet_fast benchmark — {env['host']} — "
             f"{env.get('gpu') or 'CPU: ' + str(env.get('cpu'))} — {env['date_utc']}", ""]
    ver = (f"torch {env['torch']} (CUDA {env['torch_cuda']}), triton {env['triton']}, "
           f"python {env['python']}, commit {_short_commit(env['git_commit'])}")
    if env.get("git_dirty_files"):
        ver += f" (+{env['git_dirty_files']} uncommitted files)"
    lines.append(f"- versions: {ver}")
    if cuda:
        lines.append(f"- GPU: {env['gpu']} (sm_{env['gpu_capability'].replace('.', '')}, {env['gpu_memory_gib']} GiB, "
                     f"{env['gpu_sms']} SMs), driver {env['driver']}, cuDNN {env['cudnn']}, TF32 matmul "
                     f"{env['tf32_matmul']} / cuDNN {env['tf32_cudnn']}, cudnn.benchmark {env['cudnn_benchmark']}")
    else:
        lines.append(f"- CPU: {env['cpu']}, {env['cpu_count']} cores, torch threads {env['torch_threads']}")
    load = env.get("loadavg_start")
    if load:
        line = f"- load average at start {load[0]:.2f}" + (
            f", at end {env['loadavg_end'][0]:.2f}" if env.get("loadavg_end") else "")
        if load[0] > 0.5 or (env.get("loadavg_end") or [0])[0] > env["cpu_count"] + 0.5:
            line += " — **other work was running on this machine: timings are noisy**"
        lines.append(line)
    bs = ", ".join(f"{k}: {'yes' if v[0] else 'no'}" for k, v in env["backend_status"].items())
    lines.append(f"- backends usable: {bs}; implemented: "
                 + "; ".join(f"{op} → {', '.join(b)}" for op, b in env["implemented_backends"].items()))
    a = meta["args"]
    lines.append(f"- run: sizes={a['sizes']}, op dtype={a['dtype']}, model fp32, repeats model {a['model_repeat']} / "
                 f"ops {a['op_repeat']} (max {a['max_cell_s']} s per cell), warm-up model {a['model_warmup']} / "
                 f"ops {a['op_warmup']}, seed {a['seed']}" + (", L2 flushed before each op call" if cuda and a["flush_l2"] else ""))
    copy = meta.get("copy_bandwidth")
    if copy and copy.get("error"):
        lines.append(f"- copy rate: not measured ({copy['error']})")
    elif copy:
        line = (f"- copy rate (`dst.copy_(src)`, {copy['mib']} MiB, read + write counted): {copy['gbps']:.0f} GB/s "
                f"(median {_fmt_ms(copy['median_ms'])} ms, p10–p90 {_fmt_ms(copy['p10_ms'])}–{_fmt_ms(copy['p90_ms'])})")
        if copy.get("gbps_busy"):
            line += f"; from GPU busy time {copy['gbps_busy']:.0f} GB/s"
        lines.append(line + " — the `% of copy` figures below are against it")
    lines.append(f"- wall time {meta.get('wall_s', 0):.0f} s" + (f"; **{meta['interrupted']}**" if meta.get("interrupted") else ""))
    lines.append("")
    lines.append("Cells: median ms (p10–p90). `×` = eager median / provider median (>1 is faster). "
                 "`–` skipped, `ERR` failed: see the notes under each table.")
    lines.append("")

    notes = Footnotes()
    groups: dict[tuple, list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.kind, c.name, c.mode), []).append(c)
    order = sorted(groups, key=lambda k: (k[0] != "model", k[1], (MODEL_MODES + OP_MODES).index(k[2])))

    for kind, name, mode in order:
        gcells = groups[(kind, name, mode)]
        by_size: dict[tuple, dict[str, Cell]] = {}
        for c in gcells:
            by_size.setdefault(tuple(c.size.items()), {})[c.provider] = c
        ns = sorted({c.size["N"] for c in gcells})
        title = _mode_title(kind, mode, "/".join(map(str, ns))) if kind == "model" else \
            f"op {name} — {mode}, " + _size_label(dict(next(iter(by_size))), keys=("N", "H", "D", "E")) + f", {meta['args']['dtype']}"
        lines.append(f"### {title}")
        if kind == "op":
            note = reg.OPS[name].note
            if note:
                lines.append(f"_{note}_")
        lines.append("")
        provs = [p for p in providers]
        others = [p for p in provs if p != "eager"]
        mem_hdr = "peak MiB" if (cuda and kind == "model") else "peak Δ MiB"
        hdr = ["T"] + provs + [f"{p} ×" for p in others] + [f"{mem_hdr} ({p})" for p in ("eager",) if p in provs]
        hdr += ["best fused/compiled " + mem_hdr, "1st call s (compile)"]
        if kind == "op":
            hdr.append("GB/s at min bytes (best)")
            if cuda:
                hdr.append("GPU busy ms per call (GB/s at min bytes)")
        lines.append("| " + " | ".join(hdr) + " |")
        lines.append("|" + "---|" * len(hdr))
        for size_key in sorted(by_size, key=lambda s: dict(s)["T"]):
            row_cells = by_size[size_key]
            size = dict(size_key)
            row = [str(size["T"])]
            eager = row_cells.get("eager")
            eager_med = eager.result.get("median_ms") if eager and eager.skip is None else None
            best = None
            for p in provs:
                c = row_cells.get(p)
                if c is None:
                    row.append("")
                elif c.skip is not None:
                    row.append("–" + notes.ref(f"{p}: {c.skip}"))
                elif c.result.get("status") == "error":
                    row.append("ERR" + notes.ref(f"{p} {_size_label(size)}: {c.result['error']}"))
                elif c.result.get("status") == "ok":
                    r = c.result
                    cell_txt = f"{_fmt_ms(r['median_ms'])} ({_fmt_ms(r['p10_ms'])}–{_fmt_ms(r['p90_ms'])})"
                    cc = r.get("compile_counters") or {}
                    if cc.get("graph_breaks") or cc.get("cudagraph_skips"):
                        cell_txt += notes.ref(
                            f"{p} {_size_label(size)} ({kind} {mode}): {cc.get('graph_breaks', 0)} graph breaks, "
                            f"{cc.get('unique_graphs', 0)} graphs, CUDA graphs skipped {cc.get('cudagraph_skips', 0)}× "
                            "(TORCH_LOGS=graph_breaks,perf_hints says why)")
                    row.append(cell_txt)
                    if p != "eager" and (best is None or r["median_ms"] < best.result["median_ms"]):
                        best = c
                else:
                    row.append("not run")
            for p in others:
                c = row_cells.get(p)
                if eager_med and c is not None and c.skip is None and c.result.get("status") == "ok":
                    row.append(f"{eager_med / c.result['median_ms']:.2f}")
                else:
                    row.append("–")

            def mem(c):
                if c is None or c.skip is not None or c.result.get("status") != "ok":
                    return "–"
                v = c.result.get("peak_bytes") if (cuda and kind == "model") else c.result.get("peak_delta_bytes")
                return "n/a" if v is None else f"{v / MiB:.0f}"
            if "eager" in provs:
                row.append(mem(eager))
            row.append(f"{mem(best)} ({best.provider})" if best else "–")
            firsts = [f"{c.provider} {c.result['first_call_s']:.1f}" for p, c in row_cells.items()
                      if c.skip is None and c.result.get("status") == "ok" and p.startswith("compile")]
            if eager is not None and eager.skip is None and eager.result.get("status") == "ok":
                firsts.insert(0, f"eager {eager.result['first_call_s']:.1f}")
            row.append(", ".join(firsts) or "–")
            if kind == "op":
                fastest = min((c for c in row_cells.values() if c.skip is None and c.result.get("status") == "ok"),
                              key=lambda c: c.result["median_ms"], default=None)
                if fastest is not None and fastest.result.get("gbps_min_bytes"):
                    gbps = fastest.result["gbps_min_bytes"]
                    row.append(f"{gbps:.0f}{_copy_share(gbps, copy, 'gbps')} ({fastest.provider})")
                else:
                    row.append("–")
                if cuda:
                    busy = [f"{p} {_fmt_ms(c.result['device_ms'])}"
                            + (f" ({c.result['gbps_device']:.0f}{_copy_share(c.result['gbps_device'], copy, 'gbps_busy')})"
                               if c.result.get("gbps_device") else "")
                            for p, c in row_cells.items()
                            if c.skip is None and c.result.get("status") == "ok" and c.result.get("device_ms")]
                    busy += [f"{p} n/a" + notes.ref(f"{p} {_size_label(size)}: profiler: {c.result['device_ms_error']}")
                             for p, c in row_cells.items() if c.skip is None and c.result.get("device_ms_error")]
                    row.append(", ".join(busy) or "–")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    if notes.items:
        lines.append("Notes:")
        lines.append("")
        lines.extend(f"- {n}" for n in notes.render())
        lines.append("")
    lines.append("Memory: " + ("CUDA `max_memory_allocated` over the timed calls; model = absolute peak (weights, "
                               "Adam state and inputs included), ops = peak minus what was allocated before "
                               "(inputs excluded)." if cuda else
                               "CPU: peak of live tensor bytes allocated during one call, from torch profiler "
                               "memory events (inputs, weights and optimizer state excluded); not RSS."))
    lines.append("")
    return "\n".join(lines)


def write_outputs(out_dir, meta, cells, providers, device) -> str:
    os.makedirs(out_dir, exist_ok=True)
    md = render_markdown(meta, cells, providers, device)
    payload = {"meta": meta, "results": [c.to_json() for c in cells]}
    for name, text in (("results.json", json.dumps(payload, indent=1, default=str)), ("results.md", md)):
        tmp = os.path.join(out_dir, name + ".tmp")
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, os.path.join(out_dir, name))
    return md


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------

def _error_string(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    name = "OOM" if isinstance(exc, torch.OutOfMemoryError) else type(exc).__name__
    return f"{name}: {first[:300]}"


def _counters():
    from torch._dynamo.utils import counters
    return counters


def _compile_counters() -> dict:
    """Graph breaks, graphs and CUDA-graph skips of the cell (a compile-ro cell that skipped CUDA graphs
    runs like compile)."""
    c = _counters()
    return {"graph_breaks": sum(c["graph_break"].values()),
            "graph_break_reasons": sorted(c["graph_break"])[:10],
            "unique_graphs": c["stats"].get("unique_graphs", 0),
            "cudagraph_skips": c["inductor"].get("cudagraph_skips", 0)}


def _cleanup(device, compiled: bool):
    if compiled:
        torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="default: cuda if available, else cpu")
    p.add_argument("--sizes", default=None,
                   help="cpu | paper | a T list like 1500,6000 (default: paper on cuda, cpu on cpu)")
    p.add_argument("--what", default="model,ops", help="comma list of model, ops (default both)")
    p.add_argument("--providers", default=",".join(PROVIDERS), help=f"comma list of {', '.join(PROVIDERS)}")
    p.add_argument("--ops", default=None, help=f"comma list of ops (default all: {', '.join(reg.OPS)})")
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
    args.compile_T = _parse_sizes(args.compile_sizes, default_compile, model_T)
    args.op_compile_T = _parse_sizes(args.op_compile_sizes, list(op_T) if cuda else [min(op_T)], op_T)
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


def main(argv=None) -> int:
    args = parse_args(argv)
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
    _set_recompile_limit(64)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    t_start = time.perf_counter()
    cells, plan_notes = plan(args, device)
    meta = {"env": environment(device), "args": {k: v for k, v in vars(args).items()}, "plan": plan_notes}
    if args.copy_mib > 0 and "ops" in args.what:
        try:
            meta["copy_bandwidth"] = copy_bandwidth(device, args.copy_mib)
            print(f"# copy rate: {meta['copy_bandwidth']['gbps']:.0f} GB/s ({args.copy_mib} MiB)", flush=True)
        except Exception as exc:  # a failed reference must not lose the benchmark
            meta["copy_bandwidth"] = {"error": _error_string(exc)}
        _cleanup(device, compiled=False)
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
            try:
                if c.kind == "model" and compiled:
                    torch._dynamo.reset()
                _counters().clear()
                res = (run_model_cell(c, args, device) if c.kind == "model" else ops.run(c, args, device))
                res["status"] = "ok"
                if compiled:
                    res["compile_counters"] = _compile_counters()
                msg = (f"{res['median_ms']:.3f} ms (p10 {res['p10_ms']:.3f}, p90 {res['p90_ms']:.3f}, "
                       f"n={res['n']}, 1st {res['first_call_s']:.2f} s)")
            except Interrupted:
                raise
            except Exception as exc:
                res = {"status": "error", "error": _error_string(exc), "traceback": traceback.format_exc(limit=8)}
                msg = "ERROR " + res["error"]
            res["cell_s"] = time.perf_counter() - t0
            c.result = res
            say(f"[{i}/{len(todo)}] {c.key}: {msg} [{res['cell_s']:.1f} s]")
            if bar is not None:
                bar.update(1)
            _cleanup(device, compiled=c.kind == "model" and compiled)
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
