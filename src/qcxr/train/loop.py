"""Training a run: the entry point that picks the trainer the config's mode asks for.

A run directory (qcxr.rundir) ends with status.json, written last: a run is finished exactly
when status.json says so. Same seed => same batches: epoch e's order is
qcxr.data.loader.epoch_order(N, seed, e) and batch p's augmentation key is augment_key(seed, e,
p), whatever the head. A resumed run restores the state and continues at the saved (epoch, batch
position), so it computes what the uninterrupted run would have.

- qcxr.train.frozen:   heads on feature stores, a cell's seeds vmapped together
- qcxr.train.finetune: backbone + head on images
- qcxr.train.trainer:  what the two share (compiled functions, epoch and run ends)
- qcxr.train.runbook:  what one run records while it trains
- qcxr.train.interrupt: SIGTERM/SIGINT stop training at a step boundary, latest checkpoint
  saved there, status "preempted"; `interrupt.requested()` tells a caller to stop too
"""

from __future__ import annotations

from pathlib import Path

from qcxr.config import MODES, Config
from qcxr.rundir import RunResult
from qcxr.train import parallel
from qcxr.train.runbook import BatchHook


def train_run(
    config: Config,
    run_dir: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    on_batch: BatchHook | None = None,
) -> RunResult:
    """One run in its directory: finetune or frozen mode as the config says. Its status is
    "finished", "failed" or "preempted" (stopped by SIGTERM/SIGINT; `--resume` continues it)."""
    parallel.initialize_distributed()
    if config.train.mode == "frozen":
        from qcxr.train.frozen import train_frozen

        return train_frozen(
            [config], [run_dir], resume=resume, progress=progress, on_batch=on_batch
        )[0]
    if config.train.mode == "finetune":
        from qcxr.train.finetune import train_finetune

        return train_finetune(config, run_dir, resume=resume, progress=progress, on_batch=on_batch)
    raise ValueError(f"train.mode: unknown mode {config.train.mode!r}; choose from {MODES}")
