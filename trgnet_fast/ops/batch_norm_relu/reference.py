"""Plain-PyTorch reference of the fused BatchNorm + residual + ReLU (the yardstick of every test, parity row and
benchmark; ``trgnet_fast.model.masking`` takes its statistics from here). Formula and shapes in the package
docstring (``trgnet_fast/ops/batch_norm_relu/__init__.py``)."""
from __future__ import annotations

import torch


def _channel(t: torch.Tensor) -> torch.Tensor:
    """(C,) -> (1, C, 1, 1), to broadcast over (N, C, T, V)."""
    return t[None, :, None, None]


def statistics_count(x: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor | int:
    """The values per channel the batch statistics of x (N, C, T, V) are over: the int max(1, N·T·V) (frame_mask
    None), or max(1, V · Σ frame_mask) over the valid frames (frame_mask (N, 1, T, 1) 0/1; a 0-d tensor in the
    mask's dtype, no host sync)."""
    if frame_mask is None:
        return max(1, x.shape[0] * x.shape[2] * x.shape[3])
    return (frame_mask.sum() * x.shape[3]).clamp(min=1)


def batch_statistics(x: torch.Tensor, frame_mask: torch.Tensor | None):
    """(x − mean, mean (C,), biased variance (C,), count) over the (n, t, v) of x (N, C, T, V) with frame_mask
    (N, 1, T, 1) 0/1 set (every one when None), in x's dtype; count: ``statistics_count``."""
    count = statistics_count(x, frame_mask)
    if frame_mask is None:
        mean = x.sum((0, 2, 3)) / count
        centred = x - _channel(mean)
        return centred, mean, centred.square().sum((0, 2, 3)) / count, count
    mean = (x * frame_mask).sum((0, 2, 3)) / count
    centred = x - _channel(mean)
    return centred, mean, (centred.square() * frame_mask).sum((0, 2, 3)) / count, count


def batch_norm_relu_reference(x, weight, bias, *, residual=None, frame_mask=None, eps: float = 1e-5,
                              statistics: bool = False):
    """ReLU(BatchNorm(x) + residual) by the formula, differentiable by autograd; computed in the state dtype
    (weight's), out cast to x's dtype. Shapes: x (N, C, T, V); weight, bias (C,); residual (N, C, T, V) or None;
    frame_mask (N, 1, T, 1) or None. Returns out, or (out, mean, var) with ``statistics`` (mean, var detached)."""
    state = weight.dtype
    centred, mean, var, _ = batch_statistics(x.to(state), None if frame_mask is None else frame_mask.to(state))
    pre = centred * _channel(torch.rsqrt(var + eps) * weight) + _channel(bias)
    if residual is not None:
        pre = pre + residual.to(state)
    out = torch.relu(pre).to(x.dtype)
    return (out, mean.detach(), var.detach()) if statistics else out


def batch_norm_relu_backward_reference(grad_out, out, x, frame_mask, weight, mean, var, eps: float,
                                       residual_grad: bool):
    """The closed-form backward of the package docstring, in the state dtype: (grad_x, grad_residual (or an empty
    (0,) tensor without ``residual_grad``), grad_weight, grad_bias); arguments as the backward schema."""
    state = weight.dtype
    g = torch.where(out > 0, grad_out, 0).to(state)
    invstd = torch.rsqrt(var + eps)
    x_hat = (x.to(state) - _channel(mean)) * _channel(invstd)
    grad_bias = g.sum((0, 2, 3))
    grad_weight = (g * x_hat).sum((0, 2, 3))
    mask = x.new_ones((), dtype=state) if frame_mask is None else frame_mask.to(state)
    count = statistics_count(x, None if frame_mask is None else mask)
    shift = (_channel(grad_bias) + x_hat * _channel(grad_weight)) * (mask / count)
    grad_x = ((g - shift) * _channel(weight * invstd)).to(x.dtype)
    grad_residual = g.to(x.dtype) if residual_grad else x.new_empty((0,))
    return grad_x, grad_residual, grad_weight, grad_bias


def gradient_error_floors(inputs: dict, grad_out: torch.Tensor) -> dict[str, float]:
    """Denominator floors of the relative errors of weight's and bias's gradients (sums over every (n, t, v) with
    cancellation): a quarter of the root-sum-square of the elementary products each sums (bias: g; weight: g x^),
    the rule of the other ops (``att_module.reference.gradient_error_floors``). Computed in float64 from the
    reference's own values. ``inputs``: the keyword inputs of ``batch_norm_relu_reference``; grad_out (N, C, T, V)."""
    x = inputs["x"].double()
    weight, bias = inputs["weight"].double(), inputs["bias"].double()
    residual = inputs.get("residual")
    frame_mask = inputs.get("frame_mask")
    eps = inputs.get("eps", 1e-5)
    out, mean, var = batch_norm_relu_reference(x, weight, bias, residual=None if residual is None else residual.double(),
                                               frame_mask=None if frame_mask is None else frame_mask.double(),
                                               eps=eps, statistics=True)
    g = torch.where(out > 0, grad_out.double(), 0)
    x_hat = (x - _channel(mean)) * _channel(torch.rsqrt(var + eps))
    return {"bias": 0.25 * float(g.square().sum().sqrt()), "weight": 0.25 * float((g * x_hat).square().sum().sqrt())}
