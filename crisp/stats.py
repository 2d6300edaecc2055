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


def paired_difference(a, b, confidence: float = 0.95, n_boot: int = 10000, seed: int = 0) -> dict:
    """Paired comparison of per-seed accuracies ``a`` and ``b`` (same seed at the same position).

    Pairs where either value is missing are dropped.

    Returns
    -------
    dict
        ``n, mean_diff, std_diff, ci_low, ci_high`` (t interval of the mean of a - b),
        ``p_ttest`` (scipy.stats.ttest_rel), ``boot_ci_low, boot_ci_high`` (percentile
        bootstrap of the mean difference, ``n_boot`` resamples, RNG ``seed``) and
        ``p_wilcoxon`` (signed-rank, only for n >= 6: below that its smallest two-sided p is
        0.0625, so it could never reject at 0.05). ``p_ttest`` is NaN when all differences are
        equal: t is undefined there (scipy would report p = 0 from floating-point noise).
    """
    a, b = _values(a), _values(b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must pair up by seed; got lengths {len(a)} and {len(b)}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    d, n = a - b, len(a)
    out = dict(n=n, mean_diff=float(np.mean(d)) if n else NAN, std_diff=NAN, ci_low=NAN, ci_high=NAN,
               p_ttest=NAN, boot_ci_low=NAN, boot_ci_high=NAN, p_wilcoxon=NAN)
    if n < 2:
        return out
    out["std_diff"] = float(np.std(d, ddof=1))
    if _degenerate(d):
        out["ci_low"] = out["ci_high"] = out["mean_diff"]
    else:
        test = stats.ttest_rel(a, b)
        ci = test.confidence_interval(confidence_level=confidence)
        out.update(ci_low=float(ci.low), ci_high=float(ci.high), p_ttest=float(test.pvalue))
    # Bootstrap the differences (equivalent to paired=True on (a, b), and cheaper).
    boot = stats.bootstrap((d,), np.mean, n_resamples=n_boot, confidence_level=confidence,
                           method="percentile", rng=np.random.default_rng(seed))
    out.update(boot_ci_low=float(boot.confidence_interval.low), boot_ci_high=float(boot.confidence_interval.high))
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
        assumes every (sentence, seed) is independent, which it is not (the same sentences recur
        across seeds), so its p-value is optimistic; read it beside the paired t-test over seeds.
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
                      "boot_ci_low", "boot_ci_high", "p_wilcoxon", "mcnemar_b", "mcnemar_c", "p_mcnemar",
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


def _pts(x: float, sign: bool = True) -> str:
    return f"{x * 100:+.2f}" if sign else f"{x * 100:.2f}"


def verdict(comparison: pd.DataFrame, summary: pd.DataFrame, mdd: float, alpha: float = 0.05, *,
            model: str, protocol: str, n_seeds: int, baseline: str = "baseline",
            claimed: float = 0.0097, planned_seeds: int | None = None) -> str:
    """One-paragraph plain-English verdict built only from the numbers given.

    Parameters
    ----------
    comparison, summary : DataFrame
        Outputs of :func:`compare_to_baseline` and :func:`summarize` (``by="config"``; only
        the baseline's mean is used).
    mdd, alpha : float
        Minimum detectable difference (fraction, :func:`minimum_detectable_difference`) and the
        family-wise level applied to the Holm-adjusted p-values.
    model, protocol, n_seeds, baseline :
        Named in the text.
    claimed : float
        The paper's claimed gain over the dense baseline (+0.97 points).
    planned_seeds : int, optional
        The design's seed count; with fewer, the text says the verdict is provisional.
    """
    k = len(comparison)
    base = summary.loc[summary["config"] == baseline, "mean"]
    text = [f"On {model} ({protocol}) with {n_seeds} seed{'s' if n_seeds != 1 else ''} per configuration, "
            f"{k} sparse configuration"
            f"{'s were' if k != 1 else ' was'} compared with the dense baseline"
            + (f" (mean accuracy {_pts(base.iloc[0], False)}%)." if len(base) else ".")]
    if planned_seeds is not None and n_seeds < planned_seeds:
        text.append(f"The grid is unfinished ({n_seeds} of the {planned_seeds} planned seeds), so this verdict "
                    "is provisional.")
    if k == 0:
        return " ".join(text)
    rows = list(comparison.itertuples())
    with_ci = [r for r in rows if not (math.isnan(r.ci_low) or math.isnan(r.ci_high))]
    ci = {r.config: f"{_pts(r.mean_diff)} points, 95% CI [{_pts(r.ci_low)}, {_pts(r.ci_high)}]" for r in with_ci}
    ci.update({r.config: f"{_pts(r.mean_diff)} points (no CI from {r.n_pairs} paired seed"
                         f"{'s' if r.n_pairs != 1 else ''})" for r in rows if r not in with_ci})
    sig = [r for r in rows if r.p_ttest_holm < alpha]  # NaN compares False: never counted as a finding
    if comparison["p_ttest_holm"].isna().all():
        text.append(f"With {n_seeds} seed{'s' if n_seeds != 1 else ''} per configuration no paired t-test over "
                    "seeds is possible (it needs at least two).")
    elif sig:
        text.append(f"After Holm correction, the paired t-test is statistically significant at {alpha:g} for "
                    + "; ".join(f"{r.config} ({ci[r.config]}, Holm p = {r.p_ttest_holm:.3g})" for r in sig)
                    + ("; no other configuration differs at that level." if len(sig) < k else "."))
    else:
        tested = comparison["p_ttest_holm"].dropna()
        smallest = (f" (smallest Holm-adjusted p = {tested.min():.3g}, for "
                    f"{comparison.loc[tested.idxmin(), 'config']})") if len(tested) else ""
        text.append(f"After Holm correction, no configuration differs from the baseline at level {alpha:g}"
                    f"{smallest}.")
    top = comparison.loc[comparison["mean_diff"].abs().idxmax(), "config"]
    text.append(f"The largest observed difference is {top}: {ci[top]}.")
    if comparison["p_mcnemar_holm"].notna().any():
        hits = ", ".join(str(r.config) for r in rows if r.p_mcnemar_holm < alpha) or "no configuration"
        text.append("Pooled per-sentence McNemar tests (optimistic: they treat seeds as independent) "
                    f"flag {hits} after Holm correction.")
    inside = [str(r.config) for r in with_ci if r.ci_low <= claimed <= r.ci_high]
    outside = [str(r.config) for r in with_ci if str(r.config) not in inside]
    claim = f"The paper's claimed gain of {_pts(claimed)} points lies "
    if not with_ci:
        text.append(f"There is no confidence interval yet to hold the paper's claimed gain of {_pts(claimed)} points against.")
    elif not inside:
        text.append(claim + "outside our 95% CI for " + ("every configuration." if len(with_ci) == k else
                                                            ", ".join(outside) + "."))
    else:
        text.append(claim + f"inside our 95% CI for {', '.join(inside)}"
                    + (f" and outside it for {', '.join(outside)}." if outside else "."))
    if not math.isnan(mdd):
        detect = (f"True differences smaller than about {_pts(mdd, False)} points could not be reliably "
                  f"detected with {n_seeds} seeds")
        if abs(claimed) >= mdd:
            text.append(detect + ".")
        elif inside or not with_ci:
            text.append(detect + ", so a gain as small as the paper's claim could have gone undetected.")
        else:  # the claim is below the detection limit, but every interval already excludes it
            text.append(detect + " (as differences from zero); the paper's claim is smaller than that, yet the "
                        "intervals above exclude it.")
    return " ".join(text)
