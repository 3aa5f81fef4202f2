"""The TRG-Net training loop: single process or DDP (torchrun), Adam, SAEP, per-epoch validation on a split
carved from the training data, atomic ``last.pt`` / ``best.pt``, exact ``--resume``."""
from __future__ import annotations

import contextlib
import math
import os
import time
import warnings

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from trgnet_fast.data import IGNORE_INDEX
from trgnet_fast.evaluation.metrics import BOUNDARY_KEYS
from trgnet_fast.losses import TRGNetLoss, boundary_pos_weight
from trgnet_fast.model import TRGNet, default_config
from trgnet_fast.model.config import ARCHITECTURE_DEFAULTS, default_sfi_layers
from trgnet_fast.model.packing import PackedSequences, unpack
from trgnet_fast.model.text_heads import map_features
from trgnet_fast.training import checkpoint as ckpt
from trgnet_fast.training.config import ConfigError, dump_yaml
from trgnet_fast.training.cuda_graphs import GraphedSteps, check_graphable
from trgnet_fast.training.data import (build_splits, class_names, data_dir, ensure_synthetic, eval_loader,
                                       full_rate_boundaries, length_buckets, output_dir, train_loader)
from trgnet_fast.training.distributed import DistInfo, all_reduce_sum, barrier, init_distributed, reduce_metrics
from trgnet_fast.training.evaluate import graphed_forward, make_metrics, run_inference
from trgnet_fast.training.logger import EpochLogger
from trgnet_fast.training.text import resolve_text
from trgnet_fast.training.transfer import to_device

LOSS_KEYS = ("total", "ce", "gstmse", "boundary", "aris_abs", "aris_rel")
# what a training step takes of a collated batch
_STEP_INPUTS = ("x", "labels", "boundary", "mask", "loss_targets", "packed", "loss_mask", "max_segments")

# What the first step of an epoch to break the training broke (docs/training.md#non-finite-stops)
_BROKEN = {1: "the loss became non-finite", 2: "the updated weights became non-finite (the loss was still finite)",
           3: "the loss and the updated weights became non-finite"}


def healthy(device: torch.device) -> torch.Tensor:
    """The step health of an epoch before its first step (see :func:`update_health`)."""
    return torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64, device=device)


@torch.no_grad()
def update_health(health: torch.Tensor, loss: torch.Tensor, params) -> torch.Tensor:
    """The step health after one more step, on the device (no host sync): [steps before the first broken one,
    1.0 while no step broke, what the first broken step broke (1 the loss, 2 the weights, 3 both; keys of
    _BROKEN)]. ``loss``: the step's total loss; ``params``: the weights the step updated."""
    max_abs = torch.nn.utils.get_total_norm(params, norm_type=math.inf)  # inf or nan iff a weight is
    broke = (~torch.isfinite(loss)).double() + 2.0 * (~torch.isfinite(max_abs)).double()
    ok = health[1] * (broke == 0)
    first_broken = (health[1] > 0) & (broke > 0)
    return torch.stack([health[0] + ok, ok, torch.where(first_broken, broke, health[2])])


def check_health(health, where: str) -> None:
    """Raise FloatingPointError naming ``where`` and the first broken step if ``health`` (read on the host,
    see :func:`update_health`) says a step broke the training."""
    good, ok, broke = health
    if not ok:
        raise FloatingPointError(f"{where}: {_BROKEN[int(broke)]} at step {int(good) + 1}; stopping, the "
                                 "checkpoints of the last good epoch are kept (lower optim.lr or set "
                                 "optim.grad_clip)")


def model_kwargs(cfg: dict, n_classes: int, text_dim: int) -> dict:
    """TRGNet constructor arguments: the dataset's published defaults updated by ``cfg["model"]``."""
    kw = default_config(cfg["dataset"])
    m = cfg["model"]
    for key in ("in_channel", *ARCHITECTURE_DEFAULTS, "backend", "mask_mode"):
        if m[key] is not None:
            kw[key] = m[key]
    kw["SFI_layer"] = list(m["SFI_layer"]) if m["SFI_layer"] is not None else default_sfi_layers(kw["n_layers"])
    kw["n_classes"] = n_classes
    kw["text_dim"] = text_dim
    return kw


def build_model(kwargs: dict, dropout: bool = True) -> TRGNet:
    model = TRGNet(**kwargs)
    if not dropout:
        disable_dropout(model)
    return model


def disable_dropout(model: nn.Module) -> None:
    for mod in model.modules():
        if isinstance(mod, nn.modules.dropout._DropoutNd):
            mod.p = 0.0


def _loss_dtype(t: torch.Tensor) -> torch.Tensor:
    """The loss runs in float32 (bf16 outputs widened), or in float64 for a float64 model."""
    return t if t.dtype == torch.float64 else t.float()


def _float_outputs(out):
    logits, bounds, feats, scale = out
    return ([_loss_dtype(z) for z in logits], [_loss_dtype(b) for b in bounds],
            [map_features(e, _loss_dtype) for e in feats], _loss_dtype(scale))


class TrainStep(nn.Module):
    """Model + loss in one module, so that DDP sees the loss as the forward output: its unused-parameter
    search then follows exactly what the loss uses (the decoder text heads never are; without text inputs
    neither are the encoder text head nor logit_scale)."""

    def __init__(self, model: nn.Module, criterion: nn.Module, bf16: bool = False,
                 learned_joint_graph: nn.Parameter | None = None):
        super().__init__()
        self.model = model
        self.criterion = criterion
        self.bf16 = bf16
        # a trained joint graph lives here so that DDP all-reduces its gradient with the model's
        self.learned_joint_graph = learned_joint_graph

    def forward(self, x, labels, boundary, mask, joint_graph, max_segments: int | None = None, targets=None,
                packed: PackedSequences | None = None, loss_mask=None):
        """x (N, C_in, V, T), mask (N, 1, T) and the loss inputs labels (N, T), boundary (N, 1, T); a packed batch
        (``packed``, docs/training.md#packed-batches): x (1, C_in, V, T), mask (1, 1, T) and the loss inputs in the
        padded layout (S, T_max) with ``loss_mask`` (S, 1, T_max)."""
        if self.learned_joint_graph is not None:
            joint_graph = self.learned_joint_graph
        # no autocast context at all without bf16 (one device type fewer to support: the capture check runs on meta)
        with torch.autocast(x.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext():
            # shapes checked, values not: they would wait for the device, and the readers already refused
            # non-finite files; a non-finite loss is caught by Trainer.read_losses
            # the text heads as the loss takes them: only e0's segment means are formed
            # (docs/model.md#deferred-text-heads)
            out = self.model(x, mask, joint_graph, check_values=False, packed=packed, defer_text_heads=True)
        out = _float_outputs(out)
        if packed is not None:  # the loss takes the padded layout; padded positions carry no weight in it
            logits, bounds, feats, scale = out
            out = ([unpack(z, packed) for z in logits], [unpack(b, packed) for b in bounds],
                   [map_features(e, lambda t: unpack(t, packed)) for e in feats], scale)
            # the padded x only as GS-TMSE's similarity source: not needed when the targets carry the pair weights
            needs_x = targets is None or targets.pair_weight is None
            x, mask = (unpack(x, packed) if needs_x else None), loss_mask
        losses = self.criterion(out, x, labels, boundary, mask, max_segments=max_segments, targets=targets)
        return losses, out[0][-1].detach()


class Trainer:
    """Build everything from a validated config and train. ``fit()`` returns the final summary dict.

    Single process by default; under torchrun (WORLD_SIZE > 1) it initialises torch.distributed (NCCL on GPU,
    gloo on CPU), shards batches with a DistributedSampler, all-reduces the validation metric counts and
    writes logs/checkpoints from rank 0 only.
    """

    def __init__(self, cfg: dict, resume: bool = False, log=None, progress: bool = True,
                 dist_info: DistInfo | None = None):
        self.cfg = cfg
        self.resume = resume
        self.info = dist_info or init_distributed(cfg["train"]["device"])
        self.is_main = self.info.is_main
        self._log = log or print
        self.progress = progress and self.is_main
        self.out_dir = output_dir(cfg)
        self.device = self.info.device

    def log(self, msg: str) -> None:
        if self.is_main:
            self._log(msg)

    # ---------------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        cfg, info = self.cfg, self.info
        if self.is_main:
            os.makedirs(self.out_dir, exist_ok=True)
        self.root = data_dir(cfg)
        if cfg["data"]["dir"] is None:
            if self.is_main:
                ensure_synthetic(self.root, cfg["data"]["synthetic"], log=self.log)
            barrier(info)
        self.class_names = class_names(cfg, self.root)
        n_classes = cfg["model"]["n_classes"] or len(self.class_names)
        if n_classes != len(self.class_names):
            raise ConfigError(f"model.n_classes={n_classes} but the mapping lists {len(self.class_names)} classes")
        self.splits = build_splits(cfg, self.root, n_classes)
        if len(self.splits["train"]) == 0:
            raise ValueError("the training split is empty")
        self.text = resolve_text(cfg["text"], cfg["dataset"], self.class_names, self.root, warn=self.is_main)
        self.model_kwargs = model_kwargs(cfg, n_classes, self.text.text_dim)

        ckpt.seed_everything(cfg["train"]["seed"])  # same initial weights on every rank
        if cfg["train"]["deterministic"]:
            torch.use_deterministic_algorithms(True, warn_only=True)
        model = build_model(self.model_kwargs, cfg["model"]["dropout"]).to(self.device)
        # per-rank RNG streams from here on (dropout masks differ across ranks; identical in one process)
        ckpt.seed_everything(cfg["train"]["seed"] + info.rank)
        if info.enabled and cfg["model"]["sync_bn"]:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        joint_graph = self.text.joint_graph.to(self.device)
        self.joint_graph = nn.Parameter(joint_graph.clone()) if self.text.joint_graph_trainable else joint_graph
        trained = list(self.model.parameters()) + ([self.joint_graph] if self.text.joint_graph_trainable else [])
        o = cfg["optim"]
        graphed = cfg["train"]["cuda_graphs"]
        for section, processes in (("train", info.world_size), ("eval", 1)):  # validation runs on each rank alone
            if cfg[section]["cuda_graphs"]:
                check_graphable(f"config key '{section}.cuda_graphs'", self.device, cfg["model"]["backend"], processes)
        # with CUDA graphs: fused (one kernel per step) and capturable (its step counts on the device)
        self.optimizer = torch.optim.Adam(trained, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"],
                                          weight_decay=0.0, fused=True if graphed else None, capturable=graphed)
        # published: counted on the training videos' full-rate boundary files (before LARA's ×4 downsampling)
        pos_weight = boundary_pos_weight(*full_rate_boundaries(self.splits["train"]))
        lc = cfg["loss"]
        self.criterion = TRGNetLoss(self.text.action_embeddings, self.text.action_graph, pos_weight,
                                    lambda_b=lc["lambda_b"], gstmse_weight=lc["gstmse_weight"],
                                    aris_abs_weight=lc["aris_abs_weight"], aris_rel_weight=lc["aris_rel_weight"],
                                    use_aris_abs=self.text.use_aris_abs, use_aris_rel=self.text.use_aris_rel,
                                    published_quirks=lc["published_quirks"],
                                    backend=cfg["model"]["backend"]).to(self.device)
        step = TrainStep(self.model, self.criterion, cfg["train"]["bf16"],
                         self.joint_graph if self.text.joint_graph_trainable else None)
        if info.enabled:
            # the decoder text heads (and, without text inputs, the encoder text head and logit_scale) get no
            # gradient, hence find_unused_parameters
            step = nn.parallel.DistributedDataParallel(
                step, device_ids=[self.device] if self.device.type == "cuda" else None,
                find_unused_parameters=True)
        self.step = step
        self.graphed_steps = GraphedSteps(self._step, self.device) if graphed else None
        self.graphed_eval = None
        if cfg["eval"]["cuda_graphs"]:
            self.graphed_eval = graphed_forward(self.model, self.joint_graph, self.device,
                                                torch.bfloat16 if cfg["train"]["bf16"] else None)
        self.start_epoch, self.best_score, self.best_epoch = 0, -math.inf, 0
        self.logger = EpochLogger(self.out_dir, enabled=self.is_main, tensorboard=cfg["train"]["tensorboard"])
        if self.is_main:
            dump_yaml(cfg, os.path.join(self.out_dir, "config.yaml"))
        last = os.path.join(self.out_dir, "last.pt")
        if self.resume and os.path.isfile(last):
            self._restore(last)
        else:
            if self.resume:
                self.log(f"--resume: no checkpoint at {last}; starting from scratch")
            elif os.path.isfile(last):
                self.log(f"note: {self.out_dir} holds checkpoints of an earlier run; they and its logs are "
                         "overwritten (use --resume to continue it)")
            self.logger.rewrite([])
        self.log(f"train {len(self.splits['train'])} videos, val {len(self.splits['val'])} videos, "
                 f"{len(self.class_names)} classes, {sum(p.numel() for p in self.model.parameters()):,} "
                 f"parameters, device {self.device}, world {info.world_size}, pos_weight {pos_weight:.2f}")

    # ------------------------------------------------------------------------------------ checkpoints
    def _gather_rng(self):
        state = {"rng": ckpt.rng_state()}
        if not self.info.enabled:
            return [state]
        out = [None] * self.info.world_size
        dist.all_gather_object(out, state)
        return out

    def checkpoint_state(self, epoch: int, val: dict | None, rng_states) -> dict:
        # data paths as resolved here, so that the checkpoint is usable from another directory
        return ckpt.with_absolute_data_paths({
            "format": ckpt.FORMAT, "epoch": epoch, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "best_score": self.best_score, "best_epoch": self.best_epoch,
            "best_metric": self.cfg["train"]["best_metric"], "val": val, "config": self.cfg,
            "model_kwargs": self.model_kwargs, "class_names": self.class_names,
            "joint_graph": self.joint_graph.detach().cpu(), "rng": rng_states, "world_size": self.info.world_size,
            "history": self.logger.history, "data_root": os.path.abspath(self.root),
        })

    def non_finite_state(self) -> list[str]:
        """Names of the model's parameters and buffers (and ``joint_graph``) holding a non-finite value."""
        state = {**self.model.state_dict(), "joint_graph": self.joint_graph.detach()}
        names = [k for k, v in state.items() if v.is_floating_point()]
        finite = torch.stack([torch.isfinite(state[k]).all() for k in names]).tolist()  # one host read
        return [k for k, f in zip(names, finite) if not f]

    def save(self, epoch: int, val: dict | None, is_best: bool) -> None:
        """Write last.pt (and best.pt); refuses (FloatingPointError) to overwrite them with non-finite weights."""
        # every rank holds the same weights, so every rank refuses before the collectives below
        broken = self.non_finite_state()
        if broken:
            last = os.path.join(self.out_dir, "last.pt")
            raise FloatingPointError(f"epoch {epoch}: not saving {last}: non-finite values in "
                                     f"{', '.join(broken[:5])}{' ...' if len(broken) > 5 else ''}; the "
                                     "checkpoints of the last good epoch are kept")
        rng_states = self._gather_rng()  # collective: every rank takes part
        barrier(self.info)
        if self.is_main:
            state = self.checkpoint_state(epoch, val, rng_states)
            ckpt.atomic_save(state, os.path.join(self.out_dir, "last.pt"))
            if is_best:
                ckpt.atomic_save(state, os.path.join(self.out_dir, "best.pt"))
        barrier(self.info)

    def _restore(self, path: str) -> None:
        state = ckpt.load_checkpoint(path, map_location=self.device)
        if state["model_kwargs"] != self.model_kwargs:
            raise ConfigError(f"--resume: {path} holds a model built with {state['model_kwargs']}, the config "
                              f"builds {self.model_kwargs}")
        self.model.load_state_dict(state["model"])
        if self.text.joint_graph_trainable:
            with torch.no_grad():
                self.joint_graph.copy_(state["joint_graph"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_epoch = int(state["epoch"])
        self.best_score, self.best_epoch = float(state["best_score"]), int(state["best_epoch"])
        rngs = state["rng"]
        if len(rngs) != self.info.world_size:
            warnings.warn(f"checkpoint written with {len(rngs)} processes, resuming with {self.info.world_size}: "
                          "RNG streams differ from an uninterrupted run")
        mine = rngs[self.info.rank % len(rngs)]
        ckpt.set_rng_state(mine["rng"])
        self.logger.history = [dict(r) for r in state.get("history", [])]
        self.logger.rewrite(self.logger.history)
        self.log(f"resumed from {path}: epoch {self.start_epoch} done, best {self.cfg['train']['best_metric']} "
                 f"{self.best_score:.3f} (epoch {self.best_epoch})")

    # -------------------------------------------------------------------------------------- training
    def train_step(self, batch: dict) -> torch.Tensor:
        """One optimisation step on a collated batch, without a host sync (docs/training.md#no-host-syncs); with
        train.cuda_graphs a replay of the step's CUDA graph for the batch's layout (docs/training.md#cuda-graphs).

        Returns (len(LOSS_KEYS) + 2,) float64 on the device: the loss terms of LOSS_KEYS, then the correctly
        classified and the valid frames of this rank; :meth:`read_losses` turns sums of them into floats.
        """
        # the batch comes augmented (SAEP, in the training collate, docs/model.md#saep-augmentation) with the loss's
        # labels-only part and GS-TMSE pair weights built on the CPU (docs/model.md#loss-targets); a batch from
        # elsewhere has none, and without a segment bound the loss then counts segments with a host sync
        inputs = {k: batch.get(k) for k in _STEP_INPUTS}
        self.step.train()
        if self.cfg["model"]["freeze_bn"]:
            for mod in self.model.modules():
                if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                    mod.eval()
        if self.graphed_steps is not None:
            return self.graphed_steps(inputs)
        return self._step(to_device(inputs, self.device))

    def _step(self, inputs: dict) -> torch.Tensor:
        """:meth:`train_step` on ``inputs`` (the batch's _STEP_INPUTS, on the device); capturable as a CUDA graph
        (docs/training.md#cuda-graphs): with train.cuda_graphs the gradients are zeroed in place, so that every
        replay accumulates into the same tensors."""
        cfg = self.cfg
        x, labels, boundary, mask, targets, packed, loss_mask, max_segments = (inputs[k] for k in _STEP_INPUTS)
        losses, final_logits = self.step(x, labels, boundary, mask, self.joint_graph, max_segments=max_segments,
                                         targets=targets, packed=packed, loss_mask=loss_mask)
        self.optimizer.zero_grad(set_to_none=self.graphed_steps is None)
        losses["total"].backward()
        if cfg["optim"]["grad_clip"]:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg["optim"]["grad_clip"])
        self.optimizer.step()
        with torch.no_grad():
            valid = labels != IGNORE_INDEX
            correct = ((final_logits.argmax(1) == labels) & valid).sum()
            return torch.stack([*(losses[k].detach().double() for k in LOSS_KEYS), correct.double(),
                                valid.sum().double()])

    @staticmethod
    def read_losses(sums: torch.Tensor, steps: int, where: str) -> dict:
        """Mean loss terms and accuracy of ``steps`` steps from the sum of their :meth:`train_step` results (the
        one host read). Raises FloatingPointError naming ``where`` (epoch and steps) if a loss is not finite:
        training would go on with broken weights."""
        values = sums.tolist()
        row = {k: values[i] / max(steps, 1) for i, k in enumerate(LOSS_KEYS)}
        row["acc"] = 100.0 * values[-2] / max(values[-1], 1.0)
        bad = [k for k in LOSS_KEYS if not math.isfinite(row[k])]
        if bad:
            raise FloatingPointError(f"{where}: the loss became non-finite ({', '.join(bad)}); the weights are "
                                     "broken, stopping (lower optim.lr or set optim.grad_clip)")
        return row

    def train_epoch(self, epoch: int) -> dict:
        loader, sampler = train_loader(self.splits["train"], self.cfg, self.info.rank, self.info.world_size,
                                       loss_targets=self.criterion.target_builder())
        sampler.set_epoch(epoch)
        limit = self.cfg["train"]["max_steps_per_epoch"]
        n_steps = len(loader) if limit is None else min(limit, len(loader))
        if n_steps == 0:
            raise ValueError(f"no training batch: {len(self.splits['train'])} training videos over "
                             f"{self.info.world_size} process(es) with train.batch_size="
                             f"{self.cfg['train']['batch_size']} (batches are full, drop_last)")
        every = self.cfg["train"]["log_every"]
        # running sums stay on the device; the host reads them every train.log_every steps
        sums = torch.zeros(len(LOSS_KEYS) + 2, dtype=torch.float64, device=self.device)
        window = torch.zeros_like(sums)
        health = healthy(self.device)
        trained = [p for group in self.optimizer.param_groups for p in group["params"]]
        steps = 0
        # a with block: the bar is cleared before an error propagates, so the error is printed on a line of its own
        with tqdm(total=n_steps, desc=f"epoch {epoch}", disable=not self.progress, leave=False,
                  dynamic_ncols=True) as bar:
            for batch in loader:
                if steps >= n_steps:
                    break
                result = self.train_step(batch)
                window += result
                health = update_health(health, result[LOSS_KEYS.index("total")], trained)
                steps += 1
                bar.update(1)
                if steps % every == 0 or steps == n_steps:
                    # the last step is a log point too: no broken step reaches validation or a checkpoint
                    first = steps - (steps - 1) % every
                    where = f"epoch {epoch}, steps {first}-{steps}"
                    read = torch.cat([window, health]).cpu()  # the one host read of the window
                    check_health(read[-len(health):].tolist(), where)
                    recent = self.read_losses(read[:-len(health)], steps - first + 1, where)
                    bar.set_postfix(loss=f"{recent['total']:.3f}")
                    sums += window
                    window.zero_()
        t = all_reduce_sum(torch.cat([sums, sums.new_tensor([steps])]), self.info)
        row = self.read_losses(t[:-1], int(t[-1]), f"epoch {epoch}")
        return {f"train_{k}": v for k, v in row.items()}

    def validate(self) -> dict:
        loader = eval_loader(self.splits["val"], self.cfg, self.info.rank, self.info.world_size)
        bar = (lambda it: tqdm(it, desc="validate", leave=False, dynamic_ncols=True)) if self.progress else None
        metrics = run_inference(self.model, loader, self.cfg, self.class_names, self.joint_graph, self.device,
                                progress=bar, graphed=self.graphed_eval,
                                length_buckets=length_buckets(self.cfg, "eval") if self.graphed_eval else None)
        reduce_metrics(metrics, self.info)
        return metrics.summary()

    def fit(self) -> dict:
        self.setup()
        cfg = self.cfg
        epochs, every = cfg["train"]["epochs"], cfg["train"]["eval_every"]
        metric = cfg["train"]["best_metric"]
        val_keys = list(make_metrics(cfg, self.class_names).summary()) + list(BOUNDARY_KEYS)
        last_row = {}
        for epoch in range(self.start_epoch + 1, epochs + 1):
            t0 = time.time()
            row = {"epoch": epoch, **self.train_epoch(epoch)}
            val = None
            if len(self.splits["val"]) and (epoch % every == 0 or epoch == epochs):
                val = self.validate()
            is_best = val is not None and val[metric] > self.best_score
            if is_best:
                self.best_score, self.best_epoch = float(val[metric]), epoch
            for k in val_keys:
                row[f"val_{k}"] = (val or {}).get(k, "")
            row.update({"best_epoch": self.best_epoch, "lr": self.optimizer.param_groups[0]["lr"],
                        "time_s": round(time.time() - t0, 3)})
            # the log history travels in the checkpoint: on resume the log files are rewritten from it
            self.logger.log(row)
            self.save(epoch, val, is_best or (self.best_epoch == 0 and epoch == epochs))
            last_row = row
            if val is not None:
                self.log(f"epoch {epoch}/{epochs}  loss {row['train_total']:.4f}  train acc {row['train_acc']:.1f}  "
                         f"val Acc {val['Acc']:.1f} Edit {val['Edit']:.1f} F1@50 {val.get('F1@50', float('nan')):.1f}"
                         f"  ({row['time_s']:.0f} s){'  *best*' if is_best else ''}")
            else:
                self.log(f"epoch {epoch}/{epochs}  loss {row['train_total']:.4f}  train acc {row['train_acc']:.1f}"
                         f"  ({row['time_s']:.0f} s)")
        self.logger.close()
        return last_row
