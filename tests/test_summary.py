"""The summary table: written once from the predictions, replaced whole, and checked against them."""

import numpy as np
import pandas as pd
import pytest

from crisp.study import cli, results
from crisp.analysis import report, stats, summary
from crisp.configs import CONFIGS
from test_report import fake_run


def grid(root, seeds=(0, 1, 2)):
    for seed in seeds:
        for i, config in enumerate(CONFIGS):
            fake_run(root, "minilm", "full", config, seed, 30 + 3 * i + seed)


def test_written_summary_holds_the_statistics_and_checks(tmp_path):
    grid(tmp_path / "runs")
    sel = report.select(tmp_path / "runs")
    where = summary.write(sel, tmp_path / "summary")
    assert where == tmp_path / "summary" / "minilm" / "full"
    stored = summary.check(sel, tmp_path / "summary")
    table = stored["main_table"].set_index("config")
    assert table.loc["baseline", "dev_mean"] == pytest.approx(np.mean([30, 31, 32]) / 50)
    assert table.loc["baseline", "dev_n"] == 3
    comp = stored["comparison_dev"].set_index("config")
    assert comp.loc["aggressive_sparse", "mean_diff"] == pytest.approx(9 / 50)
    assert len(stored["runs"]) == 12 and set(stored["runs"].seed) == {0, 1, 2}
    assert stored["comparison_test"].empty  # the fake runs have no test predictions
    assert stored["facts"]["seeds"] == [0, 1, 2] and stored["facts"]["label"] == sel.label
    assert "Scope: minilm, protocol full, 3 seeds per configuration" in stored["verdict"]
    assert "2 of the 5 planned" not in stored["verdict"] and "3 of the 5 planned seeds" in stored["verdict"]
    boot = stored["bootstrap"].set_index("config")
    assert boot.loc["aggressive_sparse", "mean_diff"] == pytest.approx(9 / 50) and (boot["split"] == "dev").all()
    assert set(stored["single_run"]["config"]) == {"uniform_sparse", "light_sparse", "aggressive_sparse"}
    assert len(stored["single_run_pairs"]) == 3 * 9 and len(stored["entropy_heads"]) == 2 * 3 * 4
    assert set(stored["dynamics"]["measure"]) == {"train_loss", "train_accuracy", "dev_loss", "dev_accuracy", "gap"}
    assert stored["facts"]["single_run_null"] == {}  # 3 baseline runs: too few for one baseline + three "sparse"
    assert stored["facts"]["method_reading"]["granularity"] == "row" and not stored["facts"]["readings_used"]
    assert stored["facts"]["bootstrap"] == {"B": report.BOOT_B, "seed": report.BOOT_SEED,
                                            "levels": "seeds and sentences, crossed"}
    boot_fresh = report.bootstrap_table(sel, "dev")
    assert stored["bootstrap"]["p_claim"].tolist() == pytest.approx(boot_fresh["p_claim"].tolist())


def test_the_padding_readings_table_reaches_the_verdict_and_is_checked(tmp_path):
    from test_stats import _readings
    grid(tmp_path / "data" / "runs", seeds=(0, 1, 2, 3))
    sel = report.select(tmp_path / "data" / "runs")
    summary.write(sel, tmp_path / "data" / "summary")
    assert "mask-first" not in summary.check(sel)["verdict"]
    where = tmp_path / "data" / "padding" / "minilm"
    where.mkdir(parents=True)
    _readings(0.0).to_csv(where / "readings.csv", index=False)
    with pytest.raises(summary.StaleSummaryError, match="verdict.md"):  # the verdict now says more
        summary.check(sel)
    summary.write(sel)
    stored = summary.check(sel)
    assert "no real key is pruned" in stored["verdict"] and stored["facts"]["readings_used"]
    assert stored["facts"]["single_run_null"]["arrangements"] == 4 * 1  # 4 baseline runs: C(3, 3) each


def test_a_summary_that_no_longer_matches_the_runs_is_an_error(tmp_path):
    grid(tmp_path / "runs")
    summary.write(report.select(tmp_path / "runs"), tmp_path / "summary")
    # one prediction changes after the summary was written
    path = results.run_dir(tmp_path / "runs", "minilm", "full", "light_sparse", 1) / "predictions_dev.csv"
    preds = pd.read_csv(path)
    preds.loc[0, "pred"] = 1 - preds.loc[0, "pred"]
    results.write_csv(path, preds)
    with pytest.raises(summary.StaleSummaryError, match="runs.csv does not match"):
        summary.check(report.select(tmp_path / "runs"), tmp_path / "summary")


def test_a_new_paired_seed_makes_the_summary_stale(tmp_path):
    grid(tmp_path / "runs", seeds=(0, 1))
    summary.write(report.select(tmp_path / "runs"), tmp_path / "summary")
    grid(tmp_path / "runs", seeds=(2,))
    with pytest.raises(summary.StaleSummaryError, match="does not match"):
        summary.check(report.select(tmp_path / "runs"), tmp_path / "summary")


def test_the_folder_is_replaced_whole_and_a_failed_write_leaves_the_old_one(tmp_path, monkeypatch):
    grid(tmp_path / "runs")
    sel = report.select(tmp_path / "runs")
    where = summary.write(sel, tmp_path / "summary")
    (where / "stray.txt").write_text("from an older layout")
    summary.write(sel, tmp_path / "summary")
    assert not (where / "stray.txt").exists()
    before = {p.name: p.read_bytes() for p in where.iterdir()}

    original, calls = results.write_csv, []

    def failing_write_csv(path, frame):  # the third table fails to write
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        original(path, frame)

    monkeypatch.setattr(results, "write_csv", failing_write_csv)
    with pytest.raises(OSError, match="disk full"):
        summary.write(sel, tmp_path / "summary")
    assert {p.name: p.read_bytes() for p in where.iterdir()} == before
    assert [p.name for p in where.parent.iterdir()] == ["full"]  # no staging folder left behind


def test_missing_summary_names_the_command(tmp_path):
    grid(tmp_path / "runs", seeds=(0,))
    with pytest.raises(FileNotFoundError, match="crisp summary --model minilm --protocol full"):
        summary.check(report.select(tmp_path / "runs"), tmp_path / "summary")


def test_cli_summary(tmp_path, capsys):
    grid(tmp_path / "runs")
    assert cli.main(["summary", "--runs", str(tmp_path / "runs"), "--output", str(tmp_path / "out")]) == 0
    assert "written:" in capsys.readouterr().out
    assert (tmp_path / "out" / "minilm" / "full" / "summary.json").is_file()
    assert cli.main(["summary", "--runs", str(tmp_path / "runs")]) == 0  # default: summary/ beside the runs
    summary.check(report.select(tmp_path / "runs"))
    assert (tmp_path / "summary" / "minilm" / "full" / "verdict.md").is_file()
    assert cli.main(["summary", "--runs", str(tmp_path / "runs"), "--protocol", "small"]) == 2
    assert "no finished runs of model=None protocol='small'" in capsys.readouterr().err


def test_last_digit_noise_in_the_facts_is_not_staleness_but_a_real_change_is(tmp_path):
    import json
    grid(tmp_path / "runs", seeds=(0, 1, 2, 3, 4))
    sel = report.select(tmp_path / "runs")
    where = summary.write(sel, tmp_path / "summary")
    facts_path = where / "summary.json"
    original = json.loads(facts_path.read_text())
    null = original["single_run_null"]
    assert isinstance(null["paper_pearson_r"], float)

    def store(value):
        changed = json.loads(json.dumps(original))
        changed["single_run_null"]["paper_pearson_r"] = value
        facts_path.write_text(json.dumps(changed))

    store(null["paper_pearson_r"] * (1 + 1e-15))  # what another scipy gives in the last digit
    summary.check(sel, tmp_path / "summary")
    store(null["paper_pearson_r"] * (1 + 1e-6))
    with pytest.raises(summary.StaleSummaryError, match="single_run_null"):
        summary.check(sel, tmp_path / "summary")
    store(str(null["paper_pearson_r"]))  # a number stored as text is not the number
    with pytest.raises(summary.StaleSummaryError, match="single_run_null"):
        summary.check(sel, tmp_path / "summary")


def test_a_passed_check_is_remembered_until_anything_it_read_changes(tmp_path, monkeypatch):
    grid(tmp_path / "runs")
    sel = report.select(tmp_path / "runs")
    summary.write(sel, tmp_path / "summary")
    monkeypatch.setenv(summary.CHECK_MEMO_ENV, str(tmp_path / "memo"))
    summary.check(sel, tmp_path / "summary")  # recomputed, then remembered
    assert len(list((tmp_path / "memo").iterdir())) == 1
    real_compute = summary.compute

    def no_recompute(sel):
        raise AssertionError("recomputed although nothing changed")

    monkeypatch.setattr(summary, "compute", no_recompute)
    assert summary.check(sel, tmp_path / "summary")["facts"]["seeds"] == [0, 1, 2]
    # a changed prediction is a new fingerprint: recomputed, and found stale
    monkeypatch.setattr(summary, "compute", real_compute)
    run = sel.metrics.iloc[0]["run_dir"]
    preds = pd.read_csv(f"{run}/predictions_dev.csv")
    preds.loc[0, "pred"] = 1 - preds.loc[0, "pred"]
    preds.to_csv(f"{run}/predictions_dev.csv", index=False)
    with pytest.raises(summary.StaleSummaryError):
        summary.check(report.select(tmp_path / "runs"), tmp_path / "summary")
