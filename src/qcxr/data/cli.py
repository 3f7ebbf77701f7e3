"""`qcxr synth`, `qcxr labels stats`, `qcxr cache build`, `qcxr cache verify`.

Also runnable alone (`python -m qcxr.data.cli ...`), which the subprocess tests use.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from qcxr.cli import add_task_arguments, task_from_args
from qcxr.config import FORMATS, TABLE_FORMATS, DataConfig
from qcxr.data import ON_BAD_IMAGE

_DEFAULTS = DataConfig()
SYNTH_FORMATS = ("nih-cxr-lt", "table", "chexpert")


def register(subparsers: argparse._SubParsersAction) -> None:
    _add_synth(subparsers)
    _add_labels(subparsers)
    _add_cache(subparsers)


def _add_synth(subparsers: argparse._SubParsersAction) -> None:
    synth = subparsers.add_parser(
        "synth",
        help="write a synthetic study: the NIH-CXR-LT and MIMIC-CXR-LT layouts, a label table "
        "or CheXpert's",
        description="Write a deterministic synthetic study (images with drawn findings and "
        "long-tailed labels) in a real file layout, for trying the pipeline without data.",
    )
    synth.add_argument("out", type=Path, help="study root to create")
    synth.add_argument(
        "--format", choices=SYNTH_FORMATS, default="nih-cxr-lt",
        help="nih-cxr-lt: nih/ and mimic/ as NIH-CXR-LT and MIMIC-CXR-LT ship (default); "
        "table: labels.csv (path, patient_id, view, one column per label) and images/; "
        "chexpert: CheXpert-v1.0-small/train.csv and valid.csv, values 1, 0, -1 and blank",
    )  # fmt: skip
    synth.add_argument("--n-train", type=int, default=800, help="training images (%(default)s)")
    synth.add_argument("--n-val", type=int, default=200, help="validation images (%(default)s)")
    synth.add_argument("--n-test", type=int, default=400, help="test images (%(default)s)")
    synth.add_argument("--n-external", type=int, default=300,
                       help="external (MIMIC) studies, nih-cxr-lt only (%(default)s)")  # fmt: skip
    synth.add_argument("--size", type=int, default=256, help="image height in pixels (%(default)s)")
    synth.add_argument("--seed", type=int, default=0, help="the same seed writes the same study")
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_task_arguments(synth, "nih20")
    synth.add_argument("--extra-labels", type=int, default=0, metavar="N",
                       help="N synthetic labels (Finding 01, ...) after the task's, long-tailed; "
                       "with labels NIH lacks, the study gets MIMIC train/val files")  # fmt: skip
    synth.set_defaults(func=run_synth)


def _add_labels(subparsers: argparse._SubParsersAction) -> None:
    labels = subparsers.add_parser("labels", help="label files")
    labels_sub = labels.add_subparsers(dest="labels_command", metavar="COMMAND", required=True)
    stats = labels_sub.add_parser("stats", help="counts per label and split, as in Table I")
    stats.add_argument("csv", nargs="*", type=Path,
                       help="label files: NIH-CXR-LT CSVs (one column each), or one label table "
                       "with --format table|chexpert (default: the --config's data.csv)")  # fmt: skip
    stats.add_argument("--format", choices=FORMATS, default=None,
                       help="table or chexpert: count positives per split, and the -1 "
                       "(uncertain) and blank entries the label policies act on")  # fmt: skip
    stats.add_argument("--config", type=Path,
                       help="a run config whose data: section describes the table")  # fmt: skip
    add_task_arguments(stats, "cxr19")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.set_defaults(func=run_labels_stats)


def _add_cache(subparsers: argparse._SubParsersAction) -> None:
    cache = subparsers.add_parser("cache", help="the preprocessed image cache")
    cache_sub = cache.add_subparsers(dest="cache_command", metavar="COMMAND", required=True)
    build = cache_sub.add_parser("build", help="preprocess images into the cache (resumable)")
    build.add_argument("--cache", type=Path, help="cache directory (default: STUDY/cache)")
    build.add_argument("--study", type=Path, help="a study root (layout of `qcxr synth`)")
    build.add_argument("--csv", type=Path, action="append", default=[],
                       help="NIH label CSV (repeatable), or a label table with --format "
                       "table|chexpert")  # fmt: skip
    build.add_argument("--images", type=Path, help="NIH image directory, or a table's image root")
    build.add_argument("--format", choices=FORMATS, default=None,
                       help="table or chexpert: cache every image of the --csv table")  # fmt: skip
    build.add_argument("--config", type=Path,
                       help="a run config whose data: section names the data (tables)")  # fmt: skip
    build.add_argument("--mimic-csv", type=Path, help="MIMIC-CXR-LT label CSV")
    build.add_argument("--mimic-root", type=Path, help="MIMIC-CXR-JPG root for --mimic-csv")
    build.add_argument("--mimic-metadata", type=Path, help="metadata CSV: frontal views only")
    add_task_arguments(build, "cxr19")
    build.add_argument("--threads", type=int, default=_DEFAULTS.loader_threads,
                       help="reader threads (%(default)s)")  # fmt: skip
    build.add_argument("--on-bad-image", choices=ON_BAD_IMAGE, default="error",
                       help="error: stop at the first missing or undecodable image (default); "
                       "skip: list it in the report and go on (features and training then "
                       "leave it out, with a note)")  # fmt: skip
    build.add_argument("--report", type=Path, help="skipped-files report (default: CACHE/...)")
    build.add_argument("--resize", type=int, default=None,
                       help=f"shortest side after resizing (new cache: {_DEFAULTS.resize_shortest})")  # fmt: skip
    build.add_argument("--crop", type=int, default=None,
                       help=f"center crop (new cache: {_DEFAULTS.crop})")  # fmt: skip
    build.add_argument("--no-progress", action="store_true", help="no progress bar")
    build.add_argument("--json", action="store_true", help="print the summary as JSON")
    build.set_defaults(func=run_cache_build)
    verify = cache_sub.add_parser(
        "verify", help="check the database and every entry's checksums; report (and repair)"
    )
    verify.add_argument("--cache", type=Path, required=True, help="the cache directory")
    verify.add_argument("--repair", action="store_true",
                        help="rebuild corrupt, unverified (no checksum) or stale entries; move a "
                        "damaged database aside (cache.db.damaged-TIME) and start a new one")  # fmt: skip
    verify.add_argument("--resize", type=int, default=None, help="default: the cache's own")
    verify.add_argument("--crop", type=int, default=None, help="default: the cache's own")
    verify.add_argument("--no-progress", action="store_true", help="no progress bar")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(func=run_cache_verify)


def run_synth(args: argparse.Namespace) -> int:
    if args.extra_labels < 0:
        raise ValueError("--extra-labels must be >= 0")
    if args.format != "nih-cxr-lt":
        return _synth_table(args)
    from qcxr.data.synthetic import generate_study

    paths = generate_study(
        args.out,
        task=task_from_args(args),
        extra_labels=args.extra_labels,
        n_train=args.n_train,
        n_val=args.n_val,
        n_test=args.n_test,
        n_mimic=args.n_external,
        image_size=args.size,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print(f"wrote synthetic study to {paths.root}")
    for split, csv in paths.nih_csv.items():
        print(f"  nih {split}: {csv}")
    for split, csv in paths.mimic_split_csv.items():
        if csv.is_file():
            print(f"  mimic {split}: {csv}")
    print(f"  mimic metadata: {paths.mimic_metadata}")
    count = len(paths.labels_file.read_text().splitlines())
    print(f"  labels ({count}): {paths.labels_file}")
    return 0


def _synth_table(args: argparse.Namespace) -> int:
    """A label table (or CheXpert's files), its images and ROOT/study.yaml, the config that
    reads it; prints how to train on it."""
    import yaml

    from qcxr.config import from_dict, merge, nested, to_dict
    from qcxr.data.synthetic_tables import write_table_study

    if args.extra_labels:
        raise ValueError("--extra-labels goes with --format nih-cxr-lt")
    settings = write_table_study(
        args.out, fmt=args.format, task=task_from_args(args), n_train=args.n_train,
        n_val=args.n_val, n_test=args.n_test, image_size=args.size, seed=args.seed,
        progress=not args.no_progress,
    )  # fmt: skip
    updates: dict = {"task": settings.pop("task"), "labels": settings.pop("labels")}
    for key, value in settings.items():
        updates = merge(updates, nested(key, value))
    config = to_dict(from_dict(updates))  # checked: the file is a valid run config
    study_config = {k: config[k] for k in ("task", "labels")} | {"data": updates["data"]}
    path = args.out / "study.yaml"
    path.write_text(yaml.safe_dump(study_config, sort_keys=False))
    print(f"wrote synthetic {args.format} study to {args.out}")
    print(f"  its config (data: section, task): {path}")
    print(
        "train on it, e.g.:\n"
        f"  qcxr train --config {path} --mode finetune --backbone tiny --weights random:0 "
        f"--epochs 3 --out {args.out / 'runs'}"
    )
    return 0


def table_settings(args: argparse.Namespace, csv: Path | None) -> DataConfig:
    """The DataConfig of --config with --format, a table --csv and --images over it."""
    from qcxr.data.study import data_settings

    images = getattr(args, "images", None)  # `labels stats` reads no images
    return data_settings(args.config, format=args.format, csv=csv, images=images)


def is_table(args: argparse.Namespace) -> bool:
    if args.format:
        return args.format in TABLE_FORMATS
    return bool(args.config) and table_settings(args, None).format in TABLE_FORMATS


def run_labels_stats(args: argparse.Namespace) -> int:
    from qcxr.data.datasets import file_checksum, label_stats

    task = config_task(args)
    if is_table(args):
        from qcxr.data.tables import table_label_files, table_label_stats

        if len(args.csv) > 1:
            raise ValueError("give one label table (its splits come from the table)")
        data = table_settings(args, args.csv[0] if args.csv else None)
        table, files = table_label_stats(data, task), table_label_files(data)
    elif not args.csv:
        raise ValueError("give the label files to count (or --config with a table's data:)")
    else:
        table, files = label_stats(args.csv, task), list(args.csv)
    if args.json:
        out = {
            "task": task.name,
            "files": {str(p): file_checksum(p) for p in files},
            "counts": {label: row.to_dict() for label, row in table.iterrows()},
        }
        print(json.dumps(out, indent=2, default=int))
    else:
        print(table.to_string())
    return 0


def config_task(args: argparse.Namespace):
    """The task of --task/--labels; without them, the --config's, else the default."""
    from qcxr.cli import labels_from_args

    if args.config and not (args.task or labels_from_args(args)):
        from qcxr.config import load, task_of

        return task_of(load(args.config))
    return task_from_args(args)


def table_sources(args: argparse.Namespace) -> list:
    """Every set of a label table (images unchecked: the build reports bad ones)."""
    from qcxr.data.study import open_study

    if len(args.csv) > 1:
        raise ValueError("give one label table with --csv (its splits come from the table)")
    data = table_settings(args, args.csv[0] if args.csv else None)
    study = open_study(data, config_task(args))
    return [study.dataset(name, images_only=True) for name in study.stores()]


def build_sources(args: argparse.Namespace) -> list:
    """The datasets a `cache build` covers (images unchecked: the build reports bad ones)."""
    from qcxr.data.datasets import MIMICCXRLT, NIHCXRLT, study_paths

    if is_table(args):
        return table_sources(args)
    sources = []
    task = task_from_args(args)
    csvs, images = list(args.csv), args.images
    mimic_csvs, mimic_root = [args.mimic_csv] if args.mimic_csv else [], args.mimic_root
    metadata = args.mimic_metadata
    if args.study is not None:
        study = study_paths(args.study)
        csvs += [p for p in study.nih_csv.values() if p.is_file()]
        images = images or study.nih_images
        mimic_csvs += [p for p in study.mimic_split_csv.values() if p.is_file()]
        if mimic_csvs:
            mimic_root = mimic_root or study.mimic_root
            if metadata is None and study.mimic_metadata.is_file():
                metadata = study.mimic_metadata
    if csvs and images is None:
        raise ValueError("--csv needs --images (the NIH image directory)")
    # Images only: a task label a file lacks is no obstacle here (NaN labels).
    for csv in csvs:
        sources.append(NIHCXRLT(csv, images, task, check_files=False, allow_missing_labels=True))
    if mimic_csvs and mimic_root is None:
        raise ValueError("--mimic-csv needs --mimic-root (the MIMIC-CXR-JPG root)")
    for csv in mimic_csvs:
        sources.append(MIMICCXRLT(csv, mimic_root, task, metadata, True, check_files=False))
    if not sources:
        raise ValueError("nothing to build: give --study, --csv with --images, or --mimic-csv")
    return sources


def run_cache_build(args: argparse.Namespace) -> int:
    from qcxr.data.cache import ImageCache

    cache_dir = args.cache or (args.study / "cache" if args.study else None)
    if cache_dir is None:
        raise ValueError("give --cache DIR (or --study ROOT for STUDY/cache)")
    sources = build_sources(args)
    paths = [p for source in sources for p in source.paths]
    with ImageCache(cache_dir, resize_shortest=args.resize, crop=args.crop) as cache:
        for source in sources:
            cache.record_label_file(source.label_file, source.checksum)
        result = cache.build(paths, args.threads, not args.no_progress, args.on_bad_image)
    report = None
    if result.skipped:
        report = args.report or Path(cache_dir) / "skipped-images.tsv"
        report.parent.mkdir(parents=True, exist_ok=True)
        lines = ["path\treason", *(f"{p}\t{r}" for p, r in result.skipped)]
        report.write_text("\n".join(lines) + "\n")
    summary = {
        "cache": str(cache_dir),
        "images": len(paths),
        "added": result.added,
        "already_cached": result.fresh,
        "skipped": len(result.skipped),
        "report": str(report) if report else None,
        "label_files": {str(s.label_file): s.checksum for s in sources},
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"cache {cache_dir}: {len(paths)} images, {result.added} added, "
            f"{result.fresh} already cached, {len(result.skipped)} skipped"
        )
        if report:
            print(f"skipped {len(result.skipped)} bad image(s); listed in {report}")
    return 0


def run_cache_verify(args: argparse.Namespace) -> int:
    if not Path(args.cache).is_dir():
        raise FileNotFoundError(f"{args.cache}: no cache directory")
    result, label_files, recovery = _verify_or_recover(args)
    if args.json:
        print(json.dumps(_verify_summary(args, result, label_files, recovery), indent=2))
    else:
        _print_verify(args, result, recovery)
    return 0 if result.whole else 1


def _verify_or_recover(args: argparse.Namespace) -> tuple:
    """(VerifyResult, label files, Recovery or None). A damaged database file is an error
    without --repair; with it the file is moved aside and salvaged, then the new one checked."""
    from qcxr.data.cache import ImageCache, VerifyResult
    from qcxr.data.cache_damage import CacheDamagedError
    from qcxr.data.cache_salvage import recover_database

    sizes = {"resize_shortest": args.resize, "crop": args.crop}

    def verify() -> tuple:
        with ImageCache(args.cache, **sizes) as cache:
            result = cache.verify(repair=args.repair, progress=not args.no_progress)
            return result, cache.label_files()

    try:
        return (*verify(), None)
    except CacheDamagedError:
        if not args.repair:
            raise  # one line naming the file and the repair command
        recovery = recover_database(args.cache, **sizes, progress=not args.no_progress)
        if recovery.params is None:  # nothing could be read: the next build starts afresh
            return VerifyResult(), {}, recovery
        return (*verify(), recovery)  # the new database, its entries checked again


def _verify_summary(args: argparse.Namespace, result, label_files: dict, recovery) -> dict:
    """The `--json` output of `qcxr cache verify`."""
    return {
        "cache": str(args.cache),
        "checked": result.checked,
        "corrupt": result.corrupt,
        "unverified": result.unverified,
        "stale": result.stale,
        "repaired": result.repaired,
        "removed": result.removed,
        "whole": result.whole,
        "label_files": label_files,
        "damaged_database": None
        if recovery is None
        else {
            "moved_to": [str(p) for p in recovery.moved],
            "entries_kept": recovery.kept,
            "entries_dropped": recovery.dropped,
            "label_files_kept": recovery.label_files,
            "preprocessing_recovered": recovery.params is not None,
        },
    }


def _print_verify(args: argparse.Namespace, result, recovery) -> None:
    """The text output of `qcxr cache verify`: the recovery (if any), counts, corrupt keys."""
    if recovery is not None:
        aside = recovery.moved[0] if recovery.moved else "(nothing to move)"
        if recovery.params is None:
            kept = "nothing in it could be read, so no entry was kept"
        else:
            kept = (
                f"{recovery.kept} entries that pass their checksums copied into a new one, "
                f"{recovery.dropped} unreadable or failing left behind"
            )
        print(
            f"cache {args.cache}: the database was damaged; moved aside to {aside}; {kept}; "
            f"run `qcxr cache build --cache {args.cache} ...` to refill the cache"
        )
    print(
        f"cache {args.cache}: {result.checked} entries checked, {len(result.corrupt)} corrupt, "
        f"{len(result.unverified)} without checksum (old format), "
        f"{len(result.stale)} stale, {len(result.repaired)} repaired, "
        f"{len(result.removed)} removed"
    )
    for key in result.corrupt:
        print(f"  corrupt: {key}")
    if result.unverified and not args.repair:
        print(
            f"  {len(result.unverified)} entries have no checksum (written by an older "
            "qcxr): `--repair` or `qcxr cache build` rewrites them"
        )


def main(argv: list[str] | None = None) -> int:
    """The data subcommands alone (`python -m qcxr.data.cli`), without the other subsystems."""
    from qcxr.cli import dispatch

    parser = argparse.ArgumentParser(prog="qcxr")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    return dispatch(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
