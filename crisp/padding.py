"""What "80% sparsity" means once padding is counted, and SST-2's real lengths.

The paper pads every sentence to 512 tokens (its max length) and takes the percentile over the
scores of each head. If padding keys compete in that choice, the sparsity that real tokens see
is not the nominal ratio. :func:`padding_study` measures it: the same encoder, the same dev
sentences, top-k with dynamic padding (padding never counts) and with the paper's pad-to-512
(padding competes, then is masked), realized sparsity over real (query, key) pairs per layer.
It runs forward passes only, on the encoder as loaded (its classifier head is untrained), so it
describes the attention rule, not a fine-tuned model.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch

from . import data as data_mod
from . import models, results
from .configs import CrispConfig
from .integration import enable


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


@torch.no_grad()
def padding_study(model: str = "minilm", data=None, sentences: int = 128, sparsities=(0.6, 0.8),
                  max_length: int = 512, batch_size: int = 16, seed: int = 0) -> pd.DataFrame:
    """Realized per-layer sparsity over real tokens: dynamic padding vs pad-to-``max_length``.

    Uses the first ``sentences`` dev sentences. Returns one row per (padding, sparsity, layer).
    """
    net, tokenizer = models.load(model, seed=seed)
    net.eval()
    dev = data_mod.load_sst2(data)["dev"]
    texts = dev.sentences[:sentences]
    rows = []
    for padding in ("dynamic", "paper_512"):
        for sparsity in sparsities:
            cfg = CrispConfig(f"uniform-{sparsity}", sparsity, "uniform", paper_padding=padding != "dynamic")
            state = enable(net, cfg)
            state.record_eval = True
            for start in range(0, len(texts), batch_size):
                enc = tokenizer(texts[start:start + batch_size], truncation=True, max_length=max_length,
                                padding="max_length" if cfg.paper_padding else "longest", return_tensors="pt")
                net(**enc)
            for row in state.sparsity_summary():
                rows.append({"padding": padding, "sparsity": sparsity, "layer": row["layer"],
                             "realized_sparsity": row["realized_sparsity"]})
    return pd.DataFrame(rows)


def write_study(output="data/padding", model: str = "minilm", data=None, sentences: int = 128) -> Path:
    """Run :func:`padding_study` and the length histogram; write both with a provenance file."""
    folder = Path(output) / models.short_name(model)
    results.check_writable(folder)
    started = time.perf_counter()
    study = padding_study(model, data, sentences)
    lengths = length_table(data, model)
    results.write_csv(folder / "padding_study.csv", study)
    results.write_csv(folder / "sst2_lengths.csv", lengths)
    results.write_json(folder / "provenance.json", {
        "what": "forward passes of the encoder as loaded (classifier head untrained) on the first dev sentences",
        "model": models.short_name(model), "sentences": sentences, "data_source": data_mod.resolve_source(data),
        "seconds": time.perf_counter() - started, "git_commit": results.git_commit(), **results.environment(),
    })
    return folder
