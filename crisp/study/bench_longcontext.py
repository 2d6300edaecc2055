"""What long contexts cost: one attention call with backward at 1k-16k tokens, four implementations.

``crisp bench --long-context`` runs :func:`run`: for each length ``L`` (B=1, 4 heads, head dim 64,
fp32, no mask, random ``q, k, v``), one forward + backward of

- ``eager``: transformers' ``eager_attention_forward`` (scores, softmax, weights kept for backward);
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` (a fused kernel, linear memory);
- ``crisp``: :func:`crisp.crisp_attention` at sparsity 0.8, row granularity, on the plain path
  (``query_chunk=None``: scores, kept mask and probabilities kept for backward);
- ``crisp-chunked``: the same rule on the long-context path (:mod:`crisp.longcontext`, the chunk
  size ``query_chunk="auto"`` would choose from 4096 keys on, used at every length here).

``saved_mb`` is exact: the bytes of the distinct storages autograd keeps for backward during the
forward (``torch.autograd.graph.saved_tensors_hooks``, as :func:`crisp.study.bench.saved_bytes`), inputs
``q, k, v`` included. Times are medians over ``repeats`` rounds after ``warmup``, the variants
interleaved in a fresh random order each round; ratios are medians of round-by-round ratios (drift
of a shared machine cancels). A variant whose estimated peak memory exceeds ``memory_gib`` is not
run at that length; its row says so (``skipped``).
"""

from __future__ import annotations

import resource
import statistics
import time

import numpy as np
import pandas as pd
import torch

from ..configs import CrispConfig
from ..integration import crisp_attention
from ..longcontext import CHUNK_ENTRIES
from ..state import CrispState

LENGTHS = (1024, 4096, 8192, 16384)
VARIANTS = ("eager", "sdpa", "crisp", "crisp-chunked")
# Peak bytes per score entry (B*H*L*L) while one call's forward+backward runs, measured here at
# L=4096 with some headroom: eager keeps scores and probabilities and makes a few more in backward;
# the plain Crisp path also keeps the kept mask and ranks a copy of the scores.
PEAK_BYTES_PER_ENTRY = {"eager": 16, "crisp": 24}


class _Layer(torch.nn.Module):
    def __init__(self, config=None, heads=4):
        super().__init__()
        self.num_key_value_groups = 1
        self.is_causal = False
        if config is not None:
            self.crisp_state = CrispState(config, n_layers=1, n_heads=heads)
            self.crisp_layer = 0


def attention_call(variant: str, sparsity: float = 0.8, heads: int = 4):
    """``fn(q, k, v) -> out [B, L, H, D]`` for one variant (training mode)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward  # noqa: F401 (same contract)
    from transformers.models.llama.modeling_llama import eager_attention_forward

    if variant == "eager":
        layer = _Layer()
        return lambda q, k, v: eager_attention_forward(layer, q, k, v, None, scaling=q.shape[-1] ** -0.5)[0]
    if variant == "sdpa":
        return lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2)
    chunk = "auto-rows" if variant == "crisp-chunked" else None
    layer = _Layer(CrispConfig("x", sparsity, query_chunk=None if chunk is None else 1), heads)

    def call(q, k, v):
        if chunk is not None:  # the rows "auto" picks for this shape, at every length (1k included)
            rows = max(16, CHUNK_ENTRIES // (q.shape[0] * q.shape[1] * k.shape[2]))
            layer.crisp_state.config = layer.crisp_state.config.replace(query_chunk=rows)
        return crisp_attention(layer, q, k, v, None)[0]

    return call


def saved_bytes_of(fn, inputs) -> int:
    """Bytes of the distinct storages autograd saves for backward during ``fn(*inputs)`` (inputs included)."""
    from .bench import saved_storages

    return sum(saved_storages(lambda: fn(*inputs)).values())


def _inputs(length, heads=4, dim=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, heads, length, dim, generator=g).requires_grad_() for _ in range(3)]


def _step(fn, inputs) -> float:
    for t in inputs:
        t.grad = None
    start = time.perf_counter()
    fn(*inputs).sum().backward()
    return time.perf_counter() - start


def fits(variant: str, length: int, heads: int = 4, memory_gib: float = 8.0) -> bool:
    """Whether a variant's estimated peak (``PEAK_BYTES_PER_ENTRY``) fits in ``memory_gib``."""
    per_entry = PEAK_BYTES_PER_ENTRY.get(variant)
    return per_entry is None or per_entry * heads * length * length <= memory_gib * 2**30


def run(lengths=LENGTHS, repeats: int = 2, warmup: int = 1, sparsity: float = 0.8, heads: int = 4, dim: int = 64,
        memory_gib: float = 8.0, long_from: int = 8192, long_repeats: int = 1, time_up_to: int | None = None,
        progress: bool = True) -> pd.DataFrame:
    """One row per (length, variant): time, saved bytes, ratios to eager and SDPA, targets; see the module docstring.

    From ``long_from`` tokens on a step takes minutes on a CPU: ``long_repeats`` rounds, no warm-up. Above
    ``time_up_to`` (None: no limit) only the saved bytes are measured (one forward per variant, no timing).
    """
    from tqdm.auto import tqdm

    rows = []
    for length in tqdm(lengths, disable=not progress, desc="long-context"):
        run_now = [v for v in VARIANTS if fits(v, length, heads, memory_gib)]
        calls = {v: attention_call(v, sparsity, heads) for v in run_now}
        inputs = _inputs(length, heads, dim)
        saved = {v: saved_bytes_of(calls[v], inputs) for v in run_now}
        times = {v: [] for v in run_now}
        order = np.random.default_rng(1)
        n_warm, n_rep = (warmup, repeats) if length < long_from else (0, long_repeats)
        if time_up_to is not None and length > time_up_to:
            n_warm, n_rep = 0, 0
        for r in range(n_warm + n_rep):
            for i in order.permutation(len(run_now)):
                t = _step(calls[run_now[i]], inputs)
                if r >= n_warm:
                    times[run_now[i]].append(t)
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (Linux: KiB)
        for v in VARIANTS:
            row = {"setting": f"L{length}", "length": length, "batch_size": 1, "heads": heads, "head_dim": dim,
                   "sparsity": None if v in ("eager", "sdpa") else sparsity, "mode": "train", "variant": v,
                   "repeats": n_rep, "warmup": n_warm, "process_peak_rss_gib": peak_rss}
            if v not in run_now:
                need = PEAK_BYTES_PER_ENTRY[v] * heads * length**2 / 2**30
                row["skipped"] = f"estimated peak {need:.0f} GiB > {memory_gib:g} GiB allowed on this shared machine"
                rows.append(row)
                continue
            row.update(saved_mb=saved[v] / 2**20, saved_ratio_to_sdpa=saved[v] / saved["sdpa"])
            if "eager" in saved:
                row["saved_ratio_to_eager"] = saved[v] / saved["eager"]
            if n_rep:
                t = np.array(times[v])
                row.update(median_s=statistics.median(times[v]), min_s=float(t.min()), max_s=float(t.max()),
                           time_ratio_to_sdpa=float(np.median(t / np.array(times["sdpa"]))))
                if "eager" in times:
                    row["time_ratio_to_eager"] = float(np.median(t / np.array(times["eager"])))
            else:
                row["skipped"] = "time not measured: one training step takes many minutes on this shared 2-core CPU"
            if v == "crisp-chunked":
                row["chunk_rows"] = max(16, CHUNK_ENTRIES // (heads * length))
                if length >= 8192:
                    row["target_saved_within_2x_sdpa"] = bool(row["saved_ratio_to_sdpa"] <= 2.0)
                if n_rep and "eager" in times:
                    row["target_time_within_2x_eager"] = bool(row["time_ratio_to_eager"] <= 2.0)
            rows.append(row)
        del calls, inputs
    return pd.DataFrame(rows)
