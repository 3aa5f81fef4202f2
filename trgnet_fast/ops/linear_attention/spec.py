"""Registry entry of the linear attention: inputs of a size, parity sizes, benchmark variants with their FLOP
and byte models, the Triton kernels it launches and the emulation cases (``trgnet_fast/ops/spec.py``)."""
from __future__ import annotations

import torch

from trgnet_fast.ops.linear_attention import BACKENDS, linear_attention
from trgnet_fast.ops.linear_attention.reference import gradient_error_floors, linear_attention_reference
from trgnet_fast.ops.spec import BenchVariant, OpSpec, randn


def make_inputs(size, dtype, device, generator):
    """size: N, T, H, D, E, and ``masked`` (mask-correct mode with a random padding tail)."""
    n, t, h, d, e = (size[k] for k in ("N", "T", "H", "D", "E"))
    inputs = {
        "q": randn((n, t, h, d), dtype, device, generator),
        "k": randn((n, t, h, d), dtype, device, generator),
        "v": randn((n, t, h, e), dtype, device, generator),
        "key_mask": None,
    }
    if size.get("masked"):
        lengths = torch.randint(1, t + 1, (n,), generator=generator, device=generator.device)
        inputs["key_mask"] = (torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]).to(device)
    return inputs


def size(n, t, h=4, d=16, e=16, masked=False) -> dict:
    return {"N": n, "T": t, "H": h, "D": d, "E": e, "masked": masked}


def _bench_sizes(masked: bool):
    # TRGNet's attention: 4 heads of 16 (C = 64)
    return lambda n, t: size(n, t, masked=masked)


def flops(s):
    # per (n, t, h): fwd KV += phi_k (x) v (D*E MAC), num = phi_q @ KV (D*E MAC), den (D MAC),
    # ksum (D add), division (E), 2 D sigmoids (counted 1 FLOP each).
    # bwd (recomputing num/den from the tiny state, not reading a saved output): num recompute, dphi_q =
    # dnum @ KV^T, dKV += phi_q (x) dnum, dphi_k = v @ dKV^T, dv = phi_k @ dKV: 5 D*E MAC; plus D-sized terms
    # (den, dden*ksum, dksum, dphi_k += dksum: 4 D MAC), E-sized (dnum, dden: 2 E MAC + E div), sigmoids and
    # their derivatives (2 D * 3).
    ntH = s["N"] * s["T"] * s["H"]
    d, e = s["D"], s["E"]
    fwd = ntH * (2 * 2 * d * e + 2 * d + d + e + 2 * d)
    bwd = ntH * (2 * 5 * d * e + 2 * 4 * d + 2 * 2 * e + e + 2 * d * 3)
    return {"fwd": fwd, "bwd": bwd}


def _min_bytes(masked: bool):
    def count(s, itemsize):
        nth = s["N"] * s["T"] * s["H"]
        qk, v = nth * s["D"] * itemsize, nth * s["E"] * itemsize
        m = s["N"] * s["T"] if masked else 0  # bool key mask, 1 byte per frame
        fwd = 2 * qk + v + m + v            # read q, k, v (+mask); write out
        bwd = 2 * qk + v + m + v + 2 * qk + v  # read q, k, v (+mask), dout; write dq, dk, dv
        return {"fwd": fwd, "bwd": bwd}
    return count


SPEC = OpSpec(
    name="linear_attention",
    backends=BACKENDS,
    reference=linear_attention_reference,
    fused=linear_attention,
    make_inputs=make_inputs,
    grad_inputs=("q", "k", "v"),
    grad_error_floor=lambda inputs, grad_out: gradient_error_floors(
        grad_out, inputs["q"], inputs["k"], inputs["v"], inputs["key_mask"]),
    parity_sizes={
        "cpu": [size(2, 63), size(3, 7, h=1, d=5, e=9, masked=True), size(1, 1),
                size(2, 300, h=2, d=64, e=64, masked=True)],
        "cuda": [size(8, 6000), size(8, 6000, masked=True), size(3, 4097, h=2, d=64, e=64),
                 size(2, 1, masked=True), size(5, 63, h=4, d=5, e=9, masked=True)],
    },
    triton_module="trgnet_fast.ops.linear_attention.triton_kernels",
    triton_kernels=("_la_fwd_state_kernel", "_la_reduce_tiles_kernel", "_la_fwd_output_kernel",
                    "_la_bwd_query_kernel", "_la_reduce_tiles_kernel", "_la_bwd_key_kernel"),
    bench=(
        BenchVariant("linear_attention", _bench_sizes(False), flops, _min_bytes(False),
                     note="published mode (no key mask; padded frames enter the sums), as inside TRGNet"),
        BenchVariant("linear_attention.masked", _bench_sizes(True), flops, _min_bytes(True),
                     note="mask-correct mode (key_mask, random lengths in [1, T])"),
    ),
    emulation_min_cases=20,
)
