"""Compiled denoisers: record and intervene on them by running them eagerly for the recorded run.

``torch.compile`` traces a module's forward (and the hooks attached when it was traced) into a
graph. Hooks attached later, and the attention observer (a ``TorchFunctionMode``), are then not
guaranteed to run: a compiled region can silently skip a site. So while a recorder is attached
to a model that holds compiled code, torch's compiler stance is set to ``"force_eager"``: every
compiled function, whole-model (``torch.compile(model)``, an ``OptimizedModule``) or regional
(diffusers' ``compile_repeated_blocks()``, ``module.compile()``), runs its original Python code.
The compiled artifacts are untouched; the stance is restored when the recorder detaches, so the
next plain run is compiled again. The cost: recorded runs run at eager speed (docs/design.md).

Flex attention compiles its kernel on every call, even in an eager model; the same stance lets the
attention observer see its inputs (``attention.py``).
"""

from __future__ import annotations

import torch


def _is_optimized_module(module) -> bool:
    from torch._dynamo.eval_frame import OptimizedModule

    return isinstance(module, OptimizedModule)


def original_module(module):
    """The module ``torch.compile`` wrapped (``OptimizedModule._orig_mod``), else ``module``."""
    while _is_optimized_module(module):
        module = module._orig_mod
    return module


def compiled_regions(module: torch.nn.Module, wrappers: list = ()) -> list[str]:
    """Paths ("" for the root) of the compiled parts of ``module``: a whole-model wrapper (``module``
    itself, or one of ``wrappers`` wrapping it) or submodules compiled in place (``module.compile()``,
    as ``compile_repeated_blocks`` does)."""
    wrapped = [w for w in (module, *wrappers) if _is_optimized_module(w) and original_module(w) is original_module(module)]
    regions = [""] if wrapped else []
    for path, sub in original_module(module).named_modules():
        if getattr(sub, "_compiled_call_impl", None) is not None:
            regions.append(path)
    return regions


def enclosing_region(path: str, regions: list[str]) -> str | None:
    """The compiled region that contains the module at ``path``, if any."""
    for region in regions:
        if region == "" or path == region or path.startswith(region + "."):
            return region
    return None


class EagerStance:
    """Sets torch's compiler stance to ``force_eager`` while entered; restores the prior stance."""

    def __init__(self):
        self._stance = None

    def enter(self) -> None:
        if self._stance is None:
            self._stance = torch.compiler.set_stance("force_eager")  # takes effect now, as a call

    def exit(self) -> None:
        if self._stance is not None:
            stance, self._stance = self._stance, None
            stance.__exit__(None, None, None)
