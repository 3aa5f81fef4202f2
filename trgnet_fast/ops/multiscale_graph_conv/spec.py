"""Registry entry of the multi-scale graph conv: inputs of a size, parity sizes, the benchmark variant with its
FLOP and byte models, the Triton kernels it launches and the emulation cases (``trgnet_fast/ops/spec.py``)."""
from __future__ import annotations

from trgnet_fast.ops.multiscale_graph_conv import BACKENDS, multiscale_graph_conv
from trgnet_fast.ops.multiscale_graph_conv.reference import multiscale_graph_conv_reference
from trgnet_fast.ops.spec import BenchVariant, OpSpec, randn


def make_inputs(size, dtype, device, generator):
    """size: N, C (C_in), T, V, S (scales), O (C_out). adjacency ~ k-hop stack scale (entries ~1/V)."""
    n, c, t, v, s, o = (size[k] for k in ("N", "C", "T", "V", "S", "O"))
    return {
        "x": randn((n, c, t, v), dtype, device, generator),
        "adjacency": randn((s * v, v), dtype, device, generator) / v ** 0.5,
        "weight": randn((o, s * c), dtype, device, generator) / (s * c) ** 0.5,
        "bias": randn((o,), dtype, device, generator),
    }


def size(n, t, v=25, c=12, o=64, s=13) -> dict:
    """Defaults: TRGNet's SP front end on PKU (V = 25 joints, 12 input channels, 13 scales, 64 out)."""
    return {"N": n, "C": c, "T": t, "V": v, "S": s, "O": o}


def flops(s):
    # fwd: aggregation N*T*C*S*V*V MAC + 1x1 conv N*T*V*O*S*C MAC (+ bias add N*T*V*O).
    # bwd: H = W^T dY (N*T*V*O*S*C MAC), dX = H A (N*T*C*S*V*V), dA = H^T X (same), dW = dY Z^T
    # (N*T*V*O*S*C) with Z recomputed (N*T*C*S*V*V), db (N*T*V*O adds).
    ntv = s["N"] * s["T"] * s["V"]
    agg = ntv * s["C"] * s["S"] * s["V"]
    mlp = ntv * s["O"] * s["S"] * s["C"]
    return {"fwd": 2 * (agg + mlp) + ntv * s["O"], "bwd": 2 * (3 * agg + 2 * mlp) + ntv * s["O"]}


def min_bytes(s, itemsize):
    ntv = s["N"] * s["T"] * s["V"]
    x, y = ntv * s["C"] * itemsize, ntv * s["O"] * itemsize
    params = (s["S"] * s["V"] * s["V"] + s["O"] * s["S"] * s["C"] + s["O"]) * itemsize
    return {"fwd": x + params + y,                 # read x, A, W, b; write y
            "bwd": y + x + params + x + params}    # read dy, x, A, W; write dx, dA, dW, db


SPEC = OpSpec(
    name="multiscale_graph_conv",
    backends=BACKENDS,
    reference=multiscale_graph_conv_reference,
    fused=multiscale_graph_conv,
    make_inputs=make_inputs,
    grad_inputs=("x", "adjacency", "weight", "bias"),
    parity_sizes={
        "cpu": [size(2, 5, v=17, c=3, o=8, s=2), size(1, 9, v=19, c=4, o=8), size(2, 1, v=25, c=3, o=8, s=2)],
        "cuda": [size(8, 6000), size(3, 63, v=17), size(2, 7, v=19), size(2, 1), size(4, 300, v=19, c=6, o=64)],
    },
    triton_module="trgnet_fast.ops.multiscale_graph_conv.triton_kernels",
    triton_kernels=("_msgc_fwd_kernel", "_msgc_bwd_input_kernel", "_msgc_bwd_param_kernel"),
    bench=(BenchVariant("multiscale_graph_conv", size, flops, min_bytes,
                        note="13-scale aggregation + scale-major stack + 1x1 conv 156->64 (SP front end, PKU V=25)"),),
    emulation_min_cases=14,
)
