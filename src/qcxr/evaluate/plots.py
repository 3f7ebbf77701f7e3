"""The paper's figures, one function each; every function writes <stem>.png and <stem>.svg.

- `loss_curves`      Fig. 4: train loss per step and validation loss per epoch, mean +- std band
                     over seeds, CDL against DQC.
- `mean_auroc_bars`  Fig. 5: mean AUROC per task and test set, with significance marks
                     (unadjusted: one test per pair, said in the title).
- `label_auroc_bars` Figs. 6-11: per-label AUROC sorted by occurrence (Table I), with marks of
                     the Holm-adjusted p (said in the title);
                     beyond HORIZONTAL_FROM labels the bars lie horizontally, one row per label,
                     the figure growing in height, so 45 labels stay readable.
- `volcano`          Figs. 12-13: -log10 p against log2 % diff. AUROC, dashed line at p = alpha,
                     labelled on the plot; labels in Okabe-Ito colours (colour-blind-safe).
- `benchmark_bars`   Table III as bars, when benchmark results exist.

Each `*_bars`/`volcano` function saves the Figure its `*_figure` twin draws. The AUROC axis
(`auroc_limits`) always holds every error bar; the report passes one range to all test sets
of a task, so the NIH and MIMIC panels compare at a glance.

Inputs are the tables `stats.compare` and `loss_table` return, so each figure's numbers are
also written as CSV beside it by the report. Loss histories are read by `rundir.read_history`.

Figures are `matplotlib.figure.Figure` objects drawn without pyplot, so no backend is chosen
here and importing this module leaves the caller's matplotlib state alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from qcxr.config import EvalConfig
from qcxr.evaluate.stats import MEAN, signed_log2
from qcxr.labels import by_occurrence

# Okabe & Ito's colour-blind-safe palette (https://jfly.uni-koeln.de/color/): CDL blue, DQC
# vermillion; the volcano plot's labels take its colours in turn, hollow markers after eight.
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")
COLORS = {"cdl": "#0072B2", "dqc": "#D55E00"}
MARKS_HOLM = "marks: Holm-adjusted p over the labels (ns ≥0.05, * <0.05, ** <0.01, *** <0.001)"
_LEVELS = "(ns ≥0.05, * <0.05, ** <0.01, *** <0.001)"
MARKS_RAW = f"marks: paired t-test p, one test per pair, unadjusted\n{_LEVELS}"
MARKS_UNADJUSTED = f"marks: unadjusted p {_LEVELS}"
NAMES = {"cdl": "CDL", "dqc": "DQC"}
TESTSET_NAMES = {"nih": "NIH-CXR-LT", "mimic": "MIMIC-CXR-LT"}
HORIZONTAL_FROM = 21  # per-label bars: horizontal from this many labels (the paper's are <= 19)


def save(fig: Figure, stem: str | Path) -> list[Path]:
    """Write `fig` as <stem>.png and <stem>.svg (Agg and SVG canvases, picked by suffix)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    fig.savefig(paths[0], dpi=120, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    return paths


def loss_table(histories: Mapping[str, Sequence[pd.DataFrame]]) -> pd.DataFrame:
    """Mean, std and seed count of train loss per step and val loss per epoch, for each head.

    Rows: head, kind ("train" by step, "val" by epoch), x, mean, std, seeds.
    """
    rows = []
    for head, frames in histories.items():
        for kind, x, column in (("train", "step", "train_loss"), ("val", "epoch", "val_loss")):
            parts = [f[[x, column]].dropna() for f in frames]
            parts = [p.groupby(x)[column].last() for p in parts if len(p)]
            if not parts:
                continue
            wide = pd.concat(parts, axis=1)
            for xv, values in wide.iterrows():
                v = values.dropna().to_numpy()
                rows.append(
                    {
                        "head": head,
                        "kind": kind,
                        "x": xv,
                        "mean": float(v.mean()),
                        "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                        "seeds": len(v),
                    }
                )
    return pd.DataFrame(rows, columns=["head", "kind", "x", "mean", "std", "seeds"])


def loss_curves(table: pd.DataFrame, stem: str | Path, *, title: str = "") -> list[Path]:
    """Fig. 4: train loss by step (left) and validation loss by epoch (right), band = +- std."""
    fig = Figure(figsize=(10, 3.6))
    axes = fig.subplots(1, 2)
    for ax, kind, xlabel in ((axes[0], "train", "step"), (axes[1], "val", "epoch")):
        for head, part in table[table["kind"] == kind].groupby("head"):
            part = part.sort_values("x")
            color = COLORS.get(head)
            label = f"{NAMES.get(head, head)} (n={part['seeds'].max()})"
            ax.plot(
                part["x"],
                part["mean"],
                color=color,
                label=label,
                lw=1.2,
                marker="o" if kind == "val" else None,
                ms=3,
            )
            ax.fill_between(
                part["x"],
                part["mean"] - part["std"],
                part["mean"] + part["std"],
                color=color,
                alpha=0.2,
                lw=0,
            )
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{'training' if kind == 'train' else 'validation'} BCE loss")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend()
    fig.suptitle(title or "Training and validation loss")
    fig.tight_layout()
    return save(fig, stem)


def _mark_pair(ax, x_left: float, x_right: float, top: float, mark: str) -> None:
    """A bracket over two bars with the significance mark above it."""
    h = 0.01
    ax.plot([x_left, x_left, x_right, x_right], [top, top + h, top + h, top], color="k", lw=0.8)
    ax.text((x_left + x_right) / 2, top + h, mark, ha="center", va="bottom", fontsize=8)


def auroc_limits(rows: pd.DataFrame) -> tuple[float, float]:
    """An AUROC axis range holding every bar, its whole +- std error bar and the mark above it:
    from below chance (0.5) or the lowest mean - std, even when that is below 0, to 1.05 or
    the highest mean + std plus room for the marks. The report passes one range to every test set's panel of a task."""
    means = rows[["cdl_mean", "dqc_mean"]].to_numpy(dtype=float)
    spread = np.nan_to_num(rows[["cdl_std", "dqc_std"]].to_numpy(dtype=float))
    lows, highs = (means - spread)[np.isfinite(means)], (means + spread)[np.isfinite(means)]
    low = min(0.5, float(lows.min())) if len(lows) else 0.5
    high = float(highs.max()) if len(highs) else 1.0
    # below 0 only when a bar's mean - std is (a wide spread near 0): it is drawn whole
    bottom = low - 0.05 if low < 0 else max(0.0, low - 0.05)
    return bottom, max(1.05, high + 0.08)


def _paired_bars(
    ax, compared: pd.DataFrame, ticks: list[str], horizontal: bool = False,
    limits: tuple[float, float] | None = None, mark: str = "mark",
) -> None:  # fmt: skip
    """CDL/DQC bar pairs (+- std) with their marks (column `mark`): vertical, a bracket per
    pair, or horizontal, one row per label from the top, the mark right of the bars. The
    score axis spans `limits` (default: `auroc_limits`), which never clips an error bar."""
    at = np.arange(len(compared))
    size = 0.38
    bars, err = (ax.barh, "xerr") if horizontal else (ax.bar, "yerr")
    for offset, head in ((-size / 2, "cdl"), (size / 2, "dqc")):
        spread = {err: compared[f"{head}_std"].fillna(0)}
        bars(at + offset, compared[f"{head}_mean"], size, **spread, color=COLORS[head],
             label=NAMES[head], capsize=2, error_kw={"lw": 0.8})  # fmt: skip
    means = compared[["cdl_mean", "dqc_mean"]].to_numpy(dtype=float)
    tops = means + np.nan_to_num(compared[["cdl_std", "dqc_std"]].to_numpy(dtype=float))
    for i, text in enumerate(compared[mark]):
        top = np.nanmax(tops[i]) if np.isfinite(tops[i]).any() else 0.5
        if horizontal:
            ax.text(top + 0.01, i, text, va="center", ha="left", fontsize=7)
        else:
            _mark_pair(ax, i - size / 2, i + size / 2, top + 0.01, text)
    lo, hi = limits or auroc_limits(compared)
    if horizontal:
        ax.set_yticks(at, ticks, fontsize=8)
        ax.invert_yaxis()  # most frequent label on top
        ax.set_xlim(lo, hi)
        ax.set_ylim(len(compared) - 0.5, -0.5)
    else:
        ax.set_xticks(at, ticks)
        ax.set_ylim(lo, hi)
    chance, score = (ax.axvline, ax.set_xlabel) if horizontal else (ax.axhline, ax.set_ylabel)
    chance(0.5, color="grey", ls=":", lw=0.8)
    score("AUROC")
    legend = {"fontsize": 8} if horizontal else {}
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), **legend)  # outside: marks stay clear
    ax.grid(axis="x" if horizontal else "y", alpha=0.3)


def _axes_text(row: Any, by: Sequence[str]) -> str:
    return ", ".join(f"{k}={getattr(row, k)}" for k in by)


def mean_auroc_figure(compared: pd.DataFrame, *, by: Sequence[str] = ()) -> Figure:
    """Fig. 5: mean AUROC (+- std over seeds) of CDL and DQC per task, test set and grid axis
    value (`by`), with the unadjusted marks of one paired t-test per pair."""
    rows = compared[compared["label"] == MEAN]
    rank = {name: i for i, name in enumerate(TESTSET_NAMES)}  # internal (NIH) first, as Fig. 5
    rows = rows.sort_values(
        [*by, "testset", "task"], key=lambda c: c.map(lambda v: (rank.get(v, 99), str(v)))
    )
    ticks = [
        "\n".join(filter(None, [f"{r.task.upper()}", TESTSET_NAMES.get(r.testset, r.testset),
                                 _axes_text(r, by)]))
        for r in rows.itertuples()
    ]  # fmt: skip
    fig = Figure(figsize=(max(4.0, 1.6 * len(rows) + 1), 3.8))
    ax = fig.subplots()
    _paired_bars(ax, rows, ticks)
    ax.set_title(f"Mean AUROC, CDL vs DQC\n({MARKS_RAW})", fontsize=8)
    fig.tight_layout()
    return fig


def mean_auroc_bars(
    compared: pd.DataFrame, stem: str | Path, *, by: Sequence[str] = ()
) -> list[Path]:
    return save(mean_auroc_figure(compared, by=by), stem)


def label_auroc_figure(
    compared: pd.DataFrame, task: str, testset: str, *,
    limits: tuple[float, float] | None = None, where: Mapping[str, Any] | None = None,
) -> Figure:  # fmt: skip
    """Figs. 6-11: per-label AUROC of CDL and DQC for one task and test set (and grid axis
    values `where`), by occurrence, marked with the Holm-adjusted p; AUROC axis `limits`.

    Up to HORIZONTAL_FROM - 1 labels: vertical bars as in the paper, the figure widening with
    n; from HORIZONTAL_FROM on: horizontal bars, one row per label, the figure growing taller.
    """
    keep = (compared["task"] == task) & (compared["testset"] == testset)
    for key, value in (where or {}).items():
        keep &= compared[key] == value
    part = compared[keep & (compared["label"] != MEAN)].set_index("label")
    part = part.loc[by_occurrence(list(part.index))].reset_index()
    name = TESTSET_NAMES.get(testset, testset)
    axes = "".join(f", {k}={v}" for k, v in (where or {}).items())
    title = f"Per-label AUROC, {task.upper()}, {name} test set{axes}, sorted by occurrence"
    # a table without Holm's column (made by hand) gets its unadjusted marks, said as such
    mark = "mark_holm" if "mark_holm" in part.columns else "mark"
    title += f"\n({MARKS_HOLM if mark == 'mark_holm' else MARKS_UNADJUSTED})"
    if len(part) >= HORIZONTAL_FROM:
        fig = Figure(figsize=(7.5, 0.28 * len(part) + 1.4))
        ax = fig.subplots()
        _paired_bars(ax, part, list(part["label"]), True, limits, mark)
        ax.set_title(title, fontsize=8)
        fig.tight_layout()
        return fig
    fig = Figure(figsize=(max(5.0, 0.75 * len(part) + 1.5), 4.0))
    ax = fig.subplots()
    _paired_bars(ax, part, list(part["label"]), False, limits, mark)
    ax.tick_params(axis="x", labelrotation=45)
    for tick in ax.get_xticklabels():
        tick.set_horizontalalignment("right")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def label_auroc_bars(
    compared: pd.DataFrame, task: str, testset: str, stem: str | Path, **kwargs: Any
) -> list[Path]:
    return save(label_auroc_figure(compared, task, testset, **kwargs), stem)


def label_style(k: int) -> dict[str, Any]:
    """The volcano plot's k-th label: an Okabe-Ito colour, filled for the first eight labels and
    hollow (a thick edge of that colour) for the next eight; beyond, tab20 (filled)."""
    if k < 2 * len(OKABE_ITO):
        colour = OKABE_ITO[k % len(OKABE_ITO)]
        if k < len(OKABE_ITO):
            return {"color": colour, "edgecolor": "k", "lw": 0.4}
        return {"facecolor": "none", "edgecolor": colour, "lw": 1.6}
    return {"color": matplotlib.colormaps["tab20"](k % 20), "edgecolor": "k", "lw": 0.4}


def volcano_figure(
    compared: pd.DataFrame, labels: Sequence[str], *, title: str = "",
    alpha: float = EvalConfig.alpha,
) -> Figure:  # fmt: skip
    """Figs. 12-13: one point per (task, test set, grid axis value, label) for `labels`.

    x = sign-preserving log2 of the eq. (4) percent difference (right: CDL better), y = -log10
    of the paired t-test's unadjusted p; the dashed line, labelled "p = alpha" on the plot, is
    the significance level (the report passes the experiment's eval.alpha).
    """
    part = compared[compared["label"].isin(labels)].copy()
    part = part[np.isfinite(part["p"].astype(float)) & np.isfinite(part["pct_diff"].astype(float))]
    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.subplots()
    markers = dict(zip(sorted(compared["testset"].unique()), "o^sDv<>", strict=False))
    ordered = [lab for lab in by_occurrence(list(labels)) if lab in set(part["label"])]
    for k, label in enumerate(ordered):
        rows = part[part["label"] == label]
        for r in rows.itertuples():
            ax.scatter(signed_log2(r.pct_diff), -math.log10(max(r.p, 1e-300)),
                       marker=markers.get(r.testset, "o"), s=34, **label_style(k),
                       label=label if r.Index == rows.index[0] else None)  # fmt: skip
    for testset, marker in markers.items():
        ax.scatter([], [], marker=marker, color="w", edgecolor="k",
                   label=TESTSET_NAMES.get(testset, testset))  # fmt: skip
    line = -math.log10(alpha)
    ax.axhline(line, color="k", ls="--", lw=1, label=f"p = {alpha:g}")
    ax.text(0.01, line, f"p = {alpha:g}", transform=ax.get_yaxis_transform(), ha="left",
            va="bottom", fontsize=8)  # fmt: skip
    ax.set_ylim(0, max(line * 1.25, ax.get_ylim()[1]))  # the line always shows
    ax.axvline(0, color="grey", lw=0.6)
    ax.set_xlabel("log2(% diff. AUROC), sign kept (right: CDL better)")
    ax.set_ylabel("-log10(p), paired t-test, unadjusted")
    ax.set_title(title or "Volcano plot", fontsize=10)
    ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def volcano(
    compared: pd.DataFrame, labels: Sequence[str], stem: str | Path, **kwargs: Any
) -> list[Path]:
    return save(volcano_figure(compared, labels, **kwargs), stem)


BENCH_ALIASES = {
    "framework": ("framework", "impl", "implementation", "library", "backend"),
    "head": ("head", "model"),
    "n": ("n", "qubits", "labels", "num_labels", "task"),
    "mean_s": ("mean_s", "mean", "seconds", "time_s", "mean_time_s"),
    "std_s": ("std_s", "std", "std_time_s"),
}


def read_benchmark(path: str | Path) -> pd.DataFrame:
    """A benchmark CSV as columns framework, head, n, mean_s, std_s (names matched leniently)."""
    path = Path(path)
    frame = pd.read_csv(path)
    lower = {str(c).strip().lower(): c for c in frame.columns}
    out = {}
    for name, options in BENCH_ALIASES.items():
        found = next((lower[o] for o in options if o in lower), None)
        if found is None and name != "std_s":
            raise ValueError(
                f"{path}: no {name!r} column (accepted: {options}); has {list(frame.columns)}"
            )
        out[name] = frame[found] if found is not None else 0.0
    table = pd.DataFrame(out)
    table["head"] = table["head"].astype(str).str.lower()
    return table


def benchmark_bars(table: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Table III as grouped bars: seconds per training step, per (n, head), one bar per framework."""
    groups = table.groupby(["n", "head"], sort=True)
    frameworks = list(dict.fromkeys(table["framework"]))
    keys = list(groups.groups)
    x = np.arange(len(keys))
    width = 0.8 / max(1, len(frameworks))
    fig = Figure(figsize=(max(5.0, 1.2 * len(keys) + 2), 3.8))
    ax = fig.subplots()
    for k, fw in enumerate(frameworks):
        means, stds = [], []
        for key in keys:
            row = groups.get_group(key)
            row = row[row["framework"] == fw]
            means.append(float(row["mean_s"].iloc[0]) if len(row) else np.nan)
            stds.append(float(row["std_s"].iloc[0]) if len(row) else 0.0)
        ax.bar(
            x + (k - (len(frameworks) - 1) / 2) * width,
            means,
            width,
            yerr=stds,
            label=str(fw),
            capsize=2,
        )
    ax.set_xticks(x, [f"{h.upper()}\nn={n}" for n, h in keys])
    values = table["mean_s"].to_numpy(dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    if len(values) and values.max() / values.min() > 20:  # Table III spans 0.06 s to 15 s
        ax.set_yscale("log")
    ax.set_ylabel("seconds per training step")
    ax.set_title("Training-step wall-clock time (Table III)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save(fig, stem)
