"""Static resource report of the fused kernels, made on a machine without a GPU.

For every kernel: registers per thread, local memory (register spills or local arrays), shared memory,
an occupancy bound (resident blocks per SM from registers, shared memory and threads), and an instruction
mix from the disassembly: global loads/stores by width (16-byte vector accesses or not), shared-memory
traffic, FMA and tensor-core (HMMA/HGMMA) instructions, special-function calls (MUFU), barriers, atomics.
These are static counts (instructions in the code, not executed instructions): they say whether a kernel
spills, how wide its memory accesses are and what does the math, not how fast it runs.

* Triton: each op's Triton forward and backward run on CPU tensors of the benchmark shape with
  ``JITFunction.run`` replaced by an offline compile for the target (nothing is launched; the outputs are
  uninitialised memory). So the kernels, constexprs, launch sizes and argument specialisations are those a
  GPU run at that shape compiles. Needs triton, not a GPU, not ``TRITON_INTERPRET``.
* CUDA: every ``kernels/*.cu`` through ``nvcc -ptx`` (setup.py's -O3 -std=c++17) and ``ptxas`` for the
  same arch; every template instantiation is reported (filter with ``--dtypes``).

The disassembler, ``cuobjdump`` and ``ptxas`` are the ones triton bundles, so the Triton part needs no
CUDA toolkit; the CUDA part needs ``nvcc``.

    python benchmarks/kernel_report.py                       # both, N=8, T=6000, fp32 + bf16
    python benchmarks/kernel_report.py --what triton --ops linear_attention --out report.md
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# sm_90 (H100 / H200) per-SM limits (CUDA C Programming Guide, compute capability 9.0)
SM90 = {"regs": 65536, "threads": 2048, "blocks": 32, "smem": 233472, "smem_reserved_per_block": 1024,
        "reg_alloc_unit": 256}


def tool(name: str) -> str:
    """A CUDA binary tool bundled with triton (``ptxas``, ``cuobjdump``, ``nvdisasm``), else from PATH."""
    try:
        import triton
        bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
        if bundled.is_file():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"kernel_report: {name} not found (neither bundled with triton nor on PATH)")
    return found


# ------------------------------------------------------------------------------------------------
# reading a cubin
# ------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class KernelReport:
    backend: str               # "triton" | "cuda"
    op: str                    # op name, or the .cu file's stem
    name: str                  # kernel (demangled for CUDA)
    registers: int
    local_bytes: int           # per thread (cuobjdump LOCAL)
    stack_bytes: int           # per thread (cuobjdump STACK): register spills and local arrays
    static_smem: int
    dynamic_smem: int | None   # Triton: known at compile time; CUDA: set at launch (None)
    threads: int | None        # per block
    grid: tuple | None = None  # Triton launches at the report's shape
    config: str = ""           # constexprs / warps
    sass: dict = dataclasses.field(default_factory=dict)

    @property
    def blocks_per_sm(self) -> int | None:
        """Upper bound on resident blocks per SM (registers, shared memory, threads, block slots)."""
        if not self.threads:
            return None
        warps = (self.threads + 31) // 32
        unit = SM90["reg_alloc_unit"]
        warp_regs = max(1, -(-self.registers * 32 // unit) * unit)
        by_regs = (SM90["regs"] // warp_regs) // warps
        smem = self.static_smem + (self.dynamic_smem or 0)
        by_smem = SM90["smem"] // (smem + SM90["smem_reserved_per_block"])
        return min(by_regs, by_smem, SM90["threads"] // self.threads, SM90["blocks"])


_RES_FUNC = re.compile(r"^\s*Function (\S+):\s*$")
_RES_LINE = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def _first_match_per_section(text: str, header: re.Pattern, value: re.Pattern) -> dict[str, re.Match]:
    """{group 1 of a ``header`` line: the first ``value`` match in the lines after it} (cuobjdump and PTX
    listings name a function, then describe it)."""
    out, current = {}, None
    for line in text.splitlines():
        m = header.search(line)
        if m:
            current = m.group(1)
            continue
        m = value.search(line)
        if m and current:
            out[current] = m
            current = None
    return out


def resource_usage(cubin: Path) -> dict[str, dict]:
    """{mangled function: {registers, stack, shared, local}} from ``cuobjdump -res-usage``."""
    text = subprocess.run([tool("cuobjdump"), "-res-usage", str(cubin)], capture_output=True, text=True,
                          check=True).stdout
    return {fn: dict(zip(("registers", "stack", "shared", "local"), map(int, m.groups())))
            for fn, m in _first_match_per_section(text, _RES_FUNC, _RES_LINE).items()}


_SASS_FUNC = re.compile(r"^\s*Function : (\S+)")
_SASS_INSN = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)")


def _width(opcode: str) -> str:
    parts = opcode.split(".")
    for bits in ("128", "64"):
        if bits in parts:
            return bits
    for small, bits in (("U16", "16"), ("S16", "16"), ("U8", "8"), ("S8", "8")):
        if small in parts:
            return bits
    return "32"


def classify(opcode: str) -> str | None:
    """The report's category of one SASS opcode (None: not counted)."""
    base = opcode.split(".")[0]
    if base == "LDG":
        return f"LDG.{_width(opcode)}"
    if base == "STG":
        return f"STG.{_width(opcode)}"
    if base in ("LDS", "LDSM"):
        return "LDS"
    if base == "STS":
        return "STS"
    if base in ("LDL", "STL"):
        return "local ld/st"
    if base in ("FFMA", "FMUL", "FADD"):
        return "fp32 FMA/MUL/ADD"
    if base in ("DFMA", "DMUL", "DADD"):
        return "fp64 FMA/MUL/ADD"
    if base in ("HMMA", "HGMMA", "IMMA", "DMMA"):
        return "tensor core (" + base + ")"
    if base == "MUFU":
        return "MUFU (special function)"
    if base in ("BAR", "SYNCS"):
        return "barrier"
    if base in ("RED", "ATOM", "ATOMG", "REDG"):
        return "atomic"
    if base == "SHFL":
        return "SHFL"
    return None


def sass_mix(cubin: Path) -> dict[str, Counter]:
    """{mangled function: Counter(category -> static instruction count)} from ``cuobjdump -sass``."""
    text = subprocess.run([tool("cuobjdump"), "-sass", str(cubin)], capture_output=True, text=True,
                          check=True).stdout
    out: dict[str, Counter] = {}
    current = None
    for line in text.splitlines():
        m = _SASS_FUNC.match(line)
        if m:
            current = out.setdefault(m.group(1), Counter())
            continue
        m = _SASS_INSN.search(line)
        if m and current is not None:
            category = classify(m.group(1))
            if category:
                current[category] += 1
    return out


def demangle(names: list[str]) -> dict[str, str]:
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt or not names:
        return {n: n for n in names}
    text = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True).stdout
    return dict(zip(names, text.splitlines()))


# ------------------------------------------------------------------------------------------------
# Triton: compile what the launchers would launch
# ------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def offline_triton(arch: int, workdir: Path, sink: list):
    """Within the block, launching a @triton.jit kernel compiles it for ``sm_<arch>`` instead (no GPU
    needed) and appends (kernel name, grid, options, compiled kernel, cubin path) to ``sink``."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile as triton_compile, make_backend
    from triton.runtime import jit
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    original = jit.JITFunction.run

    def run(self, *args, grid, warmup, **kwargs):
        binder = create_function_from_signature(self.signature, self.params, backend)
        bound_args, specialization, options = binder(*args, **kwargs)
        options, signature, constexprs, attrs = self._pack_args(backend, kwargs, bound_args, specialization,
                                                                options)
        kernel = triton_compile(ASTSource(self, signature, constexprs, attrs), target=target,
                                options=options.__dict__)
        if callable(grid):
            grid = grid(bound_args)
        name = self.fn.__name__
        cubin = workdir / f"{len(sink):03d}_{name}.cubin"
        cubin.write_bytes(kernel.asm["cubin"])
        shown = {k[0] if isinstance(k, tuple) and len(k) == 1 else k: v for k, v in constexprs.items()}
        names = [p.name for p in self.params]
        config = ", ".join(f"{names[k] if isinstance(k, int) else k}={v}" for k, v in shown.items())
        sink.append({"name": name, "grid": tuple(int(g) for g in grid), "num_warps": options.num_warps,
                     "num_stages": options.num_stages, "shared": int(kernel.metadata.shared),
                     "config": config, "cubin": cubin})
        return None

    jit.JITFunction.run = run
    try:
        yield
    finally:
        jit.JITFunction.run = original


def _triton_ops():
    """op name -> (forward triton op, its schema argument names)."""
    import torch

    import trgnet_fast.triton.adaptive_graph_conv  # noqa: F401  (registers torch.ops.trgnet_triton.*)
    import trgnet_fast.triton.linear_attention  # noqa: F401
    import trgnet_fast.triton.multiscale_graph_conv  # noqa: F401
    ops = {}
    for name in ("linear_attention", "multiscale_graph_conv", "adaptive_graph_conv"):
        op = getattr(torch.ops.trgnet_triton, name).default
        ops[name] = (op, [a.name for a in op._schema.arguments])
    return ops


def triton_reports(op_names, dtypes, n: int, t: int, arch: int, workdir: Path, say) -> list[KernelReport]:
    """Compile the Triton kernels each op launches (forward and backward) at size (n, t)."""
    import torch

    sys.path.insert(0, str(REPO_ROOT))
    from benchmarks.bench_registry import OPS as BENCH_OPS

    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        # the interpreter replaces @triton.jit functions when they are defined: nothing would compile
        raise RuntimeError("kernel_report: the Triton part needs TRITON_INTERPRET unset (or 0) before "
                           "trgnet_fast's Triton modules are imported")
    unknown = [o for o in op_names if o not in BENCH_OPS]
    if unknown:
        raise ValueError(f"kernel_report: --ops: unknown op(s) {unknown}; expected names from "
                         f"benchmarks/bench_registry.py: {sorted(BENCH_OPS)}")
    ops = _triton_ops()
    reports = []
    for op_name in op_names:
        bench = BENCH_OPS[op_name]
        op, arg_names = ops[bench.op_name]
        for dtype in dtypes:
            t0 = time.perf_counter()
            gen = torch.Generator().manual_seed(0)
            inputs = bench.spec.make_inputs(bench.sizes(n, t), dtype, "cpu", gen)
            args = [inputs.get(a, 1e-6 if a == "eps" else None) for a in arg_names]
            for a, name in zip(args, arg_names):
                if name in bench.spec.grad_inputs:
                    a.requires_grad_(True)
            sink: list = []
            with offline_triton(arch, workdir, sink):
                out = op(*args)
                out = out[0] if isinstance(out, (tuple, list)) else out
                out.backward(torch.zeros_like(out))
            dname = str(dtype).replace("torch.", "")
            for k in sink:
                usage = resource_usage(k["cubin"])
                mix = sass_mix(k["cubin"])
                fn = next(iter(usage))
                u = usage[fn]
                reports.append(KernelReport(
                    backend="triton", op=f"{op_name} {dname}", name=k["name"], registers=u["registers"],
                    local_bytes=u["local"], stack_bytes=u["stack"], static_smem=u["shared"],
                    dynamic_smem=k["shared"], threads=32 * k["num_warps"], grid=k["grid"],
                    config=f"warps={k['num_warps']}, stages={k['num_stages']}; {k['config']}",
                    sass=dict(mix.get(fn, Counter()))))
            say(f"# triton {op_name} {dname}: {len(sink)} kernels in {time.perf_counter() - t0:.1f} s")
    return reports


# ------------------------------------------------------------------------------------------------
# CUDA: compile kernels/*.cu
# ------------------------------------------------------------------------------------------------

_PTX_ENTRY = re.compile(r"\.entry (\S+)\(")
_PTX_MAXNTID = re.compile(r"\.maxntid (\d+), (\d+), (\d+)")


def _max_threads(ptx: str) -> dict[str, int]:
    """{mangled entry: threads per block from __launch_bounds__} (entries without bounds are absent)."""
    return {fn: int(m.group(1)) * int(m.group(2)) * int(m.group(3))
            for fn, m in _first_match_per_section(ptx, _PTX_ENTRY, _PTX_MAXNTID).items()}


def cuda_reports(sources, dtypes, arch: int, workdir: Path, say) -> list[KernelReport]:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise FileNotFoundError("kernel_report: nvcc not on PATH (needed for --what cuda)")
    wanted = {"float32": "float", "float64": "double", "bfloat16": "__nv_bfloat16", "float16": "__half"}
    keep = [wanted[str(d).replace("torch.", "")] for d in dtypes]
    reports = []
    for src in sources:
        t0 = time.perf_counter()
        ptx = workdir / f"{src.stem}.ptx"
        cubin = workdir / f"{src.stem}.cubin"
        subprocess.run([nvcc, "-ptx", f"-arch=sm_{arch}a", "-O3", "-std=c++17", f"-I{src.parent}", str(src),
                        "-o", str(ptx)], check=True)
        # nvcc's own ptxas: triton's bundled one may be older than the PTX version nvcc emits
        ptxas = shutil.which("ptxas", path=str(Path(nvcc).resolve().parent)) or tool("ptxas")
        subprocess.run([ptxas, f"-arch=sm_{arch}a", "-O3", str(ptx), "-o", str(cubin)], check=True)
        threads = _max_threads(ptx.read_text())
        usage, mix = resource_usage(cubin), sass_mix(cubin)
        names = demangle(list(usage))
        for fn, u in sorted(usage.items(), key=lambda kv: names[kv[0]]):
            pretty = names[fn]
            element = re.search(r"<([^,>]+)", pretty)  # the first template argument: the storage type
            if element and element.group(1).strip() not in keep:
                continue
            short = pretty.replace("(anonymous namespace)::", "")
            short = re.sub(r"^void |\(.*$", "", short)
            short = re.sub(r"^(\w+::)+", "", short)
            reports.append(KernelReport(
                backend="cuda", op=src.stem, name=short, registers=u["registers"], local_bytes=u["local"],
                stack_bytes=u["stack"], static_smem=u["shared"], dynamic_smem=None, threads=threads.get(fn),
                sass=dict(mix.get(fn, Counter()))))
        say(f"# cuda {src.name}: {len(usage)} kernels in {time.perf_counter() - t0:.1f} s")
    return reports


# ------------------------------------------------------------------------------------------------
# output
# ------------------------------------------------------------------------------------------------

SASS_COLUMNS = ("LDG.128", "LDG.64", "LDG.32", "LDG.16", "STG.128", "STG.64", "STG.32", "STG.16", "LDS", "STS",
                "fp32 FMA/MUL/ADD", "tensor core (HMMA)", "tensor core (HGMMA)", "MUFU (special function)",
                "barrier", "atomic", "local ld/st")


def render(reports: list[KernelReport], meta: dict) -> str:
    lines = [f"# Kernel resource report ({meta['arch']})", "",
             f"{meta['when']}; torch {meta['torch']}, triton {meta['triton']}, nvcc {meta['nvcc']}; "
             f"float32 matmul precision {meta['fp32_matmul_precision']!r}; "
             f"Triton kernels compiled at N={meta['N']}, T={meta['T']} (the benchmark shapes). Static counts "
             "from the disassembly (instructions in the code, not executed). blocks/SM: upper bound from "
             "registers, shared memory and threads (CUDA kernels: dynamic shared memory is set at launch and "
             "not included). stack+local: bytes per thread in local memory (register spills, local arrays); "
             "`local ld/st` counts the instructions that touch it.", ""]
    head = ["backend", "op", "kernel", "threads", "grid", "regs", "stack+local B", "smem B", "blocks/SM"]
    cols = [c for c in SASS_COLUMNS if any(r.sass.get(c) for r in reports)]
    lines.append("| " + " | ".join(head + cols) + " |")
    lines.append("|" + "---|" * (len(head) + len(cols)))
    for r in reports:
        smem = f"{r.static_smem}+{r.dynamic_smem}" if r.dynamic_smem is not None else f"{r.static_smem}+launch"
        grid = "×".join(map(str, r.grid)) if r.grid else ""
        row = [r.backend, r.op, f"`{r.name}`", str(r.threads or "?"), grid, str(r.registers),
               str(r.stack_bytes + r.local_bytes), smem, str(r.blocks_per_sm if r.blocks_per_sm is not None else "?")]
        row += [str(r.sass.get(c, 0)) for c in cols]
        lines.append("| " + " | ".join(row) + " |")
    configs = [r for r in reports if r.config]
    if configs:
        lines += ["", "Triton launch configurations:", ""]
        lines += [f"* {r.op} `{r.name}`: {r.config}" for r in configs]
    return "\n".join(lines) + "\n"


def _versions() -> dict:
    import torch
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    nvcc = shutil.which("nvcc")
    nvcc_version = "not found"
    if nvcc:
        text = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
        m = re.search(r"release ([\d.]+)", text)
        nvcc_version = m.group(1) if m else "unknown"
    return {"torch": torch.__version__, "triton": triton_version, "nvcc": nvcc_version}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--what", choices=("both", "triton", "cuda"), default="both")
    p.add_argument("--ops", default="linear_attention,multiscale_graph_conv,adaptive_graph_conv",
                   help="benchmark-registry op names (Triton part), comma-separated")
    p.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated torch dtype names")
    p.add_argument("--size", default="8,6000", help="N,T of the Triton launches (default: the paper shape)")
    p.add_argument("--tf32", action="store_true",
                   help="compile with torch.set_float32_matmul_precision('high'): the fp32 graph-conv dots in TF32")
    p.add_argument("--arch", type=int, default=90, help="compute capability ×10 (default 90: H100/H200)")
    p.add_argument("--out", default=None, help="write the markdown here (and the JSON beside it)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    import torch

    args = parse_args(argv)
    os.environ["TRITON_INTERPRET"] = "0"  # a script run: nothing has defined the Triton kernels yet
    dtypes = []
    for name in args.dtypes.split(","):
        dtype = getattr(torch, name.strip(), None)
        if not isinstance(dtype, torch.dtype):
            raise SystemExit(f"kernel_report: --dtypes: {name!r} is not a torch dtype")
        dtypes.append(dtype)
    try:
        n, t = (int(x) for x in args.size.split(","))
    except ValueError:
        raise SystemExit(f"kernel_report: --size: expected N,T (two integers), got {args.size!r}")

    def say(msg):
        print(msg, file=sys.stderr, flush=True)

    if args.tf32:
        torch.set_float32_matmul_precision("high")

    reports: list[KernelReport] = []
    with tempfile.TemporaryDirectory(prefix="trgnet_kernel_report_") as tmp:
        work = Path(tmp)
        if args.what in ("both", "triton"):
            reports += triton_reports([o.strip() for o in args.ops.split(",")], dtypes, n, t, args.arch, work, say)
        if args.what in ("both", "cuda"):
            reports += cuda_reports(sorted((REPO_ROOT / "kernels").glob("*.cu")), dtypes, args.arch, work, say)
    meta = {"arch": f"sm_{args.arch}a", "when": time.strftime("%Y-%m-%d"), "N": n, "T": t,
            "fp32_matmul_precision": torch.get_float32_matmul_precision(), **_versions()}
    text = render(reports, meta)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        rows = [{**dataclasses.asdict(r), "blocks_per_sm": r.blocks_per_sm} for r in reports]
        out.with_suffix(".json").write_text(json.dumps({"meta": meta, "kernels": rows}, indent=1, default=str))
        say(f"# wrote {out} and {out.with_suffix('.json')}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
