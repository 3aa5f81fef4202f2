"""Registry entry of the fused SFI: inputs of a size, parity sizes, the benchmark variant with its FLOP and byte
models, the Triton kernels it launches and the emulation cases (``trgnet_fast/ops/spec.py``)."""
from __future__ import annotations

import math

import torch

from trgnet_fast.ops.spatial_feature_injection import BACKENDS, spatial_feature_injection
from trgnet_fast.ops.spatial_feature_injection.reference import (gradient_error_floors,
                                                                  spatial_feature_injection_reference)
from trgnet_fast.ops.spatial_feature_injection.validation import WEIGHT_NAMES, weight_shapes
from trgnet_fast.ops.spec import BenchVariant, OpSpec, randn


def size(n, t, c=64, g=8, v=25, masked=False, dropout=False, group_slice=True) -> dict:
    """N rows of T frames, C temporal channels, a group of G channels and V joints; ``group_slice``: group is a
    channel slice of a wider (N, 3 G, T, V) tensor (as STI's split hands it over), else contiguous."""
    return {"N": n, "T": t, "C": c, "G": g, "V": v, "masked": masked, "dropout": dropout, "group_slice": group_slice}


def make_inputs(s, dtype, device, generator):
    """Keyword inputs of ``spatial_feature_injection`` for size ``s``: weights scaled like PyTorch's default init
    (1 / sqrt(fan_in)), a random 0/1 frame mask when ``masked``, a dropout seed with the published probability 0.3
    when ``dropout``."""
    n, t, c, g, v = s["N"], s["T"], s["C"], s["G"], s["V"]
    fan_in = {"conv_s_weight": g * v, "conv_s_bias": g * v, "fusion_weight": 2 * c, "fusion_bias": 2 * c}
    weights = {name: randn(shape, dtype, device, generator) / math.sqrt(fan_in.get(name, c))
               for name, shape in weight_shapes(c, g * v).items()}
    if s["group_slice"]:
        group = randn((n, 3 * g, t, v), dtype, device, generator)[:, g:2 * g]
    else:
        group = randn((n, g, t, v), dtype, device, generator)
    inputs = {"group": group, "h": randn((n, c, t), dtype, device, generator), "mask": None, **weights,
              "dropout": 0.0, "dropout_seed": None}
    if s["masked"]:
        inputs["mask"] = (torch.rand((n, 1, t), generator=generator, device=generator.device) > 0.2).to(device,
                                                                                                         dtype)
    if s["dropout"]:
        inputs["dropout"] = 0.3
        inputs["dropout_seed"] = torch.randint(2 ** 62, (1,), generator=generator, device=generator.device).to(device)
    return inputs


def _bench_sizes(n, t):
    return size(n, t)


def flops(s):
    # per frame, MAC: conv_s G V C, conv_fusion 2 C^2, the two feed-forward Linears 2 C^2; bwd: the forward
    # recomputed + input and weight gradients of every GEMM (2x)
    c = s["C"]
    gemm = s["G"] * s["V"] * c + 4 * c * c
    frames = s["N"] * s["T"]
    return {"fwd": 2 * frames * gemm, "bwd": 2 * frames * 3 * gemm}


def min_bytes(s, itemsize):
    # fwd: read group and h, write out; bwd: read grad_out, group, h; write grad_group, grad_h
    hidden = s["N"] * s["T"] * s["C"] * itemsize
    group = s["N"] * s["T"] * s["G"] * s["V"] * itemsize
    return {"fwd": 2 * hidden + group, "bwd": 3 * hidden + 2 * group}


SPEC = OpSpec(
    name="spatial_feature_injection",
    backends=BACKENDS,
    reference=spatial_feature_injection_reference,
    fused=spatial_feature_injection,
    make_inputs=make_inputs,
    grad_inputs=("group", "h", *WEIGHT_NAMES),
    grad_error_floor=gradient_error_floors,
    parity_sizes={
        "cpu": [size(2, 37, c=8, g=4, v=5), size(2, 21, c=12, g=8, v=3, masked=True, dropout=True),
                size(1, 5, c=4, g=2, v=7, group_slice=False), size(1, 40, c=64, g=8, v=25, masked=True)],
        "cuda": [size(8, 6000), size(8, 6000, masked=True, dropout=True), size(5, 4097, c=256, g=8, v=19),
                 size(3, 3001, c=20, g=4, v=17, group_slice=False)],
    },
    triton_module="trgnet_fast.ops.spatial_feature_injection.triton_kernels",
    triton_kernels=("_sfi_fwd_kernel", "_sfi_bwd_kernel", "_sfi_reduce_grads_kernel"),
    bench=(BenchVariant("spatial_feature_injection", _bench_sizes, flops, min_bytes,
                        note="one SFI fusion of TRGNet's STI (C = 64, G = 8, V = 25)"),),
    emulation_min_cases=20,
)
