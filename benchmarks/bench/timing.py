"""Timing of one benchmark cell: the timed loop (``measure``), the L2 flush, the GPU busy time from the
profiler, the device's copy rate and the statistics of the per-call times (benchmarks/README.md#timing-and-memory).
"""
from __future__ import annotations

import gc
import math
import statistics
import time

import torch

MiB = 2 ** 20


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class L2Flush:
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
            flush: L2Flush | None, cpu_memory: bool) -> dict:
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
    sync(device)
    first_s = time.perf_counter() - t0
    for _ in range(warmup):
        call()
    sync(device)

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
    sync(device)
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
    return {"first_call_s": first_s, "times_ms": times_ms, **stats(times_ms), **mem}


def device_busy_ms(fn, *, pre=None, flush: L2Flush | None = None, calls: int = 10) -> float:
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


def _pct(sorted_vals, p):
    if len(sorted_vals) == 1:
        return sorted_vals[0]
    k = (len(sorted_vals) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def stats(times):
    s = sorted(times)
    return {"n": len(s), "median_ms": statistics.median(s), "mean_ms": statistics.fmean(s),
            "min_ms": s[0], "max_ms": s[-1], "p10_ms": _pct(s, 10), "p25_ms": _pct(s, 25),
            "p75_ms": _pct(s, 75), "p90_ms": _pct(s, 90),
            "std_ms": statistics.stdev(s) if len(s) > 1 else 0.0}
