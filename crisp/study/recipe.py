"""A run's recipe, and the protocol name that spells it out.

A protocol is a named preset (:data:`crisp.study.train.PROTOCOLS`). A run whose recipe differs from its preset is
named by the preset plus one tag per difference, in a fixed order, so two runs share a protocol folder only
if they share a recipe::

    small                 the preset as it is
    small-n200-b64        200 training sentences, 64 sentences per optimizer step (16 x 4 or 64 x 1 alike)
    full-e1-lr3e-05       one epoch at learning rate 3e-5, everything else the paper's

Tags: ``n<sentences>`` (``nall``: the whole split), ``random``/``stratified`` (how the subset is drawn),
``ds<data seed>``, ``e<epochs>``, ``b<sentences per optimizer step>``, ``lr<rate>``, ``len<max length>``,
``wd<weight decay>``, ``wu<warmup steps>``, ``clip<max grad norm>``, ``grouped``/``ungrouped`` (length grouping).

Not in the protocol name: how a step's sentences are split into micro-batches (only the product is part of
the recipe, see the README's "Micro-batching is not part of the recipe"), the logging and checkpoint
cadence and the evaluation batch size (they change no weight), and what the configuration's label already
carries: granularity, paper padding, precision and the regularizer knobs (``baseline-bf16``,
``baseline-ls0.2``). :func:`identity` is the recipe plus those: what a finished run is compared on.
"""

from __future__ import annotations

# Recipe fields of crisp.study.train.TrainConfig, in tag order, each with its tag; "step_sentences" is
# batch_size x grad_accum x processes.
TAGS = {
    "train_size": lambda v: "nall" if v is None else f"n{v}",
    "subset": lambda v: str(v),
    "data_seed": lambda v: f"ds{v}",
    "epochs": lambda v: f"e{v:g}",
    "step_sentences": lambda v: f"b{v}",
    "learning_rate": lambda v: f"lr{v:g}",
    "max_length": lambda v: f"len{v}",
    "weight_decay": lambda v: f"wd{v:g}",
    "warmup_steps": lambda v: f"wu{v}",
    "max_grad_norm": lambda v: f"clip{v:g}",
    "group_by_length": lambda v: "grouped" if v else "ungrouped",
}
LABEL_FIELDS = ("config", "granularity", "paper_padding", "precision", "attention_dropout", "label_smoothing")


class RecipeMismatchError(ValueError):
    """Runs that would be compared (or skipped as done) were trained with different recipes."""


def _settings(settings: dict) -> dict:
    """``settings`` (a TrainConfig as a dict, possibly from an older run) with every missing field at its default."""
    import dataclasses

    from .train import TrainConfig, knob_values

    filled = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    filled.update({k: v for k, v in knob_values(settings.get("config", "baseline")).items()})
    filled.update({k: v for k, v in settings.items() if v is not None or k not in ("attention_dropout",
                                                                                     "label_smoothing")})
    return filled


def recipe(settings: dict, world_size: int = 1) -> dict:
    """The protocol-level recipe of ``settings``: every field of :data:`TAGS`, defaults filled in."""
    s = _settings(settings)
    out = {}
    for field in TAGS:
        if field == "step_sentences":
            out[field] = s["batch_size"] * s["grad_accum"] * world_size
        else:
            value = s[field]
            out[field] = float(value) if field in ("epochs", "learning_rate", "weight_decay", "max_grad_norm") else value
    return out


def preset_of(protocol: str) -> str:
    """The preset a protocol name starts from: ``small`` for ``small-n200-b64`` (and for the old ``small-custom``)."""
    return protocol.split("-", 1)[0]


def preset_recipe(preset: str) -> dict:
    from .train import PROTOCOLS

    if preset not in PROTOCOLS:
        raise ValueError(f"unknown protocol {preset!r}; choose one of {', '.join(PROTOCOLS)}")
    return recipe(PROTOCOLS[preset])


def protocol_name(preset: str, settings: dict, world_size: int = 1) -> str:
    """``preset`` plus a tag for every recipe field of ``settings`` that differs from the preset's."""
    wanted, mine = preset_recipe(preset), recipe(settings, world_size)
    return "-".join([preset] + [TAGS[k](mine[k]) for k in TAGS if mine[k] != wanted[k]])


def identity(settings: dict, world_size: int = 1) -> dict:
    """What makes two runs the same experiment: the recipe plus the fields the configuration label carries."""
    s = _settings(settings)
    return {**recipe(s, world_size), **{k: s[k] for k in LABEL_FIELDS}}


def of_run(metrics: dict) -> dict:
    """:func:`identity` of a finished run, from its ``metrics.json`` (``train_config`` and ``world_size``)."""
    return identity(metrics.get("train_config") or {}, int(metrics.get("world_size") or 1))


def differences(mine: dict, other: dict) -> list[str]:
    """``["train_size 200 vs 4000", ...]``: the fields on which two recipes (or identities) differ."""
    return [f"{k} {mine.get(k)!r} vs {other.get(k)!r}" for k in mine if mine.get(k) != other.get(k)]


def check_same(runs: dict, ignore=("config",)) -> None:
    """Refuse runs that do not share one recipe; ``runs``: ``{name: identity}``. The error names the difference."""
    items = list(runs.items())
    if not items:
        return
    (first, reference), strip = items[0], lambda d: {k: v for k, v in d.items() if k not in ignore}
    for name, other in items[1:]:
        diff = differences(strip(other), strip(reference))
        if diff:
            raise RecipeMismatchError(f"runs with different recipes cannot be paired: {name} differs from {first} "
                                      f"in {'; '.join(diff)}")
