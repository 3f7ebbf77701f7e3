"""The loader: per-(seed, epoch) permutations, parallel reads from the cache, prefetch, resume.

The order depends only on (seed, epoch), so a CDL and a DQC run with the same seed see the same
batches; `epoch(e, start=k)` continues exactly at batch k, so a resumed run sees what it would
have seen.

Each epoch has one producer thread that does all the work of a batch: it hands the reads to
`threads` reader threads (one task per thread and batch; zstd decompression, SQLite and numpy
copies release the GIL), stacks the images, gathers ids and labels and queues the finished
`Batch`. The caller's `next()` only takes a finished batch off a queue. The producer reads at
most `prefetch` batches ahead of the one the caller holds, and starts the next one within a
millisecond of the caller taking a batch, so it works while the caller computes and is idle
(off the GIL) by the time the caller asks again, provided a step takes longer than loading a
batch (plus that millisecond). When the caller takes the last batch of an epoch, the next
epoch's producer starts reading its first batches, so an epoch's first batch does not wait
either (`epoch(e + 1)` takes it over; an epoch asked for out of turn stops it).
Measured in benchmarks/data_pipeline.md: threads beat joblib (one `Parallel` call per batch,
as the paper's loader did) by 1.3-2.2x on cached reads.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from qcxr.config import DataConfig
from qcxr.data.preprocess import preprocess

_DEFAULTS = DataConfig()
ORDER_STREAM = 0x0D  # separates the data-order stream from other uses of the run seed
_END = object()  # the producer's last item of an epoch
# How often an idle producer looks whether the caller took a batch. It polls instead of being
# woken because a wake-up from inside next() measurably stalled the caller: on a loaded 2-core
# machine with a CPU-bound step, next() took 1-8 ms in ~2% of calls with the batch ready and the
# loader idle (most likely the woken thread preempting the caller while it holds the GIL), and
# in none with polling (benchmarks/data_pipeline.md). Cost: up to ~1,000 short wake-ups a second
# of the producer while it waits; the step's time did not change beyond the machine's noise.
_POLL_S = 0.001


class Dataset(Protocol):
    ids: list[str]
    paths: list[Path]
    labels: np.ndarray


class ImageSource(Protocol):
    def get(self, path: str | Path) -> np.ndarray: ...


@dataclass(frozen=True)
class Batch:
    ids: list[str]
    images: np.ndarray  # uint8 (B, H, W, C)
    labels: np.ndarray  # float32 (B, n)
    position: int  # index of this batch in its epoch; resume with start=position + 1
    # time.perf_counter() when the loader had this batch finished and queued: a batch with
    # ready_at <= the time the caller asked for it was waiting for the caller, not the reverse.
    ready_at: float = field(default=0.0, compare=False, repr=False)


class Preprocessor:
    """An ImageSource without a cache: decode, resize and crop every time (the slow path)."""

    def __init__(self, **params):
        self.params = params

    def get(self, path: str | Path) -> np.ndarray:
        return preprocess(path, **self.params)


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of example indices for (seed, epoch); the same for every head."""
    return np.random.default_rng([seed, ORDER_STREAM, epoch]).permutation(num_examples)


def stack_images(images: list[np.ndarray]) -> np.ndarray:
    """(B, H, W, C); grayscale entries are broadcast to 3 channels if the batch mixes both."""
    channels = {image.shape[-1] for image in images}
    if len(channels) > 1:
        images = [np.broadcast_to(i, (*i.shape[:2], 3)) if i.shape[-1] == 1 else i for i in images]
    return np.stack(images)


@dataclass
class _Reading:
    """One epoch's producer thread and the queues between it and the caller."""

    epoch: int
    thread: threading.Thread
    allowed: list[int]
    ready: queue.SimpleQueue
    nudge: queue.SimpleQueue
    stop: threading.Event
    taken: threading.Event  # a caller iterates it: only then may it start the next epoch's

    def close(self) -> None:
        self.stop.set()
        self.nudge.put(None)
        self.thread.join()
        while not self.ready.empty():  # batches read but never taken
            self.ready.get()


def _close_all(readings: list[_Reading]) -> None:
    while readings:
        readings.pop().close()


class Loader:
    """Batches of (ids, uint8 images, labels) of a dataset, read through `cache`."""

    def __init__(
        self,
        dataset: Dataset,
        cache: ImageSource | None,
        *,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        drop_last: bool = False,
        threads: int = _DEFAULTS.loader_threads,
        prefetch: int = _DEFAULTS.prefetch,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        self.dataset, self.cache = dataset, cache or Preprocessor()
        self.batch_size, self.seed = batch_size, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        self.threads, self.prefetch = max(1, threads), max(0, prefetch)
        self.labels = np.asarray(dataset.labels, np.float32)
        # The next epoch, started at the end of this one (at most one; a list so that the
        # finalizer can stop it when the loader is collected without anyone taking it).
        self._ahead: list[_Reading] = []
        self._lock = threading.Lock()  # _ahead is set by a producer thread, taken by the caller
        weakref.finalize(self, _close_all, self._ahead)

    def __len__(self) -> int:
        n, b = len(self.dataset.ids), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def batch_indices(self, epoch: int) -> list[np.ndarray]:
        """The example indices of every batch of an epoch, in order."""
        n = len(self.dataset.ids)
        order = epoch_order(n, self.seed, epoch) if self.shuffle else np.arange(n)
        return [order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(len(self))]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """The batches of `epoch` from batch `start` on, read ahead by `prefetch` batches."""
        if not 0 <= start <= len(self):
            raise ValueError(f"start {start} is outside epoch of {len(self)} batches")
        reading = self._take_ahead(epoch, start) or self._start(epoch, start)
        reading.taken.set()
        try:
            while True:
                if not self.prefetch:
                    reading.allowed[0] += 1
                    reading.nudge.put(None)
                item = reading.ready.get()  # no system call when a finished batch is queued
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                if self.prefetch:
                    reading.allowed[0] += 1  # seen by the producer within _POLL_S: no wake-up
                yield item
        finally:
            reading.close()

    def close(self) -> None:
        """Stop reading the next epoch ahead (a loader whose epochs run to the end starts one)."""
        with self._lock:
            readings = self._ahead[:]
            self._ahead.clear()
        _close_all(readings)

    def _start(self, epoch: int, start: int) -> _Reading:
        """A producer for `epoch` from batch `start`, allowed to read `prefetch` batches ahead.

        allowed[0]: how many batches the producer may have started. With prefetch p >= 1 it
        starts at p and grows by one each time the caller takes a batch, so p batches are read
        (or wait, finished) while the caller holds one. With p = 0 it grows only when the caller
        asks for a batch: nothing is read ahead, and the producer is woken at once.
        """
        allowed, ready, nudge = [self.prefetch], queue.SimpleQueue(), queue.SimpleQueue()
        stop, taken = threading.Event(), threading.Event()
        batches = self.batch_indices(epoch)
        # The producer starts the next epoch's when it has queued this one's last batch, on its
        # own thread (from the caller's next() that cost ~1.2 ms); a weak reference, so that a
        # loader nobody holds is still collected.
        then = (weakref.WeakMethod(self._read_ahead), epoch + 1) if self.prefetch else None
        thread = threading.Thread(
            target=_produce,
            args=(self._source(), batches, start, allowed, ready, nudge, stop, taken, then),
            name="qcxr-batch",
            daemon=True,
        )
        thread.start()
        return _Reading(epoch, thread, allowed, ready, nudge, stop, taken)

    def _source(self) -> tuple:
        data = self.dataset
        return data.paths, data.ids, self.labels, self.cache, self.threads

    def _read_ahead(self, epoch: int) -> None:
        self.close()
        reading = self._start(epoch, 0)
        with self._lock:
            self._ahead.append(reading)

    def _take_ahead(self, epoch: int, start: int) -> _Reading | None:
        """The epoch read ahead if it is this one (any epoch when the order never changes)."""
        with self._lock:
            ahead = self._ahead.pop() if self._ahead else None
        if ahead is not None and start == 0 and (ahead.epoch == epoch or not self.shuffle):
            return ahead
        if ahead is not None:
            ahead.close()
        return None


def _read(cache: ImageSource, paths: list[Path]) -> list[np.ndarray]:
    return [cache.get(path) for path in paths]


def _produce(
    source: tuple,
    batches: list[np.ndarray],
    start: int,
    allowed: list[int],
    ready: queue.SimpleQueue,
    nudge: queue.SimpleQueue,
    stop: threading.Event,
    taken: threading.Event,
    then: tuple[weakref.WeakMethod, int] | None = None,
) -> None:
    """The producer thread of one epoch: reads, stacks and queues every batch from `start`
    on, in order, then _END (or the first exception, which the caller re-raises). `source` is
    (paths, ids, labels, cache, threads): not the loader, so that a loader nobody holds is
    collected and its read-ahead stopped."""
    paths, ids, labels, cache, threads = source
    readers = ThreadPoolExecutor(threads, thread_name_prefix="qcxr-read")
    reading: deque[tuple[int, list[Future]]] = deque()
    position = start
    try:
        while not stop.is_set():
            while position < len(batches) and position - start < allowed[0]:
                # One task per thread, not per image: a cached read is ~0.1 ms, comparable
                # to the cost of a future.
                rows = batches[position]
                chunks = np.array_split(rows, min(threads, len(rows)))
                reads = [readers.submit(_read, cache, [paths[i] for i in c]) for c in chunks]
                reading.append((position, reads))
                position += 1
            if reading:
                index, reads = reading.popleft()
                rows = batches[index]
                batch = Batch(
                    ids=[ids[i] for i in rows],
                    images=stack_images([im for r in reads for im in r.result()]),
                    labels=labels[rows],
                    position=index,
                    ready_at=time.perf_counter(),
                )
                ready.put(batch)
                if then is not None and index == len(batches) - 1 and taken.is_set():
                    read_ahead, next_epoch = then
                    if (method := read_ahead()) is not None:
                        method(next_epoch)
            elif position == len(batches):
                ready.put(_END)
                return
            else:  # every allowed batch is queued: wait for the caller to take one
                with contextlib.suppress(queue.Empty):
                    nudge.get(timeout=_POLL_S)
    except BaseException as err:  # noqa: BLE001 - handed to the caller, who re-raises it
        ready.put(err)
    finally:
        for _, reads in reading:
            for read in reads:
                read.cancel()
        readers.shutdown(wait=True, cancel_futures=True)
