"""Linear attention and the attention module of TRG-Net's encoder and decoder (docs/model.md#linear-attention,
docs/model.md#attmodule)."""
from __future__ import annotations

import torch
from torch import nn

from trgnet_fast.backend import model_backend
from trgnet_fast.model.autocast import cast_all, fused_dtype
from trgnet_fast.model.dropout_seeds import SeedSlot, layer_dropout_seed
from trgnet_fast.ops.att_module import att_module
from trgnet_fast.ops.att_module.autograd import OP_NAME as ATT_MODULE_OP
from trgnet_fast.ops.att_module.reference import ATTENTION_DROPOUT_STREAM, MODULE_DROPOUT_STREAM, hashed_dropout
from trgnet_fast.ops.att_module.validation import state_dtype
from trgnet_fast.ops.linear_attention import linear_attention

ATTENTION_HEADS = 4
ATTENTION_EPS = 1e-6  # added to every element of the key sum (published)


class LinearAttention(nn.Module):
    """Multi-head non-causal linear attention with a sigmoid feature map.

    Q, K, V and output are Linear(C, C) projections; C is split into 4 heads (channel = head * C/4 + d).
    The key/value sums run over all frames, padding included (published behaviour); only the output
    is masked. The core is ``trgnet_fast.ops.linear_attention.linear_attention`` on ``self.backend``.
    The output dropout is ``self.dropout`` (torch's generator), or, given a ``dropout_seed``, the hashed masks
    of the fused AttModule (``trgnet_fast/ops/att_module/reference.py``).
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
                mask: torch.Tensor, dropout_seed: torch.Tensor | None = None) -> torch.Tensor:
        """queries, keys, values: (N, T, C); mask: (N, 1, T) float 0/1; dropout_seed: (1,) int64 for hashed
        dropout masks, or None (``self.dropout``). Returns (N, T, C)."""
        n, t, _ = queries.shape
        q = self.query_projection(queries).view(n, t, self.n_heads, -1)
        k = self.key_projection(keys).view(n, t, self.n_heads, -1)
        v = self.value_projection(values).view(n, t, self.n_heads, -1)
        attended = linear_attention(q, k, v, key_mask=None, eps=ATTENTION_EPS, backend=self.backend)
        out = self.out_projection(attended.reshape(n, t, -1))
        if dropout_seed is None:
            return self.dropout(out) * mask[:, 0, :, None]
        out = hashed_dropout(out.transpose(1, 2), dropout_seed, ATTENTION_DROPOUT_STREAM, _active_p(self.dropout))
        return (out * mask).transpose(1, 2)  # hashed in (N, C, T), the fused op's layout


def _active_p(dropout: nn.Dropout) -> float:
    return dropout.p if dropout.training else 0.0


class AttModule(nn.Module):
    """Dilated temporal conv + linear attention + residual, one layer of the encoder or decoder.

    o = ReLU(Conv1d_k3,dilation(x)); q = InstanceNorm(o) (statistics over all T, padding included,
    in eval too); a = LinAtt(q, q, q) (encoder) or LinAtt(q, q, values) (decoder);
    out = (x + Dropout(conv_out(alpha * a + o))) * mask.

    ``backend`` (set by ``TRGNet.set_backend``; None: ``$TRGNET_BACKEND`` / auto) picks, through
    ``trgnet_fast.backend.model_backend``, whether the layer runs as the fused op
    ``trgnet_fast.ops.att_module`` ("triton", "cuda") or as the modules below ("torch").

    Dropout masks (docs/model.md#attmodule): the fused op hashes one seed per call into both dropouts' masks; the
    seed comes from the model's one draw per forward (``seed_slot``, docs/model.md#dropout-seeds), or from torch's
    generator for a layer on its own (``trgnet_fast/ops/att_module/reference.py``). The
    torch path uses ``nn.Dropout`` (the published computation, few ops) unless ``dropout_masks`` is "hashed"
    (``TRGNet.set_dropout_masks``): then it draws and hashes the seed the same way, so that runs on every
    backend drop the same elements (the backend parity tests).
    """

    def __init__(self, dilation: int, channels: int, mode: str, alpha: float):
        super().__init__()
        if mode not in ("encoder", "decoder"):
            raise ValueError(f"mode: expected 'encoder' or 'decoder', got {mode!r}")
        self.mode = mode
        self.alpha = alpha
        self.dilation = dilation
        self.backend: str | None = None
        self.dropout_masks = "torch"
        self.seed_slot: SeedSlot | None = None  # set by TRGNet
        self.feed_forward = nn.Sequential(
            nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation),
            nn.ReLU(),
        )
        self.instance_norm = nn.InstanceNorm1d(channels, track_running_stats=False)
        self.att_layer = LinearAttention(channels)
        self.conv_out = nn.Conv1d(channels, channels, 1)
        self.dropout = nn.Dropout(0.5)
        # alpha as the fused op takes it (a 0-dim tensor); not in the state dict, which stays the published one
        self.register_buffer("alpha_tensor", torch.tensor(float(alpha)), persistent=False)

    def _apply(self, fn, recurse=True):
        # alpha_tensor is derived from the float alpha: rebuilt after a dtype or device change, so that a float64
        # module holds alpha to float64 precision rather than its float32 rounding widened
        super()._apply(fn, recurse)
        self.alpha_tensor = torch.tensor(self.alpha, dtype=self.alpha_tensor.dtype, device=self.alpha_tensor.device)
        return self

    def forward(self, x: torch.Tensor, values: torch.Tensor | None, mask: torch.Tensor,
                cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, C, T); values: (N, C, T) in decoder mode (the masked encoder feature), else None;
        mask: (N, 1, T) float 0/1; cu_seqlens: None (published: the conv halos, InstanceNorm and the attention sums
        run over all T frames) or (N + 1,) int32 offsets of the rows' valid frames (mask-correct mode: each video's
        own frames; docs/model.md#mask-correct-mode). Returns (N, C, T)."""
        if self.mode == "decoder" and values is None:
            raise ValueError("values: a decoder-mode AttModule needs the encoder feature, got None")
        attention_p, module_p = _active_p(self.att_layer.dropout), _active_p(self.dropout)
        impl = model_backend(ATT_MODULE_OP, self.backend, x.device.type)
        # the op hashes its dropout masks; it also runs mask-correct mode on "torch" (its reference)
        hashed = impl != "torch" or self.dropout_masks == "hashed" or cu_seqlens is not None
        dropping = hashed and (attention_p > 0 or module_p > 0)
        seed = layer_dropout_seed(self.seed_slot, x.device) if dropping else None
        if impl != "torch" or cu_seqlens is not None:
            return self._fused_forward(x, values, mask, seed, attention_p, module_p, impl, cu_seqlens)
        out = self.feed_forward(x)
        q = self.instance_norm(out).transpose(1, 2)
        attended_values = q if values is None else values.transpose(1, 2)
        attended = self.att_layer(q, q, attended_values, mask, seed)
        out = self.alpha * attended.transpose(1, 2) + out
        out = self.conv_out(out)
        out = self.dropout(out) if seed is None else hashed_dropout(out, seed, MODULE_DROPOUT_STREAM, module_p)
        return (x + out) * mask

    def _fused_forward(self, x, values, mask, seed, attention_p, module_p, backend, cu_seqlens=None):
        conv, la = self.feed_forward[0], self.att_layer
        dtype = fused_dtype(x, backend)
        tensors = cast_all(
            dtype, x, values, mask, conv.weight, conv.bias,
            la.query_projection.weight, la.query_projection.bias, la.key_projection.weight, la.key_projection.bias,
            la.value_projection.weight, la.value_projection.bias, la.out_projection.weight, la.out_projection.bias,
            self.conv_out.weight, self.conv_out.bias)
        return att_module(
            *tensors, self.alpha_tensor.to(state_dtype(dtype)),
            dilation=self.dilation, heads=la.n_heads, norm_eps=self.instance_norm.eps, attention_eps=ATTENTION_EPS,
            attention_dropout=attention_p, dropout=module_p, dropout_seed=seed, cu_seqlens=cu_seqlens,
            backend=backend)
