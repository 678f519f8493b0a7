"""DAAM against the default word maps (issue 26): for each prompt (the quality study's single-object
and glyph captions), one run recorded with ``**.attn2.probs``; per word, the Pearson correlation
between ``word_maps(method="daam")`` and the default ``word_maps`` resized to the same latent grid.
Saved per word, with the median, quartiles and minimum over words, to ``peers_daam.json``; the table
of docs/attention.md is :func:`.report.daam_table`'s.

    python -m workbench.studies.attention.daam [--model toy-unet --prompts 24 --steps 20]

One run per prompt, minutes on a CPU: no store to resume from.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from ... import load, record
from ...attention import word_maps
from ...results import results_dir
from ..quality.protocol import single_and_glyph_captions
from .report import daam_table


def measure(model_name: str, n_prompts: int, steps: int) -> dict:
    model = load(model_name)
    per_word = []
    for i, caption in enumerate(single_and_glyph_captions(n_prompts)):
        with record(model, ["**.attn2.probs"]) as rec:
            model.generate([caption], steps=steps, seed=i)
        daam = word_maps(rec, method="daam")
        default = word_maps(rec, size=tuple(daam.shape[1:]))
        for word in daam.word.values:
            a, b = daam.sel(word=word).values.ravel(), default.sel(word=word).values.ravel()
            per_word.append({"prompt": i, "word": str(word), "pearson": float(np.corrcoef(a, b)[0, 1])})
    r = np.array([w["pearson"] for w in per_word])
    return {"model": model_name, "prompts": n_prompts, "steps": steps, "words": len(per_word),
            "pearson_median": round(float(np.median(r)), 4),
            "pearson_quartiles": [round(float(q), 4) for q in np.percentile(r, [25, 75])],
            "pearson_min": round(float(r.min()), 4), "per_word": per_word}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="toy-unet")
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results_dir().mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        result = measure(args.model, args.prompts, args.steps)
    (results_dir() / "peers_daam.json").write_text(json.dumps(result, indent=1))
    print(daam_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
