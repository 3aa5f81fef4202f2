"""Layers of TRG-Net against direct evaluations of the published formulas (docs/model.md#spatial-block-sp
to docs/model.md#boundary-branch), float64."""
import math

import pytest
import torch

from trgnet_fast.model import attention as attention_module
from trgnet_fast.model import dropout_seeds as dropout_seeds_module
from trgnet_fast.model.attention import AttModule, LinearAttention
from trgnet_fast.model.spatial import CTRGC, MultiScaleGraphConv
from trgnet_fast.model.temporal import DilatedResidualLayer, SpatialFeatureInjection


def rel_error(out, ref):
    return float((out - ref).detach().norm() / ref.detach().norm())


def conv1x1(conv, x):
    """A 1×1 convolution as an explicit channel matmul; x: (N, C, ...)."""
    w = conv.weight.reshape(conv.weight.shape[0], conv.weight.shape[1])
    return torch.einsum("oc,nc...->no...", w, x) + conv.bias.reshape(-1, *([1] * (x.dim() - 2)))


def dilated_conv3(conv, x, d):
    """Kernel-3 Conv1d with dilation d and zero padding d, by explicit shifts; x: (N, C, T)."""
    n, c, t = x.shape
    padded = torch.cat([x.new_zeros(n, c, d), x, x.new_zeros(n, c, d)], dim=2)
    taps = [padded[:, :, j * d:j * d + t] for j in range(3)]
    return sum(torch.einsum("oc,nct->not", conv.weight[:, :, j], taps[j]) for j in range(3)) + conv.bias[:, None]


def randomize_batch_norm(bn, generator):
    bn.running_mean.copy_(torch.randn(bn.num_features, generator=generator, dtype=torch.float64))
    bn.running_var.copy_(torch.rand(bn.num_features, generator=generator, dtype=torch.float64) + 0.5)
    bn.weight.data.copy_(torch.randn(bn.num_features, generator=generator, dtype=torch.float64))
    bn.bias.data.copy_(torch.randn(bn.num_features, generator=generator, dtype=torch.float64))


def batch_norm_eval(bn, x):
    shape = (1, -1) + (1,) * (x.dim() - 2)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (x - bn.running_mean.reshape(shape)) * scale.reshape(shape) + bn.bias.reshape(shape)


def ctrgc_loops(module, x, joint_graph, alpha, beta):
    """docs/model.md#ctrgc by explicit loops over samples and joint pairs; x: (N, C, T, V)."""
    n_batch, c, t, v = x.shape
    a, b, x3 = conv1x1(module.conv1, x), conv1x1(module.conv2, x), conv1x1(module.conv3, x)
    w4 = module.conv4.weight[:, :, 0, 0]
    y = torch.zeros_like(x3)
    for n in range(n_batch):
        p, q = a[n].mean(0), b[n].mean(0)  # (T, V): mean over the 8 relation channels
        a_bar, b_bar = a[n].mean(1), b[n].mean(1)  # (8, V): mean over all frames
        for u in range(v):
            for w in range(v):
                frame_graph = beta * torch.tanh(p[:, u] - q[:, w]) + joint_graph[u, w]  # (T,)
                channel_graph = alpha * (w4 @ torch.tanh(a_bar[:, u] - b_bar[:, w]) + module.conv4.bias) \
                    + joint_graph[u, w]  # (C,)
                y[n, :, :, u] += (frame_graph[None, :] + channel_graph[:, None]) * x3[n, :, :, w]
    return y


def test_ctrgc_matches_published_formulas():
    generator = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    module = CTRGC(16).double()
    for conv in (module.conv1, module.conv2, module.conv3, module.conv4):
        conv.bias.data.normal_()
    x = torch.randn(2, 16, 5, 6, generator=generator, dtype=torch.float64)
    joint_graph = torch.rand(6, 6, generator=generator, dtype=torch.float64)
    alpha = torch.tensor([0.7], dtype=torch.float64)
    beta = torch.tensor([-1.3], dtype=torch.float64)
    out = module(x, joint_graph, alpha, beta)
    assert rel_error(out, ctrgc_loops(module, x, joint_graph, 0.7, -1.3)) < 1e-12


def test_ctrgc_at_init_is_twice_the_joint_graph_aggregation():
    torch.manual_seed(2)
    module = CTRGC(64).double()
    assert all(not conv.bias.any() for conv in (module.conv1, module.conv2, module.conv3, module.conv4))
    # Kaiming-normal fan_out: std = sqrt(2 / (out_channels * 1 * 1)).
    assert abs(float(module.conv3.weight.detach().std()) - math.sqrt(2 / 64)) < 0.02
    x = torch.randn(2, 64, 7, 25, dtype=torch.float64)
    joint_graph = torch.rand(25, 25, dtype=torch.float64)
    zero = torch.zeros(1, dtype=torch.float64)
    out = module(x, joint_graph, zero, zero)
    expected = 2 * torch.einsum("uv,nctv->nctu", joint_graph, conv1x1(module.conv3, x))
    assert rel_error(out, expected) < 1e-12


def test_spatial_block_matches_published_formulas():
    """Scale-major stacking (channel k*C_in + c), MLP, CTRGC, BN residual and ReLU (docs/model.md#spatial-block-sp)."""
    generator = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    sp = MultiScaleGraphConv(3, 64, "TCG-15").double().eval()
    with torch.no_grad():
        sp.A_res.normal_(0, 0.01)
        sp.alpha.fill_(0.4)
        sp.beta.fill_(-0.6)
        randomize_batch_norm(sp.mlp.layers[1], generator)
        randomize_batch_norm(sp.bn, generator)
    n, c_in, v, t = 2, 3, 17, 6
    x = torch.randn(n, c_in, v, t, generator=generator, dtype=torch.float64)
    joint_graph = torch.rand(v, v, generator=generator, dtype=torch.float64)
    out = sp(x, joint_graph)

    adjacency = sp.A_powers.double() + sp.A_res
    stacked = torch.zeros(n, 13 * c_in, t, v, dtype=torch.float64)
    for k in range(13):
        for c in range(c_in):
            for w in range(v):
                stacked[:, k * c_in + c, :, w] = torch.einsum("u,nut->nt", adjacency[k * v + w], x[:, c])
    x_m = torch.relu(batch_norm_eval(sp.mlp.layers[1], conv1x1(sp.mlp.layers[0], stacked)))
    y = ctrgc_loops(sp.CTRGCN, x_m, joint_graph, 0.4, -0.6)
    expected = torch.relu(batch_norm_eval(sp.bn, y) + x_m)
    assert out.shape == (n, 64, t, v)
    assert rel_error(out, expected) < 1e-12


def instance_norm(x, eps=1e-5):
    mean = x.mean(dim=2, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=2, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def linear_attention_direct(att, queries, keys, values, mask):
    """docs/model.md#linear-attention head by head with the sums accumulated frame by frame;
    inputs (N, T, C), mask (N, 1, T)."""
    def project(linear, z):
        return z @ linear.weight.T + linear.bias

    q, k, v = project(att.query_projection, queries), project(att.key_projection, keys), \
        project(att.value_projection, values)
    n_batch, t, c = q.shape
    d = c // 4
    heads = torch.zeros_like(q)
    for n in range(n_batch):
        for h in range(4):
            cols = slice(h * d, (h + 1) * d)
            kv = torch.zeros(d, d, dtype=q.dtype)
            ksum = torch.full((d,), 1e-6, dtype=q.dtype)
            for s in range(t):  # every frame, padding included
                phi_k = torch.sigmoid(k[n, s, cols])
                kv += torch.outer(phi_k, v[n, s, cols])
                ksum += phi_k
            phi_q = torch.sigmoid(q[n, :, cols])  # (T, d)
            heads[n, :, cols] = (phi_q @ kv) / (phi_q @ ksum)[:, None]
    return project(att.out_projection, heads) * mask[:, 0, :, None]


@pytest.mark.parametrize("mode, dilation", [("encoder", 1), ("encoder", 4), ("decoder", 2)])
def test_att_module_matches_published_formulas(mode, dilation):
    generator = torch.Generator().manual_seed(4)
    torch.manual_seed(4)
    alpha = 1.0 if mode == "encoder" else math.exp(-3)
    module = AttModule(dilation, 64, mode, alpha).double().eval()
    n, t = 2, 11
    x = torch.randn(n, 64, t, generator=generator, dtype=torch.float64)
    mask = torch.ones(n, 1, t, dtype=torch.float64)
    mask[1, :, 7:] = 0
    values = torch.randn(n, 64, t, generator=generator, dtype=torch.float64) * mask if mode == "decoder" else None
    out = module(x, values, mask)

    o = torch.relu(dilated_conv3(module.feed_forward[0], x, dilation))
    q = instance_norm(o).transpose(1, 2)
    attended_values = q if mode == "encoder" else values.transpose(1, 2)
    a = linear_attention_direct(module.att_layer, q, q, attended_values, mask).transpose(1, 2)
    expected = (x + conv1x1(module.conv_out, alpha * a + o)) * mask
    assert rel_error(out, expected) < 1e-12


def test_att_module_float32_close_to_float64():
    torch.manual_seed(5)
    module = AttModule(2, 64, "encoder", 1.0).eval()
    x = torch.randn(2, 64, 33)
    mask = torch.ones(2, 1, 33)
    mask[0, :, 20:] = 0
    reference = module.double()(x.double(), None, mask.double())
    out = module.float()(x, None, mask)
    assert rel_error(out.double(), reference) < 1e-5


def test_decoder_att_module_needs_values():
    module = AttModule(1, 64, "decoder", 1.0)
    with pytest.raises(ValueError, match="values"):
        module(torch.randn(1, 64, 5), None, torch.ones(1, 1, 5))


@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("mode", ["encoder", "decoder"])
def test_att_module_runs_as_one_fused_op_on_fused_backends(monkeypatch, backend, mode):
    """On a fused backend the layer is one ``att_module`` call with its own weights, alpha, dilation, the
    published dropout probabilities (train) or none (eval) and the seed drawn in its place of the RNG stream:
    with the op's reference standing in for the kernels, train and eval outputs equal the torch path's."""
    from trgnet_fast.ops.att_module.reference import att_module_reference

    calls = []

    def recording_op(*args, backend=None, **kwargs):
        calls.append((backend, kwargs["dilation"], kwargs["attention_dropout"], kwargs["dropout"]))
        return att_module_reference(*args, **kwargs)

    monkeypatch.setattr(attention_module, "att_module", recording_op)
    monkeypatch.setattr(attention_module, "model_backend", lambda op, requested, device: requested)
    torch.manual_seed(2)
    module = AttModule(4, 16, mode, 0.3).double()
    module.dropout_masks = "hashed"  # the torch path drops what the fused op drops
    x = torch.randn(2, 16, 9, dtype=torch.float64)
    values = torch.randn(2, 16, 9, dtype=torch.float64) if mode == "decoder" else None
    mask = torch.ones(2, 1, 9, dtype=torch.float64)
    mask[1, :, 6:] = 0
    for train in (True, False):
        module.train(train)
        outputs = {}
        for name in ("torch", backend):
            module.backend = name
            torch.manual_seed(5)
            outputs[name] = module(x, values, mask)
        assert rel_error(outputs[backend], outputs["torch"]) < 1e-13
    assert calls == [(backend, 4, 0.05, 0.5), (backend, 4, 0.0, 0.0)]


def test_torch_path_keeps_nn_dropout_unless_hashed(monkeypatch):
    """By default the torch path draws its masks with nn.Dropout (the published computation) and no seed; with
    ``dropout_masks = "hashed"`` it draws one seed per call and hashes it."""
    drawn = []
    monkeypatch.setattr(dropout_seeds_module, "draw_dropout_seeds",
                        lambda device, count=1: drawn.append(device) or torch.full((count,), 3, device=device))
    module = AttModule(2, 16, "encoder", 1.0).train()
    module.backend = "torch"
    x, mask = torch.randn(2, 16, 7), torch.ones(2, 1, 7)
    torch.manual_seed(0)
    default = module(x, None, mask)
    assert drawn == []
    module.dropout_masks = "hashed"
    hashed = module(x, None, mask)
    assert drawn == [x.device] and not torch.allclose(default, hashed)


def test_linear_attention_calls_the_op_with_backend(monkeypatch):
    calls = []

    def recording_op(q, k, v, key_mask=None, eps=1e-6, backend=None):
        calls.append((tuple(q.shape), key_mask, eps, backend))
        return torch.zeros_like(v)

    monkeypatch.setattr(attention_module, "linear_attention", recording_op)
    att = LinearAttention(64, backend="torch")
    att(torch.randn(2, 9, 64), torch.randn(2, 9, 64), torch.randn(2, 9, 64), torch.ones(2, 1, 9))
    assert calls == [((2, 9, 4, 16), None, 1e-6, "torch")]


def test_spatial_feature_injection_matches_published_formulas():
    generator = torch.Generator().manual_seed(6)
    torch.manual_seed(6)
    sfi = SpatialFeatureInjection(19, 64).double().eval()
    n, t, v = 2, 5, 19
    group = torch.randn(n, 8, t, v, generator=generator, dtype=torch.float64)
    h = torch.randn(n, 64, t, generator=generator, dtype=torch.float64)
    mask = torch.ones(n, 1, t, dtype=torch.float64)
    mask[0, :, 3:] = 0
    out = sfi(group, h, mask)

    flat = torch.zeros(n, 8 * v, t, dtype=torch.float64)
    for w in range(v):
        for c in range(8):
            flat[:, w * 8 + c] = group[:, c, :, w]  # joint-major channel index v*8 + c
    s = conv1x1(sfi.conv_s, flat)
    fused = conv1x1(sfi.conv_fusion, torch.cat([h, s], dim=1)).transpose(1, 2)
    hidden = fused @ sfi.ff[0].weight.T + sfi.ff[0].bias
    hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))
    ff = hidden @ sfi.ff[3].weight.T + sfi.ff[3].bias
    expected = (ff.transpose(1, 2) + h) * mask
    assert rel_error(out, expected) < 1e-12


def test_dilated_residual_layer_matches_published_formula():
    generator = torch.Generator().manual_seed(7)
    torch.manual_seed(7)
    layer = DilatedResidualLayer(8, 64).double().eval()
    x = torch.randn(2, 64, 21, generator=generator, dtype=torch.float64)
    mask = torch.ones(2, 1, 21, dtype=torch.float64)
    mask[1, :, 15:] = 0
    expected = (x + conv1x1(layer.conv_in, torch.relu(dilated_conv3(layer.conv_dilated, x, 8)))) * mask
    assert rel_error(layer(x, mask), expected) < 1e-12
