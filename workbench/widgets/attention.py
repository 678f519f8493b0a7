"""The attention explorer: per-word maps over the generated image, block masses, and a diff of
two prompts, driven by layer / head / step / branch / sample / word controls.

Layout (one plotly FigureWidget below the controls)::

    [ map A over image A ] [ map B over image B ] [ A - B ] [ block mass bars, A and B ]

B is a second recording (``compare=``) or, by default, another sample of the same recording;
with a single sample and nothing to compare, only map A and the bars are shown.
"""

from __future__ import annotations

import html
from typing import Mapping

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import xarray as xr
from plotly.subplots import make_subplots

from ..attention.maps import resize
from .pictures import grid_placement, png_data_uri
from .sources import AttentionSource, StepSummary, default_word

MEAN_HEAD = -1
_MAP_COLORS = "Inferno"
_DIFF_COLORS = "RdBu_r"


def _as_images(images, n_samples: int, what: str) -> np.ndarray | None:
    """Validate ``images``: (sample, H, W, 3) floats in [0, 1]; one (H, W, 3) image is a sample."""
    if images is None:
        return None
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] not in (3, 4):
        raise ValueError(f"{what}: expected an array (sample, height, width, 3), got shape {images.shape}")
    if images.shape[0] != n_samples:
        raise ValueError(f"{what}: {images.shape[0]} images for a recording of {n_samples} samples")
    return images


class AttentionExplorer(widgets.VBox):
    """Interactive attention maps. ``controls`` maps a name to its ipywidget (layer, head, step,
    branch, sample, word, for a video recording frame, and, when comparing, sample_b, word_b);
    ``figure`` is the FigureWidget; ``maps`` holds the arrays last drawn ("A", "B", "A-B": (y, x)
    of the chosen frame, or None)."""

    def __init__(self, recording: Mapping[str, xr.DataArray], images=None, compare: Mapping[str, xr.DataArray] | None = None,
                 compare_images=None):
        self.source = AttentionSource(recording)
        self.images = _as_images(images, self.source.n_samples, "images")
        if compare is not None:
            self.compare_source = AttentionSource(compare)
            self.compare_images = _as_images(compare_images, self.compare_source.n_samples, "compare_images")
        elif self.source.n_samples > 1:  # two prompts of one recording
            self.compare_source, self.compare_images = self.source, self.images
        else:
            self.compare_source, self.compare_images = None, None
        self.comparing = self.compare_source is not None
        self.maps: dict[str, np.ndarray | None] = {}
        self._updating = False  # set while options are rewritten, so cascaded events do not redraw
        self._followed_word = None  # word A when B's word last followed it
        self._b_note = ""
        self.controls = self._build_controls()
        self.status = widgets.HTML()
        self.figure = self._build_figure()
        super().__init__(children=self._layout())
        self._refresh_options()
        self._draw_images()
        self._render()
        for control in self.controls.values():
            control.observe(self._on_change, names="value")

    # -- construction -----------------------------------------------------------------------------
    def _build_controls(self) -> dict[str, widgets.Widget]:
        src = self.source
        wide = widgets.Layout(width="420px")
        controls = {
            "layer": widgets.Dropdown(options=src.layer_names, description="layer", layout=widgets.Layout(width="520px")),
            "head": widgets.Dropdown(options=[("mean", MEAN_HEAD)], description="head", layout=widgets.Layout(width="180px")),
            "branch": widgets.Dropdown(options=src.branches, value=src.default_branch(), description="branch",
                                       layout=widgets.Layout(width="200px"), disabled=len(src.branches) < 2),
            "step": widgets.IntSlider(value=0, min=0, max=len(src.steps) - 1, description="step", continuous_update=False,
                                      layout=wide, disabled=len(src.steps) < 2),
            "sample": widgets.Dropdown(options=[(src.sample_label(i), i) for i in range(src.n_samples)],
                                       description="sample A" if self.comparing else "sample", layout=wide),
            "word": widgets.Dropdown(options=[], description="word A" if self.comparing else "word",
                                     layout=widgets.Layout(width="240px")),
        }
        if src.frames:  # a video model: one map per latent frame
            controls["frame"] = widgets.IntSlider(value=0, min=0, max=src.frames - 1, description="frame",
                                                  continuous_update=True, layout=wide, disabled=src.frames < 2)
        if self.comparing:
            other = self.compare_source
            first_b = 0 if other is not src else 1
            controls["sample_b"] = widgets.Dropdown(options=[(other.sample_label(i), i) for i in range(other.n_samples)],
                                                    value=first_b, description="sample B", layout=wide)
            controls["word_b"] = widgets.Dropdown(options=[], description="word B", layout=widgets.Layout(width="240px"))
        return controls

    def _layout(self) -> list[widgets.Widget]:
        c = self.controls
        self._timestep_label = widgets.Label()
        rows = [
            widgets.HBox([c["layer"], c["head"], c["branch"]]),
            widgets.HBox([c["step"], self._timestep_label]),
            widgets.HBox([c["sample"], c["word"]]),
        ]
        if "frame" in c:
            rows.insert(2, c["frame"])
        if self.comparing:
            rows.append(widgets.HBox([c["sample_b"], c["word_b"]]))
        return rows + [self.figure, self.status]

    def _build_figure(self) -> go.FigureWidget:
        """Map panels, then the block-mass bars, on hand-set domains: each colour bar gets room of
        its own instead of overlapping the next panel (make_subplots spaces panels evenly)."""
        if self.comparing:
            panels = {"A": (0.0, 0.2), "B": (0.22, 0.42), "A-B": (0.49, 0.69), "bars": (0.79, 1.0)}
        else:
            panels = {"A": (0.0, 0.45), "bars": (0.6, 1.0)}
        fig = make_subplots(rows=1, cols=len(panels))
        map_panels = ["A", "B"] if self.comparing else ["A"]
        for col, panel in enumerate(map_panels, start=1):
            fig.add_trace(go.Image(name=f"image {panel}", visible=False, hoverinfo="skip"), row=1, col=col)
            fig.add_trace(go.Heatmap(name=f"map {panel}", colorscale=_MAP_COLORS, zmin=0, showscale=False,
                                     hovertemplate="y %{y:.0f}, x %{x:.0f}: %{z:.4f}<extra></extra>"), row=1, col=col)
        if self.comparing:
            fig.add_trace(go.Heatmap(name="map A-B", colorscale=_DIFF_COLORS, zmid=0,
                                     colorbar=dict(x=panels["A-B"][1] + 0.005, thickness=10, len=0.8),
                                     hovertemplate="y %{y:.0f}, x %{x:.0f}: %{z:+.4f}<extra></extra>"), row=1, col=3)
        # A and B share one colour scale; its bar sits right of the last map panel.
        fig.update_traces(selector=dict(name=f"map {map_panels[-1]}"), showscale=True,
                          colorbar=dict(x=panels[map_panels[-1]][1] + 0.005, thickness=10, len=0.8))
        for panel, color in zip(map_panels, ("#636efa", "#ef553b")):
            fig.add_trace(go.Bar(name=f"mass {panel}", marker_color=color, showlegend=self.comparing,
                                 hovertemplate="%{x}: %{y:.3f}<extra>" + panel + "</extra>"), row=1, col=len(panels))
        titles = []
        for col, (panel, domain) in enumerate(panels.items(), start=1):
            axis = "" if col == 1 else str(col)
            fig.layout[f"xaxis{axis}"].domain = domain
            if panel != "bars":
                fig.layout[f"xaxis{axis}"].update(visible=False, constrain="domain")
                fig.layout[f"yaxis{axis}"].update(visible=False, autorange="reversed", scaleanchor=f"x{axis}",
                                                  constrain="domain")
            else:
                # Block names on two lines read flat, where slanted labels would crowd the legend.
                blocks = self.source.blocks
                fig.layout[f"xaxis{axis}"].update(tickvals=list(blocks), ticktext=[b.replace("->", " →<br>") for b in blocks])
                fig.layout[f"yaxis{axis}"].update(range=[0, 1])
            titles.append(dict(text=panel, x=(domain[0] + domain[1]) / 2, y=1.0, xref="paper", yref="paper",
                               xanchor="center", yanchor="bottom", showarrow=False, font=dict(size=14)))
        titles[-1]["text"] = "block mass (share of attention)"
        bars = panels["bars"]
        fig.update_layout(annotations=titles, height=400, width=1050 if self.comparing else 640, barmode="group", bargap=0.25,
                          margin=dict(l=10, r=10, t=40, b=40),
                          legend=dict(orientation="h", x=(bars[0] + bars[1]) / 2, xanchor="center", y=-0.18, yanchor="top"))
        return go.FigureWidget(fig)

    # -- events -----------------------------------------------------------------------------------
    def _on_change(self, change) -> None:
        if self._updating:
            return
        self._refresh_options()
        if change["owner"] in (self.controls["sample"], self.controls.get("sample_b")):
            self._draw_images()
        self._render()

    def _refresh_options(self) -> None:
        """Make head and word choices match the chosen layer and samples, keeping the current choice
        where it still exists (B's word follows A's when B has it)."""
        c, src = self.controls, self.source
        self._updating = True
        try:
            heads = src.heads(c["layer"].value)
            _set_options(c["head"], [("mean", MEAN_HEAD)] + [(str(h), h) for h in range(heads)])
            words_a = self._summary_a().words
            _set_options(c["word"], words_a, default=default_word(words_a))
            if self.comparing:
                summary_b = self._summary_b()
                words_b = summary_b.words if summary_b is not None else []
                word_a = c["word"].value
                _set_options(c["word_b"], words_b, default=word_a if word_a in words_b else default_word(words_b))
                if word_a != self._followed_word and word_a in words_b:
                    c["word_b"].value = word_a  # A's word changed: B follows when it has the word
                self._followed_word = word_a
        finally:
            self._updating = False

    # -- drawing ----------------------------------------------------------------------------------
    def _summary_a(self) -> StepSummary:
        c = self.controls
        return self.source.summary(c["layer"].value, c["sample"].value, c["branch"].value, c["step"].value)

    def _summary_b(self) -> StepSummary | None:
        """B's summary at the same layer/step/branch; None (with a note) where B lacks them."""
        c, other = self.controls, self.compare_source
        layer, step = c["layer"].value, c["step"].value
        self._b_note = ""
        if layer not in other.layer_names:
            self._b_note = f"B has no layer {layer}"
            return None
        if step >= len(other.steps):
            self._b_note = f"B has only {len(other.steps)} steps"
            return None
        branch = c["branch"].value if c["branch"].value in other.branches else other.default_branch()
        return other.summary(layer, c["sample_b"].value, branch, step)

    def _draw_images(self) -> None:
        c = self.controls
        panels = [("A", self.images, c["sample"].value)]
        if self.comparing:
            panels.append(("B", self.compare_images, c["sample_b"].value))
        with self.figure.batch_update():
            for panel, images, sample in panels:
                trace = self._trace(f"image {panel}")
                trace.visible = images is not None
                if images is not None:
                    trace.source = png_data_uri(images[sample])

    def _render(self) -> None:
        c = self.controls
        head = c["head"].value
        frame = c["frame"].value if "frame" in c else None
        summary_a = self._summary_a()
        map_a = _word_map(summary_a, head, c["word"].value, frame)
        mass = {"A": _block_mass(summary_a, head)}
        map_b = diff = None
        notes = []
        if summary_a.maps is None:
            notes.append(f"this layer has no {self.source.visual}->text attention, so no word maps (block masses only)")
        if self.comparing:
            summary_b = self._summary_b()
            if summary_b is None:
                notes.append(self._b_note)
            else:
                head_b = head if head < summary_b.mass.shape[0] else MEAN_HEAD
                map_b = _word_map(summary_b, head_b, c["word_b"].value, frame)
                mass["B"] = _block_mass(summary_b, head_b)
                if map_a is not None and map_b is not None:
                    diff = map_a - (resize(map_b, map_a.shape) if map_b.shape != map_a.shape else map_b)
        self.maps = {"A": map_a, "B": map_b, "A-B": diff}
        top = max([float(np.nanmax(m)) for m in (map_a, map_b) if m is not None] + [1e-6])
        with self.figure.batch_update():
            self._draw_map("A", map_a, self.images, c["sample"].value, top)
            if self.comparing:
                self._draw_map("B", map_b, self.compare_images, c["sample_b"].value, top)
                trace = self._trace("map A-B")
                trace.visible = diff is not None
                if diff is not None:
                    bound = max(float(np.abs(diff).max()), 1e-6)
                    trace.update(z=diff, zmin=-bound, zmax=bound)
            self._draw_bars(mass)
            self._draw_titles()
        step = c["step"].value
        # The slider counts recorded steps; say which run step that is when only some were recorded.
        recorded = self.source.steps[step]
        prefix = f"run step {recorded} · " if self.source.steps != list(range(len(self.source.steps))) else ""
        self._timestep_label.value = f"{prefix}t = {self.source.timesteps[step]:.1f}"
        self.status.value = self._status_html(notes)

    def _draw_map(self, panel: str, grid: np.ndarray | None, images, sample: int, top: float) -> None:
        trace = self._trace(f"map {panel}")
        trace.visible = grid is not None
        if grid is None:
            return
        image_shape = images.shape[1:3] if images is not None else None
        trace.update(z=grid, zmax=top, opacity=0.6 if images is not None else 1.0, **grid_placement(grid.shape, image_shape))

    def _draw_bars(self, mass: dict[str, np.ndarray]) -> None:
        blocks = self.source.blocks
        present = [i for i in range(len(blocks)) if any(not np.isnan(m.ravel()[i]) for m in mass.values())]
        for panel, values in mass.items():
            trace = self._trace(f"mass {panel}")
            trace.update(x=[blocks[i] for i in present], y=[float(values.ravel()[i]) for i in present])
        if self.comparing and "B" not in mass:
            self._trace("mass B").update(x=[], y=[])

    def _draw_titles(self) -> None:
        c = self.controls
        titles = [f'A: "{c["word"].value}"' if c["word"].value else "A"]
        if self.comparing:
            titles += [f'B: "{c["word_b"].value}"' if c["word_b"].value else "B", "A − B"]
        else:
            titles = [f'"{c["word"].value}"' if c["word"].value else "attention"]
        for annotation, text in zip(self.figure.layout.annotations, titles):
            annotation.text = text

    def _status_html(self, notes: list[str]) -> str:
        c = self.controls
        step = c["step"].value
        head = "mean over heads" if c["head"].value == MEAN_HEAD else f"head {c['head'].value}"
        frame = f"frame {c['frame'].value} of {self.source.frames} · " if "frame" in c else ""
        lines = [f"<b>{c['layer'].value}</b> · step {self.source.steps[step]} (t = {self.source.timesteps[step]:.1f}) · "
                 f"{frame}{head} · branch {c['branch'].value}",
                 f"A: {html.escape(self.source.prompts[c['sample'].value])}"]
        if self.comparing:
            lines.append(f"B: {html.escape(self.compare_source.prompts[c['sample_b'].value])}")
        lines.append("maps: share of each image patch's attention that goes to the word's tokens")
        lines += [f"<i>{html.escape(n)}</i>" for n in notes if n]
        return "<br>".join(lines)

    def _trace(self, name: str):
        return next(t for t in self.figure.data if t.name == name)


def _word_map(summary: StepSummary, head: int, word, frame: int | None = None) -> np.ndarray | None:
    """The (y, x) map of ``word`` for ``head``; of one ``frame`` when the maps are a video's."""
    if summary.maps is None or word not in summary.words:
        return None
    per_head = summary.maps[:, summary.words.index(word)]
    if per_head.ndim == 4:  # (head, frame, y, x)
        per_head = per_head[:, frame or 0]
    return per_head.mean(axis=0) if head == MEAN_HEAD or per_head.shape[0] == 1 else per_head[head]


def _block_mass(summary: StepSummary, head: int) -> np.ndarray:
    mass = summary.mass
    return mass.mean(axis=0) if head == MEAN_HEAD or head >= mass.shape[0] else mass[head]


def _set_options(dropdown: widgets.Dropdown, options: list, default=None) -> None:
    """Replace a dropdown's options, keeping its value if it is still offered."""
    values = [o[1] if isinstance(o, tuple) else o for o in options]
    if list(dropdown.options) == list(options):
        return
    keep = dropdown.value if dropdown.value in values else (default if default in values else (values[0] if values else None))
    dropdown.options = options
    dropdown.value = keep


def attention(recording: Mapping[str, xr.DataArray], images=None, compare: Mapping[str, xr.DataArray] | None = None,
              compare_images=None) -> AttentionExplorer:
    """An interactive attention explorer for a recording (a ``Recording``, ``open_recording``'s dict,
    ``Recording.dataset``, or any mapping site -> DataArray) holding attention probabilities.

    ``images`` (sample, H, W, 3) in [0, 1] puts each map over its generated image. ``compare`` is a
    second recording (with ``compare_images``) to diff against; without it, two samples of the
    same recording are compared when there are several.
    """
    return AttentionExplorer(recording, images=images, compare=compare, compare_images=compare_images)
