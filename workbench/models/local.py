"""Load diffusers pipelines and models from local folders only (never from a hub).

:func:`load_local` looks at what a folder holds and calls the matching ``from_pretrained`` with
``local_files_only=True``:

* ``model_index.json``                      -> ``DiffusionPipeline.from_pretrained`` (a pipeline)
* ``config.json`` with ``_class_name``      -> that diffusers model class (``SD3Transformer2DModel``, ...)
* ``config.json`` with ``architectures``    -> that transformers model class (a text encoder folder)
* ``scheduler_config.json``                 -> that diffusers scheduler class
* ``tokenizer_config.json``                 -> ``transformers.AutoTokenizer``

Example:
    >>> import tempfile
    >>> from workbench.models.tiny import tiny_pipeline
    >>> folder = tempfile.mkdtemp()
    >>> tiny_pipeline("sd").save_pretrained(folder)
    >>> pipe = load_local(folder)            # a StableDiffusionPipeline
    >>> unet = load_local(f"{folder}/unet")   # a UNet2DConditionModel
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["load_local", "realign_tensors", "LocalCheckpointError"]

#: Byte alignment of torch's CPU allocator (c10::gAlignment).
_ALIGNMENT = 64


class LocalCheckpointError(ValueError):
    """A folder is not a loadable diffusers/transformers checkpoint (see the message for why)."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise LocalCheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise LocalCheckpointError(f"{path} should hold a JSON object, found {type(data).__name__}")
    return data


def _finish(obj: Any, realign: bool) -> Any:
    if realign:
        realign_tensors(obj)
    return obj


def _listing(folder: Path, limit: int = 12) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "the folder is empty"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return "found: " + ", ".join(names[:limit]) + more


def realign_tensors(obj: Any) -> int:
    """Copy a module's (or every module of a pipeline's) misaligned tensors into fresh storage.

    ``from_pretrained`` can leave parameters as views into the safetensors buffer at arbitrary
    byte offsets. CPU kernels choose other SIMD code paths for data that is not 64-byte aligned,
    so such a model computes results that differ from the in-memory model in the last bits
    (~1e-6). After this copy a saved-and-reloaded model is bitwise identical to the original.
    Tied parameters stay tied (the ``Parameter`` objects are kept, only their data moves).

    Returns:
        The number of tensors copied.

    Example:
        >>> import torch
        >>> realign_tensors(torch.nn.Linear(2, 2))  # freshly allocated tensors are aligned
        0
    """
    import torch

    if isinstance(obj, torch.nn.Module):
        modules = [obj]
    else:  # a DiffusionPipeline
        components = getattr(obj, "components", {}) or {}
        modules = [m for m in components.values() if isinstance(m, torch.nn.Module)]
    copied = 0
    with torch.no_grad():
        for module in modules:
            for tensor in list(module.parameters()) + list(module.buffers()):
                if tensor.numel() and tensor.data_ptr() % _ALIGNMENT:
                    tensor.data = tensor.data.clone()
                    copied += 1
    return copied


def load_local(path: str | os.PathLike[str], realign: bool = True, **kwargs: Any) -> Any:
    """Load a pipeline, model, scheduler or tokenizer saved with ``save_pretrained`` in ``path``.

    Always passes ``local_files_only=True``: nothing is ever downloaded, and a hub id such as
    ``"stabilityai/stable-diffusion-3.5-medium"`` is rejected as a missing folder.

    Args:
        path: the folder given to ``save_pretrained`` (a pipeline folder, or a component
            subfolder such as ``<pipeline>/transformer``).
        realign: copy tensors that loading left at unaligned addresses into fresh storage (see
            :func:`realign_tensors`), so that outputs are bitwise identical to the model that was
            saved. Costs one copy of those tensors; pass ``False`` to keep the loader's memory.
        **kwargs: forwarded to ``from_pretrained`` (e.g. ``torch_dtype=torch.float32``,
            ``subfolder="transformer"`` for a model inside a pipeline folder).

    Returns:
        The loaded object (models come back in eval mode, as ``from_pretrained`` leaves them).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        NotADirectoryError: ``path`` is a file.
        LocalCheckpointError: the folder holds none of the expected files, or its config names a
            class this diffusers/transformers version does not have.

    Example:
        >>> from workbench.models.tiny import tiny_denoiser
        >>> tiny_denoiser("dit").save_pretrained("/tmp/tiny-dit")
        >>> type(load_local("/tmp/tiny-dit")).__name__
        'DiTTransformer2DModel'
    """
    if kwargs.get("local_files_only", True) is not True:
        raise ValueError("load_local only loads local files; do not pass local_files_only=False")
    kwargs["local_files_only"] = True

    folder = Path(path).expanduser()
    if not folder.exists():
        raise FileNotFoundError(
            f"No checkpoint folder at {str(folder)!r}. load_local only reads local folders written by "
            "save_pretrained (hub ids are never downloaded)."
        )
    if not folder.is_dir():
        raise NotADirectoryError(
            f"{str(folder)!r} is a file; load_local expects the folder written by save_pretrained "
            "(holding model_index.json or config.json)."
        )
    config_root = folder / kwargs["subfolder"] if kwargs.get("subfolder") else folder
    if not config_root.is_dir():
        raise FileNotFoundError(f"No subfolder {kwargs['subfolder']!r} in {str(folder)!r}; {_listing(folder)}.")

    import diffusers

    # 1. A whole pipeline.
    if (config_root / "model_index.json").is_file():
        index = _read_json(config_root / "model_index.json")
        class_name = index.get("_class_name")
        if class_name is not None and not hasattr(diffusers, class_name):
            raise LocalCheckpointError(
                f"{config_root / 'model_index.json'} names pipeline class {class_name!r}, which diffusers "
                f"{diffusers.__version__} does not have."
            )
        return _finish(diffusers.DiffusionPipeline.from_pretrained(folder, **kwargs), realign)

    # 2. A single model: diffusers (config.json with _class_name) or transformers (architectures).
    if (config_root / "config.json").is_file():
        config = _read_json(config_root / "config.json")
        class_name = config.get("_class_name")
        if class_name is not None:
            cls = getattr(diffusers, class_name, None)
            if cls is None or not isinstance(cls, type) or not issubclass(cls, diffusers.ModelMixin):
                raise LocalCheckpointError(
                    f"Unknown _class_name {class_name!r} in {config_root / 'config.json'}: not a model class "
                    f"of diffusers {diffusers.__version__}."
                )
            return _finish(cls.from_pretrained(folder, **kwargs), realign)
        architectures = config.get("architectures") or []
        if architectures:
            import transformers

            cls = getattr(transformers, architectures[0], None)
            if cls is None:
                raise LocalCheckpointError(
                    f"Unknown architecture {architectures[0]!r} in {config_root / 'config.json'}: not a model "
                    f"class of transformers {transformers.__version__}."
                )
            return _finish(cls.from_pretrained(folder, **kwargs), realign)
        raise LocalCheckpointError(
            f"{config_root / 'config.json'} has neither `_class_name` (a diffusers model) nor "
            "`architectures` (a transformers model), so the model class is unknown."
        )

    # 3. A scheduler or a tokenizer folder.
    if (config_root / "scheduler_config.json").is_file():
        class_name = _read_json(config_root / "scheduler_config.json").get("_class_name")
        cls = getattr(diffusers, class_name, None) if class_name else None
        if cls is None or not isinstance(cls, type) or not issubclass(cls, diffusers.SchedulerMixin):
            raise LocalCheckpointError(
                f"Unknown scheduler _class_name {class_name!r} in {config_root / 'scheduler_config.json'}."
            )
        return cls.from_pretrained(folder, **kwargs)
    if (config_root / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(folder, **kwargs)

    raise LocalCheckpointError(
        f"{str(config_root)!r} is not a checkpoint folder: expected model_index.json (a diffusers pipeline) "
        "or config.json with `_class_name` (a diffusers model), as written by save_pretrained; "
        f"{_listing(config_root)}."
    )
