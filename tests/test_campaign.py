"""``crisp campaign``: the payload, the packed output, and the CPU rehearsal of every stage (``--dry-run``)."""

import json
import os
import shutil
import tarfile
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from crisp.study import campaign, campaign_pack, campaign_payload, models
from crisp.study.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fake_minilm(tmp_path_factory):
    """A MiniLM-shaped folder (MiniLM's tokenizer files, a tiny random BERT's float32 weights): prepares in a second."""
    folder = tmp_path_factory.mktemp("minilm")
    net, tokenizer = models.tiny("tiny-bert")
    net.save_pretrained(folder, safe_serialization=True)
    for name in campaign_payload.MODEL_FILES:
        if not (folder / name).exists():
            shutil.copy2(Path(models.minilm_path()) / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def payload(tmp_path_factory, fake_minilm, sst2_dir):
    env = os.environ.get(models.MINILM_ENV)
    os.environ[models.MINILM_ENV] = str(fake_minilm)
    try:
        to = tmp_path_factory.mktemp("payload") / ".campaign"
        campaign_payload.prepare(to, data=str(sst2_dir), wheels=False, repo=REPO, log=lambda text: None)
    finally:
        if env is None:
            os.environ.pop(models.MINILM_ENV, None)
        else:
            os.environ[models.MINILM_ENV] = env
    return to


def test_weights_round_trip_float16_and_load_in_float32(tmp_path, fake_minilm, monkeypatch):
    packed = tmp_path / "w.f16z"
    facts = campaign_payload.pack_weights(fake_minilm / "model.safetensors", packed)
    assert 0 < facts["max_relative_rounding"] < 2**-10
    folder = tmp_path / "restored"
    folder.mkdir()
    for name in campaign_payload.MODEL_FILES:
        shutil.copy2(fake_minilm / name, folder / name)
    campaign_payload.unpack_weights(packed, folder / "model.safetensors")
    monkeypatch.setenv(models.MINILM_ENV, str(folder))
    net, _ = models.load("minilm", seed=0)
    assert {p.dtype for p in net.parameters()} == {torch.float32}
    from safetensors.torch import load_file

    original = load_file(str(fake_minilm / "model.safetensors"))
    name = "bert.encoder.layer.0.attention.self.query.weight"
    got = dict(net.named_parameters())[name].detach()
    assert torch.equal(got, original[name].half().float())  # float16-rounded, read back in float32
    assert not torch.equal(got, original[name])


def test_minilm_env_must_name_a_checkpoint_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(models.MINILM_ENV, str(tmp_path))
    with pytest.raises(models.ModelError, match="CRISP_MINILM_DIR"):
        models.minilm_path()


def test_unpack_refuses_damaged_parts(tmp_path):
    runs = tmp_path / "runs" / "m" / "full" / "baseline" / "seed-0"
    runs.mkdir(parents=True)
    (runs / "metrics.json").write_text("{}")
    out = tmp_path / "out"
    pack = campaign_pack.pack_runs(tmp_path / "runs", out)
    campaign_pack.write_manifest(out, [pack], {})
    part = out / "runs.tar.gz.00"
    part.write_bytes(part.read_bytes()[:-1] + b"x")
    with pytest.raises(campaign_pack.PackError, match="checksum"):
        campaign_pack.unpack([out], tmp_path / "data" / "runs", tmp_path / "data" / "bench")
    assert not (tmp_path / "data" / "runs").exists()


def test_no_run_starts_after_the_deadline():
    from crisp.study.train import make_config

    cfg = make_config("small", model="tiny-bert", seed=0, output="/nonexistent")
    report = campaign.train_within([(cfg, False)], deadline=time.monotonic() - 1, workers=2, run_seconds=1.0,
                                   log=lambda text: None)
    assert report == {"done": [], "failed": [], "stopped": [], "not_started": [f"{cfg.label} seed 0"]}


def test_dry_run_packs_finished_recomputable_runs_within_the_limits(tmp_path, payload, monkeypatch):
    for key in campaign.CHILD_ENV:  # the campaign sets these for its processes; restore them afterwards
        monkeypatch.setenv(key, os.environ.get(key, ""))
        if not os.environ[key]:
            monkeypatch.delenv(key)
    out, work = tmp_path / "out", tmp_path / "work"
    started = time.monotonic()
    code = main(["campaign", "--dry-run", "--out", str(out), "--work", str(work), "--payload", str(payload),
                 "--budget-min", "4", "--limit-min", "8"])  # generous: CI machines are slow and shared
    seconds = time.monotonic() - started
    assert code == 0, (out / "campaign.log").read_text()
    files = sorted(out.iterdir())
    assert len(files) <= 8 and all(f.stat().st_size < 16 * 2**20 for f in files)
    assert not [f for f in files if f.name.endswith(".partial")]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["device_tests"] == "passed"
    runs_pack = next(p for p in manifest["packs"] if p["kind"] == "runs")
    assert runs_pack["runs"] and set(manifest["training"]["done"]) >= {"baseline-bf16 seed 0"}

    # after the lease: unpack into a results tree, and every run there is finished and recomputable
    data = tmp_path / "data"
    report = campaign_pack.unpack([out], data / "runs", data / "bench")
    assert sorted(report["added"]) == sorted(runs_pack["runs"])
    assert {Path(b).suffix for b in report["bench"]} == {".csv", ".json"}
    for rel in report["added"]:
        folder = data / "runs" / rel
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["precision"] == "bf16"
        assert not (folder / "checkpoints").exists() and not list(folder.glob(".*"))
        for split in ("dev", "test"):
            pred = pd.read_csv(folder / f"predictions_{split}.csv")
            assert (pred["pred"] == pred["label"]).mean() == pytest.approx(metrics[f"{split}_accuracy"], abs=0)
    notebook = [rel for rel in report["added"] if (data / "runs" / rel / "run.ipynb").is_file()]
    assert notebook, "the papermill run notebook's run is missing"
    assert any("paperpad" in rel for rel in report["added"]), "no pad-to-512 run was packed"
    with tarfile.open(out / "bench.tar.gz") as tar:
        assert any(n.endswith("-long.csv") for n in tar.getnames())
    again = campaign_pack.unpack([out], data / "runs", data / "bench", log=lambda text: None)
    assert again["added"] == [] and sorted(again["kept"]) == sorted(runs_pack["runs"])
    print(f"dry run: {seconds:.0f} s")


@pytest.mark.slow
def test_real_payload_fits_one_call(tmp_path, monkeypatch):
    """MiniLM's real weights (float16, byte planes) and SST-2 with the working tree stay under 64 MiB, leaving room
    for the wheels (~4.4 MiB, downloaded by `crisp campaign-prepare`, not here)."""
    monkeypatch.delenv(models.MINILM_ENV, raising=False)
    sst2 = os.environ.get("CRISP_SST2_DIR")
    if not sst2:
        pytest.skip("needs $CRISP_SST2_DIR (the real SST-2 copy)")
    manifest = campaign_payload.prepare(tmp_path / ".campaign", data=sst2, wheels=False, repo=REPO, log=lambda t: None)
    assert manifest["travel_bytes"] + 5 * 2**20 < campaign_payload.CARRY_LIMIT
    assert manifest["weights"]["max_relative_rounding"] < 2**-10
