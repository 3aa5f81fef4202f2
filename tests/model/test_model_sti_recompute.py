"""STI's recomputing input stage (trgnet_fast/model/channel_dropout.py, docs/model.md#temporal-encoder-sti) against the
same module running mask → Dropout2d → conv_in as modules (``_recompute = False``), float64 on CPU: the native
backend's C++ kernels and Triton's interpreter."""
import copy

import pytest
import torch
import torch.nn.functional as F

from backend_marks import needs
from trgnet_fast.backend import backend_status
from trgnet_fast.model import channel_dropout, temporal
from trgnet_fast.model.channel_dropout import feature_dropout_noise
from trgnet_fast.model.temporal import SpatioTemporalEncoder

N, C, T, V = 3, 16, 13, 17  # odd sizes; V = 17: the TCG-15 skeleton
LENGTHS = (13, 9, 4)
SMALL_CONFIG = dict(n_layers=2, n_refine_layers=2, n_stages=2, SFI_layer=[1])  # test_model_backends'
BACKENDS = [pytest.param(name, marks=needs(name)) for name in backend_status("cpu") if name != "torch"]


def sti_module(backend, seed=0):
    """A float64 train-mode STI (2 encoder layers, an SFI before the second) on ``backend``."""
    torch.manual_seed(seed)
    module = SpatioTemporalEncoder(V, C, n_layers=2, sfi_layers=[1]).double().train()
    for layer in [*module.SFI_layers, *module.layers]:
        layer.backend = backend
    return module


def sti_inputs(seed):
    """SP-output-like x (N, C, T, V) (not masked: the padded frames hold values) and mask (N, 1, T) float 0/1."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, T, V, generator=generator, dtype=torch.float64).relu()
    mask = torch.zeros(N, 1, T, dtype=torch.float64)
    for i, length in enumerate(LENGTHS):
        mask[i, :, :length] = 1
    return x, mask


def sti_step(module, x, mask, seed, mask_input=True):
    """Output, input gradient and parameter gradients of one step (dropout masks drawn after
    ``torch.manual_seed(seed)``) with a random output gradient."""
    module.zero_grad()
    x = x.clone().requires_grad_()
    torch.manual_seed(seed)
    out = module(x, mask, mask_input=mask_input)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=out.dtype))
    return out.detach(), x.grad, {name: p.grad for name, p in module.named_parameters()}


def assert_close_grad(got, want, name):
    err, scale = float((got - want).norm()), float(want.norm())
    assert err <= 1e-10 * scale, (name, err, scale)


def test_channel_mask_is_dropout2d_mask():
    """The same generator state gives nn.Dropout2d's channel mask and leaves the generator where it leaves it."""
    x = torch.ones(N, C, T, V, dtype=torch.float64)
    for seed in range(3):
        torch.manual_seed(seed)
        want = F.dropout2d(x, 0.3, training=True)
        state = torch.get_rng_state()
        torch.manual_seed(seed)
        noise = feature_dropout_noise(x, 0.3)
        assert noise.shape == (N, C, 1, 1)
        assert torch.equal(noise.expand_as(x), want)
        assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("backend", BACKENDS)
def test_recompute_matches_module_path(backend):
    """Outputs equal, input and parameter gradients within 1e-10, for two steps (different channel masks): STI
    masking x (as TRGNet calls it), then the caller masking x."""
    module = sti_module(backend)
    modules_path = copy.deepcopy(module)
    modules_path._recompute = False
    for step, mask_input in enumerate((True, False)):
        x, mask = sti_inputs(step)
        if not mask_input:
            x = x * mask[..., None]
        out, grad_x, grads = sti_step(module, x, mask, seed=10 + step, mask_input=mask_input)
        ref_out, ref_grad_x, ref_grads = sti_step(modules_path, x, mask, seed=10 + step, mask_input=mask_input)
        assert torch.equal(out, ref_out)
        assert_close_grad(grad_x, ref_grad_x, "x")
        if mask_input:  # no gradient reaches the padded frames
            assert not grad_x[(mask[..., None] == 0).expand_as(grad_x)].any()
        for name, grad in grads.items():
            assert_close_grad(grad, ref_grads[name], name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_recompute_saves_a_full_tensor_fewer(backend, saved_bytes):
    """conv_in's (N, C, T, V) input is recomputed from x, not saved (x's storage not counted: in the model x is SP's
    output, which SP's backward keeps anyway)."""
    module = sti_module(backend)
    x, mask = sti_inputs(0)
    x.requires_grad_()
    recomputing = saved_bytes(lambda: module(x, mask, mask_input=True), exclude=x)
    module._recompute = False
    saving = saved_bytes(lambda: module(x, mask, mask_input=True), exclude=x)
    assert saving - recomputing >= N * C * T * V * x.element_size(), (saving, recomputing)


def model_step(model, inputs, seed):
    """Train-mode outputs and parameter gradients of a TRGNet, dropout masks drawn after ``torch.manual_seed``."""
    model.zero_grad()
    torch.manual_seed(seed)
    logits, boundaries, features, logit_scale = model.train()(*inputs)
    outputs = logits + boundaries + features
    loss = sum((o * torch.linspace(-1, 1, o.shape[-1], dtype=o.dtype)).sum() for o in outputs)
    (loss * logit_scale.sum()).backward()
    return [o.detach() for o in outputs], {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("backend", [param for param in BACKENDS if param.values == ("cuda",)])
def test_model_recompute_matches_module_path(backend, make_model, make_inputs):
    """The whole TRGNet (small config, float64) on the native backend (Triton's interpreter would take minutes; the
    STI tests above cover it): the same outputs and gradients with STI's recomputing input stage as without."""
    model = make_model("TCG-15", backend=backend, **SMALL_CONFIG).double()
    with torch.no_grad():
        model.SP.alpha.fill_(0.3)
        model.SP.beta.fill_(-0.2)
    modules_path = copy.deepcopy(model)
    modules_path.STI._recompute = False
    inputs = make_inputs("TCG-15", lengths=(11, 7), dtype=torch.float64)
    outputs, grads = model_step(model, inputs, seed=5)
    ref_outputs, ref_grads = model_step(modules_path, inputs, seed=5)
    for out, ref in zip(outputs, ref_outputs):
        assert torch.equal(out, ref)
    for name, grad in grads.items():
        err = float((grad - ref_grads[name]).abs().max())
        assert err <= 1e-10 * max(1.0, float(ref_grads[name].abs().max())), (name, err)  # SP.mlp's bias: noise
        if name.startswith("STI."):
            assert_close_grad(grad, ref_grads[name], name)


def test_torch_backend_masks_as_before(make_model, make_inputs):
    """On the torch backend STI(x, mask, mask_input=True) is STI(x · mask, mask), the published composition, in
    training (the same channel masks, the same gradient); an eval-mode TRGNet without decoder stage returns
    conv_cls of it."""
    sti = sti_module("torch")
    x, mask = sti_inputs(0)
    out, grad_x, grads = sti_step(sti, x, mask, seed=3, mask_input=True)
    ref_out, ref_grad_x, ref_grads = sti_step(sti, x * mask[..., None], mask, seed=3, mask_input=False)
    assert torch.equal(out, ref_out)
    assert torch.equal(grad_x, ref_grad_x * mask[..., None])
    for name, grad in grads.items():
        assert torch.equal(grad, ref_grads[name]), name

    model = make_model("TCG-15", backend="torch", **SMALL_CONFIG, n_stages_asb=1).double().eval()
    x, mask, joint_graph = make_inputs("TCG-15", lengths=(11, 7), dtype=torch.float64)
    with torch.no_grad():
        feature = model.STI(model.SP(x, joint_graph) * mask.double()[..., None], mask.double())
        assert torch.equal(model(x, mask, joint_graph)[0], model.conv_cls(feature))


@pytest.mark.parametrize("mode", ["eval", "no_grad", "torch backend", "autocast", "p=0"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_other_modes_keep_the_module_path(backend, mode, monkeypatch):
    """Eval mode, no_grad, the torch backend, autocast and a zero masking rate never reach the recomputing
    function."""
    def refuse(*args):
        raise AssertionError("recomputing function called")

    monkeypatch.setattr(temporal.ScaledConv1x1, "apply", refuse)
    assert temporal.ScaledConv1x1 is channel_dropout.ScaledConv1x1
    module = sti_module(backend)
    x, mask = sti_inputs(0)
    x.requires_grad_()
    if mode == "eval":
        module.eval()(x, mask, mask_input=True)
    elif mode == "no_grad":
        with torch.no_grad():
            module(x, mask, mask_input=True)
    elif mode == "torch backend":
        for layer in [*module.SFI_layers, *module.layers]:
            layer.backend = "torch"
        module(x, mask, mask_input=True)
    elif mode == "autocast":  # the input stage only: the Triton layers refuse bf16 on CPU (the interpreter)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            module.float()._input_stage(x.float(), mask.float(), mask_input=True)
    else:
        module.dropout.p = 0.0
        module(x, mask, mask_input=True)
