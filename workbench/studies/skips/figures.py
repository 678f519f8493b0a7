"""Figures for docs/skips.md from the saved study results (no model runs).

    python -m workbench.studies.skips.figures [--results docs/results] [--img docs/img]

Writes ``skips_similarity.png`` (step x step cosine similarity of every block output, both models,
rendered with PIL so no plotting backend is needed) into ``--img`` and ``skips_figures.html``
(the same heatmaps, the spectra per step and the relative change, interactive plotly) into
``--results``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import plotly.express as px
import xarray as xr
from PIL import Image, ImageDraw

from ...report import label_facets
from ...results import results_dir


def _colour(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """A blue (low) - white - red (high) colour map, as uint8 RGB."""
    t = np.clip((values - low) / (high - low), 0, 1)[..., None]
    blue, white, red = np.array([33, 102, 172]), np.array([247, 247, 247]), np.array([178, 24, 43])
    rgb = np.where(t < 0.5, blue + (white - blue) * (t / 0.5), white + (red - white) * ((t - 0.5) / 0.5))
    return rgb.astype(np.uint8)


def similarity_png(dynamics: dict[str, xr.Dataset], path: Path, cell: int = 8, low: float = 0.0) -> None:
    """One row per model, one tile per block output; colour from ``low`` (blue) to 1 (red)."""
    rows = list(dynamics.items())
    n_steps = max(ds.sizes["step"] for _, ds in rows)
    tile, pad, label = n_steps * cell, 14, 26
    width = max(ds.sizes["site"] for _, ds in rows) * (tile + pad) + pad
    height = len(rows) * (tile + 2 * label) + pad
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for r, (name, ds) in enumerate(rows):
        top = pad + r * (tile + 2 * label)
        draw.text((pad, top), f"{name}: step x step cosine similarity of block outputs (blue <= {low:g}, white {(low + 1) / 2:g}, red 1; steps left to right, top to bottom)", fill="black")
        for s, site in enumerate(ds.site.values):
            left = pad + s * (tile + pad)
            rgb = _colour(ds.similarity.sel(site=site).values, low, 1.0)
            block = Image.fromarray(rgb).resize((tile, tile), Image.NEAREST)
            image.paste(block, (left, top + label))
            short = str(site).replace("transformer_blocks.", "blk ").replace("_blocks.", " ").replace(".out", "")
            draw.text((left, top + label + tile + 2), short, fill="black")
    image.save(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default=str(results_dir()))
    parser.add_argument("--img", default="docs/img")
    args = parser.parse_args(argv)
    results, img = Path(args.results), Path(args.img)
    dynamics = {k: xr.Dataset.from_dict(v) for k, v in json.loads((results / "skips_dynamics.json").read_text()).items()}
    spectra = {k: xr.Dataset.from_dict(v) for k, v in json.loads((results / "skips_spectra.json").read_text()).items()}
    similarity_png(dynamics, img / "skips_similarity.png")
    figures = []
    for name, ds in dynamics.items():
        fig = px.imshow(ds.similarity.values, facet_col=0, facet_col_wrap=4, zmin=-1, zmax=1,
                        color_continuous_scale="RdBu_r", title=f"{name}: step x step cosine similarity")
        label_facets(fig, [str(site) for site in ds.site.values])  # plotly lists wrapped facets bottom row first
        figures.append(fig)
        change = ds.relative_change.to_pandas().T.reset_index().melt(id_vars="step", var_name="site", value_name="change")
        figures.append(px.line(change, x="step", y="change", color="site",
                               title=f"{name}: relative change ||f_t - f_(t-1)|| / ||f_t|| per block output"))
    for name, ds in spectra.items():
        frame = ds.low_of_ac.mean("resnet").to_dataframe().reset_index()
        figures.append(px.line(frame, x="step", y="low_of_ac", color="kind", facet_col="stage",
                               title=f"{name}: low-frequency share of the varying energy, backbone vs skip, per decoder stage"))
    html = "\n".join(f.to_html(full_html=False, include_plotlyjs="cdn" if i == 0 else False, div_id=f"skips-{i}") for i, f in enumerate(figures))
    (results / "skips_figures.html").write_text(f"<html><body>{html}</body></html>")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
