"""Applications of text localization on the reference models: glyph editing against attention
reuse, and prevention of banned glyphs against a negative prompt and the all-layer patch.

    python -m workbench.studies.localization.applications --model toy-unet [--work /tmp/text_applications]
                                                          [--out docs/results/text_applications_<model>.json]

1. *Editing*: the localization study's screened, qualifying glyph pairs A -> B (read from
   ``docs/results/localization_<model>.zarr``), edited by attention reuse
   (``workbench.studies.localization.text_editing.reuse_edit``: every method the model's site map allows,
   reusing the first 2, 4 or 6 of 8 steps), scored as the study scores its K/V patches
   (``glyph_pairs.score``). The reuse length is chosen per method on validation pairs
   (``choose_reuse_steps``), reported on test, beside the study's K/V patches and prompt swaps.
2. *Prevention*: the ten letters are banned, each replaced by a digit (A -> 0, B -> 1, ...).
   Fresh cells (colour, position, noise seed 5000+i) are screened as the study screens: a letter
   qualifies where the judge reads it (name and colour) unpatched. Cells alternate validation /
   test until both splits hold ``--prompts`` prompts. Methods: the K/V patch of the layer set
   chosen on the study's validation pairs (``choose_prevention_layers``), the patch of all text
   layers, and the banned glyph as the negative prompt (form chosen on this validation split).

Every step's result is kept in the zarr store ``--work/<model>.zarr`` (``workbench.studies.cache.Cache``;
rerun the same command to resume). Single-threaded torch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ... import load
from ...data.recipe import default_recipe
from ...results import results_dir
from ...analysis.stats import bootstrap, interval
from ..cache import Cache as Work, jsonable as _json
from . import protocol as gp
from . import text_editing as te
from .job import open_sweep
from .report import split, swap_table, variant_table
from .sweeps import noise_for

STEPS = 8
REUSE_STEPS = (2, 4, 6)
LETTERS = ("A", "B", "E", "H", "K", "M", "R", "S", "T", "X")
DIGITS = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")


def _scenes(glyphs, colours, positions, seeds):
    return [gp.glyph_scene(str(g), gp.Cell(str(c), str(p), int(s))) for g, c, p, s in zip(glyphs, colours, positions, seeds)]


# -- 1. editing against attention reuse ---------------------------------------------------------
def editing(model, judge, work: Work, store: Path) -> dict:
    grid, focus = open_sweep(store, "grid"), open_sweep(store, "focus")
    parts = {name: split(grid, name) for name in ("validation", "test")}
    out = {"pairs": {k: int(v.sizes["pair"]) for k, v in parts.items()}, "methods": {}, "not_applicable": {}}
    for method in te.REUSE_METHODS:
        try:
            te.reuse_sites(model, method)
        except te.NotApplicable as why:
            out["not_applicable"][method] = str(why)
            continue
        per_setting = {}
        for k in REUSE_STEPS:
            per_split = {}
            for name, ds in parts.items():
                def compute(ds=ds, k=k):
                    targets = _scenes(ds["target_glyph"].values, ds["colour"].values, ds["position"].values, ds["seed"].values)
                    sources = _scenes(ds["source_glyph"].values, ds["colour"].values, ds["position"].values, ds["seed"].values)
                    original, edited = te.reuse_edit(model, [t.caption for t in targets], [s.caption for s in sources],
                                                     ds["seed"].values, method, reuse_steps=k, steps=STEPS)
                    scores = gp.score(judge, edited[:, None], original, ds, gp.glyph_masks(targets, sources))
                    return {m: scores[m].values[:, 0].astype(float) for m in ("success", "colour_kept", "rest_kept", "psnr", "ssim")}
                per_split[name] = work.get(f"reuse-{method.replace(' ', '_').replace('>', '')}-{k}-{name}", compute)
            per_setting[k] = per_split
            print(model.name, method, k, {n: round(float(v["success"].mean()), 3) for n, v in per_split.items()}, flush=True)
        val_swap = float(parts["validation"]["swap_success"].sel(swap_start=0).mean())
        chosen = te.choose_reuse_steps({k: float(v["validation"]["success"].mean()) for k, v in per_setting.items()},
                                       {k: float(np.median(v["validation"]["psnr"])) for k, v in per_setting.items()},
                                       val_swap)
        out["methods"][method] = {
            "chosen_reuse_steps": chosen,
            "validation_prompt_swap_success": val_swap,
            "settings": {str(k): {name: _edit_row(v[name]) for name in ("validation", "test")} for k, v in per_setting.items()},
        }
    # the study's own rows on the same test pairs, for the table
    test_grid, test_focus = variant_table(grid, "test"), variant_table(focus, "test")
    table = {f"K/V patch {label}": test_grid.loc[label].to_dict() for label in test_grid.index if label.endswith("@0")}
    table.update({f"K/V patch {label}": test_focus.loc[label].to_dict() for label in test_focus.index
                  if label.endswith("@0") and test_focus.loc[label, "heads"] == ""})
    table.update({label: row.to_dict() for label, row in swap_table(grid, "test").iterrows()})
    test = parts["test"]
    for label, values in (("prompt swap from step 0", test["swap_success"].sel(swap_start=0).values),):
        table[label]["success_ci"] = interval(values.astype(float))
    out["study_rows_test"] = {k: {m: (float(v) if not isinstance(v, (list, tuple, str)) else v) for m, v in row.items()}
                              for k, row in table.items()}
    return out


def _edit_row(scores: dict) -> dict:
    row = {m: float(np.mean(scores[m])) for m in ("success", "colour_kept", "rest_kept", "ssim")}
    row["psnr"] = float(np.median(scores["psnr"]))
    row["success_ci"] = interval(scores["success"])
    row["psnr_ci"] = bootstrap(scores["psnr"], np.median)
    row["n"] = int(len(scores["success"]))
    return row


# -- 2. prevention -----------------------------------------------------------------------------
def screen(model, judge, work: Work, per_split: int, max_cells: int) -> dict:
    """Fresh cells, alternating validation / test, until each split holds ``per_split`` prompts."""
    def compute():
        recipe = default_recipe()
        colours, positions = list(recipe.colours), list(recipe.positions)
        rng = np.random.default_rng(5)
        rows = {k: [] for k in ("glyph", "colour", "position", "seed", "split", "cell")}
        counts = {"validation": 0, "test": 0}
        for c in range(max_cells):
            cell = gp.Cell(colours[rng.integers(len(colours))], positions[rng.integers(len(positions))], 5000 + c)
            part = "validation" if c % 2 == 0 else "test"
            if counts[part] >= per_split:
                if min(counts.values()) >= per_split:
                    break
                continue
            prompts = [gp.glyph_scene(g, cell).caption for g in LETTERS]
            images = model.generate(prompts, steps=STEPS, latents=noise_for(model, [cell.seed] * len(LETTERS)))
            got = gp.reads(judge, images, [cell.position] * len(LETTERS))
            for g, name, colour in zip(LETTERS, got["name"], got["colour"]):
                if name == g and colour == cell.colour:
                    for key, value in zip(rows, (g, cell.colour, cell.position, cell.seed, part, c)):
                        rows[key].append(value)
                    counts[part] += 1
            print(model.name, "screened cell", c, counts, flush=True)
        return {k: np.asarray(v) for k, v in rows.items()}
    return work.get("prevention-prompts", compute)


def prevention(model, judge, work: Work, store: Path, per_split: int, max_cells: int, batch: int = 32) -> dict:
    banned = te.BannedGlyphs(LETTERS, dict(zip(LETTERS, DIGITS)))
    table = screen(model, judge, work, per_split, max_cells)
    layer_sets, val_rates, val_psnr = _study_layer_sets(store)
    chosen = te.choose_prevention_layers(val_rates, val_psnr)
    all_layers = max(layer_sets, key=len)
    out = {"banned": list(LETTERS), "replacement": dict(zip(LETTERS, DIGITS)),
           "prompts": {p: int((table["split"] == p).sum()) for p in ("validation", "test")},
           "layer_set": list(chosen), "all_layers": list(all_layers),
           "layer_set_rule": "smallest layer set of the localization study (from step 0, all heads) whose validation "
                             "banned-glyph rate is within 0.05 of the lowest measured; ties: higher PSNR",
           "study_validation_banned_rate": {"+".join(map(str, k)): v for k, v in val_rates.items()},
           "methods": {}}
    scenes = _scenes(table["glyph"], table["colour"], table["position"], table["seed"])
    twins = _scenes([banned.benign(str(g)) for g in table["glyph"]], table["colour"], table["position"], table["seed"])
    masks = gp.glyph_masks(scenes, twins)
    prompts = [s.caption for s in scenes]
    seeds = [int(s) for s in table["seed"]]
    n = len(prompts)

    def batched(run):
        return np.concatenate([run(slice(a, min(a + batch, n))) for a in range(0, n, batch)])

    unpatched = work.get("prevention-unpatched", lambda: {"images": batched(
        lambda b: model.generate(prompts[b], steps=STEPS, latents=noise_for(model, seeds[b])))})["images"]
    runs = {
        f"K/V patch L{'+'.join(map(str, chosen))}@0 (validation-chosen)": ("patch", chosen),
        f"K/V patch all text layers L{'+'.join(map(str, all_layers))}@0": ("patch", all_layers),
        **{f"negative prompt ({form})": ("negative", form) for form in te.NEGATIVE_FORMS},
        "none (unpatched)": ("none", None),
    }
    scores = {}
    for label, (kind, setting) in runs.items():
        key = "prevention-" + "".join(ch if ch.isalnum() else "_" for ch in label)

        def compute(kind=kind, setting=setting):
            if kind == "none":
                images = unpatched
            elif kind == "patch":
                images = batched(lambda b: te.prevent(model, prompts[b], banned, layers=list(setting), steps=STEPS,
                                                      seed=seeds[b], spans=[s.spans for s in scenes[b]])["images"])
            else:
                negatives = [te.negative_prompt_for(p, str(g), setting) for p, g in zip(prompts, table["glyph"])]
                images = batched(lambda b: model.generate(prompts[b], steps=STEPS, latents=noise_for(model, seeds[b]),
                                                          negative_prompts=negatives[b]))
            got = te.prevention_scores(judge, images, unpatched, table["glyph"], table["colour"], table["position"], masks)
            got["read"] = got["read"].astype("U8")
            if kind != "none":
                got["example"] = _u8(images[:6])
            return got
        scores[label] = work.get(key, compute)
        print(model.name, label, round(float(scores[label]["banned"].mean()), 3), flush=True)
    val, test = table["split"] == "validation", table["split"] == "test"
    negatives = {form: float(scores[f"negative prompt ({form})"]["banned"][val].mean()) for form in te.NEGATIVE_FORMS}
    neg_psnr = {form: float(np.median(scores[f"negative prompt ({form})"]["psnr"][val])) for form in te.NEGATIVE_FORMS}
    best_form = min(te.NEGATIVE_FORMS, key=lambda f: (negatives[f], -neg_psnr[f]))
    out["negative_form_chosen"] = best_form
    out["negative_validation_banned_rate"] = negatives
    for label, s in scores.items():
        out["methods"][label] = {"validation": te.summary_row({k: v[val] for k, v in s.items() if k in ("banned", "colour_kept", "rest_kept", "psnr")}),
                                 "test": te.summary_row({k: v[test] for k, v in s.items() if k in ("banned", "colour_kept", "rest_kept", "psnr")}),
                                 "test_reads": _counts(s["read"][test])}
    out["negative_prompt_method"] = f"negative prompt ({best_form})"
    return out


def _counts(reads) -> dict:
    values, counts = np.unique(reads, return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts)}


def _u8(images):
    return np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)


def _study_layer_sets(store: Path):
    """Layer sets the study measured from step 0 with all heads, and their validation banned rate and PSNR."""
    rates, psnr = {}, {}
    for group in ("grid", "focus"):
        ds = split(open_sweep(store, group), "validation")
        keep = (ds["variant_start"] == 0) & (ds["variant_heads"] == "")
        for label in ds["variant"].values[keep.values]:
            layers = tuple(int(x) for x in str(ds["variant_layers"].sel(variant=label).values).split("+"))
            v = ds.sel(variant=label)
            rates[layers] = float((v["read"] == v["target_glyph"]).mean())
            psnr[layers] = float(v["psnr"].median())
    return list(rates), rates, psnr


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--work", default="/tmp/text_applications")
    parser.add_argument("--prompts", type=int, default=100, help="prevention prompts per split (validation, test)")
    parser.add_argument("--max-cells", type=int, default=200)
    parser.add_argument("--out", default=None)
    parser.add_argument("--skip-editing", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from ...models.judge import load_judge

    model, judge = load(args.model), load_judge()
    store = results_dir() / f"localization_{args.model}.zarr"
    work = Work(Path(args.work) / f"{args.model}.zarr",
                identity={"model": args.model, "steps": STEPS, "prompts": args.prompts, "max_cells": args.max_cells},
                resume=f"python -m workbench.studies.localization.applications --model {args.model} --work {args.work} "
                       f"--prompts {args.prompts} --max-cells {args.max_cells}")
    result = {"model": args.model, "steps": STEPS, "reuse_steps_tried": list(REUSE_STEPS)}
    result["prevention"] = prevention(model, judge, work, store, args.prompts, args.max_cells)
    if not args.skip_editing:
        result["editing"] = editing(model, judge, work, store)
    out = Path(args.out) if args.out else results_dir() / f"text_applications_{args.model}.json"
    out.write_text(json.dumps(result, indent=1, default=_json) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
