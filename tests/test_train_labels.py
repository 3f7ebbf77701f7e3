"""Training on label sets beyond the paper: explicit lists, cxr26 and 45 labels, data.source,
backend "auto" and what a run records of them, and the report drawing any n."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from safetensors.numpy import save_file

from qcxr.cli import main
from qcxr.data.datasets import MIMICCXRLT, NIHCXRLT, study_paths
from qcxr.data.synthetic import generate_study
from qcxr.evaluate import plots, report
from qcxr.labels import resolve_task
from qcxr.quantum.cost import resolve_backend
from qcxr.rundir import epoch_rows

FIVE = ["Support Devices", "Lung Lesion", "Pleural Effusion", "Finding 1", "No Finding"]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A tiny cxr26 study with one extra label: MIMIC train/val/test files with 27 labels."""
    root = tmp_path_factory.mktemp("labels") / "study"
    sizes = {"n_train": 96, "n_val": 48, "n_test": 8, "n_mimic": 24, "image_size": 32}
    generate_study(root, seed=5, progress=False, task="cxr26", extra_labels=1, **sizes)
    return root


def learnable_stores(study: Path, out: Path, labels: list[str]) -> Path:
    """Feature stores whose features carry the labels (a fixed random map plus noise)."""
    paths, task = study_paths(study), resolve_task("all", labels)
    rng = np.random.default_rng(0)
    rule = rng.normal(size=(len(labels), 16)).astype(np.float32)
    readers = {
        "mimic-train": lambda: MIMICCXRLT(paths.mimic_split_csv["train"], paths.mimic_root, task,
                                          paths.mimic_metadata, check_files=False),
        "mimic-val": lambda: MIMICCXRLT(paths.mimic_split_csv["val"], paths.mimic_root, task,
                                        paths.mimic_metadata, check_files=False),
        "mimic": lambda: MIMICCXRLT(paths.mimic_csv, paths.mimic_root, task, paths.mimic_metadata,
                                    check_files=False),
        "test": lambda: NIHCXRLT(paths.nih_csv["test"], paths.nih_images, task, check_files=False,
                                 allow_missing_labels=True),
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    for name, read in readers.items():
        data = read()
        x = np.nan_to_num(data.labels) @ rule + 0.3 * rng.normal(size=(len(data), 16))
        meta = {"ids": json.dumps(data.ids), "weights": "random(seed=0)"}
        save_file({"features": x.astype(np.float32)}, str(out / f"{name}.safetensors"), meta)
    return out


def train_argv(study: Path, features: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--head", "dqc", "--mode", "frozen", "--study", str(study),
            "--features", str(features), "--out", str(out), "--lr", "0.01", "--no-progress",
            *extra]  # fmt: skip


def val_losses(run: Path) -> list[float]:
    return [float(v) for v in epoch_rows(run / "history.csv")["val_loss"]]


def test_a_named_list_trains_on_mimic_files_and_records_auto(study, tmp_path):
    labels = study_paths(study).labels_file.read_text().splitlines()
    features = learnable_stores(study, tmp_path / "features", labels)
    argv = train_argv(study, features, tmp_path / "runs", "--task", "my5", "--epochs", "3")
    assert main([*argv, "--labels", ",".join(FIVE)]) == 0
    run = tmp_path / "runs" / "my5" / "dqc" / "seed-0"
    losses = val_losses(run)
    assert len(losses) == 3 and losses[-1] < losses[0]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["task"] == "my5" and saved["labels"] == FIVE
    assert saved["model"]["backend"] == "auto" and saved["data"]["source"] == "auto"
    resolved = json.loads((run / "versions.json").read_text())["resolved"]
    assert resolved == {"model.backend": resolve_backend("auto", 5, 3, "ring"),
                        "data.source": "mimic"}  # fmt: skip
    canonical = ["Support Devices", "Lesion", "Effusion", "Finding 1", "No Finding"]
    internal = pd.read_parquet(run / "predictions-mimic.parquet")
    assert [c for c in internal.columns if c.startswith("p:")] == [f"p:{n}" for n in canonical]
    assert internal.filter(like="y:").notna().all(axis=None)
    external = pd.read_parquet(run / "predictions-nih.parquet")  # NIH lacks 3 of the 5
    assert external[["y:Support Devices", "y:Lesion", "y:Finding 1"]].isna().all(axis=None)
    runs = report.runs_table(report.scan(tmp_path / "runs"))  # the report's runs.csv
    assert runs.loc[0, "source"] == "mimic" and runs.loc[0, "backend"] == resolved["model.backend"]


def test_per_label_figure_lies_horizontally_for_many_labels(tmp_path):
    names = [f"Finding {k:02d}" for k in range(45)]
    rng = np.random.default_rng(0)
    compared = pd.DataFrame(
        {"task": "my45", "testset": "mimic", "label": names, "mark": "ns",
         "cdl_mean": rng.uniform(0.5, 0.9, 45), "dqc_mean": rng.uniform(0.5, 0.9, 45),
         "cdl_std": 0.02, "dqc_std": np.nan}
    )  # fmt: skip
    wide = plots.label_auroc_bars(compared[:19], "my45", "mimic", tmp_path / "few")[0]
    tall = plots.label_auroc_bars(compared, "my45", "mimic", tmp_path / "many")[0]
    with Image.open(wide) as few, Image.open(tall) as many:
        assert few.width > few.height and many.height > 1.5 * many.width


def test_training_source_errors_name_the_files_and_labels(study, tmp_path, capsys):
    nih_only = tmp_path / "nih-only"
    generate_study(nih_only, n_train=8, n_val=4, n_test=4, n_mimic=4, image_size=32,
                   progress=False)  # fmt: skip
    argv = train_argv(nih_only, tmp_path / "none", tmp_path / "runs", "--task", "cxr26")
    assert main(argv) == 1
    err = capsys.readouterr().err
    paths = study_paths(nih_only)
    assert (
        f"{paths.nih_csv['train']}: lacks task cxr26 label(s) ['Enlarged Cardiomediastinum'" in err
    )
    assert f"{paths.mimic_split_csv['train']}: not found" in err
    argv = train_argv(study, tmp_path / "none", tmp_path / "runs", "--task", "cxr26")
    assert main([*argv, "--source", "nih"]) == 1
    assert f"{study_paths(study).nih_csv['train']}: lacks task cxr26" in capsys.readouterr().err
    argv = train_argv(study, tmp_path / "none", tmp_path / "runs", "--labels", "Mass,Nope,Nada")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "lacks task labels3 label(s) ['Nope', 'Nada']" in err and "mimic_train.csv" in err
    assert main([*argv[:-2], "--labels", "Mass,Nope,Mass"]) == 1
    assert "duplicate label(s): Mass" in capsys.readouterr().err
    assert main([*argv[:-2], "--task", "cxr99"]) == 1
    assert "built-in label sets: cxr8, cxr14, cxr19, nih20, cxr26" in capsys.readouterr().err


# ------------------------------------------------------------------ end to end, 26 and 45 labels


def e2e(tmp_path: Path, task_argv: list[str], synth_argv: list[str]) -> list[float]:
    """synth -> cache -> ResNet-50 features (random weights) -> frozen DQC, backend auto ->
    report; the run's validation losses per epoch."""
    study, cache, features = tmp_path / "study", tmp_path / "cache", tmp_path / "features"
    sizes = ["--n-train", "160", "--n-val", "48", "--n-test", "16", "--n-external", "32"]
    assert main(["synth", str(study), *sizes, "--size", "64", "--no-progress", *synth_argv]) == 0
    build = ["cache", "build", "--study", str(study), "--cache", str(cache), "--resize", "37"]
    assert main([*build, "--crop", "32", "--no-progress"]) == 0
    for split in ("mimic-train", "mimic-val", "test", "mimic"):
        assert main(["features", "--study", str(study), "--split", split, "--cache", str(cache),
                     "--weights", "random:0", "--out", str(features / f"{split}.safetensors"),
                     "--no-progress"]) == 0  # fmt: skip
    runs = tmp_path / "runs"
    argv = train_argv(study, features, runs, *task_argv, "--epochs", "3", "--backend", "auto")
    sizes = ["--set", "data.crop=32", "--set", "data.resize_shortest=37"]  # the cache's
    assert main([*argv, *sizes, "--set", "train.standardize_features=true", "--lr", "0.003"]) == 0
    (run,) = runs.glob("*/dqc/seed-0")
    resolved = json.loads((run / "versions.json").read_text())["resolved"]
    n = len(pd.read_parquet(run / "predictions-mimic.parquet").filter(like="p:").columns)
    assert resolved["model.backend"] == resolve_backend("auto", n, 3, "ring")
    assert main(["report", str(runs), "--bootstrap", "0"]) == 0
    assert (runs / "summary" / "figures" / f"auroc-{run.parts[-3]}-mimic.png").is_file()
    print(f"{run.parts[-3]}: n = {n}, backend {resolved}, val losses {val_losses(run)}")
    return val_losses(run)


@pytest.mark.slow
def test_cxr26_end_to_end(tmp_path):
    losses = e2e(tmp_path, ["--task", "cxr26"], ["--task", "cxr26"])
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_45_labels_end_to_end(tmp_path):
    labels = tmp_path / "study" / "labels.txt"  # written by synth: cxr26 + Finding 01..19
    losses = e2e(tmp_path, ["--task", "my45", "--labels-file", str(labels)],
                 ["--task", "cxr26", "--extra-labels", "19"])  # fmt: skip
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_cxr26_finetune_on_mimic_files(study, tmp_path):
    argv = ["train", "--task", "cxr26", "--head", "dqc", "--mode", "finetune", "--backbone",
            "tiny", "--study", str(study), "--out", str(tmp_path / "runs"), "--epochs", "1",
            "--set", "data.crop=32", "--set", "data.resize_shortest=37", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    run = tmp_path / "runs" / "cxr26" / "dqc" / "seed-0"
    resolved = json.loads((run / "versions.json").read_text())["resolved"]
    assert resolved == {"model.backend": resolve_backend("auto", 26, 3, "ring"),
                        "data.source": "mimic"}  # fmt: skip
    assert len(pd.read_parquet(run / "predictions-mimic.parquet").filter(like="p:").columns) == 26
