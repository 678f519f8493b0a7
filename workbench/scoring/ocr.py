"""An offline OCR reader for text in any model's images.

RapidOCR (PaddleOCR's PP-OCRv4 detection and recognition networks exported to ONNX, run by
onnxruntime) ships its model files inside its wheel, so it reads text with no download at first
use and no network: what a study on an air-gapped machine needs. Why this reader and not EasyOCR,
and how accurate it is on text the project did not draw: ``docs/judge.md``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .readers import Reader, check_images, normalise

INSTALL = "pip install 'workbench[ocr]' -c constraints.txt   (rapidocr-onnxruntime)"


class OcrReader(Reader):
    """Reads the text in each image: every detected line whose recognition confidence reaches
    ``min_confidence``, top to bottom then left to right.

    ``agrees(images, expected)``: the expected text, normalised (case-blind, letters and digits
    only), equals a run of consecutive lines of the reading (one line, or several: the detector may
    split "LANTERN 42" at its space): an image that says "CAT" beside other text still says CAT,
    but "CATS" does not."""

    name = "ocr"

    def __init__(self, min_confidence: float = 0.5):
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as error:
            raise ImportError(f"the OCR scorer needs RapidOCR: {INSTALL}") from error
        self.min_confidence = min_confidence
        self.engine = RapidOCR()

    def lines(self, image: np.ndarray) -> list[str]:
        """The text lines of one (H, W, 3) image in [0, 1], in reading order."""
        bgr = np.ascontiguousarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)[..., ::-1])
        found, _ = self.engine(bgr, use_cls=False)  # generated text is upright: skip the 180-degree classifier
        kept = [(box, text) for box, text, confidence in (found or []) if float(confidence) >= self.min_confidence]
        # Reading order: by the line's top edge (rounded to a few pixels, so a slightly tilted line
        # stays one row), then by its left edge.
        kept.sort(key=lambda item: (round(min(y for _, y in item[0]) / 4), min(x for x, _ in item[0])))
        return [text for _, text in kept]

    def read(self, images: np.ndarray, where: Sequence | None = None) -> np.ndarray:
        """Per image, its lines in reading order joined by newlines ("" where none)."""
        if where is not None:
            raise ValueError("the OCR reader reads whole images; where= is for the judge")
        return np.array(["\n".join(self.lines(image)) for image in check_images(images)], dtype=object)

    def matches(self, got: str, expected) -> bool:
        return self.says(str(got).split("\n"), expected)

    @staticmethod
    def says(lines: list[str], expected) -> bool:
        """Whether text read as ``lines`` says ``expected``: one line or consecutive lines of it."""
        want = normalise(expected)
        return any(normalise("".join(lines[a:b])) == want for a in range(len(lines)) for b in range(a + 1, len(lines) + 1))
