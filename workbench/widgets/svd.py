"""The singular-value explorer: move the top singular values of a latent at one step, see what
the model makes of it.

The widget is a view over an edit session (``workbench.studies.svd.runs.EditSession``: one prompt's
run, split per channel into singular components at every step). Sliders multiply the top
singular values (component i in every channel) by a gain; two pictures follow them: the
clean-image estimate the denoiser makes of the edited latent at the chosen step, and the final
image of the run continued from it. A second panel shows the step x step Grassmann distance
between the run's top-k subspaces (property 1 of Wang et al. 2025). Gains of exactly 1 leave
the latent untouched, so the final image is then the run's own.

>>> from workbench.studies.svd.runs import EditSession                            # doctest: +SKIP
>>> SVDExplorer(EditSession(wb.load("toy-mmdit"), "a red circle on the left"))  # doctest: +SKIP
"""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .pictures import png_data_uri


class SVDExplorer(widgets.VBox):
    """``controls``: step, one gain slider per top singular value ("gain s1" ...), the heatmap's
    k; ``figure``: x0 estimate and final image; ``heatmap``: subspace distances."""

    def __init__(self, session, step: int = 3, values: int = 4):
        if not 0 <= step < session.steps:
            raise ValueError(f"step {step} is out of range: a {session.steps}-step run has steps 0..{session.steps - 1}")
        if not 1 <= values <= session.max_rank:
            raise ValueError(f"values={values}: the latent has {session.max_rank} singular values per channel")
        self.session = session
        self.controls = {
            "step": widgets.IntSlider(value=step, min=0, max=session.steps - 1, description="step",
                                      continuous_update=False),
            **{f"s{i + 1}": widgets.FloatSlider(value=1.0, min=0.0, max=3.0, step=0.25, description=f"gain s{i + 1}",
                                                continuous_update=False, readout=True, readout_format=".2f",
                                                # wide enough that the value beside the slider is not cut off
                                                style={"description_width": "60px"}, layout=widgets.Layout(width="250px"))
                for i in range(values)},
            "k": widgets.Dropdown(options=[k for k in (1, 2, 4, 8) if k <= session.max_rank], value=1,
                                  description="heatmap k"),
        }
        self.status = widgets.HTML()
        self.figure = self._image_figure()
        self.heatmap = go.FigureWidget(go.Figure(go.Heatmap(
            colorscale="Viridis", zmin=0.0, colorbar=dict(title=dict(text="distance", side="right")))))
        self.heatmap.update_layout(height=330, width=380, margin=dict(l=40, r=10, t=40, b=40),
                                   xaxis_title="step", yaxis_title="step")
        sliders = [self.controls[f"s{i + 1}"] for i in range(values)]
        super().__init__(children=[
            widgets.HBox([self.controls["step"], self.controls["k"]]),
            widgets.HBox([widgets.VBox(sliders), self.figure, self.heatmap]),
            self.status,
        ])
        self._render()
        self._render_heatmap()
        for name, control in self.controls.items():
            callback = self._render_heatmap if name == "k" else self._render
            control.observe(lambda _change, callback=callback: callback(), names="value")

    def _image_figure(self) -> go.FigureWidget:
        fig = make_subplots(rows=1, cols=2, subplot_titles=["x0 estimate at the step", "final image"],
                            horizontal_spacing=0.04)
        for col, name in enumerate(("x0", "final"), start=1):
            fig.add_trace(go.Image(name=name, hoverinfo="skip"), row=1, col=col)
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
        fig.update_layout(height=300, width=520, margin=dict(l=10, r=10, t=40, b=10))
        return go.FigureWidget(fig)

    @property
    def gains(self) -> list[float]:
        return [control.value for name, control in self.controls.items() if name[0] == "s" and name[1:].isdigit()]

    def _render(self) -> None:
        step = self.controls["step"].value
        preview, final = self.session.pictures(step, self.gains)
        with self.figure.batch_update():
            self.figure.data[0].source = png_data_uri(preview)
            self.figure.data[1].source = png_data_uri(final)
        top = self.session.top_values(step, len(self.gains))
        self.status.value = (f"step {step} of {self.session.steps} · top singular values (mean over channels): "
                             + ", ".join(f"{s:.2f}" for s in top) + " · gains " + ", ".join(f"{g:g}" for g in self.gains))

    def _render_heatmap(self) -> None:
        k = self.controls["k"].value
        distances = self.session.distances(k)
        with self.heatmap.batch_update():
            self.heatmap.data[0].z = distances.values
            self.heatmap.data[0].x = distances["step"].values
            self.heatmap.data[0].y = distances["step"].values
            self.heatmap.data[0].zmax = float(np.sqrt(k) * np.pi / 2)
            self.heatmap.layout.title = f"Grassmann distance, top-{k} row subspaces"
