"""One tiny end-to-end run: every file, their contents, overwrite protection, the CLI."""

import json

import pandas as pd
import pytest

from crisp.study import cli
from crisp.study.results import RUN_FILES, RunExistsError
from crisp.study.train import TrainConfig, make_config, train


@pytest.fixture(scope="module")
def run(sst2_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    cfg = make_config("small", model="tiny-distilbert", config="light_sparse", data=str(sst2_dir), output=str(out),
                      epochs=2.0, batch_size=8, grad_accum=2, logging_steps=2, save_steps=4, progress=False)
    return cfg, train(cfg)


def test_run_writes_every_file(run):
    cfg, folder = run
    assert folder == cfg.folder
    assert folder.parts[-4:] == ("tiny-distilbert", "small-e2", "light_sparse", "seed-0")
    for name in RUN_FILES + ("predictions_test.csv",):
        assert (folder / name).is_file(), name
    assert not (folder / "checkpoints").exists()
    m = json.loads((folder / "metrics.json").read_text())
    for key in ("model", "protocol", "config", "seed", "train_size", "epochs", "dev_accuracy", "dev_loss",
                "test_accuracy", "test_loss", "train_seconds", "device", "torch", "transformers", "git_commit"):
        assert key in m, key
    assert m["model"] == "tiny-distilbert" and m["config"] == "light_sparse" and m["train_size"] == 96
    assert m["train_config"]["learning_rate"] == 2e-5 and m["crisp_config"]["strategy"] == "adaptive"
    assert m["optimizer_steps"] == 12  # 96 sentences / (8 x 2) = 6 steps per epoch, 2 epochs
    assert m["step_batch"] == "8 x 2"


def test_predictions_in_file_order_and_consistent(run, sst2_dir):
    _, folder = run
    dev = pd.read_csv(folder / "predictions_dev.csv")
    assert list(dev.columns) == ["idx", "label", "pred", "prob_pos"]
    assert dev["idx"].tolist() == list(range(40))
    labels = [int(line.split("\t")[1]) for line in (sst2_dir / "dev.tsv").read_text().splitlines()[1:]]
    assert dev["label"].tolist() == labels
    assert ((dev["prob_pos"] > 0.5).astype(int) == dev["pred"]).all()
    m = json.loads((folder / "metrics.json").read_text())
    assert m["dev_accuracy"] == pytest.approx((dev["pred"] == dev["label"]).mean())
    history = pd.read_csv(folder / "history.csv")
    last_eval = history.dropna(subset=["eval_accuracy"]).iloc[-1]
    assert last_eval["eval_accuracy"] == pytest.approx(m["dev_accuracy"])  # Trainer's eval agrees with ours


def test_layer_sparsity_and_attention_stats(run):
    _, folder = run
    layers = pd.read_csv(folder / "layer_sparsity.csv")
    assert set(layers["layer"]) == {0, 1}
    per_step = layers.groupby("step")["target_sparsity"].mean()
    assert ((per_step - 0.6).abs() < 0.005).all()  # adaptive: the mean over layers is the target
    assert layers["realized_sparsity"].between(0, 1).all()
    stats = pd.read_csv(folder / "attention_stats.csv")
    assert len(stats) == 2 * 4 and (stats["entropy_sparse"] <= stats["entropy_dense"] + 1e-9).all()


def test_finished_run_is_not_overwritten(run):
    cfg, _ = run
    with pytest.raises(RunExistsError, match="--overwrite"):
        train(cfg)


def test_loss_is_averaged_over_accumulation(sst2_dir, tmp_path):
    """With accumulation the logged loss must stay a per-example mean (~0.69 at init), not x grad_accum."""
    losses = {}
    for accum in (1, 4):
        cfg = make_config("small", model="tiny-bert", data=str(sst2_dir), output=str(tmp_path / str(accum)),
                          epochs=1.0, batch_size=4, grad_accum=accum, logging_steps=1, learning_rate=1e-9,
                          progress=False)
        history = pd.read_csv(train(cfg) / "history.csv")
        losses[accum] = history["train_loss"].dropna().iloc[0]
    assert losses[4] == pytest.approx(losses[1], rel=0.1)
    assert losses[4] < 1.0


def test_same_seed_same_predictions(sst2_dir, tmp_path):
    preds = []
    for name in ("a", "b"):
        cfg = make_config("small", model="tiny-bert", config="aggressive_sparse", data=str(sst2_dir),
                          output=str(tmp_path / name), epochs=1.0, batch_size=8, grad_accum=1, progress=False)
        preds.append(pd.read_csv(train(cfg) / "predictions_dev.csv"))
    pd.testing.assert_frame_equal(preds[0], preds[1])


def test_protocol_names_say_when_modified():
    assert make_config("small").protocol == "small"
    assert make_config("small", epochs=1.0, seed=3).protocol == "small"
    # the micro-batch split is not the recipe: 64 x 1 takes the same steps as 16 x 4 ...
    assert make_config("full", batch_size=64, grad_accum=1).protocol == "full"
    assert make_config("small", batch_size=4, grad_accum=4).protocol == "small"
    # ... but the number of sentences per optimizer step is
    assert make_config("full", batch_size=32, grad_accum=1).protocol == "full-b32"
    assert make_config("small", grad_accum=4).protocol == "small-b64"
    with pytest.raises(ValueError, match="unknown training option"):
        make_config("full", learning_rte=1e-3)


@pytest.mark.parametrize("field, value", [("batch_size", 0), ("epochs", -1.0), ("seed", -2), ("config", "dense"),
                                          ("granularity", "col"), ("train_size", 0), ("paper_padding", "no"),
                                          ("model", 3)])
def test_bad_train_config(field, value):
    with pytest.raises(ValueError, match=field if field not in ("config",) else "unknown configuration"):
        TrainConfig(**{field: value})


def test_cli_train_and_grid(sst2_dir, tmp_path, capsys):
    common = ["--model", "tiny-bert", "--data", str(sst2_dir), "--output", str(tmp_path), "--protocol", "small",
              "--epochs", "1", "--batch-size", "16", "--no-progress"]
    assert cli.main(["train", "--config", "uniform_sparse", "--seed", "1", *common]) == 0
    assert cli.main(["grid", "--configs", "baseline,uniform_sparse", "--seeds", "1", *common]) == 0
    out = capsys.readouterr().out
    assert "uniform_sparse seed 1: skipped, finished run" in out and "baseline seed 1: starting" in out
    assert cli.main(["train", "--config", "uniform_sparse", "--seed", "1", *common]) == 2
    assert "holds a finished run; pass --overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["train", "--config", "nope"], "unknown configuration 'nope'"),
    (["train", "--data", "/no/such/folder", "--output", "{out}"], "/no/such/folder does not exist"),
    (["train", "--model", "./no-model-here", "--data", "{data}"], "model folder ./no-model-here does not exist"),
    (["grid", "--seeds", "a-b"], "--seeds must look like"),
    (["train", "--granularity", "column"], "granularity must be one of"),
])
def test_cli_user_errors_are_one_line(argv, message, capsys, sst2_dir, tmp_path):
    argv = [a.replace("{data}", str(sst2_dir)).replace("{out}", str(tmp_path)) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unwritable_output(sst2_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = make_config("small", model="tiny-bert", data=str(sst2_dir), output=str(blocker / "runs"), progress=False)
    with pytest.raises(OSError, match="not writable"):
        train(cfg)


def test_corrupt_model_folder_is_one_clear_error(tmp_path, sst2_dir, capsys):
    bad = tmp_path / "model"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    assert cli.main(["train", "--model", str(bad), "--data", str(sst2_dir), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"could not load model '{bad}'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing half-written
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["train", "--model", str(empty), "--data", str(sst2_dir)]) == 2
    assert "has no config.json" in capsys.readouterr().err


def test_cli_unwritable_output(tmp_path, sst2_dir, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["train", "--model", "tiny-bert", "--data", str(sst2_dir), "--output", str(blocker / "x")]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_unknown_hub_model_offline_is_one_clear_error(tmp_path, sst2_dir, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["train", "--model", "no-such-org/no-such-model", "--data", str(sst2_dir),
                     "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    # issue 27: offline, an unknown name fails before any load, listing the short names
    assert "unknown model 'no-such-org/no-such-model'" in err and "minilm" in err and "offline" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
