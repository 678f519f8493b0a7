"""Computing features of one chunk of an extraction job (model x dataset x sites x timesteps).

For every batch of images (= one chunk of the store) and every timestep ``t``, the clean images
are noised to ``t`` (``Model.add_noise``; each image once per noise draw, deterministically), the
denoiser runs *once* on the whole batch (``Model.predict``; draws stacked along the batch),
``workbench.record`` captures the chosen sites, and each site is pooled and averaged over the draws. Then the chunk is written into
its region of the preallocated store and marked done (:func:`run_chunk`).

The job around it (creating the store, claiming chunks, resuming, stopping) is
``workbench.features.job``; running chunks on Dask is ``workbench.features.scaleout``.

Example:
    >>> ex = Extractor(config)                                   # doctest: +SKIP
    >>> features, valid, failures = ex.compute(range(8))         # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import logging
import string
from dataclasses import dataclass, field

import numpy as np
import torch

from ..capture.layout import clashing_dims, sized_dims, token_kind
from .config import ExtractConfig
from .model_inputs import Conditioner, load_model, model_identity
from .noising import batch_noise, check_timesteps
from .pooling import pool_tensor
from .image_sources import Failure, open_source
from . import feature_store

log = logging.getLogger("workbench.features")


class Extractor:
    """What one process (or worker thread) needs to compute chunks of a job: its own model
    instance (recording hooks attach to it), the image source and the resolved sites.

    Example:
        >>> ex = Extractor(config)                        # doctest: +SKIP
        >>> features, valid, failures = ex.compute(range(8))   # doctest: +SKIP
    """

    def __init__(self, config: ExtractConfig, model=None, source=None):
        from workbench.capture.resolve import resolve

        if config.threads:
            torch.set_num_threads(int(config.threads))
        self.config = config
        self.model = load_model(model if model is not None else config.model)
        if self.model.scheduler is None:
            raise ValueError(f"{self.model.name}: extraction needs a scheduler to noise images (load it with one)")
        self.source = source if source is not None else open_source(config.dataset)
        self.sites = [site.name for site in resolve(self.model.denoiser, config.sites)]
        self.size = self.model.image_size
        self.conditioner = Conditioner(self.model)
        check_timesteps(self.model.scheduler, config.timesteps)
        self._check_prompts()

    # -- prompts ----------------------------------------------------------------------------------
    def _check_prompts(self) -> None:
        if self.config.prompt == "caption" and self.source.captions is None:
            raise ValueError(f"prompt='caption' but {self.source.description} has no captions; use 'empty' or 'class'")
        if self.config.prompt == "class":
            fields = {f for _, f, _, _ in string.Formatter().parse(self.config.class_template) if f}
            unknown = sorted(fields - set(self.source.labels))
            if unknown:
                raise KeyError(
                    f"class_template {self.config.class_template!r} names {', '.join(unknown)}, not labels of this "
                    f"dataset; its labels are: {', '.join(self.source.labels)}"
                )

    def prompts(self, indices) -> list[str]:
        """The prompt of each image, by the job's text conditioning option."""
        if self.config.prompt == "empty":
            return [""] * len(indices)
        if self.config.prompt == "caption":
            return [str(self.source.captions[i]) for i in indices]
        out = []
        for i in indices:
            names = {
                name: (label.classes[label.codes[i]] if label.codes[i] >= 0 else "")
                for name, label in self.source.labels.items()
            }
            out.append(" ".join(self.config.class_template.format_map(names).split()))
        return out

    # -- computing --------------------------------------------------------------------------------
    def plan(self) -> dict[str, dict]:
        """Each site's feature dims and shape after pooling, found by running one blank image.

        Dims whose size differs between sites get the size in their name (``channel_64``).
        """
        blank = torch.zeros(1, 3, self.size, self.size, dtype=torch.uint8)
        x0 = self.model.encode_images(blank.permute(0, 2, 3, 1).numpy())
        pooled = self._run(x0, self.config.timesteps[0], self.conditioner(self.prompts([0])))
        clashing = clashing_dims(dict(zip(dims, tensor.shape[1:])) for tensor, dims in pooled.values())
        plan = {}
        for site, (tensor, dims) in pooled.items():
            named = sized_dims(dims, tensor.shape[1:], clashing)
            plan[site] = {"dims": named, "shape": list(tensor.shape[1:]), "layout": _layout(dims)}
        return plan

    def compute(self, indices) -> tuple[dict[str, np.ndarray], np.ndarray, list[Failure]]:
        """Features of images ``indices``: site -> ``(n, timesteps, *feature dims)``, the valid mask,
        and the images that could not be read (their features are NaN)."""
        config = self.config
        indices = [int(i) for i in indices]
        images, failures = self.source.load(indices, self.size)
        if failures and config.on_bad_image == "error":
            raise ValueError(f"cannot read image {failures[0]} (on_bad_image='error')")
        for failure in failures:
            log.warning("skipping image %s", failure)
        bad = {f.index for f in failures}
        good_rows = [row for row, index in enumerate(indices) if index not in bad]
        valid = np.zeros(len(indices), dtype=bool)
        valid[good_rows] = True
        out: dict[str, np.ndarray] = {}
        if not good_rows:
            return out, valid, failures
        good = [indices[row] for row in good_rows]
        x0 = self.model.encode_images(images[good_rows])
        conditioning = self.conditioner(self.prompts(good))
        for step, t in enumerate(config.timesteps):
            noise = batch_noise(config.seed, good, t, config.draws, tuple(x0.shape[1:]))
            pooled = self._run(x0, t, conditioning, noise)
            for site, (tensor, _) in pooled.items():
                values = tensor.reshape(config.draws, len(good), *tensor.shape[1:]).mean(dim=0)  # ensemble (DIFT)
                if site not in out:
                    out[site] = np.full((len(indices), len(config.timesteps), *tensor.shape[1:]), np.nan, config.dtype)
                out[site][good_rows, step] = values.numpy()
        return out, valid, failures

    @torch.no_grad()
    def _run(self, x0: torch.Tensor, t: int, conditioning: dict, noise: torch.Tensor | None = None) -> dict:
        """One denoiser call on ``x0`` noised to ``t`` (draws stacked draw-major), recorded and pooled."""
        from workbench.capture import record

        draws = 1 if noise is None else noise.shape[0] // x0.shape[0]
        clean = x0.repeat(draws, *([1] * (x0.dim() - 1)))
        noisy = self.model.add_noise(clean, t, torch.zeros_like(clean) if noise is None else noise)
        conditioning = {k: v.repeat(draws, *([1] * (v.dim() - 1))) for k, v in conditioning.items()}
        cfg, pooled_dims = self.config, {}

        def pool(site, raw: torch.Tensor, geometry) -> torch.Tensor:
            tokens, grid = _token_layout(site, raw, geometry)
            pooled, pooled_dims[site.name] = pool_tensor(raw, site.dims, cfg.pooling, cfg.pool_size, tokens, grid,
                                                         site.name)
            return pooled

        # Pooled inside the hook (transform=): the recording keeps only the pooled features, so the
        # full-size activations are neither copied nor labelled. Measured on one call alone, the
        # copies cost about 8% of its CPU time in fresh-page faults; over a whole job the time did
        # not move measurably (docs/features.md, "Performance").
        # expected_steps: this recording is one denoiser call, not a run over the scheduler's steps
        # (else the recorder projects its memory over every step the scheduler holds).
        with record(self.model, self.sites, expected_steps=1, transform=pool) as rec:
            self.model.predict(noisy, t, conditioning)
        return {name: (rec.kept(name, 0), pooled_dims[name]) for name in self.sites}

    # -- the job's identity -----------------------------------------------------------------------
    def job(self) -> dict:
        """What the store must hold; compared on every rerun."""
        identity = self.config.identity()
        # The resolved sites and the weights' digest below are what count, not how they were named
        # (site patterns; "toy-unet" or the folder it lives in).
        identity.pop("sites")
        identity.pop("model")
        return {
            "config": identity,
            "sites": self.sites,
            "model": model_identity(self.model),
            "dataset": {"n_images": len(self.source), "ids_sha1": self.source.digest()},
            "image_size": self.size,
        }

    def provenance(self) -> dict:
        import diffusers

        import workbench

        c = self.config
        return {
            "model": c.model,
            "model_class": type(self.model.denoiser).__name__,
            "sites": self.sites,
            "timesteps": list(c.timesteps),
            "seed": c.seed,
            "draws": c.draws,
            "pooling": c.pooling if c.pooling != "adaptive" else f"adaptive {c.pool_size}x{c.pool_size}",
            "prompt": c.prompt if c.prompt != "class" else f"class: {c.class_template}",
            "dataset": self.source.description,
            "batch_size": c.batch_size,
            "workbench_version": workbench.__version__,
            "torch_version": torch.__version__,
            "diffusers_version": diffusers.__version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }


def _layout(dims: tuple[str, ...]) -> str:
    """How a pooled site reads: a vector per image, a (pooled) map, or its recorded dims."""
    if "py" in dims:
        return "pooled map"
    if "y" in dims:
        return "map"
    return "vector" if dims == ("channel",) else "recorded"


def _token_layout(site, raw: torch.Tensor, geometry) -> tuple[str, tuple[int, int] | None]:
    """What a site's token axis holds, from its site map layout: image tokens (and their grid
    for this call's geometry), text tokens, or both (joint)."""
    if "token" not in site.dims:
        return "text", None
    kind = token_kind(site.query_layout)
    grid = geometry.image_grid(raw.shape[1 + site.dims.index("token")]) if kind == "image" else None
    return kind, grid


@dataclass
class ChunkResult:
    chunk: int
    images: int
    failures: list[str] = field(default_factory=list)


def run_chunk(extractor: Extractor, plan: dict, chunk: int, may_write=None,
              arrays: feature_store.ChunkArrays | None = None) -> ChunkResult:
    """Compute chunk ``chunk`` and write it (data first, then its record, then its done mark).
    ``may_write(chunk)``: asked just before writing; False (another job took the chunk over
    because this one looked dead) leaves the writing to that job. ``arrays``: the store's arrays,
    opened once by a job writing many chunks (else opened for this chunk)."""
    config = extractor.config
    start = chunk * config.batch_size
    indices = range(start, min(len(extractor.source), start + config.batch_size))
    features, valid, failures = extractor.compute(indices)
    for site, spec in plan.items():  # an all-unreadable chunk still gets written (NaN)
        features.setdefault(site, np.full((len(indices), len(config.timesteps), *spec["shape"]), np.nan, config.dtype))
    if may_write is None or may_write(chunk):
        feature_store.write_chunk(config.out, plan, chunk, start, features, valid, arrays=arrays)
    else:
        log.warning("chunk %d was taken over by another job while this one computed it; leaving it to that job", chunk)
    return ChunkResult(chunk, len(indices), [str(f) for f in failures])
