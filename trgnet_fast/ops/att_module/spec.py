"""Registry entry of the fused AttModule: inputs of a size, parity sizes, the benchmark variant with its FLOP and
byte models, the Triton kernels it launches and the emulation cases (``trgnet_fast/ops/spec.py``)."""
from __future__ import annotations

import math

import torch

from trgnet_fast.ops.att_module import BACKENDS, att_module
from trgnet_fast.ops.att_module.reference import att_module_reference, gradient_error_floors
from trgnet_fast.ops.att_module.validation import WEIGHT_NAMES, state_dtype, weight_shapes
from trgnet_fast.ops.spec import BenchVariant, OpSpec, randn

LAYOUTS = ("published", "rows", "packed")  # cu_seqlens None; padded rows with lengths <= T; one packed row


def size(n, t, c=64, heads=4, dilation=1, mode="encoder", layout="published", masked=False, dropout=False,
         min_length=1) -> dict:
    """N sequences of up to T frames (packed: N sequences in one row of T frames), C channels; the "rows" and
    "packed" layouts draw lengths of at least ``min_length`` frames."""
    return {"N": n, "T": t, "C": c, "H": heads, "dilation": dilation, "mode": mode, "layout": layout,
            "masked": masked, "dropout": dropout, "min_length": min_length}


def _row_lengths(n, t, shortest, generator):
    """Random sequence lengths in [shortest, t], the first one t."""
    lengths = torch.randint(shortest, t + 1, (n,), generator=generator, device=generator.device)
    lengths[0] = t
    return lengths


def _packed_lengths(n, t, shortest, generator):
    """n random lengths of at least ``shortest`` frames that add up to t: cut points drawn over the t - n shortest
    frames left over."""
    spare = t - n * shortest
    cuts = torch.randint(0, spare + 1, (n - 1,), generator=generator, device=generator.device).sort().values
    bounds = torch.cat([cuts.new_zeros(1), cuts, cuts.new_full((1,), spare)])
    return torch.diff(bounds) + shortest


def make_inputs(s, dtype, device, generator):
    """Keyword inputs of ``att_module`` for size ``s``: weights scaled like PyTorch's default init
    (1 / sqrt(fan_in)), a random 0/1 frame mask when ``masked``, a dropout seed with the published
    probabilities (0.05, 0.5) when ``dropout``, cu_seqlens for the "rows" and "packed" layouts."""
    n, t, c = s["N"], s["T"], s["C"]
    rows = 1 if s["layout"] == "packed" else n
    fan_in = {"conv_weight": 3 * c, "conv_bias": 3 * c}
    weights = {name: randn(shape, dtype, device, generator) / math.sqrt(fan_in.get(name, c))
               for name, shape in weight_shapes(c).items()}
    inputs = {"x": randn((rows, c, t), dtype, device, generator),
              "values": randn((rows, c, t), dtype, device, generator) if s["mode"] == "decoder" else None,
              "mask": None, **weights,
              "alpha": (0.5 + torch.rand((), generator=generator, device=generator.device)).to(device,
                                                                                               state_dtype(dtype)),
              "dilation": s["dilation"], "heads": s["H"], "norm_eps": 1e-5, "attention_eps": 1e-6,
              "attention_dropout": 0.0, "dropout": 0.0, "cu_seqlens": None, "dropout_seed": None}
    if s["dropout"]:
        inputs.update(attention_dropout=0.05, dropout=0.5)
    return inputs | sequence_inputs(s, dtype, device, generator)


def sequence_inputs(s, dtype, device, generator) -> dict:
    """The inputs of a size that every op with the AttModule's sequence layouts takes: ``mask`` (a random 0/1
    frame mask when ``masked``), ``dropout_seed`` (when ``dropout``) and ``cu_seqlens`` (the "rows" and "packed"
    layouts), each None otherwise."""
    n, t = s["N"], s["T"]
    rows = 1 if s["layout"] == "packed" else n
    inputs = {"mask": None, "dropout_seed": None, "cu_seqlens": None}
    if s["masked"]:
        inputs["mask"] = (torch.rand((rows, 1, t), generator=generator, device=generator.device) > 0.2).to(device,
                                                                                                            dtype)
    if s["dropout"]:
        inputs["dropout_seed"] = torch.randint(2 ** 62, (1,), generator=generator, device=generator.device).to(device)
    if s["layout"] == "rows":
        lengths = _row_lengths(n, t, s["min_length"], generator)
    elif s["layout"] == "packed":
        lengths = _packed_lengths(n, t, s["min_length"], generator)
    if s["layout"] != "published":
        cu = torch.cat([torch.zeros(1, dtype=torch.int64, device=lengths.device), lengths.cumsum(0)])
        inputs["cu_seqlens"] = cu.to(device=device, dtype=torch.int32)
    return inputs


def _bench_sizes(n, t):
    return size(n, t, dilation=64)


def flops(s):
    # per frame, MAC: dilated conv 3 C^2, Q/K/V projections 3 C^2, out projection C^2, conv_out C^2, attention
    # core 2 C D (KV update and phi(Q) KV) + 2 C (key sum, denominator); elementwise terms ignored.
    # bwd: the forward recomputed (minus the output GEMM) + 2x every GEMM (input and weight gradients).
    c, d = s["C"], s["C"] // s["H"]
    gemm = 8 * c * c + 2 * c * d
    frames = s["N"] * s["T"]
    return {"fwd": 2 * frames * gemm, "bwd": 2 * frames * (gemm - c * c + 2 * gemm)}


def min_bytes(s, itemsize):
    # fwd: read x (and values in decoder mode), write out; bwd: read grad_out, x (values), write grad_x
    # (grad_values); weights are negligible (C = 64: 49 KiB).
    tensor = s["N"] * s["T"] * s["C"] * itemsize
    extra = tensor if s["mode"] == "decoder" else 0
    return {"fwd": 2 * tensor + extra, "bwd": 3 * tensor + 2 * extra}


SPEC = OpSpec(
    name="att_module",
    backends=BACKENDS,
    reference=att_module_reference,
    fused=att_module,
    make_inputs=make_inputs,
    grad_inputs=("x", "values", *WEIGHT_NAMES, "alpha"),
    grad_error_floor=gradient_error_floors,
    parity_sizes={
        # >= 40 frames per sequence: InstanceNorm over fewer amplifies float32 rounding past 1e-5 on every
        # implementation, PyTorch's included (docs/kernels.md#precision); the op tests cover the short ones
        "cpu": [size(2, 63, c=8, heads=4, dilation=2), size(2, 57, c=12, heads=4, dilation=64, mode="decoder",
                                                            layout="rows", masked=True, min_length=40),
                size(3, 150, c=8, heads=2, dilation=3, layout="packed", dropout=True, min_length=40),
                size(1, 40, c=4, heads=4)],
        "cuda": [size(8, 6000, dilation=512), size(8, 6000, dilation=1, mode="decoder", masked=True, dropout=True),
                 size(5, 4097, c=256, dilation=64, layout="rows", min_length=40),
                 size(7, 3001, c=20, heads=2, layout="packed", min_length=40)],
    },
    triton_module="trgnet_fast.ops.att_module.triton_kernels",
    triton_kernels=("_am_fwd_stats_kernel", "_am_fwd_kv_kernel", "_am_reduce_state_kernel", "_am_fwd_output_kernel",
                    "_am_bwd_query_kernel", "_am_reduce_state_kernel", "_am_bwd_key_value_kernel",
                    "_am_bwd_norm_kernel", "_am_bwd_conv_kernel", "_am_reduce_grads_kernel"),
    bench=(BenchVariant("att_module", _bench_sizes, flops, min_bytes,
                        note="one encoder AttModule of TRGNet (C = 64, 4 heads, dilation 64), published mode"),),
    emulation_min_cases=20,
)
