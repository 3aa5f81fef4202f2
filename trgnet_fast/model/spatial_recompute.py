"""SP's recomputing autograd functions (docs/model.md#spatial-block-sp): on the fused backends, in training, the
two halves of the SP block save only their inputs, their outputs and small tensors, and recompute their
(N, 64, T, V) intermediates in the backward (h = the multi-scale graph conv's output, x3 = conv3(X_m) and
Y = the adaptive graph conv's output).

The BatchNorms run through ``aten::_batch_norm_with_update``, the op ``nn.BatchNorm2d`` reaches in training
mode (so the same kernel: native on CPU, cuDNN where eligible on CUDA): it updates the running statistics and
returns the batch statistics and the kernel's reserve that ``aten::batch_norm_backward`` takes. The fused ops are
recomputed under autograd from detached leaves, and ``torch.autograd.grad`` runs their registered backward, so
no backward schema is spelled out here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trgnet_fast.model.masking import masked_batch_statistics, update_running_statistics
from trgnet_fast.ops.adaptive_graph_conv import adaptive_graph_conv
from trgnet_fast.ops.multiscale_graph_conv import multiscale_graph_conv


def _batch_norm_train(h: torch.Tensor, bn: nn.BatchNorm2d, weight, bias):
    """``bn(h)`` in training mode: (out, batch mean (C,), batch invstd (C,), reserve). h: (N, C, T, V); weight,
    bias: (C,), ``bn``'s parameters (passed in as the autograd function's inputs). Counts the batch and updates
    the running statistics with ``nn.BatchNorm2d.forward``'s momentum rule (None: cumulative average)."""
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            momentum = 1.0 / float(bn.num_batches_tracked)
    return torch.ops.aten._batch_norm_with_update(h, weight, bias, bn.running_mean, bn.running_var, momentum,
                                                  bn.eps)


def _batch_norm_backward(grad, h, weight, mean, invstd, reserve, eps):
    """(grad h, grad weight, grad bias) of ``_batch_norm_train``; grad, h: (N, C, T, V); weight, mean, invstd: (C,);
    reserve: its fourth output."""
    return torch.ops.aten.batch_norm_backward(grad, h, weight, None, None, mean, invstd, True, eps,
                                              [True, True, True], reserve)


def _masked_batch_norm_train(h: torch.Tensor, bn: nn.BatchNorm2d, weight, bias, frame_mask: torch.Tensor):
    """``masking.masked_batch_norm(h, bn, frame_mask)`` with ``bn``'s parameters passed in (the same values and
    running statistics): (out, batch mean (C,), batch invstd (C,), count). h: (N, C, T, V); frame_mask (N, 1, T, 1)."""
    centred, mean, var, count = masked_batch_statistics(h, frame_mask)
    update_running_statistics(bn, mean, var, count)
    invstd = torch.rsqrt(var + bn.eps)
    out = centred * invstd[None, :, None, None] * weight[None, :, None, None] + bias[None, :, None, None]
    return out, mean, invstd, count


def _masked_batch_norm_backward(grad, h, frame_mask, weight, mean, invstd, count):
    """(grad h, grad weight, grad bias) of ``_masked_batch_norm_train``. Every frame's output depends on the
    statistics of the valid ones: with x̂ = (h − mean)·invstd, grad h = weight·invstd·(grad − mask·(Σ grad + x̂·Σ grad·x̂)
    / count), sums per channel over all (n, t, v) — the standard formula where the mask is all ones."""
    x_hat = (h - mean[None, :, None, None]) * invstd[None, :, None, None]
    grad_bias = grad.sum((0, 2, 3))
    grad_weight = (grad * x_hat).sum((0, 2, 3))
    shift = (grad_bias[None, :, None, None] + x_hat * grad_weight[None, :, None, None]) * (frame_mask / count)
    grad_h = (grad - shift) * (weight * invstd)[None, :, None, None]
    return grad_h, grad_weight, grad_bias


def _bn_forward(h, bn, weight, bias, frame_mask):
    """(out, statistics for :func:`_bn_backward`): batch statistics over every frame (frame_mask None, published) or
    over the valid ones (mask-correct mode)."""
    if frame_mask is None:
        out, mean, invstd, reserve = _batch_norm_train(h, bn, weight, bias)
        return out, (mean, invstd, reserve)
    out, mean, invstd, count = _masked_batch_norm_train(h, bn, weight, bias, frame_mask)
    return out, (mean, invstd, count)


def _bn_backward(grad, h, weight, statistics, eps, frame_mask):
    if frame_mask is None:
        return _batch_norm_backward(grad, h, weight, *statistics, eps)
    return _masked_batch_norm_backward(grad, h, frame_mask, weight, *statistics)


def _leaves(ctx, tensors):
    """Detached copies of the function's first inputs, requiring grad where the function's caller needs it."""
    return [t.detach().requires_grad_(need) for t, need in zip(tensors, ctx.needs_input_grad)]


def _grads(out, leaves, grad_out):
    """d(out)/d(leaf) · grad_out for the leaves that require grad, None for the others (autograd runs the
    recomputed graph's backward: the fused ops' registered backward ops)."""
    wanted = [leaf for leaf in leaves if leaf.requires_grad]
    grads = iter(torch.autograd.grad(out, wanted, grad_out) if wanted else ())
    return [next(grads) if leaf.requires_grad else None for leaf in leaves]


class MultiScaleBNReLU(torch.autograd.Function):
    """X_m = ReLU(BN1(multiscale_graph_conv(x, adjacency, weight, bias))), saving x and X_m, not h."""

    @staticmethod
    def forward(ctx, x, adjacency, weight, bias, bn_weight, bn_bias, bn, backend, frame_mask=None):
        """x: (N, C_in, T, V); adjacency: (S*V, V); weight: (C_out, S*C_in, 1, 1); bias: (C_out,); bn_weight,
        bn_bias: (C_out,), the parameters of ``bn`` (the nn.BatchNorm2d whose running statistics are updated);
        backend: "triton" | "cuda"; frame_mask: None, or (N, 1, T, 1) 0/1 (mask-correct mode: BN1's statistics
        over the valid frames). Returns X_m (N, C_out, T, V)."""
        # The native op copies a strided x anyway: one copy serves the forward and the recompute.
        x = x.contiguous()
        h = multiscale_graph_conv(x, adjacency, weight, bias, backend=backend)
        x_m, statistics = _bn_forward(h, bn, bn_weight, bn_bias, frame_mask)
        x_m = torch.relu_(x_m)
        ctx.save_for_backward(x, adjacency, weight, bias, bn_weight, x_m, frame_mask, *statistics)
        ctx.eps, ctx.backend = bn.eps, backend
        return x_m

    @staticmethod
    def backward(ctx, grad_x_m):
        x, adjacency, weight, bias, bn_weight, x_m, frame_mask, *statistics = ctx.saved_tensors
        leaves = _leaves(ctx, (x, adjacency, weight, bias))
        with torch.enable_grad():
            h = multiscale_graph_conv(*leaves, backend=ctx.backend)
        grad_h, grad_bn_weight, grad_bn_bias = _bn_backward(
            torch.ops.aten.threshold_backward(grad_x_m, x_m, 0), h, bn_weight, statistics, ctx.eps, frame_mask)
        return (*_grads(h, leaves, grad_h), grad_bn_weight, grad_bn_bias, None, None, None)


class AdaptiveBNResidualReLU(torch.autograd.Function):
    """Out = ReLU(BN2(adaptive_graph_conv(conv3(X_m), p, q, beta, G, J)) + X_m), saving X_m and Out, not x3 or Y."""

    @staticmethod
    def forward(ctx, x_m, conv_weight, conv_bias, p, q, beta, channel_graph, joint_graph, bn_weight, bn_bias, bn,
                backend, frame_mask=None):
        """x_m: (N, C, T, V); conv_weight: (C, C, 1, 1), conv_bias: (C,) (CTRGC's conv3); p, q: (N, T, V) (the
        channel means of conv1, conv2); beta: (1,); channel_graph: (N, C, V, V); joint_graph: (V, V); all in
        x_m's dtype (``CTRGC.graph_inputs``); bn_weight, bn_bias: (C,), the parameters of ``bn`` (SP's last
        nn.BatchNorm2d, whose running statistics are updated); backend: "triton" | "cuda"; frame_mask: None, or
        (N, 1, T, 1) 0/1 (mask-correct mode: BN2's statistics over the valid frames). Returns Out (N, C, T, V)."""
        y = adaptive_graph_conv(F.conv2d(x_m, conv_weight, conv_bias), p, q, beta, channel_graph, joint_graph,
                                backend=backend)
        s, statistics = _bn_forward(y, bn, bn_weight, bn_bias, frame_mask)
        out = torch.relu_(s.add_(x_m))
        ctx.save_for_backward(x_m, conv_weight, conv_bias, p, q, beta, channel_graph, joint_graph, bn_weight, out,
                              frame_mask, *statistics)
        ctx.eps, ctx.backend = bn.eps, backend
        return out

    @staticmethod
    def backward(ctx, grad_out):
        *inputs, bn_weight, out, frame_mask = ctx.saved_tensors[:11]
        statistics = ctx.saved_tensors[11:]
        leaves = _leaves(ctx, inputs)
        x_m, conv_weight, conv_bias, *graph = leaves
        with torch.enable_grad():
            y = adaptive_graph_conv(F.conv2d(x_m, conv_weight, conv_bias), *graph, backend=ctx.backend)
        grad_s = torch.ops.aten.threshold_backward(grad_out, out, 0)
        grad_y, grad_bn_weight, grad_bn_bias = _bn_backward(grad_s, y, bn_weight, statistics, ctx.eps, frame_mask)
        grads = _grads(y, leaves, grad_y)
        if grads[0] is not None:
            grads[0] = grads[0] + grad_s  # the residual
        return (*grads, grad_bn_weight, grad_bn_bias, None, None, None)
