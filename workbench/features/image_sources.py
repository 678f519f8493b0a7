"""Image sources for extraction: the shapes world, an image folder, a Hugging Face dataset.

Every source answers the same questions, cheaply and up front (before any image is decoded):
how many images, what each one is called (``ids``: a sample index or a file path), its labels (int
codes with a vocabulary) and, where there is one, its caption. Pixels are read batch by batch
with :meth:`ImageSource.load`, which reports an unreadable image instead of raising, so that one
corrupt file costs one image, not the job.

Sources are rebuilt from their :class:`~workbench.features.config.DatasetSpec` in every process
(Dask workers included), so they hold paths and indices, never decoded images.

Example:
    >>> from workbench.features.config import DatasetSpec
    >>> source = open_source(DatasetSpec("shapes", split="test", limit=4, max_objects=1))
    >>> len(source), sorted(source.labels)[:3]
    (4, ['colour', 'glyph', 'kind'])
    >>> images, failures = source.load([0, 1], size=32)
    >>> images.shape, images.dtype, failures
    ((2, 32, 32, 3), dtype('uint8'), [])
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from .config import DatasetSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SHAPES_LABELS = ("kind", "shape", "glyph", "colour", "position", "size")


@dataclass
class Label:
    """Integer codes per image (``-1``: does not apply, e.g. ``shape`` of a glyph) and their names."""

    codes: np.ndarray
    classes: list[str]


@dataclass
class Failure:
    """An image that could not be read: its position in the source, its id and why."""

    index: int
    id: str
    reason: str

    def __str__(self) -> str:
        return f"{self.id}: {self.reason}"


class ImageSource:
    """Base class. Subclasses set ``ids``, ``labels``, ``captions`` and implement ``_read``."""

    ids: np.ndarray  # str per image
    labels: dict[str, Label]
    captions: np.ndarray | None = None
    description: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, indices, size: int) -> tuple[np.ndarray, list[Failure]]:
        """Images ``indices`` as uint8 ``(n, size, size, 3)``; unreadable ones are zero and listed."""
        indices = [int(i) for i in indices]
        out = np.zeros((len(indices), size, size, 3), dtype=np.uint8)
        failures = []
        for row, (index, image) in enumerate(zip(indices, self._read(indices))):
            if isinstance(image, Failure):
                failures.append(image)
            else:
                out[row] = _fit(image, size)
        return out, failures

    def _read(self, indices: list[int]):
        """One ``(H, W, 3)`` uint8 array or :class:`Failure` per index, in order."""
        raise NotImplementedError

    def digest(self) -> str:
        """A short fingerprint of which images these are (for the job's identity)."""
        return hashlib.sha1("\n".join(map(str, self.ids)).encode()).hexdigest()[:16]


class ShapesSource(ImageSource):
    """The shapes world, generated on the fly (``split``, ``seed``, optional ``max_objects``).

    Labels are the first object's (the one the caption names first), as ``ShapesDataset`` does;
    with ``max_objects=1`` every label describes the whole image.
    """

    def __init__(self, spec: DatasetSpec):
        from workbench.data import default_recipe, generate

        self.split = spec.split or "train"
        self.seed = spec.seed
        recipe = default_recipe()
        if spec.max_objects is not None:
            recipe = dataclasses.replace(recipe, max_objects=int(spec.max_objects))
        self.recipe = recipe
        n = spec.limit or recipe.splits[self.split]
        # Labels and captions up front, a block at a time so that memory stays flat, and without
        # painting (pixels=False: half the time of rendering the images and dropping them); the
        # pixels are rendered batch by batch in load().
        blocks = [
            generate(min(1024, n - start), self.split, self.seed, recipe=recipe, start=start, pixels=False)
            for start in range(0, n, 1024)
        ]
        _set_shapes_fields(self, xr.concat(blocks, dim="sample") if len(blocks) > 1 else blocks[0])
        self.description = f"shapes world, split {self.split}, seed {self.seed}, {n} images"

    def _read(self, indices):
        from workbench.data import sample_scene

        return [sample_scene(i, self.split, self.seed, recipe=self.recipe).image for i in indices]


class ShapesStoreSource(ImageSource):
    """A shapes-world split on disk (``workbench.data.write_shapes``)."""

    def __init__(self, spec: DatasetSpec):
        from workbench.data import open_shapes

        self.path = spec.path
        ds = open_shapes(spec.path)
        if spec.limit is not None:
            ds = ds.isel(sample=slice(0, spec.limit))
        self._images = ds["image"]
        _set_shapes_fields(self, ds.drop_vars(["image", "mask"]).load())
        self.description = f"shapes store {spec.path}, {len(self.ids)} images"

    def _read(self, indices):
        block = self._images.isel(sample=indices).values
        return list(block)


def _set_shapes_fields(source: ImageSource, ds) -> None:
    source.ids = np.array([str(int(s)) for s in ds["sample"].values], dtype=object)
    source.labels = {
        name: Label(ds[name].values[:, 0].astype(np.int16), list(ds[name].attrs["classes"])) for name in SHAPES_LABELS
    }
    source.labels["n_objects"] = Label(
        ds["n_objects"].values.astype(np.int16), [str(k) for k in range(int(ds["n_objects"].max()) + 1)]
    )
    source.captions = ds["caption"].values.astype(str).astype(object)


class FolderSource(ImageSource):
    """``root/<class>/<image>``: one subfolder per class (sorted names are the label's classes).

    Files with other suffixes are ignored; a class folder without images is an error (it would
    silently shift every class code after it).
    """

    def __init__(self, spec: DatasetSpec):
        root = Path(spec.path)
        if not root.exists():
            raise FileNotFoundError(f"image folder {root} does not exist")
        if not root.is_dir():
            raise ValueError(f"{root} is not a folder (expected one subfolder per class)")
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise ValueError(f"image folder {root} has no class subfolders (expected {root}/<class>/<image>.png)")
        paths, codes = [], []
        for code, name in enumerate(classes):
            files = sorted(
                p for p in (root / name).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not files:
                raise ValueError(
                    f"class folder {root / name} holds no images (suffixes {', '.join(IMAGE_SUFFIXES)}); "
                    "remove it or add images"
                )
            paths += files
            codes += [code] * len(files)
        if spec.limit is not None:
            paths, codes = paths[: spec.limit], codes[: spec.limit]
        self.root = root
        self.paths = paths
        self.ids = np.array([str(p.relative_to(root)) for p in paths], dtype=object)
        self.labels = {"label": Label(np.array(codes, dtype=np.int16), classes)}
        self.description = f"image folder {root}, {len(paths)} images in {len(classes)} classes"

    def _read(self, indices):
        return [_decode(self.paths[i], str(self.ids[i]), i) for i in indices]


class HuggingFaceSource(ImageSource):
    """A ``datasets.Dataset`` saved with ``save_to_disk`` (or a ``DatasetDict``: pick ``split``).

    Images are decoded here, not by ``datasets``, so that a corrupt one is reported and skipped.
    """

    def __init__(self, spec: DatasetSpec):
        try:
            import datasets
        except ImportError as err:
            raise ImportError("Hugging Face datasets need the `datasets` package: pip install datasets") from err
        path = Path(spec.path)
        if not path.exists():
            raise FileNotFoundError(f"no saved Hugging Face dataset at {path}")
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            splits = list(loaded)
            split = spec.split or (splits[0] if len(splits) == 1 else None)
            if split not in loaded:
                raise KeyError(f"{path} holds splits {', '.join(splits)}; choose one with split= (got {spec.split!r})")
            loaded = loaded[split]
        columns = list(loaded.column_names)
        _require_column(spec.image_column, columns, path, "image")
        if spec.limit is not None:
            loaded = loaded.select(range(min(spec.limit, len(loaded))))
        features = loaded.features
        label_columns = spec.label_columns
        if label_columns is None:
            label_columns = [c for c in columns if isinstance(features[c], datasets.ClassLabel)]
            if not label_columns:
                raise ValueError(f"{path} has no ClassLabel column; name the label columns (columns: {', '.join(columns)})")
        self.labels = {}
        for column in label_columns:
            _require_column(column, columns, path, "label")
            self.labels[column] = _hf_label(loaded[column], features[column], column)
        if spec.caption_column is not None:
            _require_column(spec.caption_column, columns, path, "caption")
            self.captions = np.array([str(c) for c in loaded[spec.caption_column]], dtype=object)
        self._images = loaded.cast_column(spec.image_column, datasets.Image(decode=False))
        self.image_column = spec.image_column
        self.ids = np.array([f"{path.name}[{i}]" for i in range(len(loaded))], dtype=object)
        self.description = f"Hugging Face dataset {path}, {len(loaded)} images, labels {', '.join(self.labels)}"

    def _read(self, indices):
        import io

        out = []
        for i in indices:
            item = self._images[i][self.image_column]
            if item is None:
                out.append(Failure(i, str(self.ids[i]), "no image in this row"))
                continue
            data = item.get("bytes")
            target = io.BytesIO(data) if data is not None else item.get("path")
            out.append(_decode(target, str(self.ids[i]), i))
        return out


def _hf_label(values, feature, column: str) -> Label:
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return Label(np.asarray(values, dtype=np.int16), list(feature.names))
    values = list(values)
    if any(isinstance(v, (list, dict)) for v in values):
        raise ValueError(f"label column {column!r} holds lists or dicts; a label must be one value per image")
    classes = sorted({str(v) for v in values})
    lookup = {name: code for code, name in enumerate(classes)}
    return Label(np.array([lookup[str(v)] for v in values], dtype=np.int16), classes)


def _require_column(column: str, columns: list[str], path, what: str) -> None:
    if column not in columns:
        raise KeyError(f"{what} column {column!r} is not in {path}; its columns are: {', '.join(columns)}")


def _decode(target, image_id: str, index: int):
    """A file (path or file object) as an RGB uint8 array, or a :class:`Failure` saying why not."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(target) as image:
            image.load()  # decode now: a truncated file fails here, not later
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        return Failure(index, image_id, f"unreadable image ({type(err).__name__}: {err})")


def _fit(image: np.ndarray, size: int) -> np.ndarray:
    """An RGB uint8 image resized to ``size`` x ``size`` (bicubic, as image classifiers do)."""
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.shape[:2] == (size, size):
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))


def open_source(spec: DatasetSpec) -> ImageSource:
    """The :class:`ImageSource` a spec describes."""
    kinds = {"shapes": ShapesSource, "shapes-store": ShapesStoreSource, "folder": FolderSource, "hf": HuggingFaceSource}
    return kinds[spec.kind](spec)
