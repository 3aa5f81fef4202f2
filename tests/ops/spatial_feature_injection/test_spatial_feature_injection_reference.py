"""The fused SFI's reference (``trgnet_fast/ops/spatial_feature_injection/reference.py``) against the published module
(``SpatialFeatureInjection``) and a per-frame evaluation of the formula."""
from __future__ import annotations

import math

import pytest
import torch

from op_checks import rel_err
from spatial_feature_injection_cases import case_inputs, reference_run, size
from trgnet_fast.model.dropout_seeds import draw_dropout_seeds
from trgnet_fast.model.temporal import SpatialFeatureInjection
from trgnet_fast.ops.att_module.reference import dropout_keep_mask, traced_gradients
from trgnet_fast.ops.spatial_feature_injection.reference import (DROPOUT_STREAM, gradient_error_floors,
                                                                spatial_feature_injection_reference)


def _module_and_inputs(t=11, n=2, c=16, v=25):
    torch.manual_seed(1)
    module = SpatialFeatureInjection(v, c).double()
    module.backend = "torch"
    group = torch.randn(n, 8, t, v, dtype=torch.float64)
    h = torch.randn(n, c, t, dtype=torch.float64)
    mask = torch.ones(n, 1, t, dtype=torch.float64)
    mask[-1, :, t // 2:] = 0
    return module, group, h, mask


def _weights(module):
    return (module.conv_s.weight, module.conv_s.bias, module.conv_fusion.weight, module.conv_fusion.bias,
            module.ff[0].weight, module.ff[0].bias, module.ff[3].weight, module.ff[3].bias)


@pytest.mark.parametrize("v", [25, 19])
def test_reference_is_the_published_module_in_eval(v):
    module, group, h, mask = _module_and_inputs(v=v)
    expected = module.eval()(group, h, mask)
    assert rel_err(spatial_feature_injection_reference(group, h, mask, *_weights(module)), expected) <= 1e-13


def test_reference_with_the_modules_dropout_seed_is_the_module_in_training():
    """In training with hashed masks the fusion draws one seed from torch's generator and drops with the AttModule's
    hash (stream 0) in the (N, C, T) layout; the reference given that seed and p = 0.3 gives the same output."""
    module, group, h, mask = _module_and_inputs()
    module.dropout_masks = "hashed"
    torch.manual_seed(7)
    out = module.train()(group, h, mask)
    torch.manual_seed(7)
    seed = draw_dropout_seeds("cpu")
    expected = spatial_feature_injection_reference(group, h, mask, *_weights(module), dropout=0.3, dropout_seed=seed)
    assert rel_err(out, expected) <= 1e-13
    assert rel_err(out, module.eval()(group, h, mask)) > 0.05  # the dropout did act


def test_reference_follows_the_formula_frame_by_frame():
    """g[v G + c] = group[c, t, v]; s = W_s g + b_s; f = W_f [h; s] + b_f; u = GELU(W_1 f + b_1) r;
    out = (W_2 u + b_2 + h) m, with GELU(a) = a (1 + erf(a / sqrt 2)) / 2, written out per frame."""
    inputs = case_inputs(size(1, 6, c=4, g=3, v=2, masked=True, dropout=True))
    group, h, m = inputs["group"][0], inputs["h"][0], inputs["mask"][0, 0]
    keep = dropout_keep_mask(inputs["dropout_seed"], DROPOUT_STREAM, (1, 4, 6), 0.3)[0].double() / 0.7
    expected = torch.zeros_like(h)
    for t in range(6):
        g = torch.stack([group[c, t, v] for v in range(2) for c in range(3)])
        s = inputs["conv_s_weight"][:, :, 0] @ g + inputs["conv_s_bias"]
        f = inputs["fusion_weight"][:, :, 0] @ torch.cat([h[:, t], s]) + inputs["fusion_bias"]
        a = inputs["ff1_weight"] @ f + inputs["ff1_bias"]
        u = torch.tensor([x * (1 + math.erf(x / math.sqrt(2))) / 2 for x in a.tolist()], dtype=torch.float64)
        expected[:, t] = (inputs["ff2_weight"] @ (u * keep[:, t]) + inputs["ff2_bias"] + h[:, t]) * m[t]
    out, _ = reference_run(inputs)
    assert rel_err(out[0], expected) <= 1e-13


@pytest.mark.parametrize("masked, dropout", [(False, False), (True, True)], ids=["plain", "masked_dropout"])
def test_gradient_error_floors_are_a_quarter_of_the_products_root_sum_square(masked, dropout):
    """Each floor is 0.25 sqrt(sum over rows n and frames t of the squared elementary products): |g_t|^2 for a bias,
    |g_t|^2 |input_t|^2 for a weight (g_t (x) input_t), g the cotangent of the layer's output, summed here with
    explicit loops over the reference's traced intermediates (fresh random values)."""
    inputs = case_inputs(size(2, 4, c=2, g=2, v=2, masked=masked, dropout=dropout))
    grad_out = torch.randn_like(inputs["h"])
    floors = gradient_error_floors(inputs, grad_out)
    (steps,) = traced_gradients(spatial_feature_injection_reference, inputs, grad_out)
    expected = {}
    for name, out, source in (("conv_s", "s", "g"), ("fusion", "f", "cat"), ("ff1", "a", "f"), ("ff2", "y", "u")):
        grad, src = steps[out].grad.tolist(), steps[source].detach().tolist()
        bias = weight = 0.0
        for n in range(len(grad)):
            for t in range(len(grad[n][0])):
                g2 = sum(grad[n][c][t] ** 2 for c in range(len(grad[n])))
                bias += g2
                weight += g2 * sum(src[n][c][t] ** 2 for c in range(len(src[n])))
        expected[f"{name}_bias"], expected[f"{name}_weight"] = 0.25 * math.sqrt(bias), 0.25 * math.sqrt(weight)
    assert floors.keys() == expected.keys()
    for name, floor in expected.items():
        assert floors[name] == pytest.approx(floor, rel=1e-12, abs=0), name
