"""Per-layer sparsity ratios: the uniform rule and our adaptive rule.

The paper (Section 3.3) says only that in ``light_sparse`` and ``aggressive_sparse`` "each layer
determines its own pruning threshold to achieve a target average sparsity", re-calculated for each
batch. It gives no rule. Ours is causal and data-driven:

1. While training, every layer measures the *concentration* of its dense attention on the current
   batch: ``c = 1 - H(p) / log(n)``, the normalised entropy of each real query row's dense softmax
   over its ``n`` real keys, averaged over rows and heads (rows with one key are skipped).
   ``c`` is 0 for uniform attention and 1 for one-hot attention.
2. A running average (EMA, decay 0.9) of ``c`` per layer is kept over earlier batches.
3. Before each training batch, ratios are allocated in proportion to that running concentration
   (a layer whose attention is already peaked loses least by pruning), shifted by one common
   constant so that after clipping each to ``[0, 0.95]`` their mean equals the target exactly
   (:func:`allocate`). The first batch, with no history, uses the target everywhere.
4. The threshold itself (the top-k) is always taken on the current batch's scores.

Evaluation batches use the ratios reached so far and do not update them. Whether early layers end
up less sparse (as the paper saw) is measured, not built in.
"""

from __future__ import annotations

import torch

from .configs import CrispConfig
from .distributed import mean_across_ranks


def allocate(concentration, target: float, low: float = 0.0, high: float = 0.95, tol: float = 1e-7) -> list[float]:
    """Per-layer ratios proportional to ``concentration`` with mean ``target``, each in ``[low, high]``.

    ``raw_l = target * c_l / mean(c)``; then a common shift ``t`` is found by bisection so that
    ``mean(clip(raw_l + t, low, high)) == target`` (within ``tol``). If all concentrations are equal
    (or zero) every layer gets ``target``.
    """
    c = torch.as_tensor(concentration, dtype=torch.float64).clamp_min(0.0)
    if not low <= target <= high:
        raise ValueError(f"target {target} outside [{low}, {high}]")
    mean = c.mean()
    if c.numel() == 0:
        return []
    if mean <= 0 or torch.allclose(c, c[0].expand_as(c)):
        return [float(target)] * c.numel()
    raw = target * c / mean
    lo_t, hi_t = low - float(raw.max()), high - float(raw.min())
    for _ in range(200):  # mean(clip(raw + t)) is monotone in t
        mid = 0.5 * (lo_t + hi_t)
        if float((raw + mid).clamp(low, high).mean()) < target:
            lo_t = mid
        else:
            hi_t = mid
        if hi_t - lo_t < tol:
            break
    return [float(v) for v in (raw + 0.5 * (lo_t + hi_t)).clamp(low, high)]


class SparsityController:
    """Each layer's current sparsity ratio, updated before every training batch when adaptive."""

    def __init__(self, config: CrispConfig, n_layers: int):
        self.config = config
        self.n_layers = n_layers
        self.ratios = config.layer_ratios(n_layers)  # one ratio per layer (a per-layer list is checked here)
        self.running = None  # EMA of concentration per layer, None before the first batch
        self._tensor = None  # the ratios as a float64 tensor, for torch.compile (see ratio_tensor)
        self._batch = [None] * n_layers  # concentration measured on the batch in flight

    @property
    def adaptive(self) -> bool:
        return self.config.strategy == "adaptive" and self.config.sparsity > 0

    def ratio_tensor(self, device) -> torch.Tensor:
        """The current ratios as a float64 tensor on ``device``, updated in place by :meth:`step`
        (under ``torch.compile`` a changing Python float would recompile the graph every step)."""
        if self._tensor is None or self._tensor.device != torch.device(device):
            self._tensor = torch.tensor(self.ratios, dtype=torch.float64, device=device)
        return self._tensor

    def _sync_tensor(self) -> None:
        if self._tensor is not None:
            with torch.no_grad():
                self._tensor.copy_(torch.tensor(self.ratios, dtype=torch.float64))

    def observe(self, layer: int, concentration: torch.Tensor) -> None:
        """Record layer ``layer``'s concentration on the current batch (a 0-d tensor)."""
        self._batch[layer] = concentration

    def step(self) -> None:
        """Fold the last batch's measurements into the running averages and reallocate ratios."""
        if not self.adaptive or any(v is None for v in self._batch):
            self._batch = [None] * self.n_layers
            return
        # data parallel: every rank measured its own shard; average so that all ranks allocate the same ratios
        measured = mean_across_ranks(torch.stack([torch.as_tensor(v, dtype=torch.float64).cpu() for v in self._batch]))
        measured = [float(v) for v in measured]
        self._batch = [None] * self.n_layers
        if self.running is None:
            self.running = measured
        else:
            d = self.config.ema_decay
            self.running = [d * r + (1 - d) * m for r, m in zip(self.running, measured)]
        self.ratios = allocate(
            self.running, self.config.sparsity, self.config.min_layer_sparsity, self.config.max_layer_sparsity
        )
        self._sync_tensor()

    def state_dict(self) -> dict:
        return {"ratios": list(self.ratios), "running": None if self.running is None else list(self.running)}

    def load_state_dict(self, state: dict) -> None:
        self.ratios = [float(v) for v in state["ratios"]]
        self.running = None if state["running"] is None else [float(v) for v in state["running"]]
        self._batch = [None] * self.n_layers
        self._sync_tensor()
