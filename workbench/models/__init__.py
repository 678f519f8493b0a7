"""Models for the workbench: tiny in-process diffusers models/pipelines and local loading.

Importing this package is cheap: the names below are resolved lazily, on first use, from
:mod:`workbench.models.tiny`, :mod:`workbench.models.tokenizers` and :mod:`workbench.models.local`
(which import torch, diffusers and transformers).

Example:
    >>> from workbench.models import tiny_pipeline, load_local
    >>> pipe = tiny_pipeline("sd3")
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # tiny/ (one module per family, collected in tiny/__init__.py)
    "FAMILIES": "tiny",
    "PIPELINE_FAMILIES": "tiny",
    "TINY_CONFIGS": "tiny",
    "TEXT_ENCODER_CONFIGS": "tiny",
    "VAE_CONFIGS": "tiny",
    "DIT_ID2LABEL": "tiny",
    "tiny_denoiser": "tiny",
    "tiny_vae": "tiny",
    "tiny_pipeline": "tiny",
    "default_size": "tiny",
    "example_inputs": "tiny",
    "example_call_kwargs": "tiny",
    # tokenizers.py
    "DEFAULT_WORDS": "tokenizers",
    "build_clip_tokenizer": "tokenizers",
    "build_t5_tokenizer": "tokenizers",
    # local.py
    "load_local": "local",
    "realign_tensors": "local",
    "LocalCheckpointError": "local",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
