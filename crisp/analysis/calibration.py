"""Loss and calibration of a binary classifier's probabilities, and post-hoc temperature scaling.

Every function takes ``prob`` (the predicted probability of the positive class, what a run's
``predictions_*.csv`` stores as ``prob_pos``) and ``label`` (0 or 1), one entry per sentence.

- **NLL** (negative log-likelihood, "log loss", in nats): ``mean_n -log q_n`` with ``q_n`` the
  probability given to the true label. It is the cross-entropy the model was trained on, so a
  run's ``dev_loss`` equals it (to float rounding).
- **Brier score**: ``mean_n (p_n - y_n)^2`` on the positive class (the binary form; the two-class
  "multi-class" Brier score is twice this).
- **ECE** (expected calibration error) with **equal-mass bins**: sentences sorted by confidence
  ``max(p, 1 - p)`` (the probability of the predicted class) and split into ``bins`` groups of
  (nearly) equal size; ``ECE = sum_b (n_b / N) |acc_b - conf_b|``, accuracy and mean confidence per
  group. Equal-mass bins (rather than equal-width) keep every bin populated although fine-tuned
  models put most sentences above 0.95 confidence.
- **Temperature scaling** (Guo et al. 2017, "On Calibration of Modern Neural Networks"): one scalar
  ``T > 0`` divides the logit ``z = log(p / (1 - p))`` (for two classes, the difference of the two
  logits), ``p_T = sigmoid(z / T)``; ``T`` is fitted by minimising NLL on one split (dev) and
  applied to another (test). It never changes a prediction (the sign of ``z`` stays), so accuracy
  is unchanged: what it removes is over- or under-confidence.

Probabilities are clipped to ``[EPS, 1 - EPS]`` before logs and logits (``EPS = 1e-12``): a float32
softmax can round to exactly 0 or 1.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special

EPS = 1e-12  # probability clip before logs and logits
ECE_BINS = 15  # equal-mass bins of the expected calibration error
T_BOUNDS = (0.05, 20.0)  # temperatures searched (log scale)


def _check(prob, label) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(prob, dtype=float), np.asarray(label)
    if p.ndim != 1 or p.shape != y.shape or len(p) == 0:
        raise ValueError(f"prob and label must be 1-D arrays of the same non-zero length, got shapes {p.shape} and {y.shape}")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError("prob must lie in [0, 1] (the probability of the positive class)")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("label must be 0 or 1")
    return np.clip(p, EPS, 1 - EPS), y.astype(float)


def nll_per_sentence(prob, label) -> np.ndarray:
    """``-log q_n``, the probability given to each sentence's true label (nats)."""
    p, y = _check(prob, label)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def brier_per_sentence(prob, label) -> np.ndarray:
    """``(p_n - y_n)^2``."""
    p, y = _check(prob, label)
    return (p - y) ** 2


def nll(prob, label) -> float:
    """Mean negative log-likelihood (nats)."""
    return float(nll_per_sentence(prob, label).mean())


def brier(prob, label) -> float:
    """Mean binary Brier score."""
    return float(brier_per_sentence(prob, label).mean())


def ece(prob, label, bins: int = ECE_BINS) -> float:
    """Expected calibration error over ``bins`` equal-mass bins of confidence (see the module docstring).

    Ties in confidence are broken by position (a stable sort), so the value is deterministic."""
    p, y = _check(prob, label)
    return float(ece_rows(p[None, :], y[None, :], bins)[0])


def ece_rows(prob, label, bins: int = ECE_BINS) -> np.ndarray:
    """:func:`ece` of every row of ``prob`` and ``label`` (arrays (R, N), already checked), vectorized.

    Bin ``b`` holds the sentences at sorted positions ``np.array_split(range(N), bins)[b]``."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    p, y = np.asarray(prob, dtype=float), np.asarray(label, dtype=float)
    n = p.shape[1]
    confidence = np.maximum(p, 1 - p)
    correct = ((p > 0.5) == (y == 1)).astype(float)  # p = 0.5 predicts the negative class, as argmax does
    order = np.argsort(confidence, axis=1, kind="stable")
    conf_sorted = np.take_along_axis(confidence, order, axis=1)
    correct_sorted = np.take_along_axis(correct, order, axis=1)
    sizes = np.array([len(g) for g in np.array_split(np.arange(n), min(bins, n))])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    gap = np.add.reduceat(correct_sorted, starts, axis=1) - np.add.reduceat(conf_sorted, starts, axis=1)
    return np.abs(gap).sum(axis=1) / n  # sum_b n_b/N |acc_b - conf_b| = sum_b |sum(correct) - sum(conf)| / N


def logit(prob) -> np.ndarray:
    """``log(p / (1 - p))`` of the clipped probability."""
    return special.logit(np.clip(np.asarray(prob, dtype=float), EPS, 1 - EPS))


def apply_temperature(prob, temperature: float) -> np.ndarray:
    """``sigmoid(logit(p) / T)``."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    return special.expit(logit(prob) / temperature)


def fit_temperature(prob, label) -> float:
    """The ``T`` in :data:`T_BOUNDS` that minimises the NLL of ``sigmoid(logit(p) / T)`` on these sentences.

    Searched on ``log T`` (bounded Brent, tolerance 1e-10); a result on a bound means the optimum lies
    beyond it. NLL in ``1/T`` is convex, so the minimum found is the only one."""
    p, y = _check(prob, label)
    z = logit(p)

    def loss(log_t):
        s = z / np.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, s) - y * s))  # -log sigmoid(s) for y=1, -log(1-sigmoid(s)) for y=0

    lo, hi = np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1])
    found = optimize.minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10})
    return float(np.exp(found.x))


def scores(prob, label, bins: int = ECE_BINS) -> dict:
    """``{"accuracy", "nll", "brier", "ece"}`` of one run's predictions."""
    p, y = _check(prob, label)
    return {"accuracy": float(((p > 0.5) == (y == 1)).mean()), "nll": nll(prob, label),
            "brier": brier(prob, label), "ece": ece(prob, label, bins)}
