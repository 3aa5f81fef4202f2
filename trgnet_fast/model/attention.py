"""Linear attention and the attention module of TRG-Net's encoder and decoder (docs/model.md#linear-attention,
docs/model.md#attmodule)."""
from __future__ import annotations

import torch
from torch import nn

from trgnet_fast.ops.linear_attention import linear_attention

ATTENTION_HEADS = 4


class LinearAttention(nn.Module):
    """Multi-head non-causal linear attention with a sigmoid feature map.

    Q, K, V and output are Linear(C, C) projections; C is split into 4 heads (channel = head * C/4 + d).
    The key/value sums run over all frames, padding included (published behaviour); only the output
    is masked. The core is ``trgnet_fast.ops.linear_attention.linear_attention`` on ``self.backend``.
    """

    def __init__(self, channels: int, n_heads: int = ATTENTION_HEADS, dropout: float = 0.05,
                 backend: str | None = None):
        super().__init__()
        if channels % n_heads:
            raise ValueError(f"channels: expected a multiple of {n_heads} heads, got {channels}")
        self.n_heads = n_heads
        self.backend = backend
        self.query_projection = nn.Linear(channels, channels)
        self.key_projection = nn.Linear(channels, channels)
        self.value_projection = nn.Linear(channels, channels)
        self.out_projection = nn.Linear(channels, channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """queries, keys, values: (N, T, C); mask: (N, 1, T) float 0/1. Returns (N, T, C)."""
        n, t, _ = queries.shape
        q = self.query_projection(queries).view(n, t, self.n_heads, -1)
        k = self.key_projection(keys).view(n, t, self.n_heads, -1)
        v = self.value_projection(values).view(n, t, self.n_heads, -1)
        attended = linear_attention(q, k, v, key_mask=None, eps=1e-6, backend=self.backend)
        out = self.dropout(self.out_projection(attended.reshape(n, t, -1)))
        return out * mask[:, 0, :, None]


class AttModule(nn.Module):
    """Dilated temporal conv + linear attention + residual, one layer of the encoder or decoder.

    o = ReLU(Conv1d_k3,dilation(x)); q = InstanceNorm(o) (statistics over all T, padding included,
    in eval too); a = LinAtt(q, q, q) (encoder) or LinAtt(q, q, values) (decoder);
    out = (x + Dropout(conv_out(alpha * a + o))) * mask.
    """

    def __init__(self, dilation: int, channels: int, mode: str, alpha: float):
        super().__init__()
        if mode not in ("encoder", "decoder"):
            raise ValueError(f"mode: expected 'encoder' or 'decoder', got {mode!r}")
        self.mode = mode
        self.alpha = alpha
        self.feed_forward = nn.Sequential(
            nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation),
            nn.ReLU(),
        )
        self.instance_norm = nn.InstanceNorm1d(channels, track_running_stats=False)
        self.att_layer = LinearAttention(channels)
        self.conv_out = nn.Conv1d(channels, channels, 1)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor, values: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
        """x: (N, C, T); values: (N, C, T) in decoder mode (the masked encoder feature), else None;
        mask: (N, 1, T) float 0/1. Returns (N, C, T)."""
        out = self.feed_forward(x)
        q = self.instance_norm(out).transpose(1, 2)
        if self.mode == "encoder":
            attended = self.att_layer(q, q, q, mask)
        elif values is None:
            raise ValueError("values: a decoder-mode AttModule needs the encoder feature, got None")
        else:
            attended = self.att_layer(q, q, values.transpose(1, 2), mask)
        out = self.alpha * attended.transpose(1, 2) + out
        out = self.dropout(self.conv_out(out))
        return (x + out) * mask
