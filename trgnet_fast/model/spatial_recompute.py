"""SP's recomputing autograd functions (docs/model.md#spatial-block-sp): on the fused backends, in training, the
two halves of the SP block save only their inputs, their outputs and small tensors, and recompute their
(N, 64, T, V) intermediates in the backward (h = the multi-scale graph conv's output, x3 = conv3(X_m) and
Y = the adaptive graph conv's output).

Each half ends in the fused BatchNorm + (residual +) ReLU (``trgnet_fast.ops.batch_norm_relu``): batch statistics
over every frame (published) or over the valid ones (mask-correct mode), the running statistics updated here by
nn.BatchNorm2d's rule (``masking.update_running_statistics``); its backward op takes the recomputed h or Y and the
saved output. The fused graph convs are recomputed under autograd from detached leaves, and
``torch.autograd.grad`` runs their registered backward, so no backward schema is spelled out here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trgnet_fast.model.masking import update_running_statistics
from trgnet_fast.ops.adaptive_graph_conv import adaptive_graph_conv
from trgnet_fast.ops.batch_norm_relu import batch_norm_relu, batch_norm_relu_backward
from trgnet_fast.ops.multiscale_graph_conv import multiscale_graph_conv


def batch_norm_relu_train(h, bn: nn.BatchNorm2d, weight, bias, frame_mask, count, backend, residual=None):
    """(ReLU(bn(h) + residual), (mean, var)) in training mode with ``bn``'s parameters passed in, its running
    statistics updated with the batch's; h, residual: (N, C, T, V); frame_mask: None or (N, 1, T, 1); count: the
    values per channel the statistics are over (``batch_norm_relu.reference.statistics_count``)."""
    out, mean, var = batch_norm_relu(h, weight, bias, residual=residual, frame_mask=frame_mask, eps=bn.eps,
                                     statistics=True, backend=backend)
    update_running_statistics(bn, mean, var, count)
    return out, (mean, var)


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
    def forward(ctx, x, adjacency, weight, bias, bn_weight, bn_bias, bn, backend, frame_mask, count):
        """x: (N, C_in, T, V); adjacency: (S*V, V); weight: (C_out, S*C_in, 1, 1); bias: (C_out,); bn_weight,
        bn_bias: (C_out,), the parameters of ``bn`` (the nn.BatchNorm2d whose running statistics are updated);
        backend: "triton" | "cuda"; frame_mask: None, or (N, 1, T, 1) 0/1 (mask-correct mode: BN1's statistics
        over the valid frames); count: the values per channel of those statistics (``batch_norm_relu.reference.statistics_count``).
        Returns X_m (N, C_out, T, V)."""
        # The native op copies a strided x anyway: one copy serves the forward and the recompute.
        x = x.contiguous()
        h = multiscale_graph_conv(x, adjacency, weight, bias, backend=backend)
        x_m, statistics = batch_norm_relu_train(h, bn, bn_weight, bn_bias, frame_mask, count, backend)
        ctx.save_for_backward(x, adjacency, weight, bias, bn_weight, x_m, frame_mask, *statistics)
        ctx.eps, ctx.backend = bn.eps, backend
        return x_m

    @staticmethod
    def backward(ctx, grad_x_m):
        x, adjacency, weight, bias, bn_weight, x_m, frame_mask, *statistics = ctx.saved_tensors
        leaves = _leaves(ctx, (x, adjacency, weight, bias))
        with torch.enable_grad():
            h = multiscale_graph_conv(*leaves, backend=ctx.backend)
        grad_h, _, grad_bn_weight, grad_bn_bias = batch_norm_relu_backward(
            grad_x_m, x_m, h.detach(), frame_mask, bn_weight, *statistics, eps=ctx.eps, residual_grad=False,
            backend=ctx.backend)
        return (*_grads(h, leaves, grad_h), grad_bn_weight, grad_bn_bias, None, None, None, None)


class AdaptiveBNResidualReLU(torch.autograd.Function):
    """Out = ReLU(BN2(adaptive_graph_conv(conv3(X_m), p, q, beta, G, J)) + X_m), saving X_m and Out, not x3 or Y."""

    @staticmethod
    def forward(ctx, x_m, conv_weight, conv_bias, p, q, beta, channel_graph, joint_graph, bn_weight, bn_bias, bn,
                backend, frame_mask, count):
        """x_m: (N, C, T, V); conv_weight: (C, C, 1, 1), conv_bias: (C,) (CTRGC's conv3); p, q: (N, T, V) (the
        channel means of conv1, conv2); beta: (1,); channel_graph: (N, C, V, V); joint_graph: (V, V); all in
        x_m's dtype (``CTRGC.graph_inputs``); bn_weight, bn_bias: (C,), the parameters of ``bn`` (SP's last
        nn.BatchNorm2d, whose running statistics are updated); backend: "triton" | "cuda"; frame_mask: None, or
        (N, 1, T, 1) 0/1 (mask-correct mode: BN2's statistics over the valid frames); count: as for
        ``MultiScaleBNReLU``. Returns Out (N, C, T, V)."""
        y = adaptive_graph_conv(F.conv2d(x_m, conv_weight, conv_bias), p, q, beta, channel_graph, joint_graph,
                                backend=backend)
        out, statistics = batch_norm_relu_train(y, bn, bn_weight, bn_bias, frame_mask, count, backend, residual=x_m)
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
        grad_y, grad_s, grad_bn_weight, grad_bn_bias = batch_norm_relu_backward(
            grad_out, out, y.detach(), frame_mask, bn_weight, *statistics, eps=ctx.eps,
            residual_grad=ctx.needs_input_grad[0], backend=ctx.backend)
        grads = _grads(y, leaves, grad_y)
        if grads[0] is not None:
            grads[0] = grads[0] + grad_s  # the residual
        return (*grads, grad_bn_weight, grad_bn_bias, None, None, None, None)
