"""Attention probabilities computed beside the fused kernel, never instead of it.

The model's output must not change when we watch it, so the forward pass keeps torch's fused
scaled-dot-product attention. Probabilities come from the same q, k (and mask) the kernel saw:

* whole matrix: ``softmax(q k^T * scale + mask)``, head by head so peak memory is one head's N x N;
* a block of keys only (e.g. image queries -> text keys): ``exp(q_i k_j^T * scale + mask_ij - lse_i)``
  where ``lse`` is the per-query log-sum-exp over *all* keys. On CPU torch's flash kernel returns
  ``lse`` together with its output, so the slice costs one small matmul and no N x N matrix.
  Elsewhere ``lse`` is computed in query chunks (N x chunk memory).
* some query rows only (``record(..., queries=...)``): every function takes ``rows``, a
  ``(start, stop)`` span or an index tensor of queries, and computes those rows alone (rows x N
  memory and time), never the whole matrix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# (shape, dtype, has_mask, is_causal) -> whether the CPU flash kernel is bitwise equal to F.sdpa here.
_FLASH_MATCHES_SDPA: dict[tuple, bool] = {}
_LSE_QUERY_CHUNK = 1024


def _mask_bias(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros((), dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))
    return mask.to(dtype)


def _logits(q: torch.Tensor, k: torch.Tensor, scale: float, bias: torch.Tensor | None) -> torch.Tensor:
    # the matmul's result is new: scaled (and biased) in place, so a (queries x keys) block costs one
    # buffer, not three (the same values bit for bit as out-of-place ops)
    logits = (q @ k.transpose(-1, -2)).mul_(scale)
    if bias is None:
        return logits
    if torch.broadcast_shapes(logits.shape, bias.shape) == logits.shape:
        return logits.add_(bias)
    return logits + bias  # a mask wider than the logits (broadcast up): a new tensor


def default_scale(q: torch.Tensor, scale: float | None) -> float:
    return q.shape[-1] ** -0.5 if scale is None else scale


def full_probs(q, k, *, scale=None, attn_mask=None, is_causal=False, rows=None) -> torch.Tensor:
    """softmax(q k^T * scale + mask) for (batch, head, query, dim) inputs, one head at a time;
    with ``rows`` (a span or index tensor of queries) only those rows, over every key."""
    scale = default_scale(q, scale)
    picked = as_rows(rows)
    bias = _mask_bias(_causal_or(attn_mask, is_causal, q, k), q.dtype)
    out = torch.empty(q.shape[:-2] + (n_rows(picked, q.shape[-2]), k.shape[-2]), dtype=q.dtype, device=q.device)
    q, bias = q[..., picked, :], _query_rows(bias, picked)
    for h in range(q.shape[1]):
        # the mask broadcasts from the right like sdpa's: its head axis, if any, is the third from the end
        head_bias = None if bias is None else (bias if bias.dim() < 3 or bias.shape[-3] == 1 else bias[..., h : h + 1, :, :])
        logits = _logits(q[:, h : h + 1], k[:, h : h + 1], scale, head_bias)
        out[:, h : h + 1] = _masked_rows_zero(torch.softmax(logits, dim=-1), torch.isneginf(logits).all(-1, keepdim=True))
    return out


def _masked_rows_zero(probs: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """A query whose every key is masked (HunyuanVideo 1.5's padding tokens) attends nowhere: sdpa
    returns a zero output for it (torch's safe softmax), so its probability row is zero, not NaN."""
    return probs.masked_fill_(masked, 0.0)  # in place, and no host sync to ask whether any row is masked


def _causal_or(attn_mask, is_causal, q, k):
    if not is_causal:
        return attn_mask
    return torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()


def chunked_lse(q, k, *, scale=None, attn_mask=None, is_causal=False, rows=None) -> torch.Tensor:
    """Per-query log-sum-exp of the attention logits over all keys, in query chunks; with ``rows``
    (a span or index tensor of queries) for those queries only."""
    scale = default_scale(q, scale)
    bias = _mask_bias(_causal_or(attn_mask, is_causal, q, k), q.dtype)
    if rows is not None:  # the chosen queries and their mask rows, then chunked as for all of them
        picked = as_rows(rows)
        q, bias = q[..., picked, :], _query_rows(bias, picked)
    chunks = []
    for start in range(0, q.shape[-2], _LSE_QUERY_CHUNK):
        stop = start + _LSE_QUERY_CHUNK
        chunk_bias = None if bias is None else (bias[..., start:stop, :] if bias.dim() >= 2 and bias.shape[-2] > 1 else bias)
        chunks.append(torch.logsumexp(_logits(q[..., start:stop, :], k, scale, chunk_bias), dim=-1))
    return torch.cat(chunks, dim=-1)


def attention_with_lse(q, k, v, *, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, rows=None, **extra):
    """``(F.scaled_dot_product_attention(...), lse)`` with the output bit-identical to the plain call;
    with ``rows`` (a span or index tensor of queries) ``lse`` holds those queries only.

    On CPU the flash kernel gives both in one pass; the first time a shape is seen we check that
    its output equals ``F.scaled_dot_product_attention`` bit for bit (the dispatcher may pick
    another kernel) and otherwise fall back to the plain call plus a chunked ``lse`` (of ``rows``
    alone, so a few queries cost a few rows, not N x N).
    """
    plain = lambda: F.scaled_dot_product_attention(  # noqa: E731
        q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **extra
    )
    # the CPU flash op takes an additive mask of q's dtype only; a boolean mask (HunyuanVideo 1.5) goes the plain way
    float_mask = attn_mask is None or attn_mask.dtype == q.dtype
    if q.device.type == "cpu" and dropout_p == 0.0 and not extra and q.shape[1] == k.shape[1] and float_mask and _flash_allowed():
        # the kernels allowed now (torch.nn.attention.sdpa_kernel, e.g. a diffusers _native_* backend) are part
        # of the signature: the same shapes may be served by another kernel under another choice
        signature = (tuple(q.shape), tuple(k.shape), q.dtype, None if attn_mask is None else tuple(attn_mask.shape),
                     is_causal, _allowed_kernels())
        if _FLASH_MATCHES_SDPA.get(signature, True):
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                q, k, v, 0.0, is_causal, attn_mask=attn_mask, scale=scale
            )
            if signature not in _FLASH_MATCHES_SDPA:
                _FLASH_MATCHES_SDPA[signature] = torch.equal(out, plain())
                if not _FLASH_MATCHES_SDPA[signature]:
                    return plain(), chunked_lse(q, k, scale=scale, attn_mask=attn_mask, is_causal=is_causal, rows=rows)
            return out, lse[..., as_rows(rows)].to(q.dtype)
    return plain(), chunked_lse(q, k, scale=scale, attn_mask=attn_mask, is_causal=is_causal, rows=rows)


def _allowed_kernels() -> tuple[bool, ...]:
    cuda = torch.backends.cuda
    return (cuda.flash_sdp_enabled(), cuda.math_sdp_enabled(), cuda.mem_efficient_sdp_enabled(), cuda.cudnn_sdp_enabled())


def _flash_allowed() -> bool:
    return torch.backends.cuda.flash_sdp_enabled()


def block_probs(q, k, lse, q_rows, k_span, *, scale=None, attn_mask=None, is_causal=False) -> torch.Tensor:
    """Exact probabilities of the queries ``q_rows`` (a span or index tensor) over keys ``k_span``
    from ``lse``, the log-sum-exp of those same queries over all keys."""
    scale = default_scale(q, scale)
    qs, ks = as_rows(q_rows), slice(*k_span)
    bias = _query_rows(_mask_bias(_causal_or(attn_mask, is_causal, q, k), q.dtype), qs)
    if bias is not None and bias.dim() >= 2:
        bias = bias[..., ks]
    logits = _logits(q[..., qs, :], k[..., ks, :], scale, bias)
    lse = lse[..., None]
    return _masked_rows_zero(logits.sub_(lse).exp_(), torch.isneginf(lse))  # in place: logits is ours


def as_rows(rows) -> slice | torch.Tensor:
    """Query rows as an indexer: None (all), a ``(start, stop)`` span, or an index tensor."""
    if rows is None:
        return slice(None)
    return rows if isinstance(rows, (slice, torch.Tensor)) else slice(*rows)


def n_rows(rows: slice | torch.Tensor, length: int) -> int:
    return len(range(length)[rows]) if isinstance(rows, slice) else rows.numel()


def _query_rows(bias: torch.Tensor | None, rows: slice | torch.Tensor) -> torch.Tensor | None:
    """The rows of a mask (broadcast like sdpa's, from the right) that the chosen queries read."""
    if bias is None or bias.dim() < 2 or bias.shape[-2] == 1:
        return bias
    return bias[..., rows, :]
