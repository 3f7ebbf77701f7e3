"""Fine-tune mode: backbone + head trained end to end on images, one seed (Sec. III-F).

Batches come from qcxr.data.loader in epoch_order(N, seed, epoch); batch p of epoch e is
augmented on the device with augment_key(seed, e, p), so a resumed run sees what the
uninterrupted one would have.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from qcxr import rundir
from qcxr.config import Config
from qcxr.data.augment import augment_key
from qcxr.data.loader import Loader
from qcxr.rundir import RunResult
from qcxr.train import interrupt, parallel
from qcxr.train.data import ImageData, load_image_data
from qcxr.train.history import mean_auroc
from qcxr.train.model import Model, init_variables
from qcxr.train.runbook import BatchHook, NonFiniteLossError, RunBook, TestPredictions
from qcxr.train.state import TrainState, create_state, variables_of
from qcxr.train.step import make_eval_sums, make_train_step
from qcxr.train.trainer import StepClock, Trainer


def padded_rows(images: np.ndarray, labels: np.ndarray, width: int):
    """(images, labels, weight) with rows padded to `width`; padding gets weight 0 in the loss.

    Training batches are padded only up to a multiple of the device count (a short last batch
    compiles once more instead), because padding rows would enter BatchNorm's batch statistics.
    """
    size = len(labels)
    weight = np.zeros((width,), np.float32)
    weight[:size] = 1.0
    if width == size:
        return images, labels, weight
    pad = width - size
    images = np.concatenate([images, np.repeat(images[:1], pad, 0)])
    labels = np.concatenate([labels, np.repeat(labels[:1], pad, 0)])
    return images, labels, weight


class FinetuneTrainer(Trainer):
    """Trains backbone + head on images (loader + on-device augmentation), one seed."""

    kind = "finetune"

    def __init__(self, config: Config, data: ImageData, mesh: jax.sharding.Mesh, progress: bool):
        super().__init__(config, data, mesh, progress)
        self.tx, self.step, self.eval_sums, self.logits = self.functions
        self.loader = self.loader_of(data.train, config.train.batch_size, config.train.seed, True)
        self.eval_width = parallel.padded_size(config.train.eval_batch_size, mesh)
        self.rows = parallel.batch_sharding(mesh, 0)

    def build(self, model: Model, tx: Any, loss: Any) -> tuple:
        return (
            tx,
            jax.jit(make_train_step(model, tx, loss), donate_argnums=0),
            jax.jit(make_eval_sums(model, loss)),
            jax.jit(model.logits),
        )

    def loader_of(self, dataset: Any, batch_size: int, seed: int, shuffle: bool) -> Loader:
        d = self.config.data
        return Loader(
            dataset,
            self.data.cache,
            batch_size=batch_size,
            seed=seed,
            shuffle=shuffle,
            drop_last=False,
            threads=d.loader_threads,
            prefetch=d.prefetch,
        )

    def ordered(self, dataset: Any) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """Batches of a dataset in file order, padded to the eval width."""
        for batch in self.loader_of(dataset, self.eval_width, 0, False).epoch(0):
            images, labels, weight = padded_rows(batch.images, batch.labels, self.eval_width)
            yield len(batch.ids), images, labels, weight

    def validate(self, variables: Any) -> tuple[float, float]:
        """Validation loss and mean AUROC, from one pass over the split."""
        total, count, probs, truth = 0.0, 0.0, [], []
        for size, images, labels, weight in self.ordered(self.data.val):
            s, c, p = self.eval_sums(
                variables, *(parallel.shard(a, self.rows) for a in (images, labels, weight))
            )
            total, count = total + float(s), count + float(c)
            probs.append(parallel.to_host(p)[:size])
            truth.append(labels[:size])
        return total / max(count, 1.0), mean_auroc(np.concatenate(probs), np.concatenate(truth))

    def test_predictions(self, variables: Any) -> TestPredictions:
        variables = parallel.replicate(variables, self.mesh)
        out = {}
        for name, dataset in self.data.tests.items():
            parts = []
            for size, images, _, _ in self.ordered(dataset):
                logits = self.logits(variables, parallel.shard(images, self.rows))
                parts.append(parallel.to_host(jax.nn.sigmoid(logits))[:size])
            probs = np.concatenate(parts)
            out[name] = (list(dataset.ids), probs, dataset.labels, list(dataset.label_names))
        return out

    def initial_state(self, book: RunBook) -> TrainState:
        """The run's first state (its versions recorded), or its latest checkpoint."""
        variables, identity = init_variables(book.config, book.seed)
        self.record_versions(book, identity)
        state = create_state(variables, self.tx, book.seed)
        if book.resumed:
            state, _ = book.checkpoints.restore_latest(state)
        return parallel.replicate(state, self.mesh)

    def train(self, book: RunBook, hook: BatchHook | None) -> None:
        state = self.initial_state(book)
        try:
            if interrupt.requested():
                book.preempt(None, interrupt.requested())
                return
            while not book.training_done:
                state, stopped = self.train_epoch(book, state, hook)
                if stopped:
                    break
        except NonFiniteLossError:
            pass  # status.json says why; conclude() returns it
        finally:
            self.loader.close()  # the epoch after the last was being read ahead

    def train_epoch(self, book: RunBook, state: TrainState, hook: BatchHook | None):
        """One epoch (or its rest, after a resume); (state, whether the run stops)."""
        epoch, began = book.epoch, time.perf_counter()
        bar = self.epoch_bar(book.label, epoch, book.position)
        for batch in self.loader.epoch(epoch, start=book.position):
            if batch.position != book.position:
                raise RuntimeError(f"loader gave batch {batch.position}, expected {book.position}")
            state, value = self.train_batch(book, state, batch, hook)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
            if interrupt.requested():  # checked after every step
                bar.close()
                book.preempt(state, interrupt.requested())
                return state, True
        bar.close()
        val, auroc = self.validate(variables_of(state))
        return state, self.end_epoch(book, val, time.perf_counter() - began, state, auroc)

    def train_batch(self, book: RunBook, state: TrainState, batch: Any, hook: BatchHook | None):
        key = augment_key(book.seed, book.epoch, batch.position)
        width = parallel.padded_size(len(batch.ids), self.mesh)
        images, labels, weight = padded_rows(batch.images, batch.labels, width)
        with StepClock() as clock:
            state, value = self.step(
                state, *(parallel.shard(a, self.rows) for a in (images, labels, weight)), key
            )
            value = float(value)
        book.record_step(value, clock.seconds)
        if hook is not None:
            hook(book.config, book.epoch, batch.position, list(batch.ids), key)
        if book.checkpoint_due(batch.position, batch.position + 1):
            book.save_latest(state)
        return state, value


def train_finetune(
    config: Config,
    run_dir: str | Path,
    data: ImageData | None = None,
    *,
    resume: bool = True,
    progress: bool = True,
    on_batch: BatchHook | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> RunResult:
    """Train ResNet50 (or the test backbone) + head end to end on images (Sec. III-F).

    SIGTERM/SIGINT stop it after the current step: the latest checkpoint is saved there and the
    result says "preempted" (qcxr.train.interrupt)."""
    with interrupt.handling():
        return _train_finetune(config, run_dir, data, resume, progress, on_batch, mesh)


def _train_finetune(config, run_dir, data, resume, progress, on_batch, mesh) -> RunResult:
    if data is None:
        cache = config.data.cache or str(rundir.experiment_of(run_dir) / "cache")
        data = load_image_data(config, cache, progress)
    trainer = FinetuneTrainer(config, data, mesh or parallel.data_mesh(), progress)
    book = trainer.open_book(config, run_dir, resume)
    try:
        trainer.train(book, on_batch)
    except BaseException:
        book.abandon()
        raise
    return trainer.conclude(book)
