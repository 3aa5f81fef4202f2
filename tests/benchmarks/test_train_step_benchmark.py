"""The whole-step benchmark (benchmarks/train_step.py) on the CPU: the --small run of the reference, the native cuda
backend (its C++ CPU kernels) and cuda-graph (skipped: no CUDA device) in training and inference, its files, the
time budget and the option errors. No timing is asserted, only that the times are real."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from backend_marks import needs

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))  # train_step, bench (as benchmarks/run.py imports them)

import train_step  # noqa: E402

REPEAT, WARMUP = 2, 3
SMALL_N, SMALL_T = train_step.SMALL_SIZE


def run(tmp_path, *extra) -> tuple[dict, str]:
    assert train_step.main(["--small", "--device", "cpu", "--repeat", str(REPEAT), "--warmup", str(WARMUP),
                            "--out", str(tmp_path), "--no-progress", *extra]) == 0
    data = json.loads((tmp_path / "train_step.json").read_text(encoding="utf-8"))
    return data, (tmp_path / "train_step.md").read_text(encoding="utf-8")


@needs("cuda")
def test_small_run_of_reference_cuda_and_cuda_graph(tmp_path, capsys):
    data, text = run(tmp_path, "--providers", "reference,cuda,cuda-graph")
    assert text.strip() in capsys.readouterr().out  # the report is printed too
    records = {(r["what"], r["provider"]): r for r in data["records"]}
    assert set(records) == {(what, p) for what in ("train", "infer") for p in ("reference", "cuda", "cuda-graph")}
    assert not (tmp_path / "train_step.md.tmp").exists() and not (tmp_path / "train_step.json.tmp").exists()

    for what, (n, t) in (("train", (SMALL_N, SMALL_T)), ("infer", (1, SMALL_T))):
        for provider, backend in (("reference", "torch"), ("cuda", "cuda")):
            r = records[(what, provider)]
            assert r["status"] == "ok", r.get("error")
            assert r["backend"] == backend and (r["N"], r["T"]) == (n, t)
            assert len(r["times_ms"]) == r["n"] == REPEAT and len(r["warmup_ms"]) == WARMUP
            assert all(math.isfinite(v) and v > 0 for v in r["times_ms"] + r["warmup_ms"])
            assert math.isfinite(r["median_ms"]) and r["median_ms"] > 0
            assert r["min_ms"] <= r["median_ms"] <= r["max_ms"] and r["iqr_ms"] >= 0
            assert r["frames_per_s"] == pytest.approx(n * t / (r["median_ms"] / 1e3))
            assert r["peak_bytes"] is None  # CUDA memory only
            assert r["params"] > 0
            # the row of the table holds the median as printed
            assert f"| {provider} | {train_step.format_ms(r['median_ms'])} |" in text
        assert records[(what, "reference")]["speedup"] == 1.0
        cuda = records[(what, "cuda")]
        assert cuda["speedup"] == pytest.approx(records[(what, "reference")]["median_ms"] / cuda["median_ms"])
        graph = records[(what, "cuda-graph")]
        assert graph["status"] == "skipped" and "CUDA" in graph["reason"] and "times_ms" not in graph
        assert f"skipped: {graph['reason']}" in text
    # the same model and size for both backends: same parameter count
    assert records[("train", "reference")]["params"] == records[("train", "cuda")]["params"]

    meta = data["meta"]
    assert meta["args"]["N"] == SMALL_N and meta["args"]["T"] == meta["args"]["infer_T"] == SMALL_T
    assert meta["args"]["mask_mode"] == "correct" and meta["small_model"] == train_step.SMALL_MODEL
    assert meta["command"].startswith("python benchmarks/train_step.py --small --device cpu")
    assert meta["env"]["torch"] and meta["env"]["cpu_count"] >= 1 and f"`{meta['command']}`" in text
    assert "## Training step" in text and "## Inference" in text


def test_time_budget_skips_with_the_reason(tmp_path):
    """A budget already spent when the first provider would start: every provider is listed as skipped."""
    data, text = run(tmp_path, "--providers", "reference", "--time-budget", "1e-9")
    assert [(r["what"], r["status"]) for r in data["records"]] == [("train", "skipped"), ("infer", "skipped")]
    assert all("--time-budget" in r["reason"] for r in data["records"])
    assert "Nothing measured." in text


def test_cpu_skips_compile_and_triton_unless_named(tmp_path):
    data, _ = run(tmp_path, "--time-budget", "1e-9", "--what", "train")
    reasons = {r["provider"]: r["reason"] for r in data["records"]}
    assert list(reasons) == list(train_step.PROVIDERS)  # run order: uncompiled first, compiled last
    for name in ("compile-ro", "cuda-compile-ro", "cuda-graph", "triton-graph"):
        assert "CUDA" in reasons[name]
    assert "name it in --providers" in reasons["compile"] and "name it in --providers" in reasons["cuda-compile"]
    assert "triton" in reasons["triton"].lower()


@pytest.mark.parametrize("argv, message", [
    (["--warmup", "2"], "--warmup: expected an int ≥ 3"),
    (["--repeat", "0"], "--repeat: expected an int ≥ 1, got 0"),
    (["--T", "1"], "--T: expected an int ≥ 2, got 1"),
    (["--infer-T", "1"], "--infer-T: expected an int ≥ 2, got 1"),
    (["--providers", "reference,eager"], "--providers: expected a comma list of reference"),
    (["--what", "train,fwd"], "(unknown: fwd)"),
    (["--device", "tpu"], "--device: expected cpu, cuda or cuda:N, got 'tpu'"),
    (["--time-budget", "0"], "--time-budget: expected seconds > 0, got 0.0"),
    (["--mask-mode", "padded"], "--mask-mode: invalid choice: 'padded'"),
])
def test_bad_options_name_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        train_step.parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
