"""The SVD latent study (issue 11) on a reference model: three properties, editing, real images.

    python benchmarks/svd_study.py toy-mmdit [--steps 10] [--prop-pairs 50] [--val-pairs 25]
                                   [--test-pairs 100] [--real-pairs 25] [--work DIR] [--out docs/results]
                                   [--stages properties editing real] [--methods ...] [--fresh]
    python benchmarks/svd_study.py report [--doc docs/svd.md]   # tables (and the doc's generated blocks), figures

Everything is scored by the shipped judge on shapes-world attribute pairs: prompt B differs from
prompt A in one attribute only (colour, shape, size or glyph), same position, template and noise
seed. Stages, each cached under ``--work`` as it finishes (a re-run skips what is done, so an
interrupted run loses at most the chunk in flight):

1. property pairs (validation stream): trajectories of A and B;
   P1 subspace distance step x step (top-k, both views) against a random-subspace baseline and
   against other samples at the same step; P2 judge flip rate when A's singular values / vectors
   at step k are replaced by B's, continued with A's prompt; P3 which of A's components carries
   the difference B - A at each step;
2. editing, selection on the validation pairs: the step (and rank) of our SVD edit, slerp,
   SDEdit re-noising and the first patched step of text K/V patching (all text layers);
3. editing, test pairs (a separate seed stream): every method at its selected setting, scored by
   attribute success, other attributes preserved and background PSNR;
4. real images: shapes-world test scenes (rendered, not generated) inverted through the flow
   scheduler, reconstruction PSNR, and the SVD edit between the inverted pair.

Writes ``svd_<model>.json`` (every number the docs and notebook 06 show) into ``--out``. What that
JSON already holds (a stage, one method's selection and test rows) is kept when the settings it
depends on agree, so adding a method computes only that method (``--fresh`` ignores the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import workbench as wb
from workbench import inversion
from workbench.analysis import svd
from workbench.analysis.editing import foreground, run_edits
from workbench.data import make_scene
from workbench.data.recipe import default_recipe
from workbench.models.judge import CROP, load_judge
from workbench.widgets.pictures import png_data_uri

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _npz_cache import Cache, jsonable as _jsonable  # noqa: E402  (the study scripts' shared resume cache)

ATTRIBUTES = ("colour", "shape", "size", "glyph")
FIELD = {"colour": "colour", "shape": "name", "glyph": "name", "size": "size"}
READ_FIELDS = ("colour", "name", "size")
SWAP_CONDITIONS = (("per_channel", "values"), ("per_channel", "vectors"), ("channels", "values"),
                   ("channels", "vectors"), ("whole", "latent"))
STREAMS = {"validation": 11, "test": 12, "calibration": 13}


# -- pairs and readings ---------------------------------------------------------------------------
def attribute_pairs(attribute: str, n: int, split: str) -> list[dict]:
    """``n`` rendered scene pairs (A, B) that differ in ``attribute`` only."""
    recipe = default_recipe()
    rng = np.random.default_rng([STREAMS[split], ATTRIBUTES.index(attribute)])
    pairs = []
    for i in range(n):
        seed = (STREAMS[split], ATTRIBUTES.index(attribute), i)
        kind = "glyph" if attribute == "glyph" else "shape" if attribute == "shape" else str(rng.choice(["shape", "glyph"]))
        request = {"kind": kind}
        if attribute == "size":
            request["template"] = 1  # the template that says the size
        a = make_scene([request], seed=seed)
        obj = a.objects[0]
        spec = {"kind": obj.kind, obj.kind: obj.name, "colour": obj.colour, "position": obj.position, "size": obj.size,
                "template": obj.template}
        key = {"colour": "colour", "shape": "shape", "glyph": "glyph", "size": "size"}[attribute]
        vocabulary = recipe.vocabulary(key)
        current = spec[key]
        spec[key] = str(rng.choice([v for v in vocabulary if v != current]))
        b = make_scene([spec], seed=seed)
        assert b.objects[0].position == obj.position and b.objects[0].size == spec["size"]
        truth = lambda o: {"colour": o.colour, "name": o.name, "size": o.size}  # noqa: E731
        pairs.append({"source": a.caption, "target": b.caption, "attribute": attribute, "position": obj.position,
                      "truth_source": truth(obj), "truth_target": truth(b.objects[0]),
                      "image_source": a.image, "image_target": b.image, "mask": a.masks.any(0) | b.masks.any(0),
                      "spans_source": dict(a.spans[0]), "spans_target": dict(b.spans[0])})
    return pairs


def object_area(images: np.ndarray, positions: list[str]) -> np.ndarray:
    """Foreground pixels in the judge's crop around each image's object anchor."""
    recipe = default_recipe()
    fg = foreground(images)
    areas = []
    for mask, position in zip(fg, positions):
        x, y = (int(round(c)) for c in recipe.positions[position].anchor)
        h = CROP // 2
        areas.append(mask[max(0, y - h):y + h, max(0, x - h):x + h].sum())
    return np.array(areas)


def calibrate_size(n: int = 400) -> tuple[float, float]:
    """The area threshold between small and large objects, chosen on rendered scenes (a stream of
    its own), and its accuracy there: the judge reads names and colours, not sizes."""
    scenes = [make_scene([{}], seed=(STREAMS["calibration"], i)) for i in range(n)]
    images = np.stack([s.image for s in scenes]).astype(np.float32) / 255
    areas = object_area(images, [s.objects[0].position for s in scenes])
    large = np.array([s.objects[0].size == "large" for s in scenes])
    candidates = np.unique(areas) + 0.5
    accuracy = [((areas >= c) == large).mean() for c in candidates]
    best = int(np.argmax(accuracy))
    return float(candidates[best]), float(accuracy[best])


class Reader:
    """Colour and name from the judge at the pair's position; size from the foreground area."""

    def __init__(self, judge, size_threshold: float):
        self.judge, self.size_threshold = judge, size_threshold

    def __call__(self, images: np.ndarray, positions: list[str]) -> dict[str, np.ndarray]:
        verdict = self.judge.judge(np.asarray(images, dtype=np.float32))
        idx = range(len(positions))
        return {"colour": np.array([verdict["colour"][p][i] for i, p in zip(idx, positions)]),
                "name": np.array([verdict["name"][p][i] for i, p in zip(idx, positions)]),
                "size": np.where(object_area(images, positions) >= self.size_threshold, "large", "small")}


def edit_scores(readings: dict, source_readings: dict, pairs: list[dict], edits: np.ndarray,
                sources: np.ndarray) -> dict:
    """Attribute success (the edit reads as the target's truth), other attributes preserved (read
    as in the source image) and background PSNR against the source, outside both objects' true
    masks (dilated by 2 px for the generator's blur and jitter)."""
    attribute = pairs[0]["attribute"]
    field = FIELD[attribute]
    target = np.array([p["truth_target"][field] for p in pairs])
    success = readings[field] == target
    others = [f for f in READ_FIELDS if f != field]
    preserved = np.all([readings[f] == source_readings[f] for f in others], axis=0)
    masks = np.stack([_dilate(p["mask"], 2) for p in pairs])
    background = inversion.psnr(edits, sources, ~masks)
    return {"success": success, "preserved": preserved, "background_psnr": background}


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def summarise(scores: dict) -> dict:
    return {"success": float(np.mean(scores["success"])), "preserved": float(np.mean(scores["preserved"])),
            "success_and_preserved": float(np.mean(scores["success"] & scores["preserved"])),
            "background_psnr": float(np.mean(scores["background_psnr"])), "n": int(len(scores["success"]))}


# -- caching --------------------------------------------------------------------------------------
# (Cache: benchmarks/_npz_cache.py, shared with the other study scripts)


def images_of(model, latents) -> np.ndarray:
    return np.clip(model.decode_latents(np.asarray(latents)), 0.0, 1.0).astype(np.float32)


# -- the study ------------------------------------------------------------------------------------
STAGES = ("properties", "editing", "real")
# which settings each stage's numbers depend on: a previous result is reused only where they agree
DEPENDS = {"properties": ("steps", "prop_pairs", "swap_pairs", "swap_steps"),
           "selection": ("steps", "prop_pairs", "val_pairs"), "editing": ("steps", "test_pairs"),
           "real": ("steps", "real_pairs")}


def _setting(settings: dict, key: str):
    if key == "swap_pairs" and "swap_pairs" not in settings:  # before --swap-pairs: P2 used every property pair
        return settings.get("prop_pairs")
    return settings.get(key)


def previous_result(name: str, args) -> dict:
    """The model's saved JSON in ``--out`` (empty with ``--fresh`` or when there is none)."""
    path = Path(args.out) / f"svd_{name}.json"
    if args.fresh or not path.exists():
        return {}
    return json.loads(path.read_text())


def run(name: str, args) -> dict:
    """The study, resumable twice over: chunks cached under ``--work`` are not recomputed, and
    whatever the saved JSON in ``--out`` already holds (a stage, or one method's selection and test
    rows) is kept as it is when the settings it depends on agree (``DEPENDS``), so adding a method
    computes that method only. ``--stages`` / ``--methods`` restrict what is computed."""
    torch.set_num_threads(args.threads)
    started = time.time()
    model, judge = wb.load(name), load_judge()
    cache = Cache(Path(args.work) / name)
    steps = args.steps
    threshold, size_accuracy = calibrate_size()
    read = Reader(judge, threshold)
    prev = previous_result(name, args)
    settings = {k: v for k, v in vars(args).items() if k not in ("fresh",)}

    def agrees(stage: str) -> bool:
        return bool(prev) and all(_setting(prev["settings"], k) == _setting(settings, k) for k in DEPENDS[stage])

    result = {"model": name, "steps": steps, "guidance_scale": model.guidance_scale,
              "size_reader": {"threshold_pixels": threshold, "accuracy_on_rendered": size_accuracy},
              "settings": settings}
    computed: list[str] = []
    reused: list[str] = []

    # 1. property pairs and their trajectories (computed only when something needs them)
    val = {a: attribute_pairs(a, args.prop_pairs, "validation") for a in ATTRIBUTES}
    memo = {}

    def validation():
        if not memo:
            traj = {}
            for i, a in enumerate(tqdm(ATTRIBUTES, desc=f"{name} trajectories")):
                def compute(a=a, i=i):
                    za = svd.trajectory(model, [p["source"] for p in val[a]], steps, seed=100 + i).values
                    zb = svd.trajectory(model, [p["target"] for p in val[a]], steps, seed=100 + i).values
                    return {"a": za, "b": zb}
                traj[a] = cache.get(f"val_traj_{a}", compute)
            val_read = {}
            for a in ATTRIBUTES:
                positions = [p["position"] for p in val[a]]
                val_read[a] = (read(images_of(model, traj[a]["a"][:, -1]), positions),
                               read(images_of(model, traj[a]["b"][:, -1]), positions))
            memo.update(traj=traj, val_read=val_read)
        return memo["traj"], memo["val_read"]

    if agrees("properties") and all(k in prev for k in ("render_rate", "P1", "P2", "P3")):
        result.update({k: prev[k] for k in ("render_rate", "P1", "P2", "P3")})
        reused.append("properties")
    elif "properties" in args.stages:
        traj, val_read = validation()
        result["render_rate"] = {a: _render_rate(val[a], *val_read[a]) for a in ATTRIBUTES}
        result["P1"] = property_stability(traj, args)
        result["P2"] = property_swaps(model, cache, val, traj, val_read, read, steps, args)
        result["P3"] = property_ranks(traj, steps)
        computed.append("properties")
    _save(result, name, args)

    if "editing" in args.stages:
        # 2. editing: selection on validation pairs (per method: kept from the saved JSON or computed)
        done = prev.get("selection", {}) if agrees("selection") else {}
        result["selection"], new = select_edits(model, cache, val, validation, read, steps, args, done)
        computed += [f"selection {m}" for m in new]
        reused += [f"selection {m}" for m in result["selection"] if m not in new]
        _save(result, name, args)

        # 3. editing on test pairs
        done = ((prev.get("editing", {}), prev.get("examples", {})) if agrees("editing") and agrees("selection")
                else ({}, {}))
        result["editing"], result["examples"], new = test_edits(model, cache, read, steps, result["selection"], args, *done)
        computed += [f"test {m}" for m in new]
        reused += [f"test {m}" for m in result["selection"] if m not in new]
        _save(result, name, args)

    # 4. real images
    chosen = result.get("selection", {}).get("svd-edit", {}).get("chosen")
    old_real = prev.get("real", {}).get("reconstruction_psnr", {})
    if agrees("real") and chosen and (old_real.get("edit_step"), old_real.get("rank")) == (chosen["step"], chosen["rank"]):
        result["real"] = prev["real"]
        reused.append("real")
    elif "real" in args.stages and chosen:
        result["real"] = real_edits(model, cache, read, steps, result["selection"], args)
        computed.append("real")
    minutes = (time.time() - started) / 60
    runs = (prev.get("runs") or ([{"minutes": prev["minutes"], "computed": ["all"]}] if "minutes" in prev else [])
            if reused else [])
    result["runs"] = runs + [{"minutes": minutes, "computed": computed, "chunks_computed": cache.computed,
                              "chunks_loaded": cache.loaded}]
    result["minutes"] = sum(r["minutes"] for r in result["runs"])
    _save(result, name, args)
    return result


def _render_rate(pairs, read_a, read_b) -> dict:
    field = FIELD[pairs[0]["attribute"]]
    truth_a = np.array([p["truth_source"][field] for p in pairs])
    truth_b = np.array([p["truth_target"][field] for p in pairs])
    return {"source_correct": float(np.mean(read_a[field] == truth_a)), "target_correct": float(np.mean(read_b[field] == truth_b)),
            "read_different": float(np.mean(read_a[field] != read_b[field]))}


def property_stability(traj: dict, args) -> dict:
    """P1: step x step Grassmann distance of top-k subspaces, with two baselines."""
    z = np.concatenate([np.concatenate([traj[a]["a"], traj[a]["b"]]) for a in ATTRIBUTES])  # (sample, step, C, H, W)
    latents = svd.as_latents(z, leading=("sample", "step"))
    out = {"samples": int(z.shape[0]), "maps": []}
    rng = np.random.default_rng(0)
    shuffle = rng.permutation(z.shape[0])
    for view, ks in (("channels", (1, 2)), ("per_channel", (1, 4, 8))):
        factors = svd.latent_svd(latents, view)
        for k in ks:
            heat = svd.subspace_distances(factors, k)
            basis = svd.basis(factors, k).transpose("sample", "step", ..., "space", "component").values
            cross = svd.grassmann_distance(basis, basis[shuffle]).reshape(basis.shape[0], basis.shape[1], -1).mean((0, 2))
            n_space = basis.shape[-2]
            mean, std = svd.random_subspace_distance(n_space, k)
            out["maps"].append({"view": view, "k": k, "space": n_space, "distance": heat.values.tolist(),
                                "random_mean": mean, "random_std": std, "cross_sample": cross.tolist(),
                                "max_distance": float(np.sqrt(k) * np.pi / 2)})
    return out


def property_swaps(model, cache, val, traj, val_read, read, steps, args) -> dict:
    """P2: flip rate when A's values / vectors at step k are replaced by B's, continued with A's prompt."""
    rows = []
    n = args.swap_pairs
    for a in ATTRIBUTES:
        pairs, field = val[a][:n], FIELD[a]
        read_a, read_b = (r[field][:n] for r in val_read[a])
        valid = read_a != read_b
        positions = [p["position"] for p in pairs]
        for k in tqdm(args.swap_steps, desc=f"P2 {a}"):
            za, zb = traj[a]["a"][:n, k], traj[a]["b"][:n, k]
            for view, part in SWAP_CONDITIONS:
                def compute(view=view, part=part, za=za, zb=zb, k=k):
                    if view == "whole":
                        edited = zb
                    else:
                        fb = svd.latent_svd(zb, view)
                        edited = svd.edit_latents(za, lambda f: svd.swap(f, fb, part), view).values
                    images = svd.continue_from(model, [p["source"] for p in pairs], edited, k, steps)
                    r = read(images, positions)
                    return {f: r[f] for f in READ_FIELDS}
                r = cache.get(f"swap_{a}_{k}_{view}_{part}", compute)
                flip = (r[field] == read_b) & valid
                changed = (r[field] != read_a) & valid
                rows.append({"attribute": a, "step": int(k), "view": view, "part": part, "valid": int(valid.sum()),
                             "flip_rate": float(flip.sum() / max(valid.sum(), 1)),
                             "change_rate": float(changed.sum() / max(valid.sum(), 1))})
    return {"rows": rows, "steps": list(map(int, args.swap_steps)), "pairs_per_attribute": n}


def property_ranks(traj, steps) -> dict:
    """P3: the share of B - A along each of A's components, per step; the carrying component's rank."""
    out = {}
    for view in ("channels", "per_channel"):
        per_attr = {}
        for a in ATTRIBUTES:
            za = svd.as_latents(traj[a]["a"][:, 1:], leading=("sample", "step"))
            zb = svd.as_latents(traj[a]["b"][:, 1:], leading=("sample", "step"))
            shares = svd.attribute_shares(svd.latent_svd(za, view), zb).values  # (sample, step, component)
            top_rank = shares.argmax(-1) + 1  # 1-based rank of the carrying component
            n_comp = shares.shape[-1]
            histogram = np.stack([(top_rank == r).mean(0) for r in range(1, n_comp + 1)], -1)  # (step, rank)
            mode = histogram.argmax(-1) + 1
            per_attr[a] = {"mean_share": shares.mean(0).tolist(), "rank_histogram": histogram.tolist(),
                           "modal_rank": mode.tolist(), "mean_rank": top_rank.mean(0).tolist(),
                           "top4_share": shares[..., :4].sum(-1).mean(0).tolist()}
        out[view] = per_attr
    out["steps"] = list(range(1, steps + 1))
    return out


def _sdedit_latents(model, clean: np.ndarray, k: int, steps: int, seed: int) -> np.ndarray:
    """The source's final latent re-noised to the timestep of step k (fresh noise)."""
    model.scheduler.set_timesteps(steps)
    t = float(model.scheduler.timesteps[k])
    noise = torch.randn(clean.shape, generator=torch.Generator("cpu").manual_seed(seed))
    return model.add_noise(torch.from_numpy(np.ascontiguousarray(clean)), t, noise).numpy()


def method_images(model, method: str, setting: dict, pairs, za, zb, steps, guidance=None, seed=0) -> np.ndarray:
    """Edited images of one latent-space method at one setting, from trajectories za / zb
    (sample, step, ...) of the source and target prompts."""
    sources, targets = [p["source"] for p in pairs], [p["target"] for p in pairs]
    k = setting.get("step")
    if method == "svd-edit":
        edited = svd.svd_edit(za[:, k], zb[:, k], rank=setting["rank"], view="per_channel").values
        return svd.continue_from(model, sources, edited, k, steps, guidance_scale=guidance)
    if method == "slerp":
        mixed = svd.slerp(za[:, k], zb[:, k], 0.5).values
        return svd.continue_from(model, sources, mixed, k, steps, guidance_scale=guidance)
    if method == "sdedit":
        noisy = _sdedit_latents(model, za[:, -1], k, steps, seed)
        return svd.continue_from(model, targets, noisy, k, steps, guidance_scale=guidance)
    if method == "prompt-swap":
        return images_of(model, zb[:, -1])
    raise KeyError(method)


GRID = {"svd-edit": [{"step": k, "rank": r} for k in (1, 2, 3, 5) for r in (1, 4, 8)],
        "slerp": [{"step": k} for k in (1, 2, 3, 5)],
        "sdedit": [{"step": k} for k in (1, 2, 3, 5, 7)],
        "kv-patch": [{"step": k} for k in (0, 1, 2, 3, 5, 7)]}  # step: the first patched step
LATENT_METHODS = ("svd-edit", "slerp", "sdedit")  # method_images: edits of the recorded trajectories
KV = "kv-patch"  # text K/V of the attribute prompt at every text layer (analysis.svd.text_kv_edits)
METHODS = ("prompt-swap", "svd-edit", "slerp", "sdedit", "attention-reuse", KV)


def kv_runs(model, cache, key: str, pairs, noise, starts, steps, read) -> dict:
    """The K/V patching baseline on ``pairs`` from ``noise``: per start step the images and their
    readings, and the unpatched source run's; ``{"not_applicable": reason}`` where the library
    refuses the pairs (a token alignment that cannot be made, a model without a text stream)."""
    positions = [p["position"] for p in pairs]

    def compute():
        out = svd.text_kv_edits(model, [p["source"] for p in pairs], [p["target"] for p in pairs], starts, steps, noise,
                                source_spans=[p["spans_source"] for p in pairs],
                                attribute_spans=[p["spans_target"] for p in pairs])
        flat = {}
        for k, images in out.items():
            name = "source" if k == "source" else f"s{k}"
            r = read(images, positions)
            flat.update({f"{name}_images": images, **{f"{name}_{f}": r[f] for f in READ_FIELDS}})
        return flat
    try:
        flat = cache.get(key, compute)
    except ValueError as error:  # the library's refusal, kept as the reason
        return {"not_applicable": str(error).splitlines()[0][:200]}
    unpack = lambda name: {"images": flat[f"{name}_images"], **{f: flat[f"{name}_{f}"] for f in READ_FIELDS}}  # noqa: E731
    return {"source": unpack("source"), **{int(k): unpack(f"s{k}") for k in starts}}


def select_edits(model, cache, val, validation, read, steps, args, done=None) -> tuple[dict, list[str]]:
    """Per method, the setting with the highest mean (success and preserved) over attributes,
    on the first ``val_pairs`` validation pairs of each attribute. ``done``: methods already
    selected (a saved result), kept as they are. Returns the table and the methods computed."""
    n = args.val_pairs
    done = done or {}
    table, computed = {}, []
    for method, settings in GRID.items():
        if method in done:
            table[method] = done[method]
            continue
        if method not in args.methods:
            continue
        settings = [s for s in settings if s["step"] < steps]
        rows = []
        if method == KV:
            runs = {a: kv_runs(model, cache, f"val_{KV}_{a}", val[a][:n],
                               svd.initial_noise(model, args.prop_pairs, 100 + i)[:n],  # the trajectories' noise
                               [s["step"] for s in settings], steps, read)
                    for i, a in enumerate(tqdm(ATTRIBUTES, desc=f"select {KV}"))}
            missing = {a: r["not_applicable"] for a, r in runs.items() if "not_applicable" in r}
            for setting in settings:
                per_attr = {a: summarise(edit_scores(r[setting["step"]], r["source"], val[a][:n],
                                                     r[setting["step"]]["images"], r["source"]["images"]))
                            for a, r in runs.items() if a not in missing}
                if not per_attr:
                    break
                score = float(np.mean([v["success_and_preserved"] for v in per_attr.values()]))
                rows.append({"setting": setting, "score": score, "per_attribute": per_attr,
                             **({"not_applicable": missing} if missing else {})})
            if not rows:
                table[method] = {"not_applicable": missing}
                computed.append(method)
                continue
        else:
            traj, val_read = validation()
            for setting in tqdm(settings, desc=f"select {method}"):
                per_attr = {}
                for a in ATTRIBUTES:
                    pairs = val[a][:n]
                    key = f"val_{method}_{a}_" + "_".join(f"{k}{v}" for k, v in setting.items())

                    def compute(a=a, pairs=pairs, setting=setting, method=method):
                        images = method_images(model, method, setting, pairs, traj[a]["a"][:n], traj[a]["b"][:n], steps)
                        r = read(images, [p["position"] for p in pairs])
                        return {"images": images, **{f: r[f] for f in READ_FIELDS}}
                    r = cache.get(key, compute)
                    source_images = images_of(model, traj[a]["a"][:n, -1])
                    src = {f: val_read[a][0][f][:n] for f in READ_FIELDS}
                    per_attr[a] = summarise(edit_scores(r, src, pairs, r["images"], source_images))
                score = float(np.mean([per_attr[a]["success_and_preserved"] for a in ATTRIBUTES]))
                rows.append({"setting": setting, "score": score, "per_attribute": per_attr})
        best = max(rows, key=lambda row: row["score"])  # ties: the first setting in GRID order
        table[method] = {"chosen": best["setting"], "score": best["score"], "grid": rows,
                         **({"not_applicable": best["not_applicable"]} if "not_applicable" in best else {})}
        computed.append(method)
    return table, computed


def test_edits(model, cache, read, steps, selection, args, done=None, done_examples=None) -> tuple[dict, dict, list[str]]:
    """Every selected method on the test pairs. ``done`` / ``done_examples``: a saved result's rows,
    kept where the method's setting is the one selected now. Returns rows, examples, methods computed."""
    test = {a: attribute_pairs(a, args.test_pairs, "test") for a in ATTRIBUTES}
    done, done_examples = done or {}, done_examples or {}
    table, examples, computed = {}, {}, set()

    def kept(a, method, setting):
        row = done.get(a, {}).get(method)
        return row is not None and ("not_applicable" in row or row.get("setting") == setting)

    for i, a in enumerate(ATTRIBUTES):
        pairs = test[a]
        positions = [p["position"] for p in pairs]
        table[a] = {k: v for k, v in done.get(a, {}).items() if k == "source_read_correct"}
        shown = dict(done_examples.get(a, {}).get("images", {}))
        latent = {"prompt-swap": {}, **{m: selection[m]["chosen"] for m in LATENT_METHODS if m in selection}}
        todo = {m: st for m, st in latent.items() if not kept(a, m, st) and m in args.methods}
        reuse_setting = {"reuse_steps": steps // 2, "sites": "image->image"}
        for m, st in {**latent, "attention-reuse": reuse_setting}.items():
            if kept(a, m, st):
                table[a][m] = done[a][m]
        needs_sources = "source_read_correct" not in table[a] and bool({"prompt-swap", *LATENT_METHODS} & set(args.methods))
        if todo or needs_sources:
            def compute(a=a, i=i, pairs=pairs):
                za = svd.trajectory(model, [p["source"] for p in pairs], steps, seed=200 + i).values
                zb = svd.trajectory(model, [p["target"] for p in pairs], steps, seed=200 + i).values
                return {"a": za, "b": zb}
            tr = cache.get(f"test_traj_{a}", compute)
            source_images = images_of(model, tr["a"][:, -1])
            src = read(source_images, positions)
            table[a]["source_read_correct"] = float(np.mean(src[FIELD[a]] == np.array([p["truth_source"][FIELD[a]]
                                                                                       for p in pairs])))
            shown["source"] = [png_data_uri(img) for img in source_images[:6]]
            for method, setting in tqdm(todo.items(), desc=f"test {a}"):
                def compute_method(method=method, setting=setting):
                    images = method_images(model, method, setting, pairs, tr["a"], tr["b"], steps, seed=7)
                    r = read(images, positions)
                    return {"images": images, **{f: r[f] for f in READ_FIELDS}}
                r = cache.get(f"test_{method}_{a}", compute_method)
                table[a][method] = {**summarise(edit_scores(r, src, pairs, r["images"], source_images)), "setting": setting}
                shown[method] = [png_data_uri(img) for img in r["images"][:6]]
                computed.add(method)
        if "attention-reuse" not in table[a] and "attention-reuse" in args.methods:
            try:  # attention reuse needs the image->image attention sites (MM-DiT joint attention)
                def compute_reuse():
                    srcs, edits = run_edits(model, [{"source": p["source"], "target": p["target"]} for p in pairs],
                                            "image->image", steps=steps, reuse_steps=steps // 2, seed=300 + i)
                    r = read(edits, positions)
                    s = read(srcs, positions)
                    return {"images": edits, "sources": srcs, **{f: r[f] for f in READ_FIELDS},
                            **{f"src_{f}": s[f] for f in READ_FIELDS}}
                r = cache.get(f"test_attention-reuse_{a}", compute_reuse)
                src_r = {f: r[f"src_{f}"] for f in READ_FIELDS}
                table[a]["attention-reuse"] = {**summarise(edit_scores(r, src_r, pairs, r["images"], r["sources"])),
                                               "setting": reuse_setting}
                shown["attention-reuse"] = [png_data_uri(img) for img in r["images"][:6]]
            except (KeyError, ValueError) as error:
                table[a]["attention-reuse"] = {"not_applicable": str(error).splitlines()[0][:200]}
            computed.add("attention-reuse")
        if KV in selection and not kept(a, KV, selection[KV].get("chosen")) and KV in args.methods:
            entry = selection[KV]
            if "chosen" not in entry or a in entry.get("not_applicable", {}):
                reason = entry.get("not_applicable", {}).get(a, "not applicable on the validation pairs")
                table[a][KV] = {"not_applicable": reason}
            else:
                start = entry["chosen"]["step"]
                r = kv_runs(model, cache, f"test_{KV}_{a}_step{start}", pairs, svd.initial_noise(model, args.test_pairs, 200 + i),
                            [start], steps, read)
                if "not_applicable" in r:
                    table[a][KV] = r
                else:
                    table[a][KV] = {**summarise(edit_scores(r[start], r["source"], pairs, r[start]["images"],
                                                            r["source"]["images"])), "setting": entry["chosen"]}
                    shown[KV] = [png_data_uri(img) for img in r[start]["images"][:6]]
            computed.add(KV)
        elif KV in selection and kept(a, KV, selection[KV].get("chosen")):
            table[a][KV] = done[a][KV]
        table[a] = {k: table[a][k] for k in ("source_read_correct", *METHODS) if k in table[a]}
        examples[a] = {"captions": [[p["source"], p["target"]] for p in pairs[:6]], "images": shown}
    return table, examples, sorted(computed)


def real_edits(model, cache, read, steps, selection, args) -> dict:
    """Invert rendered test scenes (not generations) and edit them."""
    out = {}
    chosen = selection["svd-edit"]["chosen"]
    recons = []
    for a in tqdm(ATTRIBUTES, desc="real images"):
        pairs = attribute_pairs(a, args.real_pairs, "test")
        positions = [p["position"] for p in pairs]
        real_a = np.stack([p["image_source"] for p in pairs])
        real_b = np.stack([p["image_target"] for p in pairs])

        def compute(pairs=pairs, real_a=real_a, real_b=real_b):
            result = {}
            for refine in (0, 2):
                inv = inversion.invert_images(model, real_a, [p["source"] for p in pairs], steps, refine=refine)
                result[f"recon{refine}"] = model.generate([p["source"] for p in pairs], steps=steps, latents=inv[0],
                                                          guidance_scale=1.0)
                result[f"inv_a{refine}"] = inv.permute(1, 0, 2, 3, 4).numpy()
            inv_b = inversion.invert_images(model, real_b, [p["target"] for p in pairs], steps, refine=2)
            za, zb = result["inv_a2"], inv_b.permute(1, 0, 2, 3, 4).numpy()
            k = chosen["step"]
            result["svd-edit"] = method_images(model, "svd-edit", chosen, pairs, za, zb, steps, guidance=1.0)
            result["prompt-swap"] = model.generate([p["target"] for p in pairs], steps=steps,
                                                   latents=torch.from_numpy(za[:, 0]), guidance_scale=1.0)
            result["prompt-swap-from-k"] = svd.continue_from(model, [p["target"] for p in pairs], za[:, k], k, steps,
                                                             guidance_scale=1.0)
            return result
        r = cache.get(f"real_{a}", compute)
        real = real_a.astype(np.float32) / 255
        src = read(real, positions)
        entry = {"reconstruction_psnr": {f"refine{n}": float(inversion.psnr(r[f"recon{n}"], real).mean()) for n in (0, 2)}}
        recons.append([inversion.psnr(r[f"recon{n}"], real) for n in (0, 2)])
        for method in ("svd-edit", "prompt-swap", "prompt-swap-from-k"):
            rr = read(r[method], positions)
            entry[method] = summarise(edit_scores(rr, src, pairs, r[method], real))
        entry["examples"] = {"real": [png_data_uri(x) for x in real[:4]],
                             "reconstruction": [png_data_uri(x) for x in r["recon2"][:4]],
                             "svd-edit": [png_data_uri(x) for x in r["svd-edit"][:4]],
                             "captions": [[p["source"], p["target"]] for p in pairs[:4]]}
        out[a] = entry
    recons = np.array(recons)  # (attribute, refine, pair)
    out["reconstruction_psnr"] = {"refine0": float(recons[:, 0].mean()), "refine2": float(recons[:, 1].mean()),
                                  "images": int(recons.shape[0] * recons.shape[2]), "guidance_scale": 1.0,
                                  "edit_step": chosen["step"], "rank": chosen["rank"]}
    return out


def _save(result: dict, name: str, args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".svd_{name}.json.tmp"
    tmp.write_text(json.dumps(result, indent=1, default=_jsonable))
    os.replace(tmp, out / f"svd_{name}.json")



# -- figures for docs/svd.md ----------------------------------------------------------------------
def _viridis(x: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> RGB uint8 along a few viridis anchors (no plotting library needed)."""
    anchors = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=float)
    pos = np.clip(x, 0, 1) * (len(anchors) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(anchors) - 2)
    frac = (pos - lo)[..., None]
    return (anchors[lo] * (1 - frac) + anchors[lo + 1] * frac).astype(np.uint8)


def figures(results: dict, img_dir: Path, html_path: Path) -> list[Path]:
    """PNG figures (P1 heatmaps beside their baselines, example edits) and one interactive HTML page."""
    from PIL import Image, ImageDraw

    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    img_dir.mkdir(parents=True, exist_ok=True)
    written = []
    picks = (("per_channel", 4), ("channels", 1))
    cell, pad = 18, 30
    tiles = []
    for name, r in results.items():
        maps = {(m["view"], m["k"]): m for m in r["P1"]["maps"]}
        for key in picks:
            m = maps[key]
            d = np.array(m["distance"]) / m["random_mean"]  # 1 = as far apart as random subspaces
            rgb = np.kron(_viridis(d), np.ones((cell, cell, 1), dtype=np.uint8))
            tile = Image.new("RGB", (rgb.shape[1] + 2 * pad, rgb.shape[0] + 2 * pad), "white")
            tile.paste(Image.fromarray(rgb), (pad, pad))
            draw = ImageDraw.Draw(tile)
            draw.text((pad, 4), f"{name} {key[0]} k={key[1]}", fill="black")
            draw.text((pad, pad + rgb.shape[0] + 4), "step 0 .. 10 (x and y); colour: distance / random", fill="black")
            tiles.append(tile)
    if tiles:
        sheet = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)), "white")
        x = 0
        for t in tiles:
            sheet.paste(t, (x, 0))
            x += t.width
        path = img_dir / "svd_subspace_distance.png"
        sheet.save(path)
        written.append(path)
    import base64
    import io

    for name, r in results.items():
        if "examples" not in r:
            continue
        rows = []
        methods = ["source", *METHODS]
        for a in ATTRIBUTES:
            shown = r["examples"][a]["images"]
            for method in [m for m in methods if m in shown]:
                pictures = [Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB")
                            for uri in shown[method][:6]]
                rows.append((f"{a}: {method}", pictures))
        scale, label_w = 2, 150
        sheet = Image.new("RGB", (label_w + 6 * 32 * scale, len(rows) * 32 * scale), "white")
        draw = ImageDraw.Draw(sheet)
        for i, (label, pictures) in enumerate(rows):
            draw.text((4, i * 32 * scale + 26), label, fill="black")
            for j, picture in enumerate(pictures):
                sheet.paste(picture.resize((32 * scale, 32 * scale), Image.NEAREST), (label_w + j * 32 * scale, i * 32 * scale))
        path = img_dir / f"svd_edits_{name}.png"
        sheet.save(path)
        written.append(path)
    fig = make_subplots(rows=len(results), cols=len(picks) + 1, horizontal_spacing=0.06, vertical_spacing=0.12,
                        subplot_titles=[f"{n}: {v} k={k}" for n in results for v, k in picks]
                        + [] if False else None)
    for row, (name, r) in enumerate(results.items(), start=1):
        maps = {(m["view"], m["k"]): m for m in r["P1"]["maps"]}
        for col, key in enumerate(picks, start=1):
            m = maps[key]
            fig.add_trace(go.Heatmap(z=m["distance"], zmin=0, zmax=m["random_mean"], colorscale="Viridis",
                                     showscale=False, name=f"{name} {key}"), row=row, col=col)
        for key in picks:
            m = maps[key]
            d = np.array(m["distance"])
            fig.add_trace(go.Scatter(y=(d[:, -1] / m["random_mean"]).tolist(), name=f"{name} {key[0]} k={key[1]}: to final"),
                          row=row, col=len(picks) + 1)
            fig.add_trace(go.Scatter(y=(np.array(m["cross_sample"]) / m["random_mean"]).tolist(), line=dict(dash="dot"),
                                     name=f"{name} {key[0]} k={key[1]}: other prompt"), row=row, col=len(picks) + 1)
    fig.update_layout(height=380 * len(results), width=1150, title="P1: Grassmann distance between steps "
                      "(heatmaps; right: to the final step and to another prompt at the same step, / random baseline)")
    html_path.write_text(fig.to_html(include_plotlyjs="cdn", full_html=True))
    written.append(html_path)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["toy-mmdit", "toy-unet", "report"],
                        help="a reference model to study, or 'report': markdown tables of the saved results")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--prop-pairs", type=int, default=50, help="property pairs per attribute (2 prompts each)")
    parser.add_argument("--val-pairs", type=int, default=25, help="validation pairs per attribute for edit selection")
    parser.add_argument("--test-pairs", type=int, default=100)
    parser.add_argument("--real-pairs", type=int, default=25)
    parser.add_argument("--swap-pairs", type=int, default=50, help="property pairs per attribute in P2's swaps")
    parser.add_argument("--swap-steps", type=int, nargs="+", default=[1, 2, 3, 5, 7])
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                        help="stages to compute (others are only kept from the saved JSON)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="editing methods to compute (others are only kept from the saved JSON)")
    parser.add_argument("--fresh", action="store_true",
                        help="ignore the saved JSON in --out (cached chunks under --work are still used)")
    parser.add_argument("--doc", help="with 'report': rewrite the generated blocks of this markdown file "
                        "(between <!-- svd_study: NAME --> and <!-- /svd_study: NAME -->)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", default="bench-out/svd")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "results"))
    args = parser.parse_args(argv)
    if args.model == "report":
        found = {m: json.loads((Path(args.out) / f"svd_{m}.json").read_text()) for m in ("toy-mmdit", "toy-unet")
                 if (Path(args.out) / f"svd_{m}.json").exists()}
        print(report(found))
        if args.doc:
            update_doc(Path(args.doc), doc_blocks(found))
            print(f"updated {args.doc}", file=sys.stderr)
        root = Path(__file__).resolve().parents[1]
        for path in figures(found, root / "docs" / "img", Path(args.out) / "svd_figures.html"):
            print(f"wrote {path}", file=sys.stderr)
        return 0
    run(args.model, args)
    return 0


# -- markdown tables for docs/svd.md --------------------------------------------------------------
LABELS = {"prompt-swap": "prompt swap", "svd-edit": "**SVD edit (ours)**", "slerp": "slerp", "sdedit": "SDEdit",
          "attention-reuse": "attention reuse", KV: "text K/V patching (all text layers)"}


def _cell(score: dict) -> str:
    if "success" not in score:
        return "n/a"
    return f"{score['success']:.2f} / {score['preserved']:.2f} / {score['background_psnr']:.1f}"


def _chosen(entry: dict) -> str:
    if "chosen" not in entry:
        return "n/a"
    return ", ".join(f"{k} {v}" for k, v in entry["chosen"].items()) + f" (score {entry['score']:.2f})"


def sizes_line(results: dict) -> str:
    """Each model's study sizes, from its JSON."""
    out = []
    for name, r in results.items():
        st = r["settings"]
        p2 = r.get("P2", {})
        out.append(f"* {name}: properties on {st['prop_pairs']} pairs per attribute ({r['P1']['samples']} prompts); "
                   f"P2 on {p2.get('pairs_per_attribute', _setting(st, 'swap_pairs'))} pairs per attribute at swap "
                   f"steps {{{', '.join(map(str, p2.get('steps', st['swap_steps'])))}}}; editing selection on "
                   f"{st['val_pairs']} validation pairs per attribute; editing test on {st['test_pairs']} pairs per "
                   f"attribute; real images on {st['real_pairs']} pairs per attribute; "
                   + "; ".join(_run_line(run) for run in r.get("runs", [{"minutes": r.get("minutes", float("nan")),
                                                                                "computed": ["all"]}])))
    return "\n".join(out)


def _run_line(run: dict) -> str:
    what = ", ".join(run["computed"]) or "nothing new"
    if run.get("chunks_computed") == 0 and run.get("chunks_loaded"):
        return (f"assembled in {run['minutes']:.1f} min from {run['chunks_loaded']} chunks cached by earlier runs "
                "(interrupted or in parallel; their time is not recorded)")
    return f"{run['minutes']:.0f} min ({what})"


def editing_side_by_side(results: dict) -> str:
    """The editing table, both models side by side, and the settings chosen on validation."""
    names = list(results)
    lines = ["Settings chosen on validation pairs (the mean over attributes of the share of pairs with the attribute "
             "right and the others preserved):", "",
             "| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for method in GRID:
        lines.append(f"| {LABELS[method]} | " + " | ".join(_chosen(results[n]["selection"].get(method, {})) for n in names) + " |")
    lines += ["", "Success / other attributes preserved / background PSNR against the source (dB), test pairs:", "",
              "| attribute | method | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    reasons = {}
    for a in ATTRIBUTES:
        for method in METHODS:
            cells = []
            for n in names:
                score = results[n]["editing"][a].get(method, {})
                cells.append(_cell(score))
                if "not_applicable" in score:
                    reasons.setdefault((n, method), score["not_applicable"].split(";")[0].strip("\"'"))
            lines.append(f"| {a} | {LABELS[method]} | " + " | ".join(cells) + " |")
    if reasons:
        lines.append("")
        lines += [f"n/a: {LABELS[m]} on {n}: {reason}" + ("  " if i < len(reasons) - 1 else "")
                  for i, ((n, m), reason) in enumerate(reasons.items())]
    return "\n".join(lines)


def real_side_by_side(results: dict) -> str:
    names = list(results)
    lines = ["| | " + " | ".join(f"{n} ({results[n]['real']['reconstruction_psnr']['images']} scenes)" for n in names) + " |",
             "|---|" + "---|" * len(names),
             "| reconstruction PSNR, plain inversion (velocity at x_{i+1}) | "
             + " | ".join(f"{results[n]['real']['reconstruction_psnr']['refine0']:.1f} dB" for n in names) + " |",
             "| reconstruction PSNR, 2 fixed-point refinements per step | "
             + " | ".join(f"**{results[n]['real']['reconstruction_psnr']['refine2']:.1f} dB**" for n in names) + " |",
             "", "Edits of the inverted pair (success / preserved / background PSNR against the real source image):", "",
             "| attribute | " + " | ".join(f"{n}: {what}" for n in names for what in ("SVD edit", "prompt swap from inverted noise"))
             + " |", "|---|" + "---|" * (2 * len(names))]
    for a in ATTRIBUTES:
        lines.append(f"| {a} | " + " | ".join(_cell(results[n]["real"][a][m]) for n in names
                                              for m in ("svd-edit", "prompt-swap")) + " |")
    return "\n".join(lines)


def doc_blocks(results: dict) -> dict[str, str]:
    complete = {n: r for n, r in results.items() if all(k in r for k in ("P1", "selection", "editing", "real"))}
    return {"sizes": sizes_line(complete), "editing": editing_side_by_side(complete), "real": real_side_by_side(complete),
            "numbers": report(complete)}


def update_doc(path: Path, blocks: dict[str, str]) -> None:
    """Replace each block between ``<!-- svd_study: NAME -->`` and ``<!-- /svd_study: NAME -->``."""
    import re

    text = path.read_text()
    for name, body in blocks.items():
        pattern = re.compile(rf"(<!-- svd_study: {name} -->\n).*?(<!-- /svd_study: {name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"{path} has no block <!-- svd_study: {name} --> ... <!-- /svd_study: {name} -->")
        text = pattern.sub(lambda m: m.group(1) + body.strip("\n") + "\n" + m.group(2), text)
    path.write_text(text)


def report(results: dict) -> str:
    """Markdown tables of both models' results, side by side where they share rows."""
    lines = []
    for name, r in results.items():
        lines.append(f"\n### {name} ({r['steps']} steps, guidance {r['guidance_scale']})\n")
        lines.append("Render rate on property pairs (the judge reads the asked value):")
        lines.append("| attribute | source correct | target correct | A and B read differently |\n|---|---|---|---|")
        for a, v in r["render_rate"].items():
            lines.append(f"| {a} | {v['source_correct']:.2f} | {v['target_correct']:.2f} | {v['read_different']:.2f} |")
        lines.append("\nP1, Grassmann distance (mean over prompts). Adjacent: steps i -> i+1 (the last step, sigma "
                     "0.001 -> 0, left out); sample-specific from: the first step from which every later latent's subspace "
                     "is closer to its own final subspace than a different prompt's final subspace is:")
        lines.append("| view | k | random | adjacent steps 0-3 | adjacent steps 5-8 | step 1 -> final | mid -> final | "
                     "cross-sample mid | cross-sample final | sample-specific from step |\n|---|---|---|---|---|---|---|---|---|---|")
        for m in r["P1"]["maps"]:
            d = np.array(m["distance"])
            adj, to_final, cross = np.diag(d, 1)[:-1], d[:, -1], np.array(m["cross_sample"])
            mid = len(d) // 2
            stable = next((s for s in range(len(d)) if (to_final[s:-1] < cross[-1]).all()), None)
            lines.append(f"| {m['view']} | {m['k']} | {m['random_mean']:.2f} | {adj[:4].mean():.2f} | {adj[-4:].mean():.2f} | "
                         f"{d[1, -1]:.2f} | {d[mid, -1]:.2f} | {cross[mid]:.2f} | {cross[-1]:.2f} | {stable} |")
        if "P2" in r:
            steps = r["P2"]["steps"]
            lines.append(f"\nP2, flip rate by swap step ({r['P2'].get('pairs_per_attribute', '?')} pairs per attribute; "
                         "valid = pairs the judge reads differently):")
            lines.append("| attribute | condition | valid | " + " | ".join(f"k={k}" for k in steps) + " |")
            lines.append("|---|---|---|" + "---|" * len(steps))
            rows = {}
            for row in r["P2"]["rows"]:
                rows.setdefault((row["attribute"], f"{row['view']} {row['part']}"), {})[row["step"]] = row
            for (a, cond), per_step in rows.items():
                valid = next(iter(per_step.values()))["valid"]
                lines.append(f"| {a} | {cond} | {valid} | " + " | ".join(f"{per_step[k]['flip_rate']:.2f}" for k in steps) + " |")
        if "P3" in r:
            lines.append("\nP3, modal rank (1 = largest) of A's component carrying B - A, steps "
                         f"{r['P3']['steps'][0]}..{r['P3']['steps'][-1]}; top-4 share at step 1 / mid / last:")
            lines.append("| view | attribute | modal rank per step | top-4 share |\n|---|---|---|---|")
            for view in ("channels", "per_channel"):
                for a, e in r["P3"][view].items():
                    t4 = e["top4_share"]
                    lines.append(f"| {view} | {a} | {' '.join(map(str, e['modal_rank']))} | "
                                 f"{t4[0]:.2f} / {t4[len(t4) // 2]:.2f} / {t4[-1]:.2f} |")
        if "selection" in r:
            lines.append("\nChosen on validation (mean of success-and-preserved over attributes): " + ", ".join(
                f"{m} {v['chosen']} ({v['score']:.2f})" if "chosen" in v else f"{m} n/a" for m, v in r["selection"].items()))
        kv = r.get("selection", {}).get(KV, {})
        if "grid" in kv:
            lines.append(f"\n{KV} on validation ({r['settings']['val_pairs']} pairs per attribute), by first patched step: "
                         "score (mean success-and-preserved) and per attribute success / preserved / background PSNR:")
            lines.append("| start step | score | " + " | ".join(ATTRIBUTES) + " |\n|---|---|" + "---|" * len(ATTRIBUTES))
            for row in kv["grid"]:
                lines.append(f"| {row['setting']['step']} | {row['score']:.2f} | " + " | ".join(
                    _cell(row["per_attribute"].get(a, {})) for a in ATTRIBUTES) + " |")
        if "editing" in r:
            lines.append("\nEditing, test pairs: success / preserved / background PSNR (dB):")
            methods = list(METHODS)
            lines.append("| attribute | " + " | ".join(methods) + " |\n|---|" + "---|" * len(methods))
            for a, e in r["editing"].items():
                cells = []
                for m in methods:
                    s = e.get(m, {})
                    cells.append("n/a" if "success" not in s else
                                 f"{s['success']:.2f} / {s['preserved']:.2f} / {s['background_psnr']:.1f}")
                lines.append(f"| {a} (n={e.get('prompt-swap', {}).get('n', '?')}, source read right "
                             f"{e['source_read_correct']:.2f}) | " + " | ".join(cells) + " |")
        if "real" in r:
            rp = r["real"]["reconstruction_psnr"]
            lines.append(f"\nReal images ({rp['images']} rendered test scenes, guidance 1): reconstruction PSNR "
                         f"{rp['refine0']:.1f} dB (no refinement), {rp['refine2']:.1f} dB (2 fixed-point refinements); "
                         f"edits at step {rp['edit_step']}, rank {rp['rank']}:")
            lines.append("| attribute | svd-edit | prompt-swap (from inverted noise) | prompt-swap from step k |\n|---|---|---|---|")
            for a in ATTRIBUTES:
                e = r["real"][a]
                lines.append(f"| {a} | " + " | ".join(
                    f"{e[m]['success']:.2f} / {e[m]['preserved']:.2f} / {e[m]['background_psnr']:.1f}"
                    for m in ("svd-edit", "prompt-swap", "prompt-swap-from-k")) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
