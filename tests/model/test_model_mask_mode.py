"""Mask-correct mode (docs/model.md#mask-correct-mode): a video's outputs do not depend on its batch's padding."""
import pytest
import torch

from test_model_backends import SMALL_CONFIG, needs

LENGTHS = (19, 12, 7)
BACKENDS = ["torch", pytest.param("cuda", marks=needs("cuda", "cpu")),
            pytest.param("triton", marks=needs("triton", "cpu"))]


def _model(make_model, backend, mask_mode="correct", seed=0):
    model = make_model("TCG-15", seed=seed, backend=backend, mask_mode=mask_mode, **SMALL_CONFIG).double()
    with torch.no_grad():  # alpha, beta non-zero: the graphs' data-dependent terms reach the output
        model.SP.alpha.fill_(0.3)
        model.SP.beta.fill_(-0.2)
    return model


def _no_dropout(model):
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.p = 0.0
    return model


def _rel(a, b):
    return float((a - b).detach().norm() / b.detach().norm())


@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_outputs_of_a_video_alone_equal_its_outputs_in_a_padded_batch(backend, make_model, make_inputs):
    model = _model(make_model, backend).eval()
    x, mask, graph = make_inputs("TCG-15", lengths=LENGTHS, seed=3, dtype=torch.float64)
    with torch.no_grad():
        logits, boundary = model(x, mask, graph)
        for i, length in enumerate(LENGTHS):
            alone = model(x[i:i + 1, ..., :length], mask[i:i + 1, :, :length], graph)
            for got, batched in zip(alone, (logits, boundary)):
                assert _rel(got, batched[i:i + 1, :, :length]) <= 1e-10


def test_published_mode_depends_on_the_padding(make_model, make_inputs):
    """The yardstick of the test above means something: published mode's outputs move with the padding."""
    model = _model(make_model, "torch", "published").eval()
    x, mask, graph = make_inputs("TCG-15", lengths=LENGTHS, seed=3, dtype=torch.float64)
    with torch.no_grad():
        batched = model(x, mask, graph)[0][2:3, :, :LENGTHS[2]]
        alone = model(x[2:3, ..., :LENGTHS[2]], mask[2:3, :, :LENGTHS[2]], graph)[0]
    assert _rel(alone, batched) > 1e-3


def _padded(x, mask, extra):
    return (torch.cat([x, x.new_zeros(*x.shape[:-1], extra)], -1),
            torch.cat([mask, mask.new_zeros(*mask.shape[:-1], extra)], -1))


@pytest.mark.parametrize("backend", BACKENDS[:2])  # Triton: the eval test (its interpreter takes minutes here)
def test_training_step_does_not_depend_on_extra_padding(backend, make_model, make_inputs):
    """Train mode (BatchNorm batch statistics over the batch's valid frames, dropout off): the same batch padded 9
    frames further gives the same outputs on the valid frames, the same parameter gradients and the same BatchNorm
    running statistics."""
    x, mask, graph = make_inputs("TCG-15", lengths=LENGTHS, seed=4, dtype=torch.float64)
    results = []
    for inputs in ((x, mask), _padded(x, mask, 9)):
        model = _no_dropout(_model(make_model, backend)).train()
        logits, boundaries, features, scale = model(*inputs, graph)
        results.append(step_results(model, [o[..., :x.shape[-1]] * mask for o in logits + boundaries + features],
                                    scale))
    assert_same_step(*results)


def step_results(model, outputs, scale) -> tuple:
    """(outputs, parameter gradients, BatchNorm running statistics) after ``backward`` of a fixed weighted sum of
    ``outputs`` (valid frames only) times ``scale``."""
    weight = torch.linspace(-1, 1, outputs[0].shape[-1], dtype=outputs[0].dtype)
    (sum((o * weight).sum() for o in outputs) * scale.sum()).backward()
    return (outputs, {n: p.grad for n, p in model.named_parameters()},
            [b.clone() for n, b in model.named_buffers() if "running" in n])


def assert_same_step(expected: tuple, got: tuple) -> None:
    """Two ``step_results`` agree: outputs and gradients within 1e-10 (float64), running statistics to rounding."""
    (out_a, grads_a, stats_a), (out_b, grads_b, stats_b) = expected, got
    for a, b in zip(out_a, out_b, strict=True):
        assert _rel(b, a) <= 1e-10
    largest = max(float(g.norm()) for g in grads_a.values())
    for name, grad in grads_a.items():
        assert float((grad - grads_b[name]).norm()) <= 1e-10 * max(float(grad.norm()), 1e-6 * largest), name
    for a, b in zip(stats_a, stats_b, strict=True):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


def test_mask_mode_is_checked(make_model, make_inputs):
    with pytest.raises(ValueError, match="mask_mode: expected one of"):
        make_model("TCG-15", mask_mode="exact")
    model = make_model("TCG-15", backend="torch", mask_mode="correct", **SMALL_CONFIG).eval()
    x, mask, graph = make_inputs("TCG-15", lengths=(9, 6))
    mask[1, 0, 7] = True  # a valid frame after padding
    with pytest.raises(ValueError, match="mask_mode='correct' needs right-padded rows"):
        model(x, mask, graph)
