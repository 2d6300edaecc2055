"""The long-context path (crisp.longcontext): same results as the plain path, linear saved memory, refusals."""

import pytest
import torch

import crisp
from crisp import CrispConfig, crisp_attention
from crisp.longcontext import AUTO_LENGTH, ChunkSpec, chunk_rows, chunked_attention
from crisp.state import CrispState


class Layer(torch.nn.Module):
    """What crisp_attention reads from a module: its state, layer index, causality and mode."""

    def __init__(self, config, causal=False, heads=4, training=True):
        super().__init__()
        self.crisp_state = CrispState(config, n_layers=1, n_heads=heads)
        self.crisp_layer = 0
        self.is_causal = causal
        self.train(training)


def qkv(B=2, H=4, Hkv=4, L=11, D=8, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda h: torch.randn(B, h, L, D, generator=g, dtype=dtype).requires_grad_()  # noqa: E731
    return make(H), make(Hkv), make(Hkv)


def run(config, q, k, v, mask=None, causal=False, **kw):
    layer = Layer(config, causal=causal, heads=q.shape[1])
    out, _ = crisp_attention(layer, q, k, v, mask, **kw)
    grads = torch.autograd.grad(out.sum() + (out ** 2).sum(), [q, k, v], allow_unused=True)
    return out, grads, layer.crisp_state


def padding_mask(B, L, lengths):
    real = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]  # [B, L]
    return real[:, None, None, :].expand(B, 1, L, L)  # bool [B, 1, Lq, Lk], True = attend


def causal_padding_mask(B, L, lengths):
    return padding_mask(B, L, lengths) & torch.ones(L, L, dtype=torch.bool).tril()


def same(rows_a, rows_b) -> bool:
    """Summaries equal, NaN equal to NaN (keep=k has no target fraction)."""
    return str(rows_a) == str(rows_b)


CASES = {
    "none": dict(),
    "padding": dict(mask=padding_mask(2, 11, [11, 6])),
    "float-mask": dict(mask=torch.zeros(2, 1, 11, 11, dtype=torch.float64).masked_fill(
        ~padding_mask(2, 11, [7, 11]), torch.finfo(torch.float64).min)),
    "causal-none": dict(causal=True),
    "causal-padding": dict(mask=causal_padding_mask(2, 11, [11, 8]), causal=True),
    "sliding-window": dict(causal=True, sliding_window=4),
    "softcap": dict(softcap=2.0),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("rule", [dict(sparsity=0.8), dict(sparsity=0.5), dict(keep=3), dict(sparsity=0.0),
                                  dict(sparsity=0.6, paper_padding=True)])
def test_chunked_equals_plain_float64(case, rule):
    kw = dict(CASES[case])
    q, k, v = qkv()
    plain = run(CrispConfig("p", query_chunk=None, **rule), q, k, v, **kw)
    chunked = run(CrispConfig("c", query_chunk=3, **rule), q, k, v, **kw)
    torch.testing.assert_close(chunked[0], plain[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(chunked[1], plain[1]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # the realized-sparsity counts the state records are the same numbers
    assert float(chunked[2].kept[0]) == float(plain[2].kept[0]) and float(chunked[2].real[0]) == float(plain[2].real[0])
    assert same(chunked[2].sparsity_summary(), plain[2].sparsity_summary())


def test_grouped_query_attention_and_position_bias_fp32():
    q, k, v = qkv(H=4, Hkv=2, dtype=torch.float32, L=13)
    bias = torch.randn(1, 4, 13, 13, requires_grad=True)
    outs = []
    for chunk in (None, 5):
        layer = Layer(CrispConfig("x", 0.7, query_chunk=chunk), causal=True)
        out, _ = crisp_attention(layer, q, k, v, None, position_bias=bias)
        outs.append((out, torch.autograd.grad((out ** 2).sum(), [q, k, v, bias])))
    torch.testing.assert_close(outs[1][0], outs[0][0])
    for a, b in zip(outs[1][1], outs[0][1]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("rule", [dict(sparsity=0.6), dict(keep=2)])
def test_gradcheck(rule):
    q, k, v = qkv(B=1, H=2, Hkv=2, L=6, D=3)
    mask = causal_padding_mask(1, 6, [5])
    spec = ChunkSpec(rows=4, scaling=0.5, sparsity=rule.get("sparsity", 0.0), keep=rule.get("keep"))
    bias = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, k, v, b: chunked_attention(q, k, v, spec, mask, b), (q, k, v, bias))


def test_adaptive_and_entropy_statistics_match():
    q, k, v = qkv(L=12)
    states = []
    for chunk in (None, 5):
        layer = Layer(CrispConfig("a", 0.6, "adaptive", query_chunk=chunk), causal=True)
        layer.crisp_state.record_entropy = True
        crisp_attention(layer, q, k, v, None)
        states.append(layer.crisp_state)
    plain, chunked = states
    torch.testing.assert_close(chunked.entropy_dense, plain.entropy_dense)
    torch.testing.assert_close(chunked.entropy_sparse, plain.entropy_sparse)
    torch.testing.assert_close(chunked.entropy_rows, plain.entropy_rows)
    assert plain.controller._batch[0] is not None  # the adaptive measure was taken
    torch.testing.assert_close(torch.as_tensor(chunked.controller._batch[0], dtype=torch.float64),
                               torch.as_tensor(plain.controller._batch[0], dtype=torch.float64))


def test_dropout_masks_replayed_in_backward():
    """One chunk draws the same dropout mask as the plain path (same shape, same seed), so forward and
    gradients agree; with several chunks the backward must replay each chunk's mask (gradcheck-free check:
    the gradient of sum(out * w) w.r.t. value is P_dropped^T w, recomputed from the forward's own output)."""
    q, k, v = qkv(dtype=torch.float32)
    res = []
    for chunk in (None, 64):
        torch.manual_seed(3)
        layer = Layer(CrispConfig("d", 0.5, query_chunk=chunk))
        out, _ = crisp_attention(layer, q, k, v, None, dropout=0.3)
        res.append((out, torch.autograd.grad(out.sum(), [q, k, v])))
    torch.testing.assert_close(res[1][0], res[0][0])
    for a, b in zip(res[1][1], res[0][1]):
        torch.testing.assert_close(a, b)
    # several chunks: d out / d value is linear in the dropped probabilities; out = P_d V exactly, so
    # with V = identity-like probes the forward's probabilities are read back and compared with backward's
    torch.manual_seed(4)
    L = 11
    v_eye = torch.eye(L, dtype=torch.float64)[None, None].expand(1, 1, L, L).clone().requires_grad_()
    qq, kk, _ = qkv(B=1, H=1, Hkv=1, L=L)
    layer = Layer(CrispConfig("d", 0.5, query_chunk=4), heads=1)
    out, _ = crisp_attention(layer, qq, kk, v_eye, None, dropout=0.5)
    probs_fwd = out.transpose(1, 2)  # [1, 1, L, L]: row i = dropped probabilities of query i
    w = torch.randn_like(probs_fwd)
    (grad_v,) = torch.autograd.grad((out.transpose(1, 2) * w).sum(), [v_eye])
    torch.testing.assert_close(grad_v, probs_fwd.transpose(-1, -2) @ w)


def test_bf16_autocast_within_tolerance():
    """Same bf16 scores chunk by chunk and the same topk width, so even bf16's many tied scores break alike."""
    q, k, v = qkv(dtype=torch.float32, L=64, D=32)
    res = []
    for chunk in (None, 7):
        layer = Layer(CrispConfig("b", 0.8, query_chunk=chunk), causal=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = crisp_attention(layer, q, k, v, None)
        assert out.dtype == torch.bfloat16
        res.append((out.float(), torch.autograd.grad(out.float().pow(2).sum(), [q, k, v])))
    torch.testing.assert_close(res[1][0], res[0][0], rtol=1.6e-2, atol=1e-2)
    for a, b in zip(res[1][1], res[0][1]):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=1.6e-2, atol=1e-2)


def test_refusals_and_auto_choice():
    with pytest.raises(ValueError, match="granularity='head' ranks every row"):
        CrispConfig("h", 0.5, granularity="head", query_chunk=64)
    with pytest.raises(ValueError, match="query_chunk must be"):
        CrispConfig("h", 0.5, query_chunk=0)
    # 'auto': the chunked path only from AUTO_LENGTH keys on; head granularity keeps the plain path
    assert chunk_rows("auto", 1, 4, 1024, 1024) is None
    assert chunk_rows("auto", 1, 4, AUTO_LENGTH, AUTO_LENGTH) == 2**21 // (4 * AUTO_LENGTH)  # a CPU: cache-sized
    assert chunk_rows("auto", 1, 4, AUTO_LENGTH, AUTO_LENGTH, "cuda") == 2**24 // (4 * AUTO_LENGTH)
    assert chunk_rows(None, 1, 4, 10**6, 10**6) is None
    assert CrispState(CrispConfig("h", 0.5, granularity="head"), 1, 4).chunk_rows(1, 4, 8192, 8192) is None


def test_saved_memory_is_linear():
    """Autograd keeps q, k, v (and the mask), not the L x L scores and probabilities."""
    q, k, v = qkv(B=1, H=2, Hkv=2, L=256, D=8, dtype=torch.float32)
    saved = {}
    for chunk in (None, 32):
        sizes = []

        def pack(t):
            sizes.append(t.untyped_storage().nbytes())
            return t

        layer = Layer(CrispConfig("m", 0.8, query_chunk=chunk), heads=2)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            crisp_attention(layer, q, k, v, None)
        saved[chunk] = sum(sizes)
    linear = 3 * q.numel() * 4 + 2 * 256 * 4  # q, k, v and one threshold per query row
    assert saved[32] <= linear + 1024
    assert saved[None] > 10 * saved[32]


def test_tiny_llama_end_to_end_gqa():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).train()
    ids = torch.randint(0, 64, (2, 24))
    attn = torch.ones(2, 24, dtype=torch.long)
    attn[1, :5] = 0  # left padding
    res = []
    for chunk in (None, 5):
        state = crisp.enable(model, CrispConfig("x", 0.7, query_chunk=chunk))
        loss = model(input_ids=ids, attention_mask=attn, labels=ids).loss
        grads = torch.autograd.grad(loss, list(model.parameters()))
        res.append((loss.detach(), grads, state.sparsity_summary()))
        crisp.disable(model)
    torch.testing.assert_close(res[1][0], res[0][0])
    for a, b in zip(res[1][1], res[0][1]):
        torch.testing.assert_close(a, b)
    assert same(res[1][2], res[0][2])


def test_causal_mask_not_materialised_from_auto_length_on(monkeypatch):
    """From AUTO_LENGTH keys on an unpadded causal batch hands the long-context path ``None`` (the band is made
    chunk by chunk), below it the mask is materialised; padding always materialises it; and the model's loss and
    gradients are the same either way (a tiny Llama, AUTO_LENGTH lowered to 16 so both sides run in a second)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from crisp import integration

    short = integration.crisp_mask(batch_size=1, q_length=8, kv_length=8)
    assert short is not None and short.shape == (1, 1, 8, 8)
    assert integration.crisp_mask(batch_size=1, q_length=AUTO_LENGTH, kv_length=AUTO_LENGTH) is None
    padded = torch.ones(1, AUTO_LENGTH, dtype=torch.bool)
    padded[0, 0] = False
    assert integration.crisp_mask(batch_size=1, q_length=AUTO_LENGTH, kv_length=AUTO_LENGTH,
                                  attention_mask=padded) is not None

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).train()
    ids = torch.randint(0, 64, (2, 40))
    seen, res = [], []
    for auto_length in (16, 10**9):  # the shortcut taken, then never
        monkeypatch.setattr(integration, "AUTO_LENGTH", auto_length)
        state = crisp.enable(model, CrispConfig("x", 0.7, query_chunk=8))
        real = state.attend_chunked
        monkeypatch.setattr(state, "attend_chunked", lambda *a, **k: seen.append(k["key_mask"]) or real(*a, **k))
        loss = model(input_ids=ids, labels=ids).loss
        res.append((loss.detach(), torch.autograd.grad(loss, list(model.parameters())), state.sparsity_summary()))
        crisp.disable(model)
    assert seen[0] is None and seen[-1] is not None  # the band made chunk by chunk, then the materialised mask
    torch.testing.assert_close(res[0][0], res[1][0])
    for a, b in zip(res[0][1], res[1][1]):
        torch.testing.assert_close(a, b)
    assert same(res[0][2], res[1][2])


@pytest.mark.parametrize("mask", ["none", "causal", "padding", "window"])
@pytest.mark.parametrize("rule", [dict(sparsity=0.8), dict(sparsity=0.3), dict(keep=5)])
def test_select_equals_plain_rule_and_falls_back_on_ties(mask, rule):
    """The unsorted-topk threshold gives topk_keep_mask's set; a tie at some row's k-th score hands the chunk
    to topk_keep_mask itself (exact=False, so backward ranks it again)."""
    from crisp.attention import topk_keep_mask
    from crisp.longcontext import select

    B, H, c, L = 2, 3, 7, 19
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(B, H, c, L, generator=g)
    q = torch.arange(5, 5 + c)[:, None]
    keys = torch.arange(L)[None, :]
    real = {"none": None, "causal": (keys <= q)[None, None], "window": ((keys <= q) & (keys > q - 4))[None, None],
            "padding": (torch.arange(L) < torch.tensor([19, 11])[:, None])[:, None, None, :]}[mask]
    spec = ChunkSpec(rows=c, scaling=1.0, sparsity=rule.get("sparsity", 0.0), keep=rule.get("keep"))
    plain = topk_keep_mask(scores, spec.sparsity, real, "row", keep=spec.keep)
    kept, threshold, exact = select(scores, real, spec)
    assert exact and torch.equal(kept, plain)
    torch.testing.assert_close(threshold, scores.masked_fill(~plain, float("inf")).amin(-1))
    tied = scores.round(decimals=0)  # many ties, some at the k-th score
    plain = topk_keep_mask(tied, spec.sparsity, real, "row", keep=spec.keep)
    kept, _, exact = select(tied, real, spec)
    left_out_tie = (tied >= tied.masked_fill(~plain, float("inf")).amin(-1, keepdim=True)) & ~plain
    left_out_tie = left_out_tie if real is None else left_out_tie & real
    assert torch.equal(kept, plain) and exact == (not bool(left_out_tie.any()))
    assert mask == "window" or not exact  # rounding to integers ties some row's k-th score


@pytest.mark.parametrize("case", ["none", "padding", "causal-none", "causal-padding", "sliding-window", "softcap"])
def test_chunked_without_statistics_skips_unattended_keys_and_equals_plain(case):
    """Without a recorder the chunk reads only the keys some row attends (a causal chunk: keys < q1);
    forward and backward read the same ones, and the results are the plain path's."""
    kw = dict(CASES[case])
    q, k, v = qkv(L=11)
    res = []
    for chunk in (None, 3):
        layer = Layer(CrispConfig("r", 0.6, query_chunk=chunk), causal=kw.get("causal", False))
        layer.crisp_state.record_sparsity = False
        out, _ = crisp_attention(layer, q, k, v, kw.get("mask"), **{n: kw[n] for n in ("sliding_window", "softcap")
                                                                     if n in kw})
        res.append((out, torch.autograd.grad(out.sum() + (out ** 2).sum(), [q, k, v])))
    torch.testing.assert_close(res[1][0], res[0][0], rtol=1e-12, atol=1e-12)
    for a, b in zip(res[1][1], res[0][1]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_committed_long_context_benchmark():
    """The committed `crisp bench --long-context` files: every length has its four implementations, timed or saying
    why not; the long-context path meets the saved-bytes target at 8k and 16k; the 32k step fitted a cap under which the plain
    path's step failed."""
    from pathlib import Path

    import pandas as pd

    from crisp.study import bench_longcontext as lc

    folder = Path(__file__).resolve().parents[1] / "data" / "bench"
    frame = pd.read_csv(folder / "bench-cpu-longcontext.csv")
    assert sorted(frame.length.unique()) == [1024, 4096, 8192, 16384]
    assert (frame.groupby("length").variant.nunique() == 4).all()
    assert (frame.median_s.notna() | frame.skipped.notna()).all()
    met = lc.targets(frame)
    saved = met[met.target == "saved bytes ÷ SDPA"]
    assert sorted(saved.length) == [8192, 16384] and saved.met.all()
    assert lc.verdict([True, True]) == "met at every length" and lc.verdict([True, False]) == "met at some lengths"
    demo = pd.read_csv(folder / "bench-cpu-longcontext-demo32k.csv").set_index("variant")
    chunked, plain = demo.loc["crisp-chunked"], demo.loc["crisp"]
    assert chunked.fits and chunked.length == 32768 and chunked.grads_finite
    assert chunked.peak_rss_gib <= chunked.memory_cap_gib < plain.peak_rss_gib_estimated
    # the plain path's step failed under the same cap, and its fitted peak exceeds the whole machine
    assert not plain.plain_ran and "allocate" in plain.plain_error
    assert not plain.fits and plain.peak_rss_gib_estimated > plain.machine_memory_gib
