"""TRGNet's blocks and its training step, as ``benchmarks/step_anatomy.py`` measures them.

The step is the trainer's own: the published config (``load_config("PKU-subject")``), the model, Adam and
``TRGNetLoss`` built as ``Trainer.setup`` builds them (trgnet_fast/training/trainer.py), and
``Trainer.train_step`` itself run on them (``TrainStep`` (model + loss) → ``losses["total"].backward()`` →
``Adam.step`` → the loss floats and accuracy counts it returns). The batch is ``benchmarks/workload.py``'s padded
random batch, augmented (SAEP) and given its loss targets on the CPU as the training collate does; the text inputs
(action embeddings (K, 768), TAG (K, K)) are random tensors of the published shapes, so no text encoder is needed.
Adam runs with ``foreach=True``: what the trainer's default Adam picks on CUDA tensors (on CPU tensors it would loop
over the parameters one by one). :func:`measure_inference` counts the evaluation's forward the same way.

Phases: batch (what ``train_step`` does before ``TrainStep``: on a GPU the batch's copies; nothing on the CPU), forward
(inside the model), loss (the rest of ``TrainStep``), backward, optimizer, bookkeeping (``train_step``'s loss floats and
accuracy); inference (the eval forward of :func:`measure_inference`). Blocks: :func:`model_blocks`.
"""
from __future__ import annotations

import gc
import json
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from types import SimpleNamespace

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

import trgnet_fast
from trgnet_fast.data import saep, segment_capacity
from trgnet_fast.data.seeded_batches import batch_seed
from trgnet_fast.losses import TRGNetLoss, boundary_pos_weight
from trgnet_fast.model import default_config
from trgnet_fast.model.text_heads import TextFeatures
from trgnet_fast.training.config import load_config
from trgnet_fast.training.cuda_graphs import GraphedSteps
from trgnet_fast.training.text import PUBLISHED_TEXT_DIM
from trgnet_fast.training.trainer import Trainer, TrainStep, build_model, model_kwargs

import workload
from bench.anatomy import (AUTOGRAD_ENGINE, PARAMETER_GRADS, AutogradNodeBlocks, BlockTracker, OpCounter,
                           OpCounts, SavedTensorRecorder, fake_module, module_state, storage_keys)

DATASET = "PKU-subject"
PHASES = ("batch", "forward", "loss", "backward", "optimizer", "bookkeeping")
STEP_PHASES = ("forward", "loss", "backward", "optimizer")  # the training step proper
INFERENCE = "inference"
MODEL_TOP_LEVEL = "model top level"
LOSS = "loss"
# the model's top-level children → the block they belong to (a child not listed is a block of its own name)
BLOCK_FAMILIES = {"SP": "SP", "STI": "STI", "conv_cls": "heads", "conv_bound": "heads", "conv_feature": "heads",
                  "conv_asb_feature": "heads", "asb": "decoder", "brb": "boundary"}
# module classes inside a block reported as sub-blocks ("STI: AttModule"; the rest of the block is "STI: other")
SUB_BLOCK_CLASSES = {"AttModule": "AttModule", "SpatialFeatureInjection": "SFI"}
PACKAGE_DIRS = (trgnet_fast.__path__[0],)


# ------------------------------------------------------------------------------------------------------ blocks
def _members(child: nn.Module) -> list[nn.Module]:
    """The modules that run: a ModuleList's items (the list itself is never called), else the child."""
    return list(child) if isinstance(child, nn.ModuleList) else [child]


def model_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(label, module) of every hooked module: the model itself (:data:`MODEL_TOP_LEVEL`), each top-level child
    under its family (:data:`BLOCK_FAMILIES`) and the :data:`SUB_BLOCK_CLASSES` modules inside it."""
    blocks = [(MODEL_TOP_LEVEL, model)]
    for name, child in model.named_children():
        family = BLOCK_FAMILIES.get(name, name)
        members = _members(child)
        subs = [(f"{family}: {SUB_BLOCK_CLASSES[type(m).__name__]}", m)
                for member in members for m in member.modules() if type(m).__name__ in SUB_BLOCK_CLASSES]
        own = f"{family}: other" if subs else family
        blocks += [(own, member) for member in members] + subs
    return blocks


def block_order(model: nn.Module) -> list[str]:
    """Display order of the labels: the model's blocks, then the loss, backward-only labels and other phases."""
    labels = [label for label, _ in model_blocks(model)[1:]] + [MODEL_TOP_LEVEL, LOSS, PARAMETER_GRADS,
                                                                 AUTOGRAD_ENGINE, "optimizer", "batch", "bookkeeping"]
    return list(dict.fromkeys(labels))


# -------------------------------------------------------------------------------------------------------- step
@dataclass
class TrainerStep:
    """What ``Trainer.train_step`` reads from the trainer (``trainer``) and the batch it gets."""
    trainer: SimpleNamespace
    batch: dict

    @property
    def model(self) -> nn.Module:
        return self.trainer.model

    def run(self) -> dict:
        return Trainer.train_step(self.trainer, self.batch)


def random_text_inputs(n_classes: int, text_dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Action embeddings (K, text_dim) and a TAG-like (K, K) graph: symmetric, in [0, 1), unit diagonal."""
    gen = torch.Generator().manual_seed(seed + 1)
    embeddings = torch.randn((n_classes, text_dim), generator=gen)
    graph = torch.rand((n_classes, n_classes), generator=gen)
    graph = (graph + graph.T) / 2
    graph.fill_diagonal_(1.0)
    return embeddings, graph


def batch_pos_weight(boundary: torch.Tensor) -> float:
    """The BCE pos_weight of ``boundary_pos_weight`` counted on the batch (the trainer counts the training set's
    boundary files; the value changes no op count); 1.0 for a batch without boundaries (T < 300 draws one
    segment per video)."""
    return boundary_pos_weight([boundary]) if bool(boundary.any()) else 1.0


def build_trainer_step(n: int, t: int, backend: str, seed: int = 0, model_overrides: dict | None = None,
                       text_dim: int = PUBLISHED_TEXT_DIM, device="cpu", cuda_graphs: bool = False) -> TrainerStep:
    """The trainer's objects for the published PKU config on ``device``, and an (N, T) batch (on the CPU, as the
    loader gives it: ``train_step`` moves it).

    model_overrides: ``model.*`` config keys (e.g. a smaller model for tests); text_dim: width of the text heads;
    cuda_graphs: the step as the trainer runs it with train.cuda_graphs (docs/training.md#cuda-graphs: fused Adam,
    the step captured per batch shape; needs a CUDA ``device`` and model.mask_mode correct among the overrides).
    """
    device = torch.device(device)
    overrides = [f"model.backend={backend}", f"train.cuda_graphs={json.dumps(cuda_graphs)}"] + [
        f"model.{k}={json.dumps(v)}" for k, v in (model_overrides or {}).items()]
    cfg = load_config(DATASET, overrides)
    n_classes = default_config(DATASET)["n_classes"]  # the classes workload.make_model_inputs draws
    torch.manual_seed(seed)
    model = build_model(model_kwargs(cfg, n_classes, text_dim), cfg["model"]["dropout"])
    inputs = workload.make_model_inputs(n, t, "cpu", seed, DATASET)
    embeddings, graph = random_text_inputs(n_classes, text_dim, seed)
    loss_cfg = cfg["loss"]
    criterion = TRGNetLoss(embeddings, graph, batch_pos_weight(inputs["boundary"]),
                           lambda_b=loss_cfg["lambda_b"], gstmse_weight=loss_cfg["gstmse_weight"],
                           aris_abs_weight=loss_cfg["aris_abs_weight"], aris_rel_weight=loss_cfg["aris_rel_weight"],
                           published_quirks=loss_cfg["published_quirks"], backend=backend)
    model, criterion = model.to(device), criterion.to(device)
    optim_cfg = cfg["optim"]
    optimizer = torch.optim.Adam(model.parameters(), lr=optim_cfg["lr"], betas=tuple(optim_cfg["betas"]),
                                 eps=optim_cfg["eps"], weight_decay=0.0, foreach=None if cuda_graphs else True,
                                 fused=True if cuda_graphs else None, capturable=cuda_graphs)
    trainer = SimpleNamespace(cfg=cfg, device=device, model=model, optimizer=optimizer,
                              step=TrainStep(model, criterion, cfg["train"]["bf16"]),
                              joint_graph=inputs["joint_graph"].to(device), graphed_steps=None)
    trainer._step = partial(Trainer._step, trainer)
    if cuda_graphs:
        trainer.graphed_steps = GraphedSteps(trainer._step, device)
    batch = {k: inputs[k] for k in ("x", "labels", "boundary", "mask")}
    # as the training collate does, on the CPU in the loader's workers: SAEP with the batch's seed, the segment bound,
    # the loss targets with the augmented batch's GS-TMSE pair weights
    batch["x"] = saep(batch["x"], cfg["dataset"], generator=torch.Generator().manual_seed(batch_seed(seed, 0, 0, 0)))
    batch["max_segments"] = segment_capacity(batch["labels"])
    batch["loss_targets"] = criterion.target_builder()(batch["labels"], batch["mask"], batch["max_segments"],
                                                       batch["x"])
    return TrainerStep(trainer, batch)


# ------------------------------------------------------------------------------------------- one counted step
@dataclass
class StepMeasurement:
    """One instrumented step: op counts and syncs, the bytes autograd held when backward started (per block,
    real tensors), and the wall time of the step under the instruments."""
    counts: OpCounts
    saved_bytes: dict
    seconds: float


def _track_blocks(model: nn.Module, node_blocks: AutogradNodeBlocks | None) -> BlockTracker:
    tracker = BlockTracker(outside=LOSS, node_blocks=node_blocks)
    for label, module in model_blocks(model):
        tracker.add(label, module)
    return tracker


def optimizer_step_counters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Adam's per-parameter ``step`` tensors: on the host whatever the parameters' device (unless capturable
    or fused), so reading them (``_get_value`` → ``.item()``) is no device sync."""
    return [state["step"] for state in optimizer.state.values() if torch.is_tensor(state.get("step"))]


def measure_step(parts: TrainerStep) -> StepMeasurement:
    """Run ``Trainer.train_step`` once uninstrumented (so that Adam's state exists: a steady-state step), then
    once under :class:`OpCounter` and :class:`SavedTensorRecorder`.

    Forward ops go to the innermost model block running; backward ops to the block that created the running
    autograd node (:class:`AutogradNodeBlocks`); the saved bytes are read when ``TrainStep`` returns.
    """
    parts.run()
    node_blocks = AutogradNodeBlocks()
    tracker = _track_blocks(parts.model, node_blocks)
    tracker.phase = "batch"

    def where() -> tuple[str, str]:
        if tracker.inside_blocks():
            return "forward", tracker.current_block()
        if tracker.phase == "backward":
            return "backward", node_blocks.current
        return tracker.phase, tracker.phase

    recorder = SavedTensorRecorder(lambda: where()[1])
    saved: dict = {}
    step, optimizer = parts.trainer.step, parts.trainer.optimizer
    resident = storage_keys(module_state(step))

    def backward_starts(module, args, output):
        node_blocks.claim(output, LOSS)
        node_blocks.arm()
        gc.collect()
        saved.update(recorder.live_bytes(resident))
        tracker.phase = "backward"

    def set_phase(phase: str):
        def hook(*_):
            tracker.phase = phase
        return hook

    handles = [step.register_forward_pre_hook(set_phase(LOSS)), step.register_forward_hook(backward_starts),
               optimizer.register_step_pre_hook(set_phase("optimizer")),
               optimizer.register_step_post_hook(set_phase("bookkeeping"))]
    counter = OpCounter(where, PACKAGE_DIRS, storage_keys(optimizer_step_counters(optimizer)))
    start = time.perf_counter()
    try:
        with counter, recorder.hooks():
            parts.run()
    finally:
        for handle in handles:
            handle.remove()
        tracker.remove()
        node_blocks.disarm()
    return StepMeasurement(counter.counts, saved, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------- one counted inference
def measure_inference(n: int, t: int, backend: str, seed: int = 0, model_overrides: dict | None = None,
                      text_dim: int = PUBLISHED_TEXT_DIM) -> OpCounts:
    """One eval forward of N unpadded videos of T frames as the evaluation runs it (trgnet_fast/training/evaluate.py,
    benchmarks/train_step.py's infer: ``model.eval()``, no grad, ``check_values=False``; the final logits and
    boundary logits) on the model :func:`build_trainer_step` builds: once uncounted, then under :class:`OpCounter`,
    its ops per model block in the phase :data:`INFERENCE`."""
    parts = build_trainer_step(n, t, backend, seed, model_overrides=model_overrides, text_dim=text_dim)
    model, joint_graph = parts.model.eval(), parts.trainer.joint_graph
    inputs = workload.make_model_inputs(n, t, "cpu", seed, DATASET, padded=False)
    tracker = BlockTracker(outside=MODEL_TOP_LEVEL)
    for label, module in model_blocks(model):
        tracker.add(label, module)

    def forward():
        with torch.no_grad():
            model(inputs["x"], inputs["mask"], joint_graph, check_values=False)

    forward()
    counter = OpCounter(lambda: (INFERENCE, tracker.current_block()), PACKAGE_DIRS)
    try:
        with counter:
            forward()
    finally:
        tracker.remove()
    return counter.counts


# ------------------------------------------------------------------------------------ saved bytes at full size
def real_leaves_like(outputs, seed: int):
    """Random leaf tensors (requires_grad) shaped like the model's train-mode outputs (a deferred text head's input,
    weight and bias each); logit_scale kept."""
    gen = torch.Generator().manual_seed(seed + 2)
    logits, bounds, feats, logit_scale = outputs

    def leaf(t):
        return torch.randn(tuple(t.shape), dtype=t.dtype, generator=gen).requires_grad_()

    def text_leaf(e):
        return TextFeatures(*(leaf(t) for t in e)) if isinstance(e, TextFeatures) else leaf(e)
    return ([leaf(z) for z in logits], [leaf(b) for b in bounds], [text_leaf(e) for e in feats],
            nn.Parameter(torch.zeros(tuple(logit_scale.shape))))


def model_saved_bytes_fake(parts: TrainerStep) -> tuple[dict[str, int], tuple]:
    """Saved bytes per block of the model's train-mode forward on fake tensors, and its (fake) outputs.
    ``parts`` is used up: its model's parameters and buffers become fake tensors."""
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    model = fake_module(parts.model, fake_mode).train()
    tracker = _track_blocks(model, None)
    recorder = SavedTensorRecorder(tracker.current_block)
    batch = parts.batch
    try:
        with fake_mode, recorder.hooks():  # fake tensors have no values to check
            outputs = model(fake_mode.from_tensor(batch["x"]), fake_mode.from_tensor(batch["mask"]),
                            fake_mode.from_tensor(parts.trainer.joint_graph), check_values=False,
                            defer_text_heads=True)  # as the trainer's step
    finally:
        tracker.remove()
    gc.collect()
    return recorder.live_bytes(storage_keys(module_state(model))), outputs


def loss_saved_bytes_real(criterion: nn.Module, outputs, batch: dict) -> dict[str, int]:
    """Saved bytes of ``criterion`` (under :data:`LOSS`) on real model outputs ``outputs`` and ``batch``."""
    recorder = SavedTensorRecorder(lambda: LOSS)
    with recorder.hooks():
        losses = criterion(outputs, batch["x"], batch["labels"], batch["boundary"], batch["mask"],
                           max_segments=batch["max_segments"], targets=batch["loss_targets"])
    gc.collect()
    per_block = recorder.live_bytes(storage_keys(module_state(criterion) + [outputs[3]]))
    del losses  # alive until the bytes were read
    return per_block


def saved_bytes_full_size(parts: TrainerStep, seed: int = 0) -> dict[str, int]:
    """Bytes autograd holds when backward starts, per block, without allocating the activations.

    The model forward runs on fake tensors (``FakeTensorMode``; the fused ops' ``register_fake`` kernels), its
    input value checks off (``check_values=False``, as in the trainer). ``TRGNetLoss`` runs for real on CPU at
    the same size, on random leaf tensors shaped like the model's outputs; its row is "loss". A storage saved by both the model and the loss would
    count twice (none is: the model saves no output of its own). Parameters and buffers go under "resident".
    ``parts`` is used up (:func:`model_saved_bytes_fake`).
    """
    per_block, outputs = model_saved_bytes_fake(parts)
    loss = loss_saved_bytes_real(parts.trainer.step.criterion, real_leaves_like(outputs, seed), parts.batch)
    return dict(Counter(per_block) + Counter(loss))  # both may hold "resident"


def saved_total(per_block: dict) -> int:
    """Saved bytes without the resident parameters and buffers."""
    return sum(nbytes for block, nbytes in per_block.items() if block != "resident")

