"""The SVD latent study (issue 11) on a reference model: three properties, editing, real images.

    python -m workbench.studies.svd.job toy-mmdit [--steps 10] [--prop-pairs 50] [--val-pairs 25]
                                              [--test-pairs 100] [--real-pairs 25] [--work DIR] [--out docs/results]
                                              [--stages properties editing real] [--methods ...] [--fresh]
    python -m workbench.studies.svd.report [--update-doc]         # tables (and the doc's generated blocks), figures

Everything is scored by the shipped judge on shapes-world attribute pairs: prompt B differs from
prompt A in one attribute only (colour, shape, size or glyph), same position, template and noise
seed. Stages, each piece kept as it finishes in the zarr store ``--work/<model>.zarr`` (a resumable
``StoreJob`` of items, ``workbench.studies.cache.Cache``: a re-run reads what is done, so an
interrupted run loses at most the piece in flight; a store made with other pair counts or steps is
refused):

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
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ... import inversion, load
from ...analysis import svd
from ...analysis.metrics import psnr
from ...models.judge import load_judge
from ...results import results_dir
from ...widgets.pictures import png_data_uri
from ..attention.editing import run_edits
from ..cache import Cache, jsonable as _jsonable
from . import runs
from .protocol import (ATTRIBUTES, FIELD, GRID, KV, LATENT_METHODS, METHODS, READ_FIELDS, SWAP_CONDITIONS, Reader,
                       attribute_pairs, calibrate_size, edit_scores, saved_setting, summarise)


def images_of(model, latents) -> np.ndarray:
    return np.clip(model.decode_latents(np.asarray(latents)), 0.0, 1.0).astype(np.float32)


# -- the study ------------------------------------------------------------------------------------
STAGES = ("properties", "editing", "real")
# the settings every cached piece depends on: a work store made with others is refused
IDENTITY = ("steps", "prop_pairs", "val_pairs", "test_pairs", "real_pairs", "swap_pairs", "swap_steps")
# which settings each stage's numbers depend on: a previous result is reused only where they agree
DEPENDS = {"properties": ("steps", "prop_pairs", "swap_pairs", "swap_steps"),
           "selection": ("steps", "prop_pairs", "val_pairs"), "editing": ("steps", "test_pairs"),
           "real": ("steps", "real_pairs")}


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
    model, judge = load(name), load_judge()
    cache = Cache(Path(args.work) / f"{name}.zarr", identity={"model": name, **{k: getattr(args, k) for k in IDENTITY}},
                  resume=f"python -m workbench.studies.svd.job {name} " + " ".join(
                      f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                      for k, v in vars(args).items() if k in IDENTITY + ("work", "out")))
    steps = args.steps
    threshold, size_accuracy = calibrate_size()
    read = Reader(judge, threshold)
    prev = previous_result(name, args)
    settings = {k: v for k, v in vars(args).items() if k not in ("fresh",)}

    def agrees(stage: str) -> bool:
        return bool(prev) and all(saved_setting(prev["settings"], k) == saved_setting(settings, k) for k in DEPENDS[stage])

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
                    za = runs.trajectory(model, [p["source"] for p in val[a]], steps, seed=100 + i).values
                    zb = runs.trajectory(model, [p["target"] for p in val[a]], steps, seed=100 + i).values
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
    # (not named ``runs``: that is the run engine module, which the closures above call)
    history = (prev.get("runs") or ([{"minutes": prev["minutes"], "computed": ["all"]}] if "minutes" in prev else [])
               if reused else [])
    result["runs"] = history + [{"minutes": minutes, "computed": computed, "chunks_computed": cache.computed,
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
                    images = runs.continue_from(model, [p["source"] for p in pairs], edited, k, steps)
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
        return runs.continue_from(model, sources, edited, k, steps, guidance_scale=guidance)
    if method == "slerp":
        mixed = svd.slerp(za[:, k], zb[:, k], 0.5).values
        return runs.continue_from(model, sources, mixed, k, steps, guidance_scale=guidance)
    if method == "sdedit":
        noisy = _sdedit_latents(model, za[:, -1], k, steps, seed)
        return runs.continue_from(model, targets, noisy, k, steps, guidance_scale=guidance)
    if method == "prompt-swap":
        return images_of(model, zb[:, -1])
    raise KeyError(method)


def kv_runs(model, cache, key: str, pairs, noise, starts, steps, read) -> dict:
    """The K/V patching baseline on ``pairs`` from ``noise``: per start step the images and their
    readings, and the unpatched source run's; ``{"not_applicable": reason}`` where the library
    refuses the pairs (a token alignment that cannot be made, a model without a text stream)."""
    positions = [p["position"] for p in pairs]

    def compute():
        out = runs.text_kv_edits(model, [p["source"] for p in pairs], [p["target"] for p in pairs], starts, steps, noise,
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
            by_attribute = {a: kv_runs(model, cache, f"val_{KV}_{a}", val[a][:n],
                               runs.initial_noise(model, args.prop_pairs, 100 + i)[:n],  # the trajectories' noise
                               [s["step"] for s in settings], steps, read)
                    for i, a in enumerate(tqdm(ATTRIBUTES, desc=f"select {KV}"))}
            missing = {a: r["not_applicable"] for a, r in by_attribute.items() if "not_applicable" in r}
            for setting in settings:
                per_attr = {a: summarise(edit_scores(r[setting["step"]], r["source"], val[a][:n],
                                                     r[setting["step"]]["images"], r["source"]["images"]))
                            for a, r in by_attribute.items() if a not in missing}
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
                za = runs.trajectory(model, [p["source"] for p in pairs], steps, seed=200 + i).values
                zb = runs.trajectory(model, [p["target"] for p in pairs], steps, seed=200 + i).values
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
                r = kv_runs(model, cache, f"test_{KV}_{a}_step{start}", pairs, runs.initial_noise(model, args.test_pairs, 200 + i),
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
            result["prompt-swap-from-k"] = runs.continue_from(model, [p["target"] for p in pairs], za[:, k], k, steps,
                                                             guidance_scale=1.0)
            return result
        r = cache.get(f"real_{a}", compute)
        real = real_a.astype(np.float32) / 255
        src = read(real, positions)
        entry = {"reconstruction_psnr": {f"refine{n}": float(psnr(r[f"recon{n}"], real).mean()) for n in (0, 2)}}
        recons.append([psnr(r[f"recon{n}"], real) for n in (0, 2)])
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["toy-mmdit", "toy-unet"], help="the reference model to study")
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
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", default="bench-out/svd")
    parser.add_argument("--out", default=str(results_dir()))
    args = parser.parse_args(argv)
    run(args.model, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
