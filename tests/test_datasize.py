"""The data-size sweep's analysis: sizes read from the checked summaries, the change with size, the answer."""

import pandas as pd
import pytest

from crisp import datasize, report, summary
from crisp.configs import CONFIGS
from test_report import fake_run


def sizes(root, gains, seeds=(0, 1, 2)):
    """A paired grid per protocol; ``gains[protocol]`` = sentences (of 50) each sparse config gets right over baseline."""
    for protocol, gain in gains.items():
        for seed in seeds:
            for i, config in enumerate(CONFIGS):
                fake_run(root, "minilm", protocol, config, seed, 30 + (gain if i else 0) + (seed + i) % 3)


def summarise(root, protocols):
    for p in protocols:
        summary.write(report.select(root / "runs", protocol=p), root / "summary")


def test_sweep_reads_every_size_with_a_paired_grid_smallest_first(tmp_path):
    sizes(tmp_path / "runs", {"full": 0, "n500": 8})
    fake_run(tmp_path / "runs", "minilm", "n2000", "baseline", 0, 30)  # not a grid yet: left out
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
        fake_run(tmp_path / "runs", "minilm", "n500", config, 3, 33)  # a new paired seed the summary lacks
    with pytest.raises(summary.StaleSummaryError):
        datasize.sweep(tmp_path / "runs", summaries=tmp_path / "summary")


def test_no_size_is_a_clear_error(tmp_path):
    fake_run(tmp_path / "runs", "minilm", "n500", "baseline", 0, 30)
    with pytest.raises(FileNotFoundError, match="crisp grid --model minilm --protocol n500"):
        datasize.sweep(tmp_path / "runs", summaries=tmp_path / "summary")


def _diffs(small_diff, large_diff, p_small=0.01, se=0.005):
    rows = []
    for protocol, diff, p in (("n500", small_diff, p_small), ("full", large_diff, 0.9)):
        for config in ("uniform_sparse", "light_sparse", "aggressive_sparse"):
            rows.append(dict(split="dev", config=config, protocol=protocol, train_size=datasize.SIZE_OF[protocol],
                             n_seeds=5, mean_diff=diff, se=se, p_zero_holm=p))
    return pd.DataFrame(rows)


def test_trend_and_answer_follow_the_stated_rule():
    yes = _diffs(0.03, 0.0)
    change = datasize.trend(yes)
    assert change.change.tolist() == pytest.approx([0.03] * 3)
    assert change.se.iloc[0] == pytest.approx(0.005 * 2 ** 0.5) and (change.p_holm < 0.05).all()
    assert datasize.answer(yes, change).startswith("Yes for uniform_sparse, light_sparse, aggressive_sparse")
    beats_only = _diffs(0.01, 0.008)
    assert datasize.answer(beats_only, datasize.trend(beats_only)).startswith("No: aggressive_sparse, light_sparse")
    none = _diffs(-0.01, -0.006, p_small=0.5)
    text = datasize.answer(none, datasize.trend(none))
    assert text.startswith("No: no sparse configuration beats") and "-1.00 to -1.00 points on dev" in text
    assert "5 paired seed(s) at n500" in text
    one = _diffs(0.03, 0.0)
    assert datasize.answer(one[one.protocol == "n500"], datasize.trend(one[one.protocol == "n500"])).startswith(
        "Not answerable yet")
