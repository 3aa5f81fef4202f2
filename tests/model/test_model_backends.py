"""The model on every usable backend: same numbers as the reference, and one graph under torch.compile."""
import pytest
import torch

from trgnet_fast import _native
from trgnet_fast import backend as backend_module
from trgnet_fast.backend import backend_status, model_backend
from trgnet_fast.ops.adaptive_graph_conv import OP_NAME as ADAPTIVE_OP
from trgnet_fast.ops.multiscale_graph_conv import OP_NAME

NATIVE_OK, NATIVE_WHY = _native.available()
BACKENDS = ["torch", pytest.param("cuda", marks=pytest.mark.skipif(
    not NATIVE_OK, reason=f"native extension unavailable: {NATIVE_WHY}"))]


def rel_error(out, ref):
    out, ref = out.detach().double(), ref.detach().double()
    return float((out - ref).norm() / ref.norm())


def _train_step(model, inputs):
    """Train-mode outputs and parameter gradients; the same dropout masks for every backend."""
    torch.manual_seed(123)
    model.zero_grad()
    logits, boundaries, features, logit_scale = model.train()(*inputs)
    outputs = logits + boundaries + features
    loss = sum((o * torch.linspace(-1, 1, o.shape[-1])).sum() for o in outputs) * logit_scale.sum()
    loss.backward()
    return outputs, {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_fused_as_close_as_torch_fp32(model, inputs, results, fused):
    """``results[fused]`` (float32 outputs, parameter gradients) is within 2x (or 1e-5) of the error of
    ``results["torch"]`` against the float64 reference, computed here on ``model`` (turned float64)."""
    model.double().set_backend("torch")
    ref_out, ref_grads = _train_step(model, [t.double() if t.is_floating_point() else t for t in inputs])

    def errors(backend):
        out, grads = results[backend]
        errs = {f"out{i}": rel_error(o, r) for i, (o, r) in enumerate(zip(out, ref_out))}
        # A train-mode BatchNorm right after SP's 1x1 conv cancels that conv's bias: its gradient
        # is rounding noise on every backend, so it has no meaningful relative error.
        errs.update({n: rel_error(g, ref_grads[n]) for n, g in grads.items() if n != CANCELLED_GRAD})
        return errs

    fused_errs, torch_fp32 = errors(fused), errors("torch")
    worse = {k: (e, torch_fp32[k]) for k, e in fused_errs.items() if e > max(2 * torch_fp32[k], 1e-5)}
    assert not worse, worse


@pytest.mark.skipif(not NATIVE_OK, reason=f"native extension unavailable: {NATIVE_WHY}")
def test_native_backend_matches_the_float64_reference(make_model, make_inputs):
    """Float32 on the native backend is as close to the float64 reference as float32 on torch
    (within 2x, or 1e-5 relative), for every train-mode output and parameter gradient."""
    model = make_model("TCG-15", backend="torch")
    with torch.no_grad():
        model.SP.alpha.fill_(0.3)
        model.SP.beta.fill_(-0.2)
    inputs = make_inputs("TCG-15", lengths=(23, 17))
    results = {}
    for backend in ("torch", "cuda"):
        model.set_backend(backend)
        results[backend] = _train_step(model, inputs)
    assert_fused_as_close_as_torch_fp32(model, inputs, results, "cuda")


CANCELLED_GRAD = "SP.mlp.layers.0.bias"


@pytest.mark.parametrize("backend", BACKENDS)
def test_model_traces_as_one_graph(backend, make_model, make_inputs):
    """No graph break (fullgraph=True) in eval mode: backend choice and input checks stay out of the graph."""
    torch._dynamo.reset()
    model = make_model("TCG-15", backend=backend).eval()
    inputs = make_inputs("TCG-15", lengths=(19, 19))
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        got, ref = compiled(*inputs), model(*inputs)
    for g, r in zip(got, ref):
        assert torch.allclose(g, r, rtol=1e-5, atol=1e-6)


TRITON_OK, TRITON_WHY = backend_status("cpu")["triton"]


@pytest.mark.skipif(not TRITON_OK, reason=f"triton unusable on CPU: {TRITON_WHY}")
def test_triton_spatial_front_end_matches_the_float64_reference(make_model, make_inputs):
    """SP's multi-scale and adaptive graph convs on the Triton backend (CPU interpreter): every train-mode
    output and parameter gradient is as close to the float64 reference as float32 on torch (within 2x,
    or 1e-5).

    Only SP is switched (its ``backend`` attribute, which ``TRGNet.set_backend`` sets), so the test
    isolates the graph convs from the linear attention's backend."""
    model = make_model("TCG-15", backend="torch")
    with torch.no_grad():
        model.SP.alpha.fill_(0.3)
        model.SP.beta.fill_(-0.2)
    inputs = make_inputs("TCG-15", lengths=(11, 8))
    results = {"torch": _train_step(model, inputs)}
    model.SP.backend = "triton"  # SP only: the attention layers stay on torch
    assert model_backend(OP_NAME, model.SP.backend, "cpu") == "triton"
    assert model_backend(ADAPTIVE_OP, model.SP.backend, "cpu") == "triton"
    results["triton"] = _train_step(model, inputs)
    assert_fused_as_close_as_torch_fp32(model, inputs, results, "triton")


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
