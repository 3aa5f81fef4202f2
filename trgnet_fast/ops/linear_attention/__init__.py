"""Non-causal linear attention core of TRG-Net (docs/model.md#linear-attention).

For every sample n and head h, with phi = sigmoid:
    KV[d, e]  = sum_s m[s] * phi(k[s, d]) * v[s, e]
    ksum[d]   = sum_s m[s] * phi(k[s, d]) + eps          (eps on every element of the key sum)
    out[l, e] = (phi(q[l]) @ KV)[e] / (phi(q[l]) @ ksum)
m[s] = key_mask[n, s] when a key mask is given (mask-correct mode), else 1 (published mode:
padded frames take part in the sums).

Shapes: q, k: (N, T, H, D); v: (N, T, H, E); key_mask: (N, T) bool or None; out: (N, T, H, E).
This is the layout the Linear projections produce ((N, T, H*D) viewed as (N, T, H, D)), so no
transpose is needed around the op.

Backends: ``torch`` (``reference.py``, any device/dtype/size), ``cuda`` (the compiled
extension: ``torch.ops.trgnet.linear_attention``, CUDA kernels for CUDA tensors with D, E <= 64,
C++ kernels for CPU tensors) and ``triton`` (``torch.ops.trgnet_triton.linear_attention``, kernels
in ``triton_kernels.py``: CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``; same schemas,
state dtypes and autograd as the native op; imported on first use so that triton stays optional). The native op computes in fp32 (fp64 for float64
inputs) whatever the input dtype, deterministically, and is differentiable w.r.t. q, k and v
(``torch.library.register_autograd``); it works under ``torch.compile`` (``register_fake``).

Native op schemas (registered by the C++ library, csrc/linear_attention.cpp)::

    trgnet::linear_attention(Tensor q, Tensor k, Tensor v, Tensor? key_mask, float eps)
        -> (Tensor out, Tensor kv_state, Tensor key_sum)
    trgnet::linear_attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v,
        Tensor? key_mask, Tensor kv_state, Tensor key_sum, float eps)
        -> (Tensor grad_q, Tensor grad_k, Tensor grad_v)

``kv_state`` (N, H, D, E) = KV and ``key_sum`` (N, H, D) = sum_s m[s] phi(k[s]) **without**
eps, both fp32 (fp64 for float64 inputs); they are saved for the backward and are not
differentiable. The native ops require contiguous inputs of one dtype on one device; the
:func:`linear_attention` wrapper makes non-contiguous inputs contiguous (a copy).

Files: ``reference.py`` (the plain-PyTorch reference and gradient floors), ``validation.py`` (the one
argument check, shared with the raw Triton ops), ``autograd.py`` (fake kernels, autograd context and
backward of both registrations), ``triton_kernels.py`` (the Triton kernels and ``triton_op``s), ``spec.py``
(the registry entry).
"""
from __future__ import annotations

import torch

from trgnet_fast import _native
from trgnet_fast.backend import register_op, resolve_backend
from trgnet_fast.ops._checks import check_nonempty
from trgnet_fast.ops.linear_attention.autograd import OP_NAME
from trgnet_fast.ops.linear_attention.reference import linear_attention_reference
from trgnet_fast.ops.linear_attention.validation import check_argument_types, validate_inputs

BACKENDS = ("cuda", "triton")
register_op(OP_NAME, BACKENDS)


def _contiguous_mask(key_mask):
    return key_mask.contiguous() if isinstance(key_mask, torch.Tensor) else key_mask


def linear_attention(q, k, v, key_mask=None, eps: float = 1e-6, backend: str | None = None):
    """Non-causal linear attention with sigmoid features (formula in the module docstring).

    Args:
        q: (N, T, H, D) queries, floating dtype.
        k: (N, T, H, D) keys, same dtype and device as q.
        v: (N, T, H, E) values, same dtype and device as q.
        key_mask: (N, T) bool, True = frame takes part in the key/value sums; None = all frames
            (the published behaviour, padding included).
        eps: added to every element of the key sum.
        backend: "auto" | "torch" | "triton" | "cuda" | None (None: ``$TRGNET_BACKEND``, else
            auto), see ``trgnet_fast.backend``. "cuda" needs the native extension; on CUDA
            tensors its kernels take D, E <= 64. "triton" runs on CUDA tensors, or on CPU
            tensors under ``TRITON_INTERPRET=1`` (any D, E; sized for D, E <= 64).

    Returns:
        out: (N, T, H, E), dtype and device of q. Differentiable w.r.t. q, k, v.

    Raises:
        ValueError: bad shapes (an empty dimension among them) / dtypes / devices / eps
            (checked once, before any kernel runs: here, or for
            the triton backend by the Triton op itself).
        RuntimeError: the requested backend is not usable (see ``trgnet_fast.backend``).

    Non-contiguous inputs are accepted; the native and triton backends copy them to contiguous
    memory.
    """
    check_argument_types(OP_NAME, q, k, v, key_mask, eps)
    check_nonempty(OP_NAME, (("q", q, "(N, T, H, D)"), ("v", v, "(N, T, H, E)")))
    impl = resolve_backend(OP_NAME, backend, q.device.type)
    if impl == "triton":
        from trgnet_fast.ops.linear_attention.triton_kernels import linear_attention_triton

        return linear_attention_triton(q.contiguous(), k.contiguous(), v.contiguous(), _contiguous_mask(key_mask),
                                       float(eps))[0]
    validate_inputs(OP_NAME, q, k, v, key_mask, eps)
    if impl == "torch":
        return linear_attention_reference(q, k, v, key_mask, eps)
    if impl == "cuda":
        return _native.ops().linear_attention(q.contiguous(), k.contiguous(), v.contiguous(),
                                             _contiguous_mask(key_mask), float(eps))[0]
    raise AssertionError(impl)  # every registered backend is dispatched above
