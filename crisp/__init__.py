"""crisp: top-k (Crisp) attention for Hugging Face transformers models, and a reproduction of
Gandhi & Gandhi (2025), *Crisp Attention: Regularizing Transformers via Structured Sparsity*."""

from .adapters import register_adapter
from .adaptive import SparsityController, allocate
from .attention import GRANULARITIES, masked_softmax, topk_keep_mask, topk_softmax
from .configs import CONFIGS, STRATEGIES, CrispConfig, get_config
from .integration import (CrispState, attention_modules, crisp_attention, disable, enable, from_pretrained,
                          register)

__version__ = "0.2.0"

__all__ = [
    "CONFIGS", "GRANULARITIES", "STRATEGIES", "CrispConfig", "CrispState", "SparsityController",
    "allocate", "attention_modules", "crisp_attention", "disable", "enable", "from_pretrained", "get_config",
    "masked_softmax", "register", "register_adapter", "topk_keep_mask", "topk_softmax",
]
