"""Crisp inside Hugging Face models: dense equivalence, padding, enable(), statistics."""

import pytest
import torch
from transformers import (BertConfig, BertForSequenceClassification, DistilBertConfig,
                          DistilBertForSequenceClassification)

import crisp


def tiny(kind):
    if kind == "distilbert":
        cfg = DistilBertConfig(vocab_size=99, dim=32, n_layers=3, n_heads=4, hidden_dim=64, max_position_embeddings=64)
        return DistilBertForSequenceClassification(cfg).eval()
    cfg = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=64)
    return BertForSequenceClassification(cfg).eval()


def batch():
    ids = torch.randint(1, 99, (3, 11))
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 2:] = 0
    return ids, mask


@pytest.mark.parametrize("kind", ["distilbert", "bert"])
def test_sparsity_zero_equals_eager(kind):
    model = tiny(kind)
    ids, mask = batch()
    model.set_attn_implementation("eager")
    ref = model(input_ids=ids, attention_mask=mask).logits
    crisp.enable(model, crisp.CONFIGS["baseline"])
    assert model.config._attn_implementation == "crisp"
    got = model(input_ids=ids, attention_mask=mask).logits
    assert (got - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("kind", ["distilbert", "bert"])
@pytest.mark.parametrize("name", ["uniform_sparse", "aggressive_sparse"])
def test_padding_is_not_ignored(kind, name):
    """Changing the tokens under padding must not change a padded sequence's logits."""
    model = tiny(kind)
    crisp.enable(model, crisp.CONFIGS[name])
    ids, mask = batch()
    other = ids.clone()
    other[mask == 0] = 5
    a = model(input_ids=ids, attention_mask=mask).logits
    b = model(input_ids=other, attention_mask=mask).logits
    torch.testing.assert_close(a, b)
    alone = model(input_ids=ids[1:2, :7], attention_mask=mask[1:2, :7]).logits
    torch.testing.assert_close(a[1:2], alone, atol=1e-5, rtol=1e-5)


def test_attn_implementation_name_loads(tmp_path):
    model = tiny("bert")
    model.save_pretrained(tmp_path)
    loaded = BertForSequenceClassification.from_pretrained(tmp_path, attn_implementation="crisp")
    assert loaded.config._attn_implementation == "crisp"
    ids, mask = batch()
    model.set_attn_implementation("eager")
    torch.testing.assert_close(loaded.eval()(input_ids=ids, attention_mask=mask).logits,
                               model(input_ids=ids, attention_mask=mask).logits, atol=1e-5, rtol=0)


def test_enable_sets_layers_and_records_realized_sparsity():
    model = tiny("distilbert").train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0  # dropout would zero kept probabilities too
    state = crisp.enable(model, crisp.CONFIGS["uniform_sparse"])
    layers = crisp.attention_modules(model)
    assert [m.crisp_layer for m in layers] == [0, 1, 2]
    ids = torch.randint(1, 99, (2, 10))
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True)
    assert all(((a > 0).sum(-1) == 2).all() for a in out.attentions)  # 10 keys, 80% pruned
    assert [round(r["realized_sparsity"], 6) for r in state.sparsity_summary()] == [0.8] * 3


def test_adaptive_mean_invariant_over_training_batches():
    model = tiny("bert").train()
    state = crisp.enable(model, crisp.CONFIGS["light_sparse"])
    ids, mask = batch()
    seen = []
    for _ in range(4):
        model(input_ids=ids, attention_mask=mask)
        seen.append(list(state.controller.ratios))
    assert seen[0] == [0.6] * 3  # first batch: no history
    assert seen[-1] != seen[0]  # ratios really move
    for ratios in seen:
        assert abs(sum(ratios) / 3 - 0.6) < 0.005 and all(0 <= r <= 0.95 for r in ratios)
    model.eval()
    frozen = list(state.controller.ratios)
    model(input_ids=ids, attention_mask=mask)
    assert state.controller.ratios == frozen  # evaluation never reallocates


def test_entropy_recording_only_when_asked():
    model = tiny("distilbert")
    state = crisp.enable(model, crisp.CONFIGS["uniform_sparse"])
    ids, mask = batch()
    model(input_ids=ids, attention_mask=mask)
    assert state.entropy_rows.sum() == 0
    state.record_entropy = True
    model(input_ids=ids, attention_mask=mask)
    rows = state.entropy_summary()
    assert len(rows) == 3 * 4
    assert all(r["entropy_sparse"] < r["entropy_dense"] for r in rows)


def test_enable_rejects_bad_arguments():
    with pytest.raises(TypeError, match="CrispConfig"):
        crisp.enable(tiny("bert"), "baseline")
    with pytest.raises(ValueError, match="AttentionInterface"):
        crisp.enable(torch.nn.Linear(2, 2), crisp.CONFIGS["baseline"])


def test_config_validation():
    with pytest.raises(ValueError, match="strategy"):
        crisp.CrispConfig("x", 0.5, "magic")
    with pytest.raises(ValueError, match="unknown configuration 'nope'"):
        crisp.get_config("nope")
    assert crisp.get_config("uniform_sparse", granularity="head").granularity == "head"


@pytest.mark.parametrize("kind", ["distilbert", "bert"])
@pytest.mark.parametrize("name", list(crisp.CONFIGS))
def test_paper_configs_prune_first_layer_scores_as_topk_softmax(kind, name):
    """Pins the paper path: layer 0's Crisp probabilities are topk_softmax of its dense scores with the
    [B, 1, 1, L] padding mask (row granularity, first batch: every layer at the target ratio).
    Dense log-probabilities are the scores up to a per-row constant, which changes neither the
    row's top-k nor its softmax."""
    ids, mask = batch()
    model = tiny(kind)
    model.set_attn_implementation("eager")
    with torch.no_grad():
        dense = model(input_ids=ids, attention_mask=mask, output_attentions=True).attentions[0].double()
    crisp.enable(model, crisp.CONFIGS[name])
    with torch.no_grad():
        got = model(input_ids=ids, attention_mask=mask, output_attentions=True).attentions[0].double()
    key_mask = mask.bool()[:, None, None, :]
    scores = torch.log(dense.clamp_min(1e-300)).masked_fill(~key_mask, 0.0)
    expected = crisp.topk_softmax(scores, crisp.CONFIGS[name].sparsity, key_mask)
    real_rows = key_mask.transpose(-1, -2).expand_as(got)  # padded query rows are not compared
    torch.testing.assert_close(got[real_rows], expected[real_rows], atol=1e-6, rtol=0)


def test_compiled_counts_fold_into_the_one_store_every_reader_uses():
    """A compiled model counts in ``compiled_counts``; the summary, the trainer's data-parallel sum and checkpoints
    read the per-layer lists, so the tensor is folded into them (and emptied) first."""
    import torch

    from crisp import CrispConfig
    from crisp.state import CrispState

    state = CrispState(CrispConfig("u", 0.8), n_layers=2, n_heads=1)
    state.kept, state.real = [1.0, 2.0], [10.0, 20.0]
    state.compiled_counts = torch.tensor([[3.0, 4.0], [30.0, 40.0], [0.8, 1.6], [1.0, 2.0]], dtype=torch.float64)
    summary = state.sparsity_summary()
    assert state.compiled_counts is None and state.kept == [4.0, 6.0] and state.real == [40.0, 60.0]
    assert state.forwards == [1.0, 2.0] and state.ratio_sum == pytest.approx([0.8, 1.6])
    assert [r["realized_sparsity"] for r in summary] == pytest.approx([0.9, 0.9])
    state.fold_compiled_counts()  # nothing left to fold: unchanged
    assert state.kept == [4.0, 6.0]
