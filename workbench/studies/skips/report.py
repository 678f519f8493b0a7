"""The tables of docs/skips.md, from the saved study results (no model runs): spectra, feature
dynamics, feature reuse (caching) and the FreeU grid. Nothing in those tables is typed in.

    python -m workbench.studies.skips.report         # print the tables
    python -m workbench.studies.skips.report --update-doc   # write them into docs/skips.md
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import xarray as xr

from ...results import results_dir
from ...sitemap import parse_site
from ..docs import write_block

RESULTS = results_dir()
SCHEME_NAMES = {"deepcache": "DeepCache", "encoder_propagation": "encoder propagation",
                "middle_blocks": "middle blocks (1, 2)"}


def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def spectra_table() -> str:
    out = ["| model | decoder stage (map size) | backbone low share | skip low share | backbone - skip |",
           "| --- | --- | --- | --- | --- |"]
    for name, stored in _load("skips_spectra.json").items():
        ds = xr.Dataset.from_dict(stored)
        share = ds["low_of_ac"].mean(["step", "resnet"])  # over steps and the two resnets of a stage
        label = name + (" (random weights)" if name.startswith("tiny") else "")
        sides = json.loads(ds.attrs["stage_map_size"])  # recorded by the spectra run (studies/skips/job.py)
        for stage in ds.stage.values:
            backbone, skip = (float(share.sel(stage=stage, kind=k)) for k in ("backbone", "skip"))
            size = "" if name.startswith("tiny") else f" ({sides[int(stage)]} x {sides[int(stage)]})"
            out.append(f"| {label} | {stage}{size} | {backbone:.3f} | {skip:.3f} | {backbone - skip:+.3f} |")
    return "\n".join(out)


def _short(site: str) -> str:
    parts = parse_site(site)
    if site.startswith("transformer_blocks."):
        return f"block {parts.module.split('.')[1]} {parts.stream or parts.kind}"  # module path transformer_blocks.<i>
    return parts.module if parts.kind == "out" and parts.stream is None else site


def dynamics_table() -> str:
    out = ["| model | block output | role | adjacent pairs > 0.95 | mean adjacent cos | mean relative change "
           "| cos(first step, last step) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    notes = []
    for name, stored in _load("skips_dynamics.json").items():
        ds = xr.Dataset.from_dict(stored)
        last = int(ds.step.values[-1])
        for site in ds.site.values:
            row = ds.sel(site=site)
            out.append(f"| {name} | {_short(str(site))} | {row['role'].item()} | "
                       f"{float(row['share_adjacent_above_095']):.3f} | {float(row['adjacent'].mean()):.3f} | "
                       f"{float(row['relative_change'].mean()):.3f} | "
                       f"{float(row['similarity'].sel(step=0, step_other=last)):.3f} |")
        change = ds["relative_change"].mean("step")
        roles = {str(r): float(change.where(ds["role"] == r, drop=True).mean()) for r in np.unique(ds["role"].values)}
        shares = float(ds["share_adjacent_above_095"].mean())
        notes.append(f"{name}: adjacent pairs above 0.95 over all block outputs {shares:.3f}; mean relative change by "
                     "role: " + ", ".join(f"{r} {v:.3f}" for r, v in roles.items()))
    return "\n".join(out) + "\n\n" + "\n\n".join(notes)


def caching_table() -> str:
    out = ["| model | scheme | N | reused share of cached-module calls | speed-up wall | speed-up CPU | shape+colour % "
           "| glyph % | drop (points, shape+colour / glyph) | PSNR vs uncached (dB) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, entry in _load("skips_caching.json").items():
        for variant, row in entry["quality"].items():
            scheme, _, every = variant.partition("/N=")
            timing = entry.get("timing", {}).get(variant, {})
            drop = row.get("drop_points", {})
            psnr = entry.get("fidelity", {}).get(variant, {}).get("psnr_db")
            out.append(f"| {name} | {SCHEME_NAMES.get(scheme, scheme)} | {every or '-'} | {row.get('reused_share', 0):.2f} | "
                       f"{timing.get('speedup_wall', float('nan')):.2f}x | {timing.get('speedup_cpu', float('nan')):.2f}x | "
                       f"{row['shape_and_colour']:.0f} | {row['glyph']:.0f} | "
                       + ("-" if variant == "uncached" else f"{drop['shape_and_colour']:.0f} / {drop['glyph']:.0f}")
                       + f" | {'-' if psnr is None else f'{psnr:.1f}'} |")
    return "\n".join(out)


def freeu_table() -> str:
    grid = _load("skips_freeu_grid.json")
    val = grid["validation"]
    out = ["| b \\ s | " + " | ".join(str(s) for s in grid["s"]) + " |", "| --- |" + " --- |" * len(grid["s"])]
    for b in grid["b"]:
        cells = []
        for s in grid["s"]:
            v = val[f"b={b},s={s}"]
            cells.append(f"{v['shape_and_colour']:.0f} / {v['glyph']:.1f}" + (" (plain)" if b == s == 1.0 else ""))
        out.append(f"| {b} | " + " | ".join(cells) + " |")
    test = grid["test"]
    out.append(f"\n(shape+colour % / glyph %, {grid['n_val']} + {grid['n_val']} validation prompts.) Chosen on "
               f"validation: {test['best']} (tied with it on the mean: {', '.join(grid['tied_on_validation'])}). "
               f"On the {grid['n_test']} + {grid['n_test']} test prompts: shape+colour "
               f"{test['freeu']['shape_and_colour']:.0f} against {test['plain']['shape_and_colour']:.0f} plain, glyph "
               f"{test['freeu']['glyph']:.0f} against {test['plain']['glyph']:.0f}.")
    return "\n".join(out)


BLOCKS = {"skips-spectra": spectra_table, "skips-dynamics": dynamics_table, "skips-caching": caching_table,
          "skips-freeu": freeu_table}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update-doc", action="store_true", help="write the tables into docs/skips.md")
    args = parser.parse_args(argv)
    for key, table in BLOCKS.items():
        if args.update_doc:
            write_block("skips.md", key, table())
        else:
            print(f"<!-- {key} -->\n{table()}\n")


if __name__ == "__main__":
    main()
