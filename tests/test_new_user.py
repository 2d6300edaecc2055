"""What a new user meets (issue 27): fast, clear failures and no quiet states."""

import re
import socket
import tempfile
import time
import tomllib
from pathlib import Path

import pytest

import crisp
from crisp.study import bench, cli, models
from crisp.study.train import TrainConfig, make_config, train

ROOT = Path(__file__).resolve().parents[1]


def _tiny(sst2_dir, out, **changes):
    return make_config("small", **{**dict(model="tiny-bert", data=str(sst2_dir), output=str(out), train_size=32,
                                          progress=False), **changes})


# --- fast, clear failures ----------------------------------------------------------------------------------------


def _no_network(*args, **kwargs):
    raise AssertionError("a network call")


def test_unknown_model_offline_fails_before_the_data_and_the_network(sst2_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setattr("crisp.study.data.load_sst2", _no_network)
    started = time.perf_counter()
    assert cli.main(["train", "--model", "minilmm", "--data", str(sst2_dir), "--output", str(tmp_path)]) == 2
    assert time.perf_counter() - started < 5
    err = capsys.readouterr().err
    assert "unknown model 'minilmm'" in err and "minilm, distilbert, tiny-distilbert, tiny-bert" in err
    assert "HF_HUB_OFFLINE is set" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_unknown_model_without_network_fails_at_once(monkeypatch):
    for name in models.OFFLINE_ENV:
        monkeypatch.delenv(name, raising=False)

    def refused(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refused)
    with pytest.raises(models.ModelError, match="the hub is unreachable: Network is unreachable"):
        models.resolve("someone/not-cached-model")
    with pytest.raises(models.ModelError, match="model 'distilbert' is the hub's distilbert-base-uncased"):
        models.resolve("distilbert")


def test_train_defaults_are_minilm_and_seed_0():
    args = cli.build_parser().parse_args(["train"])
    cfg = make_config(args.protocol, **cli._overrides(args))
    assert (cfg.model, cfg.seed) == ("minilm", 0) and TrainConfig().seed == 0


def test_reversed_seed_range_is_named(capsys):
    assert cli.main(["grid", "--seeds", "3-1"]) == 2
    assert "--seeds range 3-1 is reversed" in capsys.readouterr().err


def test_unwritable_output_fails_before_the_model_loads(sst2_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("crisp.study.models.load", _no_network)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(crisp.study.results.OutputError, match="is not writable"):
        train(_tiny(sst2_dir, blocker / "runs"))


# --- quiet states made visible -----------------------------------------------------------------------------------


def test_too_short_to_log_warns_and_no_progress_silences_transformers(sst2_dir, tmp_path, capsys):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    try:
        train(_tiny(sst2_dir, tmp_path, train_size=16, logging_steps=50))  # one optimizer step
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()
    err = capsys.readouterr().err
    assert "warning: 1 optimizer step(s), fewer than logging_steps=50" in err and "layer_sparsity.csv is empty" in err


class Stop(Exception):
    pass


def test_resume_says_so_and_one_whole_checkpoint_is_kept(sst2_dir, tmp_path, monkeypatch, capsys):
    from crisp.study.trainer import STATE_FILE, StateSaver

    cfg = _tiny(sst2_dir, tmp_path, batch_size=4, save_steps=2, logging_steps=2)
    saved = StateSaver.on_save

    def stop_at_4(self, args, state, control, **kwargs):
        saved(self, args, state, control, **kwargs)
        if state.global_step == 4:
            raise Stop

    monkeypatch.setattr(StateSaver, "on_save", stop_at_4)
    with pytest.raises(Stop):
        train(cfg)
    left = sorted(p.name for p in (cfg.folder / "checkpoints").iterdir())
    assert left == ["checkpoint-4"] and (cfg.folder / "checkpoints" / "checkpoint-4" / STATE_FILE).is_file()
    monkeypatch.setattr(StateSaver, "on_save", saved)
    capsys.readouterr()
    train(cfg)
    assert "resuming from step 4" in capsys.readouterr().out


def test_one_version_number():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "crisp.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", crisp.__version__)


def test_readme_names_every_extra_and_the_papermill_output():
    readme = (ROOT / "README.md").read_text()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    listed = readme.split("Extras:", 1)[1].split("\n\n", 1)[0]
    assert all(f"`{name}`" in listed for name in extras), sorted(extras)
    assert "papermill notebooks/run.ipynb" in readme and "-p output" in readme


def test_summary_help_says_each_default_once(capsys):
    with pytest.raises(SystemExit):
        cli.main(["summary", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    runs = help_text.split("options:", 1)[1].split("--runs RUNS", 1)[1].split("--model", 1)[0]
    assert runs.count("default") == 1


# --- smoke files stay out of the results -------------------------------------------------------------------------


def test_bench_quick_writes_to_a_temporary_folder_and_is_no_measurement(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["bench", "--shapes", "tiny", "--lengths", "", "--quick", "--repeats", "1", "--warmup", "0"]) == 0
    written = Path(re.search(r"written: (\S+)", capsys.readouterr().out).group(1))
    assert not (tmp_path / "data").exists()
    assert written.is_file() and written.is_relative_to(tempfile.gettempdir())
    assert not bench.is_measurement(written) and bench.measurement_files(written.parent) == []
    assert len(bench.measurement_files(ROOT / "data" / "bench")) >= 3  # the committed measurements still count
