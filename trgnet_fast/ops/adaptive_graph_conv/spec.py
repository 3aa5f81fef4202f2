"""Registry entry of the adaptive graph conv: inputs of a size, parity sizes, the benchmark variant with its FLOP
and byte models, the Triton kernels it launches and the emulation cases (``trgnet_fast/ops/spec.py``)."""
from __future__ import annotations

from trgnet_fast.ops.adaptive_graph_conv import BACKENDS, adaptive_graph_conv
from trgnet_fast.ops.adaptive_graph_conv.reference import adaptive_graph_conv_reference, gradient_error_floors
from trgnet_fast.ops.spec import BenchVariant, OpSpec, randn


def make_inputs(size, dtype, device, generator):
    """size: N, C, T, V. Magnitudes as in the model: graphs ~ J in [0, 1] plus O(1) refinements."""
    n, c, t, v = (size[k] for k in ("N", "C", "T", "V"))
    return {
        "x": randn((n, c, t, v), dtype, device, generator),
        "p": randn((n, t, v), dtype, device, generator),
        "q": randn((n, t, v), dtype, device, generator),
        "beta": randn((1,), dtype, device, generator),
        "channel_graph": randn((n, c, v, v), dtype, device, generator) / v ** 0.5,
        "joint_graph": randn((v, v), dtype, device, generator).abs() / v ** 0.5,
    }


def size(n, t, v=25, c=64) -> dict:
    """Defaults: TRGNet's CTRGC on PKU (V = 25 joints, 64 channels of conv3's output)."""
    return {"N": n, "C": c, "T": t, "V": v}


_TANH_FLOP = 3  # tanh counted as 3 FLOP (exp + add + division; it is an SFU/libdevice call, not 3 FMAs)


def flops(s):
    # fwd: frame graph F = beta * tanh(p_u - q_v) + J per (n, t, u, v): sub + tanh + mul + add
    # = (3 + _TANH_FLOP) FLOP; aggregation through both graphs, Y = F X + G X: 2 x N*C*T*V*V MAC
    # (counted per graph, as the reference's two einsums; forming F + G first would be 1 add + 1 MAC).
    # bwd: F recomputed (same as fwd); dX = (F + G)^T dY through both graphs (2 x N*C*T*V*V MAC),
    # dG = sum_t dY X^T and dF = sum_c dY X^T (N*C*T*V*V MAC each); the (n, t, u, v)-sized small terms:
    # dJ += dF (1), dbeta += dF * th (2), g = dF * (1 - th^2) (3), dp = sum_v g and dq = -sum_u g (2).
    nctvv = s["N"] * s["C"] * s["T"] * s["V"] * s["V"]
    ntvv = s["N"] * s["T"] * s["V"] * s["V"]
    frame = ntvv * (3 + _TANH_FLOP)
    return {"fwd": frame + 2 * 2 * nctvv, "bwd": frame + 2 * (2 + 1 + 1) * nctvv + ntvv * (1 + 2 + 3 + 2)}


def min_bytes(s, itemsize):
    n, c, t, v = s["N"], s["C"], s["T"], s["V"]
    x = n * c * t * v * itemsize                # x, y, dy, dx
    pq = 2 * n * t * v * itemsize               # p and q
    graphs = (n * c * v * v + v * v + 1) * itemsize  # G (N,C,V,V), J (V,V), beta (1,)
    return {"fwd": x + pq + graphs + x,                 # read x, p, q, G, J, beta; write y
            "bwd": x + x + pq + graphs + x + pq + graphs}  # read dy, x, p, q, G, J, beta; write dx, dp, dq,
    #                                                        dG, dJ, dbeta


SPEC = OpSpec(
    name="adaptive_graph_conv",
    backends=BACKENDS,
    reference=adaptive_graph_conv_reference,
    fused=adaptive_graph_conv,
    make_inputs=make_inputs,
    grad_inputs=("x", "p", "q", "beta", "channel_graph", "joint_graph"),
    grad_error_floor=lambda inputs, grad_out: gradient_error_floors(grad_out, **inputs),
    parity_sizes={
        "cpu": [size(2, 7, v=17, c=5), size(1, 9, v=19, c=3), size(2, 1, v=25, c=4)],
        "cuda": [size(8, 6000), size(3, 63, v=17), size(2, 7, v=19, c=16), size(2, 1), size(4, 300, v=19, c=48)],
    },
    triton_module="trgnet_fast.ops.adaptive_graph_conv.triton_kernels",
    triton_kernels=("_agc_fwd_kernel", "_agc_bwd_frame_kernel", "_agc_bwd_channel_kernel"),
    bench=(BenchVariant("adaptive_graph_conv", size, flops, min_bytes,
                        note="CTRGC core: per-frame graph beta*tanh(p_u - q_v) + J and per-channel graph G, C=64 "
                             "(PKU V=25)"),),
    emulation_min_cases=14,
)
