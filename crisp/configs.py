"""The paper's four configurations (Section 3.3) and the dataclass that describes any other."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .attention import check_granularity, check_keep, check_sparsity

STRATEGIES = ("uniform", "adaptive")


@dataclass(frozen=True)
class CrispConfig:
    """How Crisp attention prunes. Every field is saved with each run.

    The adaptive strategy is ours (the paper gives no rule): see :mod:`crisp.adaptive`. Fields added
    after the paper's runs (``keep``, ``cross_attention``, ``sparsity`` as a per-layer list) default
    to what those runs did.
    """

    name: str = "custom"
    sparsity: float | tuple = 0.0  # fraction of real entries pruned (mean over layers); or one ratio per layer (uniform)
    strategy: str = "uniform"  # "uniform": every layer at `sparsity`; "adaptive": per-layer ratios, mean = `sparsity`
    granularity: str = "row"  # "row": top-k per query row; "head": percentile per (batch, head), see crisp.attention
    paper_padding: bool = False  # pad to max_length and let padding keys compete in the top-k (paper's setup)
    min_layer_sparsity: float = 0.0  # adaptive: clip of each layer's ratio
    max_layer_sparsity: float = 0.95
    ema_decay: float = 0.9  # adaptive: weight of the past in each layer's running concentration
    keep: int | None = None  # keep exactly min(keep, n) keys per query row instead of a fraction (row, uniform, sparsity 0)
    cross_attention: bool = False  # prune encoder-decoder cross-attention too (default: it stays dense)
    query_chunk: int | str | None = "auto"  # long contexts: query rows per chunk (linear memory, crisp.longcontext);
    # "auto": chunks from crisp.longcontext.AUTO_LENGTH keys on (row granularity only); None: never chunk

    def __post_init__(self):
        if isinstance(self.sparsity, (list, tuple)):
            if not self.sparsity:
                raise ValueError("sparsity as a list needs one ratio per attention layer, got an empty list")
            object.__setattr__(self, "sparsity", tuple(check_sparsity(s) for s in self.sparsity))
            if self.strategy != "uniform":
                raise ValueError("per-layer sparsity (a list) is fixed by you: use it with strategy='uniform'")
        else:
            check_sparsity(self.sparsity)
        check_granularity(self.granularity)
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if check_keep(self.keep) is not None and (
            self.mean_sparsity != 0.0 or self.granularity != "row" or self.strategy != "uniform" or self.paper_padding
        ):
            raise ValueError(
                f"keep={self.keep!r} fixes the keys kept per query row: give it with sparsity=0, granularity='row', "
                f"strategy='uniform' and paper_padding=False"
            )
        chunk = self.query_chunk
        if not (chunk is None or chunk == "auto" or (isinstance(chunk, int) and not isinstance(chunk, bool) and chunk > 0)):
            raise ValueError(f"query_chunk must be a positive number of query rows, 'auto' or None, got {chunk!r}")
        if isinstance(chunk, int) and self.granularity == "head":
            raise ValueError(f"query_chunk={chunk} computes query rows in chunks, but granularity='head' ranks every row "
                             f"of a head at once; use granularity='row', or query_chunk=None (quadratic memory)")
        if not isinstance(self.cross_attention, bool):
            raise ValueError(f"cross_attention must be True or False, got {self.cross_attention!r}")
        check_sparsity(self.min_layer_sparsity)
        check_sparsity(self.max_layer_sparsity)
        if not self.min_layer_sparsity <= self.mean_sparsity <= self.max_layer_sparsity:
            raise ValueError(
                f"sparsity {self.sparsity} must lie within [min_layer_sparsity, max_layer_sparsity] = "
                f"[{self.min_layer_sparsity}, {self.max_layer_sparsity}]"
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")

    @property
    def mean_sparsity(self) -> float:
        """``sparsity``, or the mean of the per-layer ratios when it is a list."""
        s = self.sparsity
        return sum(s) / len(s) if isinstance(s, tuple) else s

    def layer_ratios(self, n_layers: int) -> list[float]:
        """The starting ratio of each of ``n_layers`` layers (checks a per-layer list's length)."""
        if isinstance(self.sparsity, tuple):
            if len(self.sparsity) != n_layers:
                raise ValueError(
                    f"sparsity lists {len(self.sparsity)} ratios but the model has {n_layers} Crisp attention layers"
                )
            return list(self.sparsity)
        return [self.sparsity] * n_layers

    @classmethod
    def from_dict(cls, values: dict) -> "CrispConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown CrispConfig field(s): {sorted(unknown)}")
        return cls(**values)

    def replace(self, **changes) -> "CrispConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown CrispConfig field(s): {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        if isinstance(self.sparsity, tuple):
            out["sparsity"] = list(self.sparsity)  # JSON-friendly
        return out


CONFIGS: dict[str, CrispConfig] = {
    "baseline": CrispConfig("baseline", 0.0, "uniform"),  # dense, through the same code path
    "uniform_sparse": CrispConfig("uniform_sparse", 0.8, "uniform"),
    "light_sparse": CrispConfig("light_sparse", 0.6, "adaptive"),
    "aggressive_sparse": CrispConfig("aggressive_sparse", 0.8, "adaptive"),
}


def get_config(name: str, **overrides) -> CrispConfig:
    """One of :data:`CONFIGS` by name, with optional field overrides (e.g. ``granularity="head"``)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown configuration {name!r}; choose one of {', '.join(CONFIGS)}")
    return CONFIGS[name].replace(**overrides) if overrides else CONFIGS[name]
