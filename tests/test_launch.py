"""`crisp grid --launcher local`: one submitit job per run, finished runs skipped, the same runs as without it."""

import json

import pandas as pd
import pytest

from crisp.study import cli, grid, launch
from crisp.study.train import make_config


@pytest.fixture
def common(sst2_dir):
    return ["--model", "tiny-bert", "--data", str(sst2_dir), "--protocol", "small", "--epochs", "1",
            "--batch-size", "16", "--no-progress", "--logging-steps", "2"]


def test_local_launcher_runs_each_run_as_a_job_and_skips_finished_ones(common, tmp_path, capsys):
    out, logs = tmp_path / "runs", tmp_path / "jobs"
    argv = ["grid", "--configs", "baseline,uniform_sparse", "--seeds", "2", "--launcher", "local", "--workers", "2",
            "--log-dir", str(logs), "--output", str(out), *common]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert text.count("as local job") == 2 and "grid: 2 run(s) done, 0 skipped" in text
    runs = sorted(out.glob("**/metrics.json"))
    assert [json.loads(p.read_text())["config"] for p in runs] == ["baseline", "uniform_sparse"]
    for path in runs:
        assert (path.parent / grid.LOG_NAME).is_file() and not (path.parent / grid.LOCK_NAME).exists()
    assert any(logs.iterdir())  # submitit's own job files stay out of the run folders
    # the same run without a scheduler gives the same predictions
    assert cli.main(["train", "--config", "uniform_sparse", "--seed", "2", "--output", str(tmp_path / "plain"), *common]) == 0
    a = pd.read_csv(out / "tiny-bert/small/uniform_sparse/seed-2/predictions_dev.csv")
    b = pd.read_csv(tmp_path / "plain/tiny-bert/small/uniform_sparse/seed-2/predictions_dev.csv")
    assert (a["pred"] == b["pred"]).all() and (a["prob_pos"] - b["prob_pos"]).abs().max() < 1e-4
    capsys.readouterr()
    assert cli.main(argv) == 0
    assert "grid: 0 run(s) done, 2 skipped" in capsys.readouterr().out


def test_a_failed_job_is_reported_and_does_not_stop_the_others(sst2_dir, tmp_path):
    good = make_config("small", model="tiny-bert", data=str(sst2_dir), output=str(tmp_path), epochs=1.0,
                       batch_size=16, progress=False, seed=0)
    bad = make_config("small", model="tiny-bert", data=str(tmp_path / "missing"), output=str(tmp_path), epochs=1.0,
                      batch_size=16, progress=False, seed=1)
    outcomes = launch.submit([bad, good], "local", workers=1, options=launch.JobOptions(log_dir=str(tmp_path / "jobs")))
    assert [o.status for o in outcomes] == ["failed", "done"]
    assert "does not exist" in outcomes[0].detail or "not a folder" in outcomes[0].detail, outcomes[0].detail


def test_unknown_launcher_is_refused(sst2_dir, tmp_path):
    with pytest.raises(ValueError, match="launcher must be one of local, slurm"):
        launch.submit([make_config("small", output=str(tmp_path))], "pbs")
