"""The loader: per-(seed, epoch) order, complete epochs, resume at a position, prefetch."""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from qcxr.data.loader import Loader, epoch_order


@dataclass
class FakeDataset:
    ids: list[str]
    paths: list[Path]
    labels: np.ndarray


class FakeCache:
    """Images whose pixels encode their index, so batches can be checked exactly."""

    def __init__(self, channels=lambda k: 1):
        self.channels = channels
        self.calls = 0
        self.lock = threading.Lock()

    def get(self, path):
        with self.lock:
            self.calls += 1
        k = int(Path(path).stem)
        return np.full((8, 8, self.channels(k)), k % 256, np.uint8)


class Opened:
    """The loaders and epochs a test opens, closed when it ends, even by a failure: no
    read-ahead thread outlives its test, so each test's thread checks see its own threads only.
    Held weakly, so that a test can still drop the last reference to a loader."""

    def __init__(self):
        self.refs: list[weakref.ref] = []

    def keep(self, thing):
        self.refs.append(weakref.ref(thing))
        return thing

    def loader(self, *args, **kwargs) -> Loader:
        return self.keep(Loader(*args, **kwargs))

    def close(self) -> None:
        for ref in reversed(self.refs):  # epochs before the loaders that began them
            thing = ref()
            if thing is not None:
                thing.close()


@pytest.fixture
def opened():
    things = Opened()
    yield things
    things.close()


def dataset(n: int, labels: int = 3) -> FakeDataset:
    rng = np.random.default_rng(0)
    return FakeDataset(
        ids=[f"id{k}" for k in range(n)],
        paths=[Path(f"/nowhere/{k}.png") for k in range(n)],
        labels=rng.integers(0, 2, (n, labels)).astype(np.float32),
    )


def test_epoch_order_is_a_permutation_fixed_by_seed_and_epoch():
    a = epoch_order(100, seed=3, epoch=0)
    assert sorted(a) == list(range(100))
    np.testing.assert_array_equal(a, epoch_order(100, seed=3, epoch=0))
    assert not np.array_equal(a, epoch_order(100, seed=3, epoch=1))
    assert not np.array_equal(a, epoch_order(100, seed=4, epoch=0))


def test_epoch_yields_every_example_once_in_order_with_its_labels(opened):
    data = dataset(103)
    loader = opened.loader(data, FakeCache(), batch_size=10, seed=7, threads=3, prefetch=2)
    batches = list(loader.epoch(2))
    assert len(batches) == len(loader) == 11 and [b.position for b in batches] == list(range(11))
    order = epoch_order(103, 7, 2)
    seen = np.concatenate([[int(i[2:]) for i in b.ids] for b in batches])
    np.testing.assert_array_equal(seen, order)
    for batch in batches:
        rows = [int(i[2:]) for i in batch.ids]
        np.testing.assert_array_equal(batch.labels, data.labels[rows])
        np.testing.assert_array_equal(batch.images[:, 0, 0, 0], np.array(rows) % 256)
        assert batch.images.dtype == np.uint8 and batch.labels.dtype == np.float32
    assert batches[-1].images.shape == (3, 8, 8, 1)


def test_same_seed_same_batches_for_two_heads_and_drop_last(opened):
    data = dataset(50)
    a = opened.loader(data, FakeCache(), batch_size=8, seed=1, drop_last=True)
    b = opened.loader(
        data, FakeCache(), batch_size=8, seed=1, drop_last=True, threads=1, prefetch=0
    )
    ids_a = [x.ids for x in a.epoch(4)]
    assert ids_a == [x.ids for x in b.epoch(4)]
    assert len(ids_a) == 6 and all(len(ids) == 8 for ids in ids_a)


def test_resume_from_a_saved_position_gives_the_remaining_batches(opened):
    data = dataset(40)
    loader = opened.loader(data, FakeCache(), batch_size=6, seed=5)
    full = list(loader.epoch(3))
    saved = None
    for batch in loader.epoch(3):
        saved = batch.position
        if batch.position == 2:
            break  # the run stops after batch 2; a checkpoint records position 2
    resumed = list(loader.epoch(3, start=saved + 1))
    assert [b.ids for b in resumed] == [b.ids for b in full[3:]]
    assert [b.position for b in resumed] == list(range(3, len(full)))
    with pytest.raises(ValueError, match="outside epoch"):
        next(loader.epoch(3, start=len(full) + 1))


def test_no_shuffle_and_mixed_channels(opened):
    data = dataset(5)
    loader = opened.loader(
        data, FakeCache(lambda k: 3 if k == 2 else 1), batch_size=5, seed=0, shuffle=False
    )
    (batch,) = opened.keep(loader.epoch(0))
    assert batch.ids == data.ids and batch.images.shape == (5, 8, 8, 3)


def test_prefetch_reads_ahead_while_the_consumer_works(opened):
    cache = FakeCache()
    loader = opened.loader(dataset(40), cache, batch_size=4, seed=0, threads=2, prefetch=3)
    batches = opened.keep(loader.epoch(0))
    next(batches)
    deadline = time.monotonic() + 10
    while cache.calls < 4 * 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cache.calls == 4 * 4  # the first batch plus 3 prefetched, and no more
    batches.close()


def test_a_read_error_reaches_the_caller_with_its_message(opened):
    class Failing(FakeCache):
        def get(self, path):
            if Path(path).stem == "7":
                raise ValueError(f"{path}: cannot decode image (broken)")
            return super().get(path)

    loader = opened.loader(dataset(20), Failing(), batch_size=4, seed=0, shuffle=False)
    with pytest.raises(ValueError, match=r"/nowhere/7.png: cannot decode image"):
        list(loader.epoch(0))


def test_batches_are_assembled_off_the_callers_thread_and_ready_when_asked_for(opened):
    class Recording(FakeCache):
        def __init__(self):
            super().__init__()
            self.threads = set()

        def get(self, path):
            self.threads.add(threading.current_thread().name)
            return super().get(path)

    cache = Recording()
    loader = opened.loader(dataset(60), cache, batch_size=6, seed=2, threads=2, prefetch=2)
    batches = opened.keep(loader.epoch(0))
    ready = []
    for _ in range(len(loader)):
        time.sleep(0.02)  # a step longer than loading a batch of this fake cache
        asked = time.perf_counter()
        batch = next(batches)
        ready.append(batch.ready_at <= asked)
    assert next(batches, None) is None
    assert all(ready[1:])  # the first is read when first asked for (the generator starts then)
    assert threading.current_thread().name not in cache.threads
    assert all(name.startswith("qcxr-read") for name in cache.threads)


def test_no_prefetch_reads_nothing_ahead_and_closing_stops_the_producer(opened):
    cache = FakeCache()
    loader = opened.loader(dataset(40), cache, batch_size=4, seed=0, threads=2, prefetch=0)
    batches = opened.keep(loader.epoch(0))
    next(batches)
    time.sleep(0.05)
    assert cache.calls == 4
    next(batches)
    time.sleep(0.05)
    assert cache.calls == 8
    batches.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("qcxr-")]


def _qcxr_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("qcxr-")]


def test_the_next_epoch_is_read_ahead_and_taken_over(opened):
    cache = FakeCache()
    loader = opened.loader(dataset(40), cache, batch_size=4, seed=5, threads=2, prefetch=2)
    assert len(list(loader.epoch(0))) == 10
    deadline = time.monotonic() + 10
    while cache.calls < 40 + 2 * 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cache.calls == 40 + 2 * 4  # epoch 1's first two batches, before anyone asked
    asked = time.perf_counter()
    epoch1 = list(loader.epoch(1))
    assert epoch1[0].ready_at <= asked
    fresh = opened.loader(dataset(40), FakeCache(), batch_size=4, seed=5, threads=2, prefetch=2)
    assert [b.ids for b in epoch1] == [b.ids for b in fresh.epoch(1)]
    deadline = time.monotonic() + 10
    while cache.calls < 40 + 40 + 2 * 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cache.calls == 40 + 40 + 2 * 4  # epoch 2 is now read ahead in turn
    loader.close()
    fresh.close()
    assert not _qcxr_threads()


def test_an_epoch_out_of_turn_or_a_resume_discards_the_read_ahead(opened):
    loader = opened.loader(dataset(40), FakeCache(), batch_size=4, seed=5, threads=2, prefetch=2)
    list(loader.epoch(0))
    fresh = opened.loader(dataset(40), FakeCache(), batch_size=4, seed=5, threads=2, prefetch=0)
    assert [b.ids for b in loader.epoch(3)] == [b.ids for b in fresh.epoch(3)]
    list(loader.epoch(0))  # reads epoch 1 ahead
    resumed = list(loader.epoch(1, start=4))
    assert [b.position for b in resumed] == list(range(4, 10))
    assert [b.ids for b in resumed] == [b.ids for b in fresh.epoch(1)][4:]
    del loader  # a loader nobody holds stops its read-ahead
    assert not _qcxr_threads()


def test_epochs_shorter_than_the_prefetch_chain_without_leftovers(opened):
    loader = opened.loader(dataset(6), FakeCache(), batch_size=4, seed=1, threads=2, prefetch=3)
    fresh = opened.loader(dataset(6), FakeCache(), batch_size=4, seed=1, threads=2, prefetch=0)
    for epoch in range(4):
        assert [b.ids for b in loader.epoch(epoch)] == [b.ids for b in fresh.epoch(epoch)]
    loader.close()
    assert not _qcxr_threads()
