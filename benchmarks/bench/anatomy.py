"""Instruments of the step-anatomy report (``benchmarks/step_anatomy.py``), independent of TRGNet.

* :class:`OpCounter` — a ``TorchDispatchMode`` that counts the ATen / custom ops dispatched, per (phase, block),
  and records the host-syncing ones (``trgnet_fast.host_sync.sync_reason``) with the Python frame that issued them.
  What is **not** counted (tallied apart by kind, :func:`excluded_kind`): *views* — ops whose schema returns an
  alias of an input that they do not write (``Tensor(a)``: ``view``, ``t``, ``select``, ``split``, ``expand``,
  ``detach``, ``alias``, ``lift_fresh``, …) plus the metadata-only ``_unsafe_view`` / ``_reshape_alias``;
  *allocations* — ``empty*`` / ``new_empty*``, which launch no kernel; *markers* — ``profiler::*``
  (``record_function`` ranges); *host* — ops on the given host-resident tensors only (Adam's step counters).
  In-place ops (``Tensor(a!)``) are counted. The mode sees one entry per op that reaches the dispatcher below
  autograd: what a kernel does inside (a custom op ``trgnet::*`` / ``trgnet_triton::*``, a foreach op) is not
  seen, while CompositeImplicit ops show as the ops they decompose into. So a count is a proxy for kernel
  launches (a fused op = 1), not an exact launch count.
* :class:`BlockTracker` — module forward pre/post hooks that keep a stack of block names, so every op (and every
  saved tensor) can be attributed to the innermost block running.
* :class:`AutogradNodeBlocks` — attributes backward ops to the block whose forward created the autograd node:
  each block's forward hooks claim the not-yet-claimed nodes reachable from its inputs (for the enclosing block)
  and from its outputs (for itself); during backward, node pre/post hooks name the block of the node running.
* :class:`SavedTensorRecorder` — ``saved_tensors_hooks`` that record each tensor autograd saves, for the bytes
  alive when backward starts (rule in :meth:`SavedTensorRecorder.live_bytes`). Works on fake tensors.
"""
from __future__ import annotations

import itertools
import os
import traceback
import weakref
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from trgnet_fast.host_sync import host_only, storage_key, sync_reason

METADATA_ONLY_OPS = frozenset({"aten::_unsafe_view", "aten::_reshape_alias"})
ALLOCATION_OPS = frozenset({"aten::empty", "aten::empty_like", "aten::empty_strided", "aten::new_empty",
                            "aten::new_empty_strided"})
# the backward labels of work no forward block created
PARAMETER_GRADS = "parameter grads"
AUTOGRAD_ENGINE = "autograd engine"


# ------------------------------------------------------------------------------------------ op classification
def op_name(func) -> str:
    """``namespace::name`` of an OpOverload, the overload dropped: ``aten::relu``, ``trgnet::linear_attention``."""
    return func._schema.name


def excluded_kind(func) -> str | None:
    """"view" (returns a non-written alias of an input, or metadata-only), "allocation" (``empty*``), "marker"
    (``profiler::*`` record_function ranges), else None (the op is counted)."""
    name = op_name(func)
    if func.namespace == "profiler":
        return "marker"
    if name in METADATA_ONLY_OPS or any(
            r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns):
        return "view"
    if name in ALLOCATION_OPS:
        return "allocation"
    return None


def storage_keys(tensors) -> set:
    return {storage_key(t) for t in tensors}


def tensors_in(obj) -> list[torch.Tensor]:
    """The tensors among the leaves of a nested list / tuple / dict."""
    return [leaf for leaf in tree_leaves(obj) if isinstance(leaf, torch.Tensor)]


def issuing_frame(package_dirs: tuple[str, ...]) -> str:
    """``path:line (function)`` of the innermost Python frame in ``package_dirs`` (repo-relative when it can),
    else of the innermost frame outside torch and this file; "?" if none."""
    frames = traceback.extract_stack()[::-1]
    torch_dir = os.path.dirname(torch.__file__)
    inside = [f for f in frames if f.filename.startswith(package_dirs)]
    outside = [f for f in frames if not f.filename.startswith(torch_dir) and f.filename != __file__]
    chosen = (inside or outside or [None])[0]
    if chosen is None:
        return "?"
    root = os.path.dirname(package_dirs[0]) if package_dirs else ""
    path = os.path.relpath(chosen.filename, root) if root and chosen.filename.startswith(root) else chosen.filename
    return f"{path}:{chosen.lineno} ({chosen.name})"


# ------------------------------------------------------------------------------------------------ attribution
class BlockTracker:
    """The phase and the innermost running block, kept by module forward hooks.

    ``add(label, module)`` hooks one module; ``phase`` is set by whoever drives the step. ``current_block()`` is
    the top of the block stack, ``outside`` when no hooked module is running. ``node_blocks`` (optional) is told
    of every block entry and exit so that it can claim autograd nodes.
    """

    def __init__(self, outside: str, node_blocks: "AutogradNodeBlocks | None" = None):
        self.outside = outside
        self.phase = ""
        self.node_blocks = node_blocks
        self._stack: list[str] = []
        self._handles = []

    def add(self, label: str, module: nn.Module) -> None:
        self._handles.append(module.register_forward_pre_hook(self._enter_hook(label)))
        self._handles.append(module.register_forward_hook(self._exit_hook(label), always_call=True))

    def current_block(self) -> str:
        return self._stack[-1] if self._stack else self.outside

    def inside_blocks(self) -> bool:
        return bool(self._stack)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _enter_hook(self, label: str):
        def hook(module, args):
            if self.node_blocks is not None:
                self.node_blocks.claim(args, self.current_block())
            self._stack.append(label)
        return hook

    def _exit_hook(self, label: str):
        def hook(module, args, output):
            if self.node_blocks is not None:
                self.node_blocks.claim(output, label)
            self._stack.pop()
        return hook


class AutogradNodeBlocks:
    """Which block created each autograd node; during backward, the block of the node that runs.

    ``claim(obj, block)`` gives ``block`` to every node reachable from the tensors in ``obj`` that no block has
    claimed yet (``AccumulateGrad`` nodes go to :data:`PARAMETER_GRADS`). Blocks claim from the inside out
    (inner exit hooks run first) and a block's entry claims its inputs' history for the enclosing block, so a
    node goes to the innermost block running when it was created — for the nodes reachable from block outputs,
    i.e. all that backward runs. ``arm()`` hooks the claimed nodes; ``current`` is then the running node's block,
    :data:`AUTOGRAD_ENGINE` between nodes (gradient accumulation, the seed gradient).
    """

    def __init__(self):
        self.block_of_node: dict = {}
        self.current = AUTOGRAD_ENGINE
        self._handles = []

    def claim(self, obj, block: str) -> None:
        pending = [t.grad_fn for t in tensors_in(obj) if t.grad_fn is not None]
        while pending:
            node = pending.pop()
            if node is None or node in self.block_of_node:
                continue
            self.block_of_node[node] = PARAMETER_GRADS if type(node).__name__ == "AccumulateGrad" else block
            pending.extend(next_node for next_node, _ in node.next_functions)

    def arm(self) -> None:
        for node, block in self.block_of_node.items():
            self._handles.append(node.register_prehook(self._enter(block)))
            self._handles.append(node.register_hook(self._leave))

    def disarm(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.block_of_node.clear()

    def _enter(self, block: str):
        def prehook(grad_outputs):
            self.current = block
        return prehook

    def _leave(self, grad_inputs, grad_outputs):
        self.current = AUTOGRAD_ENGINE


# --------------------------------------------------------------------------------------------------- counting
@dataclass
class SyncEvent:
    """One host-syncing op: where in the step, which op, why it syncs and the Python frame that issued it."""
    phase: str
    block: str
    op: str
    reason: str
    where: str


@dataclass
class OpCounts:
    """What :class:`OpCounter` saw. ops[(phase, block)] = Counter(op name → calls), views and allocations
    excluded; excluded[kind] = Counter(op name → calls); syncs in dispatch order."""
    ops: dict = field(default_factory=lambda: defaultdict(Counter))
    excluded: dict = field(default_factory=lambda: defaultdict(Counter))
    syncs: list = field(default_factory=list)


class OpCounter(TorchDispatchMode):
    """Counts every op dispatched while active into :class:`OpCounts`, at the (phase, block) ``where()`` returns.

    package_dirs: directories whose innermost frame names the issuer of a sync (e.g. the trgnet_fast package).
    host_tensors: storage keys (``trgnet_fast.host_sync.storage_key``) of tensors that stay on the host whatever
        the step's device (Adam's step counters): an op on them alone (``host_only``) launches no device kernel
        and syncs nothing, so it is tallied apart (kind "host"), like views.
    """

    def __init__(self, where: Callable[[], tuple[str, str]], package_dirs: tuple[str, ...],
                 host_tensors: set = frozenset()):
        super().__init__()
        self.where = where
        self.package_dirs = package_dirs
        self.host_tensors = host_tensors
        self.counts = OpCounts()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = op_name(func)
        kind = excluded_kind(func) or ("host" if host_only(args, self.host_tensors) else None)
        if kind is not None:
            self.counts.excluded[kind][name] += 1
        else:
            phase, block = self.where()
            self.counts.ops[(phase, block)][name] += 1
            reason = sync_reason(func, args, kwargs)
            if reason is not None:
                self.counts.syncs.append(SyncEvent(phase, block, name, reason, issuing_frame(self.package_dirs)))
        return func(*args, **kwargs)


# ------------------------------------------------------------------------------------------------ saved bytes
class _Saved:
    """What the pack hook hands autograd instead of a saved tensor: the tensor, its saver and its order."""
    __slots__ = ("tensor", "block", "order", "__weakref__")

    def __init__(self, tensor: torch.Tensor, block: str, order: int):
        self.tensor, self.block, self.order = tensor, block, order


class SavedTensorRecorder:
    """Records what autograd saves while ``hooks()`` is active; ``block_of()`` names the saver at pack time.

    Autograd holds the returned record instead of the tensor, so a record dies with its graph node: the live
    records are exactly the tensors still saved (call ``gc.collect()`` first, graph cycles free late).
    """

    def __init__(self, block_of: Callable[[], str]):
        self.block_of = block_of
        self._live: weakref.WeakSet = weakref.WeakSet()
        self._order = itertools.count()

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, tensor: torch.Tensor) -> _Saved:
        record = _Saved(tensor, self.block_of(), next(self._order))
        self._live.add(record)
        return record

    @staticmethod
    def _unpack(record: _Saved) -> torch.Tensor:
        return record.tensor

    def live_bytes(self, resident: set) -> dict[str, int]:
        """Bytes per block of the storages saved now. Rule: each storage (``storage_key``) counts once, with its
        full ``nbytes`` whatever view of it was saved, for the block that saved it first; storages in
        ``resident`` (parameters, buffers: memory the step holds anyway) are summed under the key "resident"."""
        first_saver: dict = {}
        for record in sorted(self._live, key=lambda r: r.order):
            key = storage_key(record.tensor)
            if key not in first_saver:
                block = "resident" if key in resident else record.block
                first_saver[key] = (block, record.tensor.untyped_storage().nbytes())
        per_block: dict[str, int] = defaultdict(int)
        for block, nbytes in first_saver.values():
            per_block[block] += nbytes
        return dict(per_block)


def module_state(*modules: nn.Module) -> list[torch.Tensor]:
    """Parameters and buffers of ``modules``."""
    return [t for m in modules for t in itertools.chain(m.parameters(), m.buffers())]


def fake_module(module: nn.Module, fake_mode) -> nn.Module:
    """Swap ``module``'s parameters and buffers (in place) for fake tensors of ``fake_mode``; returns it."""
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None:
                sub._parameters[name] = nn.Parameter(fake_mode.from_tensor(param.detach()), param.requires_grad)
        for name, buf in list(sub._buffers.items()):
            if buf is not None:
                sub._buffers[name] = fake_mode.from_tensor(buf)
    return module
