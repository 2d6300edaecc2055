"""What one run per configuration can show: the paper's design (Table 1 is one run each).

A single sparse run minus a single baseline run carries the seed-to-seed spread of *both* runs,
whatever the true effect. From several seeds per configuration we can read off how such a single
difference is distributed: empirically (every pairing of a sparse seed with a baseline seed) and
parametrically (a normal difference with mean ``mean_c - mean_b`` and variance ``var_c + var_b``).
With no true effect at all, the chance that three single sparse runs all beat one baseline run, the
best by at least a margin, follows from the baseline's own spread.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import integrate, stats


def all_pairings(a, b) -> np.ndarray:
    """Every difference ``a[i] - b[j]`` (one run of ``a`` against one run of ``b``), flattened (len(a)*len(b),)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 1 or b.ndim != 1 or not len(a) or not len(b):
        raise ValueError("a and b must be non-empty 1-D arrays of per-run values")
    return (a[:, None] - b[None, :]).ravel()


def normal_single_difference(a, b) -> tuple[float, float]:
    """Mean and standard deviation of one run of ``a`` minus one independent run of ``b``.

    ``(mean(a) - mean(b), sqrt(var(a) + var(b)))`` with sample variances (ddof=1); needs >= 2 runs each.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("need at least two runs of each to estimate a spread")
    return float(a.mean() - b.mean()), float(math.sqrt(a.var(ddof=1) + b.var(ddof=1)))


def all_beat(values, k: int = 3, margin: float = 0.0) -> tuple[int, int]:
    """Count arrangements of runs *with no true effect* in which k "sparse" runs all beat one "baseline" run.

    Every run of ``values`` (runs of one configuration, e.g. the baseline's seeds) takes the role of
    the baseline in turn, and every set of ``k`` of the others the role of the sparse runs; an
    arrangement counts when every sparse run is strictly above the baseline run and the best is at
    least ``margin`` above it.

    Returns
    -------
    (hits, arrangements) : tuple of int
        ``arrangements = n * C(n - 1, k)``.
    """
    x = np.asarray(values, dtype=float)
    if len(x) < k + 1:
        raise ValueError(f"need at least k + 1 = {k + 1} runs, got {len(x)}")
    hits = total = 0
    for i, base in enumerate(x):
        others = np.delete(x, i)
        for group in itertools.combinations(others, k):
            g = np.asarray(group)
            total += 1
            hits += bool(np.all(g > base) and g.max() - base >= margin - 1e-12)
    return hits, total


def all_beat_normal(sd: float, k: int = 3, margin: float = 0.0) -> float:
    """P(k iid N(0, sd) runs all exceed one more N(0, sd) run, and their maximum by >= ``margin``).

    With x the baseline run (standardised) and m = margin / sd:
    ``P = integral phi(x) [ (1 - Phi(x))^k - (Phi(x + m) - Phi(x))^k ] dx``
    (all k above x, minus all k inside (x, x + m)). At ``margin = 0`` it is 1 / (k + 1), the chance
    that the baseline run is the lowest of k + 1 exchangeable runs.
    """
    if not sd > 0 or k < 1 or margin < 0:
        raise ValueError(f"need sd > 0, k >= 1 and margin >= 0, got sd={sd}, k={k}, margin={margin}")
    m = margin / sd

    def density(x: float) -> float:
        above = stats.norm.sf(x)
        inside = stats.norm.cdf(x + m) - stats.norm.cdf(x)
        return stats.norm.pdf(x) * (above ** k - inside ** k)

    value, _ = integrate.quad(density, -12, 12, epsabs=1e-12, limit=200)
    return float(value)
