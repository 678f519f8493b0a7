"""workbench: record, decompose and intervene on what happens inside diffusion models.

>>> import workbench as wb
>>> model = wb.load("tiny-sd3")
>>> with wb.record(model, ["transformer_blocks.*.attn.probs.image->text", "latent.*"]) as rec:
...     images = model.generate(["a red circle on the left"], steps=4)
>>> rec["latent.x0"].dims
('sample', 'branch', 'step', 'channel', 'y', 'x')
"""

from .capture import (
    CaptureTooLarge,
    Intervention,
    Recording,
    SitesNotFired,
    ablate,
    edit,
    intervene,
    patch,
    record,
    scale,
    steer,
)
from .capture.freeu import freeu
from .capture.resolve import sites
from .capture.reuse import reuse
from .capture.tgate import tgate
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


__all__ = [
    "CaptureTooLarge", "Intervention", "Model", "Recording", "SitesNotFired", "ablate", "denoise",
    "edit", "freeu", "intervene", "load", "open_recording", "patch", "record", "reuse", "scale", "sites", "steer", "tgate",
]
