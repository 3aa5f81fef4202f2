"""Mask-correct mode's statistics (trgnet_fast/model/masking.py) against their plain-PyTorch definitions."""
import pytest
import torch
from torch import nn

from trgnet_fast.model.masking import masked_batch_norm, masked_temporal_mean, sequence_offsets


def _frame_mask(lengths, t):
    return (torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]).double()[:, None, :, None]


@pytest.mark.parametrize("momentum", [None, 0.1])
def test_masked_batch_norm_is_batch_norm_over_the_valid_frames(momentum):
    """Over three steps: the output on valid frames, the running statistics (cumulative average for momentum None,
    exponential for 0.1) and the step count equal nn.BatchNorm2d's on the valid frames alone."""
    gen = torch.Generator().manual_seed(0)
    lengths, t, c, v = (5, 3, 7), 7, 4, 3
    masked = nn.BatchNorm2d(c, momentum=momentum).double()
    plain = nn.BatchNorm2d(c, momentum=momentum).double()
    with torch.no_grad():
        for bn in (masked, plain):
            bn.weight.copy_(torch.linspace(0.5, 2.0, c))
            bn.bias.copy_(torch.linspace(-1.0, 1.0, c))
    frame_mask = _frame_mask(lengths, t)
    for _ in range(3):
        x = torch.randn(len(lengths), c, t, v, generator=gen, dtype=torch.float64) * 3 + 1
        out = masked_batch_norm(x, masked, frame_mask)
        # the valid frames of every video side by side: one (1, C, ΣT_n, V) batch for the plain BatchNorm
        valid = torch.cat([x[n:n + 1, :, :length] for n, length in enumerate(lengths)], dim=2)
        expected = plain(valid)
        got = torch.cat([out[n:n + 1, :, :length] for n, length in enumerate(lengths)], dim=2)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(masked.running_mean, plain.running_mean, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(masked.running_var, plain.running_var, rtol=1e-12, atol=1e-14)
    assert int(masked.num_batches_tracked) == int(plain.num_batches_tracked) == 3


def test_masked_temporal_mean_and_offsets():
    gen = torch.Generator().manual_seed(1)
    lengths, t = (4, 1, 6), 6
    x = torch.randn(3, 2, t, 5, generator=gen, dtype=torch.float64)
    mean = masked_temporal_mean(x, _frame_mask(lengths, t))
    for n, length in enumerate(lengths):
        torch.testing.assert_close(mean[n, :, 0], x[n, :, :length].mean(1), rtol=1e-14, atol=1e-15)
    assert torch.equal(masked_temporal_mean(x, torch.zeros(3, 1, t, 1, dtype=torch.float64)),
                       torch.zeros(3, 2, 1, 5, dtype=torch.float64))  # a video without frames gets 0
    mask = _frame_mask(lengths, t)[..., 0].bool()
    offsets = sequence_offsets(mask)
    assert offsets.dtype == torch.int32 and offsets.tolist() == [0, 4, 5, 11]
