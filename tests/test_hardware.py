"""Runs of different hardware (device type x precision) are separate grids: never paired, never mixed."""

import numpy as np
import pandas as pd

from crisp.analysis import report
from crisp.study import results
from crisp.configs import CONFIGS


def fake_run(root, config, seed, correct, precision=None, device_type=None, n=40):
    label = config + (f"-{precision}" if precision and precision != "fp32" else "")
    folder = results.run_dir(root, "minilm", "full", label, seed)
    labels = np.arange(n) % 2
    preds = labels.copy()
    preds[correct:] = 1 - preds[correct:]
    results.write_csv(folder / "predictions_dev.csv",
                      pd.DataFrame({"idx": range(n), "label": labels, "pred": preds, "prob_pos": preds * 0.9}))
    results.write_csv(folder / "history.csv", pd.DataFrame({"step": [1], "train_loss": [0.5]}))
    m = {"model": "minilm", "protocol": "full", "config": label, "paper_config": config, "seed": seed,
         "dev_accuracy": correct / n, "realized_sparsity_dev": 0.5,
         "device": "NVIDIA H100 80GB HBM3" if device_type == "cuda" else "cpu: x86_64, 2 threads"}
    if precision:
        m["precision"] = precision
    if device_type:
        m["device_type"] = device_type
    results.write_json(folder / "metrics.json", m)


def test_hardware_of_old_and_new_runs():
    assert results.hardware({"device": "cpu: x86_64, 2 threads"}) == "cpu-fp32"  # written before it was recorded
    assert results.hardware({"device": "NVIDIA H100", "device_type": "cuda", "precision": "bf16"}) == "cuda-bf16"


def test_grids_of_different_hardware_are_never_mixed(tmp_path):
    for seed in range(2):  # an old-style CPU grid, seeds 0-1
        for i, config in enumerate(CONFIGS):
            fake_run(tmp_path, config, seed, 30 + i)
    for seed in range(3):  # a GPU bf16 grid, seeds 0-2 (the same seeds, other hardware)
        for i, config in enumerate(CONFIGS):
            fake_run(tmp_path, config, seed, 20 + i, precision="bf16", device_type="cuda")
    fake_run(tmp_path, "baseline", 5, 39, precision="fp32", device_type="cuda")  # a stray GPU fp32 run
    gpu = report.select(tmp_path)  # the larger complete grid
    assert gpu.hardware == "cuda-bf16" and gpu.n_seeds == 3 and len(gpu.metrics) == 12
    assert set(gpu.metrics["config"]) == set(CONFIGS)  # precision suffix taken off within the grid
    acc = report.accuracy_from_predictions(gpu)
    assert set(acc["accuracy"]) == {(20 + i) / 40 for i in range(4)}  # only GPU runs
    assert len(gpu.table("history.csv")) == 12
    cpu = report.select(tmp_path, hardware="cpu-fp32")
    assert cpu.n_seeds == 2 and set(report.accuracy_from_predictions(cpu)["accuracy"]) == {(30 + i) / 40 for i in range(4)}
    stray = report.select(tmp_path, hardware="cuda-fp32")
    assert len(stray.metrics) == 1 and not stray.is_complete
