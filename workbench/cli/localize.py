"""``workbench localize``: the arguments of the text-localization study's job
(``workbench.studies.localization.job.run_job``; docs/localization.md)."""

from __future__ import annotations


def add_localize(sub) -> None:
    p = sub.add_parser("localize", help="text localization by activation patching: a resumable sweep to zarr")
    p.add_argument("--model", required=True, help="a reference model (toy-unet, toy-mmdit)")
    p.add_argument("--pairs", type=int, default=200, help="glyph pairs to sweep (at most; see --cells)")
    p.add_argument("--out", required=True, help="the zarr store to write")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--starts", default="0,1,2,4", help="start steps of the grid, comma-separated")
    p.add_argument("--cells", type=int, default=16, help="(colour, position, seed) cells to screen")
    p.add_argument("--per-cell", type=int, default=14, help="at most this many pairs from one cell")
    p.add_argument("--chunk", type=int, default=16, help="pairs per chunk (the unit of resuming)")
    p.add_argument("--batch", type=int, default=128, help="rows per denoiser call")
    p.add_argument("--max-range", type=int, default=3, help="longest contiguous layer range tried in focus")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (1: tiny models on a shared CPU run ~10x faster than with 2)")
    p.add_argument("--no-screen", action="store_true",
                   help="pair all glyphs, read back or not (the analysis still conditions on what the judge reads)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_localize)


def _localize(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    starts = [int(s) for s in args.starts.split(",")]
    from ..studies.localization.job import run_job

    path = run_job(args.model, args.out, pairs=args.pairs, steps=args.steps, starts=starts, n_cells=args.cells,
                   per_cell=args.per_cell, chunk=args.chunk, batch=args.batch, seed=args.seed,
                   max_range=args.max_range, screen=not args.no_screen)
    print(f"wrote {path}")
