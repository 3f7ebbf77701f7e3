"""`qcxr report` and `qcxr evaluate` on a made-up runs tree: every figure and table is filled."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import yaml

from qcxr.cli import main
from qcxr.config import Config, to_dict
from qcxr.labels import TASKS
from test_evaluate_plots import assert_figure

LABELS = TASKS["cxr8"]
TESTSETS = {"nih": 150, "mimic": 120}


def _predictions(rng, n, strength, seed_shift):
    truth = (rng.random((n, len(LABELS))) < 0.3).astype(float)
    noise = np.random.default_rng(seed_shift).normal(size=truth.shape)
    probs = 1 / (1 + np.exp(-(strength * (2 * truth - 1) + noise)))
    return truth, probs


def _history(head, seed, epochs=4, steps_per_epoch=5):
    rows, step = [], 0
    rate = 0.5 if head == "cdl" else 0.25
    for epoch in range(1, epochs + 1):
        losses = []
        for _ in range(steps_per_epoch):
            step += 1
            loss = 0.3 + 0.4 * np.exp(-rate * step / steps_per_epoch) + 0.01 * seed
            losses.append(loss)
            rows.append((epoch, step, loss, None, None))
        rows.append((epoch, step, float(np.mean(losses)), losses[-1] + 0.02, 1.5))
    return pd.DataFrame(rows, columns=["epoch", "step", "train_loss", "val_loss", "epoch_time"])


def make_runs(root, *, weights="random(seed=0)"):
    truths = {}
    for testset, n in TESTSETS.items():
        rng = np.random.default_rng(len(testset))  # not hash(): that changes between runs
        truths[testset] = (rng.random((n, 8)) < 0.3).astype(float)
    truths["nih"][:, 7] = 0.0  # Pneumothorax absent from the NIH test set: NaN, not a crash
    truths["mimic"][:20, 2] = np.nan  # unknown MIMIC labels
    for head, strength in (("cdl", 1.6), ("dqc", 0.9)):
        for seed in range(3):
            run = root / "cxr8" / head / f"seed-{seed}"
            run.mkdir(parents=True)
            cfg = to_dict(Config())
            cfg["model"]["head"] = head
            (run / "config.yaml").write_text(yaml.safe_dump(cfg))
            (run / "versions.json").write_text(json.dumps({"weights": weights}))
            _history(head, seed).to_csv(run / "history.csv", index=False)
            for testset, truth in truths.items():
                noise = np.random.default_rng(100 * seed + len(head) + len(testset)).normal(
                    size=truth.shape
                )
                logit = strength * (2 * np.nan_to_num(truth) - 1) + noise
                frame = pd.DataFrame({"id": [f"{testset}{i}" for i in range(len(truth))]})
                for j, name in enumerate(LABELS):
                    frame[f"p:{name}"] = (1 / (1 + np.exp(-logit[:, j]))).astype(np.float32)
                    frame[f"y:{name}"] = truth[:, j].astype(np.float32)
                frame.to_parquet(run / f"predictions-{testset}.parquet", index=False)
    return root


def test_report_writes_every_figure_and_table(tmp_path, capsys):
    runs = make_runs(tmp_path / "exp")
    pd.DataFrame(
        {
            "framework": ["qcxr", "pennylane-torch", "qcxr", "pennylane-torch"],
            "head": ["dqc"] * 4,
            "n": [8, 8, 14, 14],
            "mean_s": [0.06, 0.13, 0.08, 0.18],
            "std_s": [0.001] * 4,
        }
    ).to_csv(runs / "benchmark.csv", index=False)
    assert main(["report", str(runs), "--bootstrap", "50", "--json"]) == 0
    index = json.loads(capsys.readouterr().out)
    assert any("cxr8/nih" in n and "Pneumothorax" in n for n in index["notes"])
    summary = runs / "summary"
    figures = {
        "loss-cxr8": ["CXR8: loss", "CDL (n=3)", "DQC (n=3)"],
        "mean-auroc": ["Mean AUROC, CDL vs DQC", "NIH-CXR-LT", "MIMIC-CXR-LT"],
        "auroc-cxr8-nih": ["Per-label AUROC, CXR8, NIH-CXR-LT", *LABELS],
        "auroc-cxr8-mimic": ["Per-label AUROC, CXR8, MIMIC-CXR-LT", *LABELS],
        "volcano-cxr8": ["Fig. 12: volcano plot, CXR-8 labels", "p = 0.05", *LABELS],
        "benchmark": ["Table III", "pennylane-torch", "n=14"],
    }
    stems = list(figures)
    for stem, texts in figures.items():
        assert_figure(summary / "figures" / f"{stem}.png", texts)
    assert not (summary / "figures" / "volcano-cxr14.png").exists()  # no CXR-14 labels here
    tables = {}
    for name in ("auroc", "stats", "summary", "bootstrap", "groups", "loss", "runs", "benchmark"):
        tables[name] = pd.read_csv(summary / f"{name}.csv")
        assert len(tables[name]) > 0, name
    # 2 heads x 3 seeds x 2 test sets x (8 labels + mean)
    assert len(tables["auroc"]) == 2 * 3 * 2 * 9
    stats = tables["stats"]
    assert set(stats["testset"]) == {"nih", "mimic"} and len(stats) == 2 * 9
    nan_row = stats[(stats.testset == "nih") & (stats.label == "Pneumothorax")].iloc[0]
    assert np.isnan(nan_row["p"]) and nan_row["mark"] == "n.a."
    mean_rows = stats[stats.label == "mean"]
    assert (mean_rows["cdl_mean"] > mean_rows["dqc_mean"]).all() and (
        mean_rows["pct_diff"] > 0
    ).all()
    assert len(tables["summary"]) == 2 and index["summary"][0]["task"] == "cxr8"
    boot = tables["bootstrap"]
    assert set(boot["head"]) == {"cdl", "dqc", "cdl-dqc"}
    ok = boot.dropna(subset=["lo"])
    assert ((ok["lo"] <= ok["estimate"] + 1e-12) & (ok["estimate"] <= ok["hi"] + 1e-12)).all()
    assert tables["runs"]["random_weights"].all()
    html = (summary / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(stems)
    assert "Pneumothorax" in html.split("<h2>Figures")[0]  # the single-class note, up top
    assert "id='random-weights'" in html and "RANDOM" in html
    for name in (
        "auroc.csv",
        "stats.csv",
        "summary.csv",
        "bootstrap.csv",
        "groups.csv",
        "loss.csv",
        "runs.csv",
        "benchmark.csv",
    ):
        assert f"({name})" in html
    assert html.count("<details>") == 6  # every run's config
    # metrics.json written for each run on the way
    assert len(list(runs.glob("cxr8/*/seed-*/metrics.json"))) == 6


def test_no_banner_with_pretrained_weights_and_evaluate_prints_a_table(tmp_path, capsys):
    runs = make_runs(tmp_path / "exp", weights="microsoft/resnet-50@abc123")
    assert main(["report", str(runs), "--bootstrap", "0"]) == 0
    out = capsys.readouterr().out
    assert "report:" in out and "RANDOM" not in out
    html = (runs / "summary" / "report.html").read_text()
    assert "random-weights" not in html
    assert not (runs / "summary" / "bootstrap.csv").exists()
    run = runs / "cxr8" / "dqc" / "seed-1"
    assert main(["evaluate", str(run)]) == 0
    captured = capsys.readouterr()
    assert "Atelectasis" in captured.out and "[mean]" in captured.out
    assert "Pneumothorax" in captured.err  # the single-class warning, on stderr
    assert main(["evaluate", str(run), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[str(run)]["testsets"]["nih"]["labels"]["Pneumothorax"]["auroc"] is None


def test_evaluate_without_predictions_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["evaluate", str(tmp_path / "run")]) == 1
    assert "predictions" in capsys.readouterr().err
