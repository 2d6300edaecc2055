"""Crisp on many transformers architectures: tiny random models and the checks run on each.

Each entry of :data:`ARCHITECTURES` builds a tiny random model (seconds on CPU) and a batch for it;
:func:`check` runs one property, :func:`table` all of them (the book's appendix shows that table,
computed at build; ``tests/test_architectures.py`` runs the same checks one by one):

``enable``      ``crisp.enable`` finds the attention layers and switches the implementation (or, for a
                module that computes attention itself, binds its adapter: :mod:`crisp.adapters`);
``sparsity``    realized sparsity of an evaluation forward at target 0.5 is within 0.1 of it;
``dense``       at sparsity 0 the outputs on real tokens equal eager attention (atol 1e-5);
``causal``      decoders: changing a later token leaves every earlier output unchanged (s = 0.5);
``generate``    decoders: greedy ``generate()`` gives the same tokens with and without the KV cache;
``disable``     ``crisp.disable`` restores the previous implementation and its exact outputs;
``reload``      ``save_pretrained`` + ``crisp.from_pretrained`` restores the settings and outputs.

A check that does not apply (causal, generate on an encoder) is reported as ``None``.
"""

from __future__ import annotations

import tempfile

import torch
import transformers as tf

from . import adapters
from .configs import CrispConfig
from .integration import attention_modules, disable, enable, dispatches, from_pretrained

CHECKS = ("enable", "sparsity", "dense", "causal", "generate", "disable", "reload")
_SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=99,
              max_position_embeddings=64)
_LLAMA = dict(_SMALL, num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def _bart():
    cfg = tf.BartConfig(vocab_size=99, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None)
    return tf.BartForConditionalGeneration(cfg)


# name: (builder, kind) with kind "encoder", "decoder" (causal LM), "seq2seq" or "vision". Between
# them they exercise padding masks, GQA (Llama, Qwen2, Mistral), sliding windows (Mistral, Gemma2,
# ModernBERT's local layers), softcapping (Gemma2), position_bias (T5), shared layers (ALBERT) and an
# adapter (MPNet).
ARCHITECTURES = {
    "bert": (lambda: tf.BertModel(tf.BertConfig(**_SMALL)), "encoder"),
    "distilbert": (lambda: tf.DistilBertModel(tf.DistilBertConfig(vocab_size=99, dim=32, n_layers=2, n_heads=4,
                                                                   hidden_dim=64, max_position_embeddings=64)), "encoder"),
    "roberta": (lambda: tf.RobertaModel(tf.RobertaConfig(**_SMALL, pad_token_id=0)), "encoder"),
    "electra": (lambda: tf.ElectraModel(tf.ElectraConfig(**_SMALL, embedding_size=16)), "encoder"),
    "xlm-roberta": (lambda: tf.XLMRobertaModel(tf.XLMRobertaConfig(**_SMALL, pad_token_id=0)), "encoder"),
    "modernbert": (lambda: tf.ModernBertModel(tf.ModernBertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2, local_attention=4)), "encoder"),
    "albert": (lambda: tf.AlbertModel(tf.AlbertConfig(**_SMALL, embedding_size=16)), "encoder"),
    # MPNet computes its attention itself (scores + relative position bias): reached through its adapter.
    # MPNetEncoder.compute_position_bias always uses 32 buckets, so the config must have 32 too.
    "mpnet": (lambda: tf.MPNetModel(tf.MPNetConfig(**_SMALL, relative_attention_num_buckets=32)), "encoder"),
    "vit": (lambda: tf.ViTModel(tf.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                             intermediate_size=64, image_size=32, patch_size=8)), "vision"),
    "gpt2": (lambda: tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                                      pad_token_id=0, bos_token_id=1, eos_token_id=2)), "decoder"),
    "llama": (lambda: tf.LlamaForCausalLM(tf.LlamaConfig(**_LLAMA)), "decoder"),
    "qwen2": (lambda: tf.Qwen2ForCausalLM(tf.Qwen2Config(**_LLAMA)), "decoder"),
    "mistral": (lambda: tf.MistralForCausalLM(tf.MistralConfig(**dict(_LLAMA, num_key_value_heads=1),
                                                               sliding_window=4)), "decoder"),
    "gemma2": (lambda: tf.Gemma2ForCausalLM(tf.Gemma2Config(**_LLAMA, head_dim=8, sliding_window=4)), "decoder"),
    "bart": (_bart, "seq2seq"),
    "t5": (lambda: tf.T5ForConditionalGeneration(tf.T5Config(vocab_size=99, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                                             num_heads=4, decoder_start_token_id=0, pad_token_id=0,
                                                             eos_token_id=1)), "seq2seq"),
}
REFUSED = {"deberta-v2": lambda: tf.DebertaV2Model(tf.DebertaV2Config(**_SMALL))}


def build(name: str, device="cpu"):
    """The tiny random model ``name`` (seeded, eval mode) on ``device``."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    torch.manual_seed(0)
    model = ARCHITECTURES[name][0]().to(device).eval()
    try:
        model.set_attn_implementation("sdpa")  # what from_pretrained gives by default
    except ValueError:  # models without SDPA support load as eager
        model.set_attn_implementation("eager")
    return model


def inputs(name: str, device="cpu", padded: bool = True, seed: int = 1) -> dict:
    """A batch of 3 for ``name``: token ids with right padding in rows 1-2 (when ``padded``), or pixels."""
    kind = ARCHITECTURES[name][1]
    g = torch.Generator().manual_seed(seed)
    if kind == "vision":
        return {"pixel_values": torch.randn(3, 3, 32, 32, generator=g).to(device)}
    ids = torch.randint(3, 99, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    if padded:
        mask[1, 8:] = 0
        mask[2, 4:] = 0
    batch = {"input_ids": (ids * mask).to(device), "attention_mask": mask.to(device)}
    if kind == "seq2seq":
        batch["decoder_input_ids"] = torch.randint(3, 99, (3, 7), generator=g).to(device)
    return batch


def _out(model, batch) -> torch.Tensor:
    with torch.no_grad():
        out = model(**batch)
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


def _real(name, batch, out):
    """Outputs at real positions only (padded positions differ by design: Crisp gives them no mass)."""
    kind = ARCHITECTURES[name][1]
    if kind in ("encoder", "decoder"):
        return out[batch["attention_mask"].bool()]
    return out


def crisp_on(model) -> bool:
    """Does every attention layer run Crisp: dispatched ones through the ``"crisp"`` implementation,
    the others through their adapter?"""
    layers = attention_modules(model)
    return bool(layers) and all(
        model.config._attn_implementation == "crisp" if dispatches(type(m)) else adapters.attached(m) for m in layers)


def check(name: str, prop: str, device="cpu") -> bool | None:
    """Run check ``prop`` (one of :data:`CHECKS`) on architecture ``name``; None if it does not apply."""
    kind = ARCHITECTURES[name][1]
    model = build(name, device)
    sparse = CrispConfig("half", 0.5)
    if prop == "enable":
        state = enable(model, sparse)
        return state.n_layers > 0 and crisp_on(model)
    if prop == "sparsity":
        state = enable(model, sparse)
        state.record_eval = True
        _out(model, inputs(name, device))
        return all(abs(r["realized_sparsity"] - 0.5) < 0.1 for r in state.sparsity_summary())
    if prop == "dense":
        batch = inputs(name, device)
        model.set_attn_implementation("eager")
        ref = _real(name, batch, _out(model, batch))
        enable(model, CrispConfig("dense", 0.0))
        return bool(torch.allclose(_real(name, batch, _out(model, batch)), ref, atol=1e-5, rtol=0))
    if prop == "causal":
        if kind not in ("decoder", "seq2seq"):
            return None
        enable(model, sparse)
        batch = inputs(name, device, padded=False)
        field = "decoder_input_ids" if kind == "seq2seq" else "input_ids"
        cut = batch[field].shape[1] // 2
        other = dict(batch, **{field: batch[field].clone()})
        other[field][:, cut:] = (other[field][:, cut:] + 7) % 96 + 3
        a, b = _out(model, batch), _out(model, other)
        return bool(torch.equal(a[:, :cut], b[:, :cut])) and not torch.equal(a[:, cut:], b[:, cut:])
    if prop == "generate":
        if kind not in ("decoder", "seq2seq"):
            return None
        enable(model, sparse)
        batch = inputs(name, device, padded=False)
        batch.pop("decoder_input_ids", None)
        runs = [model.generate(**batch, max_new_tokens=6, do_sample=False, use_cache=c) for c in (True, False)]
        return bool(torch.equal(*runs))
    if prop == "disable":
        batch = inputs(name, device)
        before, impl = _out(model, batch), model.config._attn_implementation
        enable(model, sparse)
        changed = not torch.allclose(_real(name, batch, _out(model, batch)), _real(name, batch, before))
        disable(model)
        restored = model.config._attn_implementation == impl and not any(map(adapters.attached, model.modules()))
        return changed and restored and torch.equal(_out(model, batch), before)
    if prop == "reload":
        batch = inputs(name, device)
        n = len(attention_modules(model))  # ALBERT shares one module across its layers: 1
        config = CrispConfig("layers", [round(0.3 + 0.4 * i / max(n - 1, 1), 3) for i in range(n)])  # per-layer ratios
        enable(model, config)
        before = _out(model, batch)
        bars = tf.utils.logging.is_progress_bar_enabled()
        tf.utils.logging.disable_progress_bar()
        try:
            with tempfile.TemporaryDirectory() as folder:
                model.save_pretrained(folder)
                loaded = from_pretrained(type(model), folder).to(device).eval()
        finally:
            if bars:
                tf.utils.logging.enable_progress_bar()
        same = loaded.crisp_state.config == config and crisp_on(loaded)
        return same and bool(torch.allclose(_out(loaded, batch), before, atol=1e-6, rtol=0))
    raise ValueError(f"unknown check {prop!r}; choose one of {', '.join(CHECKS)}")


def table(names=None, checks=CHECKS, device="cpu") -> list[dict]:
    """One row per architecture (a dict), one key per check: True / False / None (does not apply)."""
    rows = []
    for name in names or ARCHITECTURES:
        row = {"architecture": name, "model": type(build(name)).__name__}
        for prop in checks:
            try:
                row[prop] = check(name, prop, device)
            except Exception as err:  # a failing architecture is a row of the table, not a crash
                row[prop] = False
                row.setdefault("error", f"{prop}: {type(err).__name__}: {err}")
        rows.append(row)
    return rows
