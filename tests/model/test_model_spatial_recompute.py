"""SP's recomputing fused path (trgnet_fast/model/spatial_recompute.py, docs/model.md#spatial-block-sp) against the
same module saving its intermediates (``_recompute = False``), float64 on CPU: the native backend's C++ kernels
and Triton's interpreter."""
import copy

import pytest
import torch

from backend_marks import needs
from trgnet_fast.backend import backend_status
from trgnet_fast.model import spatial
from trgnet_fast.model.spatial import MultiScaleGraphConv

N, C_IN, T, V, C_OUT = 2, 3, 7, 25, 64  # odd sizes; V = 25: the PKU skeleton
BACKENDS = [pytest.param(name, marks=needs(name)) for name in backend_status("cpu") if name != "torch"]


def sp_module(backend, seed=0):
    """A float64 train-mode PKU SP block on ``backend`` with non-zero alpha, beta and random BatchNorms; the first
    BatchNorm keeps a cumulative average (momentum None), the second the default exponential one (0.1): both
    rules of the BatchNorm bookkeeping the recomputing functions share."""
    torch.manual_seed(seed)
    module = MultiScaleGraphConv(C_IN, C_OUT, "PKU-subject").double().train()
    module.backend = backend
    with torch.no_grad():
        module.alpha.fill_(0.3)
        module.beta.fill_(-0.2)
        for bn, momentum in ((module.mlp.layers[1], None), (module.bn, 0.1)):
            bn.momentum = momentum
            bn.weight.normal_()
            bn.bias.normal_()
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 1.5)
    return module


def sp_inputs(seed, joint_graph_factory):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C_IN, V, T, generator=generator, dtype=torch.float64)
    return x, joint_graph_factory(V, generator, torch.float64)


def frame_mask(masked: bool):
    """None (published mode), or the (N, 1, T, 1) mask of mask-correct mode with videos of T and 4 frames."""
    if not masked:
        return None
    return (torch.arange(T)[None, :] < torch.tensor([T, 4])[:, None]).to(torch.float64)[:, None, :, None]


def train_step(module, x, joint_graph, seed, mask=None):
    """Output, input gradient and parameter gradients of one step with a random output gradient."""
    module.zero_grad()
    x = x.clone().requires_grad_()
    out = module(x, joint_graph, mask)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype))
    return out.detach(), x.grad, {name: p.grad for name, p in module.named_parameters()}


def assert_close_grad(got, want, name):
    # Absolute, on the gradient's scale: the train-mode BatchNorm cancels SP.mlp's conv bias gradient to rounding noise.
    err, scale = float((got - want).abs().max()), max(1.0, float(want.abs().max()))
    assert err <= 1e-10 * scale, (name, err, scale)


@pytest.mark.parametrize("masked", [False, True], ids=["published", "mask-correct"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_recompute_matches_saving_path(backend, masked, make_joint_graph):
    """Outputs, every parameter and input gradient, and the BatchNorm running statistics (both momentum rules)
    after one and after two steps equal those of the path that saves its intermediates; in mask-correct mode the
    BatchNorms' statistics are over the valid frames (a random gradient reaches the padded frames' outputs too)."""
    module = sp_module(backend)
    saving = copy.deepcopy(module)
    saving._recompute = False
    mask = frame_mask(masked)
    for step in range(2):
        x, joint_graph = sp_inputs(step, make_joint_graph)
        out, grad_x, grads = train_step(module, x, joint_graph, 10 + step, mask)
        ref_out, ref_grad_x, ref_grads = train_step(saving, x, joint_graph, 10 + step, mask)
        assert float((out - ref_out).abs().max()) <= 1e-12
        assert_close_grad(grad_x, ref_grad_x, "x")
        for name, grad in grads.items():
            assert_close_grad(grad, ref_grads[name], name)
        for (name, buffer), ref_buffer in zip(module.named_buffers(), saving.buffers()):
            if buffer.is_floating_point():  # the fused BatchNorm's sums against aten's: rounding apart
                assert float((buffer - ref_buffer).abs().max()) <= 1e-12 * max(1.0, float(ref_buffer.abs().max()))
            else:
                assert torch.equal(buffer, ref_buffer), (step, name)


@pytest.mark.parametrize("masked", [False, True], ids=["published", "mask-correct"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_recompute_saves_three_full_tensors_fewer(backend, masked, make_joint_graph, saved_bytes):
    """h, x3 and Y (N, 64, T, V) are recomputed, not saved (the two (C_OUT,) conv biases they are recomputed with are
    saved instead)."""
    module = sp_module(backend)
    x, joint_graph = sp_inputs(0, make_joint_graph)
    mask = frame_mask(masked)
    recomputing = saved_bytes(lambda: module(x.clone().requires_grad_(), joint_graph, mask))
    module._recompute = False
    saving = saved_bytes(lambda: module(x.clone().requires_grad_(), joint_graph, mask))
    biases = 2 * C_OUT * x.element_size()
    assert saving - recomputing >= 3 * N * C_OUT * T * V * x.element_size() - biases, (saving, recomputing)


@pytest.mark.parametrize("mode", ["eval", "frozen BatchNorms", "no_grad", "torch backend", "autocast"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_other_modes_keep_the_saving_path(backend, mode, make_joint_graph, monkeypatch):
    """Eval mode, BatchNorms in eval mode inside a training SP (the trainer's model.freeze_bn), no_grad, the torch
    backend and autocast never reach the recomputing functions (they use batch statistics)."""
    def refuse(*args):
        raise AssertionError("recomputing function called")

    for function in (spatial.MultiScaleBNReLU, spatial.AdaptiveBNResidualReLU):
        monkeypatch.setattr(function, "apply", refuse)
    module = sp_module(backend)
    x, joint_graph = sp_inputs(0, make_joint_graph)
    if mode == "eval":
        module.eval()(x, joint_graph)
    elif mode == "frozen BatchNorms":
        module.train().bn.eval()
        module(x, joint_graph)
    elif mode == "no_grad":
        with torch.no_grad():
            module(x, joint_graph)
    elif mode == "torch backend":
        module.backend = "torch"
        module(x, joint_graph)
    elif backend == "triton" and x.device.type == "cpu":  # refused before anything runs: the interpreter's bf16
        with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(ValueError, match="cannot run bfloat16"):
            module.float()(x.float(), joint_graph.float())
    else:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            module.float()(x.float(), joint_graph.float())


@pytest.mark.parametrize("backend", BACKENDS)
def test_frozen_batch_norms_skip_the_statistics_count(backend, make_joint_graph, monkeypatch):
    """With both BatchNorms frozen (eval mode inside a training SP) nothing uses batch statistics, so the valid-value
    count is not computed; with one of them in training mode it is, once per forward."""
    calls = []
    real_count = spatial.statistics_count
    monkeypatch.setattr(spatial, "statistics_count", lambda *args: calls.append(1) or real_count(*args))
    module = sp_module(backend)
    x, joint_graph = sp_inputs(0, make_joint_graph)
    module.mlp.layers[1].eval()
    module.bn.eval()
    module(x, joint_graph, frame_mask(True))
    assert calls == []
    module.bn.train()
    module(x, joint_graph, frame_mask(True))
    assert calls == [1]
