"""`qcxr predict`: probabilities per label for new images from a trained run."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="probabilities per label for new images from a run's best checkpoint",
    )
    p.add_argument("run_dir", metavar="CHECKPOINT_RUN_DIR")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--csv", help="write the table to this CSV file")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--json", action="store_true", help="print rows as JSON")
    p.set_defaults(func=predict_cmd)


def predict_cmd(args: argparse.Namespace) -> int:
    from qcxr.evaluate.cli import _print_table
    from qcxr.evaluate.predict import predict_images

    frame = predict_images(args.run_dir, args.images, batch_size=args.batch_size)
    if args.csv:
        frame.to_csv(args.csv, index=False)
    if args.json:
        print(json.dumps(frame.to_dict(orient="records"), indent=2))
    elif not args.csv:
        _print_table(frame.to_dict(orient="records"))
    else:
        print(f"wrote {args.csv} ({len(frame)} images)")
    return 0
