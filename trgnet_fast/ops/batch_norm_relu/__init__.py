"""SP's tail as one fused op: BatchNorm with batch statistics (over the valid frames in mask-correct mode), the
optional residual and the ReLU (docs/model.md#spatial-block-sp, docs/kernels.md#batch_norm_relu).

With m[n, t] = frame_mask[n, 0, t, 0] (1 for every frame when frame_mask is None) and, per channel c, sums over
every (n, t, v):

    count     = max(1, V * sum_{n,t} m[n, t])
    mean[c]   = sum m x[n, c, t, v] / count
    var[c]    = sum m (x - mean[c])^2 / count                  (biased, as BatchNorm normalises)
    invstd[c] = 1 / sqrt(var[c] + eps)
    out       = ReLU((x - mean[c]) invstd[c] weight[c] + bias[c] + residual)        (residual 0 when None)

Every frame is normalised, the padded ones too (with the valid frames' statistics; the model masks them later),
so every frame's gradient flows. frame_mask None is ``nn.BatchNorm2d`` in training mode (published mode);
a 0/1 frame_mask is ``trgnet_fast.model.masking.masked_batch_norm`` (mask-correct mode).

Backward, with g = grad_out [out > 0] and x^ = (x - mean) invstd, sums per channel over every (n, t, v) (the padded
frames too: their outputs depend on the statistics):

    grad_bias[c]   = sum g
    grad_weight[c] = sum g x^
    grad_x         = weight invstd (g - m (grad_bias + x^ grad_weight) / count)
    grad_residual  = g

Shapes: x (N, C, T, V); residual (N, C, T, V) like x, or None; frame_mask (N, 1, T, 1) 0/1 in x's dtype, or None;
weight, bias (C,) in the state dtype (float32 for 16-bit x, float64 for float64 x; the BatchNorm's parameters);
mean, var (C,) in the state dtype (not differentiable: the running statistics are the caller's, from them); eps > 0.
x of dtype float32, float64, float16 or bfloat16; sums in the state dtype.

Op schemas (the native ``trgnet::`` in csrc/batch_norm_relu.cpp and the Triton ``trgnet_triton::`` in
``triton_kernels.py`` share them)::

    batch_norm_relu(Tensor x, Tensor? residual, Tensor? frame_mask, Tensor weight, Tensor bias, float eps)
        -> (Tensor out, Tensor mean, Tensor var)
    batch_norm_relu_backward(Tensor grad_out, Tensor out, Tensor x, Tensor? frame_mask, Tensor weight,
        Tensor mean, Tensor var, float eps, bool residual_grad)
        -> (Tensor grad_x, Tensor grad_residual, Tensor grad_weight, Tensor grad_bias)

grad_residual is (N, C, T, V) when residual_grad, else an empty (0,) tensor in x's dtype (nothing written);
grad_weight, grad_bias in the state dtype. The raw ops take contiguous tensors; x with no element gives mean 0,
var 0 (count 1). The backward needs x and out, not the normalised values: the SP block recomputes x
(``trgnet_fast/model/spatial_recompute.py``) and saves only out.

Kernels (both fused backends, deterministic: partial sums per (channel, chunk) slot added in slot order, no
atomics): the forward's statistics pass and its apply pass; the backward's reduction pass and its apply pass — two
launches each way (docs/kernels.md#batch_norm_relu).
"""
from __future__ import annotations

from trgnet_fast import _native
from trgnet_fast.backend import register_op, resolve_backend
from trgnet_fast.ops._checks import check_nonempty
from trgnet_fast.ops.batch_norm_relu.autograd import OP_NAME
from trgnet_fast.ops.batch_norm_relu.reference import (batch_norm_relu_backward_reference,
                                                       batch_norm_relu_reference)
from trgnet_fast.ops.batch_norm_relu.validation import (check_argument_types, converted_parameters,
                                                        validate_backward_inputs, validate_inputs)

BACKENDS = ("cuda", "triton")
register_op(OP_NAME, BACKENDS)


def _contiguous(t):
    return t.contiguous() if t is not None else None


def batch_norm_relu(x, weight, bias, *, residual=None, frame_mask=None, eps: float = 1e-5, statistics: bool = False,
                    backend: str | None = None):
    """ReLU(BatchNorm(x) + residual) with batch statistics over the valid frames (formula in the module docstring).

    Args:
        x: (N, C, T, V), any strides.
        weight, bias: (C,), the BatchNorm's affine parameters (any supported floating dtype: converted to the state
            dtype, float32 for 16-bit x, float64 for float64 x).
        residual: (N, C, T, V) in x's dtype and device, or None.
        frame_mask: (N, 1, T, 1) 0/1 in x's dtype, or None (statistics over every frame).
        eps: > 0, added to the variance.
        statistics: also return the batch statistics.
        backend: "auto" | "torch" | "triton" | "cuda" | None, see ``trgnet_fast.backend``.

    Returns:
        out (N, C, T, V) in x's dtype, differentiable w.r.t. x, residual, weight and bias; with ``statistics``
        (out, mean (C,), var (C,)), mean and biased var in the state dtype, not differentiable.

    Raises:
        ValueError: bad shapes (an empty dimension among them) / dtypes / devices / eps (checked before any kernel
            runs).
        RuntimeError: the requested backend is not usable.
    """
    check_argument_types(OP_NAME, x, residual, frame_mask, weight, bias, eps)
    check_nonempty(OP_NAME, (("x", x, "(N, C, T, V)"),))
    weight, bias = converted_parameters(OP_NAME, x, weight, bias)
    impl = resolve_backend(OP_NAME, backend, x.device.type)
    if impl == "triton":
        from trgnet_fast.ops.batch_norm_relu.triton_kernels import batch_norm_relu_triton

        result = batch_norm_relu_triton(x.contiguous(), _contiguous(residual), _contiguous(frame_mask),
                                        weight.contiguous(), bias.contiguous(), float(eps))
    else:
        validate_inputs(OP_NAME, x, residual, frame_mask, weight, bias, eps)
        if impl == "torch":
            result = batch_norm_relu_reference(x, weight, bias, residual=residual, frame_mask=frame_mask, eps=eps,
                                               statistics=True)
        elif impl == "cuda":
            result = _native.ops().batch_norm_relu(x.contiguous(), _contiguous(residual), _contiguous(frame_mask),
                                                   weight.contiguous(), bias.contiguous(), float(eps))
        else:
            raise AssertionError(impl)  # every registered backend is dispatched above
    return tuple(result) if statistics else result[0]


def batch_norm_relu_backward(grad_out, out, x, frame_mask, weight, mean, var, *, eps: float, residual_grad: bool,
                             backend: str | None = None):
    """The op's backward on its own (formula in the module docstring), for callers that run their own autograd
    (``trgnet_fast/model/spatial_recompute.py``: x recomputed in the backward).

    Args:
        grad_out, out, x: (N, C, T, V) in x's dtype (out: the forward's output).
        frame_mask: (N, 1, T, 1) 0/1 in x's dtype, or None, as in the forward.
        weight, mean, var: (C,) in the state dtype (mean, var: the forward's statistics). eps: the forward's.
        residual_grad: also return the residual's gradient.
        backend: as for ``batch_norm_relu``.

    Returns:
        (grad_x (N, C, T, V), grad_residual (N, C, T, V) or None, grad_weight (C,), grad_bias (C,)).
    """
    validate_backward_inputs(OP_NAME, grad_out, out, x, frame_mask, weight, mean, var, eps, residual_grad)
    impl = resolve_backend(OP_NAME, backend, x.device.type)
    args = (grad_out.contiguous(), out.contiguous(), x.contiguous(), _contiguous(frame_mask), weight.contiguous(),
            mean.contiguous(), var.contiguous(), float(eps), residual_grad)
    if impl == "triton":
        from trgnet_fast.ops.batch_norm_relu.triton_kernels import batch_norm_relu_backward_triton

        grads = batch_norm_relu_backward_triton(*args)
    elif impl == "torch":
        grads = batch_norm_relu_backward_reference(*args)
    elif impl == "cuda":
        grads = _native.ops().batch_norm_relu_backward(*args)
    else:
        raise AssertionError(impl)
    grad_x, grad_residual, grad_weight, grad_bias = grads
    return grad_x, grad_residual if residual_grad else None, grad_weight, grad_bias
