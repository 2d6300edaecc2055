"""Every reading of the paper's padding (crisp.study.readings) against loop references, inside a tiny
encoder, and the `crisp padding` study end to end on a tiny model and synthetic sentences."""

import math

import pandas as pd
import pytest
import torch

from crisp.study import cli, models
from crisp.study import padding as P
from crisp.study import readings as R

FMIN = torch.finfo(torch.float32).min


def hf_mask(lengths, L, dtype=torch.float32):
    """HF eager's additive mask [B, 1, L, L]: 0 at real keys, finfo.min at padding keys."""
    real = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]  # [B, L]
    return torch.zeros(len(lengths), 1, L, L, dtype=dtype).masked_fill(~real[:, None, None, :], torch.finfo(dtype).min)


def scores_for(lengths, L, heads=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(lengths), heads, L, L, generator=g)


# --- torch.quantile, literally and from k-th values ----------------------------------------------


def test_quantile_with_minus_inf_is_nan_and_with_finfo_min_is_finite():
    """What the literal head percentile meets: -inf at the rank gives nan, finfo.min gives numbers."""
    x = torch.tensor([-math.inf] * 5 + [1.0, 2.0])
    assert torch.quantile(x, 0.5).isnan()  # rank 3 lies among -inf: lerp(-inf, -inf) = nan
    assert torch.quantile(x, 0.7).isnan()  # rank 4.2, between -inf and 1: nan too
    assert torch.quantile(x, 1.0) == 2.0
    y = torch.tensor([FMIN] * 5 + [1.0, 2.0])
    assert torch.quantile(y, 0.5) == FMIN  # rank 3 among the masked entries: exactly finfo.min
    assert torch.quantile(y, 0.8) == pytest.approx(0.2 * FMIN, rel=1e-6)  # rank 4.8: lerp(finfo.min, 1, 0.8)
    assert not (y < torch.quantile(y, 0.5)).any()  # nothing is below finfo.min: nothing pruned


@pytest.mark.parametrize("q", [0.0, 0.2, 0.6, 0.8, 0.95, 1.0])
def test_quantile_linear_equals_torch_quantile_bitwise(q):
    g = torch.Generator().manual_seed(1)
    for n in (1, 2, 7, 50, 333):
        x = torch.randn(4, n, generator=g)
        u = torch.rand(4, n, generator=g)
        x = torch.where(u < 0.3, torch.tensor(-math.inf), torch.where(u < 0.6, torch.tensor(FMIN), x))
        x[0] = x[0].round()  # repeated values
        a, b = torch.quantile(x, q, dim=-1), R.quantile_linear(x, q)
        assert torch.equal(a.isnan(), b.isnan())
        assert torch.equal(a[~a.isnan()], b[~b.isnan()])


def test_quantile_linear_equals_torch_quantile_on_a_512_by_512_head():
    """torch.quantile runs over one 512 x 512 head (and several); the fast version agrees bit for bit."""
    x = scores_for([20, 66], 512, heads=2) + hf_mask([20, 66], 512)
    flat = x.flatten(-2)  # [2, 2, 262144]
    for q in (0.6, 0.8):
        assert torch.equal(torch.quantile(flat, q, dim=-1), R.quantile_linear(flat, q))
        assert (torch.quantile(flat, q, dim=-1) == FMIN).all()  # the percentile lands among the masked entries


# --- the rules against loop references ------------------------------------------------------------


@pytest.mark.parametrize("value", ["finfo.min", "-inf"])
@pytest.mark.parametrize("sparsity", [0.6, 0.8])
def test_mask_first_row_matches_a_loop(value, sparsity):
    lengths, L = [3, 9, 12], 12
    scores, mask = scores_for(lengths, L), hf_mask(lengths, L)
    _, keep = R.mask_first_row(scores, mask, sparsity, value)
    k = L - math.floor(sparsity * L + 1e-6)
    for b, n in enumerate(lengths):
        for h in range(2):
            for i in range(L):
                row = scores[b, h, i].clone()
                row[n:] = FMIN if value == "finfo.min" else -math.inf
                expected = set(torch.argsort(row, descending=True)[:k].tolist())
                got = set(torch.nonzero(keep[b, h, i]).flatten().tolist())
                assert len(got) == k and (n > k or set(range(n)) <= got)
                assert got & set(range(n)) == expected & set(range(n))  # the same real keys


@pytest.mark.parametrize("value", ["finfo.min", "-inf"])
@pytest.mark.parametrize("sparsity", [0.6, 0.8])
def test_mask_first_head_matches_a_loop_with_torch_quantile(value, sparsity):
    lengths, L = [5, 10], 10
    scores, mask = scores_for(lengths, L, seed=3), hf_mask(lengths, L)
    _, keep = R.mask_first_head(scores, mask, sparsity, value)
    _, literal = R.mask_first_head(scores, mask, sparsity, value, literal_quantile=True)
    assert torch.equal(keep, literal)
    for b, n in enumerate(lengths):
        for h in range(2):
            x = scores[b, h].clone()
            x[:, n:] = FMIN if value == "finfo.min" else -math.inf
            q = torch.quantile(x.flatten(), sparsity)
            expected = ~(x < q)
            expected[torch.arange(L), x.argmax(dim=-1)] = True  # each row keeps its best
            assert torch.equal(keep[b, h], expected)


@pytest.mark.parametrize("reading", [r for r in R.READINGS if "maskfirst" in r])
def test_mask_first_keeps_every_real_key_when_padding_fills_the_cut_and_equals_dense_bitwise(reading):
    """Padded to 64 with at most 12 real keys: k = 13 (row) and the head percentile lands among
    the masked entries, so the probabilities are HF's softmax(scores + mask) to the last bit."""
    lengths, L = [4, 12, 7], 64
    scores, mask = scores_for(lengths, L, heads=3, seed=5), hf_mask(lengths, L)
    dense, real = R.dense(scores, mask)
    for s in (0.6, 0.8):
        probs, keep = R.apply(reading, scores, mask, s)
        assert (keep | ~real).all()
        assert torch.equal(probs, dense)
        assert torch.equal(probs, torch.softmax(scores + mask, dim=-1))


def test_dynamic_mask_first_depends_on_batch_mates():
    """A 10-token sentence keeps 2 keys per row alone, 8 when a batch-mate pads it to 40, all 10 at 64."""
    scores = scores_for([10], 64, seed=7)
    for L, kept in ((10, 2), (40, 8), (64, 10)):
        mask = hf_mask([10], L) if L > 10 else None
        keep = R.mask_first_row(scores[..., :L, :L], mask, 0.8)[1]
        assert keep[..., :10, :10].sum(-1).eq(kept).all()


def test_raw_readings_are_the_library_rule():
    from crisp.attention import masked_softmax, topk_keep_mask

    lengths, L = [3, 8], 8
    scores, mask = scores_for(lengths, L, seed=9), hf_mask(lengths, L)
    key = mask > FMIN / 2
    for reading, count in (("pad512-raw-row", True), ("pad512-raw-head", True), ("dynamic-row", False)):
        g = R.READINGS[reading].granularity
        probs, keep = R.apply(reading, scores, mask, 0.8)
        assert torch.equal(keep, topk_keep_mask(scores, 0.8, key, g, count_padding=count))
        assert torch.equal(probs, masked_softmax(scores, keep))


def test_unknown_reading_and_mask_value_are_refused():
    with pytest.raises(ValueError, match="unknown reading"):
        R.get("pad-everything")
    with pytest.raises(ValueError, match="mask_value"):
        R.additive_mask(hf_mask([1], 2), "zero")


# --- inside a tiny encoder -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    net, tok = models.load("tiny-bert", seed=0)
    return net.eval(), tok


def test_dense_reading_is_hf_eager_bitwise_and_mask_first_is_dense(tiny):
    net, tok = tiny
    enc = tok(["a good film", "a long and rather dull story about nothing"], padding="max_length",
              max_length=64, return_tensors="pt")
    with torch.no_grad():
        net.set_attn_implementation("eager")
        eager = net(**enc).logits
        state = R.use(net, "dense")
        assert torch.equal(net(**enc).logits, eager)
        for reading in ("pad512-maskfirst-finfo-row", "pad512-maskfirst-inf-head"):
            state.set(reading, 0.8)
            assert torch.equal(net(**enc).logits, eager)
            assert state.realized() == [0.0, 0.0]
        state.set("pad512-raw-row", 0.8)
        assert not torch.equal(net(**enc).logits, eager)  # padding competes: real keys are pruned
        assert min(state.realized()) > 0.2


def test_measure_on_a_tiny_encoder(tiny, sst2_dir):
    from crisp.study import data

    net, tok = tiny
    texts = data.load_sst2(sst2_dir)["dev"].sentences[:6]
    rows, diffs = P.measure(net, tok, texts, batch_size=3, log=lambda _: None)
    assert set(rows.reading) == set(R.READINGS)
    assert {"reading", "padding", "mask_first", "mask_value", "granularity", "sparsity", "layer",
            "realized_sparsity", "real_pairs", "sentences"} <= set(rows.columns)
    mf = rows[rows.reading.str.startswith("pad512-maskfirst")]
    assert (mf.realized_sparsity == 0).all() and (mf.batches_bitwise_dense == mf.batches).all()
    assert (mf.own_forwards == 1).all()  # the first batch is verified with the reading's own forward
    assert (diffs[diffs.reading.str.startswith("pad512")][["max_abs_probs", "max_abs_logits"]] == 0).all().all()
    ours = rows[(rows.reading == "dynamic-row") & (rows.sparsity == 0.8)]
    assert ours.realized_sparsity.between(0.6, 0.8).all()
    assert (rows.sentences == 6).all()


def test_measure_stops_at_the_deadline(tiny, sst2_dir):
    from crisp.study import data

    net, tok = tiny
    texts = data.load_sst2(sst2_dir)["dev"].sentences[:6]
    rows, _ = P.measure(net, tok, texts, ids=["pad512-raw-row"], batch_size=2, deadline=0.0, log=lambda _: None)
    assert (rows.sentences == 2).all() and (rows.batches == 1).all()


def test_training_demo_is_bitwise_dense_at_pad512(sst2_dir):
    frame = P.training_demo("tiny-bert", sst2_dir, steps=2, batch_size=4, log=lambda _: None)
    assert list(frame.reading.unique()) == ["dense", "pad512-maskfirst-finfo-row"]
    assert frame.bitwise_equal_to_dense.all()
    assert frame.dropna(subset=["params_bitwise_equal_to_dense"]).params_bitwise_equal_to_dense.all()
    assert frame[frame.reading != "dense"].realized_sparsity_mean.eq(0).all()


def test_cli_padding_refuses_unknown_steps(capsys):
    assert cli.main(["padding", "--steps", "dev,everything"]) == 2
    assert "--steps" in capsys.readouterr().err
