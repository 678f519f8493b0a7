"""The text-localization sweep as a resumable job writing labelled zarr (``workbench localize``
parses its arguments in ``workbench/cli/localize.py`` and calls :func:`run_job`).

    workbench localize --model toy-unet --pairs 100 --out sweep.zarr [--steps 8] [--starts 0,1,2,4]

    workbench localize --model tiny-sd3 --prompts prompts.txt --scorer ocr --pairs 40 --out sd3.zarr

What it does (docs/localization.md):

1. *screen*: generate every glyph in ``--cells`` (colour, position, seed) cells; glyphs the judge
   reads back qualify. Ordered pairs of qualifying glyphs of one cell (A -> B) are the study's
   pairs, up to ``--pairs``; cells alternate validation / test.
2. *grid* (group ``grid``): every text layer x start step, the full text-K/V swap (all layers) per
   start step, and the baseline "prompt swap from step k", on every pair.
3. *focus* (group ``focus``): chosen on the validation pairs of the grid: the best (layer, start);
   every single head and every leave-one-out head set of that layer at that start; contiguous
   layer ranges from step 0.

The job follows the rules of every job that writes a store (``workbench.store.jobs``): the store
and each group are created atomically with consolidated metadata (they open with plain
``xarray.open_zarr`` at every moment); each group is written a chunk of pairs at a time under
``StoreJob`` (chunks are claimed, so jobs on one store share them; Ctrl-C stops after the current
chunk): a chunk's region, then its record, then its done mark ``<out>.job/<group>-<a>-<b>.done``.
A killed job resumes where it stopped: rerun the same command; a done chunk whose files no longer
match its record is recomputed.

Any model (a tiny family, a local checkpoint folder, a pipeline): ``prompts`` (lines with one
quoted text, ``protocol.read_prompts``) replace the glyph cells, and a scorer
(``workbench.scoring``: ``"ocr"``, or a callable) replaces the judge: cells are (template, seed),
their texts screened by the scorer, pairs swap one text for another. A model that runs through its
pipeline cannot resume mid-schedule, so each variant is one whole patched generation
(``naive_sweep``), and the "prompt swap from step k" baseline is left out of its grid.
"""

from __future__ import annotations

import json
from itertools import permutations
from pathlib import Path

import numpy as np
import xarray as xr

from ...store.claims import job_dir
from ...store.jobs import ChunkRecords, StoreJob, check_identity, consolidate, create_atomically, write_json_atomically


def run_job(model_name: str, out, *, pairs: int, steps: int, starts: list[int], n_cells: int, per_cell: int,
            chunk: int, batch: int, seed: int = 0, max_range: int = 3, screen: bool = True,
            progress: bool = True, prompts: str | Path | None = None, scorer="judge", shares: bool = True) -> Path:
    """Run (or resume) the study on ``model_name`` (anything ``workbench.load`` takes by name or
    folder) into the store ``out``. Glyph pairs scored by the judge by default; with ``prompts`` (a
    prompt file) text pairs scored by ``scorer`` (``workbench.scoring.get_scorer``: "ocr", a callable).
    ``shares=False`` skips measuring each text layer's parameter share (``layer_share`` is then NaN):
    it perturbs every parameter tensor of every text layer, one one-step generation each, which on
    a large checkpoint costs more than a small sweep."""
    from tqdm.auto import tqdm

    from ... import load
    from ...scoring import JudgeReader, Reader, get_scorer
    from . import protocol as gp
    from .patching import text_layers

    reader = get_scorer(scorer)
    if not isinstance(reader, Reader):
        raise ValueError(f"the localization study reads images with a reader (judge, ocr, or a callable); "
                         f"{reader!r} gives masks, which the segmentation study takes")
    text = None
    if prompts is not None:
        if isinstance(reader, JudgeReader):
            raise ValueError("text prompts need a scorer that reads text (--scorer ocr, or a callable): the judge "
                             "reads shapes-world glyphs at scene anchors")
        text = gp.read_prompts(Path(prompts).read_text().splitlines())
    elif not isinstance(reader, JudgeReader):
        raise ValueError(f"the glyph study is scored by the shapes-world judge; scorer {reader.name!r} needs "
                         "text pairs: pass --prompts (a file of prompts with one quoted text each)")
    out = Path(out)
    job = job_dir(out)
    job.mkdir(parents=True, exist_ok=True)
    settings = dict(model=str(model_name), pairs=pairs, steps=steps, starts=starts, cells=n_cells, per_cell=per_cell,
                    chunk=chunk, seed=seed, max_range=max_range, screen=screen)
    if not shares:
        settings.update(shares=False)
    if text is not None:
        settings.update(prompts=[p.prompt for p in text], scorer=reader.name)
    check_identity(out, settings, "use another --out, or rerun with the same settings to resume", file="settings.json")
    if any(s >= steps or s < 0 for s in starts):
        raise ValueError(f"--starts {starts} must lie in 0..{steps - 1} for a {steps}-step run")
    resume = (f"workbench localize --model {model_name} --pairs {pairs} --out {out} --steps {steps} "
              f"--starts {','.join(map(str, starts))} --cells {n_cells} --per-cell {per_cell} --chunk {chunk} "
              f"--seed {seed} --max-range {max_range}" + ("" if screen else " --no-screen")
              + ("" if text is None else f" --prompts {prompts} --scorer {reader.name}")
              + ("" if shares else " --no-shares"))
    model = load(model_name)
    layers = text_layers(model)
    layer_shares = _SharesOnce(model, layers, job / "layer_shares.json", measure=shares)
    judge = reader.judge if text is None else None

    if text is None:
        table = _pairs(job, model, judge, gp, n_cells, per_cell, pairs, steps, seed, tqdm if progress else None, screen)
    else:
        table = _text_pairs(job, model, reader, text, n_cells, per_cell, pairs, steps, seed, screen)
    if not len(table["cell"]):
        raise ValueError(f"no pair qualified: the {reader.name} scorer read too few of the model's "
                         f"{'glyphs' if text is None else 'texts'}; screen more --cells, or pass --no-screen")
    study = _Study(judge=judge, reader=reader, text=text is not None, resumable=model.latent_shape is not None)

    from .sweeps import Variant

    grid = [Variant((layer.index,), s) for layer in layers for s in starts]
    grid += [Variant(tuple(range(len(layers))), s) for s in starts]
    _create_root(out)
    _run_group(out, job, "grid", model, study, table, grid, steps, chunk, batch, gp,
               swap_starts=starts if study.resumable else (), progress=progress, shares=layer_shares, resume=resume)

    focus, chosen = _focus_variants(out, model, layers, steps, max_range)
    _run_group(out, job, "focus", model, study, table, focus, steps, chunk, batch, gp, progress=progress,
               attrs={"chosen": json.dumps(chosen)}, shares=layer_shares, resume=resume)
    return out  # (no metadata changed since focus was created and the store consolidated)


def _create_root(out: Path) -> None:
    """The store's root group, created atomically (another job creating it first is fine)."""
    import zarr

    if out.exists():
        return

    def build(folder: Path) -> None:
        zarr.open_group(str(folder), mode="w", zarr_format=2)
        consolidate(folder)

    create_atomically(out, build)


def _pairs(job, model, judge, gp, n_cells, per_cell, limit, steps, seed, tqdm, screen=True) -> dict:
    """Screen cells, then draw pairs among qualifying glyphs (cached in the job folder)."""
    path = job / "pairs.json"
    if path.exists():
        return json.loads(path.read_text())
    from .sweeps import noise_for
    from ...data.recipe import default_recipe

    glyphs = list(default_recipe().glyphs)
    rng = np.random.default_rng(seed)
    table = {k: [] for k in ("target_glyph", "source_glyph", "colour", "position", "seed", "split", "cell")}
    bar = tqdm(total=n_cells, desc="screening cells") if tqdm else None
    for c, cell in enumerate(gp.cells(n_cells, seed)):
        if screen:
            prompts = [gp.glyph_scene(g, cell).caption for g in glyphs]
            images = model.generate(prompts, steps=steps, latents=noise_for(model, [cell.seed] * len(glyphs)))
            got = gp.reads(judge, images, [cell.position] * len(glyphs))
            ok = [g for g, name, colour in zip(glyphs, got["name"], got["colour"]) if name == g and colour == cell.colour]
        else:
            ok = list(glyphs)
        ordered = list(permutations(ok, 2))
        rng.shuffle(ordered)
        for a, b in ordered[:per_cell]:
            for key, value in zip(table, (a, b, cell.colour, cell.position, cell.seed, "validation" if c % 2 == 0 else "test", c)):
                table[key].append(value)
        if bar:
            bar.update(1)
            bar.set_postfix(qualifying=len(ok), pairs=len(table["cell"]))
        if len(table["cell"]) >= limit:
            break  # later cells only add pairs past the limit, which are cut below: screening them is wasted
    if bar:
        bar.close()
    keep = min(limit, len(table["cell"]))
    table = {k: v[:keep] for k, v in table.items()}
    write_json_atomically(path, table)
    return table


def _text_pairs(job, model, reader, prompts, n_cells, per_cell, limit, steps, seed, screen=True) -> dict:
    """Screen (template, seed) cells by the scorer, then pair texts it reads back (cached in the job folder)."""
    from . import protocol as gp

    path = job / "pairs.json"
    if path.exists():
        return json.loads(path.read_text())
    rng = np.random.default_rng(seed)
    table = {k: [] for k in gp.TEXT_COLUMNS}
    for c, (template, texts, cell_seed) in enumerate(gp.text_cells(prompts, n_cells, seed)):
        if screen:
            images = model.generate([template.replace("{}", t) for t in texts], steps=steps,
                                    seed=[cell_seed] * len(texts))
            ok = [t for t, good in zip(texts, reader.agrees(images, texts)) if good]
        else:
            ok = list(texts)
        ordered = list(permutations(ok, 2))
        rng.shuffle(ordered)
        for a, b in ordered[:per_cell]:
            for key, value in zip(table, (a, b, template, cell_seed, "validation" if c % 2 == 0 else "test", c)):
                table[key].append(value)
        if len(table["cell"]) >= limit:
            break  # (as in _pairs: the pairs past the limit would be cut)
    keep = min(limit, len(table["cell"]))
    table = {k: v[:keep] for k, v in table.items()}
    write_json_atomically(path, table)
    return table


class _Study:
    """What differs between the glyph study (judge) and the text study (any reader) inside a chunk."""

    def __init__(self, judge, reader, text: bool, resumable: bool):
        self.judge, self.reader, self.text, self.resumable = judge, reader, text, resumable

    def score_fields(self) -> dict:
        """Score variables per (pair, variant): name -> (dtype, fill)."""
        from .protocol import READ_WIDTH

        common = {"success": (bool, False), "psnr": (np.float32, np.nan), "ssim": (np.float32, np.nan)}
        if self.text:
            return common | {"read": (f"U{READ_WIDTH}", "")}
        return common | {"colour_kept": (bool, False), "rest_kept": (bool, False), "read": ("U4", "")}


def _pair_dataset(table: dict) -> xr.Dataset:
    n = len(table["cell"])
    return xr.Dataset({k: ("pair", np.asarray(v)) for k, v in table.items()}, coords={"pair": np.arange(n)})


def _variant_coords(variants) -> dict:
    return {
        "variant": [v.label for v in variants],
        "variant_layers": ("variant", ["+".join(map(str, v.layers)) for v in variants]),
        "variant_heads": ("variant", ["" if v.heads is None else "+".join(map(str, v.heads)) for v in variants]),
        "variant_start": ("variant", [v.start for v in variants]),
    }


class _SharesOnce:
    """Each text layer's parameter share, measured on first use (it runs the model) and kept, in
    the job folder too (a resumed job does not measure again); NaN when not ``measure``d."""

    def __init__(self, model, layers, path: Path, measure: bool = True):
        self.model, self.layers, self.path, self.measure, self.values = model, layers, path, measure, None

    def __call__(self) -> list[float]:
        from .patching import layer_parameter_share

        if self.values is None and self.path.exists():
            self.values = json.loads(self.path.read_text())
        if self.values is None:
            self.values = ([layer_parameter_share(self.model, [layer]) for layer in self.layers] if self.measure
                           else [float("nan")] * len(self.layers))
            write_json_atomically(self.path, self.values)
        return self.values


def _run_group(out, job, group, model, study, table, variants, steps, chunk, batch, gp, swap_starts=(),
               progress=True, attrs=None, shares=None, resume="rerun the same command") -> None:
    """Compute and write every unfinished chunk of ``group`` (chunk i: pairs [i*chunk, (i+1)*chunk))."""
    import logging

    from tqdm.auto import tqdm

    pairs = _pair_dataset(table)
    n = pairs.sizes["pair"]
    chunks = [(a, min(a + chunk, n)) for a in range(0, n, chunk)]
    marks = [job / f"{group}-{a:05d}-{b:05d}.done" for a, b in chunks]

    def is_done(i: int) -> bool:
        return marks[i].exists()

    if not (out / group).exists():  # created whole (atomically) or not at all
        _allocate(out, group, pairs, variants, swap_starts, model.image_size, chunk, attrs or {}, model, steps,
                  shares(), study)
    records = ChunkRecords(out, part=group)
    for i in range(len(chunks)):  # rule 5: a done chunk whose files changed is recomputed alone
        why = records.damage(i) if is_done(i) else None
        if why:
            logging.getLogger("workbench.jobs").warning("%s: %s chunk %d is damaged (%s); recomputing it",
                                                        out, group, i, why)
            marks[i].unlink(missing_ok=True)
    todo = [i for i in range(len(chunks)) if not is_done(i)]
    if not todo:
        return
    bar = tqdm(total=len(chunks) * len(variants), initial=(len(chunks) - len(todo)) * len(variants),
               desc=f"{model.name} {group}") if progress else None

    def describe(i: int) -> str:
        return f"{group} chunk {i} (pairs {chunks[i][0]}..{chunks[i][1] - 1})"

    with StoreJob(out, resume=resume, total=len(chunks), describe=describe,
                  done_count=lambda: sum(m.exists() for m in marks)) as store_job:
        def work(i: int) -> None:
            a, b = chunks[i]
            part = pairs.isel(pair=slice(a, b))
            if study.text:
                ds, cost = _compute_text_chunk(model, study, part, variants, steps, batch, swap_starts, bar)
            else:
                ds, cost = _compute_chunk(model, study.judge, part, variants, steps, batch, gp, swap_starts, bar)
            if not store_job.may_write(i):  # taken over by another job (this one looked dead): leave it
                return
            # Data (no metadata: consolidated=False), then its record, then the done mark.
            ds.to_zarr(out, group=group, region={"pair": slice(a, b)}, mode="r+", consolidated=False)
            records.write(i, [f"{group}/{name}" for name in ds.data_vars])
            write_json_atomically(job / f"{group}-cost-{a:05d}.json", cost)
            marks[i].touch()

        try:
            store_job.run(todo, work, is_done)
        finally:
            if bar:
                bar.close()


def _compute_chunk(model, judge, part, variants, steps, batch, gp, swap_starts, bar) -> tuple[xr.Dataset, dict]:
    """One chunk of pairs swept over ``variants``: its scores and images, ready for a region write
    (no coordinates), and what the sweep cost."""
    from .patching import prompt_token_maps
    from .sweeps import sweep

    targets = [gp.glyph_scene(g, gp.Cell(c, p, int(s))) for g, c, p, s in
               zip(part["target_glyph"].values, part["colour"].values, part["position"].values, part["seed"].values)]
    sources = [gp.glyph_scene(g, gp.Cell(c, p, int(s))) for g, c, p, s in
               zip(part["source_glyph"].values, part["colour"].values, part["position"].values, part["seed"].values)]
    maps = prompt_token_maps(model, [t.caption for t in targets], [s.caption for s in sources],
                             [t.spans[0] for t in targets], [s.spans[0] for s in sources])
    result = sweep(model, [t.caption for t in targets], [s.caption for s in sources],
                   [int(s) for s in part["seed"].values], variants, steps=steps, token_maps=maps, batch=batch,
                   swap_starts=swap_starts, progress=bar)
    masks = gp.glyph_masks(targets, sources)
    scores = gp.score(judge, result.images, result.target, part, masks)
    data = {name: scores[name] for name in scores}
    data["image"] = (("pair", "variant", "y", "x", "rgb"), _u8(result.images))
    data["target_image"] = (("pair", "y", "x", "rgb"), _u8(result.target))
    data["source_image"] = (("pair", "y", "x", "rgb"), _u8(result.source))
    base = gp.reads(judge, np.concatenate([result.target, result.source]), [str(p) for p in part["position"].values] * 2)
    k = part.sizes["pair"]
    data["target_read"] = ("pair", base["name"][:k].astype("U4"))
    data["source_read"] = ("pair", base["name"][k:].astype("U4"))
    if swap_starts:
        swap = gp.score(judge, result.swaps, result.target, part, masks)
        for name in swap:
            data[f"swap_{name}"] = swap[name].rename(variant="swap_start")
        data["swap_image"] = (("pair", "swap_start", "y", "x", "rgb"), _u8(result.swaps))
    ds = xr.Dataset(data).drop_vars([v for v in ("variant", "swap_start") if v in xr.Dataset(data).coords],
                                    errors="ignore")
    ds = ds.drop_vars([c for c in ds.coords], errors="ignore")
    return ds, result.cost.as_dict()


def _compute_text_chunk(model, study, part, variants, steps, batch, swap_starts, bar) -> tuple[xr.Dataset, dict]:
    """One chunk of text pairs: as ``_compute_chunk``, scored by the study's reader. A model that
    resumes mid-schedule shares the pairs' prefixes (``sweep``, with the swap baseline); one run
    by its pipeline patches whole generations (``naive_sweep``)."""
    from .patching import prompt_token_maps
    from .protocol import READ_WIDTH, TextPrompt, text_scores
    from .sweeps import naive_sweep, sweep

    target = [TextPrompt(t, x) for t, x in zip(part["template"].values, part["target_text"].values)]
    source = [TextPrompt(t, x) for t, x in zip(part["template"].values, part["source_text"].values)]
    prompts_t, prompts_s = [p.prompt for p in target], [p.prompt for p in source]
    maps = prompt_token_maps(model, prompts_t, prompts_s, [p.span for p in target], [p.span for p in source])
    seeds = [int(s) for s in part["seed"].values]
    if study.resumable:
        result = sweep(model, prompts_t, prompts_s, seeds, variants, steps=steps, token_maps=maps, batch=batch,
                       swap_starts=swap_starts, progress=bar)
    else:
        result = naive_sweep(model, prompts_t, prompts_s, seeds, variants, steps=steps, token_maps=maps)
        if bar is not None:
            bar.update(len(variants))
    expected = part["source_text"].values
    scores = text_scores(study.reader, result.images, result.target, expected)
    data = {name: scores[name] for name in scores}
    data["image"] = (("pair", "variant", "y", "x", "rgb"), _u8(result.images))
    data["target_image"] = (("pair", "y", "x", "rgb"), _u8(result.target))
    data["source_image"] = (("pair", "y", "x", "rgb"), _u8(result.source))
    base = study.reader.read(np.concatenate([result.target, result.source]))
    k = part.sizes["pair"]
    width = f"U{READ_WIDTH}"
    data["target_read"] = ("pair", np.array([str(r)[:READ_WIDTH] for r in base[:k]], dtype=width))
    data["source_read"] = ("pair", np.array([str(r)[:READ_WIDTH] for r in base[k:]], dtype=width))
    if swap_starts:
        swap = text_scores(study.reader, result.swaps, result.target, expected)
        for name in swap:
            data[f"swap_{name}"] = swap[name].rename(variant="swap_start")
        data["swap_image"] = (("pair", "swap_start", "y", "x", "rgb"), _u8(result.swaps))
    ds = xr.Dataset(data)
    ds = ds.drop_vars([c for c in ds.coords], errors="ignore")
    return ds, result.cost.as_dict()


def _u8(images: np.ndarray) -> np.ndarray:
    return np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)


def _allocate(out, group, pairs, variants, swap_starts, side, chunk, attrs, model, steps, shares, study) -> None:
    n, v = pairs.sizes["pair"], len(variants)
    dims2 = ("pair", "variant")
    fields = study.score_fields()
    read = fields["read"][0]
    # (the glyph study's variables keep their order: its published stores stay as they were)
    order = ["success", "colour_kept", "rest_kept", "read", "psnr", "ssim"]
    data = {name: (dims2, np.full((n, v), fields[name][1], dtype=fields[name][0])) for name in order if name in fields}
    data |= {
        "image": (dims2 + ("y", "x", "rgb"), np.zeros((n, v, side, side, 3), np.uint8)),
        "target_image": (("pair", "y", "x", "rgb"), np.zeros((n, side, side, 3), np.uint8)),
        "source_image": (("pair", "y", "x", "rgb"), np.zeros((n, side, side, 3), np.uint8)),
        "target_read": ("pair", np.full(n, "", dtype=read)),
        "source_read": ("pair", np.full(n, "", dtype=read)),
    }
    coords = dict(_variant_coords(variants))
    if swap_starts:
        s = len(swap_starts)
        for name in ("success", "colour_kept", "rest_kept"):
            if name in fields:
                data[f"swap_{name}"] = (("pair", "swap_start"), np.zeros((n, s), bool))
        data["swap_read"] = (("pair", "swap_start"), np.full((n, s), "", dtype=read))
        for name in ("psnr", "ssim"):
            data[f"swap_{name}"] = (("pair", "swap_start"), np.full((n, s), np.nan, np.float32))
        data["swap_image"] = (("pair", "swap_start", "y", "x", "rgb"), np.zeros((n, s, side, side, 3), np.uint8))
        coords["swap_start"] = list(swap_starts)
    from .patching import text_layers

    layers = text_layers(model)
    ds = xr.Dataset(data, coords=coords).merge(pairs)
    ds = ds.assign_coords(layer_module=("layer", [layer.module for layer in layers]),
                          layer_share=("layer", list(shares)))
    ds.attrs.update(attrs, model=model.name, steps=steps, group=group)
    if study.text:
        ds.attrs.update(scorer=study.reader.name)
    encoding = {name: {"chunks": (chunk,) + ds[name].shape[1:]} for name in ds.data_vars if ds[name].dims[0] == "pair"}

    def build(folder: Path) -> None:
        ds.to_zarr(folder, mode="w", encoding=encoding, consolidated=True, zarr_format=2)

    # Built beside its place and renamed into the store: readers see no group or a whole one.
    create_atomically(Path(out) / group, build)
    consolidate(out)


def open_sweep(path, group: str = "grid") -> xr.Dataset:
    """One group of a localization store (``grid`` or ``focus``)."""
    return xr.open_zarr(path, group=group, consolidated=True).load()


def _focus_variants(out, model, layers, steps, max_range: int = 3):
    """Chosen on validation pairs of the grid: best (layer, start) by edit success; its heads; layer ranges."""
    from .sweeps import Variant

    grid = open_sweep(out, "grid")
    val = grid.sel(pair=grid["split"] == "validation")
    single = val["variant_layers"].str.count(r"\+") == 0
    success = val["success"].mean("pair").where(single)
    best = str(success.idxmax("variant").values)
    layer, start = int(val["variant_layers"].sel(variant=best)), int(val["variant_start"].sel(variant=best))
    heads = int(_heads_of(model, layer))
    focus = [Variant((layer,), start, heads=(h,)) for h in range(heads)]
    if heads > 2:
        focus += [Variant((layer,), start, heads=tuple(x for x in range(heads) if x != h)) for h in range(heads)]
    longest = min(max_range, len(layers) - 1)  # the all-layer swap is in the grid already
    focus += [Variant(tuple(range(a, a + k)), 0) for k in range(2, longest + 1) for a in range(len(layers) - k + 1)]
    chosen = {"best_layer": layer, "best_start": start, "best_variant": best,
              "validation_success": float(success.sel(variant=best))}
    return focus, chosen


def _heads_of(model, layer_index: int) -> int:
    from .patching import cache_text, pick_layers

    layer = pick_layers(model, [layer_index])[0]
    _, cache = cache_text(model, ["a"], steps=1, layers=[layer_index])
    return cache.heads(layer)
