"""Attention probabilities at the token counts real models reach (issue 22, item 6).

SD3 at 1024 px attends over 4096 image + 333 text tokens: more queries than one chunk of the
log-sum-exp (``kernels._LSE_QUERY_CHUNK``), with the padded text keys masked out the way Qwen-Image
(a boolean mask on the joint axis) and Sana / PixArt (an additive -10000 bias on the cross-attention
keys) do it. Each case is checked against the full softmax computed in float64; few heads and a
tiny head width keep each test under two seconds. ``tests/test_attention_masks.py`` checks the
same kernels on small, ragged masks; here the counts and the mask shapes are the models' own, and
two tests go through the recorder (``capture/attention.py``) rather than the kernels alone.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import workbench as wb
from workbench.attention import kernels
from workbench.models.tiny import tiny_denoiser

pytestmark = pytest.mark.usefixtures("one_thread")

GRID, TEXT = 64, 333  # SD3 / Qwen-Image at 1024 px: a 64 x 64 grid of 2x2 patches
IMAGE = GRID * GRID
PROMPT = 233  # the second sample's prompt; its last TEXT - PROMPT text keys are padding


def _padded_text(batch=2) -> torch.Tensor:
    """(batch, TEXT): 1 for a prompt token, 0 for padding (the first sample fills every position)."""
    keep = torch.ones(batch, TEXT, dtype=torch.long)
    keep[1:, PROMPT:] = 0
    return keep


def _reference_rows(q, k, bias, rows) -> tuple[torch.Tensor, torch.Tensor]:
    """The full softmax's rows ``rows`` over every key, and their log-sum-exp, in float64. ``bias`` is
    (batch, key), the same on every query. Every 7th query is enough to reach every chunk (and,
    7 being prime to the chunk size, every offset within one) at a seventh of the reference's cost."""
    logits = q[..., rows, :].double() @ k.double().transpose(-1, -2) * q.shape[-1] ** -0.5
    logits = logits + bias[:, None, None, :].double()
    return torch.softmax(logits, dim=-1), torch.logsumexp(logits, dim=-1)


def _sampled(span: slice, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Of the sampled ``rows``, those inside ``span``: their positions among ``rows``, and in the span."""
    inside = ((rows >= span.start) & (rows < span.stop)).nonzero().flatten()
    return inside, rows[inside] - span.start


ROWS = torch.arange(0, IMAGE + TEXT, 7)


def _worst(a, b) -> float:
    return float((a.double() - b).abs().max())


@pytest.mark.parametrize("order, mask", [("image|text", "additive"), ("text|image", "boolean")])  # SD3; FLUX / Qwen-Image
def test_blocks_from_the_chunked_log_sum_exp_at_4096_plus_333_tokens(order, mask):
    """Models run in float32: so do the kernels here; the reference is float64."""
    g = torch.Generator().manual_seed(0)
    n = IMAGE + TEXT
    q, k = (torch.randn(2, 1, n, 4, generator=g) for _ in range(2))
    spans = {"image": slice(0, IMAGE), "text": slice(IMAGE, n)} if order == "image|text" else \
        {"text": slice(0, TEXT), "image": slice(TEXT, n)}
    keep = torch.ones(2, n, dtype=torch.bool)
    keep[:, spans["text"]] = _padded_text().bool()
    bias = torch.zeros(2, n).masked_fill(~keep, -10000.0 if mask == "additive" else float("-inf"))
    attn_mask = keep[:, None, None, :] if mask == "boolean" else bias[:, None, None, :]  # (batch, 1, 1, key)
    assert n > 4 * kernels._LSE_QUERY_CHUNK  # five chunks, the last one short

    lse = kernels.chunked_lse(q, k, attn_mask=attn_mask)
    reference, reference_lse = _reference_rows(q, k, bias, ROWS)
    assert _worst(lse[..., ROWS], reference_lse) < 1e-4
    for block in ("image->text", "text->image", "text->text"):
        q_kind, k_kind = block.split("->")
        qs, ks = spans[q_kind], spans[k_kind]
        probs = kernels.block_probs(q, k, lse[..., qs], (qs.start, qs.stop), (ks.start, ks.stop), attn_mask=attn_mask)
        among, within = _sampled(qs, ROWS)
        assert _worst(probs[..., within, :], reference[..., among, ks]) < 1e-6, block
        if k_kind == "text":  # padded keys take nothing, from every query
            assert (probs[1, ..., PROMPT:] == 0).all() and (probs[0, ..., PROMPT:] > 0).all()


class _MaskSpy(TorchFunctionMode):
    """Keeps the attn_mask of every scaled_dot_product_attention call made while active."""

    def __init__(self):
        super().__init__()
        self.masks = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            self.masks.append(kwargs.get("attn_mask", args[3] if len(args) > 3 else None))
        return func(*args, **kwargs)


def _joined(rec, prefix, order):
    """A module's q or k as one (batch, head, token, dim) tensor, its segments in token order."""
    return torch.cat([torch.from_numpy(rec[f"{prefix}.{kind}"].values[:, 0, 0]) for kind in order], dim=-2)


def test_qwen_image_masked_joint_attention_through_the_recorder_at_real_count(monkeypatch):
    """Qwen-Image masks padded text keys with a boolean mask on the joint [text | image] axis, which
    the CPU flash kernel does not take: the blocks come from the chunked log-sum-exp, over five chunks."""
    model = tiny_denoiser("qwenimage", num_layers=1, num_attention_heads=1)  # one head of 16
    g = torch.Generator().manual_seed(0)
    inputs = dict(hidden_states=torch.randn(2, IMAGE, model.config.in_channels, generator=g),
                  encoder_hidden_states=torch.randn(2, TEXT, model.config.joint_attention_dim, generator=g),
                  encoder_hidden_states_mask=_padded_text(), timestep=torch.full((2,), 0.5),
                  img_shapes=[[(1, GRID, GRID)]] * 2)
    chunked, chunked_lse = [], kernels.chunked_lse

    def counted(q, k, **opts):
        chunked.append(q.shape[-2])
        return chunked_lse(q, k, **opts)

    monkeypatch.setattr(kernels, "chunked_lse", counted)
    path = "transformer_blocks.0.attn"
    blocks = [f"{path}.probs.{b}" for b in ("image->text", "text->image", "text->text")]
    spy = _MaskSpy()
    with wb.record(model, blocks + [f"{path}.{r}.{kind}" for r in "qk" for kind in ("text", "image")]) as rec, spy:
        model(**copy.copy(inputs), return_dict=False)
    assert chunked == [TEXT + IMAGE], "the recorder did not take the chunked log-sum-exp path"
    (mask,) = spy.masks
    assert mask.dtype == torch.bool and mask.shape == (2, 1, 1, TEXT + IMAGE)
    q, k = _joined(rec, f"{path}.q", ("text", "image")), _joined(rec, f"{path}.k", ("text", "image"))
    bias = torch.zeros(2, TEXT + IMAGE, dtype=torch.float64).masked_fill(~mask[:, 0, 0], float("-inf"))
    reference, _ = _reference_rows(q, k, bias, ROWS)
    spans = {"text": slice(0, TEXT), "image": slice(TEXT, TEXT + IMAGE)}
    for name in blocks:
        q_kind, k_kind = name.rsplit(".", 1)[1].split("->")
        recorded = torch.from_numpy(rec[name].values[:, 0, 0])
        among, within = _sampled(spans[q_kind], ROWS)
        assert _worst(recorded[..., within, :], reference[..., among, spans[k_kind]]) < 1e-6, name
    padded = rec[f"{path}.probs.image->text"].values[1, 0, 0][..., PROMPT:]
    assert padded.shape[-1] == TEXT - PROMPT and (padded == 0).all()


def test_sana_cross_attention_with_padded_text_through_the_recorder_at_real_count():
    """Sana (like PixArt) adds a -10000 bias on padded text keys of its cross-attention:
    4096 image queries over 333 text keys, the whole matrix recorded."""
    model = tiny_denoiser("sana", num_layers=1, sample_size=2 * GRID)
    g = torch.Generator().manual_seed(0)
    inputs = dict(hidden_states=torch.randn(2, model.config.in_channels, 2 * GRID, 2 * GRID, generator=g),
                  encoder_hidden_states=torch.randn(2, TEXT, model.config.caption_channels, generator=g),
                  encoder_attention_mask=_padded_text(), timestep=torch.full((2,), 500.0))
    path = "transformer_blocks.0.attn2"
    spy = _MaskSpy()
    with wb.record(model, [f"{path}.probs", f"{path}.q", f"{path}.k"]) as rec, spy:
        model(**copy.copy(inputs), return_dict=False)
    (mask,) = spy.masks
    assert mask.dtype == torch.float32 and mask.shape[-2:] == (1, TEXT) and mask.min() == -10000.0
    q, k = (torch.from_numpy(rec[f"{path}.{r}"].values[:, 0, 0]) for r in "qk")
    assert q.shape[-2] == IMAGE
    bias = mask[:, 0, 0]  # (batch, heads or 1, 1, key): the same bias on every head
    reference, _ = _reference_rows(q, k, bias, slice(None))  # 4096 x 333: every row is cheap here
    recorded = torch.from_numpy(rec[f"{path}.probs"].values[:, 0, 0])
    assert _worst(recorded, reference) < 1e-6
    assert (recorded[1, ..., PROMPT:] == 0).all()  # exp(-10000) is 0 in float32
