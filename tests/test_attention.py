"""topk_softmax against a plain reference, gradients, edge cases, bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crisp import topk_softmax
from crisp.attention import kept_per_row


def reference_row(scores, sparsity, key_mask):
    """Loop reference for granularity='row': keep the k best real keys of each row."""
    out = torch.zeros_like(scores, dtype=torch.float64)
    flat_s = scores.reshape(-1, scores.shape[-1]).double()
    flat_m = key_mask.expand(scores.shape).reshape(-1, scores.shape[-1])
    flat_o = out.view(-1, scores.shape[-1])
    for r in range(flat_s.shape[0]):
        real = flat_m[r].nonzero().flatten().tolist()
        n = len(real)
        if n == 0:
            continue
        k = max(1, n - math.floor(sparsity * n + 1e-6))
        best = sorted(real, key=lambda j: -flat_s[r, j].item())[:k]
        flat_o[r, best] = torch.softmax(flat_s[r, best], dim=0)
    return out


def reference_head(scores, sparsity, key_mask):
    """Loop reference for granularity='head' (self-attention; query real iff its key is real)."""
    B, H, L, _ = scores.shape
    out = torch.zeros_like(scores, dtype=torch.float64)
    m = key_mask.expand(scores.shape)
    for b in range(B):
        for h in range(H):
            real_q = [i for i in range(L) if m[b, h, i, i]]
            entries = [(scores[b, h, i, j].item(), i, j) for i in real_q for j in range(L) if m[b, h, i, j]]
            n_prune = math.floor(sparsity * len(entries) + 1e-6)
            pruned = {(i, j) for _, i, j in sorted(entries)[:n_prune]}
            for i in range(L):
                keys = [j for j in range(L) if m[b, h, i, j]]
                if not keys:
                    continue
                keep = [j for j in keys if (i, j) not in pruned] if i in real_q else keys
                best = max(keys, key=lambda j: scores[b, h, i, j].item())
                keep = sorted(set(keep) | {best})
                out[b, h, i, keep] = torch.softmax(scores[b, h, i, keep].double(), dim=0)
    return out


@st.composite
def attention_inputs(draw):
    B, H, L = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(B, H, L, L, generator=g, dtype=torch.float64) * draw(st.sampled_from([1e-3, 1.0, 30.0]))
    lengths = [draw(st.integers(1, L)) for _ in range(B)]
    mask = torch.zeros(B, 1, 1, L, dtype=torch.bool)
    for b, n in enumerate(lengths):
        mask[b, ..., :n] = True
    sparsity = draw(st.sampled_from([0.0, 0.3, 0.5, 0.6, 0.8, 0.95])) if draw(st.booleans()) else draw(st.floats(0, 0.99))
    return scores, sparsity, mask


@settings(max_examples=60, deadline=None)
@given(attention_inputs())
def test_row_matches_reference(inputs):
    scores, sparsity, mask = inputs
    got = topk_softmax(scores, sparsity, mask, "row")
    torch.testing.assert_close(got, reference_row(scores, sparsity, mask), atol=1e-12, rtol=0)
    n = mask.expand(scores.shape).sum(-1)
    assert torch.equal((got > 0).sum(-1), kept_per_row(n, sparsity))  # exactly k kept (random scores: no ties)
    assert torch.all(got.masked_select(~mask.expand(scores.shape)) == 0)
    torch.testing.assert_close(got.sum(-1), torch.ones_like(got.sum(-1)))


@settings(max_examples=40, deadline=None)
@given(attention_inputs())
def test_head_matches_reference(inputs):
    scores, sparsity, mask = inputs
    got = topk_softmax(scores, sparsity, mask, "head")
    torch.testing.assert_close(got, reference_head(scores, sparsity, mask), atol=1e-12, rtol=0)


@settings(max_examples=40, deadline=None)
@given(attention_inputs(), st.sampled_from(["row", "head"]))
def test_gradient_zero_where_pruned(inputs, granularity):
    scores, sparsity, mask = inputs
    scores = scores.clone().requires_grad_(True)
    probs = topk_softmax(scores, sparsity, mask, granularity)
    (probs * torch.randn_like(probs)).sum().backward()
    assert torch.isfinite(scores.grad).all()
    assert torch.all(scores.grad[probs == 0] == 0)


@pytest.mark.parametrize("granularity", ["row", "head"])
def test_sparsity_zero_is_masked_softmax(granularity):
    scores = torch.randn(2, 3, 5, 5)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]]).view(2, 1, 1, 5)
    expected = torch.softmax(scores.masked_fill(~mask, -math.inf), -1)
    assert torch.equal(topk_softmax(scores, 0.0, mask, granularity), expected)


@pytest.mark.parametrize("granularity", ["row", "head"])
def test_padding_behaves_like_truncation(granularity):
    scores = torch.randn(1, 2, 7, 7)
    mask = torch.tensor([True] * 4 + [False] * 3).view(1, 1, 1, 7)
    padded = topk_softmax(scores, 0.6, mask, granularity)[..., :4, :4]
    truncated = topk_softmax(scores[..., :4, :4], 0.6, None, granularity)
    torch.testing.assert_close(padded, truncated)


def test_gradcheck_float64():
    scores = torch.randn(1, 2, 4, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([True] * 5 + [False]).view(1, 1, 1, 6)
    assert torch.autograd.gradcheck(lambda s: topk_softmax(s, 0.5, mask, "row"), (scores,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scale", [1e-30, 1.0, 6e4])
@pytest.mark.parametrize("granularity", ["row", "head"])
def test_finite_for_dtypes_and_scales(dtype, scale, granularity):
    scores = (torch.randn(2, 2, 6, 6) * scale).to(dtype)
    scores[0, 0, 0, 1] = -math.inf
    mask = torch.tensor([[True] * 6, [False] * 6]).view(2, 1, 1, 6)  # second sequence: every key masked
    scores.requires_grad_(True)
    probs = topk_softmax(scores, 0.8, mask, granularity)
    probs.float().sum().backward()
    assert probs.dtype == dtype and probs.shape == scores.shape
    assert torch.isfinite(probs).all() and torch.isfinite(scores.grad).all()
    assert torch.all(probs[1] == 0)


def test_all_equal_scores_keep_exactly_k():
    probs = topk_softmax(torch.zeros(1, 1, 10, 10), 0.8, None, "row")
    assert torch.all((probs > 0).sum(-1) == 2)
    torch.testing.assert_close(probs.sum(-1), torch.ones(1, 1, 10))


def test_length_one_keeps_its_only_key():
    assert torch.equal(topk_softmax(torch.randn(3, 2, 1, 1), 0.9), torch.ones(3, 2, 1, 1))


def test_count_padding_lets_padding_compete():
    scores = torch.tensor([[[[0.0, 1.0, 5.0, 6.0, 7.0]]]])  # keys 2..4 are padding and score highest
    mask = torch.tensor([True, True, False, False, False]).view(1, 1, 1, 5)
    probs = topk_softmax(scores, 0.4, mask, "row", count_padding=True)  # k = 3 of 5: all three padding keys
    assert torch.equal(probs > 0, torch.tensor([[[[False, True, False, False, False]]]]))  # best real key kept


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "0.8", None, True])
def test_invalid_sparsity(bad):
    with pytest.raises(ValueError, match="sparsity"):
        topk_softmax(torch.randn(1, 1, 2, 2), bad)


def test_invalid_granularity():
    with pytest.raises(ValueError, match="'column'"):
        topk_softmax(torch.randn(1, 1, 2, 2), 0.5, granularity="column")


@st.composite
def hostile_inputs(draw):
    """Any dtype and scale, -inf entries, fully masked sequences, ties, L = 1."""
    B, H, L = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 8))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
    scale = draw(st.sampled_from([1e-30, 1e-4, 1.0, 1e3, 6e4]))
    scores = torch.randn(B, H, L, L, generator=g) * scale
    if draw(st.booleans()):
        scores = scores.round()  # many ties
    if draw(st.booleans()):
        scores[torch.rand(scores.shape, generator=g) < 0.3] = -math.inf
    mask = torch.rand(B, 1, 1, L, generator=g) < draw(st.sampled_from([0.0, 0.5, 1.0]))
    return scores.to(dtype), mask, draw(st.floats(0, 0.99)), draw(st.sampled_from(["row", "head"]))


def check_hostile(inputs):
    scores, mask, sparsity, granularity = inputs
    scores = scores.clone().requires_grad_(True)
    probs = topk_softmax(scores, sparsity, mask, granularity)
    (probs.float() * torch.arange(probs.numel()).view(probs.shape).float().sin()).sum().backward()
    assert probs.dtype == scores.dtype and torch.isfinite(probs).all() and torch.isfinite(scores.grad).all()
    full = mask.expand(scores.shape)
    assert torch.all(probs[~full] == 0) and torch.all(scores.grad[probs == 0] == 0)
    live = (full & torch.isfinite(scores.detach())).any(-1)  # rows with a real key of finite score
    kept = topk_softmax(scores.detach(), sparsity, mask, granularity).float().sum(-1)
    if granularity == "row":  # each such row keeps its best real key, which is finite or +inf
        torch.testing.assert_close(kept[live], torch.ones_like(kept[live]), atol=1e-2, rtol=0)
    assert torch.all((kept[~live] == 0) | (kept[~live] - 1).abs().lt(1e-2))


@settings(max_examples=150, deadline=None)
@given(hostile_inputs())
def test_hostile_inputs_stay_finite(inputs):
    check_hostile(inputs)


@pytest.mark.slow
@settings(max_examples=5000, deadline=None)
@given(hostile_inputs())
def test_hostile_inputs_stay_finite_large_budget(inputs):
    check_hostile(inputs)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None)
@given(attention_inputs())
def test_row_and_head_match_reference_large_budget(inputs):
    scores, sparsity, mask = inputs
    torch.testing.assert_close(topk_softmax(scores, sparsity, mask, "row"), reference_row(scores, sparsity, mask), atol=1e-12, rtol=0)
    torch.testing.assert_close(topk_softmax(scores, sparsity, mask, "head"), reference_head(scores, sparsity, mask), atol=1e-12, rtol=0)


def test_positive_infinity_takes_the_mass_instead_of_nan():
    """Found by the large property budget: float16 overflow gives +inf scores."""
    scores = torch.tensor([[[[7192.0, math.inf, math.inf, -14840.0]]]], dtype=torch.float16)
    mask = torch.tensor([False, False, True, True]).view(1, 1, 1, 4)
    probs = topk_softmax(scores, 0.0, mask, "row")
    assert torch.equal(probs.float(), torch.tensor([[[[0.0, 0.0, 1.0, 0.0]]]]))


# --- issue 15: mask shapes, keep=k, compile ------------------------------------------------------


def test_two_d_key_mask_is_batch_by_keys_even_when_batch_equals_length():
    """A tokenizer mask [B, L_k] with B == L_k must not be read as a [L_q, L_k] mask."""
    scores = torch.randn(4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    tokens = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]])
    probs = topk_softmax(scores, 0.0, key_mask=tokens)  # integer 0/1 accepted in 2-D
    assert (probs.masked_select(~tokens.bool()[:, None, None, :].expand_as(probs)) == 0).all()
    torch.testing.assert_close(probs, topk_softmax(scores, 0.0, key_mask=tokens.bool()[:, None, None, :]))
    with pytest.raises(ValueError, match="ambiguous"):
        topk_softmax(scores, 0.0, key_mask=tokens.bool()[:, None, :])  # 3-D for 4-D scores
    with pytest.raises(ValueError, match="batch, keys"):
        topk_softmax(scores, 0.0, key_mask=torch.ones(3, 4, dtype=torch.bool))


@pytest.mark.parametrize("k", [1, 3, 50])
def test_keep_k_keeps_min_k_n_keys_per_row(k):
    scores = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3]).view(2, 1, 1, 7)
    probs = topk_softmax(scores, 0.0, mask, keep=k)
    kept = (probs > 0).sum(-1)
    assert (kept[0] == min(k, 7)).all() and (kept[1] == min(k, 4)).all()
    with pytest.raises(ValueError, match="keep"):
        topk_softmax(scores, 0.5, mask, keep=2)
    with pytest.raises(ValueError, match="positive integer"):
        topk_softmax(scores, 0.0, mask, keep=0)


def test_config_per_layer_and_keep_validation():
    from crisp import CrispConfig

    c = CrispConfig("x", [0.2, 0.4])
    assert c.sparsity == (0.2, 0.4) and c.to_dict()["sparsity"] == [0.2, 0.4] and CrispConfig.from_dict(c.to_dict()) == c
    assert CrispConfig().to_dict()["keep"] is None and CrispConfig().to_dict()["cross_attention"] is False
    for bad in (dict(sparsity=[0.2, 1.5]), dict(sparsity=[]), dict(sparsity=[0.2], strategy="adaptive"),
                dict(keep=4, sparsity=0.5), dict(keep=4, granularity="head"), dict(keep=-1)):
        with pytest.raises(ValueError):
            CrispConfig("x", **bad)


@pytest.mark.parametrize("granularity", ["row", "head"])
def test_compiled_rule_has_no_graph_break_and_matches_eager(granularity):
    import torch._dynamo

    scores = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2]).view(2, 1, 1, 6)
    fn = lambda s, m: topk_softmax(s, 0.5, m, granularity)  # noqa: E731
    torch._dynamo.reset()
    explained = torch._dynamo.explain(fn)(scores, mask)
    assert explained.graph_break_count == 0, explained.break_reasons
    torch.testing.assert_close(torch.compile(fn, backend="eager")(scores, mask), fn(scores, mask))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["plain", "ties", "inf", "dead-row", "nan"])
def test_fast_path_equals_mask_then_masked_softmax_bitwise(dtype, kind):
    """topk_softmax's one-pass softmax (crisp.attention._kept_softmax) gives the values and gradients, to the bit,
    of the composite it replaces: masked_softmax(scores, topk_keep_mask(scores))."""
    from crisp import masked_softmax, topk_keep_mask

    g = torch.Generator().manual_seed(3)
    scores = torch.randn(3, 2, 7, 7, generator=g) * 4
    if kind == "ties":
        scores = scores.round()
    elif kind == "inf":
        scores[0, 0, 1, 2] = math.inf
    elif kind == "dead-row":
        scores[1, 1, 3] = -math.inf
    elif kind == "nan":
        scores[2, 0, 4, 1] = math.nan
    scores = scores.to(dtype)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5], dtype=torch.bool)[:, None, None, :]
    weights = torch.randn(scores.shape, generator=g).to(dtype)
    for sparsity, keep in ((0.0, None), (0.6, None), (0.8, None), (0.0, 3)):
        got, want = (scores.clone().requires_grad_(True) for _ in range(2))
        fast = topk_softmax(got, sparsity, mask, keep=keep)
        plain = masked_softmax(want, topk_keep_mask(want.detach(), sparsity, mask, keep=keep))
        (fast * weights).sum().backward()
        (plain * weights).sum().backward()
        for a, b in ((fast.detach(), plain.detach()), (got.grad, want.grad)):
            assert a.dtype == b.dtype
            assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())
            assert torch.equal(torch.signbit(a), torch.signbit(b))
