"""Tests for crisp.stats on synthetic data whose answers are known by hand or by construction."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from crisp.stats import (COMPARISON_COLUMNS, compare_to_baseline, correlation, holm, mcnemar, mcnemar_runs,
                         minimum_detectable_difference, paired_difference, summarize, verdict)

T_975_DF2 = 4.302652729911275  # t quantile 0.975 with 2 degrees of freedom (tables: 4.303)
T_975_DF4 = 2.7764451051977987  # ... with 4 degrees of freedom (tables: 2.776)


# ---------------------------------------------------------------- summarize

def test_summarize_hand_computed():
    metrics = pd.DataFrame({
        "config": ["a", "a", "a", "a", "b"],
        "dev_accuracy": [0.90, 0.92, 0.94, None, 0.80],  # the None run must be ignored
    })
    out = summarize(metrics).set_index("config")
    a = out.loc["a"]
    assert a["n"] == 3
    assert a["mean"] == pytest.approx(0.92)
    assert a["std"] == pytest.approx(0.02)
    assert a["sem"] == pytest.approx(0.02 / math.sqrt(3))
    half = T_975_DF2 * 0.02 / math.sqrt(3)
    assert (a["ci_low"], a["ci_high"]) == pytest.approx((0.92 - half, 0.92 + half))
    b = out.loc["b"]
    assert b["n"] == 1 and b["mean"] == pytest.approx(0.80)
    assert all(math.isnan(b[c]) for c in ("std", "sem", "ci_low", "ci_high"))


def test_summarize_equal_values_give_zero_width_ci():
    out = summarize(pd.DataFrame({"config": ["a"] * 3, "dev_accuracy": [0.9, 0.9, 0.9]}))
    assert out.loc[0, "std"] == 0 and out.loc[0, "ci_low"] == out.loc[0, "ci_high"] == pytest.approx(0.9)


# ---------------------------------------------------------------- paired_difference

def test_paired_difference_known_example():
    b = np.array([0.90, 0.91, 0.89, 0.92, 0.90])
    d = np.array([0.01, 0.02, 0.03, 0.04, 0.00])  # mean 0.02, sd sqrt(2.5e-4)
    res = paired_difference(b + d, b, n_boot=2000)
    assert res["n"] == 5
    assert res["mean_diff"] == pytest.approx(0.02)
    assert res["std_diff"] == pytest.approx(math.sqrt(2.5e-4))
    half = T_975_DF4 * math.sqrt(2.5e-4) / math.sqrt(5)
    assert (res["ci_low"], res["ci_high"]) == pytest.approx((0.02 - half, 0.02 + half))
    assert res["ci_low"] < 0.02 < res["ci_high"]
    assert res["p_ttest"] == pytest.approx(stats.ttest_rel(b + d, b).pvalue)
    assert res["boot_ci_low"] < 0.02 < res["boot_ci_high"]
    assert 0.0 <= res["boot_ci_low"] and res["boot_ci_high"] <= 0.04  # a mean can't leave the data range
    assert math.isnan(res["p_wilcoxon"])  # n < 6


def test_paired_difference_wilcoxon_bootstrap_seed_and_missing():
    rng = np.random.default_rng(1)
    b = rng.normal(0.9, 0.01, 8)
    a = b + rng.normal(0.01, 0.005, 8)
    res = paired_difference(a, b, n_boot=2000, seed=3)
    assert res["p_wilcoxon"] == pytest.approx(stats.wilcoxon(a - b).pvalue)
    assert res == paired_difference(a, b, n_boot=2000, seed=3)  # the bootstrap is reproducible
    a_missing = np.append(a, np.nan)
    assert paired_difference(a_missing, np.append(b, 0.5), n_boot=2000, seed=3) == res  # NaN pair dropped
    with pytest.raises(ValueError):
        paired_difference(a, b[:-1])


def test_paired_difference_constant_difference_has_no_t_p_value():
    b = np.array([0.90, 0.91, 0.89])
    res = paired_difference(b + 0.01, b, n_boot=500)
    assert math.isnan(res["p_ttest"])
    assert res["ci_low"] == pytest.approx(0.01) and res["ci_high"] == pytest.approx(0.01)


# ---------------------------------------------------------------- McNemar

LABELS = [1, 1, 1, 1, 0, 0, 0, 0]
PRED_A = [1, 1, 1, 0, 0, 0, 1, 0]  # right on 0, 1, 2, 4, 5, 7
PRED_B = [0, 0, 1, 1, 0, 1, 1, 0]  # right on 2, 3, 4, 7


def test_mcnemar_hand_made():
    res = mcnemar(PRED_A, PRED_B, LABELS)
    assert (res["b"], res["c"]) == (3, 1)  # a-only right: 0, 1, 5; b-only right: 3
    assert res["p_value"] == pytest.approx(10 / 16)  # 2 * P(X >= 3), X ~ Bin(4, 1/2)
    assert res["acc_a"] == pytest.approx(6 / 8) and res["acc_b"] == pytest.approx(4 / 8)
    assert mcnemar(PRED_A, PRED_A, LABELS)["p_value"] == 1.0
    ten = mcnemar([1] * 10, [0] * 10, [1] * 10)
    assert (ten["b"], ten["c"], ten["p_value"]) == (10, 0, pytest.approx(2 * 0.5 ** 10))


def _preds(pred, labels=LABELS, order=None):
    frame = pd.DataFrame({"idx": range(len(labels)), "label": labels, "pred": pred, "prob_pos": 0.5})
    return frame if order is None else frame.iloc[order].reset_index(drop=True)


def test_mcnemar_runs_aligns_by_idx_and_pools():
    shuffled = _preds(PRED_B, order=[7, 3, 0, 5, 1, 6, 2, 4])
    per_run, pooled = mcnemar_runs([_preds(PRED_A), _preds(PRED_A)], [shuffled, _preds(PRED_A)], seeds=[1, 2])
    assert per_run["seed"].tolist() == [1, 2]
    assert per_run[["b", "c"]].values.tolist() == [[3, 1], [0, 0]]
    assert (pooled["b"], pooled["c"], pooled["n"], pooled["n_runs"]) == (3, 1, 16, 2)
    assert pooled["p_value"] == pytest.approx(10 / 16)


def test_mcnemar_runs_rejects_mismatches():
    other_idx = _preds(PRED_B).assign(idx=lambda f: f["idx"] + 1)
    with pytest.raises(ValueError, match="idx"):
        mcnemar_runs([_preds(PRED_A)], [other_idx])
    with pytest.raises(ValueError, match="label"):
        mcnemar_runs([_preds(PRED_A)], [_preds(PRED_B, labels=[1 - x for x in LABELS])])
    with pytest.raises(ValueError):
        mcnemar_runs([_preds(PRED_A)], [])


# ---------------------------------------------------------------- Holm

def test_holm_hand_computed():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.02, 0.011]) == pytest.approx([0.022, 0.022])  # monotone: 0.02 alone would stay 0.02
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    out = holm([0.01, float("nan"), 0.04])  # NaN is not a test: m = 2
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert holm([]) == []


# ---------------------------------------------------------------- correlation

def test_correlation_known_answers():
    x = np.arange(10.0)
    line = correlation(x, 2 * x + 1)
    assert line["n"] == 10
    assert line["pearson_r"] == pytest.approx(1.0) and line["spearman_rho"] == pytest.approx(1.0)
    assert correlation(x, -np.exp(x))["spearman_rho"] == pytest.approx(-1.0)
    rng = np.random.default_rng(0)
    noisy = correlation(x, x + rng.normal(0, 3, 10))
    assert noisy["pearson_ci_low"] < noisy["pearson_r"] < noisy["pearson_ci_high"]
    for bad in (correlation([1.0, 2.0], [3.0, 4.0]), correlation(x, np.ones(10))):
        assert all(math.isnan(v) for k, v in bad.items() if k != "n")


def test_correlation_matches_scipy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=12), rng.normal(size=12)
    res = correlation(x, y)
    assert res["pearson_p"] == pytest.approx(stats.pearsonr(x, y).pvalue)
    # Spearman's p is a permutation p (random pairings at n = 12): close to scipy's t approximation here.
    assert res["spearman_p"] == pytest.approx(stats.spearmanr(x, y).pvalue, abs=0.03)


def test_spearman_p_is_exact_for_few_points():
    # Four points in perfect rank order: 2 of the 24 pairings reach |rho| = 1. The t approximation says 0.
    res = correlation([0.0, 0.58, 0.78, 0.79], [89.6, 89.2, 88.5, 88.4])
    assert res["spearman_rho"] == pytest.approx(-1.0)
    assert res["spearman_p"] == pytest.approx(2 / 24)
    # rho = 0.5 over three points: 3 of the 6 pairings reach rho >= 0.5, so two-sided p = 2 * 3/6 = 1.
    assert correlation([1.0, 2.0, 3.0], [1.0, 3.0, 2.0])["spearman_p"] == pytest.approx(1.0)


# ---------------------------------------------------------------- minimum detectable difference

def test_mdd_large_n_matches_normal_approximation():
    sd, n, level = 0.01, 20000, 0.05 / 3
    normal = (stats.norm.ppf(1 - level / 2) + stats.norm.ppf(0.8)) * sd / math.sqrt(n)
    assert minimum_detectable_difference(sd, n) == pytest.approx(normal, rel=0.02)


def test_mdd_power_by_simulation():
    sd, n = 0.005, 8
    mdd = minimum_detectable_difference(sd, n)
    # Small n: the t test needs more than the normal approximation says.
    assert mdd > (stats.norm.ppf(1 - 0.05 / 6) + stats.norm.ppf(0.8)) * sd / math.sqrt(n)
    rng = np.random.default_rng(0)
    diffs = rng.normal(mdd, sd, size=(4000, n))
    power = np.mean(stats.ttest_1samp(diffs, 0.0, axis=1).pvalue < 0.05 / 3)
    assert power == pytest.approx(0.8, abs=0.03)


def test_mdd_edge_cases():
    assert minimum_detectable_difference(0.01, 5) > minimum_detectable_difference(0.01, 10)
    assert minimum_detectable_difference(0.0, 5) == 0.0
    # Three seeds once made brentq fail on a NaN from scipy's nct.cdf; so did differences equal up to rounding.
    three = minimum_detectable_difference(0.03, 3)
    assert 0.03 * 2 < three < 0.03 * 20
    assert minimum_detectable_difference(3e-17, 3) == pytest.approx(three * 1e-15)
    for n in range(2, 12):
        assert math.isfinite(minimum_detectable_difference(0.005, n))
    with pytest.raises(ValueError):
        minimum_detectable_difference(0.01, 1)


# ---------------------------------------------------------------- compare_to_baseline

N_SENT, SEEDS = 872, list(range(8))


def _synthetic(rng_seed=0):
    """Baseline right on ~90% of sentences; "big" fixes 22 + seed wrong sentences (mean 25.5,
    i.e. +2.92 points, sd 0.28 points); "null_a"/"null_b" fix and break 5-15 sentences each."""
    rng = np.random.default_rng(rng_seed)
    labels = rng.integers(0, 2, N_SENT)
    rows, preds = [], {}

    def add(config, seed, right):
        pred = np.where(right, labels, 1 - labels)
        preds[(config, seed)] = pd.DataFrame({"idx": np.arange(N_SENT), "label": labels, "pred": pred,
                                              "prob_pos": 0.5})
        rows.append(dict(model="toy-bert", protocol="full", config=config, seed=seed,
                         dev_accuracy=right.mean(), test_accuracy=None, realized_sparsity_dev=0.0,
                         target_sparsity=0.0))

    for seed in SEEDS:
        base = rng.random(N_SENT) < 0.9
        add("baseline", seed, base)
        wrong, right = np.flatnonzero(~base), np.flatnonzero(base)
        big = base.copy()
        big[rng.choice(wrong, 22 + seed, replace=False)] = True
        add("big", seed, big)
        for name in ("null_a", "null_b"):
            null = base.copy()
            null[rng.choice(wrong, rng.integers(5, 16), replace=False)] = True
            null[rng.choice(right, rng.integers(5, 16), replace=False)] = False
            add(name, seed, null)
    return pd.DataFrame(rows), preds


def test_compare_to_baseline_finds_only_the_injected_effect():
    metrics, preds = _synthetic()
    out = compare_to_baseline(metrics, preds).set_index("config")
    assert ["config", *out.columns] == COMPARISON_COLUMNS
    assert out.index.tolist() == ["big", "null_a", "null_b"]
    assert (out["n_pairs"] == 8).all()
    assert out.loc["big", "mean_diff"] == pytest.approx(25.5 / N_SENT)
    assert out.loc["big", "p_ttest_holm"] < 0.05 and out.loc["big", "p_mcnemar_holm"] < 0.05
    assert (out.loc["big", "mcnemar_b"], out.loc["big", "mcnemar_c"]) == (sum(22 + s for s in SEEDS), 0)
    for null in ("null_a", "null_b"):
        assert out.loc[null, "p_ttest_holm"] > 0.05 and out.loc[null, "p_mcnemar_holm"] > 0.05
        assert out.loc[null, "ci_low"] < 0 < out.loc[null, "ci_high"]
    assert (out["p_ttest_holm"] >= out["p_ttest"]).all()
    assert out["p_ttest_holm"].tolist() == pytest.approx(holm(out["p_ttest"]))
    no_preds = compare_to_baseline(metrics)
    assert no_preds["p_mcnemar"].isna().all() and no_preds["p_mcnemar_holm"].isna().all()
    assert no_preds["p_ttest"].tolist() == pytest.approx(out["p_ttest"].tolist())


def test_compare_to_baseline_pairs_by_seed_and_validates():
    metrics, _ = _synthetic()
    # Drop baseline seed 0 and "big" seed 1: only the 6 shared seeds pair.
    trimmed = metrics[~(((metrics.config == "baseline") & (metrics.seed == 0)) |
                        ((metrics.config == "big") & (metrics.seed == 1)))]
    assert compare_to_baseline(trimmed).set_index("config").loc["big", "n_pairs"] == 6
    lonely = pd.concat([metrics, metrics.iloc[[1]].assign(config="lonely", seed=99)])
    with pytest.raises(ValueError, match="lonely"):
        compare_to_baseline(lonely)
    with pytest.raises(ValueError, match="model/protocol"):
        compare_to_baseline(pd.concat([metrics, metrics.assign(protocol="frozen")]))
    with pytest.raises(ValueError, match="baseline"):
        compare_to_baseline(metrics[metrics.config != "baseline"])
    with pytest.raises(ValueError, match="big"):  # test_accuracy is missing everywhere
        compare_to_baseline(metrics.assign(test_accuracy=metrics.config.map({"baseline": 0.9})),
                            value="test_accuracy")


# ---------------------------------------------------------------- verdict

def test_verdict_null_only_claims_nothing():
    metrics, preds = _synthetic()
    metrics = metrics[metrics.config != "big"]
    comparison = compare_to_baseline(metrics, preds)
    text = verdict(comparison, summarize(metrics), 0.012, model="toy-bert", protocol="full", n_seeds=8)
    assert "toy-bert" in text and "full" in text and "8 seeds" in text
    assert "significant" not in text.lower()
    assert "no configuration differs" in text and "1.20 points" in text


def test_verdict_reports_the_injected_effect():
    metrics, preds = _synthetic()
    comparison = compare_to_baseline(metrics, preds)
    text = verdict(comparison, summarize(metrics), 0.005, model="toy-bert", protocol="full", n_seeds=8)
    assert "significant" in text and "big (+2.92 points" in text
    assert "null_a" not in text.split("significant")[1].split(";")[0]


def test_verdict_numbers_and_claim_from_a_hand_made_table():
    comparison = pd.DataFrame([
        dict(config="k50", mean_diff=0.005, ci_low=-0.001, ci_high=0.011, p_ttest=0.08, p_ttest_holm=0.16),
        dict(config="k90", mean_diff=-0.002, ci_low=-0.004, ci_high=0.0, p_ttest=0.06, p_ttest_holm=0.16),
    ]).assign(p_mcnemar_holm=np.nan)
    summary = pd.DataFrame({"config": ["baseline"], "mean": [0.90625]})
    text = verdict(comparison, summary, 0.02, model="m", protocol="p", n_seeds=5)
    assert "(mean accuracy 90.62%)" in text or "(mean accuracy 90.63%)" in text
    assert "k50: +0.50 points, 95% CI [-0.10, +1.10]" in text
    assert "inside our 95% CI for k50 and outside it for k90" in text
    assert "smallest Holm-adjusted p = 0.16" in text
    assert "as small as the paper's claim could have gone undetected" in text  # 0.97 < mdd of 2.00 points
    assert "significant" not in text.lower()


def test_verdict_power_sentence_does_not_contradict_intervals_that_exclude_the_claim():
    comparison = pd.DataFrame([
        dict(config="k80", mean_diff=-0.007, ci_low=-0.012, ci_high=-0.002, p_ttest=0.015, p_ttest_holm=0.04,
             p_mcnemar_holm=np.nan),
    ])
    summary = pd.DataFrame({"config": ["baseline"], "mean": [0.89]})
    text = verdict(comparison, summary, 0.011, model="m", protocol="p", n_seeds=5)
    assert "outside our 95% CI for every configuration" in text
    assert "could have gone undetected" not in text
    assert "smaller than that, yet the intervals above exclude it" in text
    text = verdict(comparison, summary, 0.005, model="m", protocol="p", n_seeds=5)  # claim above the limit
    assert "detected with 5 seeds." in text and "yet the intervals" not in text


def test_verdict_with_one_seed_makes_no_interval_claims_and_says_provisional():
    comparison = pd.DataFrame([
        dict(config="k80", n_pairs=1, mean_diff=-0.018, ci_low=np.nan, ci_high=np.nan, p_ttest=np.nan,
             p_ttest_holm=np.nan, p_mcnemar_holm=0.46),
    ])
    summary = pd.DataFrame({"config": ["baseline"], "mean": [0.9]})
    text = verdict(comparison, summary, np.nan, model="m", protocol="full", n_seeds=1, planned_seeds=5)
    assert "1 of the 5 planned seeds" in text and "provisional" in text
    assert "k80: -1.80 points (no CI from 1 paired seed)" in text
    assert "no paired t-test over seeds is possible" in text
    assert "no confidence interval yet" in text and "outside" not in text and "nan" not in text.lower()
    complete = verdict(comparison.assign(ci_low=-0.03, ci_high=-0.006, n_pairs=5), summary, np.nan, model="m",
                       protocol="full", n_seeds=5, planned_seeds=5)
    assert "provisional" not in complete and "outside our 95% CI for every configuration" in complete
