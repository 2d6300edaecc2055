"""Crisp for attention modules that compute their scores themselves, one adapter per module class.

Most transformers models look their attention function up in ``ALL_ATTENTION_FUNCTIONS``, and
``crisp.enable`` reaches them by switching the implementation name (:mod:`crisp.integration`). A few
build the scores inside their own ``forward`` and never call that function: MPNet's
``MPNetSelfAttention`` adds a relative position bias to ``QK^T / sqrt(d)``, DeBERTa-v2 builds
content and relative-position terms. For such a class an *adapter* is a replacement ``forward``,
registered here by class, that computes the module's scores exactly as the original does (same
parameters, same bias, same mask) and hands them to the rule every other architecture uses:
``CrispState.attend`` (top-k softmax, realized-sparsity and entropy statistics, adaptive ratios),
or the plain masked softmax when Crisp is off.

``crisp.enable`` binds the adapter to each matching instance (``module.forward``), ``crisp.disable``
removes that binding, so the class's own ``forward`` is back untouched. Classes match exactly (a
subclass may compute something else). Scores are ranked in float32: under bf16 autocast the
``QK^T`` product is rounded to bf16 by the matmul, but the bias and the mask are added in float32,
so fewer ties enter the top-k choice than in the module's own bf16 arithmetic.

Registered: ``MPNetSelfAttention`` (transformers 5.17-5.24). DeBERTa-v2's
``DisentangledSelfAttention`` is not: ``crisp.enable`` refuses it with an error naming the class.
"""

from __future__ import annotations

import math
import types
from typing import Callable

import torch

from .attention import key_mask_of, masked_softmax

__all__ = ["ADAPTERS", "adapter_for", "attach", "attached", "detach", "mpnet_self_attention_forward", "register_adapter"]

ADAPTERS: dict[type, Callable] = {}  # attention-module class -> the forward that replaces its own


def register_adapter(cls: type, forward: Callable) -> None:
    """Make ``crisp.enable`` reach instances of ``cls`` through ``forward(module, *args, **kwargs)``."""
    if not isinstance(cls, type) or not issubclass(cls, torch.nn.Module):
        raise TypeError(f"an adapter is registered for a torch.nn.Module class, got {cls!r}")
    ADAPTERS[cls] = forward


def adapter_for(module) -> Callable | None:
    """The adapter registered for ``type(module)`` exactly, or None."""
    return ADAPTERS.get(type(module))


def attach(module: torch.nn.Module) -> None:
    """Bind the adapter of ``module``'s class as its ``forward``."""
    module.forward = types.MethodType(ADAPTERS[type(module)], module)


def attached(module: torch.nn.Module) -> bool:
    """Does ``module`` run its adapter (bound by :func:`attach`) instead of its class's forward?"""
    bound = module.__dict__.get("forward")
    return isinstance(bound, types.MethodType) and bound.__func__ is adapter_for(module)


def detach(module: torch.nn.Module) -> None:
    """Remove a binding made by :func:`attach`; the class's own forward runs again."""
    if attached(module):
        del module.__dict__["forward"]


def _probabilities(module, scores: torch.Tensor, key_mask) -> torch.Tensor:
    """Crisp's rule on ``scores`` ``[B, H, Lq, Lk]`` (float32), as ``crisp_attention`` applies it."""
    state = getattr(module, "crisp_state", None)
    if state is None:  # attached but not enabled: dense
        real = torch.ones_like(scores, dtype=torch.bool) if key_mask is None else key_mask.expand(scores.shape)
        return masked_softmax(scores, real)
    return state.attend(module.crisp_layer, scores, key_mask, module.training)


def _mask(attention_mask):
    """``(key_mask, additive)`` from the model's mask: None, additive float (eager: 0 / ``finfo.min``) or bool."""
    if attention_mask is None:
        return None, None
    if attention_mask.dtype == torch.bool:
        return attention_mask, None
    key_mask = key_mask_of(attention_mask)
    return key_mask, attention_mask.masked_fill(~key_mask, 0.0)  # any bias besides masking is kept


# --- MPNet ------------------------------------------------------------------------------------------


def mpnet_self_attention_forward(self, hidden_states, attention_mask=None, position_bias=None,
                                 output_attentions=False, **kwargs):
    """``MPNetSelfAttention.forward`` (transformers 5.24) with its softmax replaced by Crisp's rule.

    Scores ``QK^T / sqrt(d) + position_bias`` (the relative position bias ``[B, H, L, L]`` that
    ``MPNetEncoder`` computes once per forward) ``+`` the additive mask, as in the original; the mask's
    masked entries (``<= finfo.min / 2``) become the key mask of the rule. Returns ``(o,)`` or
    ``(o, probs)`` as the original does.
    """
    input_shape = hidden_states.shape[:-1]
    hidden_shape = (*input_shape, -1, self.attention_head_size)
    q = self.q(hidden_states).view(hidden_shape).transpose(1, 2)  # [B, H, L, d]
    k = self.k(hidden_states).view(hidden_shape).transpose(1, 2)
    v = self.v(hidden_states).view(hidden_shape).transpose(1, 2)

    scores = torch.matmul(q, k.transpose(-1, -2))  # [B, H, L, L]
    if scores.dtype not in (torch.float32, torch.float64):  # bf16 / fp16 (autocast): rank in float32
        scores = scores.float()
    scores = scores / math.sqrt(self.attention_head_size)
    if position_bias is not None:
        scores = scores + position_bias
    key_mask, additive = _mask(attention_mask)
    if additive is not None:
        scores = scores + additive
    probs = self.dropout(_probabilities(self, scores, key_mask))

    c = torch.matmul(probs.to(v.dtype), v)  # [B, H, L, d]
    c = c.permute(0, 2, 1, 3).contiguous()
    c = c.view(*c.size()[:-2], self.all_head_size)
    o = self.o(c)
    return (o, probs) if output_attentions else (o,)


def _register_builtin() -> None:
    from transformers.models.mpnet.modeling_mpnet import MPNetSelfAttention

    register_adapter(MPNetSelfAttention, mpnet_self_attention_forward)


_register_builtin()
