"""Crisp attention inside Hugging Face models: an ``AttentionInterface`` function and ``enable``.

``import crisp`` registers the implementation name ``"crisp"`` with transformers'
``AttentionInterface`` *and* ``AttentionMaskInterface`` (with only the first, transformers 5 hands
the function ``attention_mask=None`` and padding would be ignored). So
``AutoModel.from_pretrained(..., attn_implementation="crisp")`` runs the dense rule through our
code path, and ``crisp.enable(model, config)`` switches any loaded BERT/DistilBERT-family model to
Crisp attention with a configuration, whatever implementation it was loaded with.
"""

from __future__ import annotations


import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from .adaptive import SparsityController
from .attention import masked_softmax, topk_keep_mask
from .configs import CrispConfig

NAME = "crisp"


class CrispState:
    """What Crisp attention needs at run time, shared by every attention layer of one model.

    Holds the sparsity controller (each layer's current ratio) and the statistics it records:
    realized sparsity per layer over real entries (always, cheap), and per-head entropy of the
    dense and of the sparse distribution (only while ``record_entropy`` is True).
    """

    def __init__(self, config: CrispConfig, n_layers: int, n_heads: int):
        self.config = config
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.controller = SparsityController(config, n_layers)
        self.record_sparsity = True  # realized sparsity of training batches (cheap)
        self.record_eval = False  # ... and of evaluation batches too
        self.record_entropy = False  # per-head entropies (an analysis pass; implies record_eval)
        self.reset_stats()

    # -- statistics ----------------------------------------------------------------------------
    def reset_stats(self) -> None:
        self.kept = [0.0] * self.n_layers  # kept real entries, summed over forwards
        self.real = [0.0] * self.n_layers  # real entries (real query x real key)
        self.ratio_sum = [0.0] * self.n_layers  # target ratio, summed over training forwards
        self.forwards = [0] * self.n_layers
        self.entropy_dense = torch.zeros(self.n_layers, self.n_heads, dtype=torch.float64)
        self.entropy_sparse = torch.zeros(self.n_layers, self.n_heads, dtype=torch.float64)
        self.entropy_rows = torch.zeros(self.n_layers, self.n_heads, dtype=torch.float64)

    def sparsity_summary(self) -> list[dict]:
        """Per layer: mean target ratio and realized sparsity over real entries since the last reset."""
        rows = []
        for layer in range(self.n_layers):
            target = self.ratio_sum[layer] / self.forwards[layer] if self.forwards[layer] else self.controller.ratios[layer]
            kept, real = float(self.kept[layer]), float(self.real[layer])
            realized = 1.0 - kept / real if real else float("nan")
            rows.append({"layer": layer, "target_sparsity": target, "realized_sparsity": realized})
        return rows

    def entropy_summary(self) -> list[dict]:
        """Per layer and head: mean entropy (nats) over real query rows, dense and sparse."""
        rows = []
        for layer in range(self.n_layers):
            for head in range(self.n_heads):
                n = float(self.entropy_rows[layer, head])
                rows.append({
                    "layer": layer,
                    "head": head,
                    "entropy_dense": float(self.entropy_dense[layer, head]) / n if n else float("nan"),
                    "entropy_sparse": float(self.entropy_sparse[layer, head]) / n if n else float("nan"),
                    "rows": int(n),
                })
        return rows

    # -- the attention rule for one layer --------------------------------------------------------
    def attend(self, layer: int, scores: torch.Tensor, key_mask, training: bool) -> torch.Tensor:
        cfg = self.config
        ratio = self.controller.ratios[layer]
        keep = topk_keep_mask(scores, ratio, key_mask, cfg.granularity, count_padding=cfg.paper_padding)
        probs = masked_softmax(scores, keep)
        measure = self.controller.adaptive and training
        count = self.record_sparsity and (training or self.record_eval or self.record_entropy)
        if count or measure or self.record_entropy:  # otherwise (e.g. plain evaluation) nothing is recorded
            self._record(layer, scores, key_mask, keep, probs, ratio, training, measure, count)
        return probs

    @torch.no_grad()
    def _record(self, layer, scores, key_mask, keep, probs, ratio, training, measure, count):
        shape = scores.shape  # [B, H, Lq, Lk]
        real = keep.new_ones(()).expand(shape) if key_mask is None else key_mask.expand(shape)
        qreal = real.diagonal(dim1=-2, dim2=-1) if shape[-1] == shape[-2] else real.any(-1)  # [B, H, Lq]
        rows = qreal & real.any(-1)
        if count:
            valid = real & rows[..., None]
            self.kept[layer] += (keep & valid).sum()  # tensors: no device sync per forward
            self.real[layer] += valid.sum()
            if training:
                self.ratio_sum[layer] += ratio
                self.forwards[layer] += 1
        if not (measure or self.record_entropy):
            return
        dense = masked_softmax(scores, real).float()
        h_dense = _entropy(dense)  # [B, H, Lq]
        if measure:
            n = real.sum(-1).float()  # [B, H, Lq]
            usable = rows & (n > 1)
            norm = h_dense / torch.log(n.clamp_min(2.0))
            conc = 1.0 - norm[usable].mean() if usable.any() else torch.tensor(0.0)
            self.controller.observe(layer, conc)
        if self.record_entropy:
            h_sparse = _entropy(probs.float())
            w = rows.to(torch.float64)
            self.entropy_dense[layer] += (h_dense.double() * w).sum(dim=(0, 2)).cpu()
            self.entropy_sparse[layer] += (h_sparse.double() * w).sum(dim=(0, 2)).cpu()
            self.entropy_rows[layer] += w.sum(dim=(0, 2)).cpu()


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) over the last axis, with 0 log 0 = 0."""
    return -(p * torch.log(p.clamp_min(1e-30))).sum(-1)


def _key_mask(attention_mask):
    """Bool mask (True = attend) from what transformers passes: bool, additive float, or None."""
    if attention_mask is None or attention_mask.dtype == torch.bool:
        return attention_mask
    return attention_mask > torch.finfo(attention_mask.dtype).min / 2


def crisp_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """``AttentionInterface`` function: scores → Crisp top-k softmax → dropout → weighted values.

    ``query``/``key``/``value`` are ``[B, H, L, D]``; returns ``([B, L, H, D], probs [B, H, Lq, Lk])``,
    the contract of transformers' ``eager_attention_forward``. A module that ``crisp.enable`` has
    not touched runs dense (sparsity 0).
    """
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # [B, H, Lq, Lk]
    key_mask = _key_mask(attention_mask)
    state = getattr(module, "crisp_state", None)
    if state is None:
        probs = masked_softmax(scores, key_mask.expand(scores.shape) if key_mask is not None else torch.ones_like(scores, dtype=torch.bool))
    else:
        probs = state.attend(module.crisp_layer, scores, key_mask, module.training)
    probs = torch.nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(probs, value).transpose(1, 2).contiguous()  # [B, Lq, H, D]
    return out, probs


def register() -> None:
    """Register ``"crisp"`` with transformers (idempotent; done on ``import crisp``)."""
    AttentionInterface.register(NAME, crisp_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # bool [B, 1, Lq, Lk], True = attend


def attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The self-attention modules of a BERT/DistilBERT-family model, in layer order."""
    return [
        m for m in model.modules()
        if type(m).__name__.endswith("SelfAttention") and hasattr(m, "scaling") and hasattr(m, "config")
    ]


def enable(model: torch.nn.Module, config: CrispConfig) -> CrispState:
    """Switch ``model`` to Crisp attention with ``config``; returns the shared :class:`CrispState`.

    Gives every attention layer its index and the state (current ratio, statistics), sets the
    model's attention implementation to ``"crisp"`` whatever it was loaded with, and hooks the
    model's forward so adaptive ratios are reallocated before every training batch. Calling it
    again replaces the previous configuration.
    """
    if not isinstance(config, CrispConfig):
        raise TypeError(f"config must be a crisp.CrispConfig (e.g. crisp.CONFIGS['baseline']), got {type(config).__name__}")
    layers = attention_modules(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no BERT/DistilBERT-style self-attention modules to enable Crisp on")
    register()
    model.set_attn_implementation(NAME)
    n_heads = getattr(layers[0], "num_attention_heads", None) or getattr(layers[0], "n_heads")
    state = CrispState(config, n_layers=len(layers), n_heads=n_heads)
    for index, module in enumerate(layers):
        module.crisp_layer = index
        module.crisp_state = state
    old = getattr(model, "_crisp_hook", None)
    if old is not None:
        old.remove()
    model._crisp_hook = model.register_forward_pre_hook(lambda mod, args: state.controller.step() if mod.training else None)
    model.crisp_state = state
    return state


register()
