"""What the book's chapters read: one selection of finished runs, and tables built from it.

Chapters never train. They call :func:`select` to pick the runs to show (the ``full`` protocol
when it exists, else the largest reduced set, which is then labelled as such), and the helpers
below to turn run folders into tables. Every table carries the model and protocol it came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from . import results, stats
from .configs import CONFIGS

PLANNED_SEEDS = 5  # the experiment's design: at least this many seeds per configuration
RUNS_ENV = "CRISP_RUNS_DIR"  # where the book looks for runs (default: data/runs of this checkout)

PROTOCOL_TEXT = {
    "full": "the paper's recipe (AdamW, lr 2e-5, 64 sentences per optimizer step, 3 epochs) on all 67,349 "
            "training sentences",
    "small": "a smoke protocol: a fixed 4,000-sentence training subset, 1 epoch, 16 sentences per optimizer step "
             "(250 steps), otherwise the paper's recipe",
    **{f"n{n}": f"the data-size sweep: a stratified {n:,}-sentence training subset (nested across sizes, fixed by the "
                f"data seed), {e} epochs, 64 sentences per optimizer step, otherwise the paper's recipe; final epoch reported"
       for n, e in ((500, 10), (2000, 10), (8000, 5))},
}
MODEL_TEXT = {
    "minilm": "all-MiniLM-L6-v2 (6 layers x 12 heads, hidden 384), not the paper's DistilBERT",
    "distilbert-base-uncased": "distilbert-base-uncased, the paper's model",
}


def project_root(start=None) -> Path:
    """The folder holding ``_toc.yml`` (works from the repo root, ``book/`` and ``notebooks/``)."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file() and (folder / "crisp").is_dir():
            return folder
    return Path(__file__).resolve().parents[1]


@dataclass
class Selection:
    """The finished runs of one model and protocol."""

    root: Path
    model: str
    protocol: str
    all_metrics: pd.DataFrame  # every finished run under root
    hardware: str = "cpu-fp32"  # device type and precision (crisp.results.hardware): pairs never mix them

    @cached_property
    def metrics(self) -> pd.DataFrame:
        """Runs of the paper's four configurations (variants such as ``-paperpad`` excluded), of the seeds
        that every configuration present has finished: the comparisons stay paired. See :attr:`pending`."""
        m = self._main_runs()
        return m[m["seed"].isin(self._paired_seeds(m))].reset_index(drop=True)

    @cached_property
    def pending(self) -> pd.DataFrame:
        """Finished runs left out because their seed is not finished for every configuration yet."""
        m = self._main_runs()
        return m[~m["seed"].isin(self._paired_seeds(m))].reset_index(drop=True)

    def _main_runs(self) -> pd.DataFrame:
        m = self._mine(self.all_metrics)
        return m[m["config"].isin(CONFIGS)].sort_values(["config", "seed"]).reset_index(drop=True)

    @staticmethod
    def _paired_seeds(m: pd.DataFrame) -> set:
        per_config = [set(g["seed"]) for _, g in m.groupby("config")]
        return set.intersection(*per_config) if per_config else set()

    @cached_property
    def variants(self) -> pd.DataFrame:
        """Runs of this model and protocol with a departure from a paper configuration."""
        m = self._mine(self.all_metrics)
        return m[~m["config"].isin(CONFIGS)].reset_index(drop=True)

    def _mine(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rows of this model, protocol and hardware, with the precision suffix taken off the config label
        (``baseline-bf16`` is ``baseline`` within the ``cuda-bf16`` selection)."""
        hw = frame["hardware"] if "hardware" in frame else pd.Series("cpu-fp32", index=frame.index)
        mine = frame[(frame["model"] == self.model) & (frame["protocol"] == self.protocol) & (hw == self.hardware)].copy()
        precision = self.hardware.split("-", 1)[-1]
        if precision != "fp32":
            mine["config"] = mine["config"].str.removesuffix(f"-{precision}")
        return mine

    @property
    def seeds(self) -> list[int]:
        return sorted(self.metrics["seed"].unique().tolist())

    @property
    def n_seeds(self) -> int:
        """Seeds per configuration (the smallest count, if they differ)."""
        return int(self.metrics.groupby("config")["seed"].nunique().min()) if len(self.metrics) else 0

    @property
    def is_experiment(self) -> bool:
        return self.protocol == "full"

    @property
    def is_complete(self) -> bool:
        """The experiment as designed: protocol ``full``, all four configurations, >= PLANNED_SEEDS paired seeds."""
        return (self.is_experiment and self.metrics["config"].nunique() == len(CONFIGS)
                and self.n_seeds >= PLANNED_SEEDS)

    @property
    def step_batch(self) -> str:
        """How each optimizer step's sentences were split: ``"micro-batch x accumulation"`` (all runs agree, or a list)."""
        values = sorted(self.metrics["step_batch"].dropna().unique()) if "step_batch" in self.metrics else []
        return " / ".join(values) if values else "not recorded"

    @property
    def label(self) -> str:
        """One sentence saying what these results are."""
        text = (f"model `{self.model}` ({MODEL_TEXT.get(self.model, 'a user-supplied checkpoint')}), "
                f"protocol `{self.protocol}` ({PROTOCOL_TEXT.get(self.protocol, 'a custom protocol')}; "
                f"batch {self.step_batch} per optimizer step), "
                f"{self.n_seeds} seed(s) per configuration, {len(self.metrics)} runs")
        if not self.is_experiment:
            text += ". These are smoke results that check the pipeline, not the experiment: read no conclusion into them"
        elif not self.is_complete:
            text += (f". The grid is unfinished ({self.n_seeds} of the planned {PLANNED_SEEDS} seeds per configuration"
                     + (f"; {len(self.pending)} finished run(s) of later seeds wait for their pairs" if len(self.pending) else "")
                     + "): every number here is provisional")
        return text

    def table(self, filename: str) -> pd.DataFrame:
        """``filename`` of every run of this selection (not :attr:`pending`), tagged with model, protocol, config, seed."""
        frame = results.load_table(self.root, filename)
        if not len(frame):
            return frame
        frame = self._mine(frame)
        shown = {(r.config, r.seed) for r in pd.concat([self.metrics, self.variants]).itertuples()}
        keep = [(c, s) in shown for c, s in zip(frame["config"], frame["seed"])]
        return frame[keep].drop(columns="hardware").reset_index(drop=True)

    def predictions(self, split: str = "dev") -> dict:
        """``{(config, seed): DataFrame idx,label,pred,prob_pos}`` for the four configurations."""
        out = {}
        for row in self.metrics.itertuples():
            path = Path(row.run_dir) / f"predictions_{split}.csv"
            if path.is_file():
                out[(row.config, row.seed)] = pd.read_csv(path)
        return out


def runs_root(root=None) -> Path:
    """``root``, else ``$CRISP_RUNS_DIR``, else this checkout's ``data/runs``."""
    return Path(root or os.environ.get(RUNS_ENV) or project_root() / results.DEFAULT_ROOT)


def select(root=None, model: str | None = None, protocol: str | None = None, hardware: str | None = None) -> Selection:
    """Pick the runs to report: a complete grid (all four configurations) first, then ``full`` over any
    reduced protocol, then the one with most runs. A grid is one model, protocol and hardware (device type and
    precision, :func:`crisp.results.hardware`): runs of different hardware are never paired.
    ``root`` defaults to ``$CRISP_RUNS_DIR``, else ``data/runs``."""
    root = runs_root(root)
    metrics = results.load_metrics(root)
    if metrics.empty:
        raise FileNotFoundError(f"no finished runs under {root}; run `crisp grid` first")
    metrics = metrics.assign(paper_name=[c.removesuffix(f"-{h.split('-', 1)[-1]}") if not h.endswith("-fp32") else c
                                         for c, h in zip(metrics["config"], metrics["hardware"])])
    main = metrics[metrics["paper_name"].isin(CONFIGS)]
    if model:
        main = main[main["model"] == model]
    if protocol:
        main = main[main["protocol"] == protocol]
    if hardware:
        main = main[main["hardware"] == hardware]
    if main.empty:
        raise FileNotFoundError(f"no finished runs of model={model!r} protocol={protocol!r} hardware={hardware!r} under {root}")
    counts = (main.groupby(["model", "protocol", "hardware"])
              .agg(runs=("seed", "size"), configs=("paper_name", "nunique")).reset_index())
    counts["complete"] = counts["configs"] == len(CONFIGS)  # a grid with all four configurations
    counts["is_full"] = counts["protocol"] == "full"
    best = counts.sort_values(["complete", "is_full", "runs"], ascending=False).iloc[0]
    return Selection(root, best["model"], best["protocol"], metrics.drop(columns="paper_name"), best["hardware"])


def paper_table(number: int) -> pd.DataFrame:
    """The paper's Table 1 or 2 as transcribed in ``data/paper/`` (see its README)."""
    return pd.read_csv(project_root() / "data" / "paper" / f"table{number}.csv")


def accuracy_from_predictions(sel: Selection, split: str = "dev") -> pd.DataFrame:
    """Accuracy of every run recomputed from its per-sentence predictions and labels."""
    rows = [{"config": c, "seed": s, "accuracy": float((p["pred"] == p["label"]).mean()), "n": len(p)}
            for (c, s), p in sel.predictions(split).items()]
    return pd.DataFrame(rows, columns=["config", "seed", "accuracy", "n"])


def main_table(sel: Selection) -> pd.DataFrame:
    """Table 1 reproduced: dev and test accuracy per configuration (mean, std, 95% CI), the paper's number beside.

    Accuracies are recomputed from the per-sentence predictions, not read from metrics.json.
    """
    frames = []
    for split in ("dev", "test"):
        acc = accuracy_from_predictions(sel, split)
        if acc.empty:
            continue
        summary = stats.summarize(acc, value="accuracy", by="config")
        summary.columns = ["config"] + [f"{split}_{c}" for c in summary.columns[1:]]
        frames.append(summary.set_index("config"))
    table = pd.concat(frames, axis=1).reset_index()
    paper = paper_table(1)[["config", "dev_accuracy"]].rename(columns={"dev_accuracy": "paper_dev_accuracy"})
    table = table.merge(paper, on="config", how="left")
    order = {name: i for i, name in enumerate(CONFIGS)}
    return table.sort_values("config", key=lambda s: s.map(order)).reset_index(drop=True)


def comparison(sel: Selection, split: str = "dev") -> pd.DataFrame:
    """Each sparse configuration against baseline: paired over seeds, McNemar, Holm-corrected."""
    acc = accuracy_from_predictions(sel, split).rename(columns={"accuracy": f"{split}_accuracy"})
    acc["model"], acc["protocol"] = sel.model, sel.protocol
    return stats.compare_to_baseline(acc, sel.predictions(split), value=f"{split}_accuracy")


def detectable_difference(sel: Selection, split: str = "dev", power: float = 0.8) -> float:
    """Smallest true paired difference detectable with ``power`` (paired t, Bonferroni over the comparisons).

    Uses the mean over comparisons of the seed-to-seed standard deviation of paired differences;
    NaN with fewer than three seeds.
    """
    acc = accuracy_from_predictions(sel, split)
    base = acc[acc.config == "baseline"].set_index("seed").accuracy
    others = [c for c in CONFIGS if c != "baseline" and c in set(acc.config)]
    sds = []
    for config in others:
        mine = acc[acc.config == config].set_index("seed").accuracy
        shared = mine.index.intersection(base.index)
        if len(shared) >= 2:
            sds.append(float((mine[shared] - base[shared]).std(ddof=1)))
    if not sds or sel.n_seeds < 3:  # with 1 degree of freedom the noncentral t power is not computable
        return float("nan")
    return stats.minimum_detectable_difference(sum(sds) / len(sds), sel.n_seeds, power=power, comparisons=len(others))


def progress(root=None) -> pd.DataFrame:
    """Every finished run under ``root`` (default as in :func:`select`), counted per model, protocol and config:
    how far each grid has come, whether or not the book reports it yet."""
    metrics = results.load_metrics(runs_root(root))
    columns = ["model", "protocol", "config", "runs", "seeds", "dev_accuracy_mean", "test_accuracy_mean", "train_hours"]
    if metrics.empty:
        return pd.DataFrame(columns=columns)
    for column in ("dev_accuracy", "test_accuracy", "train_seconds"):
        if column not in metrics:
            metrics[column] = float("nan")
    grouped = metrics.groupby(["model", "protocol", "config"])
    out = grouped.agg(runs=("seed", "size"), dev_accuracy_mean=("dev_accuracy", "mean"),
                      test_accuracy_mean=("test_accuracy", "mean"), train_hours=("train_seconds", "sum")).reset_index()
    out["seeds"] = [", ".join(str(s) for s in sorted(g["seed"])) for _, g in grouped]
    out["train_hours"] = out["train_hours"] / 3600
    return out[columns]
