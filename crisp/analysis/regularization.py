"""Is attention sparsity a regularizer? Crisp against dropout and label smoothing, in loss and calibration.

Reads the ``calibration.csv`` of each size's summary (:mod:`crisp.analysis.calibration_tables`, written by
``crisp summary``) and answers three questions in sentences generated from those numbers:

1. Does Crisp lower loss or calibration error more than a standard regularizer at the same size?
   (each sparse configuration minus each regularizer, test split, NLL and ECE)
2. Does any configuration, Crisp or regularizer, raise accuracy over the dense baseline?
3. Does Crisp's lower loss survive temperature scaling? (sparse minus dense in test NLL and ECE, raw
   and after each run's dev-fitted temperature)

The rule for a word: a difference is *detected* when its Holm-adjusted p is below :data:`ALPHA`, under
the test named: ``t`` (paired over seeds: on these sentences) or ``boot`` (two-level bootstrap over seeds
and sentences: on new sentences too). Not detected means not detected, never "no effect": each
answer gives the interval it rests on.
"""

from __future__ import annotations

import pandas as pd

from . import summary
from ..configs import CONFIGS
from ..study.train import REGULARIZERS, SIZE_PROTOCOLS

ALPHA = 0.05  # Holm-adjusted level at which a difference counts as detected
TESTS = {"t": "on these sentences (paired t over seeds)", "boot": "on new sentences too (two-level bootstrap)"}
SPARSE = tuple(c for c in CONFIGS if c != "baseline")
SIZES = (*SIZE_PROTOCOLS, "full")
METRIC_NAMES = {"accuracy": "accuracy", "nll": "NLL", "brier": "Brier", "ece": "ECE"}
UNITS = {"accuracy": ("points", 100, 2), "nll": ("nats", 1, 3), "brier": ("", 1, 4), "ece": ("points", 100, 2)}


def load(root, model: str = "minilm", sizes=SIZES, hardware: str = "cpu-fp32") -> pd.DataFrame:
    """``calibration.csv`` of every size that has a summary, with a ``size`` column (sizes without one are skipped)."""
    frames = []
    for size in sizes:
        try:
            table = summary.read(root, model, size, hardware)["calibration"]
        except FileNotFoundError:
            continue
        frames.append(table.assign(size=size))
    if not frames:
        raise FileNotFoundError(f"no summary with calibration.csv for model {model!r} under {root}; run `crisp summary`")
    return pd.concat(frames, ignore_index=True)


def direction(row, test: str) -> int:
    """-1 / +1 when the difference is detected below / above zero under ``test`` (Holm p < ALPHA), else 0."""
    p = row[f"{test}_p_holm"]
    if pd.isna(p) or p >= ALPHA:
        return 0
    return -1 if row["mean_diff"] < 0 else 1


def fmt(row, test: str = "boot", unit: bool = True) -> str:
    """``-0.120 nats [-0.197, -0.045]`` in the metric's unit, with the interval of ``test``."""
    name, scale, digits = UNITS[row["metric"]]
    lo, hi = row[f"{test}_ci_low"], row[f"{test}_ci_high"]
    value = f"{scale * row['mean_diff']:+.{digits}f}"
    text = value if pd.isna(lo) else f"{value} [{scale * lo:+.{digits}f}, {scale * hi:+.{digits}f}]"
    return f"{text} {name}".rstrip() if unit else text


def _rows(table, **where) -> pd.DataFrame:
    mask = pd.Series(True, index=table.index)
    for key, value in where.items():
        mask &= table[key].isin(value) if isinstance(value, (list, tuple, set)) else table[key] == value
    return table[mask]


def _count(rows, test) -> dict:
    d = [direction(r, test) for _, r in rows.iterrows()]
    return {"lower": d.count(-1), "higher": d.count(1), "none": d.count(0), "n": len(d)}


def _counts_text(c: dict, thing: str) -> str:
    parts = [f"{c['lower']} lower", f"{c['higher']} higher", f"{c['none']} not detected"]
    return f"{', '.join(parts)} (of {c['n']} {thing})"


def compare_with_regularizers(table: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Question 1's rows: each sparse configuration minus each regularizer, raw NLL and ECE, by size."""
    rows = _rows(table, split=split, scaling="raw", metric=["nll", "ece"], reference=list(REGULARIZERS),
                 config=list(SPARSE))
    return rows.reset_index(drop=True)


def answer_regularizers(table: pd.DataFrame, split: str = "test") -> str:
    """Question 1 in words, per size that has regularizer runs."""
    rows = compare_with_regularizers(table, split)
    if rows.empty:
        return "Not answered yet: no size has runs of the standard regularizers."
    out = []
    for size, at in rows.groupby("size", sort=False):
        seeds = sorted(set(at["n_seeds"]))
        bits = []
        for metric in ("nll", "ece"):
            m = at[at["metric"] == metric]
            boot, t = _count(m, "boot"), _count(m, "t")
            bits.append(f"{metric.upper()}: {_counts_text(boot, 'sparse-minus-regularizer differences')} on new "
                        f"sentences too; {_counts_text(t, 'differences')} on these sentences")
        provisional = " (provisional: fewer than 5 paired seeds)" if min(seeds) < 5 else ""
        out.append(f"At {size} ({'/'.join(map(str, seeds))} paired seeds{provisional}), Crisp's {split} loss and calibration error "
                   f"against dropout and label smoothing are " + "; ".join(bits) + ".")
    return " ".join(out)


def answer_accuracy(table: pd.DataFrame) -> str:
    """Question 2: does any configuration (sparse or regularizer) raise accuracy over dense, at any size or split?"""
    rows = _rows(table, scaling="raw", metric="accuracy", reference="baseline")
    if rows.empty:
        return "Not answered: no accuracy differences in the summaries."
    raised = [r for _, r in rows.iterrows() if any(direction(r, t) > 0 for t in TESTS)]
    lowered = [r for _, r in rows.iterrows() if any(direction(r, t) < 0 for t in TESTS)]
    best = rows.loc[rows["mean_diff"].idxmax()]
    text = (f"{'Yes' if raised else 'No'}: of {len(rows)} differences from dense in accuracy (configurations x sizes x "
            f"dev/test), {len(raised)} are detected above zero and {len(lowered)} below zero by either test (Holm, "
            f"{ALPHA}). The largest point estimate is {fmt(best)} ({best['config']}, {best['size']}, {best['split']}).")
    for r in raised:
        text += f" Raised: {r['config']} at {r['size']} on {r['split']}, {fmt(r)}."
    return text


def temperature_rows(table: pd.DataFrame, metric: str = "nll") -> pd.DataFrame:
    """Question 3's rows: sparse minus dense in test ``metric``, raw and temperature-scaled, by size."""
    return _rows(table, split="test", metric=metric, reference="baseline", config=list(SPARSE)).reset_index(drop=True)


def answer_temperature(table: pd.DataFrame) -> str:
    """Question 3: how many sparse-minus-dense test NLL differences are detected below zero before and after scaling."""
    rows = temperature_rows(table, "nll")
    if rows.empty:
        return "Not answered: no test NLL differences in the summaries."
    raw, scaled = rows[rows["scaling"] == "raw"], rows[rows["scaling"] == "temperature"]
    before, after = _count(raw, "boot"), _count(scaled, "boot")
    low = raw.loc[raw["mean_diff"].idxmin()]
    after_same = scaled[(scaled["size"] == low["size"]) & (scaled["config"] == low["config"])]
    text = (f"Before temperature scaling, {before['lower']} of {before['n']} sparse-minus-dense differences in test NLL "
            f"(configurations x sizes) are detected below zero on new sentences too; after each run's own dev-fitted "
            f"temperature, {after['lower']} are (and {after['higher']} above zero). The largest raw reduction, "
            f"{low['config']} at {low['size']}, {fmt(low)}")
    if len(after_same):
        text += f", becomes {fmt(after_same.iloc[0])} after scaling"
    if before["lower"] == 0:
        return text + ". No raw reduction is detected, so there is nothing here for a temperature to explain."
    if after["lower"] > 0:
        return text + ". Part of Crisp's lower loss survives a softer softmax."
    return text + ". What Crisp's lower loss buys, a temperature fitted on dev buys for the dense model too."


def verdict_sentence(table: pd.DataFrame) -> str:
    """One sentence for the verdict, from questions 2 and 3 (two-level bootstrap, Holm, :data:`ALPHA`)."""
    rows = temperature_rows(table, "nll")
    raw_rows, scaled_rows = rows[rows["scaling"] == "raw"], rows[rows["scaling"] == "temperature"]
    raw, scaled = _count(raw_rows, "boot"), _count(scaled_rows, "boot")
    acc = _rows(table, scaling="raw", metric="accuracy", reference="baseline", config=list(SPARSE))
    raised = sum(any(direction(r, t) > 0 for t in TESTS) for _, r in acc.iterrows())
    accuracy = (f"no sparse configuration raises accuracy at any size or split ({len(acc)} comparisons, either test)"
                if not raised else f"accuracy rises in {raised} of {len(acc)} comparisons")
    if raw["lower"] == 0:
        return f"Crisp's test NLL is not detectably lower than dense at any size, and {accuracy}."
    sizes = [s for s in SIZES if any(direction(r, "boot") < 0 for _, r in raw_rows[raw_rows["size"] == s].iterrows())]
    text = (f"Crisp lowers test NLL detectably in {raw['lower']} of {raw['n']} size-configuration pairs (at "
            f"{', '.join(sizes)}), {accuracy}, and after temperature scaling {scaled['lower']} of the loss reductions "
            f"remain")
    if scaled["lower"] == 0 and not raised:
        return text + ": what Crisp's lower loss buys, a temperature fitted on dev buys the dense model too."
    return text + "."


FIGURE_PANELS = (("raw", "accuracy", "accuracy"), ("raw", "nll", "NLL"), ("raw", "ece", "ECE"),
                 ("temperature", "nll", "NLL after temperature scaling"))


def figure(table: pd.DataFrame, split: str = "test"):
    """Every configuration minus dense, per size (columns) and metric (rows), with two-level bootstrap 95% intervals
    (``split``); Crisp's configurations as dots, the regularizers as squares."""
    import matplotlib.pyplot as plt

    from . import present

    rows = _rows(table, split=split, reference="baseline")
    sizes = [s for s in SIZES if s in set(rows["size"])]
    configs = present.order(rows["config"])
    fig, axes = plt.subplots(len(FIGURE_PANELS), len(sizes), figsize=(2.4 * len(sizes) + 1.6, len(FIGURE_PANELS) * (0.3 * len(configs) + 0.9)),
                             sharey=True, squeeze=False)
    for i, (scaling, metric, title) in enumerate(FIGURE_PANELS):
        unit, scale, _ = UNITS[metric]
        for j, size in enumerate(sizes):
            ax = axes[i, j]
            at = _rows(rows, scaling=scaling, metric=metric, size=size).set_index("config")
            for k, config in enumerate(configs):
                if config not in at.index:
                    continue
                r = at.loc[config]
                lo, hi = scale * r["boot_ci_low"], scale * r["boot_ci_high"]
                ax.errorbar(scale * r["mean_diff"], k, xerr=[[scale * r["mean_diff"] - lo], [hi - scale * r["mean_diff"]]],
                            fmt="s" if config in REGULARIZERS else "o", color=present.CONFIG_COLORS.get(config, present.OTHER_COLOR),
                            capsize=2)
            ax.axvline(0, color="black", linewidth=0.8)
            ax.set_yticks(range(len(configs)), configs)
            if i == 0:
                ax.set_title(size)
            ax.set_xlabel(f"{title} ({unit})" if unit else title, fontsize=9)
    axes[0, 0].invert_yaxis()  # shared y: the first configuration on top in every panel
    fig.suptitle(f"Each configuration minus dense, {split} split (95% two-level bootstrap intervals)", fontsize=11)
    fig.tight_layout()
    return fig


def difference_table(table: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """The figure's numbers with both tests, one row per size, configuration and metric (words, for the book)."""
    rows = _rows(table, split=split, reference="baseline")
    out = []
    for _, r in rows.iterrows():
        name = UNITS[r["metric"]][0]
        out.append({"size": r["size"], "configuration": r["config"],
                    "measure": METRIC_NAMES[r["metric"]] + (" after T" if r["scaling"] == "temperature" else "")
                    + (f" ({name})" if name else ""),
                    "these sentences": fmt(r, "t", unit=False), "p": _p(r["t_p_holm"]),
                    "new sentences too": fmt(r, "boot", unit=False), "p ": _p(r["boot_p_holm"])})
    return pd.DataFrame(out)


def _p(p) -> str:
    return "n/a" if pd.isna(p) else "<0.0001" if p < 1e-4 else f"{p:#.2g}"
