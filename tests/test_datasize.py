"""The data-size sweep's analysis: sizes read from the checked summaries, the change with size, the answer."""

import numpy as np
import pandas as pd
import pytest

from crisp.analysis import datasize, report, summary
from crisp.study import results
from crisp.configs import CONFIGS
from test_report import fake_run


TRAIN_SIZES = {"n500": 500, "n2000": 2000, "n8000": 8000, "full": 67349}
SCHEDULES = {"n500": (40, 320), "n2000": (10, 320), "n8000": (5, 625), "full": (3, 3159)}  # epochs, optimizer steps


def sized_run(root, protocol, config, seed, correct):
    """A fake run that also records how many sentences it trained on, as a real run's metrics.json does."""
    folder = fake_run(root, "minilm", protocol, config, seed, correct)
    epochs, steps = SCHEDULES[protocol]
    metrics = results.read_json(folder / "metrics.json") | {"train_size": TRAIN_SIZES[protocol], "epochs": epochs,
                                                             "optimizer_steps": steps}
    results.write_json(folder / "metrics.json", metrics)
    return folder


def sizes(root, gains, seeds=(0, 1, 2)):
    """A paired grid per protocol; ``gains[protocol]`` = sentences (of 50) each sparse config gets right over baseline."""
    for protocol, gain in gains.items():
        for seed in seeds:
            for i, config in enumerate(CONFIGS):
                sized_run(root, protocol, config, seed, 30 + (gain if i else 0) + (seed + i) % 3)


def summarise(root, protocols):
    for p in protocols:
        summary.write(report.select(root / "runs", protocol=p), root / "summary")


def test_sweep_reads_every_size_with_a_paired_grid_smallest_first(tmp_path):
    sizes(tmp_path / "runs", {"full": 0, "n500": 8})
    sized_run(tmp_path / "runs", "n2000", "baseline", 0, 30)  # not a grid yet: left out
    summarise(tmp_path, ["full", "n500"])
    sw = datasize.sweep(tmp_path / "runs", summaries=tmp_path / "summary")
    assert list(sw) == ["n500", "full"]
    diffs = datasize.differences(sw)
    assert set(diffs.train_size) == {500, 67349} and (diffs.n_seeds == 3).all()
    acc = datasize.accuracies(sw)
    assert len(acc) == 2 * 4 * 3 and set(acc.split) == {"dev"}
    assert {"gap", "train_loss"} <= set(datasize.fits(sw).columns)
    assert set(datasize.gap_differences(sw).measure) == {"gap", "dev_loss", "train_loss"}


def test_a_stale_size_summary_stops_the_chapter(tmp_path):
    sizes(tmp_path / "runs", {"n500": 8})
    summarise(tmp_path, ["n500"])
    for i, config in enumerate(CONFIGS):
        sized_run(tmp_path / "runs", "n500", config, 3, 33)  # a new paired seed the summary lacks
    with pytest.raises(summary.StaleSummaryError):
        datasize.sweep(tmp_path / "runs", summaries=tmp_path / "summary")


def test_no_size_is_a_clear_error(tmp_path):
    fake_run(tmp_path / "runs", "minilm", "n500", "baseline", 0, 30)
    with pytest.raises(FileNotFoundError, match="crisp grid --model minilm --protocol n500"):
        datasize.sweep(tmp_path / "runs", summaries=tmp_path / "summary")


def test_joint_change_shares_the_sentence_draw():
    rng = np.random.default_rng(0)
    same = rng.random((4, 1, 40)) < 0.8  # one run per configuration: the seed draw cannot differ
    assert np.allclose(datasize.joint_change(same, same, B=200), 0)  # one sentence draw for both sizes: change 0
    small, large = np.zeros((2, 2, 50), bool), np.zeros((2, 3, 50), bool)
    small[1, :, :10] = True  # the sparse runs at the small size get 10 of 50 more right
    draws = datasize.joint_change(small, large, B=2000)
    assert draws.shape == (2000, 1) and draws.mean() == pytest.approx(0.2, abs=0.01)
    with pytest.raises(ValueError, match="same configurations and sentences"):
        datasize.joint_change(small, large[:, :, :40])


def test_trend_compares_the_sweeps_own_sizes(tmp_path):
    sizes(tmp_path / "runs", {"n500": 8, "n2000": 0, "full": 0})
    summarise(tmp_path, ["n500", "n2000", "full"])
    sw = datasize.sweep(tmp_path / "runs", summaries=tmp_path / "summary")
    change = datasize.trend(sw, B=2000)
    assert set(change.small) == {"n500"} and set(change.large) == {"n2000"}  # full is not part of the sweep's rule
    assert change.change.tolist() == pytest.approx([8 / 50] * 3) and (change.p_holm < 0.05).all()
    assert set(change.size_small) == {500} and set(change.size_large) == {2000}  # read from the runs' metrics
    text = datasize.answer(datasize.differences(sw), change)
    assert text.startswith("Provisional (3 of the planned 5 seeds at the size with fewest): Yes for light_sparse, "
                           "uniform_sparse, aggressive_sparse") and "3 paired seed(s) at n500" in text
    one = {k: v for k, v in sw.items() if k == "n500"}
    assert datasize.trend(one).empty and datasize.answer(datasize.differences(one), datasize.trend(one)).startswith(
        "Not answerable yet on dev: the sweep has fewer than two sizes")


def _answer_inputs(beats, grows, seeds=5):
    configs = ("uniform_sparse", "light_sparse", "aggressive_sparse")
    diffs = pd.DataFrame([dict(split="dev", protocol="n500", config=c, mean_diff=0.02 if c in beats else -0.01,
                               p_zero_holm=0.01 if c in beats else 0.6) for c in configs])
    change = pd.DataFrame([dict(split="dev", config=c, small="n500", large="n8000", size_small=500, size_large=8000,
                                seeds_small=seeds, seeds_large=seeds,
                                diff_small=-0.01, diff_large=-0.03, change=0.02, p_holm=0.01 if c in grows else 0.7)
                           for c in configs])
    return diffs, change


def test_answer_follows_the_stated_rule():
    assert datasize.answer(*_answer_inputs({"light_sparse"}, {"light_sparse"})).startswith("Yes for light_sparse:")
    assert datasize.answer(*_answer_inputs({"light_sparse"}, set())).startswith("Not detected: light_sparse beats the baseline")
    grows_only = datasize.answer(*_answer_inputs(set(), {"aggressive_sparse"}))
    assert grows_only.startswith("Not detected: no sparse configuration beats") and "although aggressive_sparse does" in grows_only
    neither = datasize.answer(*_answer_inputs(set(), set()))
    assert neither.startswith("Not detected: no sparse configuration beats") and "-1.00 to -1.00 points on dev" in neither
    assert "5 paired seed(s) at n500, 5 at n8000" in neither
    assert datasize.answer(*_answer_inputs({"light_sparse"}, {"light_sparse"}, seeds=1)).startswith(
        "Not answerable yet on dev (1 paired seed(s)")
    assert datasize.answer(*_answer_inputs({"light_sparse"}, {"light_sparse"}, seeds=2)).startswith(
        "Provisional (2 of the planned 5 seeds at the size with fewest): Yes for light_sparse:")


def test_a_grid_whose_runs_disagree_on_the_training_size_is_refused(tmp_path):
    sizes(tmp_path / "runs", {"n500": 0}, seeds=(0,))
    folder = sized_run(tmp_path / "runs", "n500", "baseline", 1, 30)
    results.write_json(folder / "metrics.json", results.read_json(folder / "metrics.json") | {"train_size": 499})
    for config in list(CONFIGS)[1:]:
        sized_run(tmp_path / "runs", "n500", config, 1, 30)
    with pytest.raises(ValueError, match="different numbers of sentences"):
        datasize.train_size(report.select(tmp_path / "runs", protocol="n500"))


def test_slope_weights_and_the_shared_sentence_draw_known_answers():
    sizes_ = [500, 2000, 8000, 67349]
    y = 0.3 - 0.02 * np.log10(sizes_)  # exactly linear in log10 size: the slope per tenfold is -0.02
    assert datasize.slope_weights(sizes_) @ y == pytest.approx(-0.02)
    assert datasize.slope_weights(sizes_) @ np.ones(4) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="two different sizes"):
        datasize.slope_weights([500, 500])
    rng = np.random.default_rng(0)
    same = rng.random((4, 1, 40)) < 0.8  # the same gain pattern at every size, one run each: every slope draw is 0
    draws = datasize.joint_gains([same, same, same], B=300)
    assert draws.shape == (300, 3, 3) and np.allclose(np.einsum("bkc,k->bc", draws, datasize.slope_weights([1, 10, 100])), 0)
    a = np.zeros((2, 2, 50), bool)
    b = a.copy()
    b[1, :, :10] = True  # 10 of 50 more right at the second size only: gains 0 and 0.2 in every draw on average
    g = datasize.joint_gains([a, b], B=2000)
    assert g[:, 0].mean() == 0 and g[:, 1].mean() == pytest.approx(0.2, abs=0.01)
    with pytest.raises(ValueError, match="same configurations and sentences"):
        datasize.joint_gains([a, b[:, :, :40]])


def test_size_trend_regresses_on_every_size_and_says_not_detected(tmp_path):
    sizes(tmp_path / "runs", {"n500": 6, "n2000": 3, "n8000": 1, "full": 0})
    summarise(tmp_path, ["n500", "n2000", "n8000", "full"])
    sw = datasize.sweep(tmp_path / "runs", summaries=tmp_path / "summary")
    tr = datasize.size_trend(sw, B=500)
    diffs = datasize.differences(sw)
    for r in tr.itertuples():  # the slope is the least-squares slope of the observed paired differences
        d = diffs[(diffs.split == r.split) & (diffs.config == r.config)].sort_values("train_size")
        assert r.slope == pytest.approx(np.polyfit(np.log10(d.train_size), d.mean_diff, 1)[0])
        assert r.ci_low <= r.slope <= r.ci_high and r.mdd > 0
    assert set(tr.sizes) == {"500, 2,000, 8,000, 67,349"} and (tr.p_holm >= tr.p).all()
    sched = datasize.schedule(sw)
    text = datasize.trend_answer(tr, sched)  # 6, 3, 1, 0 sentences of 50 more right: a real downward trend
    assert text.startswith("Detected on dev: uniform_sparse does relatively worse with more data")
    assert "(epochs 40, 10, 5, 3; optimizer steps 320, 320, 625, 3,159)" in text and "mixes data size with schedule" in text
    flat = datasize.trend_answer(tr.assign(p_holm=0.5), sched)
    assert flat.startswith("Not detected on dev: the sparse-minus-dense difference, regressed on log10 training size")
    assert "the design could detect changes of at least" in flat
