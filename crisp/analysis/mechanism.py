"""The paper's Figures 2-4 as paired tests: layer-wise sparsity, per-head entropy, and fit vs generalization.

The paper reads its figures by eye (Section 4: "sparse models exhibit lower entropy", "the sparse
models consistently achieve a lower validation loss ... a classic indicator of better
generalization"). Here every configuration is compared with the baseline *paired by seed*
(:func:`crisp.analysis.stats.paired_tests`, Holm over the groups), and the question "regularization or
underfitting?" gets an answer from the signs of intervals, by a stated rule (:func:`fit_answer`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import report, stats
from ..configs import CONFIGS

ENTROPY_MEASURES = ("entropy_dense", "entropy_sparse")  # before pruning / the distribution the model uses
DYNAMICS_MEASURES = ("train_loss", "train_accuracy", "dev_loss", "dev_accuracy", "gap")


def _order(frame: pd.DataFrame) -> pd.DataFrame:
    rank = {c: i for i, c in enumerate(CONFIGS)}
    return frame.sort_values("config", key=lambda s: s.map(rank), kind="stable").reset_index(drop=True)


def entropy_differences(sel: report.Selection) -> pd.DataFrame:
    """Per head (layer, head), each configuration minus baseline in mean attention entropy (nats) over dev.

    For ``entropy_dense`` both sides are the dense softmax each model computes (what training with
    sparsity did to the model); for ``entropy_sparse`` each side is the distribution the model
    actually uses (the baseline's is its dense one), which pruning lowers mechanically.
    Columns ``measure, config, layer, head`` and :data:`crisp.analysis.stats.PAIRED_TEST_COLUMNS` (Holm over
    the heads of one configuration and measure).
    """
    ent = sel.table("attention_stats.csv")
    ent = ent[ent["config"].isin(CONFIGS)]
    frames = [stats.paired_tests(ent, m, keys=("layer", "head")).assign(measure=m) for m in ENTROPY_MEASURES]
    out = pd.concat(frames, ignore_index=True)
    return _order(out[["measure", *out.columns[:-1]]])


def run_dynamics(sel: report.Selection) -> pd.DataFrame:
    """Per run: how well it fit the training data at the end, and how it did on dev.

    ``train_loss`` / ``train_accuracy``: mean over the logged windows of the last epoch (each window
    averages 50 optimizer steps of training batches, dropout on); ``dev_loss`` from ``metrics.json``;
    ``dev_accuracy`` from the predictions; ``gap = train_accuracy - dev_accuracy`` (fractions).
    """
    hist = sel.table("history.csv").dropna(subset=["train_loss"])
    hist = hist[hist["config"].isin(CONFIGS)]
    last = hist[hist["epoch"] > hist.groupby(["config", "seed"])["epoch"].transform("max").apply(np.ceil) - 1]
    fit = last.groupby(["config", "seed"])[["train_loss", "train_accuracy"]].mean().reset_index()
    dev = report.accuracy_from_predictions(sel, "dev").rename(columns={"accuracy": "dev_accuracy"})
    out = fit.merge(sel.metrics[["config", "seed", "dev_loss"]], on=["config", "seed"]).merge(
        dev[["config", "seed", "dev_accuracy"]], on=["config", "seed"])
    out["gap"] = out["train_accuracy"] - out["dev_accuracy"]
    return _order(out[["config", "seed", *DYNAMICS_MEASURES]])


def dynamics_differences(sel: report.Selection) -> pd.DataFrame:
    """Each configuration minus baseline in every :data:`DYNAMICS_MEASURES`, paired by seed (t CI; Holm over the
    configurations within a measure), with the answer of :func:`fit_answer` per configuration."""
    runs = run_dynamics(sel)
    out = pd.concat([stats.paired_tests(runs, m).assign(measure=m) for m in DYNAMICS_MEASURES], ignore_index=True)
    out = _order(out[["measure", *out.columns[:-1]]])
    answers = {c: fit_answer(out[out["config"] == c]) for c in pd.unique(out["config"])}
    out["answer"] = out["config"].map(answers)
    return out


def _sign(rows: pd.DataFrame, measure: str) -> int:
    # +1 / -1 when the 95% interval of the difference lies above / below zero, else 0 (NaN intervals: 0).
    r = rows[rows["measure"] == measure]
    if r.empty:
        return 0
    lo, hi = float(r["ci_low"].iloc[0]), float(r["ci_high"].iloc[0])
    return 1 if lo > 0 else -1 if hi < 0 else 0


def fit_answer(rows: pd.DataFrame) -> str:
    """The answer to "regularization or underfitting?" from one configuration's paired 95% intervals, with the fit,
    the dev loss and the dev accuracy each read on its own and in both directions.

    Each measure's sign (:func:`_sign`): +1 / -1 when its interval lies above / below zero, else 0. The fit is
    *less* when training loss is higher or training accuracy lower, *more* in the opposite case. Dev loss and dev
    accuracy are named separately, because they can move apart ("lower loss, lower accuracy" is its own answer):

    - dev loss lower and dev accuracy lower: "lower loss, lower accuracy" (higher and higher: "higher loss, higher
      accuracy"), whatever the fit;
    - less fit and dev better (loss lower or accuracy higher, neither worse): "regularization";
    - less fit otherwise (dev worse or no dev difference): "underfitting";
    - more fit and dev worse: "overfitting"; more fit and dev better: "more fit, better dev"; more fit, no dev
      difference: "more fit, same dev";
    - same fit: "same fit, better dev", "same fit, worse dev", or "no difference in fit".

    A significant loss of dev accuracy is therefore never called regularization.
    """
    train_loss, train_acc = _sign(rows, "train_loss"), _sign(rows, "train_accuracy")
    fit = (-1 if train_loss > 0 or train_acc < 0 else 0) + (1 if train_loss < 0 or train_acc > 0 else 0)  # -1 less fit
    loss, acc = _sign(rows, "dev_loss"), _sign(rows, "dev_accuracy")
    if loss < 0 and acc < 0:
        return "lower loss, lower accuracy"
    if loss > 0 and acc > 0:
        return "higher loss, higher accuracy"
    better, worse = loss < 0 or acc > 0, loss > 0 or acc < 0
    if fit < 0:
        return "regularization" if better else "underfitting"
    if fit > 0:
        return "overfitting" if worse else "more fit, better dev" if better else "more fit, same dev"
    return "same fit, better dev" if better else "same fit, worse dev" if worse else "no difference in fit"


def layer_shape(sel: report.Selection) -> pd.DataFrame:
    """Per configuration and layer, the final target ratio and the realized dev sparsity (over real tokens),
    mean and sd over seeds (from each run's ``metrics.json``: ``layer_ratio_final``, ``layer_realized_sparsity_dev``)."""
    rows = []
    for r in sel.metrics.itertuples():
        m = json.loads((Path(r.run_dir) / "metrics.json").read_text(encoding="utf-8"))
        for layer, (t, z) in enumerate(zip(m["layer_ratio_final"], m["layer_realized_sparsity_dev"])):
            rows.append(dict(config=r.config, seed=r.seed, layer=layer, target=t, realized=z))
    runs = pd.DataFrame(rows)
    out = runs.groupby(["config", "layer"]).agg(target=("target", "mean"), target_sd=("target", "std"),
                                               realized=("realized", "mean"), realized_sd=("realized", "std"),
                                               n=("seed", "size")).reset_index()
    return _order(out)


def describe_layers(shape: pd.DataFrame) -> dict:
    """Plain facts about the layer-wise shape, per configuration: the fitted slope of the realized sparsity over
    layers (per layer, fraction), the layers with the least and most, the range, and whether it rises steadily."""
    out = {}
    for config, g in shape.groupby("config", sort=False):
        g = g.sort_values("layer")
        z = g["realized"].to_numpy()
        out[config] = dict(slope=float(np.polyfit(g["layer"], z, 1)[0]) if len(z) > 1 else float("nan"),
                           least_layer=int(g["layer"].iloc[int(np.argmin(z))]),
                           most_layer=int(g["layer"].iloc[int(np.argmax(z))]), min=float(z.min()), max=float(z.max()),
                           target_min=float(g["target"].min()), target_max=float(g["target"].max()),
                           increasing=bool(np.all(np.diff(z) > 0)))
    return out


def layer_log_final(layers: pd.DataFrame) -> pd.DataFrame:
    """Per configuration and layer, the target ratio and the realized sparsity at each run's *last logged step*
    (``layer_sparsity.csv``: each row is a mean over one logging window of training batches), mean over seeds.

    Columns ``config, layer, target_sparsity, realized_sparsity`` (fractions). Compare :func:`layer_shape`, which
    reads the final ratios and the realized *dev* sparsity from each run's ``metrics.json``.
    """
    layers = layers[layers["config"].isin(CONFIGS)]
    last = layers[layers["step"] == layers.groupby(["config", "seed"])["step"].transform("max")]
    out = last.groupby(["config", "layer"])[["target_sparsity", "realized_sparsity"]].mean().reset_index()
    return _order(out)


def layer_slopes(frame: pd.DataFrame, value: str) -> dict:
    """Least-squares slope of ``value`` over ``layer`` for each configuration in ``frame`` (per layer, in the
    units of ``value``; positive: deeper layers higher). NaN for a configuration with fewer than two layers."""
    return {config: float(np.polyfit(g["layer"], g[value], 1)[0]) if g["layer"].nunique() > 1 else float("nan")
            for config, g in frame.groupby("config", sort=False)}


def entropy_head_counts(heads: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """How many heads moved, per measure and configuration, from :func:`entropy_differences` rows.

    Columns ``measure, config, heads, mean_diff`` (mean over heads of the per-head mean difference, nats),
    ``lower`` (heads whose mean difference is below zero, no test), ``holm_lower`` / ``holm_higher`` (heads
    with Holm-adjusted p below ``alpha`` and a negative / positive mean difference).
    """
    sig = heads["p_holm"] < alpha
    frame = heads.assign(lower=heads["mean_diff"] < 0, holm_lower=sig & (heads["mean_diff"] < 0),
                         holm_higher=sig & (heads["mean_diff"] > 0))
    out = frame.groupby(["measure", "config"], sort=False).agg(
        heads=("mean_diff", "size"), mean_diff=("mean_diff", "mean"), lower=("lower", "sum"),
        holm_lower=("holm_lower", "sum"), holm_higher=("holm_higher", "sum")).reset_index()
    return out.astype({c: int for c in ("heads", "lower", "holm_lower", "holm_higher")})


def final_eval(hist: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: validation loss and accuracy at each run's last evaluated epoch (``history.csv``),
    mean and sd over seeds. Columns ``config, n, eval_loss, eval_loss_sd, eval_accuracy, eval_accuracy_sd``."""
    evals = hist[hist["config"].isin(CONFIGS)].dropna(subset=["eval_loss"]).drop_duplicates(["config", "seed", "epoch"])
    final = evals[evals["epoch"] == evals.groupby(["config", "seed"])["epoch"].transform("max")]
    out = final.groupby("config").agg(n=("seed", "size"), eval_loss=("eval_loss", "mean"),
                                      eval_loss_sd=("eval_loss", "std"), eval_accuracy=("eval_accuracy", "mean"),
                                      eval_accuracy_sd=("eval_accuracy", "std")).reset_index()
    return _order(out)
