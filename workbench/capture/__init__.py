"""The hook engine: record sites and intervene on them during real diffusers runs.

Modules, each read in one sitting: ``engine`` (the Recorder: attach, visit sites, detach),
``clock`` (steps and guidance branches), ``attention`` (q/k/v and probabilities at the kernel),
``firing`` (every requested site fires or the run fails), ``compiled`` (compiled models run
eagerly while recorded), ``streaming`` (steps to a zarr store), ``budget`` (memory limit),
``recording`` (what a run captured, as xarray), ``queries`` (``record(..., queries=)``: some query
rows of attention), ``layout`` (token layout and dim naming), ``interventions`` and ``resolve``
(site names and patterns).
"""

from .budget import CaptureTooLarge
from .engine import Recorder, intervene, record
from .firing import SitesNotFired
from .interventions import CallContext, Intervention, ablate, edit, patch, scale, steer
from .recording import Recording
from .resolve import all_sites, resolve

__all__ = [
    "CallContext", "CaptureTooLarge", "Intervention", "Recorder", "Recording", "SitesNotFired",
    "ablate", "all_sites", "edit", "intervene", "patch", "record", "resolve", "scale", "steer",
]
