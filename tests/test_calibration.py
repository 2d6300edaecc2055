"""Known answers for NLL, Brier, ECE and temperature scaling (crisp.analysis.calibration), and the ECE bootstrap."""

import math

import numpy as np
import pytest

from crisp.analysis import calibration, calibration_tables


def test_nll_and_brier_by_hand():
    prob, label = [0.8, 0.3, 0.5], [1, 0, 1]
    assert calibration.nll(prob, label) == pytest.approx(-(math.log(0.8) + math.log(0.7) + math.log(0.5)) / 3)
    assert calibration.brier(prob, label) == pytest.approx((0.04 + 0.09 + 0.25) / 3)


def test_nll_survives_probabilities_of_exactly_zero_and_one():
    assert math.isfinite(calibration.nll([1.0, 0.0], [0, 1]))
    assert calibration.nll([1.0, 0.0], [1, 0]) == pytest.approx(0.0, abs=1e-9)


def test_ece_is_zero_for_a_perfectly_calibrated_toy():
    # five bins of ten sentences; in each, the confidence equals the bin's accuracy exactly
    prob, label = [], []
    for conf in (0.6, 0.7, 0.8, 0.9, 1.0):
        right = round(10 * conf)
        prob += [conf] * 10
        label += [1] * right + [0] * (10 - right)
    assert calibration.ece(prob, label, bins=5) == pytest.approx(0.0, abs=1e-12)
    assert calibration.ece(prob, label, bins=15) > 0  # finer bins split a group and see its ordering: not zero


def test_ece_of_an_overconfident_toy():
    # every sentence at confidence 0.9, right and wrong alternating: |0.5 - 0.9| in every bin of four
    prob, label = [0.9] * 60, [1, 0] * 30
    assert calibration.ece(prob, label) == pytest.approx(0.4)


def test_ece_counts_probability_one_half_as_a_negative_prediction():
    assert calibration.ece([0.5, 0.5], [0, 0], bins=1) == pytest.approx(0.5)  # both right, confidence 0.5
    assert calibration.ece([0.5, 0.5], [1, 1], bins=1) == pytest.approx(0.5)  # both wrong, confidence 0.5


def test_ece_rows_equals_a_loop_reference():
    rng = np.random.default_rng(1)
    p = rng.random((4, 101))
    y = (rng.random((4, 101)) < p).astype(float)
    for row in range(4):
        conf = np.maximum(p[row], 1 - p[row])
        correct = ((p[row] > 0.5) == (y[row] == 1)).astype(float)
        order = np.argsort(conf, kind="stable")
        ref = sum(len(g) * abs(correct[g].mean() - conf[g].mean()) for g in np.array_split(order, 15)) / 101
        assert calibration.ece(p[row], y[row]) == pytest.approx(ref, abs=1e-12)


def test_temperature_is_one_when_the_probabilities_are_already_right():
    # one logit value, and exactly that share of positives: the NLL optimum is T = 1
    prob, label = [0.8] * 10, [1] * 8 + [0] * 2
    assert calibration.fit_temperature(prob, label) == pytest.approx(1.0, abs=1e-6)


def test_temperature_of_an_overconfident_model():
    # logit 2 for every sentence but only 80% positives: the optimum is 2 / logit(0.8)
    p = 1 / (1 + math.exp(-2.0))
    prob, label = [p] * 10, [1] * 8 + [0] * 2
    assert calibration.fit_temperature(prob, label) == pytest.approx(2.0 / math.log(4.0), rel=1e-6)


def test_temperature_recovers_the_scale_of_a_sharpened_model():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 20000)
    label = (rng.random(20000) < 1 / (1 + np.exp(-z))).astype(int)
    sharpened = 1 / (1 + np.exp(-3 * z))  # three times too confident
    assert calibration.fit_temperature(sharpened, label) == pytest.approx(3.0, rel=0.05)
    scaled = calibration.apply_temperature(sharpened, calibration.fit_temperature(sharpened, label))
    assert calibration.nll(scaled, label) < calibration.nll(sharpened, label)
    assert ((scaled > 0.5) == (sharpened > 0.5)).all()  # a temperature never changes a prediction


@pytest.mark.parametrize("prob, label, words", [
    ([0.5, 1.5], [0, 1], "prob must lie in"),
    ([0.5, 0.5], [0, 2], "label must be 0 or 1"),
    ([0.5], [0, 1], "same non-zero length"),
])
def test_bad_input_is_named(prob, label, words):
    with pytest.raises(ValueError, match=words):
        calibration.nll(prob, label)


def test_ece_bootstrap_is_paired_and_reproducible():
    rng = np.random.default_rng(2)
    label = (rng.random(200) < 0.5).astype(float)
    prob = rng.random((2, 3, 200))
    prob[1] = prob[0]  # the second configuration is the first: every paired difference is exactly zero
    reps = calibration_tables._ece_two_level(prob, label, B=40, seed=5)
    assert reps.shape == (40, 2)
    assert np.array_equal(reps[:, 0], reps[:, 1])
    assert np.array_equal(reps, calibration_tables._ece_two_level(prob, label, B=40, seed=5))
    # one replicate by hand: the same draws, in the same order
    r = np.random.default_rng(5)
    sentences, seeds = r.integers(0, 200, size=(40, 200)), r.integers(0, 3, size=(40, 3))
    by_hand = np.mean([calibration.ece(prob[0, s, sentences[0]], label[sentences[0]]) for s in seeds[0]])
    assert reps[0, 0] == pytest.approx(by_hand, abs=1e-12)
