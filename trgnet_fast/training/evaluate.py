"""Inference over a dataset: refined predictions and the field's metrics (see docs/model.md).

Ground-truth frames labelled 255 (ignored frames, and padding) are predicted and passed to ``on_video`` like
every other frame, but :class:`~trgnet_fast.evaluation.SegmentationMetrics` leaves them out of every metric."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from trgnet_fast.data.collate import bucket_length
from trgnet_fast.evaluation import SegmentationMetrics, argmax_prediction, refinement_with_boundary
from trgnet_fast.model.packing import PackedSequences, unpack
from trgnet_fast.training.cuda_graphs import GraphedSteps
from trgnet_fast.training.transfer import to_device


def make_metrics(cfg: dict, class_names) -> SegmentationMetrics:
    e = cfg["eval"]
    return SegmentationMetrics(class_names=class_names, background=e["background"],
                               iou_thresholds=e["iou_thresholds"], boundary_threshold=e["boundary_th"],
                               boundary_tolerance=e["tolerance"], f1_end=e["f1_end"])


def postprocess(cfg: dict, logits: torch.Tensor, boundary: torch.Tensor) -> torch.Tensor:
    """logits (K, T), boundary (1, T) of one video → int64 labels (T,) (on CPU)."""
    logits, boundary = logits.float().cpu(), boundary.float().cpu()
    if cfg["eval"]["refinement"] == "boundary":
        return refinement_with_boundary(logits, boundary, threshold=cfg["eval"]["boundary_th"])
    return argmax_prediction(logits)


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def predict_video(model: nn.Module, x: torch.Tensor, mask: torch.Tensor, joint_graph: torch.Tensor,
                  autocast_dtype=None, packed: PackedSequences | None = None):
    """Eval-mode forward of one batch; returns (logits (N,K,T), boundary (N,1,T)) in float32. A packed batch
    (``packed``, docs/model.md#packed-batches) returns them in the padded layout, (S, K, T_max), (S, 1, T_max)."""
    with _eval_mode(model), torch.autocast(x.device.type, dtype=autocast_dtype or torch.bfloat16,
                                           enabled=autocast_dtype is not None):
        logits, boundary = model(x, mask, joint_graph, packed=packed)
    if packed is not None:
        logits, boundary = unpack(logits, packed), unpack(boundary, packed)
    return logits.float(), boundary.float()


def graphed_forward(model: nn.Module, joint_graph: torch.Tensor, device, autocast_dtype=None) -> GraphedSteps:
    """``model``'s eval forward as CUDA graphs (docs/training.md#cuda-graphs), one per batch shape: called with
    {"x": (N, C, V, T), "mask": (N, 1, T)} on the host, it returns the logits and boundary logits concatenated,
    (N, K + 1, T) float32 on ``device``. Call it with the model in eval mode (``run_inference`` does); the joint graph
    (V, V) and the weights are read where they are, so the graphs follow training's updates."""
    def forward(tree: dict) -> torch.Tensor:
        autocast = (torch.autocast(torch.device(device).type, dtype=autocast_dtype) if autocast_dtype
                    else contextlib.nullcontext())
        with torch.no_grad(), autocast:
            # no value checks: they would read the device (the readers check the files)
            logits, boundary = model(tree["x"], tree["mask"], joint_graph, check_values=False)
        return torch.cat([logits, boundary], 1).float()
    return GraphedSteps(forward, device)


def _predict_batch(model: nn.Module, batch: dict, joint_graph: torch.Tensor, device, autocast_dtype,
                   length_buckets: int | None, graphed: GraphedSteps | None):
    """(logits (N, K, T'), boundary (N, 1, T')) of a loader batch: T' = T, or a padded batch's length bucket."""
    packed = batch.get("packed")
    if packed is not None:
        return predict_video(model, batch["x"].to(device), batch["mask"].to(device), joint_graph, autocast_dtype,
                             to_device(packed, device))
    x, mask = batch["x"], batch["mask"]
    if length_buckets is not None:
        extra = bucket_length(x.shape[-1], length_buckets) - x.shape[-1]
        x, mask = nn.functional.pad(x, (0, extra)), nn.functional.pad(mask, (0, extra))
    if graphed is None:
        return predict_video(model, x.to(device), mask.to(device), joint_graph, autocast_dtype)
    with _eval_mode(model):
        out = graphed({"x": x, "mask": mask})
    return out[:, :-1], out[:, -1:]


@torch.no_grad()
def run_inference(model: nn.Module, loader, cfg: dict, class_names, joint_graph: torch.Tensor,
                  device: torch.device, on_video=None, progress=None, length_buckets: int | None = None,
                  graphed: GraphedSteps | None = None) -> SegmentationMetrics:
    """Inference over ``loader`` (padded or packed batches); updates and returns a SegmentationMetrics. ``on_video(name,
    pred, gt, logits, boundary)`` is called per video (e.g. to write predictions). length_buckets: padded batches are
    padded further, to ``bucket_length(T, length_buckets)`` (a mask-correct model gives the same outputs); graphed:
    the :func:`graphed_forward` of ``model`` that runs the padded batches (a graph per length)."""
    metrics = make_metrics(cfg, class_names)
    autocast_dtype = torch.bfloat16 if cfg["train"]["bf16"] else None
    jg = joint_graph.to(device)
    it = progress(loader) if progress else loader
    for batch in it:
        logits, boundary = _predict_batch(model, batch, jg, device, autocast_dtype, length_buckets, graphed)
        for i, name in enumerate(batch["names"]):
            L = int(batch["lengths"][i])
            pred = postprocess(cfg, logits[i, :, :L], boundary[i, :, :L])
            gt = batch["labels"][i, :L]
            metrics.update(pred, gt, name, boundary_pred=boundary[i, 0, :L].cpu(),
                           boundary_gt=batch["boundary"][i, 0, :L])
            if on_video is not None:
                on_video(name, pred, gt, logits[i, :, :L].cpu(), boundary[i, :, :L].cpu())
    return metrics
