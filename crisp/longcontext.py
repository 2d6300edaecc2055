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
from dataclasses import dataclass

import torch

from .attention import kept_per_row, masked_softmax, topk_keep_mask

AUTO_LENGTH = 4096  # query_chunk="auto": the chunked path from this many keys on (and more queries than a chunk)
CHUNK_ENTRIES = 2**24  # query_chunk="auto": scores per chunk, B*H*chunk*L_k (64 MiB in fp32)


def chunk_rows(query_chunk, batch: int, heads: int, n_queries: int, n_keys: int) -> int | None:
    """Query rows per chunk for a call of these sizes, or None for the plain (quadratic) path.

    ``query_chunk`` is a :class:`crisp.CrispConfig` field: None (never chunk), an int (always, that
    many rows per chunk) or ``"auto"`` (chunk when ``n_keys >= AUTO_LENGTH``, with
    ``CHUNK_ENTRIES // (batch*heads*n_keys)`` rows, at least 16, and only if that is fewer than
    ``n_queries``).
    """
    if query_chunk is None:
        return None
    if query_chunk == "auto":
        if n_keys < AUTO_LENGTH:
            return None
        rows = max(16, CHUNK_ENTRIES // max(1, batch * heads * n_keys))
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


def chunk_forward(qc, key, value, real, biases, spec: ChunkSpec, threshold=None):
    """One chunk, as the plain path computes it: ``(out [B, H, c, D], scores, kept, probs)``.

    ``threshold [B, H, c]`` (backward): each row's lowest kept score, from the forward, where it
    alone tells the kept set (``kept = real & (scores >= threshold)``, see :func:`row_threshold`):
    the same set without a second ``topk``.
    """
    scores = torch.matmul(qc, key.transpose(-2, -1)) * spec.scaling  # [B, H, c, L_k]
    if spec.softcap is not None:
        scores = torch.tanh(scores / spec.softcap) * spec.softcap
    for bias in biases:
        if bias is not None:
            scores = scores + bias
    if threshold is None:
        kept = topk_keep_mask(scores, spec.sparsity, real, "row", count_padding=spec.count_padding, keep=spec.keep,
                              k_max=spec.k_max)
    else:
        kept = scores.detach() >= threshold[..., None]
        kept = kept if real is None else kept & real
    probs = masked_softmax(scores, kept)
    dropped = torch.nn.functional.dropout(probs, p=spec.dropout, training=spec.training)
    return torch.matmul(dropped.to(value.dtype), value), scores, kept, probs


class _ChunkedTopk(torch.autograd.Function):
    """Chunked top-k attention with recomputation in backward; ``recorder`` sees each chunk in forward."""

    @staticmethod
    def forward(ctx, query, key, value, key_mask, position_bias, mask_bias, spec, recorder):
        device = query.device
        ctx.spec = spec
        ctx.autocast = _autocast_state(device.type)
        ctx.rng = _rng_state(device) if spec.dropout > 0 and spec.training else None
        outs, thresholds, exact = [], [], []
        with torch.no_grad():
            for q0 in range(0, query.shape[-2], spec.rows):
                q1 = min(q0 + spec.rows, query.shape[-2])
                real = chunk_mask(key_mask, spec, q0, q1, key.shape[-2], device)
                biases = (_rows(position_bias, q0, q1), _rows(mask_bias, q0, q1))
                out, scores, kept, probs = chunk_forward(query[..., q0:q1, :], key, value, real, biases, spec)
                if recorder is not None:
                    recorder(q0, scores, real, kept, probs)
                threshold, ok = row_threshold(scores, real, kept)
                outs.append(out)
                thresholds.append(threshold)
                exact.append(ok)
        ctx.exact = exact  # per chunk: the threshold alone gives the kept set
        ctx.save_for_backward(query, key, value, key_mask, position_bias, mask_bias, torch.cat(thresholds, dim=-1))
        return torch.cat(outs, dim=-2)

    @staticmethod
    def backward(ctx, grad_out):
        query, key, value, key_mask, position_bias, mask_bias, thresholds = ctx.saved_tensors
        spec, device = ctx.spec, query.device
        want_q, want_k, want_v, _, want_pb, _ = ctx.needs_input_grad[:6]
        k = key.detach().requires_grad_(want_k)
        v = value.detach().requires_grad_(want_v)
        grad_q = torch.zeros_like(query) if want_q else None
        grad_k = torch.zeros_like(key, dtype=_acc(key.dtype)) if want_k else None  # summed over chunks
        grad_v = torch.zeros_like(value, dtype=_acc(value.dtype)) if want_v else None
        grad_pb = torch.zeros_like(position_bias) if want_pb else None
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], enabled=ctx.rng is not None,
                                   device_type=device.type):
            if ctx.rng is not None:
                _set_rng_state(device, ctx.rng)
            for index, q0 in enumerate(range(0, query.shape[-2], spec.rows)):
                q1 = min(q0 + spec.rows, query.shape[-2])
                threshold = thresholds[..., q0:q1] if ctx.exact[index] else None
                qc = query[..., q0:q1, :].detach().requires_grad_(want_q)
                pb = _rows(position_bias, q0, q1)
                pb = pb.detach().requires_grad_(want_pb) if pb is not None else None
                real = chunk_mask(key_mask, spec, q0, q1, key.shape[-2], device)
                with torch.enable_grad(), torch.autocast(device.type, **ctx.autocast):
                    out, *_ = chunk_forward(qc, k, v, real, (pb, _rows(mask_bias, q0, q1)), spec, threshold)
                inputs = [t for t, want in ((qc, want_q), (k, want_k), (v, want_v), (pb, want_pb)) if want]
                grads = iter(torch.autograd.grad(out, inputs, grad_out[..., q0:q1, :]))
                if want_q:
                    grad_q[..., q0:q1, :] = next(grads)
                if want_k:
                    grad_k += next(grads)
                if want_v:
                    grad_v += next(grads)
                if want_pb:
                    g = next(grads)
                    if position_bias.shape[-2] == 1:
                        grad_pb += g.sum(dim=-2, keepdim=True)
                    else:
                        grad_pb[..., q0:q1, :] = g
        grad_k = grad_k.to(key.dtype) if grad_k is not None else None
        grad_v = grad_v.to(value.dtype) if grad_v is not None else None
        return grad_q, grad_k, grad_v, None, grad_pb, None, None, None


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


__all__ = ["AUTO_LENGTH", "CHUNK_ENTRIES", "ChunkSpec", "chunk_rows", "chunked_attention"]
