"""Autograd glue shared by the fused ops whose native and Triton versions have one schema."""
from __future__ import annotations

import threading

import torch

from trgnet_fast.ops._checks import check_one_device


def make_backward(backward_op):
    """The ``register_autograd`` backward of a forward op whose context saved the backward op's inputs
    (after grad_out) with ``save_for_backward``: runs ``backward_op(grad_out, *saved)`` (the native or
    the Triton backward op) and returns its gradients."""
    def backward(ctx, grad_out):
        return backward_op(grad_out.contiguous(), *ctx.saved_tensors)
    return backward


_register_lock = threading.Lock()
_registered: set[str] = set()


def _one_device(qualname: str, fake):
    """``fake`` behind the check that its tensor arguments share one device: a raw call with some inputs on
    ``meta`` lands in the fake kernel (the C++ device checks never run) and would return uninitialised memory."""
    namespace, name = qualname.split("::")
    names = [argument.name for argument in getattr(getattr(torch.ops, namespace), name).default._schema.arguments]

    def checked(*args, **kwargs):
        check_one_device(qualname, names, args)
        return fake(*args, **kwargs)
    return checked


def register_native_op(name: str, fake_forward, fake_backward, backward, setup_context) -> None:
    """Register the fake kernels of ``trgnet::<name>`` and ``trgnet::<name>_backward`` (behind a one-device check)
    and the autograd of the forward (idempotent). Called by each op module's ``register_native`` once the extension
    is loaded, so that the native op is differentiable and traceable however it is reached."""
    with _register_lock:
        if name in _registered:
            return
        for qualname, fake in ((f"trgnet::{name}", fake_forward), (f"trgnet::{name}_backward", fake_backward)):
            torch.library.register_fake(qualname)(_one_device(qualname, fake))
        torch.library.register_autograd(f"trgnet::{name}", backward, setup_context=setup_context)
        _registered.add(name)
