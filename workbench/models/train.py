"""Training loops for the reference models (rectified flow, as SD3) and entry point.

    python -m workbench.models.train toy-mmdit [--minutes 25] [--seed 0] [--out DIR]
    python -m workbench.models.train toy-mmdit --init-from shipped --minutes 32 --steps 3900 \
        --two-object-fraction 0.1 --lr 6e-4 --warmup 50 --out /tmp/new   # continue a trained model

Training images are generated on the fly by the shapes-world generator (thousands per second,
so the CPU spends its time on the model, and no two batches repeat). Each batch mixes one-object
scenes (the quality targets: shape + colour, glyphs) with two-object scenes. A share of captions
is replaced by the empty prompt (classifier-free-guidance dropout), so one network learns both
the conditional and the unconditional velocity.

The objective is rectified flow: ``x_s = (1 - s) x0 + s noise``, the network predicts
``v = noise - x0`` from ``x_s``, timestep ``1000 s`` and the prompt; ``s`` is logit-normal (SD3's
default: most weight on mid noise levels, where layout and identity are decided). Sampling is
``FlowMatchEulerDiscreteScheduler``, i.e. Euler steps along ``v``.

Everything is deterministic given ``seed`` (initialisation, data, noise, dropout), except that
``minutes`` is a wall-clock safety cap: a run that hits it stops early and records how far it got.

Warm start (``init_from``): the denoiser and text encoder are loaded (float32) from a saved
folder (``"shipped"`` = the package's reference folder) and trained further with a fresh
optimizer and its own warm-up + cosine schedule over the new run's ``steps``. The batches of a
continuation start at the cumulative step count of the earlier rounds, so they are new scenes,
and the noise generator is seeded from ``(seed, that step count)``; the run stays deterministic
given ``seed`` and the starting weights. The record keeps the earlier rounds (``rounds``) and
the cumulative steps, images and minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from workbench.models.reference import NAMES, SPECS, Components, ReferenceSpec, build_components, encode_prompts

__all__ = ["sample_batch", "flow_matching_loss", "train_reference", "main"]

_DATA_STREAM = 7_919  # keeps training scenes off the dataset splits' seeds (seed, split, index)


def sample_batch(spec: ReferenceSpec, step: int, batch_size: int, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """Training batch ``step``: images (B, 3, 32, 32) in [-1, 1] and captions (some emptied).

    Scene ``i`` of batch ``step`` depends only on ``(seed, step, i)``. With
    ``spec.exclude_held_out`` a scene showing a held-out (name, colour, position) triple
    (``workbench.data.holdout``) is redrawn from ``(seed, step, i, attempt)``, so the benchmark's
    held-out family stays unseen and the batch stays deterministic.
    """
    from workbench.data import make_scene
    from workbench.data.holdout import held_out_combinations

    held_out = held_out_combinations() if spec.exclude_held_out else frozenset()
    images, captions = [], []
    for i in range(batch_size):
        rng = np.random.default_rng((seed, _DATA_STREAM, step, i))
        n_objects = 2 if rng.random() < spec.two_object_fraction else 1
        kinds = ["glyph" if rng.random() < spec.glyph_fraction else "shape" for _ in range(n_objects)]
        scene_seed: tuple[int, ...] = (seed, _DATA_STREAM, step, i)
        for attempt in range(1, 101):
            scene = make_scene([{"kind": k} for k in kinds], seed=scene_seed)
            if not any((o.name, o.colour, o.position) in held_out for o in scene.objects):
                break
            scene_seed = (seed, _DATA_STREAM, step, i, attempt)
        else:  # 5-10% of triples are held out: 100 misses in a row cannot happen by chance
            raise RuntimeError(f"no scene without a held-out combination for batch {step}, item {i}")
        images.append(scene.image)
        captions.append("" if rng.random() < spec.caption_dropout else scene.caption)
    x0 = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x0, captions


def flow_matching_loss(
    c: Components, x0: torch.Tensor, captions: list[str], generator: torch.Generator
) -> torch.Tensor:
    """Rectified-flow MSE between the predicted and the true velocity ``noise - x0``."""
    b = x0.shape[0]
    noise = torch.randn(x0.shape, generator=generator)
    sigma = torch.sigmoid(torch.randn(b, generator=generator))  # logit-normal(0, 1)
    s = sigma.view(b, 1, 1, 1)
    x_s = (1 - s) * x0 + s * noise
    cond = encode_prompts(c, captions)
    pred = c.denoiser(x_s, timestep=sigma * 1000, **cond, return_dict=False)[0]
    return torch.nn.functional.mse_loss(pred, noise - x0)


def _lr_factor(step: int, spec: ReferenceSpec, total: int) -> float:
    """Linear warm-up, then cosine decay to 10% at ``total``."""
    if step < spec.warmup:
        return (step + 1) / spec.warmup
    progress = min(1.0, (step - spec.warmup) / max(1, total - spec.warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def _ema_update(ema: list[torch.Tensor], params: list[torch.Tensor], decay: float) -> None:
    with torch.no_grad():
        torch._foreach_lerp_(ema, params, 1 - decay)


@torch.enable_grad()  # callers may be under no_grad (tests, notebooks); training needs gradients
def train_reference(
    name: str,
    minutes: float = 25.0,
    seed: int = 0,
    out: str | Path | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    threads: int = 2,
    progress: bool = True,
    init_from: str | Path | None = None,
    lr: float | None = None,
    warmup: int | None = None,
    two_object_fraction: float | None = None,
    glyph_fraction: float | None = None,
    checkpoint_every: int = 0,
    exclude_held_out: bool | None = None,
    stop_after: int | None = None,
) -> dict:
    """Train reference model ``name`` from scratch and save it to ``out`` (default: the package's
    ``workbench/reference/<name>``). Returns the training record (also saved as reference.json).

    ``steps``/``batch_size`` override the spec (the schedule follows ``steps``); ``minutes`` caps
    the wall time. ``init_from`` (a saved folder, or ``"shipped"`` for the package's one) continues
    training from those weights (fresh optimizer and schedule); ``lr``, ``warmup``,
    ``two_object_fraction`` and ``glyph_fraction`` override the spec for this run.
    ``checkpoint_every`` > 0 saves the EMA weights every that many steps to
    ``<out>/checkpoints/step-NNNNNN`` (each a loadable folder with the record so far).
    ``exclude_held_out`` (default: the spec's, True) keeps the held-out combinations out of training.
    ``stop_after`` ends the run after that many steps with the schedule still planned over
    ``steps``: it replays exactly a round that the ``minutes`` cap cut short.
    """
    if name not in NAMES:
        raise ValueError(f"unknown reference model {name!r}; known: {', '.join(NAMES)}")
    torch.set_num_threads(threads)
    overrides = {k: v for k, v in dict(lr=lr, warmup=warmup, two_object_fraction=two_object_fraction,
                                        glyph_fraction=glyph_fraction, exclude_held_out=exclude_held_out).items() if v is not None}
    spec = dataclasses.replace(SPECS[name], **overrides)
    total = steps or spec.steps
    bs = batch_size or spec.batch_size
    previous: dict | None = None
    init_folder: Path | None = None
    if init_from is not None:
        from workbench.models.reference import load_components, reference_dir

        init_folder = reference_dir(name) if str(init_from) == "shipped" else Path(init_from)
        previous = json.loads((init_folder / "reference.json").read_text()).get("training", {})
        c = load_components(init_folder, name)  # float32
        c.spec = spec
        # Save as a fresh run would: the project's tokenizer (not the reloaded one, which writes extra
        # keys) and no absolute "_name_or_path" in the denoiser config.
        from diffusers.configuration_utils import FrozenDict

        from workbench.models.reference import build_tokenizer

        c.tokenizer = build_tokenizer()
        c.denoiser._internal_dict = FrozenDict(
            {k: v for k, v in c.denoiser.config.items() if k != "_name_or_path"})
        for module in (c.text_encoder, c.denoiser):
            module.requires_grad_(True)
    else:
        c = build_components(name, seed=seed)
    step_offset = int(previous.get("cumulative_steps", previous.get("steps_done", 0))) if previous else 0
    c.text_encoder.train()
    c.denoiser.train()
    params = [p for m in (c.text_encoder, c.denoiser) for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=spec.lr, betas=(0.9, 0.99), weight_decay=0.0)
    ema = [p.detach().clone() for p in params]
    generator = torch.Generator().manual_seed(seed if not step_offset else seed * 1_000_003 + step_offset)

    start, deadline = time.time(), time.time() + 60 * minutes
    losses: list[float] = []
    smooth = None
    if out is None:
        from workbench.models.reference import reference_dir

        out = reference_dir(name)

    def record_so_far() -> dict:
        return _record(spec, seed, total, bs, threads, losses, time.time() - start, c, previous, init_from,
                       init_folder)

    bar = tqdm(range(total), desc=f"train {name}", disable=not progress, mininterval=5, file=sys.stderr)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = spec.lr * _lr_factor(step, spec, total)
        x0, captions = sample_batch(spec, step_offset + step, bs, seed)
        loss = flow_matching_loss(c, x0, captions, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        # EMA with a short warm-up of its own, so early steps are not averaged with the random init.
        _ema_update(ema, [p.detach() for p in params], min(spec.ema_decay, (1 + step) / (10 + step)))
        losses.append(loss.item())
        smooth = losses[-1] if smooth is None else 0.98 * smooth + 0.02 * losses[-1]
        bar.set_postfix(loss=f"{smooth:.4f}", refresh=False)
        if progress and not bar.disable and step % 100 == 0:
            print(f"step {step} loss {smooth:.4f} lr {optimizer.param_groups[0]['lr']:.2e} "
                  f"{(time.time() - start) / 60:.1f} min", file=sys.stderr, flush=True)
        if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < total:
            # A loadable folder per checkpoint (EMA weights, record up to here): nothing is lost if
            # the run is killed, and any checkpoint can be scored or continued with --init-from.
            _save_ema(c, params, ema, Path(out) / "checkpoints" / f"step-{step + 1:06d}", record_so_far())
        if time.time() > deadline or (stop_after is not None and step + 1 >= stop_after):
            break
    bar.close()

    record = record_so_far()
    # Save the EMA weights (smoother samples than the last iterate).
    with torch.no_grad():
        for p, e in zip(params, ema, strict=True):
            p.copy_(e)
    c.text_encoder.eval()
    c.denoiser.eval()
    c.save_pretrained(out, info={"training": record})
    return record


def _save_ema(c: Components, params: list[torch.Tensor], ema: list[torch.Tensor], folder: Path, record: dict) -> None:
    """Save the EMA weights to ``folder`` and put the live weights back (training goes on)."""
    with torch.no_grad():
        live = [p.detach().clone() for p in params]
        for p, e in zip(params, ema, strict=True):
            p.copy_(e)
        try:
            c.save_pretrained(folder, info={"training": record})
        finally:
            for p, w in zip(params, live, strict=True):
                p.copy_(w)


def _record(spec: ReferenceSpec, seed: int, total: int, bs: int, threads: int, losses: list[float], elapsed: float,
            c: Components, previous: dict | None, init_from, init_folder: Path | None) -> dict:
    """The training record of this run so far, with the earlier rounds and cumulative figures."""
    record = {
        "seed": seed,
        "steps_planned": total,
        "steps_done": len(losses),
        "batch_size": bs,
        "lr": spec.lr,
        "ema_decay": spec.ema_decay,
        "caption_dropout": spec.caption_dropout,
        "two_object_fraction": spec.two_object_fraction,
        "glyph_fraction": spec.glyph_fraction,
        "exclude_held_out": spec.exclude_held_out,
        "minutes": round(elapsed / 60, 2),
        "threads": threads,
        "loss_first_50": float(np.mean(losses[:50])) if losses else None,
        "loss_last_100": float(np.mean(losses[-100:])) if losses else None,
        "loss_curve": [round(float(np.mean(losses[i:i + 50])), 4) for i in range(0, len(losses), 50)],
        "denoiser_parameters": sum(p.numel() for p in c.denoiser.parameters()),
        "text_encoder_parameters": sum(p.numel() for p in c.text_encoder.parameters()),
        "denoiser_config": spec.denoiser_config,
    }
    record["warmup"] = spec.warmup
    if previous is not None:
        previous = dict(previous)
        earlier = previous.pop("rounds", None) or [
            {k: v for k, v in previous.items() if k not in ("loss_curve", "denoiser_config")}]
        number = int(earlier[-1].get("round") or len(earlier)) + 1
        # Each round keeps its number and its own loss curve (the evidence of how far it got).
        this_round = {k: v for k, v in record.items() if k != "denoiser_config"} | {"round": number}
        record.update(
            warm_started_from=str(init_from) if str(init_from) == "shipped" else str(init_folder),
            round=number,
            rounds=earlier + [this_round],
        )
    rounds = record.get("rounds", [record])
    record["cumulative_steps"] = sum(int(r["steps_done"]) for r in rounds)
    record["cumulative_images"] = sum(int(r["steps_done"]) * int(r["batch_size"]) for r in rounds)
    record["cumulative_minutes"] = round(sum(float(r["minutes"]) for r in rounds), 2)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train a reference model on the shapes world.")
    parser.add_argument("name", choices=NAMES)
    parser.add_argument("--minutes", type=float, default=25.0, help="wall-clock cap")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="folder (default: the package's reference folder)")
    parser.add_argument("--init-from", default=None,
                        help='continue from a saved folder ("shipped": the package\'s reference folder)')
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the spec's)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: the spec's)")
    parser.add_argument("--two-object-fraction", type=float, default=None)
    parser.add_argument("--glyph-fraction", type=float, default=None)
    parser.add_argument("--checkpoint-every", type=int, default=250,
                        help="save the EMA weights every N steps to OUT/checkpoints/step-N (0: never)")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="stop after N steps, the schedule still planned over --steps (replays a capped round)")
    parser.add_argument("--include-held-out", action="store_true",
                        help="also train on the held-out combinations (as rounds 1-4 did)")
    args = parser.parse_args(argv)
    record = train_reference(args.name, minutes=args.minutes, seed=args.seed, out=args.out, steps=args.steps,
                             batch_size=args.batch_size, threads=args.threads, init_from=args.init_from,
                             lr=args.lr, warmup=args.warmup, two_object_fraction=args.two_object_fraction,
                             glyph_fraction=args.glyph_fraction, checkpoint_every=args.checkpoint_every,
                             exclude_held_out=False if args.include_held_out else None,
                             stop_after=args.stop_after)
    summary = {k: v for k, v in record.items() if k not in ("loss_curve", "denoiser_config", "rounds")}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
