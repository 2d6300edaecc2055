"""Statistics for comparing fine-tuning runs: summaries, paired tests across seeds,
McNemar tests on per-sentence predictions, Holm correction, correlations, power.

Accuracies are fractions throughout (0.9062); only :func:`verdict` prints percentage points.
Runs are paired by seed because a seed fixes data order and head initialisation for every
configuration, so seed-to-seed variance cancels in the differences.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import optimize, stats

NAN = float("nan")


def _values(x) -> np.ndarray:
    # None / NaN (e.g. test_accuracy without a labeled test split) become NaN floats.
    return pd.to_numeric(pd.Series(x, dtype=object), errors="coerce").to_numpy(dtype=float)


def _degenerate(x: np.ndarray) -> bool:
    # Relative tolerance: accuracies like 0.91-0.90 are not exactly equal in floating point.
    return np.ptp(x) <= 1e-12 * max(1.0, float(np.max(np.abs(x))))


def summarize(metrics: pd.DataFrame, value: str = "dev_accuracy", by="config",
              confidence: float = 0.95) -> pd.DataFrame:
    """Per-group mean of ``value`` with a t confidence interval.

    Parameters
    ----------
    metrics : DataFrame
        One row per run; missing ``value`` entries are ignored (not counted in ``n``).
    value, by : str (``by`` may be a list of str)
        Column to summarize and grouping column(s).
    confidence : float
        Confidence level of the interval.

    Returns
    -------
    DataFrame
        ``by`` columns, then ``n, mean, std (ddof=1), sem, ci_low, ci_high``; the last four NaN if n < 2.
    """
    keys = [by] if isinstance(by, str) else list(by)
    rows = []
    for key, group in metrics.groupby(keys, sort=True):
        x = pd.to_numeric(group[value], errors="coerce").dropna().to_numpy(dtype=float)
        n = len(x)
        mean = float(np.mean(x)) if n else NAN
        std = float(np.std(x, ddof=1)) if n >= 2 else NAN
        sem = std / math.sqrt(n) if n >= 2 else NAN
        # Half-width by hand: stats.t.interval rejects scale=0 (all seeds equal).
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sem if n >= 2 else NAN
        rows.append(dict(zip(keys, key if isinstance(key, tuple) else (key,)),
                         n=n, mean=mean, std=std, sem=sem, ci_low=mean - half, ci_high=mean + half))
    return pd.DataFrame(rows, columns=[*keys, "n", "mean", "std", "sem", "ci_low", "ci_high"])


def paired_difference(a, b, confidence: float = 0.95) -> dict:
    """Paired comparison of per-seed accuracies ``a`` and ``b`` (same seed at the same position).

    Pairs where either value is missing are dropped.

    Returns
    -------
    dict
        ``n, mean_diff, std_diff, ci_low, ci_high`` (t interval of the mean of a - b),
        ``p_ttest`` (scipy.stats.ttest_rel) and ``p_wilcoxon`` (signed-rank, only for n >= 6: below that its smallest two-sided p is
        0.0625, so it could never reject at 0.05). ``p_ttest`` is NaN when all differences are
        equal: t is undefined there (scipy would report p = 0 from floating-point noise).
        No bootstrap over the seed values: with 5 seeds it has 126 distinct resamples. The
        bootstrap that also resamples sentences is :func:`crisp.analysis.bootstrap.two_level`.
    """
    a, b = _values(a), _values(b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must pair up by seed; got lengths {len(a)} and {len(b)}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    d, n = a - b, len(a)
    out = dict(n=n, mean_diff=float(np.mean(d)) if n else NAN, std_diff=NAN, ci_low=NAN, ci_high=NAN,
               p_ttest=NAN, p_wilcoxon=NAN)
    if n < 2:
        return out
    out["std_diff"] = float(np.std(d, ddof=1))
    if _degenerate(d):
        out["ci_low"] = out["ci_high"] = out["mean_diff"]
    else:
        test = stats.ttest_rel(a, b)
        ci = test.confidence_interval(confidence_level=confidence)
        out.update(ci_low=float(ci.low), ci_high=float(ci.high), p_ttest=float(test.pvalue))
    if n >= 6:
        out["p_wilcoxon"] = 1.0 if np.all(d == 0) else float(stats.wilcoxon(d).pvalue)
    return out


def mcnemar(pred_a, pred_b, labels) -> dict:
    """Exact McNemar test on paired per-sentence correctness of two classifiers.

    scipy has no McNemar test; the exact version is a two-sided binomial test
    (scipy.stats.binomtest, p = 0.5) on the discordant pairs.

    Returns
    -------
    dict
        ``n`` sentences, ``acc_a``, ``acc_b``, ``b`` (a right, b wrong), ``c`` (a wrong,
        b right) and ``p_value`` (1.0 when there are no discordant pairs).
    """
    pred_a, pred_b, labels = (np.asarray(v) for v in (pred_a, pred_b, labels))
    if not (pred_a.shape == pred_b.shape == labels.shape):
        raise ValueError("pred_a, pred_b and labels must have the same length")
    right_a, right_b = pred_a == labels, pred_b == labels
    b, c = int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b))
    p = float(stats.binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    n = len(labels)
    return dict(n=n, acc_a=float(right_a.mean()) if n else NAN, acc_b=float(right_b.mean()) if n else NAN,
                b=b, c=c, p_value=p)


def _align(frame_a: pd.DataFrame, frame_b: pd.DataFrame) -> pd.DataFrame:
    # Sentences must be the same and carry the same gold label, or the pairs mean nothing.
    for name, f in (("a", frame_a), ("b", frame_b)):
        if f["idx"].duplicated().any():
            raise ValueError(f"predictions {name} have duplicated idx values")
    if set(frame_a["idx"]) != set(frame_b["idx"]):
        raise ValueError("predictions cover different sentences (idx sets differ)")
    cols = ["idx", "label", "pred"]
    merged = frame_a[cols].merge(frame_b[cols], on="idx", suffixes=("_a", "_b"))
    if not (merged["label_a"] == merged["label_b"]).all():
        raise ValueError("predictions disagree on the gold label of some sentences")
    return merged


def mcnemar_runs(preds_a: list[pd.DataFrame], preds_b: list[pd.DataFrame], seeds=None):
    """McNemar per run pair, plus a pooled test over all pairs.

    Parameters
    ----------
    preds_a, preds_b : list of DataFrame
        Predictions (``idx, label, pred, ...``); ``preds_a[i]`` pairs with ``preds_b[i]`` (same
        seed) and is aligned with it by ``idx``. Differing idx sets or labels raise ValueError.
    seeds : list, optional
        Row labels (default 0, 1, ...).

    Returns
    -------
    per_run : DataFrame
        ``seed, n, acc_a, acc_b, b, c, p_value`` for each pair.
    pooled : dict
        ``n_runs, n, b, c, p_value``: b and c summed over runs and tested once. This pooled count
        treats every (sentence, seed) as independent: it ignores the seed-to-seed variance and that
        the same sentences recur across seeds. It counts a different uncertainty than the paired
        t-test over seeds (which holds the sentences fixed); the test that counts both is the
        two-level bootstrap (:func:`crisp.analysis.report.bootstrap_table`).
    """
    if len(preds_a) != len(preds_b):
        raise ValueError(f"need one b run per a run; got {len(preds_a)} and {len(preds_b)}")
    seeds = list(range(len(preds_a))) if seeds is None else list(seeds)
    rows = []
    for seed, fa, fb in zip(seeds, preds_a, preds_b):
        m = _align(fa, fb)
        rows.append(dict(seed=seed, **mcnemar(m["pred_a"], m["pred_b"], m["label_a"])))
    per_run = pd.DataFrame(rows, columns=["seed", "n", "acc_a", "acc_b", "b", "c", "p_value"])
    b, c = int(per_run["b"].sum()), int(per_run["c"].sum())
    p = float(stats.binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    return per_run, dict(n_runs=len(rows), n=int(per_run["n"].sum()), b=b, c=c, p_value=p)


def holm(pvalues) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order.

    scipy.stats.false_discovery_control only does Benjamini–Hochberg/Yekutieli, so Holm is
    implemented here. NaN entries stay NaN and do not count towards the number of tests.
    """
    p = _values(pvalues)
    out = np.full(len(p), NAN)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    # Step-down: the i-th smallest is multiplied by (m - i); the running max keeps it monotone.
    out[order] = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    return out.tolist()


def correlation(x, y, confidence: float = 0.95, n_perm: int = 9999, seed: int = 0) -> dict:
    """Pearson r (with p and CI) and Spearman rho (with p) between ``x`` and ``y``.

    Pairs with a missing value are dropped. All statistics are NaN when fewer than 3 pairs
    remain or either input is constant (the coefficients are undefined there).

    Spearman's p comes from a permutation test (scipy.stats.permutation_test over pairings:
    exact for up to 7 pairs, else ``n_perm`` random pairings drawn with RNG ``seed``). scipy's
    default t approximation gives p = 0 for a perfect rank correlation of 4 points, whose exact
    two-sided p is 2/24.
    """
    x, y = _values(x), _values(y)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    out = dict(n=len(x), pearson_r=NAN, pearson_p=NAN, pearson_ci_low=NAN, pearson_ci_high=NAN,
               spearman_rho=NAN, spearman_p=NAN)
    if len(x) < 3 or _degenerate(x) or _degenerate(y):
        return out
    res = stats.pearsonr(x, y)
    ci = res.confidence_interval(confidence_level=confidence)
    rho = stats.spearmanr(x, y).statistic
    perm = stats.permutation_test((x,), lambda xp: stats.spearmanr(xp, y).statistic, permutation_type="pairings",
                                  n_resamples=n_perm, rng=np.random.default_rng(seed))
    out.update(pearson_r=float(res.statistic), pearson_p=float(res.pvalue), pearson_ci_low=float(ci.low),
               pearson_ci_high=float(ci.high), spearman_rho=float(rho), spearman_p=float(perm.pvalue))
    return out


def minimum_detectable_difference(std_diff: float, n: int, alpha: float = 0.05, power: float = 0.8,
                                  comparisons: int = 3) -> float:
    """Smallest true mean paired difference detected with probability ``power``.

    The test is a two-sided paired t-test at level ``alpha / comparisons`` (Bonferroni) on
    ``n`` pairs whose differences have standard deviation ``std_diff``. Power comes from the
    noncentral t distribution (noncentrality ``delta * sqrt(n) / std_diff``) and is solved
    for ``delta`` with scipy.optimize.brentq. Returns 0.0 when ``std_diff`` is 0; proportional to ``std_diff``.
    """
    if n < 2 or not std_diff >= 0:
        raise ValueError(f"need n >= 2 and std_diff >= 0, got n={n}, std_diff={std_diff}")
    if std_diff == 0:
        return 0.0
    df, level = n - 1, alpha / comparisons
    crit = stats.t.ppf(1 - level / 2, df)

    # Solved for the standardized difference d = delta / std_diff (noncentrality d * sqrt(n)) and scaled
    # back: the same answer, and no overflow in nct when std_diff is tiny (differences equal up to rounding).
    def shortfall(d: float) -> float:
        nc = d * math.sqrt(n)
        # Both rejection regions count: the test is two-sided. The lower one as sf(crit, df, -nc), by symmetry:
        # scipy's nct.cdf(-crit, df, nc) returns NaN for some large nc (seen at df=2, nc=12.6).
        return stats.nct.sf(crit, df, nc) + stats.nct.sf(crit, df, -nc) - power

    # Bracket from the normal approximation, widened until power is reached (small n needs more).
    hi = (stats.norm.ppf(1 - level / 2) + stats.norm.ppf(power)) / math.sqrt(n)
    while shortfall(hi) < 0:
        hi *= 2
    return float(optimize.brentq(shortfall, 0.0, hi, xtol=1e-12 * hi)) * std_diff


COMPARISON_COLUMNS = ["config", "n_pairs", "mean_diff", "ci_low", "ci_high", "p_ttest", "p_ttest_holm",
                      "p_wilcoxon", "mcnemar_b", "mcnemar_c", "p_mcnemar",
                      "p_mcnemar_holm"]


def compare_to_baseline(metrics: pd.DataFrame, preds_by_run: dict | None = None, baseline: str = "baseline",
                        value: str = "dev_accuracy") -> pd.DataFrame:
    """Compare every configuration with the baseline, paired by seed.

    ``metrics`` must hold a single model and protocol (filter first): seeds only pair runs
    fine-tuned the same way. Runs with a missing ``value`` are ignored. ``preds_by_run`` maps
    ``(config, seed)`` to a predictions DataFrame; when given, a pooled McNemar test
    (:func:`mcnemar_runs`, config = a, baseline = b) is added. Holm adjustment runs across the
    configurations, separately for the t-test and McNemar p-values.

    Returns one row per non-baseline config (in order of appearance) with the columns
    :data:`COMPARISON_COLUMNS`; differences are config minus baseline.
    """
    combos = metrics[["model", "protocol"]].drop_duplicates()
    if len(combos) != 1:
        raise ValueError(f"metrics mix {len(combos)} model/protocol combinations; compare one at a time")
    runs = metrics.assign(_v=_values(metrics[value])).dropna(subset=["_v"])
    if runs.duplicated(["config", "seed"]).any():
        raise ValueError("some config has two runs with the same seed; pairing would be ambiguous")
    table = runs.pivot(index="seed", columns="config", values="_v")
    if baseline not in table:
        raise ValueError(f"no runs of the baseline config {baseline!r} with a {value}")
    rows = []
    for config in pd.unique(metrics["config"]):
        if config == baseline:
            continue
        shared = table.index[table[baseline].notna() & table[config].notna()] if config in table else []
        if len(shared) == 0:
            raise ValueError(f"config {config!r} shares no seeds with {baseline!r} (with a {value})")
        row = dict(config=config, **paired_difference(table.loc[shared, config], table.loc[shared, baseline]))
        row.update(n_pairs=row.pop("n"), mcnemar_b=NAN, mcnemar_c=NAN, p_mcnemar=NAN)
        if preds_by_run is not None:
            missing = [k for s in shared for k in ((config, s), (baseline, s)) if k not in preds_by_run]
            if missing:
                raise ValueError(f"no predictions for runs {missing}")
            _, pooled = mcnemar_runs([preds_by_run[(config, s)] for s in shared],
                                     [preds_by_run[(baseline, s)] for s in shared], seeds=shared)
            row.update(mcnemar_b=pooled["b"], mcnemar_c=pooled["c"], p_mcnemar=pooled["p_value"])
        rows.append(row)
    out = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    out["p_ttest_holm"], out["p_mcnemar_holm"] = holm(out["p_ttest"]), holm(out["p_mcnemar"])
    return out


PAIRED_TEST_COLUMNS = ["n", "mean_diff", "std_diff", "ci_low", "ci_high", "p_ttest", "p_holm"]


def paired_tests(frame: pd.DataFrame, value: str, keys=(), baseline: str = "baseline",
                 confidence: float = 0.95) -> pd.DataFrame:
    """Each configuration minus ``baseline`` in ``value``, paired by seed, within every group of ``keys``.

    Parameters
    ----------
    frame : DataFrame
        Columns ``config, seed, *keys, value``; at most one row per (config, seed, *keys).
    value : str
        The per-run measurement (e.g. a head's entropy, a run's final training loss).
    keys : sequence of str
        Grouping columns (e.g. ``("layer", "head")``); empty for one test per configuration.

    Returns
    -------
    DataFrame
        ``config, *keys`` and :data:`PAIRED_TEST_COLUMNS`: :func:`paired_difference` per group, and its
        t-test p-value Holm-adjusted over the groups of each configuration (``p_holm``; across
        configurations when ``keys`` is empty).
    """
    keys = list(keys)
    if frame.duplicated(["config", "seed", *keys]).any():
        raise ValueError(f"two rows share a (config, seed{''.join(', ' + k for k in keys)}); pairing is ambiguous")
    if baseline not in set(frame["config"]):
        raise ValueError(f"no rows of the baseline config {baseline!r}")
    base = frame[frame["config"] == baseline].set_index([*keys, "seed"])[value]
    rows = []
    for config in [c for c in pd.unique(frame["config"]) if c != baseline]:
        mine = frame[frame["config"] == config].set_index([*keys, "seed"])[value]
        both = pd.concat({"a": mine, "b": base}, axis=1, join="inner")
        groups = both.groupby(level=keys, sort=True) if keys else [((), both)]
        for key, g in groups:
            key = key if isinstance(key, tuple) else (key,)
            res = paired_difference(g["a"].to_numpy(), g["b"].to_numpy(), confidence=confidence)
            rows.append(dict(config=config, **dict(zip(keys, key)), **res))
    out = pd.DataFrame(rows, columns=["config", *keys, "n", "mean_diff", "std_diff", "ci_low", "ci_high", "p_ttest",
                                      "p_wilcoxon"]).drop(columns="p_wilcoxon")
    out["p_holm"] = np.nan
    by = out.groupby("config", sort=False).groups.values() if keys else [out.index]
    for index in by:
        out.loc[index, "p_holm"] = holm(out.loc[index, "p_ttest"])
    return out
