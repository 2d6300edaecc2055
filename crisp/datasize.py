"""The data-size sweep: does attention sparsity help more where there is less data to fit?

The paper explains its gains as regularization that "prevents the model from overfitting". A regularizer
has most to do when data is scarce and training is long, so the sweep trains the four configurations on
nested stratified subsets of 500, 2,000 and 8,000 sentences (protocols ``n500``, ``n2000``, ``n8000``,
:mod:`crisp.subsets`), long enough for the dense baseline to overfit, beside the ``full`` protocol.

Everything here reads the summaries ``crisp summary`` writes per protocol (each checked against its runs'
predictions by :func:`crisp.summary.check`), so a number in the chapter is a number in a results file.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from . import mechanism, report, summary
from .configs import CONFIGS

SIZE_OF = {"n500": 500, "n2000": 2000, "n8000": 8000, "full": 67349}  # training sentences per protocol


def sweep(root=None, model: str = "minilm", hardware: str = "cpu-fp32", summaries=None) -> dict:
    """``protocol -> {"sel": Selection, "stored": summary}`` for every size with a paired grid of all four
    configurations, smallest size first. ``summaries`` defaults to ``summary/`` beside the runs.

    Each stored summary is recomputed from its runs' predictions first (a stale one raises
    :class:`crisp.summary.StaleSummaryError` naming the file and the command that refreshes it).
    """
    out = {}
    for protocol in SIZE_OF:
        try:
            sel = report.select(root, model=model, protocol=protocol, hardware=hardware)
        except FileNotFoundError:
            continue
        if sel.metrics["config"].nunique() < len(CONFIGS):
            continue  # not one paired seed of all four configurations yet
        out[protocol] = dict(sel=sel, stored=summary.check(sel, summaries))
    if not out:
        raise FileNotFoundError(f"no size of the sweep has a paired grid of {model} on {hardware} yet; "
                                f"run `crisp grid --model {model} --protocol n500` (and n2000, n8000)")
    return out


def _tag(frame: pd.DataFrame, protocol: str, sel) -> pd.DataFrame:
    return frame.assign(protocol=protocol, train_size=SIZE_OF[protocol], n_seeds=sel.n_seeds)


def differences(sw: dict) -> pd.DataFrame:
    """The two-level bootstrap rows of every size (``bootstrap.csv``: sparse minus baseline per split), tagged
    with ``protocol, train_size, n_seeds``."""
    return pd.concat([_tag(v["stored"]["bootstrap"], p, v["sel"]) for p, v in sw.items()], ignore_index=True)


def accuracies(sw: dict) -> pd.DataFrame:
    """Per run and split: ``protocol, train_size, config, seed, split, accuracy`` from the predictions."""
    frames = []
    for p, v in sw.items():
        for split in v["stored"]["facts"].get("splits", ["dev"]):
            frames.append(_tag(report.accuracy_from_predictions(v["sel"], split).assign(split=split), p, v["sel"]))
    return pd.concat(frames, ignore_index=True)[["protocol", "train_size", "n_seeds", "config", "seed", "split", "accuracy"]]


def fits(sw: dict) -> pd.DataFrame:
    """Per run: final-epoch training loss and accuracy, dev loss and accuracy, and ``gap`` = training minus dev
    accuracy (:func:`crisp.mechanism.run_dynamics`), tagged with the size."""
    return pd.concat([_tag(mechanism.run_dynamics(v["sel"]), p, v["sel"]) for p, v in sw.items()], ignore_index=True)


def gap_differences(sw: dict) -> pd.DataFrame:
    """Per size: each configuration minus baseline in the train-minus-dev gap and in dev loss, paired by seed
    (``dynamics.csv`` of each summary: t intervals over seeds, Holm over configurations)."""
    rows = []
    for p, v in sw.items():
        d = v["stored"]["dynamics"]
        rows.append(_tag(d[d["measure"].isin(["gap", "dev_loss", "train_loss"])], p, v["sel"]))
    return pd.concat(rows, ignore_index=True)


def trend(diffs: pd.DataFrame, small: str | None = None, large: str | None = None) -> pd.DataFrame:
    """How much more (or less) each configuration gains at the smallest size than at the largest, per split.

    ``change = diff(small) - diff(large)``: the runs of two sizes are independent, so its standard error is
    ``sqrt(se_small**2 + se_large**2)`` from the two bootstraps, with a normal 95% interval and a two-sided p,
    Holm-adjusted over the configurations of a split. Positive means sparsity does better with less data.
    """
    sizes = sorted(diffs["protocol"].unique(), key=SIZE_OF.get)
    small, large = small or sizes[0], large or sizes[-1]
    rows = []
    for (split, config), g in diffs.groupby(["split", "config"], sort=False):
        g = g.set_index("protocol")
        if small not in g.index or large not in g.index or small == large:
            continue
        a, b = g.loc[small], g.loc[large]
        change, se = a.mean_diff - b.mean_diff, math.hypot(a.se, b.se)
        z = sps.norm.ppf(0.975)
        p = float(2 * sps.norm.sf(abs(change) / se)) if se > 0 else float("nan")
        rows.append(dict(split=split, config=config, small=small, large=large, diff_small=a.mean_diff,
                         diff_large=b.mean_diff, change=change, se=se, ci_low=change - z * se, ci_high=change + z * se,
                         p=p))
    out = pd.DataFrame(rows)
    if len(out):
        from .stats import holm
        out["p_holm"] = np.concatenate([holm(g["p"].to_numpy()) for _, g in out.groupby("split", sort=False)])
    return out


def answer(diffs: pd.DataFrame, change: pd.DataFrame, alpha: float = 0.05, split: str = "dev") -> str:
    """The chapter's answer to "does sparsity help more as data shrinks?", by a stated rule, on ``split``.

    Yes only if some configuration both beats the baseline at the smallest size (two-level bootstrap, Holm p
    against zero below ``alpha``, difference above zero) and gains significantly more there than at the
    largest size (:func:`trend`, Holm p below ``alpha``, change above zero). Otherwise no, with the numbers.
    """
    d, c = diffs[diffs["split"] == split], change[change["split"] == split] if len(change) else change
    sizes = sorted(d["protocol"].unique(), key=SIZE_OF.get)
    if len(sizes) < 2 or not len(c):
        return (f"Not answerable yet on {split}: the sweep has {len(sizes)} size(s) with a paired grid "
                f"({', '.join(sizes) or 'none'}).")
    small, large = sizes[0], sizes[-1]
    at_small = d[d["protocol"] == small].set_index("config")
    beats = {cfg for cfg, r in at_small.iterrows() if r.p_zero_holm < alpha and r.mean_diff > 0}
    grows = {r.config for r in c.itertuples() if r.p_holm < alpha and r.change > 0}
    both = sorted(beats & grows, key=list(CONFIGS).index)
    seeds = f"{int(at_small['n_seeds'].min())} paired seed(s) at {small}"
    span = (f"at {SIZE_OF[small]:,} training sentences the sparse configurations differ from the baseline by "
            f"{100 * at_small.mean_diff.min():+.2f} to {100 * at_small.mean_diff.max():+.2f} points on {split}, and at "
            f"{SIZE_OF[large]:,} by {100 * d[d.protocol == large].mean_diff.min():+.2f} to "
            f"{100 * d[d.protocol == large].mean_diff.max():+.2f}")
    if both:
        return (f"Yes for {', '.join(both)}: it beats the dense baseline at {SIZE_OF[small]:,} sentences and gains more "
                f"there than at {SIZE_OF[large]:,} (Holm, {100 * alpha:.0f}%); {span} ({seeds}).")
    if beats:
        return (f"No: {', '.join(sorted(beats))} beat{'s' if len(beats) == 1 else ''} the baseline at {SIZE_OF[small]:,} "
                f"sentences, but the gain is not significantly larger than at {SIZE_OF[large]:,}; {span} ({seeds}).")
    return (f"No: no sparse configuration beats the dense baseline at the smallest size, and none gains "
            f"significantly more there than at the largest; {span} ({seeds}).")
