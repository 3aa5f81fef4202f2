"""Checks of TRGNet.forward's inputs, raising ValueError that names the argument, the expected and the
received value."""
from __future__ import annotations

import torch

from trgnet_fast.model.packing import PackedSequences


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)}, dtype {value.dtype}, device {value.device}"
    return f"{type(value).__name__}"


def _require_tensor(name: str, value, expected: str) -> None:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name}: expected {expected}, got {_describe(value)}")


def _require_device(name: str, value: torch.Tensor, device: torch.device) -> None:
    if value.device != device:
        raise ValueError(f"{name}: expected a tensor on the model's device {device}, got device {value.device}")


def _require_finite(name: str, value: torch.Tensor) -> None:
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name}: expected finite values, got {int((~torch.isfinite(value)).sum())} NaN/Inf entries")


# InstanceNorm (the AttModules' query normalisation, training and eval alike) needs at least two frames to
# normalise over: one frame has variance 0 and PyTorch refuses it
MIN_FRAMES = 2


def _check_sizes_and_dtype(x: torch.Tensor, dtype: torch.dtype) -> None:
    """x (N, C_in, V, T) has N >= 1 samples, T >= MIN_FRAMES frames and the parameters' dtype (autocast casts
    inside the model; the input itself is never cast, so a mismatch would fail deep inside a layer)."""
    n, _, _, t = x.shape
    if n < 1:
        raise ValueError(f"x: expected N >= 1 samples (dim 0 of (N, C_in, V, T)), got {_describe(x)}")
    if t < MIN_FRAMES:
        raise ValueError(f"x: expected T >= {MIN_FRAMES} frames (dim 3 of (N, C_in, V, T): the AttModules' "
                         f"InstanceNorm normalises over the frames, in eval too), got {_describe(x)}")
    if x.dtype != dtype:
        raise ValueError(f"x: expected dtype {dtype} (the parameters' dtype; convert x or the model), got "
                         f"{_describe(x)}")


def validate_inputs(x, mask, joint_graph, in_channel: int, num_joints: int, device: torch.device,
                    dtype: torch.dtype, check_values: bool = True, right_padded: bool = False) -> None:
    """Validate TRGNet inputs.

    x: (N, in_channel, num_joints, T) with N >= 1 and T >= 2, of the parameters' ``dtype``, finite; mask: (N, 1, T)
    bool or numeric with values 0/1 (with ``right_padded``: each row's ones first, then its zeros); joint_graph:
    (num_joints, num_joints) floating, finite; all three on ``device``. check_values: False skips the finiteness, 0/1
    and padding checks (they read device values).
    """
    x_expected = f"a 4-D floating tensor (N, C_in={in_channel}, V={num_joints}, T)"
    _require_tensor("x", x, x_expected)
    if x.dim() != 4 or not x.is_floating_point() or x.shape[1] != in_channel or x.shape[2] != num_joints:
        hint = ""
        if x.dim() == 4 and x.shape[-1] == num_joints and x.shape[2] != num_joints:
            hint = (" (it looks like (N, C, T, V) was passed; the model takes (N, C_in, V, T), "
                    "e.g. x.transpose(2, 3))")
        raise ValueError(f"x: expected {x_expected}, got {_describe(x)}{hint}")
    _check_sizes_and_dtype(x, dtype)
    n, _, _, t = x.shape

    mask_expected = f"a (N={n}, 1, T={t}) bool or 0/1 tensor (bool, integer or floating)"
    _require_tensor("mask", mask, mask_expected)
    if tuple(mask.shape) != (n, 1, t) or mask.is_complex():
        raise ValueError(f"mask: expected {mask_expected}, got {_describe(mask)}")

    graph_expected = f"a ({num_joints}, {num_joints}) floating tensor"
    _require_tensor("joint_graph", joint_graph, graph_expected)
    if tuple(joint_graph.shape) != (num_joints, num_joints) or not joint_graph.is_floating_point():
        raise ValueError(f"joint_graph: expected {graph_expected}, got {_describe(joint_graph)}")

    for name, value in (("x", x), ("mask", mask), ("joint_graph", joint_graph)):
        _require_device(name, value, device)

    if not check_values or torch.compiler.is_compiling():
        return  # the value checks below read device data: a sync and a graph break under torch.compile
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"mask: expected values 0 or 1, got values {torch.unique(mask).tolist()[:8]}")
    if right_padded and mask.shape[-1] > 1 and bool((mask[..., 1:] > mask[..., :-1]).any()):
        raise ValueError("mask: mask_mode='correct' needs right-padded rows (each row's valid frames first, then "
                         "its padding), got a row with a valid frame after a padded one")
    _require_finite("x", x)
    _require_finite("joint_graph", joint_graph)


def validate_packed(packed, x: torch.Tensor, mask: torch.Tensor, check_values: bool = True) -> None:
    """Validate a packed batch (trgnet_fast/model/packing.py; x and mask already checked by ``validate_inputs``):
    x (1, C_in, V, T) with T = sum(packed.lengths), every sequence of >= 2 frames, packed's tensors on x's device;
    with ``check_values`` also mask all ones and cu_seqlens matching the lengths (device reads)."""
    if not isinstance(packed, PackedSequences):
        raise ValueError(f"packed: expected a PackedSequences (trgnet_fast.model.packing), got {_describe(packed)}")
    if x.shape[0] != 1 or x.shape[3] != packed.total_frames:
        raise ValueError(f"x: expected one packed row (1, C_in, V, T={packed.total_frames}) for packed lengths "
                         f"{list(packed.lengths)}, got {_describe(x)}")
    if min(packed.lengths) < MIN_FRAMES:
        raise ValueError(f"packed: expected sequences of >= {MIN_FRAMES} frames (the AttModules' InstanceNorm "
                         f"normalises over each sequence's frames), got lengths {list(packed.lengths)}")
    for name in ("cu_seqlens", "frame_sequence", "unpack_index", "valid"):
        _require_device(f"packed.{name}", getattr(packed, name), x.device)
    if not check_values or torch.compiler.is_compiling():
        return
    if not bool(mask.all()):
        raise ValueError("mask: a packed batch has no padded frame: expected all ones, got "
                         f"{int((mask == 0).sum())} zeros")
    expected = torch.tensor([0, *packed.lengths]).cumsum(0).tolist()
    if packed.cu_seqlens.tolist() != expected:
        raise ValueError(f"packed.cu_seqlens: expected the offsets {expected} of the lengths, got "
                         f"{packed.cu_seqlens.tolist()}")
