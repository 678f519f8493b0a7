"""Training loops for the reference models (rectified flow, as SD3) and entry point.

    python -m workbench.models.train toy-mmdit [--minutes 25] [--seed 0] [--out DIR]

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
"""

from __future__ import annotations

import argparse
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

    Scene ``i`` of batch ``step`` depends only on ``(seed, step, i)``.
    """
    from workbench.data import make_scene

    images, captions = [], []
    for i in range(batch_size):
        rng = np.random.default_rng((seed, _DATA_STREAM, step, i))
        n_objects = 2 if rng.random() < spec.two_object_fraction else 1
        kinds = ["glyph" if rng.random() < spec.glyph_fraction else "shape" for _ in range(n_objects)]
        scene = make_scene([{"kind": k} for k in kinds], seed=(seed, _DATA_STREAM, step, i))
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


def train_reference(
    name: str,
    minutes: float = 25.0,
    seed: int = 0,
    out: str | Path | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    threads: int = 2,
    progress: bool = True,
) -> dict:
    """Train reference model ``name`` from scratch and save it to ``out`` (default: the package's
    ``workbench/reference/<name>``). Returns the training record (also saved as reference.json).

    ``steps``/``batch_size`` override the spec (the schedule follows ``steps``); ``minutes`` caps
    the wall time.
    """
    if name not in NAMES:
        raise ValueError(f"unknown reference model {name!r}; known: {', '.join(NAMES)}")
    torch.set_num_threads(threads)
    spec = SPECS[name]
    total = steps or spec.steps
    bs = batch_size or spec.batch_size
    c = build_components(name, seed=seed)
    c.text_encoder.train()
    c.denoiser.train()
    params = [p for m in (c.text_encoder, c.denoiser) for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=spec.lr, betas=(0.9, 0.99), weight_decay=0.0)
    ema = [p.detach().clone() for p in params]
    generator = torch.Generator().manual_seed(seed)

    start, deadline = time.time(), time.time() + 60 * minutes
    losses: list[float] = []
    smooth = None
    bar = tqdm(range(total), desc=f"train {name}", disable=not progress, mininterval=5, file=sys.stderr)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = spec.lr * _lr_factor(step, spec, total)
        x0, captions = sample_batch(spec, step, bs, seed)
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
        if time.time() > deadline:
            break
    bar.close()
    elapsed = time.time() - start

    # Save the EMA weights (smoother samples than the last iterate).
    with torch.no_grad():
        for p, e in zip(params, ema, strict=True):
            p.copy_(e)
    c.text_encoder.eval()
    c.denoiser.eval()
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
        "minutes": round(elapsed / 60, 2),
        "threads": threads,
        "loss_first_50": float(np.mean(losses[:50])),
        "loss_last_100": float(np.mean(losses[-100:])),
        "loss_curve": [round(float(np.mean(losses[i:i + 50])), 4) for i in range(0, len(losses), 50)],
        "denoiser_parameters": sum(p.numel() for p in c.denoiser.parameters()),
        "text_encoder_parameters": sum(p.numel() for p in c.text_encoder.parameters()),
        "denoiser_config": spec.denoiser_config,
    }
    if out is None:
        from workbench.models.reference import reference_dir

        out = reference_dir(name)
    c.save_pretrained(out, info={"training": record})
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
    args = parser.parse_args(argv)
    record = train_reference(args.name, minutes=args.minutes, seed=args.seed, out=args.out, steps=args.steps,
                             batch_size=args.batch_size, threads=args.threads)
    summary = {k: v for k, v in record.items() if k not in ("loss_curve", "denoiser_config")}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
