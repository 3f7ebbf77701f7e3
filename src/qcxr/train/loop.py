"""Training runs: the epoch loop for finetune and frozen modes, resumable, with early stopping.

A run directory (runs/<experiment>/<task>/<head>/seed-<k>/) ends up with config.yaml,
versions.json, history.csv, checkpoints/{latest,best}/, train_counts.json,
predictions-{nih,mimic}.parquet, metrics.json (when qcxr.evaluate is installed) and status.json
(written last: a run is finished exactly when status.json says so).

Same seed => same batches: epoch e's order is qcxr.data.loader.epoch_order(N, seed, e) and batch
p's augmentation key is augment_key(seed, e, p), whatever the head. A resumed run restores the
state and continues at the saved (epoch, batch position), so it computes what the uninterrupted
run would have.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import yaml

from qcxr import config as config_lib
from qcxr.config import Config
from qcxr.train import parallel
from qcxr.train.checkpoint import RunCheckpoints
from qcxr.train.data import FrozenData, label_frequency, save_feature_norm, train_counts
from qcxr.train.early_stopping import EarlyStopping
from qcxr.train.history import History
from qcxr.train.losses import elementwise_loss
from qcxr.train.model import build_model, init_variables, resolved_backend
from qcxr.train.predictions import write_predictions
from qcxr.train.runinfo import write_versions
from qcxr.train.state import TrainState, create_state, optimizer, variables_of
from qcxr.train.step import (
    make_eval_sums,
    make_frozen_chunk,
    make_frozen_eval,
    make_frozen_predict,
    make_train_step,
)

STATUS_FILE = "status.json"
CHUNK_STEPS = 128  # frozen mode: batches per on-device scan (one dispatch, one progress update)

# Config keys a resumed run may change (they do not alter what is computed).
RESUMABLE_CHANGES = {
    "train.max_epochs",
    "train.patience",
    "data.cache",
    "data.loader_threads",
    "data.prefetch",
    "data.study",
    "data.features",
}

# on_batch(config, epoch, position, ids, augmentation) is called after every train step; tests use
# it to see what each run was fed. `augmentation` is the batch's augmentation key (finetune) or
# the chosen feature views (frozen, None for single-view stores).
BatchHook = Callable[[Config, int, int, list[str], Any], None]


class NonFiniteLossError(RuntimeError):
    """A train or validation loss was NaN or infinite; the run stopped, checkpoints kept."""


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    status: str  # "finished" or "failed"
    reason: str  # "early_stop", "max_epochs" or the error
    best_epoch: int = 0
    best_val_loss: float = math.nan
    epochs: int = 0


def run_status(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / STATUS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def is_finished(run_dir: str | Path) -> bool:
    status = run_status(run_dir)
    return bool(status and status.get("status") == "finished")


def _flat(data: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def write_config(config: Config, run_dir: Path, resume: bool) -> None:
    """config.yaml; a resumed run must have been started with the same (computing) settings."""
    path = run_dir / "config.yaml"
    new = config_lib.to_dict(config)
    if resume and path.is_file():
        old = _flat(config_lib.to_dict(config_lib.load(path)))
        changed = sorted(
            k for k, v in _flat(new).items() if old.get(k) != v and k not in RESUMABLE_CHANGES
        )
        if changed:
            raise ValueError(
                f"{path}: cannot resume with different settings {changed}; start a new run "
                "directory instead"
            )
    path.write_text(yaml.safe_dump(new, sort_keys=False))


class RunBook:
    """Everything one run records: position, early stopping, history, checkpoints, status."""

    def __init__(self, config: Config, run_dir: str | Path, *, resume: bool, steps_per_epoch: int):
        self.config = config
        self.seed = config.train.seed
        self.run_dir = Path(run_dir)
        self.steps_per_epoch = steps_per_epoch
        self.checkpoints_every = config.train.checkpoint_every
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoints = RunCheckpoints(self.run_dir)
        meta = self.checkpoints.latest_meta()
        if meta is not None and not resume:
            raise ValueError(
                f"{self.run_dir}: holds checkpoints of an earlier run; pass --resume to continue "
                "it, or choose another --out"
            )
        write_config(config, self.run_dir, resume)
        self.history = History(self.run_dir / "history.csv")
        self.stopping = EarlyStopping(config.train.patience, config.train.max_epochs)
        self.epoch, self.position, self.step = 0, 0, 0
        self.loss_sum, self.loss_count = 0.0, 0
        self.resumed = meta is not None
        if meta is not None:
            self.epoch, self.position, self.step = meta["epoch"], meta["position"], meta["step"]
            self.loss_sum, self.loss_count = meta["loss_sum"], meta["loss_count"]
            saved = EarlyStopping.from_dict(meta["early_stopping"])
            self.stopping = dataclasses.replace(
                saved, patience=config.train.patience, max_epochs=config.train.max_epochs
            )
        self.history.start(self.step if self.resumed else None)
        self.checkpoints.empty_trash()
        (self.run_dir / STATUS_FILE).unlink(missing_ok=True)

    @property
    def training_done(self) -> bool:
        return self.stopping.stop_reason is not None

    def meta(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "step": self.step,
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "early_stopping": self.stopping.to_dict(),
            "stop_reason": self.stopping.stop_reason,
            "seed": self.seed,
        }

    def record_step(self, value: float) -> None:
        if not math.isfinite(value):
            self.fail(
                f"train loss is {value} at epoch {self.epoch + 1}, batch position "
                f"{self.position} (step {self.step + 1})"
            )
        self.step += 1
        self.position += 1
        self.loss_sum += value
        self.loss_count += 1
        self.history.step(self.epoch + 1, self.step, value)

    def checkpoint_due(self, start: int, end: int) -> bool:
        """Whether batches [start, end) of this epoch crossed a mid-epoch checkpoint point."""
        every = self.checkpoints_every
        return bool(every) and end < self.steps_per_epoch and start // every != end // every

    def save_latest(self, state: TrainState) -> None:
        self.history.flush()  # rows first: a resume cuts rows beyond the checkpoint's step
        self.checkpoints.save_latest(self.step, state, self.meta())

    def end_epoch(self, val_loss: float, epoch_time: float, state: TrainState) -> str | None:
        """Record the epoch, keep the best, checkpoint; the stop reason or None."""
        if not math.isfinite(val_loss):
            self.fail(f"validation loss is {val_loss} after epoch {self.epoch + 1}")
        train_loss = self.loss_sum / max(self.loss_count, 1)
        self.last_train_loss = train_loss
        self.stopping, improved = self.stopping.update(val_loss)
        self.history.epoch(self.epoch + 1, self.step, train_loss, val_loss, epoch_time)
        if improved:
            best = {"epoch": self.epoch + 1, "step": self.step, "val_loss": val_loss}
            self.checkpoints.save_best(self.step, variables_of(state), best)
        self.epoch, self.position = self.epoch + 1, 0
        self.loss_sum, self.loss_count = 0.0, 0
        self.save_latest(state)
        return self.stopping.stop_reason

    def fail(self, message: str) -> None:
        self.history.flush()
        latest = self.checkpoints.latest_meta()
        kept = f"latest at step {latest['step']}" if latest else "none yet"
        full = (
            f"{self.run_dir}: {message}; run stopped. Last good checkpoints kept in "
            f"{self.checkpoints.directory} ({kept}). Try a lower train.learning_rate."
        )
        self.write_status({"status": "failed", "reason": "non-finite loss", "message": full})
        raise NonFiniteLossError(full)

    def write_status(self, status: dict[str, Any]) -> None:
        if parallel.is_main_process():
            (self.run_dir / STATUS_FILE).write_text(json.dumps(status, indent=2) + "\n")

    def result(self) -> RunResult:
        s = self.stopping
        return RunResult(
            self.run_dir, "finished", s.stop_reason or "", s.best_epoch, s.best_loss, s.epochs_done
        )

    def finish(
        self,
        tests: dict[str, tuple[list[str], np.ndarray, np.ndarray, list[str]]],
        counts: dict[str, float],
    ) -> RunResult:
        """Predictions of the best checkpoint, metrics, then status.json (the 'done' mark)."""
        if parallel.is_main_process():
            for name, (ids, probs, labels, names) in tests.items():
                write_predictions(
                    self.run_dir / f"predictions-{name}.parquet", ids, probs, labels, names
                )
            (self.run_dir / "train_counts.json").write_text(json.dumps(counts, indent=2) + "\n")
            write_run_metrics(self.run_dir)
        result = self.result()
        self.write_status(
            {
                "status": "finished",
                "reason": result.reason,
                "best_epoch": result.best_epoch,
                "best_val_loss": result.best_val_loss,
                "epochs": result.epochs,
                "steps": self.step,
            }
        )
        self.checkpoints.empty_trash()
        self.checkpoints.close()
        return result

    def log_epoch(self, prefix: str, val_loss: float, epoch_time: float) -> None:
        print(
            f"{prefix} epoch {self.epoch}/{self.config.train.max_epochs} "
            f"train {self.last_train_loss:.4f} "
            f"val {val_loss:.4f} best {self.stopping.best_loss:.4f} (epoch "
            f"{self.stopping.best_epoch}) {epoch_time:.1f}s",
            flush=True,
        )

    last_train_loss = math.nan


def write_run_metrics(run_dir: Path) -> None:
    """metrics.json via qcxr.evaluate.metrics, when that module is installed."""
    try:
        from qcxr.evaluate.metrics import write_metrics
    except ModuleNotFoundError:
        return
    try:
        write_metrics(run_dir)
    except Exception as err:  # metrics are recomputable with `qcxr evaluate`; training is not
        print(f"warning: {run_dir}: metrics not written: {err}", file=sys.stderr)


_COMPILED: dict[str, Any] = {}


def compiled(kind: str, config: Config, steps_per_epoch: int, frequency: np.ndarray, build):
    """Jitted functions shared by every trainer of the same settings in this process (a grid's
    seeds, a resumed run and its reference): each is compiled once, not once per trainer."""
    neutral = dataclasses.replace(
        config,
        train=dataclasses.replace(config.train, seed=0, patience=0),
        data=dataclasses.replace(config.data, study="", features="", cache=""),
    )
    key = json.dumps(
        [kind, config_lib.to_dict(neutral), steps_per_epoch, frequency.tolist()], sort_keys=True
    )
    if key not in _COMPILED:
        if len(_COMPILED) > 16:
            _COMPILED.clear()
        _COMPILED[key] = build()
    return _COMPILED[key]


def run_label(config: Config) -> str:
    return f"{config.task}/{config.model.head}"


def resolved_settings(config: Config, source: str) -> dict[str, Any]:
    """What the run's "auto" settings became (versions.json "resolved")."""
    return {"model.backend": resolved_backend(config), "data.source": source}


# ---------------------------------------------------------------------------------- frozen mode


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


def training_parts(config: Config, steps_per_epoch: int, frequency: np.ndarray):
    """(model, optimizer, elementwise loss) of a run: what every trainer's step is built from."""
    t = config.train
    return build_model(config), optimizer(t, steps_per_epoch), elementwise_loss(t, frequency)


class FrozenTrainer:
    """Trains the seeds of one grid cell on feature stores, vmapped over a leading seed axis."""

    def __init__(self, config: Config, data: FrozenData, mesh: jax.sharding.Mesh, progress: bool):
        self.config, self.data, self.mesh, self.progress = config, data, mesh, progress
        t = config.train
        self.batch_size = t.batch_size
        self.width = parallel.padded_size(t.batch_size, mesh)
        self.steps_per_epoch = -(-len(data.train.ids) // t.batch_size)
        frequency = label_frequency(data.train.labels)

        def build():
            model, tx, loss = training_parts(config, self.steps_per_epoch, frequency)
            step = make_train_step(model, tx, loss)
            dim = data.feature_dim

            def fresh(seed: jax.Array) -> TrainState:
                return create_state(init_variables(config, seed, dim)[0], tx, seed)

            return (
                tx,
                jax.jit(jax.vmap(fresh)),
                jax.jit(make_frozen_chunk(step), donate_argnums=0),
                jax.jit(make_frozen_eval(model, loss)),
                jax.jit(make_frozen_predict(model)),
            )

        self.tx, self.fresh, self.chunk, self.evaluate, self.predict = compiled(
            f"frozen-{data.feature_dim}", config, self.steps_per_epoch, frequency, build
        )
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
        from qcxr.data.loader import epoch_order

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
        """Train runs that stand at the same (epoch, position) together until each stops."""
        state = parallel.replicate(self.initial_states(books), self.mesh)
        active = list(books)
        rows = parallel.batch_sharding(self.mesh, 2)
        label = f"{run_label(self.config)} seeds {','.join(str(b.seed) for b in books)}"
        while active:
            epoch, position = active[0].epoch, active[0].position
            began = time.perf_counter()
            bar = _bar(self.progress, self.steps_per_epoch, position, f"{label} epoch {epoch + 1}")
            for start, end in chunks(position, self.steps_per_epoch, self.chunk_steps):
                index, weight, view = self.epoch_batches(active, epoch, start, end)
                state, losses = self.chunk(
                    state,
                    self.train_x,
                    self.train_y,
                    parallel.shard(index, rows),
                    parallel.shard(weight, rows),
                    parallel.shard(view, rows),
                )
                losses = np.asarray(losses)
                failed = []
                for s, book in enumerate(active):
                    try:
                        for k in range(end - start):
                            book.record_step(float(losses[k, s]))
                            if hook is not None:
                                real = index[k, s][weight[k, s] > 0]
                                views = view[k, s][weight[k, s] > 0] if self.views > 1 else None
                                ids = [self.data.train.ids[j] for j in real]
                                hook(book.config, epoch, start + k, ids, views)
                    except NonFiniteLossError as err:
                        print(f"error: {err}", file=sys.stderr)
                        failed.append(s)
                if failed:
                    active, state = self.keep(active, state, failed)
                    if not active:
                        break
                if active[0].checkpoint_due(start, end):
                    for book, single in zip(active, unstack(state, len(active)), strict=True):
                        book.save_latest(single)
                bar.update(end - start)
                if losses.size:
                    bar.set_postfix(loss=f"{float(np.mean(losses[-1])):.4f}")
            bar.close()
            if not active:
                break
            val = np.asarray(
                self.evaluate(
                    {"params": state.params},
                    self.val_x,
                    self.val_y,
                    self.val_index,
                    self.val_weight,
                )
            )
            seconds = time.perf_counter() - began
            stopped = []
            singles = unstack(state, len(active))
            for s, book in enumerate(active):
                try:
                    reason = book.end_epoch(float(val[s]), seconds, singles[s])
                except NonFiniteLossError as err:
                    print(f"error: {err}", file=sys.stderr)
                    stopped.append(s)
                    continue
                book.log_epoch(f"{run_label(book.config)} seed {book.seed}", float(val[s]), seconds)
                if reason:
                    stopped.append(s)
            if stopped:
                active, state = self.keep(active, state, stopped)

    @staticmethod
    def keep(active: list[RunBook], state: Any, drop: list[int]) -> tuple[list[RunBook], Any]:
        rows = [s for s in range(len(active)) if s not in drop]
        if not rows:
            return [], state
        return [active[s] for s in rows], take(state, rows)

    def test_predictions(self, variables: dict[str, Any]):
        """{testset: (ids, probabilities, labels, names)} for one model."""
        out = {}
        width = parallel.padded_size(self.config.train.eval_batch_size, self.mesh)
        rows = parallel.batch_sharding(self.mesh, 1)
        variables = parallel.replicate(variables, self.mesh)
        for name, split in self.data.tests.items():
            index, _ = padded_batches(np.arange(len(split.ids)), width, width)
            features = parallel.shard(split.inputs, parallel.replicated(self.mesh))
            probs = np.asarray(self.predict(variables, features, parallel.shard(index, rows)))
            probs = probs.reshape(-1, probs.shape[-1])[: len(split.ids)]
            out[name] = (split.ids, probs, split.labels, split.label_names)
        return out


def _bar(enabled: bool, total: int, initial: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="batch",
        leave=False,
        disable=not enabled,
        dynamic_ncols=True,
    )


def vmap_wanted(config: Config) -> bool:
    """Whether the seeds of a cell train together (train.vmap_seeds: auto, yes, no)."""
    setting = config.train.vmap_seeds
    if setting in (True, "yes", "true"):
        return True
    if setting in (False, "no", "false"):
        return False
    if setting == "auto":
        return jax.default_backend() != "cpu"
    raise ValueError(f"train.vmap_seeds: {setting!r}; choose auto, yes or no")


def same_cell(configs: list[Config]) -> None:
    """Seeds trained together must differ only in their seed."""
    base = config_lib.to_dict(dataclasses.replace(configs[0].train, seed=0))
    for config in configs[1:]:
        if config_lib.to_dict(dataclasses.replace(config.train, seed=0)) != base or any(
            getattr(config, f) != getattr(configs[0], f) for f in ("task", "model", "data")
        ):
            raise ValueError("seeds trained together must share every setting but the seed")


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
    """Train heads on frozen features, one run per config (seeds of one cell), vmapped together."""
    from qcxr.train.data import load_frozen_data

    same_cell(configs)
    data = data or load_frozen_data(configs[0])
    mesh = mesh or parallel.data_mesh()
    trainer = FrozenTrainer(configs[0], data, mesh, progress)
    books = [
        RunBook(c, d, resume=resume, steps_per_epoch=trainer.steps_per_epoch)
        for c, d in zip(configs, run_dirs, strict=True)
    ]
    for book in books:
        write_versions(
            book.run_dir,
            label_checksums=data.checksums(),
            weights=data.weights,
            resumed=book.resumed,
            resolved=resolved_settings(book.config, data.source),
        )
    todo = [b for b in books if not b.training_done]
    groups: dict[tuple, list[RunBook]] = {}
    for book in todo:
        key = (book.epoch, book.position) if vmap_wanted(configs[0]) else (book.seed,)
        groups.setdefault(key, []).append(book)
    for group in groups.values():
        trainer.train(group, on_batch)
    counts = train_counts(data.train.labels, data.train.label_names)
    results = []
    for book in books:
        if data.norm is not None:
            save_feature_norm(book.run_dir, data.norm)
        if (book.run_dir / STATUS_FILE).is_file():  # failed during training
            status = run_status(book.run_dir)
            results.append(RunResult(book.run_dir, status["status"], status["message"]))
            continue
        variables, _ = book.checkpoints.restore_best()
        results.append(book.finish(trainer.test_predictions(variables), counts))
    return results


# -------------------------------------------------------------------------------- finetune mode


@dataclass(frozen=True)
class ImageData:
    train: Any  # qcxr.data.datasets.LabeledImages
    val: Any
    tests: dict[str, Any]
    cache: Any  # qcxr.data.cache.ImageCache
    source: str = "nih"  # where train and val came from (qcxr.train.data.training_source)

    def checksums(self) -> dict[str, str]:
        splits = {"train": self.train, "val": self.val, **self.tests}
        return {name: split.checksum for name, split in splits.items()}


def load_image_data(config: Config, cache_dir: str | Path, progress: bool = True) -> ImageData:
    """Datasets of the study and an image cache holding all their images (built if needed)."""
    from qcxr.data.cache import ImageCache
    from qcxr.train.data import datasets, training_source

    sets = datasets(config, check_files=True)
    cache = ImageCache(Path(cache_dir))
    paths = [p for split in sets.values() for p in split.paths]
    cache.build(paths, threads=config.data.loader_threads, progress=progress)
    tests = {name: sets[name] for name in ("nih", "mimic") if name in sets}
    return ImageData(sets["train"], sets["val"], tests, cache, training_source(config))


def _padded(batch_images: np.ndarray, labels: np.ndarray, width: int):
    """Rows padded to `width`; padding gets weight 0 in the loss.

    Training batches are padded only up to a multiple of the device count (a short last batch
    compiles once more instead), because padding rows would enter BatchNorm's batch statistics.
    """
    size = len(labels)
    weight = np.zeros((width,), np.float32)
    weight[:size] = 1.0
    if width == size:
        return batch_images, labels, weight
    pad = width - size
    images = np.concatenate([batch_images, np.repeat(batch_images[:1], pad, 0)])
    labels = np.concatenate([labels, np.repeat(labels[:1], pad, 0)])
    return images, labels, weight


class FinetuneTrainer:
    """Trains backbone + head on images (loader + on-device augmentation), one seed."""

    def __init__(self, config: Config, data: ImageData, mesh: jax.sharding.Mesh, progress: bool):
        from qcxr.data.loader import Loader

        self.config, self.data, self.mesh, self.progress = config, data, mesh, progress
        t, d = config.train, config.data
        self.loader = Loader(
            data.train,
            data.cache,
            batch_size=t.batch_size,
            seed=t.seed,
            shuffle=True,
            drop_last=False,
            threads=d.loader_threads,
            prefetch=d.prefetch,
        )
        self.steps_per_epoch = -(-len(data.train.ids) // t.batch_size)
        frequency = label_frequency(data.train.labels)

        def build():
            model, tx, loss = training_parts(config, self.steps_per_epoch, frequency)
            return (
                tx,
                jax.jit(make_train_step(model, tx, loss), donate_argnums=0),
                jax.jit(make_eval_sums(model, loss)),
                jax.jit(model.logits),
            )

        self.tx, self.step, self.eval_sums, self.logits = compiled(
            "finetune", config, self.steps_per_epoch, frequency, build
        )
        self.eval_width = parallel.padded_size(t.eval_batch_size, mesh)
        self.rows = parallel.batch_sharding(mesh, 0)

    def ordered(self, dataset: Any):
        """Batches of a dataset in file order, padded to the eval width."""
        from qcxr.data.loader import Loader

        loader = Loader(
            dataset,
            self.data.cache,
            batch_size=self.eval_width,
            seed=0,
            shuffle=False,
            drop_last=False,
            threads=self.config.data.loader_threads,
            prefetch=self.config.data.prefetch,
        )
        for batch in loader.epoch(0):
            images, labels, weight = _padded(batch.images, batch.labels, self.eval_width)
            yield len(batch.ids), images, labels, weight

    def val_loss(self, variables: Any) -> float:
        total, count = 0.0, 0.0
        for _, images, labels, weight in self.ordered(self.data.val):
            s, c = self.eval_sums(
                variables, *(parallel.shard(a, self.rows) for a in (images, labels, weight))
            )
            total, count = total + float(s), count + float(c)
        return total / max(count, 1.0)

    def test_predictions(self, variables: Any):
        variables = parallel.replicate(variables, self.mesh)
        out = {}
        for name, dataset in self.data.tests.items():
            parts = []
            for size, images, _, _ in self.ordered(dataset):
                logits = self.logits(variables, parallel.shard(images, self.rows))
                parts.append(np.asarray(jax.nn.sigmoid(logits))[:size])
            probs = np.concatenate(parts)
            out[name] = (list(dataset.ids), probs, dataset.labels, list(dataset.label_names))
        return out

    def train(self, book: RunBook, hook: BatchHook | None) -> None:
        from qcxr.data.augment import augment_key

        variables, identity = init_variables(book.config, book.seed)
        write_versions(
            book.run_dir,
            label_checksums=self.data.checksums(),
            weights=identity,
            resumed=book.resumed,
            resolved=resolved_settings(book.config, self.data.source),
        )
        state = create_state(variables, self.tx, book.seed)
        if book.resumed:
            state, _ = book.checkpoints.restore_latest(state)
        state = parallel.replicate(state, self.mesh)
        label = f"{run_label(self.config)} seed {book.seed}"
        while not book.training_done:
            epoch, began = book.epoch, time.perf_counter()
            bar = _bar(
                self.progress, self.steps_per_epoch, book.position, f"{label} epoch {epoch + 1}"
            )
            for batch in self.loader.epoch(epoch, start=book.position):
                if batch.position != book.position:
                    raise RuntimeError(
                        f"loader gave batch {batch.position}, expected {book.position}"
                    )
                key = augment_key(book.seed, epoch, batch.position)
                width = parallel.padded_size(len(batch.ids), self.mesh)
                images, labels, weight = _padded(batch.images, batch.labels, width)
                state, value = self.step(
                    state, *(parallel.shard(a, self.rows) for a in (images, labels, weight)), key
                )
                book.record_step(float(value))
                if hook is not None:
                    hook(book.config, epoch, batch.position, list(batch.ids), key)
                if book.checkpoint_due(batch.position, batch.position + 1):
                    book.save_latest(state)
                bar.update(1)
                bar.set_postfix(loss=f"{float(value):.4f}")
            bar.close()
            val = self.val_loss(variables_of(state))
            seconds = time.perf_counter() - began
            book.end_epoch(val, seconds, state)
            book.log_epoch(label, val, seconds)
        self.loader.close()  # the epoch after the last was being read ahead


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
    """Train ResNet50 (or the test backbone) + head end to end on images (Sec. III-F)."""
    run_dir = Path(run_dir)
    if data is None:
        experiment = run_dir.parents[2] if len(run_dir.parents) > 2 else run_dir.parent
        cache = config.data.cache or str(experiment / "cache")
        data = load_image_data(config, cache, progress)
    mesh = mesh or parallel.data_mesh()
    trainer = FinetuneTrainer(config, data, mesh, progress)
    book = RunBook(config, run_dir, resume=resume, steps_per_epoch=trainer.steps_per_epoch)
    try:
        trainer.train(book, on_batch)
    except NonFiniteLossError as err:
        return RunResult(run_dir, "failed", str(err))
    variables, _ = book.checkpoints.restore_best()
    counts = train_counts(data.train.labels, list(data.train.label_names))
    return book.finish(trainer.test_predictions(variables), counts)


def train_run(
    config: Config,
    run_dir: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    on_batch: BatchHook | None = None,
) -> RunResult:
    """One run in its directory: finetune or frozen mode as the config says."""
    parallel.initialize_distributed()
    if config.train.mode == "frozen":
        return train_frozen(
            [config], [run_dir], resume=resume, progress=progress, on_batch=on_batch
        )[0]
    if config.train.mode == "finetune":
        return train_finetune(config, run_dir, resume=resume, progress=progress, on_batch=on_batch)
    raise ValueError(f"train.mode: unknown mode {config.train.mode!r}")
