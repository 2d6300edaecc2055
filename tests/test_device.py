"""The attention rule, the Hugging Face integration and a training run on the device under test, in float32,
bfloat16 and float16.

CI runs these on the CPU. On a GPU machine run them there with one switch:
``CRISP_TEST_DEVICE=cuda python -m pytest tests/test_device.py`` (or ``--crisp-device cuda``).
"""

import json

import pytest
import torch

import crisp
from crisp.study import models
from crisp.attention import kept_per_row
from crisp.study.train import make_config, train

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# relative error of the probabilities against a float64 reference: float32 arithmetic inside the rule, inputs
# rounded to the dtype; the output is cast back to the dtype (bf16 has 8 bits of mantissa, fp16 11).
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("granularity", ["row", "head"])
def test_topk_softmax_on_device_matches_float64_reference(device, dtype, granularity):
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(3, 4, 17, 17, generator=g, dtype=torch.float64) * 3
    lengths = torch.tensor([17, 9, 1])
    key_mask = (torch.arange(17)[None, :] < lengths[:, None])[:, None, None, :]  # [B, 1, 1, L]
    ref = crisp.topk_softmax(scores, 0.8, key_mask, granularity)  # float64 on the CPU
    got = crisp.topk_softmax(scores.to(device, dtype), 0.8, key_mask.to(device), granularity)
    assert got.device.type == device.type and got.dtype == dtype
    assert torch.isfinite(got).all()
    assert _rel(got.cpu(), ref) < TOLERANCE[dtype]
    # what is kept is decided on the rounded scores; on these well-separated scores the choice is the same
    kept_ref = crisp.topk_keep_mask(scores.to(dtype).double(), 0.8, key_mask, granularity)
    kept = crisp.topk_keep_mask(scores.to(device, dtype), 0.8, key_mask.to(device), granularity).cpu()
    assert (kept == kept_ref).float().mean() > 0.99


def _tiny(device, dtype):
    net, tok = models.tiny("tiny-bert")
    net = net.to(device=device, dtype=dtype).eval()
    enc = tok(["a good film", "the plot was dull and the acting really quite messy"], padding=True, return_tensors="pt")
    return net, {k: v.to(device) for k, v in enc.items()}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sparsity_zero_equals_eager_on_device(device, dtype):
    net, batch = _tiny(device, dtype)
    with torch.no_grad():
        net.set_attn_implementation("eager")
        eager = net(**batch).logits.float()
        crisp.enable(net, crisp.CONFIGS["baseline"])
        mine = net(**batch).logits.float()
    assert _rel(mine, eager) < TOLERANCE[dtype] * 10


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_realized_sparsity_near_target_on_device(device, dtype):
    net, batch = _tiny(device, dtype)
    state = crisp.enable(net, crisp.CONFIGS["uniform_sparse"])
    state.record_eval = True
    with torch.no_grad():
        net(**batch)
    realized = [r["realized_sparsity"] for r in state.sparsity_summary()]
    assert all(0.6 < r < 0.85 for r in realized), realized  # floor(0.8 n) of n real keys per row, n = 5 and 14


PRECISIONS = ["fp32", "bf16", "fp16"]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_training_run_on_device(device, precision, sst2_dir, tmp_path):
    if precision == "fp16" and device.type != "cuda":
        pytest.skip("fp16 training needs CUDA (refused on CPU: tests/test_grid.py)")
    if device.type == "cuda" and device.index not in (None, 0):
        pytest.skip("Trainer trains on the first visible GPU; set CUDA_VISIBLE_DEVICES instead")
    if (device.type == "cuda") != torch.cuda.is_available():
        pytest.skip("Trainer picks CUDA whenever it is visible")
    cfg = make_config("small", model="tiny-bert", config="aggressive_sparse", data=str(sst2_dir), output=str(tmp_path),
                      epochs=1.0, batch_size=16, precision=precision, progress=False, logging_steps=2)
    folder = train(cfg)
    m = json.loads((folder / "metrics.json").read_text())
    assert m["precision"] == precision and m["device_type"] == device.type
    assert m["dev_loss"] == m["dev_loss"] and 0.0 <= m["dev_accuracy"] <= 1.0  # finite, not NaN
    assert 0.5 < m["realized_sparsity_dev"] < 0.95


# --- bf16 autocast (float32 weights, bf16 matmuls: `crisp train --precision bf16`) -------------------------------


def _expected_realized(lengths, sparsity):
    """1 - kept / real over real query rows, each of n real keys keeping max(1, n - floor(s n)) of them."""
    n = torch.tensor(lengths)
    return 1.0 - (n * kept_per_row(n, sparsity)).sum().item() / (n * n).sum().item()


def test_autocast_bf16_sparsity_zero_equals_eager(device):
    net, batch = _tiny(device, torch.float32)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        net.set_attn_implementation("eager")
        fp32 = net(**batch).logits
        with torch.autocast(device.type, dtype=torch.bfloat16):
            eager = net(**batch).logits.float()
            crisp.enable(net, crisp.CONFIGS["baseline"])
            mine = net(**batch).logits.float()
            hidden = net.bert(**batch).last_hidden_state.float()
            crisp.disable(net)
            net.set_attn_implementation("eager")
            ref_hidden = net.bert(**batch).last_hidden_state.float()
    assert _rel(mine, eager) < TOLERANCE[torch.bfloat16] * 10  # the same bf16 products, one softmax apart
    assert _rel(mine, fp32) < TOLERANCE[torch.bfloat16] * 10
    assert _rel(hidden[real], ref_hidden[real]) < TOLERANCE[torch.bfloat16] * 10


@pytest.mark.parametrize("sparsity", [0.5, 0.8])
def test_autocast_bf16_keeps_exact_counts(device, sparsity):
    """Ties are common among bf16 scores; each real row still keeps exactly max(1, n - floor(s n)) keys."""
    net, batch = _tiny(device, torch.float32)
    state = crisp.enable(net, crisp.CrispConfig("u", sparsity))
    state.record_eval = True
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        out = net(**batch, output_attentions=True)
    lengths = batch["attention_mask"].sum(1).tolist()
    for row in state.sparsity_summary():
        assert row["realized_sparsity"] == pytest.approx(_expected_realized(lengths, sparsity), abs=1e-12)
    for probs in out.attentions:  # [B, H, L, L]: the kept entries, row by row
        for b, n in enumerate(lengths):
            kept = (probs[b, :, :n, :n] > 0).sum(-1)
            assert torch.equal(kept.cpu(), torch.full_like(kept.cpu(), int(kept_per_row(torch.tensor(n), sparsity))))
            torch.testing.assert_close(probs[b, :, :n].float().sum(-1), torch.ones_like(kept, dtype=torch.float32),
                                       atol=1e-2, rtol=0)


def test_autocast_bf16_ties_keep_exact_counts():
    """Scores rounded to bf16 with many exact ties: the rule keeps k per row, never more, never fewer."""
    scores = (torch.randn(2, 3, 20, 20, generator=torch.Generator().manual_seed(0)) * 2).round().to(torch.bfloat16)
    mask = torch.tensor([[True] * 20, [True] * 13 + [False] * 7]).view(2, 1, 1, 20)
    kept = crisp.topk_keep_mask(scores, 0.7, mask)
    expected = kept_per_row(mask.sum(-1).expand(2, 3, 20), 0.7)  # per batch row: n = 20 or 13
    assert torch.equal(kept.sum(-1), expected)
