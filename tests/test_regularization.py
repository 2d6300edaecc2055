"""The regularizer configurations (crisp.study.train) and the generated answers of the chapter (crisp.analysis.regularization)."""

import pandas as pd
import pytest

from crisp.study import models
from crisp.analysis import regularization
from crisp.study.train import TrainConfig, make_config


def test_regularizer_configurations_set_their_knob_and_keep_dense_attention():
    cfg = make_config("n500", model="tiny-bert", config="attn_dropout", seed=0)
    assert (cfg.attention_dropout, cfg.label_smoothing, cfg.label, cfg.protocol) == (0.3, 0.0, "attn_dropout", "n500")
    cfg = make_config("n500", model="tiny-bert", config="label_smoothing", seed=0)
    assert (cfg.attention_dropout, cfg.label_smoothing, cfg.label) == (None, 0.1, "label_smoothing")


def test_a_knob_off_its_configurations_value_is_in_the_label():
    assert make_config("n500", config="baseline", label_smoothing=0.2).label == "baseline-ls0.2"
    assert make_config("n500", config="attn_dropout", attention_dropout=0.5).label == "attn_dropout-attndrop0.5"


@pytest.mark.parametrize("knob, value", [("label_smoothing", 1.0), ("attention_dropout", -0.1), ("label_smoothing", "x")])
def test_bad_knob_values_are_refused(knob, value):
    with pytest.raises(ValueError, match=knob):
        TrainConfig(config="baseline", **{knob: value})


def test_unknown_configuration_names_the_choices():
    with pytest.raises(ValueError, match="attn_dropout"):
        TrainConfig(config="dropout")


@pytest.mark.parametrize("kind", ["tiny-bert", "tiny-distilbert"])
def test_attention_dropout_reaches_every_attention_module(kind):
    from crisp.integration import attention_modules

    net, _ = models.load(kind, seed=0, attention_dropout=0.3)
    assert {m.dropout.p for m in attention_modules(net)} == {0.3}
    net, _ = models.load(kind, seed=0)
    assert {m.dropout.p for m in attention_modules(net)} != {0.3}


def test_a_config_without_attention_dropout_is_refused():
    class NoDropout:
        pass

    with pytest.raises(models.ModelError, match="no attention-probability dropout"):
        models.attention_dropout_key(NoDropout())


def _row(size, config, metric, diff, p_t, p_boot, reference="baseline", scaling="raw", split="test", n=5):
    return dict(split=split, scaling=scaling, metric=metric, reference=reference, config=config, n_seeds=n,
                mean_diff=diff, t_ci_low=diff - 0.01, t_ci_high=diff + 0.01, t_p_holm=p_t, boot_ci_low=diff - 0.02,
                boot_ci_high=diff + 0.02, boot_p_holm=p_boot, size=size)


def test_direction_follows_the_holm_threshold():
    r = pd.Series(_row("n500", "uniform_sparse", "nll", -0.1, 0.049, 0.051))
    assert regularization.direction(r, "t") == -1 and regularization.direction(r, "boot") == 0
    r = pd.Series(_row("n500", "uniform_sparse", "nll", 0.1, 0.01, float("nan")))
    assert regularization.direction(r, "t") == 1 and regularization.direction(r, "boot") == 0


def test_temperature_answer_counts_reductions_before_and_after():
    table = pd.DataFrame([
        _row("n500", "uniform_sparse", "nll", -0.12, 0.001, 0.002),
        _row("n500", "uniform_sparse", "nll", 0.002, 0.9, 0.9, scaling="temperature"),
        _row("n500", "light_sparse", "nll", -0.08, 0.001, 0.002),
        _row("n500", "light_sparse", "nll", -0.008, 0.03, 0.4, scaling="temperature"),
        _row("n500", "uniform_sparse", "accuracy", -0.017, 0.03, 0.4),
        _row("n500", "light_sparse", "accuracy", 0.0, 0.9, 0.9),
    ])
    text = regularization.answer_temperature(table)
    assert text.startswith("Before temperature scaling, 2 of 2 sparse-minus-dense differences")
    assert "after each run's own dev-fitted temperature, 0 are" in text
    assert text.endswith("buys for the dense model too.")
    verdict = regularization.verdict_sentence(table)
    assert "2 of 2 size-configuration pairs (at n500)" in verdict and verdict.endswith("buys the dense model too.")
    accuracy = regularization.answer_accuracy(table)
    assert accuracy.startswith("No: of 2 differences") and "1 below zero" in accuracy


def test_regularizer_answer_waits_for_runs_and_says_provisional():
    table = pd.DataFrame([_row("n500", "uniform_sparse", "nll", -0.12, 0.001, 0.002)])
    assert regularization.answer_regularizers(table).startswith("Not answered yet")
    table = pd.DataFrame([_row("n2000", "uniform_sparse", m, 0.03, 0.001, 0.002, reference="label_smoothing", n=2)
                          for m in ("nll", "ece")])
    text = regularization.answer_regularizers(table)
    assert "provisional" in text and "NLL: 0 lower, 1 higher, 0 not detected" in text
