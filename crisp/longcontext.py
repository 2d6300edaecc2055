"""Crisp attention for long contexts: the same top-k rule in memory linear in the sequence length.

The row rule of :mod:`crisp.attention` ranks each query row on its own, so the rows can be taken
in chunks: for the queries ``Q[q0:q1]`` compute the scores ``S_c = Q_c K^T * scaling`` (+ softcap,
+ biases, + masks), the kept set of each row, the softmax over it and the output ``P_c V``, then
drop ``S_c`` and ``P_c``. Backward recomputes each chunk from ``Q, K, V`` (the technique of Gupta
et al. 2021, *Memory-efficient Transformers via Top-k Attention*, arXiv 2106.06899, and of
checkpointed attention in general), so autograd keeps ``Q, K, V`` (and any mask or bias it was
given) instead of the ``B*H*L_q*L_k`` scores, kept mask and probabilities of the plain path.

Shapes: ``query [B, H, L_q, D]``, ``key``/``value [B, H, L_k, D]`` (grouped-query heads already
expanded), masks and biases broadcastable to ``[B, H, L_q, L_k]``. Peak extra memory is one
chunk, ``B*H*chunk*L_k`` scores; time is that of the plain path plus one recomputed forward.

Results equal the plain path's (:func:`crisp.integration.crisp_attention`) up to float rounding:
same scores, same kept sets, same softmax, chunk by chunk; dropout replays the same random masks in
backward (the generator state is saved and restored, as ``torch.utils.checkpoint`` does);
autocast is re-entered in backward with the settings of the forward. What needs a whole head at
once is refused: ``granularity="head"`` (a percentile over every query row). Attention weights
are not returned (they would be the ``L_q x L_k`` matrix this path exists to avoid).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from .attention import _masked_softmax, kept_per_row, masked_softmax, topk_keep_mask

AUTO_LENGTH = 4096  # query_chunk="auto": the chunked path from this many keys on (and more queries than a chunk)
# query_chunk="auto": scores per chunk, B*H*chunk*L_k, by device type. On a CPU a chunk of 2**21 scores (8 MiB in
# fp32) stays in the last-level cache through the chunk's dozen elementwise passes: at 4k tokens, one thread, it
# took half the time of 2**24 (64 MiB); a GPU wants large kernels and keeps 2**24.
CHUNK_ENTRIES = {"cpu": 2**21}
CHUNK_ENTRIES_OTHER = 2**24


def chunk_entries(device_type: str) -> int:
    """Scores per chunk that ``query_chunk="auto"`` aims at on this device type (:data:`CHUNK_ENTRIES`)."""
    return CHUNK_ENTRIES.get(device_type, CHUNK_ENTRIES_OTHER)


def chunk_rows(query_chunk, batch: int, heads: int, n_queries: int, n_keys: int, device_type: str = "cpu") -> int | None:
    """Query rows per chunk for a call of these sizes, or None for the plain (quadratic) path.

    ``query_chunk`` is a :class:`crisp.CrispConfig` field: None (never chunk), an int (always, that
    many rows per chunk) or ``"auto"`` (chunk when ``n_keys >= AUTO_LENGTH``, with
    ``chunk_entries(device_type) // (batch*heads*n_keys)`` rows, at least 16, and only if that is fewer
    than ``n_queries``).
    """
    if query_chunk is None:
        return None
    if query_chunk == "auto":
        if n_keys < AUTO_LENGTH:
            return None
        rows = max(16, chunk_entries(device_type) // max(1, batch * heads * n_keys))
        return rows if rows < n_queries else None
    return int(query_chunk)


@dataclass(frozen=True)
class ChunkSpec:
    """Settings of one chunked call (everything but tensors)."""

    rows: int  # query rows per chunk
    scaling: float
    sparsity: float  # or a 0-d tensor (adaptive ratios)
    keep: int | None = None
    count_padding: bool = False
    causal: bool = False  # no mask given: query i sees keys j <= i (and j > i - sliding_window)
    sliding_window: int | None = None
    softcap: float | None = None
    dropout: float = 0.0
    training: bool = False
    k_max: int | None = None  # keys topk ranks per row, the whole call's (set by chunked_attention: ties break alike)


def row_threshold(scores, real, kept):
    """``(threshold [B, H, c], exact)``: each row's lowest kept score (+inf for a row keeping nothing), and
    whether ``real & (scores >= threshold)`` is exactly ``kept`` in every row (False when a key left out
    ties a kept one's score: then backward ranks that chunk again)."""
    scores = scores.detach()
    threshold = scores.masked_fill(~kept, float("inf")).amin(dim=-1)  # [B, H, c]
    above = scores >= threshold[..., None]
    above = above if real is None else above & real
    return threshold, not bool((above & ~kept).any())  # kept <= above always: equal unless a left-out key ties


def select(scores, real, spec: ChunkSpec):
    """``(kept, threshold [B, H, c], exact)``: the row rule's kept set of one chunk and each row's lowest kept score.

    The plain path ranks each row with a sorted ``topk`` (:func:`crisp.attention.topk_keep_mask`). When no
    left-out real key ties the ``k``-th highest score, that set is the only one there is, whatever breaks ties:
    ``real & (scores >= t)`` with ``t`` the row's ``k``-th highest real score. ``t`` comes from an unsorted
    ``topk`` (its values' minimum, about half the time of a sorted one on this CPU); rows that keep different
    ``k`` (causal and padding masks) rank ``[scores, pad]`` where ``pad`` holds ``k_max - k`` times +inf, so
    ``k_max`` values serve every row. If any row's count ``|real & (scores >= t)|`` is not its ``k`` (ties,
    NaN), the chunk is ranked again by the plain rule (and ``exact`` is False: backward ranks it again too).
    ``paper_padding`` and sparsity 0 take the plain rule directly.
    """
    s = scores.detach()
    held = isinstance(spec.sparsity, torch.Tensor)
    if spec.count_padding or (not held and spec.sparsity == 0.0 and spec.keep is None):
        return _plain_select(scores, real, spec)
    n_keys = s.shape[-1]
    if real is None:
        n = torch.tensor(n_keys)
        k_row = n.clamp(max=spec.keep) if spec.keep is not None else kept_per_row(n, spec.sparsity)
        k = int(k_row)
        if k == 0:
            return _plain_select(scores, real, spec)
        threshold = s.topk(k, dim=-1, sorted=False).values.amin(dim=-1)  # [B, H, c]
        kept = s >= threshold[..., None]
        counts_ok = bool((torch.count_nonzero(kept, dim=-1) == k).all())
    else:
        n = torch.count_nonzero(real, dim=-1)  # [., ., c] (the mask's own broadcast shape)
        k_row = n.clamp(max=spec.keep) if spec.keep is not None else kept_per_row(n, spec.sparsity)
        k_max = int(k_row.max()) if k_row.numel() else 0
        if k_max == 0:
            return _plain_select(scores, real, spec)
        k_row = k_row.expand(s.shape[:-1])
        ranked = s.new_empty(*s.shape[:-1], n_keys + k_max)  # [B, H, c, L_k + k_max]
        low, high = s.new_tensor(-math.inf), s.new_tensor(math.inf)
        torch.where(real, s, low, out=ranked[..., :n_keys])
        pad = torch.arange(k_max, device=s.device) < (k_max - k_row)[..., None]  # [B, H, c, k_max]
        torch.where(pad, high, low, out=ranked[..., n_keys:])
        threshold = ranked.topk(k_max, dim=-1, sorted=False).values.amin(dim=-1)  # k-th highest real score
        del ranked, pad
        kept = (s >= threshold[..., None]) & real
        counts_ok = bool((torch.count_nonzero(kept, dim=-1) == k_row).all())
    if not counts_ok:  # a tie at some row's k-th score (or NaN): the plain rule decides, and backward ranks again
        return _plain_select(scores, real, spec)
    return kept, threshold, True


def _plain_select(scores, real, spec: ChunkSpec):
    kept = topk_keep_mask(scores, spec.sparsity, real, "row", count_padding=spec.count_padding, keep=spec.keep,
                          k_max=spec.k_max)
    return (kept, *row_threshold(scores, real, kept))


def _rows(t, q0, q1):
    """Rows ``q0:q1`` of a mask or bias broadcastable to ``[B, H, L_q, L_k]`` (a size-1 query axis stays)."""
    return t if t is None or t.shape[-2] == 1 else t[..., q0:q1, :]


def chunk_mask(key_mask, spec: ChunkSpec, q0: int, q1: int, n_keys: int, device):
    """The bool mask (True = attend) of query rows ``q0:q1``: a slice of ``key_mask``, or the causal band."""
    if key_mask is not None or not spec.causal:
        return _rows(key_mask, q0, q1)
    q = torch.arange(q0, q1, device=device)[:, None]
    k = torch.arange(n_keys, device=device)[None, :]
    keep = k <= q
    if spec.sliding_window is not None:
        keep = keep & (k > q - spec.sliding_window)
    return keep[None, None]  # [1, 1, chunk, L_k]


def key_range(real, spec: ChunkSpec, q0: int, q1: int, n_keys: int) -> tuple[int, int]:
    """Keys ``lo:hi`` that rows ``q0:q1`` can attend: outside it every row's mask is False, so those keys get
    probability and gradient exactly 0 and are skipped (a causal chunk reads keys ``< q1``, about half of them
    on average). ``paper_padding`` ranks padding too: all keys then."""
    if spec.count_padding:
        return 0, n_keys
    if real is None:
        if not spec.causal:
            return 0, n_keys
        lo = 0 if spec.sliding_window is None else max(0, q0 - spec.sliding_window + 1)
        return lo, min(q1, n_keys)
    seen = real.reshape(-1, real.shape[-1]).any(dim=0).nonzero()  # [n, 1] columns some row attends
    if seen.numel() == 0:
        return 0, n_keys
    return int(seen[0]), int(seen[-1]) + 1


def _cols(t, lo, hi, n_keys):
    """Columns ``lo:hi`` of a mask or bias (a size-1 key axis stays)."""
    return t if t is None or t.shape[-1] == 1 or (lo, hi) == (0, n_keys) else t[..., lo:hi]


def chunk_scores(qc, key, biases, spec: ChunkSpec, keep_tanh=False):
    """``S_c = tanh(Q_c K^T * scaling / softcap) * softcap + biases`` in the plain path's order of operations
    (so the same values), updated in place where autograd allows; with ``keep_tanh`` also the tanh (backward)."""
    grad = torch.is_grad_enabled() and (qc.requires_grad or key.requires_grad)
    scores = torch.matmul(qc, key.transpose(-2, -1))  # [B, H, c, L_k]
    scores = scores * spec.scaling if grad else scores.mul_(spec.scaling)
    tanh = None
    if spec.softcap is not None:
        tanh = torch.tanh(scores / spec.softcap)
        scores = tanh * spec.softcap
    for bias in biases:
        if bias is not None:
            inplace = not (grad or bias.requires_grad) and torch.broadcast_shapes(scores.shape, bias.shape) == \
                scores.shape and torch.result_type(scores, bias) == scores.dtype
            scores = scores.add_(bias) if inplace else scores + bias
    return (scores, tanh) if keep_tanh else scores


def softmax_kept(scores, kept, inplace=False):
    """:func:`crisp.attention.masked_softmax` (same values, no gradient), masking ``scores`` in place when allowed."""
    work = scores.masked_fill_(~kept, -math.inf) if inplace else torch.where(kept, scores, -math.inf)
    return _masked_softmax(work, kept, work=work)  # guarded: rows keeping nothing (zeros), +inf scores


def chunk_forward(qc, key, value, real, biases, spec: ChunkSpec, threshold=None):
    """One chunk, as the plain path computes it: ``(out [B, H, c, D], scores, kept, probs)``.

    ``threshold [B, H, c]`` (backward): each row's lowest kept score, from the forward, where it
    alone tells the kept set (``kept = real & (scores >= threshold)``, see :func:`select`):
    the same set without a second ``topk``. Used with autograd (dropout, autocast, half types).
    """
    scores = chunk_scores(qc, key, biases, spec)
    if threshold is None:
        kept = select(scores, real, spec)[0]
    else:
        kept = scores.detach() >= threshold[..., None]
        kept = kept if real is None else kept & real
    probs = masked_softmax(scores, kept)
    dropped = torch.nn.functional.dropout(probs, p=spec.dropout, training=spec.training)
    return torch.matmul(dropped.to(value.dtype), value), scores, kept, probs


class _ChunkedTopk(torch.autograd.Function):
    """Chunked top-k attention with recomputation in backward; ``recorder`` sees each chunk in forward.

    Without dropout or autocast, in float32/float64, backward is written out (:func:`_chunk_backward`):
    ``dS = P * (dP - rowsum(P * dP))`` as softmax's, no autograd graph per chunk; otherwise each chunk's
    forward is replayed under autograd (same random dropout masks, same autocast)."""

    @staticmethod
    def forward(ctx, query, key, value, key_mask, position_bias, mask_bias, spec, recorder):
        device = query.device
        ctx.spec = spec
        ctx.autocast = _autocast_state(device.type)
        dropout = spec.dropout > 0 and spec.training
        ctx.rng = _rng_state(device) if dropout else None
        ctx.manual = not dropout and not ctx.autocast["enabled"] and _full(query, key, value)
        outs, thresholds, exact, ranges = [], [], [], []
        n_keys = key.shape[-2]
        with torch.no_grad():
            for q0 in range(0, query.shape[-2], spec.rows):
                q1 = min(q0 + spec.rows, query.shape[-2])
                full = chunk_mask(key_mask, spec, q0, q1, n_keys, device)
                # keys no row of the chunk attends are skipped only where backward is written out (no dropout,
                # whose random masks cover whole rows; no autocast) and no recorder takes statistics over every key
                skip = ctx.manual and recorder is None
                lo, hi = key_range(full, spec, q0, q1, n_keys) if skip else (0, n_keys)
                while True:
                    real = _cols(full, lo, hi, n_keys)
                    biases = (_cols(_rows(position_bias, q0, q1), lo, hi, n_keys),
                              _cols(_rows(mask_bias, q0, q1), lo, hi, n_keys))
                    scores = chunk_scores(query[..., q0:q1, :], key[..., lo:hi, :], biases, spec)
                    kept, threshold, ok = select(scores, real, spec)
                    if ok or (lo, hi) == (0, n_keys):
                        break
                    lo, hi = 0, n_keys  # ties: topk's order among them may depend on the row's width, so rank all keys
                probs = softmax_kept(scores, kept, inplace=recorder is None)
                if recorder is not None:
                    recorder(q0, scores, real, kept, probs)
                del scores
                dropped = torch.nn.functional.dropout(probs, p=spec.dropout, training=spec.training)
                outs.append(torch.matmul(dropped.to(value.dtype), value[..., lo:hi, :]))
                thresholds.append(threshold)
                exact.append(ok)
                ranges.append((lo, hi))
                del probs, dropped, kept
        ctx.exact = exact  # per chunk: the threshold alone gives the kept set
        ctx.ranges = ranges  # per chunk: the keys read (backward reads the same, so recomputes the same scores)
        ctx.save_for_backward(query, key, value, key_mask, position_bias, mask_bias, torch.cat(thresholds, dim=-1))
        return torch.cat(outs, dim=-2)

    @staticmethod
    def backward(ctx, grad_out):
        query, key, value, key_mask, position_bias, mask_bias, thresholds = ctx.saved_tensors
        spec, device = ctx.spec, query.device
        want_q, want_k, want_v, _, want_pb, _ = ctx.needs_input_grad[:6]
        grad_q = torch.zeros_like(query) if want_q else None
        grad_k = torch.zeros_like(key, dtype=_acc(key.dtype)) if want_k else None  # summed over chunks
        grad_v = torch.zeros_like(value, dtype=_acc(value.dtype)) if want_v else None
        grad_pb = torch.zeros_like(position_bias) if want_pb else None
        grads = (grad_q, grad_k, grad_v, grad_pb)
        # [B, H, L_q, D]; it arrives as a view of [B, L_q, H, D], which bmm would copy for every chunk
        grad_out = grad_out.contiguous()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], enabled=ctx.rng is not None,
                                   device_type=device.type):
            if ctx.rng is not None:
                _set_rng_state(device, ctx.rng)
            for index, q0 in enumerate(range(0, query.shape[-2], spec.rows)):
                q1 = min(q0 + spec.rows, query.shape[-2])
                threshold = thresholds[..., q0:q1] if ctx.exact[index] else None
                real = chunk_mask(key_mask, spec, q0, q1, key.shape[-2], device)
                step = _chunk_backward if ctx.manual else _chunk_backward_autograd
                step(ctx, query, key, value, real, position_bias, mask_bias, grad_out, grads, q0, q1, threshold,
                     ctx.ranges[index])
        grad_k = grad_k.to(key.dtype) if grad_k is not None else None
        grad_v = grad_v.to(value.dtype) if grad_v is not None else None
        return grad_q, grad_k, grad_v, None, grad_pb, None, None, None


def _chunk_backward(ctx, query, key, value, real, position_bias, mask_bias, grad_out, grads, q0, q1, threshold,
                    key_cols):
    """Gradients of one chunk, written out (float32/64, no dropout, no autocast), added into ``grads``.

    ``S = tanh(R / c) * c + biases`` with ``R = Q_c K^T * scaling``; ``P`` the softmax over the kept set;
    ``O_c = P V``. Then ``dV += P^T dO_c``, ``dP = dO_c V^T``, ``dS = P * (dP - rowsum(P * dP))`` (zero
    outside the kept set, as ``P`` is), ``dR = dS * (1 - tanh^2)``, ``dQ_c = dR K * scaling``,
    ``dK += dR^T Q_c * scaling``; a position bias gets ``dS`` (summed over its broadcast axes)."""
    spec = ctx.spec
    grad_q, grad_k, grad_v, grad_pb = grads
    qc = query[..., q0:q1, :]
    n_keys = key.shape[-2]
    lo, hi = key_cols  # the forward's (all keys for a chunk with ties)
    real = _cols(real, lo, hi, n_keys)
    key, value = key[..., lo:hi, :], value[..., lo:hi, :]
    with torch.no_grad():
        pb = _cols(_rows(position_bias, q0, q1), lo, hi, n_keys)
        mb = _cols(_rows(mask_bias, q0, q1), lo, hi, n_keys)
        scores, tanh = chunk_scores(qc, key, (pb, mb), spec, keep_tanh=True)
        if threshold is None:  # a tie at the k-th score in forward: rank again, as the plain rule does
            kept = select(scores, real, spec)[0]
        else:
            kept = scores >= threshold[..., None]
            kept = kept if real is None else kept & real
        probs = softmax_kept(scores, kept, inplace=True)  # [B, H, c, L_k]
        del scores, kept
        go = grad_out[..., q0:q1, :]  # [B, H, c, D]
        if grad_v is not None:
            grad_v[..., lo:hi, :] += torch.matmul(probs.transpose(-2, -1), go)
        ds = torch.matmul(go, value.transpose(-2, -1)).mul_(probs)  # P * dP
        ds.addcmul_(probs, ds.sum(dim=-1, keepdim=True), value=-1.0)  # P * (dP - rowsum(P * dP))
        del probs
        if grad_pb is not None:
            rows = grad_pb if position_bias.shape[-2] == 1 else grad_pb[..., q0:q1, :]
            rows = _cols(rows, lo, hi, n_keys)
            rows += ds.sum_to_size(rows.shape)
        if tanh is not None:
            ds.mul_(tanh.mul_(tanh).neg_().add_(1.0))
            del tanh
        if grad_q is not None:
            grad_q[..., q0:q1, :] = torch.matmul(ds, key).mul_(spec.scaling)
        if grad_k is not None:  # the scaling on Q_c's [c, D], not on the [L_k, D] sum
            grad_k[..., lo:hi, :] += torch.matmul(ds.transpose(-2, -1), qc * spec.scaling)


def _chunk_backward_autograd(ctx, query, key, value, real, position_bias, mask_bias, grad_out, grads, q0, q1,
                             threshold, key_cols):
    """Gradients of one chunk by replaying its forward under autograd (dropout, autocast, half types); reads
    every key (``key_cols`` must then be all of them: the forward slices only without dropout and recorder)."""
    spec, device = ctx.spec, query.device
    grad_q, grad_k, grad_v, grad_pb = grads
    want_q, want_k, want_v, want_pb = (g is not None for g in grads)
    k = key.detach().requires_grad_(want_k)
    v = value.detach().requires_grad_(want_v)
    qc = query[..., q0:q1, :].detach().requires_grad_(want_q)
    pb = _rows(position_bias, q0, q1)
    pb = pb.detach().requires_grad_(want_pb) if pb is not None else None
    with torch.enable_grad(), torch.autocast(device.type, **ctx.autocast):
        out, *_ = chunk_forward(qc, k, v, real, (pb, _rows(mask_bias, q0, q1)), spec, threshold)
    inputs = [t for t, want in ((qc, want_q), (k, want_k), (v, want_v), (pb, want_pb)) if want]
    result = iter(torch.autograd.grad(out, inputs, grad_out[..., q0:q1, :]))
    if want_q:
        grad_q[..., q0:q1, :] = next(result)
    if want_k:
        grad_k += next(result)
    if want_v:
        grad_v += next(result)
    if want_pb:
        g = next(result)
        if position_bias.shape[-2] == 1:
            grad_pb += g.sum(dim=-2, keepdim=True)
        else:
            grad_pb[..., q0:q1, :] = g


def _full(*tensors) -> bool:
    """All float32 or all float64 (the written-out backward's dtypes)."""
    return len({t.dtype for t in tensors}) == 1 and tensors[0].dtype in (torch.float32, torch.float64)


def chunked_attention(query, key, value, spec: ChunkSpec, key_mask=None, position_bias=None, mask_bias=None,
                      recorder=None) -> torch.Tensor:
    """Top-k attention output ``[B, H, L_q, D]``, computed ``spec.rows`` query rows at a time.

    Parameters
    ----------
    query, key, value : Tensor ``[B, H, L_q, D]``, ``[B, H, L_k, D]``
        Grouped-query key/value heads already expanded.
    spec : ChunkSpec
        Chunk size, scaling, the rule's ratio or ``keep``, causal band, softcap, dropout.
    key_mask : bool Tensor broadcastable to ``[B, H, L_q, L_k]``, optional
        True = attend; when None and ``spec.causal``, the causal band is made chunk by chunk.
    position_bias, mask_bias : Tensor broadcastable to the scores, optional
        Added to the scores in this order (``mask_bias`` is the finite part of an additive mask and
        gets no gradient; ``position_bias`` may require one).
    recorder : callable ``(q0, scores, real, kept, probs)``, optional
        Called for each chunk in forward (statistics), under ``torch.no_grad``.
    """
    if spec.rows < 1:
        raise ValueError(f"query_chunk must be a positive number of query rows, got {spec.rows}")
    if mask_bias is not None and mask_bias.requires_grad:
        mask_bias = mask_bias.detach()
    spec = dataclasses.replace(spec, k_max=_k_max(spec, key_mask, query.shape[-2], key.shape[-2]))
    return _ChunkedTopk.apply(query, key, value, key_mask, position_bias, mask_bias, spec, recorder)


def _k_max(spec: ChunkSpec, key_mask, n_queries: int, n_keys: int) -> int:
    """The largest ``k`` any row of the whole call keeps (the plain path's ``topk`` width): rows keep
    ``k(n)``, nondecreasing in their number ``n`` of candidate keys, so it is ``k`` of the largest ``n``."""
    if spec.count_padding or (key_mask is None and not spec.causal):
        n = n_keys
    elif key_mask is None:  # the causal band: row i has min(i + 1, window, L_k) keys
        n = min(n_queries, n_keys, spec.sliding_window or n_keys)
    else:
        n = int(key_mask.sum(dim=-1).max()) if key_mask.numel() else 0
    n = torch.tensor(n)
    k = n.clamp(max=spec.keep) if spec.keep is not None else kept_per_row(n, float(spec.sparsity))
    return int(k)


def _acc(dtype):
    """Accumulation dtype of gradients summed over chunks (float32 for half types)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _autocast_state(device_type: str) -> dict:
    if device_type not in ("cpu", "cuda"):
        return {"enabled": False}
    return {"enabled": torch.is_autocast_enabled(device_type), "dtype": torch.get_autocast_dtype(device_type)}


def _rng_state(device):
    if device.type == "cuda":
        return torch.get_rng_state(), torch.cuda.get_rng_state(device)
    return torch.get_rng_state(), None


def _set_rng_state(device, state) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


__all__ = ["AUTO_LENGTH", "CHUNK_ENTRIES", "CHUNK_ENTRIES_OTHER", "ChunkSpec", "chunk_entries", "chunk_rows",
           "chunked_attention"]
