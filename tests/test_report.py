"""Figures label what they show: each facet of a wrapped grid gets its own title."""

import numpy as np
import plotly.express as px
import pytest

from workbench.report import image_grid, label_facets


def _title_at(fig, row_from_top: int, col: int) -> str:
    """The annotation text above the facet at (row, col), found by position, not by list order."""
    xs = sorted({round(a.x, 3) for a in fig.layout.annotations})
    ys = sorted({round(a.y, 3) for a in fig.layout.annotations}, reverse=True)
    (hit,) = [a for a in fig.layout.annotations if round(a.x, 3) == xs[col] and round(a.y, 3) == ys[row_from_top]]
    return hit.text


def test_label_facets_titles_each_facet_by_its_index_not_by_list_order():
    fig = px.imshow(np.zeros((8, 4, 4)), facet_col=0, facet_col_wrap=4)
    label_facets(fig, [f"image {i}" for i in range(8)])
    # facet 0 is top-left and facet 4 starts the second row; plotly lists the bottom row first,
    # so zipping annotations with labels would put "image 0" at the bottom left
    assert _title_at(fig, 0, 0) == "image 0"
    assert _title_at(fig, 1, 0) == "image 4"
    assert _title_at(fig, 1, 3) == "image 7"


def test_image_grid_keeps_whole_titles_and_refuses_a_count_mismatch():
    titles = [f'the letter "K" in yellow on the right, copy {i}' for i in range(6)]
    fig = image_grid(np.random.default_rng(0).random((6, 32, 32, 3)), titles, cols=3)
    assert [t.replace("<br>", " ") for t in (_title_at(fig, r, c) for r in range(2) for c in range(3))] == titles
    with pytest.raises(ValueError, match="6 images but 5 titles"):
        image_grid(np.zeros((6, 32, 32, 3)), titles[:5], cols=3)
    with pytest.raises(ValueError, match="facet 7 has no label"):
        label_facets(px.imshow(np.zeros((8, 4, 4)), facet_col=0, facet_col_wrap=4), ["a"] * 7)
