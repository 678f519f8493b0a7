"""The main job: generate a few prompts with each model, record attention, skips and latents,
and write images, a zarr store per model and an HTML report into one folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr
from PIL import Image
from tqdm.auto import tqdm

from . import denoise, load, record
from .attention import word_maps
from .report import energy_figure, trajectory_figure, video_word_map_figure, word_map_figure, write_html
from .sitemap import parse_site, site_name

DEMO_PROMPTS = (
    "a red circle on the left",
    "a large blue square at the top",
    'the letter "K" in yellow on the right',
    "a green triangle on the left and a magenta cross on the right",
)
DEMO_MODELS = ("toy-mmdit", "toy-unet")


def sites_for(model) -> list[str]:
    """What the demo records: image->text attention everywhere, latents, and where the model has
    long skips, each skip and the output of the block that consumes it."""
    site_map = model.site_map
    skip_blocks = list(dict.fromkeys(site_name(parse_site(pattern).module, "out") for pattern in site_map.skips))
    return [*site_map.text_attention, *site_map.skips, *skip_blocks, "latent.*"]


def run_demo(out: str | Path = "demo-out", models=DEMO_MODELS, prompts=DEMO_PROMPTS, steps: int = 20,
             seed: int = 0, video: bool = True) -> Path:
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    sections = []
    for name in tqdm(list(models), desc="demo models", unit="model"):
        model = load(name)
        with record(model, sites_for(model), reduce=("head",)) as rec:
            images = model.generate(list(prompts), steps=steps, seed=seed)
        rec.save(out / f"{name}.zarr", overwrite=True)  # the demo folder is rewritten whole on each run
        figures: list = [f"{model.name}: {type(model.denoiser).__name__}, {steps} steps, seed {seed}; "
                         f"recorded {len(rec)} sites into <code>{name}.zarr</code>."]
        for i, prompt in enumerate(prompts):
            Image.fromarray((images[i] * 255).astype(np.uint8)).resize((128, 128), Image.NEAREST).save(
                out / "images" / f"{name}-{i}.png")
            figures.append(word_map_figure(images[i], word_maps(rec, sample=i), title=f"{prompt!r}: attention per word"))
        x0 = rec["latent.x0"].isel(branch=0)
        frames = model.decode_latents(x0.isel(sample=0).values)
        figures.append(trajectory_figure(frames, x0.timestep.values, title=f"{prompts[0]!r}: x0 estimate over steps"))
        if model.site_map.skips:
            figures.append(energy_figure(
                skip_vs_backbone(rec), title=f"{prompts[0]!r}: skip vs backbone, RMS per step",
                how_to_read="Per up block: the size (RMS over channels and pixels) of the skip it receives and of "
                            "its own output; a skip far above the backbone dominates what the block sees."))
        sections.append((name, figures))
    if video:
        sections.append(video_section(prompts[0], steps=min(steps, 4), seed=seed))
    return write_html(out / "report.html", "workbench demo", sections)


def video_section(prompt: str, steps: int = 4, seed: int = 0) -> tuple[str, list]:
    """A video model's word maps per frame: the tiny Wan 2.1 denoiser (random weights, so the maps
    show the geometry, (word, frame, y, x), not learned localisation), run on latents."""
    from .models.video import tiny_video_model, video_latents

    model = tiny_video_model()
    with record(model, list(model.site_map.text_attention)) as rec:
        denoise(model, video_latents(model, seed=seed), steps=steps, conditioning=model.encode([prompt]), prompts=[prompt])
    maps = word_maps(rec)
    note = (f"{model.name}: {type(model.denoiser).__name__} with random weights, {steps} steps on a latent video of "
            f"{maps.sizes['frame']} frames x {maps.sizes['y']} x {maps.sizes['x']} tokens; video->text attention per word "
            "and frame (the geometry a real Wan, CogVideoX or LTX-Video recording has).")
    return ("tiny video model", [note, video_word_map_figure(maps, title=f"{prompt!r}: attention per word and frame")])


def skip_vs_backbone(rec) -> xr.DataArray:
    """RMS of each up block's first skip and of the backbone it is joined to, per step."""
    series, values = [], []
    for name in rec:
        parts = parse_site(name)
        if parts.kind == "skip" and parts.index == 0:
            block = parts.module
            skip = rec[name].isel(sample=0, branch=-1)
            series.append(f"{block} skip")
            values.append(np.sqrt((skip**2).mean(("channel", "y", "x"))).values)
            if f"{block}.out" in rec:
                out = rec[f"{block}.out"].isel(sample=0, branch=-1)
                series.append(f"{block} out")
                values.append(np.sqrt((out**2).mean(("channel", "y", "x"))).values)
    steps = next(iter(rec.values())).step.values
    return xr.DataArray(np.array(values), dims=("series", "step"), coords={"series": series, "step": steps})
