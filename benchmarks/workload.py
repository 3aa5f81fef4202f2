"""What the benchmarks time: the fused-op registry and the TRGNet workload.

Shared by ``benchmarks/run.py`` (side-by-side provider runs) and ``benchmarks/test_micro.py``
(pytest-benchmark micro-benchmarks), so both time exactly the same inputs.

Adding a fused op = its ``OpSpec`` in ``trgnet_fast.ops.registry`` (reference, dispatching function,
input maker) plus one ``BenchOp`` entry here (benchmark sizes and a FLOP/byte model for the
achieved-bandwidth column).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from trgnet_fast.ops.registry import OPS as OP_SPECS
from trgnet_fast.ops.registry import OpSpec

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _gen(seed: int, device) -> torch.Generator:
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(seed)
    return g


def randn(shape, *, gen, device, dtype=torch.float32):
    """Fresh standard-normal values (never zeros), drawn with ``gen`` on ``device``."""
    return torch.randn(shape, generator=gen, device=device, dtype=torch.float32).to(dtype)


def random_lengths(n: int, t: int, gen: torch.Generator, device) -> torch.Tensor:
    """Sequence lengths of a padded batch: the first sample fills T, the others U[T/2, T]."""
    lengths = torch.randint(max(1, t // 2), t + 1, (n,), generator=gen, device=device)
    lengths[0] = t
    return lengths


def length_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """(N, T) bool: True on the first lengths[n] frames."""
    return torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]


# ------------------------------------------------------------------------------------------------
# fused ops
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BenchOp:
    """One benchmarked variant of a fused op of ``trgnet_fast.ops.registry`` (which owns the reference,
    the dispatching function and the input maker: the parity check and the benchmark share them).

    name        registry key (an op may appear in several variants, e.g. ``linear_attention.masked``)
    spec        the op's ``trgnet_fast.ops.registry.OpSpec``
    sizes       (N, T) -> the full size dict the op's input maker takes
    flops       size -> {"fwd": FLOP, "bwd": FLOP} (None: unknown)
    min_bytes   (size, itemsize) -> {"fwd": bytes, "bwd": bytes}: each input read once, each output
                written once (None: unknown)
    """
    name: str
    spec: OpSpec
    sizes: Callable[[int, int], dict]
    flops: Callable[[dict], dict] | None = None
    min_bytes: Callable[[dict, int], dict] | None = None
    note: str = ""
    dtypes: tuple = field(default=(torch.float32, torch.bfloat16, torch.float16))

    @property
    def op_name(self) -> str:
        return self.spec.name

    def load(self):
        """(reference_fn, fused_fn(*args, backend=..., **kwargs))."""
        return self.spec.reference, self.spec.fused

    def make_inputs(self, size, dtype, device, gen):
        """(args, kwargs): the differentiable inputs positionally, in the op's order, the rest by name."""
        kwargs = self.spec.make_inputs(size, dtype, device, gen)
        return tuple(kwargs.pop(name) for name in self.spec.grad_inputs), kwargs


# --- linear attention (docs/model.md#linear-attention) ------------------------------------------

def _la_sizes(masked: bool):
    def sizes(n, t):
        return {"N": n, "T": t, "H": 4, "D": 16, "E": 16, "masked": masked}
    return sizes


def _la_flops(s):
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


def _la_bytes(masked: bool):
    def count(s, itemsize):
        nth = s["N"] * s["T"] * s["H"]
        qk, v = nth * s["D"] * itemsize, nth * s["E"] * itemsize
        m = s["N"] * s["T"] if masked else 0  # bool key mask, 1 byte per frame
        fwd = 2 * qk + v + m + v            # read q, k, v (+mask); write out
        bwd = 2 * qk + v + m + v + 2 * qk + v  # read q, k, v (+mask), dout; write dq, dk, dv
        return {"fwd": fwd, "bwd": bwd}
    return count


OPS: dict[str, BenchOp] = {}


def register(op: BenchOp) -> None:
    OPS[op.name] = op


register(BenchOp(
    name="linear_attention", spec=OP_SPECS["linear_attention"], sizes=_la_sizes(False),
    flops=_la_flops, min_bytes=_la_bytes(False),
    note="published mode (no key mask; padded frames enter the sums), as inside TRGNet"))
register(BenchOp(
    name="linear_attention.masked", spec=OP_SPECS["linear_attention"], sizes=_la_sizes(True),
    flops=_la_flops, min_bytes=_la_bytes(True),
    note="mask-correct mode (key_mask, random lengths in [1, T])"))


# --- multi-scale graph conv (docs/model.md#multi-scale-graph-convolution) -----------------------

def _msgc_sizes(n, t):
    # TRGNet's SP front end on PKU: V = 25 joints, 12 input channels, 13 scales, 64 output channels
    return {"N": n, "C": 12, "T": t, "V": 25, "S": 13, "O": 64}


def _msgc_flops(s):
    # fwd: aggregation N*T*C*S*V*V MAC + 1x1 conv N*T*V*O*S*C MAC (+ bias add N*T*V*O).
    # bwd: H = W^T dY (N*T*V*O*S*C MAC), dX = H A (N*T*C*S*V*V), dA = H^T X (same), dW = dY Z^T
    # (N*T*V*O*S*C) with Z recomputed (N*T*C*S*V*V), db (N*T*V*O adds).
    ntv = s["N"] * s["T"] * s["V"]
    agg = ntv * s["C"] * s["S"] * s["V"]
    mlp = ntv * s["O"] * s["S"] * s["C"]
    return {"fwd": 2 * (agg + mlp) + ntv * s["O"], "bwd": 2 * (3 * agg + 2 * mlp) + ntv * s["O"]}


def _msgc_bytes(s, itemsize):
    ntv = s["N"] * s["T"] * s["V"]
    x, y = ntv * s["C"] * itemsize, ntv * s["O"] * itemsize
    params = (s["S"] * s["V"] * s["V"] + s["O"] * s["S"] * s["C"] + s["O"]) * itemsize
    return {"fwd": x + params + y,                 # read x, A, W, b; write y
            "bwd": y + x + params + x + params}    # read dy, x, A, W; write dx, dA, dW, db


register(BenchOp(
    name="multiscale_graph_conv", spec=OP_SPECS["multiscale_graph_conv"], sizes=_msgc_sizes,
    flops=_msgc_flops, min_bytes=_msgc_bytes,
    note="13-scale aggregation + scale-major stack + 1x1 conv 156->64 (SP front end, PKU V=25)"))


# --- adaptive graph conv (docs/model.md#ctrgc) --------------------------------------------------

def _agc_sizes(n, t):
    # TRGNet's CTRGC on PKU: V = 25 joints, 64 channels (conv3 output)
    return {"N": n, "C": 64, "T": t, "V": 25}


_TANH_FLOP = 3  # tanh counted as 3 FLOP (exp + add + division; it is an SFU/libdevice call, not 3 FMAs)


def _agc_flops(s):
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


def _agc_bytes(s, itemsize):
    n, c, t, v = s["N"], s["C"], s["T"], s["V"]
    x = n * c * t * v * itemsize                # x, y, dy, dx
    pq = 2 * n * t * v * itemsize               # p and q
    graphs = (n * c * v * v + v * v + 1) * itemsize  # G (N,C,V,V), J (V,V), beta (1,)
    return {"fwd": x + pq + graphs + x,                 # read x, p, q, G, J, beta; write y
            "bwd": x + x + pq + graphs + x + pq + graphs}  # read dy, x, p, q, G, J, beta; write dx, dp, dq,
    #                                                        dG, dJ, dbeta


register(BenchOp(
    name="adaptive_graph_conv", spec=OP_SPECS["adaptive_graph_conv"], sizes=_agc_sizes,
    flops=_agc_flops, min_bytes=_agc_bytes,
    note="CTRGC core: per-frame graph beta*tanh(p_u - q_v) + J and per-channel graph G, C=64 (PKU V=25)"))


def grad_inputs(args) -> list:
    """The floating tensors of ``args`` (the ones the bwd modes differentiate)."""
    return [a for a in args if torch.is_tensor(a) and a.is_floating_point()]


# ------------------------------------------------------------------------------------------------
# the whole model
# ------------------------------------------------------------------------------------------------

DATASET = "PKU-subject"


def model_config(dataset: str = DATASET) -> dict:
    from trgnet_fast.model import default_config
    return default_config(dataset)


def build_model(device, backend: str | None, seed: int, dataset: str = DATASET):
    """TRGNet with the published config for ``dataset`` and deterministic initial weights."""
    from trgnet_fast import TRGNet
    torch.manual_seed(seed)
    model = TRGNet(**model_config(dataset), backend=backend)
    return model.to(device)


def make_model_inputs(n: int, t: int, device, seed: int, dataset: str = DATASET, *, padded: bool = True):
    """Fresh random inputs of one batch.

    Returns dict(x (N,C,V,T), mask (N,1,T) bool, joint_graph (V,V), labels (N,T) long with 255 on padding,
    boundary (N,1,T) float 0/1 at label changes). ``padded``: lengths U[T/2, T] (first sample full);
    else every sample is T long.
    """
    from trgnet_fast.model import num_joints
    cfg = model_config(dataset)
    c, k = cfg["in_channel"], cfg["n_classes"]
    v = num_joints(dataset)
    gen = _gen(seed, "cpu")  # drawn on CPU so every device gets the same numbers
    x = torch.randn((n, c, v, t), generator=gen)
    lengths = random_lengths(n, t, gen, "cpu") if padded else torch.full((n,), t)
    valid = length_mask(lengths, t)
    # text-joint-graph-like: symmetric, values in [0, 1), unit diagonal
    j = torch.rand((v, v), generator=gen)
    joint_graph = (j + j.T) / 2
    joint_graph.fill_diagonal_(1.0)
    # piecewise-constant labels (~1 segment per 150 frames, like PKU's ~35 segments per 5000 frames)
    labels = torch.full((n, t), 255, dtype=torch.long)
    for i in range(n):
        length = int(lengths[i])
        n_seg = max(1, length // 150)
        cuts = torch.randperm(max(1, length - 1), generator=gen)[: n_seg - 1] + 1
        bounds = torch.cat([torch.tensor([0]), cuts.sort().values, torch.tensor([length])])
        classes = torch.randint(0, k, (n_seg,), generator=gen)
        labels[i, :length] = torch.repeat_interleave(classes, bounds.diff())
    change = torch.zeros((n, t))
    change[:, 1:] = ((labels[:, 1:] != labels[:, :-1]) & valid[:, 1:]).float()
    out = {"x": x, "mask": valid[:, None, :], "joint_graph": joint_graph, "labels": labels,
           "boundary": change[:, None, :]}
    return {name: val.to(device) for name, val in out.items()}


def train_loss(outputs, labels, boundary, mask, feature_weight: float = 1e-3):
    """Training-step loss that touches every output of the train-mode forward.

    CE on both logit stages (ignore 255) + 0.1 x mean masked BCE over the boundary stages +
    ``feature_weight`` x logit_scale x mean of the 768-d feature heads. (The published ARIS/GS-TMSE
    losses are benchmarked separately; this is the model's share of a step.)
    """
    logits, bounds, feats, logit_scale = outputs
    loss = sum(F.cross_entropy(z, labels, ignore_index=255) for z in logits) / len(logits)
    w = mask.to(bounds[0].dtype)
    bce = sum(F.binary_cross_entropy_with_logits(b, boundary, weight=w, reduction="sum") for b in bounds)
    loss = loss + 0.1 * bce / (len(bounds) * w.sum())
    loss = loss + feature_weight * logit_scale * sum(e.mean() for e in feats)
    return loss
