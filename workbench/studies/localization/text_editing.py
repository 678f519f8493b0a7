"""Applications of text localization: glyph editing against attention reuse, and prevention of
banned glyphs (Staniszewski et al., ICLR 2025, sections 5-6), as plain functions over the run engine.

* **Attention reuse** (:func:`reuse_sites`, :func:`reuse_edit`): the prompt-to-prompt-like
  baseline of :mod:`workbench.studies.attention.editing`, run on the localization study's glyph pairs. The
  original prompt (glyph A) runs and its attention pieces are recorded for the first steps; the
  edit prompt (glyph B) runs from the same noise with them patched in. Which sites a method reuses
  is read from the site map's token layouts, never from a family: ``image->image`` is every
  attention-probability site whose queries and keys are image tokens (MM-DiT: the image->image
  block of each joint attention; U-Net: ``attn1``), ``image q,k`` the image tokens' queries and
  keys of those attentions, and ``+ text->image`` adds probability sites with text queries and
  image keys. A model without such sites cannot run that method: :class:`NotApplicable` says why.
* **Prevention** (:class:`BannedGlyphs`, :func:`prevention_prompts`, :func:`prevent`): a prompt
  asking for a banned glyph gets the text K/V of some layers patched, from step 0, from the same
  prompt with the glyph replaced by a benign one; other prompts run untouched. The baseline puts
  the banned glyph in the negative prompt (``Model.generate(negative_prompts=...)``).
* Selection rules (:func:`choose_reuse_steps`, :func:`choose_prevention_layers`) and the scores
  (:func:`prevention_scores`) used by :mod:`workbench.studies.localization.applications`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ...capture import intervene, patch, record
from .patching import PatchPlan, cache_text, head_mask, pick_layers, prompt_token_maps, text_patches
from .sweeps import noise_for
from ...analysis.stats import bootstrap, interval

REUSE_METHODS = ("image->image", "image q,k", "image->image + text->image")  # analysis/editing.py's names


class NotApplicable(ValueError):
    """A reuse method the model's attention has no sites for (the message says which are missing)."""


# -- attention reuse ----------------------------------------------------------------------------
def _segments(layout) -> tuple[str, ...] | None:
    return None if layout is None else tuple(layout.segments)


def reuse_sites(model, method: str) -> list[str]:
    """The site names ``method`` reuses on ``model``, from the site map's token layouts."""
    if method not in REUSE_METHODS:
        raise KeyError(f"unknown reuse method {method!r}; choose from {', '.join(REUSE_METHODS)}")
    sites = model.site_map.enumerate_sites(model.denoiser)
    probs = [s for s in sites if getattr(s.tap, "role", None) == "probs"]
    image_image = [s.name for s in probs if _segments(s.query_layout) == ("image",) and _segments(s.key_layout) == ("image",)]
    if not image_image:
        raise NotApplicable(f"{model.name or 'this model'}: no attention site has image queries attending to image "
                            f"keys, so there is no image->image attention to reuse")
    if method == "image->image":
        return image_image
    if method == "image q,k":
        # the queries/keys of image tokens in the attentions whose keys include image tokens
        self_attention = {s.module for s in probs if _segments(s.key_layout) == ("image",)}
        return [s.name for s in sites if getattr(s.tap, "role", None) in ("q", "k") and s.module in self_attention
                and _segments(s.query_layout) == ("image",)]
    text_image = [s.name for s in probs if _segments(s.query_layout) == ("text",) and _segments(s.key_layout) == ("image",)]
    if not text_image:
        raise NotApplicable(f"{model.name or 'this model'}: no attention site has text queries attending to image "
                            "keys (its text tokens are only keys/values, never queries: cross-attention), so "
                            "there are no text->image rows to reuse")
    return image_image + text_image


def reuse_edit(model, originals: Sequence[str], edits: Sequence[str], seeds: Sequence[int], method: str, *,
               reuse_steps: int, steps: int, guidance_scale: float | None = None,
               batch: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(original images, edited images): each original prompt runs from its own seed's noise with
    ``method``'s attention recorded for steps ``[0, reuse_steps)``; the edit prompt then runs from
    the same noise with those pieces patched in (both guidance branches, as analysis/editing.py)."""
    originals, edits, seeds = list(originals), list(edits), [int(s) for s in seeds]
    if not len(originals) == len(edits) == len(seeds):
        raise ValueError(f"{len(originals)} original prompts, {len(edits)} edit prompts and {len(seeds)} seeds: "
                         "give one of each per pair")
    if not 0 < reuse_steps <= steps:
        raise ValueError(f"reuse_steps={reuse_steps} must lie in 1..{steps} for a {steps}-step run "
                         "(0 reuses nothing: that is the prompt swap)")
    sites = reuse_sites(model, method)
    window = list(range(reuse_steps))
    out_a, out_b = [], []
    for a in range(0, len(originals), batch):
        noise = noise_for(model, seeds[a:a + batch])
        with record(model, sites, steps=window) as rec:
            out_a.append(model.generate(originals[a:a + batch], steps=steps, latents=noise,
                                        guidance_scale=guidance_scale))
        with intervene(model, [patch(site, rec, steps=window) for site in sites]):
            out_b.append(model.generate(edits[a:a + batch], steps=steps, latents=noise,
                                        guidance_scale=guidance_scale))
        del rec
    return np.concatenate(out_a), np.concatenate(out_b)


def choose_reuse_steps(success: Mapping[int, float], psnr: Mapping[int, float], swap_success: float,
                       keep: float = 0.9) -> int:
    """The reuse length to report (chosen on validation): the longest whose edit success keeps
    ``keep`` of the full prompt swap's (more reuse keeps more of the image); if none does, the
    one with the highest success (ties: higher PSNR)."""
    if not success:
        raise ValueError("no reuse settings were measured")
    reaching = [k for k, v in success.items() if v >= keep * swap_success]
    if reaching:
        return max(reaching)
    return max(success, key=lambda k: (success[k], psnr.get(k, -np.inf), -k))


# -- prevention ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class BannedGlyphs:
    """Glyphs that must not be rendered, and the benign glyph each is replaced by.

    ``replacement``: one benign glyph for all, or a mapping banned -> benign. ``world``: the glyphs
    that exist (default: the shapes world's); a glyph outside it, a benign glyph that is itself
    banned, or a banned glyph without a replacement is refused."""

    banned: tuple[str, ...]
    replacement: Mapping[str, str] | str
    world: tuple[str, ...] | None = None

    def __post_init__(self):
        world = self.world
        if world is None:
            from ...data.recipe import default_recipe

            world = tuple(default_recipe().glyphs)
            object.__setattr__(self, "world", world)
        banned = (self.banned,) if isinstance(self.banned, str) else tuple(self.banned)
        object.__setattr__(self, "banned", banned)
        if not banned:
            raise ValueError("the banned-glyph list is empty: ban at least one glyph")
        unknown = [g for g in banned if g not in world]
        if unknown:
            raise ValueError(f"banned glyph(s) {unknown} are not glyphs of this world; its glyphs are {', '.join(world)}")
        mapping = ({g: self.replacement for g in banned} if isinstance(self.replacement, str)
                   else dict(self.replacement))
        missing = [g for g in banned if g not in mapping]
        if missing:
            raise ValueError(f"banned glyph(s) {missing} have no benign replacement")
        for g, benign in mapping.items():
            if g not in banned:
                raise ValueError(f"a replacement is given for {g!r}, which is not banned (banned: {', '.join(banned)})")
            if benign not in world:
                raise ValueError(f"the replacement {benign!r} for {g!r} is not a glyph of this world; "
                                 f"its glyphs are {', '.join(world)}")
            if benign in banned:
                raise ValueError(f"the replacement {benign!r} for {g!r} is itself banned")
        object.__setattr__(self, "replacement", mapping)

    def benign(self, glyph: str) -> str:
        if glyph not in self.banned:
            raise KeyError(f"{glyph!r} is not banned (banned: {', '.join(self.banned)})")
        return self.replacement[glyph]


_QUOTED = re.compile(r'"([^"]+)"')


def glyph_spans(prompt: str) -> list[tuple[int, int]]:
    """Character spans of the quoted glyphs in a prompt (the shapes world quotes them: 'the letter "K"')."""
    return [m.span(1) for m in _QUOTED.finditer(prompt)]


def prevention_prompts(prompts: Sequence[str], banned: BannedGlyphs,
                       spans: Sequence[Sequence[Mapping[str, tuple[int, int]]]] | None = None) -> dict:
    """Which prompts ask for a banned glyph, and each one's benign twin (every banned glyph
    replaced, nothing else changed).

    ``spans``: per prompt the shapes world's role spans per object (``Scene.spans``); without them
    the quoted glyphs are found in the text. A quoted word that is not a glyph of the world is
    refused. Returns ``banned`` (bool per prompt), ``benign`` (the twins; a prompt without a banned
    glyph is its own twin), ``target_spans`` / ``source_spans`` (the role spans of the first
    object, for token alignment; None without spans)."""
    prompts = list(prompts)
    flagged, twins, t_spans, s_spans = [], [], [], []
    for i, prompt in enumerate(prompts):
        if spans is not None:
            places = [tuple(obj["name"]) for obj in spans[i] if "name" in obj]
        else:
            places = glyph_spans(prompt)
        twin, shift, hit, first_shift = prompt, 0, False, None
        for a, b in places:
            word = prompt[a:b]
            if word not in banned.world:
                if spans is None:
                    raise ValueError(f"prompt {prompt!r} quotes {word!r}, which is not a glyph of this world")
                continue  # a shape name: nothing to ban
            if word in banned.banned:
                new = banned.benign(word)
                twin = twin[:a + shift] + new + twin[b + shift:]
                if first_shift is None:
                    first_shift = len(new) - (b - a)
                shift += len(new) - (b - a)
                hit = True
        flagged.append(hit)
        twins.append(twin)
        if spans is not None:
            roles = dict(spans[i][0])
            t_spans.append(roles)
            delta = first_shift or 0
            end = roles["name"][1] if "name" in roles else 0
            s_spans.append({r: ((s + delta if s >= end else s), (e + delta if e >= end else e)) for r, (s, e) in roles.items()})
    return {"banned": np.array(flagged, dtype=bool), "benign": twins,
            "target_spans": t_spans if spans is not None else None,
            "source_spans": s_spans if spans is not None else None}


def prevent(model, prompts: Sequence[str], banned: BannedGlyphs, *, layers=None, steps: int,
            seed: int | Sequence[int] = 0, guidance_scale: float | None = None, start_step: int = 0,
            spans: Sequence[Sequence[Mapping[str, tuple[int, int]]]] | None = None) -> dict:
    """Generate ``prompts`` with banned glyphs prevented: a prompt asking for a banned glyph gets
    the text K/V of ``layers`` (indices or module paths; None: every text layer), from
    ``start_step`` on, patched from its benign twin run from the same noise; other prompts run as
    they are. ``seed``: one seed per prompt (each its own noise; models the workbench runs) or one
    seed for the batch (any model, pipelines included).

    Returns ``images`` (prompt, y, x, rgb), ``banned`` (bool per prompt), ``benign`` (the twins)."""
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts to generate")
    found = prevention_prompts(prompts, banned, spans)
    chosen = pick_layers(model, layers)
    if isinstance(seed, (int, np.integer)):
        run = {"seed": int(seed)}
        cache_seed = int(seed)
    else:
        seeds = [int(s) for s in seed]
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts: give one seed per prompt, or one int")
        run = {"latents": noise_for(model, seeds)}
        cache_seed = seeds
    if not found["banned"].any():
        images = model.generate(prompts, steps=steps, guidance_scale=guidance_scale, **run)
        return {"images": images, "banned": found["banned"], "benign": found["benign"]}
    if not 0 <= start_step < steps:
        raise ValueError(f"start_step={start_step} lies beyond a {steps}-step run (0..{steps - 1})")
    _, cache = cache_text(model, found["benign"], steps=steps, seed=cache_seed, guidance_scale=guidance_scale,
                          latents=run.get("latents"), layers=[layer.index for layer in chosen])
    tokens = prompt_token_maps(model, prompts, found["benign"], found["target_spans"], found["source_spans"])
    rows = found["banned"]
    plan = PatchPlan(source=np.arange(len(prompts)),
                     heads={layer.module: head_mask(cache, layer, None, len(prompts)) & rows[:, None]
                            for layer in chosen},
                     start=np.full(len(prompts), start_step), tokens=tokens)
    with intervene(model, text_patches(model, cache, plan, steps)):
        images = model.generate(prompts, steps=steps, guidance_scale=guidance_scale, **run)
    return {"images": images, "banned": rows, "benign": found["benign"]}


def negative_prompt_for(prompt: str, glyph: str, form: str) -> str:
    """The negative prompt of the baseline: ``glyph`` (the quoted glyph alone), ``object`` (the
    prompt up to the glyph's closing quote: 'the letter "K"') or ``prompt`` (the whole prompt;
    then both branches see the same text and guidance cancels)."""
    if form == "glyph":
        return f'"{glyph}"'
    if form == "prompt":
        return prompt
    if form == "object":
        at = prompt.find(f'"{glyph}"')
        if at < 0:
            raise ValueError(f"prompt {prompt!r} does not quote {glyph!r}")
        return prompt[:at + len(glyph) + 2]
    raise ValueError(f"unknown negative-prompt form {form!r}; choose glyph, object or prompt")


NEGATIVE_FORMS = ("glyph", "object", "prompt")


def choose_prevention_layers(banned_rate: Mapping[tuple[int, ...], float], psnr: Mapping[tuple[int, ...], float],
                             tolerance: float = 0.05) -> tuple[int, ...]:
    """The layer set to prevent with (chosen on validation): the smallest measured set whose
    banned-glyph rate is within ``tolerance`` of the lowest measured; ties: higher PSNR."""
    if not banned_rate:
        raise ValueError("no layer sets were measured")
    lowest = min(banned_rate.values())
    ok = [k for k, v in banned_rate.items() if v <= lowest + tolerance]
    return min(ok, key=lambda k: (len(k), -psnr.get(k, -np.inf), k))


# -- scores -------------------------------------------------------------------------------------
def prevention_scores(judge, images: np.ndarray, unpatched: np.ndarray, glyphs: Sequence[str],
                      colours: Sequence[str], positions: Sequence[str], masks: np.ndarray) -> dict[str, np.ndarray]:
    """Per prompt: ``banned`` (the judge still reads the banned glyph at its position),
    ``colour_kept``, ``rest_kept`` (other positions read as in the unpatched image) and ``psnr``
    (dB, against the unpatched image, outside ``masks``; capped at 60 for an unchanged image)."""
    from .protocol import reads
    from ...analysis.metrics import psnr_outside

    got = reads(judge, images, list(positions))
    base = reads(judge, unpatched, list(positions))
    return {"banned": (got["name"] == np.asarray(glyphs)).astype(float),
            "colour_kept": (got["colour"] == np.asarray(colours)).astype(float),
            "rest_kept": (got["others"] == base["others"]).astype(float),
            "psnr": np.minimum(psnr_outside(images, unpatched, masks), 60.0),
            "read": got["name"]}


def summary_row(scores: Mapping[str, np.ndarray], n_boot: int = 2000) -> dict:
    """Means (PSNR: median) with 95% intervals: Wilson for the 0/1 rates, the bootstrap for PSNR."""
    row = {"n": int(len(scores["banned"]))}
    for key in ("banned", "colour_kept", "rest_kept", "success"):
        if key in scores:
            values = np.asarray(scores[key], dtype=float)
            row[key] = float(values.mean())
            row[f"{key}_ci"] = interval(values, n_boot=n_boot)
    psnr = np.asarray(scores["psnr"], dtype=float)
    row["psnr_median"] = float(np.median(psnr))
    row["psnr_median_ci"] = bootstrap(psnr, np.median, n=n_boot)
    return row


__all__ = ["REUSE_METHODS", "NotApplicable", "reuse_sites", "reuse_edit", "choose_reuse_steps", "BannedGlyphs",
           "glyph_spans", "prevention_prompts", "prevent", "negative_prompt_for", "NEGATIVE_FORMS",
           "choose_prevention_layers", "prevention_scores", "summary_row"]
