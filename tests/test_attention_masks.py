"""Attention probabilities beside the fused kernel with a mask, and the chunked log-sum-exp over
more queries than one chunk (issue 23): small widths so each case runs in milliseconds."""

import pytest
import torch

from workbench.attention import kernels


def _qk(queries, keys, heads=2, width=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, heads, queries, width, generator=g, dtype=torch.float64),
            torch.randn(1, heads, keys, width, generator=g, dtype=torch.float64))


def _reference_logits(q, k, mask):
    logits = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    return logits.masked_fill(~mask, float("-inf"))


def _ragged_mask(queries, keys):
    """Every query sees a different set of keys (at least one), so a mask read for the wrong
    query rows gives other numbers."""
    mask = torch.zeros(queries, keys, dtype=torch.bool)
    for i in range(queries):
        mask[i, : 1 + (i * 7) % keys] = True
    return mask


@pytest.mark.parametrize("shape", ["query, key", "batch, 1, query, key", "batch, head, query, key"])
def test_full_probs_apply_the_mask(shape):
    q, k = _qk(6, 5)
    mask = _ragged_mask(6, 5)
    if shape == "batch, 1, query, key":
        mask = mask[None, None]
    elif shape == "batch, head, query, key":  # the second head sees the keys in reverse
        mask = torch.stack([mask, mask.flip(-1)])[None]
    # (a 2-d mask was once sliced along its key axis as if it had a head axis: NaN rows)
    probs = kernels.full_probs(q, k, attn_mask=mask)
    torch.testing.assert_close(probs, torch.softmax(_reference_logits(q, k, mask), -1))
    assert probs.masked_select(~mask).abs().max() == 0


def test_block_probs_with_a_mask_are_the_matching_slice_of_the_full_matrix():
    q, k = _qk(6, 5)
    mask = _ragged_mask(6, 5)
    lse = kernels.chunked_lse(q, k, attn_mask=mask)
    block = kernels.block_probs(q, k, lse[..., 2:6], (2, 6), (0, 3), attn_mask=mask)
    torch.testing.assert_close(block, torch.softmax(_reference_logits(q, k, mask), -1)[..., 2:6, 0:3])


@pytest.mark.parametrize("masked", [False, True])
def test_log_sum_exp_over_several_query_chunks(masked):
    queries = 2 * kernels._LSE_QUERY_CHUNK + 37  # two full chunks and a short last one
    q, k = _qk(queries, 9)
    mask = _ragged_mask(queries, 9) if masked else None
    lse = kernels.chunked_lse(q, k, attn_mask=mask)
    logits = _reference_logits(q, k, mask if masked else torch.ones(queries, 9, dtype=torch.bool))
    torch.testing.assert_close(lse, torch.logsumexp(logits, -1))
