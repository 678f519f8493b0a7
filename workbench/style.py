"""The figure style every notebook, the demo report and the CLI's HTML share: figures that fit a
notebook's width, titles wrapped to that width, titled axes and colour bars, one line under the
title saying how to read the figure, tables rounded to three digits, and no warnings on stderr.

The lowest layer of the package (plotly and pandas only), so that ``report`` and everything above
it can use it."""

from __future__ import annotations

import logging
import os
import textwrap
import warnings

import pandas as pd
import plotly.graph_objects as go

# JupyterLab's default notebook column is about 1000 px wide with its prompt gutter: a figure at
# most this wide never gets a horizontal scrollbar there, nor in the report's page.
PAGE_WIDTH = 900
TITLE_FONT = 14
NOTE_FONT = 11
_PX_PER_CHAR = 0.55  # average glyph width of the default sans font, per px of font size
DIGITS = 3


def wrap(text: str, width_px: int, font_px: int = TITLE_FONT) -> str:
    """``text`` broken into lines (``<br>``) that fit ``width_px`` at ``font_px``."""
    chars = max(12, int(width_px / (font_px * _PX_PER_CHAR)))
    return "<br>".join(textwrap.wrap(str(text), chars)) if text else ""


def style(fig: go.Figure, *, title: str, how_to_read: str, x_title: str | None = None, y_title: str | None = None,
          colorbar_title: str | None = None, width: int | None = None, height: int | None = None) -> go.Figure:
    """Give ``fig`` the shared look: width capped at the page, title and the one-line reading guide
    wrapped to that width above the plot, axis titles, and a title on every colour bar.

    ``how_to_read`` is required: a figure a reader cannot decode is not finished."""
    if not how_to_read:
        raise ValueError("how_to_read: say in one line how to read this figure (what a bright cell or a high line means)")
    width = min(width or fig.layout.width or PAGE_WIDTH, PAGE_WIDTH)
    heading = wrap(title, width - 20)
    note = wrap(how_to_read, width - 20, NOTE_FONT)
    lines_title, lines_note = heading.count("<br>") + 1, note.count("<br>") + 1
    top = 20 + int(lines_title * TITLE_FONT * 1.35 + lines_note * NOTE_FONT * 1.4) + 16
    margin = fig.layout.margin
    fig.update_layout(
        title=dict(text=f"{heading}<br><span style='font-size:{NOTE_FONT}px;color:#555'>{note}</span>",
                   font=dict(size=TITLE_FONT), x=0.01, xanchor="left", y=1.0, yref="container", yanchor="top",
                   # plotly anchors a multi-line title 13 px above its pad: pad 10 cut 3 px off the
                   # first line in Chromium (tests/test_browser.py measures it); 16 leaves 3 px
                   pad=dict(t=16)),
        width=width, margin=dict(l=margin.l if margin.l is not None else 50, r=margin.r if margin.r is not None else 10,
                                 t=top, b=margin.b if margin.b is not None else 40),
    )
    if height is not None:
        fig.update_layout(height=height + top)
    if x_title is not None:
        fig.update_xaxes(title_text=x_title)
    if y_title is not None:
        fig.update_yaxes(title_text=y_title)
    if colorbar_title is not None:
        fig.update_traces(colorbar=dict(title=dict(text=colorbar_title, side="right")),
                          selector=lambda trace: hasattr(trace, "colorbar"))
        fig.update_coloraxes(colorbar_title_text=colorbar_title)
    return fig


def table(frame: pd.DataFrame | pd.Series, digits: int = DIGITS) -> pd.DataFrame:
    """A table as a notebook shows it: floats rounded to ``digits``, a Series made a one-column frame."""
    if isinstance(frame, pd.Series):
        frame = frame.to_frame()
    return frame.round(digits)


def quiet() -> None:
    """No library warnings or logging on stderr: a notebook's outputs are its figures and tables.
    Call once at the top of a notebook (the CLI keeps its progress bars).

    Progress bars: tqdm reads ``TQDM_DISABLE`` once, when it is first imported, so the variable set
    here reaches only processes started later; workbench functions that show a bar take
    ``progress=False`` for notebooks."""
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ["TQDM_DISABLE"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    for name in ("transformers", "diffusers", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(transformers|diffusers|torch)\b")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
