"""Which ATen ops make the host wait for the device, and a dispatch mode that refuses them.

A training step that issues none of them can run ahead of the GPU and be captured in one CUDA graph
(docs/training.md#no-host-syncs). The rule works on any device, so a CPU run finds the syncs a GPU run would
have: every tensor is treated as a device tensor.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

COPY_OPS = frozenset({"aten::_to_copy", "aten::copy_"})
BOOL_INDEX_OPS = frozenset({"aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_"})
# ops that return a device comparison as a Python value
HOST_VALUE_OPS = frozenset({"aten::equal"})


def _has_bool_index(indices) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


def _pinned(t: torch.Tensor) -> bool:
    try:
        return t.is_pinned()
    except RuntimeError:  # no accelerator to ask (a CPU-only build)
        return False


def _copy_reason(name: str, args, kwargs) -> str | None:
    """Why a copy between the host and a device waits, or None: a device-to-host copy waits for the device, and so
    does a host-to-device copy unless it is asynchronous from pinned memory (from pageable memory the stream syncs
    before it). Within one device, or from a 0-dim host scalar into an op, nothing waits."""
    if name == "aten::copy_":
        dst, src = args[0].device, args[1]
        non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
    else:
        src = args[0]
        dst = torch.device(kwargs["device"]) if kwargs.get("device") is not None else src.device
        non_blocking = kwargs.get("non_blocking", False)
    if not isinstance(src, torch.Tensor) or (src.device.type == "cpu") == (dst.type == "cpu"):
        return None
    if src.device.type != "cpu":
        return "device-to-host copy"
    if non_blocking and _pinned(src):
        return None
    return "host-to-device copy from pageable memory or without non_blocking (a host tensor made in the step)"


def sync_reason(func, args, kwargs) -> str | None:
    """Why ``func(*args, **kwargs)`` (an OpOverload) makes the host wait for the device, or None.

    Counted: ops tagged ``data_dependent_output`` (``_local_scalar_dense``: ``.item()``, ``bool()``, ``int()``,
    ``.tolist()``), ``aten::equal``, ``index`` / ``index_put`` with a bool index (boolean-mask indexing), and the
    other ``dynamic_output_shape`` ops (``nonzero``, ``masked_select``, ``unique*``, ``bincount``,
    ``repeat_interleave`` without ``output_size``), and copies between the host and a device but asynchronous
    ones from pinned memory (:func:`_copy_reason`; a run on the CPU has none of them: a run on the meta device
    finds the host tensors a step makes and copies over, except ``torch.tensor(data, device=...)``, whose copy
    does not pass through the dispatch modes). ``_assert_async`` is asynchronous and not counted.
    """
    name = func._schema.name
    if name in COPY_OPS:
        return _copy_reason(name, args, kwargs)
    if torch.Tag.data_dependent_output in func.tags:
        return "device value read by the host"
    if name in HOST_VALUE_OPS:
        return "returns a device comparison as a Python bool"
    if name in BOOL_INDEX_OPS:
        indices = args[1] if len(args) > 1 else kwargs.get("indices")
        return "boolean-mask indexing (data-dependent shape)" if _has_bool_index(indices) else None
    if torch.Tag.dynamic_output_shape in func.tags:
        if name == "aten::repeat_interleave" and kwargs.get("output_size") is not None:
            return None
        return "data-dependent output shape"
    return None


def storage_key(t: torch.Tensor) -> tuple:
    """Identity of a tensor's storage (the StorageImpl): equal for views of one storage. Real or fake tensors."""
    return (t.device.type, t.untyped_storage()._cdata)


def host_only(args, host_keys) -> bool:
    """True if the tensors among ``args`` (nested) are host-resident ones (storage keys in ``host_keys``) and
    0-dim scalars: such an op launches no device kernel and syncs nothing (Adam's step counters, which stay on
    the host whatever the parameters' device unless the optimizer is capturable or fused)."""
    if not host_keys:
        return False
    tensors = [leaf for leaf in tree_leaves(args) if isinstance(leaf, torch.Tensor)]
    on_host = [storage_key(t) in host_keys for t in tensors]
    return any(on_host) and all(host or t.dim() == 0 for host, t in zip(on_host, tensors))


class HostSyncError(RuntimeError):
    """An op that waits for the device ran inside :class:`NoHostSync`."""


class NoHostSync(TorchDispatchMode):
    """``with NoHostSync(): step()`` raises :class:`HostSyncError` naming the first op that would make the host
    wait for the device (:func:`sync_reason`); the traceback shows the Python line that issued it.

    host_tensors: tensors that live on the host in a GPU run too (:func:`host_only`), e.g. Adam's step counters.
    """

    def __init__(self, host_tensors: Iterable[torch.Tensor] = ()):
        super().__init__()
        self.host_keys = {storage_key(t) for t in host_tensors}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        reason = None if host_only(args, self.host_keys) else sync_reason(func, args, kwargs)
        if reason is not None:
            raise HostSyncError(f"{func._schema.name}: {reason}")
        return func(*args, **kwargs)
