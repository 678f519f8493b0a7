"""The rows of docs/findings.md that issue 23 found stated more strongly than their numbers, written
from the saved results with intervals (no figure typed in):

* SVD subspace stability: one view and one k (per channel, k = 4), against the random baseline's
  spread, instead of a range that mixed views and k;
* DeepCache "deep blocks change more slowly": the mean over *every* block DeepCache caches against
  the blocks it keeps, with a bootstrap interval over steps, and the cached runs' losses with
  Wilson / Newcombe intervals;
* Skip-DiT: toy-mmdit block caching against toy-unet caching at matched speed-up (the nearest
  measured speed-up), not at equal N.

    python benchmarks/findings_figures.py               # print the rows
    python benchmarks/findings_figures.py --update-doc  # write them into docs/findings.md
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from workbench.analysis.stats import bootstrap, difference, wilson
from workbench.results import results_dir
from workbench.studies.docs import write_block

STUDIES = ("toy-unet", "toy-mmdit")


def _load(name: str) -> dict:
    return json.loads((results_dir() / name).read_text())


def svd_row() -> list[str]:
    cells, inside = [], []
    for model in STUDIES:
        maps = _load(f"svd_{model}.json")["P1"]["maps"]
        m = next(m for m in maps if m["view"] == "per_channel" and m["k"] == 4)
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
               + ", ".join(m for m, i in zip(STUDIES, inside) if not i))
    return ["SVD editing", "Wang et al.: the subspaces spanned by a latent's singular vectors stay stable across "
            "timesteps", *cells, verdict,
            "[svd.md](svd.md) / [06](../notebooks/06_svd_latent_editing.ipynb)"]


def _quality(model: str, setting: str) -> dict:
    return _load("skips_caching.json")[model]["quality"][setting]


def _loss(model: str, setting: str, score: str = "glyph") -> str:
    """Points lost against the uncached run on the same prompts, with Newcombe's square-and-add
    interval (per-prompt outcomes were not saved, so not the paired one: wider, conservative)."""
    loss, low, high = _loss_interval(model, setting, score)
    return f"{100 * loss:+.0f} [{100 * low:+.0f}, {100 * high:+.0f}]"


def _loss_interval(model: str, setting: str, score: str = "glyph") -> tuple[float, float, float]:
    n = _load("skips_caching.json")[model]["n"]
    cached, base = (round(_quality(model, s)[score] * n / 100) for s in (setting, "uncached"))
    low, high = difference(base, n, cached, n)
    return (base - cached) / n, low, high


def deepcache_row() -> list[str]:
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


def _wilson_text(percent: float, n: int) -> str:
    low, high = wilson(round(percent * n / 100), n)
    return f"[{100 * low:.0f}, {100 * high:.0f}]"


def skip_dit_row() -> list[str]:
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


def table() -> str:
    header = "| study | paper and claim | toy-unet (U-Net) | toy-mmdit (MM-DiT) | held? | doc / notebook |\n" \
             "| --- | --- | --- | --- | --- | --- |"
    return "\n".join([header] + ["| " + " | ".join(row) + " |" for row in (svd_row(), deepcache_row(), skip_dit_row())])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update-doc", action="store_true", help="write the rows into docs/findings.md")
    args = parser.parse_args(argv)
    if args.update_doc:
        write_block("findings.md", "findings-corrected", table())
    else:
        print(table())


if __name__ == "__main__":
    main()
