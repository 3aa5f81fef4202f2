"""SAEP in the training collate (docs/model.md#saep-augmentation): per-batch seeds (trgnet_fast/data/seeded_batches.py)
and the collates that augment with them, padded and packed, with the loss targets' GS-TMSE pair weights taken from
the augmented batch."""
from functools import partial

import pytest
import torch
from torch.utils.data import BatchSampler, SequentialSampler

from trgnet_fast.data import collate, pack_collate, saep
from trgnet_fast.data.seeded_batches import SEED_KEY, SeededBatches, SeededItems, batch_generator, batch_seed
from trgnet_fast.losses import LossTargetBuilder
from trgnet_fast.losses.terms import gs_tmse_weights
from trgnet_fast.model.packing import unpack

AUGMENT = partial(saep, dataset="PKU-subject")


def _items(seed, lengths=(9, 14, 4, 11)):
    gen = torch.Generator().manual_seed(seed)
    return [{"feature": torch.randn(6, 25, t, generator=gen), "label": torch.randint(0, 5, (t,), generator=gen),
             "boundary": torch.zeros(t), "name": f"v{t}"} for t in lengths]


def test_batch_seed_is_a_function_of_its_four_numbers():
    seeds = {batch_seed(s, r, e, b) for s in (0, 1) for r in (0, 1) for e in (0, 1, 2) for b in range(20)}
    assert len(seeds) == 2 * 2 * 3 * 20  # every neighbour differs
    assert batch_seed(42, 1, 3, 7) == batch_seed(42, 1, 3, 7)
    assert all(0 <= s < 2 ** 63 for s in seeds)  # torch.Generator's range


def test_seeded_batches_keep_the_order_and_give_each_batch_its_seed():
    class Epochs:  # records set_epoch, as DistributedSampler / FrameBudgetBatchSampler take it
        epoch = None

        def set_epoch(self, epoch):
            self.epoch = epoch

    inner, epochs = BatchSampler(SequentialSampler(range(10)), 3, drop_last=True), Epochs()
    seeded = SeededBatches(inner, seed=5, rank=2, epochs=epochs)
    assert len(seeded) == 3
    seeded.set_epoch(4)
    assert epochs.epoch == 4
    batches = list(seeded)
    assert [[i for i, _ in b] for b in batches] == list(inner)
    assert [{s for _, s in b} for b in batches] == [{batch_seed(5, 2, 4, n)} for n in range(3)]
    item = SeededItems([{"feature": 1}, {"feature": 2}])[(1, 77)]
    assert item == {"feature": 2, SEED_KEY: 77}


def test_the_collate_augments_with_the_batch_seed_and_builds_the_pair_weights_from_it():
    seed = batch_seed(0, 0, 0, 3)
    items = [{**item, SEED_KEY: seed} for item in _items(1)]
    builder = LossTargetBuilder(torch.rand(5, 5))
    plain = collate(items)
    batch = collate(items, builder, AUGMENT)
    expected_x = saep(plain["x"], "PKU-subject", generator=torch.Generator().manual_seed(seed))
    assert torch.equal(batch["x"], expected_x) and not torch.equal(batch["x"], plain["x"])
    pairs = batch["loss_targets"].pairs
    assert torch.equal(batch["loss_targets"].pair_weight, gs_tmse_weights(expected_x, pairs))
    assert torch.equal(collate(items, builder, AUGMENT)["x"], batch["x"])  # the same seed, the same batch


def test_the_packed_collate_draws_what_the_padded_one_draws():
    """Per sequence, the same SAEP draws as the padded batch (saep's contract), and the same loss targets."""
    items = [{**item, SEED_KEY: 1234} for item in _items(2)]
    builder = LossTargetBuilder(torch.rand(5, 5))
    padded, packed = collate(items, builder, AUGMENT), pack_collate(items, builder, AUGMENT)
    assert torch.equal(unpack(packed["x"], packed["packed"]), padded["x"])
    for a, b in zip(*(torch.utils._pytree.tree_leaves(batch["loss_targets"]) for batch in (padded, packed))):
        assert torch.equal(a, b)


@pytest.mark.parametrize("collate_fn", [collate, pack_collate])
def test_augmenting_items_without_one_seed_is_refused(collate_fn):
    items = _items(3)
    with pytest.raises(ValueError, match=rf"{collate_fn.__name__}: augment: expected items with one 'augment_seed'"):
        collate_fn(items, augment=AUGMENT)
    mixed = [{**item, SEED_KEY: i} for i, item in enumerate(items)]
    with pytest.raises(ValueError, match="augment: expected items with one 'augment_seed'"):
        collate_fn(mixed, augment=AUGMENT)
    assert isinstance(batch_generator([{SEED_KEY: 3}], "here"), torch.Generator)
