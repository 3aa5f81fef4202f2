"""Compiling the fused kernels for a GPU on a machine without one (``benchmarks/kernel_report.py``).

* Triton: each benchmark variant's Triton forward and backward (the op registry's ``triton_module``) run on CPU
  tensors of the benchmark shape with ``JITFunction.run`` replaced by an offline compile for the target
  (nothing is launched; the outputs are uninitialised memory), so the kernels, constexprs, launch sizes and
  argument specialisations are those a GPU run at that shape compiles. Needs triton, not a GPU, not
  ``TRITON_INTERPRET``.
* CUDA: the ops' ``kernels/<op>*.cu`` through ``nvcc -ptx`` (setup.py's -O3 -std=c++17) and ``ptxas`` for the
  same arch; every template instantiation is reported.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

from .cubin import KernelReport, demangle, first_match_per_section, resource_usage, sass_mix, tool

REPO_ROOT = Path(__file__).resolve().parents[2]


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


def _forward_op(spec):
    """(the op's Triton forward ``torch.ops.trgnet_triton.<name>``, its schema argument names): importing the
    spec's ``triton_module`` registers it."""
    import torch

    importlib.import_module(spec.triton_module)
    op = getattr(torch.ops.trgnet_triton, spec.name).default
    return op, [a.name for a in op._schema.arguments]


def triton_reports(variants: list[str], dtypes, n: int, t: int, arch: int, workdir: Path, say) -> list[KernelReport]:
    """Compile the Triton kernels each benchmark variant (a ``BENCH_VARIANTS`` name of
    ``trgnet_fast/ops/registry.py``) launches in its forward and backward, with the variant's inputs at size
    ``sizes(n, t)``."""
    import torch

    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        # the interpreter replaces @triton.jit functions when they are defined: nothing would compile
        raise RuntimeError("kernel_report: the Triton part needs TRITON_INTERPRET unset (or 0) before "
                           "trgnet_fast's Triton modules are imported")
    from trgnet_fast.ops.registry import BENCH_VARIANTS

    reports = []
    for name in variants:
        spec, variant = BENCH_VARIANTS[name]
        op, arg_names = _forward_op(spec)
        for dtype in dtypes:
            t0 = time.perf_counter()
            gen = torch.Generator().manual_seed(0)
            inputs = spec.make_inputs(variant.sizes(n, t), dtype, "cpu", gen)
            args = [inputs.get(a, 1e-6 if a == "eps" else None) for a in arg_names]
            for a, arg in zip(args, arg_names):
                if arg in spec.grad_names(inputs):
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
                    backend="triton", op=f"{name} {dname}", name=k["name"], registers=u["registers"],
                    local_bytes=u["local"], stack_bytes=u["stack"], static_smem=u["shared"],
                    dynamic_smem=k["shared"], threads=32 * k["num_warps"], grid=k["grid"],
                    config=f"warps={k['num_warps']}, stages={k['num_stages']}; {k['config']}",
                    sass=dict(mix.get(fn, Counter()))))
            say(f"# triton {name} {dname}: {len(sink)} kernels in {time.perf_counter() - t0:.1f} s")
    return reports


def cuda_sources(variants: list[str]) -> list[Path]:
    """The CUDA translation units of the variants' ops: every ``kernels/<op>*.cu`` (an op's kernels may be
    split over several files), each op once, in registry order."""
    from trgnet_fast.ops.registry import BENCH_VARIANTS

    ops = dict.fromkeys(BENCH_VARIANTS[name][0].name for name in variants)
    return [src for op in ops for src in sorted((REPO_ROOT / "kernels").glob(f"{op}*.cu"))]


_PTX_ENTRY = re.compile(r"\.entry (\S+)\(")
_PTX_MAXNTID = re.compile(r"\.maxntid (\d+), (\d+), (\d+)")


def _max_threads(ptx: str) -> dict[str, int]:
    """{mangled entry: threads per block from __launch_bounds__} (entries without bounds are absent)."""
    return {fn: int(m.group(1)) * int(m.group(2)) * int(m.group(3))
            for fn, m in first_match_per_section(ptx, _PTX_ENTRY, _PTX_MAXNTID).items()}


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
