"""What the frozen and the fine-tune trainers share: their compiled functions, the books they
open, the end of an epoch and the end of a run.

A trainer subclass says how its functions are built (`build`), how it evaluates a model on the
test sets (`test_predictions`) and how it trains its books; everything else is here, once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from qcxr import config as config_lib
from qcxr import rundir
from qcxr.config import Config
from qcxr.rundir import RunResult
from qcxr.train import parallel
from qcxr.train.data import label_frequency, train_counts
from qcxr.train.losses import elementwise_loss
from qcxr.train.model import Model, build_model, resolved_backend
from qcxr.train.runbook import NonFiniteLossError, RunBook, TestPredictions
from qcxr.train.runinfo import write_versions
from qcxr.train.state import TrainState, optimizer

_COMPILED: dict[str, Any] = {}
_COMPILES = [0]  # JAX compile events seen in this process (StepClock)


def _count_compiles(event: str, duration: float, **_: Any) -> None:
    if event.startswith("/jax/core/compile/"):  # tracing, lowering, backend compile
        _COMPILES[0] += 1


jax.monitoring.register_event_duration_secs_listener(_count_compiles)


class StepClock:
    """Wall seconds of a jitted call until its results are on the host (the block ends after
    they were read back), or None when JAX traced or compiled meanwhile: the first call of each
    shape, whose time is mostly compilation, is not a step time."""

    seconds: float | None = None

    def __enter__(self) -> StepClock:
        self._compiles, self._began = _COMPILES[0], time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self._began
        self.seconds = elapsed if _COMPILES[0] == self._compiles else None


def compiled(kind: str, config: Config, steps_per_epoch: int, frequency: np.ndarray, build):
    """Jitted functions shared by every trainer of the same settings in this process (a grid's
    seeds, a resumed run and its reference): each is compiled once, not once per trainer."""
    neutral = dataclasses.replace(
        config,
        train=dataclasses.replace(config.train, seed=0, patience=0, tracking="none"),
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


def resolved_settings(config: Config, source: str) -> dict[str, Any]:
    """What the run's "auto" settings became (versions.json "resolved")."""
    return {"model.backend": resolved_backend(config), "data.source": source}


def progress_bar(enabled: bool, total: int, initial: int, desc: str):
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


class Trainer:
    """Construction, books, epoch ends and run ends shared by FrozenTrainer and FinetuneTrainer."""

    kind = ""  # the compiled-function cache's name for this trainer's functions

    def __init__(self, config: Config, data: Any, mesh: jax.sharding.Mesh, progress: bool):
        self.config, self.data, self.mesh, self.progress = config, data, mesh, progress
        self.batch_size = config.train.batch_size
        self.steps_per_epoch = -(-len(data.train.ids) // self.batch_size)
        frequency = label_frequency(data.train.labels)
        t = config.train

        def build():
            tx = optimizer(t, self.steps_per_epoch)
            return self.build(build_model(config), tx, elementwise_loss(t, frequency))

        self.functions = compiled(self.kind, config, self.steps_per_epoch, frequency, build)

    def build(self, model: Model, tx: Any, loss: Any) -> tuple:
        """The trainer's jitted functions, made from the run's model, optimizer and loss."""
        raise NotImplementedError

    def test_predictions(self, variables: dict[str, Any]) -> TestPredictions:
        raise NotImplementedError

    def open_book(self, config: Config, run_dir: str | Path, resume: bool) -> RunBook:
        return RunBook(config, run_dir, resume=resume, steps_per_epoch=self.steps_per_epoch)

    def record_versions(self, book: RunBook, weights: str) -> None:
        if not parallel.is_main_process():
            return
        write_versions(
            book.run_dir,
            label_checksums=self.data.checksums(),
            weights=weights,
            resumed=book.resumed,
            resolved=resolved_settings(book.config, self.data.source),
        )

    def epoch_bar(self, label: str, epoch: int, position: int):
        desc = f"{label} epoch {epoch + 1}"
        return progress_bar(self.progress, self.steps_per_epoch, position, desc)

    def end_epoch(
        self,
        book: RunBook,
        val_loss: float,
        seconds: float,
        state: TrainState,
        val_auroc: float = math.nan,
    ) -> bool:
        """Record the epoch in the run's book; whether that run stops (done, or failed)."""
        try:
            reason = book.end_epoch(val_loss, seconds, state, val_auroc)
        except NonFiniteLossError as err:
            print(f"error: {err}", file=sys.stderr)
            return True
        book.log_epoch(val_loss, seconds)
        return reason is not None

    def conclude(self, book: RunBook) -> RunResult:
        """A run that failed keeps its status; a trained one gets its best model's predictions
        on every test set, its train counts and status.json."""
        try:
            failed = rundir.result_of(book.run_dir)
            if failed is not None:
                return failed
            variables, _ = book.checkpoints.restore_best()
            counts = train_counts(self.data.train.labels, list(self.data.train.label_names))
            return book.finish(self.test_predictions(variables), counts)
        finally:
            book.close()
