"""`qcxr model summary`."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    model = sub.add_parser("model", help="model information")
    model_sub = model.add_subparsers(dest="model_command", metavar="SUBCOMMAND")
    summary = model_sub.add_parser("summary", help="parameter count per component (Table II)")
    summary.add_argument("--task", default="cxr8", choices=["cxr8", "cxr14", "cxr19"])
    summary.add_argument("--head", default="dqc", choices=["cdl", "dqc"])
    summary.add_argument("--layers", type=int, default=3, help="DQC variational layers")
    summary.add_argument("--json", action="store_true", help="print JSON")
    summary.set_defaults(func=_summary)


def _summary(args: argparse.Namespace) -> int:
    from qcxr.models.summary import model_summary

    rows = model_summary(args.task, args.head, args.layers)
    if args.json:
        print(json.dumps({"task": args.task, "head": args.head, "components": rows}, indent=2))
        return 0
    print(f"{args.task} / {args.head}")
    width = max(len(r["component"]) for r in rows)
    for row in rows:
        print(f"  {row['component']:<{width}}  {row['parameters']:>12,}")
    return 0
