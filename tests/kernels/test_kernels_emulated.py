"""The CUDA kernels of kernels/*.cu run on the CPU, without a GPU: tests/kernels/emulation/gen_sources.py
copies them with only the <<<...>>> launches and the one inline-PTX store rewritten, g++ compiles them
against the emulation shim (tests/kernels/emulation/shim/) with ASan + UBSan, and one driver per op
compares every output of the forward and backward launchers with a double-precision reference (see
tests/kernels/emulation/README.md). One test per op of the op registry (trgnet_fast/ops/registry.py); an op
whose kernels are split over several translation units (kernels/<op>.cu, kernels/<op>_<part>.cu) has each
compiled and linked with its driver. A failure prints the driver's FAIL lines."""
import concurrent.futures
import importlib.util
import os
import pathlib
import shutil
import subprocess

import pytest

from trgnet_fast.ops.registry import OPS

EMU = pathlib.Path(__file__).resolve().parent / "emulation"
# The kernels are only ever compiled by nvcc for real; -fno-strict-aliasing is needed for the uint4 type
# punning of kernels/cuda_common.cuh. KERNEL_EMU_CXXFLAGS adds flags (e.g. -g) when debugging.
CXXFLAGS = ["-std=c++17", "-O1", "-fno-strict-aliasing", "-fsanitize=address,undefined",
            "-fno-sanitize-recover=undefined", "-pthread"] + os.environ.get("KERNEL_EMU_CXXFLAGS", "").split()


def _gen_sources():
    spec = importlib.util.spec_from_file_location("kernel_emu_gen_sources", EMU / "gen_sources.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(cmd, cwd):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    return proc.returncode, " ".join(map(str, cmd)) + "\n" + proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def binaries(tmp_path_factory):
    """{op: (path of the emulation binary or None, build log)}; all compiles run in parallel."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not on PATH: the CPU emulation of the CUDA kernels is compiled with g++")
    gen_sources = _gen_sources()
    out = tmp_path_factory.mktemp("kernel_emulation")
    gen = out / "gen"
    counts = gen_sources.generate(gen, ops=list(OPS))
    print("generated:", counts)
    units = gen_sources.op_sources(gen, list(OPS))  # {op: generated translation units}
    inc = ["-I", str(EMU / "shim"), "-I", str(EMU), "-I", str(gen)]
    jobs = {}
    for op in OPS:
        for cu in units[op]:
            jobs[(op, cu.name)] = [gxx, *CXXFLAGS, *inc, "-x", "c++", "-c", str(cu), "-o", str(out / f"{cu.stem}.o")]
        jobs[(op, "driver")] = [gxx, *CXXFLAGS, *inc, "-c", str(EMU / f"test_{op}.cpp"),
                                "-o", str(out / f"{op}_driver.o")]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        done = dict(zip(jobs, pool.map(lambda cmd: _run(cmd, out), jobs.values())))
    result = {}
    for op in OPS:
        logs = [log for (job_op, _), log in done.items() if job_op == op]
        if any(rc != 0 for rc, _ in logs):
            result[op] = (None, "\n".join(log for rc, log in logs if rc != 0))
            continue
        exe = out / f"{op}_emulated"
        objects = [str(out / f"{cu.stem}.o") for cu in units[op]] + [str(out / f"{op}_driver.o")]
        rc, log = _run([gxx, *CXXFLAGS, *objects, "-o", str(exe)], out)
        result[op] = (exe if rc == 0 else None, log)
    return result


@pytest.mark.parametrize("op", list(OPS))
def test_kernel_emulated(op, binaries):
    exe, log = binaries[op]
    assert exe is not None, f"building the emulation of kernels/{op}*.cu failed:\n{log[-20000:]}"
    env = dict(os.environ)
    # leak checking needs ptrace, unavailable in some containers, and is not what this test is about
    env.setdefault("ASAN_OPTIONS", "detect_leaks=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600, env=env)
    print(proc.stdout)
    lines = proc.stdout.splitlines()
    passed = [line for line in lines if line.startswith("PASS ")]
    failed = [line for line in lines if line.startswith("FAIL ")]
    assert proc.returncode == 0 and not failed, (
        f"kernels/{op}*.cu emulation: exit code {proc.returncode}, {len(failed)} failed case(s):\n"
        + "\n".join(failed) + "\n--- stderr (tail) ---\n" + proc.stderr[-8000:])
    assert f"RESULT {op}: {len(passed)} passed, 0 failed" in proc.stdout
    # fewest PASS lines: the op's cases, the emulator self-test and the reference check
    assert len(passed) >= OPS[op].emulation_min_cases, f"only {len(passed)} cases ran:\n{proc.stdout}"


def test_generator_fails_loudly_on_unknown_syntax(tmp_path):
    """The rewrite must refuse sources it does not fully understand rather than test something else."""
    gen = _gen_sources()
    ops = list(OPS)
    src = tmp_path / "kernels"
    shutil.copytree(gen.KERNELS_DIR, src, ignore=shutil.ignore_patterns("*.o"))
    counts = gen.generate(tmp_path / "ok", src, ops)
    for op in ops:
        assert gen.launches_of(op, counts, ops) >= 1, op
    # a launch of a plain (non-template) function, in one of the op's translation units
    cu = gen.op_sources(src, ops)["linear_attention"][0]
    original = cu.read_text()
    cu.write_text(original + "\nvoid extra() { plain_function<<<1, 1>>>(); }\n")
    with pytest.raises(gen.GenerationError):
        gen.generate(tmp_path / "bad", src, ops)
    cu.write_text(original)
    # an inline-PTX store the rewrite does not know
    common = src / "cuda_common.cuh"
    common.write_text(common.read_text().replace("st.global.v4.b32", "st.global.v4.u32"))
    with pytest.raises(gen.GenerationError):
        gen.generate(tmp_path / "bad2", src, ops)
    common.write_text(common.read_text().replace("st.global.v4.u32", "st.global.v4.b32"))
    # a translation unit that belongs to no op
    (src / "stray_kernels.cu").write_text("// kernels of no registered op\n")
    with pytest.raises(gen.GenerationError):
        gen.generate(tmp_path / "bad3", src, ops)
