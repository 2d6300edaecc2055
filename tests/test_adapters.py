"""Crisp through an adapter (crisp.adapters) on a tiny random MPNet built in code: the module computes
its own scores (QK^T / sqrt(d) + relative position bias + mask) and never dispatches through AttentionInterface."""

import math

import pytest
import torch
import transformers as tf

import crisp
from crisp import adapters
from crisp.attention import kept_per_row

PAD = 1  # MPNet's padding id: padded positions then get the padding position id, as real padding does
LENGTHS = (12, 8, 4)


def tiny_mpnet(seed=0):
    # MPNetEncoder.compute_position_bias always uses 32 buckets: the config must have 32 (PITFALLS)
    config = tf.MPNetConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                            vocab_size=99, max_position_embeddings=64, relative_attention_num_buckets=32, num_labels=2)
    torch.manual_seed(seed)
    return tf.MPNetForSequenceClassification(config).eval()


def batch(padded=True, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 99, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    if padded:
        for row, n in enumerate(LENGTHS):
            mask[row, n:] = 0
    return {"input_ids": ids.masked_fill(mask == 0, PAD), "attention_mask": mask}


def logits(model, inputs, **kw):
    with torch.no_grad():
        return model(**inputs, **kw).logits


def expected_realized(lengths, sparsity):
    """1 - kept / real for self-attention over rows of n real keys, each keeping max(1, n - floor(s n))."""
    n = torch.tensor(lengths)
    kept = (n * kept_per_row(n, sparsity)).sum().item()
    return 1.0 - kept / (n * n).sum().item()


def test_mpnet_self_attention_has_an_adapter_and_deberta_has_none():
    model = tiny_mpnet()
    layers = crisp.attention_modules(model)
    assert [type(m).__name__ for m in layers] == ["MPNetSelfAttention"] * 2
    assert crisp.enable(model, crisp.CONFIGS["uniform_sparse"]).n_layers == 2
    assert all(adapters.attached(m) for m in layers)
    assert model.config._attn_implementation == "eager"  # the implementation switch is not used


@pytest.mark.parametrize("padded", [False, True])
def test_sparsity_zero_equals_the_unmodified_model(padded):
    model, inputs = tiny_mpnet(), batch(padded)
    ref = logits(model, inputs)
    crisp.enable(model, crisp.CrispConfig("dense", 0.0))
    torch.testing.assert_close(logits(model, inputs), ref, atol=1e-6, rtol=0)


def _layer0_scores(model, inputs):
    """Layer 0's scores computed from the module's own parameters, as MPNetSelfAttention computes them."""
    attn = model.mpnet.encoder.layer[0].attention.attn
    with torch.no_grad():
        hidden = model.mpnet.embeddings(input_ids=inputs["input_ids"])
        bias = model.mpnet.encoder.compute_position_bias(hidden)  # [B, H, L, L]
        shape = (*hidden.shape[:2], -1, attn.attention_head_size)
        q = attn.q(hidden).view(shape).transpose(1, 2)
        k = attn.k(hidden).view(shape).transpose(1, 2)
        return q @ k.transpose(-1, -2) / math.sqrt(attn.attention_head_size) + bias


def test_topk_is_applied_to_the_module_scores_with_its_position_bias():
    model, inputs = tiny_mpnet(), batch()
    scores = _layer0_scores(model, inputs)
    key_mask = inputs["attention_mask"].bool()
    state = crisp.enable(model, crisp.CrispConfig("half", 0.5))
    state.record_eval = True
    with torch.no_grad():
        probs = model(**inputs, output_attentions=True).attentions[0]  # [B, H, L, L]
    ref = crisp.topk_softmax(scores, 0.5, key_mask)
    rows = key_mask[:, None, :, None] & key_mask[:, None, None, :]  # real query x real key
    torch.testing.assert_close(probs[rows.expand_as(probs)], ref[rows.expand_as(ref)], atol=1e-6, rtol=0)
    without_bias = crisp.topk_keep_mask(scores - model.mpnet.encoder.compute_position_bias(
        model.mpnet.embeddings(input_ids=inputs["input_ids"])).detach(), 0.5, key_mask)
    assert not torch.equal((probs > 0) & rows, without_bias & rows)  # the position bias takes part in the ranking
    for row in state.sparsity_summary():
        assert row["realized_sparsity"] == pytest.approx(expected_realized(LENGTHS, 0.5), abs=1e-12)


def test_padding_behaves_like_truncation():
    model, inputs = tiny_mpnet(), batch()
    crisp.enable(model, crisp.CrispConfig("half", 0.5))
    padded = logits(model, inputs)
    for row, n in enumerate(LENGTHS):
        alone = {k: v[row:row + 1, :n] for k, v in inputs.items()}
        torch.testing.assert_close(padded[row:row + 1], logits(model, alone), atol=1e-5, rtol=0)


def test_disable_restores_the_module_exactly():
    model, inputs = tiny_mpnet(), batch()
    ref = logits(model, inputs)
    crisp.enable(model, crisp.CrispConfig("half", 0.5))
    assert not torch.allclose(logits(model, inputs), ref)
    crisp.disable(model)
    assert torch.equal(logits(model, inputs), ref)
    assert not any("forward" in m.__dict__ or hasattr(m, "crisp_state") for m in model.modules())
    assert not hasattr(model.config, "crisp")


def test_save_and_reload_keeps_the_adapter_and_the_ratios(tmp_path):
    model, inputs = tiny_mpnet(), batch()
    crisp.enable(model, crisp.CrispConfig("layers", [0.3, 0.7]))
    before = logits(model, inputs)
    model.save_pretrained(tmp_path)
    loaded = crisp.from_pretrained(tf.MPNetForSequenceClassification, tmp_path).eval()
    assert loaded.crisp_state.controller.ratios == [0.3, 0.7]
    assert all(adapters.attached(m) for m in crisp.attention_modules(loaded))
    torch.testing.assert_close(logits(loaded, inputs), before, atol=1e-6, rtol=0)


def _train_step(model, inputs):
    model.train()
    model.zero_grad()
    out = model(**inputs, labels=torch.tensor([0, 1, 1]))
    out.loss.backward()
    return out.loss


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_gradients_flow_and_adaptive_ratios_move(autocast):
    model, inputs = tiny_mpnet(), batch()
    state = crisp.enable(model, crisp.CONFIGS["light_sparse"])  # adaptive: the controller measures every layer
    start = list(state.controller.ratios)
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = _train_step(model, inputs)
    assert torch.isfinite(loss)
    for layer in model.mpnet.encoder.layer:
        for lin in (layer.attention.attn.q, layer.attention.attn.k):
            assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()
            assert lin.weight.grad.abs().sum() > 0
    assert state.controller.ratios != start


def test_bf16_autocast_keeps_dense_equivalence_and_exact_kept_counts():
    model, inputs = tiny_mpnet(), batch()
    ref = logits(model, inputs)  # float32, unmodified
    crisp.enable(model, crisp.CrispConfig("dense", 0.0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        dense = logits(model, inputs).float()
    assert float((dense - ref).norm() / ref.norm()) < 0.05  # bf16 rounding of the matmuls only
    state = crisp.enable(model, crisp.CONFIGS["uniform_sparse"])
    state.record_eval = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits(model, inputs)
    for row in state.sparsity_summary():  # exactly max(1, n - floor(0.8 n)) keys per real row, ties or not
        assert row["realized_sparsity"] == pytest.approx(expected_realized(LENGTHS, 0.8), abs=1e-12)


def test_registering_an_adapter_needs_a_module_class_and_matches_the_class_exactly():
    with pytest.raises(TypeError, match="torch.nn.Module class"):
        adapters.register_adapter("MPNetSelfAttention", adapters.mpnet_self_attention_forward)

    class Subclass(tf.models.mpnet.modeling_mpnet.MPNetSelfAttention):
        pass

    assert adapters.adapter_for(Subclass(tiny_mpnet().config)) is None
