"""Feature extraction: diffusion-model features of whole datasets, in a resumable zarr store.

    >>> from workbench.features import extract, open_features
    >>> report = extract(model="toy-unet", dataset="shapes", sites=["up_blocks.*.out"],
    ...                  timesteps=[50, 150, 300], out="feats.zarr",
    ...                  dataset_options=dict(limit=512, max_objects=1))     # doctest: +SKIP
    >>> ds = open_features("feats.zarr")                                  # doctest: +SKIP
    >>> ds["up_blocks.1.out"].dims                                        # doctest: +SKIP
    ('image', 'timestep', 'channel_64')

Modules: ``config`` (the job), ``sources`` (shapes world, image folder, Hugging Face datasets),
``models`` (images -> latents, prompts -> conditioning), ``noising`` (the forward process,
deterministic noise), ``pooling``, ``store`` (the zarr layout, resuming), ``extraction`` (the job),
``scaleout`` (Dask). See ``docs/features.md``.
"""

from .config import DatasetSpec, ExtractConfig, load_config
from .extraction import ExtractReport, Extractor, build_config, extract
from .sources import FolderSource, HuggingFaceSource, ImageSource, ShapesSource, open_source
from .store import StoreMismatch, open_features

__all__ = [
    "DatasetSpec", "ExtractConfig", "ExtractReport", "Extractor", "FolderSource", "HuggingFaceSource",
    "ImageSource", "ShapesSource", "StoreMismatch", "build_config", "extract", "load_config", "open_features",
    "open_source",
]
