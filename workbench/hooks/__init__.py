"""Per-architecture site maps. Architecture differences live here and nowhere else.

``site_map_for(denoiser)`` picks the map by the denoiser's diffusers class name, walking its base
classes so a subclass of a supported class is served too.
"""

from __future__ import annotations

from .base import ATTENTION_BLOCKS, Geometry, Site, SiteMap, TokenLayout
from .dit import DIT, PIXART
from .mmdit import FLUX, SD3
from .unet import UNET_2D, UNET_2D_CONDITION

SITE_MAPS: tuple[SiteMap, ...] = (SD3, FLUX, UNET_2D_CONDITION, UNET_2D, DIT, PIXART)
_BY_CLASS = {name: site_map for site_map in SITE_MAPS for name in site_map.model_classes}


def supported_classes() -> list[str]:
    return sorted(_BY_CLASS)


def site_map_for(denoiser) -> SiteMap:
    denoiser = getattr(denoiser, "_orig_mod", denoiser)  # torch.compile(model) wraps the real module
    for cls in type(denoiser).__mro__:
        if cls.__name__ in _BY_CLASS:
            return _BY_CLASS[cls.__name__]
    raise TypeError(
        f"unsupported architecture {type(denoiser).__name__}: workbench has site maps for "
        f"{', '.join(supported_classes())}"
    )


__all__ = ["ATTENTION_BLOCKS", "Geometry", "Site", "SiteMap", "TokenLayout", "SITE_MAPS", "site_map_for", "supported_classes"]
