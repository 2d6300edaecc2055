"""Training subsets: the smoke protocol's random draw unchanged; the data-size protocols' stratified, nested ones."""

import random

import pytest

from crisp.study.subsets import label_counts, subset
from crisp.study.train import PROTOCOLS, SIZE_PROTOCOLS, SIZE_RULE, make_config

LABELS = [1 if (i * 7919) % 10 < 6 else 0 for i in range(5000)]  # 60% positive, in no particular order


def test_random_subset_is_the_smoke_protocols_draw():
    assert subset(LABELS, 400, "random", 0) == sorted(random.Random(0).sample(range(5000), 400))


def test_whole_split_when_size_is_none_or_too_large():
    assert subset(LABELS, None, "stratified") is None and subset(LABELS, 5000, "stratified") is None


@pytest.mark.parametrize("size", [1, 7, 500, 2000, 4999])
def test_stratified_keeps_the_label_balance(size):
    rows = subset(LABELS, size, "stratified", 0)
    assert len(rows) == len(set(rows)) == size and rows == sorted(rows)
    positives = sum(LABELS[i] for i in rows)
    assert abs(positives - 0.6 * size) <= 1


def test_stratified_subsets_nest_and_depend_on_the_data_seed_only():
    small, mid, large = (set(subset(LABELS, n, "stratified", 3)) for n in (500, 2000, 4000))
    assert small < mid < large
    assert subset(LABELS, 500, "stratified", 3) != subset(LABELS, 500, "stratified", 4)


def test_label_counts_sum_to_size():
    assert label_counts([0, 0, 1], 2) == {0: 1, 1: 1}  # exact shares 1.33 and 0.67: the larger remainder wins
    assert sum(label_counts(LABELS, 333).values()) == 333


def test_size_protocols_are_presets_with_the_papers_step():
    for name in SIZE_PROTOCOLS:
        cfg = make_config(name, model="tiny-bert", config="baseline", seed=1)
        assert cfg.protocol == name and cfg.subset == "stratified" and cfg.batch_size * cfg.grad_accum == 64
        assert cfg.train_size == PROTOCOLS[name]["train_size"] and cfg.learning_rate == 2e-5
    assert make_config("n500", data_seed=1).protocol == "n500-ds1"  # another subset is another protocol
    with pytest.raises(ValueError, match="subset must be one of"):
        make_config("n500", subset="first")


def test_size_protocols_follow_the_stated_rule():
    # at least 5 epochs and at least 320 optimizer steps of 64 sentences (crisp.study.train.PROTOCOLS)
    for name in SIZE_PROTOCOLS:
        p = PROTOCOLS[name]
        steps = -(-p["train_size"] // 64) * p["epochs"]
        assert p["epochs"] >= SIZE_RULE["min_epochs"] and steps >= SIZE_RULE["min_steps"], name
    assert SIZE_RULE == {"min_epochs": 5, "min_steps": 320}  # the rule the chapter states
