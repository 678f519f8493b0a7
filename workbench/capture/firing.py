"""No silent no-ops: every requested site must see its tensor at every selected step.

A recording that silently lacks a site, or an intervention that silently did nothing, turns into
a wrong scientific result ("this layer does not matter"). So after each denoiser call the engine
compares the sites that fired with the sites that were due (recorded at a selected step, or
intervened on at an active step) and ends the run with :class:`SitesNotFired` if any is missing,
naming the sites, the step and the most likely cause.
"""

from __future__ import annotations

from ..sitemap import AttentionTap


class SitesNotFired(RuntimeError):
    """A recorded or intervened site never saw its tensor at a step where it was due."""


class FiringLog:
    """Sites that fired, and attention modules entered, during the current denoiser call."""

    def __init__(self):
        self.fired: set[str] = set()
        self.entered: set[str] = set()  # attention module paths whose forward began

    def new_call(self) -> None:
        self.fired.clear()
        self.entered.clear()


def missing_sites_error(missing: list, *, step: int, call: int, entered: set[str], compiled: list[str],
                        backends: dict[str, str | None], model_name: str) -> SitesNotFired:
    """The error for sites that did not fire, grouped by likely cause."""
    from .compiled import enclosing_region

    causes: dict[str, list[str]] = {}
    for site in missing:
        region = enclosing_region(site.module, compiled)
        if site.name == "latent.x0":
            cause = ("the scheduler's step() was not called after the denoiser (a single denoiser call, "
                     "such as Model.predict, has no x0; record latent.pred instead)")
        elif region is not None:
            cause = f"the module runs inside the compiled region {region or '<whole model>'!r}"
        elif isinstance(site.tap, AttentionTap) and site.module in entered:
            backend = backends.get(site.module)
            cause = (f"the attention module ran but its kernel was not observed (attention backend {backend!r}); "
                     "switch for the recorded run with denoiser.set_attention_backend('native')")
        else:
            cause = f"the module {site.module or '<root>'!r} was never called (or returned None for this output)"
        causes.setdefault(cause, []).append(site.name)
    lines = [f"- {', '.join(names)}: {cause}" for cause, names in causes.items()]
    return SitesNotFired(
        f"{len(missing)} requested site(s) of this {model_name} did not fire at step {step} (call {call}); "
        "nothing was recorded or changed there, so the run was stopped:\n" + "\n".join(lines)
    )
