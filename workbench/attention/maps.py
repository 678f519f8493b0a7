"""Pure functions over recorded attention: the four-block decomposition and per-word maps.

Recorded probabilities carry ``query_kind`` / ``key_kind`` (image or text) on their token axes,
``*_y`` / ``*_x`` grid positions on image tokens and ``*_token`` strings on text tokens, so
nothing here needs to know the architecture: SD3 [image | text], FLUX [text | image] and U-Net
cross-attention (image queries, text keys) all decompose the same way.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

import numpy as np
import torch
import xarray as xr

KINDS = ("image", "text")
_SPECIAL = re.compile(r"^(<\|startoftext\|>|<\|endoftext\|>|</s>|<pad>|<unk>|<s>|\[PAD\]|)$")


def decompose(probs: xr.DataArray) -> xr.Dataset:
    """Split joint attention probabilities into image->image, image->text, text->image, text->text.

    Blocks are named query->key. Token axes become ``query_image``, ``query_text``, ``key_image``,
    ``key_text`` so the four blocks share one Dataset; a block whose kinds are absent (e.g. U-Net
    cross-attention has only image->text) is left out.
    """
    blocks = {}
    for q in KINDS:
        for k in KINDS:
            q_mask, k_mask = probs.query_kind == q, probs.key_kind == k
            if not bool(q_mask.any()) or not bool(k_mask.any()):
                continue
            block = probs.isel(query=q_mask.values, key=k_mask.values)
            blocks[f"{q}->{k}"] = rename_axes(block, {"query": f"query_{q}", "key": f"key_{k}"})
    if not blocks:
        raise ValueError("these probabilities carry no query_kind/key_kind coordinates to split on")
    return xr.Dataset(blocks, attrs=dict(probs.attrs))


def rename_axes(array: xr.DataArray, mapping: Mapping[str, str]) -> xr.DataArray:
    """Rename dims per ``mapping`` together with their ``{dim}_*`` coordinates (``key_kind`` follows ``key``)."""
    renames = {}
    for old, new in mapping.items():
        renames[old] = new
        for coord in array.coords:
            if coord.startswith(f"{old}_") and old in array.coords[coord].dims:
                renames[coord] = new + coord[len(old):]
    return array.rename(renames)


def block_mass(probs: xr.DataArray) -> xr.DataArray:
    """How much attention each query kind sends to each key kind: dims (..., query_kind, key_kind),
    averaged over queries; each query kind's row sums to one."""
    out = []
    for q in KINDS:
        rows = []
        for k in KINDS:
            part = probs.isel(query=(probs.query_kind == q).values, key=(probs.key_kind == k).values)
            rows.append(part.sum("key").mean("query") if part.sizes["query"] else xr.full_like(probs.isel(query=0, key=0, drop=True), np.nan))
        out.append(xr.concat(rows, dim=xr.DataArray(list(KINDS), dims="key_kind")))
    return xr.concat(out, dim=xr.DataArray(list(KINDS), dims="query_kind"))


def to_grid(array: xr.DataArray, axis: str) -> xr.DataArray:
    """Lay an image-token axis out as (y, x) using its ``{axis}_y`` / ``{axis}_x`` coordinates."""
    ys, xs = array[f"{axis}_y"].values, array[f"{axis}_x"].values
    if (ys < 0).any():
        raise ValueError(f"axis {axis!r} holds text tokens; select image tokens first")
    rows, cols = int(ys.max()) + 1, int(xs.max()) + 1
    order = np.argsort(ys * cols + xs, kind="stable")
    keep = [c for c in array.coords if axis not in array.coords[c].dims]
    ordered = array.isel({axis: order}).reset_coords(drop=True).drop_vars(axis, errors="ignore")
    data = ordered.values.reshape(ordered.shape[: ordered.dims.index(axis)] + (rows, cols) + ordered.shape[ordered.dims.index(axis) + 1 :])
    dims = ordered.dims[: ordered.dims.index(axis)] + ("y", "x") + ordered.dims[ordered.dims.index(axis) + 1 :]
    return xr.DataArray(data, dims=dims, coords={c: array.coords[c] for c in keep}, attrs=array.attrs)


def resize(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if grid.shape[-2:] == size:
        return grid
    t = torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32)).reshape(-1, 1, *grid.shape[-2:])
    out = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return out.reshape(grid.shape[:-2] + size).numpy()


def words_of(tokens: Iterable[str]) -> list[tuple[str, list[int]]]:
    """Group tokenizer tokens into words: CLIP marks a word's end with ``</w>``, T5/sentencepiece
    a word's start with ``▁``. Special and padding tokens belong to no word."""
    words: list[tuple[str, list[int]]] = []
    current, positions = "", []
    for i, token in enumerate(tokens):
        if _SPECIAL.match(token):
            if current:
                words.append((current, positions))
            current, positions = "", []
            continue
        starts = token.startswith("▁")
        if starts and current:
            words.append((current, positions))
            current, positions = "", []
        piece = token.replace("</w>", "").lstrip("▁")
        current += piece
        positions.append(i)
        if token.endswith("</w>"):
            words.append((current, positions))
            current, positions = "", []
    if current:
        words.append((current, positions))
    return [(w, p) for w, p in words if w.strip()]


def word_maps(recording, sample: int = 0, *, sites: str | None = None, steps=None, size: tuple[int, int] | None = None,
              branch: str = "cond") -> xr.DataArray:
    """Per-word attention maps over the image: dims (word, y, x), each map summing to one.

    Uses every recorded image->text probability site (joint blocks ``*.probs.image->text``, whole
    joint matrices ``*.probs``, or U-Net/PixArt cross-attention ``attn2.probs``), averaged over
    heads, the chosen ``steps`` (indices; all by default) and layers, each layer's map resized to
    ``size`` (the finest grid by default) as DAAM does. A word split into several tokens, or
    present in two text encoders' tokens (SD3), sums its tokens' columns.
    """
    from fnmatch import fnmatchcase

    per_layer = []
    for name in recording:
        if sites is not None and not fnmatchcase(name, sites):
            continue
        if not (name.endswith(".probs.image->text") or name.endswith(".probs")):
            continue
        probs = recording[name]
        if "key_kind" not in probs.coords or "text" not in set(probs.key_kind.values) or "image" not in set(probs.query_kind.values):
            continue
        probs = probs.isel(sample=sample)
        probs = probs.sel(branch=branch) if branch in probs.branch.values else probs.isel(branch=-1)
        if steps is not None:
            probs = probs.sel(step=list(steps))
        probs = probs.isel(query=(probs.query_kind == "image").values, key=(probs.key_kind == "text").values)
        if "head" in probs.dims:
            probs = probs.mean("head")
        per_layer.append(to_grid(probs.mean("step"), "query"))
    if not per_layer:
        raise ValueError("no image->text attention in this recording: record e.g. '**.probs.image->text' or '**.attn2.probs'")
    size = size or max((p.sizes["y"], p.sizes["x"]) for p in per_layer)
    first = per_layer[0]
    if "key_token" not in first.coords:
        raise ValueError("text tokens are unlabelled: record through a Model or pipeline call with prompts")
    tokens = [str(t) for t in first.key_token.values]
    stacked = np.mean([resize(p.transpose("key", "y", "x").values, size) for p in per_layer], axis=0)
    words, maps = [], []
    for word, positions in words_of(tokens):
        words.append(word)
        maps.append(stacked[positions].sum(axis=0))
    maps = np.asarray(maps)
    maps = maps / np.clip(maps.sum(axis=(1, 2), keepdims=True), 1e-12, None)
    merged: dict[str, list[np.ndarray]] = {}
    for word, m in zip(words, maps):
        merged.setdefault(word, []).append(m)
    return xr.DataArray(
        np.stack([np.mean(v, axis=0) for v in merged.values()]),
        dims=("word", "y", "x"),
        coords={"word": list(merged), "y": np.arange(size[0]), "x": np.arange(size[1])},
        attrs={"layers": len(per_layer), "sample": sample},
    )
