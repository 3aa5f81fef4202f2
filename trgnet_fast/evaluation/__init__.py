"""Evaluation: post-processing (docs/model.md#inference-and-post-processing), MS-TCN/ASRF metrics
(docs/model.md#metrics), plots and prediction files.

Typical use for one video (batch 1)::

    pred = refinement_with_boundary(cls_logits, boundary_logits)      # (T,)
    metrics.update(pred, gt, name, boundary_pred=boundary_logits, boundary_gt=gt_boundary)
    metrics.summary()   # {'F1@10', ..., 'Edit', 'Acc', ...}

``plots`` imports matplotlib lazily (Agg backend).
"""
from trgnet_fast.evaluation.metrics import (
    DEFAULT_IOU_THRESHOLDS,
    F1_ENDS,
    SegmentationMetrics,
    average_splits,
    boundary_counts,
    edit_score,
    f1_from_counts,
    f1_scores,
    frame_accuracy,
    get_segments,
    levenshtein,
    resolve_background,
    segment_counts,
    write_split_average,
)
from trgnet_fast.evaluation.plots import class_colors, plot_barcode, plot_per_class, write_predictions
from trgnet_fast.evaluation.postprocess import (
    argmax_prediction,
    boundary_peaks,
    boundary_probabilities,
    gaussian_smoothing,
    refinement_with_boundary,
    relabeling,
)

__all__ = [
    "DEFAULT_IOU_THRESHOLDS",
    "F1_ENDS",
    "SegmentationMetrics",
    "argmax_prediction",
    "average_splits",
    "boundary_counts",
    "boundary_peaks",
    "boundary_probabilities",
    "class_colors",
    "edit_score",
    "f1_from_counts",
    "f1_scores",
    "frame_accuracy",
    "gaussian_smoothing",
    "get_segments",
    "levenshtein",
    "plot_barcode",
    "plot_per_class",
    "refinement_with_boundary",
    "relabeling",
    "resolve_background",
    "segment_counts",
    "write_predictions",
    "write_split_average",
]
