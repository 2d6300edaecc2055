"""Loss and calibration of every run of a selection, and each configuration's paired difference from a reference.

Per run (:func:`run_scores`): accuracy, NLL, Brier and ECE (:mod:`crisp.analysis.calibration`) on dev and test,
a temperature fitted on dev (minimum NLL) and the test scores after it. Per configuration
(:func:`differences`): the configuration minus a reference (the dense ``baseline``; for the sparse
configurations also each standard regularizer), paired by seed, with the same two questions as the
main result:

- **on these sentences** (sentences fixed, seeds resampled): the paired t interval and p over seeds of
  the per-run metric;
- **on new sentences too**: the paired two-level bootstrap over seeds and sentences
  (:mod:`crisp.analysis.bootstrap`, B = 10,000, RNG seed 0). Accuracy, NLL and Brier are means over sentences,
  so a replicate is a weighted mean (:func:`crisp.analysis.bootstrap.two_level`); ECE is not, so each of its
  ``ECE_B`` = 1,000 replicates recomputes it on the resampled sentences of every resampled run.

Holm's correction runs over the configurations compared with one reference, within one split,
scaling and metric. After temperature scaling (``scaling == "temperature"``, test only) the fitted
temperature of each run is held fixed: its own uncertainty (from dev) is not propagated.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd

from . import bootstrap, calibration, report, stats

METRICS = ("accuracy", "nll", "brier", "ece")
METRIC_TEXT = {"accuracy": "accuracy", "nll": "NLL (nats)", "brier": "Brier score", "ece": "ECE (15 equal-mass bins)"}
ECE_B = 1000  # two-level bootstrap replicates for ECE (recomputed per replicate, so fewer than the mean metrics' B)
DIFFERENCE_COLUMNS = ["split", "scaling", "metric", "reference", "config", "n_seeds", "seeds", "reference_mean",
                      "config_mean", "mean_diff", "t_ci_low", "t_ci_high", "t_p", "t_p_holm", "boot_ci_low",
                      "boot_ci_high", "boot_p", "boot_p_holm", "B", "boot_seed"]


def _runs(sel: report.Selection) -> pd.DataFrame:
    """The paper's configurations (paired seeds) and the regularizer runs of ``sel``."""
    return pd.concat([sel.metrics, sel.regularizers], ignore_index=True)


def _predictions(run_dir, split: str) -> pd.DataFrame | None:
    """A run's predictions in ``idx`` order (read once per file version: every comparison reuses them; not to be
    modified by the caller)."""
    path = Path(run_dir) / f"predictions_{split}.csv"
    return _read_sorted(str(path), path.stat().st_mtime_ns) if path.is_file() else None


@functools.lru_cache(maxsize=512)
def _read_sorted(path: str, mtime_ns: int) -> pd.DataFrame:
    return pd.read_csv(path).sort_values("idx").reset_index(drop=True)


def run_scores(sel: report.Selection) -> pd.DataFrame:
    """One row per run: ``config, seed, temperature`` and ``<split>_<metric>`` for dev and test, plus
    ``test_<metric>_ts`` after the run's dev-fitted temperature (accuracy does not change under it)."""
    rows = []
    for r in _runs(sel).itertuples():
        row = {"config": r.config, "seed": int(r.seed)}
        dev, test = _predictions(r.run_dir, "dev"), _predictions(r.run_dir, "test")
        row.update({f"dev_{k}": v for k, v in calibration.scores(dev["prob_pos"], dev["label"]).items()})
        row["temperature"] = calibration.fit_temperature(dev["prob_pos"], dev["label"])
        if test is not None:
            row.update({f"test_{k}": v for k, v in calibration.scores(test["prob_pos"], test["label"]).items()})
            scaled = calibration.apply_temperature(test["prob_pos"], row["temperature"])
            row.update({f"test_{k}_ts": v for k, v in calibration.scores(scaled, test["label"]).items() if k != "accuracy"})
        rows.append(row)
    order = list(report.CONFIGS) + sorted(set(r["config"] for r in rows) - set(report.CONFIGS))
    out = pd.DataFrame(rows)
    return out.sort_values(["config", "seed"], key=lambda s: s.map(order.index) if s.name == "config" else s
                           ).reset_index(drop=True)


def _per_sentence(run_dir, split: str, metric: str, temperature: float | None):
    p = _predictions(run_dir, split)
    prob = p["prob_pos"].to_numpy() if temperature is None else calibration.apply_temperature(p["prob_pos"], temperature)
    label = p["label"].to_numpy()
    if metric == "accuracy":
        return ((prob > 0.5) == (label == 1)).astype(float), p["idx"].to_numpy(), prob, label
    if metric == "nll":
        return calibration.nll_per_sentence(prob, label), p["idx"].to_numpy(), prob, label
    return calibration.brier_per_sentence(prob, label), p["idx"].to_numpy(), prob, label


def _ece_two_level(prob, label, B: int, seed: int, chunk: int = 50, runs=None) -> np.ndarray:
    """Replicates (B, C) of each configuration's mean ECE over resampled seeds and sentences (same draws for all).

    ``prob``, ``label``: arrays (C, S, N) and (N,). ``runs``: optional (C, S) keys naming each run's ``prob`` row
    (hashable); a run met again (the baseline is in every comparison) reuses its ECE replicates."""
    C, S, N = np.shape(prob)
    draws = _ece_draws(B, N, S, seed, chunk)
    per_run = np.empty((C, S, B))
    for c in range(C):
        for s in range(S):
            if runs is None:
                per_run[c, s] = _ece_replicates(prob[c][s], label, draws)
            else:
                per_run[c, s] = _ece_replicates_of(runs[c][s], prob[c][s], label, (B, N, S, seed, chunk))
    out = np.empty((B, C))
    for start, _, seeds in draws:
        b = len(seeds)
        out[start:start + b] = np.take_along_axis(per_run[:, :, start:start + b], seeds.T[None, :, :], axis=1
                                                  ).mean(axis=1).T
    return out


@functools.lru_cache(maxsize=4)
def _ece_draws(B: int, N: int, S: int, seed: int, chunk: int) -> tuple:
    """The ECE bootstrap's blocks ``(start, sentences (b, N), seeds (b, S))``: sizes and seed only, never data."""
    rng = np.random.default_rng(seed)
    blocks = []
    for start in range(0, B, chunk):
        b = min(chunk, B - start)
        sentences = rng.integers(0, N, size=(b, N))
        seeds = rng.integers(0, S, size=(b, S))
        blocks.append((start, sentences, seeds))
    return tuple(blocks)


def _ece_replicates(prob, label, draws) -> np.ndarray:
    """One run's ECE on the resampled sentences of every replicate (B,). Each row's ECE depends on that row
    alone (a stable sort), so it equals the value computed among other runs' rows."""
    prob, label = np.asarray(prob), np.asarray(label)
    return np.concatenate([calibration.ece_rows(prob[sentences], label[sentences]) for _, sentences, _ in draws])


_ECE_REPLICATES: dict = {}


def _ece_replicates_of(key, prob, label, sizes) -> np.ndarray:
    """:func:`_ece_replicates`, computed once per run ``key`` (its predictions file, version and temperature)."""
    if (key, sizes) not in _ECE_REPLICATES:
        _ECE_REPLICATES[(key, sizes)] = _ece_replicates(prob, label, _ece_draws(*sizes))
    return _ECE_REPLICATES[(key, sizes)]


def _compare(sel, scores: pd.DataFrame, runs: pd.DataFrame, split: str, scaling: str, metric: str,
             reference: str, config: str) -> dict | None:
    column = f"{split}_{metric}" + ("_ts" if scaling == "temperature" else "")
    if column not in scores:
        return None
    ref = scores[scores["config"] == reference].set_index("seed")
    mine = scores[scores["config"] == config].set_index("seed")
    seeds = sorted(set(ref.index) & set(mine.index))
    if not seeds:
        return None
    t = stats.paired_difference(mine.loc[seeds, column].to_numpy(), ref.loc[seeds, column].to_numpy())
    # per-sentence values of both configurations, seeds paired, sentences in idx order
    where = runs.set_index(["config", "seed"])["run_dir"]
    temps = scores.set_index(["config", "seed"])["temperature"]
    values, probs, keys, first_idx, first_label = [], [], [], None, None
    for c in (reference, config):
        per_c, prob_c, key_c = [], [], []
        for s in seeds:
            temperature = float(temps[(c, s)]) if scaling == "temperature" else None
            v, idx, prob, label = _per_sentence(where[(c, s)], split, metric, temperature)
            path = Path(where[(c, s)]) / f"predictions_{split}.csv"
            key_c.append((str(path), path.stat().st_mtime_ns, temperature))
            if first_idx is None:
                first_idx, first_label = idx, label
            elif not (np.array_equal(idx, first_idx) and np.array_equal(label, first_label)):
                raise ValueError(f"{c} seed {s}: {split} predictions cover other sentences than {reference} seed {seeds[0]}")
            per_c.append(v)
            prob_c.append(prob)
        values.append(per_c)
        probs.append(prob_c)
        keys.append(key_c)
    if metric == "ece":
        B = ECE_B
        reps = _ece_two_level(np.asarray(probs), np.asarray(first_label), B, report.BOOT_SEED, runs=keys)
    else:
        B = report.BOOT_B
        reps = bootstrap.two_level(np.asarray(values), B=B, seed=report.BOOT_SEED)
    d = bootstrap.differences(reps)[:, 1]
    lo, hi = bootstrap.percentile_ci(d)
    return dict(split=split, scaling=scaling, metric=metric, reference=reference, config=config, n_seeds=len(seeds),
                seeds=" ".join(map(str, seeds)), reference_mean=float(ref.loc[seeds, column].mean()),
                config_mean=float(mine.loc[seeds, column].mean()), mean_diff=t["mean_diff"], t_ci_low=t["ci_low"],
                t_ci_high=t["ci_high"], t_p=t["p_ttest"], boot_ci_low=lo, boot_ci_high=hi,
                boot_p=bootstrap.p_two_sided(d), B=B, boot_seed=report.BOOT_SEED)


def differences(sel: report.Selection, scores: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every configuration minus ``baseline``, and every sparse configuration minus each regularizer present, per
    split, scaling (``raw``; ``temperature`` on test) and metric: columns :data:`DIFFERENCE_COLUMNS`."""
    from ..study.train import REGULARIZERS

    scores = run_scores(sel) if scores is None else scores
    runs = _runs(sel)
    present = list(pd.unique(scores["config"]))
    sparse = [c for c in report.CONFIGS if c != "baseline" and c in present]
    regularizers = [c for c in REGULARIZERS if c in present]
    pairs = [("baseline", c) for c in sparse + regularizers] + [(r, c) for r in regularizers for c in sparse]
    splits = [s for s in ("dev", "test") if f"{s}_accuracy" in scores]
    rows = []
    for split in splits:
        for scaling in ("raw", "temperature") if split == "test" else ("raw",):
            for metric in METRICS:
                if scaling == "temperature" and metric == "accuracy":
                    continue  # a temperature never changes a prediction
                for reference, config in pairs:
                    row = _compare(sel, scores, runs, split, scaling, metric, reference, config)
                    if row is not None:
                        rows.append(row)
    out = pd.DataFrame(rows, columns=DIFFERENCE_COLUMNS)
    for _, group in out.groupby(["split", "scaling", "metric", "reference"], sort=False):
        out.loc[group.index, "t_p_holm"] = stats.holm(group["t_p"])
        out.loc[group.index, "boot_p_holm"] = stats.holm(group["boot_p"])
    return out
