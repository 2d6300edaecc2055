"""Analytic forward FLOPs of one encoder layer, dense and with top-k (Crisp) attention.

The paper's Table 2 states that 80% attention sparsity removes 80% of the attention FLOPs and
20% of a layer's FLOPs (60% -> 15%), i.e. that attention is a fixed 25% of a layer.  Here the
FLOPs are counted per matmul, so the attention share depends on the sequence length ``L``:
the projections grow like ``L`` and the score-dependent part like ``L**2``.

Conventions: one sequence of ``L`` real tokens, forward pass, a multiply-add counts as 2 FLOPs.
Biases, layer norms, GELU, residual adds, the ``1/sqrt(d_k)`` scaling and the mask add are
left out (all O(L*d), well under 1% of a layer).  ``d`` = hidden, ``f`` = FFN width,
``h`` = heads; the head count cancels in the matmuls (``h * d_k = d``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "DISTILBERT", "MINILM", "Shape", "attention_share", "layer_flops", "reduction_table", "share_curve",
    "table2_comparison", "training_flops_factor",
]

#: Training step ~ forward + backward, backward ~ 2x forward (gradients w.r.t. activations and
#: weights).  Documented for scaling by hand only; no table here uses it.
training_flops_factor = 3

_COUNTS = ("dense", "paper")


@dataclass(frozen=True)
class Shape:
    """Sizes of a BERT-style encoder.

    Parameters
    ----------
    hidden : int
        Model width ``d``.
    heads : int
        Attention heads ``h`` (only the softmax estimate depends on it).
    ffn : int
        Width ``f`` of the feed-forward block.
    layers : int
        Encoder layers; :func:`layer_flops` is per layer, multiply by this for the model.
    """

    hidden: int
    heads: int
    ffn: int
    layers: int

    def __post_init__(self):
        for name in ("hidden", "heads", "ffn", "layers"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"Shape.{name} must be a positive integer, got {value!r}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden={self.hidden} is not divisible by heads={self.heads}")

    @classmethod
    def from_config(cls, config) -> Shape:
        """Read a Hugging Face config object (duck-typed attributes).

        BERT style: ``hidden_size, num_attention_heads, intermediate_size, num_hidden_layers``;
        DistilBERT style: ``dim, n_heads, hidden_dim, n_layers``.  The style is chosen by whether
        ``hidden_size`` (BERT) or ``dim`` (DistilBERT) is present.

        Raises
        ------
        ValueError
            Naming the first missing attribute.
        """
        if hasattr(config, "hidden_size"):
            names = ("hidden_size", "num_attention_heads", "intermediate_size", "num_hidden_layers")
        else:
            names = ("dim", "n_heads", "hidden_dim", "n_layers")
        values = []
        for name in names:
            if not hasattr(config, name):
                raise ValueError(f"config {type(config).__name__} has no attribute {name!r} "
                                 f"(needed: {', '.join(names)})")
            values.append(int(getattr(config, name)))
        return cls(*values)


DISTILBERT = Shape(hidden=768, heads=12, ffn=3072, layers=6)  # distilbert-base-uncased
MINILM = Shape(hidden=384, heads=12, ffn=1536, layers=6)  # all-MiniLM-L6-v2


def _flops(shape: Shape, length, sparsity: float, scores_sparse: bool) -> dict:
    """Per-component FLOPs; ``length`` may be a number or an array (elementwise)."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity!r}")
    d, f, h = shape.hidden, shape.ffn, shape.heads
    L = np.asarray(length, dtype=np.float64)
    if np.any(L < 0):
        raise ValueError("sequence lengths must be non-negative")
    keep = 1.0 - sparsity
    out = {
        "qkv": 2 * L * d * (3 * d),  # X[L,d] @ W_{q,k,v}[d,d], three projections
        "out_proj": 2 * L * d * d,  # concat(heads)[L,d] @ W_o[d,d]
        "ffn": 2 * L * d * f * 2,  # X[L,d] @ W_1[d,f], then GELU(.)[L,f] @ W_2[f,d]
        # QK^T: per head Q[L,d_k] @ K^T[d_k,L]; h heads * d_k = d.  Top-k has to see every score
        # to select, so these stay dense unless the optimistic accounting is asked for.
        "scores": 2 * L * L * d * (keep if scores_sparse else 1.0),
        "weighted_sum": 2 * L * L * d * keep,  # P[L,L] @ V[L,d_k] per head; pruned columns skipped
        "softmax": 5 * L * L * h * keep,  # estimate: max, subtract, exp, sum, divide per kept score
    }
    out["attention"] = out["scores"] + out["weighted_sum"] + out["softmax"]
    out["projections"] = out["qkv"] + out["out_proj"] + out["ffn"]
    out["total"] = out["attention"] + out["projections"]
    return out


def layer_flops(shape: Shape, length: int, sparsity: float = 0.0, count: str = "dense", *,
                scores_sparse: bool = False) -> dict[str, float]:
    """Forward FLOPs of one encoder layer on one sequence of ``length`` tokens.

    With ``L = length``, ``d = shape.hidden``, ``f = shape.ffn``, ``h = shape.heads`` and
    ``k = 1 - sparsity`` (the fraction of scores kept)::

        qkv          = 2 L d (3d)          Q, K, V projections
        out_proj     = 2 L d d             output projection
        ffn          = 2 L d f * 2         the two FFN matmuls
        scores       = 2 L^2 d   (* k)     QK^T; scaled only in the "paper" accounting
        weighted_sum = 2 L^2 d * k         PV
        softmax      = 5 L^2 h * k         estimate (~5 FLOPs per score)
        attention    = scores + weighted_sum + softmax     (the score-dependent part)
        projections  = qkv + out_proj + ffn
        total        = attention + projections

    ``sparsity`` is taken as an exact fraction of the ``L^2`` scores; a real top-k keeps an
    integer ``k`` per row.  The cost of the top-k selection itself is not counted.

    Parameters
    ----------
    shape : Shape
    length : int
        Real tokens in the sequence (no padding).
    sparsity : float
        Fraction of attention scores pruned, what a sparse kernel could skip.
    count : {"dense", "paper"}
        Accounting of ``scores``.  "dense" (default): ``QK^T`` stays dense because top-k must
        see every score to choose the kept ones.  "paper": ``scores`` scale by ``1 - sparsity``
        too, the optimistic accounting behind the paper's Table 2 (all attention FLOPs scale).
    scores_sparse : bool
        Same as ``count="paper"`` when True.

    Returns
    -------
    dict
        Keys ``qkv, out_proj, ffn, scores, weighted_sum, softmax, attention, projections,
        total``, values in FLOPs (floats).
    """
    if count not in _COUNTS:
        raise ValueError(f"count must be one of {_COUNTS}, got {count!r}")
    if np.ndim(length) != 0:
        raise ValueError("layer_flops takes one length; use reduction_table for many")
    flops = _flops(shape, length, sparsity, scores_sparse or count == "paper")
    return {key: float(value) for key, value in flops.items()}


def attention_share(shape: Shape, length: int) -> float:
    """Fraction of a dense layer's FLOPs in the score-dependent part.

    ``(4 L d + 5 L h) / (4 L d + 5 L h + 8 d^2 + 4 d f)``: near 0 for short sequences,
    growing to 1 as ``L`` grows.
    """
    flops = layer_flops(shape, length)
    return flops["attention"] / flops["total"]


def reduction_table(shape: Shape, lengths: int | Iterable[int], sparsities: dict[str, float],
                    scores_sparse: bool = False) -> pd.DataFrame:
    """FLOPs saved by each sparsity, summed over a set of sequences.

    Each sequence is counted at its own length (no padding), and FLOPs are summed over all of
    them before taking ratios, so long sequences weigh more::

        attention_flops_reduction = 1 - sum attention(s) / sum attention(0)
        total_layer_reduction     = 1 - sum total(s) / sum total(0)
        attention_share_dense     = sum attention(0) / sum total(0)

    With ``scores_sparse=True`` the first is exactly ``s`` and the second is
    ``s * attention_share_dense``; by default ``QK^T`` stays dense and both are smaller.

    Parameters
    ----------
    shape : Shape
    lengths : int or iterable of int
        Real token counts, e.g. SST-2's tokenized lengths, or one int (e.g. 512).
    sparsities : dict
        Config name -> sparsity, e.g. ``{"Dense": 0.0, "Crisp-80": 0.8}``.
    scores_sparse : bool
        Also scale ``QK^T`` (the paper's accounting), see :func:`layer_flops`.

    Returns
    -------
    pandas.DataFrame
        One row per config: ``config, sparsity, attention_flops_reduction,
        total_layer_reduction, attention_share_dense, mean_length``.
    """
    if isinstance(lengths, (int, np.integer)):
        lengths = [lengths]
    L = np.asarray(list(lengths), dtype=np.float64)
    if L.ndim != 1 or L.size == 0 or not L.any():
        raise ValueError("lengths must be a non-empty 1-D collection with some non-zero length")
    dense = {key: value.sum() for key, value in _flops(shape, L, 0.0, False).items()}
    rows = []
    for name, sparsity in sparsities.items():
        sparse = {key: value.sum() for key, value in _flops(shape, L, sparsity, scores_sparse).items()}
        rows.append({
            "config": name,
            "sparsity": float(sparsity),
            "attention_flops_reduction": float(1.0 - sparse["attention"] / dense["attention"]),
            "total_layer_reduction": float(1.0 - sparse["total"] / dense["total"]),
            "attention_share_dense": float(dense["attention"] / dense["total"]),
            "mean_length": float(L.mean()),
        })
    return pd.DataFrame(rows)


def share_curve(shapes: dict[str, Shape], lengths, sparsity: float = 0.8) -> pd.DataFrame:
    """Attention's share of a dense layer and what ``sparsity`` saves of the layer, against length.

    One row per (model, length, accounting): ``attention_share_dense`` (as :func:`attention_share`)
    and ``layer_saved = 1 - total(sparsity) / total(0)`` in the "dense" (``QK^T`` stays dense) or
    "paper" accounting (see :func:`layer_flops`). In the paper's accounting ``layer_saved`` is
    exactly ``sparsity * attention_share_dense``; the paper's Table 2 takes that share as 1/4.

    Parameters
    ----------
    shapes : dict
        Name -> :class:`Shape`, e.g. ``{"DistilBERT": DISTILBERT}``.
    lengths : iterable of int
        Sequence lengths (positive).
    sparsity : float
        Fraction of scores pruned.
    """
    L = np.asarray(list(lengths), dtype=np.float64)
    if L.ndim != 1 or L.size == 0 or np.any(L <= 0):
        raise ValueError("lengths must be a non-empty 1-D collection of positive lengths")
    rows = []
    for name, shape in shapes.items():
        dense = _flops(shape, L, 0.0, False)
        share = dense["attention"] / dense["total"]
        for count in _COUNTS:
            sparse = _flops(shape, L, sparsity, count == "paper")
            rows.append(pd.DataFrame({"model": name, "length": L, "accounting": count, "sparsity": float(sparsity),
                                      "attention_share_dense": share,
                                      "layer_saved": 1.0 - sparse["total"] / dense["total"]}))
    return pd.concat(rows, ignore_index=True)


def table2_comparison(shape: Shape, lengths: dict, sparsities: dict[str, float], paper: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 2 beside our counts, one row per (lengths, config), fractions.

    ``lengths`` maps a name (e.g. "SST-2 dev") to what :func:`reduction_table` takes; ``paper`` has
    columns ``config, attention_flops_reduction, total_layer_reduction``. Columns: ``lengths, config,
    sparsity, paper_attention, paper_layer, attention_dense_qk`` and ``layer_dense_qk`` (``QK^T``
    dense, our accounting), ``layer_paper_count`` (the paper's accounting at these lengths) and
    ``attention_share_dense``.
    """
    claimed = paper.set_index("config")
    missing = sorted(set(sparsities) - set(claimed.index))
    if missing:
        raise KeyError(f"the paper's table has no row for {missing}")
    frames = []
    for where, L in lengths.items():
        ours = reduction_table(shape, L, sparsities).set_index("config")
        optimistic = reduction_table(shape, L, sparsities, scores_sparse=True).set_index("config")
        frames.append(pd.DataFrame({
            "lengths": where, "config": list(sparsities), "sparsity": ours.sparsity.values,
            "paper_attention": claimed.attention_flops_reduction.reindex(list(sparsities)).values,
            "paper_layer": claimed.total_layer_reduction.reindex(list(sparsities)).values,
            "attention_dense_qk": ours.attention_flops_reduction.values,
            "layer_dense_qk": ours.total_layer_reduction.values,
            "layer_paper_count": optimistic.total_layer_reduction.values,
            "attention_share_dense": ours.attention_share_dense.values,
        }))
    return pd.concat(frames, ignore_index=True)
