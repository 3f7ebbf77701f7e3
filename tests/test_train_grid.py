"""Grid files, `qcxr run` / `qcxr train` on feature stores, skipping finished runs."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from safetensors.numpy import save_file

from qcxr import config as config_lib
from qcxr.cli import main
from qcxr.labels import TASKS
from qcxr.rundir import epoch_rows
from qcxr.train.grid import cells, read_grid
from test_train_support import frozen_data

# Settings whose default is a run-time choice ("auto") and which paper.yaml pins instead.
PAPER_PINS = {"backend": "statevector", "source": "nih"}


def test_paper_yaml_is_the_paper_protocol_and_grid():
    grid = read_grid("configs/paper.yaml")
    defaults = config_lib.to_dict(config_lib.Config())

    # Every value the file states equals the default in config.py (one source of truth), except
    # the pins of choices the defaults leave to run time.
    def check(section, where):
        for key, value in section.items():
            if isinstance(value, dict):
                check(value, where[key])
            elif key in PAPER_PINS:
                assert where[key] == "auto" and value == PAPER_PINS[key], key
            else:
                assert where[key] == value, key

    check(grid.base, defaults)
    assert grid.base["model"]["backend"] == "statevector"
    assert grid.base["data"]["source"] == "nih"
    all_cells = cells(grid, "runs/paper")
    assert len(all_cells) == 6 and all(len(c.configs) == 5 for c in all_cells)
    runs = [d for c in all_cells for d in c.run_dirs]
    assert len(set(runs)) == 30  # 2 heads x 3 tasks x 5 seeds (Sec. III-F)
    assert str(runs[-1]) == "runs/paper/cxr19/dqc/seed-4"
    assert {c.configs[0].train.mode for c in all_cells} == {"finetune"}


def test_extra_axes_make_one_experiment_per_value():
    grid = read_grid(
        {
            "experiment": "lr",
            "grid": {
                "train.learning_rate": [1e-4, "1e-3"],
                "model.head": ["dqc"],
                "train.seed": [7],
            },
        }
    )
    found = cells(grid, "runs/lr")
    assert [str(c.run_dirs[0]) for c in found] == [
        "runs/lr-learning_rate=0.0001/cxr8/dqc/seed-7",
        "runs/lr-learning_rate=1e-3/cxr8/dqc/seed-7",
    ]
    assert found[1].configs[0].train.learning_rate == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="learning_rat"):
        read_grid({"grid": {"train.learning_rat": [1]}})


def write_study_and_features(root, data):
    """Label CSVs in the NIH-CXR-LT layout and feature stores for the same ids."""
    nih = root / "study" / "nih"
    nih.mkdir(parents=True)
    names = TASKS["cxr8"]
    features = root / "features"
    features.mkdir()
    for split, part in (("train", data.train), ("val", data.val), ("test", data.tests["nih"])):
        frame = pd.DataFrame(part.labels.astype(int), columns=names)
        frame.insert(0, "id", part.ids)
        frame.to_csv(nih / f"miccai2023_nih-cxr-lt_labels_{split}.csv", index=False)
        meta = {"ids": json.dumps(part.ids), "weights": "random(seed=0)"}
        save_file({"features": part.inputs}, str(features / f"{split}.safetensors"), metadata=meta)
    return root / "study", features


def test_qcxr_run_trains_grid_then_skips_finished_runs(tmp_path, capsys):
    study, features = write_study_and_features(tmp_path, frozen_data(n_train=96))
    grid = {
        "experiment": "mini",
        "grid": {"model.head": ["cdl", "dqc"], "train.seed": [0, 1]},
        "train": {"mode": "frozen", "max_epochs": 1, "learning_rate": 0.003},
    }
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(grid))
    out = tmp_path / "runs" / "mini"
    args = [
        "run",
        str(path),
        "--out",
        str(out),
        "--study",
        str(study),
        "--features",
        str(features),
        "--no-progress",
        "--json",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    results = json.loads(text[text.index("\n[") + 1 :])
    assert len(results) == 4 and {r["status"] for r in results} == {"finished"}
    for head in ("cdl", "dqc"):
        run = out / "cxr8" / head / "seed-1"
        assert len(epoch_rows(run / "history.csv")) == 1
        saved = yaml.safe_load((run / "config.yaml").read_text())
        assert saved["train"]["seed"] == 1 and saved["data"]["features"] == str(features)
        versions = json.loads((run / "versions.json").read_text())
        assert versions["weights"] == "random(seed=0)" and "jax" in versions["packages"]
        assert set(versions["label_files_sha256"]) == {"train", "val", "nih"}
        preds = pd.read_parquet(run / "predictions-nih.parquet")
        assert len(preds) == 128 and not (run / "predictions-mimic.parquet").exists()
    before = (out / "cxr8" / "dqc" / "seed-0" / "history.csv").read_text()
    assert main(args[:-1]) == 0  # again: everything is finished, nothing retrains
    assert "skipped" in capsys.readouterr().out
    assert (out / "cxr8" / "dqc" / "seed-0" / "history.csv").read_text() == before


def test_qcxr_train_one_frozen_run_and_resume_flag(tmp_path, capsys):
    study, features = write_study_and_features(tmp_path, frozen_data(n_train=64))
    args = [
        "train",
        "--task",
        "cxr8",
        "--head",
        "cdl",
        "--seed",
        "3",
        "--mode",
        "frozen",
        "--study",
        str(study),
        "--features",
        str(features),
        "--out",
        str(tmp_path / "e"),
        "--epochs",
        "1",
        "--lr",
        "1e-3",
        "--no-progress",
    ]
    assert main(args) == 0
    run = tmp_path / "e" / "cxr8" / "cdl" / "seed-3"
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    capsys.readouterr()
    assert main(args) == 1  # an existing run needs --resume
    assert "--resume" in capsys.readouterr().err
    longer = [*args[:-4], "2", *args[-3:], "--resume"]
    assert main(longer) == 0
    assert len(epoch_rows(run / "history.csv")) == 2
    # --resume where nothing was trained is an error (a typo in --out would otherwise start
    # a fresh run silently).
    elsewhere = [*args[:-6], str(tmp_path / "typo"), *args[-5:], "--resume"]
    assert main(elsewhere) == 1
    assert "nothing to resume" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()


def test_feature_rows_without_labels_are_an_error_naming_the_file(tmp_path):
    data = frozen_data(n_train=64)
    study, features = write_study_and_features(tmp_path, data)
    ids = [*data.train.ids[:-1], "unknown.png"]
    save_file(
        {"features": data.train.inputs},
        str(features / "train.safetensors"),
        metadata={"ids": json.dumps(ids), "weights": "x"},
    )
    from qcxr.train.data import load_frozen_data

    cfg = config_lib.from_dict({"data": {"study": str(study), "features": str(features)}})
    with pytest.raises(ValueError, match=r"train\.safetensors.*unknown\.png") as err:
        load_frozen_data(cfg)
    # It names the label file the id is missing from and how many rows lack labels.
    assert "1 feature row id(s)" in str(err.value)
    assert str(study / "nih") in str(err.value)


def test_yaml_eval_settings_reach_metrics_and_report(tmp_path):
    """A grid file's eval: section is what `qcxr run` scores with and `qcxr report` tests with."""
    from sklearn.metrics import f1_score

    study, features = write_study_and_features(tmp_path, frozen_data(n_train=96))
    grid = {
        "experiment": "evalset",
        "grid": {"model.head": ["cdl", "dqc"], "train.seed": [0, 1]},
        "train": {"mode": "frozen", "max_epochs": 1, "learning_rate": 0.003},
        "eval": {"f1_threshold": 0.3, "alpha": 0.1, "bootstrap": 40},
    }
    path = tmp_path / "evalset.yaml"
    path.write_text(yaml.safe_dump(grid))
    out = tmp_path / "runs" / "evalset"
    common = ["--study", str(study), "--features", str(features), "--no-progress"]
    assert main(["run", str(path), "--out", str(out), *common]) == 0
    run = out / "cxr8" / "cdl" / "seed-0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["eval"]["f1_threshold"] == 0.3
    preds = pd.read_parquet(run / "predictions-nih.parquet")
    label = "Effusion"
    expected = f1_score(preds[f"y:{label}"], preds[f"p:{label}"] >= 0.3)
    got = metrics["testsets"]["nih"]["labels"][label]["f1"]
    assert got == pytest.approx(expected)
    assert got != pytest.approx(f1_score(preds[f"y:{label}"], preds[f"p:{label}"] >= 0.5))
    assert main(["report", str(out)]) == 0
    report = (out / "summary" / "report.html").read_text()
    assert "alpha = 0.1" in report and "bootstrap = 40 resamples" in report
    boot = pd.read_csv(out / "summary" / "bootstrap.csv")
    assert set(boot["resamples"]) == {40}


def test_shards_of_a_grid_train_every_run_exactly_once(tmp_path, capsys):
    """`qcxr run --shard 0/2` then `--shard 1/2` (a SLURM array of two): each run once."""
    study, features = write_study_and_features(tmp_path, frozen_data(n_train=64))
    grid = {
        "experiment": "sharded",
        "grid": {"model.head": ["cdl", "dqc"], "train.seed": [0, 1]},
        "train": {"mode": "frozen", "max_epochs": 1, "learning_rate": 0.003},
    }
    path = tmp_path / "sharded.yaml"
    path.write_text(yaml.safe_dump(grid))
    out = tmp_path / "runs" / "sharded"
    common = ["--out", str(out), "--study", str(study), "--features", str(features)]
    finished = lambda: sorted(  # noqa: E731
        str(p.parent.relative_to(out)) for p in out.glob("*/*/seed-*/status.json")
    )
    assert main(["run", str(path), *common, "--shard", "0/2", "--no-progress"]) == 0
    first = finished()
    assert first == ["cxr8/cdl/seed-0", "cxr8/cdl/seed-1"]
    before = {r: (out / r / "history.csv").read_text() for r in first}
    assert main(["run", str(path), *common, "--shard", "1/2", "--no-progress"]) == 0
    assert finished() == [*first, "cxr8/dqc/seed-0", "cxr8/dqc/seed-1"]
    assert {r: (out / r / "history.csv").read_text() for r in first} == before
    capsys.readouterr()
    assert main(["run", str(path), *common, "--status", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    states = rows if isinstance(rows, list) else rows["runs"]
    assert len(states) == 4 and {r["state"] for r in states} == {"done"}
