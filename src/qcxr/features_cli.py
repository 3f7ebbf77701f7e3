"""`qcxr features`: the frozen-feature store of one split (see qcxr.features)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from qcxr.cli import add_task_arguments, task_from_args
from qcxr.config import FORMATS, TABLE_FORMATS
from qcxr.features import DTYPES

# NIH-CXR-LT train, val, test; MIMIC-CXR-LT test ("mimic") and, for studies that train on
# MIMIC (labels NIH lacks), its train and val files. Store names: <split>.safetensors.
SPLITS = ("train", "val", "test", "mimic", "mimic-train", "mimic-val")


def register(subparsers: argparse._SubParsersAction) -> None:
    from qcxr.config import Config

    config = Config()
    parser = subparsers.add_parser(
        "features",
        help="pooled ResNet-50 features of every image of a split (frozen fast path)",
        description="Compute pooled ResNet-50 features (eval mode) of every image of a split, "
        "from the image cache, into a safetensors feature store. Resumable: rerun the same "
        "command after an interruption.",
    )
    data = parser.add_argument_group("data (layout of `qcxr synth`; override for real data)")
    data.add_argument("--study", type=Path, help="study root with nih/ and mimic/")
    data.add_argument(
        "--split", choices=SPLITS, required=True,
        help="the set to extract: NIH train/val/test, MIMIC mimic (test)/mimic-train/mimic-val; "
        "a label table (--format table|chexpert): train/val/test",
    )  # fmt: skip
    data.add_argument("--cache", type=Path, required=True, help="image cache (`qcxr cache build`)")
    data.add_argument("--format", choices=FORMATS, default=None,
                      help=f"label files' layout (default: the --config's, else {config.data.format})")  # fmt: skip
    data.add_argument("--config", type=Path,
                      help="a run config (YAML) whose data: section names the data (a table's "
                      "columns, splits and label policies)")  # fmt: skip
    data.add_argument("--csv", type=Path,
                      help="label CSV of the split (NIH layout), or the label table (table, chexpert)")  # fmt: skip
    data.add_argument("--images", type=Path,
                      help="NIH image dir, MIMIC-CXR-JPG root, or a table's image root")  # fmt: skip
    data.add_argument("--metadata", type=Path, help="MIMIC metadata CSV (frontal-view filter)")
    add_task_arguments(data, config.task)
    parser.add_argument(
        "--weights",
        default=config.model.weights,
        help="hub id, HF directory, torchvision state-dict file, or 'random[:SEED]' (%(default)s)",
    )
    parser.add_argument("--out", type=Path, required=True, help="feature store (.safetensors)")
    parser.add_argument("--batch-size", type=int, default=config.train.batch_size,
                        help="images per backbone call (%(default)s)")  # fmt: skip
    parser.add_argument("--views", type=int, default=0, help="K augmented views per image")
    parser.add_argument("--seed", type=int, default=0, help="seed of the augmented views")
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="backbone compute dtype; bfloat16 is for GPUs",
    )
    parser.add_argument("--chunk-rows", type=int, default=1024, help="rows per resumable chunk")
    parser.add_argument("--threads", type=int, default=config.data.loader_threads,
                        help="cache reader threads (%(default)s)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run_features)


def split_files(args: argparse.Namespace) -> tuple[Path, Path, Path | None]:
    """(label CSV, image dir or root, MIMIC metadata CSV) from --study or the explicit paths."""
    if args.csv and args.images:
        return args.csv, args.images, args.metadata
    if not args.study:
        raise ValueError("give --study ROOT, or both --csv and --images")
    from qcxr.data.datasets import study_paths

    study = study_paths(args.study)
    if args.split.startswith("mimic"):
        split = args.split.removeprefix("mimic").removeprefix("-") or "test"
        return (
            args.csv or study.mimic_split_csv[split],
            args.images or study.mimic_root,
            args.metadata or study.mimic_metadata,
        )
    return args.csv or study.nih_csv[args.split], args.images or study.nih_images, None


def open_dataset(args: argparse.Namespace):
    from qcxr.data import datasets
    from qcxr.data.study import data_settings, open_study

    data = data_settings(
        args.config, format=args.format, study=args.study, csv=args.csv, images=args.images
    )
    task = task_from_args(args)
    if data.format in TABLE_FORMATS:
        study = open_study(data, task)
        sets = {store: name for name, store in study.stores().items()}
        if args.split not in sets:
            raise ValueError(
                f"--split {args.split}: a {data.format} study has the sets {list(sets)}"
            )
        return study.dataset(sets[args.split], images_only=True)
    csv, images, metadata = split_files(args)
    # Labels are not used here: a task label column absent from the file is no obstacle.
    if args.split.startswith("mimic"):
        return datasets.MIMICCXRLT(
            csv, images, task, metadata_csv=metadata, allow_missing_labels=True
        )
    return datasets.NIHCXRLT(csv, images, task, allow_missing_labels=True)


def provenance(args: argparse.Namespace, dataset, cache) -> dict[str, str]:
    """What a store is tied to besides its settings: split, label file (path and sha256), image
    cache (path and image settings). Training checks them (qcxr.train.data)."""
    return {
        "split": args.split,
        "labels_checksum": dataset.checksum,
        "label_file": str(dataset.label_file),
        "cache": str(Path(args.cache).resolve()),
        **{k: str(cache.params[k]) for k in ("crop", "resize_shortest", "resample")},
    }


def without_skipped(dataset, cache) -> tuple:
    """The dataset without the images `qcxr cache build --on-bad-image skip` skipped, and their
    ids (recorded in the store, so that training leaves them out too, with a note)."""
    from qcxr.data.study import skipped_ids
    from qcxr.data.study import without_skipped as drop

    ids = skipped_ids(dataset, cache.skipped())
    return drop(dataset, ids, str(cache.directory)), ids


def run_features(args: argparse.Namespace) -> int:
    from qcxr import features
    from qcxr.data.cache import ImageCache
    from qcxr.models.weights import random_weights_warning, resolve_resnet50_weights

    if args.batch_size < 1 or args.views < 0 or args.chunk_rows < 1:
        raise ValueError("--batch-size and --chunk-rows must be >= 1, --views >= 0")
    dataset = open_dataset(args)
    cache = ImageCache(args.cache)
    dataset, skipped = without_skipped(dataset, cache)
    meta = {**provenance(args, dataset, cache), "skipped_ids": json.dumps(skipped)}
    variables, identity = resolve_resnet50_weights(args.weights)
    banner = random_weights_warning(identity)
    if banner:
        print(banner, file=sys.stderr)
    if args.out.exists():
        if args.overwrite:
            args.out.unlink()
        else:
            status, why = _existing(args, dataset.ids, identity, meta)
            if why:
                raise ValueError(
                    f"{args.out}: exists with other images or settings ({why}); use --overwrite"
                )
            return _report(args, features.load_feature_store(args.out), banner, status)
    if args.overwrite and features.partial_dir(args.out).exists():
        import shutil

        shutil.rmtree(features.partial_dir(args.out))

    store = _extract(args, dataset, cache, variables, identity, meta)
    return _report(args, store, banner, "written")


def _extract(args: argparse.Namespace, dataset, cache, variables, identity: str, meta: dict):
    """Features of every image of `dataset` into the store at --out, resuming a partial one."""
    from qcxr import features
    from qcxr.data.loader import Loader

    done = features.done_ids(args.out)
    # Resume from the first unfinished batch when the finished rows are a prefix in this order.
    start = len(done) // args.batch_size if done == dataset.ids[: len(done)] else 0
    loader = Loader(
        dataset,
        cache,
        batch_size=args.batch_size,
        seed=args.seed,
        shuffle=False,
        drop_last=False,
        threads=args.threads,
    )
    store = features.extract_features(
        ((batch.ids, batch.images) for batch in loader.epoch(0, start=start)),
        variables,
        args.out,
        weights=identity,
        views=args.views,
        seed=args.seed,
        dtype=args.dtype,
        batch_size=args.batch_size,
        chunk_rows=args.chunk_rows,
        total=len(dataset.ids),
        progress=not args.no_progress,
        meta=meta,
    )
    missing = set(dataset.ids) - set(store.ids)
    if missing:
        raise ValueError(
            f"{args.out}: {len(missing)} images have no features: {sorted(missing)[:5]}"
        )
    return store


def _existing(
    args: argparse.Namespace, ids: list[str], identity: str, meta: dict[str, str]
) -> tuple[str, str]:
    """(status, "") when the store at --out is this split's, as it would be made now; else
    ("", why not). A store whose images and settings are unchanged but whose label file has
    changed gets the new labels_checksum (its rows do not depend on the labels)."""
    from qcxr.config import describe_changes
    from qcxr.features import (
        CHECKSUM,
        FeatureStore,
        load_feature_store,
        save_feature_store,
        store_settings,
    )

    store = load_feature_store(args.out)  # checks the content checksum
    if not store.verified:
        return "", f"written before stores recorded {CHECKSUM}, so unverified"
    if store.ids != ids:
        return "", f"{len(store.ids)} rows, not the {len(ids)} images of {meta['label_file']}"
    wanted = {
        **store_settings(identity, args.views, args.seed, args.dtype),
        **{k: meta[k] for k in ("split", "crop", "resize_shortest", "resample")},
    }
    changed = {k: (store.meta.get(k), v) for k, v in wanted.items() if store.meta.get(k) != v}
    if changed:
        return "", describe_changes(changed)
    labels = {k: meta[k] for k in ("labels_checksum", "label_file")}
    if all(store.meta.get(k) == v for k, v in labels.items()):
        return "up to date", ""
    restamped = FeatureStore(store.ids, store.features, {**store.meta, **labels})
    save_feature_store(args.out, restamped)
    return "up to date (label file changed, same images: labels_checksum updated)", ""


def _report(args, store, banner: str | None, status: str) -> int:
    summary = {
        "out": str(args.out),
        "status": status,
        "split": args.split,
        "images": len(store.ids),
        "shape": list(store.features.shape),
        "weights": store.weights,
        "random_weights": banner is not None,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            print(f"{key:15s} {value}")
    if banner:
        print(banner, file=sys.stderr)
    return 0
