"""What Crisp attention costs: one process, every variant, ratios to eager dense taken in the same run.

For each model shape (MiniLM, DistilBERT; random weights, which is fine for timing) and each
length setting (SST-2's real length distribution in length-grouped batches, or a fixed length),
it times one training step (forward + backward) and one inference forward of:
eager dense, SDPA dense, and Crisp at sparsity 0 / 0.6 / 0.8, row and head granularity, uniform
and adaptive (plus 0.8 row uniform with its statistics switched off, ``-nostats``). Variants are interleaved round-robin within each repeat so drift of the machine hits
all of them alike (in a fresh random order each round); the result is the median over repeats after
warm-up, each variant's ratio of medians to eager dense, and the median (and quartiles) of its
round-by-round ratio to eager, ``paired_ratio``, which cancels drift of the machine between rounds.

The setting ``sst2-pad512`` takes SST-2-distributed sentences padded to 512 (the paper's setup):
per sentence, its time over ``sst2``'s is the cost of the paper's padding.

Memory: ``saved_mb`` is the size of the tensors autograd keeps for the backward pass of one
training forward (deduplicated by storage), counted with ``torch.autograd.graph.saved_tensors_hooks``
- exact and machine-independent; on CUDA ``peak_mb`` adds ``torch.cuda.max_memory_allocated``.

The timing loop is hand-written rather than ``torch.utils.benchmark.Timer`` because that timer
pins ``num_threads=1`` by default and times one statement at a time; we need the machine's normal
threading and interleaved variants.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import results
from ..configs import CrispConfig
from ..integration import enable

SHAPES = {
    "minilm": dict(kind="bert", hidden=384, heads=12, ffn=1536, layers=6),
    "distilbert": dict(kind="distilbert", hidden=768, heads=12, ffn=3072, layers=6),
    "tiny": dict(kind="bert", hidden=32, heads=4, ffn=64, layers=2),
}


def variants(sparsities=(0.6, 0.8)) -> list[tuple[str, CrispConfig | None]]:
    """``(name, config)``: eager and sdpa (config None), then every Crisp variant."""
    out = [("eager", None), ("sdpa", None),
           ("crisp-0-row", CrispConfig("b", 0.0)), ("crisp-0-head", CrispConfig("b", 0.0, granularity="head"))]
    for s in sparsities:
        for g in ("row", "head"):
            for strategy in ("uniform", "adaptive"):
                out.append((f"crisp-{s:g}-{g}-{strategy}", CrispConfig("x", s, strategy, granularity=g)))
    if 0.8 in sparsities:  # the same rule with the realized-sparsity statistics switched off
        out.append(("crisp-0.8-row-uniform-nostats", CrispConfig("x", 0.8)))
    return out


def build_model(shape: str, vocab: int = 30522, positions: int = 512):
    """A randomly initialised model of ``shape`` with ``positions`` position embeddings (512: BERT's own)."""
    from transformers import BertConfig, BertForSequenceClassification, DistilBertConfig, DistilBertForSequenceClassification

    s = SHAPES[shape]
    if s["kind"] == "bert":
        cfg = BertConfig(vocab_size=vocab, hidden_size=s["hidden"], num_attention_heads=s["heads"],
                         intermediate_size=s["ffn"], num_hidden_layers=s["layers"], num_labels=2,
                         max_position_embeddings=positions)
        return BertForSequenceClassification(cfg)
    cfg = DistilBertConfig(vocab_size=vocab, dim=s["hidden"], n_heads=s["heads"], hidden_dim=s["ffn"],
                           n_layers=s["layers"], num_labels=2, max_position_embeddings=positions)
    return DistilBertForSequenceClassification(cfg)


def make_batches(lengths, batch_size: int, n_batches: int, vocab: int = 30522, seed: int = 0, device="cpu",
                 pad_to: int | None = None):
    """Random-token batches: fixed ``lengths`` (int) or drawn from a length sample and length-grouped.

    ``pad_to`` pads every batch to that width (the paper's pad-to-512) instead of its longest row.
    """
    rng = np.random.default_rng(seed)
    if isinstance(lengths, (int, np.integer)):
        drawn = np.full(batch_size * n_batches, int(lengths))
    else:
        drawn = np.sort(rng.choice(np.asarray(lengths), size=batch_size * n_batches, replace=True))
    batches = []
    for b in range(n_batches):
        lens = drawn[b * batch_size:(b + 1) * batch_size]
        width = int(pad_to or lens.max())
        ids = torch.from_numpy(rng.integers(1000, vocab, size=(batch_size, width)))
        mask = (torch.arange(width)[None, :] < torch.from_numpy(lens)[:, None]).long()
        labels = torch.from_numpy(rng.integers(0, 2, size=batch_size))
        batches.append({k: v.to(device) for k, v in (("input_ids", ids * mask), ("attention_mask", mask), ("labels", labels))})
    return batches


def _use(model, name: str, config):
    if config is None:
        model.set_attn_implementation(name)
    else:
        enable(model, config).record_sparsity = not name.endswith("-nostats")


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _step(model, batches, train: bool, device) -> float:
    _sync(device)
    start = time.perf_counter()
    for batch in batches:
        if train:
            model.zero_grad(set_to_none=True)
            model(**batch).loss.backward()
        else:
            with torch.no_grad():
                model(**batch)
    _sync(device)
    return time.perf_counter() - start


def saved_storages(run) -> dict[int, int]:
    """``{storage address: bytes}`` of the distinct storages autograd saves for backward while ``run()`` executes."""
    seen, alive = {}, []

    def pack(t):
        try:
            key = t.untyped_storage().data_ptr()
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        except RuntimeError:
            pass
        # Hold the tensor here until the forward ends, so freed storages are not reused and counted
        # once; returning it to the graph instead ties outputs to their own nodes in reference
        # cycles that leaked gigabytes at length 512.
        alive.append(t)
        return len(alive) - 1

    def unpack(_):
        raise RuntimeError("graphs built by saved_storages() are for measurement only; do not call backward on them")

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        run()
    alive.clear()  # the graph keeps the hooks (and so this list) alive: break that cycle here
    return seen


def saved_bytes(model, batch) -> int:
    """Bytes of distinct storages autograd saves for backward during one training forward (parameters excluded)."""
    seen = saved_storages(lambda: model(**batch).loss)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for k, n in seen.items() if k not in params)


def select_variants(names=None, sparsities=(0.6, 0.8)) -> list[tuple[str, CrispConfig | None]]:
    """The variants named in ``names`` (all when None), always with ``eager``, the reference of every ratio."""
    every = variants(sparsities)
    if names is None:
        return every
    unknown = sorted(set(names) - {n for n, _ in every})
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(n for n, _ in every)}")
    return [(n, c) for n, c in every if n == "eager" or n in set(names)]


def run(shapes=("minilm", "distilbert"), settings=None, repeats: int = 5, warmup: int = 2, device: str = "auto",
        sparsities=(0.6, 0.8), sst2_lengths=None, progress: bool = True, only=None) -> pd.DataFrame:
    """Time every variant (or those named in ``only``, plus eager); one row per (shape, setting, variant, mode).

    ``settings`` maps a name to ``(lengths, batch_size, n_batches)``; ``lengths`` is an int or,
    for ``"sst2"``, the sample of real token lengths given as ``sst2_lengths``.
    """
    from tqdm.auto import tqdm

    chosen = select_variants(only, sparsities)

    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    settings = settings or {"sst2": ("sst2", 64, 4), "sst2-pad512": ("sst2-pad512", 64, 1),
                            "L128": (128, 16, 1), "L512": (512, 4, 1)}
    rows = []
    todo = [(sh, st) for sh in shapes for st in settings]
    for shape, setting in tqdm(todo, disable=not progress, desc="bench"):
        lengths, batch_size, n_batches = settings[setting]
        pad_to = 512 if lengths == "sst2-pad512" else None
        if lengths in ("sst2", "sst2-pad512"):
            if sst2_lengths is None:
                raise ValueError(f"setting {setting!r} needs sst2_lengths (a sample of tokenized SST-2 lengths)")
            lengths = sst2_lengths
        torch.manual_seed(0)
        # fixed lengths past 512 (long contexts) get as many position embeddings as they need
        positions = max(512, int(lengths)) if isinstance(lengths, (int, np.integer)) else 512
        model = build_model(shape, positions=positions).to(device)
        batches = make_batches(lengths, batch_size, n_batches, device=device, pad_to=pad_to)
        tokens = int(sum(int(b["attention_mask"].sum()) for b in batches))
        padded = int(sum(b["attention_mask"].numel() for b in batches))
        for mode in ("train", "infer"):
            model.train(mode == "train")
            times = {name: [] for name, _ in chosen}
            memory = {}
            order = np.random.default_rng(1)
            for r in range(warmup + repeats):
                # a fresh random order each round: no variant always runs first, or always after the same one
                for i in order.permutation(len(chosen)):
                    name, config = chosen[i]
                    _use(model, name, config)
                    if torch.device(device).type == "cuda":
                        torch.cuda.reset_peak_memory_stats()
                    t = _step(model, batches, mode == "train", device)
                    if r >= warmup:
                        times[name].append(t)
                    if r == 0 and mode == "train":
                        memory[name] = (saved_bytes(model, batches[-1]),
                                        torch.cuda.max_memory_allocated() if torch.device(device).type == "cuda" else None)
            eager = statistics.median(times["eager"])
            for name, config in chosen:
                med = statistics.median(times[name])
                paired = np.array(times[name]) / np.array(times["eager"])  # round by round: drift cancels
                saved, peak = memory.get(name, (None, None))
                rows.append({
                    "model_shape": shape, "setting": setting, "batch_size": batch_size, "batches": n_batches,
                    "real_tokens": tokens, "padded_tokens": padded, "mode": mode, "variant": name,
                    "sparsity": None if config is None else config.sparsity,
                    "granularity": None if config is None else config.granularity,
                    "strategy": None if config is None else config.strategy,
                    "statistics": None if config is None else not name.endswith("-nostats"),
                    "median_s": med, "min_s": min(times[name]), "max_s": max(times[name]), "repeats": repeats,
                    "ratio_to_eager": med / eager,
                    "paired_ratio": float(np.median(paired)),
                    "paired_ratio_q25": float(np.quantile(paired, 0.25)),
                    "paired_ratio_q75": float(np.quantile(paired, 0.75)),
                    "ms_per_sentence": 1000 * med / (batch_size * n_batches),
                    "saved_mb": None if saved is None else saved / 2**20,
                    "peak_mb": None if peak is None else peak / 2**20,
                })
        del model
    frame = pd.DataFrame(rows)
    train = frame[frame["mode"] == "train"]
    base = train[train.variant == "eager"].set_index(["model_shape", "setting"])["saved_mb"]
    frame["saved_ratio_to_eager"] = [
        (r.saved_mb / base.loc[(r.model_shape, r.setting)]) if r.mode == "train" and r.saved_mb is not None else None
        for r in frame.itertuples()]
    return frame


def profile(shape: str = "minilm", lengths=None, batch_size: int = 64, config: CrispConfig | None = None,
            device: str = "cpu", rows: int = 15) -> str:
    """``torch.profiler`` table (self CPU time) of one training step with Crisp ``config``."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    torch.manual_seed(0)
    model = build_model(shape).to(device).train()
    enable(model, config or CrispConfig("u", 0.8))
    batches = make_batches(lengths if lengths is not None else 32, batch_size, 1, device=device)
    _step(model, batches, True, device)  # warm-up
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        _step(model, batches, True, device)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def write(frame: pd.DataFrame, output="data/bench", tag: str = "", extra: dict | None = None) -> Path:
    """Write ``<output>/bench-<device>[-<tag>].csv`` and a provenance JSON beside it; the JSON's ``measurement`` is
    False for a ``quick`` check (``extra={"quick": True}``), which :func:`measurement_files` then never returns."""
    env = results.environment()
    slug = "cuda-" + env["device"].replace(" ", "_") if torch.cuda.is_available() else "cpu"
    slug += f"-{tag}" if tag else ""
    folder = Path(output)
    results.check_writable(folder)
    results.write_csv(folder / f"bench-{slug}.csv", frame)
    results.write_json(folder / f"bench-{slug}.json", {**env, "git_commit": results.git_commit(), **(extra or {}),
                                                      "measurement": not (extra or {}).get("quick", False)})
    return folder / f"bench-{slug}.csv"


def is_measurement(csv_path) -> bool:
    """Whether a results file says it is a measurement: its provenance JSON has ``measurement`` true (files written
    before that key existed: ``quick`` false). A file without provenance, or from ``--quick``, is not one."""
    meta = Path(csv_path).with_suffix(".json")
    if not meta.is_file():
        return False
    info = results.read_json(meta)
    return bool(info.get("measurement", info.get("quick") is False))


def measurement_files(folder="data/bench") -> list[Path]:
    """The ``bench-*.csv`` files in ``folder`` that are measurements (:func:`is_measurement`), sorted: what the cost
    chapter reads."""
    return sorted(p for p in Path(folder).glob("bench-*.csv") if is_measurement(p) and not _long_context(p))


def _long_context(csv_path) -> bool:
    """A ``crisp bench --long-context`` or ``--overhead`` file (their own columns, not a variant table)."""
    return results.read_json(Path(csv_path).with_suffix(".json")).get("kind") in ("longcontext", "overhead")


# --- summaries the cost chapter shows ------------------------------------------------------------

TARGETS = {"crisp-0.8-row-uniform": 1.10, "crisp-0.8-row-adaptive": 1.15}  # train step at SST-2 lengths, vs eager


def headline(frame: pd.DataFrame, setting: str = "sst2") -> pd.DataFrame:
    """The performance targets: training-step ratio to eager of Crisp 0.8 row (uniform, adaptive) at ``setting``."""
    rows = frame[(frame.setting == setting) & (frame["mode"] == "train") & frame.variant.isin(list(TARGETS))]
    paired = [c for c in ("paired_ratio", "paired_ratio_q25", "paired_ratio_q75") if c in rows]  # newer files have them
    out = rows[["model_shape", "variant", "ratio_to_eager", *paired, "repeats"]].copy()
    out["target"] = out.variant.map(TARGETS)
    out["met"] = out["paired_ratio" if paired else "ratio_to_eager"] <= out.target
    return out.reset_index(drop=True)


def statistics_cost(frame: pd.DataFrame) -> pd.DataFrame:
    """Time of Crisp 0.8 row uniform with its statistics on over the same rule with them off (same run)."""
    on = frame[frame.variant == "crisp-0.8-row-uniform"].set_index(["model_shape", "setting", "mode"]).median_s
    off = frame[frame.variant == "crisp-0.8-row-uniform-nostats"].set_index(["model_shape", "setting", "mode"]).median_s
    shared = on.index.intersection(off.index)
    return pd.DataFrame({"stats_on_s": on[shared], "stats_off_s": off[shared],
                         "on_over_off": on[shared] / off[shared]}).reset_index()


def extra_saved_per_layer(frame: pd.DataFrame) -> pd.DataFrame:
    """Memory each variant keeps for backward beyond eager dense, per layer, in units of one float32
    ``[B, H, L, L]`` tensor (training rows of the fixed-length settings ``L128`` / ``L512``)."""
    rows = frame[(frame["mode"] == "train") & frame.setting.isin(["L128", "L512"])].copy()
    if rows.empty:
        return pd.DataFrame(columns=["model_shape", "setting", "variant", "extra_per_layer_in_BHLL_fp32"])
    length = rows.setting.str[1:].astype(int)
    layers_heads = rows.model_shape.map(lambda m: SHAPES[m]["heads"] * SHAPES[m]["layers"])
    unit_mb = rows.batch_size * layers_heads * length**2 * 4 / 2**20
    eager_mb = rows.saved_mb.where(rows.variant == "eager").groupby([rows.model_shape, rows.setting]).transform("max")
    rows["extra_per_layer_in_BHLL_fp32"] = (rows.saved_mb - eager_mb) / unit_mb
    return rows[["model_shape", "setting", "variant", "extra_per_layer_in_BHLL_fp32"]].reset_index(drop=True)


def padding_epoch(frame: pd.DataFrame, sentences: int = 67349,
                  variants_shown=("eager", "crisp-0.8-row-uniform")) -> pd.DataFrame:
    """Seconds for one pass over ``sentences`` (SST-2's training set): dynamic padding with length-grouped
    batches (setting ``sst2``) vs the paper's pad-to-512 (``sst2-pad512``), scaled from per-sentence medians."""
    rows = frame[frame.setting.isin(["sst2", "sst2-pad512"]) & frame.variant.isin(list(variants_shown))]
    if rows.setting.nunique() < 2:
        return pd.DataFrame(columns=["model_shape", "variant", "mode", "dynamic_s", "pad512_s", "pad512_over_dynamic"])
    per = rows.pivot_table(index=["model_shape", "variant", "mode"], columns="setting", values="ms_per_sentence")
    out = pd.DataFrame({"dynamic_s": per["sst2"] * sentences / 1000, "pad512_s": per["sst2-pad512"] * sentences / 1000})
    out["pad512_over_dynamic"] = out.pad512_s / out.dynamic_s
    return out.reset_index()


# The bench variant that runs each of the paper's four configurations as we train them (row granularity;
# the baseline is Crisp at sparsity 0, the same code path as the sparse ones).
CONFIG_VARIANTS = {"crisp-0-row": "baseline", "crisp-0.6-row-adaptive": "light_sparse",
                   "crisp-0.8-row-uniform": "uniform_sparse", "crisp-0.8-row-adaptive": "aggressive_sparse"}


def ratio_curves(frame: pd.DataFrame) -> pd.DataFrame:
    """Time ratios of every variant against length, from ONE benchmark file (ratios never cross files).

    One row per (shape, setting, mode, variant): ``length`` is the mean padded width per sentence (what
    the attention kernels run at: ``padded_tokens / (batch_size * batches)``), ``real_length`` the mean
    real tokens, ``ratio_to_eager`` as recorded, ``ratio_to_sdpa`` = the variant's ratio over SDPA's in
    the same (shape, setting, mode) (NaN where the file has no SDPA), ``config`` the paper configuration
    the variant runs (:data:`CONFIG_VARIANTS`, else empty).

    Raises ValueError when a (shape, setting, mode, variant) repeats: two files concatenated.
    """
    keys = ["model_shape", "setting", "mode", "variant"]
    if frame.duplicated(keys).any():
        raise ValueError("ratio_curves takes one benchmark file: some (shape, setting, mode, variant) repeat")
    out = frame[keys + ["ratio_to_eager"]].copy()
    sentences = frame.batch_size * frame.batches
    out["length"] = frame.padded_tokens / sentences
    out["real_length"] = frame.real_tokens / sentences
    sdpa = frame[frame.variant == "sdpa"].set_index(keys[:3]).ratio_to_eager
    base = pd.Series([sdpa.get(k, np.nan) for k in zip(*(frame[c] for c in keys[:3]))], index=frame.index)
    out["ratio_to_sdpa"] = frame.ratio_to_eager / base
    out["config"] = frame.variant.map(CONFIG_VARIANTS).fillna("")
    return out.reset_index(drop=True)


def memory_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Memory autograd keeps for backward, per (shape, setting), over the Crisp variants of one file:
    the range of their ratio to eager dense and of their extra per layer in float32 ``[B, H, L, L]``
    units (NaN outside the fixed-length settings, see :func:`extra_saved_per_layer`)."""
    train = frame[(frame["mode"] == "train") & frame.variant.str.startswith("crisp")]
    out = train.groupby(["model_shape", "setting"], sort=False).saved_ratio_to_eager.agg(
        saved_ratio_min="min", saved_ratio_max="max")
    extra = extra_saved_per_layer(frame)
    extra = extra[extra.variant.str.startswith("crisp")].groupby(["model_shape", "setting"]).extra_per_layer_in_BHLL_fp32
    out["extra_min"] = extra.min().reindex(out.index).astype(float)  # NaN where the file has no fixed length
    out["extra_max"] = extra.max().reindex(out.index).astype(float)
    return out.reset_index()


# --- torch.compile: compiled vs eager Crisp training step -----------------------------------------


def run_compiled(shapes=("minilm",), settings=None, repeats: int = 5, warmup: int = 1, device: str = "auto",
                 sst2_lengths=None, config: CrispConfig | None = None, progress: bool = True,
                 backend: str = "inductor", with_dense: bool = True) -> pd.DataFrame:
    """Training step (forward + backward) of Crisp ``config`` (default 0.8 row uniform, statistics on)
    run eagerly and through ``torch.compile(model, dynamic=True)``, and of dense eager attention,
    eagerly and compiled (``with_dense``: tells what compiling costs or saves without Crisp).

    Same model (shared weights), variants interleaved in a fresh random order each round as in
    :func:`run`. ``compile_s`` is the first compiled step (compilation included, not in the
    medians); ``graph_breaks`` counts the graph breaks Dynamo met while compiling (all batch widths,
    dynamic shapes) and ``recompiles`` the graphs compiled after the first step. (A batch so short
    that its rows keep at most one key, e.g. width <= 5 at 0.8, compiles one more graph, once.) One row per (shape, setting, variant).
    """
    import torch._dynamo
    from torch._dynamo.utils import counters
    from tqdm.auto import tqdm

    config = config or CrispConfig("x", 0.8)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    settings = settings or {"sst2": ("sst2", 64, 4), "L128": (128, 16, 1)}
    rows = []
    for shape, setting in tqdm([(sh, st) for sh in shapes for st in settings], disable=not progress, desc="compile"):
        lengths, batch_size, n_batches = settings[setting]
        if isinstance(lengths, str):
            if lengths != "sst2" or sst2_lengths is None:
                raise ValueError(f"setting {setting!r} needs sst2_lengths (a sample of tokenized SST-2 lengths)")
            lengths = sst2_lengths
        torch.manual_seed(0)
        model = build_model(shape).to(device).train()
        batches = make_batches(lengths, batch_size, n_batches, device=device)
        enable(model, config)
        torch._dynamo.reset()
        counters.clear()
        compiled = torch.compile(model, dynamic=True, backend=backend)
        compile_s = {"compiled-crisp": _step(compiled, batches, True, device)}  # compiles every batch width once
        if with_dense:  # the same compiled model with eager dense attention: what compiling does without Crisp
            model.set_attn_implementation("eager")
            compile_s["compiled-dense"] = _step(compiled, batches, True, device)
            model.set_attn_implementation("crisp")
        _step(compiled, batches, True, device)  # transformers sets config.problem_type on its first call
        graphs_after_first = counters["stats"]["unique_graphs"]
        runners = {"eager-dense": (model, "eager"), "eager-crisp": (model, config), "compiled-crisp": (compiled, config)}
        if with_dense:
            runners["compiled-dense"] = (compiled, "eager")
        times = {name: [] for name in runners}
        order = np.random.default_rng(1)
        for r in range(warmup + repeats):
            for i in order.permutation(len(runners)):
                name = list(runners)[i]
                runner, use = runners[name]
                if use == "eager":
                    model.set_attn_implementation("eager")
                else:
                    model.set_attn_implementation("crisp")
                t = _step(runner, batches, True, device)
                if r >= warmup:
                    times[name].append(t)
        recompiles = counters["stats"]["unique_graphs"] - graphs_after_first
        breaks = sum(counters["graph_break"].values())  # every break Dynamo met while compiling, any module
        eager_crisp = np.array(times["eager-crisp"])
        for name in runners:
            t = np.array(times[name])
            rows.append({
                "model_shape": shape, "setting": setting, "batch_size": batch_size, "batches": n_batches,
                "variant": name, "config": config.to_dict(), "median_s": float(np.median(t)),
                "repeats": repeats, "ratio_to_eager_crisp": float(np.median(t) / np.median(eager_crisp)),
                "paired_ratio_to_eager_crisp": float(np.median(t / eager_crisp)),
                "compile_s": compile_s.get(name),
                "graph_breaks": breaks if name.startswith("compiled") else None,
                "backend": backend, "device": device, "threads": torch.get_num_threads(),
                "recompiles": recompiles if name.startswith("compiled") else None,
            })
        del model, compiled
    return pd.DataFrame(rows)


# --- overhead: a training step at SST-2 lengths, the paper's configurations vs dense eager ------------

OVERHEAD_CONFIGS = ("baseline", "light_sparse", "uniform_sparse", "aggressive_sparse")  # crisp.CONFIGS, as trained
OVERHEAD_TARGETS = {"fp32": 1.05, "bf16": 1.10}  # issue 29: a training step's time over dense eager's, same precision


def hardware_labels() -> dict:
    """What an overhead ratio depends on: CPU vector capability (``AVX2``, ``AVX512``...), whether the CPU has
    native bfloat16 (``avx512_bf16``/``amx_bf16`` in ``/proc/cpuinfo``), cores, threads, torch version."""
    import os
    import platform

    flags = ""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        pass
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_model": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "native_bf16": any(f in flags.split() for f in ("avx512_bf16", "amx_bf16")), "torch": torch.__version__}


def _train_step(model, batches, precision: str) -> None:
    """One optimizer step's forward + backward (no update: the weights stay the same for every variant)."""
    for batch in batches:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**batch).loss
        loss.backward()


def run_overhead(shape: str = "minilm", lengths=None, batch_size: int = 64, n_batches: int = 2, repeats: int = 20,
                 warmup: int = 2, precisions=("fp32", "bf16"), configs=OVERHEAD_CONFIGS, progress: bool = True,
                 seed: int = 0) -> pd.DataFrame:
    """Training-step time of Crisp's paper configurations over dense eager attention's, per precision, on the CPU.

    One model (random weights, ``shape``), ``n_batches`` length-grouped batches of ``batch_size`` sentences drawn
    from ``lengths`` (SST-2's token lengths), forward + backward per step. Every round runs each (precision,
    variant) once, in a fresh random order; ``warmup`` rounds are dropped. Each step is timed by the wall clock
    and by this process's CPU time (``time.process_time``: less sensitive to other processes on the machine).
    Reported per (precision, variant): medians, the ratio of medians to eager's at the same precision, and the
    median and quartiles of the round-by-round ratio (``paired_ratio_*``: drift between rounds cancels). Each
    Crisp variant keeps its own state (adaptive ratios, statistics) across rounds, as in training; its
    ``realized_sparsity`` (over real entries) shows the rule really ran. ``met``: the paired wall-clock
    ratio is within :data:`OVERHEAD_TARGETS` of the precision.
    """
    from tqdm.auto import tqdm

    from ..configs import CONFIGS
    from ..integration import disable

    if lengths is None:
        raise ValueError("run_overhead needs lengths: a sample of tokenized SST-2 lengths (or an int)")
    unknown = sorted(set(precisions) - set(OVERHEAD_TARGETS))
    if unknown:
        raise ValueError(f"unknown precision(s) {', '.join(unknown)}; choose from {', '.join(OVERHEAD_TARGETS)}")
    torch.manual_seed(seed)
    model = build_model(shape).train()
    batches = make_batches(lengths, batch_size, n_batches, seed=seed)
    variants_ = ["eager", *configs]
    runs = [(p, v) for p in precisions for v in variants_]
    wall = {r: [] for r in runs}
    cpu = {r: [] for r in runs}
    saved = {}  # variant -> (controller state, kept, real): each variant's own state across rounds
    order = np.random.default_rng(1)
    for r in tqdm(range(warmup + repeats), disable=not progress, desc="overhead"):
        for i in order.permutation(len(runs)):
            precision, variant = runs[i]
            if variant == "eager":
                if getattr(model, "crisp_state", None) is not None:
                    disable(model)
                model.set_attn_implementation("eager")
            else:
                state = enable(model, CONFIGS[variant])
                if variant in saved:
                    state.controller.load_state_dict(saved[variant][0])
            w0, c0 = time.perf_counter(), time.process_time()
            _train_step(model, batches, precision)
            w1, c1 = time.perf_counter(), time.process_time()
            if variant != "eager":
                kept, real = saved.get(variant, (None, 0.0, 0.0))[1:]
                saved[variant] = (state.controller.state_dict(), kept + float(sum(state.kept)), real + float(sum(state.real)))
            if r >= warmup:
                wall[runs[i]].append(w1 - w0)
                cpu[runs[i]].append(c1 - c0)
    labels = hardware_labels()
    rows = []
    for precision, variant in runs:
        row = {"model_shape": shape, "setting": "sst2", "batch_size": batch_size, "batches": n_batches,
               "widths": " ".join(str(int(b["input_ids"].shape[1])) for b in batches),
               "real_tokens": int(sum(int(b["attention_mask"].sum()) for b in batches)),
               "padded_tokens": int(sum(b["attention_mask"].numel() for b in batches)),
               "precision": precision, "variant": variant,
               "sparsity": None if variant == "eager" else CONFIGS[variant].sparsity,
               "strategy": None if variant == "eager" else CONFIGS[variant].strategy}
        for clock, times in (("wall", wall), ("cpu", cpu)):
            t, ref = np.array(times[(precision, variant)]), np.array(times[(precision, "eager")])
            paired = t / ref
            row.update({f"median_{clock}_s": float(np.median(t)), f"ratio_{clock}": float(np.median(t) / np.median(ref)),
                        f"paired_ratio_{clock}": float(np.median(paired)),
                        f"paired_ratio_{clock}_q25": float(np.quantile(paired, 0.25)),
                        f"paired_ratio_{clock}_q75": float(np.quantile(paired, 0.75))})
        kept, real = saved.get(variant, (None, float("nan"), float("nan")))[1:]
        row.update({"realized_sparsity": 1.0 - kept / real if real else float("nan"), "repeats": repeats,
                    "warmup": warmup, "target": OVERHEAD_TARGETS[precision],
                    "met": bool(row["paired_ratio_wall"] <= OVERHEAD_TARGETS[precision]), **labels})
        rows.append(row)
    if getattr(model, "crisp_state", None) is not None:
        disable(model)
    return pd.DataFrame(rows)


def overhead_profile(shape: str = "minilm", lengths=None, batch_size: int = 64, n_batches: int = 2,
                     config: str = "uniform_sparse", precision: str = "fp32", repeats: int = 3,
                     seed: int = 0) -> pd.DataFrame:
    """Where Crisp's extra time goes: ``torch.profiler`` self CPU time per operator of one training step with dense
    eager attention and with Crisp ``config`` (alternated ``repeats`` times, median per operator), in
    milliseconds, with ``extra_ms`` = Crisp's minus eager's, largest first, and a ``total`` row."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    from ..configs import CONFIGS
    from ..integration import disable

    torch.manual_seed(seed)
    model = build_model(shape).train()
    batches = make_batches(lengths if lengths is not None else 32, batch_size, n_batches, seed=seed)
    per = {"eager": [], "crisp": []}
    for r in range(repeats + 1):
        for name in ("eager", "crisp"):
            if name == "eager":
                if getattr(model, "crisp_state", None) is not None:
                    disable(model)
                model.set_attn_implementation("eager")
            else:
                enable(model, CONFIGS[config])
            if r == 0:  # warm-up
                _train_step(model, batches, precision)
                continue
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                _train_step(model, batches, precision)
            per[name].append({e.key: e.self_cpu_time_total / 1000 for e in prof.key_averages()})
    if getattr(model, "crisp_state", None) is not None:
        disable(model)
    ops = sorted({k for d in per["eager"] + per["crisp"] for k in d})
    frame = pd.DataFrame({"op": ops,
                          "eager_ms": [float(np.median([d.get(k, 0.0) for d in per["eager"]])) for k in ops],
                          "crisp_ms": [float(np.median([d.get(k, 0.0) for d in per["crisp"]])) for k in ops]})
    frame["extra_ms"] = frame.crisp_ms - frame.eager_ms
    frame = frame.sort_values("extra_ms", ascending=False, ignore_index=True)
    total = {"op": "total", "eager_ms": float(np.median([sum(d.values()) for d in per["eager"]])),
             "crisp_ms": float(np.median([sum(d.values()) for d in per["crisp"]]))}
    total["extra_ms"] = total["crisp_ms"] - total["eager_ms"]
    return pd.concat([frame, pd.DataFrame([total])], ignore_index=True)
