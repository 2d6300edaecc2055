"""The book's presentation helpers: intervals, p-values, typeset tables, one order and palette."""

import math

import pandas as pd
import pytest

from crisp import present


def test_ci_formats_percent_interval_and_sign():
    assert present.ci(0.8917, 0.8842, 0.8993) == "89.17 [88.42, 89.93]"
    assert present.ci(-0.0073, -0.0206, 0.0060, sign=True) == "-0.73 [-2.06, +0.60]"
    assert present.ci(0.5, math.nan, math.nan) == "50.00"  # one seed: no interval
    assert present.ci(math.nan) == "n/a"


@pytest.mark.parametrize("p, text", [(0.01634, "0.016"), (0.00331, "0.0033"), (1.0, "1.0"), (0.5909, "0.59"),
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
    assert ">7<" not in html and ">8<" not in html  # no index column
    assert "text-align: right" in html and "text-align: left" in html
    assert html == present.table(frame, {"config": "configuration", "dev_mean": "dev accuracy (%)"}).to_html()


def test_table_refuses_unknown_columns():
    frame = pd.DataFrame({"a": [1]})
    with pytest.raises(KeyError, match="no column"):
        present.table(frame, {"b": "B"})
    with pytest.raises(KeyError, match="unknown column"):
        present.table(frame, formats={"B": "{:.1f}"})


def test_mark_writes_pass_fail_and_not_applicable():
    assert [present.mark(v) for v in (True, False, None, math.nan)] == ["✓", "✗", "n/a", "n/a"]
    import numpy as np
    assert present.mark(np.bool_(False)) == "✗"
    with pytest.raises(TypeError):
        present.mark("pass")


def test_spaced_adds_cell_padding_and_keeps_the_header_style():
    html = present.spaced(present.table(pd.DataFrame({"a": [1.0]}), {"a": "A"})).to_html()
    assert "padding: 0.2em 0.7em" in html and "vertical-align: bottom" in html
