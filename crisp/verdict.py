"""The verdict: a paragraph generated only from the summary's numbers, every sentence scoped.

Each sentence names what it is about (model, protocol, seeds, split) because a result about MiniLM
with 5 seeds on the 872 dev sentences is not a result about DistilBERT, one run, or the test split.
It names the reading of the paper's method the runs test, and, when the padding study's readings
table is given, what the mask-first pad-to-512 reading would mean for the paper's Table 1.
"""

from __future__ import annotations

import pandas as pd

from .present import order

SPLIT_TEXT = {"dev": "the SST-2 dev split", "test": "the held-out SST-2 test split"}
NO_PRUNING = 0.001  # realized sparsity over real pairs below this (0.1%) counts as "no real key pruned"


def _pts(x: float, sign: bool = True) -> str:
    return f"{x * 100:+.2f}" if sign else f"{x * 100:.2f}"


def _p(p: float) -> str:
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def _names(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def reading_text(crisp_config: dict) -> str:
    """Which reading of the paper's thresholding a run's ``crisp_config`` is (padding, mask order, granularity)."""
    padding = ("pad-to-512 with padding keys competing on raw scores" if crisp_config.get("paper_padding")
               else "dynamic padding (each batch padded to its longest sentence), only real keys competing")
    gran = {"row": "top-k per query row with k counted from the row's real keys",
            "head": "one percentile threshold per head over its real (query, key) pairs"}.get(
        crisp_config.get("granularity"), f"granularity {crisp_config.get('granularity')!r}")
    return f"{padding}, {gran}"


def readings_fact(readings: pd.DataFrame) -> dict:
    """From the padding study's ``readings.csv``: per mask-first pad-to-512 reading, the largest realized sparsity
    over real (query, key) pairs at any target, split and layer; and the targets and splits measured."""
    mf = readings[(readings["padding"] == "pad512") & readings["mask_first"].astype(str).str.lower().eq("true")]
    mf = mf.dropna(subset=["realized_sparsity"])  # a reading that could not be measured says nothing here
    if mf.empty:
        raise ValueError("the readings table has no mask-first pad-to-512 rows with a realized sparsity")
    return dict(max_by_reading=mf.groupby("reading")["realized_sparsity"].max().to_dict(),
                targets=sorted(float(t) for t in mf["sparsity"].unique()),
                splits=sorted(mf["split"].unique().tolist()), max=float(mf["realized_sparsity"].max()),
                sentences={split: int(g["sentences"].min()) for split, g in mf.groupby("split")} if "sentences" in mf else {})


def _measured(fact: dict) -> str:
    """``80 dev and 32 train sentences`` (or the split names, when the table has no sentence counts)."""
    counts = fact.get("sentences") or {}
    if not counts:
        return ", ".join(fact["splits"])
    return " and ".join(f"{counts[s]} {s}" for s in fact["splits"] if s in counts) + " sentences padded to 512"


def verdict(boot: pd.DataFrame, null: dict, fit: dict, *, model: str, protocol: str, seeds: list,
            reading: str, experiment: bool = True, alpha: float = 0.05, planned_seeds: int | None = None,
            readings: pd.DataFrame | None = None) -> str:
    """One paragraph built from the numbers given.

    Parameters
    ----------
    boot : DataFrame
        :func:`crisp.report.bootstrap_table` rows of one or more splits.
    null : dict
        :func:`crisp.report.single_run_null` (single-run probabilities with no true effect, the paper's r).
    fit : dict
        config -> answer of :func:`crisp.mechanism.fit_answer`.
    model, protocol, seeds, reading :
        Named in the text (``reading``: :func:`reading_text` of the runs' crisp_config).
    alpha : float
        Family-wise level for the Holm-adjusted p-values.
    experiment : bool
        False for a smoke protocol: the text then says to read no conclusion into it.
    planned_seeds : int, optional
        With fewer seeds than planned the text says the verdict is provisional.
    readings : DataFrame, optional
        The padding study's readings table (``data/padding/<model>/readings.csv``).
    """
    n = len(seeds)
    scope = f"{model}, protocol {protocol}, {n} seed{'s' if n != 1 else ''} per configuration"
    text = [f"Scope: {scope}. These runs test one reading of the paper's method: {reading}."]
    if not experiment:
        text.append("These are smoke runs that check the pipeline, not the experiment: read no conclusion into them.")
    if planned_seeds is not None and n < planned_seeds:
        text.append(f"The grid is unfinished ({n} of the {planned_seeds} planned seeds): this verdict is provisional.")
    for split, rows in boot.groupby("split", sort=False):
        rows = list(rows.itertuples())
        where = f"On {SPLIT_TEXT.get(split, split)} ({rows[0].n_sentences} sentences; {scope})"
        cis = "; ".join(f"{r.config} {_pts(r.mean_diff)} points [{_pts(r.ci_low)}, {_pts(r.ci_high)}]" for r in rows)
        text.append(f"{where}, sparse minus dense baseline with 95% intervals from a paired two-level bootstrap "
                    f"over seeds and sentences (B = {rows[0].B}): {cis}.")
        sig = [r for r in rows if r.p_zero_holm < alpha]
        if sig:
            text.append(f"Against zero (two-sided, Holm over {len(rows)}), {_names([f'{r.config} differs (Holm p = {_p(r.p_zero_holm)})' for r in sig])}"
                        + ("; the others do not." if len(sig) < len(rows) else "."))
        else:
            text.append(f"Against zero (two-sided, Holm over {len(rows)}), no configuration differs from the baseline "
                        f"on {split} (smallest Holm p = {_p(min(r.p_zero_holm for r in rows))}).")
        rejected = [r for r in rows if r.p_claim_holm < alpha]
        kept = [r for r in rows if not r.p_claim_holm < alpha]
        part = (f"Against each configuration's own claimed gain (one-sided, Holm over {len(rows)}), the claim is "
                + (("rejected on " + split + " for " + _names([f"{r.config} ({_pts(r.claimed_gain)}, Holm p = {_p(r.p_claim_holm)})" for r in rejected]))
                   if rejected else "rejected for no configuration on " + split)
                + (("; it is not rejected for " + _names([f"{r.config} ({_pts(r.claimed_gain)}, Holm p = {_p(r.p_claim_holm)})" for r in kept])) if kept else ""))
        mdd = [r.mdd_zero for r in rows]
        text.append(part + f". With 80% power at Holm's strictest level this design detects differences from zero of "
                    f"{_pts(min(mdd), False)} to {_pts(max(mdd), False)} points on {split}.")
    if null:
        text.append(f"One run per configuration, as in the paper's Table 1: with no true effect (our {null['n_baseline_runs']} "
                    f"baseline runs of {model} against each other, {null['split']}), three single runs all beat one "
                    f"baseline run, the best by at least {_pts(null['margin'])} points, in {null['hits']} of "
                    f"{null['arrangements']} arrangements ({100 * null['p_empirical']:.0f}%), and with probability "
                    f"{100 * null['p_normal']:.0f}% under a normal model of their spread (sd {_pts(null['baseline_sd'], False)} "
                    f"points); the paper's correlation of target sparsity with accuracy, r = {null['paper_pearson_r']:.2f} "
                    f"over its {null['paper_n']} runs, has p = {null['paper_pearson_p']:.3f}.")
    if fit:
        groups = {}
        for config, answer in fit.items():
            groups.setdefault(answer, []).append(config)
        said = "; ".join(f"{answer} for {_names(configs)}" for answer, configs in groups.items())
        text.append(f"Regularization or underfitting ({scope}, paired 95% t intervals of final-epoch training loss "
                    f"and accuracy, dev loss and dev accuracy): {said}.")
    if readings is not None:
        fact = readings_fact(readings)
        targets = " and ".join(f"{100 * t:.0f}%" for t in fact["targets"])
        if fact["max"] < NO_PRUNING:
            text.append(f"Under the mask-first pad-to-512 reading of the paper (the padding mask written into the "
                        f"scores before the threshold), the realized sparsity over real (query, key) pairs measured on "
                        f"{model} ({_measured(fact)}) is at most {100 * fact['max']:.2g}% at targets {targets}: "
                        f"no real key is pruned, so the paper's sparse models would be its dense model and its Table 1 "
                        f"gains differences between single runs of one model.")
        else:
            text.append(f"Under the mask-first pad-to-512 reading of the paper, the realized sparsity over real "
                        f"(query, key) pairs measured on {model} reaches {100 * fact['max']:.1f}% at targets {targets} "
                        f"(largest per reading: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in fact["max_by_reading"].items())
                        + "), so that reading does prune real keys.")
    return " ".join(text)



def _span(values, sign: bool = True) -> str:
    lo, hi = min(values), max(values)
    return f"{_pts(lo, sign)}" if abs(hi - lo) < 5e-5 else f"{_pts(lo, sign)} to {_pts(hi, sign)}"


def headline(boot: pd.DataFrame, *, model: str, protocol: str, n_seeds: int, hardware: str,
             readings: pd.DataFrame | None = None, alpha: float = 0.05, planned_seeds: int | None = None) -> str:
    """The verdict in two sentences, for the top of the book: what the runs show, and what the padding study adds.

    The first sentence is scoped (model, protocol, seeds, hardware) and gives, per split, the range of the
    paired differences, which configurations differ from zero and for which the paper's own claimed gain is
    rejected (two-level bootstrap, Holm at ``alpha``). With fewer seeds than ``planned_seeds`` it opens with
    "Provisional"; with one seed it says the intervals count the sentences only. The second sentence, only
    with the padding study's ``readings``, says what the mask-first pad-to-512 reading of the paper would mean.
    """
    splits = list(dict.fromkeys(boot["split"]))
    ranges = " and ".join(f"{_span(boot.loc[boot.split == s, 'mean_diff'])} points on {s}" for s in splits)

    def where(sign: int) -> list[str]:
        return [f"{_names(order(g.config))} on {s}" for s in splits
                for g in [boot[(boot.split == s) & (boot.p_zero_holm < alpha) & (sign * boot.mean_diff > 0)]] if len(g)]
    better, worse = where(+1), where(-1)
    outcome = ("no sparse configuration beats the dense baseline" if not better else
               f"sparse attention beats the dense baseline ({'; '.join(better)})")
    outcome += (f", and some fall below it ({'; '.join(worse)})" if worse else
                "" if better else ", nor falls significantly below it")
    rejected = {s: boot[(boot.split == s) & (boot.p_claim_holm < alpha)] for s in splits}
    if all(len(rejected[s]) == (boot.split == s).sum() for s in splits):
        claims = (f"and every configuration's own claimed gain ({_span(boot.claimed_gain)} points) is rejected on "
                  f"{' and '.join(splits)} (Holm p at most {_p(boot.p_claim_holm.max())})")
    else:
        parts = [f"on {s} for {_names(order(rejected[s].config))}" for s in splits if len(rejected[s])]
        claims = ("and the paper's claimed gains are rejected " + "; ".join(parts)) if parts else \
                 "and no claimed gain is rejected: the design cannot tell them from zero"
    seeds = f"{n_seeds} paired seed{'s' if n_seeds != 1 else ''}"
    levels = "seeds and sentences" if n_seeds > 1 else "sentences only, one seed"
    lead = (f"Provisional ({n_seeds} of {planned_seeds} planned seeds): on" if planned_seeds and n_seeds < planned_seeds
            else "On")
    text = (f"{lead} {model} (protocol {protocol}, {seeds}, {hardware}), {outcome}: the paired differences are "
            f"{ranges} (two-level bootstrap over {levels}, Holm), {claims}.")
    if readings is not None:
        fact = readings_fact(readings)
        if fact["max"] < NO_PRUNING:
            text += (" Under another reading the paper's text allows (every sentence padded to 512 and the padding "
                     f"mask applied before the top-k), its sparse models prune no real key in any of the {_measured(fact)} "
                     "we measured, so its Table 1 gains would be differences between single runs of one dense model.")
        else:
            text += (f" Under the mask-first pad-to-512 reading of the paper, up to {100 * fact['max']:.1f}% of the "
                     f"real (query, key) pairs are pruned, so that reading is a different experiment, not tested here.")
    return text
