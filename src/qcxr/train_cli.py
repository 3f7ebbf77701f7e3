"""`qcxr train` (one run) and `qcxr run CONFIG.yaml` (a grid), each followed by the metrics.

These commands sit above training and evaluation: qcxr.train trains and writes predictions,
then this module has qcxr.evaluate.metrics write each finished run's metrics.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

from qcxr import configs, rundir
from qcxr.cli import add_task_arguments, labels_from_args
from qcxr.config import (
    BACKBONES,
    BACKENDS,
    ENTANGLERS,
    FORMATS,
    HEADS,
    LOSSES,
    MISSING,
    MODES,
    OPTIMIZERS,
    SCHEDULES,
    SOURCES,
    TABLE_FORMATS,
    TRACKING,
    UNCERTAIN,
    merge,
    nested,
)
from qcxr.rundir import RunResult

# A run stopped by SIGTERM or SIGINT: its state is saved and --resume continues it (sysexits.h's
# EX_TEMPFAIL, "try again later", which cluster schedulers read as a requeue-able failure).
EXIT_PREEMPTED = 75

# flag -> dotted config key (value types come from argparse)
TRAIN_FLAGS = {
    "task": "task",
    "source": "data.source",
    "head": "model.head",
    "seed": "train.seed",
    "mode": "train.mode",
    "study": "data.study",
    "features": "data.features",
    "cache": "data.cache",
    "epochs": "train.max_epochs",
    "patience": "train.patience",
    "batch_size": "train.batch_size",
    "lr": "train.learning_rate",
    "loss": "train.loss",
    "schedule": "train.schedule",
    "optimizer": "train.optimizer",
    "checkpoint_every": "train.checkpoint_every",
    "backbone": "model.backbone",
    "weights": "model.weights",
    "layers": "model.num_layers",
    "entangler": "model.entangler",
    "backend": "model.backend",
    "format": "data.format",
    "csv": "data.csv",
    "images": "data.images",
    "uncertain": "data.uncertain",
    "missing": "data.missing",
    "tracking": "train.tracking",
}
# the flags `qcxr run` takes too: where the data is, and tracking
RUN_FLAGS = ("study", "features", "cache", "format", "csv", "images", "tracking")


def _overrides(args: argparse.Namespace, flags: dict[str, str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for flag, key in flags.items():
        value = getattr(args, flag, None)
        if value is not None:
            out = merge(out, nested(key, value))
    for item in getattr(args, "set", None) or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. train.learning_rate=3e-4")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            from qcxr.config_check import yaml_problem

            raise ValueError(f"--set {item}: not a YAML value ({yaml_problem(err)})") from None
        out = merge(out, nested(key.strip(), value))
    return out


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", help="study root (nih/ and mimic/ label files and images)")
    parser.add_argument(
        "--csv",
        help="your own data: a label table (CSV or parquet: an image path column, one column "
        "per label; README 'Your own data'); implies --format table unless given",
    )
    parser.add_argument(
        "--images",
        help="with --csv: the directory the image paths start from (default: the table's folder)",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="layout of the label files (default nih-cxr-lt: --study's nih/ and mimic/)",
    )
    parser.add_argument(
        "--tracking",
        choices=TRACKING,
        help="tensorboard: event files in each run dir (default); mlflow: also MLflow "
        "(MLFLOW_TRACKING_URI, else <out>/mlruns; needs qcxr[tracking]); none",
    )
    parser.add_argument(
        "--features", help="frozen mode: dir with {train,val,test,mimic}.safetensors"
    )
    parser.add_argument("--cache", help="finetune mode: image cache dir (default <out>/cache)")
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="any config setting by dotted key, e.g. train.loss=focal (repeatable)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def register(subparsers: argparse._SubParsersAction) -> None:
    _add_train_parser(subparsers)
    _add_run_parser(subparsers)


def _add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="train one model (CDL or DQC head; finetune or frozen mode)",
        description="Train one run into <out>/<task>/<head>/seed-<k>/ (history.csv, "
        "checkpoints/, predictions-*.parquet, metrics.json). Defaults: the paper's protocol.",
    )
    train.add_argument(
        "--config",
        help="YAML config (any Config field; a grid file's base), or a bundled config's name",
    )
    add_task_arguments(train, "cxr8")
    train.add_argument("--source", choices=SOURCES,
                       help="train/val label files: nih, mimic (CXR-LT 2023) or auto")  # fmt: skip
    train.add_argument(
        "--head",
        choices=HEADS,
        help="cdl: classical linear head; dqc: dressed quantum circuit (paper: both)",
    )
    train.add_argument("--seed", type=int, help="the run's seed (paper: 0-4, one run each)")
    train.add_argument(
        "--mode",
        choices=MODES,
        help="finetune: backbone and head on images (paper); frozen: the head on --features stores",
    )
    train.add_argument("--out", default="runs/default", help="experiment dir (runs/<experiment>)")
    train.add_argument("--run-dir", help="exact run directory (instead of the <out>/... layout)")
    train.add_argument("--resume", action="store_true",
                       help="continue from checkpoints/latest (after a kill or a preemption: "
                       f"exit code {EXIT_PREEMPTED})")  # fmt: skip
    train.add_argument("--epochs", type=int, help="maximum epochs (paper: 50)")
    train.add_argument("--patience", type=int, help="early-stopping patience (paper: 5)")
    train.add_argument("--batch-size", type=int, help="paper: 32")
    train.add_argument("--lr", type=float, help="learning rate (paper: 1e-4)")
    train.add_argument("--loss", choices=LOSSES, help="paper: bce; the others are long-tail losses")
    train.add_argument(
        "--schedule", choices=SCHEDULES, help="learning-rate schedule (paper: constant)"
    )
    train.add_argument("--optimizer", choices=OPTIMIZERS, help="paper: adam")
    train.add_argument("--checkpoint-every", type=int, help="steps between mid-epoch checkpoints")
    train.add_argument(
        "--backbone", choices=BACKBONES, help="resnet50 (paper) or tiny (a small CNN for tests)"
    )
    train.add_argument("--weights", help="backbone weights: hub id, directory, file or random:N")
    train.add_argument("--layers", type=int, help="DQC variational layers (paper: 3)")
    train.add_argument(
        "--entangler", choices=ENTANGLERS, help="DQC entangling layer (paper: ring of CNOTs)"
    )
    train.add_argument("--backend", choices=BACKENDS,
                       help="DQC circuit simulator; auto picks by cost for n (default)")  # fmt: skip
    train.add_argument("--uncertain", choices=UNCERTAIN,
                       help="what a -1 label becomes: ignore (left out of loss and metrics; "
                       "default), zeros or ones")  # fmt: skip
    train.add_argument("--missing", choices=MISSING,
                       help="what a blank label becomes: ignore (default) or zeros")  # fmt: skip
    _add_common(train)
    train.set_defaults(func=train_command)


def _add_run_parser(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser(
        "run",
        help="train a grid of runs from a YAML file (skips finished runs, resumes others)",
        description="Train tasks x heads x seeds (and lists of any setting) from a grid file "
        "such as configs/paper.yaml.",
    )
    run.add_argument(
        "config",
        help=f"grid YAML file, or a bundled config's name ({', '.join(configs.names())})",
    )
    run.add_argument("--out", help="experiment dir (default runs/<experiment>)")
    run.add_argument(
        "--shard",
        metavar="I/N",
        help="train only the I-th of N disjoint slices of the runs (I 0-based: 0/N .. N-1/N), "
        "e.g. --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT with --array=0-(N-1)",
    )
    run.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: train the runs one after another in this process (default); ray: each "
        "frozen-mode cell or finetune run is a Ray task (needs qcxr[cluster])",
    )
    run.add_argument(
        "--address",
        help="with --engine ray: the Ray cluster to join (e.g. auto, or HEAD:6379); default: "
        "start a Ray instance on this machine",
    )
    run.add_argument(
        "--num-cpus",
        type=int,
        help="with --engine ray and no --address: CPU slots of the local Ray instance "
        "(default: all of this machine's)",
    )
    run.add_argument(
        "--status",
        action="store_true",
        help="print where each run of the grid (or of --shard's slice) stands; train nothing",
    )
    _add_common(run)
    run.set_defaults(func=run_command)


def _format_overrides(args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    """--csv without --format (and no table format in the config) means a generic table."""
    if not getattr(args, "csv", None) or args.format:
        return {}
    if base.get("data", {}).get("format") in TABLE_FORMATS:
        return {}
    return {"data": {"format": "table"}}


def _grid_base(args: argparse.Namespace) -> dict[str, Any]:
    """The grid file's base settings, when --csv needs to know its data.format."""
    from qcxr.train.grid import read_grid

    return read_grid(args.config).base if args.csv else {}


def _task_overrides(args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    """`labels` from --labels / --labels-file; a list without a task name is named labels<n>."""
    labels = labels_from_args(args)
    if not labels:
        return {}
    out: dict[str, Any] = {"labels": labels}
    if args.task is None and "task" not in base:
        out["task"] = f"labels{len(labels)}"
    return out


def _result_row(result: RunResult) -> dict[str, Any]:
    row = dataclasses.asdict(result)
    row["run_dir"] = str(row["run_dir"])
    if isinstance(row["best_val_loss"], float) and not math.isfinite(row["best_val_loss"]):
        row["best_val_loss"] = None
    return row


def learned_nothing_lines(results: list[RunResult]) -> list[str]:
    """ "<run>: finished, but the model learned nothing: ..." for each finished run whose
    metrics.json diagnosis says so (qcxr.evaluate.diagnosis)."""
    from qcxr.evaluate.diagnosis import message, read_diagnosis

    lines = []
    for result in results:
        said = message(read_diagnosis(result.run_dir)) if result.status == "finished" else None
        if said:
            lines.append(f"{result.run_dir}: finished, but {said}")
    return lines


def _print_results(results: list[RunResult], as_json: bool) -> None:
    rows = [_result_row(r) for r in results]
    warnings = learned_nothing_lines(results)
    if as_json:
        print(json.dumps(rows, indent=2))
        for line in warnings:
            print(f"warning: {line}", file=sys.stderr)
        return
    print(f"{'run':60s} {'status':9s} {'reason':11s} {'best epoch':>10s} {'best val':>9s}")
    for row in rows:
        loss = row["best_val_loss"]
        shown = f"{loss:.4f}" if isinstance(loss, float) else "-"
        reason = row["reason"] if row["status"] == "finished" else "see above"
        print(
            f"{row['run_dir']:60s} {row['status']:9s} {reason:11s} {row['best_epoch']:>10d} "
            f"{shown:>9s}"
        )
    for line in warnings:  # the last lines: a finished run is not always a success
        print(line)


def write_metrics_after(result: RunResult) -> None:
    """metrics.json of a finished run that has none yet (training clears it when it starts)."""
    from qcxr.evaluate.metrics import write_metrics
    from qcxr.train import parallel

    path = Path(result.run_dir) / rundir.METRICS
    if result.status != "finished" or path.is_file() or not parallel.is_main_process():
        return
    try:
        write_metrics(result.run_dir)
    except Exception as err:  # metrics are recomputable with `qcxr evaluate`; training is not
        print(f"warning: {result.run_dir}: metrics not written: {err}", file=sys.stderr)
        return
    from qcxr.train.tracking import log_artifacts

    log_artifacts(result.run_dir)  # MLflow gets metrics.json too (no-op without MLflow)


def train_command(args: argparse.Namespace) -> int:
    from qcxr import config as config_lib
    from qcxr.train.grid import read_grid
    from qcxr.train.loop import train_run

    base = read_grid(args.config).base if args.config else {}
    overrides = merge(_overrides(args, TRAIN_FLAGS), _task_overrides(args, base))
    overrides = merge(overrides, _format_overrides(args, base))
    config = config_lib.from_dict(merge(base, overrides))
    run_dir = Path(args.run_dir) if args.run_dir else rundir.config_run_path(args.out, config)
    if args.resume and not rundir.has_checkpoints(run_dir):
        raise ValueError(
            f"{run_dir}: nothing to resume (no checkpoints there); check --out/--run-dir, "
            "or leave out --resume to start this run"
        )
    result = train_run(config, run_dir, resume=args.resume, progress=not args.no_progress)
    write_metrics_after(result)
    _print_results([result], args.json)
    return exit_code([result])


def run_command(args: argparse.Namespace) -> int:
    from qcxr.train.grid import run_grid
    from qcxr.train.shard import parse_shard

    flags = {k: TRAIN_FLAGS[k] for k in RUN_FLAGS}
    shard = parse_shard(args.shard) if args.shard is not None else None
    if args.status:
        from qcxr import runs_status

        rows = runs_status.grid_rows(args.config, args.out, _overrides(args, flags), shard)
        return runs_status.print_status(rows, args.json)
    if args.engine == "local" and (args.address or args.num_cpus):
        raise ValueError("--address and --num-cpus go with --engine ray")
    common = dict(
        overrides=merge(_overrides(args, flags), _format_overrides(args, _grid_base(args))),
        progress=not args.no_progress,
        after_run=write_metrics_after,
        shard=shard,
    )
    if args.engine == "ray":
        from qcxr.train.ray_engine import run_grid_ray

        results = run_grid_ray(
            args.config, args.out, address=args.address, num_cpus=args.num_cpus, **common
        )
    else:
        results = run_grid(args.config, args.out, **common)
    _print_results(results, args.json)
    return exit_code(results)


def exit_code(results: list[RunResult]) -> int:
    """0 when every run finished; EXIT_PREEMPTED when a signal stopped one (each says, in one
    line, what it saved and how to resume); 1 when one failed."""
    preempted = [r for r in results if r.status == rundir.PREEMPTED]
    for r in preempted:
        print(r.reason, file=sys.stderr)
    if preempted:
        return EXIT_PREEMPTED
    return 0 if all(r.status == "finished" for r in results) else 1
