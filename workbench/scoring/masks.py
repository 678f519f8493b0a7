"""Ground-truth masks from an image folder, for the segmentation study on real images.

Layout: ``FOLDER/images/NAME.EXT`` and ``FOLDER/masks/NAME.EXT``, the same NAME (extensions may
differ: png, jpg, jpeg, bmp, webp). A mask pixel is the object where it is above half the mask's
brightest value (so 0/255 and 0/1 masks both work, and anti-aliased edges split down the middle). Optionally ``FOLDER/words.txt``:
lines ``NAME<TAB>word`` naming the object each mask outlines (the word whose attention map is
scored); without it the word must be passed to the study.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class MaskFolder:
    """Image + mask pairs found in ``folder``; each mismatch is an error naming the file."""

    kind = "masks"

    def __init__(self, folder):
        self.folder = Path(folder)
        images, masks = self.folder / "images", self.folder / "masks"
        for sub in (images, masks):
            if not sub.is_dir():
                raise FileNotFoundError(f"{sub} is not a folder: a mask folder holds images/NAME.png and "
                                        "masks/NAME.png (same names)")
        found_images, found_masks = _by_stem(images), _by_stem(masks)
        lonely = sorted(set(found_images) ^ set(found_masks))
        if lonely:
            name = lonely[0]
            where = "masks/" if name in found_images else "images/"
            raise ValueError(f"{self.folder}: {name!r} has no file in {where} ({len(lonely)} unpaired in all); "
                             "every image needs a mask of the same name")
        if not found_images:
            raise ValueError(f"{self.folder}: images/ and masks/ hold no {', '.join(SUFFIXES)} files")
        self.names = sorted(found_images)
        self.image_files = [found_images[n] for n in self.names]
        self.mask_files = [found_masks[n] for n in self.names]
        self.words = _words(self.folder / "words.txt", self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"<MaskFolder {str(self.folder)!r}: {len(self)} pairs>"

    def images(self, size: int) -> np.ndarray:
        """(N, size, size, 3) floats in [0, 1], resized (bicubic) to the model's image size."""
        from PIL import Image

        return np.stack([np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BICUBIC),
                                    dtype=np.float32) / 255 for f in self.image_files])

    def masks(self, size: int) -> np.ndarray:
        """(N, size, size) bool, resized (nearest, so a mask stays binary)."""
        from PIL import Image

        out = []
        for f in self.mask_files:
            mask = np.asarray(Image.open(f).convert("L").resize((size, size), Image.NEAREST))
            out.append(mask > mask.max() / 2 if mask.max() else np.zeros(mask.shape, bool))
        return np.stack(out)


def _by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.suffix.lower() not in SUFFIXES:
            continue
        if f.stem in found:
            raise ValueError(f"{folder}: two files named {f.stem!r} ({found[f.stem].name}, {f.name})")
        found[f.stem] = f
    return found


def _words(path: Path, names: list[str]) -> dict[str, str] | None:
    if not path.exists():
        return None
    words = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        name, sep, word = line.partition("\t")
        if not sep or not word.strip():
            raise ValueError(f"{path}:{number}: expected 'NAME<TAB>word', got {line!r}")
        if name not in names:
            raise ValueError(f"{path}:{number}: {name!r} is not an image of the folder")
        words[name] = word.strip()
    return words
