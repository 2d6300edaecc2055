"""What Crisp attention holds at run time: per-layer ratios, the rule for one layer, statistics.

One :class:`CrispState` is shared by every Crisp attention layer of a model (``crisp.enable``
creates it). ``attend`` applies :func:`crisp.attention.topk_keep_mask` with the layer's current
ratio and records what the caller asked for.
"""

from __future__ import annotations

import warnings

import torch

from .adaptive import SparsityController
from .attention import _compact, _keep_mask, _kept_softmax, _masked_softmax, masked_softmax
from .configs import CrispConfig
from .longcontext import ChunkSpec, chunk_rows, chunked_attention


class CrispState:
    """What Crisp attention needs at run time, shared by every attention layer of one model.

    Holds the sparsity controller (each layer's current ratio) and the statistics it records:
    realized sparsity per layer over real entries (always, cheap), and per-head entropy of the
    dense and of the sparse distribution (only while ``record_entropy`` is True).
    """

    def __init__(self, config: CrispConfig, n_layers: int, n_heads: int):
        if not isinstance(config, CrispConfig):
            raise TypeError(f"config must be a crisp.CrispConfig, got {type(config).__name__}")
        self.config = config
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.controller = SparsityController(config, n_layers)
        self.record_sparsity = True  # realized sparsity of training batches (cheap)
        self.record_eval = False  # ... and of evaluation batches too
        self.record_entropy = False  # per-head entropies (an analysis pass; implies record_eval)
        self.reset_stats()

    def __repr__(self) -> str:
        c = self.config
        rule = f"keep={c.keep}" if c.keep is not None else f"sparsity={c.sparsity}"
        recorded = sum(float(f) for f in self.forwards)
        return (f"CrispState({c.name!r}, {rule}, strategy={c.strategy!r}, granularity={c.granularity!r}, "
                f"layers={self.n_layers}, heads={self.n_heads}, ratios={[round(r, 3) for r in self.controller.ratios]}, "
                f"record_sparsity={self.record_sparsity}, record_eval={self.record_eval}, "
                f"record_entropy={self.record_entropy}, training_forwards_recorded={recorded:g})")

    # -- statistics ----------------------------------------------------------------------------
    def reset_stats(self) -> None:
        self.kept = [0.0] * self.n_layers  # kept real entries, summed over forwards
        self.real = [0.0] * self.n_layers  # real entries (real query x real key)
        self.ratio_sum = [0.0] * self.n_layers  # target ratio, summed over training forwards
        self.forwards = [0] * self.n_layers
        self.entropy_dense = torch.zeros(self.n_layers, self.n_heads, dtype=torch.float64)
        self.entropy_sparse = torch.zeros(self.n_layers, self.n_heads, dtype=torch.float64)
        self.entropy_rows = torch.zeros(self.n_layers, self.n_heads, dtype=torch.float64)
        # Under torch.compile the counts go to one tensor (kept, real, ratio sum, forwards) x layer,
        # updated in place: Python numbers updated inside a compiled graph would force recompiles.
        self.compiled_counts = None

    def fold_compiled_counts(self) -> None:
        """Move the counts a compiled model kept in ``compiled_counts`` into the per-layer lists (outside any graph),
        so that every reader (the summary, the data-parallel sum in the trainer, a checkpoint) sees one store."""
        if self.compiled_counts is None:
            return
        extra = self.compiled_counts.cpu().tolist()
        for store, add in zip((self.kept, self.real, self.ratio_sum, self.forwards), extra):
            for layer, value in enumerate(add):
                store[layer] = store[layer] + value
        self.compiled_counts = None

    def sparsity_summary(self) -> list[dict]:
        """Per layer: mean target ratio and realized sparsity over real entries since the last reset."""
        self.fold_compiled_counts()
        rows, warned = [], False
        for layer in range(self.n_layers):
            forwards = float(self.forwards[layer])
            target = float(self.ratio_sum[layer]) / forwards if forwards else self.controller.ratios[layer]
            if self.config.keep is not None:
                target = float("nan")  # a fixed count per row has no target fraction
            kept, real = float(self.kept[layer]), float(self.real[layer])
            realized = 1.0 - kept / real if real else float("nan")
            if not real and not warned:
                warned = True
                why = ("record_sparsity is False" if not self.record_sparsity else
                       "only evaluation forwards ran and record_eval is False (a loaded model is in eval mode): set "
                       "state.record_eval = True to count them")
                warnings.warn(f"realized sparsity is nan: nothing was recorded since the last reset ({why})", stacklevel=2)
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
        if torch.compiler.is_compiling() and self.controller.adaptive:
            ratio = self.controller.ratio_tensor(scores.device)[layer]  # a tensor: new ratios, no recompile
        else:
            ratio = self.controller.ratios[layer]
        kept = _keep_mask(scores, ratio, key_mask, cfg.granularity, count_padding=cfg.paper_padding, keep=cfg.keep)
        measure = self.controller.adaptive and training
        count = self.record_sparsity and (training or self.record_eval or self.record_entropy)
        dense = None
        if (measure or self.record_entropy) and kept.ranked is not None:
            # the ranking's input is the dense rule's (-inf at every padding key): its softmax, before the
            # kept softmax below takes that buffer over
            with torch.no_grad():
                dense = _masked_softmax(scores, None, kept.finite, work=kept.ranked).float()  # work: no mask needed
        probs = _kept_softmax(scores, kept.keep, kept.finite, kept.ranked)
        if count or measure or self.record_entropy:  # otherwise (e.g. plain evaluation) nothing is recorded
            self._record(layer, scores, key_mask, kept.keep, probs, ratio, training, measure, count, dense)
        return probs

    def chunk_rows(self, batch: int, heads: int, n_queries: int, n_keys: int, device_type: str = "cpu") -> int | None:
        """Query rows per chunk for this call (the long-context path), or None for :meth:`attend`'s path.

        ``query_chunk="auto"`` never chunks ``granularity="head"`` (it ranks whole heads); an explicit
        ``query_chunk`` with it is refused by :class:`CrispConfig`.
        """
        if self.config.granularity == "head":
            return None
        return chunk_rows(self.config.query_chunk, batch, heads, n_queries, n_keys, device_type)

    def attend_chunked(self, layer: int, query, key, value, rows: int, training: bool, *, scaling, key_mask=None,
                       position_bias=None, mask_bias=None, causal=False, sliding_window=None, softcap=None,
                       dropout=0.0) -> torch.Tensor:
        """The rule of :meth:`attend` through :func:`crisp.longcontext.chunked_attention`: returns the
        attention output ``[B, H, L_q, D]`` (no probabilities) and records the same statistics, chunk by chunk."""
        cfg = self.config
        ratio = self.controller.ratios[layer]
        measure = self.controller.adaptive and training
        count = self.record_sparsity and (training or self.record_eval or self.record_entropy)
        sums = {}
        recorder = None
        if count or measure or self.record_entropy:
            lq, lk = query.shape[-2], key.shape[-2]

            def recorder(q0, scores, real, kept, probs):
                self._record_chunk(sums, q0, lq, lk, scores, real, kept, probs, measure, count)

        spec = ChunkSpec(rows, scaling, ratio, cfg.keep, cfg.paper_padding, causal, sliding_window, softcap,
                         dropout, training)
        out = chunked_attention(query, key, value, spec, key_mask, position_bias, mask_bias, recorder)
        if count:
            self.kept[layer] += sums["kept"]
            self.real[layer] += sums["real"]
            if training:
                self.ratio_sum[layer] += ratio
                self.forwards[layer] += 1
        if measure:
            self.controller.observe(layer, 1.0 - sums["norm"] / sums["usable"] if sums["usable"] else torch.tensor(0.0))
        if self.record_entropy:
            heads = query.shape[1]
            if heads > self.n_heads:
                raise ValueError(f"layer {layer} has {heads} heads, the state was built for {self.n_heads}")
            self.entropy_dense[layer, :heads] += sums["h_dense"].cpu()
            self.entropy_sparse[layer, :heads] += sums["h_sparse"].cpu()
            self.entropy_rows[layer, :heads] += sums["rows"].cpu()
        return out

    @torch.no_grad()
    def _record_chunk(self, sums, q0, lq, lk, scores, real, kept, probs, measure, count) -> None:
        """Add one chunk's share of what :meth:`_record` measures to ``sums`` (query rows ``q0:q0+c``)."""
        shape = scores.shape  # [B, H, c, L_k]
        real = kept.new_ones(()).expand(shape) if real is None else real.expand(shape)
        qreal = real.diagonal(offset=q0, dim1=-2, dim2=-1) if lq == lk else real.any(-1)  # [B, H, c]
        rows = qreal & real.any(-1)

        def add(name, value):
            sums[name] = sums[name] + value if name in sums else value

        if count:
            valid = real & rows[..., None]
            add("kept", torch.count_nonzero(kept & valid))  # no int64 copy of the chunk, unlike bool.sum()
            add("real", torch.count_nonzero(valid))
        if not (measure or self.record_entropy):
            return
        h_dense = _entropy(masked_softmax(scores, real).float())  # [B, H, c]
        if measure:
            n = real.sum(-1).float()
            usable = rows & (n > 1)
            add("norm", (h_dense / torch.log(n.clamp_min(2.0)))[usable].sum())
            add("usable", int(usable.sum()))
        if self.record_entropy:
            w = rows.to(torch.float64)
            add("h_dense", (h_dense.double() * w).sum(dim=(0, 2)))
            add("h_sparse", (_entropy(probs.float()).double() * w).sum(dim=(0, 2)))
            add("rows", w.sum(dim=(0, 2)))

    @torch.no_grad()
    def _record(self, layer, scores, key_mask, keep, probs, ratio, training, measure, count, dense=None):
        """Statistics of one call: ``keep`` (real entries only) is its rule's mask, ``dense`` (float32, or None: computed
        here) the dense softmax over real keys. Counts and row masks come from the mask before broadcasting over
        heads (same numbers)."""
        shape = scores.shape  # [B, H, Lq, Lk]
        real = keep.new_ones(()).expand(shape) if key_mask is None else key_mask.expand(shape)
        compiling = torch.compiler.is_compiling()
        few = real if compiling else _compact(real)  # e.g. [B, 1, Lq, Lk]: padding is the same in every head
        qreal = few.diagonal(dim1=-2, dim2=-1) if shape[-1] == shape[-2] else few.any(-1)  # [B, 1|H, Lq]
        few_rows = qreal & few.any(-1)  # real query rows with a real key
        rows = few_rows.expand(shape[:-1])  # [B, H, Lq]
        if count and compiling:
            valid = real & rows[..., None]
            if self.compiled_counts is None or self.compiled_counts.device != scores.device:
                self.compiled_counts = torch.zeros(4, self.n_layers, dtype=torch.float64, device=scores.device)
            self.compiled_counts[0, layer] += (keep & valid).sum()
            self.compiled_counts[1, layer] += valid.sum()
            if training:
                self.compiled_counts[2, layer] += ratio
                self.compiled_counts[3, layer] += 1
        elif count:
            valid = few & few_rows[..., None]  # real entries of real rows, before broadcasting
            self.kept[layer] += torch.count_nonzero(keep & rows[..., None])  # keep holds real entries only
            self.real[layer] += torch.count_nonzero(valid) * (real.numel() // max(1, valid.numel()))  # tensors: no sync
            if training:
                self.ratio_sum[layer] += ratio
                self.forwards[layer] += 1
        if not (measure or self.record_entropy):
            return
        if dense is None:
            dense = masked_softmax(scores, real).float()
        h_dense = _entropy(dense)  # [B, H, Lq]
        if measure:
            n = (few.sum(-1) if compiling else torch.count_nonzero(few, dim=-1)).expand(shape[:-1]).float()  # [B, H, Lq]
            usable = rows & (n > 1)
            norm = h_dense / torch.log(n.clamp_min(2.0))
            if compiling:  # same value without a data-dependent branch
                mean = torch.where(usable, norm, 0.0).sum() / usable.sum().clamp_min(1)
                conc = torch.where(usable.any(), 1.0 - mean, 0.0)
            else:
                conc = 1.0 - norm[usable].mean() if usable.any() else torch.tensor(0.0)
            self.controller.observe(layer, conc)
        if self.record_entropy:
            if h_dense.shape[1] > self.n_heads:
                raise ValueError(f"layer {layer} has {h_dense.shape[1]} heads, the state was built for {self.n_heads}")
            h_sparse = _entropy(probs.float())
            w = rows.to(torch.float64)
            heads = h_dense.shape[1]
            self.entropy_dense[layer, :heads] += (h_dense.double() * w).sum(dim=(0, 2)).cpu()
            self.entropy_sparse[layer, :heads] += (h_sparse.double() * w).sum(dim=(0, 2)).cpu()
            self.entropy_rows[layer, :heads] += w.sum(dim=(0, 2)).cpu()


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) over the last axis, with 0 log 0 = 0: ``-(p * log(max(p, 1e-30))).sum(-1)``,
    computed in one buffer (same operations, same values)."""
    t = p.clamp_min(1e-30)
    return t.log_().mul_(p).neg_().sum(-1)
