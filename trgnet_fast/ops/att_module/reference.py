"""Plain-PyTorch reference of the fused AttModule (the yardstick of every test, parity row and benchmark) and
the dropout hash every backend shares. Formula, shapes and sequence layouts in the package docstring
(``trgnet_fast/ops/att_module/__init__.py``)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trgnet_fast.ops.linear_attention.reference import linear_attention_reference

# Streams of the dropout hash: the attention's output dropout and the module's dropout after conv_out.
ATTENTION_DROPOUT_STREAM = 0
MODULE_DROPOUT_STREAM = 1
_STREAM_CONSTANTS = (0x9E3779B9, 0x7F4A7C15)
_MASK32 = 0xFFFFFFFF
_UNIFORM_BITS = 24


def dropout_threshold(p: float) -> int:
    """Integer threshold of the keep test ``bits >= threshold`` for drop probability p in [0, 1): floor(p * 2^24),
    computed in double precision on the host by every backend so all of them drop the same elements."""
    return int(math.floor(float(p) * (1 << _UNIFORM_BITS)))


def _mul32(h: torch.Tensor, constant: int) -> torch.Tensor:
    """(h * constant) mod 2^32 for int64 tensors holding uint32 values, without int64 overflow."""
    low = h * (constant & 0xFFFF)
    high = ((h * (constant >> 16)) & 0xFFFF) << 16
    return (low + high) & _MASK32


def _fmix32(h: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finaliser on int64 tensors holding uint32 values."""
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def _seed_tensor(seed, device) -> torch.Tensor:
    """The seed as an int64 tensor on ``device`` (a tensor stays where it is: no host read)."""
    if isinstance(seed, torch.Tensor):
        return seed.reshape(-1)[:1].to(torch.int64)
    return torch.tensor([int(seed)], dtype=torch.int64, device=device)


def dropout_stream_key(seed, stream: int, device=None) -> torch.Tensor:
    """The 32-bit key (a (1,) int64 tensor) of one dropout stream: fmix32(fmix32(seed_hi ^ S[stream]) ^ seed_lo)
    of the int64 seed's two's-complement halves. ``seed``: a Python int or a (1,) int64 tensor (read on its
    device, never on the host)."""
    seed = _seed_tensor(seed, device)
    hi, lo = (seed >> 32) & _MASK32, seed & _MASK32
    return _fmix32(_fmix32(hi ^ _STREAM_CONSTANTS[stream]) ^ lo)


def dropout_keep_mask(seed, stream: int, shape: tuple[int, int, int], p: float, device=None) -> torch.Tensor:
    """Keep mask (bool, ``shape`` = (B, C, T)) of one dropout stream: element (b, c, t) with flat index
    i = (b * C + c) * T + t (mod 2^32) is kept iff (fmix32(fmix32((i + key) mod 2^32) ^ key) >> 8) >=
    floor(p * 2^24), key = ``dropout_stream_key(seed, stream)``. Kept elements are scaled by 1 / (1 - p).
    ``seed``: a Python int or a (1,) int64 tensor (then the mask is built on its device)."""
    key = dropout_stream_key(seed, stream, device)
    index = torch.arange(math.prod(shape), dtype=torch.int64, device=key.device).view(shape) & _MASK32
    bits = _fmix32(_fmix32((index + key) & _MASK32) ^ key)
    return (bits >> (32 - _UNIFORM_BITS)) >= dropout_threshold(p)


def hashed_dropout(t: torch.Tensor, seed: torch.Tensor | None, stream: int, p: float) -> torch.Tensor:
    """Dropout of a (B, C, T) tensor with the keep mask of ``dropout_keep_mask`` (identity when p = 0)."""
    if p == 0.0:
        return t
    keep = dropout_keep_mask(seed, stream, tuple(t.shape), p, t.device)
    return t * keep.to(t.dtype) * (1.0 / (1.0 - p))


def sequence_spans(x: torch.Tensor, cu_seqlens: torch.Tensor | None) -> list[tuple[int, int, int]]:
    """(row, first frame, length) of every sequence: the B rows of x when cu_seqlens is None; else row n,
    frames [0, cu[n+1] - cu[n]) when x has N = len(cu_seqlens) - 1 rows (padded), or row 0, frames
    [cu[n], cu[n+1]) when x has one row (packed). Reads cu_seqlens on the host (reference only)."""
    if cu_seqlens is None:
        return [(row, 0, x.shape[2]) for row in range(x.shape[0])]
    cu = [int(c) for c in cu_seqlens.tolist()]
    n = len(cu) - 1
    if x.shape[0] == n:
        return [(i, 0, cu[i + 1] - cu[i]) for i in range(n)]
    return [(0, cu[i], cu[i + 1] - cu[i]) for i in range(n)]


def att_module_reference(x, values, mask, conv_weight, conv_bias, query_weight, query_bias, key_weight, key_bias,
                         value_weight, value_bias, out_weight, out_bias, conv_out_weight, conv_out_bias, alpha, *,
                         dilation: int, heads: int = 4, norm_eps: float = 1e-5, attention_eps: float = 1e-6,
                         attention_dropout: float = 0.0, dropout: float = 0.0, dropout_seed=None,
                         cu_seqlens=None, trace: list | None = None) -> torch.Tensor:
    """Plain-PyTorch AttModule on sequences given by ``cu_seqlens`` (package docstring). Shapes: x (B, C, T);
    values (B, C, T) or None (encoder); mask (B, 1, T) or None; conv_weight (C, C, 3); conv_out_weight (C, C, 1);
    the Linear weights (C, C); biases (C,); alpha a 0-dim tensor. Returns out (B, C, T), zero on frames outside
    every sequence. Computed in the inputs' dtype. ``trace``: a list that receives each sequence's intermediates
    (``_one_sequence``), their gradients retained (for ``gradient_error_floors``)."""
    out = torch.zeros_like(x)
    keep_scale = {stream: hashed_dropout(torch.ones_like(x), dropout_seed, stream, p)
                  for stream, p in ((ATTENTION_DROPOUT_STREAM, attention_dropout), (MODULE_DROPOUT_STREAM, dropout))
                  if p > 0.0}
    for row, start, length in sequence_spans(x, cu_seqlens):
        if length == 0:
            continue
        frames = slice(start, start + length)

        def part(t):
            return None if t is None else t[row:row + 1, :, frames]

        scales = {s: part(k) for s, k in keep_scale.items()}
        steps = _one_sequence(
            part(x), part(values), part(mask), scales, conv_weight, conv_bias, query_weight, query_bias,
            key_weight, key_bias, value_weight, value_bias, out_weight, out_bias, conv_out_weight, conv_out_bias,
            alpha, dilation, heads, norm_eps, attention_eps)
        out[row:row + 1, :, frames] = steps["out"]
        if trace is not None:
            for t in steps.values():
                if t.requires_grad:
                    t.retain_grad()
            trace.append(steps | {"x": part(x), "dilation": dilation, "attention_eps": attention_eps})
    return out


def _one_sequence(x, values, mask, scales, conv_weight, conv_bias, query_weight, query_bias, key_weight, key_bias,
                  value_weight, value_bias, out_weight, out_bias, conv_out_weight, conv_out_bias, alpha, dilation,
                  heads, norm_eps, attention_eps) -> dict:
    """One sequence, x (1, C, L): the module's formula with its frames alone (zero padding at its ends). Returns
    its intermediates by name: pre (conv output before ReLU), q (normalised, (1, L, C)), v_in, Q, K, V
    ((1, L, H, D)), attended ((1, L, C)), projection (out projection before dropout and mask, (1, C, L)), p, u,
    z (conv_out before dropout) and out."""
    _, c, length = x.shape
    pre = F.conv1d(x, conv_weight, conv_bias, padding=dilation, dilation=dilation)
    o = torch.relu(pre)
    var, mean = torch.var_mean(o, dim=2, keepdim=True, correction=0)
    q = ((o - mean) * torch.rsqrt(var + norm_eps)).transpose(1, 2)  # (1, L, C)
    v_in = q if values is None else values.transpose(1, 2)
    head_view = (1, length, heads, c // heads)
    big_q = F.linear(q, query_weight, query_bias).view(head_view)
    big_k = F.linear(q, key_weight, key_bias).view(head_view)
    big_v = F.linear(v_in, value_weight, value_bias).view(head_view)
    attended = linear_attention_reference(big_q, big_k, big_v, None, attention_eps).reshape(1, length, c)
    projection = F.linear(attended, out_weight, out_bias).transpose(1, 2)  # (1, C, L)
    p = projection
    if ATTENTION_DROPOUT_STREAM in scales:
        p = p * scales[ATTENTION_DROPOUT_STREAM]
    if mask is not None:
        p = p * mask
    u = alpha * p + o
    z = F.conv1d(u, conv_out_weight, conv_out_bias)
    y = z * scales[MODULE_DROPOUT_STREAM] if MODULE_DROPOUT_STREAM in scales else z
    out = x + y
    out = out if mask is None else out * mask
    return {"pre": pre, "q": q, "v_in": v_in, "Q": big_q, "K": big_k, "V": big_v, "attended": attended,
            "projection": projection, "p": p, "u": u, "z": z, "out": out}


def products_rss(grad: torch.Tensor, source: torch.Tensor | None = None) -> float:
    """Root-sum-square of the products a parameter gradient adds up over frames: sum_t |grad_t|^2 |source_t|^2 for
    a weight (grad_t (x) source_t), sum_t |grad_t|^2 for a bias; grad and source (1, L, *) frame-major."""
    g2 = grad.detach().flatten(2).square().sum(2)
    if source is None:
        return float(g2.sum().sqrt())
    return float((g2 * source.detach().flatten(2).square().sum(2)).sum().sqrt())


def traced_gradients(reference, inputs: dict, grad_out: torch.Tensor) -> list[dict]:
    """The per-sequence intermediates (``trace=``) of ``reference(**inputs)`` run in float64 on leaf copies of the
    floating inputs (the mask excepted), with the gradients of <out, grad_out> retained on them; [] when no
    sequence has frames."""
    trace: list = []
    with torch.enable_grad():
        leaves = {k: (v.detach().double().requires_grad_(k != "mask") if isinstance(v, torch.Tensor)
                      and v.is_floating_point() else v) for k, v in inputs.items()}
        out = reference(**leaves, trace=trace)
        if trace:
            out.backward(grad_out.detach().double())
    return trace


def quarter_roots(squares: dict[str, float]) -> dict[str, float]:
    """{name: a quarter of the square root} of summed squares: the gradient floors' rule."""
    return {name: 0.25 * math.sqrt(square) for name, square in squares.items()}


def conv_products_rss(pre_grad: torch.Tensor, x: torch.Tensor, dilation: int) -> tuple[float, float]:
    """``products_rss`` of a k=3 dilated conv's bias and weight gradients over one sequence: pre_grad (1, C, L) the
    gradient of the conv's output, x (1, C, L) its input (zero padded at the sequence's ends)."""
    length = x.shape[2]
    padded = F.pad(x.detach(), (dilation, dilation))
    taps = torch.cat([padded[:, :, k * dilation:k * dilation + length] for k in range(3)], dim=1)
    return (products_rss(pre_grad.transpose(1, 2)),
            products_rss(pre_grad.transpose(1, 2), taps.transpose(1, 2)))


def gradient_error_floors(inputs: dict, grad_out: torch.Tensor) -> dict[str, float]:
    """Denominator floors of the relative errors of the weights', biases' and alpha's gradients, by input name: a
    quarter of the root-sum-square of the elementary products each one sums over frames (a bias: the cotangents
    g_t; a weight: g_t (x) input_t; alpha: g_u[t] . p[t]), the rule of the attention core's floors. Rounding scales
    with these products, not with their sum, which can cancel (a sum of products of both signs; few frames); on
    generic inputs a sum of T random-sign products is about their root-sum-square, so a quarter leaves the plain
    relative error in charge. The projections' floors add, in quadrature, the attention core's own floors
    (``gradient_error_floors`` of trgnet_fast/ops/linear_attention/reference.py) times the rms frame norm of the
    projected input: with one key, or one dim per head, dQ and dK are O(eps) or exactly 0, rounding noise of much
    larger terms. Computed from the reference's own intermediates in float64. ``inputs``: the keyword inputs of
    ``att_module_reference``; grad_out (B, C, T)."""
    from trgnet_fast.ops.linear_attention.reference import gradient_error_floors as attention_floors

    squares: dict[str, float] = {}

    def add(name: str, value: float) -> None:
        squares[name] = squares.get(name, 0.0) + value ** 2

    def frames_last(t):  # (1, C, L) -> (1, L, C)
        return t.transpose(1, 2)

    for steps in traced_gradients(att_module_reference, inputs, grad_out):
        core = attention_floors(steps["attended"].grad.view_as(steps["V"]), steps["Q"], steps["K"], steps["V"],
                                eps=steps["attention_eps"])
        for proj, name in (("query", "Q"), ("key", "K"), ("value", "V")):
            grad, source = steps[name].grad, steps["v_in"] if name == "V" else steps["q"]
            rms = float(source.detach().square().sum(2).mean().sqrt())
            add(f"{proj}_bias", products_rss(grad))
            add(f"{proj}_bias", 4 * core[name.lower()])  # the core's floor is already a quarter
            add(f"{proj}_weight", products_rss(grad, source))
            add(f"{proj}_weight", 4 * core[name.lower()] * rms)
        add("out_bias", products_rss(frames_last(steps["projection"].grad)))
        add("out_weight", products_rss(frames_last(steps["projection"].grad), steps["attended"]))
        add("conv_out_bias", products_rss(frames_last(steps["z"].grad)))
        add("conv_out_weight", products_rss(frames_last(steps["z"].grad), frames_last(steps["u"])))
        add("alpha", float((steps["u"].grad * steps["p"].detach()).square().sum().sqrt()))
        bias_rss, weight_rss = conv_products_rss(steps["pre"].grad, steps["x"], steps["dilation"])
        add("conv_bias", bias_rss)
        add("conv_weight", weight_rss)
    return quarter_roots(squares)
