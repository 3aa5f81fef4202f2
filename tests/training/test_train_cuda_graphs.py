"""Training steps as CUDA graphs (train.cuda_graphs, docs/training.md#cuda-graphs): batches padded to length buckets
train as the unbucketed ones do, the options refuse what a graph cannot replay, and on a GPU the replayed step
equals the eager one."""
import subprocess
import sys

import pytest
import torch
from torch.utils._pytree import tree_map

from backend_marks import needs
from train_helpers import assert_same_step, float64_step, setup_trainer, text_files, tiny_overrides
from trgnet_fast import cli
from trgnet_fast.data import collate
from trgnet_fast.host_sync import NoHostSync
from trgnet_fast.training import Trainer, load_config
from trgnet_fast.training.config import ConfigError
from trgnet_fast.training.cuda_graphs import GraphedSteps, check_graphable
from trgnet_fast.training.data import eval_loader, length_buckets, train_loader
from trgnet_fast.training.evaluate import graphed_forward, run_inference
from trgnet_fast.training.trainer import _STEP_INPUTS, LOSS_KEYS, disable_dropout
from trgnet_fast.training.transfer import copy_buffers, layout_key, pack

CORRECT = ["model.mask_mode=correct"]


def test_a_step_on_a_batch_padded_to_its_length_bucket_equals_the_unbucketed_step(tiny_data, tmp_path):
    """Train mode, dropout off, float64, every loss term on: the loss terms, the final logits on the real frames and
    every gradient of the batch padded to its length bucket equal those of the batch padded to its longest video."""
    trainer = setup_trainer(tiny_data, tmp_path / "out", [*CORRECT, *text_files(tmp_path)])
    disable_dropout(trainer.step.double())
    items = [item for item in (trainer.splits["train"][i] for i in range(6)) if item["feature"].shape[-1] < 64][:4]
    builder = trainer.criterion.target_builder(torch.float64)
    batches = (collate(items, builder), collate(items, builder, length_buckets=1))
    t = batches[0]["x"].shape[-1]
    assert batches[1]["x"].shape[-1] == 64 > t  # 48-63 frames: one bucket per octave pads to 64
    plain, (terms, final, grads) = (float64_step(trainer, batch) for batch in batches)
    assert_same_step(plain, (terms, final[..., :t], grads), batches[0]["mask"])


def test_the_loader_pads_to_length_buckets_with_data_length_buckets_or_cuda_graphs(tiny_data, tmp_path):
    cfg = load_config("synthetic", tiny_overrides(tiny_data, str(tmp_path), extra=[*CORRECT, "data.length_buckets=1"]))
    assert length_buckets(cfg) == 1
    trainer = Trainer(cfg, log=lambda m: None, progress=False)
    trainer.setup()
    loader, _ = train_loader(trainer.splits["train"], cfg, 0, 1, loss_targets=trainer.criterion.target_builder())
    lengths = {batch["x"].shape[-1] for batch in loader}
    assert lengths == {64}  # 48-64 frames, one length per octave
    cfg["data"]["length_buckets"] = None
    assert length_buckets(cfg) is None
    cfg["train"]["cuda_graphs"] = True
    assert length_buckets(cfg) == 8 and length_buckets(cfg, "eval") is None


def test_a_graph_layout_is_fixed_by_the_length_bucket_and_the_segment_bound(tiny_data, tmp_path):
    """Over two epochs of the loader's batches (SAEP, every loss target), the step inputs' layouts (what GraphedSteps
    keys its graphs by) are exactly as many as the distinct (length bucket, segment bound) pairs: nothing else in a
    batch changes a shape, so every later batch of a bucket replays its graph."""
    trainer = setup_trainer(tiny_data, tmp_path / "out", [*CORRECT, *text_files(tmp_path), "data.length_buckets=8"])
    keys, shapes = set(), set()
    for epoch in (1, 2):
        loader, sampler = train_loader(trainer.splits["train"], trainer.cfg, 0, 1,
                                       loss_targets=trainer.criterion.target_builder())
        sampler.set_epoch(epoch)
        for batch in loader:
            keys.add(layout_key(pack({k: batch.get(k) for k in _STEP_INPUTS})))
            shapes.add((batch["x"].shape[-1], batch["max_segments"]))
    assert len(keys) == len(shapes) >= 2


@pytest.mark.parametrize("extra, match", [
    (["data.length_buckets=4"], r"'data\.length_buckets': expected model\.mask_mode: correct"),
    (["train.cuda_graphs=true"], r"'train\.cuda_graphs': expected model\.mask_mode: correct"),
    (["train.cuda_graphs=true", "model.mask_mode=correct", "data.packing=true"],
     r"'train\.cuda_graphs': expected padded batches \(data\.packing: false"),
    (["train.cuda_graphs=true", "model.mask_mode=correct", "model.backend=torch"],
     r"'train\.cuda_graphs': expected a fused model\.backend .* got model\.backend 'torch'"),
    (["eval.cuda_graphs=true"], r"'eval\.cuda_graphs': expected model\.mask_mode: correct"),
    (["eval.cuda_graphs=true", "model.mask_mode=correct", "model.backend=torch"],
     r"'eval\.cuda_graphs': expected a fused model\.backend"),
    (["eval.cuda_graphs=true", "model.mask_mode=correct", "data.packing=true"],
     r"'eval\.cuda_graphs': expected padded batches"),
])
def test_options_a_graph_cannot_replay_are_refused(tmp_path, extra, match):
    with pytest.raises(ConfigError, match=match):
        load_config("synthetic", tiny_overrides(str(tmp_path), str(tmp_path), extra=extra))


def test_cuda_graphs_on_the_cpu_is_refused_at_setup(tiny_data, tmp_path):
    cfg = load_config("synthetic", tiny_overrides(tiny_data, str(tmp_path),
                                                  extra=[*CORRECT, "train.cuda_graphs=true", "train.device=cpu"]))
    with pytest.raises(ConfigError, match=r"'train\.cuda_graphs': expected one process on a CUDA device, got device "
                                          r"cpu and 1 process"):
        Trainer(cfg, log=lambda m: None, progress=False).setup()


def test_evaluation_on_batches_padded_to_length_buckets_gives_the_unbucketed_outputs(tiny_data, tmp_path):
    """run_inference with length_buckets (the graphed evaluation's padding, eager here): every video's logits and
    boundary logits and the metrics equal those of the unpadded batches (mask-correct model, float32)."""
    trainer = setup_trainer(tiny_data, tmp_path / "out", CORRECT)
    loader = eval_loader(trainer.splits["train"], trainer.cfg)
    outputs = []
    for buckets in (None, 1):
        videos = {}
        metrics = run_inference(trainer.model, loader, trainer.cfg, trainer.class_names, trainer.joint_graph,
                                trainer.device, on_video=lambda name, pred, gt, z, b: videos.update({name: (z, b)}),
                                length_buckets=buckets)
        outputs.append((videos, metrics.summary()))
    (plain, summary), (bucketed, summary_bucketed) = outputs
    assert plain.keys() == bucketed.keys() and len(plain) == len(trainer.splits["train"])
    assert any(z.shape[-1] < 64 for z, _ in plain.values())  # 48-64 frames: those under 64 are padded to 64
    for name, (z, b) in plain.items():
        torch.testing.assert_close(bucketed[name][0], z, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(bucketed[name][1], b, rtol=1e-5, atol=1e-5)
    assert summary_bucketed == pytest.approx(summary)


def test_graphed_evaluation_on_the_cpu_is_a_user_error(tiny_data, tmp_path, capsys):
    """`trgnet eval --cuda-graphs` on the CPU: one line naming the flag and the device."""
    trainer = setup_trainer(tiny_data, tmp_path / "out", [*CORRECT, "train.epochs=1", "train.device=cpu"])
    trainer.fit()
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "out" / "last.pt"), "--device", "cpu",
                     "--cuda-graphs"]) == 2
    err = capsys.readouterr().err
    assert err == ("trgnet eval: error: --cuda-graphs: expected one process on a CUDA device, got device cpu and 1 "
                   "process(es)\n")


def test_check_graphable_refuses_an_unvalidated_mask_mode_and_a_torch_backend():
    """A checkpoint's model under `--cuda-graphs` (its config never validated with eval.cuda_graphs on): the mask mode
    is checked here, after the device (a CUDA device object: nothing runs on it)."""
    with pytest.raises(ConfigError, match=r"^--cuda-graphs: expected model\.mask_mode: correct \(batches are padded to "
                                          r"length buckets\), got 'published'$"):
        check_graphable("--cuda-graphs", "cuda", "cuda", unvalidated_mask_mode="published")
    with pytest.raises(ConfigError, match=r"^--cuda-graphs: expected a fused model\.backend .* got model\.backend "
                                          r"'torch' running them in torch$"):
        check_graphable("--cuda-graphs", "cuda", "torch", unvalidated_mask_mode="correct")


def test_graphed_steps_refuse_a_cpu_device_and_a_bad_warmup():
    with pytest.raises(ValueError, match="device: CUDA graphs need a CUDA device, got cpu"):
        GraphedSteps(lambda tree: tree, "cpu")
    for warmup in (0, 1.5, True):
        with pytest.raises(ValueError, match="warmup: expected an int ≥ 1"):
            GraphedSteps(lambda tree: tree, "cuda", warmup=warmup)


def test_layout_keys_tell_apart_what_a_graph_cannot_share():
    """Equal for batches with the same shapes and bound, different for another length, bound or dtype; copying a
    batch into static buffers keeps their addresses."""
    def batch(t, bound=8, dtype=torch.float32, seed=0):
        gen = torch.Generator().manual_seed(seed)
        return {"x": torch.randn(2, 3, t, generator=gen, dtype=dtype), "labels": torch.randint(0, 5, (2, t)),
                "max_segments": bound, "packed": None}

    key = layout_key(pack(batch(10)))
    assert layout_key(pack(batch(10, seed=1))) == key
    for other in (batch(11), batch(10, bound=16), batch(10, dtype=torch.float64)):
        assert layout_key(pack(other)) != key
    packed = pack(batch(10, seed=2))
    static = {dtype: torch.zeros_like(buffer) for dtype, buffer in packed.buffers.items()}
    addresses = {dtype: buffer.data_ptr() for dtype, buffer in static.items()}
    copy_buffers(static, packed)
    assert {dtype: buffer.data_ptr() for dtype, buffer in static.items()} == addresses
    assert all(torch.equal(static[dtype], buffer) for dtype, buffer in packed.buffers.items())


def _to_meta(trainer) -> None:
    """The trainer's model, loss and joint graph as meta tensors (shapes without values: a stand-in for a GPU on which
    a tensor the step makes on the host must be copied over), its Adam rebuilt over them, and its step zeroing the
    gradients in place as it does inside GraphedSteps."""
    for module in trainer.step.modules():
        for name, param in list(module._parameters.items()):
            if param is not None:
                module._parameters[name] = torch.nn.Parameter(param.detach().to("meta"), param.requires_grad)
        for name, buf in list(module._buffers.items()):
            if buf is not None:
                module._buffers[name] = buf.to("meta")
    trainer.joint_graph = trainer.joint_graph.to("meta")
    trainer.optimizer = torch.optim.Adam(trainer.model.parameters(), lr=1e-3, foreach=True)
    trainer.device = torch.device("meta")
    trainer.graphed_steps = "set: Trainer._step zeroes the gradients in place"


@needs("cuda")
def test_the_step_a_graph_captures_makes_no_host_tensor_and_reads_nothing_back(tiny_data, tmp_path, monkeypatch):
    """The trainer's step as GraphedSteps captures it (the cuda backend's fused ops, every loss term, gradient clipping,
    in-place gradient zeroing, Adam) on the meta device: NoHostSync, which refuses host reads and copies between the
    host and the device (a capture can hold neither), lets the steady-state step through."""
    trainer = setup_trainer(tiny_data, tmp_path / "out",
                            [*CORRECT, *text_files(tmp_path), "model.backend=cuda", "optim.grad_clip=1.0"])
    loader, _ = train_loader(trainer.splits["train"], trainer.cfg, 0, 1,
                             loss_targets=trainer.criterion.target_builder())
    batch = next(iter(loader))
    inputs = tree_map(lambda v: v.to("meta") if torch.is_tensor(v) else v, {k: batch.get(k) for k in _STEP_INPUTS})
    _to_meta(trainer)
    is_autocast_enabled = torch.is_autocast_enabled  # meta has no autocast to ask about
    monkeypatch.setattr(torch, "is_autocast_enabled",
                        lambda *device: False if device and str(device[0]) == "meta" else is_autocast_enabled(*device))
    trainer._step(inputs)  # Adam's state exists from here on: a steady-state step, as captured
    with NoHostSync(host_tensors=[state["step"] for state in trainer.optimizer.state.values()]):
        result = trainer._step(inputs)
    assert result.device.type == "meta" and result.shape == (len(LOSS_KEYS) + 2,)
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in trainer.model.SP.parameters())


# ------------------------------------------------------------------------------------------------ on a GPU
@pytest.mark.gpu
def test_replays_equal_the_eager_steps_of_the_same_code():
    """A small model with fused Adam through GraphedSteps (warmup 1, then a capture per layout and replays) against
    the same steps run eagerly, batch by batch, over two layouts: equal losses and weights after every step."""
    def make():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).cuda()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, fused=True, capturable=True)

        def step(tree):
            loss = torch.nn.functional.cross_entropy(model(tree["x"]), tree["y"])
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            optimizer.step()
            return loss.detach().reshape(1)
        return model, step

    gen = torch.Generator().manual_seed(1)
    batches = [{"x": torch.randn(n, 6, generator=gen), "y": torch.randint(0, 3, (n,), generator=gen)}
               for n in (5, 5, 5, 7, 5, 7, 7, 5)]
    eager_model, eager_step = make()
    graph_model, graph_step = make()
    graphed = GraphedSteps(graph_step, "cuda", warmup=1)
    for batch in batches:
        expect = eager_step({k: v.cuda() for k, v in batch.items()})
        got = graphed(batch)
        torch.testing.assert_close(got, expect, rtol=1e-6, atol=0)
        for a, b in zip(graph_model.parameters(), eager_model.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert graphed.layouts == 2


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_graphed_training_equals_the_same_steps_uncaptured(tiny_data, tmp_path, backend):
    """The trainer with train.cuda_graphs against the same trainer whose steps never get captured (the same code,
    fused Adam and in-place gradient zeroing, eager): equal loss terms and weights after 8 steps over the loader's
    batches (several length buckets), deterministic algorithms, dropout off."""
    extra = [*CORRECT, *text_files(tmp_path), "train.cuda_graphs=true", "train.device=cuda",
             f"model.backend={backend}", "model.dropout=false", "train.deterministic=true", "optim.grad_clip=1.0",
             "data.length_buckets=8"]
    trainers = [setup_trainer(tiny_data, tmp_path / name, extra) for name in ("graphs", "eager")]
    trainers[1].graphed_steps.warmup = 10**9  # every step eager
    loader, _ = train_loader(trainers[0].splits["train"], trainers[0].cfg, 0, 1,
                             loss_targets=trainers[0].criterion.target_builder())
    batches = [batch for _ in range(3) for batch in loader][:8]
    assert len({batch["x"].shape[-1] for batch in batches}) >= 2
    for batch in batches:
        got, expect = (trainer.train_step(batch) for trainer in trainers)
        torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-6)
    assert trainers[0].graphed_steps.layouts >= 1 and trainers[1].graphed_steps.layouts == 0
    for a, b in zip(trainers[0].model.parameters(), trainers[1].model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_graphed_replays_draw_new_dropout_masks():
    """With dropout on, replaying the same batch twice gives different results (the RNG advances per replay) and the
    result stays finite."""
    def step(tree):
        return torch.nn.functional.dropout(tree["x"], 0.5).sum().reshape(1)

    graphed = GraphedSteps(step, "cuda", warmup=1)
    batch = {"x": torch.ones(1000)}
    results = [graphed(batch) for _ in range(4)]  # eager, then capture + replay, replay, replay
    assert graphed.layouts == 1
    assert len({float(r) for r in results[1:]}) == 3 and all(torch.isfinite(r).all() for r in results)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_graphed_evaluation_equals_the_eager_one(tiny_data, tmp_path, backend):
    """run_inference through graphed_forward (a capture per length bucket after 2 eager calls each) against the eager
    forward of the same padded batches: the same logits, boundary logits and metrics."""
    trainer = setup_trainer(tiny_data, tmp_path / "out", [*CORRECT, "train.device=cuda", f"model.backend={backend}"])
    loader = eval_loader(trainer.splits["train"], trainer.cfg)
    graphed = graphed_forward(trainer.model, trainer.joint_graph, trainer.device)
    outputs = []
    for forward in (None, graphed, graphed):  # eager, then graphed (warm-up and captures), then replays only
        videos = {}
        metrics = run_inference(trainer.model, loader, trainer.cfg, trainer.class_names, trainer.joint_graph,
                                trainer.device, on_video=lambda name, pred, gt, z, b: videos.update({name: (z, b)}),
                                length_buckets=2, graphed=forward)
        outputs.append((videos, metrics.summary()))
    assert graphed.layouts >= 1
    (eager, summary), *graphs = outputs
    for videos, graph_summary in graphs:
        for name, (z, b) in eager.items():
            torch.testing.assert_close(videos[name][0], z, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(videos[name][1], b, rtol=1e-5, atol=1e-5)
        assert graph_summary == pytest.approx(summary)


UNCAPTURABLE = """
import torch
from trgnet_fast.training.cuda_graphs import GraphedSteps

def step(tree):
    return tree["x"] * float(tree["x"].sum().item())

graphed = GraphedSteps(step, "cuda", warmup=1)
batch = {"x": torch.ones(3)}
assert torch.equal(graphed(batch).cpu(), torch.full((3,), 3.0))
try:
    graphed(batch)
except RuntimeError as exc:
    print("ERROR:", str(exc).splitlines()[0])
"""


@pytest.mark.gpu
def test_a_step_that_cannot_be_captured_is_an_error_naming_the_batch():
    """A step that reads a device value on the host (``.item()``) runs in its eager warm-up but cannot be captured:
    the error says so and names the batch's tensors. In a process of its own: a failed capture may leave the CUDA
    context unusable for the tests after it."""
    run = subprocess.run([sys.executable, "-c", UNCAPTURABLE], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "ERROR: CUDA graphs: capturing the step for a batch of tensors (3,) float32 failed" in run.stdout
