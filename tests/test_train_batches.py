"""Frozen mode's batch plumbing: epoch chunks, padded batches, feature views."""

from __future__ import annotations

import numpy as np
import pytest

from qcxr.train.frozen import chunks, feature_views, keep, padded_batches, stack, take, unstack


@pytest.mark.parametrize("start, total, size", [(0, 10, 4), (5, 10, 4), (0, 8, 4), (7, 7, 3)])
def test_chunks_cover_the_rest_of_an_epoch_cut_at_multiples(start, total, size):
    spans = list(chunks(start, total, size))
    covered = [b for a, e in spans for b in range(a, e)]
    assert covered == list(range(start, total))
    assert all(e % size == 0 or e == total for _, e in spans)
    assert all(e - a <= size for a, e in spans)
    # The cuts do not depend on where the epoch was resumed.
    full = {e for _, e in chunks(0, total, size)}
    assert {e for _, e in spans} <= full


def test_padded_batches_keep_order_and_weight_real_rows():
    order = np.array([7, 3, 9, 1, 4, 8, 0])
    index, weight = padded_batches(order, batch_size=3, width=4)
    assert index.shape == weight.shape == (3, 4)
    np.testing.assert_array_equal(index[weight > 0], order)  # row-major: batches in order
    np.testing.assert_array_equal(weight.sum(1), [3, 3, 1])
    assert index.dtype == np.int32 and weight.dtype == np.float32
    assert (index[weight == 0] == 0).all()  # padding points at row 0 with weight 0


def test_feature_views_are_seeded_per_epoch_and_absent_for_one_view():
    assert feature_views(0, 0, 100, 1) is None
    a = feature_views(0, 0, 100, 4)
    assert a.shape == (100,) and a.dtype == np.int32 and set(a) <= {0, 1, 2, 3}
    np.testing.assert_array_equal(a, feature_views(0, 0, 100, 4))
    expected = np.random.default_rng([0, 2, 0]).integers(0, 4, 100, dtype=np.int32)
    np.testing.assert_array_equal(a, expected)
    assert not np.array_equal(a, feature_views(0, 1, 100, 4))  # another epoch
    assert not np.array_equal(a, feature_views(1, 0, 100, 4))  # another seed


def test_stack_take_unstack_round_trip_and_keep_drops_seeds():
    trees = [{"w": np.full((2,), s, np.float32), "b": np.float32(s)} for s in range(3)]
    stacked = stack(trees)
    assert stacked["w"].shape == (3, 2)
    back = unstack(stacked, 3)
    for s in range(3):
        np.testing.assert_array_equal(back[s]["w"], trees[s]["w"])
    np.testing.assert_array_equal(take(stacked, [2, 0])["b"], [2, 0])
    books, kept = keep(["a", "b", "c"], stacked, [1])
    assert books == ["a", "c"]
    np.testing.assert_array_equal(kept["b"], [0, 2])
    assert keep(["a"], stacked, [0])[0] == []
