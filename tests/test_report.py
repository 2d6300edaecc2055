"""What the book reads: run selection and tables recomputed from per-sentence predictions."""

import numpy as np
import pandas as pd
import pytest

from crisp import report, results
from crisp.configs import CONFIGS


def fake_run(root, model, protocol, config, seed, correct, n=50):
    """A minimal finished run folder whose dev predictions get `correct` of `n` sentences right."""
    folder = results.run_dir(root, model, protocol, config, seed)
    labels = np.arange(n) % 2
    preds = labels.copy()
    preds[correct:] = 1 - preds[correct:]
    results.write_csv(folder / "predictions_dev.csv",
                      pd.DataFrame({"idx": range(n), "label": labels, "pred": preds, "prob_pos": preds * 0.9}))
    results.write_json(folder / "metrics.json", {"model": model, "protocol": protocol, "config": config, "seed": seed,
                                                  "dev_accuracy": correct / n, "realized_sparsity_dev": 0.5})
    return folder


def test_select_prefers_a_complete_grid_and_labels_it(tmp_path):
    for seed in (0, 1):
        for i, config in enumerate(CONFIGS):
            fake_run(tmp_path, "minilm", "small", config, seed, 40 + i + seed)
    fake_run(tmp_path, "minilm", "full", "baseline", 0, 45)  # an incomplete full grid
    fake_run(tmp_path, "minilm", "small", "baseline-paperpad", 0, 30)  # a variant
    sel = report.select(tmp_path)
    assert (sel.model, sel.protocol, sel.n_seeds) == ("minilm", "small", 2)
    assert "smoke results" in sel.label and "not the paper's DistilBERT" in sel.label
    assert set(sel.metrics.config) == set(CONFIGS) and list(sel.variants.config) == ["baseline-paperpad"]


def test_main_table_and_comparison_come_from_predictions(tmp_path):
    for seed in (0, 1, 2):
        for i, config in enumerate(CONFIGS):
            fake_run(tmp_path, "minilm", "full", config, seed, 30 + 3 * i + seed)
    sel = report.select(tmp_path)
    assert sel.is_experiment and "smoke" not in sel.label
    table = report.main_table(sel).set_index("config")
    assert table.loc["baseline", "dev_mean"] == pytest.approx(np.mean([30, 31, 32]) / 50)
    assert table.loc["aggressive_sparse", "paper_dev_accuracy"] == pytest.approx(0.9159)
    comp = report.comparison(sel).set_index("config")
    assert comp.loc["aggressive_sparse", "mean_diff"] == pytest.approx(9 / 50)


def test_select_without_runs_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished runs"):
        report.select(tmp_path)


def test_an_unfinished_full_grid_keeps_only_paired_seeds_and_says_provisional(tmp_path, monkeypatch):
    for i, config in enumerate(CONFIGS):
        folder = fake_run(tmp_path, "minilm", "full", config, 0, 40 + i)
        results.write_csv(folder / "history.csv", pd.DataFrame({"step": [1, 2], "loss": [0.7, 0.6]}))
    late = fake_run(tmp_path, "minilm", "full", "baseline", 1, 44)  # seed 1: only baseline finished so far
    results.write_csv(late / "history.csv", pd.DataFrame({"step": [1], "loss": [0.5]}))
    monkeypatch.setenv(report.RUNS_ENV, str(tmp_path))  # the book's way of pointing at another results tree
    sel = report.select()
    assert sel.protocol == "full" and sel.n_seeds == 1 and len(sel.metrics) == 4
    assert list(zip(sel.pending.config, sel.pending.seed)) == [("baseline", 1)]
    assert not sel.is_complete and "unfinished (1 of the planned 5 seeds" in sel.label and "provisional" in sel.label
    assert set(sel.table("history.csv").seed) == {0}
    assert set(report.accuracy_from_predictions(sel).seed) == {0}


def test_progress_counts_every_finished_run(tmp_path):
    for seed in (0, 1):
        fake_run(tmp_path, "minilm", "full", "baseline", seed, 40 + seed)
    fake_run(tmp_path, "minilm", "small", "uniform_sparse", 3, 30)
    table = report.progress(tmp_path).set_index(["protocol", "config"])
    assert table.loc[("full", "baseline"), "runs"] == 2 and table.loc[("full", "baseline"), "seeds"] == "0, 1"
    assert table.loc[("full", "baseline"), "dev_accuracy_mean"] == pytest.approx(0.81)
    assert report.progress(tmp_path / "empty").empty
