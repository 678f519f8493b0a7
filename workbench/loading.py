"""``load``: a :class:`workbench.model.Model` from a name, a folder, a pipeline or a denoiser.

Reference models, tiny random families and local checkpoints each have their builder in
``workbench.models``; this module only dispatches to them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .hooks import pipeline_facts_for
from .model import Model


def load(source, **kwargs) -> Model:
    """A ``Model`` from: a reference model name (``"toy-mmdit"``, ``"toy-unet"``), a tiny random
    family (``"tiny-sd3"``, ``"tiny-flux"``, ``"tiny-sd"``, ``"tiny-pixart"``, ``"tiny-dit"``), a local
    diffusers folder (pipeline or single model; never downloads), a saved reference-model folder
    (it holds ``reference.json``), a pipeline object, or a denoiser module (``scheduler=`` optional)."""
    if isinstance(source, Model):
        return source
    if isinstance(source, torch.nn.Module):
        if hasattr(source, "_orig_mod"):  # torch.compile's OptimizedModule: the instance inside is what runs
            return Model(denoiser=source._orig_mod, scheduler=kwargs.get("scheduler"), name=type(source._orig_mod).__name__)
        return Model(denoiser=source, scheduler=kwargs.get("scheduler"), name=type(source).__name__)
    if hasattr(source, "components"):
        return from_pipeline(source, name=type(source).__name__)
    if isinstance(source, (str, os.PathLike)):
        text = str(source)
        if text.startswith("tiny-"):
            from .models.tiny import example_call_kwargs, tiny_pipeline

            family = text[len("tiny-"):]
            pipe = tiny_pipeline(family, seed=kwargs.get("seed", 0))
            per_run = ("prompt", "class_labels", "num_inference_steps", "generator", "output_type", "guidance_scale",
                       "true_cfg_scale", "negative_prompt")
            defaults = {k: v for k, v in example_call_kwargs(family).items() if k not in per_run}
            return from_pipeline(pipe, name=text, generate_defaults=defaults)
        if (Path(text) / "reference.json").exists():  # a saved reference model (Components.save_pretrained)
            from .models.reference import load_reference

            name = json.loads((Path(text) / "reference.json").read_text())["name"]
            model = load_reference(name, folder=text)
            model.name = text
            return model
        if Path(text).exists():
            from .models.local import load_local

            loaded = load_local(text, **kwargs)
            return load(loaded) if not isinstance(loaded, Model) else loaded
        from .models import reference
        from .models.tiny import PIPELINE_FAMILIES

        if text in reference.NAMES:
            return reference.load_reference(text)
        raise ValueError(
            f"cannot load {text!r}: not a folder on disk, not a reference model ({', '.join(reference.NAMES)}) "
            f"and not a tiny family ({', '.join('tiny-' + family for family in PIPELINE_FAMILIES)})"
        )
    raise TypeError(f"cannot load a {type(source).__name__}")


def from_pipeline(pipe, name: str, generate_defaults: dict | None = None) -> Model:
    """A ``Model`` over a diffusers pipeline whose class a module in ``hooks/`` declares."""
    facts = pipeline_facts_for(pipe)
    if not facts.prompt_arg:
        raise ValueError(f"unconditional pipelines ({type(pipe).__name__}) have no prompts: load the denoiser "
                         "alone (wb.load(pipe.unet)) and run workbench.denoise()")
    pipe.set_progress_bar_config(disable=True)
    denoiser = getattr(pipe, facts.denoiser_attribute)
    if hasattr(denoiser, "_orig_mod"):  # a compiled denoiser (pipe.transformer = torch.compile(...))
        denoiser = denoiser._orig_mod
    return Model(denoiser=denoiser, pipeline=pipe, scheduler=pipe.scheduler, name=name,
                 generate_defaults=dict(generate_defaults or {}))
