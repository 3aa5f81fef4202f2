"""The one argument check of the fused ARIS terms: the public function runs it (reference and native backends), the
raw Triton ops run it with ``kernel=True``. It reads shapes, dtypes and devices only (no device values: no host
sync, and it runs on FakeTensors). Errors are ``ValueError``s naming the op, the argument, what is expected and what
was received."""
from __future__ import annotations

import torch

from trgnet_fast.ops._checks import (SUPPORTED_FLOAT_DTYPES, check_contiguous, check_dtype_device, check_floating,
                                     check_shape, check_tensor_arguments, converted_state)
from trgnet_fast.ops.aris_losses.reference import compute_dtype

# the tensor arguments in schema order
TENSOR_NAMES = ("features", "frame_segment", "segment_video", "segment_start", "segment_count", "segment_valid",
                "segment_label", "unit_embeddings", "logit_scale", "absolute_weight", "absolute_log_weight",
                "relative_weight", "relative_log_weight")
# the feature head's optional inputs, after TENSOR_NAMES in the schema (both or neither)
HEAD_NAMES = ("head_weight", "head_bias")
# the int64 slot inputs: (N, T) and (M,)
INDEX_NAMES = ("segment_video", "segment_start", "segment_label")
# the (M, M) KL targets
TARGET_NAMES = ("absolute_weight", "absolute_log_weight", "relative_weight", "relative_log_weight")
# the inputs taken in the compute dtype
STATE_NAMES = ("segment_count", "unit_embeddings", "logit_scale", *TARGET_NAMES, *HEAD_NAMES)
# the backward's tensor arguments after grad_terms, before the saved outputs
BACKWARD_INPUT_NAMES = ("frame_segment", "segment_count", "segment_valid", "segment_label", "unit_embeddings",
                        "logit_scale", "absolute_weight", "relative_weight")


def check_argument_types(op: str, tensors) -> None:
    """The cheap part, run before the backend is chosen: tensors where tensors belong (``tensors``: the
    ``TENSOR_NAMES`` then the ``HEAD_NAMES`` in schema order, the head both None or both tensors)."""
    check_tensor_arguments(op, tuple(zip(TENSOR_NAMES, tensors)))
    head = tensors[len(TENSOR_NAMES):]
    if len(head) != len(HEAD_NAMES) or (head[0] is None) != (head[1] is None):
        kinds = ", ".join("None" if t is None else type(t).__name__ for t in head)
        raise ValueError(f"{op}: head_weight, head_bias: expected both tensors (the feature head) or both None, got "
                         f"{kinds}")
    if head[0] is not None:
        check_tensor_arguments(op, tuple(zip(HEAD_NAMES, head)))


def in_compute_dtype(op: str, tensors) -> tuple:
    """``tensors`` (schema order, ``check_argument_types``) with the floating inputs other than the features in the
    compute dtype of the features (``converted_state``); a None head stays None."""
    present = tuple((name, t) for name, t in zip(TENSOR_NAMES + HEAD_NAMES, tensors) if t is not None)
    converted = iter(converted_state(op, present, STATE_NAMES, compute_dtype))
    return tuple(None if t is None else next(converted) for t in tensors)


def _check_slots(op: str, named: dict, n: int, t: int, m: int, acc: torch.dtype, ref_name: str, ref) -> None:
    """frame_segment (N, T) int64, the (M,) slot inputs, unit_embeddings (K, D) is not checked here."""
    rule = f"the compute dtype of {ref.dtype} {ref_name}" if ref_name == "features" else None
    check_shape(op, "frame_segment", named["frame_segment"], (n, t), "(N, T)")
    check_dtype_device(op, "frame_segment", named["frame_segment"], torch.int64, ref_name, ref, "int64")
    for name in ("segment_count", "segment_valid", *(x for x in INDEX_NAMES if x in named)):
        check_shape(op, name, named[name], (m,), "(M,)")
        dtype = acc if name == "segment_count" else torch.bool if name == "segment_valid" else torch.int64
        check_dtype_device(op, name, named[name], dtype, ref_name, ref,
                           rule if name == "segment_count" else str(dtype).replace("torch.", ""))


def validate_inputs(op: str, tensors, kernel: bool = False) -> None:
    """Shapes, dtypes and devices of every argument (package docstring of ``trgnet_fast/ops/aris_losses``;
    ``tensors`` as ``check_argument_types``). ``kernel``: also contiguous tensors."""
    check_argument_types(op, tensors)
    named = {name: t for name, t in zip(TENSOR_NAMES + HEAD_NAMES, tensors) if t is not None}
    features = named["features"]
    head = "head_weight" in named
    layout = "(N, C, T)" if head else "(N, D, T)"
    if features.dim() != 3:
        raise ValueError(f"{op}: features: expected a 3-D tensor {layout}, got shape {tuple(features.shape)}")
    check_floating(op, "features", features)
    n, d, t = features.shape
    acc = compute_dtype(features.dtype)
    count = named["segment_count"]
    if count.dim() != 1:
        raise ValueError(f"{op}: segment_count: expected a 1-D tensor (M,), got shape {tuple(count.shape)}")
    m = count.shape[0]
    _check_slots(op, named, n, t, m, acc, "features", features)
    if head:
        d = _check_head(op, named["head_weight"], named["head_bias"], d, acc, features)
    _check_state(op, named, d, m, acc, "features", features)
    if kernel:
        for name, tensor in named.items():
            check_contiguous(op, name, tensor)


def _check_head(op: str, weight, bias, c: int, acc: torch.dtype, features) -> int:
    """head_weight (D, C) and head_bias (D,) in ``acc`` (the compute dtype of ``features``, whose C they take), on
    the features' device; returns D."""
    rule = f"the compute dtype of {features.dtype} features"
    if weight.dim() != 2 or weight.shape[1] != c or weight.shape[0] < 1:
        raise ValueError(f"{op}: head_weight: expected shape (D, C) = (D, {c}) with D >= 1 (C: features' "
                         f"channels), got {tuple(weight.shape)}")
    check_dtype_device(op, "head_weight", weight, acc, "features", features, rule)
    d = weight.shape[0]
    check_shape(op, "head_bias", bias, (d,), "(D,)")
    check_dtype_device(op, "head_bias", bias, acc, "features", features, rule)
    return d


def _check_state(op: str, named: dict, d: int, m: int, acc: torch.dtype, ref_name: str, ref) -> None:
    """unit_embeddings (K, D), logit_scale (1,) and the (M, M) targets present in ``named``, in ``acc``."""
    rule = f"the compute dtype of {ref.dtype} {ref_name}" if ref_name == "features" else f"same as {ref_name}"
    e = named["unit_embeddings"]
    if e.dim() != 2 or e.shape[1] != d or e.shape[0] < 1:
        raise ValueError(f"{op}: unit_embeddings: expected shape (K, D) = (K, {d}) with K >= 1, got {tuple(e.shape)}")
    check_dtype_device(op, "unit_embeddings", e, acc, ref_name, ref, rule)
    check_shape(op, "logit_scale", named["logit_scale"], (1,), "(1,)")
    check_dtype_device(op, "logit_scale", named["logit_scale"], acc, ref_name, ref, rule)
    for name in TARGET_NAMES:
        if name in named:
            check_shape(op, name, named[name], (m, m), "(M, M)")
            check_dtype_device(op, name, named[name], acc, ref_name, ref, rule)


def validate_backward_inputs(op: str, grad_terms, tensors, segment_features, row_lse, max_distance, head_weight,
                             segment_means, features_dtype) -> None:
    """The backward's arguments: grad_terms (2,), the ``BACKWARD_INPUT_NAMES`` tensors, the saved segment_features
    (M, D), row_lse (3, M) and max_distance (2,), with the head head_weight (D, C) and segment_means (M, C), without
    it None and an empty (0,) segment_means; all in the compute dtype of ``features_dtype`` (a supported floating
    dtype), contiguous, on one device."""
    if not isinstance(features_dtype, torch.dtype) or features_dtype not in SUPPORTED_FLOAT_DTYPES:
        raise ValueError(f"{op}: features_dtype: expected float32, float64, float16 or bfloat16, got "
                         f"{features_dtype!r}")
    named = dict(zip(BACKWARD_INPUT_NAMES, tensors))
    check_tensor_arguments(op, (("grad_terms", grad_terms), *named.items(), ("segment_features", segment_features),
                                ("row_lse", row_lse), ("max_distance", max_distance),
                                ("segment_means", segment_means)))
    if head_weight is not None:
        check_tensor_arguments(op, (("head_weight", head_weight),))
    acc = compute_dtype(features_dtype)
    if segment_features.dim() != 2:
        raise ValueError(f"{op}: segment_features: expected a 2-D tensor (M, D), got shape "
                         f"{tuple(segment_features.shape)}")
    if segment_features.dtype != acc:
        raise ValueError(f"{op}: segment_features: expected dtype {acc} (the compute dtype of {features_dtype} "
                         f"features), got {segment_features.dtype}")
    m, d = segment_features.shape
    frame_segment = named["frame_segment"]
    if frame_segment.dim() != 2:
        raise ValueError(f"{op}: frame_segment: expected a 2-D tensor (N, T), got shape {tuple(frame_segment.shape)}")
    n, t = frame_segment.shape
    _check_slots(op, named, n, t, m, acc, "segment_features", segment_features)
    _check_state(op, named, d, m, acc, "segment_features", segment_features)
    saved = [("grad_terms", grad_terms, (2,), "(2,)"), ("row_lse", row_lse, (3, m), "(3, M)"),
             ("max_distance", max_distance, (2,), "(2,)")]
    if head_weight is None:
        check_shape(op, "segment_means", segment_means, (0,), "(0,) (no feature head)")
    else:
        c = head_weight.shape[1] if head_weight.dim() == 2 else 0
        if head_weight.dim() != 2 or head_weight.shape[0] != d or c < 1:
            raise ValueError(f"{op}: head_weight: expected shape (D, C) = ({d}, C) with C >= 1 (D: "
                             f"segment_features' columns), got {tuple(head_weight.shape)}")
        saved.append(("head_weight", head_weight, (d, c), "(D, C)"))
        saved.append(("segment_means", segment_means, (m, c), "(M, C)"))
    for name, value, shape, layout in saved:
        check_shape(op, name, value, shape, layout)
        check_dtype_device(op, name, value, acc, "segment_features", segment_features)
    for name, tensor in (*named.items(), ("segment_features", segment_features), *((n, v) for n, v, _, _ in saved)):
        check_contiguous(op, name, tensor)
