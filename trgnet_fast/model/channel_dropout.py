"""STI's input stage on the fused backends (docs/model.md#temporal-encoder-sti): the padding mask, the channel
masking Dropout2d and the 1×1 ``conv_in`` as one autograd function that saves SP's output (whose storage SP's
backward keeps anyway), the (N, 1, T) mask and the (N, C, 1, 1) channel mask instead of the (N, C, T, V) input of
``conv_in``, and recomputes that input (one elementwise product) in the backward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def feature_dropout_noise(x: torch.Tensor, p: float) -> torch.Tensor:
    """The (N, C, 1, 1) channel mask that ``F.dropout2d(x, p, training=True)`` multiplies a 4-d x (N, C, T, V) by:
    0 or 1/(1-p). Drawn as ATen's ``feature_dropout`` draws it (``make_feature_noise``, ``bernoulli_(1 - p)``,
    ``div_(1 - p)``), so the same generator state gives the same mask. 0 < p < 1."""
    noise = torch.empty((x.shape[0], x.shape[1], 1, 1), dtype=x.dtype, device=x.device)
    return noise.bernoulli_(1 - p).div_(1 - p)


def _scale(mask: torch.Tensor | None, noise: torch.Tensor) -> torch.Tensor:
    """mask (N, 1, T, 1) 0/1 or None, noise (N, C, 1, 1) → the factor (N, C, T, 1) (or noise) x is multiplied by."""
    # mask is 0/1, so x·(mask·noise) is bitwise (x·mask)·noise, the modules' order
    return noise if mask is None else mask * noise


class ScaledConv1x1(torch.autograd.Function):
    """z = conv2d(x · mask · noise, weight, bias) for a 1×1 conv, saving x, mask, noise and weight, not the
    product."""

    @staticmethod
    def forward(ctx, x, mask, noise, weight, bias):
        """x: (N, C, T, V); mask: (N, 1, T, 1) float 0/1 or None; noise: (N, C, 1, 1) (``feature_dropout_noise``);
        mask and noise without gradient; weight: (C_out, C, 1, 1); bias: (C_out,) or None. Returns z (N, C_out, T, V).
        """
        # mask (the model's, a view) and noise are small: the (N, C, T, 1) product is rebuilt in the backward
        ctx.save_for_backward(x, mask, noise, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(x * _scale(mask, noise), weight, bias)

    @staticmethod
    def backward(ctx, grad_z):
        x, mask, noise, weight = ctx.saved_tensors
        need_x, need_mask, need_noise, need_weight, need_bias = ctx.needs_input_grad
        if need_mask or need_noise:
            raise RuntimeError("ScaledConv1x1: mask and noise must not require grad")
        scale = _scale(mask, noise)
        # the op nn.Conv2d's autograd node runs: the same gradients as the modules
        grad_input, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad_z, x * scale, weight, [weight.shape[0]] if ctx.has_bias else None, [1, 1], [0, 0], [1, 1], False,
            [0, 0], 1, [need_x, need_weight, need_bias and ctx.has_bias])
        grad_x = grad_input * scale if need_x else None
        return grad_x, None, None, grad_weight, grad_bias
