"""Crisp on tiny random models of many architectures, one property per test (crisp.architectures)."""

import pytest
import torch

import crisp
from crisp import architectures as arch
from crisp import integration


@pytest.mark.parametrize("prop", arch.CHECKS)
@pytest.mark.parametrize("name", list(arch.ARCHITECTURES))
def test_architecture(name, prop, device):
    result = arch.check(name, prop, device)
    kind = arch.ARCHITECTURES[name][1]
    if prop in ("causal", "generate") and kind not in ("decoder", "seq2seq"):
        assert result is None
    else:
        assert result is True


def test_causal_check_fails_when_the_causal_flag_is_ignored(monkeypatch):
    """The leak of issue 15 (mask None + is_causal ignored) must turn the causal check red."""
    from transformers.masking_utils import sdpa_mask

    real = integration._mask_and_bias
    monkeypatch.setattr(integration, "_mask_and_bias", lambda mask, scores, causal, window: real(mask, scores, False, window))
    monkeypatch.setattr(integration, "crisp_mask", sdpa_mask)  # transformers skips the causal mask again
    try:
        assert arch.check("llama", "causal") is False
    finally:
        monkeypatch.undo()
        integration.register()


def test_deberta_v2_is_refused_clearly():
    with pytest.raises(ValueError, match="computes attention itself .*DisentangledSelfAttention"):
        crisp.enable(arch.REFUSED["deberta-v2"](), crisp.CrispConfig("x", 0.5))


def test_cross_attention_stays_dense_unless_asked():
    model = arch.build("bart")
    assert crisp.enable(model, crisp.CrispConfig("x", 0.5)).n_layers == 4  # 2 encoder + 2 decoder self-attention
    assert crisp.enable(model, crisp.CrispConfig("x", 0.5, cross_attention=True)).n_layers == 6


def test_head_granularity_and_paper_padding_refused_on_causal_models():
    for extra in ({"granularity": "head"}, {"paper_padding": True}):
        with pytest.raises(ValueError, match="causal"):
            crisp.enable(arch.build("gpt2"), crisp.CrispConfig("x", 0.5, **extra))


def test_per_layer_list_must_match_the_layers():
    with pytest.raises(ValueError, match="2 ratios but the model has 4"):
        crisp.enable(arch.build("bart"), crisp.CrispConfig("x", [0.2, 0.4]))


def test_enable_without_config_needs_saved_settings():
    with pytest.raises(ValueError, match="saved"):
        crisp.enable(arch.build("bert"))
    with pytest.raises(ValueError, match="no Crisp attention enabled"):
        crisp.disable(arch.build("bert"))


def test_disable_after_two_enables_restores_the_first_implementation():
    model = arch.build("llama")
    model.set_attn_implementation("eager")
    crisp.enable(model, crisp.CrispConfig("a", 0.5))
    crisp.enable(model, crisp.CrispConfig("b", 0.3))
    crisp.disable(model)
    assert model.config._attn_implementation == "eager" and not hasattr(model.config, "crisp")
    assert not any(hasattr(m, "crisp_state") for m in model.modules())


def test_adaptive_ratios_survive_save_and_reload(tmp_path):
    model = arch.build("bert").train()
    state = crisp.enable(model, crisp.CONFIGS["light_sparse"])
    batch = arch.inputs("bert")
    for _ in range(3):
        model(**batch)
    model.save_pretrained(tmp_path)
    loaded = crisp.from_pretrained(type(model), tmp_path)
    assert loaded.crisp_state.controller.ratios == state.controller.ratios != [0.6, 0.6]


# --- the attention function itself ---------------------------------------------------------------


class _Module(torch.nn.Module):
    def __init__(self, causal):
        super().__init__()
        self.is_causal = causal


def _qkv(heads=4, kv_heads=4, L=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, heads, L, 8, generator=g), torch.randn(2, kv_heads, L, 8, generator=g),
            torch.randn(2, kv_heads, L, 8, generator=g))


def test_none_mask_with_is_causal_equals_the_materialised_causal_mask():
    q, k, v = _qkv()
    causal = torch.ones(6, 6, dtype=torch.bool).tril()[None, None]
    a, _ = crisp.crisp_attention(_Module(False), q, k, v, None, is_causal=True)
    b, _ = crisp.crisp_attention(_Module(False), q, k, v, causal)
    c, _ = crisp.crisp_attention(_Module(True), q, k, v, None)  # module.is_causal when no keyword
    d, _ = crisp.crisp_attention(_Module(False), q, k, v, None)
    assert torch.equal(a, b) and torch.equal(a, c) and not torch.allclose(a, d)


def test_sliding_window_without_mask():
    q, k, v = _qkv()
    i, j = torch.arange(6)[:, None], torch.arange(6)[None, :]
    window = ((j <= i) & (j > i - 2))[None, None]
    a, _ = crisp.crisp_attention(_Module(True), q, k, v, None, sliding_window=2)
    b, _ = crisp.crisp_attention(_Module(True), q, k, v, window)
    assert torch.equal(a, b)


def test_grouped_query_heads_equal_expanded_heads():
    q, k, v = _qkv(heads=4, kv_heads=2)
    a, pa = crisp.crisp_attention(_Module(True), q, k, v, None)
    b, pb = crisp.crisp_attention(_Module(True), q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), None)
    assert torch.equal(a, b) and pa.shape == (2, 4, 6, 6)


def test_float_mask_is_additive_and_bool_mask_is_not_misread():
    q, k, v = _qkv()
    keep = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(3)) > 0.3
    keep[..., 0] = True
    additive = torch.zeros(2, 1, 6, 6).masked_fill(~keep, torch.finfo(torch.float32).min)
    a, _ = crisp.crisp_attention(_Module(False), q, k, v, keep)
    b, _ = crisp.crisp_attention(_Module(False), q, k, v, additive)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="4-D"):
        crisp.crisp_attention(_Module(False), q, k, v, keep[:, 0, 0])


def test_softcap_and_position_bias_follow_eager():
    q, k, v = _qkv()
    bias = torch.randn(1, 4, 6, 6)
    scores = torch.tanh(q @ k.transpose(2, 3) * 0.5 / 3.0) * 3.0 + bias
    ref = torch.softmax(scores, -1) @ v
    out, _ = crisp.crisp_attention(_Module(False), q, k, v, None, scaling=0.5, softcap=3.0, position_bias=bias)
    torch.testing.assert_close(out, ref.transpose(1, 2))


def test_sinks_are_refused():
    q, k, v = _qkv()
    with pytest.raises(NotImplementedError, match="s_aux"):
        crisp.crisp_attention(_Module(False), q, k, v, None, s_aux=torch.zeros(4))


def test_custom_4d_masks_equal_the_2d_mask(device):
    """A 4-D mask handed to the model (bool, or additive float) is used as given, not misread."""
    model = arch.build("llama", device)
    crisp.enable(model, crisp.CrispConfig("x", 0.5))
    batch = arch.inputs("llama", device)
    pad = batch["attention_mask"].bool()
    L = pad.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=device).tril()
    four_d = causal[None, None] & pad[:, None, None, :]  # [B, 1, L, L]
    additive = torch.zeros(four_d.shape, device=device).masked_fill(~four_d, torch.finfo(torch.float32).min)
    with torch.no_grad():
        ref = model(**batch).logits[pad]
        for mask in (four_d, additive):
            got = model(input_ids=batch["input_ids"], attention_mask=mask).logits[pad]
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_left_padded_generation_same_with_and_without_cache(name, device):
    model = arch.build(name, device)
    crisp.enable(model, crisp.CrispConfig("x", 0.5))
    batch = arch.inputs(name, device, padded=False)
    mask = batch["attention_mask"].clone()
    mask[1, :3] = 0  # left padding, as batched generation uses
    ids = batch["input_ids"].masked_fill(mask == 0, 0)
    runs = [model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False, use_cache=c)
            for c in (True, False)]
    assert torch.equal(*runs)
