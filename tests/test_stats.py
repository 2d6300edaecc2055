"""Tests for crisp.analysis.stats on synthetic data whose answers are known by hand or by construction."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from crisp.analysis import bootstrap, single_run
from crisp.analysis.stats import (COMPARISON_COLUMNS, compare_to_baseline, correlation, holm, mcnemar, mcnemar_runs,
                                  minimum_detectable_difference, paired_difference, paired_tests, summarize)

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
    res = paired_difference(b + d, b)
    assert res["n"] == 5
    assert res["mean_diff"] == pytest.approx(0.02)
    assert res["std_diff"] == pytest.approx(math.sqrt(2.5e-4))
    half = T_975_DF4 * math.sqrt(2.5e-4) / math.sqrt(5)
    assert (res["ci_low"], res["ci_high"]) == pytest.approx((0.02 - half, 0.02 + half))
    assert res["ci_low"] < 0.02 < res["ci_high"]
    assert res["p_ttest"] == pytest.approx(stats.ttest_rel(b + d, b).pvalue)
    assert "boot_ci_low" not in res  # no percentile bootstrap over a handful of seed values
    assert math.isnan(res["p_wilcoxon"])  # n < 6


def test_paired_difference_wilcoxon_and_missing():
    rng = np.random.default_rng(1)
    b = rng.normal(0.9, 0.01, 8)
    a = b + rng.normal(0.01, 0.005, 8)
    res = paired_difference(a, b)
    assert res["p_wilcoxon"] == pytest.approx(stats.wilcoxon(a - b).pvalue)
    a_missing = np.append(a, np.nan)
    assert paired_difference(a_missing, np.append(b, 0.5)) == res  # NaN pair dropped
    with pytest.raises(ValueError):
        paired_difference(a, b[:-1])


def test_paired_difference_constant_difference_has_no_t_p_value():
    b = np.array([0.90, 0.91, 0.89])
    res = paired_difference(b + 0.01, b)
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


# ---------------------------------------------------------------- paired_tests (Figures 3 and 4)

def test_paired_tests_per_group_with_holm_within_each_config():
    frame = pd.DataFrame({
        "config": ["baseline"] * 6 + ["x"] * 6 + ["y"] * 6, "seed": [0, 1, 2] * 6, "layer": ([0] * 3 + [1] * 3) * 3,
        "v": [1, 2, 3, 1, 2, 3,   2, 3, 4, 1, 2, 3.5,   1.1, 2.3, 3.2, 5, 6, 7.1]})
    out = paired_tests(frame, "v", keys=["layer"]).set_index(["config", "layer"])
    assert out.loc[("x", 0), "mean_diff"] == pytest.approx(1.0) and math.isnan(out.loc[("x", 0), "p_ttest"])
    assert out.loc[("x", 1), "mean_diff"] == pytest.approx(0.5 / 3)
    assert out.loc[("x", 1), "p_ttest"] == pytest.approx(stats.ttest_rel([1, 2, 3.5], [1, 2, 3]).pvalue)
    assert out.loc[("x", 1), "p_holm"] == pytest.approx(out.loc[("x", 1), "p_ttest"])  # the only testable group
    py = [stats.ttest_rel([1.1, 2.3, 3.2], [1, 2, 3]).pvalue, stats.ttest_rel([5, 6, 7.1], [1, 2, 3]).pvalue]
    assert out.loc["y", "p_holm"].tolist() == pytest.approx(holm(py))  # Holm over the two layers of y only
    one = paired_tests(frame[frame.layer == 1], "v")  # no keys: one row per config, Holm across configs
    assert one["config"].tolist() == ["x", "y"] and one["p_holm"].tolist() == pytest.approx(holm(one["p_ttest"]))
    with pytest.raises(ValueError, match="ambiguous"):
        paired_tests(pd.concat([frame, frame.iloc[[0]]]), "v", keys=["layer"])
    with pytest.raises(ValueError, match="baseline"):
        paired_tests(frame[frame.config != "baseline"], "v", keys=["layer"])


# ---------------------------------------------------------------- the two-level bootstrap

def test_two_level_bootstrap_seed_level_known_variance():
    # two seeds, one always right and one always wrong: a replicate's mean is 0, 1/2 or 1 with
    # probabilities 1/4, 1/2, 1/4 (variance 1/8), whatever the sentence draw
    correct = np.stack([np.zeros(40), np.ones(40)])[None]  # (1 config, 2 seeds, 40 sentences)
    reps = bootstrap.two_level(correct, B=20000, seed=1)[:, 0]
    assert set(np.unique(reps)) == {0.0, 0.5, 1.0}
    assert reps.var() == pytest.approx(1 / 8, rel=0.03)
    assert np.all(bootstrap.two_level(correct, B=50, levels="sentences") == 0.5)  # seeds fixed


def test_two_level_bootstrap_sentence_level_is_binomial():
    correct = (np.arange(100) < 30)[None, None]  # one run, 30 of 100 right
    reps = bootstrap.two_level(correct, B=20000, seed=2)[:, 0]
    assert reps.mean() == pytest.approx(0.3, abs=0.002)
    assert reps.std() == pytest.approx(math.sqrt(0.3 * 0.7 / 100), rel=0.03)
    assert np.all(bootstrap.two_level(correct, B=50, levels="seeds") == 0.3)  # sentences fixed


def test_two_level_bootstrap_additive_design_adds_the_two_variances():
    # x[s, n] = u_s + v_n: the replicate mean is mean(u*) + mean(v*), drawn independently, so its variance
    # is var0(u) / S + var0(v) / N (population variances), the sum of the two one-level bootstraps
    u, v = np.array([0.0, 0.3, 0.6, 0.9]), np.linspace(0, 1, 50)
    x = (u[:, None] + v[None, :])[None]
    reps = bootstrap.two_level(x, B=40000, seed=3)[:, 0]
    assert reps.var() == pytest.approx(u.var() / 4 + v.var() / 50, rel=0.03)
    seeds_only = bootstrap.two_level(x, B=40000, seed=3, levels="seeds")[:, 0]
    assert seeds_only.var() == pytest.approx(u.var() / 4, rel=0.03)


def test_two_level_bootstrap_is_paired_reproducible_and_validated():
    rng = np.random.default_rng(0)
    base = rng.random((5, 200)) < 0.9
    correct = np.stack([base, base, ~base])  # config 1 is the baseline again, config 2 its mirror image
    reps = bootstrap.two_level(correct, B=300, seed=7, chunk=64)
    diff = bootstrap.differences(reps)
    assert np.all(diff[:, 0] == 0) and np.all(np.abs(diff[:, 1]) < 1e-12)  # the same draws for every config
    assert np.allclose(reps[:, 2], 1 - reps[:, 0])
    assert np.array_equal(reps, bootstrap.two_level(correct, B=300, seed=7, chunk=64))
    assert not np.array_equal(reps, bootstrap.two_level(correct, B=300, seed=8, chunk=64))
    with pytest.raises(ValueError, match="configs, seeds, sentences"):
        bootstrap.two_level(base)
    with pytest.raises(ValueError, match="levels"):
        bootstrap.two_level(correct, levels="runs")


def test_bootstrap_p_values_and_interval_known_answers():
    draws = np.arange(1, 100) / 100  # 0.01 ... 0.99
    assert bootstrap.p_below(draws, 0.5) == pytest.approx(51 / 100)  # 50 draws >= 0.5
    assert bootstrap.p_below(draws, 2.0) == pytest.approx(1 / 100)  # none: the smallest possible p
    assert bootstrap.p_two_sided(draws - 0.5) == pytest.approx(1.0)  # symmetric about 0
    assert bootstrap.p_two_sided(draws) == pytest.approx(2 / 100)  # all above 0
    assert bootstrap.p_two_sided(draws, 0.25) == pytest.approx(2 * 26 / 100)  # 25 draws <= 0.25
    assert bootstrap.percentile_ci(np.arange(101), 0.9) == pytest.approx((5.0, 95.0))


def test_detectable_difference_known_answers_and_power():
    assert bootstrap.detectable(1.0) == pytest.approx(1.959964 + 0.841621, abs=1e-5)
    assert bootstrap.detectable(0.5, comparisons=3) == pytest.approx(0.5 * (2.393980 + 0.841621), abs=1e-5)
    assert bootstrap.detectable(1.0, sided=1, comparisons=3) == pytest.approx(2.128045 + 0.841621, abs=1e-5)
    # at that true difference a z-test at level alpha / k rejects with probability `power`
    d = bootstrap.detectable(0.004, alpha=0.05, power=0.9, comparisons=3)
    assert stats.norm.sf(stats.norm.ppf(1 - 0.05 / 6) - d / 0.004) == pytest.approx(0.9, abs=1e-9)
    assert bootstrap.detectable(0.0) == 0.0
    with pytest.raises(ValueError):
        bootstrap.detectable(-1.0)
    with pytest.raises(ValueError):
        bootstrap.detectable(1.0, sided=3)


# ---------------------------------------------------------------- what a single run can show

def test_single_run_pairings_and_normal_model():
    assert sorted(single_run.all_pairings([1.0, 2.0], [0.0, 1.0, 3.0])) == [-2.0, -1.0, 0.0, 1.0, 1.0, 2.0]
    mu, sd = single_run.normal_single_difference([1.0, 3.0], [0.0, 2.0, 4.0])  # var 2 and 4
    assert (mu, sd) == pytest.approx((0.0, math.sqrt(6.0)))
    with pytest.raises(ValueError):
        single_run.normal_single_difference([1.0], [0.0, 1.0])


def test_all_beat_counts_arrangements_by_hand():
    # runs 0..4: baseline 0 is beaten by each of the 4 triples of {1,2,3,4}; baseline 1 only by {2,3,4}
    assert single_run.all_beat([0, 1, 2, 3, 4], k=3) == (5, 20)
    # best at least 3.5 above: only baseline 0 with a triple holding 4 (3 of them)
    assert single_run.all_beat([4, 3, 2, 1, 0], k=3, margin=3.5) == (3, 20)
    assert single_run.all_beat([0, 0, 0, 0], k=3) == (0, 4)  # ties do not beat
    with pytest.raises(ValueError):
        single_run.all_beat([0, 1, 2], k=3)


def test_all_beat_normal_known_answers():
    assert single_run.all_beat_normal(1.0, k=3) == pytest.approx(0.25, abs=1e-9)  # baseline lowest of 4
    assert single_run.all_beat_normal(0.3, k=1) == pytest.approx(0.5, abs=1e-9)
    assert single_run.all_beat_normal(1.0, k=3, margin=20.0) < 1e-12
    assert single_run.all_beat_normal(2.0, 3, 1.4) == pytest.approx(single_run.all_beat_normal(1.0, 3, 0.7))
    x = np.random.default_rng(0).normal(size=(400000, 4))
    sim = np.mean((x[:, 1:] > x[:, [0]]).all(1) & (x[:, 1:].max(1) - x[:, 0] >= 0.7))
    assert single_run.all_beat_normal(1.0, k=3, margin=0.7) == pytest.approx(sim, abs=0.003)


# ---------------------------------------------------------------- verdict

from crisp.analysis import mechanism  # noqa: E402
from crisp.analysis.verdict import reading_text, readings_fact, verdict  # noqa: E402


def _boot(split, p_zero_holm=(0.6, 0.6, 0.6), p_claim_holm=(0.01, 0.003, 0.2)):
    rows = []
    for (config, claim, diff), pz, pc in zip([("uniform_sparse", 0.0061, -0.0062), ("light_sparse", 0.0073, -0.0053),
                                              ("aggressive_sparse", 0.0097, -0.0073)], p_zero_holm, p_claim_holm):
        rows.append(dict(split=split, config=config, n_sentences=872 if split == "dev" else 1821, claimed_gain=claim,
                         mean_diff=diff, ci_low=diff - 0.01, ci_high=diff + 0.01, p_zero_holm=pz, p_claim_holm=pc,
                         mdd_zero=0.013 if config == "light_sparse" else 0.02, B=10000, se=0.005, n_seeds=5))
    return pd.DataFrame(rows)


NULL = dict(n_baseline_runs=5, split="dev", margin=0.0097, hits=4, arrangements=20, p_empirical=0.2, baseline_sd=0.0061,
            p_normal=0.1686, paper_pearson_r=0.92, paper_n=4, paper_pearson_p=0.0803)
READING = reading_text({"paper_padding": False, "granularity": "row"})


def _comparison(p_holm=(0.15, 0.039, 0.039)):
    return pd.DataFrame([dict(config=c, n_pairs=5, mean_diff=d, ci_low=d - 0.004, ci_high=d + 0.004, p_ttest=p,
                              p_ttest_holm=p) for (c, d), p in zip([("uniform_sparse", -0.0062), ("light_sparse", -0.0053),
                                                                    ("aggressive_sparse", -0.0073)], p_holm)])


def _single(split, sd=0.008):
    return pd.DataFrame([dict(split=split, config=c, normal_sd=sd) for c in ("uniform_sparse", "light_sparse",
                                                                           "aggressive_sparse")])


def test_verdict_is_a_plain_sentence_the_scope_once_and_bullets():
    boot = pd.concat([_boot("dev"), _boot("test", p_zero_holm=(0.01, 0.9, 0.9), p_claim_holm=(0.3, 0.4, 0.5))])
    text = verdict(boot, NULL, {"uniform_sparse": "underfitting", "light_sparse": "underfitting",
                                "aggressive_sparse": "lower loss, lower accuracy"},
                   model="minilm", protocol="full", seeds=[0, 1, 2, 3, 4], reading=READING,
                   comparisons={"dev": _comparison(), "test": _comparison((0.7, 1.0, 1.0))},
                   single=pd.concat([_single("dev"), _single("test")]))
    first, rest = text.split("\n", 1)
    assert first.startswith("Pruning 60-80% of MiniLM's attention") and "slightly lower than dense attention" in first
    assert rest.count("Scope: minilm, protocol full, 5 seeds per configuration") == 1 and "minilm, protocol" not in \
        rest.split("Scope:", 1)[1].split("\n", 1)[1]  # the scope said once
    assert "dynamic padding" in text and "top-k per query row" in text
    bullets = [line for line in text.splitlines() if line.startswith("- **")]
    assert [b.split("**")[1] for b in bullets][:2] == ["On these sentences", "On new sentences too"]
    assert "light_sparse and aggressive_sparse are lower than dense (Holm p = 0.039, 0.039)" in bullets[0]
    assert "light_sparse -0.53 [-1.53, +0.47]" in bullets[1]
    assert "no configuration differs from dense (smallest Holm p = 0.600)" in bullets[1]
    assert "uniform_sparse is higher than dense (Holm p = 0.010)" not in bullets[1]  # -0.62 is lower, not higher
    assert "uniform_sparse is lower than dense (Holm p = 0.010)" in bullets[1]  # on test
    assert "at most dev: uniform_sparse +0.38" in text
    assert "At 5% the claim is rejected for no configuration" in text
    assert "differences from zero of 1.30 to 2.00 points on dev" in text
    assert "in 4 of 20 arrangements (20%), and with probability 17%" in text and "p = 0.080" in text
    assert "underfitting for uniform_sparse and light_sparse; lower loss, lower accuracy for aggressive_sparse" in text
    assert "provisional" not in text and "smoke" not in text and "mask-first" not in text and "nan" not in text


def test_plain_words_follow_their_thresholds():
    from crisp.analysis.verdict import amount, direction
    assert [amount(x) for x in (0.001, 0.003, 0.0074, 0.0076, 0.012, 0.0151, -0.026)] == [
        "under a quarter of a point", "about half a point", "about half a point", "about one point",
        "about one point", "about 1.5 points", "about 2.5 points"]
    assert [direction(x) for x in (0.0009, -0.0009, -0.005, 0.005, -0.015, 0.025)] == [
        "about the same", "about the same", "slightly lower", "slightly higher", "lower", "much higher"]
    from crisp.analysis.verdict import plain_sentence
    mixed = pd.concat([_boot("dev"), _boot("test").assign(mean_diff=0.0002)])
    assert plain_sentence(mixed) == ("Pruning 60-80% of MiniLM's attention in SST-2 fine-tuning left accuracy, on "
                                     "average, slightly lower than dense attention (about half a point) on dev; about "
                                     "the same as dense attention on test.")


def test_noisy_claim_known_answers():
    from crisp.analysis.verdict import claims, noisy_claim_p, power_against
    # claim 1.645 sd above the estimate, our estimate exact: p = 0.05 both ways
    assert noisy_claim_p(1.645, 0.0, 0.0, 1.0) == pytest.approx((0.05, 0.05), abs=1e-4)
    # our estimate's noise counts too: (claim - estimate) / sqrt(3^2 + 4^2) = 1.96 / 1 -> 0.025
    as_large, p = noisy_claim_p(9.8, 0.0, 4.0, 3.0)
    assert p == pytest.approx(0.025, abs=1e-4) and as_large == pytest.approx(stats.norm.sf(9.8 / 3))
    assert noisy_claim_p(0.01, 0.01, 0.002, 0.005) == pytest.approx((0.5, 0.5))
    # power: the true gain at exactly z_{1-alpha/2k} + z_0.8 standard errors is detected 80% of the time
    z = stats.norm.ppf(1 - 0.05 / 6) + stats.norm.ppf(0.8)
    assert power_against(z * 0.004, 0.004, 0.05, 3) == pytest.approx(0.8)
    assert power_against(0.0, 0.004, 0.05, 1) == pytest.approx(0.025)
    # the table: Holm over the configurations of a split, "rejected" only where the noisy test rejects
    boot = _boot("dev").assign(claimed_gain=[0.0061, 0.0073, 0.05])
    c = claims(boot, _single("dev", sd=0.008)).set_index("config")
    assert c.loc["aggressive_sparse", "claim"] == "rejected" and c.loc["light_sparse", "claim"] == "not rejected"
    assert c.loc["light_sparse", "at_most"] == pytest.approx(-0.0053 + 0.01)
    p_raw = [noisy_claim_p(g, d, 0.005, 0.008)[1] for g, d in zip(boot.claimed_gain, boot.mean_diff)]
    assert c["p_noisy_holm"].tolist() == pytest.approx(list(holm(p_raw)))


def test_headline_fits_in_the_box_and_says_both_tests():
    from crisp.analysis.verdict import headline
    boot = pd.concat([_boot("dev"), _boot("test")])
    comps = {"dev": _comparison(), "test": _comparison((0.7, 1.0, 1.0))}
    text = headline(boot, model="minilm", protocol="full", n_seeds=5, hardware="cpu-fp32", comparisons=comps,
                    single=pd.concat([_single("dev"), _single("test")]))
    assert len(text.split()) < 60
    assert text.startswith("Pruning 60-80% of MiniLM's attention")
    assert "On these sentences (paired t, Holm): light_sparse and aggressive_sparse lower on dev" in text
    assert "on new sentences too (bootstrap): no difference detected" in text and "none rejected" in text
    partial = headline(_boot("dev"), model="m", protocol="n500", n_seeds=1, hardware="cpu-fp32", planned_seeds=5)
    assert partial.startswith("Provisional (1 of 5 planned seeds). Pruning") and "these sentences" not in partial


def test_verdict_smoke_provisional_and_without_single_run_facts():
    text = verdict(_boot("dev"), {}, {}, model="m", protocol="small", seeds=[0, 1], reading=READING,
                   experiment=False, planned_seeds=5)
    assert "smoke runs" in text and "2 of the 5 planned seeds" in text and "provisional" in text
    assert "arrangements" not in text and "underfitting" not in text


def _readings(realized):
    rows = []
    for reading, padding, mask_first in [("dynamic-row", "dynamic", False), ("pad512-raw-row", "pad512", False),
                                         ("pad512-maskfirst-finfo-row", "pad512", True),
                                         ("pad512-maskfirst-inf-head", "pad512", True)]:
        for sparsity in (0.6, 0.8):
            for layer in (0, 1):
                z = realized if mask_first else sparsity - 0.05
                rows.append(dict(reading=reading, padding=padding, mask_first=mask_first, mask_value="finfo.min",
                                 granularity=reading.rsplit("-", 1)[1], split="dev", sparsity=sparsity, layer=layer,
                                 realized_sparsity=z, real_pairs=1000, sentences=872))
    return pd.DataFrame(rows)


def test_verdict_states_what_the_mask_first_reading_implies():
    fact = readings_fact(_readings(0.0))
    assert fact["max"] == 0.0 and fact["targets"] == [0.6, 0.8] and set(fact["max_by_reading"]) == {
        "pad512-maskfirst-finfo-row", "pad512-maskfirst-inf-head"}
    text = verdict(_boot("dev"), NULL, {}, model="minilm", protocol="full", seeds=[0, 1, 2, 3, 4], reading=READING,
                   readings=_readings(0.0))
    assert "Under mask-first pad-to-512" in text and "no real key is pruned" in text
    assert "at targets 60% and 80%" in text and "its dense model" in text
    assert "(872 dev sentences padded to 512)" in text  # how much was measured, from the table
    pruned = verdict(_boot("dev"), NULL, {}, model="minilm", protocol="full", seeds=[0], reading=READING,
                     readings=_readings(0.3))
    assert "reaches 30.0%" in pruned and "does prune real keys" in pruned and "no real key" not in pruned
    with pytest.raises(ValueError, match="mask-first"):
        readings_fact(_readings(0.0).query("not mask_first"))
    with pytest.raises(ValueError, match="mask-first"):
        readings_fact(_readings(np.nan))
    mixed = _readings(0.0)
    mixed.loc[mixed.reading == "pad512-maskfirst-inf-head", "realized_sparsity"] = np.nan  # e.g. quantile of -inf
    assert set(readings_fact(mixed)["max_by_reading"]) == {"pad512-maskfirst-finfo-row"}
    as_text = _readings(0.0).assign(mask_first=lambda f: f.mask_first.map({True: "True", False: "False"}))
    assert readings_fact(as_text)["max"] == 0.0  # bools read back from CSV as text still count


def test_fit_answer_rule():
    def rows(train_loss, dev_loss, dev_acc=(-0.01, 0.01), train_acc=(-0.01, 0.01)):
        return pd.DataFrame([dict(measure="train_loss", ci_low=train_loss[0], ci_high=train_loss[1]),
                             dict(measure="train_accuracy", ci_low=train_acc[0], ci_high=train_acc[1]),
                             dict(measure="dev_loss", ci_low=dev_loss[0], ci_high=dev_loss[1]),
                             dict(measure="dev_accuracy", ci_low=dev_acc[0], ci_high=dev_acc[1])])
    up, down, flat = (0.01, 0.02), (-0.02, -0.01), (-0.01, 0.01)
    assert mechanism.fit_answer(rows(up, down)) == "regularization"
    assert mechanism.fit_answer(rows(up, flat)) == "underfitting"
    assert mechanism.fit_answer(rows(up, flat, dev_acc=(0.001, 0.01))) == "regularization"
    assert mechanism.fit_answer(rows(flat, down)) == "same fit, better dev"
    assert mechanism.fit_answer(rows((np.nan, np.nan), (np.nan, np.nan))) == "no difference in fit"
    # a significant loss of dev accuracy is never regularization, even with a lower dev loss (n500's case)
    assert mechanism.fit_answer(rows(up, down, dev_acc=down)) == "lower loss, lower accuracy"
    assert mechanism.fit_answer(rows(up, flat, dev_acc=down)) == "underfitting"
    assert mechanism.fit_answer(rows(up, up, dev_acc=up)) == "higher loss, higher accuracy"
    # the other direction: fitting the training data more
    assert mechanism.fit_answer(rows(down, up)) == "overfitting"
    assert mechanism.fit_answer(rows(flat, flat, train_acc=up, dev_acc=down)) == "overfitting"
    assert mechanism.fit_answer(rows(down, down)) == "more fit, better dev"
    assert mechanism.fit_answer(rows(down, flat)) == "more fit, same dev"
    assert mechanism.fit_answer(rows(flat, flat, dev_acc=down)) == "same fit, worse dev"


def test_crossed_se_known_answers():
    u, v = np.array([0.0, 0.3, 0.6, 0.9]), np.linspace(0, 1, 50)
    d = u[:, None] + v[None, :]  # no interaction: var1(u) / S + var1(v) / N
    assert bootstrap.crossed_se(d) == pytest.approx(math.sqrt(u.var(ddof=1) / 4 + v.var(ddof=1) / 50))
    # unbiased for the variance of the grand mean: seed sd 1, sentence sd 1, residual sd 2, 5 x 200 tables
    rng = np.random.default_rng(0)
    est = [bootstrap.crossed_se(rng.normal(0, 1, (5, 1)) + rng.normal(0, 1, (1, 200)) + rng.normal(0, 2, (5, 200))) ** 2
           for _ in range(400)]
    assert np.mean(est) == pytest.approx(1 / 5 + 1 / 200 + 4 / 1000, rel=0.1)
    # residual only: the estimate is (MS_seed + MS_sentence - MS_residual) / (S N), about 1 / (S N), not 3 / (S N)
    est = [bootstrap.crossed_se(rng.normal(0, 1, (5, 200))) ** 2 for _ in range(400)]
    assert np.mean(est) == pytest.approx(1 / 1000, rel=0.15)
    assert bootstrap.crossed_se(np.zeros((3, 10))) == 0.0
    with pytest.raises(ValueError):
        bootstrap.crossed_se(np.zeros(10))


def test_calibration_bullet_reads_both_tests_and_ignores_regularizers():
    from crisp.analysis.verdict import calibration_text
    rows = [dict(split="dev", scaling="raw", metric="nll", reference="baseline", config=c, mean_diff=d, t_p_holm=tp,
                 boot_p_holm=bp) for c, d, tp, bp in [("uniform_sparse", -0.1, 0.001, 0.01), ("light_sparse", -0.08, 0.001, 0.2),
                                                     ("aggressive_sparse", 0.01, 0.5, 0.9), ("label_smoothing", 0.3, 0.0, 0.0)]]
    rows.append(dict(split="dev", scaling="temperature", metric="nll", reference="baseline", config="uniform_sparse",
                     mean_diff=0.5, t_p_holm=0.0, boot_p_holm=0.0))
    text = calibration_text(pd.DataFrame(rows))
    assert text == ("dev NLL -0.100 to +0.010 nats (on these sentences: uniform_sparse lower, light_sparse lower; "
                    "on new sentences too: uniform_sparse lower)")


def test_judgement_words_follow_their_thresholds():
    from crisp.analysis.verdict import how_often, trained_share
    assert how_often(0.1686) == "about one time in 6: not unusual"
    assert how_often(0.02) == "about one time in 50: unusual" and how_often(0.001) == "about one time in 1,000: rare"
    assert trained_share(-0.01, -0.2).startswith("the learned part is 5% of it, so the sharper attention the model uses "
                                                 "is mostly the pruning itself")
    assert "partly the pruning, partly learned" in trained_share(-0.1, -0.2)
    assert "mostly learned" in trained_share(-0.19, -0.2)
    assert "does not move in the same direction" in trained_share(0.01, -0.2)


def test_cost_comparison_words():
    from crisp.analysis.verdict import cost_comparison
    assert cost_comparison(20.0, 0.05).endswith("the padding costs many times what the sparsity could save (400 times)")
    assert "several times what" in cost_comparison(0.3, 0.05) and "less than what" in cost_comparison(0.01, 0.05)
    assert cost_comparison(20.0, 0.05).startswith("padding every sentence to 512 adds 2,000% to a training epoch's time")
