"""The experiment's summary table: one selection's statistics, written once to ``data/summary/``.

``crisp summary`` computes them from the runs' per-sentence predictions (through :mod:`crisp.analysis.report`)
and writes one folder per model and protocol::

    data/summary/<model>/<protocol>/     (summary/ beside the runs root data/runs)
        runs.csv             the runs used: config, seed, accuracies from predictions, realized sparsity, commit
        main_table.csv       per configuration: dev and test accuracy (n, mean, std, sem, 95% CI), the paper's
        comparison_dev.csv   each sparse configuration minus baseline: paired over seeds, McNemar, Holm
        comparison_test.csv  the same on the held-out test split (when the runs have test predictions)
        correlation.csv      realized dev sparsity vs dev accuracy over all runs: Pearson (CI) and Spearman
        bootstrap.csv        each sparse configuration minus baseline per split: paired two-level bootstrap
                             (seeds and sentences) CI, p against zero and against its own claimed gain (Holm),
                             detectable differences (crisp.analysis.report.bootstrap_table)
        single_run.csv       one sparse run minus one baseline run: over all seed pairings and from a normal model
        single_run_pairs.csv every such pairing (dev)
        entropy_heads.csv    per head, paired differences from baseline in attention entropy (crisp.analysis.mechanism)
        dynamics.csv         paired differences in final training loss/accuracy, dev loss/accuracy, train-dev gap,
                             and the answer "regularization or underfitting?" per configuration
        layer_shape.csv      per configuration and layer: final target ratio and realized dev sparsity
        calibration_runs.csv per run (the four configurations and any standard-regularizer runs): accuracy, NLL,
                             Brier, ECE on dev and test, the temperature fitted on dev, test after it
        calibration.csv      each configuration minus baseline (and each sparse one minus each regularizer) in
                             those metrics, raw and temperature-scaled: paired t over seeds and the two-level
                             bootstrap, Holm (crisp.analysis.calibration_tables)
        verdict.md           the verdict generated from these numbers (crisp.analysis.verdict): a plain sentence, the
                             scope once, bullets (both tests, the claims with their own noise, power, fit)
        summary.json         label, seeds, detectable differences, single-run probabilities with no true
                             effect, the method reading, bootstrap B and seed, commit, versions; written last

The folder is replaced as a whole (written beside it, then renamed), so readers never see half of
one. The book reads these files, and :func:`check` recomputes every one of them from the
predictions: a summary that no longer matches the committed runs is an error, not a stale page.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import math
import os
import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import scipy

from . import calibration_tables, mechanism, report, stats
from ..study import results
from . import verdict as verdict_text

TABLES = ("runs", "main_table", "comparison_dev", "comparison_test", "correlation", "bootstrap", "single_run",
          "single_run_pairs", "entropy_heads", "dynamics", "layer_shape", "calibration_runs", "calibration")


class StaleSummaryError(ValueError):
    """The summary on disk differs from what the committed runs give; the message names the file."""


def default_root(runs=None) -> Path:
    """``summary/`` beside the runs root (:func:`crisp.analysis.report.runs_root`): ``data/summary`` for ``data/runs``."""
    return report.runs_root(runs).parent / "summary"


def folder(root, model: str, protocol: str, hardware: str = "cpu-fp32") -> Path:
    """``<root>/<model>/<protocol>``; a grid of other hardware than cpu-fp32 gets ``<protocol>-<hardware>``
    (e.g. ``full-cuda-bf16``), so the summaries of two hardware grids never overwrite each other."""
    return Path(root) / model / (protocol if hardware == "cpu-fp32" else f"{protocol}-{hardware}")


def compute(sel: report.Selection) -> dict:
    """Every table, the verdict and the headline numbers of ``sel``; see the module docstring."""
    if not len(sel.metrics):
        seen = [line.strip() for line in report.coverage(sel).splitlines()[1:-1]]
        raise ValueError(f"nothing to summarise: no seed of model {sel.model}, protocol {sel.protocol}, hardware "
                         f"{sel.hardware} is finished for every configuration yet ({'; '.join(seen)})")
    report.check_one_recipe(sel)  # never pair runs of different recipes
    splits = ["dev"] + (["test"] if _has_test(sel) else [])
    acc = {split: report.accuracy_from_predictions(sel, split) for split in splits}
    runs = sel.metrics.reindex(columns=["config", "seed", "realized_sparsity_dev", "step_batch", "git_commit",
                                        "device", "train_seconds"])
    for split in splits:
        runs = runs.merge(acc[split][["config", "seed", "accuracy"]].rename(columns={"accuracy": f"{split}_accuracy"}),
                          on=["config", "seed"], how="left")
    corr = stats.correlation(runs["realized_sparsity_dev"], runs["dev_accuracy"])
    comparisons = {split: report.comparison(sel, split) for split in splits}
    mdd = {split: report.detectable_difference(sel, split) for split in splits}
    boot = pd.concat([report.bootstrap_table(sel, split) for split in splits], ignore_index=True)
    single = pd.concat([report.single_run_table(sel, split) for split in splits], ignore_index=True)
    base_runs = int((sel.metrics["config"] == "baseline").sum())
    null = report.single_run_null(sel, "dev") if base_runs >= 4 else {}  # needs 1 baseline + 3 "sparse" runs
    dynamics = mechanism.dynamics_differences(sel)
    fit = dict(zip(dynamics["config"], dynamics["answer"]))
    reading = report.method_reading(sel)
    readings = readings_table(sel)
    calibration_runs = calibration_tables.run_scores(sel)
    calibration = calibration_tables.differences(sel, calibration_runs)
    verdict = verdict_text.verdict(boot, null, fit, model=sel.model, protocol=sel.protocol, seeds=sel.seeds,
                                   reading=verdict_text.reading_text(reading), experiment=sel.is_experiment,
                                   planned_seeds=report.PLANNED_SEEDS if sel.is_experiment else None,
                                   readings=readings, comparisons=comparisons, single=single,
                                   dynamics=dynamics, calibration=calibration)
    shape = mechanism.layer_shape(sel)
    out = {
        "runs": runs,
        "main_table": report.main_table(sel),
        "comparison_dev": comparisons["dev"],
        "comparison_test": comparisons.get("test", pd.DataFrame(columns=stats.COMPARISON_COLUMNS)),
        "correlation": pd.DataFrame([corr]),
        "bootstrap": boot,
        "single_run": single,
        "single_run_pairs": report.single_run_pairs(sel, "dev"),
        "entropy_heads": mechanism.entropy_differences(sel),
        "dynamics": dynamics,
        "layer_shape": shape,
        "calibration_runs": calibration_runs,
        "calibration": calibration,
        "verdict": verdict,
        "facts": {
            "model": sel.model, "protocol": sel.protocol, "label": sel.label, "n_seeds": sel.n_seeds,
            "seeds": sel.seeds, "n_runs": len(sel.metrics), "is_experiment": sel.is_experiment,
            "is_complete": sel.is_complete, "planned_seeds": report.PLANNED_SEEDS, "step_batch": sel.step_batch,
            "splits": splits, "detectable_difference": mdd,
            "bootstrap": {"B": report.BOOT_B, "seed": report.BOOT_SEED, "levels": "seeds and sentences, crossed"},
            "single_run_null": null, "method_reading": {**reading, "text": verdict_text.reading_text(reading)},
            "readings_used": readings is not None,
            "layer_shape": mechanism.describe_layers(shape),
            "pending_runs": [f"{r.config} seed {r.seed}" for r in sel.pending.itertuples()],
            "regularizer_runs": [f"{r.config} seed {r.seed}" for r in sel.regularizers.itertuples()],
        },
    }
    return out


def readings_table(sel: report.Selection) -> pd.DataFrame | None:
    """The padding study's ``padding/<model>/readings.csv`` beside the runs root, if it exists."""
    path = Path(sel.root).parent / "padding" / sel.model / "readings.csv"
    return pd.read_csv(path) if path.is_file() else None


def _has_test(sel: report.Selection) -> bool:
    found = sel.predictions("test")
    return bool(found) and len(found) == len(sel.metrics)


def write(sel: report.Selection, root=None) -> Path:
    """Compute the summary of ``sel`` and replace ``<root>/<model>/<protocol>/`` with it; returns that folder.

    ``root`` defaults to ``summary/`` beside the runs (:func:`default_root`)."""
    root = Path(root) if root is not None else default_root(sel.root)
    data = compute(sel)
    target = folder(root, sel.model, sel.protocol, sel.hardware)
    results.check_writable(target.parent)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.new-"))
    try:
        for name in TABLES:
            results.write_csv(staging / f"{name}.csv", data[name])
        (staging / "verdict.md").write_text(data["verdict"] + "\n", encoding="utf-8")
        results.write_json(staging / "summary.json", {
            **data["facts"],
            "computed_from": "per-sentence predictions of the runs in runs.csv (crisp.analysis.summary.compute)",
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": results.git_commit(),
            "python": platform.python_version(), "numpy": np.__version__, "pandas": pd.__version__,
            "scipy": scipy.__version__,
        })
        staging.chmod(0o755)
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def read(root, model: str, protocol: str, hardware: str = "cpu-fp32") -> dict:
    """The summary files of ``model``/``protocol``/``hardware`` under ``root``: tables, ``verdict`` and ``facts``."""
    where = folder(root, model, protocol, hardware)
    if not (where / "summary.json").is_file():
        raise FileNotFoundError(f"no summary of model={model!r} protocol={protocol!r} hardware={hardware!r} in {where}; "
                                f"run `crisp summary --model {model} --protocol {protocol} --hardware {hardware}`")
    out = {name: pd.read_csv(where / f"{name}.csv") for name in TABLES}
    out["verdict"] = (where / "verdict.md").read_text(encoding="utf-8").rstrip("\n")
    out["facts"] = results.read_json(where / "summary.json")
    return out


def _roundtrip(frame: pd.DataFrame) -> pd.DataFrame:
    # Compare what was written with what would be written: the same CSV text, read back the same way.
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n")
    buffer.seek(0)
    return pd.read_csv(buffer)


def _same(stored, fresh, rtol=1e-9) -> bool:
    """Whether two JSON values agree: floats to a relative ``rtol`` (last-digit noise between library
    versions is not staleness), everything else exactly."""
    if isinstance(stored, dict) and isinstance(fresh, dict):
        return stored.keys() == fresh.keys() and all(_same(stored[k], fresh[k], rtol) for k in stored)
    if isinstance(stored, list) and isinstance(fresh, list):
        return len(stored) == len(fresh) and all(_same(a, b, rtol) for a, b in zip(stored, fresh))
    if isinstance(stored, float) or isinstance(fresh, float):
        try:  # a number against text raises TypeError: not the same
            return math.isclose(stored, fresh, rel_tol=rtol) or (math.isnan(stored) and math.isnan(fresh))
        except TypeError:
            return False
    return stored == fresh


CHECK_MEMO_ENV = "CRISP_CHECK_MEMO"  # a folder: checks that passed there, by fingerprint (unset: none kept)


def check(sel: report.Selection, root=None) -> dict:
    """Read the stored summary of ``sel`` and recompute it from the predictions; return it if they agree.

    ``root`` defaults to ``summary/`` beside the runs (:func:`default_root`). Raises
    :class:`StaleSummaryError` naming the first file that differs (numbers compared to a relative 1e-9).

    With ``$CRISP_CHECK_MEMO`` set to a folder, a check that passes leaves a note there under a
    fingerprint of everything it depended on (:func:`fingerprint`), and a later check with the same
    fingerprint returns the stored summary without recomputing it: the test suite sets a fresh folder per
    session, so each summary is recomputed once per session and the chapters that read it share that check.
    """
    root = Path(root) if root is not None else default_root(sel.root)
    memo_dir = os.environ.get(CHECK_MEMO_ENV)
    memo = Path(memo_dir) / f"{fingerprint(sel, root)}.ok" if memo_dir else None
    if memo is not None and memo.is_file():
        return read(root, sel.model, sel.protocol, sel.hardware)
    stored, fresh = read(root, sel.model, sel.protocol, sel.hardware), compute(sel)
    where = folder(root, sel.model, sel.protocol, sel.hardware)
    for name in TABLES:
        try:
            pd.testing.assert_frame_equal(stored[name], _roundtrip(fresh[name]), check_exact=False, rtol=1e-9,
                                          check_dtype=False)
        except AssertionError as err:
            raise StaleSummaryError(f"{where / (name + '.csv')} does not match the runs it summarises "
                                    f"(re-run `crisp summary`): {str(err).splitlines()[0]}") from None
    if stored["verdict"] != fresh["verdict"]:
        raise StaleSummaryError(f"{where / 'verdict.md'} does not match the runs it summarises (re-run `crisp summary`)")
    for key in ("label", "seeds", "n_runs", "pending_runs", "regularizer_runs", "single_run_null", "method_reading", "readings_used"):
        if not _same(stored["facts"].get(key), fresh["facts"][key]):
            raise StaleSummaryError(f"{where / 'summary.json'}: {key} is {stored['facts'].get(key)!r}, the runs give "
                                    f"{fresh['facts'][key]!r} (re-run `crisp summary`)")
    if memo is not None:
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(f"{where} matched its runs\n", encoding="utf-8")
    return stored


def fingerprint(sel: report.Selection, root) -> str:
    """sha256 of what :func:`check` depends on: the selection's name, every file under the model's runs (a
    selection is built from all of them), the stored summary, the padding readings, the source of the whole
    ``crisp`` package and the versions of Python, numpy, pandas and scipy."""
    runs_root = Path(sel.root)
    digest = hashlib.sha256(repr((sel.model, sel.protocol, sel.hardware, str(runs_root.resolve()),
                                  str(Path(root).resolve()), platform.python_version(), np.__version__,
                                  pd.__version__, scipy.__version__)).encode())
    package = Path(__file__).resolve().parents[1]
    folders = [runs_root / sel.model, folder(root, sel.model, sel.protocol, sel.hardware),
               runs_root.parent / "padding" / sel.model, package]
    for top in folders:
        for path in sorted(top.rglob("*")) if top.is_dir() else ():
            if path.is_file() and "checkpoints" not in path.parts and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(top)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
