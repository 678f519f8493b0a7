"""Plotly figures of a recording and a self-contained HTML report built from them."""

from __future__ import annotations

import html
import re
import textwrap
from pathlib import Path

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import xarray as xr
from plotly.subplots import make_subplots

from .style import PAGE_WIDTH, style


# Words that carry no object, colour, shape or place of their own: a map of where "the" attends
# says nothing about the picture, and the report has room for the words that do.
STOP_WORDS = frozenset({"a", "an", "the", "and", "of", "in", "on", "at", "to", "with", "is", "are", "its"})
TILE = 130  # px per image in a word-map row


def content_words(words) -> list[str]:
    """``words`` without stop words and punctuation, in order."""
    return [str(w) for w in words if str(w).lower().strip('"') not in STOP_WORDS and any(c.isalnum() for c in str(w))]


def averaged(maps: xr.DataArray, patches: str = "image patch") -> str:
    """One line saying what a word map averages (from the attrs ``word_maps`` sets)."""
    steps, heads = maps.attrs.get("steps"), maps.attrs.get("heads")
    n_steps = f"{len(steps)} steps" if isinstance(steps, list) else "all steps"
    n_heads = f"{len(heads)} heads" if isinstance(heads, list) else "heads averaged when recorded"
    layers = maps.attrs.get("layers", "?")
    return (f"Each map: attention from every {patches} to that word, averaged over {layers} layers, {n_steps} and "
            f"{n_heads} ({maps.attrs.get('branch', 'cond')} branch), scaled to sum to one over the "
            f"{'video' if 'video' in patches else 'image'}.")


def word_map_figure(image: np.ndarray, maps: xr.DataArray, title: str = "", per_row: int | None = None) -> go.Figure:
    """The generated image, then each content word's attention map, in rows that fit the page,
    each map with its own colour bar (where the word attends, not how much it gets)."""
    words = content_words(maps.word.values)
    if not words:
        raise ValueError(f"no content words among {list(maps.word.values)}: nothing to map")
    per_row = per_row or max(2, (PAGE_WIDTH - 20) // (TILE + 40))
    panels = len(words) + 1
    rows = -(-panels // per_row)
    cols = min(per_row, panels)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=["image"] + [f'"{w}"' for w in words],
                        horizontal_spacing=0.6 / cols, vertical_spacing=0.12 / rows)
    pixels = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    fig.add_trace(go.Image(z=pixels), row=1, col=1)
    h, w = image.shape[:2]
    for i, word in enumerate(words, start=1):
        row, col = divmod(i, cols)
        heat = _upsample(maps.sel(word=word).values, (h, w))
        domain = fig.get_subplot(row + 1, col + 1).xaxis.domain
        fig.add_trace(go.Heatmap(z=heat, colorscale="Inferno", hovertemplate="y %{y}, x %{x}: %{z:.4f}<extra></extra>",
                                 colorbar=dict(x=domain[1] + 0.005, xanchor="left", len=0.85 / rows, thickness=8,
                                               y=1 - (row + 0.5) / rows, yanchor="middle", tickfont=dict(size=8),
                                               nticks=3, title=dict(text="share", side="right", font=dict(size=9)))),
                      row=row + 1, col=col + 1)
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x", constrain="domain")
    for axis in range(2, panels + 1):  # every panel square, not stretched to its cell
        fig.update_layout({f"yaxis{axis}": dict(scaleanchor=f"x{axis}")})
    fig.update_annotations(font_size=11)
    return style(fig, title=title, how_to_read=averaged(maps) + " Brighter: more of that word's attention.",
                 width=min(PAGE_WIDTH, cols * (TILE + 45) + 20), height=rows * (TILE + 30))


def video_word_map_figure(maps: xr.DataArray, title: str = "", max_words: int = 6, tile: int = 110) -> go.Figure:
    """A video model's word maps (word, frame, y, x): one row per content word, one column per
    latent frame, all on one colour range so frames compare (where in time the word's attention goes)."""
    if tuple(maps.dims) != ("word", "frame", "y", "x"):
        raise ValueError(f"expected video word maps with dims (word, frame, y, x), got {tuple(maps.dims)}; "
                         "image maps (word, y, x) go to word_map_figure")
    words = content_words(maps.word.values)[:max_words]
    if not words:
        raise ValueError(f"no content words among {list(maps.word.values)}: nothing to map")
    frames = maps.sizes["frame"]
    fig = make_subplots(rows=len(words), cols=frames, horizontal_spacing=0.01, vertical_spacing=0.04,
                        column_titles=[f"frame {f}" for f in range(frames)], row_titles=[f'"{w}"' for w in words])
    top = float(maps.sel(word=words).max())
    for row, word in enumerate(words, start=1):
        for col in range(frames):
            fig.add_trace(go.Heatmap(z=maps.sel(word=word).isel(frame=col).values, colorscale="Inferno", zmin=0, zmax=top,
                                     showscale=row == 1 and col == 0, colorbar=dict(thickness=10, len=0.8),
                                     hovertemplate=f"{word}, frame {col}, " + "y %{y}, x %{x}: %{z:.4f}<extra></extra>"),
                          row=row, col=col + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    fig.update_layout(margin=dict(l=5, r=60, b=5))
    return style(fig, title=title, colorbar_title="share",
                 how_to_read=averaged(maps, "video patch") + " One colour range for all panels: brighter is more.",
                 width=tile * frames + 160, height=tile * len(words) + 40)


def label_facets(fig: go.Figure, labels, font_size: int | None = None) -> go.Figure:
    """Title facet ``i`` of a ``facet_col`` figure with ``labels[i]``.

    Plotly lists a wrapped facet figure's annotations bottom row first, so zipping them with the
    labels titles every row but the middle one with another row's labels; each annotation says
    which facet it belongs to (``facet_col=N``), and that is what this reads.
    """
    labels = list(labels)
    for annotation in fig.layout.annotations:
        match = re.fullmatch(r"facet_col=(\d+)", str(annotation.text))
        if match is None:
            continue
        index = int(match.group(1))
        if index >= len(labels):
            raise ValueError(f"facet {index} has no label: {len(labels)} labels given")
        annotation.text = str(labels[index])
        if font_size is not None:
            annotation.font.size = font_size
    return fig


def image_grid(images: np.ndarray, titles, cols: int, title: str = "", tile: int = 150,
               wrap: int = 24) -> go.Figure:
    """Images (N, H, W, 3) in [0, 1] in rows of ``cols``, each with its whole title, wrapped into
    lines of about ``wrap`` characters so that neighbouring titles never run into each other."""
    images = np.asarray(images)
    if len(titles) != len(images):
        raise ValueError(f"{len(images)} images but {len(titles)} titles")
    pixels = (np.clip(images, 0, 1) * 255).astype(np.uint8)
    fig = px.imshow(pixels, facet_col=0, facet_col_wrap=cols, facet_row_spacing=0.12 if len(images) > cols else 0.0,
                    facet_col_spacing=0.02)
    label_facets(fig, [textwrap.fill(str(t), wrap).replace("\n", "<br>") for t in titles], font_size=10)
    rows = -(-len(images) // cols)
    lines = max(str(a.text).count("<br>") + 1 for a in fig.layout.annotations)
    width = tile * cols + 40
    title = textwrap.fill(title, max(20, width // 9)).replace("\n", "<br>")  # about 8 px a character at size 14
    top = 40 + 20 * (title.count("<br>") + 1) + 14 * lines
    fig.update_layout(title=dict(text=title, font=dict(size=14), x=0.02, xanchor="left", yref="container", y=1.0,
                                 yanchor="top", pad=dict(t=12)), width=width,
                      height=rows * (tile + 14 * lines + 20) + top, margin=dict(l=10, r=10, t=top, b=10))
    fig.update_xaxes(visible=False).update_yaxes(visible=False)
    return fig


def trajectory_figure(frames: np.ndarray, timesteps, title: str = "") -> go.Figure:
    """Decoded x0 estimates over steps (frames: step, H, W, 3 in [0, 1]), with a step slider."""
    pixels = (np.clip(frames, 0, 1) * 255).astype(np.uint8)
    fig = go.Figure(go.Image(z=pixels[0]))
    fig.frames = [go.Frame(data=[go.Image(z=p)], name=str(k)) for k, p in enumerate(pixels)]
    steps = [dict(method="animate", label=f"{k} (t={float(t):.0f})",
                  args=[[str(k)], dict(mode="immediate", frame=dict(duration=0, redraw=True))])
             for k, t in enumerate(timesteps)]
    fig.update_layout(height=380, sliders=[dict(steps=steps, currentvalue=dict(prefix="step ", font=dict(size=11)),
                                                 pad=dict(t=10, l=10), font=dict(size=9))],
                      margin=dict(l=10, r=30, t=70, b=10))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return style(fig, title=title, width=420,
                 how_to_read="The model's guess of the final image at each step; drag the slider from noise (step 0) to the end.")


def energy_figure(energies: xr.DataArray, title: str = "", y_title: str = "RMS",
                  how_to_read: str = "One line per series: its value at each denoising step.") -> go.Figure:
    """Lines of a per-step quantity for several series (dims: series, step)."""
    fig = go.Figure()
    for name in energies.series.values:
        fig.add_trace(go.Scatter(x=energies.step.values, y=energies.sel(series=name).values, mode="lines+markers", name=str(name)))
    fig.update_layout(height=320, margin=dict(l=50, r=5, b=40), legend=dict(font=dict(size=10)))
    return style(fig, title=title, x_title="denoising step", y_title=y_title, width=640, how_to_read=how_to_read)


def _upsample(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    ry, rx = size[0] // grid.shape[0], size[1] // grid.shape[1]
    return np.kron(grid, np.ones((max(ry, 1), max(rx, 1))))[: size[0], : size[1]]


def write_html(path: Path, title: str, sections: list[tuple[str, list[go.Figure | str]]]) -> Path:
    """One self-contained page (plotly.js inlined once) with titled sections of figures and text."""
    parts, first = [], True
    for heading, items in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        for item in items:
            if isinstance(item, str):
                parts.append(f"<p>{item}</p>")
                continue
            parts.append(item.to_html(full_html=False, include_plotlyjs=first, auto_play=False))
            first = False
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>body{{font-family:sans-serif;margin:2em;max-width:{PAGE_WIDTH + 40}px}} h2{{border-bottom:1px solid #ccc}}</style>"
            f"</head><body><h1>{html.escape(title)}</h1>{''.join(parts)}</body></html>")
    path.write_text(page)
    return path
