"""Why the toy-mmdit attribution check needed a wide bound (issue 23): the first-order estimate of
one block's effect against central, forward and backward finite differences of the metric at
several step sizes, on the pair and run that ``tests/test_attribution.py`` checks (toy-mmdit,
block 3, start 0, 3 steps). Writes ``docs/results/attribution_fd_scan.json``.

    python -m workbench.studies.localization.attribution_fd_scan
"""

from __future__ import annotations

import json

import torch

from ... import load
from ...models.judge import load_judge
from ...results import results_dir
from . import attribution as A
from . import patching as L
from . import sweeps as S

STEPS = 3  # the run tests/test_attribution.py checks

STEP_SIZES = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)


def main() -> None:
    torch.set_num_threads(1)
    model, judge = load("toy-mmdit"), load_judge()
    layer, start = 3, 0
    with torch.no_grad():
        pair = A.glyph_pair(model, judge, "A", "3", "blue", "right", 5)
        _, cache = L.cache_text(model, [pair.source], steps=STEPS, seed=pair.seeds, latents=S.noise_for(model, pair.seeds))
    result = A.attribute(model, [pair.target], [pair.source], pair.seeds, pair.metric, steps=STEPS,
                         token_maps=pair.maps, layers=[layer])
    estimate = float(A.layer_effects(result.contributions, start).sel(layer=layer)[0])
    rows = []
    with torch.no_grad():
        at = lambda alpha: A.blended_metric(model, pair, cache, alpha, steps=STEPS, layers=[layer], start=start)  # noqa: E731
        zero = at(0.0)
        for eps in STEP_SIZES:
            plus, minus = at(eps), at(-eps)
            rows.append({"eps": eps, "central": (plus - minus) / (2 * eps), "forward": (plus - zero) / eps,
                         "backward": (zero - minus) / eps})
            print(rows[-1], flush=True)
    saved = {"model": "toy-mmdit", "layer": layer, "start": start, "steps": STEPS, "estimate": estimate, "rows": rows}
    (results_dir() / "attribution_fd_scan.json").write_text(json.dumps(saved, indent=1) + "\n")
    print(f"estimate {estimate:.4f}")


if __name__ == "__main__":
    main()
