"""The hook engine: record sites and intervene on them during real diffusers runs."""

from .engine import CaptureTooLarge, Recorder, intervene, record
from .interventions import Ablate, Intervention, Patch, Scale, Steer, ablate, patch, scale, steer
from .recording import Recording
from .resolve import all_sites, resolve

__all__ = [
    "Ablate", "CaptureTooLarge", "Intervention", "Patch", "Recorder", "Recording", "Scale", "Steer",
    "ablate", "all_sites", "intervene", "patch", "record", "resolve", "scale", "steer",
]
