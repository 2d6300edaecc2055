"""A protocol name that is the recipe: naming, the committed runs, grid skips and summary pairing (issue 27)."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from crisp.study import cli, grid, recipe, results
from crisp.analysis import report, summary
from crisp.study.train import PROTOCOLS, TrainConfig, make_config, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("preset, changes, name", [
    ("small", {}, "small"),
    ("small", {"train_size": 200, "grad_accum": 4}, "small-n200-b64"),  # the run notebook's defaults
    ("small", {"train_size": 200}, "small-n200"),  # the same size at 16 x 1: another recipe, another folder
    ("small", {"batch_size": 4, "grad_accum": 4}, "small"),  # 16 per step either way: the split is not the recipe
    ("full", {"batch_size": 64, "grad_accum": 1}, "full"),  # README: micro-batching is not part of the recipe
    ("full", {"epochs": 1.0, "learning_rate": 3e-5}, "full-e1-lr3e-05"),
    ("n500", {"data_seed": 1}, "n500-ds1"),
    ("small", {"max_length": 128, "weight_decay": 0.01, "warmup_steps": 10, "max_grad_norm": 0.5,
               "group_by_length": False}, "small-len128-wd0.01-wu10-clip0.5-ungrouped"),
])
def test_protocol_name_spells_out_what_differs_from_the_preset(preset, changes, name):
    assert make_config(preset, **changes).protocol == name


def test_what_the_label_carries_stays_out_of_the_protocol_name():
    cfg = make_config("small", precision="bf16", config="label_smoothing", label_smoothing=0.2, paper_padding=True)
    assert cfg.protocol == "small" and cfg.label == "label_smoothing-paperpad-ls0.2-bf16"


def test_step_sentences_count_every_process(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert make_config("small", batch_size=8).protocol == "small"  # 8 x 1 x 2 processes = 16
    assert make_config("small").protocol == "small-b32"


def test_a_protocol_that_does_not_name_its_recipe_is_refused():
    with pytest.raises(ValueError, match="protocol 'small' does not name this recipe, which is 'small-nall-e3-b64'"):
        TrainConfig(protocol="small")


def test_every_committed_run_keeps_its_folder():
    """Each metrics.json under data/runs: its recorded recipe gives back its folder's protocol name, and its label."""
    found = sorted((ROOT / "data" / "runs").glob("*/*/*/seed-*/metrics.json"))
    assert len(found) >= 88
    for path in found:
        m = json.loads(path.read_text())
        folder_protocol, folder_label = path.parts[-4], path.parts[-3]
        settings = m["train_config"]
        assert recipe.protocol_name(recipe.preset_of(folder_protocol), settings, m.get("world_size") or 1) \
            == folder_protocol == m["protocol"], path
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        rebuilt = make_config(recipe.preset_of(folder_protocol),
                              **{k: v for k, v in settings.items() if k in known and k != "protocol"})
        assert (rebuilt.protocol, rebuilt.label) == (folder_protocol, folder_label), path


# --- runs of different recipes: never skipped as done, never paired ---------------------------------------------


def _tiny(sst2_dir, out, **changes):
    return make_config("small", **{**dict(model="tiny-bert", data=str(sst2_dir), output=str(out), train_size=32,
                                          logging_steps=1, progress=False), **changes})


@pytest.fixture(scope="module")
def runs(sst2_dir, tmp_path_factory):
    """Three tiny runs: baseline seed 0 and uniform_sparse seed 1 on 32 sentences, uniform_sparse seed 0 on 48."""
    out = tmp_path_factory.mktemp("runs")
    return {"baseline-0": train(_tiny(sst2_dir, out)),
            "uniform-1": train(_tiny(sst2_dir, out, config="uniform_sparse", seed=1)),
            "uniform-0-n48": train(_tiny(sst2_dir, out, config="uniform_sparse", train_size=48))}


def _tree(root, runs, *names, into="small-n32"):
    """A results tree of copies of ``names``, each moved into protocol folder ``into`` (as the old
    ``small-custom`` naming put every changed recipe into one folder)."""
    for name in names:
        source = runs[name]
        target = root / "tiny-bert" / into / source.parts[-2] / source.parts[-1]
        shutil.copytree(source, target)
        metrics = json.loads((target / "metrics.json").read_text())
        metrics["protocol"] = metrics["train_config"]["protocol"] = into
        (target / "metrics.json").write_text(json.dumps(metrics))
    return root


def test_different_recipes_get_different_folders(runs):
    assert runs["baseline-0"].parts[-3] == "small-n32" and runs["uniform-0-n48"].parts[-3] == "small-n48"


def test_summary_refuses_to_pair_runs_of_different_recipes(runs, tmp_path):
    root = _tree(tmp_path / "runs", runs, "baseline-0", "uniform-0-n48", into="small-custom")
    sel = report.select(root, model="tiny-bert", protocol="small-custom")
    assert sel.seeds == [0]  # paired by seed: without the recipe check they would be compared
    with pytest.raises(recipe.RecipeMismatchError, match=r"train_size 48 vs 32"):
        summary.compute(sel)


def test_grid_does_not_skip_a_finished_run_of_another_recipe(runs, sst2_dir, tmp_path):
    root = _tree(tmp_path / "runs", runs, "uniform-0-n48")
    cfg = _tiny(sst2_dir, root, config="uniform_sparse")
    assert results.is_finished(cfg.folder)
    said = []
    outcomes, todo = grid.triage([cfg], said.append)
    assert not todo and [o.status for o in outcomes] == ["failed"]
    assert "another recipe (train_size 48 vs 32" in said[0] and "--overwrite" in said[0]
    same = _tiny(sst2_dir, tmp_path / "other", config="uniform_sparse", train_size=48)
    shutil.copytree(runs["uniform-0-n48"], same.folder)
    outcomes, todo = grid.triage([same], said.append)
    assert [o.status for o in outcomes] == ["skipped"] and not todo


def test_summary_says_what_it_sees(runs, tmp_path, capsys):
    root = _tree(tmp_path / "runs", runs, "baseline-0", "uniform-1")
    sel = report.select(root, model="tiny-bert", protocol="small-n32")
    text = report.coverage(sel)
    assert "baseline: finished seeds 0" in text and "uniform_sparse: finished seeds 1" in text
    assert "light_sparse: no finished run" in text
    assert "no seed is finished for every configuration yet" in text
    assert cli.main(["summary", "--runs", str(root), "--model", "tiny-bert", "--protocol", "small-n32"]) == 2
    captured = capsys.readouterr()
    assert "baseline: finished seeds 0" in captured.out
    assert "nothing to summarise: no seed of model tiny-bert, protocol small-n32" in captured.err
    assert "combinations" not in captured.err


def test_summary_names_the_seeds_it_used_and_left_out(runs, tmp_path):
    root = _tree(tmp_path / "runs", runs, "baseline-0", "uniform-1")
    copy = root / "tiny-bert" / "small-n32" / "baseline" / "seed-1"
    shutil.copytree(runs["baseline-0"], copy)  # baseline seed 1 (a copy of seed 0 under another seed)
    metrics = json.loads((copy / "metrics.json").read_text())
    (copy / "metrics.json").write_text(json.dumps({**metrics, "seed": 1}))
    text = report.coverage(report.select(root, model="tiny-bert", protocol="small-n32"))
    assert "baseline: finished seeds 0, 1" in text
    assert "used: seeds 1 (finished for every configuration present)" in text and "left out: seeds 0" in text
