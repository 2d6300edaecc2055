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

import numpy as np
import pandas as pd
from scipy import stats as sps

from . import bootstrap, single_run, stats
from ..study import results
from ..configs import CONFIGS

EXPERIMENT_PROTOCOLS = ("full", "n500", "n2000", "n8000")  # reported as experiments; anything else is a smoke/custom run
PLANNED_SEEDS = 5  # the experiment's design: at least this many seeds per configuration
RUNS_ENV = "CRISP_RUNS_DIR"  # where the book looks for runs (default: data/runs of this checkout)

PROTOCOL_TEXT = {
    "full": "the paper's recipe (AdamW, lr 2e-5, 64 sentences per optimizer step, 3 epochs) on all 67,349 "
            "training sentences",
    "small": "a smoke protocol: a fixed 4,000-sentence training subset, 1 epoch, 16 sentences per optimizer step "
             "(250 steps), otherwise the paper's recipe",
    **{f"n{n}": f"the data-size sweep: a stratified {n:,}-sentence training subset (nested across sizes, fixed by the "
                f"data seed), {e} epochs, 64 sentences per optimizer step, otherwise the paper's recipe; final epoch reported"
       for n, e in ((500, 40), (2000, 10), (8000, 5))},
}
MODEL_TEXT = {
    "minilm": "all-MiniLM-L6-v2 (6 layers x 12 heads, hidden 384), a sentence-embedding model (MiniLM contrastively "
              "fine-tuned on sentence pairs by sentence-transformers), not the paper's DistilBERT, a plain masked-LM encoder",
    "distilbert-base-uncased": "distilbert-base-uncased, the paper's model",
}


def protocol_kind(protocol: str) -> str:
    """What a protocol's runs are for: the paper's recipe, the data-size sweep, a smoke check, or custom."""
    base = protocol.split("-custom")[0]
    if protocol != base:
        return "custom"
    from ..study.train import SIZE_PROTOCOLS
    return {"full": "the paper's recipe", "small": "smoke check"}.get(
        base, "data-size sweep" if base in SIZE_PROTOCOLS else "custom")


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
    hardware: str = "cpu-fp32"  # device type and precision (crisp.study.results.hardware): pairs never mix them

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

    @cached_property
    def regularizers(self) -> pd.DataFrame:
        """Finished runs of the standard-regularizer configurations (``crisp.study.train.REGULARIZERS``: dense attention,
        one knob changed) of this model, protocol and hardware; they pair with :attr:`metrics` by seed."""
        from ..study.train import REGULARIZERS

        m = self._mine(self.all_metrics)
        return m[m["config"].isin(REGULARIZERS)].sort_values(["config", "seed"]).reset_index(drop=True)

    def _mine(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rows of this model, protocol and hardware, with the precision suffix taken off the config label
        (``baseline-bf16`` is ``baseline`` within the ``cuda-bf16`` selection)."""
        hw = frame["hardware"] if "hardware" in frame else pd.Series("cpu-fp32", index=frame.index)
        mine = frame[(frame["model"] == self.model) & (frame["protocol"] == self.protocol) & (hw == self.hardware)].copy()
        mine["config"] = [results.config_within(c, self.hardware) for c in mine["config"]]
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
        """The paper's recipe on all data, or one size of the data-size sweep (not the smoke protocol)."""
        return self.protocol in EXPERIMENT_PROTOCOLS

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
    def devices(self) -> str:
        """The devices the runs trained on, as recorded (``cpu: x86_64, 2 threads``, a GPU's name)."""
        found = sorted(self.metrics["device"].dropna().unique()) if "device" in self.metrics else []
        return " / ".join(found) if found else "device not recorded"

    @property
    def label(self) -> str:
        """One sentence saying what these results are."""
        text = (f"model `{self.model}` ({MODEL_TEXT.get(self.model, 'a user-supplied checkpoint')}), "
                f"protocol `{self.protocol}` ({PROTOCOL_TEXT.get(self.protocol, 'a custom protocol')}; "
                f"batch {self.step_batch} per optimizer step), "
                f"{self.n_seeds} seed(s) per configuration, {len(self.metrics)} runs, "
                f"hardware `{self.hardware}` ({self.devices})")
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
    precision, :func:`crisp.study.results.hardware`): runs of different hardware are never paired.
    ``root`` defaults to ``$CRISP_RUNS_DIR``, else ``data/runs``."""
    root = runs_root(root)
    metrics = results.load_metrics(root)
    if metrics.empty:
        raise FileNotFoundError(f"no finished runs under {root}; run `crisp grid` first")
    metrics = metrics.assign(paper_name=[results.config_within(c, h) for c, h in zip(metrics["config"], metrics["hardware"])])
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
    # The seeds-only design number (paired t); the per-configuration one that counts sentences too is in
    # :func:`bootstrap_table` (``mdd_zero``).
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


# ---------------------------------------------------------------- sentences and seeds together

BOOT_B, BOOT_SEED = 10000, 0  # replicates and RNG seed of the two-level bootstrap (recorded in every table)


def claimed_gains() -> dict:
    """The paper's Table 1 gain of each sparse configuration over its baseline (fractions: light 0.0073 ...)."""
    t = paper_table(1)
    return {r.config: float(r.vs_baseline) for r in t.itertuples() if r.config != "baseline"}


def correctness(sel: Selection, split: str = "dev"):
    """Per-sentence correctness of every run as one array.

    Returns
    -------
    configs : list of str
        In :data:`CONFIGS` order, baseline first.
    seeds : list of int
    correct : bool array (len(configs), len(seeds), N)
        Sentences ordered by ``idx``; every run must cover the same ``idx`` with the same labels.
    """
    preds = sel.predictions(split)
    configs = [c for c in CONFIGS if any(k[0] == c for k in preds)]
    seeds = sel.seeds
    missing = [(c, s) for c in configs for s in seeds if (c, s) not in preds]
    if missing or not configs:
        raise ValueError(f"no {split} predictions for runs {missing or 'of any configuration'}")
    first = preds[(configs[0], seeds[0])].sort_values("idx")
    out = np.empty((len(configs), len(seeds), len(first)), dtype=bool)
    for i, c in enumerate(configs):
        for j, s in enumerate(seeds):
            p = preds[(c, s)].sort_values("idx")
            if not (np.array_equal(p["idx"], first["idx"]) and np.array_equal(p["label"], first["label"])):
                raise ValueError(f"{c} seed {s}: {split} predictions cover other sentences or labels than "
                                 f"{configs[0]} seed {seeds[0]}")
            out[i, j] = (p["pred"] == p["label"]).to_numpy()
    return configs, seeds, out


BOOTSTRAP_COLUMNS = ["split", "config", "n_seeds", "n_sentences", "claimed_gain", "mean_diff", "se", "ci_low",
                     "ci_high", "se_seeds_only", "se_sentences_only", "se_anova", "p_zero", "p_zero_holm", "p_claim",
                     "p_claim_holm", "mdd_zero", "mdd_claim", "B", "boot_seed"]


def bootstrap_table(sel: Selection, split: str = "dev", B: int = BOOT_B, seed: int = BOOT_SEED,
                    alpha: float = 0.05, power: float = 0.8) -> pd.DataFrame:
    """Every sparse configuration minus baseline under the paired two-level bootstrap (:mod:`crisp.analysis.bootstrap`).

    Columns :data:`BOOTSTRAP_COLUMNS`: the observed difference, its bootstrap standard error and 95%
    percentile interval; the standard error with only seeds or only sentences resampled (same B and
    seed) and from the crossed random-effects model (``se_anova``, :func:`crisp.analysis.bootstrap.crossed_se`, a
    closed-form cross-check; NaN with one seed); ``p_zero`` (two-sided, H0: no difference) and ``p_claim`` (one-sided, H0: the difference is
    at least the paper's claimed gain for that configuration), each Holm-adjusted over the
    configurations; ``mdd_zero`` / ``mdd_claim``: the true difference from zero / shortfall from the
    claim that the corresponding test detects with ``power`` at Holm's first step (alpha / k).
    """
    configs, seeds, correct = correctness(sel, split)
    if configs[0] != "baseline":
        raise ValueError("the bootstrap needs baseline runs")
    boots = {lv: bootstrap.differences(bootstrap.two_level(correct, B=B, seed=seed, levels=lv))
             for lv in bootstrap.LEVELS}
    observed = correct.mean(axis=(1, 2))
    claims, k = claimed_gains(), len(configs) - 1
    rows = []
    for i, config in enumerate(configs[1:], start=1):
        d = boots["both"][:, i]
        se = float(d.std(ddof=1))
        lo, hi = bootstrap.percentile_ci(d)
        rows.append(dict(split=split, config=config, n_seeds=len(seeds), n_sentences=correct.shape[2],
                         claimed_gain=claims.get(config, np.nan), mean_diff=float(observed[i] - observed[0]),
                         se=se, ci_low=lo, ci_high=hi, se_seeds_only=float(boots["seeds"][:, i].std(ddof=1)),
                         se_sentences_only=float(boots["sentences"][:, i].std(ddof=1)),
                         se_anova=bootstrap.crossed_se(correct[i].astype(float) - correct[0]) if len(seeds) > 1 else np.nan,
                         p_zero=bootstrap.p_two_sided(d), p_claim=bootstrap.p_below(d, claims.get(config, np.nan)),
                         mdd_zero=bootstrap.detectable(se, alpha, power, k, sided=2),
                         mdd_claim=bootstrap.detectable(se, alpha, power, k, sided=1), B=B, boot_seed=seed))
    out = pd.DataFrame(rows, columns=BOOTSTRAP_COLUMNS)
    out["p_zero_holm"], out["p_claim_holm"] = stats.holm(out["p_zero"]), stats.holm(out["p_claim"])
    return out


# ---------------------------------------------------------------- what one run per configuration can show

def _per_seed(sel: Selection, split: str) -> dict:
    acc = accuracy_from_predictions(sel, split)
    return {c: g.sort_values("seed")["accuracy"].to_numpy() for c, g in acc.groupby("config")}


def single_run_pairs(sel: Selection, split: str = "dev") -> pd.DataFrame:
    """One sparse run minus one baseline run, for every pairing of seeds: ``config, sparse_seed, baseline_seed, diff``."""
    acc = accuracy_from_predictions(sel, split)
    base = acc[acc.config == "baseline"]
    pairs = acc[acc.config != "baseline"].merge(base, how="cross", suffixes=("", "_b"))
    pairs = pairs.assign(diff=pairs["accuracy"] - pairs["accuracy_b"])
    pairs = pairs.rename(columns={"seed": "sparse_seed", "seed_b": "baseline_seed"})
    order = {c: i for i, c in enumerate(CONFIGS)}
    pairs = pairs.sort_values(["config", "sparse_seed", "baseline_seed"], key=lambda s: s.map(order) if s.name == "config" else s)
    return pairs[["config", "sparse_seed", "baseline_seed", "diff"]].reset_index(drop=True)


def single_run_table(sel: Selection, split: str = "dev") -> pd.DataFrame:
    """Per sparse configuration: how one run minus one baseline run is distributed, and how often it shows the claim.

    Empirical columns over all pairings (``n_pairings, mean, min, max, frac_positive, frac_claim``) and
    normal ones from the seed spread (:func:`crisp.analysis.single_run.normal_single_difference`:
    ``normal_mean, normal_sd, normal_p_positive, normal_p_claim``).
    """
    per, claims, rows = _per_seed(sel, split), claimed_gains(), []
    for config in [c for c in CONFIGS if c != "baseline" and c in per]:
        d, claim = single_run.all_pairings(per[config], per["baseline"]), claims.get(config, np.nan)
        enough = min(len(per[config]), len(per["baseline"])) >= 2  # a spread needs two runs of each
        mu, sd = single_run.normal_single_difference(per[config], per["baseline"]) if enough else (np.nan, np.nan)
        rows.append(dict(split=split, config=config, claimed_gain=claim, n_pairings=len(d), mean=float(d.mean()),
                         min=float(d.min()), max=float(d.max()), frac_positive=float(np.mean(d > 0)),
                         frac_claim=float(np.mean(d >= claim - 1e-12)), normal_mean=mu, normal_sd=sd,
                         normal_p_positive=float(sps.norm.sf(0, mu, sd)),
                         normal_p_claim=float(sps.norm.sf(claim, mu, sd))))
    return pd.DataFrame(rows)


def single_run_null(sel: Selection, split: str = "dev", k: int = 3) -> dict:
    """With no true effect (baseline seeds only): P(k single "sparse" runs all beat one baseline run, the best by
    at least the paper's largest claimed gain), counted over arrangements of our baseline seeds and from a normal
    model with their spread; plus the paper's own Table 1 correlation of target sparsity and accuracy (n = 4)."""
    base, margin = _per_seed(sel, split)["baseline"], max(claimed_gains().values())
    hits, total = single_run.all_beat(base, k, margin)
    sd = float(np.std(base, ddof=1))
    paper = paper_table(1)
    corr = stats.correlation(paper["sparsity_target"], paper["dev_accuracy"])
    df = corr["n"] - 2
    t_crit = float(sps.t.ppf(0.975, df))
    return dict(split=split, k=k, margin=margin, n_baseline_runs=len(base), hits=hits, arrangements=total,
                p_empirical=hits / total, baseline_sd=sd, p_normal=single_run.all_beat_normal(sd, k, margin),
                p_any_order_zero_margin=1 / (k + 1), paper_n=corr["n"], paper_pearson_r=corr["pearson_r"],
                paper_pearson_p=corr["pearson_p"], paper_r_needed=t_crit / float(np.sqrt(t_crit ** 2 + df)))


def method_reading(sel: Selection) -> dict:
    """The thresholding reading the sparse runs used (``paper_padding``, ``granularity`` from each run's
    ``crisp_config`` in ``metrics.json``); runs that disagree are an error."""
    seen = set()
    for r in sel.metrics.itertuples():
        if r.config == "baseline":
            continue
        cfg = results.read_json(Path(r.run_dir) / "metrics.json").get("crisp_config") or {}
        seen.add((bool(cfg.get("paper_padding")), cfg.get("granularity")))
    if len(seen) != 1:
        raise ValueError(f"the sparse runs use {len(seen)} readings {sorted(seen, key=str)}; report one at a time")
    paper_padding, granularity = seen.pop()
    return dict(paper_padding=paper_padding, granularity=granularity)


def check_one_recipe(sel: Selection) -> None:
    """Refuse a selection whose runs were trained with different recipes (:mod:`crisp.study.recipe`), naming the
    difference: a folder can hold runs of an older naming (``small-custom``) or a hand-moved run."""
    from ..study import recipe

    frames = [sel.metrics, getattr(sel, "regularizers", pd.DataFrame())]
    runs = {f"{r.config} seed {r.seed} ({r.run_dir})": recipe.of_run(results.read_json(Path(r.run_dir) / "metrics.json"))
            for frame in frames for r in frame.itertuples()}
    recipe.check_same(runs, ignore=("config", "attention_dropout", "label_smoothing"))


def _seed_text(seeds) -> str:
    return ", ".join(str(s) for s in sorted(seeds)) or "none"


def coverage(sel: Selection) -> str:
    """What the grid of ``sel`` holds, in lines: each configuration's finished seeds, the seeds used (finished for
    every configuration present) and those left out; a grid with no such seed says so."""
    m = sel._main_runs()
    lines = [f"grid: model {sel.model}, protocol {sel.protocol}, hardware {sel.hardware}"]
    for config in CONFIGS:
        seeds = m.loc[m["config"] == config, "seed"]
        lines.append(f"  {config}: " + (f"finished seeds {_seed_text(seeds)}" if len(seeds) else "no finished run"))
    for config, group in sel.variants.groupby("config"):
        lines.append(f"  {config}: finished seeds {_seed_text(group['seed'])} (not one of the paper's configurations)")
    if not len(sel.metrics):
        lines.append("  no seed is finished for every configuration yet: nothing to pair, nothing summarised")
        return "\n".join(lines)
    lines.append(f"  used: seeds {_seed_text(sel.seeds)} (finished for every configuration present)")
    left = sorted(set(sel.pending["seed"]))
    if left:
        lines.append(f"  left out: seeds {_seed_text(left)} (not finished for every configuration)")
    return "\n".join(lines)
