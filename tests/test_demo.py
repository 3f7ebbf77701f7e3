"""`qcxr demo` end to end at a tiny scale: every stage runs and the report is filled."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import pytest
import yaml

from qcxr import configs, demo
from qcxr.cli import main
from qcxr.labels import resolve_task


def test_tiny_demo_writes_a_full_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--n-train", "48", "--n-val", "16", "--n-test", "24",
            "--n-external", "16", "--size", "64", "--crop", "32", "--seeds", "2", "--epochs", "2",
            "--weights", "random:0"]  # fmt: skip
    assert main(argv) == 0

    summary = out / "runs" / "summary"
    runs = sorted((out / "runs" / "cxr8").glob("*/seed-*"))
    assert [r.relative_to(out / "runs" / "cxr8").as_posix() for r in runs] == [
        "cdl/seed-0", "cdl/seed-1", "dqc/seed-0", "dqc/seed-1",
    ]  # fmt: skip
    for run in runs:
        for name in ("config.yaml", "history.csv", "metrics.json", "predictions-nih.parquet",
                     "predictions-mimic.parquet"):  # fmt: skip
            assert (run / name).stat().st_size > 0, run / name
    html = (summary / "report.html").read_text()
    figures = sorted((summary / "figures").glob("*.png"))
    assert figures, "no figures"
    for figure in figures:
        assert figure.stat().st_size > 1000
        assert figure.with_suffix(".svg").is_file()
    for expected in ("loss-cxr8", "mean-auroc", "auroc-cxr8-nih", "auroc-cxr8-mimic", "volcano"):
        assert any(f.stem.startswith(expected) for f in figures), expected
    assert html.count("<img") >= len(figures)
    assert "RANDOM" in html  # the loud banner for random backbone weights
    for table in ("auroc.csv", "stats.csv"):
        frame = pd.read_csv(summary / table)
        assert len(frame) > 0, table
        assert frame.notna().any(axis=None), table


def demo_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    demo.register(parser.add_subparsers())
    return parser.parse_args(["demo", *argv])


def test_the_demo_grid_is_the_bundled_demo_config_with_the_demo_sizes(tmp_path: Path) -> None:
    args = demo_args("--out", str(tmp_path), "--seeds", "2", "--mode", "finetune")
    config = configs.path(args.config)
    assert config == configs.path("demo")  # the packaged file, wherever qcxr is installed
    grid_file = demo._grid_file(args, config, resolve_task("cxr8"), tmp_path / "s", tmp_path / "f")
    grid, bundled = yaml.safe_load(grid_file.read_text()), yaml.safe_load(config.read_text())
    assert grid["experiment"] == bundled["experiment"]
    assert grid["train"] == {**bundled["train"], "mode": "finetune"}
    assert grid["grid"]["train.seed"] == [0, 1] and grid["data"]["study"] == str(tmp_path / "s")


def test_an_unknown_demo_config_fails_before_any_stage(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path / "out"), "--config", "nope"]) == 1
    assert "bundled: cxr-lt, demo, labels45, paper" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
