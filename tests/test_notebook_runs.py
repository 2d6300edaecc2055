"""The papermill run notebook: parameter checks, a run through it, failures that name their cell, the CLI."""

import dataclasses
import json
import os
import re

import nbformat
import pytest

from crisp.study import cli
from crisp.study.data import DataError
from crisp.study.notebook_runs import (NOTEBOOK, NotebookRunError, check_parameters, notebook_parameters, repo_root,
                                       run_notebook)
from crisp.study.results import RunExistsError, is_finished
from crisp.study.train import TrainConfig, make_config

NOTEBOOK_DEFAULTS = dict(model="tiny-distilbert", config="baseline", seed=0, protocol="small", data=None,
                         output=None, train_size=200, epochs=1.0, batch_size=16, grad_accum=4, granularity="row",
                         paper_padding=False, overwrite=False, progress=False, logging_steps=1, options={})


def tiny(sst2_dir, out, **changes):
    return make_config("small", **{**dict(model="tiny-bert", data=str(sst2_dir), output=str(out), epochs=1.0,
                                          batch_size=16, grad_accum=2, logging_steps=1, progress=False), **changes})


# --- the notebook file ----------------------------------------------------------------------------


def test_template_parameters_match_check_parameters():
    """The parameters cell holds literals for exactly the names check_parameters is given."""
    nb = nbformat.read(repo_root() / NOTEBOOK, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    namespace = {}
    exec(tagged[0].source, namespace)  # literals only: nothing is imported or called
    namespace.pop("__builtins__")
    assert namespace == NOTEBOOK_DEFAULTS
    assert not [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]


# --- check_parameters ---------------------------------------------------------------------------


@pytest.fixture
def params(sst2_dir, tmp_path):
    return {**NOTEBOOK_DEFAULTS, "data": str(sst2_dir), "output": str(tmp_path)}


def test_check_parameters_gives_make_config(params, sst2_dir, tmp_path):
    cfg = check_parameters(**params)
    assert cfg == make_config("small", model="tiny-distilbert", config="baseline", seed=0, data=str(sst2_dir),
                              output=str(tmp_path), train_size=200, epochs=1.0, batch_size=16, grad_accum=4,
                              logging_steps=1, progress=False)
    assert cfg.protocol == "small-n200-b64"  # 200 sentences, 16 x 4: not the preset's 4,000 at 16 x 1
    assert check_parameters(**{**params, "train_size": 4000, "grad_accum": 1}).protocol == "small"
    assert check_parameters(**{**params, "epochs": 1}).epochs == 1.0 and isinstance(cfg.epochs, float)
    with_options = check_parameters(**{**params, "options": {"learning_rate": 1e-5, "max_length": 128}})
    assert with_options.learning_rate == 1e-5 and with_options.max_length == 128


def test_every_train_config_field_type_is_checked():
    from crisp.study.notebook_runs import _EXPECTED

    assert {str(f.type) for f in dataclasses.fields(TrainConfig)} <= set(_EXPECTED)


@pytest.mark.parametrize("name, value, expected", [
    ("seed", "3", "an integer"),
    ("seed", True, "an integer"),
    ("seed", 1.0, "an integer"),
    ("epochs", "1", "a number"),
    ("epochs", None, "a number"),
    ("train_size", 2.5, "an integer or None"),
    ("batch_size", "16", "an integer"),
    ("paper_padding", 1, "True or False"),
    ("overwrite", "no", "True or False"),
    ("progress", None, "True or False"),
    ("model", 3, "a string"),
    ("config", None, "a string"),
    ("data", 5, "a string or None"),
    ("output", ["runs"], "a string or None"),
])
def test_wrong_types_name_parameter_value_and_expectation(params, name, value, expected):
    with pytest.raises(ValueError) as info:
        check_parameters(**{**params, name: value})
    message = str(info.value)
    assert f"parameter {name} = {value!r}" in message and expected in message
    assert "\n" not in message


@pytest.mark.parametrize("changes, match", [
    ({"config": "nope"}, "unknown configuration 'nope'"),
    ({"granularity": "col"}, "granularity must be one of"),
    ({"protocol": "tiny"}, "parameter protocol = 'tiny': expected one of full, small"),
    ({"seed": -1}, "seed must be a non-negative integer"),
    ({"epochs": float("nan")}, "epochs must be a positive number"),
    ({"model": ""}, "parameter model = ''"),
    ({"options": {"colour": 1}}, "unknown parameter colour = 1"),
    ({"options": {"seed": 1}}, "options sets seed"),
    ({"options": ["lr"]}, "parameter options = \\['lr'\\]"),
    ({"options": {"learning_rate": "fast"}}, "parameter learning_rate = 'fast'"),
])
def test_invalid_values(params, changes, match):
    with pytest.raises(ValueError, match=match):
        check_parameters(**{**params, **changes})


def test_missing_data_folder(params, tmp_path, monkeypatch):
    with pytest.raises(DataError, match="parameter data = .*nowhere.* is not a folder"):
        check_parameters(**{**params, "data": str(tmp_path / "nowhere")})
    monkeypatch.setenv("CRISP_SST2_DIR", str(tmp_path / "gone"))
    with pytest.raises(DataError, match=r"parameter data = None, so \$CRISP_SST2_DIR = .*gone"):
        check_parameters(**{**params, "data": None})
    assert check_parameters(**{**params, "data": "hub"}).data == "hub"  # not loaded here


def test_output_none_is_a_fresh_temporary_folder(params, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    with pytest.raises(ValueError):
        check_parameters(**{**params, "output": None, "seed": "x"})
    assert not list(tmp_path.glob("crisp-run-*"))  # no folder for invalid parameters
    a, b = (check_parameters(**{**params, "output": None}) for _ in range(2))
    assert a.output != b.output and all(os.path.isdir(c.output) and not os.listdir(c.output) for c in (a, b))
    assert os.path.dirname(a.output) == str(tmp_path)


@pytest.mark.parametrize("changes", [
    {},
    {"config": "aggressive_sparse", "granularity": "head", "paper_padding": True, "seed": 7},
    {"learning_rate": 3e-5, "max_length": 64, "save_steps": 5, "group_by_length": False},
    {"train_size": 4000, "epochs": 1.0},
])
def test_notebook_parameters_reproduce_the_config(sst2_dir, tmp_path, changes):
    cfg = tiny(sst2_dir, tmp_path, **changes)
    params = notebook_parameters(cfg)
    assert params["protocol"] == "small" and set(params["options"]).isdisjoint(params)
    assert check_parameters(**params) == cfg


def test_notebook_parameters_make_paths_absolute(sst2_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = make_config("full", model="tiny-bert", data=os.path.relpath(sst2_dir), output="runs")
    params = notebook_parameters(cfg)
    assert params["output"] == str(tmp_path / "runs") and params["data"] == str(sst2_dir)
    assert params["protocol"] == "full" and params["train_size"] is None
    assert check_parameters(**params).folder == tmp_path / cfg.folder


def test_unreproducible_config_is_refused_before_running(sst2_dir, tmp_path):
    cfg = tiny(sst2_dir, tmp_path)
    cfg.protocol = "small"  # past TrainConfig's check that the name is the recipe (small-b32), as a hand edit could be
    with pytest.raises(ValueError, match="cannot reproduce"):
        run_notebook(cfg)
    assert not list(tmp_path.iterdir())


# --- runs through the notebook ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def notebook_run(sst2_dir, tmp_path_factory):
    cfg = tiny(sst2_dir, tmp_path_factory.mktemp("runs"), config="light_sparse", seed=3)
    return cfg, run_notebook(cfg)


def test_run_notebook_writes_run_and_executed_copy(notebook_run):
    cfg, folder = notebook_run
    assert folder == cfg.folder and is_finished(folder)
    assert sorted(p.name for p in folder.iterdir()) == [
        "attention_stats.csv", "history.csv", "layer_sparsity.csv", "metrics.json", "predictions_dev.csv",
        "predictions_test.csv", "run.ipynb"]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["train_config"] == dataclasses.asdict(cfg)
    assert metrics["model"] == "tiny-bert" and metrics["config"] == "light_sparse" and metrics["seed"] == 3

    nb = nbformat.read(folder / "run.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'config = "light_sparse"' in injected[0].source
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "run folder: <output>/tiny-bert/small-b32/light_sparse/seed-3" in text
    assert "train_size: 96" in text and "dev accuracy" in text
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_finished_run_is_not_run_again(notebook_run):
    cfg, folder = notebook_run
    with pytest.raises(RunExistsError, match="--overwrite"):
        run_notebook(cfg)
    assert not (folder / "run-failed.ipynb").exists()


@pytest.mark.parametrize("field, value, match", [
    ("seed", "3", r"parameter seed = '3' \(str\): expected an integer"),
    ("config", "nope", r"unknown configuration 'nope'"),
])
def test_bad_parameter_fails_in_the_validation_cell(sst2_dir, tmp_path, field, value, match):
    cfg = tiny(sst2_dir, tmp_path)
    setattr(cfg, field, value)  # past TrainConfig's own checks, as a hand-edited notebook could be
    with pytest.raises(NotebookRunError) as info:
        run_notebook(cfg)
    message = str(info.value)
    assert "\n" not in message
    # markdown 0, parameters 1, injected parameters 2, validation 3
    assert f"{cfg.folder / 'run-failed.ipynb'}: cell 3 (In [3]) raised ValueError: " in message
    assert re.search(match, message)
    assert sorted(p.name for p in cfg.folder.iterdir()) == ["run-failed.ipynb"]  # no finished run
    assert not list(tmp_path.glob("**/metrics.json"))
    nb = nbformat.read(cfg.folder / "run-failed.ipynb", as_version=4)
    [error] = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert error.ename == "ValueError" and re.search(match, error.evalue)
    assert "\n" not in error.evalue and len(error.traceback) <= 4  # the cell's raise only, no crisp frames


def test_cli_grid_with_notebooks(sst2_dir, tmp_path, capsys):
    argv = ["grid", "--notebooks", "--configs", "baseline", "--seeds", "0", "--model", "tiny-bert",
            "--protocol", "small", "--train-size", "32", "--batch-size", "16", "--grad-accum", "1",
            "--data", str(sst2_dir), "--output", str(tmp_path), "--no-progress"]
    assert cli.main(argv) == 0
    folder = tmp_path / "tiny-bert" / "small-n32" / "baseline" / "seed-0"
    assert is_finished(folder) and (folder / "run.ipynb").is_file() and not (folder / "run-failed.ipynb").exists()
    assert "1 run(s) done" in capsys.readouterr().out
    assert cli.main(argv) == 0 and "skipped" in capsys.readouterr().out  # finished: not run again
