"""Site maps and pipeline facts, one file per architecture family: the only place that knows how
a diffusers model family is built.

Each module here declares ``SITE_MAPS`` (denoiser classes -> where each site lives, its dims and
meaning, token order, stage order, text-attention and text K/V sites) and ``PIPELINES`` (pipeline
classes -> guidance branch order, prompt argument, text tokens, prompt encoding, latent packing),
in the vocabulary of :mod:`workbench.sitemap`. Adding an architecture is adding one module: the
registry below collects every module of this package, in name order.

This folder is the repository's top-level ``hooks/``, installed as the package ``workbench.hooks``
(``[tool.setuptools.package-dir]`` in pyproject.toml).
"""

from __future__ import annotations

import importlib
import pkgutil

from workbench.sitemap import ATTENTION_BLOCKS, Geometry, PipelineFacts, Site, SiteMap, TokenLayout


def _declarations() -> tuple[tuple[SiteMap, ...], tuple[PipelineFacts, ...]]:
    site_maps, pipelines = [], []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        site_maps += getattr(module, "SITE_MAPS", ())
        pipelines += getattr(module, "PIPELINES", ())
    return tuple(site_maps), tuple(pipelines)


SITE_MAPS, PIPELINES = _declarations()
_MAP_BY_CLASS = {name: site_map for site_map in SITE_MAPS for name in site_map.model_classes}
_FACTS_BY_CLASS = {name: facts for facts in PIPELINES for name in facts.pipeline_classes}


def supported_classes() -> list[str]:
    return sorted(_MAP_BY_CLASS)


def supported_pipelines() -> list[str]:
    return sorted(_FACTS_BY_CLASS)


def site_map_for(denoiser) -> SiteMap:
    """The site map of ``denoiser``, by its diffusers class (walking base classes, so a subclass of
    a supported class is served too)."""
    for cls in type(denoiser).__mro__:
        if cls.__name__ in _MAP_BY_CLASS:
            return _MAP_BY_CLASS[cls.__name__]
    raise TypeError(
        f"unsupported architecture {type(denoiser).__name__}: workbench has site maps for "
        f"{', '.join(supported_classes())}; add one as a module in hooks/"
    )


def pipeline_facts_for(pipeline) -> PipelineFacts:
    """The facts of ``pipeline``'s class (walking base classes)."""
    for cls in type(pipeline).__mro__:
        if cls.__name__ in _FACTS_BY_CLASS:
            return _FACTS_BY_CLASS[cls.__name__]
    raise TypeError(
        f"unsupported pipeline {type(pipeline).__name__}: workbench knows {', '.join(supported_pipelines())}; "
        "add its PipelineFacts to a module in hooks/, or load its denoiser alone (wb.load(pipe.unet))"
    )


__all__ = [
    "ATTENTION_BLOCKS", "Geometry", "PIPELINES", "PipelineFacts", "SITE_MAPS", "Site", "SiteMap", "TokenLayout",
    "pipeline_facts_for", "site_map_for", "supported_classes", "supported_pipelines",
]
