"""Run benchmark cells of one framework in this process and write one JSON file per cell.

    python -m qcxr.bench.frameworks.worker --framework qcxr --cells cdl:8 dqc:8 \
        --batch 32 --backbone none --warmup 10 --steps 30 --out DIR

The harness (`qcxr.bench.table3`) starts it, possibly under a framework's own interpreter, so
this module uses only the standard library until a cell imports its framework. `--probe` prints
whether the framework is installed here, and its versions, as one JSON line.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import platform
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from qcxr.bench.frameworks import FRAMEWORKS

# Distributions whose version a row records, by import name (some ship under other names).
DISTRIBUTIONS = {"tensorflow": ("tensorflow", "tensorflow-cpu"), "jaxlib": ("jaxlib",)}


def cell_name(framework: str, head: str, num_labels: int, backbone: str, batch: int) -> str:
    """File stem of one cell's result."""
    return f"{framework}_{head}_n{num_labels}_{backbone}_b{batch}"


def missing_modules(framework: str) -> list[str]:
    return [m for m in FRAMEWORKS[framework][1] if importlib.util.find_spec(m) is None]


def distribution_version(name: str) -> str | None:
    for dist in DISTRIBUTIONS.get(name, (name,)):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def versions(names: tuple[str, ...]) -> dict[str, str | None]:
    found = {"python": platform.python_version()}
    found.update({name: distribution_version(name) for name in names})
    return found


def peak_rss_mb() -> float:
    """High-water resident set size of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def probe(framework: str) -> dict[str, Any]:
    module, needs = FRAMEWORKS[framework]
    missing = missing_modules(framework)
    names = tuple(dict.fromkeys((*needs, "numpy")))
    return {
        "framework": framework,
        "installed": not missing,
        "missing": missing,
        "python": sys.executable,
        "versions": versions(names),
    }


def timed(step, sync) -> float:
    start = time.perf_counter()
    sync(step())
    return time.perf_counter() - start


def run_cell(framework: str, head: str, num_labels: int, args: argparse.Namespace) -> dict:
    """Build one model and time its steps: warm-ups first (the first one compiles), then timed."""
    module = importlib.import_module(f"qcxr.bench.frameworks.{FRAMEWORKS[framework][0]}")
    result: dict[str, Any] = {
        "framework": framework,
        "head": head,
        "num_labels": num_labels,
        "backbone": args.backbone,
        "batch": args.batch,
        "warmup": args.warmup,
        "steps": args.steps,
        "options": args.options,
        "python": sys.executable,
        "versions": versions(module.VERSIONS),
        "rss_scope": "cell" if args.one_cell else "process",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    missing = missing_modules(framework)
    if missing:
        return {**result, "status": "skipped", "reason": f"not installed: {', '.join(missing)}"}
    try:
        for name in FRAMEWORKS[framework][1]:  # imports are not model building: keep them apart
            importlib.import_module(name)
        start = time.perf_counter()
        step, sync = module.build_step(
            head, num_labels, args.batch, args.backbone, seed=args.seed, **args.options
        )
        result["build_s"] = time.perf_counter() - start
        result["device"] = module.device()
        result["warmup_s"] = [timed(step, sync) for _ in range(args.warmup)]
        result["step_s"] = [timed(step, sync) for _ in range(args.steps)]
        result["first_step_s"] = result["warmup_s"][0] if args.warmup else None
        result["status"] = "ok"
    except Exception as err:  # a broken framework is a row saying so, not a dead harness
        traceback.print_exc()
        result.update(status="error", reason=f"{type(err).__name__}: {err}"[:500])
    result["peak_rss_mb"] = peak_rss_mb()
    return result


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
    p = argparse.ArgumentParser(prog="qcxr.bench.frameworks.worker")
    p.add_argument("--framework", required=True, choices=sorted(FRAMEWORKS))
    p.add_argument("--probe", action="store_true", help="print availability and versions")
    p.add_argument("--cells", nargs="*", type=parse_cell, default=[])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--steps", type=int, default=30)
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
        result = run_cell(args.framework, head, num_labels, args)
        name = cell_name(args.framework, head, num_labels, args.backbone, args.batch)
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=1))
        print(f"{name}: {result['status']}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
