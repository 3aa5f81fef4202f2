"""The fused BatchNorm + residual + ReLU's reference (``trgnet_fast/ops/batch_norm_relu/reference.py``) against
``nn.BatchNorm2d`` in training mode (no frame mask: published mode), against BatchNorm over the valid frames alone
(a frame mask: mask-correct mode), and its closed-form backward against autograd."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from batch_norm_relu_cases import case_inputs, frame_mask_of, reference_run, size
from op_checks import rel_err
from trgnet_fast.ops.batch_norm_relu.reference import (batch_norm_relu_backward_reference,
                                                       batch_norm_relu_reference)


def _bn(inputs):
    bn = nn.BatchNorm2d(inputs["x"].shape[1], eps=inputs["eps"]).double().train()
    with torch.no_grad():
        bn.weight.copy_(inputs["weight"])
        bn.bias.copy_(inputs["bias"])
    return bn


def test_without_a_mask_it_is_batch_norm2d_in_training():
    inputs = case_inputs(size(3, 11, c=5, v=17, residual=True))
    bn = _bn(inputs)
    expected = torch.relu(bn(inputs["x"]) + inputs["residual"])
    out, mean, var = batch_norm_relu_reference(**inputs, statistics=True)
    assert rel_err(out, expected) <= 1e-13
    count = inputs["x"].numel() / inputs["x"].shape[1]
    # the running statistics the module kept: momentum 0.1 from (0, 1), the unbiased variance
    assert rel_err(bn.running_mean, 0.1 * mean) <= 1e-13
    assert rel_err(bn.running_var, 0.9 + 0.1 * var * count / (count - 1)) <= 1e-13


def test_with_a_mask_it_is_batch_norm_over_the_valid_frames_applied_to_every_frame():
    """Statistics of the valid frames alone (BatchNorm2d on them, laid side by side), applied to every frame."""
    inputs = case_inputs(size(3, 9, c=4, v=19, masked=True))
    lengths = inputs["frame_mask"][:, 0, :, 0].sum(1).long().tolist()
    valid = torch.cat([inputs["x"][n, :, :length] for n, length in enumerate(lengths)], dim=1)  # (C, frames, V)
    mean = valid.mean((1, 2))
    var = valid.var((1, 2), unbiased=False)
    x_hat = (inputs["x"] - mean[None, :, None, None]) / torch.sqrt(var + inputs["eps"])[None, :, None, None]
    expected = torch.relu(x_hat * inputs["weight"][None, :, None, None] + inputs["bias"][None, :, None, None])
    out, got_mean, got_var = batch_norm_relu_reference(**inputs, statistics=True)
    assert rel_err(out, expected) <= 1e-13
    assert rel_err(got_mean, mean) <= 1e-13 and rel_err(got_var, var) <= 1e-13
    padded = inputs["frame_mask"].expand_as(out) == 0
    assert padded.any() and (out[padded] != 0).any()  # the padded frames are normalised too


def test_a_full_mask_is_no_mask():
    inputs = case_inputs(size(2, 7, c=3, v=17, residual=True))
    full = frame_mask_of(torch.tensor([7, 7]), 7, torch.float64, "cpu")
    assert rel_err(batch_norm_relu_reference(**inputs | {"frame_mask": full}),
                   batch_norm_relu_reference(**inputs)) <= 1e-15


def test_no_valid_frame_normalises_with_zero_statistics():
    """count = max(1, V·Σm): an all-zero mask gives mean 0, var 0 (finite outputs, invstd = 1/sqrt(eps))."""
    inputs = case_inputs(size(2, 5, c=3, v=17, masked=True))
    inputs["frame_mask"] = torch.zeros_like(inputs["frame_mask"])
    out, mean, var = batch_norm_relu_reference(**inputs, statistics=True)
    assert torch.equal(mean, torch.zeros_like(mean)) and torch.equal(var, torch.zeros_like(var))
    expected = torch.relu(inputs["x"] / inputs["eps"] ** 0.5 * inputs["weight"][None, :, None, None]
                          + inputs["bias"][None, :, None, None])
    assert rel_err(out, expected) <= 1e-13


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_closed_form_backward_is_autograd(masked, residual):
    inputs = case_inputs(size(3, 13, c=4, v=17, masked=masked, residual=residual))
    grad_out = torch.randn_like(inputs["x"])
    out, grads = reference_run(inputs, grad_out)
    _, mean, var = batch_norm_relu_reference(**inputs, statistics=True)
    grad_x, grad_residual, grad_weight, grad_bias = batch_norm_relu_backward_reference(
        grad_out, out, inputs["x"], inputs["frame_mask"], inputs["weight"], mean, var, inputs["eps"], residual)
    assert rel_err(grad_x, grads["x"]) <= 1e-12
    assert rel_err(grad_weight, grads["weight"]) <= 1e-12 and rel_err(grad_bias, grads["bias"]) <= 1e-12
    if residual:
        assert rel_err(grad_residual, grads["residual"]) <= 1e-15
    else:
        assert grad_residual.shape == (0,)


def test_16bit_x_is_computed_in_float32():
    inputs = case_inputs(size(2, 7, c=3, v=17, residual=True), dtype=torch.float32)
    half = {k: v.half() if k in ("x", "residual") else v for k, v in inputs.items()}
    out, mean, var = batch_norm_relu_reference(**half, statistics=True)
    assert out.dtype == torch.float16 and mean.dtype == var.dtype == torch.float32
    exact = batch_norm_relu_reference(**{k: v.float() if isinstance(v, torch.Tensor) else v for k, v in half.items()})
    assert rel_err(out.float(), exact) <= 1e-3
