"""One description per fused op, shared by `trgnet parity`, the tests and the benchmarks.

An ``OpSpec`` says how to draw random inputs of a given size, which inputs take gradients, the
plain-PyTorch reference and the dispatching function (``backend=``), and the sizes that the parity
check uses on each device type.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from trgnet_fast.ops import adaptive_graph_conv as _adaptive_graph_conv
from trgnet_fast.ops import linear_attention as _linear_attention
from trgnet_fast.ops import multiscale_graph_conv as _multiscale_graph_conv


@dataclass(frozen=True)
class OpSpec:
    name: str
    reference: Callable  # reference(**inputs) -> Tensor
    fused: Callable  # fused(**inputs, backend=name) -> Tensor
    make_inputs: Callable  # make_inputs(size: dict, dtype, device, generator) -> dict of kwargs
    grad_inputs: tuple[str, ...]
    parity_sizes: dict[str, list[dict]] = field(default_factory=dict)  # device type -> sizes
    # (inputs, grad_out) -> floor of the denominator of gradient errors, for inputs where a gradient
    # is an ill-conditioned cancellation: a float (every gradient) or {input name: floor} (None: no floor)
    grad_error_floor: Callable | None = None


def _randn(shape, dtype, device, generator):
    # drawn in float32 on the generator's device, so a CPU generator gives every device and dtype
    # the same values
    values = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return values.to(device=device, dtype=dtype)


def _linear_attention_inputs(size, dtype, device, generator):
    """size: N, T, H, D, E, and ``masked`` (mask-correct mode with a random padding tail)."""
    n, t, h, d, e = (size[k] for k in ("N", "T", "H", "D", "E"))
    inputs = {
        "q": _randn((n, t, h, d), dtype, device, generator),
        "k": _randn((n, t, h, d), dtype, device, generator),
        "v": _randn((n, t, h, e), dtype, device, generator),
        "key_mask": None,
    }
    if size.get("masked"):
        lengths = torch.randint(1, t + 1, (n,), generator=generator, device=generator.device)
        inputs["key_mask"] = (torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]).to(device)
    return inputs


def _la_size(n, t, h=4, d=16, e=16, masked=False):
    return {"N": n, "T": t, "H": h, "D": d, "E": e, "masked": masked}


LINEAR_ATTENTION = OpSpec(
    name=_linear_attention.OP_NAME,
    reference=_linear_attention.linear_attention_reference,
    fused=_linear_attention.linear_attention,
    make_inputs=_linear_attention_inputs,
    grad_inputs=("q", "k", "v"),
    grad_error_floor=lambda inputs, grad_out: _linear_attention.gradient_error_floors(
        grad_out, inputs["q"], inputs["k"], inputs["v"], inputs["key_mask"]),
    parity_sizes={
        "cpu": [_la_size(2, 63), _la_size(3, 7, h=1, d=5, e=9, masked=True), _la_size(1, 1),
                _la_size(2, 300, h=2, d=64, e=64, masked=True)],
        "cuda": [_la_size(8, 6000), _la_size(8, 6000, masked=True), _la_size(3, 4097, h=2, d=64, e=64),
                 _la_size(2, 1, masked=True), _la_size(5, 63, h=4, d=5, e=9, masked=True)],
    },
)


def _msgc_inputs(size, dtype, device, generator):
    """size: N, C (C_in), T, V, S (scales), O (C_out). adjacency ~ k-hop stack scale (entries ~1/V)."""
    n, c, t, v, s, o = (size[k] for k in ("N", "C", "T", "V", "S", "O"))
    return {
        "x": _randn((n, c, t, v), dtype, device, generator),
        "adjacency": _randn((s * v, v), dtype, device, generator) / v ** 0.5,
        "weight": _randn((o, s * c), dtype, device, generator) / (s * c) ** 0.5,
        "bias": _randn((o,), dtype, device, generator),
    }


def _msgc_size(n, t, v=25, c=12, o=64, s=13):
    return {"N": n, "C": c, "T": t, "V": v, "S": s, "O": o}


MULTISCALE_GRAPH_CONV = OpSpec(
    name=_multiscale_graph_conv.OP_NAME,
    reference=_multiscale_graph_conv.multiscale_graph_conv_reference,
    fused=_multiscale_graph_conv.multiscale_graph_conv,
    make_inputs=_msgc_inputs,
    grad_inputs=("x", "adjacency", "weight", "bias"),
    parity_sizes={
        "cpu": [_msgc_size(2, 5, v=17, c=3, o=8, s=2), _msgc_size(1, 9, v=19, c=4, o=8),
                _msgc_size(2, 1, v=25, c=3, o=8, s=2)],
        "cuda": [_msgc_size(8, 6000), _msgc_size(3, 63, v=17), _msgc_size(2, 7, v=19),
                 _msgc_size(2, 1), _msgc_size(4, 300, v=19, c=6, o=64)],
    },
)



def _agc_inputs(size, dtype, device, generator):
    """size: N, C, T, V. Magnitudes as in the model: graphs ~ J in [0, 1] plus O(1) refinements."""
    n, c, t, v = (size[k] for k in ("N", "C", "T", "V"))
    return {
        "x": _randn((n, c, t, v), dtype, device, generator),
        "p": _randn((n, t, v), dtype, device, generator),
        "q": _randn((n, t, v), dtype, device, generator),
        "beta": _randn((1,), dtype, device, generator),
        "channel_graph": _randn((n, c, v, v), dtype, device, generator) / v ** 0.5,
        "joint_graph": _randn((v, v), dtype, device, generator).abs() / v ** 0.5,
    }


def _agc_size(n, t, v=25, c=64):
    return {"N": n, "C": c, "T": t, "V": v}


ADAPTIVE_GRAPH_CONV = OpSpec(
    name=_adaptive_graph_conv.OP_NAME,
    reference=_adaptive_graph_conv.adaptive_graph_conv_reference,
    fused=_adaptive_graph_conv.adaptive_graph_conv,
    make_inputs=_agc_inputs,
    grad_inputs=("x", "p", "q", "beta", "channel_graph", "joint_graph"),
    grad_error_floor=lambda inputs, grad_out: _adaptive_graph_conv.gradient_error_floors(grad_out, **inputs),
    parity_sizes={
        "cpu": [_agc_size(2, 7, v=17, c=5), _agc_size(1, 9, v=19, c=3), _agc_size(2, 1, v=25, c=4)],
        "cuda": [_agc_size(8, 6000), _agc_size(3, 63, v=17), _agc_size(2, 7, v=19, c=16),
                 _agc_size(2, 1), _agc_size(4, 300, v=19, c=48)],
    },
)

OPS: dict[str, OpSpec] = {spec.name: spec for spec in (LINEAR_ATTENTION, MULTISCALE_GRAPH_CONV,
                                                          ADAPTIVE_GRAPH_CONV)}
