"""The per-frame terms of the TRG-Net loss — cross-entropy, GS-TMSE and the boundary BCE, every stage — as one fused
op (docs/model.md#losses, docs/kernels.md#frame_losses).

S logit stages (N, K, T) share the labels, R boundary stages (N, T) share the boundary targets. Everything that
depends on the labels alone comes in as per-frame weights and indices (``trgnet_fast/losses/targets.py`` builds them
on the CPU, in the data loader). With z = logits[s, n] (K, T), b = boundary_logits[r, n] (T,), for frames t of a row:

    lse_c(t)  = logsumexp_k z[k, t]                                       (class-axis normaliser of frame t)
    CE        = (1/S) Σ_{s,n,t} ce_weight[n,t] · (lse_c(t) − z[y_t, t])   (y_t = labels[n,t]; the bracket is 0 where
                                                                           y_t is outside [0, K), e.g. ignored)
    pair(u)   : v = next_frame[n,u] ≠ u and 0 ≤ v < T (u starts the pair (u, v) of consecutive valid frames)
    prev(v)   : p = previous_frame[n,v] ≠ v and 0 ≤ p < T (v ends the pair (p, v))
    GS-TMSE   = (1/(S·K)) Σ_{s,n,u: pair(u)} pair_weight[n,u] · Σ_k min(d_k(u)², threshold²), with
        time_axis (the published form):  d_k(u) = z[k,v] − z[k,u] − (lse2[k] − lse1[k]),
            lse1[k] = logsumexp of z[k, u] over the frames u with pair(u), lse2[k] over the frames v with prev(v)
            (the log-softmaxes over time of the published code: z[:, 1:] and z[:, :-1] of the compacted row);
            a set without frames gives 0;
        class axis:                      d_k(u) = (z[k,v] − lse_c(v)) − (z[k,u] − lse_c(u))
    BCE       = (1/R) Σ_{r,n,t} boundary_weight[n,t] · ((1 − y_b)·b + (1 + (pw − 1)·y_b) · softplus(−b))
                (y_b = boundary[n,t], pw = pos_weight: BCEWithLogits with pos_weight)

next_frame and previous_frame must be each other's inverse on the pairs (``gs_tmse_pairs`` builds both); the op
reads no index out of range but does not check the values (that would wait for the device). The labels-only weights
fold every mean of the published loss: ce_weight = class_weight[y] / Σ class_weight[y] over the labelled frames (so a
batch without labelled frames gives NaN, as F.nll_loss does), pair_weight = the Gaussian similarity of the pair over
(N · the row's pairs), boundary_weight = mask / (N · the row's valid frames).

Shapes: logits (S, N, K, T); labels (N, T) int64; ce_weight (N, T); next_frame, previous_frame (N, T) int64;
pair_weight (N, T); boundary_logits (R, N, T) in logits' dtype; boundary (N, T); boundary_weight (N, T);
pos_weight (1,). logits float32, float64, float16 or bfloat16; the raw ops take the float inputs but the logits in
the compute dtype (float64 for float64 logits, else float32), which is also the dtype of the result (the public
function converts them); every tensor on one device.

Op schemas (the native ``trgnet::`` in csrc/frame_losses.cpp and the Triton ``trgnet_triton::`` in
``triton_kernels.py`` share them)::

    frame_losses(Tensor logits, Tensor labels, Tensor ce_weight, Tensor next_frame, Tensor previous_frame,
        Tensor pair_weight, Tensor boundary_logits, Tensor boundary, Tensor boundary_weight, Tensor pos_weight,
        float threshold, bool time_axis) -> (Tensor terms, Tensor time_lse)
    frame_losses_backward(Tensor grad_terms, Tensor logits, Tensor labels, Tensor ce_weight, Tensor next_frame,
        Tensor previous_frame, Tensor pair_weight, Tensor boundary_logits, Tensor boundary, Tensor boundary_weight,
        Tensor pos_weight, Tensor time_lse, float threshold, bool time_axis)
        -> (Tensor grad_logits, Tensor grad_boundary_logits)

terms (3,) = [CE, GS-TMSE, BCE] in the compute dtype; time_lse (S, N, 2, K) = [lse2, lse1] per row (shape (0,) when
not time_axis), saved for the backward. The backward (grad_terms (3,) in the compute dtype) recomputes every
per-frame quantity (docs/kernels.md#frame_losses); gradients flow into logits and boundary_logits only.
"""
from __future__ import annotations

import torch

from trgnet_fast import _native
from trgnet_fast.backend import register_op, resolve_backend
from trgnet_fast.ops._checks import check_nonempty
from trgnet_fast.ops.frame_losses.autograd import OP_NAME
from trgnet_fast.ops.frame_losses.reference import frame_losses_reference
from trgnet_fast.ops.frame_losses.validation import (TENSOR_NAMES, check_argument_types, in_compute_dtype,
                                                     validate_inputs)

BACKENDS = ("cuda", "triton")
register_op(OP_NAME, BACKENDS)


def frame_losses(logits, labels, ce_weight, next_frame, previous_frame, pair_weight, boundary_logits, boundary,
                 boundary_weight, pos_weight, *, threshold: float = 4.0, time_axis: bool = True,
                 backend: str | None = None) -> torch.Tensor:
    """[CE, GS-TMSE, BCE] of every stage (formulas and shapes in the module docstring).

    Args:
        logits: (S, N, K, T) stage logits. labels: (N, T) int64 (any value outside [0, K) takes no part in CE).
        ce_weight: (N, T) CE weight of every frame. next_frame, previous_frame: (N, T) int64 GS-TMSE pair indices.
        pair_weight: (N, T) weight of the pair each frame starts. boundary_logits: (R, N, T) boundary stages.
        boundary: (N, T) 0/1 boundary targets. boundary_weight: (N, T) BCE weight of every frame.
        pos_weight: (1,) BCE positive weight. The weights, targets and pos_weight may come in any supported floating
            dtype: they are converted to the compute dtype (the raw ops take them in it). threshold: GS-TMSE's clamp (> 0). time_axis: GS-TMSE's log-softmax
            over time (published) or over the classes.
        backend: "auto" | "torch" | "triton" | "cuda" | None, see ``trgnet_fast.backend``.

    Returns:
        terms: (3,) [CE, GS-TMSE, BCE] in the compute dtype; differentiable w.r.t. logits and boundary_logits.

    Raises:
        ValueError: bad shapes (an empty dimension among them) / dtypes / devices / scalars (before any kernel runs).
        RuntimeError: the requested backend is not usable.
    """
    tensors = (logits, labels, ce_weight, next_frame, previous_frame, pair_weight, boundary_logits, boundary,
               boundary_weight, pos_weight)
    check_argument_types(OP_NAME, tensors, threshold, time_axis)
    check_nonempty(OP_NAME, (("logits", logits, "(S, N, K, T)"), ("boundary_logits", boundary_logits, "(R, N, T)")))
    tensors = in_compute_dtype(OP_NAME, tensors)
    impl = resolve_backend(OP_NAME, backend, logits.device.type)
    scalars = (float(threshold), bool(time_axis))
    if impl == "triton":
        from trgnet_fast.ops.frame_losses.triton_kernels import frame_losses_triton

        return frame_losses_triton(*(t.contiguous() for t in tensors), *scalars)[0]
    validate_inputs(OP_NAME, tensors, *scalars)
    if impl == "torch":
        return frame_losses_reference(*tensors, threshold=scalars[0], time_axis=scalars[1])
    if impl == "cuda":
        return _native.ops().frame_losses(*(t.contiguous() for t in tensors), *scalars)[0]
    raise AssertionError(impl)  # every registered backend is dispatched above


__all__ = ["frame_losses", "frame_losses_reference", "TENSOR_NAMES", "BACKENDS"]
