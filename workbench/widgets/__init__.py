"""Interactive views for JupyterLab (ipywidgets controls over plotly FigureWidgets).

>>> import workbench as wb
>>> model = wb.load("tiny-sd3")
>>> with wb.record(model, ["transformer_blocks.*.attn.probs", "latent.*"]) as rec:
...     images = model.generate(["a red circle on the left", "a blue square"], steps=4)
>>> wb.widgets.attention(rec, images)      # per-word maps, block masses, prompt A vs B
>>> wb.widgets.trajectory(rec, model)      # decoded x0 prediction per step
>>> wb.widgets.SVDExplorer(session)        # singular-value sliders over an studies.svd.runs.EditSession

Both accept any mapping site -> DataArray: a live recording, ``wb.open_recording(path)`` or
``rec.dataset``. plotly's FigureWidget needs the ``anywidget`` package.
"""

from .attention import AttentionExplorer, attention
from .sources import NoAttentionError
from .svd import SVDExplorer
from .trajectory import TrajectoryViewer, trajectory

__all__ = ["AttentionExplorer", "NoAttentionError", "SVDExplorer", "TrajectoryViewer", "attention", "trajectory"]
