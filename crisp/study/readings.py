"""Every reading of the paper's padding, as pure functions on attention scores.

Gandhi & Gandhi (2025), Section 3.2 and 4.1: sentences are padded to 512 tokens, and "prior to the
softmax" the scores below "the s-th percentile of the scores of each head" are set to ``-inf``.
Where padding enters that rule is not said. In Hugging Face's eager BERT/DistilBERT attention the
padding mask is an additive float tensor (0 for real keys, ``finfo(dtype).min`` for padding keys,
shape ``[B, 1, L_q, L_k]``) added to the scores right before the softmax, exactly where a
threshold "prior to the softmax" would go. The readings (ids as in ``data/padding``):

``dynamic-row``
    ours (the trained runs): dynamic padding, each real query row keeps its top
    ``max(1, n - floor(s*n))`` of its ``n`` real keys; padding never competes.
``pad512-raw-row`` / ``pad512-raw-head``
    pad to 512, padding keys compete on their *raw* scores (the mask is applied after the top-k),
    k from all 512 keys (row) or the ``floor(s*N)`` lowest of the head's real-query entries
    pruned (head); :func:`crisp.attention.topk_keep_mask` with ``count_padding=True``.
``pad512-maskfirst-{finfo,inf}-row``
    pad to 512, add the mask first (``finfo.min`` as HF writes it, or ``-inf``), then keep the top
    ``k = 512 - floor(s*512)`` of each row of the masked scores.
``pad512-maskfirst-{finfo,inf}-head``
    pad to 512, add the mask first, then the literal rule: ``q = torch.quantile(x_head, s)`` over
    the head's ``512 x 512`` masked scores and every entry ``x < q`` set to ``-inf``.
``dynamic-maskfirst-row`` / ``dynamic-maskfirst-head``
    the same two mask-first rules (``finfo.min``) with dynamic padding: ``L`` is the longest
    sentence of the batch, so a sentence's sparsity depends on its batch-mates.

Every reading returns ``(probs, keep)``: ``keep`` the bool mask of entries the rule keeps,
``probs = softmax`` over the kept entries (exactly 0 elsewhere). When a mask-first rule keeps every
real key its probabilities are *bitwise* those of HF's dense ``softmax(scores + mask)``: the
padding entries contribute ``exp(finfo.min - max) = exp(-inf) = 0`` to the same sums either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..attention import check_sparsity, key_mask_of, masked_softmax, topk_keep_mask

MASK_VALUES = ("finfo.min", "-inf", "none")


@dataclass(frozen=True)
class Reading:
    """One reading: how sentences are padded and where the padding mask enters the threshold."""

    id: str
    padding: str  # "dynamic" | "pad512"
    mask_first: bool  # mask added to the scores before the threshold
    mask_value: str  # "finfo.min" | "-inf" | "none" (mask applied after the threshold)
    granularity: str  # "row" | "head"


READINGS = {r.id: r for r in (
    Reading("dynamic-row", "dynamic", False, "none", "row"),
    Reading("pad512-raw-row", "pad512", False, "none", "row"),
    Reading("pad512-raw-head", "pad512", False, "none", "head"),
    Reading("pad512-maskfirst-finfo-row", "pad512", True, "finfo.min", "row"),
    Reading("pad512-maskfirst-finfo-head", "pad512", True, "finfo.min", "head"),
    Reading("pad512-maskfirst-inf-row", "pad512", True, "-inf", "row"),
    Reading("pad512-maskfirst-inf-head", "pad512", True, "-inf", "head"),
    Reading("dynamic-maskfirst-row", "dynamic", True, "finfo.min", "row"),
    Reading("dynamic-maskfirst-head", "dynamic", True, "finfo.min", "head"),
)}


def get(reading) -> Reading:
    """The :class:`Reading` named ``reading`` (or ``reading`` itself), else ``ValueError``."""
    if isinstance(reading, Reading):
        return reading
    if reading not in READINGS:
        raise ValueError(f"unknown reading {reading!r}; choose from {', '.join(READINGS)}")
    return READINGS[reading]


def additive_mask(attention_mask: torch.Tensor | None, mask_value: str) -> torch.Tensor | None:
    """The mask to add to the scores: HF's own tensor for ``"finfo.min"``, ``-inf`` at padding for ``"-inf"``.

    ``attention_mask`` is what HF's ``eager_mask`` produces: float ``[B, 1, L_q, L_k]``, 0 at real
    keys and ``finfo(dtype).min`` at padding (or None when the batch has no padding).
    """
    if mask_value not in ("finfo.min", "-inf"):
        raise ValueError(f"mask_value must be 'finfo.min' or '-inf', got {mask_value!r}")
    if attention_mask is None or mask_value == "finfo.min":
        return attention_mask
    return torch.zeros_like(attention_mask).masked_fill(~key_mask_of(attention_mask), -math.inf)


def quantile_linear(x: torch.Tensor, q: float) -> torch.Tensor:
    """``torch.quantile(x, q, dim=-1)`` (linear interpolation) from k-th values, bit for bit.

    ``torch.quantile`` sorts every row; over a ``512 x 512`` head that is ~7x slower than two order
    statistics. The same arithmetic as ATen: ``rank = q * (N - 1)`` in ``x``'s dtype, ``lo =
    floor(rank)``, ``hi = ceil(rank)``, ``lerp(x_(lo), x_(hi), rank - lo)`` — so a ``-inf`` on either
    side gives ``nan`` (``-inf - -inf``), as ``torch.quantile`` does. Shapes: ``[..., N] -> [...]``.
    """
    n = x.shape[-1]
    rank = torch.tensor(q, dtype=x.dtype) * (n - 1)
    lo, hi = int(rank.floor()), int(rank.ceil())
    v_lo = x.kthvalue(lo + 1, dim=-1).values
    if hi == lo:
        v_hi = v_lo
    else:  # the next order statistic: v_lo again if it is repeated, else the smallest value above it
        le = x <= v_lo[..., None]
        above = x.masked_fill(le, math.inf).amin(dim=-1)
        v_hi = torch.where(le.sum(dim=-1) >= hi + 1, v_lo, above)
    return torch.lerp(v_lo, v_hi, rank - lo)


def dense(scores: torch.Tensor, attention_mask: torch.Tensor | None):
    """HF's eager rule: ``softmax(scores + mask)``; keeps every real key."""
    x = scores if attention_mask is None else scores + attention_mask
    real = torch.ones_like(scores, dtype=torch.bool) if attention_mask is None else key_mask_of(attention_mask).expand(scores.shape)
    return torch.softmax(x, dim=-1), real


def raw(scores: torch.Tensor, attention_mask, sparsity: float, granularity: str, count_padding: bool):
    """Threshold on the raw scores, mask after: :func:`crisp.attention.topk_keep_mask`.

    ``count_padding=True`` lets padding keys compete (pad-to-512); False is our dynamic reading.
    """
    key_mask = key_mask_of(attention_mask)
    keep = topk_keep_mask(scores, sparsity, key_mask, granularity, count_padding=count_padding)
    return masked_softmax(scores, keep), keep


def mask_first_row(scores: torch.Tensor, attention_mask, sparsity: float, mask_value: str = "finfo.min",
                   probs: bool = True):
    """Mask first, then row top-k with k from all ``L_k`` keys.

    ``x = scores + M`` (``M`` from :func:`additive_mask`), ``k = max(1, L_k - floor(s*L_k))``, keep
    the ``k`` largest ``x`` of each row (ties, e.g. among masked entries, broken by ``torch.topk``),
    then softmax over the kept ``x``. A row with ``n <= k`` real keys keeps all of them. Shapes
    ``[B, H, L_q, L_k]``.
    """
    sparsity = check_sparsity(sparsity)
    mask = additive_mask(attention_mask, mask_value)
    x = scores if mask is None else scores + mask
    keep = topk_keep_mask(x, sparsity, None, "row")  # every key a candidate, at its masked value
    return (masked_softmax(x, keep) if probs else None), keep


def mask_first_head(scores: torch.Tensor, attention_mask, sparsity: float, mask_value: str = "finfo.min",
                    literal_quantile: bool = False, probs: bool = True):
    """Mask first, then the head percentile: ``x < quantile(x_head, s)`` set to ``-inf``.

    ``x = scores + M``; per (batch, head) ``q = torch.quantile(x.flatten(-2), s)`` (linear
    interpolation) over all ``L_q * L_k`` entries, masked ones included; entries with ``x < q`` are
    pruned. A ``nan`` quantile (``-inf`` entries at the rank) prunes nothing, since ``x < nan`` is
    False. Departure from the letter (as in the library's head reading): each row keeps its
    highest ``x``, so no row is left empty. ``literal_quantile=False`` computes ``q`` with
    :func:`quantile_linear`, equal to ``torch.quantile`` bit for bit (tested) and faster.
    """
    sparsity = check_sparsity(sparsity)
    mask = additive_mask(attention_mask, mask_value)
    x = scores if mask is None else scores + mask
    flat = x.detach().flatten(-2)  # [B, H, Lq*Lk]
    q = torch.quantile(flat, sparsity, dim=-1) if literal_quantile else quantile_linear(flat, sparsity)
    keep = ~(x.detach() < q[..., None, None])
    best = x.detach().argmax(dim=-1, keepdim=True)
    keep = keep.scatter(-1, best, True)
    return (masked_softmax(x, keep) if probs else None), keep


def apply(reading, scores: torch.Tensor, attention_mask: torch.Tensor | None, sparsity: float, probs: bool = True):
    """``(probs, keep)`` of ``reading`` (a :class:`Reading`, an id, or ``"dense"``) on ``scores``.

    ``scores`` ``[B, H, L_q, L_k]`` are the scaled raw scores; ``attention_mask`` is HF's eager
    additive mask or None. The padding length itself (dynamic or 512) is the tokenizer's business:
    the rule sees only the scores and the mask. ``probs=False`` returns ``(None, keep)`` for mask-first
    readings (the keep mask only, to save the softmax).
    """
    if reading == "dense":
        return dense(scores, attention_mask)
    r = get(reading)
    if not r.mask_first:
        return raw(scores, attention_mask, sparsity, r.granularity, count_padding=r.padding == "pad512")
    rule = mask_first_row if r.granularity == "row" else mask_first_head
    return rule(scores, attention_mask, sparsity, r.mask_value, probs=probs)


# --- inside a Hugging Face encoder --------------------------------------------------------------

NAME = "crisp-readings"  # our own implementation name; "crisp" (crisp.integration) is left alone


class ReadingState:
    """The reading a model currently runs, and what its forwards record (shared by all layers).

    ``kept[l]`` / ``real[l]``: kept real pairs and real (query, key) pairs of layer ``l`` (real
    query = its own position is a real key, real key = mask 0), summed over forwards. With
    ``store=True`` every layer's probabilities are kept in ``probs`` (a reference forward); with
    ``reference`` set to such a list, ``max_abs[l]`` is the largest ``|p - p_ref|`` seen.

    ``shadow``: ``{(reading_id, sparsity): {"kept": [...], "identical": [...]}}`` of readings also
    evaluated, per layer, on the scores of the running forward: their kept real pairs, and whether
    their probabilities equal the running reading's *bitwise* (:func:`_covers`). If a shadow
    reading is identical at every layer, its own forward would be this forward, bit for bit (each
    layer gets the same input and gives the same output, by induction over the layers), so its
    counts are exactly those its own forward would record.
    """

    def __init__(self, n_layers: int, reading="dense", sparsity: float = 0.0):
        self.n_layers = n_layers
        self.set(reading, sparsity)

    def set(self, reading, sparsity: float) -> None:
        self.reading = reading if reading == "dense" else get(reading)
        self.sparsity = check_sparsity(sparsity)
        self.kept = [0] * self.n_layers
        self.real = [0] * self.n_layers
        self.max_abs = [0.0] * self.n_layers
        self.store, self.probs, self.reference = False, [None] * self.n_layers, None
        self.shadow = {}

    def add_shadow(self, reading, sparsity: float) -> None:
        self.shadow[(get(reading).id, check_sparsity(sparsity))] = {
            "kept": [0] * self.n_layers, "identical": [True] * self.n_layers}

    def realized(self) -> list[float]:
        return [1.0 - k / r if r else float("nan") for k, r in zip(self.kept, self.real)]


def reading_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """``AttentionInterface`` function running ``module.reading_state``'s reading (eager contract).

    ``query``/``key``/``value`` ``[B, H, L, D]``; ``attention_mask`` HF's eager additive mask
    ``[B, 1, L_q, L_k]`` (registered with ``eager_mask``) or None. Returns ``([B, L_q, H, D], probs)``.
    """
    for name in ("sliding_window", "softcap", "s_aux"):
        if kwargs.get(name) is not None:
            raise ValueError(f"{NAME} attention does not support {name}")
    if kwargs.get("is_causal") or getattr(module, "is_causal", False):
        raise ValueError(f"{NAME} attention is for encoders (bidirectional) only")
    if key.shape[1] != query.shape[1]:
        raise ValueError(f"{NAME} attention does not expand grouped key/value heads")
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # [B, H, Lq, Lk]
    state, layer = module.reading_state, module.reading_layer
    probs, keep = apply(state.reading, scores, attention_mask, state.sparsity)
    with torch.no_grad():
        real = torch.ones_like(keep) if attention_mask is None else key_mask_of(attention_mask).expand(keep.shape)
        qreal = real.diagonal(dim1=-2, dim2=-1)  # [B, H, Lq]: query i is real iff key i is
        state.kept[layer] += _count(keep, real, qreal)
        state.real[layer] += _count(real, real, qreal)
        for (rid, sparsity), rec in state.shadow.items():
            p, k = apply(rid, scores.detach(), attention_mask, sparsity, probs=state.reading != "dense")
            rec["kept"][layer] += _count(k, real, qreal)
            rec["identical"][layer] = rec["identical"][layer] and _covers(k, real, p, probs, state.reading)
        if state.store:
            state.probs[layer] = probs.detach().clone()
        if state.reference is not None:
            diff = float((probs.detach() - state.reference[layer]).abs().max())
            state.max_abs[layer] = max(state.max_abs[layer], diff)
    probs = torch.nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(probs, value).transpose(1, 2).contiguous()  # [B, Lq, H, D]
    return out, probs


def _covers(keep, real, p, probs, running) -> bool:
    """Shadow check: the shadow reading's probabilities equal the running one's bit for bit.

    Against the dense forward the cheaper equivalent is used: every real key of every row is kept
    (``keep`` covers ``real``). A mask-first rule that keeps every real key then gives exactly
    ``softmax(scores + mask)`` (padding adds ``exp(-inf) = 0`` either way), which ``measure``'s
    verification forwards and the tests check bit for bit.
    """
    if running == "dense":
        return bool((keep | ~real).all())
    return torch.equal(p, probs.detach())


def _count(keep, real, qreal) -> int:
    """Kept entries whose query and key are both real."""
    return int(((keep & real).sum(dim=-1) * qreal).sum())


def register() -> None:
    """Register :data:`NAME` with the attention and the mask interface (eager's additive float mask)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(NAME, reading_attention)
    AttentionMaskInterface.register(NAME, eager_mask)  # float [B, 1, Lq, Lk]: 0 / finfo(dtype).min


def use(model: torch.nn.Module, reading="dense", sparsity: float = 0.0) -> ReadingState:
    """Switch a BERT/DistilBERT-family ``model`` to :data:`NAME` running ``reading``; returns its state."""
    from ..integration import attention_modules

    layers = attention_modules(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no BERT/DistilBERT-style self-attention modules")
    register()
    model.set_attn_implementation(NAME)
    state = ReadingState(len(layers), reading, sparsity)
    for index, module in enumerate(layers):
        module.reading_layer, module.reading_state = index, state
    return state
