"""Which training sentences a reduced protocol uses: the same for every configuration and model seed.

``random``
    ``size`` sentences drawn uniformly without replacement (``random.Random(data_seed).sample``): the smoke
    protocol ``small`` (kept as it was, so its committed runs stay reproducible).
``stratified``
    the data-size protocols ``n500``, ``n2000``, ``n8000``: each label's sentences are shuffled once with
    ``data_seed``, and a subset of ``size`` takes the first ``n_c`` of label ``c``, with ``n_c`` the label's share
    of the whole split times ``size`` (largest remainder, so they sum to ``size``). The shuffle does not depend
    on ``size``, so smaller subsets are nested in larger ones (the 500 inside the 2,000 inside the 8,000), and
    each keeps the split's label balance to within one sentence per label.

The data seed is independent of the model seed: every run of one protocol sees the same sentences.
"""

from __future__ import annotations

import math
import random

SUBSET_KINDS = ("random", "stratified")


def label_counts(labels, size: int) -> dict:
    """Sentences per label in a stratified subset of ``size``: proportional shares, largest remainder."""
    total = len(labels)
    counts = {c: sum(1 for y in labels if y == c) for c in sorted(set(labels))}
    exact = {c: size * n / total for c, n in counts.items()}
    take = {c: math.floor(v) for c, v in exact.items()}
    for c in sorted(exact, key=lambda c: (take[c] - exact[c], c))[:size - sum(take.values())]:
        take[c] += 1
    return take


def subset(labels, size: int | None, kind: str = "random", data_seed: int = 0) -> list[int] | None:
    """Sorted row indices of the training subset, or ``None`` for the whole split (``size`` None or >= its length)."""
    if kind not in SUBSET_KINDS:
        raise ValueError(f"subset must be one of {', '.join(SUBSET_KINDS)}, got {kind!r}")
    if size is None or size >= len(labels):
        return None
    if kind == "random":
        return sorted(random.Random(data_seed).sample(range(len(labels)), size))
    rng = random.Random(data_seed)
    chosen = []
    for label, n in label_counts(labels, size).items():
        rows = [i for i, y in enumerate(labels) if y == label]
        rng.shuffle(rows)  # one shuffle per label, in label order: independent of size, so subsets nest
        chosen += rows[:n]
    return sorted(chosen)
