#!/usr/bin/env bash
# One-shot GPU check of trgnet_fast: environment, build, tests, parity, whole-step and paper-size benchmarks.
#
#   OUT=/path/to/out bash benchmarks/gpu_check.sh        # from the repository root, on the GPU machine
#
# Every stage has its own timeout and the script goes on after a failing or timed-out stage; the whole
# run stays inside TRGNET_CHECK_BUDGET seconds (default 540, i.e. 9 min on an H100/H200).
# Files written (11, all under $OUT, names [A-Za-z0-9._-] only):
#   summary.txt            versions, nvidia-smi, `trgnet info`, one line per stage (rc, seconds)
#   build.log              pip install --no-build-isolation --no-deps .
#   tests.log              pytest -m gpu -q -rs, then the op and model tests that run on the GPU without the
#                          gpu marker (tests/ops, tests/model; the rest of the suite is CPU-only: CI runs it)
#   parity.log             trgnet parity --device cuda
#   sanitizer.log          compute-sanitizer memcheck + racecheck of the native ops (fp32 and bf16, small shapes)
#   step.log               benchmarks/train_step.py progress (the whole training step and N=1 inference, every provider)
#   step/train_step.json   its raw per-step times     step/train_step.md   its tables
#   bench.log              benchmarks/run.py progress
#   bench/results.json     every raw timing          bench/results.md   the tables
# Environment knobs:
#   TRGNET_SKIP_BUILD=1    no pip install (dry run on a machine whose venv must not change)
#   TRGNET_CHECK_BUDGET    seconds for the whole script (default 540)
#   TRGNET_SANITIZER=0     skip compute-sanitizer (on by default)
#   TRGNET_BENCH_DEVICE    device of the benchmark (default cuda)
#   TRGNET_BENCH_ARGS      benchmark arguments (default: --sizes paper --op-compile-sizes 6000)
#   TRGNET_STEP_ARGS       train_step.py arguments (default: --device cuda --N 8 --T 6000; every provider, train and
#                          infer; CPU dry run: --device cpu --small)
set -o pipefail
set -u
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET

: "${OUT:?set OUT to the folder whose files are fetched back}"
mkdir -p "$OUT" "$OUT/bench" "$OUT/step"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

START=$(date +%s)
BUDGET=${TRGNET_CHECK_BUDGET:-540}
REPO=$(pwd)
# The interpreter that holds torch (on the GPU machine a bare `pip` belongs to another Python).
PY=${TRGNET_PYTHON:-python3}
BENCH_DEVICE=${TRGNET_BENCH_DEVICE:-cuda}
BENCH_ARGS=${TRGNET_BENCH_ARGS:---sizes paper --op-compile-sizes 6000}
STEP_ARGS=${TRGNET_STEP_ARGS:---device cuda --N 8 --T 6000}
SANITIZE=${TRGNET_SANITIZER:-1}
# minimum seconds kept for the later stages (in stage order); MIN_BENCH is what the bench stage needs to start at
# all (it skips itself under 60 s and otherwise spends what is left)
MIN_TESTS=60 MIN_PARITY=30 MIN_SANITIZER=$(( SANITIZE != 0 ? 60 : 0 )) MIN_DEVICE_TESTS=30 MIN_STEP=120 MIN_BENCH=60
COLLECT=10

elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( BUDGET - $(elapsed) )); }
# stage_timeout CAP RESERVE: min(CAP, time left - RESERVE), at least 10 s
stage_timeout() {
    local t=$(( $(left) - $2 ))
    (( t > $1 )) && t=$1
    (( t < 10 )) && t=10
    echo "$t"
}
say() { echo "$*" | tee -a "$SUMMARY"; }

STAGE_LINES=()
# run_stage NAME LOG TIMEOUT CMD...: runs CMD under `timeout`, appends its output to LOG, records rc
run_stage() {
    local name=$1 log=$2 t=$3
    shift 3
    local t0 rc dt note
    t0=$(date +%s)
    echo "=== [$name] $* (timeout ${t}s, at +$(elapsed)s)" | tee -a "$log"
    timeout -k 15 -s INT "$t" "$@" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    dt=$(( $(date +%s) - t0 ))
    case $rc in
        0) note="ok" ;;
        5) note="no tests collected" ;;
        124|137) note="TIMED OUT after ${t}s" ;;
        127) note="command not found" ;;
        *) note="FAILED" ;;
    esac
    echo "=== [$name] rc=$rc ($note) in ${dt}s" | tee -a "$log"
    STAGE_LINES+=("$(printf '%-14s rc=%-4s %5ss  %s' "$name" "$rc" "$dt" "$note")")
    return "$rc"
}
skip_stage() {
    echo "=== [$1] skipped: $2" | tee -a "$3"
    STAGE_LINES+=("$(printf '%-14s rc=%-4s %5ss  skipped: %s' "$1" "-" 0 "$2")")
}

# ---------------------------------------------------------------- 0. environment
{
    echo "# trgnet_fast GPU check — $(date -u +%Y-%m-%dT%H:%M:%SZ) — $(hostname)"
    echo "# budget ${BUDGET}s; step: $STEP_ARGS; bench: $BENCH_DEVICE $BENCH_ARGS"
    echo "git commit: $(git rev-parse --verify -q HEAD 2>/dev/null || echo 'unknown (not a git checkout or no commit)')"
    echo "uncommitted files: $(git status --porcelain 2>/dev/null | wc -l)"
    echo
    if command -v nvidia-smi >/dev/null 2>&1; then
        timeout 20 nvidia-smi 2>&1
        timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit \
            --format=csv 2>&1
    else
        echo "nvidia-smi: not found (no NVIDIA driver on this machine)"
    fi
    echo
    command -v nvcc >/dev/null 2>&1 && nvcc --version | tail -n 2 || echo "nvcc: not found"
    timeout 60 "$PY" - <<'EOF' 2>&1
import platform, sys
print("python", platform.python_version(), sys.executable)
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
          "cuda available", torch.cuda.is_available())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print("device", torch.cuda.get_device_name(0), f"sm_{p.major}{p.minor}",
              f"{p.total_memory / 2**30:.1f} GiB", p.multi_processor_count, "SMs")
except Exception as exc:
    print("torch: not importable:", exc)
for mod in ("triton", "numpy", "pytest", "pytest_benchmark", "tqdm"):
    try:
        m = __import__(mod)
        print(mod, getattr(m, "__version__", "?"))
    except Exception as exc:
        print(mod, "not importable:", type(exc).__name__)
EOF
    echo
} 2>&1 | tee -a "$SUMMARY"

# ---------------------------------------------------------------- 1. build
: > "$OUT/build.log"
if [[ "${TRGNET_SKIP_BUILD:-0}" != "0" ]]; then
    skip_stage build "TRGNET_SKIP_BUILD=$TRGNET_SKIP_BUILD" "$OUT/build.log"
else
    # the GPU build of the whole extension should take < 4 min (docs/architecture.md#targets): the stage line
    # records its seconds
    T=$(stage_timeout 240 $(( MIN_TESTS + MIN_PARITY + MIN_SANITIZER + MIN_DEVICE_TESTS + MIN_STEP + MIN_BENCH
                              + COLLECT )))
    run_stage build "$OUT/build.log" "$T" "$PY" -m pip install --no-build-isolation --no-deps .
fi
{
    echo
    echo "--- trgnet info (after the build)"
    (cd /tmp && timeout 60 "$PY" -m trgnet_fast.cli info 2>&1)
    echo
} | tee -a "$SUMMARY"

# ---------------------------------------------------------------- 2. GPU tests
: > "$OUT/tests.log"
T=$(stage_timeout 150 $(( MIN_PARITY + MIN_SANITIZER + MIN_DEVICE_TESTS + MIN_STEP + MIN_BENCH + COLLECT )))
# Python runs outside the source tree, which would otherwise hide the installed trgnet_fast._C.
cd /tmp
# the CUDA-graph tests first (replays against eager steps; docs/training.md#cuda-graphs): they have never run on a GPU
# before, and a stage cut by its timeout should have run them (pytest collects a path given twice once)
run_stage tests-gpu "$OUT/tests.log" "$T" "$PY" -m pytest "$REPO/tests/training/test_train_cuda_graphs.py" \
    "$REPO/tests" -m gpu -q -rs

# ---------------------------------------------------------------- 3. parity
: > "$OUT/parity.log"
T=$(stage_timeout 60 $(( MIN_SANITIZER + MIN_DEVICE_TESTS + MIN_STEP + MIN_BENCH + COLLECT )))
run_stage parity "$OUT/parity.log" "$T" "$PY" -m trgnet_fast.cli parity --device cuda

# ---------------------------------------------------------------- 3b. compute-sanitizer
# memcheck and racecheck of the native CUDA kernels on the small parity shapes (fwd + bwd of each op; the linear
# attention case T=300, D=E=64 covers several reduction chunks and tiles per chunk), fp32 and bf16
: > "$OUT/sanitizer.log"
if [[ "$SANITIZE" != "0" ]]; then
    SANITIZER=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
    if [[ -x "$SANITIZER" ]]; then
        for tool in memcheck racecheck; do
            T=$(stage_timeout 75 $(( MIN_DEVICE_TESTS + MIN_STEP + MIN_BENCH + COLLECT )))
            run_stage "sanitize-$tool" "$OUT/sanitizer.log" "$T" "$SANITIZER" --tool "$tool" --error-exitcode 99 \
                "$PY" -m trgnet_fast.cli parity --device cuda --backend cuda --small --dtype float32 --dtype bfloat16
        done
    else
        skip_stage sanitizer "compute-sanitizer not found" "$OUT/sanitizer.log"
    fi
else
    skip_stage sanitizer "TRGNET_SANITIZER=$SANITIZE" "$OUT/sanitizer.log"
fi

# ---------------------------------------------------------------- 3c. op and model tests on the GPU
# The op and model tests without the gpu marker pick the GPU when there is one (Triton compiled for real instead
# of the interpreter: poisoned outputs, determinism, contiguity, hypothesis cases). The CPU stand-ins for a GPU
# (kernel emulation, offline Triton compiles) and the CPU-only rest of the suite run in CI, not here.
T=$(stage_timeout 120 $(( MIN_STEP + MIN_BENCH + COLLECT )))
run_stage tests-device "$OUT/tests.log" "$T" "$PY" -m pytest "$REPO/tests/ops" "$REPO/tests/model" -q -rs \
    -m "not gpu" --ignore="$REPO/tests/ops/test_kernel_resources.py"
cd "$REPO"

# ---------------------------------------------------------------- 3d. whole training step
# the trainer's step (published PKU config, TRGNetLoss with every term, Adam) at N=8, T=6000 and N=1 inference, for
# every provider (reference, compile, compile-ro, cuda, triton, cuda-graph, triton-graph): the measurement of the
# goal "<= 8 ms per step, <= 1.5 ms inference, peak <= 2 GiB"
: > "$OUT/step.log"
T=$(stage_timeout 210 $(( MIN_BENCH + COLLECT )))
if (( T < 60 )); then
    skip_stage step "only $(left)s of the ${BUDGET}s budget left" "$OUT/step.log"
else
    # train_step.py starts no provider past --time-budget (a compiled one not with < 120 s left) and writes its
    # tables after every provider (and on SIGINT); timeout is the safety net
    # shellcheck disable=SC2086
    run_stage step "$OUT/step.log" "$T" "$PY" benchmarks/train_step.py $STEP_ARGS --out "$OUT/step" \
        --time-budget $(( T - 25 ))
fi

# ---------------------------------------------------------------- 4. benchmark
: > "$OUT/bench.log"
T=$(( $(left) - COLLECT ))
if (( T < 60 )); then
    skip_stage bench "only $(left)s of the ${BUDGET}s budget left" "$OUT/bench.log"
else
    # run.py stops starting cells at --time-budget and writes its tables; timeout is the safety net
    # shellcheck disable=SC2086
    run_stage bench "$OUT/bench.log" "$T" "$PY" benchmarks/run.py --device "$BENCH_DEVICE" $BENCH_ARGS \
        --out "$OUT/bench" --time-budget $(( T - 25 )) --no-progress
fi

# ---------------------------------------------------------------- collect
rm -f "$OUT"/bench/*.tmp "$OUT"/step/*.tmp
for f in "$OUT"/*.log "$OUT"/bench/* "$OUT"/step/*; do
    [[ -f "$f" ]] || continue
    size=$(stat -c %s "$f")
    if (( size > 15 * 1024 * 1024 )); then  # keep under the 16 MiB fetch limit: head + tail
        { head -c $(( 7 * 1024 * 1024 )) "$f"; printf '\n\n[... truncated by gpu_check.sh ...]\n\n'
          tail -c $(( 7 * 1024 * 1024 )) "$f"; } > "$f.cut" && mv "$f.cut" "$f"
    fi
done
{
    echo
    echo "--- stages (budget ${BUDGET}s, total $(elapsed)s)"
    printf '%s\n' "${STAGE_LINES[@]}"
    echo
    echo "--- files"
    (cd "$OUT" && find . -type f -printf '%p %s bytes\n' | sort)
} | tee -a "$SUMMARY"
for md in "$OUT/step/train_step.md" "$OUT/bench/results.md"; do
    if [[ -f "$md" ]]; then
        echo
        cat "$md"
    fi
done
