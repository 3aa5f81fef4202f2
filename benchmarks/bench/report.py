"""results.md and results.json of a run: the environment header, one table per (model mode | op variant,
mode) with one row per T, and the footnotes of skipped and failed cells (benchmarks/README.md#output)."""
from __future__ import annotations

import json
import os

from trgnet_fast.ops.registry import BENCH_VARIANTS

from .plan import MODEL_MODES, OP_MODES, Cell
from .timing import MiB


def format_ms(v) -> str:
    """A time in ms with 3 significant digits (– for None)."""
    if v is None:
        return "–"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def machine_lines(env: dict, cuda: bool) -> list[str]:
    """The markdown lines on the machine of ``env`` (bench/environment.py): the GPU (``cuda``) or the CPU, and the load
    average, flagged when other work ran beside the benchmark."""
    if cuda:
        lines = [f"- GPU: {env['gpu']} (sm_{env['gpu_capability'].replace('.', '')}, {env['gpu_memory_gib']} GiB, "
                 f"{env['gpu_sms']} SMs), driver {env['driver']}, cuDNN {env['cudnn']}, TF32 matmul "
                 f"{env['tf32_matmul']} / cuDNN {env['tf32_cudnn']}, cudnn.benchmark {env['cudnn_benchmark']}"]
    else:
        lines = [f"- CPU: {env['cpu']}, {env['cpu_count']} cores, torch threads {env['torch_threads']}"]
    load = env.get("loadavg_start")
    if load:
        line = f"- load average at start {load[0]:.2f}" + (
            f", at end {env['loadavg_end'][0]:.2f}" if env.get("loadavg_end") else "")
        if load[0] > 0.5 or (env.get("loadavg_end") or [0])[0] > env["cpu_count"] + 0.5:
            line += " — **other work was running on this machine: timings are noisy**"
        lines.append(line)
    return lines


def _short_commit(commit: str) -> str:
    return commit[:12] if len(commit) == 40 and all(ch in "0123456789abcdef" for ch in commit) else commit


def _size_label(size: dict, keys=("N", "T")) -> str:
    return " ".join(f"{k}={size[k]}" for k in keys if k in size)


def _copy_share(gbps: float | None, copy: dict | None, key: str) -> str:
    """`` = N % of copy`` for a GB/s figure against the measured copy rate ``copy[key]`` (empty without one)."""
    if not gbps or not copy or not copy.get(key):
        return ""
    return f" = {100 * gbps / copy[key]:.0f} % of copy"


def _ok(c: Cell | None) -> bool:
    return c is not None and c.skip is None and c.result.get("status") == "ok"


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


def _header(meta: dict, device) -> list[str]:
    env = meta["env"]
    cuda = device.type == "cuda"
    lines = [f"# trgnet_fast benchmark — {env['host']} — "
             f"{env.get('gpu') or 'CPU: ' + str(env.get('cpu'))} — {env['date_utc']}", ""]
    ver = (f"torch {env['torch']} (CUDA {env['torch_cuda']}), triton {env['triton']}, "
           f"python {env['python']}, commit {_short_commit(env['git_commit'])}")
    if env.get("git_dirty_files"):
        ver += f" (+{env['git_dirty_files']} uncommitted files)"
    lines.append(f"- versions: {ver}")
    lines += machine_lines(env, cuda)
    bs = ", ".join(f"{k}: {'yes' if v['usable'] else 'no'}" for k, v in env["backends"][device.type].items())
    lines.append(f"- backends usable: {bs}; implemented: "
                 + "; ".join(f"{op} → {', '.join(b)}" for op, b in sorted(env["ops"].items())))
    a = meta["args"]
    lines.append(f"- run: sizes={a['sizes']}, op dtype={a['dtype']}, model fp32, repeats model {a['model_repeat']} / "
                 f"ops {a['op_repeat']} (max {a['max_cell_s']} s per cell), warm-up model {a['model_warmup']} / "
                 f"ops {a['op_warmup']}, seed {a['seed']}" + (", L2 flushed before each op call" if cuda and a["flush_l2"] else ""))
    copy = meta.get("copy_bandwidth")
    if copy and copy.get("error"):
        lines.append(f"- copy rate: not measured ({copy['error']})")
    elif copy:
        line = (f"- copy rate (`dst.copy_(src)`, {copy['mib']} MiB, read + write counted): {copy['gbps']:.0f} GB/s "
                f"(median {format_ms(copy['median_ms'])} ms, "
                f"p10–p90 {format_ms(copy['p10_ms'])}–{format_ms(copy['p90_ms'])})")
        if copy.get("gbps_busy"):
            line += f"; from GPU busy time {copy['gbps_busy']:.0f} GB/s"
        lines.append(line + " — the `% of copy` figures below are against it")
    lines.append(f"- wall time {meta.get('wall_s', 0):.0f} s" + (f"; **{meta['interrupted']}**" if meta.get("interrupted") else ""))
    lines.append("")
    lines.append("Cells: median ms (p10–p90). `×` = eager median / provider median (>1 is faster). "
                 "`–` skipped, `ERR` failed: see the notes under each table.")
    lines.append("")
    return lines


def _provider_cell(p: str, c: Cell | None, size: dict, kind: str, mode: str, notes: Footnotes) -> str:
    """The text of one provider's cell of a row: median (p10–p90), or why there is none."""
    if c is None:
        return ""
    if c.skip is not None:
        return "–" + notes.ref(f"{p}: {c.skip}")
    if c.result.get("status") == "error":
        return "ERR" + notes.ref(f"{p} {_size_label(size)}: {c.result['error']}")
    if c.result.get("status") != "ok":
        return "not run"
    r = c.result
    text = f"{format_ms(r['median_ms'])} ({format_ms(r['p10_ms'])}–{format_ms(r['p90_ms'])})"
    cc = r.get("compile_counters") or {}
    if cc.get("graph_breaks") or cc.get("cudagraph_skips"):
        text += notes.ref(
            f"{p} {_size_label(size)} ({kind} {mode}): {cc.get('graph_breaks', 0)} graph breaks, "
            f"{cc.get('unique_graphs', 0)} graphs, CUDA graphs skipped {cc.get('cudagraph_skips', 0)}× "
            "(TORCH_LOGS=graph_breaks,perf_hints says why)")
    return text


def _op_columns(row_cells: dict[str, Cell], size: dict, copy: dict | None, cuda: bool, notes: Footnotes) -> list[str]:
    """The op tables' last columns: GB/s of the fastest provider and (CUDA) the GPU busy times."""
    out = []
    fastest = min((c for c in row_cells.values() if _ok(c)), key=lambda c: c.result["median_ms"], default=None)
    if fastest is not None and fastest.result.get("gbps_min_bytes"):
        gbps = fastest.result["gbps_min_bytes"]
        out.append(f"{gbps:.0f}{_copy_share(gbps, copy, 'gbps')} ({fastest.provider})")
    else:
        out.append("–")
    if cuda:
        busy = [f"{p} {format_ms(c.result['device_ms'])}"
                + (f" ({c.result['gbps_device']:.0f}{_copy_share(c.result['gbps_device'], copy, 'gbps_busy')})"
                   if c.result.get("gbps_device") else "")
                for p, c in row_cells.items() if _ok(c) and c.result.get("device_ms")]
        busy += [f"{p} n/a" + notes.ref(f"{p} {_size_label(size)}: profiler: {c.result['device_ms_error']}")
                 for p, c in row_cells.items() if c.skip is None and c.result.get("device_ms_error")]
        out.append(", ".join(busy) or "–")
    return out


def _table(kind: str, name: str, mode: str, gcells: list[Cell], meta: dict, providers: list[str], cuda: bool,
           notes: Footnotes) -> list[str]:
    by_size: dict[tuple, dict[str, Cell]] = {}
    for c in gcells:
        by_size.setdefault(tuple(c.size.items()), {})[c.provider] = c
    ns = sorted({c.size["N"] for c in gcells})
    title = _mode_title(kind, mode, "/".join(map(str, ns))) if kind == "model" else \
        f"op {name} — {mode}, " + _size_label(dict(next(iter(by_size))), keys=("N", "H", "D", "E")) + f", {meta['args']['dtype']}"
    lines = [f"### {title}"]
    if kind == "op" and BENCH_VARIANTS[name][1].note:
        lines.append(f"_{BENCH_VARIANTS[name][1].note}_")
    lines.append("")
    others = [p for p in providers if p != "eager"]
    mem_hdr = "peak MiB" if (cuda and kind == "model") else "peak Δ MiB"
    hdr = ["T"] + list(providers) + [f"{p} ×" for p in others] + [f"{mem_hdr} ({p})" for p in ("eager",) if p in providers]
    hdr += ["best fused/compiled " + mem_hdr, "1st call s (compile)"]
    if kind == "op":
        hdr.append("GB/s at min bytes (best)")
        if cuda:
            hdr.append("GPU busy ms per call (GB/s at min bytes)")
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|" + "---|" * len(hdr))

    def mem(c):
        if not _ok(c):
            return "–"
        v = c.result.get("peak_bytes") if (cuda and kind == "model") else c.result.get("peak_delta_bytes")
        return "n/a" if v is None else f"{v / MiB:.0f}"

    for size_key in sorted(by_size, key=lambda s: dict(s)["T"]):
        row_cells = by_size[size_key]
        size = dict(size_key)
        row = [str(size["T"])] + [_provider_cell(p, row_cells.get(p), size, kind, mode, notes) for p in providers]
        eager = row_cells.get("eager")
        eager_med = eager.result.get("median_ms") if eager and eager.skip is None else None
        best = min((row_cells[p] for p in providers if p != "eager" and _ok(row_cells.get(p))),
                   key=lambda c: c.result["median_ms"], default=None)
        for p in others:
            c = row_cells.get(p)
            row.append(f"{eager_med / c.result['median_ms']:.2f}" if eager_med and _ok(c) else "–")
        if "eager" in providers:
            row.append(mem(eager))
        row.append(f"{mem(best)} ({best.provider})" if best else "–")
        firsts = [f"{c.provider} {c.result['first_call_s']:.1f}" for p, c in row_cells.items()
                  if _ok(c) and p.startswith("compile")]
        if _ok(eager):
            firsts.insert(0, f"eager {eager.result['first_call_s']:.1f}")
        row.append(", ".join(firsts) or "–")
        if kind == "op":
            row += _op_columns(row_cells, size, meta.get("copy_bandwidth"), cuda, notes)
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return lines


def render_markdown(meta: dict, cells: list[Cell], providers: list[str], device) -> str:
    cuda = device.type == "cuda"
    lines = _header(meta, device)
    notes = Footnotes()
    groups: dict[tuple, list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.kind, c.name, c.mode), []).append(c)
    order = sorted(groups, key=lambda k: (k[0] != "model", k[1], (MODEL_MODES + OP_MODES).index(k[2])))
    for kind, name, mode in order:
        lines += _table(kind, name, mode, groups[(kind, name, mode)], meta, providers, cuda, notes)
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
    """Writes results.json (every raw timing) and results.md into ``out_dir`` (atomically); returns the markdown."""
    os.makedirs(out_dir, exist_ok=True)
    md = render_markdown(meta, cells, providers, device)
    payload = {"meta": meta, "results": [c.to_json() for c in cells]}
    for name, text in (("results.json", json.dumps(payload, indent=1, default=str)), ("results.md", md)):
        tmp = os.path.join(out_dir, name + ".tmp")
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, os.path.join(out_dir, name))
    return md
