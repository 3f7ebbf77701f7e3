"""The figures: what they show (PNG pixels, SVG text), the volcano's x-axis, and that importing
qcxr.evaluate.plots leaves the caller's matplotlib backend alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer
from PIL import Image

from qcxr.evaluate import plots as P
from qcxr.evaluate import stats as S

LABELS = ["Infiltration", "Effusion", "Atelectasis", "Nodule"]


def assert_figure(png: str | Path, texts=(), min_size=(200, 150)) -> None:
    """A PNG that opens, is at least `min_size` pixels and is not one flat colour, beside an
    SVG whose text names every string of `texts` (matplotlib keeps each text as a comment
    above its glyphs)."""
    png = Path(png)
    with Image.open(png) as image:
        assert image.format == "PNG"
        assert image.width >= min_size[0] and image.height >= min_size[1], image.size
        pixels = np.asarray(image.convert("RGB"))
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 10, f"{png}: only {len(colours)} colours"
    svg = png.with_suffix(".svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    missing = [t for t in texts if t not in svg]
    assert not missing, f"{png.with_suffix('.svg')}: lacks {missing}"


def test_signed_log2_against_its_definition():
    values = np.array([-1e6, -255.0, -7.0, -3.0, -1.0, -0.25, 0.0, 0.25, 1.0, 3.0, 7.0, 1e6])
    expected = np.sign(values) * np.log2(1.0 + np.abs(values))
    np.testing.assert_allclose(S.signed_log2(values), expected, rtol=1e-15)
    # by hand: 2^k - 1 maps to k, with its sign; 0 to 0
    for v, k in ((0.0, 0.0), (1.0, 1.0), (3.0, 2.0), (-3.0, -2.0), (-7.0, -3.0), (255.0, 8.0)):
        assert float(S.signed_log2(v)) == pytest.approx(k, abs=1e-12)
    assert float(S.signed_log2(-0.0)) == 0.0
    out = S.signed_log2(values)
    np.testing.assert_allclose(out, -S.signed_log2(-values))  # odd
    assert np.all(np.diff(out) > 0)  # increasing: the order of differences is kept


def _compared(rng, testsets=("nih", "mimic")):
    rows = []
    for testset in testsets:
        for seed in range(4):
            for head, base in (("cdl", 0.80), ("dqc", 0.72)):
                vals = base + rng.normal(0, 0.02, size=len(LABELS))
                for label, v in zip(LABELS, vals, strict=True):
                    rows.append(("cxr8", testset, head, seed, label, v))
                rows.append(("cxr8", testset, head, seed, S.MEAN, vals.mean()))
    columns = ["task", "testset", "head", "seed", "label", "auroc"]
    return S.compare(pd.DataFrame(rows, columns=columns))


def _history(seed, epochs=3, steps=4):
    rows, step = [], 0
    for epoch in range(1, epochs + 1):
        for _ in range(steps):
            step += 1
            rows.append((epoch, step, 1.0 / step + 0.01 * seed, np.nan))
        rows.append((epoch, step, 0.5 / epoch, 0.6 / epoch + 0.01 * seed))
    return pd.DataFrame(rows, columns=["epoch", "step", "train_loss", "val_loss"])


def test_every_figure_draws_what_it_names(tmp_path):
    compared = _compared(np.random.default_rng(0))
    png = P.mean_auroc_bars(compared, tmp_path / "mean")[0]
    assert_figure(png, ["Mean AUROC, CDL vs DQC", "CDL", "DQC", "AUROC", "NIH-CXR-LT"])
    png = P.label_auroc_bars(compared, "cxr8", "nih", tmp_path / "labels")[0]
    assert_figure(png, ["Per-label AUROC, CXR8, NIH-CXR-LT test set", *LABELS])
    png = P.volcano(compared, LABELS, tmp_path / "volcano", title="Volcano here", alpha=0.01)[0]
    assert_figure(png, ["Volcano here", "p = 0.01", "-log10(p)", *LABELS, "MIMIC-CXR-LT"])
    assert "p = 0.05" not in (tmp_path / "volcano.svg").read_text()
    table = P.loss_table({"cdl": [_history(0), _history(1)], "dqc": [_history(2)]})
    png = P.loss_curves(table, tmp_path / "loss", title="CXR8: loss")[0]
    assert_figure(png, ["CXR8: loss", "CDL (n=2)", "DQC (n=1)", "validation BCE loss", "step"])
    bench = pd.DataFrame(
        {
            "framework": ["qcxr", "pennylane", "qcxr", "pennylane"],
            "head": ["dqc"] * 4,
            "n": [8, 8, 14, 14],
            "mean_s": [0.06, 0.13, 0.08, 15.0],
            "std_s": [0.001] * 4,
        }
    )
    png = P.benchmark_bars(bench, tmp_path / "bench")[0]
    assert_figure(png, ["Table III", "pennylane", "seconds per training step", "n=14"])


def test_a_flat_image_is_not_a_figure(tmp_path):
    Image.new("RGB", (400, 300), "white").save(tmp_path / "flat.png")
    (tmp_path / "flat.svg").write_text("<?xml version='1.0'?><svg></svg>")
    with pytest.raises(AssertionError, match="colours"):
        assert_figure(tmp_path / "flat.png")


def test_importing_plots_keeps_the_callers_backend(tmp_path):
    code = f"""
import sys
import matplotlib
matplotlib.use("svg")
import pandas as pd
from qcxr.evaluate import plots
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
bench = pd.DataFrame({{"framework": ["a"], "head": ["dqc"], "n": [8], "mean_s": [0.1]}})
plots.benchmark_bars(bench.assign(std_s=0.0), {str(tmp_path / "b")!r})
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
assert "matplotlib.pyplot" not in sys.modules
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "b.png").is_file() and (tmp_path / "b.svg").is_file()


def _errorbar_extent(ax) -> tuple[float, float]:
    """The lowest and highest end of every error bar drawn on `ax` (matplotlib's own segments)."""
    ends = [
        y
        for container in ax.containers
        if isinstance(container, ErrorbarContainer)
        for collection in container.lines[2]
        for segment in collection.get_segments()
        for _, y in segment
    ]
    return min(ends), max(ends)


def _spread_compared() -> pd.DataFrame:
    """Four labels over five seeds: wide spreads near 0 and 1, and p-values that Holm's
    correction lifts above 0.05 (an unadjusted mark would say *)."""
    rng = np.random.default_rng(3)
    rows = []
    for seed in range(5):
        for k, label in enumerate(LABELS):
            cdl = [0.97, 0.6, 0.3, 0.7][k] + rng.normal(0, [0.03, 0.05, 0.2, 0.02][k])
            dqc = cdl - [0.02, 0.05, 0.1, 0.01][k] + rng.normal(0, 0.03)
            rows += [
                ("cxr8", "nih", "cdl", seed, label, cdl),
                ("cxr8", "nih", "dqc", seed, label, dqc),
            ]
    columns = ["task", "testset", "head", "seed", "label", "auroc"]
    compared = S.compare(pd.DataFrame(rows, columns=columns))
    compared["p"] = [0.5, 0.02, 0.03, 0.004]  # p-values whose marks Holm changes
    compared["mark"] = [S.significance_mark(p) for p in compared["p"]]
    compared["p_holm"] = S.holm(compared["p"].to_numpy())
    compared["mark_holm"] = [S.significance_mark(p) for p in compared["p_holm"]]
    return compared


def test_per_label_marks_are_holms_and_no_error_bar_is_clipped():
    compared = _spread_compared()
    assert (compared["mark"] != compared["mark_holm"]).any()  # the test means something
    fig = P.label_auroc_figure(compared, "cxr8", "nih")
    ax = fig.axes[0]
    by_label = compared.set_index("label")
    expected = [by_label.loc[lab, "mark_holm"] for lab in P.by_occurrence(LABELS)]
    assert [t.get_text() for t in ax.texts] == expected
    low, high = _errorbar_extent(ax)
    bottom, top = ax.get_ylim()
    assert bottom <= low and high <= top, ((bottom, top), (low, high))
    spread = (
        compared[["cdl_mean", "dqc_mean"]].to_numpy() + compared[["cdl_std", "dqc_std"]].to_numpy()
    )
    assert high == pytest.approx(np.nanmax(spread))  # the bar's own top, not a clipped one
    assert "Holm-adjusted" in ax.get_title()


def test_panels_of_one_task_take_the_range_they_are_given():
    compared = _compared(np.random.default_rng(0))
    limits = P.auroc_limits(compared[compared["label"] != S.MEAN])
    for testset in ("nih", "mimic"):
        ax = P.label_auroc_figure(compared, "cxr8", testset, limits=limits).axes[0]
        assert ax.get_ylim() == pytest.approx(limits)
    assert limits[0] <= 0.5 and limits[1] >= 1.05  # chance and a perfect score both show
    mean_ax = P.mean_auroc_figure(compared).axes[0]
    assert "unadjusted" in mean_ax.get_title()
    low, high = _errorbar_extent(mean_ax)
    assert mean_ax.get_ylim()[0] <= low and high <= mean_ax.get_ylim()[1]


def test_the_volcano_line_is_labelled_and_labels_get_colour_blind_safe_colours():
    labels = ["Infiltration", "Effusion", "Atelectasis", "Nodule", "Mass", "Pneumothorax",
              "Consolidation", "Pleural Thickening", "Cardiomegaly", "Emphysema", "Edema",
              "Fibrosis", "Pneumonia", "Hernia"]  # fmt: skip
    rng = np.random.default_rng(1)
    rows = []
    for seed in range(4):
        for label in labels:
            v = 0.75 + rng.normal(0, 0.03)
            rows += [
                ("cxr14", "nih", "cdl", seed, label, v),
                ("cxr14", "nih", "dqc", seed, label, v - 0.02),
            ]
    compared = S.compare(
        pd.DataFrame(rows, columns=["task", "testset", "head", "seed", "label", "auroc"])
    )
    ax = P.volcano_figure(compared, labels, alpha=0.01).axes[0]
    [line_text] = [t for t in ax.texts if t.get_text() == "p = 0.01"]
    assert line_text.get_position()[1] == pytest.approx(2.0)  # on the line: -log10(0.01)
    assert ax.get_ylim()[1] > 2.0
    safe = {matplotlib.colors.to_rgba(c) for c in P.OKABE_ITO}
    styles = {}
    for collection in ax.collections:
        label = collection.get_label()
        if label not in labels:
            continue
        face = tuple(collection.get_facecolor()[0]) if len(collection.get_facecolor()) else None
        edge = tuple(collection.get_edgecolor()[0])
        assert (face in safe) or (face is None and edge in safe), label
        styles[label] = (face, edge if face is None else None)
    assert len(styles) == len(labels) == len(set(styles.values()))  # no two labels look alike
