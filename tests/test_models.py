"""Model loading: short names, folders, and the dtype fine-tuning runs in."""

import torch

from crisp.study import models


def test_half_precision_checkpoint_loads_in_float32(tmp_path):
    # A checkpoint saved in float16 (how the MiniLM weights travel to a GPU machine) must still
    # fine-tune with float32 weights.
    net, tokenizer = models.tiny("tiny-bert")
    net.half().save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, _ = models.load(str(tmp_path))
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    assert loaded.config._attn_implementation == "crisp"
    assert models.short_name(str(tmp_path / "minilm")) == "minilm"
