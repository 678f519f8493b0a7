"""Finding sites: enumerate a denoiser's sites and resolve names and glob patterns against them."""

from __future__ import annotations

import difflib
from fnmatch import fnmatchcase

import pandas as pd
import torch

from ..hooks import site_map_for
from ..loading import load
from ..sitemap import LatentTap, Site, TokenLayout

LATENT_MEANINGS = {
    "in": "the noisy latent entering the denoiser at this step",
    "pred": "the denoiser's raw prediction (per guidance branch, before guidance is combined)",
    "x0": "the scheduler's estimate of the clean latent after guidance (branch 'guided')",
}


def all_sites(denoiser) -> list[Site]:
    """Every site of ``denoiser``, latents first, in module order."""
    site_map = site_map_for(denoiser)
    layout = TokenLayout((site_map.latent_tokens,)) if "token" in site_map.latent_dims else None
    latents = [
        Site(f"latent.{what}", "", LatentTap(what), site_map.latent_dims, meaning, layout)
        for what, meaning in LATENT_MEANINGS.items()
    ]
    return latents + site_map.enumerate_sites(denoiser)


def _is_pattern(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def resolve(denoiser, patterns: str | list[str] | tuple[str, ...]) -> list[Site]:
    """The sites matching ``patterns`` (names or globs, ``*`` crossing dots), in module order.

    A name that is not a site, or a pattern that matches nothing, raises ``KeyError`` naming the
    closest valid sites.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    sites = all_sites(denoiser)
    names = [s.name for s in sites]
    chosen: set[str] = set()
    for pattern in patterns:
        matched = [n for n in names if fnmatchcase(n, pattern)]
        if not matched:
            _refuse_unrecordable(denoiser, pattern)
            raise KeyError(_no_match_message(pattern, names, type(denoiser).__name__))
        chosen.update(matched)
    return [s for s in sites if s.name in chosen]


class UnrecordableSite(ValueError):
    """A site the family has but the recorder cannot observe (its site map says why)."""


def _refuse_unrecordable(denoiser, pattern: str) -> None:
    site_map = site_map_for(denoiser)
    if site_map.unrecordable is None:
        return
    refused = {name: why for name, why in site_map.unrecordable(denoiser).items() if fnmatchcase(name, pattern)}
    if refused:
        name, why = next(iter(refused.items()))
        more = f" (and {len(refused) - 1} more like it)" if len(refused) > 1 else ""
        raise UnrecordableSite(f"{site_map.family}: {pattern!r} asks for {name}{more}, which cannot be recorded: {why}")


def _no_match_message(pattern: str, names: list[str], model_name: str) -> str:
    probe = pattern.replace("*", "0").replace("?", "0") if _is_pattern(pattern) else pattern
    close = difflib.get_close_matches(probe, names, n=5, cutoff=0.5)
    what = "pattern" if _is_pattern(pattern) else "site"
    hint = f"; nearest valid sites: {', '.join(close)}" if close else ""
    return f"{what} {pattern!r} matches no site of this {model_name}{hint}. List them with workbench.sites(model)."


def sites(model, pattern: str = "*") -> pd.DataFrame:
    """Every site of ``model`` (a Model, pipeline or denoiser) matching ``pattern``: its name, dims
    (after batch) and meaning."""
    rows = [
        {"site": s.name, "dims": ("sample", "branch", "step") + s.dims, "meaning": s.meaning}
        for s in resolve(as_model(model).denoiser, pattern)
    ]
    return pd.DataFrame(rows).set_index("site")


def as_model(target):
    """The ``Model`` of a Model, a pipeline or a bare denoiser (a pipeline or denoiser gets a fresh one)."""
    if isinstance(target, (str, bytes)) or not (hasattr(target, "denoiser") or isinstance(target, torch.nn.Module)
                                                or hasattr(target, "components")):
        raise TypeError(f"cannot record a {type(target).__name__}: pass a workbench Model, a diffusers pipeline "
                        "or a denoiser module")
    return load(target)
