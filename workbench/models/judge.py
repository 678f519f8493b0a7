"""The judge: a small CNN that reads shapes-world images back into labels, to score generations.

A scene's objects sit at known anchors (left, right, top, bottom, centre). The judge looks at a
16 x 16 crop around one anchor and says what is there: one of the 5 shapes, one of the 20 glyphs,
or ``"none"``, and the object's colour. Judging crops (rather than whole images) makes one
network serve one- and two-object prompts alike, and gives the position for free: an object is
"on the left" when the left crop holds it.

Training crops come from random shapes-world scenes with one to three objects (so neighbours
reach into crops, as they do in generated images), every anchor of every scene: crops at an
object's anchor are labelled with that object, the other anchors ``"none"``. Augmentation (a
shift of up to 2 px, pixel noise, a mild blur, brightness jitter) keeps the judge from relying
on the generator's exact pixels, since generated images are a little blurry and off-centre.

    python -m workbench.models.judge [--minutes 4]   # train, save to workbench/reference/judge

Example:
    >>> from workbench.models.judge import load_judge
    >>> judge = load_judge()                              # doctest: +SKIP
    >>> verdict = judge.judge(images)                     # doctest: +SKIP
    >>> verdict["name"]["left"][0], verdict["colour"]["left"][0]   # doctest: +SKIP
    ('circle', 'red')
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from workbench.data import make_scene, sample_scene
from workbench.data.recipe import default_recipe

__all__ = ["CROP", "Judge", "crop_at_anchors", "judge_dir", "load_judge", "train_judge", "evaluate_judge", "main"]

CROP = 16  # crop side in pixels: holds a large object (12 px shapes, 10 x 14 px glyphs) with margin
NONE = "none"
_TRAIN_STREAM = 104_729  # keeps judge training scenes off the dataset splits' seeds


def _vocab() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    recipe = default_recipe()
    names = tuple(recipe.shapes) + tuple(recipe.glyphs) + (NONE,)
    return names, tuple(recipe.colours), tuple(recipe.positions)


def crop_at_anchors(images: torch.Tensor, positions: tuple[str, ...] | None = None) -> torch.Tensor:
    """(N, 3, 32, 32) images in [-1, 1] -> (N, P, 3, CROP, CROP) crops centred at each anchor.

    Pixels outside the image are -1 (black), like the dark backgrounds.
    """
    recipe = default_recipe()
    positions = positions or tuple(recipe.positions)
    half = CROP // 2
    padded = torch.nn.functional.pad(images, (half, half, half, half), value=-1.0)
    out = []
    for name in positions:
        x, y = (int(round(c)) for c in recipe.positions[name].anchor)
        # anchor (x, y) is the object's centre in continuous coordinates: pixels x-half .. x+half-1
        out.append(padded[:, :, y:y + CROP, x:x + CROP])
    return torch.stack(out, dim=1)


class Judge(nn.Module):
    """CNN over one crop -> logits for the object name (shape, glyph or none) and for the colour."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.names, self.colours, self.positions = _vocab()
        self.width = width

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

        self.features = nn.Sequential(
            block(3, width), block(width, width), nn.MaxPool2d(2),  # 8 x 8
            block(width, 2 * width), block(2 * width, 2 * width), nn.MaxPool2d(2),  # 4 x 4
            block(2 * width, 2 * width), nn.Flatten(),  # keep the 4x4 layout: glyphs differ in where strokes are
        )
        self.name_head = nn.Sequential(nn.Linear(2 * width * 16, 128), nn.ReLU(), nn.Linear(128, len(self.names)))
        self.colour_head = nn.Linear(2 * width * 16, len(self.colours))

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(crops)
        return self.name_head(h), self.colour_head(h)

    @torch.no_grad()
    def judge(self, images: np.ndarray | torch.Tensor, batch: int = 512) -> dict:
        """Judge images (N, 32, 32, 3) in [0, 1] (numpy, as ``Model.generate`` returns them) or
        (N, 3, 32, 32) tensors in [-1, 1].

        Returns ``{"name": {position: [N names]}, "colour": {position: [N colours]},
        "confidence": {position: array (N,)}}``; the colour is meaningless where the name is "none".
        """
        self.eval()
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.asarray(images, dtype=np.float32)).permute(0, 3, 1, 2) * 2 - 1
        crops = crop_at_anchors(images.float(), self.positions)  # (N, P, 3, C, C)
        n, p = crops.shape[:2]
        flat = crops.reshape(n * p, 3, CROP, CROP)
        name_logits, colour_logits = [], []
        for i in range(0, len(flat), batch):
            a, b = self(flat[i:i + batch])
            name_logits.append(a)
            colour_logits.append(b)
        names = torch.cat(name_logits).softmax(-1).reshape(n, p, -1)
        colours = torch.cat(colour_logits).argmax(-1).reshape(n, p)
        conf, name_idx = names.max(-1)
        return {
            "name": {pos: [self.names[k] for k in name_idx[:, j].tolist()] for j, pos in enumerate(self.positions)},
            "colour": {pos: [self.colours[k] for k in colours[:, j].tolist()] for j, pos in enumerate(self.positions)},
            "confidence": {pos: conf[:, j].numpy() for j, pos in enumerate(self.positions)},
        }


def _scene_crops(scenes, names, colours, positions):
    """Crops at every anchor of every scene with (name, colour) codes; colour -1 where empty."""
    images = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2).float() / 127.5 - 1
    crops = crop_at_anchors(images, positions)
    name_codes = torch.full((len(scenes), len(positions)), names.index(NONE), dtype=torch.long)
    colour_codes = torch.full((len(scenes), len(positions)), -1, dtype=torch.long)
    for i, scene in enumerate(scenes):
        for obj in scene.objects:
            j = positions.index(obj.position)
            name_codes[i, j] = names.index(obj.name)
            colour_codes[i, j] = colours.index(obj.colour)
    return crops.reshape(-1, 3, CROP, CROP), name_codes.reshape(-1), colour_codes.reshape(-1)


def _augment(crops: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift by up to 2 px, brightness jitter, mild blur on half the crops, pixel noise."""
    n = crops.shape[0]
    padded = torch.nn.functional.pad(crops, (2, 2, 2, 2), value=-1.0)
    dx = torch.randint(0, 5, (n,), generator=generator)
    dy = torch.randint(0, 5, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(CROP)[None, :])  # (n, C)
    cols = (dx[:, None] + torch.arange(CROP)[None, :])
    idx_n = torch.arange(n)[:, None, None]
    shifted = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    kernel = torch.tensor([0.25, 0.5, 0.25])
    kernel = (kernel[:, None] * kernel[None, :]).expand(3, 1, 3, 3)
    blurred = torch.nn.functional.conv2d(torch.nn.functional.pad(shifted, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    use_blur = (torch.rand(n, 1, 1, 1, generator=generator) < 0.5).float()
    out = use_blur * blurred + (1 - use_blur) * shifted
    out = out * (1 + 0.1 * (torch.rand(n, 1, 1, 1, generator=generator) - 0.5))
    out = out + 0.08 * torch.randn(out.shape, generator=generator)
    return out.clamp(-1, 1)


def train_judge(
    minutes: float = 4.0, seed: int = 0, out: str | Path | None = None, scenes: int = 8_000,
    epochs: int = 5, threads: int = 2, progress: bool = True,
) -> dict:
    """Train the judge on ``scenes`` random scenes (x 5 anchors), evaluate it on the test split,
    save it to ``out`` (default: ``workbench/reference/judge``). Returns the training record."""
    from tqdm.auto import tqdm

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    names, colours, positions = _vocab()
    data = [make_scene(seed=(seed, _TRAIN_STREAM, i)) for i in range(scenes)]
    crops, name_codes, colour_codes = _scene_crops(data, names, colours, positions)
    # Most anchors are empty; keep a third of the empty crops, so the time goes to objects.
    keep = (name_codes != names.index(NONE)) | (torch.rand(len(name_codes), generator=torch.Generator().manual_seed(seed)) < 0.33)
    crops, name_codes, colour_codes = crops[keep], name_codes[keep], colour_codes[keep]
    judge = Judge()
    optimizer = torch.optim.AdamW(judge.parameters(), lr=2e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    batch = 256
    total = epochs * (len(crops) // batch)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=total)
    start, deadline = time.time(), time.time() + 60 * minutes
    bar = tqdm(total=total, desc="train judge", disable=not progress, mininterval=5, file=sys.stderr)
    step = 0
    judge.train()
    for _ in range(epochs):
        order = torch.randperm(len(crops), generator=generator)
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i:i + batch]
            x = _augment(crops[idx], generator)
            name_logits, colour_logits = judge(x)
            loss = nn.functional.cross_entropy(name_logits, name_codes[idx])
            loss = loss + nn.functional.cross_entropy(colour_logits, colour_codes[idx], ignore_index=-1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            if time.time() > deadline or step >= total:
                break
        if time.time() > deadline or step >= total:
            break
    bar.close()
    judge.eval()
    accuracy = evaluate_judge(judge)
    record = {"seed": seed, "scenes": scenes, "steps": step, "steps_planned": total, "batch_size": batch,
              "minutes": round((time.time() - start) / 60, 2), "width": judge.width, "test_accuracy": accuracy}
    out = Path(out) if out is not None else judge_dir()
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, str(out / "judge.safetensors"))
    (out / "judge.json").write_text(json.dumps({"width": judge.width, "names": list(names), "colours": list(colours),
                                                "positions": list(positions), "training": record}, indent=2))
    return record


@torch.no_grad()
def evaluate_judge(judge: Judge, n: int = 1000, split: str = "test", seed: int = 0) -> dict:
    """Accuracy on the first ``n`` scenes of a held-out dataset split (1-3 objects each).

    ``name``: object crops whose shape/glyph is right; ``shape``/``glyph``: the same restricted to
    shapes / glyphs; ``colour``: object crops whose colour is right; ``empty``: empty anchors
    judged ``"none"``.
    """
    positions = judge.positions
    scenes = [sample_scene(i, split, seed) for i in range(n)]
    verdict = judge.judge(np.stack([s.image for s in scenes]).astype(np.float32) / 255.0)
    hits = {"name": [], "shape": [], "glyph": [], "colour": [], "empty": []}
    for i, scene in enumerate(scenes):
        occupied = {obj.position: obj for obj in scene.objects}
        for pos in positions:
            said_name, said_colour = verdict["name"][pos][i], verdict["colour"][pos][i]
            if pos not in occupied:
                hits["empty"].append(said_name == NONE)
                continue
            obj = occupied[pos]
            hits["name"].append(said_name == obj.name)
            hits[obj.kind].append(said_name == obj.name)
            hits["colour"].append(said_colour == obj.colour)
    return {k: round(float(np.mean(v)), 4) for k, v in hits.items()} | {"scenes": n, "split": split}


def judge_dir() -> Path:
    """The shipped judge folder (package data ``workbench/reference/judge``)."""
    return Path(str(importlib.resources.files("workbench") / "reference" / "judge"))


def load_judge(folder: str | Path | None = None) -> Judge:
    """The shipped (or a saved) judge, in eval mode."""
    from safetensors.torch import load_file

    folder = Path(folder) if folder is not None else judge_dir()
    if not (folder / "judge.safetensors").exists():
        raise FileNotFoundError(f"no judge at {folder}; train it with python -m workbench.models.judge")
    meta = json.loads((folder / "judge.json").read_text())
    judge = Judge(width=meta["width"])
    if tuple(meta["names"]) != judge.names or tuple(meta["colours"]) != judge.colours:
        raise ValueError(f"the judge at {folder} was trained on another recipe's vocabulary")
    judge.load_state_dict(load_file(str(folder / "judge.safetensors")))
    return judge.eval().requires_grad_(False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the shapes-world judge.")
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenes", type=int, default=8_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    record = train_judge(args.minutes, args.seed, args.out, args.scenes, args.epochs, args.threads)
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
