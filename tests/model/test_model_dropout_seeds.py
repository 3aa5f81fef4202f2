"""Dropout seeds: one draw per model forward, one slot per hashed layer (docs/model.md#dropout-seeds)."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from trgnet_fast.model.attention import AttModule
from trgnet_fast.model.dropout_seeds import DropoutSeeds, SEED_RANGE
from trgnet_fast.model.temporal import DilatedResidualLayer, SpatialFeatureInjection

HASHED = (AttModule, DilatedResidualLayer, SpatialFeatureInjection)
SMALL = dict(n_layers=3, n_refine_layers=2, n_stages=3, SFI_layer=[1, 2])


class SeedRecorder(TorchDispatchMode):
    """Records every randint call's size, and every (1,) int64 view of the drawn seeds that reaches an op."""

    def __init__(self):
        super().__init__()
        self.draws = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket is torch.ops.aten.randint:
            self.draws.append((tuple(out.shape), out.clone()))
        return out


def _hashed_model(make_model):
    model = make_model("TCG-15", backend="torch", **SMALL).train()
    model.set_dropout_masks("hashed")
    return model


def test_every_hashed_layer_owns_a_distinct_slot(make_model):
    model = _hashed_model(make_model)
    layers = [m for m in model.modules() if isinstance(m, HASHED)]
    # 3 encoder layers, 2 SFI fusions, 2 layers per decoder stage and per boundary stage
    assert len(model.asb) >= 1 and len(model.brb) >= 1
    assert len(layers) == 3 + 2 + 2 * len(model.asb) + 2 * len(model.brb)
    assert sorted(layer.seed_slot.index for layer in layers) == list(range(len(layers)))
    assert {id(layer.seed_slot.source) for layer in layers} == {id(model._dropout_seeds)}
    assert model._dropout_seeds.slots == len(layers)


def test_a_training_forward_draws_once_and_each_layer_gets_its_slot(make_model, make_inputs, monkeypatch):
    model = _hashed_model(make_model)
    taken = []
    for layer in (m for m in model.modules() if isinstance(m, HASHED)):
        original = layer.seed_slot.seed

        def recording(device, original=original, index=layer.seed_slot.index):
            seed = original(device)
            taken.append((index, seed))
            return seed
        monkeypatch.setattr(layer.seed_slot, "seed", recording)
    with SeedRecorder() as recorder:
        model(*make_inputs("TCG-15", lengths=(9, 6)))
    (shape, drawn), = recorder.draws  # exactly one randint in the whole forward
    assert shape == (model._dropout_seeds.slots,)
    assert bool(((drawn >= 0) & (drawn < SEED_RANGE)).all())
    assert sorted(index for index, _ in taken) == list(range(model._dropout_seeds.slots))
    for index, seed in taken:
        assert seed.shape == (1,) and seed.dtype == torch.int64
        assert seed.untyped_storage().data_ptr() == taken[0][1].untyped_storage().data_ptr()  # views of one draw
        assert int(seed) == int(drawn[index])


def test_seeds_are_fresh_per_forward_and_reproducible(make_model, make_inputs):
    model = _hashed_model(make_model)
    inputs = make_inputs("TCG-15", lengths=(9, 6))
    outputs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        with SeedRecorder() as recorder:
            outputs.append(model(*inputs)[0][-1])
        outputs.append(recorder.draws[0][1])
    first, first_seeds, again, again_seeds, other, other_seeds = outputs
    assert torch.equal(first, again) and torch.equal(first_seeds, again_seeds)
    assert not torch.equal(first_seeds, other_seeds) and not torch.equal(first, other)


def test_eval_draws_nothing(make_model, make_inputs):
    model = _hashed_model(make_model).eval()
    with SeedRecorder() as recorder, torch.no_grad():
        model(*make_inputs("TCG-15", lengths=(9, 6)))
    assert recorder.draws == []


def test_a_layer_outside_the_forward_draws_a_fresh_seed_per_call(make_model):
    model = _hashed_model(make_model)
    slot = model.STI.layers[0].seed_slot
    first, second = slot.seed("cpu"), slot.seed("cpu")
    assert first.shape == second.shape == (1,)
    assert first.untyped_storage().data_ptr() != second.untyped_storage().data_ptr()


def test_a_failed_forward_leaves_no_stale_draw(make_model, make_inputs):
    model = _hashed_model(make_model)
    x, mask, graph = make_inputs("TCG-15", lengths=(9, 6))
    with pytest.raises(ValueError):
        model(x[..., :3], mask, graph)  # T of x and mask disagree: refused by the input checks
    assert model._dropout_seeds._drawn is None and not model._dropout_seeds._active


def test_seed_of_a_drawn_forward_is_a_view_of_one_tensor():
    seeds = DropoutSeeds()
    slots = [seeds.add_slot() for _ in range(3)]
    seeds.start()
    views = [slot.seed("cpu") for slot in slots]
    drawn = seeds._drawn
    seeds.stop()
    assert [int(v) for v in views] == drawn.tolist()
    assert all(v._base is drawn for v in views)
