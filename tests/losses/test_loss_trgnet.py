"""TRGNetLoss: combination with the published weights, gradients, no host sync, argument checks."""
import re

import pytest
import torch

from trgnet_fast.data import label_runs, segment_capacity
from trgnet_fast.data.labels import IGNORE_INDEX as IGN
from trgnet_fast.host_sync import HostSyncError, NoHostSync
from trgnet_fast.losses import TRGNetLoss
from trgnet_fast.model.text_heads import TextFeatures

from backend_marks import needs

K, D = 6, 16


def _batch(ref, gen, n, t, dtype=torch.float64, mid_ignore=False, grad=True):
    labels, lengths = ref.random_labels(n, t, K, gen, mid_ignore=mid_ignore)
    mask = (torch.arange(t)[None, :] < lengths[:, None])[:, None, :]
    boundary = torch.zeros(n, 1, t, dtype=dtype)
    boundary[:, 0, 1:] = ((labels[:, 1:] != labels[:, :-1]) & mask[:, 0, 1:]).to(dtype)
    x = (torch.randn(n, 3, 5, t, generator=gen, dtype=dtype) * mask[:, :, None, :]).to(dtype)

    def leaf(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen, dtype=dtype)).requires_grad_(grad)

    outputs = ([leaf(n, K, t, scale=2), leaf(n, K, t, scale=2)],
               [leaf(n, 1, t), leaf(n, 1, t), leaf(n, 1, t)],
               [leaf(n, D, t), leaf(n, D, t)],
               torch.tensor([2.659], dtype=dtype).requires_grad_(grad))
    return outputs, x, labels, boundary, mask


def _tables(gen, dtype=torch.float64):
    emb = torch.randn(K, D, generator=gen, dtype=dtype)
    d = torch.cdist(emb, emb)
    tag = 1 - d / d.max()
    return emb, tag


def _loop_terms(ref, outputs, x, labels, boundary, mask, emb, tag, pw, quirks):
    """Every term by the loop implementations: the published loss when quirks, else the corrected one."""
    logits, bounds, feats, scale = outputs
    import torch.nn.functional as F  # noqa: local, only the loop reference needs it
    over = "time" if quirks else "classes"
    ce = sum(F.cross_entropy(z, labels, ignore_index=IGN) for z in logits) / 2
    gst = sum(ref.gstmse_loop(z, x, labels, over=over) for z in logits) / 2
    bce = sum(ref.bce_loop(b, boundary, mask, pw) for b in bounds) / 3
    segs = ref.scan_published(labels) if quirks else ref.scan_corrected(labels)
    f = ref.slice_means(feats[0], segs)
    lab = torch.tensor([s[3] for s in segs], dtype=torch.long)
    return ce, gst, bce, ref.aris_abs_loop(f, lab, emb, scale), ref.aris_rel_loop(f, lab, tag)


def _leaves(outputs):
    logits, bounds, feats, scale = outputs
    return [*logits, *bounds, feats[0], scale]


def _grads(value, outputs):
    """d value / d each model output (None where it does not depend on it; a constant value — e.g. no
    segment, or no sample with two labelled frames — depends on none)."""
    leaves = _leaves(outputs)
    if not value.requires_grad:
        return [None] * len(leaves)
    return torch.autograd.grad(value, leaves, retain_graph=True, allow_unused=True)


def _segment_bound(kind: str | None, labels: torch.Tensor) -> int | None:
    """max_segments for the loss: None (found with nonzero), "tight" (exactly the label runs: no padding slot
    with the corrected rule), "collate" (the collate's power-of-two bound), "loose" (odd, many padding slots)."""
    if kind is None:
        return None
    runs = int(label_runs(labels)[1].sum())
    return {"tight": max(runs, 1), "collate": segment_capacity(labels), "loose": 2 * runs + 7}[kind]


# the loss terms' backends on CPU tensors: the loss's own PyTorch code, and the fused ops (frame_losses, aris_losses) on
# each fused backend (the native ops' C++ kernels; Triton in its CPU interpreter)
LOSS_BACKENDS = [pytest.param("torch", id="torch"),
                 *(pytest.param(b, id=b, marks=needs(b)) for b in ("cuda", "triton"))]


def _loop_cases():
    """(backend, n, t, mid, quirks, bound) of the loop comparison: every combination, except that Triton's CPU
    interpreter runs the largest batch with the collate's bound only (about a minute for each other bound, most of it
    in the ARIS kernels' M x M loops; the cuda backend runs them all, and the op's own tests cover padding slots on
    Triton, tests/ops/aris_losses)."""
    for backend in LOSS_BACKENDS:
        for n, t, mid in [(1, 9, False), (3, 25, False), (4, 30, True), (5, 61, True)]:
            for quirks in (True, False):
                for bound in (None, "tight", "collate", "loose"):
                    if backend.values[0] == "triton" and n == 5 and bound != "collate":
                        continue
                    yield pytest.param(backend.values[0], n, t, mid, quirks, bound, marks=backend.marks,
                                       id=f"{backend.id}-{n}-{t}-{mid}-{quirks}-{bound}")


@pytest.mark.parametrize("backend, n, t, mid, quirks, bound", list(_loop_cases()))
def test_every_term_and_gradient_matches_loop(ref, gen, backend, quirks, n, t, mid, bound):
    """TRGNetLoss vs the loop implementation of the same loss, float64, random padded batches with many
    segments (runs of 1-5 frames; ignored runs inside videos when mid): every term and the gradient of
    every term w.r.t. every model output within 1e-12 relative. quirks=True is the published objective.
    With a static segment bound (padding slots masked out of the ARIS matrices) the value is the same. The same
    on the fused ops (``backend`` cuda / triton: frame_losses for CE, GS-TMSE and BCE, aris_losses for ARIS)."""
    outputs, x, labels, boundary, mask = _batch(ref, gen, n, t, mid_ignore=mid)
    copies = _batch_copy(outputs)
    emb, tag = _tables(gen)
    pw = 12.5 + float(torch.rand((), generator=gen, dtype=torch.float64))  # not a float32 value
    loss = TRGNetLoss(emb, tag, pw, published_quirks=quirks, backend=backend).double()
    out = loss(outputs, x, labels, boundary, mask, max_segments=_segment_bound(bound, labels))
    expect = dict(zip(("ce", "gstmse", "boundary", "aris_abs", "aris_rel"),
                      _loop_terms(ref, copies, x, labels, boundary, mask, emb, tag, pw, quirks)))
    # ½Σ(CE + 1.0·GSTMSE) + 0.1·⅓Σ BCE + 0.8·½(KL+KL) + 1.0·KL
    expect["total"] = (expect["ce"] + expect["gstmse"] + 0.1 * expect["boundary"] + 0.8 * expect["aris_abs"]
                       + 1.0 * expect["aris_rel"])
    for name, value in expect.items():
        # relative; a term that is exactly 0 by structure (no or one segment) within rounding of 0
        bound = 1e-12 * abs(float(value.detach())) or 1e-15
        assert abs(float((out[name] - value).detach())) <= bound, name
        got_grads, ref_grads = _grads(out[name], outputs), _grads(value, copies)
        for i, (g, r, leaf) in enumerate(zip(got_grads, ref_grads, _leaves(outputs))):
            g = torch.zeros_like(leaf) if g is None else g
            r = torch.zeros_like(leaf) if r is None else r
            # relative, plus an absolute floor far below any real gradient of these O(1) terms but above
            # rounding: some gradients are 0 by structure (e.g. ARIS relative with two segments, whose
            # P = 1 - d / max d is constant) and both sides then hold rounding noise (~1e-17)
            err = float(torch.linalg.vector_norm(g - r))
            assert err <= 1e-12 * float(torch.linalg.vector_norm(r)) + 1e-14, (name, i, err)


def _batch_copy(outputs):
    """Independent leaves with the same values (so the two graphs share nothing)."""
    logits, bounds, feats, scale = outputs
    leaf = lambda v: v.detach().clone().requires_grad_(True)  # noqa: E731
    return [leaf(z) for z in logits], [leaf(b) for b in bounds], [leaf(e) for e in feats], leaf(scale)


def test_published_quirks_is_the_default(gen):
    emb, tag = _tables(gen)
    loss = TRGNetLoss(emb, tag, 10.0)
    assert loss.published_quirks is True


def test_state_holds_the_tables_not_the_derived_buffers(gen):
    """t̂ and pos_weight's float32 rounding are rebuilt from the state: a checkpoint does not carry them."""
    emb, tag = _tables(gen)
    assert set(TRGNetLoss(emb, tag, 10.0).state_dict()) == {"action_embeddings", "action_graph", "pos_weight"}


def test_pos_weight_is_kept_unrounded(gen):
    """pos_weight is not rounded to float32 on the way: a float64 loss uses the exact value."""
    emb, tag = _tables(gen)
    pw = 1 / 3 * 100  # not representable in float32
    for loss in (TRGNetLoss(emb.float(), tag.float(), pw).double(), TRGNetLoss(emb, tag, pw)):
        assert loss.pos_weight.dtype == torch.float64 and float(loss.pos_weight) == pw


def test_weights_and_switches(ref, gen):
    outputs, x, labels, boundary, mask = _batch(ref, gen, 2, 20, grad=False)
    emb, tag = _tables(gen)
    base = TRGNetLoss(emb, tag, 5.0).double()(outputs, x, labels, boundary, mask)
    w = TRGNetLoss(emb, tag, 5.0, lambda_b=0.3, gstmse_weight=0.5, aris_abs_weight=0.2,
                   aris_rel_weight=2.0).double()(outputs, x, labels, boundary, mask)
    torch.testing.assert_close(w["total"], base["ce"] + 0.5 * base["gstmse"] + 0.3 * base["boundary"]
                               + 0.2 * base["aris_abs"] + 2.0 * base["aris_rel"])
    off = TRGNetLoss(emb, tag, 5.0, use_aris_abs=False, use_aris_rel=False).double()(
        outputs, x, labels, boundary, mask)
    assert off["aris_abs"] == 0 and off["aris_rel"] == 0
    torch.testing.assert_close(off["total"], base["ce"] + base["gstmse"] + 0.1 * base["boundary"])


def test_a_zero_weight_drops_its_term(ref, gen):
    outputs, x, labels, boundary, mask = _batch(ref, gen, 2, 20, grad=False)
    emb, tag = _tables(gen)
    base = TRGNetLoss(emb, tag, 5.0).double()(outputs, x, labels, boundary, mask)
    out = TRGNetLoss(emb, tag, 5.0, gstmse_weight=0.0, aris_rel_weight=0.0).double()(outputs, x, labels, boundary,
                                                                                    mask)
    torch.testing.assert_close(out["total"], base["ce"] + 0.1 * base["boundary"] + 0.8 * base["aris_abs"])


def test_gradients_flow(ref, gen):
    outputs, x, labels, boundary, mask = _batch(ref, gen, 3, 24, dtype=torch.float32)
    emb, tag = _tables(gen, torch.float32)
    out = TRGNetLoss(emb, tag, 10.0)(outputs, x, labels, boundary, mask)
    assert all(v.dim() == 0 and v.dtype == torch.float32 and torch.isfinite(v) for v in out.values())
    out["total"].backward()
    logits, bounds, feats, scale = outputs
    for z in logits + bounds + [feats[0], scale]:
        assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert feats[1].grad is None  # the decoder feature head is unused by the published losses


def test_one_segment_videos_and_all_dropped(gen):
    """Published mode with only padded one-segment videos: M = 0 → ARIS terms 0, total finite."""
    n, t = 3, 10
    labels = torch.full((n, t), IGN, dtype=torch.long)
    labels[0, :6], labels[1, :4], labels[2, :9] = 1, 2, 3
    mask = (labels != IGN)[:, None, :]
    outputs = ([torch.randn(n, K, t, requires_grad=True) for _ in range(2)],
               [torch.randn(n, 1, t, requires_grad=True) for _ in range(3)],
               [torch.randn(n, D, t, requires_grad=True) for _ in range(2)],
               torch.tensor([2.659], requires_grad=True))
    x = torch.randn(n, 3, 5, t)
    emb, tag = _tables(gen, torch.float32)
    for quirks in (True, False):
        out = TRGNetLoss(emb, tag, 10.0, published_quirks=quirks)(
            outputs, x, labels, torch.zeros(n, 1, t), mask)
        assert torch.isfinite(out["total"])
        if quirks:
            assert out["aris_abs"] == 0 and out["aris_rel"] == 0
        out["total"].backward()


@pytest.mark.parametrize("quirks", [False, True])
def test_no_host_sync_in_forward_and_backward_with_a_segment_bound(ref, gen, quirks):
    outputs, x, labels, boundary, mask = _batch(ref, gen, 4, 40, dtype=torch.float32, mid_ignore=True)
    emb, tag = _tables(gen, torch.float32)
    loss = TRGNetLoss(emb, tag, 10.0, published_quirks=quirks)
    bound = segment_capacity(labels)
    with NoHostSync():
        out = loss(outputs, x, labels, boundary, mask, max_segments=bound)
        out["total"].backward()
    # the guard itself works: on .item() and on the segment count without a bound
    with pytest.raises(HostSyncError, match="_local_scalar_dense"):
        with NoHostSync():
            out["total"].item()
    with pytest.raises(HostSyncError, match="nonzero"):
        with NoHostSync():
            loss(outputs, x, labels, boundary, mask)


def test_too_small_a_segment_bound_is_an_error(ref, gen):
    outputs, x, labels, boundary, mask = _batch(ref, gen, 2, 30, dtype=torch.float32)
    emb, tag = _tables(gen, torch.float32)
    runs = int(label_runs(labels)[1].sum())
    loss = TRGNetLoss(emb, tag, 10.0, published_quirks=False)
    with pytest.raises(RuntimeError, match=f"more segments than max_segments={runs - 1}"):
        loss(outputs, x, labels, boundary, mask, max_segments=runs - 1)


@pytest.fixture
def one_thread():
    """OpenMP threads oversubscribe a busy 2-core box (seconds instead of 0.2 s for the model step)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("short, named", [(("x", "mask"), "x: expected shape (N=2, C, V, T=12)"),
                                          (("labels", "x"), "labels: expected shape (2, 12)"),
                                          (("labels", "mask"), "labels: expected shape (2, 12)")])
def test_two_arguments_off_in_the_same_way_are_outvoted(ref, gen, short, named):
    """(N, T) is the majority of the five arguments that carry it: two one frame short are the ones named."""
    outputs, x, labels, boundary, mask = _batch(ref, gen, 2, 12, dtype=torch.float32, grad=False)
    emb, tag = _tables(gen, torch.float32)
    args = dict(outputs=outputs, x=x, labels=labels, boundary=boundary, mask=mask)
    args.update({name: args[name][..., :-1] for name in short})
    with pytest.raises(ValueError, match=re.escape(named)):
        TRGNetLoss(emb, tag, 10.0)(**args)


def test_stage_lists_may_hold_one_stage_but_not_none(ref, gen):
    outputs, x, labels, boundary, mask = _batch(ref, gen, 2, 12, dtype=torch.float32, grad=False)
    emb, tag = _tables(gen, torch.float32)
    loss = TRGNetLoss(emb, tag, 10.0)
    logits, bounds, feats, scale = outputs
    assert torch.isfinite(loss((logits[:1], bounds[:1], feats[:1], scale), x, labels, boundary, mask)["total"])
    with pytest.raises(ValueError, match=re.escape("outputs[1] (boundaries): expected a non-empty list")):
        loss((logits, [], feats, scale), x, labels, boundary, mask)


def test_class_weight_of_one_entry_per_class(ref, gen):
    outputs, x, labels, boundary, mask = _batch(ref, gen, 2, 12, dtype=torch.float32, grad=False)
    emb, tag = _tables(gen, torch.float32)
    k = emb.shape[0]
    weighted = TRGNetLoss(emb, tag, 10.0, class_weight=torch.ones(k))(outputs, x, labels, boundary, mask)
    plain = TRGNetLoss(emb, tag, 10.0)(outputs, x, labels, boundary, mask)
    assert weighted["ce"] == pytest.approx(float(plain["ce"]))  # equal weights: the plain CE
    with pytest.raises(ValueError, match=rf"class_weight: expected shape \({k},\), got \({k + 1},\)"):
        TRGNetLoss(emb, tag, 10.0, class_weight=torch.ones(k + 1))


def test_real_model_outputs(ref, gen, one_thread):
    """End to end on the model's train-mode tuple (small T, LARA config)."""
    from trgnet_fast import TRGNet
    from trgnet_fast.model import default_config
    from trgnet_fast.skeletons import num_joints
    cfg = default_config("LARA")
    model = TRGNet(**cfg, backend="torch").train()
    n, t = 2, 16
    v = num_joints("LARA")
    labels, lengths = ref.random_labels(n, t, cfg["n_classes"], gen)
    mask = (torch.arange(t)[None, :] < lengths[:, None])[:, None, :]
    x = torch.randn(n, cfg["in_channel"], v, t, generator=gen) * mask[:, :, None, :]
    outputs = model(x, mask, torch.eye(v))
    emb = torch.randn(cfg["n_classes"], 768, generator=gen)
    tag = torch.rand(cfg["n_classes"], cfg["n_classes"], generator=gen)
    out = TRGNetLoss(emb, tag, 20.0)(outputs, x, labels, torch.zeros(n, 1, t), mask)
    out["total"].backward()
    assert torch.isfinite(out["total"])
    assert model.logit_scale.grad is not None and model.conv_feature.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("backend", LOSS_BACKENDS)
def test_deferred_text_head_equals_the_applied_head(ref, gen, backend):
    """e0 as ``TextFeatures`` (the head's (N, C, T) input, weight and bias; the fused backends form only its segment
    means, the torch backend applies the head) against e0 = the head applied to every frame: every term within 1e-12
    and the gradients of the head's input, weight, bias and logit_scale within 1e-12, float64, both quirk modes'
    default (published)."""
    outputs, x, labels, boundary, mask = _batch(ref, gen, 4, 30, mid_ignore=True)
    logits, bounds, _, scale = outputs
    n, c, t = 4, 5, 30
    hidden = torch.randn(n, c, t, generator=gen, dtype=torch.float64).requires_grad_(True)
    head = torch.nn.Conv1d(c, D, 1).double()
    deferred = TextFeatures.of(head, hidden)
    emb, tag = _tables(gen)
    loss = TRGNetLoss(emb, tag, 12.5, backend=backend).double()
    bound = segment_capacity(labels)
    got = loss((logits, bounds, [deferred, deferred], scale), x, labels, boundary, mask, max_segments=bound)
    want = loss((logits, bounds, [head(hidden)], scale), x, labels, boundary, mask, max_segments=bound)
    leaves = (hidden, head.weight, head.bias, scale)
    for name in ("aris_abs", "aris_rel", "total"):
        assert abs(float(got[name] - want[name])) <= 1e-12 * abs(float(want[name])), name
        grads = [torch.autograd.grad(value[name], leaves, retain_graph=True, allow_unused=True,
                                     materialize_grads=True) for value in (got, want)]
        for g, w in zip(*grads):
            assert float((g - w).norm()) <= 1e-12 * float(w.norm()) + 1e-15, name


def test_bad_shapes_raise_value_error_naming_argument(ref, gen):
    outputs, x, labels, boundary, mask = _batch(ref, gen, 2, 12, dtype=torch.float32, grad=False)
    emb, tag = _tables(gen, torch.float32)
    loss = TRGNetLoss(emb, tag, 10.0)
    logits, bounds, feats, scale = outputs
    cases = [
        ("x", dict(x=x[..., :-1])),
        ("x", dict(x=x[0])),
        ("labels", dict(labels=labels[:, :-1])),
        ("labels", dict(labels=labels.float())),
        ("boundary", dict(boundary=boundary[:, 0])),
        ("mask", dict(mask=mask[:, :, :-1])),
        ("logits", dict(outputs=([logits[0][:, :-1]], bounds, feats, scale))),
        ("boundaries", dict(outputs=(logits, [bounds[0][:, :, :-1]], feats, scale))),
        ("features", dict(outputs=(logits, bounds, [feats[0][:, :-1]], scale))),
        ("hidden", dict(outputs=(logits, bounds, [TextFeatures(feats[0][:, :3, :-1], torch.ones(D, 3),
                                                              torch.ones(D))], scale))),
        (re.escape("weight (features): expected shape (D, C) = (16, 3)"),
         dict(outputs=(logits, bounds, [TextFeatures(feats[0][:, :3], torch.ones(D, 4), torch.ones(D))], scale))),
        ("logit_scale", dict(outputs=(logits, bounds, feats, torch.ones(2)))),
        ("outputs", dict(outputs=(logits, bounds))),
    ]
    base = dict(outputs=outputs, x=x, labels=labels, boundary=boundary, mask=mask)
    for name, change in cases:
        with pytest.raises(ValueError, match=name):
            loss(**{**base, **change})
    with pytest.raises(ValueError, match="action_graph"):
        TRGNetLoss(emb, tag[:-1], 10.0)
    with pytest.raises(ValueError, match="action_embeddings"):
        TRGNetLoss(emb[0], tag, 10.0)
    with pytest.raises(ValueError, match="pos_weight"):
        TRGNetLoss(emb, tag, 0.0)


def test_half_precision_outputs_compute_in_float32(ref, gen):
    """bf16 model outputs (autocast): every term is computed and returned in float32, as the float32 loss of the
    bf16 values (the float32 rounding of a different summation order apart)."""
    outputs, x, labels, boundary, mask = _batch(ref, gen, 2, 20, dtype=torch.float32, grad=False)
    emb, tag = _tables(gen, torch.float32)
    loss = TRGNetLoss(emb, tag, 10.0)
    logits, bounds, feats, scale = outputs
    half = ([z.bfloat16() for z in logits], [b.bfloat16() for b in bounds], [e.bfloat16() for e in feats],
            scale)
    widened = tuple([t.float() for t in ts] for ts in half[:3]) + (scale,)
    ref_out = loss(widened, x, labels, boundary, mask)
    out = loss(half, x, labels, boundary, mask)
    for name, v in out.items():
        assert v.dtype == torch.float32 and torch.isfinite(v)
        torch.testing.assert_close(v, ref_out[name], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", LOSS_BACKENDS)
def test_extra_padding_changes_neither_terms_nor_gradients(ref, gen, backend):
    """A batch padded further (as the collate pads to length buckets for CUDA graphs, data.collate.bucket_length),
    with arbitrary model outputs on the extra frames: the same terms and the same gradients on the real frames within
    1e-12 (float64), none on the extra frames. Targets built from the padded labels, mask and x, as the collate
    builds them (with the batch's own length, where the published ARIS scan ends each row: without it the scan
    drops the longest video's last segment too, test_loss_segments)."""
    outputs, x, labels, boundary, mask = _batch(ref, gen, 3, 25, mid_ignore=True)
    emb, tag = _tables(gen)
    loss = TRGNetLoss(emb, tag, 7.5, backend=backend).double()
    extra = 13

    def pad(t, value=0):
        return torch.nn.functional.pad(t, (0, extra), value=value)

    def leaf_padded(o):  # the extra frames' outputs: random values, which must not matter
        return torch.cat([o.detach(), torch.randn(*o.shape[:-1], extra, generator=gen, dtype=o.dtype)],
                         -1).requires_grad_(True)

    logits, bounds, feats, scale = outputs
    padded = ([leaf_padded(z) for z in logits], [leaf_padded(b) for b in bounds], [leaf_padded(e) for e in feats],
              scale.detach().clone().requires_grad_(True))
    batches = [(outputs, x, labels, boundary, mask),
               (padded, pad(x), pad(labels, IGN), pad(boundary), pad(mask, False))]
    results = []
    for (out, xb, lab, bnd, msk), batch_length in zip(batches, (None, x.shape[-1])):
        bound = segment_capacity(lab)
        targets = loss.target_builder(torch.float64)(lab, msk, bound, xb, batch_length=batch_length)
        terms = loss(out, None, lab, bnd, msk, max_segments=bound, targets=targets)
        results.append((terms, torch.autograd.grad(terms["total"], _leaves(out))))
    (terms, grads), (terms_padded, grads_padded) = results
    for name in terms:
        assert abs(float(terms_padded[name] - terms[name])) <= 1e-12 * abs(float(terms[name])) + 1e-15, name
    t = x.shape[-1]
    for g, gp in zip(grads, grads_padded):
        if gp.dim() == 1:  # logit_scale
            assert torch.allclose(gp, g, rtol=1e-12, atol=0)
            continue
        assert float(torch.linalg.vector_norm(gp[..., :t] - g)) <= 1e-12 * float(torch.linalg.vector_norm(g)) + 1e-15
        assert not gp[..., t:].any()
