"""Registry entry of the fused dilated residual layer: inputs of a size, parity sizes, the benchmark variant with
its FLOP and byte models, the Triton kernels it launches and the emulation cases (``trgnet_fast/ops/spec.py``)."""
from __future__ import annotations

import math

from trgnet_fast.ops.att_module.spec import sequence_inputs
from trgnet_fast.ops.dilated_residual import BACKENDS, dilated_residual
from trgnet_fast.ops.dilated_residual.reference import dilated_residual_reference, gradient_error_floors
from trgnet_fast.ops.dilated_residual.validation import WEIGHT_NAMES, weight_shapes
from trgnet_fast.ops.spec import BenchVariant, OpSpec, randn


def size(n, t, c=64, dilation=1, layout="published", masked=False, dropout=False, min_length=1) -> dict:
    """N sequences of up to T frames (packed: N sequences in one row of T frames), C channels; the "rows" and
    "packed" layouts draw lengths of at least ``min_length`` frames (``att_module.spec.sequence_inputs``)."""
    return {"N": n, "T": t, "C": c, "dilation": dilation, "layout": layout, "masked": masked, "dropout": dropout,
            "min_length": min_length}


def make_inputs(s, dtype, device, generator):
    """Keyword inputs of ``dilated_residual`` for size ``s``: weights scaled like PyTorch's default init
    (1 / sqrt(fan_in)), a random 0/1 frame mask when ``masked``, a dropout seed with the published probability
    0.5 when ``dropout``, cu_seqlens for the "rows" and "packed" layouts."""
    n, t, c = s["N"], s["T"], s["C"]
    rows = 1 if s["layout"] == "packed" else n
    fan_in = {"conv_weight": 3 * c, "conv_bias": 3 * c}
    weights = {name: randn(shape, dtype, device, generator) / math.sqrt(fan_in.get(name, c))
               for name, shape in weight_shapes(c).items()}
    inputs = {"x": randn((rows, c, t), dtype, device, generator), "mask": None, **weights,
              "dilation": s["dilation"], "dropout": 0.5 if s["dropout"] else 0.0, "cu_seqlens": None,
              "dropout_seed": None}
    return inputs | sequence_inputs(s, dtype, device, generator)


def _bench_sizes(n, t):
    return size(n, t, dilation=64)


def flops(s):
    # per frame, MAC: dilated conv 3 C^2, conv_out C^2; bwd: the forward recomputed (minus nothing: o is needed)
    # + 2x both GEMMs (input and weight gradients)
    gemm = 4 * s["C"] * s["C"]
    frames = s["N"] * s["T"]
    return {"fwd": 2 * frames * gemm, "bwd": 2 * frames * 3 * gemm}


def min_bytes(s, itemsize):
    # fwd: read x, write out; bwd: read grad_out and x, write grad_x; weights negligible (C = 64: 64 KiB)
    tensor = s["N"] * s["T"] * s["C"] * itemsize
    return {"fwd": 2 * tensor, "bwd": 3 * tensor}


SPEC = OpSpec(
    name="dilated_residual",
    backends=BACKENDS,
    reference=dilated_residual_reference,
    fused=dilated_residual,
    make_inputs=make_inputs,
    grad_inputs=("x", *WEIGHT_NAMES),
    grad_error_floor=gradient_error_floors,
    parity_sizes={
        "cpu": [size(2, 63, c=8, dilation=2), size(2, 57, c=12, dilation=64, layout="rows", masked=True),
                size(3, 150, c=8, dilation=3, layout="packed", dropout=True), size(1, 5, c=4, dilation=8)],
        "cuda": [size(8, 6000, dilation=512), size(8, 6000, dilation=1, masked=True, dropout=True),
                 size(5, 4097, c=256, dilation=64, layout="rows"), size(7, 3001, c=20, layout="packed")],
    },
    triton_module="trgnet_fast.ops.dilated_residual.triton_kernels",
    triton_kernels=("_dr_fwd_kernel", "_dr_bwd_pre_kernel", "_dr_bwd_input_kernel", "_dr_reduce_grads_kernel"),
    bench=(BenchVariant("dilated_residual", _bench_sizes, flops, min_bytes,
                        note="one boundary-branch dilated residual layer of TRGNet (C = 64, dilation 64)"),),
    emulation_min_cases=20,
)
