"""The verdict, generated only from the summary's numbers: a plain sentence, the scope once, then bullets.

The first sentence says in words anyone can read what was tested and the direction and size of the result
(:func:`plain_sentence`; the word thresholds are :data:`SAME`, :data:`SLIGHT`, :data:`MUCH`). Every difference
is then read under both questions (:func:`both_tests`): *on these sentences* (the split's sentences fixed,
seeds resampled: the paired t over seeds) and *on new sentences too* (the two-level bootstrap over seeds and
sentences). The paper's claimed gains are compared honestly (:func:`claims`): the largest true gain our
intervals allow, the claim as one noisy run (:func:`noisy_claim_p`), and the design's power against it.
A result about MiniLM with 5 seeds is not a result about DistilBERT, one run, or another split: the scope
line says which.
"""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats as sps

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


# ---------------------------------------------------------------- plain words, with their thresholds

SAME = 0.001    # a mean difference below 0.1 point (fraction 0.001) is "about the same as" dense
SLIGHT = 0.01   # below 1 point it is "slightly" lower or higher
MUCH = 0.02     # from 2 points on it is "much" lower or higher (between 1 and 2 points: no qualifier)
MODEL_PLAIN = {"minilm": "MiniLM's", "distilbert-base-uncased": "DistilBERT's"}  # the model named for anyone


def amount(x: float) -> str:
    """The size of a difference ``x`` (a fraction) in words, to the nearest half point of accuracy:
    below 0.25 point "under a quarter of a point", then "about half a point", "about one point",
    "about 1.5 points", ..."""
    pts = abs(x) * 100
    if pts < 0.25:
        return "under a quarter of a point"
    half = max(0.5, round(pts * 2) / 2)
    return "about half a point" if half == 0.5 else "about one point" if half == 1 else f"about {half:g} points"


def direction(x: float) -> str:
    """``"slightly lower"``, ``"higher"``, ``"much lower"``, or ``"about the same"`` for a difference ``x``
    (fraction) by the thresholds :data:`SAME`, :data:`SLIGHT`, :data:`MUCH`."""
    if abs(x) < SAME:
        return "about the same"
    q = "slightly " if abs(x) < SLIGHT else "much " if abs(x) >= MUCH else ""
    return q + ("lower" if x < 0 else "higher")


def plain_sentence(boot: pd.DataFrame, model: str = "minilm") -> str:
    """The verdict's first sentence, for anyone: what was tested, on what, and the direction and size of the mean
    difference over the sparse configurations (sparse minus dense, ``boot`` rows) per split, in words
    (:func:`direction`, :func:`amount`)."""
    from ..configs import CONFIGS
    targets = sorted({round(100 * CONFIGS[c].mean_sparsity) for c in boot["config"] if c in CONFIGS})
    share = (f"{targets[0]}%" if len(targets) == 1 else f"{targets[0]}-{targets[-1]}%") if targets else "part"
    splits = list(dict.fromkeys(boot["split"]))
    means = {s: float(boot.loc[boot["split"] == s, "mean_diff"].mean()) for s in splits}
    words = {s: direction(means[s]) for s in splits}

    def how(w):
        return "about the same as dense attention" if w == "about the same" else f"{w} than dense attention"
    if len(set(words.values())) == 1:
        w = words[splits[0]]
        said = how(w) + (f" on {' and '.join(splits)}" if w == "about the same" else
                         ": " + " and ".join(f"{amount(means[s])} on {s}" for s in splits))
    else:
        said = "; ".join(how(words[s]) + (f" on {s}" if words[s] == "about the same" else f" ({amount(means[s])}) on {s}")
                         for s in splits)
    who = MODEL_PLAIN.get(model, f"{model}'s")
    return f"Pruning {share} of {who} attention in SST-2 fine-tuning left accuracy, on average, {said}."


# ---------------------------------------------------------------- the two questions, the claims

def _word(p_holm: float, diff: float, alpha: float) -> str:
    if not p_holm < alpha:
        return "no difference detected"
    return "lower than dense" if diff < 0 else "higher than dense"


def both_tests(boot: pd.DataFrame, comparisons: dict, alpha: float = 0.05) -> pd.DataFrame:
    """Each sparse configuration minus baseline per split under both questions.

    *On these sentences* (the split's sentences fixed, seeds resampled): the paired t over seeds of
    ``comparisons[split]`` (:func:`crisp.analysis.report.comparison`, ``comparison_<split>.csv``). *On new sentences too*:
    the two-level bootstrap over seeds and sentences (``bootstrap.csv``). Holm over the configurations of a split
    in each. Columns ``split, config, n_seeds, n_sentences, mean_diff, fixed_low, fixed_high, fixed_p_holm,
    fixed_word, new_low, new_high, new_p_holm, new_word`` (``*_word``: :func:`_word` at ``alpha``).
    """
    rows = []
    for r in boot.itertuples():
        comp = comparisons.get(r.split)
        c = comp.set_index("config").loc[r.config] if comp is not None and r.config in set(comp["config"]) else None
        fixed = (c.ci_low, c.ci_high, c.p_ttest_holm) if c is not None else (float("nan"),) * 3
        rows.append(dict(split=r.split, config=r.config, n_seeds=r.n_seeds, n_sentences=r.n_sentences,
                         mean_diff=r.mean_diff, fixed_low=fixed[0], fixed_high=fixed[1], fixed_p_holm=fixed[2],
                         fixed_word=_word(fixed[2], r.mean_diff, alpha), new_low=r.ci_low, new_high=r.ci_high,
                         new_p_holm=r.p_zero_holm, new_word=_word(r.p_zero_holm, r.mean_diff, alpha)))
    return pd.DataFrame(rows)


def noisy_claim_p(claim: float, estimate: float, se: float, single_sd: float) -> tuple[float, float]:
    """The paper's one-run gain ``claim`` as a noisy observation: ``claim ~ N(true, single_sd^2)``.

    Returns ``(p_as_large, p_test)``. ``p_as_large = P(one-run gain >= claim | true = estimate)`` with the single-run
    spread only (our estimate taken as exact). ``p_test`` is one-sided for H0: the paper's single run and our
    estimate measure the same true difference, against "the paper's run came out higher": ``(claim - estimate)`` is
    normal with variance ``single_sd^2 + se^2`` (the single run's noise and our estimate's), so
    ``p_test = 1 - Phi((claim - estimate) / sqrt(single_sd^2 + se^2))``.
    """
    if not single_sd >= 0 or not se >= 0 or single_sd + se == 0:
        return float("nan"), float("nan")
    as_large = float(sps.norm.sf(claim, estimate, single_sd)) if single_sd > 0 else float(claim <= estimate)
    return as_large, float(sps.norm.sf((claim - estimate) / math.hypot(single_sd, se)))


def power_against(gain: float, se: float, alpha: float = 0.05, comparisons: int = 1) -> float:
    """Probability that the two-sided test against zero at Holm's strictest level (``alpha / comparisons``), with
    standard error ``se``, detects a true difference of ``gain`` (normal approximation; the far tail ignored)."""
    if not se > 0:
        return float("nan")
    return float(sps.norm.cdf(abs(gain) / se - sps.norm.ppf(1 - alpha / (2 * comparisons))))


CLAIM_COLUMNS = ["split", "config", "claimed_gain", "mean_diff", "at_most", "single_sd", "p_as_large", "p_noisy",
                 "p_noisy_holm", "claim", "power_claim", "mdd_zero"]


def claims(boot: pd.DataFrame, single: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """The paper's claimed gains against our runs, per split and configuration (:data:`CLAIM_COLUMNS`).

    ``at_most``: upper end of the 95% two-level bootstrap interval (the true gain on our model is at most that,
    at 97.5% one-sided confidence). ``single_sd``: the spread of one sparse run minus one baseline run
    (``single_run.csv`` ``normal_sd``), standing in for the paper's own single-run noise (its model's spread is
    unknown). ``p_as_large``, ``p_noisy``: :func:`noisy_claim_p` with the bootstrap standard error;
    ``p_noisy_holm``: Holm over the configurations of a split; ``claim``: "rejected" where that is below
    ``alpha``, else "not rejected". ``power_claim``: :func:`power_against` the claimed gain; ``mdd_zero``: the
    difference detected with 80% power (``bootstrap.csv``).
    """
    from .stats import holm
    sd = single.set_index(["split", "config"])["normal_sd"] if len(single) else pd.Series(dtype=float)
    rows = []
    for split, g in boot.groupby("split", sort=False):
        k = len(g)
        for r in g.itertuples():
            s = float(sd.get((split, r.config), float("nan")))
            as_large, p = noisy_claim_p(r.claimed_gain, r.mean_diff, r.se, s)
            rows.append(dict(split=split, config=r.config, claimed_gain=r.claimed_gain, mean_diff=r.mean_diff,
                             at_most=r.ci_high, single_sd=s, p_as_large=as_large, p_noisy=p,
                             power_claim=power_against(r.claimed_gain, r.se, alpha, k), mdd_zero=r.mdd_zero))
    out = pd.DataFrame(rows)
    if not len(out):
        return pd.DataFrame(columns=CLAIM_COLUMNS)
    out["p_noisy_holm"] = out.groupby("split")["p_noisy"].transform(lambda p: holm(p.to_numpy()))
    out["claim"] = ["rejected" if p < alpha else "not rejected" for p in out["p_noisy_holm"]]
    return out[CLAIM_COLUMNS]


# ---------------------------------------------------------------- the verdict: bullets, scope said once

def _list(rows, fmt) -> str:
    return "; ".join(fmt(r) for r in rows)


def _tested(table: pd.DataFrame, kind: str, alpha: float) -> str:
    """What one question's test shows, per split, from :func:`both_tests` rows (``kind``: "fixed" or "new")."""
    parts = []
    for split, g in table.groupby("split", sort=False):
        rows = list(g.itertuples())
        cis = _list(rows, lambda r: f"{r.config} {_pts(r.mean_diff)} [{_pts(getattr(r, kind + '_low'))}, "
                                    f"{_pts(getattr(r, kind + '_high'))}]")
        lower = [r for r in rows if getattr(r, kind + "_word") == "lower than dense"]
        higher = [r for r in rows if getattr(r, kind + "_word") == "higher than dense"]
        p = lambda r: getattr(r, kind + "_p_holm")  # noqa: E731
        said = []
        if lower:
            said.append(f"{_names([r.config for r in lower])} {'is' if len(lower) == 1 else 'are'} lower than dense "
                        f"(Holm p = {', '.join(_p(p(r)) for r in lower)})")
        if higher:
            said.append(f"{_names([r.config for r in higher])} {'is' if len(higher) == 1 else 'are'} higher than dense "
                        f"(Holm p = {', '.join(_p(p(r)) for r in higher)})")
        if not said:
            said.append(f"no configuration differs from dense (smallest Holm p = {_p(min(p(r) for r in rows))})")
        parts.append(f"{split} ({rows[0].n_sentences:,} sentences): {cis}; " + " and ".join(said))
    return "; ".join(parts)


CALIBRATION_METRICS = {"nll": ("NLL", "nats"), "brier": ("Brier score", ""), "ece": ("ECE (15 equal-mass bins)", "")}


def calibration_text(cal: pd.DataFrame, alpha: float = 0.05, scaling: str = "raw") -> str:
    """Per split and metric of :data:`CALIBRATION_METRICS` (rows of ``calibration.csv`` with reference ``baseline``
    and one of the paper's sparse configurations; the regularizer rows are another question): the range of the
    mean differences and what each question's test shows (:func:`_word` on ``t_p_holm`` and ``boot_p_holm``)."""
    from ..configs import CONFIGS
    c = cal[(cal["reference"] == "baseline") & (cal["scaling"] == scaling) & cal["config"].isin(CONFIGS)
            & cal["metric"].isin(CALIBRATION_METRICS)]
    parts = []
    for (split, metric), g in c.groupby(["split", "metric"], sort=False):
        name, unit = CALIBRATION_METRICS[metric]

        def shows(col):
            moved = [f"{r.config} {_word(getattr(r, col), r.mean_diff, alpha).split()[0]}" for r in g.itertuples()
                     if getattr(r, col) < alpha]
            return ", ".join(moved) if moved else "no difference detected"
        lo, hi = g["mean_diff"].min(), g["mean_diff"].max()
        span = f"{lo:+.3f}" if abs(hi - lo) < 5e-4 else f"{lo:+.3f} to {hi:+.3f}"
        parts.append(f"{split} {name} {span}{(' ' + unit) if unit else ''} (on these sentences: {shows('t_p_holm')}; "
                     f"on new sentences too: {shows('boot_p_holm')})")
    return "; ".join(parts)


def verdict(boot: pd.DataFrame, null: dict, fit: dict, *, model: str, protocol: str, seeds: list,
            reading: str, experiment: bool = True, alpha: float = 0.05, planned_seeds: int | None = None,
            readings: pd.DataFrame | None = None, comparisons: dict | None = None,
            single: pd.DataFrame | None = None, dynamics: pd.DataFrame | None = None,
            calibration: pd.DataFrame | None = None) -> str:
    """The verdict as Markdown: the plain sentence, the scope once, then one bullet per finding.

    Parameters
    ----------
    boot : DataFrame
        :func:`crisp.analysis.report.bootstrap_table` rows of one or more splits (on new sentences too).
    null : dict
        :func:`crisp.analysis.report.single_run_null` (single-run probabilities with no true effect, the paper's r).
    fit : dict
        config -> answer of :func:`crisp.analysis.mechanism.fit_answer`.
    model, protocol, seeds, reading :
        Named in the scope line (``reading``: :func:`reading_text` of the runs' crisp_config).
    alpha : float
        Family-wise level for the Holm-adjusted p-values.
    experiment : bool
        False for a smoke protocol: the text then says to read no conclusion into it.
    planned_seeds : int, optional
        With fewer seeds than planned the text says the verdict is provisional.
    readings : DataFrame, optional
        The padding study's readings table (``data/padding/<model>/readings.csv``).
    comparisons : dict, optional
        split -> :func:`crisp.analysis.report.comparison` (paired t over seeds, sentences fixed): the "on these sentences" bullet.
    single : DataFrame, optional
        :func:`crisp.analysis.report.single_run_table` rows: the claims bullet (:func:`claims`).
    dynamics : DataFrame, optional
        :func:`crisp.analysis.mechanism.dynamics_differences`: dev loss and dev accuracy named separately (else ``fit`` only).
    calibration : DataFrame, optional
        :func:`crisp.analysis.calibration_tables.differences`: the loss-and-calibration bullet (:func:`calibration_text`).
    """
    n = len(seeds)
    text = [plain_sentence(boot, model), ""]
    scope = (f"Scope: {model}, protocol {protocol}, {n} seed{'s' if n != 1 else ''} per configuration (paired), "
             f"Holm over the {boot['config'].nunique()} sparse configurations within a split; the runs test one "
             f"reading of the paper's method: {reading}.")
    if not experiment:
        scope += " These are smoke runs that check the pipeline, not the experiment: read no conclusion into them."
    if planned_seeds is not None and n < planned_seeds:
        scope += f" The grid is unfinished ({n} of the {planned_seeds} planned seeds): this verdict is provisional."
    text += [scope, ""]
    both = both_tests(boot, comparisons or {}, alpha)
    if comparisons:
        text.append(f"- **On these sentences** (sentences fixed, seeds resampled: paired t over the {n} seeds, 95% "
                    f"intervals, points): {_tested(both, 'fixed', alpha)}.")
    text.append(f"- **On new sentences too** (paired two-level bootstrap over seeds and sentences, B = "
                f"{boot['B'].iloc[0]}, 95% intervals, points): {_tested(both, 'new', alpha)}.")
    if single is not None and len(single):
        c = claims(boot, single, alpha)
        most = "; ".join(f"{s}: " + ", ".join(f"{r.config} {_pts(r.at_most)}" for r in g.itertuples())
                         for s, g in c.groupby("split", sort=False))
        text.append(f"- **How large a true gain is still possible** (upper ends of the 95% intervals on new "
                    f"sentences): at most {most} points.")
        rejected = c[c["claim"] == "rejected"]
        noisy = "; ".join(f"{s}: " + ", ".join(f"{r.config} {_pts(r.claimed_gain)} ({_pct(r.p_as_large)}, "
                                               f"Holm p = {_p(r.p_noisy_holm)})" for r in g.itertuples())
                          for s, g in c.groupby("split", sort=False))
        outcome = ("rejected for " + _names([f"{r.config} on {r.split}" for r in rejected.itertuples()])
                   if len(rejected) else "rejected for no configuration")
        text.append(f"- **The paper's claimed gains, counting their own noise.** Each is one run minus one run; with "
                    f"our single-run spread (sd of one run minus one run {_span(c.single_sd, False)} points) and our "
                    f"estimate as the true difference, a gain at least as large as claimed has the probability in "
                    f"brackets, and a one-sided test of claim against estimate that counts both noises gives the Holm "
                    f"p: {noisy}. At {100 * alpha:.0f}% the claim is {outcome}.")
        text.append("- **Power.** With 80% power at Holm's strictest level the design detects differences from zero of "
                    + "; ".join(f"{_span(g.mdd_zero, False)} points on {s}" for s, g in c.groupby("split", sort=False))
                    + "; its power against each claimed gain is "
                    + "; ".join(f"{_span_pct(g.power_claim)} on {s}" for s, g in c.groupby("split", sort=False)) + ".")
    if null:
        text.append(f"- **One run per configuration**, as in the paper's Table 1: with no true effect (our "
                    f"{null['n_baseline_runs']} baseline runs against each other, {null['split']}), three single runs "
                    f"all beat one baseline run, the best by at least {_pts(null['margin'])} points, in {null['hits']} of "
                    f"{null['arrangements']} arrangements ({100 * null['p_empirical']:.0f}%), and with probability "
                    f"{100 * null['p_normal']:.0f}% under a normal model of their spread (sd "
                    f"{_pts(null['baseline_sd'], False)} points); the paper's correlation of target sparsity with "
                    f"accuracy, r = {null['paper_pearson_r']:.2f} over its {null['paper_n']} runs, has p = "
                    f"{null['paper_pearson_p']:.3f}.")
    if dynamics is not None and len(dynamics):
        def ci(r, scale, unit):
            return f"{scale * r.mean_diff:+.3f} [{scale * r.ci_low:+.3f}, {scale * r.ci_high:+.3f}]{unit}"
        per = []
        for config, g in dynamics.groupby("config", sort=False):
            m = g.set_index("measure")
            per.append(f"{config} dev loss {ci(m.loc['dev_loss'], 1, ' nats')}, dev accuracy "
                       f"{ci(m.loc['dev_accuracy'], 100, ' points')}, training loss {ci(m.loc['train_loss'], 1, ' nats')}"
                       f": {g['answer'].iloc[0]}")
        text.append("- **Loss and accuracy, each on its own** (sparse minus dense, paired 95% t intervals over seeds of "
                    "the final-epoch training loss and the dev loss and accuracy; the answer by the rule of "
                    "crisp.analysis.mechanism.fit_answer): " + "; ".join(per) + ".")
    elif fit:
        groups = {}
        for config, answer in fit.items():
            groups.setdefault(answer, []).append(config)
        said = "; ".join(f"{answer} for {_names(configs)}" for answer, configs in groups.items())
        text.append(f"- **Loss and accuracy** (paired 95% t intervals of final-epoch training loss and accuracy, dev "
                    f"loss and dev accuracy, each read on its own): {said}.")
    if calibration is not None and len(calibration):
        said = calibration_text(calibration, alpha)
        if said:
            text.append(f"- **Loss and calibration** (per-sentence probabilities; sparse minus dense, before "
                        f"temperature scaling; both questions, Holm over the configurations): {said}.")
    if readings is not None:
        fact = readings_fact(readings)
        targets = " and ".join(f"{100 * t:.0f}%" for t in fact["targets"])
        if fact["max"] < NO_PRUNING:
            text.append(f"- **Another reading of the paper.** Under mask-first pad-to-512 (the padding mask written "
                        f"into the scores before the threshold), the realized sparsity over real (query, key) pairs "
                        f"measured on {model} ({_measured(fact)}) is at most {100 * fact['max']:.2g}% at targets "
                        f"{targets}: no real key is pruned, so the paper's sparse models would be its dense model and "
                        f"its Table 1 gains differences between single runs of one model.")
        else:
            text.append(f"- **Another reading of the paper.** Under mask-first pad-to-512, the realized sparsity over "
                        f"real (query, key) pairs measured on {model} reaches {100 * fact['max']:.1f}% at targets "
                        f"{targets} (largest per reading: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in
                                                                       fact["max_by_reading"].items())
                        + "), so that reading does prune real keys.")
    return "\n".join(text)


def _span(values, sign: bool = True) -> str:
    lo, hi = min(values), max(values)
    return f"{_pts(lo, sign)}" if abs(hi - lo) < 5e-5 else f"{_pts(lo, sign)} to {_pts(hi, sign)}"


def _pct(x: float) -> str:
    return "<1%" if x < 0.005 else f"{100 * x:.0f}%"


def _span_pct(values) -> str:
    lo, hi = 100 * min(values), 100 * max(values)
    return f"{lo:.0f}%" if round(lo) == round(hi) else f"{lo:.0f}% to {hi:.0f}%"


def headline(boot: pd.DataFrame, *, model: str, protocol: str, n_seeds: int, hardware: str,
             readings: pd.DataFrame | None = None, alpha: float = 0.05, planned_seeds: int | None = None,
             comparisons: dict | None = None, single: pd.DataFrame | None = None) -> str:
    """The verdict for the top of the book (under 60 words): :func:`plain_sentence`, then one technical sentence.

    The technical sentence says what each question's test shows (on these sentences: ``comparisons``, the paired t
    over seeds; on new sentences too: the two-level bootstrap, Holm at ``alpha``) and, with ``single``, whether a
    claimed gain is rejected once its own single-run noise is counted (:func:`claims`). With fewer seeds than
    ``planned_seeds`` it opens with "Provisional". ``model``, ``protocol``, ``hardware`` and ``readings`` are named
    on the page next to it, not here.
    """
    both = both_tests(boot, comparisons or {}, alpha)

    def shows(kind: str) -> str:
        moved = [f"{_names(order(g.config))} {w.split()[0]} on {s}" for s, g0 in both.groupby("split", sort=False)
                 for w in ("lower than dense", "higher than dense")
                 for g in [g0[g0[kind + "_word"] == w]] if len(g)]
        return "; ".join(moved) if moved else "no difference detected"
    parts = []
    if comparisons:
        parts.append(f"on these sentences (paired t, Holm): {shows('fixed')}")
    parts.append(f"on new sentences too (bootstrap): {shows('new')}")
    if single is not None and len(single):
        c = claims(boot, single, alpha)
        rej = c[c["claim"] == "rejected"]
        parts.append("claims (single-run noise counted): "
                     + (f"rejected for {_names([f'{r.config} on {r.split}' for r in rej.itertuples()])}" if len(rej)
                        else "none rejected"))
    lead = (f"Provisional ({n_seeds} of {planned_seeds} planned seeds). " if planned_seeds and n_seeds < planned_seeds
            else "")
    tech = "; ".join(parts)
    return f"{lead}{plain_sentence(boot, model)} {tech[0].upper()}{tech[1:]}."


# ---------------------------------------------------------------- judgements the chapters state, from numbers

RARE, UNUSUAL = 0.01, 0.05  # a chance below 1% is "rare", from 1% to 5% "unusual", from 5% on "not unusual"
SMALL_SHARE, LARGE_SHARE = 0.25, 0.75  # a part below a quarter of the whole is "mostly" the rest; above 3/4 "mostly" it


def how_often(p: float) -> str:
    """A probability in words: ``"about one time in 6: not unusual"`` (thresholds :data:`RARE`, :data:`UNUSUAL`)."""
    if not p > 0:
        return "never: rare"
    word = "rare" if p < RARE else "unusual" if p < UNUSUAL else "not unusual"
    return f"about one time in {max(1, round(1 / p)):,}: {word}"


def trained_share(dense: float, used: float) -> str:
    """What share of the entropy drop in the attention a sparse model *uses* (``used``, nats, pruning included) is
    already in the attention it *computes* (``dense``: learned in training), in words (thresholds
    :data:`SMALL_SHARE`, :data:`LARGE_SHARE`)."""
    if used == 0 or dense / used <= 0:
        return ("the attention the model computes does not move in the same direction, so the sharper attention the "
                "model uses is the pruning itself")
    r = dense / used
    if r < SMALL_SHARE:
        return f"the learned part is {100 * r:.0f}% of it, so the sharper attention the model uses is mostly the pruning itself"
    if r <= LARGE_SHARE:
        return f"the learned part is {100 * r:.0f}% of it: partly the pruning, partly learned"
    return f"the learned part is {100 * r:.0f}% of it, so the sharper attention is mostly learned, not the pruning itself"


MANY_TIMES, SEVERAL_TIMES = 10, 2  # a cost this many times a saving is "many times" / "several times" what it saves


def cost_comparison(extra: float, saved: float) -> str:
    """Padding's extra time (``extra``: fraction of a dynamic-padding epoch, 2.0 = three times as long) against the
    largest saving of sparsity (``saved``: fraction of a layer's FLOPs), in words (:data:`MANY_TIMES`,
    :data:`SEVERAL_TIMES`)."""
    if not saved > 0:
        return f"padding every sentence to 512 adds {100 * extra:,.0f}% to an epoch's time, and sparsity saves nothing"
    r = extra / saved
    word = ("many times what" if r >= MANY_TIMES else "several times what" if r >= SEVERAL_TIMES
            else "more than what" if r > 1 else "less than what")
    return (f"padding every sentence to 512 adds {100 * extra:,.0f}% to a training epoch's time, while 80% sparsity saves "
            f"at most {100 * saved:.1f}% of a layer's FLOPs by the paper's own accounting: the padding costs {word} the "
            f"sparsity could save ({r:,.0f} times)")
