"""The whole TRG-Net model: outputs, published parameter names, gradients, quirks, input checks."""
import io
import itertools
import math
import re

import pytest
import torch

from trgnet_fast import TRGNet
from trgnet_fast.host_sync import NoHostSync
from trgnet_fast.model import attention as attention_module
from trgnet_fast.model import default_config
from trgnet_fast.model.attention import AttModule, LinearAttention
from trgnet_fast.model.text_heads import TextFeatures
from trgnet_fast.ops.linear_attention.reference import linear_attention_reference

MAIN_DATASETS = ["PKU-subject", "LARA", "MCFS-130", "TCG-15"]
N_CLASSES = {"PKU-subject": 52, "LARA": 8, "MCFS-130": 130, "TCG-15": 15}


def rel_error(out, ref):
    return float((out.double() - ref.double()).norm() / ref.double().norm())


@pytest.mark.parametrize("dataset", MAIN_DATASETS)
def test_output_structure(dataset, make_model, make_inputs):
    model = make_model(dataset, text_dim=32)
    x, mask, joint_graph = make_inputs(dataset, lengths=(20, 16))
    k = N_CLASSES[dataset]

    logits, boundaries, features, logit_scale = model.train()(x, mask, joint_graph)
    assert [tuple(t.shape) for t in logits] == [(2, k, 20)] * 2
    assert [tuple(t.shape) for t in boundaries] == [(2, 1, 20)] * 3
    assert [tuple(t.shape) for t in features] == [(2, 32, 20)] * 2
    assert logit_scale is model.logit_scale and tuple(logit_scale.shape) == (1,)
    assert abs(float(logit_scale.detach()) - math.log(1 / 0.07)) < 1e-6

    with torch.no_grad():
        final_logits, final_boundary = model.eval()(x, mask, joint_graph)
    assert tuple(final_logits.shape) == (2, k, 20) and tuple(final_boundary.shape) == (2, 1, 20)
    assert torch.isfinite(final_logits).all() and torch.isfinite(final_boundary).all()


@pytest.mark.parametrize("backend", ["torch", "cuda"])
def test_deferred_text_heads_are_the_heads_and_their_inputs(backend, make_model, make_inputs):
    """``defer_text_heads``: every text-space feature comes as ``TextFeatures`` whose head is the model's own
    (conv_feature, conv_asb_feature: their parameters, as views) and whose materialisation equals the applied head,
    bit for bit, with the same dropout draws (same seed); the other outputs are unchanged."""
    model = make_model("PKU-subject", text_dim=32, backend=backend).train()
    x, mask, joint_graph = make_inputs("PKU-subject", lengths=(20, 16))
    torch.manual_seed(7)
    applied = model(x, mask, joint_graph)
    torch.manual_seed(7)
    deferred = model(x, mask, joint_graph, defer_text_heads=True)
    for got, want in zip(deferred[0] + deferred[1], applied[0] + applied[1]):
        assert torch.equal(got, want)
    heads = [model.conv_feature, *model.conv_asb_feature]
    assert len(deferred[2]) == len(heads)
    for features, head, want in zip(deferred[2], heads, applied[2]):
        assert isinstance(features, TextFeatures)
        assert features.weight._base is head.weight and features.bias is head.bias
        assert torch.equal(features.materialize(), want)


def test_parameter_counts_match_spec(make_model):
    """PKU ≈ 1.415 M, LARA ≈ 1.372 M, MCFS-130 ≈ 1.422 M, TCG-15 ≈ 1.358 M (text_dim 768;
    docs/model.md#parameter-names-and-checkpoints)."""
    counts = {d: sum(p.numel() for p in make_model(d).parameters()) for d in MAIN_DATASETS}
    assert counts == {"PKU-subject": 1_415_115, "LARA": 1_372_427, "MCFS-130": 1_421_927, "TCG-15": 1_357_617}


# The published state_dict layout, as listed in docs/model.md#parameter-names-and-checkpoints.
PUBLISHED_KEY_PATTERNS = """
logit_scale
SP.A_res  SP.alpha  SP.beta
SP.mlp.layers.{0,1}.{weight,bias}   SP.mlp.layers.1.{running_mean,running_var,num_batches_tracked}
SP.CTRGCN.conv{1,2,3,4}.{weight,bias}
SP.bn.{weight,bias,running_mean,running_var,num_batches_tracked}
STI.conv_in.{weight,bias}  STI.conv_t.{weight,bias}  STI.conv_out.{weight,bias}
STI.SFI_layers.{0..8}.conv_s.{weight,bias}
STI.SFI_layers.{0..8}.ff.{0,3}.{weight,bias}
STI.SFI_layers.{0..8}.conv_fusion.{weight,bias}
STI.layers.{0..9}.feed_forward.0.{weight,bias}
STI.layers.{0..9}.att_layer.{query,key,value,out}_projection.{weight,bias}
STI.layers.{0..9}.conv_out.{weight,bias}
conv_cls.{weight,bias}  conv_bound.{weight,bias}  conv_feature.{weight,bias}
asb.0.conv_in.{weight,bias}  asb.0.conv_out.{weight,bias}
asb.0.layers.{0..9}.feed_forward.0.{weight,bias}
asb.0.layers.{0..9}.att_layer.{query,key,value,out}_projection.{weight,bias}
asb.0.layers.{0..9}.conv_out.{weight,bias}
conv_asb_feature.0.{weight,bias}
brb.{0,1}.conv_in.{weight,bias}  brb.{0,1}.conv_out.{weight,bias}
brb.{0,1}.layers.{0..9}.conv_dilated.{weight,bias}
brb.{0,1}.layers.{0..9}.conv_in.{weight,bias}
"""


def expand_pattern(pattern):
    """Expand {a,b,...} alternatives and {i..j} integer ranges."""
    match = re.search(r"\{([^}]*)\}", pattern)
    if match is None:
        return [pattern]
    body = match.group(1)
    if ".." in body:
        lo, hi = body.split("..")
        options = [str(i) for i in range(int(lo), int(hi) + 1)]
    else:
        options = body.split(",")
    head, tail = pattern[:match.start()], pattern[match.end():]
    return list(itertools.chain.from_iterable(expand_pattern(head + o + tail) for o in options))


def test_state_dict_keys_are_the_published_ones(make_model):
    expected = set(itertools.chain.from_iterable(
        expand_pattern(p) for p in PUBLISHED_KEY_PATTERNS.split()))
    state = make_model("PKU-subject").state_dict()
    assert len(expected) == 442
    assert len(state) == 442
    assert set(state) == expected
    shapes = {
        "logit_scale": (1,), "SP.A_res": (325, 25), "SP.alpha": (1,), "SP.beta": (1,),
        "SP.mlp.layers.0.weight": (64, 156, 1, 1), "SP.CTRGCN.conv1.weight": (8, 64, 1, 1),
        "SP.CTRGCN.conv4.weight": (64, 8, 1, 1), "STI.conv_in.weight": (80, 64, 1, 1),
        "STI.conv_t.weight": (64, 200, 1), "STI.SFI_layers.8.conv_s.weight": (64, 200, 1),
        "STI.SFI_layers.0.conv_fusion.weight": (64, 128, 1), "STI.SFI_layers.0.ff.3.weight": (64, 64),
        "STI.layers.9.feed_forward.0.weight": (64, 64, 3), "STI.layers.0.att_layer.query_projection.weight": (64, 64),
        "conv_cls.weight": (52, 64, 1), "conv_bound.weight": (1, 64, 1), "conv_feature.weight": (768, 64, 1),
        "asb.0.conv_in.weight": (64, 52, 1),
        "asb.0.conv_out.weight": (52, 64, 1), "conv_asb_feature.0.weight": (768, 64, 1),
        "brb.1.conv_in.weight": (64, 1, 1), "brb.1.layers.9.conv_dilated.weight": (64, 64, 3),
        "brb.0.conv_out.weight": (1, 64, 1),
    }
    assert {k: tuple(state[k].shape) for k in shapes} == shapes
    mcfs = make_model("MCFS-130").state_dict()
    assert tuple(mcfs["SP.mlp.layers.0.weight"].shape) == (64, 26, 1, 1)
    assert tuple(make_model("LARA").state_dict()["STI.conv_t.weight"].shape) == (64, 152, 1)


def test_strict_load_round_trip(make_model, make_inputs):
    trained = make_model("LARA", seed=0)
    with torch.no_grad():  # make the non-trivial state (BN statistics, alpha/beta) part of the check
        trained.train()(*make_inputs("LARA", lengths=(18, 18)))
        trained.SP.alpha.fill_(0.3)
        trained.SP.beta.fill_(-0.2)
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    buffer.seek(0)
    fresh = make_model("LARA", seed=1)
    fresh.load_state_dict(torch.load(buffer), strict=True)
    inputs = make_inputs("LARA", lengths=(18, 12), seed=5)
    with torch.no_grad():
        out_a, out_b = trained.eval()(*inputs), fresh.eval()(*inputs)
    assert all(torch.equal(a, b) for a, b in zip(out_a, out_b))


def test_gradients_reach_every_parameter(make_model, make_inputs):
    model = make_model("PKU-subject", text_dim=16).train()
    with torch.no_grad():  # alpha = beta = 0 at init would block the dynamic-graph gradients
        model.SP.alpha.fill_(0.5)
        model.SP.beta.fill_(0.5)
    logits, boundaries, features, logit_scale = model(*make_inputs("PKU-subject", lengths=(24, 18)))
    generator = torch.Generator().manual_seed(0)
    loss = logit_scale.sum()
    for out in logits + boundaries + features:
        loss = loss + (out * torch.randn(out.shape, generator=generator)).sum()
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_general_stage_counts(make_model, make_inputs):
    model = make_model("TCG-15", n_layers=4, n_refine_layers=3, n_stages_asb=4, n_stages_brb=2,
                       SFI_layer=[3, 1], text_dim=8)
    x, mask, joint_graph = make_inputs("TCG-15", lengths=(12, 9))
    logits, boundaries, features, _ = model.train()(x, mask, joint_graph)
    assert [tuple(t.shape) for t in logits] == [(2, 15, 12)] * 4
    assert [tuple(t.shape) for t in boundaries] == [(2, 1, 12)] * 2
    assert [tuple(t.shape) for t in features] == [(2, 8, 12)] * 4
    assert len(model.STI.SFI_layers) == 2 and model.STI.conv_in.out_channels == 24
    for s, stage in enumerate(model.asb):
        assert len(stage.layers) == 3
        assert all(layer.alpha == math.exp(-3 * s) for layer in stage.layers)
        assert [layer.feed_forward[0].dilation[0] for layer in stage.layers] == [1, 2, 4]
    assert all(len(stage.layers) == 3 for stage in model.brb)

    defaults = make_model("TCG-15", n_stages=3, n_stages_asb=None, n_stages_brb=None)
    assert len(defaults.asb) == 2 and len(defaults.brb) == 2 and len(defaults.STI.SFI_layers) == 9

    encoder_only = make_model("TCG-15", n_stages=1, n_stages_asb=None, n_stages_brb=None).eval()
    with torch.no_grad():
        final_logits, final_boundary = encoder_only(x, mask, joint_graph)
        feature = encoder_only.STI(encoder_only.SP(x, joint_graph) * mask[..., None], mask.float())
    torch.testing.assert_close(final_logits, encoder_only.conv_cls(feature), rtol=0, atol=0)
    torch.testing.assert_close(final_boundary, encoder_only.conv_bound(feature), rtol=0, atol=0)


@pytest.mark.parametrize("bad", [{"n_stages_asb": 0}, {"n_stages_brb": 0}, {"SFI_layer": [1, 1]},
                                 {"SFI_layer": [10]}, {"dataset": "NTU"}])
def test_constructor_rejects_bad_arguments(bad):
    (name,) = bad
    with pytest.raises(ValueError, match=name):
        TRGNet(**{**default_config("PKU-subject"), **bad})


def test_decoder_values_follow_the_published_train_eval_difference(make_model, make_inputs):
    """In training, decoder stage s > 0 attends to stage s-1's hidden state; in eval every stage attends
    to the encoder feature F (published behaviour)."""
    model = make_model("LARA", n_layers=3, n_refine_layers=2, n_stages_asb=3, SFI_layer=[1, 2])
    received, produced = [], []
    for stage in model.asb:
        stage.register_forward_pre_hook(lambda module, args: received.append(args[1]))
        stage.register_forward_hook(lambda module, args, output: produced.append(output[1]))
    captured_feature = []
    model.STI.register_forward_hook(lambda module, args, output: captured_feature.append(output))
    inputs = make_inputs("LARA", lengths=(10, 7))
    mask = inputs[1].float()

    model.train()(*inputs)
    torch.testing.assert_close(received[0], captured_feature[0] * mask, rtol=0, atol=0)
    torch.testing.assert_close(received[1], produced[0] * mask, rtol=0, atol=0)

    received.clear(), produced.clear(), captured_feature.clear()
    with torch.no_grad():
        model.eval()(*inputs)
    for values in received:
        torch.testing.assert_close(values, captured_feature[0] * mask, rtol=0, atol=0)


def test_refinement_stage_inputs_and_heads(make_model, make_inputs):
    """Decoder stages take softmax(previous logits) * mask, boundary stages sigmoid(previous boundary
    logits); heads: conv_cls/conv_bound/conv_feature on F, conv_asb_feature on the decoder hidden."""
    model = make_model("MCFS-130", n_layers=3, n_refine_layers=2, SFI_layer=[1], text_dim=8).train()
    stage_inputs, hidden = {}, []
    model.asb[0].register_forward_pre_hook(lambda m, a: stage_inputs.__setitem__("asb0", a[0]))
    model.asb[0].register_forward_hook(lambda m, a, out: hidden.append(out[1]))
    for j, stage in enumerate(model.brb):
        stage.register_forward_pre_hook(lambda m, a, j=j: stage_inputs.__setitem__(f"brb{j}", a[0]))
    features_f = []
    model.STI.register_forward_hook(lambda m, a, out: features_f.append(out))
    x, mask, joint_graph = make_inputs("MCFS-130", lengths=(11, 8))
    torch.manual_seed(0)
    logits, boundaries, features, _ = model(x, mask, joint_graph)

    mask = mask.float()
    feature = features_f[0]
    exact = dict(rtol=0, atol=0)
    torch.testing.assert_close(stage_inputs["asb0"], torch.softmax(logits[0], dim=1) * mask, **exact)
    torch.testing.assert_close(stage_inputs["brb0"], torch.sigmoid(boundaries[0]), **exact)
    torch.testing.assert_close(stage_inputs["brb1"], torch.sigmoid(boundaries[1]), **exact)
    torch.testing.assert_close(logits[0], model.conv_cls(feature), **exact)
    torch.testing.assert_close(boundaries[0], model.conv_bound(feature), **exact)
    torch.testing.assert_close(features[0], model.conv_feature(feature), **exact)
    torch.testing.assert_close(features[1], model.conv_asb_feature[0](hidden[0]), **exact)
    assert torch.equal(feature[1, :, 8:], torch.zeros(64, 3))  # F is masked


def test_sti_group_order_and_joint_flattening(make_model, make_inputs):
    """conv_t gets the last 8 conv_in channels, SFI_j gets channels 8j..8j+7 right before encoder
    layer SFI_layer[j]; both flatten (8, T, V) with channel index v*8 + c."""
    model = make_model("LARA", n_layers=6, SFI_layer=[5, 2], n_stages_asb=1, n_stages_brb=1).eval()
    sti = model.STI
    seen, order = {}, []
    sti.conv_in.register_forward_hook(lambda m, a, out: seen.__setitem__("z", out))
    sti.conv_t.register_forward_hook(lambda m, a, out: seen.__setitem__("conv_t", a[0]))
    for j, sfi in enumerate(sti.SFI_layers):
        sfi.register_forward_pre_hook(lambda m, a, j=j: order.append(f"SFI{j}"))
        sfi.conv_s.register_forward_hook(lambda m, a, out, j=j: seen.__setitem__(f"SFI{j}", a[0]))
    for i, layer in enumerate(sti.layers):
        layer.register_forward_pre_hook(lambda m, a, i=i: order.append(f"L{i}"))
    with torch.no_grad():
        model(*make_inputs("LARA", lengths=(9, 9)))

    assert order == ["L0", "L1", "SFI0", "L2", "L3", "L4", "SFI1", "L5"]
    z = seen["z"]
    assert z.shape[1] == 24
    for v in range(19):
        for c in range(8):
            assert torch.equal(seen["conv_t"][:, v * 8 + c], z[:, 16 + c, :, v])
            assert torch.equal(seen["SFI0"][:, v * 8 + c], z[:, c, :, v])
            assert torch.equal(seen["SFI1"][:, v * 8 + c], z[:, 8 + c, :, v])


def test_eval_skips_the_text_feature_heads(make_model, make_inputs):
    model = make_model("TCG-15").eval()
    calls = []
    for head in [model.conv_feature, *model.conv_asb_feature]:
        head.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        model(*make_inputs("TCG-15"))
    assert calls == []


def test_padding_leaks_into_valid_frames(pku_model, make_inputs):
    """Published quirk (docs/model.md#published-quirks): padded frames enter the InstanceNorm statistics, the
    linear-attention sums and the CTRGC temporal mean, so the valid frames' outputs change when a sequence is padded,
    even in eval. Samples of an eval batch stay independent of each other."""
    x, mask, joint_graph = make_inputs("PKU-subject", lengths=(16, 24))
    with torch.no_grad():
        alone = pku_model(x[:1, :, :, :16], mask[:1, :, :16], joint_graph)
        padded = pku_model(x[:1], mask[:1], joint_graph)
        batched = pku_model(x, mask, joint_graph)
    for a, p, b in zip(alone, padded, batched):
        assert rel_error(p[..., :16], a) > 1e-3
        torch.testing.assert_close(b[:1], p, rtol=1e-5, atol=1e-6)


def test_padded_frames_of_the_outputs(pku_model, make_inputs):
    """Boundary TCN outputs are masked; class logits are not (padded frames hold the conv_out bias)."""
    x, mask, joint_graph = make_inputs("PKU-subject", lengths=(16, 24))
    with torch.no_grad():
        logits, boundary = pku_model(x, mask, joint_graph)
    assert torch.equal(boundary[0, :, 16:], torch.zeros(1, 8))
    bias = pku_model.asb[0].conv_out.bias
    torch.testing.assert_close(logits[0, :, 16:], bias[:, None].expand(-1, 8), rtol=0, atol=1e-6)


def test_mask_dtypes_are_equivalent(pku_model, make_inputs):
    x, mask, joint_graph = make_inputs("PKU-subject", lengths=(16, 12))
    with torch.no_grad():
        outputs = [pku_model(x, m, joint_graph) for m in (mask, mask.float(), mask.long(), mask.double())]
    for out in outputs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(outputs[0], out))


def test_float32_model_close_to_float64(make_model, make_inputs):
    model = make_model("PKU-subject").eval()
    with torch.no_grad():
        model.SP.alpha.fill_(0.5)
        model.SP.beta.fill_(-0.5)
        x, mask, joint_graph = make_inputs("PKU-subject", lengths=(20, 14))
        out32 = model(x, mask, joint_graph)
        out64 = model.double()(x.double(), mask, joint_graph.double())
    for a, b in zip(out32, out64):
        assert a.dtype == torch.float32 and b.dtype == torch.float64
        assert rel_error(a, b) <= 1e-5


def test_same_seed_same_parameters_and_outputs(make_model, make_inputs):
    a, b = make_model("MCFS-130", seed=7), make_model("MCFS-130", seed=7)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(make_model("MCFS-130", seed=8).SP.A_res, a.SP.A_res)
    inputs = make_inputs("MCFS-130", lengths=(14, 10))
    outputs = []
    for model in (a, b):
        torch.manual_seed(123)  # same dropout draws
        logits, boundaries, features, _ = model.train()(*inputs)
        outputs.append(logits + boundaries + features)
    assert all(torch.equal(p, q) for p, q in zip(*outputs))


def test_backend_is_passed_to_every_attention_call(make_model, make_inputs, monkeypatch):
    model = make_model("TCG-15", backend="torch")
    attention_layers = [m for m in model.modules() if isinstance(m, LinearAttention)]
    assert model.backend == "torch" and len(attention_layers) == 20
    assert all(m.backend == "torch" for m in attention_layers)

    backends = []

    def recording_op(q, k, v, key_mask=None, eps=1e-6, backend=None):
        backends.append(backend)
        return linear_attention_reference(q, k, v, key_mask, eps)

    monkeypatch.setattr(attention_module, "linear_attention", recording_op)
    with torch.no_grad():
        model.eval()(*make_inputs("TCG-15"))
    assert backends == ["torch"] * 20

    model.set_backend(None)
    assert model.backend is None and all(m.backend is None for m in attention_layers)
    with pytest.raises(ValueError, match="backend"):
        model.set_backend("fastest")
    with pytest.raises(ValueError, match="kind"):
        model.set_dropout_masks("philox")
    model.set_dropout_masks("hashed")
    assert {m.dropout_masks for m in model.modules() if isinstance(m, AttModule)} == {"hashed"}
    with pytest.raises(ValueError, match="backend"):
        make_model("TCG-15", backend="fastest")


def _pku_inputs(t=16):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 12, 25, t, generator=generator), torch.ones(2, 1, t, dtype=torch.bool), \
        torch.rand(25, 25, generator=generator)


def _with(index, value):
    def build():
        args = list(_pku_inputs())
        args[index] = value(args[index]) if callable(value) else value
        return args
    return build


def _set(tensor, position, value):
    tensor = tensor.clone()
    tensor[position] = value
    return tensor


BAD_INPUTS = {
    "x not a tensor": (_with(0, lambda x: x.tolist()), "x"),
    "x 3-D": (_with(0, lambda x: x[0]), "x"),
    "x integer": (_with(0, lambda x: x.long()), "x"),
    "x wrong C_in": (_with(0, lambda x: x[:, :6]), "x"),
    "x wrong V": (_with(0, lambda x: x[:, :, :19]), "x"),
    "x (N,C,T,V)": (_with(0, torch.randn(2, 12, 16, 25)), r"x.*\(N, C, T, V\)"),
    "x no frame": (_with(0, lambda x: x[..., :0]), r"x: expected T >= 2 frames \(dim 3 of \(N, C_in, V, T\)"),
    # one frame: InstanceNorm has nothing to normalise over, in eval (pku_model) too
    "x one frame": (_with(0, lambda x: x[..., :1]), r"x: expected T >= 2 frames .*InstanceNorm.*got tensor of shape "
                                                    r"\(2, 12, 25, 1\)"),
    "x no sample": (_with(0, lambda x: x[:0]), r"x: expected N >= 1 samples \(dim 0 of \(N, C_in, V, T\)\)"),
    "x float64": (_with(0, lambda x: x.double()), r"x: expected dtype torch.float32 \(the parameters' dtype.*got "
                                                 r"tensor of shape \(2, 12, 25, 16\), dtype torch.float64"),
    "x bfloat16": (_with(0, lambda x: x.bfloat16()), r"x: expected dtype torch.float32 .*dtype torch.bfloat16"),
    "x NaN": (_with(0, lambda x: _set(x, (1, 3, 4, 5), float("nan"))), "x"),
    "x Inf": (_with(0, lambda x: _set(x, (0, 0, 0, 0), float("inf"))), "x"),
    "x wrong device": (_with(0, lambda x: x.to("meta")), "x.*device"),
    "mask (N,T)": (_with(1, lambda m: m[:, 0]), "mask"),
    "mask wrong N": (_with(1, torch.ones(3, 1, 16, dtype=torch.bool)), "mask"),
    "mask wrong T": (_with(1, torch.ones(2, 1, 15, dtype=torch.bool)), "mask"),
    "mask value 2": (_with(1, lambda m: _set(m.long(), (0, 0, 3), 2)), "mask"),
    "mask value 0.5": (_with(1, lambda m: _set(m.float(), (1, 0, 0), 0.5)), "mask"),
    "mask complex": (_with(1, lambda m: m.to(torch.complex64)), "mask: expected .*bool, integer or floating"),
    "mask wrong device": (_with(1, lambda m: m.to("meta")), "mask.*device"),
    "mask not a tensor": (_with(1, None), "mask"),
    "joint_graph wrong shape": (_with(2, torch.rand(19, 19)), "joint_graph"),
    "joint_graph integer": (_with(2, torch.ones(25, 25, dtype=torch.long)), "joint_graph"),
    "joint_graph NaN": (_with(2, lambda j: _set(j, (2, 3), float("nan"))), "joint_graph"),
    "joint_graph Inf": (_with(2, lambda j: _set(j, (0, 0), float("-inf"))), "joint_graph"),
    "joint_graph wrong device": (_with(2, lambda j: j.to("meta")), "joint_graph.*device"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_raise_value_error_naming_the_argument(case, pku_model):
    build, pattern = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=pattern) as error:
        pku_model(*build())
    message = str(error.value)
    assert message.split(":")[0] in ("x", "mask", "joint_graph")
    assert "expected" in message and "got" in message


VALUE_CASES = ("x NaN", "x Inf", "mask value 2", "mask value 0.5", "joint_graph NaN", "joint_graph Inf")


@pytest.mark.parametrize("case", [c for c in BAD_INPUTS if c not in VALUE_CASES])
def test_check_values_false_still_checks_types_shapes_and_devices(case, pku_model):
    build, pattern = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=pattern):
        pku_model(*build(), check_values=False)


@pytest.mark.parametrize("case", VALUE_CASES)
def test_check_values_false_reads_no_value(case, pku_model):
    """The value checks are the ones that read the device (a host sync on a GPU): check_values=False (the
    trainer's batches, checked by the readers) skips exactly them."""
    build, _ = BAD_INPUTS[case]
    with NoHostSync():
        pku_model(*build(), check_values=False)
