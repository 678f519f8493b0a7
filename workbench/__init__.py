"""workbench: record, decompose and intervene on what happens inside diffusion models.

>>> import workbench as wb
>>> model = wb.load("tiny-sd3")
>>> with wb.record(model, ["transformer_blocks.*.attn.probs.image->text", "latent.*"]) as rec:
...     images = model.generate(["a red circle on the left"], steps=4)
>>> rec["latent.x0"].dims
('sample', 'branch', 'step', 'channel', 'y', 'x')
"""

from .capture import (
    Ablate,
    Intervention,
    CaptureTooLarge,
    Patch,
    Recording,
    Scale,
    Steer,
    ablate,
    intervene,
    patch,
    record,
    scale,
    steer,
)
from .capture.resolve import sites
from .loading import load
from .model import Model, denoise
from .store import open_recording

__version__ = "0.1.0"


def __getattr__(name):
    # Subpackages that pull plotly/ipywidgets or analysis code load on first use, so that
    # `import workbench` stays light: wb.widgets, wb.attention, wb.analysis, wb.data.
    if name in ("widgets", "attention", "analysis", "data"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


def run_with_cache(model, sites, *args, **kwargs):
    """TransformerLens-style: run ``model.generate(*args, **kwargs)`` recording ``sites``;
    returns ``(images, recording)``. Recording options go in ``record=dict(...)``."""
    model = load(model)
    with record(model, sites, **kwargs.pop("record", {})) as rec:
        images = model.generate(*args, **kwargs)
    return images, rec


def run_with_hooks(model, interventions, *args, **kwargs):
    """Run ``model.generate(*args, **kwargs)`` with ``interventions`` applied; returns the images."""
    model = load(model)
    with intervene(model, interventions, **kwargs.pop("record", {})):
        return model.generate(*args, **kwargs)


__all__ = [
    "Ablate", "CaptureTooLarge", "Intervention", "Model", "Patch", "Recording", "Scale", "Steer", "ablate", "denoise",
    "intervene", "load", "open_recording", "patch", "record", "run_with_cache", "run_with_hooks", "scale",
    "sites", "steer",
]
