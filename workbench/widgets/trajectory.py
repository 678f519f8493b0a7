"""The latent-trajectory viewer: a step slider over what the model predicts the final image to be.

At each step the denoiser's prediction implies an estimate of the clean latent (``latent.x0``);
decoding it shows how the image forms: layout first, detail last. Beside it, when recorded, the
noisy input the denoiser saw at that step (``latent.in``). Decoding runs the VAE (or the
reference model's decoder), so it happens only for the steps actually viewed, once each.
"""

from __future__ import annotations

from typing import Mapping

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch
import xarray as xr
from plotly.subplots import make_subplots

from .pictures import png_data_uri
from ..capture.layout import plain_dims

PANELS = {"latent.in": "x_t (denoiser input)", "latent.x0": "predicted x0"}


class TrajectoryViewer(widgets.VBox):
    """Decoded latents over steps. ``controls``: step (slider), sample; ``figure``: FigureWidget
    with one image per panel (x_t if recorded, predicted x0); ``frames`` caches decoded images
    by (site, sample, step index)."""

    def __init__(self, recording: Mapping[str, xr.DataArray], model, site: str = "latent.x0"):
        if site not in recording:
            recorded = ", ".join(map(str, recording)) or "nothing"
            raise ValueError(f"the trajectory viewer needs {site!r}: record 'latent.*' (recorded: {recorded})")
        self.model = model
        self.sites = [s for s in ("latent.in",) if s in recording and s != site] + [site]
        self.arrays = {s: plain_dims(recording[s]) for s in self.sites}
        main = self.arrays[site]
        self.steps = [int(s) for s in main.step.values]
        self.timesteps = [float(t) for t in main.timestep.values] if "timestep" in main.coords else list(map(float, self.steps))
        prompts = [str(p) for p in main.prompt.values] if "prompt" in main.coords else [""] * main.sizes["sample"]
        self.frames: dict[tuple[str, int, int], np.ndarray] = {}
        self.controls = {
            "step": widgets.IntSlider(value=0, min=0, max=len(self.steps) - 1, description="step",
                                      continuous_update=False, layout=widgets.Layout(width="420px")),
            "sample": widgets.Dropdown(options=[(f"{i}: {p}" if p else str(i), i) for i, p in enumerate(prompts)],
                                       description="sample", layout=widgets.Layout(width="420px")),
        }
        self.status = widgets.HTML()
        self.figure = self._build_figure()
        super().__init__(children=[widgets.HBox([self.controls["step"], self.controls["sample"]]), self.figure, self.status])
        self._render()
        for control in self.controls.values():
            control.observe(lambda _change: self._render(), names="value")

    def _build_figure(self) -> go.FigureWidget:
        titles = [PANELS.get(s, s) for s in self.sites]
        fig = make_subplots(rows=1, cols=len(self.sites), subplot_titles=titles, horizontal_spacing=0.03)
        for col, site in enumerate(self.sites, start=1):
            fig.add_trace(go.Image(name=site, hoverinfo="skip"), row=1, col=col)
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
        fig.update_layout(height=320, width=300 * len(self.sites) + 20, margin=dict(l=10, r=10, t=40, b=10))
        return go.FigureWidget(fig)

    def frame(self, site: str, sample: int, step: int) -> np.ndarray:
        """The decoded image of ``site`` for one sample at step index ``step`` (cached)."""
        key = (site, sample, step)
        if key not in self.frames:
            array = self.arrays[site].isel(sample=[sample], step=step)
            # x0 has one 'guided' branch; the input is the same latent in every guidance branch.
            latents = array.isel(branch=-1).values
            with torch.no_grad():
                self.frames[key] = self.model.decode_latents(latents)[0]
        return self.frames[key]

    def _render(self) -> None:
        step, sample = self.controls["step"].value, self.controls["sample"].value
        with self.figure.batch_update():
            for trace in self.figure.data:
                trace.source = png_data_uri(self.frame(trace.name, sample, step))
        self.status.value = (f"step {self.steps[step]} ({step + 1} of {len(self.steps)} recorded) · "
                             f"t = {self.timesteps[step]:.1f}")


def trajectory(recording: Mapping[str, xr.DataArray], model, site: str = "latent.x0") -> TrajectoryViewer:
    """A step slider over decoded latents of ``recording`` (record ``"latent.*"``); ``model`` (a
    ``workbench.Model``) decodes them with ``model.decode_latents``."""
    from ..loading import load

    return TrajectoryViewer(recording, load(model), site=site)
