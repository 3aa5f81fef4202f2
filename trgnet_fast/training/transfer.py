"""A training batch to the device in one copy per dtype (docs/training.md#batch-transfer)."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten


class PackedTensors(NamedTuple):
    """The tensors of a pytree as one flat buffer per dtype.

    buffers: dtype → 1-D buffer; layout: per tensor leaf, (leaf index, dtype, offset, shape); leaves: the flattened
    pytree with None where a tensor was; spec: its structure.
    """

    buffers: dict
    layout: list
    leaves: list
    spec: Any


def pack(tree) -> PackedTensors:
    """Flatten the tensors of ``tree`` (a batch dict, ``LossTargets``, …; other leaves kept) into one buffer per
    dtype, in leaf order."""
    leaves, spec = tree_flatten(tree)
    parts: dict = {}
    sizes: dict = {}
    layout = []
    for i, leaf in enumerate(leaves):
        if torch.is_tensor(leaf):
            layout.append((i, leaf.dtype, sizes.get(leaf.dtype, 0), tuple(leaf.shape)))
            sizes[leaf.dtype] = sizes.get(leaf.dtype, 0) + leaf.numel()
            parts.setdefault(leaf.dtype, []).append(leaf.reshape(-1))
    buffers = {dtype: torch.cat(chunks) for dtype, chunks in parts.items()}
    return PackedTensors(buffers, layout, [None if torch.is_tensor(x) else x for x in leaves], spec)


def unpack(packed: PackedTensors, buffers: dict | None = None):
    """The pytree of :func:`pack`, its tensors views of ``buffers`` (default: the packed ones)."""
    buffers = packed.buffers if buffers is None else buffers
    leaves = list(packed.leaves)
    for i, dtype, offset, shape in packed.layout:
        leaves[i] = buffers[dtype][offset:offset + math.prod(shape)].view(shape)
    return tree_unflatten(leaves, packed.spec)


def layout_key(packed: PackedTensors) -> tuple:
    """A hashable key equal for two :func:`pack` results exactly when their tensors have the same dtypes, shapes and
    buffer offsets and their other leaves and structure are equal: batches with one key fit one set of static
    buffers (one CUDA graph, docs/training.md#cuda-graphs)."""
    return (tuple((i, str(dtype), offset, shape) for i, dtype, offset, shape in packed.layout),
            tuple(repr(leaf) for leaf in packed.leaves), str(packed.spec))


def _host_buffer(buffer: torch.Tensor, device: torch.device) -> torch.Tensor:
    return buffer.pin_memory() if device.type == "cuda" else buffer


def device_buffers(packed: PackedTensors, device) -> dict:
    """The buffers of ``packed`` on ``device``: one asynchronous (pinned, on CUDA) host-to-device copy per dtype."""
    device = torch.device(device)
    return {dtype: _host_buffer(buffer, device).to(device, non_blocking=True)
            for dtype, buffer in packed.buffers.items()}


def copy_buffers(destination: dict, packed: PackedTensors) -> None:
    """Copy the buffers of ``packed`` into ``destination`` (dtype → buffer of the same size, e.g. a CUDA graph's
    static inputs), one asynchronous copy per dtype; the destination's addresses stay as they are."""
    for dtype, buffer in packed.buffers.items():
        target = destination[dtype]
        target.copy_(_host_buffer(buffer, target.device), non_blocking=True)


def to_device(tree, device):
    """``tree`` with its tensors on ``device``. To an accelerator the tensors of each dtype travel as one (pinned,
    on CUDA) buffer: one asynchronous host-to-device copy per dtype (3 for a training batch: float32, int64, bool)
    instead of one per tensor (about 25 with the loss targets); on the device they are views of those buffers.
    On the CPU nothing is copied."""
    device = torch.device(device)
    if device.type == "cpu":
        return tree
    packed = pack(tree)
    return unpack(packed, device_buffers(packed, device))
