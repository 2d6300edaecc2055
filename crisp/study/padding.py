"""Every reading of the paper's padding, measured on the encoder: ``crisp padding``.

The paper pads every sentence to 512 tokens and prunes scores below each head's percentile
"prior to the softmax"; where the padding mask enters is not said. :mod:`crisp.study.readings` holds
each reading as a pure function; this module runs them inside the real encoder and measures, per
layer, the realized sparsity over real (query, key) pairs (:func:`measure`), the largest
difference from the dense forward (probabilities, logits), and a short pad-to-512 training run
with dense and with a mask-first reading (:func:`training_demo`). Forward passes use the encoder
as loaded (classifier head untrained): they describe the attention rule, not a fine-tuned model.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import data as data_mod
from . import models, results
from . import readings as R


def token_lengths(sentences, tokenizer, max_length: int = 512) -> list[int]:
    """Token count of each sentence with special tokens, truncated at ``max_length``."""
    return [len(ids) for ids in tokenizer(list(sentences), truncation=True, max_length=max_length)["input_ids"]]


def length_table(data=None, model: str = "minilm", max_length: int = 512) -> pd.DataFrame:
    """Histogram ``split, length, count`` of SST-2's tokenized lengths (bert-base-uncased vocabulary)."""
    tokenizer = _tokenizer(model)
    rows = []
    for name, split in data_mod.load_sst2(data).items():
        counts = pd.Series(token_lengths(split.sentences, tokenizer, max_length)).value_counts().sort_index()
        rows += [{"split": name, "length": int(k), "count": int(v)} for k, v in counts.items()]
    return pd.DataFrame(rows)


def _tokenizer(model: str):
    from transformers import AutoTokenizer

    source = models.resolve(model)
    return AutoTokenizer.from_pretrained(models.minilm_path() if source in models.TINY else source)


PAD = 512  # the paper's max length
STEPS = ("dev", "train", "training")  # parts of the study, each written to parts/<step>.*
DEMO = {"batch_size": 16, "lr": 2e-5, "sparsity": 0.8}  # the training demonstration (AdamW, pad to 512)


def _batches(texts, tokenizer, padding: str, batch_size: int):
    for start in range(0, len(texts), batch_size):
        yield tokenizer(list(texts[start:start + batch_size]), truncation=True, max_length=PAD,
                        padding="max_length" if padding == "pad512" else "longest", return_tensors="pt")


@torch.no_grad()
def measure(net, tokenizer, texts, sparsities=(0.6, 0.8), ids=tuple(R.READINGS), batch_size: int = 16,
            verify_batches: int = 1, deadline: float | None = None, checkpoint=None, log=print):
    """Realized sparsity per (reading, sparsity, layer) over ``texts``, and differences from dense.

    Batches of ``batch_size`` in the order of ``texts``, padded per reading (``dynamic``: to the
    batch's longest sentence; ``pad512``: to 512). Per batch, one dense forward (HF's eager rule
    ``softmax(scores + mask)``) also evaluates every mask-first reading on each layer's scores
    (``ReadingState.shadow``): a reading whose probabilities equal dense bit for bit at every
    layer (in practice: keeps every real key, see ``readings._covers``) *is* the dense forward, so
    its counts are taken from it; any other batch, and the first
    ``verify_batches`` batches regardless, run the reading's own forward and compare its
    probabilities and logits with dense. Raw readings always run their own forward.

    ``deadline`` (a ``time.perf_counter()`` value): stop after the batch that passes it; the rows
    then count only the sentences measured (column ``sentences``). ``checkpoint(rows, diffs)`` is
    called after every batch with the results so far. Returns ``(rows, diffs)`` as DataFrames.
    """
    state = R.use(net)
    n_layers = state.n_layers
    kept = defaultdict(lambda: np.zeros(n_layers, dtype=np.int64))
    real = {p: np.zeros(n_layers, dtype=np.int64) for p in ("dynamic", "pad512")}
    probs_diff = defaultdict(lambda: np.zeros(n_layers))
    logits_diff = defaultdict(float)
    own = defaultdict(int)  # batches where the reading ran its own forward
    same = defaultdict(int)  # batches where its forward was bitwise the dense forward
    batches = defaultdict(int)
    done = defaultdict(int)  # sentences measured per padding
    started = time.perf_counter()

    def frames():
        rows, diffs = [], []
        for (rid, s), k in kept.items():
            r = R.get(rid)
            for layer in range(n_layers):
                n = int(real[r.padding][layer])
                rows.append({"reading": rid, "padding": r.padding, "mask_first": r.mask_first,
                             "mask_value": r.mask_value, "granularity": r.granularity, "sparsity": s, "layer": layer,
                             "realized_sparsity": 1.0 - int(k[layer]) / n if n else float("nan"), "real_pairs": n,
                             "sentences": done[r.padding], "batches": batches[(rid, s)],
                             "batches_bitwise_dense": same[(rid, s)] if r.mask_first else None,
                             "own_forwards": own[(rid, s)]})
                if r.mask_first:
                    diffs.append({"reading": rid, "sparsity": s, "layer": layer, "sentences": done[r.padding],
                                  "max_abs_probs": float(probs_diff[(rid, s)][layer]),
                                  "max_abs_logits": logits_diff[(rid, s)], "own_forwards": own[(rid, s)],
                                  "batches": batches[(rid, s)], "batches_bitwise_dense": same[(rid, s)]})
        return pd.DataFrame(rows), pd.DataFrame(diffs)

    for padding in ("dynamic", "pad512"):
        mine = [R.get(i) for i in ids if R.get(i).padding == padding]
        if not mine:
            continue
        for b, enc in enumerate(_batches(texts, tokenizer, padding, batch_size)):
            state.set("dense", 0.0)
            for r in mine:
                if r.mask_first:
                    for s in sparsities:
                        state.add_shadow(r, s)
            ref_logits = net(**enc).logits
            real[padding] += state.real
            shadow, ref_probs = state.shadow, None
            for r in mine:
                for s in sparsities:
                    key = (r.id, s)
                    batches[key] += 1
                    rec = shadow.get(key)
                    identical = rec is not None and all(rec["identical"])
                    same[key] += int(identical)
                    if identical and b >= verify_batches:
                        kept[key] += rec["kept"]
                        continue
                    if r.mask_first and ref_probs is None:  # dense probabilities to compare with
                        state.set("dense", 0.0)
                        state.store = True
                        net(**enc)
                        ref_probs = state.probs
                    state.set(r, s)
                    state.reference = ref_probs if r.mask_first else None
                    logits = net(**enc).logits
                    own[key] += 1
                    kept[key] += state.kept
                    logits_diff[key] = max(logits_diff[key], float((logits - ref_logits).abs().max()))
                    if r.mask_first:
                        probs_diff[key] = np.maximum(probs_diff[key], state.max_abs)
                        if identical and (state.max_abs != [0.0] * n_layers or not torch.equal(logits, ref_logits)):
                            raise AssertionError(f"{r.id} at {s}: bitwise-identical layers but a different forward")
            done[padding] += int(enc["input_ids"].shape[0])
            log(f"  {padding} batch {b + 1}: {done[padding]}/{len(texts)} sentences, {time.perf_counter() - started:.0f} s")
            if checkpoint is not None:
                checkpoint(*frames())
            if deadline is not None and time.perf_counter() > deadline:
                log(f"  {padding}: time budget reached after {done[padding]} sentences")
                break
    return frames()


def training_demo(model: str = "minilm", data=None, ids=("pad512-maskfirst-finfo-row",), sparsity: float = 0.8,
                  steps: int = 10, batch_size: int = 16, lr: float = 2e-5, seed: int = 0, log=print) -> pd.DataFrame:
    """A few AdamW steps at pad-to-512 from one seed: dense, then each reading in ``ids``.

    Every run loads the encoder with the same freshly seeded classifier head, reseeds torch
    (dropout) and sees the same batches (a seeded sample of train, ``steps * batch_size``
    sentences). Returns one row per (reading, step): the loss, its exact bits (``float.hex``),
    whether it equals dense's loss bit for bit, and (last step) whether every parameter does.
    """
    train = data_mod.load_sst2(data)["train"]
    pick = np.random.default_rng(seed).choice(len(train), steps * batch_size, replace=False)
    rows, final = [], {}
    for rid in ("dense", *ids):
        net, tokenizer = models.load(model, seed=seed)
        state = R.use(net, rid, sparsity if rid != "dense" else 0.0)
        net.train()
        torch.manual_seed(seed)
        opt = torch.optim.AdamW(net.parameters(), lr=lr)
        started = time.perf_counter()
        for step in range(steps):
            idx = pick[step * batch_size:(step + 1) * batch_size]
            enc = tokenizer([train.sentences[i] for i in idx], truncation=True, max_length=PAD,
                            padding="max_length", return_tensors="pt")
            state.set(state.reading, state.sparsity)  # fresh counts per step
            loss = net(**enc, labels=torch.tensor([train.labels[i] for i in idx])).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            value = float(loss.detach())
            rows.append({"reading": rid, "sparsity": state.sparsity, "step": step + 1, "loss": value,
                         "loss_hex": value.hex(), "realized_sparsity_mean": float(np.mean(state.realized()))})
            log(f"  training {rid} step {step + 1}: loss {value:.6f} ({time.perf_counter() - started:.0f} s)")
        final[rid] = {k: v.detach().clone() for k, v in net.state_dict().items()}
    frame = pd.DataFrame(rows)
    dense = frame[frame.reading == "dense"].set_index("step")["loss_hex"]
    frame["bitwise_equal_to_dense"] = [h == dense[s] for h, s in zip(frame.loss_hex, frame.step)]
    frame["params_bitwise_equal_to_dense"] = [
        bool(all(torch.equal(final[r][k], final["dense"][k]) for k in final["dense"])) if s == steps else None
        for r, s in zip(frame.reading, frame.step)]
    return frame


def run_step(step: str, output="data/padding", model: str = "minilm", data=None, train_sentences: int = 1024,
             batch_size: int = 16, seed: int = 0, steps: int = 10, demo_ids=("pad512-maskfirst-finfo-row",),
             pad512_minutes: float | None = None, log=print) -> Path:
    """Run one part of the study (``dev``, ``train`` or ``training``), write it under ``parts/``, assemble.

    ``dev`` measures every dev sentence with dynamic padding, ``train`` a seeded sample of
    ``train_sentences``; the pad-to-512 readings take the same sentences in a seeded random order
    and stop after ``pad512_minutes`` (None: all), the count measured recorded per row.
    """
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; choose from {', '.join(STEPS)}")
    if train_sentences < 1 or batch_size < 1 or steps < 1:
        raise ValueError("--train-sentences, --batch-size and --steps must be positive")
    folder = Path(output) / models.short_name(model)
    parts = folder / "parts"
    results.check_writable(parts)
    started = time.perf_counter()
    torch.manual_seed(seed)
    meta = {"step": step, "model": models.short_name(model), "data_source": data_mod.resolve_source(data), "seed": seed,
            "threads": torch.get_num_threads(), "git_commit": results.git_commit(), **results.environment()}
    if step == "training":
        frame = training_demo(model, data, demo_ids, steps=steps, seed=seed, log=log, **DEMO)
        results.write_csv(parts / "training.csv", frame)
        meta.update({"steps": steps, **DEMO, "optimizer": "AdamW", "padding": "max_length 512",
                     "readings": ["dense", *demo_ids], "device": "cpu"})
    else:
        split = data_mod.load_sst2(data)[step]
        if step == "train":
            pick = np.sort(np.random.default_rng(seed).choice(len(split), min(train_sentences, len(split)), replace=False))
            texts = [split.sentences[i] for i in pick]
            meta["sample"] = f"{len(texts)} of {len(split)} train sentences, numpy default_rng({seed}).choice, file order"
        else:
            texts = split.sentences
            meta["sample"] = f"all {len(texts)} dev sentences, file order"
        net, tokenizer = models.load(model, seed=seed)
        net.eval()
        meta.update({"sentences": len(texts), "batch_size": batch_size, "sparsities": [0.6, 0.8]})
        dyn = [r for r in R.READINGS if R.READINGS[r].padding == "dynamic"]
        pad = [r for r in R.READINGS if R.READINGS[r].padding == "pad512"]
        dyn_rows, dyn_diffs = measure(net, tokenizer, texts, ids=dyn, batch_size=batch_size, log=log)
        # pad-to-512 costs ~20x more: sentences in a seeded random order, stopped at the time budget
        order = np.random.default_rng(seed + 1).permutation(len(texts))
        meta["pad512_order"] = f"numpy default_rng({seed + 1}).permutation of the {len(texts)} sentences above"
        meta["pad512_minutes"] = pad512_minutes

        def save(rows, diffs):
            rows, diffs = pd.concat([dyn_rows, rows]), pd.concat([dyn_diffs, diffs])
            rows.insert(5, "split", step)
            diffs.insert(1, "split", step)
            results.write_csv(parts / f"{step}.csv", rows)
            results.write_csv(parts / f"{step}_vs_dense.csv", diffs)
            meta["seconds"] = time.perf_counter() - started
            results.write_json(parts / f"{step}.json", meta)

        deadline = time.perf_counter() + 60 * pad512_minutes if pad512_minutes else None
        save(*measure(net, tokenizer, [texts[i] for i in order], ids=pad, batch_size=batch_size, deadline=deadline,
                      checkpoint=save, log=log))
        assemble(folder, data, model)
        return folder
    meta["seconds"] = time.perf_counter() - started
    results.write_json(parts / f"{step}.json", meta)
    assemble(folder, data, model)
    return folder


def assemble(folder, data=None, model: str = "minilm") -> None:
    """Combine the parts present into ``readings.csv``, ``readings_vs_dense.csv``, ``mask_first_training.csv``,
    ``sst2_lengths.csv`` and ``provenance.json``."""
    folder, parts = Path(folder), Path(folder) / "parts"
    present = [s for s in STEPS if (parts / f"{s}.json").is_file()]
    splits = [s for s in ("dev", "train") if s in present]
    if splits:
        results.write_csv(folder / "readings.csv", pd.concat([pd.read_csv(parts / f"{s}.csv") for s in splits]))
        results.write_csv(folder / "readings_vs_dense.csv", pd.concat([pd.read_csv(parts / f"{s}_vs_dense.csv") for s in splits]))
    if "training" in present:
        results.write_csv(folder / "mask_first_training.csv", pd.read_csv(parts / "training.csv"))
    results.write_csv(folder / "sst2_lengths.csv", length_table(data, model))
    results.write_json(folder / "provenance.json", {
        "what": "crisp padding: every reading of the paper's padding on the encoder as loaded (classifier head "
                "untrained for the measurements; a fresh seeded head for the training demonstration)",
        "command": "crisp padding --steps dev,train,training (one part per step, assembled)",
        "parts": {s: results.read_json(parts / f"{s}.json") for s in present},
        "readings": {k: vars(v) for k, v in R.READINGS.items()}})
