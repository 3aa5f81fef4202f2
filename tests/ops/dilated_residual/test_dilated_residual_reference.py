"""The fused dilated residual layer's reference (``trgnet_fast/ops/dilated_residual/reference.py``) against the
published module (``DilatedResidualLayer``, MS-TCN's layer), a per-frame evaluation of the formula, and its sequence
layouts."""
from __future__ import annotations

import pytest
import torch

from dilated_residual_cases import case_inputs, reference_run, size
from op_checks import rel_err
from trgnet_fast.model.dropout_seeds import draw_dropout_seeds
from trgnet_fast.model.temporal import DilatedResidualLayer
from trgnet_fast.ops.att_module.reference import dropout_keep_mask, sequence_spans
from trgnet_fast.ops.dilated_residual.reference import DROPOUT_STREAM, dilated_residual_reference


def _module_and_inputs(dilation, t=11, n=2, c=16):
    torch.manual_seed(1)
    module = DilatedResidualLayer(dilation, c).double()
    module.backend = "torch"
    x = torch.randn(n, c, t, dtype=torch.float64)
    mask = torch.ones(n, 1, t, dtype=torch.float64)
    mask[-1, :, t // 2:] = 0
    return module, x, mask


def _weights(module):
    return (module.conv_dilated.weight, module.conv_dilated.bias, module.conv_in.weight, module.conv_in.bias)


@pytest.mark.parametrize("dilation", [1, 4, 16], ids=["d1", "d4", "d16>T"])
def test_reference_is_the_published_module_in_eval(dilation):
    module, x, mask = _module_and_inputs(dilation)
    expected = module.eval()(x, mask)
    out = dilated_residual_reference(x, mask, *_weights(module), dilation=dilation)
    assert rel_err(out, expected) <= 1e-13


def test_reference_with_the_modules_dropout_seed_is_the_module_in_training():
    """In training with hashed masks the layer draws one seed from torch's generator and drops with the AttModule's
    hash (stream 1); the reference given that seed and p = 0.5 gives the same output."""
    module, x, mask = _module_and_inputs(2)
    module.dropout_masks = "hashed"
    torch.manual_seed(7)
    out = module.train()(x, mask)
    torch.manual_seed(7)
    seed = draw_dropout_seeds("cpu")
    expected = dilated_residual_reference(x, mask, *_weights(module), dilation=2, dropout=0.5, dropout_seed=seed)
    assert rel_err(out, expected) <= 1e-13
    assert rel_err(out, module.eval()(x, mask)) > 0.1  # the dropout did act


def test_reference_follows_the_formula_frame_by_frame():
    """pre[t] = b + sum_k W_k x[t + (k-1) d] (zero outside the sequence), z = W_out ReLU(pre) + b_out,
    out = (x + z r) m, written out per frame with Python loops."""
    inputs = case_inputs(size(1, 9, c=4, dilation=3, masked=True, dropout=True))
    x, m = inputs["x"][0], inputs["mask"][0, 0]
    w, b, wo, bo, d = (inputs["conv_weight"], inputs["conv_bias"], inputs["conv_out_weight"][:, :, 0],
                       inputs["conv_out_bias"], inputs["dilation"])
    keep = dropout_keep_mask(inputs["dropout_seed"], DROPOUT_STREAM, tuple(inputs["x"].shape), 0.5)[0]
    length = x.shape[1]
    expected = torch.zeros_like(x)
    for t in range(length):
        pre = b.clone()
        for k in range(3):
            s = t + (k - 1) * d
            if 0 <= s < length:
                pre = pre + w[:, :, k] @ x[:, s]
        z = wo @ torch.relu(pre) + bo
        expected[:, t] = (x[:, t] + z * keep[:, t].double() * 2.0) * m[t]
    out, _ = reference_run(inputs)
    assert rel_err(out[0], expected) <= 1e-13


def test_packed_and_row_sequences_are_computed_alone():
    """Packed sequences and padded rows with lengths: each sequence's frames equal the published op on that
    sequence alone (B = 1, T = its length); frames outside every sequence are 0."""
    for layout in ("packed", "rows"):
        inputs = case_inputs(size(3, 19, c=8, dilation=4, layout=layout, masked=True))
        out, _ = reference_run(inputs)
        covered = torch.zeros_like(out, dtype=torch.bool)
        for row, start, length in sequence_spans(inputs["x"], inputs["cu_seqlens"]):
            frames = slice(start, start + length)
            alone = dict(inputs, cu_seqlens=None, **{k: inputs[k][row:row + 1, :, frames] for k in ("x", "mask")})
            expected, _ = reference_run(alone)
            assert rel_err(out[row:row + 1, :, frames], expected) <= 1e-13
            covered[row, :, frames] = True
        assert torch.equal(out[~covered], torch.zeros_like(out[~covered]))
