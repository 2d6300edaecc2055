"""`crisp grid --workers N`: runs in parallel processes, finished runs skipped, one run never trained twice at once;
the precision option."""

import json
import os

import pandas as pd
import pytest

from crisp.study import cli, grid
from crisp.study.train import make_config, train


def _cfg(sst2_dir, out, **kw):
    base = dict(model="tiny-bert", data=str(sst2_dir), output=str(out), epochs=1.0, batch_size=16, progress=False,
                logging_steps=2)
    return make_config("small", **{**base, **kw})


def test_two_workers_finish_every_run_and_match_one_process(sst2_dir, tmp_path, capsys):
    common = ["--model", "tiny-bert", "--data", str(sst2_dir), "--protocol", "small", "--epochs", "1",
              "--batch-size", "16", "--no-progress", "--logging-steps", "2"]
    par, seq = tmp_path / "parallel", tmp_path / "sequential"
    assert cli.main(["grid", "--configs", "baseline,aggressive_sparse", "--seeds", "0", "--workers", "2",
                     "--output", str(par), *common]) == 0
    out = capsys.readouterr().out
    assert "on 2 worker processes" in out and "grid: 2 run(s) done, 0 skipped" in out
    runs = sorted(par.glob("**/metrics.json"))
    assert len(runs) == 2
    for path in runs:
        folder = path.parent
        assert (folder / grid.LOG_NAME).is_file() and not (folder / grid.LOCK_NAME).exists()
        assert json.loads(path.read_text())["precision"] == "fp32"
    # the same runs in this process, one after another: the same predictions
    assert cli.main(["grid", "--configs", "baseline,aggressive_sparse", "--seeds", "0", "--output", str(seq), *common]) == 0
    for path in runs:
        other = seq / path.parent.relative_to(par)
        a, b = pd.read_csv(path.parent / "predictions_dev.csv"), pd.read_csv(other / "predictions_dev.csv")
        assert (a["pred"] == b["pred"]).all()
        assert (a["prob_pos"] - b["prob_pos"]).abs().max() < 1e-4
    # a second call skips both
    capsys.readouterr()
    assert cli.main(["grid", "--configs", "baseline,aggressive_sparse", "--seeds", "0", "--workers", "2",
                     "--output", str(par), *common]) == 0
    assert "grid: 0 run(s) done, 2 skipped" in capsys.readouterr().out


def test_a_run_held_by_a_live_process_is_not_trained_again(sst2_dir, tmp_path):
    cfg = _cfg(sst2_dir, tmp_path)
    cfg.folder.mkdir(parents=True)
    (cfg.folder / grid.LOCK_NAME).write_text(f"{os.getppid()} {__import__('socket').gethostname()}")
    [outcome] = grid.run_plan([cfg])
    assert outcome.status == "busy" and "is being trained by process" in outcome.detail
    assert not (cfg.folder / "metrics.json").exists()


def test_a_stale_lock_is_taken_over(sst2_dir, tmp_path):
    cfg = _cfg(sst2_dir, tmp_path)
    cfg.folder.mkdir(parents=True)
    (cfg.folder / grid.LOCK_NAME).write_text(f"999999999 {__import__('socket').gethostname()}")  # no such process
    [outcome] = grid.run_plan([cfg])
    assert outcome.status == "done" and (cfg.folder / "metrics.json").is_file()
    assert not (cfg.folder / grid.LOCK_NAME).exists()


def test_bad_worker_count_is_refused(sst2_dir, tmp_path):
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        grid.run_plan([_cfg(sst2_dir, tmp_path)], workers=0)


def test_bf16_run_on_cpu_is_labelled_and_recorded(sst2_dir, tmp_path):
    cfg = _cfg(sst2_dir, tmp_path, precision="bf16", config="uniform_sparse")
    assert cfg.protocol == "small" and cfg.label == "uniform_sparse-bf16"  # not the recipe, but its own folder
    folder = train(cfg)
    m = json.loads((folder / "metrics.json").read_text())
    assert m["precision"] == "bf16" and m["config"] == "uniform_sparse-bf16" and m["paper_config"] == "uniform_sparse"
    assert m["device_type"] == "cpu" and 0.5 < m["realized_sparsity_dev"] < 0.9


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("precision", ["fp16", "tf32"])
def test_cuda_only_precisions_are_refused_on_cpu(sst2_dir, tmp_path, precision):
    cfg = _cfg(sst2_dir, tmp_path, precision=precision)
    with pytest.raises(ValueError, match=f"precision {precision} needs a CUDA device"):
        train(cfg)
    assert not cfg.folder.exists()  # nothing half-written


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of fp32, tf32, bf16, fp16"):
        make_config("small", precision="fp8")
