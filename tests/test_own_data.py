"""A researcher's own data end to end: a `table` and a `chexpert` study written by `qcxr synth`
are cached, featurised, trained (frozen and finetune) and reported through the CLI alone, with
the patient splits written into each run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from qcxr.cli import main
from qcxr.config import load
from qcxr.data.tables import table_splits
from qcxr.evaluate.predictions import read_predictions

SMALL = ["--n-train", "30", "--n-val", "10", "--n-test", "10", "--size", "40", "--no-progress"]
IMAGE_SETTINGS = ["--set", "data.crop=32", "--set", "data.resize_shortest=37"]


def study_and_cache(root: Path, fmt: str) -> tuple[Path, Path]:
    assert main(["synth", str(root), "--format", fmt, *SMALL]) == 0
    config, cache = root / "study.yaml", root / "cache"
    build = ["cache", "build", "--config", str(config), "--cache", str(cache), "--resize", "37",
             "--crop", "32", "--no-progress"]  # fmt: skip
    assert main(build) == 0
    return config, cache


def run_dir(runs: Path) -> Path:
    (found,) = [p.parent for p in runs.rglob("status.json")]
    return found


def check_run(run: Path, config: Path) -> None:
    """The run finished, predicted its test split's images and wrote its patient splits."""
    status = yaml.safe_load((run / "status.json").read_text())
    assert status["status"] == "finished"
    splits = pd.read_csv(run / "splits.csv")
    expected = table_splits(load(config).data)
    pd.testing.assert_frame_equal(splits, expected.reset_index(drop=True), check_dtype=False)
    assert splits.groupby("patient")["split"].nunique().max() == 1
    ids, _, _, _ = read_predictions(run / "predictions-test.parquet")
    assert sorted(ids) == sorted(splits.loc[splits["split"] == "test", "id"])


# one format per mode in `make test` (the suite's 10 minutes); both in `make test-all`
@pytest.mark.parametrize("fmt", ["table", pytest.param("chexpert", marks=pytest.mark.slow)])
def test_a_synthetic_table_study_trains_frozen_and_reports(tmp_path, fmt, tiny_features):
    config, cache = study_and_cache(tmp_path / "study", fmt)
    features = tmp_path / "features"
    for split in ("train", "val", "test"):
        argv = ["features", "--config", str(config), "--split", split, "--cache", str(cache),
                "--weights", "tiny", "--out", str(features / f"{split}.safetensors"),
                "--no-progress"]  # fmt: skip
        assert main(argv) == 0
    runs = tmp_path / "runs"
    train = ["train", "--config", str(config), "--mode", "frozen", "--head", "dqc",
             "--features", str(features), "--out", str(runs), "--epochs", "2",
             "--no-progress", "--tracking", "none", *IMAGE_SETTINGS]  # fmt: skip
    assert main(train) == 0
    check_run(run_dir(runs), config)
    # the run records the weights its features came from, not the config's default
    assert (
        yaml.safe_load((run_dir(runs) / "config.yaml").read_text())["model"]["weights"] == "tiny@1"
    )
    assert main(["report", str(runs), "--bootstrap", "0"]) == 0
    assert (runs / "summary" / "report.html").is_file()


@pytest.mark.parametrize("fmt", [pytest.param("table", marks=pytest.mark.slow), "chexpert"])
def test_a_synthetic_table_study_finetunes(tmp_path, fmt):
    config, cache = study_and_cache(tmp_path / "study", fmt)
    runs = tmp_path / "runs"
    train = ["train", "--config", str(config), "--mode", "finetune", "--backbone", "tiny",
             "--cache", str(cache), "--out", str(runs), "--epochs", "1", "--batch-size", "8",
             "--no-progress", "--tracking", "none", *IMAGE_SETTINGS]  # fmt: skip
    assert main(train) == 0
    check_run(run_dir(runs), config)
    assert main(["report", str(runs), "--bootstrap", "0"]) == 0


def test_csv_and_images_flags_read_a_plain_table(tmp_path, capsys):
    """`--csv` and `--images` alone (no config, no --format) mean a generic table; a wrong
    path column is one error naming the file and the column."""
    assert main(["synth", str(tmp_path / "s"), "--format", "table", *SMALL]) == 0
    table = tmp_path / "s" / "labels.csv"
    frame = pd.read_csv(table).rename(columns={"path": "file"})
    frame.to_csv(tmp_path / "renamed.csv", index=False)
    capsys.readouterr()
    argv = ["train", "--csv", str(tmp_path / "renamed.csv"), "--images",
            str(tmp_path / "s" / "images"), "--mode", "finetune", "--backbone", "tiny",
            "--out", str(tmp_path / "runs"), "--epochs", "1", "--no-progress"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "renamed.csv" in err and "'path'" in err
