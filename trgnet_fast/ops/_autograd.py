"""Autograd glue shared by the fused ops whose native and Triton versions have one schema."""
from __future__ import annotations

import threading

import torch


def make_backward(backward_op):
    """The ``register_autograd`` backward of a forward op whose context saved the backward op's inputs
    (after grad_out) with ``save_for_backward``: runs ``backward_op(grad_out, *saved)`` (the native or
    the Triton backward op) and returns its gradients."""
    def backward(ctx, grad_out):
        return backward_op(grad_out.contiguous(), *ctx.saved_tensors)
    return backward


_register_lock = threading.Lock()
_registered: set[str] = set()


def register_native_op(name: str, fake_forward, fake_backward, backward, setup_context) -> None:
    """Register the fake kernels of ``trgnet::<name>`` and ``trgnet::<name>_backward`` and the autograd
    of the forward (idempotent). Called by each op module's ``register_native`` once the extension is
    loaded, so that the native op is differentiable and traceable however it is reached."""
    with _register_lock:
        if name in _registered:
            return
        torch.library.register_fake(f"trgnet::{name}")(fake_forward)
        torch.library.register_fake(f"trgnet::{name}_backward")(fake_backward)
        torch.library.register_autograd(f"trgnet::{name}", backward, setup_context=setup_context)
        _registered.add(name)
