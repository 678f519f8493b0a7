"""``workbench localize``: the arguments of the text-localization study's job
(``workbench.studies.localization.job.run_job``; docs/localization.md)."""

from __future__ import annotations


def add_localize(sub) -> None:
    p = sub.add_parser("localize", help="text localization by activation patching: a resumable sweep to zarr")
    p.add_argument("--model", required=True,
                   help="a reference model (toy-unet, toy-mmdit), a tiny family (tiny-sd3, ...) or a local checkpoint folder")
    p.add_argument("--prompts", help="a prompt file, one quoted text per line (a sign that says \"OPEN\"): text "
                                     "pairs instead of the shapes world's glyphs (needs --scorer)")
    p.add_argument("--scorer", default="judge",
                   help="what reads the images: judge (shapes world, the default) or ocr (text, with --prompts)")
    p.add_argument("--pairs", type=int, default=200, help="pairs to sweep (at most; see --cells)")
    p.add_argument("--out", required=True, help="the zarr store to write")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--starts", default="0,1,2,4", help="start steps of the grid, comma-separated")
    p.add_argument("--cells", type=int, default=16,
                   help="cells to screen: (colour, position, seed) for glyphs, (prompt template, seed) for --prompts")
    p.add_argument("--per-cell", type=int, default=14, help="at most this many pairs from one cell")
    p.add_argument("--chunk", type=int, default=16, help="pairs per chunk (the unit of resuming)")
    p.add_argument("--batch", type=int, default=128, help="rows per denoiser call")
    p.add_argument("--max-range", type=int, default=3, help="longest contiguous layer range tried in focus")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (1: tiny models on a shared CPU run ~10x faster than with 2)")
    p.add_argument("--no-screen", action="store_true",
                   help="pair all glyphs or texts, read back or not (the analysis still conditions on what the scorer reads)")
    p.add_argument("--no-shares", action="store_true",
                   help="skip measuring each text layer's parameter share (slow on a large checkpoint; stored as NaN)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_localize)


def _localize(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    starts = [int(s) for s in args.starts.split(",")]
    from ..studies.localization.job import run_job

    path = run_job(args.model, args.out, pairs=args.pairs, steps=args.steps, starts=starts, n_cells=args.cells,
                   per_cell=args.per_cell, chunk=args.chunk, batch=args.batch, seed=args.seed,
                   max_range=args.max_range, screen=not args.no_screen, prompts=args.prompts, scorer=args.scorer,
                   shares=not args.no_shares)
    print(f"wrote {path}")
