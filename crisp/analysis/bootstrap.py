"""A paired two-level bootstrap over seeds and sentences, and the tests and power built on it.

A run's accuracy varies for two reasons: the seed (initialisation, data order, dropout) and the
sample of sentences it is scored on. A paired t-test over seeds treats the 872 dev sentences as
fixed; a McNemar test over sentences treats the seeds as fixed. Here both are resampled, crossed,
with the *same* draws for every configuration (so each difference stays paired):

    for b = 1..B:   seeds     s*_1..s*_S  drawn with replacement from the S seeds
                    sentences n*_1..n*_N  drawn with replacement from the N sentences of the split
                    acc*_b(c) = mean over (s*, n*) of correct[c, s*, n*]
                    diff*_b(c) = acc*_b(c) - acc*_b(baseline)

This is the "pigeonhole" bootstrap for a crossed design (Owen 2007, Ann. Appl. Stat. 1(1)); its
variance estimate is mildly conservative (it counts the seed x sentence interaction twice).
Resample counts are drawn as multinomial weights, so a replicate is two weighted means and the
whole bootstrap is a few matrix products.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import stats

LEVELS = ("both", "seeds", "sentences")


def two_level(correct, B: int = 10000, seed: int = 0, levels: str = "both", chunk: int = 1000) -> np.ndarray:
    """Bootstrap replicates of each configuration's mean accuracy.

    Parameters
    ----------
    correct : array (C, S, N) of bool or 0/1
        ``correct[c, s, n]``: whether configuration ``c``'s run with seed ``s`` got sentence ``n``
        right. Every configuration must have the same S seeds (paired) and the same N sentences.
    B : int
        Number of bootstrap replicates.
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed gives the same replicates.
    levels : {"both", "seeds", "sentences"}
        What is resampled: both (the two-level bootstrap), only seeds (sentences fixed) or only
        sentences (seeds fixed).
    chunk : int
        Replicates per block (bounds memory: a block holds a (chunk, N) weight matrix).

    Returns
    -------
    array (B, C)
        Mean accuracy of every configuration in every replicate, all configurations under the same
        seed and sentence draws.
    """
    x = np.asarray(correct, dtype=float)
    if x.ndim != 3 or min(x.shape) < 1:
        raise ValueError(f"correct must be a non-empty (configs, seeds, sentences) array, got shape {x.shape}")
    if levels not in LEVELS:
        raise ValueError(f"levels must be one of {LEVELS}, got {levels!r}")
    if B < 1 or chunk < 1:
        raise ValueError(f"B and chunk must be positive, got B={B}, chunk={chunk}")
    C, S, N = x.shape
    flat = x.reshape(C * S, N)
    out = np.empty((B, C))
    for start, w_sent, w_seed in _draws(B, N, S, seed, levels, chunk):
        b = len(w_seed)
        per_run = (flat @ w_sent.T / N).reshape(C, S, b)  # accuracy of each run on the resampled sentences
        out[start:start + b] = np.einsum("csb,bs->bc", per_run, w_seed) / S
    return out


def _draws(B: int, N: int, S: int, seed: int, levels: str, chunk: int):
    """The blocks ``(start, sentence weights (b, N), seed weights (b, S))`` of :func:`two_level`, as floats.

    They depend on the sizes and the seed only, never on the data, so every call with the same ones gets the
    same draws; the counts are drawn once per process (:func:`_counts`) and reused."""
    for start, b, w_sent, w_seed in _counts(B, N, S, seed, levels, chunk):
        yield (start, np.ones((b, N)) if w_sent is None else w_sent.astype(float),
               np.ones((b, S)) if w_seed is None else w_seed.astype(float))


@functools.lru_cache(maxsize=8)
def _counts(B: int, N: int, S: int, seed: int, levels: str, chunk: int) -> tuple:
    """Multinomial resample counts of :func:`two_level` (int32, read-only; None = that level is not resampled).

    Drawing them is most of a bootstrap's time (B x N binomials), and a summary runs hundreds of bootstraps
    of the same sizes with the same seed."""
    rng = np.random.default_rng(seed)
    blocks = []
    for start in range(0, B, chunk):
        b = min(chunk, B - start)
        w_sent = None if levels == "seeds" else rng.multinomial(N, np.full(N, 1.0 / N), size=b).astype(np.int32)
        w_seed = None if levels == "sentences" else rng.multinomial(S, np.full(S, 1.0 / S), size=b).astype(np.int32)
        for w in (w_sent, w_seed):
            if w is not None:
                w.flags.writeable = False
        blocks.append((start, b, w_sent, w_seed))
    return tuple(blocks)


def differences(replicates: np.ndarray, baseline: int = 0) -> np.ndarray:
    """Replicates (B, C) -> paired differences (B, C) of every configuration minus column ``baseline``."""
    return replicates - replicates[:, [baseline]]


def percentile_ci(draws, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap ``draws`` (1-D)."""
    lo, hi = np.quantile(np.asarray(draws, dtype=float), [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)


def p_below(draws, value: float) -> float:
    """One-sided bootstrap p-value for H0: true difference >= ``value`` against H1: it is smaller.

    ``(1 + #{draws >= value}) / (B + 1)``: the smallest level at which the one-sided percentile
    upper bound falls below ``value`` (the +1 keeps p > 0, as for a Monte-Carlo test).
    """
    d = np.asarray(draws, dtype=float)
    return float((1 + np.sum(d >= value)) / (len(d) + 1))


def p_two_sided(draws, value: float = 0.0) -> float:
    """Two-sided bootstrap p-value for H0: true difference = ``value`` (twice the smaller tail, at most 1)."""
    d = np.asarray(draws, dtype=float)
    tail = min(np.sum(d <= value), np.sum(d >= value))
    return float(min(1.0, 2 * (1 + tail) / (len(d) + 1)))


def detectable(se: float, alpha: float = 0.05, power: float = 0.8, comparisons: int = 1,
               sided: int = 2) -> float:
    """Smallest true difference a z-test with standard error ``se`` detects with probability ``power``.

    ``(z_{1 - alpha/(sided * comparisons)} + z_{power}) * se``: the level is divided by the number of
    comparisons, which is Holm's first (strictest) step, so the bound holds whatever the order the
    other tests come in. The far tail of a two-sided test is ignored (it adds < 1e-6 at these sizes).
    """
    if not se >= 0 or comparisons < 1 or sided not in (1, 2) or not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"need se >= 0, comparisons >= 1, sided in (1, 2), alpha and power in (0, 1); got "
                         f"se={se}, comparisons={comparisons}, sided={sided}, alpha={alpha}, power={power}")
    return float((stats.norm.ppf(1 - alpha / (sided * comparisons)) + stats.norm.ppf(power)) * se)


def crossed_se(diff) -> float:
    """Standard error of the grand mean of a seeds x sentences table, from the crossed random-effects model.

    A closed-form cross-check of the two-level bootstrap. With ``d[s, n] = mu + a_s + b_n + e_sn``
    (seed effects, sentence effects, interaction/residual, all independent) the grand mean has variance
    ``sigma_a^2 / S + sigma_b^2 / N + sigma_e^2 / (S N)``, estimated without bias by the two-way ANOVA
    mean squares (no replication): ``(MS_seed + MS_sentence - MS_residual) / (S N)``, clipped at 0.

    Parameters
    ----------
    diff : array (S, N)
        Per-seed, per-sentence values, e.g. ``correct[c] - correct[baseline]`` in {-1, 0, 1}.
    """
    d = np.asarray(diff, dtype=float)
    if d.ndim != 2 or min(d.shape) < 2:
        raise ValueError(f"need a (seeds, sentences) table with at least 2 of each, got shape {d.shape}")
    S, N = d.shape
    grand, rows, cols = d.mean(), d.mean(axis=1), d.mean(axis=0)
    ms_seed = N * np.sum((rows - grand) ** 2) / (S - 1)
    ms_sent = S * np.sum((cols - grand) ** 2) / (N - 1)
    resid = d - rows[:, None] - cols[None, :] + grand
    ms_res = np.sum(resid ** 2) / ((S - 1) * (N - 1))
    return float(np.sqrt(max(0.0, ms_seed + ms_sent - ms_res) / (S * N)))
