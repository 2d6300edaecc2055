"""Issue 29's frictions: readable state, why a summary is nan, a loaded Crisp model that runs dense, torchrun output."""

import warnings

import pytest
import torch

import crisp
from crisp import CrispConfig
from crisp.state import CrispState


def tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_attention_heads=2, intermediate_size=32, num_hidden_layers=2,
                     max_position_embeddings=32)
    return BertForSequenceClassification(cfg)


def test_state_repr_is_readable():
    text = repr(CrispState(crisp.CONFIGS["uniform_sparse"], n_layers=2, n_heads=4))
    assert text.startswith("CrispState('uniform_sparse', sparsity=0.8")
    assert "layers=2" in text and "record_eval=False" in text and "object at" not in text


def test_summary_says_why_it_is_nan():
    model = tiny_bert().eval()
    state = crisp.enable(model, CrispConfig("x", 0.5))
    model(input_ids=torch.randint(0, 50, (2, 8)))
    with pytest.warns(UserWarning, match="record_eval is False"):
        rows = state.sparsity_summary()
    assert rows[0]["realized_sparsity"] != rows[0]["realized_sparsity"]  # nan
    state.record_eval = True
    model(input_ids=torch.randint(0, 50, (2, 8)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert 0 < state.sparsity_summary()[0]["realized_sparsity"] < 1


def test_saved_crisp_model_loaded_with_crisp_name_warns(tmp_path):
    from transformers import BertForSequenceClassification

    model = tiny_bert()
    crisp.enable(model, CrispConfig("x", 0.5))
    model.save_pretrained(tmp_path)
    loaded = BertForSequenceClassification.from_pretrained(tmp_path, attn_implementation="crisp")
    with pytest.warns(UserWarning, match="runs dense.*crisp.from_pretrained"):
        loaded(input_ids=torch.randint(0, 50, (1, 6)))
    with warnings.catch_warnings():  # once per model, and never after enable
        warnings.simplefilter("error")
        loaded(input_ids=torch.randint(0, 50, (1, 6)))
        crisp.from_pretrained(BertForSequenceClassification, tmp_path)(input_ids=torch.randint(0, 50, (1, 6)))
    assert "_crisp" not in (tmp_path / "config.json").read_text().replace('"crisp"', "")


def test_finished_line_only_from_process_zero(monkeypatch, capsys):
    from crisp.study import cli, train
    from crisp import distributed

    monkeypatch.setattr(train, "train", lambda cfg: "data/runs/x")
    monkeypatch.setattr(train, "make_config", lambda *a, **k: None)
    monkeypatch.setattr(cli, "_overrides", lambda args: {})
    args = type("A", (), {"protocol": "small"})()
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    cli.cmd_train(args)
    assert "finished:" not in capsys.readouterr().out
    monkeypatch.setattr(distributed, "is_main", lambda: True)
    cli.cmd_train(args)
    assert "finished: data/runs/x" in capsys.readouterr().out


def test_every_classifier_parameter_gets_a_gradient():
    """Why DDP runs with find_unused_parameters=False (crisp.study.train): no parameter of the classifiers is unused."""
    model = tiny_bert().train()
    crisp.enable(model, CrispConfig("x", 0.8))
    model(input_ids=torch.randint(0, 50, (2, 8)), labels=torch.tensor([0, 1])).loss.backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused == []


def test_row_rounding_gap_on_short_causal_inputs():
    """The README's rule and gap: rows keep max(1, n - floor(s*n)); 10-token causal inputs at 0.8 keep 15 of 55."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_head=2, n_layer=2, n_positions=32)).train()
    state = crisp.enable(model, CrispConfig("x", 0.8))
    model(input_ids=torch.randint(0, 50, (3, 10)))
    for row in state.sparsity_summary():
        assert row["realized_sparsity"] == pytest.approx(1 - 15 / 55) and row["target_sparsity"] == 0.8
