"""`qcxr predict`: probabilities per label for new images from a trained run, and with
--explain, Grad-CAM heat maps of the top labels on an HTML page."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="probabilities per label for new images from a run's best checkpoint",
        description="Preprocess each image as for training (shortest side, center crop), run "
        "the run's best checkpoint and print one row of label probabilities per image. "
        "--explain OUT_DIR also writes Grad-CAM heat maps of each image's top labels (PNG "
        "overlays) and an index.html page with the probabilities.",
    )
    p.add_argument(
        "run_dir", metavar="CHECKPOINT_RUN_DIR", help="a training run directory (config.yaml, "
        "checkpoints/), e.g. runs/default/cxr8/dqc/seed-0",
    )  # fmt: skip
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG or JPEG)")
    p.add_argument("--csv", help="write the table to this CSV file")
    p.add_argument(
        "--batch-size", type=int, default=16, help="images per forward pass (default 16)"
    )
    p.add_argument("--json", action="store_true", help="print rows as JSON")
    p.add_argument(
        "--explain", metavar="OUT_DIR", help="also write Grad-CAM heat maps (PNG) of the top "
        "labels and OUT_DIR/index.html with the images, probabilities and overlays",
    )  # fmt: skip
    p.add_argument(
        "--top", type=int, default=3, metavar="K",
        help="with --explain: heat maps for each image's K most probable labels (default 3)",
    )  # fmt: skip
    p.set_defaults(func=predict_cmd)


def _explained(args: argparse.Namespace):
    """The probabilities, after writing the --explain page; also warns of random weights."""
    from qcxr.evaluate.explain import explain_images
    from qcxr.evaluate.explain_page import write_explanation
    from qcxr.evaluate.predict import backbone_identity, random_weights_banner

    explanation = explain_images(
        args.run_dir, args.images, top_k=args.top, batch_size=args.batch_size
    )
    banner = random_weights_banner(explanation.config, args.run_dir)
    if banner:
        print(banner, file=sys.stderr)
    identity = backbone_identity(explanation.config, args.run_dir)
    index = write_explanation(args.explain, explanation, identity, banner)
    top = explanation.top.shape[1]
    print(f"wrote {index} ({len(args.images)} images, heat maps of the top {top} labels each)")
    return explanation.probabilities


def _predicted(args: argparse.Namespace):
    from qcxr.evaluate.predict import predict_run, random_weights_banner

    frame, config = predict_run(args.run_dir, args.images, batch_size=args.batch_size)
    banner = random_weights_banner(config, args.run_dir)
    if banner:
        print(banner, file=sys.stderr)
    return frame


def predict_cmd(args: argparse.Namespace) -> int:
    from qcxr.evaluate.cli import _print_table

    if args.batch_size < 1 or args.top < 1:
        raise ValueError("--batch-size and --top must be >= 1")
    frame = _explained(args) if args.explain else _predicted(args)
    if args.csv:
        frame.to_csv(args.csv, index=False)
    if args.json:
        print(json.dumps(frame.to_dict(orient="records"), indent=2))
    elif not args.csv:
        _print_table(frame.to_dict(orient="records"))
    else:
        print(f"wrote {args.csv} ({len(frame)} images)")
    return 0
