"""Known answers for crisp.study.flops, computed by hand here (not by calling the module twice)."""

from types import SimpleNamespace

import pytest

import pandas as pd

from crisp.study.flops import (
                               DISTILBERT, MINILM, Shape, attention_share, layer_flops, reduction_table, share_curve, table2_comparison,
                               training_flops_factor,
                               )

L = 512
D, F, H = 768, 3072, 12
PROJ_512 = 2 * L * D * (4 * D + 2 * F)  # qkv + out_proj + two FFN matmuls
MATMUL_512 = 4 * L * L * D  # QK^T + PV
SOFTMAX_512 = 5 * L * L * H


def test_constants():
    assert DISTILBERT == Shape(768, 12, 3072, 6)
    assert MINILM == Shape(384, 12, 1536, 6)
    assert training_flops_factor == 3


def test_layer_flops_distilbert_512_by_hand():
    fl = layer_flops(DISTILBERT, L)
    assert fl["qkv"] == 2 * L * D * 3 * D
    assert fl["out_proj"] == 2 * L * D * D
    assert fl["ffn"] == 2 * L * D * F * 2
    assert fl["projections"] == PROJ_512 == 7_247_757_312
    assert fl["scores"] == fl["weighted_sum"] == MATMUL_512 / 2
    assert fl["softmax"] == SOFTMAX_512
    assert fl["attention"] == MATMUL_512 + SOFTMAX_512 == 821_035_008
    assert fl["total"] == PROJ_512 + MATMUL_512 + SOFTMAX_512
    assert attention_share(DISTILBERT, L) == pytest.approx(821_035_008 / 8_068_792_320, rel=1e-12)


def test_attention_share_short_and_long():
    # L=1: (4*768 + 60) / (4*768 + 60 + 8*768^2 + 4*768*3072) ~ 2.2e-4
    assert attention_share(DISTILBERT, 1) == pytest.approx(3132 / (3132 + 14_155_776), rel=1e-12)
    assert attention_share(DISTILBERT, 1) < 1e-3
    assert 0.10 < attention_share(DISTILBERT, 512) < 0.11  # not the paper's 25%
    assert attention_share(DISTILBERT, 4096) > attention_share(DISTILBERT, 512)


def test_sparsity_zero_is_dense_in_both_accountings():
    dense = layer_flops(DISTILBERT, 100)
    assert layer_flops(DISTILBERT, 100, 0.0, scores_sparse=True) == dense
    table = reduction_table(DISTILBERT, 100, {"Dense": 0.0}, scores_sparse=True)
    assert table.loc[0, "attention_flops_reduction"] == 0.0
    assert table.loc[0, "total_layer_reduction"] == 0.0


def test_sparse_scaling_by_hand():
    s = 0.8
    default = layer_flops(DISTILBERT, L, s)
    assert default["scores"] == MATMUL_512 / 2  # top-k must see every score
    assert default["weighted_sum"] == pytest.approx(0.2 * MATMUL_512 / 2)
    assert default["softmax"] == pytest.approx(0.2 * SOFTMAX_512)
    assert default["projections"] == PROJ_512
    paper = layer_flops(DISTILBERT, L, s, scores_sparse=True)
    assert paper["scores"] == pytest.approx(0.2 * MATMUL_512 / 2)
    assert paper == layer_flops(DISTILBERT, L, s, count="paper")
    with pytest.raises(ValueError):
        layer_flops(DISTILBERT, L, s, count="bogus")
    with pytest.raises(ValueError):
        layer_flops(DISTILBERT, L, 1.5)


@pytest.mark.parametrize("length", [1, 25, 512])
@pytest.mark.parametrize("s", [0.1, 0.6, 0.8])
def test_paper_accounting_identities(length, s):
    row = reduction_table(DISTILBERT, length, {"x": s}, scores_sparse=True).iloc[0]
    share = attention_share(DISTILBERT, length)
    assert row["attention_flops_reduction"] == pytest.approx(s, rel=1e-12)
    assert row["total_layer_reduction"] == pytest.approx(s * share, rel=1e-12)
    assert row["attention_share_dense"] == pytest.approx(share, rel=1e-12)


def test_default_accounting_by_hand_at_512():
    row = reduction_table(DISTILBERT, 512, {"Crisp-80": 0.8}).iloc[0]
    saved = 0.8 * (MATMUL_512 / 2 + SOFTMAX_512)  # PV and softmax only
    assert row["attention_flops_reduction"] == pytest.approx(saved / (MATMUL_512 + SOFTMAX_512))
    assert row["total_layer_reduction"] == pytest.approx(saved / (PROJ_512 + MATMUL_512 + SOFTMAX_512))
    assert row["attention_flops_reduction"] < 0.8 * 0.52  # well below the paper's 80%


def test_reduction_table_sums_sequences():
    s = 0.6
    a, b = layer_flops(DISTILBERT, 10, s), layer_flops(DISTILBERT, 20, s)
    a0, b0 = layer_flops(DISTILBERT, 10), layer_flops(DISTILBERT, 20)
    table = reduction_table(DISTILBERT, [10, 20], {"Dense": 0.0, "Crisp-60": s})
    assert list(table.columns) == ["config", "sparsity", "attention_flops_reduction",
                                   "total_layer_reduction", "attention_share_dense", "mean_length"]
    row = table.set_index("config").loc["Crisp-60"]
    attn0, tot0 = a0["attention"] + b0["attention"], a0["total"] + b0["total"]
    assert row["attention_flops_reduction"] == pytest.approx(1 - (a["attention"] + b["attention"]) / attn0)
    assert row["total_layer_reduction"] == pytest.approx(1 - (a["total"] + b["total"]) / tot0)
    assert row["attention_share_dense"] == pytest.approx(attn0 / tot0)
    assert row["mean_length"] == 15.0
    # generators and single ints are accepted
    gen = reduction_table(DISTILBERT, (n for n in (10, 20)), {"Crisp-60": s})
    assert gen.loc[0, "total_layer_reduction"] == pytest.approx(row["total_layer_reduction"])
    with pytest.raises(ValueError):
        reduction_table(DISTILBERT, [], {"x": s})


def test_from_config_both_styles():
    bert = SimpleNamespace(hidden_size=384, num_attention_heads=12, intermediate_size=1536,
                           num_hidden_layers=6)
    distil = SimpleNamespace(dim=768, n_heads=12, hidden_dim=3072, n_layers=6)
    assert Shape.from_config(bert) == MINILM
    assert Shape.from_config(distil) == DISTILBERT
    with pytest.raises(ValueError, match="intermediate_size"):
        Shape.from_config(SimpleNamespace(hidden_size=384, num_attention_heads=12,
                                          num_hidden_layers=6))
    with pytest.raises(ValueError, match="n_layers"):
        Shape.from_config(SimpleNamespace(dim=768, n_heads=12, hidden_dim=3072))
    with pytest.raises(ValueError):
        Shape(768, 7, 3072, 6)  # heads must divide hidden


def test_share_curve_by_hand_at_512():
    curve = share_curve({"DistilBERT": DISTILBERT, "MiniLM": MINILM}, [1, 512], 0.8)
    assert len(curve) == 2 * 2 * 2 and set(curve.accounting) == {"dense", "paper"}
    at = curve.set_index(["model", "length", "accounting"])
    total = PROJ_512 + MATMUL_512 + SOFTMAX_512
    assert at.loc[("DistilBERT", 512, "dense"), "attention_share_dense"] == pytest.approx((MATMUL_512 + SOFTMAX_512) / total)
    # QK^T stays dense: only PV and softmax shrink
    assert at.loc[("DistilBERT", 512, "dense"), "layer_saved"] == pytest.approx(0.8 * (MATMUL_512 / 2 + SOFTMAX_512) / total)
    # the paper's accounting: sparsity times the share (the paper takes the share as 1/4)
    assert at.loc[("DistilBERT", 512, "paper"), "layer_saved"] == pytest.approx(0.8 * (MATMUL_512 + SOFTMAX_512) / total)
    assert at.loc[("MiniLM", 512, "paper"), "attention_share_dense"] == pytest.approx(attention_share(MINILM, 512))
    with pytest.raises(ValueError):
        share_curve({"x": MINILM}, [0, 5])


def test_table2_comparison_puts_the_paper_beside_both_accountings():
    paper = pd.DataFrame({"config": ["a", "b"], "attention_flops_reduction": [0.6, 0.8],
                          "total_layer_reduction": [0.15, 0.20]})
    table = table2_comparison(DISTILBERT, {"512": 512, "short": [10, 20]}, {"a": 0.6, "b": 0.8}, paper)
    assert list(table.lengths) == ["512", "512", "short", "short"] and list(table.config) == ["a", "b"] * 2
    row = table.iloc[1]  # b at 512
    assert row.paper_layer == 0.20 and row.sparsity == 0.8
    assert row.layer_paper_count == pytest.approx(0.8 * attention_share(DISTILBERT, 512))
    assert row.layer_dense_qk == pytest.approx(0.8 * (MATMUL_512 / 2 + SOFTMAX_512) / (PROJ_512 + MATMUL_512 + SOFTMAX_512))
    assert row.attention_dense_qk < row.sparsity
    with pytest.raises(KeyError, match="no row"):
        table2_comparison(DISTILBERT, {"512": 512}, {"c": 0.5}, paper)
