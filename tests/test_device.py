"""The attention rule, the Hugging Face integration and a training run on the device under test, in float32,
bfloat16 and float16.

CI runs these on the CPU. On a GPU machine run them there with one switch:
``CRISP_TEST_DEVICE=cuda python -m pytest tests/test_device.py`` (or ``--crisp-device cuda``).
"""

import json

import pytest
import torch

import crisp
from crisp import models
from crisp.train import make_config, train

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
