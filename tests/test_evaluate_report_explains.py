"""A report that explains itself (issue 16, item 3): the data it ran on, what each column means,
which p the marks use, one AUROC range per task, a labelled and colour-blind-safe volcano
plot, below-chance AUROCs, one-seed experiments, large tables as CSV links, the seeds that
ran, and a grid's other axis as a column."""

from __future__ import annotations

import hashlib
import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from qcxr.cli import main
from qcxr.config import Config, from_dict, to_dict
from qcxr.data import datasets
from qcxr.data.synthetic import generate_study
from qcxr.evaluate.runs import Run
from qcxr.labels import TASKS, resolve_task
from qcxr.train import grid as grid_lib

LABELS = TASKS["cxr8"]
TESTSETS = ("nih", "mimic")


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A tiny study written by qcxr synth, the predictions' ids and truth read from its files."""
    root = tmp_path_factory.mktemp("study") / "study"
    generate_study(root, n_train=16, n_val=8, n_test=120, n_mimic=90, image_size=16,
                   progress=False, task="cxr8")  # fmt: skip
    if not (root / "synthetic.json").is_file():  # the marker qcxr synth writes (issue 16)
        (root / "synthetic.json").write_text(json.dumps({"generator": "qcxr synth", "seed": 0}))
    return root


def _truths(study: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """(ids, truth) of each test set, read from the study's label files as training reads them."""
    out = {}
    for testset in TESTSETS:
        images = datasets.test_set(study, testset, resolve_task("cxr8"))
        order = [images.label_names.index(name) for name in LABELS]
        out[testset] = (list(images.ids), np.asarray(images.labels, float)[:, order])
    return out


def _label_files(study: Path) -> list[Path]:
    return sorted(p for p in study.rglob("*.csv") if "label" in p.name or "cxr-lt" in p.name)


def write_run(run: Path, head: str, seed: int, strength: np.ndarray, *, study: Path,
              settings: dict | None = None, steps: int = 6) -> dict[str, np.ndarray]:  # fmt: skip
    """A finished-looking run: config.yaml, versions.json (sha256 of the study's label files,
    by hashlib), history.csv and predictions; returns the probabilities per test set."""
    run.mkdir(parents=True)
    cfg = to_dict(Config())
    cfg["model"]["head"], cfg["model"]["weights"] = head, "random:0"
    cfg["data"]["study"] = str(study)
    cfg["train"]["seed"] = seed
    for key, value in (settings or {}).items():
        section, name = key.split(".")
        cfg[section][name] = value
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    sums = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in _label_files(study)}
    versions = {"weights": "random(seed=0)", "label_files_sha256": sums}
    (run / "versions.json").write_text(json.dumps(versions))
    rows = [(1 + s // 3, s + 1, 0.7 - 0.01 * s, np.nan, np.nan) for s in range(steps)]
    rows += [(e, 3 * e, np.nan, 0.69 - 0.02 * e, 1.0) for e in (1, 2)]
    columns = ["epoch", "step", "train_loss", "val_loss", "epoch_time"]
    pd.DataFrame(rows, columns=columns).to_csv(run / "history.csv", index=False)
    probs = {}
    for testset, (ids, truth) in _truths(study).items():
        noise = np.random.default_rng([seed, len(head), len(testset)]).normal(size=truth.shape)
        p = 1 / (1 + np.exp(-(strength * (2 * np.nan_to_num(truth) - 1) + noise)))
        frame = pd.DataFrame({"id": ids})
        for j, name in enumerate(LABELS):
            frame[f"p:{name}"] = p[:, j].astype(np.float32)
            frame[f"y:{name}"] = truth[:, j].astype(np.float32)
        frame.to_parquet(run / f"predictions-{testset}.parquet", index=False)
        probs[testset] = frame[[f"p:{name}" for name in LABELS]].to_numpy()
    return probs


def _auroc(truth: np.ndarray, probs: np.ndarray) -> float:
    """sklearn's AUROC over the known (non-NaN) entries; NaN for a single class."""
    keep = np.isfinite(truth)
    if len(set(truth[keep])) < 2:
        return float("nan")
    return float(roc_auc_score(truth[keep], probs[keep]))


CDL = np.full(len(LABELS), 1.4)
DQC = np.full(len(LABELS), 0.9)
DQC[LABELS.index("Nodule")] = -0.8  # DQC ranks Nodule backwards: AUROC < 0.5


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, study) -> tuple[Path, str, dict]:
    """Seeds 0, 1, 3 of both heads (the config lists 0-4), a synthetic study, a long loss table."""
    exp = tmp_path_factory.mktemp("explained") / "exp"
    probs = {}
    for head, strength in (("cdl", CDL), ("dqc", DQC)):
        for seed in (0, 1, 3):
            run = exp / "cxr8" / head / f"seed-{seed}"
            probs[head, seed] = write_run(run, head, seed, strength, study=study, steps=150)
    assert main(["report", str(exp), "--bootstrap", "0", "--json"]) == 0
    html = (exp / "summary" / "report.html").read_text()
    return exp, html, probs


def _section(html: str, element_id: str) -> str:
    start = html.index(f"id='{element_id}'")
    return html[start : html.index("</div>", start)]


def test_the_report_says_what_data_labels_and_weights_it_ran_on(experiment, study):
    _, html, _ = experiment
    data = html[html.index("id='data'") : html.index("id='seeds'")]
    assert "SYNTHETIC study" in data and str(study / "synthetic.json") in data
    files = _label_files(study)
    assert len(files) >= 3
    for csv in files:
        assert hashlib.sha256(csv.read_bytes()).hexdigest() in data, csv
    assert ", ".join(LABELS) in data and "(8 labels)" in data
    assert "RANDOM, not pretrained: random(seed=0)" in data


def _run_with(tmp_path: Path, **data) -> Run:
    config = from_dict({"task": "cxr8", "data": data})
    return Run("cxr8", "cdl", 0, tmp_path / "cxr8" / "cdl" / "seed-0", config=config)


def test_real_and_table_studies_are_told_apart_by_the_marker(tmp_path):
    from qcxr.evaluate import report_text  # here: the rest of the file runs without it

    real, tables = tmp_path / "real", tmp_path / "tables"
    real.mkdir(), tables.mkdir()
    (tables / "synthetic.json").write_text('{"generator": "qcxr synth"}')
    said = report_text.data_kind(_run_with(tmp_path, study=str(real)))
    assert said.startswith(f"real label files: no synthetic.json marker in {real}")
    table_run = _run_with(tmp_path, format="table", csv=str(tables / "data.csv"), images=str(real))
    assert report_text.data_kind(table_run).startswith(
        f"SYNTHETIC study (qcxr synth; marker {tables / 'synthetic.json'}: generator = qcxr synth"
    )
    split_run = _run_with(tmp_path, format="chexpert", images=str(real),
                          csv={"train": str(real / "t.csv"), "test": str(tables / "x.csv")})  # fmt: skip
    assert report_text.data_kind(split_run).startswith("SYNTHETIC")  # beside any of its tables
    gone = report_text.data_kind(_run_with(tmp_path, study=str(tmp_path / "gone")))
    assert gone.startswith("unknown") and "not on this machine" in gone


def test_every_column_and_mark_is_explained(experiment):
    _, html, _ = experiment
    gloss = html[html.index("id='glossary'") : html.index("<h2>Figures")]
    assert "eq. (4)" in gloss and "100 × 2 × (CDL − DQC) / (CDL + DQC)" in gloss
    assert "symmetric" in gloss
    for column in ("pct_diff", "mark", "p_holm, mark_holm", "t, p", "volcano plot"):
        assert f"<dt>{column}</dt>" in gloss, column
    assert "unadjusted" in gloss and "Holm" in gloss and "scipy.stats.ttest_rel" in gloss


def test_figures_say_which_p_their_marks_use_and_share_one_range(experiment):
    exp, html, _ = experiment
    figures = exp / "summary" / "figures"
    assert "Holm-adjusted p over the labels" in (figures / "auroc-cxr8-nih.svg").read_text()
    assert "unadjusted" in (figures / "mean-auroc.svg").read_text()
    ranges = re.findall(r"auroc-cxr8-(nih|mimic)\.png: .*?AUROC axis ([\d.]+) to ([\d.]+)", html)
    assert {r[0] for r in ranges} == {"nih", "mimic"}
    assert len({r[1:] for r in ranges}) == 1  # one range for both panels
    lo, hi = map(float, ranges[0][1:])
    stats = pd.read_csv(exp / "summary" / "stats.csv")
    for head in ("cdl", "dqc"):
        assert (stats[f"{head}_mean"] - stats[f"{head}_std"]).min() >= lo
        assert (stats[f"{head}_mean"] + stats[f"{head}_std"]).max() <= hi


def test_below_chance_aurocs_are_named_with_their_value(experiment, study):
    _, html, probs = experiment
    box = _section(html, "below-chance")
    j = LABELS.index("Nodule")
    truths = _truths(study)
    for testset in TESTSETS:
        truth = truths[testset][1][:, j]
        mean = np.mean([_auroc(truth, probs["dqc", s][testset][:, j]) for s in (0, 1, 3)])
        assert mean < 0.5
        assert re.search(rf"cxr8/{testset} DQC: [^<]*Nodule {mean:.3f}", box), testset
    assert "CDL" not in box.split("<p>")[0]  # CDL learned every label


def test_the_seeds_that_ran_are_recorded_not_the_configs_list(experiment):
    exp, html, _ = experiment
    seeds = html[html.index("id='seeds'") : html.index("</ul>", html.index("id='seeds'"))]
    assert "cxr8/cdl: seeds 0, 1, 3 (3 runs)" in seeds and "cxr8/dqc: seeds 0, 1, 3" in seeds
    assert "train.seeds lists 0, 1, 2, 3, 4" in seeds
    summary = pd.read_csv(exp / "summary" / "summary.csv")
    assert set(summary["seeds"]) == {"3/3"}


def test_a_large_table_is_a_link_to_its_csv_and_a_small_one_is_embedded(experiment):
    exp, html, _ = experiment
    loss = pd.read_csv(exp / "summary" / "loss.csv")
    assert len(loss) > 300  # 150 steps x 2 heads
    heading = html.index("Loss curves (mean and std over seeds)")
    section = html[heading : html.index("<h3>", heading)]
    assert "<a href='loss.csv'>loss.csv</a>" in section and "<table" not in section
    assert f"{len(loss)} rows" in section
    summary = html[html.index("Mean AUROC across seeds") :]
    assert summary.index("<table") < summary.index("<h2")  # the summary stays in the page
    assert html.count("<tr>") < len(loss)  # its rows are nowhere in the page


def test_one_run_has_no_nan_pm_nan_and_says_why_there_is_no_test(tmp_path, monkeypatch, study):
    probs = write_run(tmp_path / "one" / "cxr8" / "cdl" / "seed-0", "cdl", 0, CDL, study=study)
    (tmp_path / "one" / "cxr8" / "cdl" / "seed-0" / "tracking.json").write_text("{}")
    calls = []
    fake = types.ModuleType("qcxr.train.tracking")
    fake.log_report = lambda run_dirs, report_dir: calls.append((run_dirs, report_dir)) or 1
    monkeypatch.setitem(sys.modules, "qcxr.train.tracking", fake)
    assert main(["report", str(tmp_path / "one"), "--bootstrap", "0"]) == 0
    summary = tmp_path / "one" / "summary"
    html = (summary / "report.html").read_text()
    assert "nan ± nan" not in html.lower() and "nan" not in (summary / "summary.csv").read_text()
    rows = pd.read_csv(summary / "summary.csv").set_index("testset")
    truth = _truths(study)["nih"][1]
    expected = np.nanmean([_auroc(truth[:, j], probs["nih"][:, j]) for j in range(len(LABELS))])
    assert rows.loc["nih", "cdl"] == f"{expected:.3f} (1 seed)"
    assert rows.loc["nih", "dqc"] == "-" and rows.loc["nih", "seeds"] == "1/0"
    assert not list((summary / "figures").glob("volcano*"))
    why = _section(html, "one-seed")
    assert "no DQC runs" in why and "at least two seeds" in why and "Fig. 12" in why
    assert calls == [([tmp_path / "one" / "cxr8" / "cdl" / "seed-0"], summary)]


def test_a_grid_with_another_axis_is_one_experiment_with_that_axis_as_a_column(tmp_path, study):
    spec = {"experiment": "g", "task": "cxr8",
            "grid": {"model.head": ["cdl", "dqc"], "train.seed": [0, 1],
                     "train.loss": ["bce", "focal"]}}  # fmt: skip
    out = tmp_path / "runs" / "g"
    cells = grid_lib.cells(grid_lib.read_grid(spec), out)
    assert len({c.experiment_dir for c in cells}) == 2 and not out.exists()  # siblings of out
    for cell in cells:
        for config, run in zip(cell.configs, cell.run_dirs, strict=True):
            strength = (CDL if config.model.head == "cdl" else DQC) * (
                1.5 if config.train.loss == "focal" else 1.0
            )
            write_run(run, config.model.head, config.train.seed, strength, study=study,
                      settings={"train.loss": config.train.loss})  # fmt: skip
    assert main(["report", str(out), "--bootstrap", "0"]) == 0
    summary = out / "summary"
    stats = pd.read_csv(summary / "stats.csv")
    assert set(stats["loss"]) == {"bce", "focal"}
    assert len(stats) == 2 * len(TESTSETS) * (len(LABELS) + 1)
    assert (stats[stats["label"] == "mean"]["pairs"] == 2).all()  # each loss's own 2 seeds
    auroc = pd.read_csv(summary / "auroc.csv")
    assert len(auroc) == 2 * 2 * 2 * len(TESTSETS) * (len(LABELS) + 1)  # loss x head x seed x ...
    focal = auroc[(auroc["loss"] == "focal") & (auroc["label"] == "mean")]
    bce = auroc[(auroc["loss"] == "bce") & (auroc["label"] == "mean")]
    assert focal["auroc"].mean() != bce["auroc"].mean()
    assert set(pd.read_csv(summary / "summary.csv")["loss"]) == {"bce", "focal"}
    for loss in ("bce", "focal"):
        assert (summary / "figures" / f"auroc-cxr8-nih-loss={loss}.png").is_file()
        assert (summary / "figures" / f"loss-cxr8-loss={loss}.png").is_file()
    html = (summary / "report.html").read_text()
    assert "loss=focal/cxr8/dqc: seeds 0, 1" in html
