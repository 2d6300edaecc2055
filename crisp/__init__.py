"""crisp: top-k (Crisp) attention for Hugging Face transformers models.

This package is the library: the rule (:mod:`crisp.attention`), its configurations, the integration into
transformers (``enable`` / ``disable``), adapters for modules that compute their own attention, and the
long-context path. It needs torch and transformers only.

The reproduction of Gandhi & Gandhi (2025), *Crisp Attention: Regularizing Transformers via Structured
Sparsity*, lives in two subpackages that need the ``study`` extra: :mod:`crisp.study` (training, grids,
benchmarks, the ``crisp`` command) and :mod:`crisp.analysis` (statistics, summaries, the book's text).
"""

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
