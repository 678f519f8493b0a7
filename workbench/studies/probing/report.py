"""The probe grid tables of docs/features.md, from the grids saved by :mod:`.job`
(``probe_<model>.json``; no model or store is read here). Every peak is the cell with the best
*validation* accuracy; the figure shown is that cell's *test* accuracy (:mod:`.protocol`).

    python -m workbench.studies.probing.report                      # print the tables
    python -m workbench.studies.probing.report --update-doc         # the tables into docs/features.md
"""

from __future__ import annotations

import json

import xarray as xr

from ...analysis.probe import peaks
from ...analysis.stats import wilson
from ...results import results_dir
from ..docs import report_main
from .protocol import PIXEL_SITES, chosen_per_timestep

SHORT = {"toy-unet": "U-Net", "toy-mmdit": "MM-DiT"}


def _load(name: str) -> xr.Dataset:
    return xr.Dataset.from_dict(json.loads((results_dir() / f"probe_{name}.json").read_text()))


def _site(site: str) -> str:
    return site.removesuffix(".out.image").removesuffix(".out") if site.startswith("transformer") else site


def tables(models=tuple(SHORT)) -> str:
    grids = {m: _load(m) for m in models if (results_dir() / f"probe_{m}.json").exists()}
    if not grids:
        return "no saved probe grids"
    out = ["Where accuracy peaks: site and timestep chosen on validation, **test** accuracy shown, linear / MLP probe "
           "(chance in brackets; in parentheses the best test accuracy anywhere in the grid, which picking on test "
           "would have reported):\n",
           "| label | " + " | ".join(f"{m} ({SHORT[m]})" for m in grids) + " |",
           "| --- |" + " --- |" * len(grids)]
    first = next(iter(grids.values()))
    for label in first.label.values:
        cells = []
        for grid in grids.values():
            table = peaks(grid).set_index(["label", "probe"])
            parts = []
            for kind in ("linear", "mlp"):
                r = table.loc[(str(label), kind)]
                parts.append(f"{r.accuracy:.3f} `{_site(r.site)}` t={r.timestep} ({r.best_test:.3f})")
            cells.append(" / ".join(parts))
        out.append(f"| {label} ({float(first.chance.sel(label=label)):.2f}) | " + " | ".join(cells) + " |")
    out += ["", "Linear probe by timestep: test accuracy of the site chosen on validation at that timestep:", "",
            "| label | model | " + " | ".join(f"t={int(t)}" for t in first.timestep.values) + " |",
            "| --- | --- |" + " --- |" * first.sizes["timestep"]]
    for label in first.label.values:
        for name, grid in grids.items():
            chosen = chosen_per_timestep(grid, label, "linear")
            out.append(f"| {label} | {SHORT[name]} | " + " | ".join(f"{v:.3f}" for v in chosen.values) + " |")
    counts = {str(label): int(first.n_test.sel(label=label)) for label in first.label.values}
    out += ["", "Test images per label: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + "."]
    return "\n".join(out)


def pixel_table(models=tuple(SHORT)) -> str:
    """The baseline beside the models: probes on the input pixels (``probe_pixels.json``), test
    accuracy with its 95% Wilson interval, and each model's peak (chosen on validation)."""
    path = results_dir() / "probe_pixels.json"
    if not path.exists():
        return "no saved pixel baseline"
    pixels = xr.Dataset.from_dict(json.loads(path.read_text()))
    grids = {m: _load(m) for m in models if (results_dir() / f"probe_{m}.json").exists()}
    out = ["The baseline: the same probes on the input pixels, no model (the clean test images; **test** accuracy, "
           "linear / MLP, 95% Wilson interval in brackets), beside each model's peak from the table above:\n",
           "| label (chance) | " + " | ".join(f"`{site}`" for site in PIXEL_SITES) + " | "
           + " | ".join(f"{m} peak" for m in grids) + " |",
           "| --- |" + " --- |" * (len(PIXEL_SITES) + len(grids))]
    for label in pixels.label.values:
        n = int(pixels.n_test.sel(label=label))
        cells = []
        for site in PIXEL_SITES:
            parts = []
            for kind in ("linear", "mlp"):
                accuracy = float(pixels.accuracy.sel(label=label, site=site, probe=kind).squeeze())
                low, high = wilson(int(round(accuracy * n)), n)
                parts.append(f"{accuracy:.3f} [{low:.2f}, {high:.2f}]")
            cells.append(" / ".join(parts))
        for grid in grids.values():
            table = peaks(grid).set_index(["label", "probe"])
            cells.append(" / ".join(f"{table.loc[(str(label), kind)].accuracy:.3f}" for kind in ("linear", "mlp")))
        out.append(f"| {label} ({float(pixels.chance.sel(label=label)):.2f}) | " + " | ".join(cells) + " |")
    out += ["", f"Pixels: {pixels.attrs['images']} (ids digest {pixels.attrs['images_sha1']}, the grids' stores' "
            f"`ids_sha1`), clean, where the model features are of noised images (t >= 20); `pixels 2x2`: "
            f"adaptive 2 x 2 pooling, as the model features; probed in {pixels.attrs['seconds']} s."]
    return "\n".join(out)


def blocks() -> dict[tuple[str, str], str]:
    """(doc, block key) -> its text."""
    return {("features.md", "probe-grid"): tables(), ("features.md", "probe-pixels"): pixel_table()}


def main(argv=None) -> None:
    report_main(blocks, __doc__, argv)


if __name__ == "__main__":
    main()
