"""Frozen mode: heads trained on feature stores, the seeds of one grid cell vmapped together.

An epoch runs in chunks of up to CHUNK_STEPS batches, each one on-device scan (one dispatch, one
progress update); every seed draws its batches from epoch_order(N, seed, epoch) as the fine-tune
loader does, so the same seed sees the same examples in the same order in both modes.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from qcxr import config as config_lib
from qcxr.config import Config
from qcxr.data.loader import epoch_order
from qcxr.rundir import RunResult
from qcxr.train import interrupt, parallel
from qcxr.train.data import FrozenData, load_frozen_data, save_feature_norm
from qcxr.train.history import mean_auroc
from qcxr.train.model import Model, init_variables
from qcxr.train.runbook import BatchHook, NonFiniteLossError, RunBook, TestPredictions
from qcxr.train.state import TrainState, create_state
from qcxr.train.step import (
    make_frozen_chunk,
    make_frozen_eval,
    make_frozen_predict,
    make_train_step,
)
from qcxr.train.trainer import StepClock, Trainer

CHUNK_STEPS = 128  # batches per on-device scan (one dispatch, one progress update)


def chunks(start: int, total: int, size: int) -> Iterator[tuple[int, int]]:
    """Batch ranges [a, b) of an epoch, cut at multiples of `size` (the same whatever `start`)."""
    while start < total:
        end = min((start // size + 1) * size, total)
        yield start, end
        start = end


def padded_batches(order: np.ndarray, batch_size: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Index and weight (M, width) for consecutive batches of `order`; padding has weight 0."""
    count = -(-len(order) // batch_size)
    index = np.zeros((count, width), np.int32)
    weight = np.zeros((count, width), np.float32)
    for m in range(count):
        part = order[m * batch_size : (m + 1) * batch_size]
        index[m, : len(part)] = part
        weight[m, : len(part)] = 1.0
    return index, weight


def feature_views(seed: int, epoch: int, count: int, views: int) -> np.ndarray | None:
    """Which augmented view of each example an epoch uses (multi-view stores only)."""
    if views <= 1:
        return None
    return np.random.default_rng([seed, 2, epoch]).integers(0, views, count, dtype=np.int32)


def stack(trees: list[Any]) -> Any:
    """One tree with a leading seed axis, stacked on the host (no per-leaf compilation)."""
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def take(tree: Any, rows: list[int] | int) -> Any:
    return jax.tree.map(lambda x: x[np.asarray(rows)], tree)


def unstack(tree: Any, count: int) -> list[Any]:
    """Per-seed host copies of a stacked state (one transfer, then numpy slicing)."""
    host = jax.device_get(tree)
    return [jax.tree.map(lambda x, s=s: np.asarray(x[s]), host) for s in range(count)]


def keep(active: list[RunBook], state: Any, drop: list[int]) -> tuple[list[RunBook], Any]:
    """The books and stacked state without the seeds at `drop`."""
    rows = [s for s in range(len(active)) if s not in drop]
    if not rows:
        return [], state
    return [active[s] for s in rows], take(state, rows)


class FrozenTrainer(Trainer):
    """Trains the seeds of one grid cell on feature stores, vmapped over a leading seed axis."""

    def __init__(self, config: Config, data: FrozenData, mesh: jax.sharding.Mesh, progress: bool):
        super().__init__(config, data, mesh, progress)
        self.tx, self.fresh, self.chunk, self.evaluate, self.predict = self.functions
        t = config.train
        self.width = parallel.padded_size(t.batch_size, mesh)
        put = lambda x: parallel.shard(x, parallel.replicated(mesh))  # noqa: E731
        self.train_x, self.train_y = put(data.train.inputs), put(data.train.labels)
        self.val_x, self.val_y = put(data.val.inputs), put(data.val.labels)
        eval_width = parallel.padded_size(t.eval_batch_size, mesh)
        index, weight = padded_batches(np.arange(len(data.val.ids)), eval_width, eval_width)
        rows = parallel.batch_sharding(mesh, 1)
        self.val_index, self.val_weight = parallel.shard(index, rows), parallel.shard(weight, rows)
        self.views = data.train.inputs.shape[1] if data.train.inputs.ndim == 3 else 1
        # Scans end at every mid-epoch checkpoint point when those are closer than CHUNK_STEPS.
        every = t.checkpoint_every
        self.chunk_steps = min(CHUNK_STEPS, every) if every > 0 else CHUNK_STEPS

    @property
    def kind(self) -> str:
        return f"frozen-{self.data.feature_dim}"

    def build(self, model: Model, tx: Any, loss: Any) -> tuple:
        config, dim = self.config, self.data.feature_dim

        def fresh(seed: jax.Array) -> TrainState:
            return create_state(init_variables(config, seed, dim)[0], tx, seed)

        return (
            tx,
            jax.jit(jax.vmap(fresh)),
            jax.jit(make_frozen_chunk(make_train_step(model, tx, loss)), donate_argnums=0),
            jax.jit(make_frozen_eval(model, loss)),
            jax.jit(make_frozen_predict(model)),
        )

    def initial_states(self, books: list[RunBook]) -> TrainState:
        """Fresh states of every seed (one compiled, vmapped init), or their latest checkpoints."""
        seeds = jnp.asarray([b.seed for b in books], jnp.int32)
        states = jax.device_get(self.fresh(seeds))
        if not any(b.resumed for b in books):
            return states
        singles = unstack(states, len(books))
        restored = [
            b.checkpoints.restore_latest(single)[0] if b.resumed else single
            for b, single in zip(books, singles, strict=True)
        ]
        return stack(restored)

    def epoch_batches(self, books: list[RunBook], epoch: int, start: int, end: int):
        """index, weight, view arrays (K, S, width) for batches [start, end) of every seed."""
        n = len(self.data.train.ids)
        index, weight, view = [], [], []
        for book in books:
            order = np.asarray(epoch_order(n, book.seed, epoch))
            part = order[start * self.batch_size : end * self.batch_size]
            i, w = padded_batches(part, self.batch_size, self.width)
            views = feature_views(book.seed, epoch, n, self.views)
            index.append(i)
            weight.append(w)
            view.append(np.zeros_like(i) if views is None else views[i])
        return (np.stack(index, 1), np.stack(weight, 1), np.stack(view, 1))

    def train(self, books: list[RunBook], hook: BatchHook | None) -> None:
        """Train runs that stand at the same (epoch, position) together until each stops (or a
        signal stops them: see qcxr.train.interrupt)."""
        if interrupt.requested():
            for book in books:
                book.preempt(None, interrupt.requested())
            return
        state = parallel.replicate(self.initial_states(books), self.mesh)
        active = list(books)
        label = f"{books[0].config.task}/{books[0].config.model.head} seeds "
        label += ",".join(str(b.seed) for b in books)
        while active:
            active, state = self.train_epoch(active, state, hook, label)

    def train_epoch(self, active: list[RunBook], state: Any, hook: BatchHook | None, label: str):
        """One epoch (or its rest, after a resume) of every active seed; the seeds that go on."""
        epoch, position = active[0].epoch, active[0].position
        began = time.perf_counter()
        bar = self.epoch_bar(label, epoch, position)
        for start, end in chunks(position, self.steps_per_epoch, self.chunk_steps):
            active, state, losses = self.train_chunk(active, state, epoch, (start, end), hook)
            if active and interrupt.requested():  # checked between chunks: at most one waits
                for book, single in zip(active, unstack(state, len(active)), strict=True):
                    book.preempt(single, interrupt.requested())
                active = []
            if not active:
                bar.close()
                return active, state
            bar.update(end - start)
            if losses.size:
                bar.set_postfix(loss=f"{float(np.mean(losses[-1])):.4f}")
        bar.close()
        return self.finish_epoch(active, state, began)

    def train_chunk(self, active: list[RunBook], state: Any, epoch: int, span, hook):
        """Batches [start, end) of every active seed in one scan; (active, state, losses)."""
        start, end = span
        index, weight, view = self.epoch_batches(active, epoch, start, end)
        rows = parallel.batch_sharding(self.mesh, 2)
        with StepClock() as clock:
            state, losses = self.chunk(
                state,
                self.train_x,
                self.train_y,
                *(parallel.shard(a, rows) for a in (index, weight, view)),
            )
            losses = np.asarray(losses)
        # Every step of the scan gets an equal share of its time (seeds trained together share it).
        seconds = None if clock.seconds is None else clock.seconds / max(end - start, 1)
        batches = (index, weight, view, seconds)
        failed = [
            s
            for s, book in enumerate(active)
            if not self.record_chunk(book, losses[:, s], epoch, start, batches, s, hook)
        ]
        if failed:
            active, state = keep(active, state, failed)
        if active and active[0].checkpoint_due(start, end):
            for book, single in zip(active, unstack(state, len(active)), strict=True):
                book.save_latest(single)
        return active, state, losses

    def record_chunk(self, book, losses, epoch, start, batches, s, hook) -> bool:
        """Enter one seed's chunk losses in its book (and show the hook its batches); False when
        a loss was not finite and the run stopped."""
        index, weight, view, seconds = batches
        try:
            for k, value in enumerate(losses):
                book.record_step(float(value), seconds)
                if hook is not None:
                    real = weight[k, s] > 0
                    views = view[k, s][real] if self.views > 1 else None
                    ids = [self.data.train.ids[j] for j in index[k, s][real]]
                    hook(book.config, epoch, start + k, ids, views)
        except NonFiniteLossError as err:
            print(f"error: {err}", file=sys.stderr)
            return False
        return True

    def finish_epoch(self, active: list[RunBook], state: Any, began: float):
        """Validation of every seed, then each book's epoch end; the seeds that go on."""
        val, aurocs = self.validate(state)
        seconds = time.perf_counter() - began
        singles = unstack(state, len(active))
        stopped = [
            s
            for s, book in enumerate(active)
            if self.end_epoch(book, float(val[s]), seconds, singles[s], aurocs[s])
        ]
        return keep(active, state, stopped) if stopped else (active, state)

    def validate(self, state: Any) -> tuple[np.ndarray, list[float]]:
        """Validation loss and mean AUROC of every seed, from one pass over the split."""
        val, probs = self.evaluate(
            {"params": state.params}, self.val_x, self.val_y, self.val_index, self.val_weight
        )
        probs = parallel.to_host(probs)  # (M, S, B, n), padding rows at the end
        rows = len(self.data.val.ids)
        per_seed = probs.transpose(1, 0, 2, 3).reshape(probs.shape[1], -1, probs.shape[-1])
        labels = self.data.val.labels
        return np.asarray(val), [mean_auroc(p[:rows], labels) for p in per_seed]

    def test_predictions(self, variables: dict[str, Any]) -> TestPredictions:
        out = {}
        width = parallel.padded_size(self.config.train.eval_batch_size, self.mesh)
        rows = parallel.batch_sharding(self.mesh, 1)
        variables = parallel.replicate(variables, self.mesh)
        for name, split in self.data.tests.items():
            index, _ = padded_batches(np.arange(len(split.ids)), width, width)
            features = parallel.shard(split.inputs, parallel.replicated(self.mesh))
            probs = parallel.to_host(self.predict(variables, features, parallel.shard(index, rows)))
            probs = probs.reshape(-1, probs.shape[-1])[: len(split.ids)]
            out[name] = (split.ids, probs, split.labels, split.label_names)
        return out


def vmap_wanted(config: Config) -> bool:
    """Whether the seeds of a cell train together (train.vmap_seeds: auto, yes, no)."""
    setting = config.train.vmap_seeds
    if setting in (True, "yes", "true"):
        return True
    if setting in (False, "no", "false"):
        return False
    if setting == "auto":
        return jax.default_backend() != "cpu"
    raise ValueError(f"train.vmap_seeds: {setting!r}; choose from {config_lib.VMAP_SEEDS}")


def same_cell(configs: list[Config]) -> None:
    """Seeds trained together must differ only in their seed."""
    import dataclasses

    base = config_lib.to_dict(dataclasses.replace(configs[0].train, seed=0))
    for config in configs[1:]:
        if config_lib.to_dict(dataclasses.replace(config.train, seed=0)) != base or any(
            getattr(config, f) != getattr(configs[0], f) for f in ("task", "model", "data")
        ):
            raise ValueError("seeds trained together must share every setting but the seed")


def with_feature_weights(config: Config, weights: str) -> Config:
    """The config a frozen run records: model.weights is the identity of the weights its
    features were extracted with (the stores' field weights), whatever the config said: the
    head never saw any other backbone."""
    if config.model.weights == weights:
        return config
    model = dataclasses.replace(config.model, weights=weights)
    return dataclasses.replace(config, model=model)


def warn_random_weights(weights: str) -> None:
    """The loud banner of random backbone weights, once per process, as `qcxr features` says."""
    from qcxr.models.weights import random_weights_warning

    banner = random_weights_warning(weights)
    if banner and parallel.is_main_process() and weights not in _WARNED:
        _WARNED.add(weights)
        print(banner, file=sys.stderr)


_WARNED: set[str] = set()


def train_frozen(
    configs: list[Config],
    run_dirs: list[str | Path],
    data: FrozenData | None = None,
    *,
    resume: bool = True,
    progress: bool = True,
    on_batch: BatchHook | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> list[RunResult]:
    """Train heads on frozen features, one run per config (seeds of one cell), vmapped together.

    SIGTERM/SIGINT stop it at the end of the current chunk: the runs' latest checkpoints are
    saved there and their results say "preempted" (qcxr.train.interrupt)."""
    with interrupt.handling():
        return _train_frozen(configs, run_dirs, data, resume, progress, on_batch, mesh)


def _train_frozen(configs, run_dirs, data, resume, progress, on_batch, mesh) -> list[RunResult]:
    same_cell(configs)
    data = data or load_frozen_data(configs[0])
    configs = [with_feature_weights(c, data.weights) for c in configs]
    warn_random_weights(data.weights)
    trainer = FrozenTrainer(configs[0], data, mesh or parallel.data_mesh(), progress)
    books = [trainer.open_book(c, d, resume) for c, d in zip(configs, run_dirs, strict=True)]
    for book in books:
        trainer.record_versions(book, data.weights)
    groups: dict[tuple, list[RunBook]] = {}
    for book in books:
        if not book.training_done:
            key = (book.epoch, book.position) if vmap_wanted(configs[0]) else (book.seed,)
            groups.setdefault(key, []).append(book)
    try:
        for group in groups.values():
            trainer.train(group, on_batch)
    except BaseException:
        for book in books:
            book.abandon()
        raise
    for book in books:
        if data.norm is not None and parallel.is_main_process():
            save_feature_norm(book.run_dir, data.norm)
    return [trainer.conclude(book) for book in books]
