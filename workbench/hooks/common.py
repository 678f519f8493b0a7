"""Site builders shared by several families: attention modules and plain module outputs."""

from __future__ import annotations

from .base import (
    ATTENTION_BLOCKS,
    PROBS_DIMS,
    QKV_DIMS,
    AttentionTap,
    OutputTap,
    Site,
    TokenLayout,
)

IMAGE = TokenLayout(("image",))
TEXT = TokenLayout(("text",))
IMAGE_TEXT = TokenLayout(("image", "text"))  # SD3: image tokens first
TEXT_IMAGE = TokenLayout(("text", "image"))  # FLUX: text tokens first


def attention_sites(path: str, query: TokenLayout, key: TokenLayout, what: str) -> list[Site]:
    """Probabilities (whole and, for joint attention, per block) and q/k/v of one attention module.

    ``what`` is a short human description used in the one-line meanings ("joint attention",
    "cross-attention to the prompt", ...).
    """
    sites = [
        Site(
            f"{path}.probs",
            path,
            AttentionTap("probs", query=query, key=key),
            PROBS_DIMS,
            f"{what}: softmax(q k^T * scale) over all keys, per head",
            query,
            key,
        )
    ]
    joint = len(query.segments) > 1
    if joint:
        for block in ATTENTION_BLOCKS:
            q_kind, k_kind = block.split("->")
            sites.append(
                Site(
                    f"{path}.probs.{block}",
                    path,
                    AttentionTap("probs", block=block, query=query, key=key),
                    PROBS_DIMS,
                    f"{what}: {q_kind} queries attending to {k_kind} keys (rows sum to <1; mass sent to {k_kind})",
                    TokenLayout((q_kind,)),
                    TokenLayout((k_kind,)),
                )
            )
    for role, layout in (("q", query), ("k", key), ("v", key)):
        segments = layout.segments if len(layout.segments) > 1 else (None,)
        for segment in segments:
            suffix = f".{segment}" if segment else ""
            seg_layout = TokenLayout((segment,)) if segment else layout
            sites.append(
                Site(
                    f"{path}.{role}{suffix}",
                    path,
                    AttentionTap(role, segment=segment, query=query, key=key),
                    QKV_DIMS,
                    f"{what}: per-head {dict(q='queries', k='keys', v='values')[role]}"
                    f"{' of ' + segment + ' tokens' if segment else ''} as the attention kernel sees them",
                    seg_layout,
                )
            )
    return sites


def output_site(path: str, kind: str, index: int | None, dims: tuple[str, ...], meaning: str,
                layout: TokenLayout | None = None) -> Site:
    """A module's output (or one element of its output tuple)."""
    name = f"{path}.{kind}" if path else kind
    return Site(name, path, OutputTap(index), dims, meaning, layout)
