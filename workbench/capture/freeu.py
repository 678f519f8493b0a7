"""FreeU (Si et al., CVPR 2024) as ordinary workbench interventions on skip and backbone sites.

FreeU re-weights what the first two decoder stages of a U-Net receive: the first half of the
*backbone* channels (the hidden states an up block concatenates a skip to) is multiplied by ``b``,
and the low-frequency band of each *skip* tensor is multiplied by ``s`` in the Fourier domain.
Here both are interventions (:class:`ScaleFirstChannels`, :class:`FourierFilter`) on the sites the
site map declares (``skips`` and the matching ``<up block>.backbone.<j>``), so they compose with
recording, patching and step selection like any other intervention, and need no diffusers switch.

>>> with wb.intervene(model, wb.freeu(model, s1=0.9, s2=0.2, b1=1.2, b2=1.4)):
...     images = model.generate(prompts)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..sitemap import parse_site, site_name
from .interventions import CallContext, Intervention
from .resolve import as_model, resolve


def low_frequency_filter(x: torch.Tensor, scale: float, threshold: int = 1) -> torch.Tensor:
    """Multiply the centred ``2*threshold x 2*threshold`` box of the spatial spectrum of ``x``
    (batch, channel, y, x) by ``scale``; the rest of the spectrum is kept.

    The box is taken on the ``fftshift``-ed spectrum, rows and columns ``[n//2 - threshold,
    n//2 + threshold)``, which is what FreeU's reference code does (so for even sizes it holds the
    DC term and the lowest frequencies, one more on the negative side). The FFT runs in float32
    (half precision FFTs are unstable or unsupported); the result comes back in the input dtype.
    """
    if x.dim() != 4:
        raise ValueError(f"the Fourier filter needs (batch, channel, y, x) feature maps, got shape {tuple(x.shape)}")
    if threshold < 1:
        raise ValueError(f"threshold is the half-width of the low-frequency box and must be >= 1, got {threshold}")
    spectrum = torch.fft.fftshift(torch.fft.fftn(x.to(torch.float32), dim=(-2, -1)), dim=(-2, -1))
    rows, cols = spectrum.shape[-2:]
    weights = torch.ones(spectrum.shape[-2:], device=x.device)
    weights[rows // 2 - threshold: rows // 2 + threshold, cols // 2 - threshold: cols // 2 + threshold] = scale
    spectrum = spectrum * weights
    filtered = torch.fft.ifftn(torch.fft.ifftshift(spectrum, dim=(-2, -1)), dim=(-2, -1)).real
    return filtered.to(x.dtype)


@dataclass
class FourierFilter(Intervention):
    """Scale the low-frequency box of a feature map's spectrum by ``scale`` (see :func:`low_frequency_filter`)."""

    scale: float = 1.0
    threshold: int = 1

    def replacement(self, x: torch.Tensor, ctx: CallContext) -> torch.Tensor:
        if ctx.site.dims[-2:] != ("y", "x"):
            raise ValueError(f"FourierFilter needs a spatial site (dims ending in y, x); {ctx.site.name} has {ctx.site.dims}")
        return low_frequency_filter(x, self.scale, self.threshold)


@dataclass
class ScaleFirstChannels(Intervention):
    """Multiply the first ``fraction`` of the channels (``channels * fraction``, rounded down) by ``factor``."""

    factor: float = 1.0
    fraction: float = 0.5

    def replacement(self, x: torch.Tensor, ctx: CallContext) -> torch.Tensor:
        dims = ("batch",) + tuple(ctx.site.dims)
        if "channel" not in dims:
            raise ValueError(f"{ctx.site.name} has no channel axis (dims {dims}) to scale")
        axis = dims.index("channel")
        count = int(x.shape[axis] * self.fraction)
        scaled = x.clone()
        first = [slice(None)] * x.dim()
        first[axis] = slice(0, count)
        scaled[tuple(first)] = x[tuple(first)] * self.factor
        return scaled


def skip_stages(model) -> list[tuple[str, list[str]]]:
    """The decoder stages that receive long skips, in forward order: ``(module, [skip sites])``.

    Read from the site map's ``skips`` patterns; raises ``ValueError`` for a model without them."""
    model = as_model(model)
    patterns = model.site_map.skips
    if not patterns:
        raise ValueError(
            f"{type(model.denoiser).__name__} ({model.site_map.family}) has no long skip connections in its site map, "
            "so FreeU and skip studies do not apply to it; they need a U-Net (site map with skips=, e.g. toy-unet, tiny-sd)"
        )
    stages: dict[str, list[str]] = {}
    for site in resolve(model.denoiser, list(patterns)):
        stages.setdefault(site.module, []).append(site.name)
    return list(stages.items())


def freeu(model, s1: float, s2: float, b1: float, b2: float, *, threshold: int = 1, steps=None) -> list[Intervention]:
    """FreeU on the first two decoder stages of ``model``, as interventions for ``wb.intervene``.

    Stage 1 gets ``(b1, s1)``, stage 2 ``(b2, s2)``: before every resnet of those stages, the first
    half of the backbone channels is multiplied by ``b`` and the skip's low-frequency box (half-width
    ``threshold``) by ``s``. ``steps`` restricts it to some denoising steps. Equal to diffusers'
    ``unet.enable_freeu(s1, s2, b1, b2)`` (tested to 1e-6).
    """
    stages = skip_stages(model)
    interventions: list[Intervention] = []
    for (module, skips), (s, b) in zip(stages[:2], ((s1, b1), (s2, b2))):
        for skip in skips:
            backbone = site_name(module, "backbone", index=parse_site(skip).index)
            interventions.append(ScaleFirstChannels(backbone, steps=steps, factor=b, label="freeu"))
            interventions.append(FourierFilter(skip, steps=steps, scale=s, threshold=threshold, label="freeu"))
    return interventions
