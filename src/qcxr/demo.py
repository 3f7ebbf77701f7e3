"""`qcxr demo`: the whole study on the embedded default, on one machine, with no network.

Synthetic study in the real file formats -> image cache -> frozen ResNet50 features (pretrained
weights when they can be had, otherwise random ones, said loudly) -> CDL and DQC heads trained
over seeds -> predictions and metrics on the internal and external test sets -> report.html.
Every stage is the same `qcxr` subcommand a user runs; the demo only chooses small sizes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from qcxr import configs
from qcxr.cli import add_task_arguments, task_from_args
from qcxr.config import MODES, ModelConfig, read_yaml
from qcxr.labels import LABEL_SETS, Task

DEMO_CONFIG = "demo"  # the bundled configs/demo.yaml (qcxr.configs)


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo", help="run the whole study on a synthetic dataset (no data, no network needed)"
    )
    demo.add_argument("--out", type=Path, default=Path("demo-out"), help="output directory")
    add_task_arguments(demo, "cxr8")
    demo.add_argument("--seeds", type=int, default=3, help="seeds per head (paper: 5)")
    demo.add_argument("--n-train", type=int, default=1600,
                      help="synthetic NIH training images (%(default)s)")  # fmt: skip
    demo.add_argument("--n-val", type=int, default=300,
                      help="synthetic NIH validation images (%(default)s)")  # fmt: skip
    demo.add_argument("--n-test", type=int, default=400,
                      help="synthetic NIH test images, the internal test set (%(default)s)")  # fmt: skip
    demo.add_argument("--n-external", type=int, default=300,
                      help="synthetic MIMIC images, the external test set (%(default)s)")  # fmt: skip
    demo.add_argument("--size", type=int, default=256, help="synthetic image size")
    demo.add_argument("--crop", type=int, default=128,
                      help="model input size (paper: 224; smaller keeps the CPU demo short)")  # fmt: skip
    demo.add_argument("--weights", default=ModelConfig().weights,
                      help="backbone weights; falls back to random ones when unavailable")  # fmt: skip
    demo.add_argument("--mode", default="frozen", choices=MODES,
                      help="frozen: heads on backbone features computed once (fast); finetune: "
                      "backbone and head trained on images (%(default)s)")  # fmt: skip
    demo.add_argument(
        "--epochs", type=int, default=None, help="max epochs (default: the paper's 50)"
    )
    demo.add_argument("--config", default=DEMO_CONFIG,
                      help="grid YAML: a file, or a bundled config's name (%(default)s)")  # fmt: skip
    demo.set_defaults(func=run_demo)


def _stage(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _call(argv: list[str]) -> None:
    from qcxr.cli import main

    print("$ qcxr " + " ".join(argv), flush=True)
    code = main(argv)
    if code:
        raise SystemExit(f"qcxr demo: `qcxr {' '.join(argv)}` failed with exit code {code}")


def _weights(requested: str) -> str:
    """The requested weights if they load here, else an explicit random choice (printed)."""
    if requested.startswith("random"):
        return requested
    import os

    from qcxr.models.weights import load_resnet50_weights

    # The demo promises no network: use the local Hugging Face cache only (set
    # HF_HUB_OFFLINE=0 to let it download).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    try:
        load_resnet50_weights(requested)
        return requested
    except (FileNotFoundError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0]
        print(f"   pretrained weights unavailable ({first})", flush=True)
        print("   !!! falling back to RANDOM backbone weights: results are not ImageNet transfer",
              flush=True)  # fmt: skip
        return "random:0"


def _task_argv(task: Task) -> list[str]:
    """--task (and --labels for an explicit list) for the subcommands."""
    if list(task.labels) == LABEL_SETS.get(task.name):
        return ["--task", task.name]
    return ["--task", task.name, "--labels", ",".join(task.labels)]


def _feature_splits(task: Task, study: Path) -> list[str]:
    """Feature stores a frozen run needs: train/val of its training source, then the tests."""
    from qcxr.config import from_dict
    from qcxr.train.data import study_of

    config = from_dict(
        {"task": task.name, "labels": list(task.labels), "data": {"study": str(study)}}
    )
    return list(study_of(config).stores().values())


def _grid_file(
    args: argparse.Namespace, config: Path, task: Task, study: Path, features: Path
) -> Path:
    """The demo's grid: `config` with the demo's task, seeds, mode, epochs and data set."""
    grid = read_yaml(config)
    grid.setdefault("grid", {})
    grid["grid"]["task"] = [task.name]
    if list(task.labels) != LABEL_SETS.get(task.name):
        grid["labels"] = list(task.labels)
    grid["grid"]["train.seed"] = list(range(args.seeds))
    grid.setdefault("train", {})["mode"] = args.mode
    if args.epochs is not None:
        grid["train"]["max_epochs"] = args.epochs
    grid.setdefault("data", {}).update(
        {"study": str(study), "features": str(features), "cache": str(args.out / "cache"),
         "crop": args.crop, "resize_shortest": round(args.crop * 256 / 224)}
    )  # fmt: skip
    path = args.out / "demo.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def run_demo(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    config = configs.path(args.config)  # before any stage: a wrong name fails at once
    read_yaml(config)  # and so does a malformed file
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    study, cache, features = out / "study", out / "cache", out / "features"
    resize = str(round(args.crop * 256 / 224))  # the paper's 256 -> 224 ratio
    task = task_from_args(args)
    task_argv = _task_argv(task)

    t = _stage("1/6 synthetic study in the NIH-CXR-LT and MIMIC-CXR-LT formats")
    if not (study / "nih").exists():
        _call(["synth", str(study), "--n-train", str(args.n_train), "--n-val", str(args.n_val),
               "--n-test", str(args.n_test), "--n-external", str(args.n_external),
               "--size", str(args.size), *task_argv])  # fmt: skip
    else:
        print(f"   {study} exists, reused")
    print(f"   {time.perf_counter() - t:.0f} s")

    t = _stage("2/6 image cache (preprocess once: resize, center crop, uint8, zstd)")
    _call(["cache", "build", "--study", str(study), "--cache", str(cache), *task_argv,
           "--resize", resize, "--crop", str(args.crop)])  # fmt: skip
    print(f"   {time.perf_counter() - t:.0f} s")

    weights = _weights(args.weights)
    if args.mode == "frozen":
        t = _stage(f"3/6 frozen ResNet50 features ({weights})")
        for split in _feature_splits(task, study):
            _call(["features", "--study", str(study), "--split", split, "--cache", str(cache),
                   *task_argv, "--weights", weights,
                   "--out", str(features / f"{split}.safetensors")])  # fmt: skip
        print(f"   {time.perf_counter() - t:.0f} s")
    else:
        _stage("3/6 finetune mode: no feature store")

    t = _stage(f"4/6 train CDL and DQC heads, {args.seeds} seeds ({args.mode})")
    grid = _grid_file(args, config, task, study, features)
    experiment = out / "runs"
    _call(["run", str(grid), "--out", str(experiment), "--set", f"model.weights={weights}"])
    print(f"   {time.perf_counter() - t:.0f} s")

    t = _stage("5/6 evaluate on the NIH and MIMIC test sets (internal: the training dataset's)")
    run_dirs = sorted(str(p.parent) for p in experiment.glob("*/*/seed-*/status.json"))
    _call(["evaluate", *run_dirs])
    print(f"   {time.perf_counter() - t:.0f} s")

    t = _stage("6/6 statistics, figures and report")
    _call(["report", str(experiment)])
    report = experiment / "summary" / "report.html"
    print(f"   {time.perf_counter() - t:.0f} s")
    print(f"\nqcxr demo finished in {time.perf_counter() - started:.0f} s.")
    print(f"Report: {report.resolve()}")
    if weights.startswith("random"):
        print("Note: the backbone weights were RANDOM (no pretrained weights here).")
    return 0


if __name__ == "__main__":
    from qcxr.cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
