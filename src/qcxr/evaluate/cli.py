"""`qcxr evaluate` and `qcxr report`."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from qcxr import rundir


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="metrics.json of runs from their predictions-<testset>.parquet files",
        description="AUROC, AP and F1 per label, their means and head/medium/tail means, from "
        "each run's existing predictions; writes <run>/metrics.json. The F1 threshold and the "
        "head/medium/tail boundaries are the eval: section of each run's config.yaml.",
    )
    p.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="run directories (with predictions-*.parquet)",
    )
    p.add_argument(
        "--train-csv",
        help="training label CSV for head/medium/tail counts (default: from the run's config, "
        "else the paper's Table I)",
    )
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    p.set_defaults(func=evaluate_cmd)

    p = subparsers.add_parser(
        "report",
        help="tables, figures and report.html for an experiment's runs",
        description="Scan RUNS_DIR/<task>/<head>/seed-<k>/ and write RUNS_DIR/summary/. A grid "
        "with another axis (train.loss: [bce, focal]) writes its cells beside RUNS_DIR, as "
        "RUNS_DIR-loss=bce/ ...: given RUNS_DIR, they are reported as one experiment with the "
        "axis as a column. The significance level and bootstrap count are the eval: section of the runs' config.yaml "
        "(the same in every run); the options below override them.",
    )
    p.add_argument(
        "runs_dir",
        metavar="RUNS_DIR",
        help="an experiment directory (qcxr run/train --out), or one cell of a grid",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=None,
        help="resamples (0: skip; default: the runs' eval.bootstrap)",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="significance level of the bootstrap intervals and the volcano plot's line "
        "(default: the runs' eval.alpha)",
    )
    p.add_argument("--benchmark", help="Table III CSV (framework, head, n, mean_s, std_s)")
    p.add_argument("--recompute", action="store_true", help="recompute every metrics.json")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=report_cmd)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "NaN"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _metric_rows(run_dir: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for testset, m in result["testsets"].items():
        for label, v in m["labels"].items():
            rows.append(
                {
                    "run": run_dir,
                    "testset": testset,
                    "label": label,
                    "auroc": v["auroc"],
                    "ap": v["ap"],
                    "f1": v["f1"],
                    "n": v["n"],
                    "pos": v["positives"],
                    "group": v.get("group") or "",
                }
            )
        for name, s in [("mean", m["mean"])] + [(g, s) for g, s in m["groups"].items()]:
            covered = f"{s['n_labels']['auroc']}/{s['labels_total']}"
            rows.append(
                {
                    "run": run_dir,
                    "testset": testset,
                    "label": f"[{name}]",
                    "auroc": s["auroc"],
                    "ap": s["ap"],
                    "f1": s["f1"],
                    "n": covered,
                    "pos": "",
                    "group": "labels",
                }
            )
    return rows


def evaluate_cmd(args: argparse.Namespace) -> int:
    import warnings

    from qcxr.evaluate.diagnosis import message
    from qcxr.evaluate.metrics import (
        SingleClassWarning,
        jsonable,
        train_counts_from_csv,
        write_metrics,
    )

    counts = train_counts_from_csv(args.train_csv) if args.train_csv else None
    results, rows = {}, []
    for run_dir in args.run_dirs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SingleClassWarning)  # recorded and printed below
            result = write_metrics(run_dir, train_counts=counts)
        results[run_dir] = result
        rows += _metric_rows(run_dir, result)
        for m in result["testsets"].values():
            for note in m["warnings"]:
                print(f"warning: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(jsonable(results), indent=2))
    else:
        _print_table(rows)
        for run_dir in args.run_dirs:
            print(f"wrote {Path(run_dir) / rundir.METRICS}")
    for run_dir, result in results.items():  # last: a model that learned nothing is no success
        said = message(result.get("diagnosis"))
        if said:
            print(f"warning: {run_dir}: {said}", file=sys.stderr)
    return 0


def report_cmd(args: argparse.Namespace) -> int:
    import warnings

    from qcxr.evaluate.metrics import SingleClassWarning
    from qcxr.evaluate.report import write_report

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingleClassWarning)  # summarised in the report's notes
        index = write_report(
            args.runs_dir,
            resamples=args.bootstrap,
            alpha=args.alpha,
            benchmark=args.benchmark,
            recompute=args.recompute,
            progress=not args.json,
        )
    if args.json:
        print(json.dumps(index, indent=2))
        return 0
    if index["random_weights"]:
        print("WARNING: some runs used RANDOM backbone weights (not pretrained); see the report.")
    if index.get("learned_nothing"):
        print(
            "WARNING: the model learned nothing in "
            + ", ".join(index["learned_nothing"])
            + "; see the report."
        )
    _print_table(index["summary"])
    for note in index["notes"]:
        print(f"note: {note}", file=sys.stderr)
    for line in index.get("below_chance", []):
        print(f"note: AUROC below chance (< 0.5): {line}", file=sys.stderr)
    ran = "; ".join(f"{cell}: {', '.join(map(str, s))}" for cell, s in index["seeds"].items())
    print(f"seeds that ran: {ran}")
    if index.get("tracked"):
        print(f"report attached to {index['tracked']} tracked runs (MLflow)")
    used = index["eval"]
    print(f"eval: alpha = {used['alpha']:g}, bootstrap = {used['bootstrap']} ({used['source']})")
    print(f"report: {index['report']}")
    return 0
