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


def _maps(words):
    import xarray as xr

    rng = np.random.default_rng(0)
    return xr.DataArray(rng.random((len(words), 8, 8)), dims=("word", "y", "x"), coords={"word": words},
                        attrs={"layers": 4, "steps": [0, 1, 2], "heads": [0, 1, 2], "branch": "cond"})


def test_word_map_figure_keeps_content_words_wraps_rows_and_titles_colour_bars():
    from workbench.report import word_map_figure
    from workbench.style import PAGE_WIDTH

    words = ["a", "green", "triangle", "on", "the", "left", "and", "magenta", "cross", "right"]
    fig = word_map_figure(np.zeros((32, 32, 3)), _maps(words), title="a green triangle on the left and a magenta cross "
                                                                       "on the right: attention per word")
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["image", '"green"', '"triangle"', '"left"', '"magenta"', '"cross"', '"right"']
    assert fig.layout.width <= PAGE_WIDTH
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    assert len(heatmaps) == 6 and all(t.colorbar.title.text == "share" for t in heatmaps)
    rows = {round(fig.layout[t.yaxis.replace("y", "yaxis")].domain[0], 3) for t in heatmaps}
    assert len(rows) == 2, "seven panels do not fit one row of the page"
    assert "averaged over 4 layers, 3 steps and 3 heads" in fig.layout.title.text


def test_style_wraps_long_titles_and_requires_a_reading_guide():
    import plotly.graph_objects as go

    from workbench.style import PAGE_WIDTH, style

    fig = style(go.Figure(go.Heatmap(z=[[0, 1]])), title="word " * 60, how_to_read="Bright: more.", x_title="x",
                colorbar_title="share", width=2000)
    assert fig.layout.width == PAGE_WIDTH and fig.layout.title.text.count("<br>") >= 3
    assert fig.data[0].colorbar.title.text == "share" and fig.layout.xaxis.title.text == "x"
    with pytest.raises(ValueError, match="how_to_read"):
        style(go.Figure(), title="t", how_to_read="")
