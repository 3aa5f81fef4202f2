"""The step-anatomy report (benchmarks/step_anatomy.py, benchmarks/bench/anatomy.py, bench/anatomy_blocks.py):
exact op counts on hand-written functions, the sync detector's verdicts and frames, the saved-bytes rule on fake
tensors, backward attribution, fake vs real saved bytes, and the whole report on the tiny model."""
from __future__ import annotations

import argparse
import inspect
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from backend_marks import needs
from tiny_model import KW

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))  # step_anatomy, bench (as benchmarks/run.py imports them)

import step_anatomy  # noqa: E402
from bench.anatomy import (AUTOGRAD_ENGINE, PARAMETER_GRADS, AutogradNodeBlocks, BlockTracker, OpCounter,  # noqa: E402
                           SavedTensorRecorder, storage_keys)
from bench.anatomy_blocks import LOSS, PHASES, STEP_PHASES  # noqa: E402

HERE = (str(Path(__file__).resolve().parent),)
TINY = {k: KW[k] for k in ("n_features", "n_layers", "n_refine_layers", "n_stages_asb", "n_stages_brb", "SFI_layer")}
TINY_TEXT_DIM = KW["text_dim"]
MODEL_BLOCKS = ("SP", "STI: AttModule", "STI: SFI", "STI: other", "heads", "decoder: AttModule", "decoder: other",
                "boundary")


def count(fn, *args) -> OpCounter:
    counter = OpCounter(lambda: ("phase", "block"), HERE)
    with counter:
        fn(*args)
    return counter


def line_of(fn, text: str) -> int:
    """Line number of the first source line of ``fn`` containing ``text``."""
    lines, first = inspect.getsourcelines(fn)
    return first + next(i for i, line in enumerate(lines) if text in line)


# ------------------------------------------------------------------------------------------------- op counting
def test_counter_counts_each_non_view_op_once():
    x = torch.randn(4, 5)
    counter = count(lambda: (x.relu().sum(), x.view(20), x.t(), x[1], torch.empty(3)))
    assert counter.counts.ops == {("phase", "block"): Counter({"aten::relu": 1, "aten::sum": 1})}
    assert counter.counts.excluded["view"] == Counter({"aten::view": 1, "aten::t": 1, "aten::select": 1})
    assert counter.counts.excluded["allocation"] == Counter({"aten::empty": 1})


def test_counter_counts_in_place_ops():
    x = torch.randn(4)
    counter = count(lambda: x.add_(1).mul_(2))
    assert counter.counts.ops[("phase", "block")] == Counter({"aten::add_": 1, "aten::mul_": 1})


# ------------------------------------------------------------------------------------------------ sync detector
def issues_syncs(x):
    total = x.sum().item()
    where = x.nonzero()
    masked = x[x > 0]
    return total, where, masked


def sync_free(x):
    index = torch.tensor([0, 2])
    return (x * 2).sum(), x[index], torch.repeat_interleave(index, index + 1, output_size=4), x.max()


def test_sync_detector_names_op_and_line():
    syncs = count(issues_syncs, torch.randn(5)).counts.syncs
    here = Path(__file__).name
    assert [(s.op, s.where.split(" ")[0].split("/")[-1]) for s in syncs] == [
        ("aten::_local_scalar_dense", f"{here}:{line_of(issues_syncs, '.item()')}"),
        ("aten::nonzero", f"{here}:{line_of(issues_syncs, 'nonzero')}"),
        ("aten::index", f"{here}:{line_of(issues_syncs, 'x > 0')}"),
    ]
    assert "boolean-mask" in syncs[2].reason


def test_sync_detector_passes_a_sync_free_function():
    assert count(sync_free, torch.randn(5)).counts.syncs == []


def test_ops_on_host_tensors_are_tallied_apart_and_do_not_sync():
    step, weight = torch.tensor(3.0), torch.randn(4)
    counter = OpCounter(lambda: ("phase", "block"), HERE, host_tensors=storage_keys([step]))
    with counter:
        step.add_(torch.tensor(1.0))      # Adam's step increment: host tensor + 0-dim scalar
        step.item()
        weight.mul_(step)                 # touches a device tensor: counted
    assert counter.counts.excluded["host"] == Counter({"aten::add_": 1, "aten::_local_scalar_dense": 1})
    assert counter.counts.ops[("phase", "block")] == Counter({"aten::mul_": 1})
    assert counter.counts.syncs == []


# ------------------------------------------------------------------------------------------------- saved bytes
def test_saved_bytes_dedupe_by_storage_on_fake_tensors():
    block = ["first"]
    recorder = SavedTensorRecorder(lambda: block[0])
    with FakeTensorMode():
        x = torch.empty(4, 8, requires_grad=True)  # 128 bytes
        with recorder.hooks():
            a = x.sin()                   # saves x
            b = x.cos()                   # saves x again: same storage, counted once
            block[0] = "second"
            c = x[:2].exp()               # saves its output: 64 bytes
            d = a * b                     # saves a and b: 2 x 128 bytes
        assert recorder.live_bytes(resident=set()) == {"first": 128, "second": 64 + 256}
        assert recorder.live_bytes(resident=storage_keys([x])) == {"resident": 128, "second": 64 + 256}
        del d
        assert recorder.live_bytes(resident=set()) == {"first": 128, "second": 64}
        del c


def test_saved_bytes_count_a_view_by_its_whole_storage():
    recorder = SavedTensorRecorder(lambda: "block")
    with FakeTensorMode():
        x = torch.empty(10, 10, requires_grad=True)
        with recorder.hooks():
            y = x * 1.0
            z = y[:1] * y[:1]             # saves a 1-row view of y: y's 400 bytes
        assert recorder.live_bytes(resident=set()) == {"block": 400}
        del z


# --------------------------------------------------------------------------------------- backward attribution
def test_backward_ops_go_to_the_block_that_created_the_nodes():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    node_blocks = AutogradNodeBlocks()
    tracker = BlockTracker(outside="outside", node_blocks=node_blocks)
    tracker.add("linear", model[0])
    tracker.add("relu", model[1])
    counter = OpCounter(lambda: ("backward", node_blocks.current), HERE)
    loss = model(torch.randn(2, 3)).sum()
    node_blocks.claim(loss, "outside")
    node_blocks.arm()
    with counter:
        loss.backward()
    ops = counter.counts.ops
    assert ops[("backward", "relu")] == Counter({"aten::threshold_backward": 1})
    assert "aten::mm" in ops[("backward", "linear")]
    assert set(ops) <= {("backward", b) for b in ("linear", "relu", "outside", PARAMETER_GRADS, AUTOGRAD_ENGINE)}
    node_blocks.disarm()
    tracker.remove()


# ------------------------------------------------------------------------------------------------- whole step
def tiny_args(**overrides):
    """The CLI's arguments for one step of the tiny model at N=1, T=64, saved bytes at the same size."""
    base = dict(n=1, t=64, saved_n=1, saved_t=64, infer_t=40, seed=0, no_saved=False, mask_mode="published")
    return argparse.Namespace(**{**base, **overrides})


def measure_tiny(backend: str, args, model_overrides=None) -> dict:
    """measure_backend on the tiny model (the CLI's model overrides, e.g. the mask mode, on top)."""
    return ORIGINAL_MEASURE(backend, args, model_overrides={**TINY, **(model_overrides or {})}, text_dim=TINY_TEXT_DIM)


ORIGINAL_MEASURE = step_anatomy.measure_backend


@pytest.fixture(scope="module", params=["torch", pytest.param("cuda", marks=needs("cuda"))])
def tiny_result(request):
    return measure_tiny(request.param, tiny_args())


def test_fake_saved_bytes_match_the_real_run(tiny_result):
    """Model blocks on fake tensors save exactly what the real step saves; the loss runs for real in both (on
    the model's outputs in the step, on random leaves of their shapes in the fake run)."""
    real, fake = tiny_result["saved_bytes_count_size"], tiny_result["saved_bytes"]
    assert {b: fake[b] for b in MODEL_BLOCKS} == {b: real[b] for b in MODEL_BLOCKS}
    assert fake[LOSS] == pytest.approx(real[LOSS], rel=0.05)


def test_report_has_every_phase_and_block(tiny_result):
    ops = tiny_result["ops"]
    # "batch" holds the batch's copies to a GPU only: on the CPU nothing runs before TrainStep (SAEP and the loss
    # targets come from the collate)
    assert {r["phase"] for r in ops} == set(PHASES) - {"batch"}
    for phase in ("forward", "backward"):
        assert set(MODEL_BLOCKS) <= {r["block"] for r in ops if r["phase"] == phase}
    assert {AUTOGRAD_ENGINE, LOSS} <= {r["block"] for r in ops if r["phase"] == "backward"}  # gradient sums, loss
    if tiny_result["backend"] == "cuda":
        assert step_anatomy.op_total(tiny_result, STEP_PHASES, namespace="trgnet") > 0
    env = {"date_utc": "d", "torch": "t", "triton": "t", "python": "p", "platform": "p", "cpu": "c", "cpu_count": 2,
           "git_commit": "c"}
    text = step_anatomy.markdown([tiny_result], env, tiny_args(), 1.0)
    assert f"## Ops per block: {tiny_result['backend']}" in text and "| **total** |" in text
    assert "## N=1 inference ops per block (T=40)" in text


def test_the_whole_step_issues_no_host_sync(tiny_result):
    """Trainer.train_step from the collated batch to the optimizer step and its bookkeeping, counted under the
    dispatch mode: not one op that waits for the device."""
    assert tiny_result["syncs"] == []
    assert {r["phase"] for r in tiny_result["ops"]} >= set(STEP_PHASES)  # every phase ran under the counter


def test_the_inference_is_the_eval_forward_of_every_block_without_a_host_sync(tiny_result):
    """The N=1 inference, counted: every model block dispatches, all in the inference phase, none of it waits for
    the device; the fused backend's AttModules are its custom ops; the training-only work (dropout, the feature
    heads) is absent, so it dispatches fewer ops than the step's forward."""
    inference = tiny_result["inference"]
    assert inference["syncs"] == []
    assert {r["phase"] for r in inference["ops"]} == {"inference"}
    assert set(MODEL_BLOCKS) <= {r["block"] for r in inference["ops"]}
    assert not any(r["op"] in ("aten::bernoulli_", "aten::native_dropout") for r in inference["ops"])
    assert step_anatomy.op_total(inference) < step_anatomy.op_total(tiny_result, ["forward"])
    if tiny_result["backend"] == "cuda":
        assert step_anatomy.op_total(inference, blocks=["STI: AttModule"], namespace="trgnet") == \
            step_anatomy.op_total(inference, blocks=["STI: AttModule"])


@needs("cuda")
def test_mask_correct_mode_the_cuda_graphs_need_is_counted_without_a_sync(tmp_path, monkeypatch):
    """--mask-mode correct (what train.cuda_graphs needs): the cuda backend's step, counted, issues no host sync,
    and the report says which mode it counted."""
    monkeypatch.setattr(step_anatomy, "measure_backend", measure_tiny)
    argv = ["--backends", "cuda", "--n", "2", "--t", "64", "--no-saved", "--check-no-sync", "--mask-mode", "correct",
            "--out", str(tmp_path)]
    assert step_anatomy.main(argv) == 0
    assert "model.mask_mode correct" in (tmp_path / "step_anatomy.md").read_text()


def test_check_no_sync_passes_the_step_and_fails_a_batch_without_a_segment_bound(tmp_path, capsys, monkeypatch):
    """The CLI's --check-no-sync: exit 0 on the trainer's step; a batch that lacks the collate's loss targets and
    max_segments makes the loss count segments with nonzero, and the check names it."""
    monkeypatch.setattr(step_anatomy, "measure_backend", measure_tiny)
    argv = ["--backends", "torch", "--n", "1", "--t", "64", "--no-saved", "--check-no-sync", "--out", str(tmp_path)]
    assert step_anatomy.main(argv) == 0
    assert (tmp_path / "step_anatomy.md").is_file() and (tmp_path / "step_anatomy.json").is_file()
    capsys.readouterr()

    build = step_anatomy.build_trainer_step

    def without_bound(*args, **kwargs):
        parts = build(*args, **kwargs)
        del parts.batch["max_segments"], parts.batch["loss_targets"]
        return parts
    monkeypatch.setattr(step_anatomy, "build_trainer_step", without_bound)
    assert step_anatomy.main(argv) == 1
    assert "sync: torch loss loss aten::nonzero" in capsys.readouterr().err
