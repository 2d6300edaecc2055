"""The data-size sweep: does attention sparsity help more where there is less data to fit?

The paper explains its gains as regularization that "prevents the model from overfitting". A regularizer
has most to do when data is scarce and training is long, so the sweep trains the four configurations on
nested stratified subsets of 500, 2,000 and 8,000 sentences (protocols ``n500``, ``n2000``, ``n8000``,
:mod:`crisp.study.subsets`), long enough for the dense baseline to overfit, beside the ``full`` protocol.

Everything here reads the summaries ``crisp summary`` writes per protocol (each checked against its runs'
predictions by :func:`crisp.analysis.summary.check`), so a number in the chapter is a number in a results file.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import bootstrap, mechanism, present, report, summary
from .stats import holm
from ..configs import CONFIGS
from ..study.train import SIZE_PROTOCOLS

SWEEP = (*SIZE_PROTOCOLS, "full")  # smallest first; each run records how many sentences it trained on


def sweep(root=None, model: str = "minilm", hardware: str = "cpu-fp32", summaries=None) -> dict:
    """``protocol -> {"sel": Selection, "stored": summary}`` for every size with a paired grid of all four
    configurations, smallest size first. ``summaries`` defaults to ``summary/`` beside the runs.

    Each stored summary is recomputed from its runs' predictions first (a stale one raises
    :class:`crisp.analysis.summary.StaleSummaryError` naming the file and the command that refreshes it).
    """
    out = {}
    for protocol in SWEEP:
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


def train_size(sel) -> int:
    """Training sentences of a grid's runs, as their ``metrics.json`` recorded it (one value per grid)."""
    sizes = sel.metrics["train_size"].unique()
    if len(sizes) != 1:
        raise ValueError(f"the runs of {sel.model} {sel.protocol} trained on different numbers of sentences: {sorted(sizes)}")
    return int(sizes[0])


def _tag(frame: pd.DataFrame, protocol: str, sel) -> pd.DataFrame:
    return frame.assign(protocol=protocol, train_size=train_size(sel), n_seeds=sel.n_seeds)


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
    accuracy (:func:`crisp.analysis.mechanism.run_dynamics`), tagged with the size."""
    return pd.concat([_tag(mechanism.run_dynamics(v["sel"]), p, v["sel"]) for p, v in sw.items()], ignore_index=True)


def gap_differences(sw: dict) -> pd.DataFrame:
    """Per size: each configuration minus baseline in the train-minus-dev gap and in dev loss, paired by seed
    (``dynamics.csv`` of each summary: t intervals over seeds, Holm over configurations)."""
    rows = []
    for p, v in sw.items():
        d = v["stored"]["dynamics"]
        rows.append(_tag(d[d["measure"].isin(["gap", "dev_loss", "train_loss"])], p, v["sel"]))
    return pd.concat(rows, ignore_index=True)


def joint_change(small, large, B: int = report.BOOT_B, seed: int = report.BOOT_SEED) -> np.ndarray:
    """Bootstrap replicates of ``gain(small) - gain(large)`` for every sparse configuration.

    ``small`` and ``large``: ``(C, S, N)`` correctness arrays (:func:`crisp.analysis.report.correctness`, baseline first) of
    two sizes, scored on the same N sentences. Each replicate draws the sentences once for both sizes (the sizes
    share the dev or test sentences, so their gains are correlated through them) and each size's seeds on their
    own (the runs of two sizes are different runs). Returns ``(B, C - 1)``.
    """
    a, b = np.asarray(small, dtype=float), np.asarray(large, dtype=float)
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        raise ValueError(f"the two sizes must have the same configurations and sentences, got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    n = a.shape[2]
    out = []
    for start in range(0, B, 1000):
        k = min(1000, B - start)
        w = rng.multinomial(n, np.full(n, 1 / n), size=k).T  # (N, k): the same sentence draw for both sizes
        gains = []
        for x in (a, b):
            s = x.shape[1]
            per_seed = x @ w  # (C, S, k)
            v = rng.multinomial(s, np.full(s, 1 / s), size=k)  # (k, S): this size's own seed draw
            acc = np.einsum("csk,ks->kc", per_seed, v) / (s * n)  # (k, C)
            gains.append(acc[:, 1:] - acc[:, :1])
        out.append(gains[0] - gains[1])
    return np.concatenate(out)


def trend(sw: dict, splits=("dev", "test"), B: int = report.BOOT_B, seed: int = report.BOOT_SEED) -> pd.DataFrame:
    """How much more (or less) each configuration gains at the sweep's smallest size than at its largest, per split.

    Only the sweep's own sizes are compared (``full`` trains 3 epochs, not the sweep's length rule, so it would mix
    size with length). ``change = gain(small) - gain(large)`` with a 95% percentile interval and a two-sided p from
    :func:`joint_change`, Holm-adjusted over the configurations of a split. Positive means sparsity does better
    with less data. Empty with fewer than two sweep sizes.
    """
    sizes = [p for p in sw if p != "full"]
    if len(sizes) < 2:
        return pd.DataFrame()
    small, large = sizes[0], sizes[-1]
    rows = []
    for split in splits:
        try:
            (configs, seeds_s, a), (_, seeds_l, b) = (report.correctness(sw[p]["sel"], split) for p in (small, large))
        except ValueError:
            continue  # no predictions on this split
        draws = joint_change(a, b, B=B, seed=seed)
        for i, config in enumerate(configs[1:]):
            lo, hi = bootstrap.percentile_ci(draws[:, i])
            gain_s, gain_l = a[i + 1].mean() - a[0].mean(), b[i + 1].mean() - b[0].mean()
            rows.append(dict(split=split, config=config, small=small, large=large,
                             size_small=train_size(sw[small]["sel"]), size_large=train_size(sw[large]["sel"]),
                             seeds_small=len(seeds_s),
                             seeds_large=len(seeds_l), diff_small=gain_s, diff_large=gain_l, change=gain_s - gain_l,
                             se=float(draws[:, i].std(ddof=1)), ci_low=lo, ci_high=hi,
                             p=bootstrap.p_two_sided(draws[:, i])))
    out = pd.DataFrame(rows)
    if len(out):
        out["p_holm"] = out.groupby("split")["p"].transform(lambda p: holm(p.to_numpy()))
    return out


def answer(diffs: pd.DataFrame, change: pd.DataFrame, alpha: float = 0.05, split: str = "dev",
           min_seeds: int = 2, planned_seeds: int = report.PLANNED_SEEDS) -> str:
    """The chapter's answer to "does sparsity help more as data shrinks?", by a stated rule, on ``split``.

    Yes only if some configuration both beats the baseline at the sweep's smallest size (two-level bootstrap,
    Holm p against zero below ``alpha``, difference above zero) and gains significantly more there than at the
    sweep's largest size (:func:`trend`, Holm p below ``alpha``, change above zero). Not answerable while the
    two sizes compared have fewer than ``min_seeds`` paired seeds each: with one seed an interval counts the
    sentence sample only. Between ``min_seeds`` and ``planned_seeds`` the answer is given but opens with
    "Provisional" and the seed counts.
    """
    text = _answer(diffs, change, alpha, split, min_seeds)
    c = change[change["split"] == split] if len(change) else change
    if len(c) and min_seeds <= min(c.seeds_small.min(), c.seeds_large.min()) < planned_seeds:
        text = (f"Provisional ({int(min(c.seeds_small.min(), c.seeds_large.min()))} of the planned {planned_seeds} "
                f"seeds at the size with fewest): {text}")
    return text


def _answer(diffs, change, alpha, split, min_seeds) -> str:
    c = change[change["split"] == split] if len(change) else change
    if not len(c):
        return f"Not answerable yet on {split}: the sweep has fewer than two sizes with a paired grid."
    small, large = c["small"].iloc[0], c["large"].iloc[0]
    n_small, n_large = f"{int(c.size_small.iloc[0]):,}", f"{int(c.size_large.iloc[0]):,}"
    seeds = f"{int(c.seeds_small.iloc[0])} paired seed(s) at {small}, {int(c.seeds_large.iloc[0])} at {large}"
    if min(c.seeds_small.min(), c.seeds_large.min()) < min_seeds:
        return (f"Not answerable yet on {split} ({seeds}): with one seed an interval counts the sentence sample "
                f"but not the seed, so nothing here is a test yet.")
    d = diffs[(diffs["split"] == split) & (diffs["protocol"] == small)].set_index("config")
    beats = [cfg for cfg in present.order(d.index) if d.loc[cfg, "p_zero_holm"] < alpha and d.loc[cfg, "mean_diff"] > 0]
    grows = [cfg for cfg in present.order(c.config) if c.set_index("config").loc[cfg, "p_holm"] < alpha
             and c.set_index("config").loc[cfg, "change"] > 0]
    both = [cfg for cfg in beats if cfg in grows]
    span = (f"at {n_small} training sentences the sparse configurations differ from the baseline by "
            f"{100 * c.diff_small.min():+.2f} to {100 * c.diff_small.max():+.2f} points on {split}, and at "
            f"{n_large} by {100 * c.diff_large.min():+.2f} to {100 * c.diff_large.max():+.2f} ({seeds})")
    if both:
        return (f"Yes for {', '.join(both)}: it beats the dense baseline at {n_small} sentences and gains more "
                f"there than at {n_large} (Holm, {100 * alpha:.0f}%); {span}.")
    if beats:
        return (f"Not detected: {', '.join(beats)} beat{'s' if len(beats) == 1 else ''} the baseline at {n_small} "
                f"sentences, but the gain is not significantly larger than at {n_large}; {span}.")
    if grows:
        return (f"Not detected: no sparse configuration beats the dense baseline at {n_small} sentences, although "
                f"{', '.join(grows)} do{'es' if len(grows) == 1 else ''} significantly better against it there than at "
                f"{n_large}; {span}.")
    return (f"Not detected: no sparse configuration beats the dense baseline at the smallest size, and none gains "
            f"significantly more there than at the largest; {span}.")


# ---------------------------------------------------------------- a trend over every size

def joint_gains(arrays, B: int = report.BOOT_B, seed: int = report.BOOT_SEED) -> np.ndarray:
    """Bootstrap replicates of every sparse configuration's gain over baseline at every size, jointly.

    ``arrays``: one ``(C, S_k, N)`` correctness array per size (:func:`crisp.analysis.report.correctness`, baseline first),
    all scored on the same N sentences. Each replicate draws the sentences once for all sizes (they share the dev or
    test sentences) and each size's seeds on their own (different runs), as :func:`joint_change` does for two
    sizes. Returns ``(B, K, C - 1)``.
    """
    xs = [np.asarray(a, dtype=float) for a in arrays]
    if len({(x.shape[0], x.shape[2]) for x in xs}) != 1:
        raise ValueError(f"every size needs the same configurations and sentences, got {[x.shape for x in xs]}")
    rng = np.random.default_rng(seed)
    n = xs[0].shape[2]
    out = []
    for start in range(0, B, 1000):
        k = min(1000, B - start)
        w = rng.multinomial(n, np.full(n, 1 / n), size=k).T  # (N, k): one sentence draw for every size
        gains = []
        for x in xs:
            s = x.shape[1]
            v = rng.multinomial(s, np.full(s, 1 / s), size=k)  # (k, S): this size's own seed draw
            acc = np.einsum("csk,ks->kc", x @ w, v) / (s * n)  # (k, C)
            gains.append(acc[:, 1:] - acc[:, :1])
        out.append(np.stack(gains, axis=1))
    return np.concatenate(out)


def slope_weights(sizes) -> np.ndarray:
    """Least-squares weights ``w`` with ``slope = w @ y`` for ``y`` regressed on ``log10(sizes)`` (per tenfold)."""
    x = np.log10(np.asarray(sizes, dtype=float))
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError(f"a slope needs at least two different sizes, got {sizes}")
    return (x - x.mean()) / np.sum((x - x.mean()) ** 2)


TREND_COLUMNS = ["split", "config", "sizes", "min_seeds", "slope", "se", "ci_low", "ci_high", "p", "p_holm", "mdd"]


def size_trend(sw: dict, splits=("dev", "test"), B: int = report.BOOT_B, seed: int = report.BOOT_SEED,
               alpha: float = 0.05, power: float = 0.8) -> pd.DataFrame:
    """The paired difference (sparse minus baseline) regressed on log10 training size over every size of ``sw``
    (the sweep and ``full``), per configuration and split: ``slope`` (fraction of accuracy per tenfold more
    sentences; positive: sparsity does relatively better with more data), its bootstrap standard error and 95%
    percentile interval and two-sided p from :func:`joint_gains` (the same resampling as the main result), Holm
    over the configurations of a split, and ``mdd``: the slope detected with ``power`` at Holm's strictest level
    (:func:`crisp.analysis.bootstrap.detectable`). The sizes also differ in epochs and optimizer steps
    (:func:`schedule`): a slope mixes data size with training length. Empty with fewer than two sizes.
    """
    protocols = list(sw)
    if len(protocols) < 2:
        return pd.DataFrame(columns=TREND_COLUMNS)
    sizes = [train_size(sw[p]["sel"]) for p in protocols]
    w = slope_weights(sizes)
    rows = []
    for split in splits:
        try:
            found = [report.correctness(sw[p]["sel"], split) for p in protocols]
        except ValueError:
            continue  # no predictions on this split
        configs = found[0][0]
        if any(f[0] != configs for f in found):
            raise ValueError(f"the sizes have different configurations: {[f[0] for f in found]}")
        arrays = [f[2] for f in found]
        draws = np.einsum("bkc,k->bc", joint_gains(arrays, B=B, seed=seed), w)
        observed = np.array([[a[i].mean() - a[0].mean() for i in range(1, len(configs))] for a in arrays])  # (K, C-1)
        for i, config in enumerate(configs[1:]):
            lo, hi = bootstrap.percentile_ci(draws[:, i])
            se = float(draws[:, i].std(ddof=1))
            rows.append(dict(split=split, config=config, sizes=", ".join(f"{s:,}" for s in sizes),
                             min_seeds=min(len(f[1]) for f in found), slope=float(w @ observed[:, i]), se=se,
                             ci_low=lo, ci_high=hi, p=bootstrap.p_two_sided(draws[:, i]),
                             mdd=bootstrap.detectable(se, alpha, power, len(configs) - 1, sided=2)))
    out = pd.DataFrame(rows, columns=[c for c in TREND_COLUMNS if c != "p_holm"])
    out["p_holm"] = out.groupby("split")["p"].transform(lambda p: holm(p.to_numpy())) if len(out) else []
    return out[TREND_COLUMNS]


def schedule(sw: dict) -> pd.DataFrame:
    """Per size: ``protocol, train_size, epochs, optimizer_steps`` as the runs' ``metrics.json`` recorded them."""
    rows = []
    for p, v in sw.items():
        m = v["sel"].metrics
        rows.append(dict(protocol=p, train_size=train_size(v["sel"]),
                         epochs=float(m["epochs"].iloc[0]) if "epochs" in m else float("nan"),
                         optimizer_steps=float(m["optimizer_steps"].iloc[0]) if "optimizer_steps" in m else float("nan")))
    return pd.DataFrame(rows)


def trend_answer(tr: pd.DataFrame, sched: pd.DataFrame | None = None, split: str = "dev", alpha: float = 0.05) -> str:
    """The chapter's answer from :func:`size_trend` on ``split``: "Detected" for the configurations whose slope has
    Holm p below ``alpha`` (saying in which direction), else "Not detected", always with the slopes, the smallest
    slope the design detects (80% power) and, with ``sched``, the epochs and steps the sizes also differ in."""
    t = tr[tr["split"] == split] if len(tr) else tr
    if not len(t):
        return f"Not answerable on {split}: fewer than two sizes with a paired grid."
    if t["min_seeds"].min() < 2:
        return f"Not answerable yet on {split}: a size has one seed, so an interval counts the sentences only."
    slopes = "; ".join(f"{r.config} {100 * r.slope:+.2f} [{100 * r.ci_low:+.2f}, {100 * r.ci_high:+.2f}] (Holm p = "
                       f"{r.p_holm:.2g})" for r in t.itertuples())
    what = (f"the sparse-minus-dense difference, regressed on log10 training size over {t['sizes'].iloc[0]} sentences, "
            f"changes per tenfold more data by {slopes} points")
    power = (f"the design could detect changes of at least {100 * t['mdd'].min():.2f} to {100 * t['mdd'].max():.2f} "
             "points per tenfold (80% power, Holm's strictest level)")
    sig = t[t["p_holm"] < alpha]
    if len(sig):
        dirs = "; ".join(f"{r.config} does relatively {'better' if r.slope > 0 else 'worse'} with more data"
                         for r in sig.itertuples())
        text = f"Detected on {split}: {dirs}. In detail, {what}; {power}."
    else:
        text = f"Not detected on {split}: {what}; {power}."
    if sched is not None and len(sched) and sched[["epochs", "optimizer_steps"]].notna().all().all():
        text += (" The sizes also differ in training length (epochs " + ", ".join(f"{e:g}" for e in sched.epochs)
                 + "; optimizer steps " + ", ".join(f"{s:,.0f}" for s in sched.optimizer_steps)
                 + "), so a trend mixes data size with schedule.")
    return text
