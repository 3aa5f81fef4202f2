"""Spatial block "SP": 13-scale graph convolution followed by CTRGC with the text-derived joint graph
(docs/model.md#spatial-block-sp)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trgnet_fast.backend import model_backend
from trgnet_fast.model.autocast import check_backend_dtype
from trgnet_fast.model.graph import NUM_SCALES, binary_adjacency, multiscale_adjacency
from trgnet_fast.model.masking import masked_batch_norm, masked_temporal_mean
from trgnet_fast.model.packing import PackedSequences, sequence_means
from trgnet_fast.model.spatial_recompute import AdaptiveBNResidualReLU, MultiScaleBNReLU, batch_norm_relu_train
from trgnet_fast.ops.adaptive_graph_conv import OP_NAME as ADAPTIVE_OP, adaptive_graph_conv
from trgnet_fast.ops.batch_norm_relu.reference import statistics_count
from trgnet_fast.ops.multiscale_graph_conv import OP_NAME as MULTISCALE_OP, multiscale_graph_conv


class ConvBNReLU(nn.Module):
    """1×1 Conv2d → BatchNorm2d → ReLU, held in ``layers`` (published parameter names ``layers.0/1``).

    forward: x (N, C_in, T, V) → (N, C_out, T, V).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.layers = nn.ModuleList([
            nn.Conv2d(in_channels, out_channels, kernel_size=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class CTRGC(nn.Module):
    """Channel-wise topology refinement graph convolution whose static graph is the text-derived
    joint graph J (TJG).

    With a = conv1(x), b = conv2(x) (8 channels each) and x3 = conv3(x):
      frame graph    G_f[n,t,u,v] = beta * tanh(mean_r a[n,r,t,u] - mean_r b[n,r,t,v]) + J[u,v]
      channel graph  G_c[n,c,u,v] = alpha * conv4(tanh(mean_t a[n,:,t,u] - mean_t b[n,:,t,v]))[c] + J[u,v]
      y[n,c,t,u]     = sum_v (G_f[n,t,u,v] + G_c[n,c,u,v]) * x3[n,c,t,v]
    The temporal means run over all T frames, padding included (published behaviour).

    ``backend`` other than "torch" runs the fused path: y by ``trgnet_fast.ops.adaptive_graph_conv``
    (G_f built on the fly, never stored), and since conv1/conv2 are linear, the two means are taken
    before the convolutions (mean_r conv1(x) = conv with the mean filter; mean_t conv1(x) = conv1(mean_t x)),
    so their (N, 8, T, V) outputs are never formed. Same values up to rounding.
    """

    RELATION_CHANNELS = 8

    def __init__(self, channels: int):
        super().__init__()
        rel = self.RELATION_CHANNELS
        self.conv1 = nn.Conv2d(channels, rel, kernel_size=1)
        self.conv2 = nn.Conv2d(channels, rel, kernel_size=1)
        self.conv3 = nn.Conv2d(channels, channels, kernel_size=1)
        self.conv4 = nn.Conv2d(rel, channels, kernel_size=1)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out")
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor, joint_graph: torch.Tensor, alpha: torch.Tensor,
                beta: torch.Tensor, backend: str = "torch", frame_mask: torch.Tensor | None = None,
                packed: PackedSequences | None = None) -> torch.Tensor:
        """x: (N, C, T, V); joint_graph: (V, V); alpha, beta: (1,) scalars; backend: a concrete backend
        of ``adaptive_graph_conv`` ("torch": the published computation); frame_mask: None (published: the temporal
        means over all T frames) or (N, 1, T, 1) 0/1 (mask-correct mode: over each video's frames); packed: None or
        the sequences of a packed x (N = 1): the temporal means and the channel graph per sequence.
        Returns (N, C, T, V)."""
        if backend != "torch":
            return self._fused_forward(x, joint_graph, alpha, beta, backend, frame_mask, packed)
        a, b, x3 = self.conv1(x), self.conv2(x), self.conv3(x)

        frame_a, frame_b = a.mean(dim=1), b.mean(dim=1)  # (N, T, V)
        frame_graph = beta * torch.tanh(frame_a[..., :, None] - frame_b[..., None, :]) + joint_graph
        y_frame = torch.einsum("ntuv,nctv->nctu", frame_graph, x3)

        # squeeze, not [:, :, 0]: its backward is a view (a select's is a zero-filled copy)
        channel_a, channel_b = (_temporal_mean(t, frame_mask, packed).squeeze(2) for t in (a, b))  # (N or S, 8, V)
        relation = torch.tanh(channel_a[..., :, None] - channel_b[..., None, :])  # (N or S, 8, V, V)
        channel_graph = alpha * self.conv4(relation) + joint_graph  # (N or S, C, V, V)
        y_channel = _per_sequence(lambda graph, x3_s: torch.einsum("ncuv,nctv->nctu", graph, x3_s), packed,
                                  channel_graph, x3)
        return y_frame + y_channel

    def _fused_forward(self, x, joint_graph, alpha, beta, backend, frame_mask=None, packed=None):
        x3 = self.conv3(x)
        check_backend_dtype(backend, x3.device, x3.dtype)
        # autocast may leave the small tensors in another dtype than x3
        p, q, beta, channel_graph, joint_graph = self.graph_inputs(x, joint_graph, alpha, beta, x3.dtype, frame_mask,
                                                                   packed)
        # packed: one call per sequence, each with its own channel graph (the op takes one graph per row)
        return _per_sequence(lambda graph, x3_s, p_s, q_s: adaptive_graph_conv(
            x3_s, p_s, q_s, beta, graph, joint_graph, backend=backend), packed, channel_graph, x3, p, q)

    def graph_inputs(self, x, joint_graph, alpha, beta, dtype, frame_mask=None, packed=None):
        """The fused path's small inputs of ``adaptive_graph_conv`` besides x3, cast to ``dtype``: p, q (N, T, V),
        beta (1,), channel graph (N, C, V, V) (packed: (S, C, V, V), one per sequence), joint_graph (V, V).
        x: (N, C, T, V); joint_graph: (V, V); frame_mask, packed: as in ``forward``."""
        frame_a = F.conv2d(x, self.conv1.weight.mean(0, keepdim=True), self.conv1.bias.mean(0, keepdim=True))
        frame_b = F.conv2d(x, self.conv2.weight.mean(0, keepdim=True), self.conv2.bias.mean(0, keepdim=True))
        x_bar = _temporal_mean(x, frame_mask, packed)  # (N or S, C, 1, V)
        # squeeze, not [:, :, 0] / [:, 0]: a select's backward is a zero-filled copy, a squeeze's a view
        channel_a, channel_b = self.conv1(x_bar).squeeze(2), self.conv2(x_bar).squeeze(2)  # (N, 8, V)
        relation = torch.tanh(channel_a[..., :, None] - channel_b[..., None, :])  # (N, 8, V, V)
        channel_graph = alpha * self.conv4(relation) + joint_graph  # (N, C, V, V)
        return (frame_a.squeeze(1).to(dtype), frame_b.squeeze(1).to(dtype), beta.to(dtype), channel_graph.to(dtype),
                joint_graph.to(dtype))


class MultiScaleGraphConv(nn.Module):
    """The "SP" block: 13-scale k-hop aggregation, a 1×1 MLP, then CTRGC with a residual.

    Out = ReLU(BN(CTRGC(X_m, J)) + X_m), X_m = MLP(scale-major stack of (A_powers + A_res) applied over
    joints). ``A_powers`` (13V, V) and ``A_binary`` (V, V) are plain attributes, not state: they are
    rebuilt from the skeleton at construction and follow the input's device in ``forward``.
    ``A_binary`` is kept for inspection only; the published CTRGC ignores the physical skeleton.

    ``backend`` (set by ``TRGNet.set_backend``; None: ``$TRGNET_BACKEND`` / auto) picks, per fused op
    (``trgnet_fast.backend.model_backend``), how the aggregation + stacking + 1x1 conv runs
    (``trgnet_fast.ops.multiscale_graph_conv``, then BN + ReLU as before) and how CTRGC aggregates
    (``trgnet_fast.ops.adaptive_graph_conv``); a backend that resolves to torch, or does not implement
    an op, runs the published computation of that part unchanged. In training the fused parts save no
    (N, C_out, T, V) intermediate but X_m and the output: they recompute the others in the backward
    (``trgnet_fast/model/spatial_recompute.py``; the same values).
    """

    # False: the fused path saves its intermediates as plain autograd does (the tests' yardstick).
    _recompute = True

    def __init__(self, in_channels: int, out_channels: int, dataset: str, num_scales: int = NUM_SCALES):
        super().__init__()
        self.num_scales = num_scales
        self.A_binary = binary_adjacency(dataset)
        self.A_powers = multiscale_adjacency(self.A_binary, num_scales)
        # The learned residual makes the aggregation matrix effectively dense.
        self.A_res = nn.Parameter(torch.empty(self.A_powers.shape).uniform_(-1e-6, 1e-6))
        self.mlp = ConvBNReLU(in_channels * num_scales, out_channels)
        self.CTRGCN = CTRGC(out_channels)
        self.alpha = nn.Parameter(torch.zeros(1))
        self.beta = nn.Parameter(torch.zeros(1))
        self.bn = nn.BatchNorm2d(out_channels)
        self.backend: str | None = None

    def forward(self, x: torch.Tensor, joint_graph: torch.Tensor, frame_mask: torch.Tensor | None = None,
                packed: PackedSequences | None = None) -> torch.Tensor:
        """x: (N, C_in, V, T); joint_graph: (V, V); frame_mask: None (published: BatchNorm statistics and CTRGC's
        temporal means over all frames, padding included) or (N, 1, T, 1) 0/1 (mask-correct mode: over the valid
        frames; docs/model.md#mask-correct-mode); packed: None or the sequences of a packed x (N = 1, no padded
        frame: the BatchNorm statistics over all frames, CTRGC's means per sequence; docs/model.md#packed-batches).
        Returns (N, C_out, T, V), not masked."""
        x = x.transpose(2, 3)
        n, c, t, v = x.shape
        if self.A_powers.device != x.device:
            self.A_powers = self.A_powers.to(x.device)
            self.A_binary = self.A_binary.to(x.device)
        adjacency = self.A_powers.to(x.dtype) + self.A_res.to(x.dtype)

        adaptive_impl = model_backend(ADAPTIVE_OP, self.backend, x.device.type)
        impl = model_backend(MULTISCALE_OP, self.backend, x.device.type)
        recompute = self._recompute_activations(x)
        # the values per channel of both BatchNorms' batch statistics (the fused BatchNorm + ReLU of a BatchNorm in
        # training mode; it runs on the graph convs' backend)
        batch_statistics = self.mlp.layers[1].training or self.bn.training
        count = statistics_count(x, frame_mask) if impl != "torch" and batch_statistics else None
        if impl != "torch":
            check_backend_dtype(impl, x.device, x.dtype)
            conv, bn, relu = self.mlp.layers
            weight, bias = conv.weight.to(x.dtype), conv.bias.to(x.dtype)
            if recompute:
                x_m = MultiScaleBNReLU.apply(x, adjacency, weight, bias, bn.weight, bn.bias, bn, impl, frame_mask,
                                             count)
            else:
                x_m = _batch_norm_relu(bn, multiscale_graph_conv(x, adjacency, weight, bias, backend=impl),
                                       frame_mask, count, impl)
        else:
            support = torch.einsum("su,nctu->ncts", adjacency, x)  # s = k * V + v
            # Channel index of the stacked scales is k * C_in + c (scale-major).
            support = support.view(n, c, t, self.num_scales, v).permute(0, 3, 1, 2, 4)
            support = support.reshape(n, self.num_scales * c, t, v)
            if frame_mask is None:
                x_m = self.mlp(support)
            else:
                conv, bn, relu = self.mlp.layers
                x_m = relu(_batch_norm(bn, conv(support), frame_mask))

        # the recomputing CTRGC takes one channel graph per row: not for a packed batch's per-sequence graphs
        if recompute and adaptive_impl != "torch" and packed is None:
            conv3 = self.CTRGCN.conv3
            graph = self.CTRGCN.graph_inputs(x_m, joint_graph, self.alpha, self.beta, x_m.dtype, frame_mask)
            return AdaptiveBNResidualReLU.apply(x_m, conv3.weight, conv3.bias, *graph, self.bn.weight,
                                                self.bn.bias, self.bn, adaptive_impl, frame_mask, count)
        y = self.CTRGCN(x_m, joint_graph, self.alpha, self.beta, backend=adaptive_impl, frame_mask=frame_mask,
                        packed=packed)
        if adaptive_impl != "torch":
            return _batch_norm_relu(self.bn, y, frame_mask, count, adaptive_impl, residual=x_m)
        return torch.relu(_batch_norm(self.bn, y, frame_mask) + x_m)

    def _recompute_activations(self, x: torch.Tensor) -> bool:
        """Whether the fused parts run the recomputing autograd functions (trgnet_fast/model/spatial_recompute.py):
        only where they give the modules' values and there is a backward to feed (both BatchNorms in training mode —
        the trainer's ``model.freeze_bn`` puts them in eval mode inside a training model —, grad enabled), not under
        autocast (its casts are the modules') nor while torch.compile traces (Dynamo would have to trace the nested
        ``torch.autograd.grad`` of their backward)."""
        batch_statistics = self.mlp.layers[1].training and self.bn.training
        return (self._recompute and batch_statistics and torch.is_grad_enabled()
                and not torch.is_autocast_enabled(x.device.type) and not torch.compiler.is_compiling())


def _temporal_mean(x: torch.Tensor, frame_mask: torch.Tensor | None, packed: PackedSequences | None) -> torch.Tensor:
    """x (N, C, T, V) → (N, C, 1, V): the mean over all frames (published), each video's valid frames (frame_mask
    (N, 1, T, 1)) or, packed (N = 1), each sequence's frames ((S, C, 1, V))."""
    if packed is not None:
        return sequence_means(x, packed)
    return x.mean(dim=2, keepdim=True) if frame_mask is None else masked_temporal_mean(x, frame_mask)


def _per_sequence(fn, packed: PackedSequences | None, graph: torch.Tensor, *tensors: torch.Tensor) -> torch.Tensor:
    """``fn(graph, *tensors)`` with one channel graph per row (graph (N, C, V, V)), or, packed, ``fn`` on each
    sequence's frames with its graph (graph (S, C, V, V); the tensors split along dim 2 of (1, C, T, V) / dim 1 of
    (1, T, V)), concatenated along time."""
    if packed is None:
        return fn(graph, *tensors)
    pieces = [t.split(packed.lengths, dim=1 if t.dim() == 3 else 2) for t in tensors]
    return torch.cat([fn(graph[s:s + 1], *parts) for s, parts in enumerate(zip(*pieces))], dim=2)


def _batch_norm_relu(bn: nn.BatchNorm2d, x: torch.Tensor, frame_mask: torch.Tensor | None, count, backend: str,
                     residual: torch.Tensor | None = None) -> torch.Tensor:
    """ReLU(bn(x) + residual) on a fused backend: in training mode the fused op with batch statistics (over the
    valid frames in mask-correct mode; the running statistics updated); in eval mode, and under autocast (its casts
    are the modules'), the module. x, residual: (N, C, T, V); count: ``batch_norm_relu.reference.statistics_count``."""
    if bn.training and not torch.is_autocast_enabled(x.device.type):
        return batch_norm_relu_train(x, bn, bn.weight, bn.bias, frame_mask, count, backend, residual)[0]
    normalised = _batch_norm(bn, x, frame_mask)
    return torch.relu(normalised if residual is None else normalised + residual)


def _batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
    """``bn(x)``; in mask-correct mode (frame_mask (N, 1, T, 1)) with batch statistics, over the valid frames."""
    return bn(x) if frame_mask is None or not bn.training else masked_batch_norm(x, bn, frame_mask)
