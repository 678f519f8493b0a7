"""Feature extraction: diffusion-model features of whole datasets, in a resumable zarr store.

    >>> from workbench.features import extract, open_features
    >>> report = extract(model="toy-unet", dataset="shapes", sites=["up_blocks.*.out"],
    ...                  timesteps=[50, 150, 300], out="feats.zarr",
    ...                  dataset_options=dict(limit=512, max_objects=1))     # doctest: +SKIP
    >>> ds = open_features("feats.zarr")                                  # doctest: +SKIP
    >>> ds["up_blocks.1.out"].dims                                        # doctest: +SKIP
    ('image', 'timestep', 'channel_64')

Modules: ``config`` (what a job is), ``image_sources`` (shapes world, image folder, Hugging Face
datasets), ``model_inputs`` (images -> latents, prompts -> conditioning), ``noising`` (the forward
process, deterministic noise), ``pooling``, ``feature_store`` (the zarr layout, chunk marks and
records), ``extraction`` (computing one chunk), ``job`` (the whole job: claims, resuming, stopping,
repairing; rules from ``workbench.store.jobs``), ``scaleout`` (Dask). See ``docs/features.md``.
"""

from .config import DatasetSpec, ExtractConfig, load_config
from .extraction import Extractor
from .feature_store import DamagedStore, StoreMismatch, open_features
from .image_sources import FolderSource, HuggingFaceSource, ImageSource, ShapesSource, open_source
from .job import ExtractReport, build_config, extract
from ..store.jobs import JobFailed, JobInterrupted, JobStopped

__all__ = [
    "DamagedStore", "DatasetSpec", "ExtractConfig", "ExtractReport", "Extractor", "FolderSource",
    "HuggingFaceSource", "ImageSource", "JobFailed", "JobInterrupted", "JobStopped", "ShapesSource",
    "StoreMismatch", "build_config", "extract", "load_config", "open_features", "open_source",
]
