"""`qcxr model summary`."""

from __future__ import annotations

import argparse
import json

from qcxr.cli import add_task_arguments, task_from_args
from qcxr.config import HEADS


def register(sub: argparse._SubParsersAction) -> None:
    model = sub.add_parser("model", help="model information")
    model_sub = model.add_subparsers(dest="model_command", metavar="SUBCOMMAND")
    summary = model_sub.add_parser("summary", help="parameter count per component (Table II)")
    add_task_arguments(summary, "cxr8")
    summary.add_argument(
        "--head",
        default="dqc",
        choices=HEADS,
        help="cdl: one linear layer; dqc: the dressed quantum circuit (%(default)s)",
    )
    summary.add_argument("--layers", type=int, default=3, help="DQC variational layers")
    summary.add_argument("--json", action="store_true", help="print JSON")
    summary.set_defaults(func=_summary)


def _summary(args: argparse.Namespace) -> int:
    from qcxr.models.summary import model_summary

    task = task_from_args(args)
    rows = model_summary(task, args.head, args.layers)
    if args.json:
        out = {"task": task.name, "labels": len(task), "head": args.head, "components": rows}
        print(json.dumps(out, indent=2))
        return 0
    print(f"{task.name} ({len(task)} labels) / {args.head}")
    width = max(len(r["component"]) for r in rows)
    for row in rows:
        print(f"  {row['component']:<{width}}  {row['parameters']:>12,}")
    return 0
