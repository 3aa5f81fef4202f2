"""A fast subset of the bad-input battery (benchmarks/bad_inputs.py): a few cases per group, each run in the
battery's worker subprocesses, must end clear or handled, never silent (accepted and wrong) or a crash. Cases that
are still silent are marked xfail(strict=True) with the reason, so that fixing one turns the test red until the
mark goes."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import bad_inputs  # noqa: E402

SUBSET = {
    "model": ["torch/published/x-nan", "torch/published/mask-2", "torch/correct/correct/holes",
              "torch/published/mask-complex", "cuda/published/T=1", "cuda/published/T==V", "torch/published/x-Cin"],
    "ops": ["linear_attention/cuda/eps=nan", "linear_attention/torch/k/nan-in-masked-frames",
            "multiscale_graph_conv/triton/all/bfloat16", "att_module/cuda/cu_seqlens/decreasing",
            "adaptive_graph_conv/triton/x/non-contiguous", "spatial_feature_injection/cuda/h/int32",
            "dilated_residual/triton/x/meta", "att_module/torch/heads=3", "frame_losses/cuda/threshold=nan",
            "frame_losses/triton/next_frame/float32", "frame_losses/cuda/pos_weight/rank-1",
            "batch_norm_relu/cuda/frame_mask/int32", "batch_norm_relu/triton/eps=nan",
            "aris_losses/cuda/head_weight/size+1", "aris_losses/triton/head_bias/meta"],
    "data": ["csv/feature/complex", "csv/boundary/value-2", "mstcn/feature/C=2", "csv/label/out-of-range",
             "csv/feature/truncated", "pku/skeleton/nan", "mapping/binary", "mstcn/cvt/wrong-C"],
    "config": ["optim.lr=.inf", "model.n_layers=0", "eval.boundary_th=1.5", "train.epochs=abc",
               "data.num_workers=-1", "train.best_metric=bogus"],
    "cli": ["train: train --data $TMP/synth --out $TMP/tr <tiny-run flags> --set model.n_layers=0",
            "viz-graphs: viz-graphs --checkpoint $TMP/run/last.pt --video test_0000 --data $TMP/synth --device bogus "
            "--out $TMP/out/v7",
            "eval: eval --checkpoint $TMP/junk.pt",
            "make-synthetic: make-synthetic --out $TMP/out/s3 --min-frames 0"],
}
# case name -> why it is still silent or a crash (xfail strict: remove the entry once it passes)
STILL_FAILING: dict[str, str] = {}


@pytest.fixture(scope="module")
def outcomes():
    records = []
    for group, names in SUBSET.items():
        records += bad_inputs.run_group(group, names)
    return {(r["group"], r["name"]): r for r in records}


def _params():
    for group, names in SUBSET.items():
        for name in names:
            marks = [pytest.mark.xfail(strict=True, reason=STILL_FAILING[name])] if name in STILL_FAILING else []
            yield pytest.param(group, name, marks=marks, id=f"{group}:{name}")


@pytest.mark.parametrize(("group", "name"), list(_params()))
def test_bad_input_is_answered_clearly_or_handled(outcomes, group, name):
    record = outcomes.get((group, name))
    assert record is not None, f"the battery has no case {name!r} in {group} (renamed?); got {sorted(outcomes)[:5]}"
    assert record["outcome"] not in ("silent", "crash"), f"{record['outcome']}: {record['input']}: {record['message']}"


def test_classification_rules():
    """The battery's own verdicts: names must appear as whole words (a 'x' inside 'max' is not x), an internal
    error type is never clear, a refused valid input is unclear, a result that the check rejects is silent."""
    case = bad_inputs.Case("t", "n", "d", lambda: None, ("x",))
    assert bad_inputs._error_outcome(case, ValueError("x: expected 4-D"))[0] == "clear"
    assert bad_inputs._error_outcome(case, ValueError("max of the input"))[0] == "unclear"
    assert bad_inputs._error_outcome(case, IndexError("x out of range"))[0] == "unclear"
    valid = bad_inputs.Case("t", "n", "d", lambda: 1, (), check=lambda r: None if r == 1 else "wrong", must_work=True)
    assert bad_inputs._error_outcome(valid, ValueError("refused"))[0] == "unclear"
    assert bad_inputs.run_case(valid)["outcome"] == "handled"
    wrong = bad_inputs.Case("t", "n", "d", lambda: 2, (), check=lambda r: None if r == 1 else "wrong")
    assert bad_inputs.run_case(wrong)["outcome"] == "silent"
    cli = bad_inputs.Case("cli", "n", "d", lambda: (2, "usage: trgnet\ntrgnet train: error: --epochs: bad\n"),
                          ("--epochs",), cli=True)
    assert bad_inputs.run_case(cli)["outcome"] == "clear"
    escaped = bad_inputs.Case("cli", "n", "d", lambda: {}["k"], ("k",), cli=True)
    assert bad_inputs.run_case(escaped)["outcome"] == "crash"
