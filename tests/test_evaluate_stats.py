"""Statistics across seeds against hand computations, scipy and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from qcxr.evaluate import stats as S


def test_paired_ttest_matches_hand_computation():
    a = np.array([0.77, 0.78, 0.76, 0.775, 0.771])
    b = np.array([0.70, 0.72, 0.69, 0.73, 0.68])
    d = a - b
    t_hand = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    p_hand = 2 * sps.t.sf(abs(t_hand), df=len(d) - 1)
    t, p, n = S.paired_ttest(a, b)
    assert (t, p, n) == (pytest.approx(t_hand), pytest.approx(p_hand), 5)


def test_paired_ttest_drops_nan_pairs_and_needs_two():
    t, p, n = S.paired_ttest([0.7, np.nan, 0.8, 0.75], [0.6, 0.5, 0.7, 0.7])
    assert n == 3 and np.isfinite(p)
    assert math.isnan(S.paired_ttest([0.7], [0.6])[1])


def test_percent_difference_is_eq4_in_percent():
    # the paper: CDL 0.77 vs DQC 0.70 on CXR-8 NIH is a 9.5% difference
    assert S.percent_difference(0.77, 0.70) == pytest.approx(100 * 2 * 0.07 / 1.47)
    assert round(S.percent_difference(0.77, 0.70), 1) == 9.5
    assert S.percent_difference(0.6, 0.7) < 0


@pytest.mark.parametrize(
    "p,mark",
    [
        (0.2, "ns"),
        (0.05, "ns"),
        (0.0499, "*"),
        (0.01, "*"),
        (0.0099, "**"),
        (0.001, "**"),
        (0.0009, "***"),
        (float("nan"), "n.a."),
    ],
)
def test_significance_marks(p, mark):
    assert S.significance_mark(p) == mark


def test_holm_by_hand():
    p = [0.01, 0.04, 0.03, np.nan, 0.005]
    # sorted finite: 0.005 (x4) = 0.02, 0.01 (x3) = 0.03, 0.03 (x2) = 0.06, 0.04 (x1) = 0.04 -> 0.06
    expected = [0.03, 0.06, 0.06, np.nan, 0.02]
    np.testing.assert_allclose(S.holm(p), expected, equal_nan=True)
    np.testing.assert_allclose(S.holm([0.3, 0.6]), [0.6, 0.6])  # 2 * 0.3, then monotone
    np.testing.assert_allclose(S.holm([0.6, 0.7]), [1.0, 1.0])  # capped at 1


def test_holm_matches_statsmodels_when_installed():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = np.random.default_rng(0).random(12) ** 3
    np.testing.assert_allclose(S.holm(p), multitest.multipletests(p, method="holm")[1])


def _auroc_table(rng):
    rows = []
    labels = ["Infiltration", "Effusion", "Atelectasis"]
    for seed in range(5):
        for head, base in (("cdl", 0.78), ("dqc", 0.71)):
            vals = base + rng.normal(0, 0.01, size=3)
            for label, v in zip(labels, vals, strict=True):
                rows.append(("cxr8", "nih", head, seed, label, v))
            rows.append(("cxr8", "nih", head, seed, "mean", vals.mean()))
    return pd.DataFrame(rows, columns=["task", "testset", "head", "seed", "label", "auroc"])


def test_compare_against_independent_computation():
    rng = np.random.default_rng(5)
    table = _auroc_table(rng).sample(frac=1.0, random_state=1)  # order must not matter
    out = S.compare(table)
    assert len(out) == 4
    per_label_p = []
    for label in ["Infiltration", "Effusion", "Atelectasis", "mean"]:
        part = table[table.label == label]
        cdl = part[part["head"] == "cdl"].sort_values("seed")["auroc"].to_numpy()
        dqc = part[part["head"] == "dqc"].sort_values("seed")["auroc"].to_numpy()
        row = out[out.label == label].iloc[0]
        p = sps.ttest_rel(cdl, dqc).pvalue
        assert row["p"] == pytest.approx(p)
        assert row["cdl_mean"] == pytest.approx(cdl.mean())
        assert row["dqc_std"] == pytest.approx(dqc.std(ddof=1))
        assert row["pct_diff"] == pytest.approx(
            200 * (cdl.mean() - dqc.mean()) / (cdl.mean() + dqc.mean())
        )
        assert row["mark"] == S.significance_mark(p)
        if label != "mean":
            per_label_p.append(p)
    m = len(per_label_p)
    order = np.argsort(per_label_p)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * per_label_p[i]))
        adj[i] = running
    labels = ["Infiltration", "Effusion", "Atelectasis"]
    got = [out[out.label == lab]["p_holm"].iloc[0] for lab in labels]
    np.testing.assert_allclose(got, adj)
    rows = S.summary_table(out)
    assert len(rows) == 1 and rows[0]["task"] == "cxr8" and rows[0]["mark"] in ("*", "**", "***")
    assert rows[0]["cdl"].startswith(f"{out[out.label == 'mean'].cdl_mean.iloc[0]:.3f} ± ")


def test_bootstrap_matches_loop_over_resamples():
    rng = np.random.default_rng(6)
    n, labels = 120, ["A", "B"]
    truth = (rng.random((n, 2)) < 0.35).astype(float)
    truth[:5, 1] = np.nan
    ids = [f"x{i}" for i in range(n)]

    def run(strength, seed):
        r = np.random.default_rng(seed)
        return ids, np.nan_to_num(truth) * strength + r.random((n, 2)), truth

    runs = {"cdl": [run(0.8, s) for s in range(3)], "dqc": [run(0.3, 10 + s) for s in range(3)]}
    # shuffle one run's rows: alignment by id must undo it
    perm = rng.permutation(n)
    i0, p0, t0 = runs["dqc"][0]
    runs["dqc"][0] = ([i0[k] for k in perm], p0[perm], t0[perm])
    out = S.bootstrap_auroc(runs, labels, resamples=40, seed=3, alpha=0.1, chunk=15)
    # independent: same multinomial draws, explicit resampled rows, sklearn AUROC
    draws = np.random.default_rng(3)
    chunks = [draws.multinomial(n, np.full(n, 1 / n), size=s) for s in (15, 15, 10)]
    counts = np.concatenate(chunks)
    unshuffled = {"cdl": runs["cdl"], "dqc": [run(0.3, 10 + s) for s in range(3)]}
    ref = {}
    for head, rs in unshuffled.items():
        vals = np.zeros((40, 2))
        for r in range(40):
            idx = np.repeat(np.arange(n), counts[r])
            for j in range(2):
                keep = ~np.isnan(truth[idx, j])
                vals[r, j] = np.mean(
                    [roc_auc_score(t[idx, j][keep], p[idx, j][keep]) for _, p, t in rs]
                )
        ref[head] = vals
    for head in ("cdl", "dqc"):
        for j, label in enumerate(labels):
            row = out[(out["head"] == head) & (out.label == label)].iloc[0]
            assert row["lo"] == pytest.approx(np.percentile(ref[head][:, j], 5))
            assert row["hi"] == pytest.approx(np.percentile(ref[head][:, j], 95))
        mean_row = out[(out["head"] == head) & (out.label == "mean")].iloc[0]
        assert mean_row["hi"] == pytest.approx(np.percentile(ref[head].mean(1), 95))
    diff = out[(out["head"] == "cdl-dqc") & (out.label == "mean")].iloc[0]
    assert diff["lo"] == pytest.approx(np.percentile(ref["cdl"].mean(1) - ref["dqc"].mean(1), 5))
    assert diff["lo"] > 0  # CDL's made-up signal is much stronger


def test_bootstrap_rejects_mismatched_ids():
    p = np.zeros((3, 1))
    runs = {"cdl": [(["a", "b", "c"], p, p)], "dqc": [(["a", "b", "d"], p, p)]}
    with pytest.raises(ValueError, match="different test image ids"):
        S.bootstrap_auroc(runs, ["A"], resamples=2)
