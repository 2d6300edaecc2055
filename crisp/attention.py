"""Top-k attention probabilities: the pruning rule of Crisp Attention.

Gandhi & Gandhi (2025), *Crisp Attention: Regularizing Transformers via Structured Sparsity*,
arXiv 2508.06016, Section 3.2: compute the raw scores ``S = QK^T / sqrt(d_k)``, find the
``s``-th percentile of the scores of each head, set every score below it to ``-inf`` and take the
softmax of what is left.  The paper does not say whether the percentile is taken per query row
or over the whole head, nor how padding enters; both readings are implemented here:

``granularity="row"``
    each query row with ``n`` real keys keeps exactly ``k = max(1, n - floor(s*n + 1e-6))`` keys,
    the ``k`` highest-scoring ones (ties broken by ``torch.topk``).
``keep=k`` (row granularity only)
    every query row keeps its ``min(k, n)`` highest-scoring real keys: a fixed number of kept keys,
    as in the top-k attention literature, instead of a fraction.
``granularity="head"``
    the paper's text read literally: within each (batch, head) the ``floor(s*N + 1e-6)`` lowest
    of the ``N`` scores whose query and key are both real are pruned, except that every real query
    row always keeps its own highest score (so no row is left empty).

Masks: a ``key_mask`` with the same number of dimensions as ``scores`` broadcasts to it (e.g.
``[B, 1, 1, L_k]`` or transformers' ``[B, 1, L_q, L_k]``); a 2-D mask given with batched scores is
always the tokenizer's ``[B, L_k]`` (never read as ``[L_q, L_k]``, even when ``B == L_k``); a 1-D
mask is ``[L_k]``. Anything else is refused.

Under ``torch.compile`` the rule has no data-dependent Python branch: the row rule takes ``topk``
to the largest k a row of that width can keep (read from the shape, not from the data), the head
rule sorts every entry (ties may then break differently), and ``masked_softmax`` always takes its
guarded path.

Padding keys (``key_mask`` False) get probability exactly 0 and never count, unless
``count_padding=True`` (the paper's pad-to-512 setup, see ``crisp.CrispConfig.paper_padding``): then
the top-k choice is made over all keys, padding included, and padding keys are zeroed afterwards;
each real row still keeps its highest real key.

The result is exact: the probabilities are those of ``softmax`` over the kept scores, exactly 0
elsewhere, and the gradient is 0 at every pruned or padded entry.  Computation runs in float32
(or float64) and is cast back to the dtype of ``scores``.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch

GRANULARITIES = ("row", "head")
_EPS = 1e-6  # guards floor(s*n) against s*n landing just below an integer, e.g. 0.8*5


def check_sparsity(sparsity) -> float:
    """Return ``sparsity`` as a float in [0, 1), or raise ``ValueError`` naming the bad value."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real):
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r} ({type(sparsity).__name__})")
    value = float(sparsity)
    if math.isnan(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    return value


def check_keep(keep) -> int | None:
    """Return ``keep`` (kept keys per row) as a positive int, or None; raise ``ValueError`` otherwise."""
    if keep is None:
        return None
    if isinstance(keep, bool) or not isinstance(keep, numbers.Integral) or keep < 1:
        raise ValueError(f"keep must be a positive integer (keys kept per query row) or None, got {keep!r}")
    return int(keep)


def check_granularity(granularity) -> str:
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    return granularity


def kept_per_row(n_real: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keys kept in a row with ``n_real`` real keys: ``max(1, n - floor(s*n + 1e-6))``, 0 if n == 0."""
    pruned = torch.floor(n_real.to(torch.float64) * sparsity + _EPS).to(n_real.dtype)
    return torch.where(n_real > 0, (n_real - pruned).clamp_min(1), torch.zeros_like(n_real))


def topk_keep_mask(
    scores: torch.Tensor,
    sparsity: float,
    key_mask: torch.Tensor | None = None,
    granularity: str = "row",
    query_mask: torch.Tensor | None = None,
    count_padding: bool = False,
    keep: int | None = None,
    *,
    k_max: int | None = None,
) -> torch.Tensor:
    """Boolean mask of the entries that ``topk_softmax`` keeps (same shape as ``scores``).

    Arguments are those of :func:`topk_softmax`.  Rows of padded queries keep every real key.
    ``k_max`` (row granularity): how many keys ``torch.topk`` ranks per row, at least the largest
    ``k`` of any row here; its order among tied scores depends on it, so a caller that splits
    one call's rows (:mod:`crisp.longcontext`) passes the whole call's value to break ties alike.
    """
    return _keep_mask(scores, sparsity, key_mask, granularity, query_mask, count_padding, keep, k_max=k_max).keep


class _Kept(NamedTuple):
    """What :func:`_keep_mask` found, beyond the mask, that later steps of the same call reuse (the values
    are those the steps would compute themselves; reusing them only saves passes over ``[..., L_q, L_k]``)."""

    keep: torch.Tensor  # [..., Lq, Lk] bool, what topk_keep_mask returns
    ranked: torch.Tensor | None  # row rule over real keys only: scores.detach() with -inf at every non-real key
    finite: bool | None  # True: every row keeps an entry and its largest kept score (= its largest real score) is
    # finite, so masked_softmax needs no guard (for keep, and for real when ranked is given); None: not known


def _keep_mask(scores, sparsity, key_mask=None, granularity="row", query_mask=None, count_padding=False, keep=None,
               *, k_max=None) -> _Kept:
    """:func:`topk_keep_mask`, returning a :class:`_Kept`."""
    # A 0-d tensor ratio (checked by its owner) is how adaptive ratios reach a torch.compile graph.
    # Under torch.compile a ratio may arrive as a symbolic float: it was checked by its CrispConfig.
    held = isinstance(sparsity, torch.Tensor)
    sparsity = sparsity if held or torch.compiler.is_compiling() else check_sparsity(sparsity)
    check_granularity(granularity)
    fixed = check_keep(keep)
    if fixed is not None and (held or sparsity != 0.0 or granularity != "row"):
        raise ValueError("keep=k fixes the kept keys per query row: give it with sparsity=0 and granularity='row'")
    shape = scores.shape
    real = as_key_mask(key_mask, shape, scores.device)  # [..., Lq, Lk] True = real key
    if not held and sparsity == 0.0 and fixed is None:
        return _Kept(real, None, None)
    ranked = finite = None
    with torch.no_grad():
        candidates = torch.ones_like(real) if count_padding else real
        if granularity == "row":
            keep, ranked, finite = _row_topk(scores, candidates, sparsity, fixed, k_max)
        else:
            qmask = _query_mask(query_mask, real, shape)
            keep = _head_prune(scores, candidates & qmask[..., :, None], sparsity)
            keep = keep | ~qmask[..., :, None]  # padded query rows: dense over real keys
        keep = keep & real
        if count_padding or granularity == "head":
            keep = keep | _row_argmax(scores, real)  # every row keeps its best real key
            ranked = finite = None  # ranked over padding too; kept rows may differ from the ranking's
    return _Kept(keep, ranked, finite)


def topk_softmax(
    scores: torch.Tensor,
    sparsity: float,
    key_mask: torch.Tensor | None = None,
    granularity: str = "row",
    *,
    query_mask: torch.Tensor | None = None,
    count_padding: bool = False,
    keep: int | None = None,
) -> torch.Tensor:
    """Softmax over the top-scoring keys only.

    Parameters
    ----------
    scores : Tensor ``[..., L_q, L_k]``
        Raw attention scores (already scaled), any floating dtype.
    sparsity : float in [0, 1)
        Fraction of real entries to prune. 0 gives exactly the ordinary masked softmax.
    key_mask : bool Tensor, optional
        True for real keys, False for padding: of ``scores``' number of dimensions and broadcastable
        to it (``[B, 1, 1, L_k]``, ``[B, 1, L_q, L_k]``), or the tokenizer's 2-D ``[B, L_k]`` (bool,
        or integer 0/1), or 1-D ``[L_k]``. See the module docstring.
    granularity : ``"row"`` or ``"head"``
        Where the top-k is taken; see the module docstring.
    query_mask : bool Tensor broadcastable to ``scores.shape[:-1]``, optional
        Real queries, used by ``"head"``. By default a query is real when, in self-attention
        (``L_q == L_k``), its own position is a real key.
    count_padding : bool
        Let padding keys compete in the top-k (the paper's pad-to-max-length setup).
    keep : int, optional
        Keep exactly ``min(keep, n)`` keys in each row of ``n`` real keys (needs ``sparsity=0``,
        ``granularity="row"``).

    Returns
    -------
    Tensor of the shape and dtype of ``scores``: probabilities summing to 1 over the kept keys of
    each row with at least one real key of finite score, exactly 0 elsewhere. Rows with no real
    key are all 0.
    """
    kept = _keep_mask(scores, sparsity, key_mask, granularity, query_mask, count_padding, keep)
    return _kept_softmax(scores, kept.keep, kept.finite, kept.ranked)


def key_mask_of(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Bool mask (True = real key) from HF's additive float mask (0 / ``finfo.min``), or None."""
    if attention_mask is None:
        return None
    if attention_mask.dtype == torch.bool:
        return attention_mask
    return attention_mask > torch.finfo(attention_mask.dtype).min / 2


def masked_softmax(scores: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Softmax over the entries where ``keep`` is True; exactly 0 (value and gradient) elsewhere.

    Rows where nothing finite is kept come out as all zeros instead of NaN.
    """
    return _masked_softmax(scores, keep)


def _masked_softmax(scores, keep, finite: bool | None = None, work=None) -> torch.Tensor:
    """:func:`masked_softmax`; ``finite=True`` says every row's largest kept score is finite (a
    :class:`_Kept` knows), which skips the check. ``work`` is ``scores`` already masked with -inf
    outside ``keep``, in ``scores``' dtype (a :class:`_Kept`'s ``ranked``): it skips the masking, and
    the result then carries no gradient (for statistics, under ``torch.no_grad``)."""
    if work is None:
        work = scores if scores.dtype in (torch.float32, torch.float64) else scores.float()
        work = work.masked_fill(~keep, -math.inf)  # [..., Lq, Lk]; autograd keeps only the bool mask
    elif work.dtype not in (torch.float32, torch.float64):
        work = work.float()
    # Under torch.compile always take the guarded path below (same values, no data-dependent branch).
    if not torch.compiler.is_compiling() and (finite or torch.isfinite(work.detach().amax(dim=-1)).all()):
        return torch.softmax(work, dim=-1).to(scores.dtype)
    # Rare rows: +inf scores (float16 overflow) become the largest finite value and share the row's
    # mass instead of giving inf - inf = NaN; rows with nothing finite kept come out as zeros.
    work = work.clamp(max=torch.finfo(work.dtype).max)
    dead = work.amax(dim=-1, keepdim=True) == -math.inf  # [..., Lq, 1]
    probs = torch.softmax(work.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)
    return probs.to(scores.dtype)


class _KeptSoftmax(torch.autograd.Function):
    """``softmax(scores.masked_fill(~keep, -inf))`` from a masked copy ``work`` made outside the graph; backward
    is the composite's own, step by step (softmax's ``_softmax_backward_data``, then 0 at every entry not kept),
    in one buffer. Saves what the composite saves (the probabilities and a bool mask)."""

    @staticmethod
    def forward(ctx, scores, keep, work):
        probs = torch.softmax(work, dim=-1)  # work: float32/float64, -inf outside keep
        ctx.save_for_backward(probs, keep)
        ctx.scores_dtype = scores.dtype
        return probs.to(scores.dtype)

    @staticmethod
    def backward(ctx, grad):
        probs, keep = ctx.saved_tensors
        grad = torch._softmax_backward_data(grad.to(probs.dtype), probs, -1, probs.dtype)
        return grad.masked_fill_(~keep, 0.0).to(ctx.scores_dtype), None, None


def _kept_softmax(scores, keep, finite: bool | None = None, buffer=None) -> torch.Tensor:
    """:func:`masked_softmax` (same values, same gradients) in fewer passes over ``[..., L_q, L_k]``.

    ``finite`` as for :func:`_masked_softmax`; ``buffer`` is ``scores.detach()`` with -inf at least
    outside ``keep`` (a :class:`_Kept`'s ``ranked``), which this call may overwrite."""
    if torch.compiler.is_compiling():
        return _masked_softmax(scores, keep, finite)
    half = scores.dtype not in (torch.float32, torch.float64)
    if buffer is None:
        work = (scores.detach().float() if half else scores.detach()).masked_fill(~keep, -math.inf)
    else:
        work = (buffer.float() if half else buffer).masked_fill_(~keep, -math.inf)
    if not (finite or torch.isfinite(work.amax(dim=-1)).all()):
        return _masked_softmax(scores, keep)  # rows with nothing finite kept, or +inf: the guarded composite path
    return _KeptSoftmax.apply(scores, keep, work)


# --- helpers -------------------------------------------------------------------------------------


def as_key_mask(key_mask, shape, device) -> torch.Tensor:
    """``key_mask`` expanded to ``shape`` (``[..., L_q, L_k]``), read as the module docstring says."""
    if key_mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    if not isinstance(key_mask, torch.Tensor):
        raise ValueError(f"key_mask must be a bool tensor or None, got {type(key_mask).__name__}")
    ndim = len(shape)
    if key_mask.dtype != torch.bool:
        if key_mask.ndim == 2 and not key_mask.dtype.is_floating_point and not key_mask.dtype.is_complex:
            key_mask = key_mask != 0  # the tokenizer's integer [B, L_k] mask (1 = real token)
        else:
            raise ValueError(f"key_mask must be a bool tensor (True = real key), got dtype {key_mask.dtype}")
    if key_mask.ndim == 2 and ndim >= 3:  # the tokenizer's [B, L_k]: batch first, keys last
        if key_mask.shape[-1] != shape[-1] or key_mask.shape[0] not in (1, shape[0]):
            raise ValueError(
                f"a 2-D key_mask is read as [batch, keys]; shape {tuple(key_mask.shape)} does not fit scores "
                f"of shape {tuple(shape)} (batch {shape[0]}, keys {shape[-1]})"
            )
        key_mask = key_mask.reshape(key_mask.shape[0], *([1] * (ndim - 2)), shape[-1])
    elif key_mask.ndim == 1:
        key_mask = key_mask.reshape(*([1] * (ndim - 1)), -1)
    elif key_mask.ndim != ndim:
        raise ValueError(
            f"key_mask of shape {tuple(key_mask.shape)} is ambiguous for scores of shape {tuple(shape)}: give "
            f"it with {ndim} dimensions (e.g. [B, 1, 1, L_k] or [B, 1, L_q, L_k]), as [B, L_k], or as [L_k]"
        )
    try:
        return key_mask.expand(shape)
    except RuntimeError as err:
        raise ValueError(
            f"key_mask of shape {tuple(key_mask.shape)} does not broadcast to scores of shape {tuple(shape)}"
        ) from err


def _query_mask(query_mask, real, shape) -> torch.Tensor:
    if query_mask is not None:
        return query_mask.to(torch.bool).expand(shape[:-1])
    if shape[-1] == shape[-2]:
        return real.diagonal(dim1=-2, dim2=-1)  # [..., L]: query i is real iff key i is real
    return torch.ones(shape[:-1], dtype=torch.bool, device=real.device)


def _compact(mask: torch.Tensor) -> torch.Tensor:
    """``mask`` without its broadcasting: a view of size 1 along the leading (batch, head) axes it was
    expanded along (stride 0), so counts and reductions over it cost a fraction of the full ``[..., Lq, Lk]``."""
    index = tuple(slice(0, 1) if stride == 0 and size > 1 else slice(None)
                  for size, stride in zip(mask.shape[:-2], mask.stride()[:-2]))
    return mask[index] if index else mask


def _row_topk(scores, candidates, sparsity, fixed=None, at_least=None):
    """Keep the k best candidate keys of each row, k from the number of candidates in the row
    (or ``min(fixed, n)`` when a fixed count is given). Returns ``(keep, ranked, finite)`` (see :class:`_Kept`;
    ``ranked`` has -inf at every non-candidate)."""
    compiling = torch.compiler.is_compiling()
    few = candidates if compiling else _compact(candidates)  # the same counts from the unexpanded mask
    n = torch.count_nonzero(few, dim=-1)  # [..., Lq] (bool.sum() would copy the mask to int64 first)
    k = kept_per_row(n, sparsity) if fixed is None else n.clamp(max=fixed)
    ranked = scores.detach().masked_fill(~few, -math.inf)  # [..., Lq, Lk]
    if compiling:  # no .item(): the largest k a row of this width can have
        k_max = _k_bound(scores.shape[-1], sparsity, fixed)
    else:
        k_max = int(k.max()) if k.numel() else 0
        if at_least is not None and k_max:
            k_max = min(max(k_max, at_least), scores.shape[-1])
    k = k.expand(candidates.shape[:-1])
    keep = torch.zeros_like(candidates)
    if k_max == 0:
        return keep, ranked, False
    # NaN-free ordering: -inf scores sort last among candidates, non-candidates are -inf too but
    # rank < k <= n never reaches them unless candidates themselves score -inf (ties, arbitrary).
    top = ranked.topk(k_max, dim=-1, sorted=True)  # [..., Lq, k_max]
    rank = torch.arange(k_max, device=scores.device)
    keep.scatter_(-1, top.indices, rank < k[..., None])
    # Each row's best candidate is its first value (topk puts NaN first); it is kept when k >= 1.
    finite = None if compiling else bool((k > 0).all()) and bool(torch.isfinite(top.values[..., 0]).all())
    return keep & candidates, ranked, finite


def _k_bound(width, sparsity, fixed):
    """Largest ``k`` any row of ``width`` keys can keep (``n - floor(s*n)`` grows with ``n``); a
    ratio held in a tensor (adaptive under torch.compile) may be anything, so then ``width``."""
    if fixed is not None:
        return min(fixed, width)
    if isinstance(sparsity, torch.Tensor):
        return width
    return width - math.floor(width * sparsity)  # >= the true bound (no eps), >= 1 for s < 1; no max(): no guard


def _head_prune(scores, valid, sparsity) -> torch.Tensor:
    """Prune the floor(s*N) lowest valid entries of each (…, head) matrix; returns what is kept."""
    lead = valid.shape[:-2]
    flat_valid = valid.reshape(*lead, -1)  # [..., Lq*Lk]
    n = flat_valid.sum(dim=-1)  # [...]
    n_prune = torch.floor(n.to(torch.float64) * sparsity + _EPS).to(n.dtype)
    if torch.compiler.is_compiling():  # static shapes: rank every entry, no .item()
        flat = scores.detach().reshape(*lead, -1).masked_fill(~flat_valid, math.inf)
        idx = flat.argsort(dim=-1, stable=True)  # lowest first
        rank = torch.arange(flat.shape[-1], device=scores.device)
        prune = torch.zeros_like(flat_valid).scatter_(-1, idx, rank < n_prune[..., None])
        return (flat_valid & ~prune).reshape(valid.shape)
    m_max = int(n_prune.max()) if n_prune.numel() else 0
    if m_max == 0:
        return valid
    flat = scores.detach().reshape(*lead, -1).masked_fill(~flat_valid, math.inf)
    idx = flat.topk(m_max, dim=-1, largest=False, sorted=True).indices  # lowest first
    prune = torch.zeros_like(flat_valid)
    prune.scatter_(-1, idx, torch.arange(m_max, device=scores.device) < n_prune[..., None])
    return (flat_valid & ~prune).reshape(valid.shape)


def _row_argmax(scores, real) -> torch.Tensor:
    """One-hot mask of each row's highest-scoring real key (rows with no real key: all False)."""
    ranked = scores.detach().masked_fill(~real, -math.inf)
    best = ranked.argmax(dim=-1, keepdim=True)
    onehot = torch.zeros_like(real).scatter_(-1, best, True)
    return onehot & real  # argmax of an all -inf row may land on a padding key: never keep that
