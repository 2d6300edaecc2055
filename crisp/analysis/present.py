"""How the book shows results: one order and one palette for the four configurations, typeset tables,
and the few lines every chapter starts with.

Tables are pandas ``Styler`` objects (pandas' own HTML renderer: no extra dependency, rendered by
Jupyter Book as plain HTML, and the chapters already hold their numbers in DataFrames). They have no
index column, headers in words with units, intervals as ``89.17 [88.42, 89.93]``, p-values to two
significant figures, and numbers right-aligned in tabular figures.

Needs the ``book`` extra (matplotlib, seaborn, jinja2, myst-nb) for :func:`chapter` and :func:`glue_*`;
the formatting helpers need only pandas.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd

# The paper's four configurations, in the order of its Table 1 by target sparsity, and one colour each
# (seaborn's colour-blind palette; the dense baseline in grey). Every figure and table of the book uses both.
CONFIG_ORDER = ("baseline", "light_sparse", "uniform_sparse", "aggressive_sparse")
CONFIG_COLORS = {
    "baseline": "#595959",
    "light_sparse": "#029e73",
    "uniform_sparse": "#0173b2",
    "aggressive_sparse": "#d55e00",
}
# The standard regularizers compared with Crisp (crisp.study.train.REGULARIZERS), after the four in every order.
REGULARIZER_ORDER = ("attn_dropout", "label_smoothing")
CONFIG_COLORS.update({"attn_dropout": "#ca9161", "label_smoothing": "#56b4e9"})
OTHER_COLOR = "#949494"  # anything that is not one of the four (a variant, a reading)
PAPER_COLOR = "#cc78bc"  # the paper's own numbers (one run each), always drawn as stars
PAPER_MARKER = dict(marker="*", s=170, color=PAPER_COLOR, edgecolor="black", linewidth=0.5, zorder=5)

_NUMBER = re.compile(r"^\s*[-+−]?(\d|\.\d|nan|inf)", re.I)


def order(configs) -> list[str]:
    """The configurations present, in the book's order (unknown names after the four, alphabetically)."""
    present = list(dict.fromkeys(configs))
    known = CONFIG_ORDER + REGULARIZER_ORDER
    return [c for c in known if c in present] + sorted(c for c in present if c not in known)


def palette(configs=CONFIG_ORDER) -> dict[str, str]:
    """Colour of each configuration (seaborn ``palette=``); anything else gets a neutral grey."""
    return {c: CONFIG_COLORS.get(c, OTHER_COLOR) for c in configs}


def ci(mean: float, low: float | None = None, high: float | None = None, *, scale: float = 100,
       digits: int = 2, sign: bool = False) -> str:
    """A value with its interval, ``89.17 [88.42, 89.93]`` (fractions times ``scale``: percent by default).

    ``sign`` writes ``+`` on positive numbers (differences). A missing interval (one seed) gives the value alone.
    """
    def fmt(x):
        x = scale * x
        x = 0.0 if abs(x) < 0.5 * 10 ** -digits else x  # never "-0.00"
        return f"{x:{'+' if sign else ''}.{digits}f}"
    if pd.isna(mean):
        return "n/a"
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return fmt(mean)
    return f"{fmt(mean)} [{fmt(low)}, {fmt(high)}]"


def pvalue(p: float) -> str:
    """A p-value to two significant figures (``0.016``, ``0.0033``, ``0.070``, ``1.0``); below 0.0001 as ``<0.0001``."""
    if p is None or pd.isna(p):
        return "n/a"
    if p < 1e-4:
        return "<0.0001"
    return f"{p:#.2g}"


def table(frame: pd.DataFrame, columns: dict | None = None, formats: dict | None = None, digits: int = 2,
          caption: str | None = None, padding: str = "0.2em 0.5em"):
    """A typeset table: the ``columns`` (old name -> header in words, in that order), no index column.

    Float columns get ``digits`` decimals unless ``formats`` (header -> format string or function) says
    otherwise; numbers and number-like strings are right-aligned in tabular figures, words left-aligned.
    ``padding`` is the CSS cell padding (narrower for a wide table). The HTML element ids come from the
    content, so a rebuild gives the same page.
    """
    if columns is not None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise KeyError(f"table: no column(s) {missing} in {list(frame.columns)}")
        frame = frame[list(columns)].rename(columns=columns)
    frame = frame.reset_index(drop=True)
    formats = dict(formats or {})
    unknown = [c for c in formats if c not in frame.columns]
    if unknown:
        raise KeyError(f"table: formats for unknown column(s) {unknown}")
    for c in frame.columns:
        if c not in formats and pd.api.types.is_float_dtype(frame[c]):
            formats[c] = f"{{:.{digits}f}}"
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
               or frame[c].map(lambda v: isinstance(v, str) and bool(_NUMBER.match(v)) or v == "n/a").all()]
    words = [c for c in frame.columns if c not in numeric]
    uid = hashlib.sha1(frame.to_csv().encode() + str(caption).encode()).hexdigest()[:10]
    styler = frame.style.hide(axis="index").format(formats, na_rep="–").set_uuid(uid)
    if numeric:
        styler = styler.set_properties(subset=numeric, **{"text-align": "right", "font-variant-numeric": "tabular-nums",
                                                          "white-space": "nowrap"})
    if words:
        styler = styler.set_properties(subset=words, **{"text-align": "left"})
    # Room between columns: the book theme gives pandas' HTML tables almost no cell padding, so neighbouring
    # columns would run together ("distilbertSST-2").
    styler = styler.set_table_styles([{"selector": "", "props": "font-size: 0.88em;"},  # the table itself
                                      {"selector": "th", "props": "text-align: center; vertical-align: bottom;"},
                                      {"selector": "td, th", "props": f"padding: {padding};"}])
    if caption:
        styler = styler.set_caption(caption)
    return styler


def legend_below(fig, ax=None, ncol: int = 2, handles=None, labels=None, **kwargs):
    """One legend for the figure, hanging below it, so it never covers data or axis labels.

    The notebook's inline backend saves figures with ``bbox_inches="tight"``, which takes the legend in.
    """
    if handles is None:
        handles, labels = (ax or fig.axes[0]).get_legend_handles_labels()
    elif labels is None:
        labels = [h.get_label() for h in handles]
    for a in fig.axes:
        if a.get_legend() is not None:
            a.get_legend().remove()
    fig.tight_layout()
    return fig.legend(handles, labels, loc="upper center", ncol=ncol, frameon=False, fontsize=9,
                      bbox_to_anchor=(0.5, 0.0), **kwargs)


def paired_differences(boot: pd.DataFrame, detectable: bool = False):
    """The book's main figure: each sparse configuration minus the dense baseline (mean and 95% interval of the
    two-level bootstrap, one panel per split) beside the gain the paper claims for it from one run each (stars).

    ``boot``: rows of :func:`crisp.analysis.report.bootstrap_table` (``split, config, mean_diff, ci_low, ci_high,
    claimed_gain``). ``detectable`` also shades, per configuration, the true differences from zero smaller than
    the one the design detects with 80% power (``mdd_zero``). Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    splits = list(dict.fromkeys(boot["split"]))
    configs = order(boot["config"])
    fig, axes = plt.subplots(1, len(splits), figsize=(4.2 * len(splits) + 0.8, 0.42 * len(configs) + 1.5),
                             sharey=True, sharex=True, squeeze=False)
    for ax, split in zip(axes[0], splits):
        rows = boot[boot["split"] == split].set_index("config")
        first = True  # label the first drawn row only: one legend entry per kind
        for y, config in enumerate(configs):
            if config not in rows.index:
                continue
            r = rows.loc[config]
            if detectable:
                ax.fill_betweenx([y - 0.3, y + 0.3], -100 * r.mdd_zero, 100 * r.mdd_zero, color="0.85", lw=0,
                                 label="undetectable with 80% power" if first else None)
            below, above = max(0.0, r.mean_diff - r.ci_low), max(0.0, r.ci_high - r.mean_diff)
            ax.errorbar(100 * r.mean_diff, y, xerr=[[100 * below], [100 * above]],
                        fmt="o", color=CONFIG_COLORS.get(config, OTHER_COLOR), capsize=4, markersize=7, lw=2,
                        label="ours: paired difference, 95% CI (seeds and sentences)" if first else None)
            ax.scatter(100 * r.claimed_gain, y, **PAPER_MARKER, label="paper: claimed gain (one run each)" if first else None)
            first = False
        ax.axvline(0, color="black", lw=0.8)
        ax.set(yticks=range(len(configs)), yticklabels=configs, xlabel="sparse minus dense baseline (points)",
               title=f"{split} split ({int(rows['n_sentences'].iloc[0]):,} sentences)" if "n_sentences" in rows else f"{split} split")
        if ax is axes[0][0]:
            ax.invert_yaxis()  # first configuration on top (the y axis is shared)
    legend_below(fig, axes[0][0], ncol=3 if detectable else 2)
    return fig


def differences_by_size(diffs: pd.DataFrame, paper_size: int | None = None):
    """The data-size chapter's main figure: each sparse configuration minus the baseline against the number of
    training sentences (log scale), with its 95% interval, one panel per split; the configurations are shifted
    sideways a little to keep their bars apart. With ``paper_size`` the paper's claimed gains are drawn as stars
    there (its full training set).

    ``diffs``: :func:`crisp.analysis.datasize.differences` rows (``split, config, train_size, mean_diff, ci_low, ci_high,
    claimed_gain``). Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    configs, splits = order(diffs["config"]), list(dict.fromkeys(diffs["split"]))
    fig, axes = plt.subplots(1, len(splits), figsize=(4.6 * len(splits), 3.6), sharey=True, squeeze=False)
    shift = dict(zip(configs, np.linspace(-0.06, 0.06, len(configs))))  # in decades
    for ax, split in zip(axes[0], splits):
        for config in configs:
            r = diffs[(diffs["split"] == split) & (diffs["config"] == config)].sort_values("train_size")
            below, above = (r.mean_diff - r.ci_low).clip(lower=0), (r.ci_high - r.mean_diff).clip(lower=0)
            ax.errorbar(r.train_size * 10 ** shift[config], 100 * r.mean_diff, yerr=[100 * below, 100 * above],
                        color=CONFIG_COLORS.get(config, OTHER_COLOR), marker="o", capsize=3, label=config)
        if paper_size is not None:
            claims = diffs[diffs["split"] == split].drop_duplicates("config")
            ax.scatter([paper_size * 10 ** shift[c] for c in claims["config"]], 100 * claims["claimed_gain"],
                       **PAPER_MARKER, label="paper: claimed gain (full data, one run)")
        ax.axhline(0, color="black", lw=0.8)
        ax.set(xscale="log", xlabel="training sentences (log scale)", title=f"{split} split")
    axes[0][0].set_ylabel("sparse minus dense baseline (points)")
    legend_below(fig, axes[0][0], ncol=2)
    return fig


def glue_num(name: str, value) -> None:
    """Glue a number for ``{glue:text}`name:.2f``` in the prose (numpy scalars become floats)."""
    from myst_nb import glue
    glue(name, float(value), display=False)


def glue_figure(name: str, fig) -> None:
    """Glue a figure for ``{glue:figure}`` and close it, so it is shown only where the prose places it."""
    import matplotlib.pyplot as plt
    from myst_nb import glue
    glue(name, fig, display=False)
    plt.close(fig)


def glue_text(name: str, text: str) -> None:
    """Glue a piece of text for ``{glue:text}`name``` in the prose."""
    from myst_nb import glue
    glue(name, str(text), display=False)


def chapter(model: str | None = None, protocol: str | None = None, hardware: str | None = None,
            runs: bool = True):
    """What every chapter starts with: the book's plot theme and the runs it reports on.

    (The "IProgress not found" warning comes from ``import crisp`` itself, through huggingface_hub's tqdm, so a
    chapter filters it before its imports.) Returns ``report.select(...)`` (the reported grid, or the one asked for) and glues its ``label``,
    and the one-line :func:`short_label` each chapter shows in a note (with a link to the full one); ``runs=False`` (a chapter that reads no runs) returns None.
    """
    import seaborn as sns

    from . import report

    sns.set_theme(style="whitegrid", context="notebook")
    pd.set_option("display.precision", 4)
    if not runs:
        return None
    sel = report.select(model=model, protocol=protocol, hardware=hardware)
    glue_text("label", sel.label.replace("`", ""))  # glued text is shown as is: no code marks
    glue_text("label_short", short_label(sel))  # the one-line note of every chapter
    print(sel.label)
    return sel


def short_label(sel) -> str:
    """One line naming the runs a page reports: ``minilm, protocol full, 5 paired seeds, 20 runs, cpu-fp32`` (plus
    "provisional" or "smoke" where the label says so); the full sentence is ``sel.label``."""
    text = f"{sel.model}, protocol {sel.protocol}, {sel.n_seeds} paired seeds, {len(sel.metrics)} runs, {sel.hardware}"
    if not sel.is_experiment:
        return text + " (smoke runs: no conclusion)"
    return text if sel.is_complete else text + " (unfinished grid: provisional)"


def by_order(frame: pd.DataFrame, column: str = "config") -> pd.DataFrame:
    """The rows of ``frame`` with ``column`` in the book's order (:func:`order`), ties kept in place, index reset."""
    rank = {c: i for i, c in enumerate(order(frame[column]))}
    return frame.sort_values(column, key=lambda s: s.map(rank), kind="stable").reset_index(drop=True)


def paper_handle(label: str = "paper (one run)"):
    """A legend entry that looks like :data:`PAPER_MARKER` (for a legend built from handles)."""
    from matplotlib.lines import Line2D
    return Line2D([], [], linestyle="", marker="*", markersize=13, markerfacecolor=PAPER_COLOR,
                  markeredgecolor="black", markeredgewidth=0.5, label=label)


def mark(value) -> str:
    """A check's outcome for a table cell: ``✓`` (True), ``✗`` (False), ``n/a`` (None or NaN: does not apply)."""
    if isinstance(value, str):
        raise TypeError(f"mark() takes a boolean outcome, got the string {value!r}")
    return "n/a" if value is None or pd.isna(value) else "✓" if bool(value) else "✗"


def runs_on_log_x(ax, frame: pd.DataFrame, x: str, y: str, spread: float = 0.05, seed: int = 0, **kwargs) -> None:
    """Every run as a dot on a log-scaled x axis, one colour per configuration, each configuration shifted a little
    sideways and jittered by a factor (so the dots of one x stay by it: seaborn's strip plots jitter additively,
    which scatters them across a log axis)."""
    rng = np.random.default_rng(seed)
    configs = order(frame["config"])
    if not configs:
        return
    shifts = dict(zip(configs, np.linspace(-spread, spread, len(configs)))) if len(configs) > 1 else {configs[0]: 0.0}
    for config in configs:
        rows = frame[frame["config"] == config]
        factor = 10 ** (shifts[config] + rng.uniform(-spread / 4, spread / 4, len(rows)))
        ax.scatter(rows[x] * factor, rows[y], color=CONFIG_COLORS.get(config, OTHER_COLOR), s=16, alpha=0.5,
                   linewidths=0, **kwargs)
    ax.set_xscale("log")
