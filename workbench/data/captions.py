"""Captions from templates, with the character span of every word that names an object.

Spans are half-open character ranges ``(start, end)`` into the caption, one per role:
``name`` (the shape word, or the glyph character inside its quotes), ``colour``, ``size`` (only
when the template mentions it) and ``position`` (the position's name inside its phrase, e.g.
"left" in "on the left"). ``token_alignment`` turns them into token indices for any tokenizer
that reports character offsets, so attention over text tokens can be scored per object.

Example:
    >>> from workbench.data.recipe import default_recipe
    >>> from workbench.data.recipe import ObjectSpec
    >>> red_circle = ObjectSpec("shape", "circle", "red", "left", "small", template=0)
    >>> seven = ObjectSpec("glyph", "7", "yellow", "bottom", "large", template=0)
    >>> caption, spans = describe([red_circle, seven], default_recipe())
    >>> caption
    'a red circle on the left and the digit "7" in yellow at the bottom'
    >>> caption[slice(*spans[1]["name"])], caption[slice(*spans[1]["colour"])]
    ('7', 'yellow')
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import overload

from workbench.data.recipe import ObjectSpec, Recipe


Span = tuple[int, int]
ROLES = ("name", "colour", "size", "position")
_ROLE_OF_FIELD = {"shape": "name", "glyph": "name", "colour": "colour", "size": "size", "position": "position"}
_VOWELS = set("aeiouAEIOU")


def describe(objects: Sequence[ObjectSpec], recipe: Recipe) -> tuple[str, tuple[dict[str, Span], ...]]:
    """The caption of a scene and, per object, its role -> span mapping into that caption."""
    caption = ""
    all_spans = []
    for i, obj in enumerate(objects):
        if i > 0:
            caption += recipe.last_separator if i == len(objects) - 1 else recipe.separator
        phrase, spans = object_phrase(obj, recipe)
        offset = len(caption)
        caption += phrase
        all_spans.append({role: (start + offset, end + offset) for role, (start, end) in spans.items()})
    return caption, tuple(all_spans)


def object_phrase(obj: ObjectSpec, recipe: Recipe) -> tuple[str, dict[str, Span]]:
    """One object's phrase from its template, e.g. 'a small blue square at the top', with spans."""
    values = {
        "size": obj.size,
        "colour": obj.colour,
        "shape": obj.name,
        "glyph": obj.name,
        "glyph_kind": "digit" if obj.name.isdigit() else "letter",
        "position": recipe.positions[obj.position].phrase,
    }
    pieces: list[tuple[str, str | None]] = []  # (text, template field that produced it)
    for literal, field, _, _ in string.Formatter().parse(recipe.templates[obj.kind][obj.template]):
        pieces.append((literal, None))
        if field is not None:
            pieces.append((values.get(field, ""), field))
    texts = [text for text, _ in pieces]
    for i, (_, field) in enumerate(pieces):
        if field == "article":  # "a" or "an", decided by the word that follows
            following = "".join(texts[i + 1 :]).lstrip()
            texts[i] = "an" if following[:1] in _VOWELS else "a"

    phrase = ""
    spans: dict[str, Span] = {}
    for text, (_, field) in zip(texts, pieces, strict=True):
        start = len(phrase)
        phrase += text
        if field == "position":  # align the position's own word, not "on the"
            start += text.rindex(obj.position)
            spans["position"] = (start, start + len(obj.position))
        elif field in _ROLE_OF_FIELD:
            spans[_ROLE_OF_FIELD[field]] = (start, start + len(text))
    return phrase, spans


@overload
def token_alignment(caption_spans: Mapping[str, Span], offsets: Sequence[Span]) -> dict[str, list[int]]: ...
@overload
def token_alignment(caption_spans: Sequence[Span], offsets: Sequence[Span]) -> list[list[int]]: ...
def token_alignment(caption_spans, offsets):
    """Map character spans to the indices of the tokens that overlap them.

    ``offsets`` is a tokenizer's offset mapping: one ``(start, end)`` per token, as returned by
    Hugging Face tokenizers with ``return_offsets_mapping=True``. Empty offsets (special tokens
    report ``(0, 0)``) and absent spans (negative, as stored for unmentioned sizes) match nothing.
    A mapping of spans (as in ``Scene.spans``) gives a dict with the same keys.

    Example:
        >>> caption = "a red circle on the left"
        >>> offsets = [(0, 0), (0, 1), (2, 5), (6, 9), (9, 12), (13, 15), (16, 19), (20, 24), (0, 0)]
        >>> token_alignment({"colour": (2, 5), "name": (6, 12), "size": (-1, -1)}, offsets)
        {'colour': [2], 'name': [3, 4], 'size': []}
    """
    if isinstance(caption_spans, Mapping):
        return {role: _overlapping_tokens(span, offsets) for role, span in caption_spans.items()}
    return [_overlapping_tokens(span, offsets) for span in caption_spans]


def _overlapping_tokens(span: Sequence[int], offsets: Sequence[Sequence[int]]) -> list[int]:
    start, end = int(span[0]), int(span[1])
    if start < 0 or end <= start:
        return []
    return [i for i, (t_start, t_end) in enumerate(offsets) if t_start < end and start < t_end and t_start < t_end]
