"""The model under bf16 autocast (docs/training.md#bf16): the fused layers run in bf16 with float32 master weights,
within the design's bf16 bound: at most 2x the error of the reference (torch backend) under the same autocast,
both measured against the float64 model."""
import copy

import pytest
import torch

from test_model_backends import SMALL_CONFIG, needs



def _step(model, inputs, autocast):
    """Train-mode outputs (float64 copies) and parameter gradients (float64 copies) of a fixed linear loss."""
    torch.manual_seed(123)  # the same hashed dropout masks on every run
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits, boundaries, features, logit_scale = model.train()(*inputs)
    outputs = [o.double() for o in logits + boundaries + features]
    loss = sum((o * torch.linspace(-1, 1, o.shape[-1], dtype=torch.float64)).sum() for o in outputs)
    (loss * logit_scale.double().sum()).backward()
    return ([o.detach() for o in outputs], {n: p.grad.double() for n, p in model.named_parameters()},
            [o.dtype for o in logits + boundaries + features])


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("backend", [pytest.param("cuda", marks=needs("cuda", "cpu"))])
def test_bf16_fused_layers_within_twice_the_reference_error(backend, seed, make_model, make_inputs):
    base = make_model("TCG-15", seed=seed, backend="torch", **SMALL_CONFIG)
    base.set_dropout_masks("hashed")
    with torch.no_grad():
        base.SP.alpha.fill_(0.3)
        base.SP.beta.fill_(-0.2)
    x, mask, graph = make_inputs("TCG-15", lengths=(23, 15), seed=seed)
    exact_out, exact_grads, _ = _step(copy.deepcopy(base).double(), [x.double(), mask, graph.double()], False)
    errors = {}
    for name in ("torch", backend):
        model = copy.deepcopy(base)
        model.set_backend(name)
        out, grads, dtypes = _step(model, [x, mask, graph], True)
        assert dtypes[0] == torch.bfloat16  # the first logits: a bf16 conv of the bf16 encoder feature
        assert all(p.dtype == torch.float32 for p in model.parameters())  # the master weights stay float32
        largest = max(float(g.norm()) for g in exact_grads.values())
        # parameters whose gradient is not ~0 by structure (SP's first conv bias before a train-mode BatchNorm)
        meaningful = [n for n, g in exact_grads.items() if float(g.norm()) > 1e-6 * largest]
        errors[name] = ([_rel(o, e) for o, e in zip(out, exact_out)],
                        sum(_rel(grads[n], exact_grads[n]) for n in meaningful) / len(meaningful))
    (ref_out, ref_grad), (fused_out, fused_grad) = errors["torch"], errors[backend]
    for i, (fused, ref) in enumerate(zip(fused_out, ref_out)):
        assert fused <= 2 * ref, (i, fused, ref)
    # per parameter a few gradients are chaotic in bf16 (ReLU and clamp decisions flip): the mean over parameters
    assert fused_grad <= 2 * ref_grad, (fused_grad, ref_grad)


@needs("triton", "cpu")
def test_triton_on_cpu_refuses_bf16(make_model, make_inputs):
    """Triton's CPU interpreter computes bfloat16 wrongly: the fused layers refuse it instead of training on garbage
    (on a GPU Triton runs bf16)."""
    model = make_model("TCG-15", backend="triton", **SMALL_CONFIG).train()
    with pytest.raises(ValueError, match="backend 'triton' on CPU .* cannot run bfloat16"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(*make_inputs("TCG-15", lengths=(9, 6)))
