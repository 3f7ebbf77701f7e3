"""Run benchmark cells of one framework in this process and write one JSON file per cell.

    python -m qcxr.bench.frameworks.worker --framework qcxr --cells cdl:8 dqc:8 \
        --batch 32 --backbone none --warmup 10 --steps 30 --out DIR

The harness (`qcxr.bench.harness`) starts it, possibly under a framework's own interpreter, so
this module uses only the standard library (and `qcxr.config`, `qcxr.versions`, which do too)
until a cell imports its framework. `--probe` prints whether the framework is installed here,
and its versions, as one JSON line. The result files are `qcxr.bench.cells.Cell` records.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from qcxr.bench.cells import Cell, cell_name, write_cell
from qcxr.bench.frameworks import BACKBONES, FRAMEWORKS
from qcxr.bench.machine import peak_rss_mb
from qcxr.config import BenchConfig, TrainConfig
from qcxr.versions import package_versions


def missing_modules(framework: str) -> list[str]:
    return [m for m in FRAMEWORKS[framework][1] if importlib.util.find_spec(m) is None]


def probe(framework: str) -> dict[str, Any]:
    module, needs = FRAMEWORKS[framework]
    missing = missing_modules(framework)
    names = tuple(dict.fromkeys((*needs, "numpy")))
    return {
        "framework": framework,
        "installed": not missing,
        "missing": missing,
        "python": sys.executable,
        "versions": package_versions(names),
    }


def timed(step, sync) -> float:
    start = time.perf_counter()
    sync(step())
    return time.perf_counter() - start


def measure(
    module: Any, head: str, num_labels: int, args: argparse.Namespace, measured: dict[str, Any]
) -> None:
    """Build one model and time its steps into `measured` (what was measured before an error
    stays): warm-ups first (the first one compiles), then timed steps."""
    start = time.perf_counter()
    step, sync = module.build_step(
        head, num_labels, args.batch, args.backbone, seed=args.seed, **args.options
    )
    measured["build_s"] = time.perf_counter() - start
    measured["device"] = module.device()
    measured["warmup_s"] = [timed(step, sync) for _ in range(args.warmup)]
    measured["step_s"] = [timed(step, sync) for _ in range(args.steps)]
    measured["first_step_s"] = measured["warmup_s"][0] if args.warmup else None


def run_cell(framework: str, head: str, num_labels: int, args: argparse.Namespace) -> Cell:
    """One cell's record: its times, or the error that stopped it."""
    module = importlib.import_module(f"qcxr.bench.frameworks.{FRAMEWORKS[framework][0]}")
    header: dict[str, Any] = {
        "framework": framework, "head": head, "num_labels": num_labels,
        "backbone": args.backbone, "batch": args.batch, "warmup": args.warmup,
        "steps": args.steps, "options": args.options, "python": sys.executable,
        "versions": package_versions(module.VERSIONS),
        "rss_scope": "cell" if args.one_cell else "process",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }  # fmt: skip
    missing = missing_modules(framework)
    if missing:
        return Cell(**header, status="skipped", reason=f"not installed: {', '.join(missing)}")
    measured: dict[str, Any] = {}
    try:
        for name in FRAMEWORKS[framework][1]:  # imports are not model building: keep them apart
            importlib.import_module(name)
        measure(module, head, num_labels, args, measured)
        measured["status"] = "ok"
    except Exception as err:  # a broken framework is a row saying so, not a dead harness
        traceback.print_exc()
        measured.update(status="error", reason=f"{type(err).__name__}: {err}"[:500])
    return Cell(**header, **measured, peak_rss_mb=peak_rss_mb())


def parse_cell(text: str) -> tuple[str, int]:
    head, _, labels = text.partition(":")
    if not labels.isdigit():
        raise argparse.ArgumentTypeError(f"cell {text!r}: expected HEAD:NUM_LABELS, e.g. dqc:8")
    return head, int(labels)


def parse_option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"option {text!r}: expected KEY=VALUE")
    return key, value


def parser() -> argparse.ArgumentParser:
    bench = BenchConfig()
    p = argparse.ArgumentParser(prog="qcxr.bench.frameworks.worker")
    p.add_argument("--framework", required=True, choices=sorted(FRAMEWORKS))
    p.add_argument("--probe", action="store_true", help="print availability and versions")
    p.add_argument("--cells", nargs="*", type=parse_cell, default=[])
    p.add_argument("--batch", type=int, default=TrainConfig().batch_size)
    p.add_argument("--backbone", choices=BACKBONES, default=BACKBONES[0])
    p.add_argument("--warmup", type=int, default=bench.warmup)
    p.add_argument("--steps", type=int, default=bench.steps)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--option", dest="options", action="append", type=parse_option, default=[])
    p.add_argument("--out", type=Path)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.options = dict(args.options)
    if args.probe:
        print(json.dumps(probe(args.framework)))
        return 0
    if args.out is None:
        raise SystemExit("worker: --out is required to run cells")
    args.out.mkdir(parents=True, exist_ok=True)
    args.one_cell = len(args.cells) == 1
    for head, num_labels in args.cells:
        cell = run_cell(args.framework, head, num_labels, args)
        name = cell_name(args.framework, head, num_labels, args.backbone, args.batch)
        write_cell(args.out / f"{name}.json", cell, indent=1)
        print(f"{name}: {cell.status}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
