"""Orbax checkpoints of a run: checkpoints/latest (to resume) and checkpoints/best (to use).

latest/<step>/ holds the whole TrainState (params, batch_stats, optimizer state, step, rng) and a
JSON "meta" item: the data-order position (epoch index and next batch position), the early
stopping state (counter, best loss and epoch), the partial epoch's loss sum, and whether the run
finished. best/<step>/ holds the model variables of the lowest validation loss and its meta.

Nothing is lost to a crash, a kill or a full disk:
- Orbax writes a step to a temporary directory and renames it when complete; a save is then
  read back (its meta) before it counts. Each kind keeps its `keep` newest steps (Orbax's
  retention), so the previous good checkpoint stays until a newer one is committed and
  verified.
- A resume restores the newest latest step that reads back whole; a broken newer one (a
  truncated file) is set aside as broken-<step>-<time>/, said on stderr, and kept.
- A step saved again (a resumed run repeating what a killed one saved) replaces the old one:
  it is renamed aside first, then removed, so a rename never collides.
A failure to write is a RunError saying which step was not saved and which one was kept.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from qcxr import config as config_lib
from qcxr import rundir
from qcxr.config import Config
from qcxr.rundir import RunError
from qcxr.train import parallel

KEEP = 2  # steps kept per kind: the newest and the one before it
KINDS = ("latest", "best")
REPLACED = "replaced-"  # a step being replaced, removed in the background
BROKEN = "broken-"  # a step that did not read back, kept for inspection


def _manager(directory: Path, keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=True,
        enable_async_checkpointing=False,
        # Old steps are deleted at the end of each save, not in a background thread: the
        # thread races with any rescan of the directory (a step vanishing mid-stat).
        enable_background_delete=False,
        cleanup_tmp_directories=True,  # a save cut short by a kill or a full disk
    )
    return ocp.CheckpointManager(directory.absolute(), options=options, item_names=("tree", "meta"))


def _remove_in_background(paths: list[Path]) -> None:
    if paths:
        remove = lambda: [shutil.rmtree(p, ignore_errors=True) for p in paths]  # noqa: E731
        threading.Thread(target=remove, name="qcxr-replaced").start()


def _both(tree: Any = None) -> ocp.args.Composite:
    return ocp.args.Composite(tree=ocp.args.StandardRestore(tree), meta=ocp.args.JsonRestore())


class RunCheckpoints:
    """The latest and best checkpoints of one run directory."""

    def __init__(self, run_dir: str | Path, keep: int = KEEP):
        self.directory = Path(run_dir) / rundir.CHECKPOINTS
        self.keep = keep
        # Steps a killed process was replacing: their new versions were never committed.
        _remove_in_background(
            [d for kind in KINDS for d in (self.directory / kind).glob(f"{REPLACED}*")]
        )
        self._latest = _manager(self.directory / "latest", keep)
        self._best = _manager(self.directory / "best", keep)

    def _replace_stale(self, manager: ocp.CheckpointManager, step: int) -> None:
        """Rename steps >= `step` aside (a re-save must overwrite), then remove them."""
        stale = [s for s in manager.all_steps() if s >= step]
        if not stale:
            return
        doomed = []
        if parallel.is_main_process():  # one process renames; the others wait, then rescan
            for old in stale:
                target = Path(manager.directory) / f"{REPLACED}{old}-{uuid.uuid4().hex}"
                (Path(manager.directory) / str(old)).rename(target)
                doomed.append(target)
        parallel.barrier(f"qcxr-replaced-{step}")
        manager.reload()
        _remove_in_background(doomed)

    def _save(self, manager: ocp.CheckpointManager, step: int, tree: Any, meta: dict) -> None:
        self._replace_stale(manager, step)
        kept = manager.latest_step()
        try:
            manager.save(
                step,
                args=ocp.args.Composite(
                    tree=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)
                ),
                force=True,
            )
            manager.wait_until_finished()
            if _meta_at(manager, step) != meta:
                raise RunError(f"step {step} read back with other metadata")
        except Exception as err:  # noqa: BLE001 - Orbax and the file system raise many kinds
            was = f"step {kept} kept" if kept is not None else "no earlier checkpoint"
            raise RunError(
                f"{manager.directory}: checkpoint of step {step} not saved ({err}); {was}. "
                "Fix the cause (free disk space, say) and continue with --resume"
            ) from err

    def save_latest(self, step: int, state: Any, meta: dict) -> None:
        self._save(self._latest, step, state, meta)

    def save_best(self, step: int, variables: Any, meta: dict) -> None:
        self._save(self._best, step, variables, meta)

    def has_any(self) -> bool:
        return bool(self._latest.all_steps() or self._best.all_steps())

    def latest_meta(self) -> dict | None:
        return _meta(self._latest)

    def best_meta(self) -> dict | None:
        return _meta(self._best)

    def intact_latest_meta(self) -> dict | None:
        """Meta of the newest latest step that restores whole (None: there is none at all).

        Broken newer steps are set aside (and said); when every step is broken, a RunError.
        """
        broken = []
        for step in sorted(self._latest.all_steps(), reverse=True):
            try:
                return self._latest.restore(step, args=_both())["meta"]
            except Exception as err:  # noqa: BLE001 - a truncated file fails in many ways
                broken.append(self._set_aside(self._latest, step, err))
        if broken:
            raise RunError(
                f"{self._latest.directory}: no checkpoint to resume from reads back; set aside: "
                f"{', '.join(broken)}. Start the run again in a new directory"
            )
        return None

    def _set_aside(self, manager: ocp.CheckpointManager, step: int, err: Exception) -> str:
        stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
        target = Path(manager.directory) / f"{BROKEN}{step}-{stamp}"
        if parallel.is_main_process():
            (Path(manager.directory) / str(step)).rename(target)
        parallel.barrier(f"qcxr-broken-{step}")
        manager.reload()
        print(
            f"warning: {target.parent}: step {step} does not read back "
            f"({type(err).__name__}: {err}); set aside as {target.name}",
            file=sys.stderr,
        )
        return str(target)

    def set_aside_best(self, why: str) -> Path | None:
        """Move checkpoints/best aside as best-<why>-<time>/ (kept); its path, or None."""
        best = Path(self._best.directory)
        if not self._best.all_steps():
            return None
        self._best.close()
        stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
        target = best.with_name(f"best-{why}-{stamp}")
        if parallel.is_main_process():
            best.rename(target)
        parallel.barrier("qcxr-best-aside")
        self._best = _manager(best, self.keep)
        return target

    def restore_latest(self, like: Any) -> tuple[Any, dict] | None:
        """(state, meta) of the latest checkpoint, arrays placed like the leaves of `like`."""
        step = self._latest.latest_step()
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        restored = self._latest.restore(step, args=_both(abstract))
        return restored["tree"], restored["meta"]

    def restore_best(self) -> tuple[dict[str, Any], dict]:
        step = self._best.latest_step()
        if step is None:
            raise FileNotFoundError(f"{self.directory / 'best'}: no best checkpoint")
        try:
            restored = self._best.restore(step, args=_both())
        except Exception as err:  # noqa: BLE001 - a truncated file fails in many ways
            raise RunError(
                f"{self.directory / 'best'}: the best checkpoint (step {step}) does not read back "
                f"({type(err).__name__}: {err}); train the run again in a new directory"
            ) from err
        return restored["tree"], restored["meta"]

    def close(self) -> None:
        """Finish background deletions and release the managers."""
        self._latest.close()
        self._best.close()


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
    return None if step is None else _meta_at(manager, step)


def _meta_at(manager: ocp.CheckpointManager, step: int) -> dict:
    return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
