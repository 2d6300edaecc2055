"""A run killed mid-training (SIGTERM or SIGKILL) resumes and ends exactly like an uninterrupted one."""

import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import synthetic_rows, write_tsv


@pytest.fixture(scope="module")
def bigger_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sst2big")
    write_tsv(folder / "train.tsv", synthetic_rows(800, 11))
    write_tsv(folder / "dev.tsv", synthetic_rows(40, 12))
    return folder


def command(data, output):
    return [sys.executable, "-m", "crisp.study.cli", "train", "--model", "tiny-bert", "--config", "aggressive_sparse",
            "--seed", "3", "--data", str(data), "--output", str(output), "--protocol", "small", "--epochs", "2",
            "--batch-size", "4", "--grad-accum", "2", "--save-steps", "10", "--logging-steps", "5", "--no-progress"]


def run_dir(output):
    return output / "tiny-bert" / "small-e2-b8" / "aggressive_sparse" / "seed-3"


def outputs(folder):
    metrics = json.loads((folder / "metrics.json").read_text())
    keep = {k: metrics[k] for k in ("dev_accuracy", "dev_loss", "optimizer_steps", "layer_ratio_final")}
    return keep, pd.read_csv(folder / "predictions_dev.csv"), pd.read_csv(folder / "layer_sparsity.csv")


@pytest.fixture(scope="module")
def uninterrupted(bigger_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    subprocess.run(command(bigger_data, out), check=True, capture_output=True, timeout=600)
    return outputs(run_dir(out))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_run_resumes_to_the_same_result(sig, bigger_data, tmp_path, uninterrupted):
    proc = subprocess.Popen(command(bigger_data, tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = run_dir(tmp_path) / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not list(ckpts.glob("checkpoint-20/crisp_state.json")):
        assert proc.poll() is None, "run ended before it could be interrupted"
        time.sleep(0.02)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert not (run_dir(tmp_path) / "metrics.json").exists()
    resumed = subprocess.run(command(bigger_data, tmp_path), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    metrics, preds, layers = outputs(run_dir(tmp_path))
    assert metrics == uninterrupted[0]
    pd.testing.assert_frame_equal(preds, uninterrupted[1])
    pd.testing.assert_frame_equal(layers, uninterrupted[2])
