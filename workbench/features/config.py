"""What an extraction job is: :class:`ExtractConfig` (model x dataset x sites x timesteps, and how to
noise, condition and pool), read from flags, a TOML/JSON file, or built in Python.

The config is also the job's identity: it is stored in the feature store's attributes, and a rerun
into the same store must ask for the same thing (:meth:`ExtractConfig.identity`), else it is
refused instead of mixing data. Fields that only say *how* to run (workers, threads, progress) are
not part of the identity: a job may be resumed on a cluster after starting on a laptop.

Example:
    >>> config = ExtractConfig(model="toy-unet", dataset=DatasetSpec("shapes", limit=64),
    ...                        sites=["up_blocks.*.out"], timesteps=[50, 150], out="feats.zarr")
    >>> config.pooling, config.draws
    ('mean', 1)
    >>> ExtractConfig.from_dict(config.to_dict()) == config
    True
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POOLINGS = ("mean", "adaptive", "none")
PROMPTS = ("empty", "class", "caption")
DTYPES = ("float32", "float16")
BAD_IMAGE_POLICIES = ("skip", "error")


@dataclass
class DatasetSpec:
    """Where the images and labels come from.

    ``kind``: ``"shapes"`` (the shapes world, generated on the fly: any worker can regenerate any
    image), ``"shapes-store"`` (a split written by ``workbench.data.write_shapes``), ``"folder"`` (an
    image folder with one subfolder per class) or ``"hf"`` (a Hugging Face ``datasets`` dataset saved
    with ``save_to_disk``). ``path`` is required for all but ``"shapes"``.

    ``limit`` keeps the first ``limit`` images (an image folder lists its classes in sorted order,
    so a limit below its size drops whole classes from the end). Shapes world: ``split``, ``seed`` and ``max_objects``
    (1 makes every label unambiguous: the image holds one object). Hugging Face: ``split`` (for a
    saved ``DatasetDict``), ``image_column``, ``label_columns`` (default: every ``ClassLabel``
    column), ``caption_column``.
    """

    kind: str = "shapes"
    path: str | None = None
    split: str | None = None
    limit: int | None = None
    seed: int = 0
    max_objects: int | None = None
    image_column: str = "image"
    label_columns: list[str] | None = None
    caption_column: str | None = None

    def __post_init__(self):
        kinds = ("shapes", "shapes-store", "folder", "hf")
        if self.kind not in kinds:
            raise ValueError(f"unknown dataset kind {self.kind!r}; valid kinds: {', '.join(kinds)}")
        if self.kind != "shapes" and not self.path:
            raise ValueError(f"a {self.kind!r} dataset needs a path")
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"limit must be a positive number of images, got {self.limit}")
        if self.path is not None:  # absolute: a rerun from another folder is the same job
            self.path = str(Path(self.path).expanduser().resolve())

    @classmethod
    def parse(cls, text: str, **options) -> "DatasetSpec":
        """``"shapes"``, ``"hf:PATH"``, or a path (a shapes store or an image folder, told apart by
        what is inside).

        >>> DatasetSpec.parse("shapes", limit=8).kind
        'shapes'
        """
        if text == "shapes":
            return cls("shapes", **options)
        if text.startswith("hf:"):
            return cls("hf", path=text[3:], **options)
        path = Path(text)
        if (path / "zarr.json").exists() or (path / ".zgroup").exists():
            return cls("shapes-store", path=text, **options)
        return cls("folder", path=text, **options)


@dataclass
class ExtractConfig:
    """One extraction job. See ``docs/features.md`` for every field; the defaults follow the
    diffusion-classifier papers (one noise draw, global average pooling, empty prompt)."""

    model: str
    dataset: DatasetSpec
    sites: list[str]
    timesteps: list[int]
    out: str = "features.zarr"
    seed: int = 0
    draws: int = 1  # noise draws per (image, timestep), averaged (DIFT uses 8)
    pooling: str = "mean"  # mean | adaptive (to pool_size x pool_size) | none
    pool_size: int = 2
    prompt: str = "empty"  # empty | class | caption
    class_template: str = "a {shape}"  # prompt="class": label names fill the {label} fields
    batch_size: int = 32  # images per batch = per zarr chunk along `image`
    dtype: str = "float32"  # of the stored features
    on_bad_image: str = "skip"  # skip (report, store NaN, valid=False) | error
    # How to run (not part of the job's identity):
    threads: int | None = None  # torch intra-op threads per process (None: leave torch's default)
    progress: bool = True

    RUN_ONLY = ("out", "threads", "progress")

    def __post_init__(self):
        if isinstance(self.dataset, dict):
            self.dataset = DatasetSpec(**self.dataset)
        elif isinstance(self.dataset, str):
            self.dataset = DatasetSpec.parse(self.dataset)
        self.sites = [self.sites] if isinstance(self.sites, str) else list(self.sites)
        self.timesteps = _int_list(self.timesteps, "timesteps")
        self.out = str(self.out)
        if not self.sites:
            raise ValueError("choose at least one site (a name or glob, e.g. 'up_blocks.*.out')")
        if not self.timesteps:
            raise ValueError("choose at least one timestep (e.g. 50,150,300)")
        if len(set(self.timesteps)) != len(self.timesteps):
            raise ValueError(f"timesteps repeat: {self.timesteps}")
        _choice("pooling", self.pooling, POOLINGS)
        _choice("prompt", self.prompt, PROMPTS)
        _choice("dtype", self.dtype, DTYPES)
        _choice("on_bad_image", self.on_bad_image, BAD_IMAGE_POLICIES)
        for name in ("draws", "pool_size", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExtractConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown extraction option(s): {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**data)

    def identity(self) -> dict[str, Any]:
        """What determines the store's contents (everything but how the job runs)."""
        return {k: v for k, v in self.to_dict().items() if k not in self.RUN_ONLY}


def load_config(path: str | Path) -> dict[str, Any]:
    """The options in a TOML or JSON job file, as a dict (merge flags over it, then build an
    :class:`ExtractConfig`). The ``[dataset]`` table / object holds the :class:`DatasetSpec`.

    Example TOML::

        model = "toy-unet"
        sites = ["down_blocks.*.out", "mid_block.out", "up_blocks.*.out"]
        timesteps = [50, 150, 300]
        out = "feats.zarr"
        [dataset]
        kind = "shapes"
        limit = 512
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no config file at {path}")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise ValueError(f"config file {path} must end in .toml or .json")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot parse config file {path}: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a table/object of options")
    return data


def _choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")


def _int_list(value, name: str) -> list[int]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    try:
        out = [int(v) for v in value]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be integers, got {value!r}") from err
    if any(v < 0 for v in out):
        raise ValueError(f"{name} must be >= 0, got {out}")
    return out
