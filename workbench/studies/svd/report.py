"""The SVD study's report: the tables of docs/svd.md, its figures and its row of docs/findings.md,
from the saved results (``svd_<model>.json``, written by :mod:`workbench.studies.svd.job`). No model
runs here.

    python -m workbench.studies.svd.report               # print the tables, write the figures
    python -m workbench.studies.svd.report --update-doc  # ... and write the tables into docs/svd.md, docs/findings.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ...results import results_dir
from ..docs import DOCS, findings_table, report_main
from .protocol import ATTRIBUTES, GRID, KV, METHODS, saved_setting


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
    html_path.write_text(fig.to_html(include_plotlyjs="cdn", full_html=True, div_id="svd-p1"))
    written.append(html_path)
    return written


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
                   f"P2 on {p2.get('pairs_per_attribute', saved_setting(st, 'swap_pairs'))} pairs per attribute at swap "
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


# -- the row of docs/findings.md -----------------------------------------------------------------
FINDINGS_MODELS = ("toy-unet", "toy-mmdit")  # findings.md's column order


def findings_row(results: dict) -> list[str]:
    """Subspace stability (Wang et al.) at one view and one k (per channel, k = 4) against the random
    baseline's spread, the claim stated no more strongly than the saved distances allow (issue 23)."""
    missing = [f"svd_{m}.json" for m in FINDINGS_MODELS if m not in results]
    if missing:
        raise FileNotFoundError(f"the findings row compares both reference models; {results_dir()} lacks "
                                f"{', '.join(missing)} (python -m workbench.studies.svd.job writes it)")
    cells, inside = [], []
    for model in FINDINGS_MODELS:
        m = next(m for m in results[model]["P1"]["maps"] if m["view"] == "per_channel" and m["k"] == 4)
        d = np.array(m["distance"])
        adjacent = np.diag(d, 1)[:-1]  # the last step (sigma 0.001 -> 0) left out, as in svd.md
        low_band, high_band = m["random_mean"] - 2 * m["random_std"], m["random_mean"] + 2 * m["random_std"]
        inside.append(low_band <= d[1, -1] <= high_band)
        cells.append(f"per channel, k=4 (Grassmann, mean over prompts): adjacent recorded steps {adjacent.min():.2f}-"
                     f"{adjacent.max():.2f} (steps 0-3: {adjacent[:4].min():.2f}-{adjacent[:4].max():.2f}); step 1 -> final "
                     f"{d[1, -1]:.2f}; random subspaces {m['random_mean']:.2f} (mean +- 2 sd {low_band:.2f}-{high_band:.2f})")
    cells[-1] += "; per-prompt distances were not saved, so the measured values carry no interval"
    verdict = ("between neighbouring steps only: step 1 -> final lies inside the random band on both models"
               if all(inside) else "see the distances: step 1 -> final is outside the random band on "
               + ", ".join(m for m, i in zip(FINDINGS_MODELS, inside) if not i))
    return ["SVD editing", "Wang et al.: the subspaces spanned by a latent's singular vectors stay stable across "
            "timesteps", *cells, verdict,
            "[svd.md](svd.md) / [06](../notebooks/06_svd_latent_editing.ipynb)"]


def _saved() -> dict:
    return {m: json.loads((results_dir() / f"svd_{m}.json").read_text()) for m in ("toy-mmdit", "toy-unet")
            if (results_dir() / f"svd_{m}.json").exists()}


def blocks() -> dict[tuple[str, str], str]:
    """(doc, block key) -> its text: the blocks of docs/svd.md, and the SVD row of docs/findings.md once
    both reference models' results are saved (the row compares them)."""
    found = _saved()
    out = {("svd.md", f"svd-{key}"): text for key, text in doc_blocks(found).items()}
    if all(m in found for m in FINDINGS_MODELS):
        out["findings.md", "findings-svd"] = findings_table([findings_row(found)])
    return out


def main(argv=None) -> int:
    report_main(blocks, __doc__, argv)
    for path in figures(_saved(), DOCS / "img", results_dir() / "svd_figures.html"):
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
