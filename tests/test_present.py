"""The book's presentation helpers: intervals, p-values, typeset tables, one order and palette."""

import math

import numpy as np
import pandas as pd
import pytest

from crisp.analysis import present


def test_ci_formats_percent_interval_and_sign():
    assert present.ci(0.8917, 0.8842, 0.8993) == "89.17 [88.42, 89.93]"
    assert present.ci(-0.0073, -0.0206, 0.0060, sign=True) == "-0.73 [-2.06, +0.60]"
    assert present.ci(0.5, math.nan, math.nan) == "50.00"  # one seed: no interval
    assert present.ci(math.nan) == "n/a"
    assert present.ci(-0.00001, -0.0038, 0.0038, sign=True) == "+0.00 [-0.38, +0.38]"  # no "-0.00"


@pytest.mark.parametrize("p, text", [(0.01634, "0.016"), (0.00331, "0.0033"), (1.0, "1.0"), (0.5909, "0.59"), (0.0698, "0.070"),
                                     (3e-6, "<0.0001"), (math.nan, "n/a")])
def test_pvalue_two_significant_figures(p, text):
    assert present.pvalue(p) == text


def test_order_and_palette_cover_the_four_configurations():
    assert present.order(["aggressive_sparse", "zz", "baseline", "light_sparse"]) == ["baseline", "light_sparse",
                                                                                     "aggressive_sparse", "zz"]
    colors = present.palette()
    assert list(colors) == list(present.CONFIG_ORDER) and len(set(colors.values())) == 4
    assert present.palette(["other"]) == {"other": present.OTHER_COLOR}


def test_table_hides_index_renames_and_aligns():
    frame = pd.DataFrame({"config": ["baseline", "light_sparse"], "dev_mean": [89.1712, 88.6]},
                         index=[7, 8])
    html = present.table(frame, {"config": "configuration", "dev_mean": "dev accuracy (%)"}).to_html()
    assert "configuration" in html and "dev accuracy (%)" in html and "dev_mean" not in html
    assert "89.17" in html and "89.1712" not in html
    assert "row_heading" not in html and "index_name" not in html  # no index column
    assert "text-align: right" in html and "text-align: left" in html
    assert html == present.table(frame, {"config": "configuration", "dev_mean": "dev accuracy (%)"}).to_html()


def test_table_refuses_unknown_columns():
    frame = pd.DataFrame({"a": [1]})
    with pytest.raises(KeyError, match="no column"):
        present.table(frame, {"b": "B"})
    with pytest.raises(KeyError, match="unknown column"):
        present.table(frame, formats={"B": "{:.1f}"})


def test_paired_differences_draws_every_configuration_and_claim():
    import matplotlib
    matplotlib.use("Agg")
    boot = pd.DataFrame([dict(split=s, config=c, n_sentences=872, mean_diff=-0.006, ci_low=-0.017, ci_high=0.005,
                              claimed_gain=g) for s in ("dev", "test")
                         for c, g in (("uniform_sparse", 0.0061), ("light_sparse", 0.0073), ("aggressive_sparse", 0.0097))])
    fig = present.paired_differences(boot)
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["light_sparse", "uniform_sparse", "aggressive_sparse"]
    from matplotlib.collections import PathCollection
    stars = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert sorted(round(float(s.get_offsets()[0][0]), 2) for s in stars) == [0.61, 0.73, 0.97]
    assert fig.legends and ax.get_legend() is None  # one legend, outside the axes


def test_paired_differences_shades_what_the_design_cannot_detect():
    import matplotlib
    matplotlib.use("Agg")
    boot = pd.DataFrame([dict(split="dev", config=c, mean_diff=-0.006, ci_low=-0.017, ci_high=0.005, claimed_gain=0.007,
                              mdd_zero=m) for c, m in (("uniform_sparse", 0.018), ("light_sparse", 0.013))])
    plain = present.paired_differences(boot)
    shaded = present.paired_differences(boot, detectable=True)
    from matplotlib.collections import PolyCollection
    bands = [c for c in shaded.axes[0].collections if isinstance(c, PolyCollection)]
    assert not [c for c in plain.axes[0].collections if isinstance(c, PolyCollection)]
    assert sorted(round(float(b.get_paths()[0].vertices[:, 0].max()), 2) for b in bands) == [1.3, 1.8]


def test_by_order_sorts_rows_into_the_book_order():
    frame = pd.DataFrame({"config": ["uniform_sparse", "zz", "light_sparse", "uniform_sparse", "baseline"],
                          "v": [1, 2, 3, 4, 5]}, index=[9, 8, 7, 6, 5])
    out = present.by_order(frame)
    assert out["config"].tolist() == ["baseline", "light_sparse", "uniform_sparse", "uniform_sparse", "zz"]
    assert out["v"].tolist() == [5, 3, 1, 4, 2] and out.index.tolist() == [0, 1, 2, 3, 4]


def test_paper_handle_looks_like_the_paper_marker():
    handle = present.paper_handle("paper")
    assert handle.get_marker() == present.PAPER_MARKER["marker"] and handle.get_label() == "paper"
    assert handle.get_markerfacecolor() == present.PAPER_COLOR


def test_mark_writes_pass_fail_and_not_applicable():
    assert [present.mark(v) for v in (True, False, None, math.nan)] == ["✓", "✗", "n/a", "n/a"]
    import numpy as np
    assert present.mark(np.bool_(False)) == "✗"
    with pytest.raises(TypeError):
        present.mark("pass")


def test_table_pads_cells_and_keeps_the_header_style():
    html = present.table(pd.DataFrame({"a": [1.0]}), {"a": "A"}).to_html()
    assert "padding: 0.2em 0.5em" in html and "vertical-align: bottom" in html and "font-size: 0.88em" in html


def test_runs_on_log_x_keeps_each_dot_near_its_x():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    frame = pd.DataFrame({"config": ["baseline", "light_sparse"] * 3, "size": [500, 500, 2000, 2000, 67349, 67349],
                          "acc": [1, 2, 3, 4, 5, 6]})
    fig, ax = plt.subplots()
    present.runs_on_log_x(ax, frame, "size", "acc")
    xs = np.concatenate([c.get_offsets()[:, 0] for c in ax.collections])
    sizes = np.concatenate([frame[frame.config == c]["size"] for c in ("baseline", "light_sparse")])
    assert ax.get_xscale() == "log" and len(xs) == 6
    assert np.all(np.abs(np.log10(xs / sizes)) <= 0.05 * 1.25 + 1e-9)  # within the shift and jitter, in decades


def test_differences_by_size_draws_every_size_and_the_claims_at_the_papers_size():
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.collections import PathCollection
    diffs = pd.DataFrame([dict(split="dev", config=c, train_size=n, mean_diff=0.01, ci_low=-0.01, ci_high=0.03,
                               claimed_gain=g) for n in (500, 8000) for c, g in (("light_sparse", 0.0073),
                                                                                 ("uniform_sparse", 0.0061))])
    fig = present.differences_by_size(diffs, paper_size=67349)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and len(ax.containers) == 2  # one error-bar series per configuration
    stars = [c for c in ax.collections if isinstance(c, PathCollection)]
    xs = stars[0].get_offsets()[:, 0]
    assert len(xs) == 2 and np.all(np.abs(np.log10(xs / 67349)) <= 0.06 + 1e-9)
    assert not [c for c in present.differences_by_size(diffs).axes[0].collections if isinstance(c, PathCollection)]


def test_short_label_is_one_line_and_says_provisional_or_smoke():
    from types import SimpleNamespace
    sel = SimpleNamespace(model="minilm", protocol="full", n_seeds=5, metrics=[0] * 20, hardware="cpu-fp32",
                          is_experiment=True, is_complete=True)
    assert present.short_label(sel) == "minilm, protocol full, 5 paired seeds, 20 runs, cpu-fp32"
    assert present.short_label(SimpleNamespace(**{**vars(sel), "is_complete": False})).endswith("(unfinished grid: provisional)")
    assert present.short_label(SimpleNamespace(**{**vars(sel), "is_experiment": False})).endswith("(smoke runs: no conclusion)")
