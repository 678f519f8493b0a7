"""The tables of docs/skips.md, from the saved study results (no model runs): spectra, feature
dynamics, feature reuse (caching), the FreeU grid and the peers' own caching schemes
(:mod:`.peers`); and the skips rows of docs/findings.md (DeepCache, Skip-DiT). Nothing in those
tables is typed in.

    python -m workbench.studies.skips.report         # print the tables
    python -m workbench.studies.skips.report --update-doc   # write them into docs/skips.md, docs/findings.md
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from ...analysis.stats import bootstrap, difference, wilson
from ...results import results_dir
from ...sitemap import parse_site
from ..docs import findings_table, report_main
from .protocol import FAMILIES

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


def peers_caching_table() -> str:
    """T-GATE and every DeepCache branch (``peers_caching.json``), FLOPs beside the measured speed-ups, and
    the judge's verdict where :mod:`.peers` judged the variant (``peers_judged.json``, T-GATE and uncached)."""
    results = _load("peers_caching.json")
    judged = _load("peers_judged.json") if (RESULTS / "peers_judged.json").exists() else {}
    lines = ["| model | variant | FLOPs per step (mean, G) | FLOPs ratio | speed-up wall | speed-up CPU | PSNR vs uncached (dB) "
             "| shape+colour % [95% CI] | glyph % [95% CI] |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model_name, entry in results.items():
        for name, row in entry["variants"].items():
            verdict = judged.get(model_name, {}).get("variants", {}).get(name, {})
            cells = [f"{verdict[k]['percent']:g} [{verdict[k]['wilson95'][0]:g}, {verdict[k]['wilson95'][1]:g}]"
                     if k in verdict else "-" for k in FAMILIES.values()]
            flops = row["flops_per_step"]
            if name == "uncached":
                wall = cpu = "1.00x"
            elif "speedup_wall" in row:
                wall, cpu = f"{row['speedup_wall']:.2f}x", f"{row['speedup_cpu']:.2f}x"
            else:  # an interrupted run: FLOPs counted, not yet timed
                wall = cpu = "not timed"
            lines.append(f"| {model_name} | {name} | {sum(flops) / len(flops) / 1e9:.3f} | {row['flops_ratio']:.2f}x | "
                         f"{wall} | {cpu} | {row.get('psnr_db', '-')} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


# -- the skips rows of docs/findings.md (issue 23: the claims stated no more strongly than the numbers) --
def _quality(model: str, setting: str) -> dict:
    return _load("skips_caching.json")[model]["quality"][setting]


def _loss_interval(model: str, setting: str, score: str = "glyph") -> tuple[float, float, float]:
    """Share of prompts lost against the uncached run on the same prompts, with Newcombe's square-and-add
    interval (per-prompt outcomes were not saved, so not the paired one: wider, conservative)."""
    n = _load("skips_caching.json")[model]["n"]
    cached, base = (round(_quality(model, s)[score] * n / 100) for s in (setting, "uncached"))
    low, high = difference(base, n, cached, n)
    return (base - cached) / n, low, high


def _loss(model: str, setting: str, score: str = "glyph") -> str:
    loss, low, high = _loss_interval(model, setting, score)
    return f"{100 * loss:+.0f} [{100 * low:+.0f}, {100 * high:+.0f}]"


def _wilson_text(percent: float, n: int) -> str:
    low, high = wilson(round(percent * n / 100), n)
    return f"[{100 * low:.0f}, {100 * high:.0f}]"


def deepcache_row() -> list[str]:
    """DeepCache's premise over *every* block it caches against the blocks it keeps (a bootstrap interval
    over steps), and its cached runs' losses with Wilson / Newcombe intervals."""
    dynamics, caching = _load("skips_dynamics.json")["toy-unet"], _load("skips_caching.json")["toy-unet"]
    sites = dynamics["coords"]["site"]["data"]
    change = np.array(dynamics["data_vars"]["relative_change"]["data"], dtype=float)[:, 1:]  # (site, step)
    cached = set(caching["quality"]["deepcache/N=3"]["calls"]["reused"])
    deep = [i for i, s in enumerate(sites) if s.removesuffix(".out") in cached]
    outer = [i for i in range(len(sites)) if i not in deep]
    per_step = change[deep].mean(0) - change[outer].mean(0)  # paired by step
    low, high = bootstrap(per_step)
    n = caching["n"]
    timing = caching["timing"]
    runs = "; ".join(
        f"N={s.split('=')[1]}: {timing[s]['speedup_wall']:.2f}x wall, glyph {_quality('toy-unet', s)['glyph']:.0f}/{n} "
        f"{_wilson_text(_quality('toy-unet', s)['glyph'], n)}, loss {_loss('toy-unet', s)} points, PSNR "
        f"{caching['fidelity'][s]['psnr_db']:.1f} dB" for s in ("deepcache/N=3", "deepcache/N=4"))
    unet = (f"mean relative change between adjacent steps, the {len(deep)} blocks DeepCache caches "
            f"{change[deep].mean():.3f} against the {len(outer)} it keeps {change[outer].mean():.3f}: deep - outer "
            f"{per_step.mean():+.3f} [{low:+.3f}, {high:+.3f}] (bootstrap over the {len(per_step)} steps, 8 prompts; "
            f"steps are not independent, so the interval is optimistic); caching: {runs}")
    mmdit = _load("skips_dynamics.json")["toy-mmdit"]
    share = np.array(mmdit["data_vars"]["share_adjacent_above_095"]["data"], dtype=float)
    image = [i for i, s in enumerate(mmdit["coords"]["site"]["data"]) if s.endswith(".image")]
    mmdit_cell = f"adjacent image-stream pairs above cos 0.95: {share[image].min():.3f} (lowest image-stream block)"
    return ["skips", "DeepCache: high-level features change slowly between adjacent steps; reusing the deep branch "
            "gives ~2.3x at small loss", unet, mmdit_cell,
            "the speed-up at no clear judged loss: yes; deep features slower than the outer ones: not shown "
            "(the interval of deep - outer includes 0)" if low < 0 < high else "see the interval",
            "[skips.md](skips.md) / [07](../notebooks/07_skips_and_caching.ipynb)"]


def skip_dit_row() -> list[str]:
    """Skip-DiT's caching consequence: toy-mmdit block caching against toy-unet caching at matched
    speed-up (the nearest measured wall speed-up), not at equal N."""
    caching = _load("skips_caching.json")
    unet_settings = {s: t["speedup_wall"] for s, t in caching["toy-unet"]["timing"].items() if s != "uncached"}
    rows, excludes_zero = [], []
    for setting, timing in caching["toy-mmdit"]["timing"].items():
        if setting == "uncached":
            continue
        speed = timing["speedup_wall"]
        match = min(unet_settings, key=lambda s: abs(unet_settings[s] - speed))
        for model, name in (("toy-mmdit", setting), ("toy-unet", match)):
            excludes_zero.append(_loss_interval(model, name)[0] > 0)
        rows.append(f"{setting} {speed:.2f}x: glyph loss {_loss('toy-mmdit', setting)} against toy-unet {match} "
                    f"{unet_settings[match]:.2f}x: {_loss('toy-unet', match)}")
    mmdit = ("at matched speed-up (each toy-mmdit setting against the toy-unet caching setting of nearest wall "
             "speed-up; points lost against the uncached run, 100 prompts, Newcombe 95% interval, unpaired as "
             "per-prompt outcomes were not saved): " + "; ".join(rows))
    return ["skips", "Skip-DiT: DiTs without long skips have unstable features across steps, which hurts feature "
            "caching", "(toy-unet side: in the toy-mmdit cell, matched by speed-up)", mmdit,
            "no: no loss is shown on either model at matched speed-up (every interval includes 0 at 100 prompts)"
            if not any(excludes_zero) else "partly: some losses exclude 0 (see the intervals)",
            "[skips.md](skips.md) / [07](../notebooks/07_skips_and_caching.ipynb)"]


def findings_rows() -> str:
    return findings_table([deepcache_row(), skip_dit_row()])


def blocks() -> dict[tuple[str, str], str]:
    """(doc, block key) -> its text."""
    return {("skips.md", "skips-spectra"): spectra_table(), ("skips.md", "skips-dynamics"): dynamics_table(),
            ("skips.md", "skips-caching"): caching_table(), ("skips.md", "skips-freeu"): freeu_table(),
            ("skips.md", "peers-caching"): peers_caching_table(), ("findings.md", "findings-skips"): findings_rows()}


def main(argv=None) -> None:
    report_main(blocks, __doc__, argv)


if __name__ == "__main__":
    main()
