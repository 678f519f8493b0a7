"""Scorers: what reads a generated image back into a label, so a study can say whether an edit worked.

A study asks one question of its images ("does it show glyph B?", "does it say CAT?", "is the dog
wearing a hat?"), and the answer depends on the world the model draws. ``get_scorer`` names the
four kinds the studies take:

* ``"judge"``: the shapes-world judge (``workbench.models.judge``), for the reference models; it
  reads a shape or glyph at a scene's anchor (``where=`` the positions);
* ``"ocr"``: an offline OCR reader (RapidOCR, ONNX models inside its wheel; ``pip install
  'workbench[ocr]'``), for text in any model's images; ``docs/judge.md`` gives its accuracy;
* ``"masks:FOLDER"`` (or a ``MaskFolder``): ground-truth masks for real images, an ``images/`` and a
  ``masks/`` folder of files with the same names, for the segmentation study;
* any callable ``fn(images) -> labels``: the user's own reader, for attributes.

Readers (the judge, OCR, a callable) share one interface, ``Reader``: ``read(images, where=None)``
gives one label per image and ``agrees(images, expected, where=None)`` whether each image shows
what was expected. Images are ``(N, H, W, 3)`` floats in [0, 1], as ``Model.generate`` returns them.

Example:
    >>> from workbench.scoring import get_scorer
    >>> ocr = get_scorer("ocr")                                 # doctest: +SKIP
    >>> ocr.agrees(images, ["CAT", "DOG"])                      # doctest: +SKIP
    array([ True, False])
    >>> hat = get_scorer(lambda images: my_classifier(images))  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from .masks import MaskFolder
from .readers import CallableReader, Reader
from .shapes import JudgeReader

__all__ = ["Reader", "JudgeReader", "OcrReader", "CallableReader", "MaskFolder", "get_scorer", "SCORER_NAMES"]

#: what ``get_scorer`` takes by name (besides a callable, a Reader or a MaskFolder)
SCORER_NAMES = ("judge", "ocr", "masks:FOLDER")


def __getattr__(name: str):
    # OcrReader imports nothing heavy itself, but keeping it lazy keeps `import workbench.scoring`
    # free of the optional OCR dependency's import-time checks.
    if name == "OcrReader":
        from .ocr import OcrReader

        return OcrReader
    raise AttributeError(name)


def get_scorer(spec) -> Reader | MaskFolder:
    """The scorer ``spec`` names: ``"judge"``, ``"ocr"``, ``"masks:FOLDER"``, a callable
    ``fn(images) -> labels``, or a ``Reader`` / ``MaskFolder`` (returned as is)."""
    if isinstance(spec, (Reader, MaskFolder)):
        return spec
    if isinstance(spec, str):
        if spec == "judge":
            return JudgeReader()
        if spec == "ocr":
            from .ocr import OcrReader

            return OcrReader()
        if spec.startswith("masks:"):
            return MaskFolder(Path(spec[len("masks:"):]))
        raise ValueError(f"unknown scorer {spec!r}: valid are {', '.join(SCORER_NAMES)}, or a callable "
                         "fn(images) -> one label per image")
    if callable(spec):
        return CallableReader(spec)
    raise TypeError(f"a scorer is a name ({', '.join(SCORER_NAMES)}), a callable, a Reader or a MaskFolder, "
                    f"not {type(spec).__name__}")
