"""The fused AttModule's reference (``trgnet_fast/ops/att_module/reference.py``) against the published module and
formulas, its sequence layouts and its dropout hash."""
from __future__ import annotations

import math

import pytest
import torch

from att_module_cases import case_inputs, reference_run, size
from op_checks import rel_err
from trgnet_fast.model.attention import AttModule
from trgnet_fast.model.dropout_seeds import draw_dropout_seeds
from trgnet_fast.ops.att_module.reference import (
    ATTENTION_DROPOUT_STREAM, MODULE_DROPOUT_STREAM, att_module_reference, dropout_keep_mask, dropout_stream_key,
    dropout_threshold, gradient_error_floors, sequence_spans, traced_gradients)

M32 = 0xFFFFFFFF


def _module_weights(module: AttModule) -> dict:
    conv, la = module.feed_forward[0], module.att_layer
    return {"conv_weight": conv.weight, "conv_bias": conv.bias,
            "query_weight": la.query_projection.weight, "query_bias": la.query_projection.bias,
            "key_weight": la.key_projection.weight, "key_bias": la.key_projection.bias,
            "value_weight": la.value_projection.weight, "value_bias": la.value_projection.bias,
            "out_weight": la.out_projection.weight, "out_bias": la.out_projection.bias,
            "conv_out_weight": module.conv_out.weight, "conv_out_bias": module.conv_out.bias}


def _module_and_inputs(mode, dilation, t=11, n=2, alpha=0.7):
    torch.manual_seed(1)
    module = AttModule(dilation, 16, mode, alpha).double()
    module.backend = "torch"
    x = torch.randn(n, 16, t, dtype=torch.float64)
    values = torch.randn(n, 16, t, dtype=torch.float64) if mode == "decoder" else None
    mask = torch.ones(n, 1, t, dtype=torch.float64)
    mask[-1, :, t // 2:] = 0
    return module, x, values, mask


@pytest.mark.parametrize("mode", ["encoder", "decoder"])
@pytest.mark.parametrize("dilation", [1, 4, 16], ids=["d1", "d4", "d16>T"])
def test_reference_is_the_published_module_in_eval(mode, dilation):
    module, x, values, mask = _module_and_inputs(mode, dilation)
    expected = module.eval()(x, values, mask)
    out = att_module_reference(x, values, mask, **_module_weights(module), alpha=torch.tensor(0.7, dtype=torch.float64),
                               dilation=dilation)
    assert rel_err(out, expected) <= 1e-13


@pytest.mark.parametrize("mode", ["encoder", "decoder"])
def test_reference_with_the_modules_dropout_seed_is_the_module_in_training(mode):
    """In training with hashed masks the module draws one seed from torch's generator and drops with the shared
    hash; the reference given that seed and the published probabilities (0.05, 0.5) gives the same output."""
    module, x, values, mask = _module_and_inputs(mode, 2)
    module.dropout_masks = "hashed"
    torch.manual_seed(7)
    out = module.train()(x, values, mask)
    torch.manual_seed(7)
    seed = draw_dropout_seeds("cpu")
    expected = att_module_reference(x, values, mask, **_module_weights(module),
                                    alpha=torch.tensor(0.7, dtype=torch.float64), dilation=2, attention_dropout=0.05,
                                    dropout=0.5, dropout_seed=seed)
    assert rel_err(out, expected) <= 1e-13
    assert rel_err(out, module.eval()(x, values, mask)) > 0.1  # the dropout did act


def test_reference_follows_the_published_formulas_step_by_step():
    """Each step written out per frame with loops (dilated conv with zero padding, InstanceNorm over all frames,
    sigmoid linear attention with eps on the key sum, out projection, mask, alpha, conv_out, residual, mask)."""
    inputs = case_inputs(size(1, 6, c=4, heads=2, dilation=2, mode="decoder", masked=True), seed=3)
    x, v, m = inputs["x"][0], inputs["values"][0], inputs["mask"][0, 0]
    c, t = x.shape
    w = inputs["conv_weight"]
    pre = torch.zeros(c, t, dtype=torch.float64)
    for ti in range(t):
        pre[:, ti] = inputs["conv_bias"]
        for k in range(3):
            src = ti + (k - 1) * 2
            if 0 <= src < t:
                pre[:, ti] += w[:, :, k] @ x[:, src]
    o = pre.clamp_min(0)
    mean = o.mean(1, keepdim=True)
    var = ((o - mean) ** 2).mean(1, keepdim=True)
    q = (o - mean) / torch.sqrt(var + 1e-5)
    lin = {name: (inputs[f"{name}_weight"], inputs[f"{name}_bias"]) for name in ("query", "key", "value", "out")}
    big_q = lin["query"][0] @ q + lin["query"][1][:, None]
    big_k = lin["key"][0] @ q + lin["key"][1][:, None]
    big_v = lin["value"][0] @ v + lin["value"][1][:, None]
    a = torch.zeros(c, t, dtype=torch.float64)
    for h in range(2):
        rows = slice(2 * h, 2 * h + 2)
        kv = sum(torch.outer(torch.sigmoid(big_k[rows, s]), big_v[rows, s]) for s in range(t))
        ksum = sum(torch.sigmoid(big_k[rows, s]) for s in range(t)) + 1e-6
        for ti in range(t):
            phi = torch.sigmoid(big_q[rows, ti])
            a[rows, ti] = phi @ kv / (phi @ ksum)
    p = (lin["out"][0] @ a + lin["out"][1][:, None]) * m
    u = inputs["alpha"] * p + o
    expected = (x + inputs["conv_out_weight"][:, :, 0] @ u + inputs["conv_out_bias"][:, None]) * m
    out, _ = reference_run(inputs)
    assert rel_err(out[0], expected) <= 1e-13


def test_sequence_layouts():
    x = torch.zeros(3, 2, 10)
    assert sequence_spans(x, None) == [(0, 0, 10), (1, 0, 10), (2, 0, 10)]
    assert sequence_spans(x, torch.tensor([0, 4, 4, 9], dtype=torch.int32)) == [(0, 0, 4), (1, 0, 0), (2, 0, 5)]
    assert sequence_spans(x[:1], torch.tensor([0, 4, 4, 9], dtype=torch.int32)) == [(0, 0, 4), (0, 4, 0), (0, 4, 5)]


@pytest.mark.parametrize("mode", ["encoder", "decoder"])
def test_packed_and_row_sequences_are_computed_alone(mode):
    """Packed sequences and padded rows with lengths: each sequence's frames equal the published op on that
    sequence alone (B = 1, T = its length); frames outside every sequence are 0."""
    for layout in ("packed", "rows"):
        inputs = case_inputs(size(3, 19, c=8, heads=2, dilation=4, mode=mode, layout=layout, masked=True))
        out, _ = reference_run(inputs)
        spans = sequence_spans(inputs["x"], inputs["cu_seqlens"])
        covered = torch.zeros_like(out, dtype=torch.bool)
        for row, start, length in spans:
            frames = slice(start, start + length)
            alone = dict(inputs, cu_seqlens=None, **{k: inputs[k][row:row + 1, :, frames] for k in ("x", "mask")},
                         values=None if inputs["values"] is None else inputs["values"][row:row + 1, :, frames])
            expected, _ = reference_run(alone)
            assert rel_err(out[row:row + 1, :, frames], expected) <= 1e-13
            covered[row, :, frames] = True
        assert torch.equal(out[~covered], torch.zeros_like(out[~covered]))


def test_rows_of_full_length_are_the_published_layout():
    inputs = case_inputs(size(3, 12, c=8, heads=4, dilation=2, mode="decoder", masked=True))
    published, _ = reference_run(inputs)
    rows, _ = reference_run(dict(inputs, cu_seqlens=torch.tensor([0, 12, 24, 36], dtype=torch.int32)))
    assert torch.equal(rows, published)


# ----------------------------------------------------------------------------------------------
# the dropout hash, checked against plain Python integer arithmetic

def _fmix32(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & M32
    return h ^ (h >> 16)


def _python_keep(seed: int, stream: int, index: int, p: float) -> bool:
    bits = seed & ((1 << 64) - 1)
    key = _fmix32(_fmix32((bits >> 32) ^ (0x9E3779B9, 0x7F4A7C15)[stream]) ^ (bits & M32))
    h = _fmix32(_fmix32((index + key) & M32) ^ key)
    return (h >> 8) >= math.floor(p * 2 ** 24)


@pytest.mark.parametrize("seed", [0, 1, 2 ** 62 - 1, -1, -(2 ** 63), 123456789012345])
def test_dropout_hash_is_the_documented_integer_formula(seed):
    shape = (2, 3, 7)
    for stream in (ATTENTION_DROPOUT_STREAM, MODULE_DROPOUT_STREAM):
        keep = dropout_keep_mask(seed, stream, shape, 0.5)
        expected = torch.tensor([_python_keep(seed, stream, i, 0.5) for i in range(42)]).view(shape)
        assert torch.equal(keep, expected)
        assert torch.equal(keep, dropout_keep_mask(torch.tensor([seed]), stream, shape, 0.5))
    key = dropout_stream_key(seed, 1)
    assert key.dtype == torch.int64 and 0 <= int(key) <= M32


def test_dropout_threshold():
    assert dropout_threshold(0.0) == 0
    assert dropout_threshold(0.5) == 2 ** 23
    assert dropout_threshold(0.05) == 838860  # floor(0.05 * 2^24) in double precision


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9])
def test_dropout_keep_rate_and_independence(p):
    """Keep rate 1 - p within 5 binomial standard deviations; the two streams and two seeds are independent
    (agreement rate p^2 + (1 - p)^2); neighbouring frames are independent too."""
    shape = (4, 64, 1000)
    n = math.prod(shape)
    a = dropout_keep_mask(11, 0, shape, p)
    sd = math.sqrt(p * (1 - p) / n)
    assert abs(a.float().mean().item() - (1 - p)) <= 5 * sd
    agree = p * p + (1 - p) * (1 - p)
    sd_agree = math.sqrt(agree * (1 - agree) / n)
    for other in (dropout_keep_mask(11, 1, shape, p), dropout_keep_mask(12, 0, shape, p),
                  torch.roll(a, 1, dims=2)):
        assert abs((a == other).float().mean().item() - agree) <= 5 * sd_agree


def test_dropout_scales_kept_elements():
    inputs = case_inputs(size(2, 9, c=8, heads=4, dropout=True), seed=5)
    plain = dict(inputs, attention_dropout=0.0, dropout=0.0)
    out, _ = reference_run(inputs)
    base, _ = reference_run(plain)
    assert not torch.equal(out, base)
    # conv_out's dropout alone: out - x = keep / (1 - p) * (conv_out(u) + b) on the frames of the mask
    only_module = dict(inputs, attention_dropout=0.0)
    dropped, _ = reference_run(only_module)
    keep = dropout_keep_mask(inputs["dropout_seed"], MODULE_DROPOUT_STREAM, tuple(inputs["x"].shape), 0.5)
    x = inputs["x"]
    assert torch.allclose(dropped - x, (base - x) * keep.double() * 2.0, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# the gradient error floors (``gradient_error_floors``), by brute force over the elementary products


def _attention_products_rss(grad_out, q, k, v, eps) -> dict[str, float]:
    """The full root-sum-square of the elementary products of the attention core's dQ, dK, dV (no key mask), each
    product built with Python loops as trgnet_fast/ops/linear_attention/reference.py's ``gradient_error_floors``
    writes them (the key sum counts as one factor); (1, L, H, D) inputs."""
    (pq,), (pk,) = torch.sigmoid(q.detach()).tolist(), torch.sigmoid(k.detach()).tolist()
    (g,), (vv,) = grad_out.detach().tolist(), v.detach().tolist()
    _, T, H, D = q.shape
    E = v.shape[3]
    squares = {"q": 0.0, "k": 0.0, "v": 0.0}
    for h in range(H):
        ksum = [sum(pk[s][h][d] for s in range(T)) + eps for d in range(D)]
        den = [sum(pq[l][h][d] * ksum[d] for d in range(D)) for l in range(T)]
        for l in range(T):
            for d in range(D):
                dq = pq[l][h][d] * (1 - pq[l][h][d])
                dk = pk[l][h][d] * (1 - pk[l][h][d])  # dk[s = l, d]
                for s in range(T):
                    for e in range(E):
                        squares["q"] += (dq * pk[s][h][d] * vv[s][h][e] * g[l][h][e] / den[l]) ** 2
                        squares["k"] += (dk * pq[s][h][d] * g[s][h][e] * vv[l][h][e] / den[s]) ** 2
                        squares["v"] += (pk[l][h][d] * pq[s][h][d] * g[s][h][e] / den[s]) ** 2  # dv[s = l, e]
                        for d2 in range(D):
                            squares["q"] += (dq * ksum[d] * g[l][h][e] * pq[l][h][d2] * pk[s][h][d2] * vv[s][h][e]
                                             / den[l] ** 2) ** 2
                            for s2 in range(T):
                                squares["k"] += (dk * pq[s][h][d] * g[s][h][e] * pq[s][h][d2] * pk[s2][h][d2]
                                                 * vv[s2][h][e] / den[s] ** 2) ** 2
    return {name: math.sqrt(square) for name, square in squares.items()}


def _frame_sums(t) -> list[float]:
    """sum over channels of t[0, c, frame]^2 for each frame of a (1, C, L) tensor, with loops."""
    (rows,) = t.detach().tolist()
    return [sum(rows[c][f] ** 2 for c in range(len(rows))) for f in range(len(rows[0]))]


@pytest.mark.parametrize("s", [size(2, 4, c=4, heads=2, dilation=1, mode="decoder", layout="rows", masked=True,
                                    dropout=True),
                               size(2, 5, c=2, heads=1, dilation=2, mode="encoder", layout="packed", min_length=2)],
                         ids=["decoder_rows", "encoder_packed"])
def test_gradient_error_floors_are_a_quarter_of_the_products_root_sum_square(s):
    """Each floor is 0.25 sqrt(sum over sequences and frames of the squared elementary products): |g_t|^2 for a
    bias, |g_t|^2 |input_t|^2 for a weight (the conv's input_t: its three zero-padded taps), (g_u p)^2 per element
    for alpha; the projections' add the attention core's full root-sum-square (4 times its quarter floor), times
    the rms frame norm of the projected input for the weights. Brute force from the traced intermediates (fresh
    random values)."""
    # a large attention eps: the core's floors must use the module's eps, not the linear attention's default
    inputs = case_inputs(s) | {"attention_eps": 0.5}
    grad_out = torch.randn_like(inputs["x"])
    floors = gradient_error_floors(inputs, grad_out)
    squares: dict[str, float] = {}

    def add(name, bias_terms, weight_terms):
        squares[f"{name}_bias"] = squares.get(f"{name}_bias", 0.0) + sum(bias_terms)
        squares[f"{name}_weight"] = squares.get(f"{name}_weight", 0.0) + sum(weight_terms)

    def frames_first(t):  # (1, L, *) -> (1, C, L)
        return t.flatten(2).transpose(1, 2)

    traces = traced_gradients(att_module_reference, inputs, grad_out)
    assert len(traces) == 2
    for steps in traces:
        core = _attention_products_rss(steps["attended"].grad.view_as(steps["V"]), steps["Q"], steps["K"],
                                       steps["V"], inputs["attention_eps"])
        for proj, name in (("query", "Q"), ("key", "K"), ("value", "V")):
            g2 = _frame_sums(frames_first(steps[name].grad))
            x2 = _frame_sums(frames_first(steps["v_in"] if name == "V" else steps["q"]))
            rms2 = sum(x2) / len(x2)
            add(proj, g2 + [core[name.lower()] ** 2],
                [a * b for a, b in zip(g2, x2)] + [core[name.lower()] ** 2 * rms2])
        for name, grad, source in (("out", steps["projection"].grad, frames_first(steps["attended"])),
                                   ("conv_out", steps["z"].grad, steps["u"])):
            g2, x2 = _frame_sums(grad), _frame_sums(source)
            add(name, g2, [a * b for a, b in zip(g2, x2)])
        (gu,), (p,) = steps["u"].grad.tolist(), steps["p"].detach().tolist()
        squares["alpha"] = squares.get("alpha", 0.0) + sum((gu[c][t] * p[c][t]) ** 2 for c in range(len(p))
                                                           for t in range(len(p[0])))
        g2, x2, d = _frame_sums(steps["pre"].grad), _frame_sums(steps["x"]), steps["dilation"]
        taps2 = [sum(x2[t + (k - 1) * d] for k in range(3) if 0 <= t + (k - 1) * d < len(x2))
                 for t in range(len(x2))]
        add("conv", g2, [a * b for a, b in zip(g2, taps2)])
    assert floors.keys() == squares.keys()
    for name, square in squares.items():
        assert floors[name] == pytest.approx(0.25 * math.sqrt(square), rel=1e-12, abs=0), name
