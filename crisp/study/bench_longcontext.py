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

``crisp bench --long-context --demo-32k`` runs :func:`demo` once (not in CI): a training step of a tiny decoder at
32k tokens on the long-context path, in a fresh process with its address space capped, beside the plain path's
saved bytes and peak memory fitted from shorter lengths. :func:`table`, :func:`targets` and :func:`figure` are what
the book's appendix (``book/cost_engineering.ipynb``) shows.
"""

from __future__ import annotations

import os
import resource
import statistics
import time

import numpy as np
import pandas as pd
import torch

from ..configs import CrispConfig
from ..integration import crisp_attention
from ..longcontext import chunk_entries
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
            rows = max(16, chunk_entries(q.device.type) // (q.shape[0] * q.shape[1] * k.shape[2]))
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
                row["chunk_rows"] = max(16, chunk_entries("cpu") // (heads * length))
                if length >= 8192:
                    row["target_saved_within_2x_sdpa"] = bool(row["saved_ratio_to_sdpa"] <= 2.0)
                if n_rep and "eager" in times:
                    row["target_time_within_2x_eager"] = bool(row["time_ratio_to_eager"] <= 2.0)
            rows.append(row)
        del calls, inputs
    return pd.DataFrame(rows)


# --- shown once (not in CI): a training step of a tiny decoder at 32k tokens --------------------------------------

DEMO_MODEL = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=2)  # Llama-style, random weights, two heads of dim 32 per layer: minutes on a CPU


def _demo_model(length: int, query_chunk):
    from transformers import LlamaConfig, LlamaForCausalLM

    import crisp

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**DEMO_MODEL, max_position_embeddings=length)).train()
    state = crisp.enable(model, CrispConfig("crisp-0.8-row", 0.8, query_chunk=query_chunk))
    # no statistics: without a recorder a causal chunk reads only the keys it can attend (half of them on average)
    state.record_sparsity = False
    return model, torch.randint(0, DEMO_MODEL["vocab_size"], (1, length), generator=torch.Generator().manual_seed(0))


def demo_child(length: int, query_chunk="auto") -> dict:
    """In a fresh process: one training step (forward, backward, AdamW step) of the tiny decoder (``query_chunk``:
    "auto" takes the long-context path from 4096 tokens on, None the plain path)."""
    model, ids = _demo_model(length, query_chunk)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    loss = model(input_ids=ids, labels=ids).loss
    forward = time.perf_counter()
    loss.backward()
    backward = time.perf_counter()
    optimizer.step()
    end = time.perf_counter()
    finite = all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)
    return {"loss": float(loss.detach()), "grads_finite": finite, "threads": torch.get_num_threads(),
            "forward_s": forward - start, "backward_s": backward - forward, "optimizer_s": end - backward, "step_s": end - start,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def plain_saved_child(lengths) -> dict:
    """In a fresh process: bytes autograd saves in the tiny decoder's forward on the plain path, per length."""
    from .bench import saved_storages

    out = {}
    for length in lengths:
        model, ids = _demo_model(length, None)
        out[str(length)] = sum(saved_storages(lambda: model(input_ids=ids, labels=ids).loss).values())
    return out


def _in_subprocess(call: str, memory_gib: float, timeout: float, threads: int | None = None) -> dict:
    """Run ``crisp.study.bench_longcontext.<call>`` in a fresh Python whose address space is capped at
    ``memory_gib`` (``RLIMIT_AS``: an allocation past it fails in that process alone), on ``threads`` torch threads
    (None: torch's own); its result is its last line."""
    import json
    import subprocess
    import sys

    cap = int(memory_gib * 2**30)

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    code = f"import json; from crisp.study import bench_longcontext as lc; print(json.dumps(lc.{call}))"
    # threads fixed from the process's start (OMP_NUM_THREADS), as one would run it. Its peak resident set is the C
    # allocator's, not only Crisp's: the same 32k step measured 0.94 to 4.82 GiB across runs of the same code here
    env = {**os.environ, "OMP_NUM_THREADS": str(int(threads))} if threads else None
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=limit,
                          timeout=timeout, env=env)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["exit code %d" % proc.returncode])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def demo(length: int = 32768, memory_gib: float = 12.0, fit_lengths=(1024, 2048, 4096, 8192, 12288),
         timeout: float = 3600.0, machine_gib: float | None = None, threads: int | None = None) -> pd.DataFrame:
    """The 32k demonstration: one row for the chunked path's measured step, one for the plain path's estimate.

    Every step runs on ``threads`` torch threads (None: torch's own). The chunked step runs in a fresh process capped at ``memory_gib`` (``RLIMIT_AS``); its peak is that process's
    maximum resident set. The plain path's step is run at ``length`` under the same cap (``plain_ran``, and the
    process's last error line when it failed: an allocation past the cap fails in that process alone, so the
    machine's other jobs are safe); it is not run uncapped (its scores alone are tens of GiB on a machine shared
    with training jobs). Instead the bytes it saves for backward are measured on the same model at the first two
    ``fit_lengths`` (one fresh process; exact bytes), fitted as ``a*L^2 + b*L`` and extrapolated to ``length``; the
    peak resident memory of its training step is measured at the last three (a fresh process each, where the
    quadratic terms dominate the process's baseline) and fitted as ``a*L^2 + b*L + c``. It fits when that peak is
    within the machine's memory.
    """
    if machine_gib is None:
        machine_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    base = {"length": length, "batch_size": 1, **{k: v for k, v in DEMO_MODEL.items()}, "sparsity": 0.8,
            "mode": "train step (forward, backward, AdamW)", "machine_memory_gib": machine_gib,
            "memory_cap_gib": memory_gib}
    run_ = _in_subprocess(f"demo_child({length})", memory_gib, timeout, threads)
    chunked = {**base, "variant": "crisp-chunked", "how": "measured in a fresh process (RLIMIT_AS cap)", **run_}
    chunked["fits"] = "error" not in run_ and run_["peak_rss_gib"] <= memory_gib
    saved = _in_subprocess(f"plain_saved_child({list(fit_lengths[:2])})", memory_gib, timeout, threads)
    capped = _in_subprocess(f"demo_child({length}, None)", memory_gib, timeout, threads)
    plain = {**base, "variant": "crisp", "how": f"run at {length} under the same cap; saved bytes measured at "
             f"{list(fit_lengths[:2])} tokens, fitted a*L^2 + b*L; peak RSS of the step at {list(fit_lengths[-3:])}, "
             f"fitted a*L^2 + b*L + c", "plain_ran": "error" not in capped,
             "plain_error": capped.get("error"), "plain_peak_rss_gib": capped.get("peak_rss_gib")}
    if "error" in saved:
        plain["error"] = saved["error"]
    else:
        (l1, l2), (s1, s2) = fit_lengths[:2], (saved[str(n)] for n in fit_lengths[:2])
        a = (s2 / l2 - s1 / l1) / (l2 - l1)  # s/L = a*L + b
        b = s1 / l1 - a * l1
        plain.update({f"saved_gib_at_{n}": saved[str(n)] / 2**30 for n in fit_lengths[:2]})
        plain["saved_gib_estimated"] = (a * length**2 + b * length) / 2**30
    peaks = {n: _in_subprocess(f"demo_child({n}, None)", memory_gib, timeout, threads) for n in fit_lengths[-3:]}
    if any("error" in r for r in peaks.values()):
        plain["error"] = "; ".join(r["error"] for r in peaks.values() if "error" in r)
    else:
        plain.update({f"peak_rss_gib_at_{n}": r["peak_rss_gib"] for n, r in peaks.items()})
        coef = np.polyfit(list(peaks), [r["peak_rss_gib"] for r in peaks.values()], 2)
        plain["peak_rss_gib_estimated"] = float(np.polyval(coef, length))
        plain["fits"] = bool(plain["peak_rss_gib_estimated"] <= machine_gib)
    return pd.DataFrame([chunked, plain])


# --- what the book shows (book/cost_engineering.ipynb) ---------------------------------------------------------------

TARGET_SAVED_VS_SDPA = 2.0  # issue 29: bytes saved for backward within 2x SDPA's at 8k and 16k tokens
TARGET_TIME_VS_EAGER = 2.0  # issue 29: time within 2x eager's wherever eager runs
LABELS = {"crisp-chunked": "Crisp, long-context path", "crisp": "Crisp, plain path", "eager": "eager", "sdpa": "SDPA"}


def table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (length, variant) as the book and README show it; a variant not run says why."""
    out = frame.assign(implementation=frame.variant.map(LABELS))
    out["status"] = out.skipped.fillna("") if "skipped" in out else ""
    cols = ["length", "implementation", "saved_mb", "saved_ratio_to_sdpa", "median_s", "time_ratio_to_eager",
            "time_ratio_to_sdpa", "repeats", "status"]
    return out[[c for c in cols if c in out]].reset_index(drop=True)


def targets(frame: pd.DataFrame) -> pd.DataFrame:
    """The long-context path against issue 29's targets: one row per (length, target) that applies, with ``met``."""
    chunked = frame[frame.variant == "crisp-chunked"].set_index("length")
    rows = []
    for length, r in chunked.iterrows():
        if length >= 8192 and pd.notna(r.get("saved_ratio_to_sdpa")):
            rows.append({"length": length, "target": "saved bytes ÷ SDPA", "value": r.saved_ratio_to_sdpa,
                         "limit": TARGET_SAVED_VS_SDPA, "met": bool(r.saved_ratio_to_sdpa <= TARGET_SAVED_VS_SDPA)})
        if pd.notna(r.get("time_ratio_to_eager")):
            rows.append({"length": length, "target": "time ÷ eager", "value": r.time_ratio_to_eager,
                         "limit": TARGET_TIME_VS_EAGER, "met": bool(r.time_ratio_to_eager <= TARGET_TIME_VS_EAGER)})
    return pd.DataFrame(rows)


def verdict(met) -> str:
    """``"met at every length"``, ``"missed at every length"`` or ``"met at some lengths"`` for a run of outcomes."""
    met = list(met)
    return "met at every length" if all(met) else "missed at every length" if not any(met) else "met at some lengths"


def figure(frame: pd.DataFrame):
    """Saved bytes (MiB) and time ratios (÷ eager, ÷ SDPA) against the length, one line per implementation."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    panels = [("saved_mb", "saved for backward (MiB)", True), ("time_ratio_to_eager", "time ÷ eager", False),
              ("time_ratio_to_sdpa", "time ÷ SDPA", False)]
    for ax, (col, label, log) in zip(axes, panels):
        for variant in ("crisp-chunked", "crisp", "eager", "sdpa"):
            rows = frame[(frame.variant == variant)].dropna(subset=[col]) if col in frame else frame.iloc[:0]
            ax.plot(rows.length, rows[col], marker="o", label=LABELS[variant])
        if col == "time_ratio_to_eager":
            ax.axhline(TARGET_TIME_VS_EAGER, color="grey", ls="--", lw=0.8)
        ax.set(xscale="log", yscale="log" if log else "linear", xlabel="tokens", ylabel=label)
        ax.set_xticks(sorted(frame.length.unique()), [f"{n // 1024}k" for n in sorted(frame.length.unique())])
        ax.minorticks_off()
    fig.tight_layout()
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4,
               frameon=False)
    return fig
