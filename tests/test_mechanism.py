"""The small aggregations the mechanism chapters (layer sparsity, entropy, training dynamics) show, on frames
built by hand. The paired tests on whole fake runs are in test_report.py."""

import numpy as np
import pandas as pd
import pytest

from crisp.analysis import mechanism


def test_layer_log_final_takes_each_runs_last_step_then_the_seed_mean():
    rows = []
    for seed, last in ((0, 0.5), (1, 0.7)):
        for layer in (0, 1):
            rows.append(dict(config="light_sparse", seed=seed, step=50, layer=layer, target_sparsity=0.1,
                             realized_sparsity=0.1))
            rows.append(dict(config="light_sparse", seed=seed, step=100 + seed, layer=layer,
                             target_sparsity=last + layer / 10, realized_sparsity=last - 0.02))
    rows.append(dict(config="not_a_config", seed=0, step=1, layer=0, target_sparsity=1.0, realized_sparsity=1.0))
    out = mechanism.layer_log_final(pd.DataFrame(rows))
    assert out["config"].tolist() == ["light_sparse", "light_sparse"]
    assert out["target_sparsity"].tolist() == pytest.approx([0.6, 0.7])
    assert out["realized_sparsity"].tolist() == pytest.approx([0.58, 0.58])


def test_layer_slopes_per_configuration():
    frame = pd.DataFrame({"config": ["a"] * 3 + ["b"] * 3 + ["c"], "layer": [0, 1, 2, 0, 1, 2, 0],
                          "v": [0.1, 0.3, 0.5, 0.9, 0.9, 0.6, 0.5]})
    slopes = mechanism.layer_slopes(frame, "v")
    assert slopes["a"] == pytest.approx(0.2) and slopes["b"] == pytest.approx(-0.15)
    assert np.isnan(slopes["c"])


def test_entropy_head_counts_by_sign_and_holm():
    heads = pd.DataFrame({
        "measure": ["entropy_dense"] * 4 + ["entropy_sparse"] * 2,
        "config": ["uniform_sparse"] * 4 + ["uniform_sparse"] * 2,
        "mean_diff": [-0.2, -0.1, 0.3, 0.05, -1.0, -0.8],
        "p_holm": [0.01, 0.5, 0.04, 0.06, 0.001, np.nan]})
    out = mechanism.entropy_head_counts(heads).set_index("measure")
    dense = out.loc["entropy_dense"]
    assert (dense.heads, dense.lower, dense.holm_lower, dense.holm_higher) == (4, 2, 1, 1)
    assert dense.mean_diff == pytest.approx(0.0125)
    sparse = out.loc["entropy_sparse"]
    assert (sparse.heads, sparse.lower, sparse.holm_lower, sparse.holm_higher) == (2, 2, 1, 0)  # NaN p is no test


def test_final_eval_reads_the_last_epoch_of_each_run():
    hist = pd.DataFrame({
        "config": ["baseline"] * 5 + ["uniform_sparse"] * 2,
        "seed": [0, 0, 0, 1, 1, 0, 0],
        "epoch": [1.0, 2.0, 2.0, 1.0, 2.0, 1.0, 2.0],
        "eval_loss": [0.5, 0.3, 0.3, 0.6, 0.4, 0.5, np.nan],  # the repeated last row counts once
        "eval_accuracy": [0.8, 0.9, 0.9, 0.7, 0.8, 0.85, np.nan]})
    out = mechanism.final_eval(hist).set_index("config")
    assert out.loc["baseline", "n"] == 2
    assert out.loc["baseline", "eval_loss"] == pytest.approx(0.35)
    assert out.loc["baseline", "eval_accuracy_sd"] == pytest.approx(np.std([0.9, 0.8], ddof=1))
    assert out.loc["uniform_sparse", "eval_accuracy"] == pytest.approx(0.85)  # epoch 2 was never evaluated
