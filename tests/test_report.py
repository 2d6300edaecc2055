"""What the book reads: run selection and tables recomputed from per-sentence predictions."""

import numpy as np
import pandas as pd
import pytest

from crisp.analysis import report, stats
from crisp.study import results
from crisp.configs import CONFIGS


def fake_run(root, model, protocol, config, seed, correct, n=50, train_loss=None, entropy=None, granularity="row"):
    """A minimal finished run folder whose dev predictions get `correct` of `n` sentences right.

    Also a training log (final-epoch training loss ``train_loss``, default 0.2 + correct / 1000), per-head
    attention entropies (2 layers x 2 heads, ``entropy`` + layer + head / 10), layer-wise sparsity and a
    crisp_config, as a real run writes them.
    """
    folder = results.run_dir(root, model, protocol, config, seed)
    labels = np.arange(n) % 2
    preds = labels.copy()
    preds[correct:] = 1 - preds[correct:]
    results.write_csv(folder / "predictions_dev.csv",
                      pd.DataFrame({"idx": range(n), "label": labels, "pred": preds, "prob_pos": preds * 0.9}))
    loss = 0.2 + correct / 1000 if train_loss is None else train_loss
    results.write_csv(folder / "history.csv", pd.DataFrame({
        "step": [1, 2, 3, 4], "epoch": [0.5, 1.0, 1.5, 2.0], "train_loss": [0.9, 0.8, loss - 0.01, loss + 0.01],
        "train_accuracy": [0.5, 0.6, 0.95, 0.97]}))
    h = 1.0 if entropy is None else entropy
    results.write_csv(folder / "attention_stats.csv", pd.DataFrame(
        [dict(layer=la, head=he, entropy_dense=h + la + he / 10, entropy_sparse=h + la + he / 10 - 0.5 * ("sparse" in config),
              rows=10) for la in (0, 1) for he in (0, 1)]))
    sparsity = CONFIGS[config].sparsity if config in CONFIGS else 0.5
    results.write_json(folder / "metrics.json", {
        "model": model, "protocol": protocol, "config": config, "seed": seed, "dev_accuracy": correct / n,
        "dev_loss": 0.3 + seed / 100, "realized_sparsity_dev": 0.5, "layer_ratio_final": [sparsity, sparsity],
        "layer_realized_sparsity_dev": [sparsity - 0.02, sparsity - 0.01],
        "crisp_config": {"name": config, "sparsity": sparsity, "granularity": granularity, "paper_padding": False}})
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


def _grid(root, seeds=(0, 1, 2, 3, 4), protocol="full"):
    # baseline right on 40 + seed of 50; uniform = baseline exactly; light -1; aggressive +2 sentences; the
    # sparse runs fit the training data worse (loss +0.05) and their dense entropy is 0.1 nats lower
    shift = {"baseline": 0, "uniform_sparse": 0, "light_sparse": -1, "aggressive_sparse": 2}
    for seed in seeds:
        for config in CONFIGS:
            sparse = config != "baseline"
            fake_run(root, "minilm", protocol, config, seed, 40 + seed + shift[config],
                     train_loss=0.2 + seed / 100 + 0.05 * sparse, entropy=1.0 + seed / 10 - 0.1 * sparse)


def test_bootstrap_table_known_differences_and_claims(tmp_path):
    _grid(tmp_path)
    sel = report.select(tmp_path)
    configs, seeds, correct = report.correctness(sel)
    assert configs == list(CONFIGS) and seeds == [0, 1, 2, 3, 4] and correct.shape == (4, 5, 50)
    boot = report.bootstrap_table(sel, B=2000).set_index("config")
    assert boot.index.tolist() == ["uniform_sparse", "light_sparse", "aggressive_sparse"]
    assert boot["mean_diff"].tolist() == pytest.approx([0.0, -1 / 50, 2 / 50])
    u = boot.loc["uniform_sparse"]  # identical to the baseline run by run: no spread at all
    assert (u.se, u.ci_low, u.ci_high, u.p_zero) == (0.0, 0.0, 0.0, 1.0)
    assert u.claimed_gain == pytest.approx(0.0061) and u.p_claim == pytest.approx(1 / 2001)  # 0 < +0.61 always
    a = boot.loc["aggressive_sparse"]  # +4 points: well above its claimed +0.97
    assert a.ci_low > 0 and a.p_claim > 0.9 and a.p_zero < 0.05
    assert boot["p_claim_holm"].tolist() == pytest.approx(stats.holm(boot["p_claim"]))
    assert (boot["B"] == 2000).all() and (boot["boot_seed"] == report.BOOT_SEED).all()
    assert (boot["mdd_zero"] > boot["mdd_claim"]).loc[["light_sparse", "aggressive_sparse"]].all()
    assert boot.loc["light_sparse", "se_seeds_only"] < boot.loc["light_sparse", "se"]
    assert report.bootstrap_table(sel, B=2000).equals(report.bootstrap_table(sel, B=2000))  # seeded


def test_single_run_tables_from_runs(tmp_path):
    _grid(tmp_path)
    sel = report.select(tmp_path)
    pairs = report.single_run_pairs(sel)
    assert len(pairs) == 3 * 25
    light = pairs[pairs.config == "light_sparse"]
    assert sorted(light["diff"] * 50) == pytest.approx(sorted(a - b - 1 for a in range(5) for b in range(5)))
    table = report.single_run_table(sel).set_index("config")
    assert table.loc["light_sparse", "frac_positive"] == pytest.approx(6 / 25)  # a - b - 1 > 0: 6 of 25 pairs
    assert table.loc["light_sparse", "max"] == pytest.approx(3 / 50)
    assert table.loc["uniform_sparse", "normal_sd"] == pytest.approx(np.sqrt(2 * np.var(np.arange(5) / 50, ddof=1)))
    null = report.single_run_null(sel)
    assert (null["hits"], null["arrangements"]) == (5, 20)  # runs 40..44 of 50, as in test_stats: margin < 1/50
    assert null["p_empirical"] == 0.25 and null["paper_n"] == 4 and null["paper_r_needed"] == pytest.approx(0.95)


def test_mechanism_tables_find_the_injected_differences(tmp_path):
    from crisp.analysis import mechanism
    _grid(tmp_path)
    sel = report.select(tmp_path)
    ent = mechanism.entropy_differences(sel)
    assert len(ent) == 2 * 3 * 4  # measures x configs x heads
    dense = ent[ent.measure == "entropy_dense"]
    assert dense["mean_diff"].tolist() == pytest.approx([-0.1] * 12)
    assert ent[ent.measure == "entropy_sparse"]["mean_diff"].tolist() == pytest.approx([-0.6] * 12)
    runs = mechanism.run_dynamics(sel).set_index(["config", "seed"])
    assert runs.loc[("baseline", 2), "train_loss"] == pytest.approx(0.22)  # mean of the last epoch's windows
    assert runs.loc[("baseline", 2), "gap"] == pytest.approx(0.96 - 42 / 50)
    dyn = mechanism.dynamics_differences(sel).set_index(["measure", "config"])
    assert dyn.loc[("train_loss", "light_sparse"), "mean_diff"] == pytest.approx(0.05)
    assert dyn.loc[("dev_loss", "light_sparse"), "mean_diff"] == pytest.approx(0.0)
    answers = dyn.xs("train_loss")["answer"].to_dict()
    assert answers == {"uniform_sparse": "underfitting", "light_sparse": "underfitting",
                       "aggressive_sparse": "regularization"}  # +2 sentences on dev in every seed
    shape = mechanism.layer_shape(sel).set_index(["config", "layer"])
    assert shape.loc[("uniform_sparse", 1), "realized"] == pytest.approx(0.79)
    facts = mechanism.describe_layers(mechanism.layer_shape(sel))
    assert facts["uniform_sparse"]["slope"] == pytest.approx(0.01) and facts["uniform_sparse"]["increasing"]


def test_method_reading_from_crisp_config(tmp_path):
    _grid(tmp_path, seeds=(0,))
    assert report.method_reading(report.select(tmp_path)) == dict(paper_padding=False, granularity="row")
    fake_run(tmp_path, "minilm", "full", "light_sparse", 0, 40, granularity="head")
    with pytest.raises(ValueError, match="2 readings"):
        report.method_reading(report.select(tmp_path))


def test_protocol_kind_tells_smoke_from_experiment():
    assert report.protocol_kind("full") == "the paper's recipe"
    assert report.protocol_kind("small") == "smoke check"
    assert report.protocol_kind("n500") == "data-size sweep"
    assert report.protocol_kind("n500-custom") == "custom" and report.protocol_kind("weird") == "custom"
