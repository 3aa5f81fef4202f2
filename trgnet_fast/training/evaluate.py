"""Inference over a dataset: refined predictions and the field's metrics (see docs/model.md).

Ground-truth frames labelled 255 (ignored frames, and padding) are predicted and passed to ``on_video`` like
every other frame, but :class:`~trgnet_fast.evaluation.SegmentationMetrics` leaves them out of every metric."""
from __future__ import annotations

import torch
from torch import nn

from trgnet_fast.evaluation import SegmentationMetrics, argmax_prediction, refinement_with_boundary
from trgnet_fast.model.packing import PackedSequences, unpack
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


@torch.no_grad()
def predict_video(model: nn.Module, x: torch.Tensor, mask: torch.Tensor, joint_graph: torch.Tensor,
                  autocast_dtype=None, packed: PackedSequences | None = None):
    """Eval-mode forward of one batch; returns (logits (N,K,T), boundary (N,1,T)) in float32. A packed batch
    (``packed``, docs/model.md#packed-batches) returns them in the padded layout, (S, K, T_max), (S, 1, T_max)."""
    was_training = model.training
    model.eval()
    try:
        with torch.autocast(x.device.type, dtype=autocast_dtype or torch.bfloat16,
                            enabled=autocast_dtype is not None):
            logits, boundary = model(x, mask, joint_graph, packed=packed)
    finally:
        model.train(was_training)
    if packed is not None:
        logits, boundary = unpack(logits, packed), unpack(boundary, packed)
    return logits.float(), boundary.float()


@torch.no_grad()
def run_inference(model: nn.Module, loader, cfg: dict, class_names, joint_graph: torch.Tensor,
                  device: torch.device, on_video=None, progress=None) -> SegmentationMetrics:
    """Inference over ``loader`` (padded or packed batches); updates and returns a SegmentationMetrics. ``on_video(name, pred,
    gt, logits, boundary)`` is called per video (e.g. to write predictions)."""
    metrics = make_metrics(cfg, class_names)
    autocast_dtype = torch.bfloat16 if cfg["train"]["bf16"] else None
    jg = joint_graph.to(device)
    it = progress(loader) if progress else loader
    for batch in it:
        x, mask = batch["x"].to(device), batch["mask"].to(device)
        packed = batch.get("packed")
        packed = None if packed is None else to_device(packed, device)
        logits, boundary = predict_video(model, x, mask, jg, autocast_dtype, packed)
        for i, name in enumerate(batch["names"]):
            L = int(batch["lengths"][i])
            pred = postprocess(cfg, logits[i, :, :L], boundary[i, :, :L])
            gt = batch["labels"][i, :L]
            metrics.update(pred, gt, name, boundary_pred=boundary[i, 0, :L].cpu(),
                           boundary_gt=batch["boundary"][i, 0, :L])
            if on_video is not None:
                on_video(name, pred, gt, logits[i, :, :L].cpu(), boundary[i, :, :L].cpu())
    return metrics
