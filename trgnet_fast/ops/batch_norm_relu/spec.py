"""Registry entry of the fused BatchNorm + residual + ReLU: inputs of a size, parity sizes, the benchmark variant with
its FLOP and byte models, the Triton kernels it launches and the emulation cases (``trgnet_fast/ops/spec.py``)."""
from __future__ import annotations

import torch

from trgnet_fast.ops.batch_norm_relu import BACKENDS, batch_norm_relu
from trgnet_fast.ops.batch_norm_relu.reference import batch_norm_relu_reference, gradient_error_floors
from trgnet_fast.ops.batch_norm_relu.validation import PARAMETER_NAMES, state_dtype
from trgnet_fast.ops.spec import BenchVariant, OpSpec, randn


def size(n, t, c=64, v=25, masked=False, residual=False) -> dict:
    """N videos of T frames, C channels, V joints (defaults: SP's BatchNorms on PKU); ``masked``: random lengths in
    [1, T] (the first video T); ``residual``: SP's second BatchNorm."""
    return {"N": n, "T": t, "C": c, "V": v, "masked": masked, "residual": residual}


def frame_mask_of(lengths: torch.Tensor, t: int, dtype, device) -> torch.Tensor:
    """(N, 1, T, 1) 0/1: frame j of video n is valid when j < lengths[n]."""
    frames = torch.arange(t, device=lengths.device)
    return (frames[None, :] < lengths[:, None]).to(device=device, dtype=dtype)[:, None, :, None]


def make_inputs(s, dtype, device, generator):
    """Keyword inputs of ``batch_norm_relu`` for size ``s``: x with a per-channel offset and scale (the statistics
    matter), weight near 1, bias, eps 1e-5; a residual and a frame mask when asked."""
    n, t, c, v = s["N"], s["T"], s["C"], s["V"]
    state = state_dtype(dtype)
    offset, scale = randn((1, c, 1, 1), dtype, device, generator), randn((1, c, 1, 1), dtype, device, generator)
    inputs = {"x": randn((n, c, t, v), dtype, device, generator) * (1 + scale.abs()) + offset,
              "weight": 1 + 0.25 * randn((c,), state, device, generator),
              "bias": 0.25 * randn((c,), state, device, generator),
              "residual": randn((n, c, t, v), dtype, device, generator) if s["residual"] else None,
              "frame_mask": None, "eps": 1e-5}
    if s["masked"]:
        lengths = torch.randint(1, t + 1, (n,), generator=generator, device=generator.device)
        lengths[0] = t
        inputs["frame_mask"] = frame_mask_of(lengths, t, dtype, device)
    return inputs


def _bench_size(n, t):
    return size(n, t, masked=True, residual=True)


def flops(s):
    # per element: fwd stats (sub, 2 mul-add, mask) + apply (sub, 2 mul-add, add, max); bwd about twice that
    elements = s["N"] * s["C"] * s["T"] * s["V"]
    return {"fwd": 10 * elements, "bwd": 16 * elements}


def min_bytes(s, itemsize):
    # fwd: read x (and the residual), write out; bwd: read grad_out, out, x, write grad_x (and grad_residual)
    tensor = s["N"] * s["C"] * s["T"] * s["V"] * itemsize
    extra = tensor if s["residual"] else 0
    return {"fwd": 2 * tensor + extra, "bwd": 4 * tensor + extra}


SPEC = OpSpec(
    name="batch_norm_relu",
    backends=BACKENDS,
    reference=batch_norm_relu_reference,
    fused=batch_norm_relu,
    make_inputs=make_inputs,
    grad_inputs=("x", "residual", *PARAMETER_NAMES),
    grad_error_floor=gradient_error_floors,
    parity_sizes={
        "cpu": [size(2, 7, c=5, v=17), size(3, 9, c=4, v=19, masked=True, residual=True), size(1, 1, c=3, v=25),
                size(2, 63, c=6, v=25, masked=True)],
        "cuda": [size(8, 6000, masked=True, residual=True), size(8, 6000), size(3, 4097, c=20, v=19, masked=True),
                 size(2, 1, c=7, v=17, residual=True)],
    },
    triton_module="trgnet_fast.ops.batch_norm_relu.triton_kernels",
    triton_kernels=("_bnr_stats_kernel", "_bnr_apply_kernel", "_bnr_bwd_reduce_kernel", "_bnr_bwd_apply_kernel"),
    bench=(BenchVariant("batch_norm_relu", _bench_size, flops, min_bytes,
                        note="SP's second BatchNorm + residual + ReLU over the valid frames (C = 64, V = 25)"),),
    emulation_min_cases=40,
    state_inputs=PARAMETER_NAMES,
)
