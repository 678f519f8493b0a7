"""The scorer checks study (workbench/studies/scorers/): its images (the doc tables it writes are
checked with every study's in tests/test_study_reports.py)."""

from __future__ import annotations

import numpy as np

from workbench.studies.scorers.protocol import CONDITION_NOTES, FONTS, KINDS, outside_world, render, text_of


def test_outside_world_images_are_in_range_and_differ_per_kind():
    images = outside_world(4)
    assert len(images) == 7
    for kind, batch in images.items():
        assert batch.shape == (4, 32, 32, 3) and 0 <= batch.min() and batch.max() <= 1, kind
    assert np.ptp(images["blank, random colour"], axis=(1, 2)).max() == 0
    assert images["uniform noise"].std(axis=(1, 2)).min() > 0.1


def test_texts_follow_their_kind_and_render_with_contrast():
    rng = np.random.default_rng(0)
    texts = {kind: [text_of(kind, rng) for _ in range(30)] for kind in KINDS}
    assert all(t.isupper() and t.isalpha() for t in texts["upper word"])
    assert all(t.islower() for t in texts["lower word"])
    assert all(t.isdigit() and 3 <= len(t) <= 5 for t in texts["number"])
    # codes mix letters and digits and leave out I and O (ambiguous with 1 and 0 to any reader)
    assert all(any(c.isdigit() for c in t) and any(c.isalpha() for c in t) and not set(t) & {"I", "O"}
               for t in texts["code"])
    font = next(iter(FONTS.values()))
    for condition in CONDITION_NOTES:
        image = render("HELLO", font, 24, np.random.default_rng(1), condition)
        assert image.shape == (256, 256, 3) and 0 <= image.min() and image.max() <= 1
        grey = image.mean(-1)
        assert np.percentile(grey, 99.9) - np.percentile(grey, 0.1) > 0.2, condition  # ink stands out
