"""``workbench``: demo, sites, generate, train, extract, probe.

    workbench demo --out demo-out                 # the main job: images, recordings, report.html
    workbench sites toy-mmdit "transformer_blocks.0.*"
    workbench generate toy-unet "a red circle on the left" --record "**.attn2.probs" --out run/
    workbench extract --model toy-unet --dataset shapes --sites "up_blocks.*.out" --timesteps 50,150,300 --out feats.zarr
    workbench probe feats.zarr --label shape
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _demo(args) -> None:
    from ..demo import DEMO_MODELS, DEMO_PROMPTS, run_demo

    models = args.models.split(",") if args.models else DEMO_MODELS
    prompts = args.prompt or DEMO_PROMPTS
    report = run_demo(args.out, models=models, prompts=prompts, steps=args.steps, seed=args.seed)
    print(f"wrote {report} (open it in a browser), images in {Path(args.out) / 'images'}, one .zarr per model")


def _sites(args) -> None:
    import pandas as pd

    from .. import load, sites

    table = sites(load(args.model), args.pattern)
    with pd.option_context("display.max_rows", None, "display.max_colwidth", 90, "display.width", 200):
        print(table.to_string())
    print(f"\n{len(table)} sites")


def _generate(args) -> None:
    import numpy as np
    from PIL import Image

    from .. import load, record

    model = load(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    options = dict(prompts=args.prompt, steps=args.steps, seed=args.seed)
    if args.guidance is not None:
        options["guidance_scale"] = args.guidance
    if args.record:
        with record(model, args.record, store=out / "recording.zarr") as rec:
            images = model.generate(**{k: v for k, v in options.items() if k != "prompts"}, prompts=args.prompt)
        print(f"recorded {len(rec)} sites into {out / 'recording.zarr'}")
    else:
        images = model.generate(**{k: v for k, v in options.items() if k != "prompts"}, prompts=args.prompt)
    for i, image in enumerate(images):
        Image.fromarray((image * 255).astype(np.uint8)).save(out / f"{i:03d}.png")
    print(f"wrote {len(images)} images to {out}")


def _train(args) -> None:
    from ..models import train

    train.main([args.name] + args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="Interpretability workbench for diffusion models.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="generate with the reference models, record, write an HTML report")
    demo.add_argument("--out", default="demo-out")
    demo.add_argument("--models", help="comma-separated model names (default: toy-mmdit,toy-unet)")
    demo.add_argument("--prompt", action="append", help="a prompt (repeatable; default: four shapes-world prompts)")
    demo.add_argument("--steps", type=int, default=20)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)

    sites = sub.add_parser("sites", help="list the sites of a model (name, dims, meaning)")
    sites.add_argument("model")
    sites.add_argument("pattern", nargs="?", default="*")
    sites.set_defaults(func=_sites)

    gen = sub.add_parser("generate", help="generate images, optionally recording sites to a zarr store")
    gen.add_argument("model")
    gen.add_argument("prompt", nargs="+")
    gen.add_argument("--out", default="generated")
    gen.add_argument("--record", action="append", help="site name or glob to record (repeatable)")
    gen.add_argument("--steps", type=int, default=20)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--guidance", type=float)
    gen.set_defaults(func=_generate)

    train = sub.add_parser("train", help="train a reference model from its seed (toy-mmdit, toy-unet, judge)")
    train.add_argument("name")
    train.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the trainer (see --help there)")
    train.set_defaults(func=_train)

    from .extract_probe import add_extract, add_probe  # feature extraction and probes (docs/features.md)

    add_extract(sub)
    add_probe(sub)
    from .localize import add_localize  # text localization sweep (docs/localization.md)

    add_localize(sub)
    return parser


def main(argv=None) -> int:
    from ..store.jobs import JobInterrupted, JobStopped

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        args.func(args)
    except JobStopped as err:  # interrupted or a write failed; the message says how to resume
        print(f"workbench {args.command}: {err}", file=sys.stderr)
        return 130 if isinstance(err, JobInterrupted) else 1
    except (KeyError, ValueError, TypeError, IndexError, FileNotFoundError, FileExistsError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"workbench {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
