"""The paper's four configurations (Section 3.3) and the dataclass that describes any other."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .attention import check_granularity, check_sparsity

STRATEGIES = ("uniform", "adaptive")


@dataclass(frozen=True)
class CrispConfig:
    """How Crisp attention prunes. Every field is saved with each run.

    The adaptive strategy is ours (the paper gives no rule): see :mod:`crisp.adaptive`.
    """

    name: str = "custom"
    sparsity: float = 0.0  # target fraction of real attention entries pruned, mean over layers
    strategy: str = "uniform"  # "uniform": every layer at `sparsity`; "adaptive": per-layer ratios, mean = `sparsity`
    granularity: str = "row"  # "row": top-k per query row; "head": percentile per (batch, head), see crisp.attention
    paper_padding: bool = False  # pad to max_length and let padding keys compete in the top-k (paper's setup)
    min_layer_sparsity: float = 0.0  # adaptive: clip of each layer's ratio
    max_layer_sparsity: float = 0.95
    ema_decay: float = 0.9  # adaptive: weight of the past in each layer's running concentration

    def __post_init__(self):
        check_sparsity(self.sparsity)
        check_granularity(self.granularity)
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        check_sparsity(self.min_layer_sparsity)
        check_sparsity(self.max_layer_sparsity)
        if not self.min_layer_sparsity <= self.sparsity <= self.max_layer_sparsity:
            raise ValueError(
                f"sparsity {self.sparsity} must lie within [min_layer_sparsity, max_layer_sparsity] = "
                f"[{self.min_layer_sparsity}, {self.max_layer_sparsity}]"
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")

    def replace(self, **changes) -> "CrispConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown CrispConfig field(s): {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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
