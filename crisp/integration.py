"""Crisp attention inside Hugging Face models: an ``AttentionInterface`` function, ``enable``, ``disable``.

``import crisp`` registers the implementation name ``"crisp"`` with transformers'
``AttentionInterface`` *and* ``AttentionMaskInterface`` (with only the first, transformers 5 hands
the function ``attention_mask=None`` and padding would be ignored). So
``AutoModel.from_pretrained(..., attn_implementation="crisp")`` runs the dense rule through our
code path, and ``crisp.enable(model, config)`` switches a loaded model to Crisp attention.

Which modules count is decided by how attention is dispatched: a module whose ``forward`` looks its
attention function up in transformers' ``ALL_ATTENTION_FUNCTIONS`` (BERT, DistilBERT, RoBERTa,
ELECTRA, ALBERT, ViT, GPT-2, Llama, Qwen2, Mistral, BART, ...). Encoder-decoder cross-attention
(a module flagged ``is_cross_attention`` or named ``*cross*``/``encoder_attn``/``EncDecAttention``)
stays dense unless ``CrispConfig(cross_attention=True)``. Modules that compute attention themselves
are reached through an adapter registered for their class (:mod:`crisp.adapters`: MPNet); a model
whose attention has neither (DeBERTa-v2) is refused with an error saying so.

Relies on transformers 5 APIs present in 5.17-5.24: ``AttentionInterface.register``,
``AttentionMaskInterface.register``, ``masking_utils.sdpa_mask`` (``allow_is_causal_skip``),
``PreTrainedModel.set_attn_implementation`` and ``integrations.sdpa_attention.repeat_kv``.
"""

from __future__ import annotations

import functools
import inspect
import re
import warnings

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from . import adapters
from .attention import key_mask_of, masked_softmax
from .configs import CrispConfig
from .longcontext import AUTO_LENGTH
from .state import CrispState

__all__ = ["CrispState", "attention_modules", "crisp_attention", "crisp_mask", "disable", "enable",
           "from_pretrained", "register"]

NAME = "crisp"
CONFIG_KEY = "crisp"  # model.config.crisp: what save_pretrained writes to config.json
# Keywords that some model's eager attention function honours and Crisp does not: refused.
# (Read from every ``eager_attention_forward`` in transformers 5.24: besides mask, scaling and
# dropout they take ``position_bias``, ``softcap``, ``sliding_window`` (honoured here) and
# ``sinks`` / ``s_aux``.) Every other keyword (``encoder_hidden_states``, ``position_ids``,
# ``cu_seq_lens_q``, ``output_attentions``, ...) only reaches the function through ``**kwargs``
# and is ignored by eager attention too: the mask already encodes padding and packing.
REFUSED_KWARGS = frozenset({"s_aux", "sinks", "head_mask", "layer_head_mask"})
_CROSS_NAME = re.compile(r"cross|encoder_attn|encdec", re.IGNORECASE)


# --- the attention function ----------------------------------------------------------------------


def _mask_and_bias(attention_mask, scores, causal: bool, sliding_window):
    """``(key_mask, bias)`` from what transformers passes (one canonical bool form inside).

    ``attention_mask`` is None, a bool ``[B|1, 1|H, Lq, Lk]`` mask (True = attend) or a float one,
    additive as in eager attention (0 / ``finfo.min`` or any bias): its values are added to the
    scores and entries at ``<= finfo.min / 2`` count as masked. With no mask and ``causal``, query
    ``i`` sees keys ``j <= i`` (and ``j > i - sliding_window``), as SDPA's ``is_causal`` does.
    """
    shape = scores.shape  # [B, H, Lq, Lk]
    if attention_mask is None:
        if not causal or shape[-2] == 1:  # one query (decoding) sees its whole cache
            return None, None
        q = torch.arange(shape[-2], device=scores.device)[:, None]
        k = torch.arange(shape[-1], device=scores.device)[None, :]
        keep = k <= q
        if sliding_window is not None:
            keep = keep & (k > q - sliding_window)
        return keep[None, None], None  # [1, 1, Lq, Lk]
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.ndim != 4:
        raise ValueError(
            f"crisp_attention expects a 4-D attention_mask [batch, 1 or heads, queries, keys] from transformers, "
            f"got {getattr(attention_mask, 'shape', type(attention_mask).__name__)}"
        )
    try:
        torch.broadcast_shapes(attention_mask.shape, shape)
    except RuntimeError as err:
        raise ValueError(
            f"attention_mask of shape {tuple(attention_mask.shape)} does not fit the scores {tuple(shape)} "
            f"[batch, heads, queries, keys]"
        ) from err
    if attention_mask.dtype == torch.bool:
        return attention_mask, None
    if not attention_mask.dtype.is_floating_point:
        raise ValueError(f"attention_mask must be bool (True = attend) or additive float, got {attention_mask.dtype}")
    key_mask = key_mask_of(attention_mask)
    return key_mask, attention_mask.masked_fill(~key_mask, 0.0)


def crisp_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                    is_causal=None, sliding_window=None, softcap=None, position_bias=None, s_aux=None, **kwargs):
    """``AttentionInterface`` function: scores → Crisp top-k softmax → dropout → weighted values.

    ``query`` is ``[B, H, Lq, D]``, ``key``/``value`` ``[B, H_kv, Lk, D]`` with ``H_kv`` dividing
    ``H`` (grouped-query attention: expanded as eager does); returns ``([B, Lq, H, D], probs
    [B, H, Lq, Lk])``, the contract of transformers' ``eager_attention_forward``. Scores are
    ``tanh(qk*scaling / softcap) * softcap`` (when ``softcap``) ``+ position_bias + float mask``.
    ``is_causal`` (else ``module.is_causal``, else True, as SDPA) applies only when the mask is None;
    ``sliding_window`` then limits it too. Attention sinks and head masks (:data:`REFUSED_KWARGS`)
    are refused; other keywords are ignored, as eager attention ignores them. A query row with no
    key to attend (a left-padding position) gets all-zero probabilities, where eager attention
    averages the masked values: outputs differ only at such padding positions. A module ``crisp.enable`` has not touched runs dense.
    """
    refused = sorted(k for k in REFUSED_KWARGS & set(kwargs) if kwargs[k] is not None)
    if s_aux is not None:
        refused.insert(0, "s_aux")
    if refused:
        raise NotImplementedError(f"{type(module).__name__} passes {refused} (attention sinks / head masks), which "
                                  f"Crisp attention does not implement; refusing rather than ignoring them")
    if key.shape[1] != query.shape[1]:  # grouped-query attention
        if query.shape[1] % key.shape[1]:
            raise ValueError(f"{query.shape[1]} query heads cannot share {key.shape[1]} key/value heads evenly")
        key = repeat_kv(key, query.shape[1] // key.shape[1])
        value = repeat_kv(value, query.shape[1] // value.shape[1])
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    causal = getattr(module, "is_causal", True) if is_causal is None else bool(is_causal)
    state = getattr(module, "crisp_state", None)
    rows = None if state is None else state.chunk_rows(query.shape[0], query.shape[1], query.shape[2], key.shape[2],
                                                      query.device.type)
    if rows is not None:  # long contexts: queries in chunks, linear memory (crisp.longcontext); no weights returned
        shape = torch.empty((), device=query.device).expand(*query.shape[:3], key.shape[2])  # [B, H, Lq, Lk], no memory
        key_mask, bias = (None, None) if attention_mask is None else _mask_and_bias(attention_mask, shape, causal, None)
        out = state.attend_chunked(
            module.crisp_layer, query, key, value, rows, module.training, scaling=scaling, key_mask=key_mask,
            position_bias=position_bias, mask_bias=bias, causal=attention_mask is None and causal and query.shape[2] > 1,
            sliding_window=sliding_window, softcap=softcap, dropout=dropout)
        return out.transpose(1, 2).contiguous(), None
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # [B, H, Lq, Lk]
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if position_bias is not None:
        scores = scores + position_bias
    key_mask, bias = _mask_and_bias(attention_mask, scores, causal, sliding_window)
    if bias is not None and _adds_something(scores, bias):
        scores = scores + bias
    if state is None:
        _warn_if_saved_settings(module)
        real = torch.ones_like(scores, dtype=torch.bool) if key_mask is None else key_mask.expand(scores.shape)
        probs = masked_softmax(scores, real)
    else:
        probs = state.attend(module.crisp_layer, scores, key_mask, module.training)
    probs = torch.nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(probs.to(value.dtype), value).transpose(1, 2).contiguous()  # [B, Lq, H, D]
    return out, probs


def _adds_something(scores, bias) -> bool:
    """Whether ``scores + bias`` can differ from ``scores``. A padding mask's bias (see :func:`_mask_and_bias`: the
    mask's values at real entries, 0 at masked ones, which the key mask handles) is all zeros: its addition
    would cost a pass over ``[B, H, Lq, Lk]`` and change nothing (``x + 0 == x``; a ``-0.0`` score becoming ``+0.0``
    ranks and exponentiates alike). True whenever the sum would change the dtype or shape, the bias needs a
    gradient, or under ``torch.compile`` (no data-dependent branch)."""
    if torch.compiler.is_compiling() or bias.requires_grad or torch.result_type(scores, bias) != scores.dtype:
        return True  # e.g. bfloat16 scores (autocast) + a float32 mask: the sum is float32, as in eager attention
    return torch.broadcast_shapes(scores.shape, bias.shape) != scores.shape or bool(bias.any())


_WARNED: set[int] = set()


def _warn_if_saved_settings(module) -> None:
    """Warn once per config when a model whose config holds Crisp settings runs dense (loaded, never enabled)."""
    config = getattr(module, "config", None)
    if isinstance(getattr(config, CONFIG_KEY, None), dict) and id(config) not in _WARNED:
        _WARNED.add(id(config))  # ids, not attributes: save_pretrained would write an attribute to config.json
        warnings.warn(
            f"{type(module).__name__} runs dense: its config holds Crisp settings (saved after crisp.enable) but Crisp "
            f"attention is not enabled; load with crisp.from_pretrained(ModelClass, path) or call crisp.enable(model)",
            stacklevel=3)


def crisp_mask(batch_size, q_length, kv_length, *args, **kwargs):
    """``sdpa_mask`` (bool ``[B, 1, Lq, Lk]``, True = attend) that materialises causal masks below
    ``crisp.longcontext.AUTO_LENGTH`` keys.

    Transformers would otherwise hand over ``None`` for an unpadded causal batch (SDPA's ``is_causal``
    shortcut, a data-dependent check that transformers itself skips while tracing or exporting);
    :func:`crisp_attention` handles ``None`` with ``is_causal`` too (query ``i`` sees keys ``j <= i``), but
    below that length a materialised mask is one code path and compiles without graph breaks. From that
    length on the shortcut is taken wherever transformers allows it: the long-context path then makes the
    causal band chunk by chunk, where a materialised ``[B, 1, L, L]`` mask would be the quadratic memory it
    exists to avoid (1 GiB of bools at 32k tokens, and several times that while transformers builds it).
    """
    if kv_length < AUTO_LENGTH:
        kwargs["allow_is_causal_skip"] = False
    return sdpa_mask(batch_size, q_length, kv_length, *args, **kwargs)


def register() -> None:
    """Register ``"crisp"`` with transformers (idempotent; done on ``import crisp``)."""
    AttentionInterface.register(NAME, crisp_attention)
    AttentionMaskInterface.register(NAME, crisp_mask)


# --- which modules ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def dispatches(cls: type) -> bool:
    """Does ``cls.forward`` look its attention function up in ``ALL_ATTENTION_FUNCTIONS``?"""
    try:
        source = inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return False
    return "ALL_ATTENTION_FUNCTIONS" in source


def _is_cross(name: str, module, parent) -> bool:
    flagged = getattr(module, "is_cross_attention", False) or getattr(parent, "is_cross_attention", False)
    return bool(flagged) or bool(_CROSS_NAME.search(name))


def attention_modules(model: torch.nn.Module, cross_attention: bool = False) -> list[torch.nn.Module]:
    """The modules Crisp reaches: those that dispatch through ``AttentionInterface`` and those with an
    adapter (:mod:`crisp.adapters`), in ``model.modules()`` order (the layer order of Crisp's per-layer
    ratios); cross-attention only when ``cross_attention``."""
    named = dict(model.named_modules())
    out = []
    for name, module in named.items():
        if not dispatches(type(module)) and adapters.adapter_for(module) is None:
            continue
        parent = named.get(name.rpartition(".")[0]) if name else None
        if cross_attention or not _is_cross(name, module, parent):
            out.append(module)
    return out


def _heads(module) -> int:
    for attr in ("num_heads", "num_attention_heads", "n_heads"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    value = getattr(getattr(module, "config", None), "num_attention_heads", None)
    if isinstance(value, int):
        return value
    raise ValueError(f"cannot tell how many heads {type(module).__name__} has")


def _refuse(model) -> None:
    own = sorted({type(m).__name__ for m in model.modules() if "attention" in type(m).__name__.lower()})
    if own:
        raise ValueError(
            f"{type(model).__name__} computes attention itself ({', '.join(own)}) instead of through transformers' "
            f"AttentionInterface, so crisp.enable cannot reach its attention probabilities (crisp.adapters covers "
            f"{', '.join(sorted(c.__name__ for c in adapters.ADAPTERS))} only)"
        )
    raise ValueError(f"{type(model).__name__} has no attention modules that go through transformers' AttentionInterface")


# --- switching a model on and off ------------------------------------------------------------------


def enable(model: torch.nn.Module, config: CrispConfig | None = None) -> CrispState:
    """Switch ``model`` to Crisp attention with ``config``; returns the shared :class:`CrispState`.

    Gives every attention layer its index and the state, sets the model's attention implementation
    to ``"crisp"`` (remembering the previous one for :func:`disable`), hooks the model's forward so
    adaptive ratios are reallocated before every training batch, and writes the settings to
    ``model.config.crisp`` so ``save_pretrained`` keeps them. ``config=None`` re-enables from those
    saved settings (adaptive ratios included). Calling it again replaces the previous configuration.
    """
    saved = None
    if config is None:
        saved = getattr(getattr(model, "config", None), CONFIG_KEY, None)
        if not isinstance(saved, dict) or "config" not in saved:
            raise ValueError("crisp.enable(model) without a config needs Crisp settings saved in model.config.crisp "
                             "(a model saved after crisp.enable); pass a crisp.CrispConfig")
        config = CrispConfig.from_dict(saved["config"])
    if not isinstance(config, CrispConfig):
        raise TypeError(f"config must be a crisp.CrispConfig (e.g. crisp.CONFIGS['baseline']), got {type(config).__name__}")
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "set_attn_implementation"):
        raise ValueError(f"{type(model).__name__} is not a transformers model (no set_attn_implementation); "
                         f"it has no attention modules that go through transformers' AttentionInterface")
    layers = attention_modules(model, config.cross_attention)
    if not layers:
        _refuse(model)
    causal = [type(m).__name__ for m in layers if getattr(m, "is_causal", False)]
    if causal and (config.granularity == "head" or config.paper_padding):
        raise ValueError(
            f"{causal[0]} is causal: granularity='head' and paper_padding rank scores across query rows or "
            f"future keys, so a token's kept keys would depend on later tokens; use granularity='row'"
        )
    state = CrispState(config, n_layers=len(layers), n_heads=max(_heads(m) for m in layers))
    if saved is not None and saved.get("controller"):
        state.controller.load_state_dict(saved["controller"])
    register()
    configs = _module_configs(model)
    dispatched = [m for m in layers if dispatches(type(m))]  # the others run an adapter (crisp.adapters)
    if getattr(model, "crisp_state", None) is None:
        previous = model.config._attn_implementation if dispatched else None  # None: the switch is not used
        model._crisp_previous = (previous, [(c, c._attn_implementation) for c in configs])
    _detach(model)
    if dispatched:
        model.set_attn_implementation(NAME)
    for cfg in configs:  # modules holding a copy of the config (T5's stacks in transformers 5.17) miss the switch
        if cfg._attn_implementation != NAME:
            cfg._attn_implementation = NAME
    missed = sorted({type(m).__name__ for m in dispatched if getattr(m.config, "_attn_implementation", NAME) != NAME})
    if missed:  # never leave Crisp silently off
        raise RuntimeError(f"{', '.join(missed)} still dispatch to another attention implementation after the switch")
    for index, module in enumerate(layers):
        module.crisp_layer = index
        module.crisp_state = state
        if module not in dispatched:
            adapters.attach(module)

    def before_forward(mod, args):
        if mod.training and state.controller.adaptive:  # uniform ratios never change
            _reallocate(state, model.config)

    model._crisp_hook = model.register_forward_pre_hook(before_forward)
    model.crisp_state = state
    setattr(model.config, CONFIG_KEY, {"config": config.to_dict(), "controller": state.controller.state_dict()})
    return state


@torch.compiler.disable  # Python bookkeeping between batches (float(), bisection): kept out of compiled graphs
def _reallocate(state: CrispState, config) -> None:
    state.controller.step()
    getattr(config, CONFIG_KEY)["controller"] = state.controller.state_dict()


def _module_configs(model) -> list:
    """The distinct config objects of the modules that dispatch attention (they may be copies)."""
    seen = {}
    for module in model.modules():
        cfg = getattr(module, "config", None)
        if dispatches(type(module)) and hasattr(cfg, "_attn_implementation") and cfg is not model.config:
            seen.setdefault(id(cfg), cfg)
    return list(seen.values())


def _detach(model) -> None:
    hook = getattr(model, "_crisp_hook", None)
    if hook is not None:
        hook.remove()
        del model._crisp_hook
    for module in model.modules():
        for attr in ("crisp_state", "crisp_layer"):
            if attr in module.__dict__:
                delattr(module, attr)
        adapters.detach(module)


def disable(model: torch.nn.Module) -> CrispState:
    """Undo :func:`enable`: the previous attention implementation, no hook, no saved Crisp settings.

    Returns the state that was in use (its statistics stay readable).
    """
    state = getattr(model, "crisp_state", None)
    if state is None:
        raise ValueError(f"{type(model).__name__} has no Crisp attention enabled")
    _detach(model)
    previous, configs = model.__dict__.pop("_crisp_previous")
    if previous is not None:  # None: only adapters were in use, the implementation was never switched
        model.set_attn_implementation(previous)
    for cfg, impl in configs:
        if cfg._attn_implementation != impl:
            cfg._attn_implementation = impl
    if hasattr(model.config, CONFIG_KEY):
        delattr(model.config, CONFIG_KEY)
    return state


def from_pretrained(model_class, path, **kwargs):
    """``model_class.from_pretrained(path, **kwargs)`` with the Crisp settings saved beside it re-enabled.

    Equivalent to loading, then ``crisp.enable(model)``; the model's ``crisp_state`` holds the state.
    """
    model = model_class.from_pretrained(path, **kwargs)
    enable(model)
    return model


register()
