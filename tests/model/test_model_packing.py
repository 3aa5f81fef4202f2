"""Packed batches (docs/model.md#packed-batches): the videos concatenated along time, with their offsets, give the
outputs and gradients of the same videos in a padded batch in mask-correct mode."""
import pytest
import torch

from test_model_backends import SMALL_CONFIG
from test_model_mask_mode import BACKENDS, LENGTHS, _model, _no_dropout, _rel, assert_same_step, step_results
from trgnet_fast.model.packing import packed_sequences, sequence_channel_noise, unpack


def _pack(x, mask):
    """The padded batch (x (N, C, V, T), right-padded mask (N, 1, T)) as one packed row."""
    lengths = mask[:, 0].sum(1).tolist()
    packed = packed_sequences(lengths)
    x_packed = torch.cat([x[i:i + 1, ..., :n] for i, n in enumerate(lengths)], dim=-1)
    return x_packed, torch.ones(1, 1, x_packed.shape[-1], dtype=torch.bool), packed


@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_outputs_of_a_packed_batch_equal_the_padded_batch(backend, make_model, make_inputs):
    model = _model(make_model, backend).eval()
    x, mask, graph = make_inputs("TCG-15", lengths=LENGTHS, seed=3, dtype=torch.float64)
    x_packed, mask_packed, packed = _pack(x, mask)
    with torch.no_grad():
        padded = model(x, mask, graph)
        got = model(x_packed, mask_packed, graph, packed=packed)
    for a, b in zip(got, padded):
        assert a.shape[0] == 1 and a.shape[-1] == sum(LENGTHS)
        assert _rel(unpack(a, packed), b * mask) <= 1e-10


@pytest.mark.parametrize("backend", BACKENDS[:2])  # Triton: the eval test (its interpreter takes minutes here)
def test_packed_training_step_equals_the_padded_one(backend, make_model, make_inputs):
    """Train mode, dropout off: the same outputs on the valid frames, the same parameter gradients and the same
    BatchNorm running statistics as the padded batch in mask-correct mode."""
    x, mask, graph = make_inputs("TCG-15", lengths=LENGTHS, seed=4, dtype=torch.float64)
    x_packed, mask_packed, packed = _pack(x, mask)
    results = []
    for inputs, kwargs in (((x, mask), {}), ((x_packed, mask_packed), {"packed": packed})):
        model = _no_dropout(_model(make_model, backend)).train()
        logits, boundaries, features, scale = model(*inputs, graph, **kwargs)
        outputs = [o * mask if not kwargs else unpack(o, packed) for o in logits + boundaries + features]
        results.append(step_results(model, outputs, scale))
    assert_same_step(*results)


def test_channel_masking_is_drawn_per_sequence():
    """STI's Dropout2d on a packed batch: one channel mask per sequence (the draw of Dropout2d on the padded batch
    with the same generator state), constant over each sequence's frames."""
    lengths = (5, 3, 4)
    packed = packed_sequences(lengths)
    x = torch.ones(1, 40, sum(lengths), 2, dtype=torch.float64)
    torch.manual_seed(7)
    noise = sequence_channel_noise(x, packed, 0.3)
    torch.manual_seed(7)
    reference = torch.nn.functional.dropout2d(torch.ones(3, 40, 5, 2, dtype=torch.float64), 0.3, training=True)
    assert noise.shape == (1, 40, sum(lengths), 1)
    for s, (start, n) in enumerate(zip((0, 5, 8), lengths)):
        assert torch.equal(noise[0, :, start:start + n, 0], reference[s, :, :n, 0])
    assert 0 < int((noise == 0).sum()) < noise.numel()  # some channels dropped, not all


def test_packed_input_is_checked(make_model, make_inputs):
    model = make_model("TCG-15", backend="torch", mask_mode="correct", **SMALL_CONFIG).eval()
    x, mask, graph = make_inputs("TCG-15", lengths=(9, 6))
    x_packed, mask_packed, packed = _pack(x, mask)
    with pytest.raises(ValueError, match=r"x: expected one packed row \(1, C_in, V, T=15\)"):
        model(x, mask, graph, packed=packed)
    with pytest.raises(ValueError, match="packed: expected sequences of >= 2 frames"):
        model(x_packed, mask_packed, graph, packed=packed_sequences((14, 1)))
    with pytest.raises(ValueError, match="mask: a packed batch has no padded frame"):
        model(x_packed, torch.zeros_like(mask_packed), graph, packed=packed)
    with pytest.raises(ValueError, match="packed: expected a PackedSequences"):
        model(x_packed, mask_packed, graph, packed=(0, 9, 15))
    published = make_model("TCG-15", backend="torch", **SMALL_CONFIG).eval()
    with pytest.raises(ValueError, match="packed: packed batches need mask_mode='correct'"):
        published(x_packed, mask_packed, graph, packed=packed)
