"""Statistics across seeds: CDL against DQC for each task and test set (Sec. III-G).

- Paired t-test (scipy.stats.ttest_rel, pairs matched by seed) on mean AUROC and on every
  label's AUROC, as in the paper.
- Percent difference, eq. (4): 100 * 2 * (CDL - DQC) / (CDL + DQC), on the means over seeds.
- Significance marks as in the paper's captions: ns p >= 0.05, * < 0.05, ** < 0.01, *** < 0.001.
- Beyond the paper: Holm's step-down correction across the labels of one comparison, reported
  beside the raw p-values, and percentile bootstrap confidence intervals for each model's
  seed-mean AUROC (test images resampled, the same resamples for every seed and both heads, so
  the CDL - DQC difference gets an interval too).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from qcxr.config import HEADS, EvalConfig
from qcxr.evaluate.metrics import weighted_auroc

MEAN = "mean"  # the row holding the mean over labels, beside the per-label rows
DIFF = "cdl-dqc"  # the bootstrap rows of the CDL - DQC difference


def significance_mark(p: float) -> str:
    """The paper's marks: ns (p >= 0.05), * (< 0.05), ** (< 0.01), *** (< 0.001); 'n.a.' if NaN (untestable)."""
    if p is None or not math.isfinite(p):
        return "n.a."
    if p < 0.001:
        return "***"
    if p < 0.01:
        return "**"
    if p < 0.05:
        return "*"
    return "ns"


def percent_difference(cdl: float, dqc: float) -> float:
    """Eq. (4) in percent: 100 * 2 * (CDL - DQC) / (CDL + DQC); positive when CDL is better."""
    total = cdl + dqc
    return 100.0 * 2.0 * (cdl - dqc) / total if total else math.nan


def signed_log2(value: float | np.ndarray) -> float | np.ndarray:
    """sign(v) * log2(1 + |v|): the volcano plot's x-axis for a percent difference of either sign.

    The paper plots log2(% diff.) while also showing labels where DQC beat CDL (negative
    differences), so a sign-preserving log is used; 0 maps to 0.
    """
    return np.sign(value) * np.log2(1.0 + np.abs(value))


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, int]:
    """(t, two-sided p, pairs) of scipy.stats.ttest_rel over pairs where both values are finite."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    n = int(keep.sum())
    if n < 2:
        return math.nan, math.nan, n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # zero-variance differences -> NaN
        result = sps.ttest_rel(a[keep], b[keep])
    return float(result.statistic), float(result.pvalue), n


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (family = the finite entries); NaN entries stay NaN."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = len(finite)
    if m == 0:
        return out
    order = finite[np.argsort(p[finite], kind="mergesort")]
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


def _std(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.mean(finite)) if len(finite) else math.nan


def compare(auroc: pd.DataFrame, *, metric: str = "auroc", by: Sequence[str] = ()) -> pd.DataFrame:
    """CDL against DQC for every (task, testset, *by, label) in a long table.

    `auroc` has columns task, testset, head, seed, label, `metric` and the columns `by` (a
    grid's other axes, e.g. "loss": each value is a comparison of its own); the label "mean"
    holds the mean over labels. Returns one row per (task, testset, *by, label) with each
    head's mean and sample std (ddof=1) over seeds, the number of seed pairs, eq. (4) percent
    difference on the seed means, t, p, its mark, and the Holm-adjusted p over the labels (not
    the mean row) of the same task, test set and `by` values.
    """
    keys = ["task", "testset", *by]
    missing = {"head", "seed", "label", metric, *keys} - set(auroc.columns)
    if missing:
        raise ValueError(f"AUROC table lacks columns {sorted(missing)}")
    frame = auroc.assign(head=auroc["head"].str.lower())
    rows = []
    for values, part in frame.groupby(keys, sort=True):
        # groupby keeps all-NaN labels (pivot_table would drop them): they get NaN, not a KeyError
        wide = part.groupby(["label", "seed", "head"])[metric].first().unstack("head")
        for head in HEADS:
            if head not in wide.columns:
                wide[head] = np.nan
        for label in part["label"].drop_duplicates():
            by_seed = wide.loc[label]
            rows.append(
                {**dict(zip(keys, values, strict=True)), "label": label,
                 **_pair_row(by_seed["cdl"].to_numpy(), by_seed["dqc"].to_numpy())}
            )  # fmt: skip
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["p_holm"] = np.nan
    for _, idx in out[out["label"] != MEAN].groupby(keys).groups.items():
        out.loc[idx, "p_holm"] = holm(out.loc[idx, "p"].to_numpy())
    out.loc[out["label"] == MEAN, "p_holm"] = out.loc[out["label"] == MEAN, "p"]
    out["mark_holm"] = [significance_mark(p) for p in out["p_holm"]]
    return out


def _pair_row(cdl: np.ndarray, dqc: np.ndarray) -> dict[str, Any]:
    """One comparison's numbers: means, stds, seeds per head, pairs, % diff, t, p, mark."""
    t, p, pairs = paired_ttest(cdl, dqc)
    cdl_mean, dqc_mean = _mean(cdl), _mean(dqc)
    return {
        "cdl_mean": cdl_mean,
        "cdl_std": _std(cdl),
        "dqc_mean": dqc_mean,
        "dqc_std": _std(dqc),
        "cdl_seeds": int(np.isfinite(cdl).sum()),
        "dqc_seeds": int(np.isfinite(dqc).sum()),
        "pairs": pairs,
        "pct_diff": percent_difference(cdl_mean, dqc_mean),
        "t": t,
        "p": p,
        "mark": significance_mark(p),
    }


def mean_and_std(mean: float, std: float, seeds: int, digits: int = 3) -> str:
    """ "0.712 ± 0.013" over seeds; "0.712 (1 seed)" where no std exists; "-" without a run."""
    if not seeds or not math.isfinite(mean):
        return "-"
    if seeds < 2 or not math.isfinite(std):
        return f"{mean:.{digits}f} (1 seed)"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summary_table(
    compared: pd.DataFrame, *, digits: int = 3, by: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Rows for the closing note: task, testset, `by` axes, CDL and DQC mean +- std (or the one
    seed's value, or "-" without runs), % diff, p, mark, seeds per head.

    One row per (task, testset, *by), from the mean-AUROC rows of `compare`.
    """
    rows = []
    for _, r in compared[compared["label"] == MEAN].iterrows():
        seeds = {h: int(r.get(f"{h}_seeds", r["pairs"])) for h in HEADS}
        rows.append(
            {
                "task": r["task"],
                "testset": r["testset"],
                **{k: r[k] for k in by},
                "cdl": mean_and_std(r["cdl_mean"], r["cdl_std"], seeds["cdl"], digits),
                "dqc": mean_and_std(r["dqc_mean"], r["dqc_std"], seeds["dqc"], digits),
                "pct_diff": round(float(r["pct_diff"]), 2),
                "p": float(r["p"]),
                "mark": r["mark"],
                "seeds": "/".join(str(seeds[h]) for h in HEADS),
            }
        )
    return rows


def _aligned(runs: Sequence[tuple[list[str], np.ndarray, np.ndarray]], where: str):
    """Reorder every run's rows to the first run's id order; the id sets must match."""
    ref_ids = list(runs[0][0])
    ref_index = {k: i for i, k in enumerate(ref_ids)}
    out = []
    for n, (ids, probs, truth) in enumerate(runs):
        if len(ids) != len(ref_ids) or set(ids) != ref_index.keys():
            raise ValueError(f"{where}: run {n} has different test image ids than run 0")
        order = np.argsort([ref_index[k] for k in ids])
        out.append((probs[order], truth[order]))
    return out


def _per_head(
    runs: dict[str, Sequence[tuple[list[str], np.ndarray, np.ndarray]]], where: str
) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Each head's seeds as (probs, truth), rows aligned to one id order across every run."""
    heads = [h for h in runs if runs[h]]
    aligned = _aligned([run for h in heads for run in runs[h]], where)
    per_head, start = {}, 0
    for h in heads:
        per_head[h] = aligned[start : start + len(runs[h])]
        start += len(runs[h])
    return per_head


def _seed_mean_auroc(
    seeds: Sequence[tuple[np.ndarray, np.ndarray]], j: int, weights: np.ndarray
) -> np.ndarray:
    """Label j's AUROC averaged over seeds, for each row of `weights` (R, N): shape (R,)."""
    per_seed = [
        weighted_auroc(p[:, j], t[:, j] == 1, weights, np.isfinite(t[:, j])) for p, t in seeds
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN label -> NaN, not a crash
        return np.nanmean(per_seed, axis=0)


def point_estimates(
    per_head: dict[str, Sequence[tuple[np.ndarray, np.ndarray]]],
) -> dict[str, np.ndarray]:
    """Each head's seed-mean AUROC per label on the test set as it is: {head: (n_labels,)}."""
    out = {}
    for h, seeds in per_head.items():
        n_images, n_labels = seeds[0][0].shape
        ones = np.ones((1, n_images), dtype=np.int64)
        out[h] = np.empty(n_labels)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN label -> NaN, not a crash
            for j in range(n_labels):
                out[h][j] = np.nanmean(
                    [
                        weighted_auroc(p[:, j], t[:, j] == 1, ones, np.isfinite(t[:, j]))[0]
                        for p, t in seeds
                    ]
                )
    return out


def resampled_aurocs(
    per_head: dict[str, Sequence[tuple[np.ndarray, np.ndarray]]],
    resamples: int,
    *,
    seed: int = 0,
    chunk: int = 100,
    where: str = "bootstrap",
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Each head's seed-mean AUROC per label on `resamples` bootstrap resamples of the test
    images: {head: (resamples, n_labels)}.

    A resample is a row of multinomial counts, drawn `chunk` rows at a time from
    default_rng(seed), the same counts weighting every seed and head.
    """
    from tqdm.auto import tqdm

    n_images, n_labels = next(iter(per_head.values()))[0][0].shape
    rng = np.random.default_rng(seed)
    draws = {h: np.empty((resamples, n_labels)) for h in per_head}
    bar = tqdm(total=resamples, desc=f"bootstrap {where}", unit="resample", disable=not progress)
    for lo in range(0, resamples, chunk):
        size = min(chunk, resamples - lo)
        counts = rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=size)
        counts = counts.astype(np.int32)
        for h, seeds in per_head.items():
            for j in range(n_labels):
                draws[h][lo : lo + size, j] = _seed_mean_auroc(seeds, j, counts)
        bar.update(size)
    bar.close()
    return draws


def percentile_interval(sample: np.ndarray, alpha: float) -> tuple[float, float, int]:
    """(lo, hi, resamples used): the central 1 - alpha percentile interval of the finite draws."""
    sample = sample[np.isfinite(sample)]
    if not len(sample):
        return math.nan, math.nan, 0
    lo, hi = np.percentile(sample, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi), int(len(sample))


def interval_table(
    point: dict[str, np.ndarray],
    draws: dict[str, np.ndarray],
    labels: Sequence[str],
    alpha: float,
) -> pd.DataFrame:
    """Rows head, label, estimate, lo, hi, resamples: per label and for the mean over labels,
    for each head and, when both exist, for the CDL - DQC difference."""
    # (head, label, point estimate, resampled values)
    entries: list[tuple[str, str, float, np.ndarray]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN label -> NaN, not a crash
        means = {h: (np.nanmean(point[h]), np.nanmean(draws[h], axis=1)) for h in point}
        for h in point:
            entries += [(h, lab, point[h][j], draws[h][:, j]) for j, lab in enumerate(labels)]
            entries.append((h, MEAN, *means[h]))
        if {"cdl", "dqc"} <= set(point):
            for j, label in enumerate(labels):
                diff = draws["cdl"][:, j] - draws["dqc"][:, j]
                entries.append((DIFF, label, point["cdl"][j] - point["dqc"][j], diff))
            (cdl, cdl_draws), (dqc, dqc_draws) = means["cdl"], means["dqc"]
            entries.append((DIFF, MEAN, cdl - dqc, cdl_draws - dqc_draws))
        rows = []
        for head, label, estimate, sample in entries:
            lo, hi, used = percentile_interval(sample, alpha)
            rows.append(
                {
                    "head": head,
                    "label": label,
                    "estimate": float(estimate),
                    "lo": lo,
                    "hi": hi,
                    "resamples": used,
                }
            )
    return pd.DataFrame(rows)


def bootstrap_auroc(
    runs: dict[str, Sequence[tuple[list[str], np.ndarray, np.ndarray]]],
    labels: Sequence[str],
    *,
    resamples: int = EvalConfig.bootstrap,
    seed: int = 0,
    alpha: float = EvalConfig.alpha,
    chunk: int = 100,
    where: str = "bootstrap",
    progress: bool = False,
) -> pd.DataFrame:
    """Percentile bootstrap CIs of each head's seed-mean AUROC, per label and for the mean.

    `runs` maps a head to its seeds' (ids, probs (N, n), truth (N, n)) on one test set. Test
    images are resampled with replacement; each resample weights every seed and head alike.
    Rows: head (each head, and "cdl-dqc" when both exist), label, estimate, lo, hi, resamples.
    The defaults are the paper's (config.EvalConfig); the report passes the experiment's own.
    """
    per_head = _per_head(runs, where)
    point = point_estimates(per_head)
    draws = resampled_aurocs(
        per_head, resamples, seed=seed, chunk=chunk, where=where, progress=progress
    )
    return interval_table(point, draws, labels, alpha)


def long_table(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Long AUROC table (task, testset, head, seed, label, auroc, ap, f1, then a grid's other
    axes) from run metrics.

    Each record: task, head, seed, `metrics` (a metrics.json dict with "testsets") and,
    optionally, "axes" ({axis: value}, e.g. {"loss": "focal"}), each a column.
    """
    rows, axes = [], {}
    for rec in records:
        axes.update(dict.fromkeys(rec.get("axes") or {}))
        for testset, m in rec["metrics"].get("testsets", {}).items():
            base = {"task": rec["task"], "testset": testset, "head": rec["head"],
                    "seed": rec["seed"], **(rec.get("axes") or {})}  # fmt: skip
            for label, v in m["labels"].items():
                rows.append(
                    {
                        **base,
                        "label": label,
                        **{k: v.get(k, math.nan) for k in ("auroc", "ap", "f1")},
                    }
                )
            rows.append(
                {
                    **base,
                    "label": MEAN,
                    **{k: m["mean"].get(k, math.nan) for k in ("auroc", "ap", "f1")},
                }
            )
    columns = ["task", "testset", "head", "seed", "label", "auroc", "ap", "f1", *axes]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({"auroc": float, "ap": float, "f1": float})
