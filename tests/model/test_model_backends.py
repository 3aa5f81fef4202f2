"""The model on every usable backend: same numbers as the reference, and one graph under torch.compile.

Tests without the ``gpu`` marker run on the GPU when there is one (Triton compiled for real), else on CPU
(Triton's interpreter, the native module's C++ CPU kernels)."""
from copy import deepcopy

import pytest
import torch

from backend_marks import needs
from trgnet_fast import backend as backend_module
from trgnet_fast.backend import model_backend
from trgnet_fast.ops.registry import OPS

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FUSED_OPS = tuple(OPS)  # the model runs every fused op
# A train-mode BatchNorm right after SP's 1x1 conv cancels that conv's bias: its gradient is rounding
# noise on every backend, so it has no meaningful relative error.
CANCELLED_GRAD = "SP.mlp.layers.0.bias"
# Every kind of layer of the model (SP, encoder layers with an SFI fusion, a refinement decoder stage, a
# boundary TCN stage) with 4 attention layers instead of 20: small enough for Triton's interpreter.
SMALL_CONFIG = dict(n_layers=2, n_refine_layers=2, n_stages=2, SFI_layer=[1])


def rel_error(out, ref):
    out, ref = out.detach().double(), ref.detach().double()
    return float((out - ref).norm() / ref.norm())


def _model_and_inputs(make_model, make_inputs, lengths, device=DEVICE, **config):
    """A TCG-15 TRGNet (torch backend, default config updated with ``config``) and its (x, mask,
    joint_graph) of the given valid lengths, on ``device``. SP's alpha and beta are set non-zero: at their
    initial 0 the adaptive graph conv's learned graph terms would not reach its output."""
    model = make_model("TCG-15", backend="torch", **config).to(device)
    model.set_dropout_masks("hashed")  # the torch path drops what the fused AttModules drop
    with torch.no_grad():
        model.SP.alpha.fill_(0.3)
        model.SP.beta.fill_(-0.2)
    return model, [t.to(device) for t in make_inputs("TCG-15", lengths=lengths)]


def _train_step(model, inputs):
    """Train-mode outputs and parameter gradients; the same dropout masks for every backend."""
    torch.manual_seed(123)
    model.zero_grad()
    logits, boundaries, features, logit_scale = model.train()(*inputs)
    outputs = logits + boundaries + features
    loss = sum((o * torch.linspace(-1, 1, o.shape[-1], device=o.device)).sum() for o in outputs)
    (loss * logit_scale.sum()).backward()
    return outputs, {n: p.grad.clone() for n, p in model.named_parameters()}


ROUNDINGS = 4  # float32 torch runs: the parameters as given and rounded 3 other ways


def _rounded_differently(model, seed: int):
    """A copy of ``model`` with every parameter moved by a relative N(0, 2^-24) step: the same problem as float32
    rounding would pose had it rounded the other way (the op tests' rule, docs/architecture.md#parity)."""
    generator = torch.Generator().manual_seed(seed)
    copy = deepcopy(model)
    with torch.no_grad():
        for p in copy.parameters():
            p.mul_(1 + torch.randn(p.shape, generator=generator).to(p.device) * 2.0 ** -24)
    return copy


def assert_fused_as_close_as_torch_fp32(model, inputs, results, fused):
    """``results[fused]`` (float32 outputs, parameter gradients) is within 2x (or 1e-5) of the error of float32
    torch against the float64 reference, computed here on ``model`` (turned float64). That error is a random
    variable of the rounding (a gradient that cancels, such as SP's alpha, moves by several x with it), so it is
    the largest of ``ROUNDINGS`` runs: ``results["torch"]`` and runs with the parameters rounded other ways."""
    torch_runs = [results["torch"]]
    for seed in range(1, ROUNDINGS):
        copy = _rounded_differently(model, seed)
        copy.set_backend("torch")
        torch_runs.append(_train_step(copy, inputs))
    model.double().set_backend("torch")
    ref_out, ref_grads = _train_step(model, [t.double() if t.is_floating_point() else t for t in inputs])

    def errors(run):
        out, grads = run
        errs = {f"out{i}": rel_error(o, r) for i, (o, r) in enumerate(zip(out, ref_out))}
        errs.update({n: rel_error(g, ref_grads[n]) for n, g in grads.items() if n != CANCELLED_GRAD})
        return errs

    fused_errs = errors(results[fused])
    runs = [errors(run) for run in torch_runs]
    torch_fp32 = {k: max(r[k] for r in runs) for k in fused_errs}
    worse = {k: (e, torch_fp32[k]) for k, e in fused_errs.items() if e > max(2 * torch_fp32[k], 1e-5)}
    assert not worse, worse


def assert_backend_matches_the_float64_reference(model, inputs, backend):
    """Every fused op of the model resolves to ``backend`` on the inputs' device (no silent torch run),
    and float32 train steps on torch and on ``backend`` pass ``assert_fused_as_close_as_torch_fp32``."""
    device = inputs[0].device.type
    assert {op: model_backend(op, backend, device) for op in FUSED_OPS} == dict.fromkeys(FUSED_OPS, backend)
    results = {}
    for name in ("torch", backend):
        model.set_backend(name)
        results[name] = _train_step(model, inputs)
    assert_fused_as_close_as_torch_fp32(model, inputs, results, backend)


def _made_asymmetric(model, inputs, seed: int = 7):
    """``inputs`` with a random non-symmetric joint graph, and ``model`` with a random non-symmetric SP.A_res of
    size 0.1: the text joint graph and the hop-ring adjacencies are symmetric, so a kernel that applies a graph
    transposed gives the same numbers on them. Checks, on the torch backend, that transposing both graphs changes
    the model's outputs, so the parity below tells a transposed graph apart."""
    generator = torch.Generator().manual_seed(seed)
    x, mask, joint_graph = inputs
    asymmetric = torch.rand(joint_graph.shape, generator=generator).to(joint_graph)
    v = joint_graph.shape[0]
    with torch.no_grad():
        model.SP.A_res.copy_(0.1 * torch.randn(model.SP.A_res.shape, generator=generator))
        transposed = deepcopy(model).eval()
        scales = transposed.SP.A_res.shape[0] // v
        transposed.SP.A_res.copy_(model.SP.A_res.view(scales, v, v).transpose(1, 2).reshape(-1, v))
        transposed.SP.A_powers = transposed.SP.A_powers.view(scales, v, v).transpose(1, 2).reshape(-1, v)
        model.eval()
        out, out_t = model(x, mask, asymmetric)[0], transposed(x, mask, asymmetric.T.contiguous())[0]
    assert rel_error(out_t, out) > 1e-3, "the asymmetric graphs do not change the outputs"
    return [x, mask, asymmetric]


@needs("cuda", "cpu")
def test_native_backend_matches_the_float64_reference(make_model, make_inputs):
    """The whole model, float32, on the native backend's C++ CPU kernels (graph convs and linear
    attention) is as close to the float64 reference as float32 on torch (within 2x, or 1e-5 relative),
    for every train-mode output and parameter gradient."""
    model, inputs = _model_and_inputs(make_model, make_inputs, (23, 17), device="cpu")
    assert_backend_matches_the_float64_reference(model, inputs, "cuda")


@pytest.mark.parametrize("backend, device", [pytest.param("cuda", "cpu", marks=needs("cuda", "cpu")),
                                             pytest.param("triton", DEVICE, marks=needs("triton", DEVICE))])
def test_backend_matches_the_float64_reference_with_asymmetric_graphs(backend, device, make_model, make_inputs):
    """As the tests above with a non-symmetric joint graph and SP.A_res (a graph applied transposed anywhere in a
    fused path would show), on ``SMALL_CONFIG`` with one padded sample: the native C++ kernels on CPU, Triton where
    the tests run it (its interpreter without a GPU)."""
    model, inputs = _model_and_inputs(make_model, make_inputs, (9, 6), device=device, **SMALL_CONFIG)
    inputs = _made_asymmetric(model, inputs)
    assert_backend_matches_the_float64_reference(model, inputs, backend)


@needs("triton", DEVICE)
def test_triton_backend_matches_the_float64_reference(make_model, make_inputs):
    """The whole model, float32, on the Triton backend (SP's multi-scale and adaptive graph convs and
    every linear attention; Triton's interpreter on CPU) is as close to the float64 reference as float32
    on torch (within 2x, or 1e-5 relative), for every train-mode output and parameter gradient. A batch
    of 2 with one padded sample, on ``SMALL_CONFIG``."""
    model, inputs = _model_and_inputs(make_model, make_inputs, (6, 4), **SMALL_CONFIG)
    assert_backend_matches_the_float64_reference(model, inputs, "triton")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", [pytest.param(b, marks=needs(b, "cuda")) for b in ("triton", "cuda")])
def test_gpu_backend_matches_the_float64_reference(backend, make_model, make_inputs, monkeypatch):
    """The published TCG-15 model, float32, on the GPU kernels of ``backend`` (Triton compiled, or the
    native CUDA kernels) at lengths of several frame tiles, 300 and 213: every train-mode output and
    parameter gradient is as close to the float64 reference as float32 torch on the GPU (within 2x, or
    1e-5 relative). cuDNN's TF32 convolutions are off, so torch's errors are those of float32."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    model, inputs = _model_and_inputs(make_model, make_inputs, (300, 213), device="cuda")
    assert_backend_matches_the_float64_reference(model, inputs, backend)


@pytest.mark.parametrize("backend", [
    "torch",
    pytest.param("cuda", marks=needs("cuda", DEVICE)),
    pytest.param("triton", marks=[pytest.mark.gpu, needs("triton", DEVICE)]),
])
def test_model_traces_as_one_graph(backend, make_model, make_inputs):
    """No graph break (fullgraph=True) in eval mode: backend choice and input checks stay out of the graph,
    and the compiled model gives the eager outputs.

    "triton" runs on the GPU only: under Triton's CPU interpreter the launchers cannot run on the fake
    tensors torch.compile traces with (Dynamo: "Cannot access data pointer of Tensor (e.g. FakeTensor,
    FunctionalTensor)")."""
    torch._dynamo.reset()
    model, inputs = _model_and_inputs(make_model, make_inputs, (19, 19))
    model.set_backend(backend)
    model.eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        got, ref = compiled(*inputs), model(*inputs)
    for g, r in zip(got, ref):
        assert torch.equal(g, r)  # the "eager" compile backend runs the very ops of the eager model


def test_sp_backend_follows_the_model(make_model, monkeypatch):
    """set_backend reaches SP; an op a backend does not implement runs the published computation."""
    model = make_model("TCG-15", backend="torch")
    for backend in ("torch", "auto", "triton", "cuda", None):
        model.set_backend(backend)
        assert model.SP.backend == backend
    unimplemented = "some_future_op"
    monkeypatch.setitem(backend_module._IMPLEMENTED, unimplemented, {"torch"})
    assert model_backend(unimplemented, "triton", "cpu") == "torch"
    assert model_backend(unimplemented, "auto", "cpu") == "torch"
