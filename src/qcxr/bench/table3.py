"""`qcxr bench table3`: one training step of CDL and DQC, timed in every framework.

The options become a `cells.Plan` (what to measure; `--config` gives the defaults of batch,
warm-up, timed steps and batches per epoch) and `harness.RunOptions` (how); `harness` runs the
cells, each framework in its own process (by default one per cell, so that the peak RSS belongs
to that cell), and `tables` writes Table III and its companions into `--out`: cells/*.json (one
per cell, raw), steps-<backbone>.csv, summary-<backbone>.csv, table3-<backbone>.md and .json,
and table3-<backbone>.png/.svg. Cells already measured in `--out` are reused, so an interrupted
run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from qcxr.bench import harness, tables
from qcxr.bench.cells import REUSE, Plan
from qcxr.bench.cli import add_config_argument, config_of, given
from qcxr.bench.frameworks import BACKBONES, FRAMEWORKS, HEADS
from qcxr.bench.frameworks.pennylane_tf import TF_MODES
from qcxr.bench.harness import ISOLATE, RunOptions, env_python, log, python_option
from qcxr.bench.machine import machine_info
from qcxr.config import BenchConfig, TrainConfig

LABELS = (8, 14, 19)  # the paper's tasks CXR-8, CXR-14, CXR-19 (n labels = n qubits)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `qcxr bench table3`."""
    add_plan_arguments(parser)
    add_run_arguments(parser)


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """What to measure: the `Plan`."""
    bench, train = BenchConfig(), TrainConfig()
    add_config_argument(parser, "bench: section and train.batch_size")
    parser.add_argument(
        "--frameworks", nargs="+", choices=list(FRAMEWORKS), default=list(FRAMEWORKS),
        help="the frameworks to time (default: all)",
    )  # fmt: skip
    parser.add_argument("--heads", nargs="+", choices=HEADS, default=list(HEADS),
                        help="the heads to time (default: both)")  # fmt: skip
    parser.add_argument(
        "--labels", nargs="+", type=int, default=list(LABELS), help="n: labels = qubits"
    )
    parser.add_argument(
        "--backbone",
        choices=BACKBONES,
        default="resnet50",
        help="resnet50 (random weights, 224x224 zero images) or none (zero (B, 2048) features)",
    )
    parser.add_argument("--batch", type=int, help=f"default: train.batch_size ({train.batch_size})")
    parser.add_argument(
        "--warmup", type=int, help=f"untimed steps first (bench.warmup: {bench.warmup})"
    )
    parser.add_argument("--steps", type=int, help=f"timed steps (bench.steps: {bench.steps})")
    parser.add_argument(
        "--batches-per-epoch",
        type=int,
        help="extrapolation to minutes per epoch "
        f"(bench.batches_per_epoch: {bench.batches_per_epoch})",
    )
    parser.add_argument(
        "--tf-mode",
        choices=TF_MODES,
        default=TF_MODES[0],
        help="pennylane-tf step: tf.function with XLA (jit_compile, default) or graph only",
    )


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """How to run it: the `RunOptions`, and what to print."""
    parser.add_argument("--out", type=Path, default=Path("runs/bench/table3"),
                        help="results directory (%(default)s)")  # fmt: skip
    parser.add_argument(
        "--reuse",
        choices=REUSE,
        default="same",
        help="cells in --out to keep: ok with the same warm-up/steps (default); any (ok, or a "
        "memory/time limit hit); none",
    )
    parser.add_argument(
        "--isolate",
        choices=ISOLATE,
        default="cell",
        help="one process per cell (peak memory per cell) or per framework (faster)",
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds per process")
    parser.add_argument(
        "--max-rss-gib",
        type=float,
        default=None,
        help="kill a worker (with its children) above this resident memory (default: 75%% of RAM)",
    )
    parser.add_argument(
        "--tables-only", action="store_true", help="run nothing: tables from the cells in --out"
    )
    for framework in FRAMEWORKS:
        parser.add_argument(
            "--" + python_option(framework).replace("_", "-"),
            dest=python_option(framework),
            default=None,
            metavar="PYTHON",
            help=f"interpreter for {framework} (default ${env_python(framework)} or this one)",
        )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def plan_of(args: argparse.Namespace) -> Plan:
    """The plan of the parsed options: explicit options over --config over the paper's."""
    config = config_of(args)
    return Plan(
        frameworks=tuple(args.frameworks),
        heads=tuple(args.heads),
        labels=tuple(args.labels),
        backbone=args.backbone,
        batch=given(args.batch, config.train.batch_size),
        warmup=given(args.warmup, config.bench.warmup),
        steps=given(args.steps, config.bench.steps),
        batches_per_epoch=given(args.batches_per_epoch, config.bench.batches_per_epoch),
        tf_mode=args.tf_mode,
    )


def run_options_of(args: argparse.Namespace) -> RunOptions:
    max_rss_gib = args.max_rss_gib
    if max_rss_gib is None:  # never let one cell push a shared machine into the OOM killer
        max_rss_gib = 0.75 * machine_info().memory_gib or None
    return RunOptions(
        out=args.out,
        reuse=args.reuse,
        isolate=args.isolate,
        timeout=args.timeout,
        max_rss_gib=max_rss_gib,
        pythons={f: getattr(args, python_option(f), None) for f in FRAMEWORKS},
    )


def run(args: argparse.Namespace) -> int:
    """Measure the requested cells, then write and print the tables; 1 if a cell failed."""
    plan, options = plan_of(args), run_options_of(args)
    if threading.current_thread() is threading.main_thread():  # SIGTERM: kill the worker too
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    options.cells_dir.mkdir(parents=True, exist_ok=True)
    for framework in [] if args.tables_only else plan.frameworks:
        harness.measure_framework(framework, plan, options)
    cells = harness.collect(plan, options.cells_dir)
    machine = machine_info()
    paths = tables.write_outputs(plan, options.out, cells, machine, log)
    if args.json:
        rows = tables.summary_rows(cells, plan.batches_per_epoch)
        print(json.dumps({"machine": machine.as_dict(), "rows": rows}, indent=1))
    else:
        print(paths["markdown"].read_text())
    log(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 1 if any(c.status == "error" for c in cells) else 0  # limits are not errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="table3", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
