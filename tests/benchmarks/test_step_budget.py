"""The training step's CPU-counted goals on the fused native backend, PKU config (docs/training.md#no-host-syncs,
benchmarks/NOTES.md): at most 400 non-view ops from batch to optimizer step (N=2, T=300), no host sync, at most
2 GiB saved for the backward at N=8, T=6000 (model on fake tensors); the N=1 inference without a host sync either
(the evaluation's CUDA graph needs none). A change that adds ops or activations to the step past the goals fails
here, not in a later benchmark run."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backend_marks import needs

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import step_anatomy  # noqa: E402
from bench.anatomy_blocks import STEP_PHASES, saved_total  # noqa: E402

MAX_STEP_OPS = 400
MAX_SAVED_BYTES = 2 * 2 ** 30


@needs("cuda")
def test_published_step_within_the_op_sync_and_memory_goals():
    args = argparse.Namespace(n=2, t=300, saved_n=8, saved_t=6000, infer_t=300, no_saved=False, seed=0)
    result = step_anatomy.measure_backend("cuda", args)
    ops = step_anatomy.op_total(result, phases=STEP_PHASES)
    saved = saved_total(result["saved_bytes"])
    assert result["syncs"] == [] and result["inference"]["syncs"] == []
    assert ops <= MAX_STEP_OPS, f"{ops} ops in the step (goal <= {MAX_STEP_OPS}): see step_anatomy.py's block table"
    assert saved <= MAX_SAVED_BYTES, f"{saved / 2 ** 30:.2f} GiB saved (goal <= 2 GiB)"
