"""Orbax checkpoints of a run: checkpoints/latest (to resume) and checkpoints/best (to use).

latest/<step>/ holds the whole TrainState (params, batch_stats, optimizer state, step, rng) and a
JSON "meta" item: the data-order position (epoch index and next batch position), the early
stopping state (counter, best loss and epoch), the partial epoch's loss sum, and whether the run
finished. best/<step>/ holds the model variables of the lowest validation loss and its meta.
Each keeps one step. Orbax writes a step to a temporary directory and renames it when complete,
so a run killed while saving keeps its previous checkpoint. Replaced steps are moved to a
`trash/` folder (a rename; deleting Orbax's many small files took longer than the save itself)
and removed when the run finishes or resumes.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from qcxr import config as config_lib
from qcxr import rundir
from qcxr.config import Config

TRASH = "trash"


def _manager(directory: Path) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1, create=True, enable_async_checkpointing=False, todelete_subdir=TRASH
    )
    return ocp.CheckpointManager(directory.absolute(), options=options, item_names=("tree", "meta"))


class RunCheckpoints:
    """The latest and best checkpoints of one run directory."""

    def __init__(self, run_dir: str | Path):
        self.directory = Path(run_dir) / rundir.CHECKPOINTS
        self._latest = _manager(self.directory / "latest")
        self._best = _manager(self.directory / "best")

    def _save(self, manager: ocp.CheckpointManager, step: int, tree: Any, meta: dict) -> None:
        # Re-saving a step (a resumed run repeating work the killed run saved) must overwrite:
        # CheckpointManager would silently skip a step it already has.
        stale = [old for old in manager.all_steps() if old >= step]
        if stale:
            self.empty_trash()
            for old in stale:
                manager.delete(old)
        manager.save(
            step,
            args=ocp.args.Composite(tree=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        manager.wait_until_finished()

    def save_latest(self, step: int, state: Any, meta: dict) -> None:
        self._save(self._latest, step, state, meta)

    def save_best(self, step: int, variables: Any, meta: dict) -> None:
        self._save(self._best, step, variables, meta)

    def latest_meta(self) -> dict | None:
        return _meta(self._latest)

    def best_meta(self) -> dict | None:
        return _meta(self._best)

    def restore_latest(self, like: Any) -> tuple[Any, dict] | None:
        """(state, meta) of the latest checkpoint, arrays placed like the leaves of `like`."""
        step = self._latest.latest_step()
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        restored = self._latest.restore(
            step,
            args=ocp.args.Composite(
                tree=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
            ),
        )
        return restored["tree"], restored["meta"]

    def restore_best(self) -> tuple[dict[str, Any], dict]:
        step = self._best.latest_step()
        if step is None:
            raise FileNotFoundError(f"{self.directory / 'best'}: no best checkpoint")
        restored = self._best.restore(
            step,
            args=ocp.args.Composite(tree=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()),
        )
        return restored["tree"], restored["meta"]

    def empty_trash(self) -> None:
        """Remove replaced steps in a background thread (the interpreter waits for it at exit)."""
        doomed = []
        for kind in ("latest", "best"):
            for trash in (self.directory / kind).glob(f"{TRASH}*"):
                # A unique name first, so that Orbax can start a new trash/ meanwhile.
                target = trash.with_name(f"{TRASH}-{uuid.uuid4().hex}")
                try:
                    trash.rename(target)
                except OSError:
                    continue
                doomed.append(target)
        if doomed:
            threading.Thread(target=_remove, args=(doomed,), name="qcxr-trash").start()

    def close(self) -> None:
        self._latest.close()
        self._best.close()


def _remove(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def load_best(run_dir: str | Path) -> tuple[Config, dict[str, Any]]:
    """(config, variables) of a run's best checkpoint, for prediction and evaluation.

    Variables are {"params": {"head": ...}} for frozen-mode runs and {"params": {"backbone",
    "head"}, "batch_stats": {"backbone"}} for finetuned ones (see qcxr.train.model).
    """
    run_dir = Path(run_dir)
    config_path = run_dir / rundir.CONFIG
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: not found; is {run_dir} a training run directory?")
    checkpoints = RunCheckpoints(run_dir)
    try:
        variables, _ = checkpoints.restore_best()
    finally:
        checkpoints.close()
    return config_lib.load(config_path), variables


def _meta(manager: ocp.CheckpointManager) -> dict | None:
    """The JSON metadata of a manager's newest checkpoint, or None when it has none."""
    step = manager.latest_step()
    if step is None:
        return None
    return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
