"""One hook chain per module: everything that watches or changes a run attaches through it.

Recording, interventions, feature reuse and the step clock all need to run code around a module's
call. Each attaches as a *named entry* of that module's :class:`HookChain`, and the chain runs its
entries in the order they were attached. This is the shape of diffusers' ``HookRegistry`` /
``ModelHook`` (one registry per module, named hooks with ``pre_forward`` / ``post_forward``), kept
as our own small class for three reasons:

* observation stays on torch's own hooks (one pre-hook and one forward hook per module, whatever
  the number of entries), so the module's ``forward`` is untouched, a watched run is bitwise the
  bare one, and compiled regions keep their compiled ``forward`` (diffusers' registry replaces
  ``forward`` on the instance for every hook);
* an entry can ask to be told when the call *raised* (``always_call``): the attention observer
  must leave its torch-function mode then;
* a run is announced to the entries of the denoiser's chain (:func:`announce_run`), so a
  ``Model`` says what its hooks cannot see without holding a list of its observers.

Only an entry that must stop a computation (feature reuse: ``around``) puts a wrapper on the
instance's ``forward`` (or, for a scheduler, ``step``), and only while such an entry is attached.
Removing the last entry removes every torch hook, the wrapper and the chain itself: a module
with no entries is exactly the module the user built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

_CHAIN_ATTR = "_workbench_hook_chain"
_NO_INSTANCE_ATTR = object()


class ModelHook:
    """One entry of a chain. Override what you need; a ``None`` result changes nothing.

    * ``pre_forward(module, args, kwargs)`` -> ``None`` or new ``(args, kwargs)``
    * ``post_forward(module, args, kwargs, output)`` -> ``None`` or a new output. ``output`` is
      ``None`` when the call raised; only entries with ``always_call = True`` see that.
    * ``around(call, *args, **kwargs)`` -> the output: runs instead of the method, and may call
      ``call`` (the method, or the next ``around`` entry) or not (feature reuse).
    * ``begin_run(run)`` with a :class:`RunAnnouncement`: told by :func:`announce_run`.
    """

    always_call = False

    def pre_forward(self, module, args, kwargs):
        return None

    def post_forward(self, module, args, kwargs, output):
        return None

    def begin_run(self, run: "RunAnnouncement") -> None:
        return None


@dataclass(frozen=True)
class RunAnnouncement:
    """What a runner (``Model.generate`` / ``predict`` / ``denoise``) knows before a run and the
    hooks cannot see: the prompts, the guidance branches of a batched call, the run's length
    (None: unknown), and the index of its first step (a run resumed at step k starts at k)."""

    prompts: list[str] | None
    branches: tuple[str, ...]
    expected_steps: int | None
    first_step: int = 0


def _overrides(hook, method: str) -> bool:
    return getattr(type(hook), method, None) is not getattr(ModelHook, method)


class HookChain:
    """The named, ordered entries attached to one object (a module's ``forward``, a scheduler's
    ``step``). Get it with :meth:`of`; never build one directly."""

    def __init__(self, owner, method: str):
        self.owner, self.method = owner, method
        self._entries: dict[str, ModelHook] = {}
        self._torch_handles: dict = {}
        self._original = _NO_INSTANCE_ATTR  # the instance attribute the ``around`` wrapper replaced
        self._wrapped = False
        self._pre = self._post = self._post_always = self._around = ()

    # -- finding and attaching ----------------------------------------------------------------------
    @staticmethod
    def of(owner, method: str = "forward", *, create: bool = True) -> "HookChain | None":
        """The chain of ``owner.method`` (created when ``create``; else None if it has none)."""
        chains = owner.__dict__.get(_CHAIN_ATTR)
        if chains is None or method not in chains:
            if not create:
                return None
            if chains is None:
                chains = {}
                object.__setattr__(owner, _CHAIN_ATTR, chains)  # not a submodule: bypass nn.Module
            chains[method] = HookChain(owner, method)
        return chains[method]

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str) -> ModelHook:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"no hook named {name!r} on this {type(self.owner).__name__}; attached: "
                           f"{', '.join(self._entries) or 'none'}") from None

    def register(self, name: str, hook: ModelHook) -> "Attachment":
        """Append ``hook`` under ``name`` (unique in this chain); remove it with the returned handle."""
        try:
            self._check_new_entry(name, hook)
        except (ValueError, TypeError):
            self._refresh()  # a chain created for this refused entry goes again
            raise
        self._entries[name] = hook
        self._refresh()
        return Attachment(self, name)

    def _check_new_entry(self, name: str, hook: ModelHook) -> None:
        if name in self._entries:
            raise ValueError(f"a hook named {name!r} is already attached to this {type(self.owner).__name__} "
                             f"(attached: {', '.join(self._entries)}); detach it first or choose another name")
        is_module = isinstance(self.owner, torch.nn.Module) and self.method == "forward"
        if not is_module and (_overrides(hook, "pre_forward") or _overrides(hook, "post_forward")):
            raise TypeError(f"{type(hook).__name__} has pre_forward/post_forward, which only a module's forward "
                            f"supports; {type(self.owner).__name__}.{self.method} takes `around` entries only")

    def remove(self, name: str) -> None:
        """Detach ``name``; the last removal leaves the owner as it was before the first attach."""
        if self._entries.pop(name, None) is None:
            return
        self._refresh()

    # -- the torch hooks and the wrapper, rebuilt on every change -----------------------------------
    def _refresh(self) -> None:
        """Cache the entries per role (the call path then loops over tuples) and attach exactly the
        torch hooks and wrapper those roles need."""
        entries = list(self._entries.values())
        self._pre = tuple(h for h in entries if _overrides(h, "pre_forward"))
        self._post = tuple(h for h in entries if _overrides(h, "post_forward"))
        self._post_always = tuple(h for h in self._post if h.always_call)
        self._around = tuple(h for h in entries if hasattr(h, "around"))
        # one pre-hook and one forward hook, attached while some entry needs them and never
        # re-attached meanwhile, so hooks others registered keep their order relative to ours
        wanted = {"pre": bool(self._pre), "post": bool(self._post)}
        for role, needed in wanted.items():
            if needed and role not in self._torch_handles:
                self._torch_handles[role] = (
                    self.owner.register_forward_pre_hook(self._run_pre, with_kwargs=True) if role == "pre" else
                    self.owner.register_forward_hook(self._run_post, with_kwargs=True, always_call=True))
            elif not needed and role in self._torch_handles:
                self._torch_handles.pop(role).remove()
        if self._around and not self._wrapped:
            self._wrap()
        elif not self._around and self._wrapped:
            self._unwrap()
        if not entries:
            chains = self.owner.__dict__.get(_CHAIN_ATTR, {})
            chains.pop(self.method, None)
            if not chains and _CHAIN_ATTR in self.owner.__dict__:
                object.__delattr__(self.owner, _CHAIN_ATTR)

    def _run_pre(self, module, args, kwargs):
        changed = False
        for hook in self._pre:
            result = hook.pre_forward(module, args, kwargs)
            if result is not None:
                args, kwargs = result
                changed = True
        return (args, kwargs) if changed else None

    def _run_post(self, module, args, kwargs, output):
        # torch calls an always_call hook with output None when the forward raised
        hooks = self._post if output is not None else self._post_always
        changed = False
        for hook in hooks:
            result = hook.post_forward(module, args, kwargs, output)
            if result is not None:
                output = result
                changed = True
        return output if changed else None

    def _wrap(self) -> None:
        owner, method = self.owner, self.method
        self._original = owner.__dict__.get(method, _NO_INSTANCE_ATTR)
        bound = getattr(owner, method)

        def wrapped(*args, **kwargs):
            call = bound
            for hook in reversed(self._around):  # the first entry is the outermost
                call = _bind_around(hook, call)
            return call(*args, **kwargs)

        object.__setattr__(owner, method, wrapped)
        self._wrapped = True

    def _unwrap(self) -> None:
        if self._original is _NO_INSTANCE_ATTR:
            object.__delattr__(self.owner, self.method)
        else:
            object.__setattr__(self.owner, self.method, self._original)
        self._original = _NO_INSTANCE_ATTR
        self._wrapped = False


def _bind_around(hook, call: Callable) -> Callable:
    return lambda *args, **kwargs: hook.around(call, *args, **kwargs)


class Attachment:
    """Handle of one attached entry; ``remove()`` detaches it (twice is harmless)."""

    def __init__(self, chain: HookChain, name: str):
        self.chain, self.name = chain, name

    def remove(self) -> None:
        self.chain.remove(self.name)


def attach(owner, name: str, hook: ModelHook, method: str = "forward") -> Attachment:
    """Attach ``hook`` as entry ``name`` of ``owner``'s chain (``owner.method``)."""
    return HookChain.of(owner, method).register(name, hook)


class Attachments:
    """The entries one context attached, detached together, last attached first, so every chain
    unwinds in the order it was built (the shared lifecycle of recording, reuse and T-GATE)."""

    def __init__(self):
        self._handles: list[Attachment] = []

    def add(self, owner, name: str, hook: ModelHook, method: str = "forward") -> None:
        self._handles.append(attach(owner, name, hook, method))

    def remove_all(self) -> None:
        while self._handles:
            self._handles.pop().remove()


def announce_run(denoiser: torch.nn.Module, run: RunAnnouncement) -> None:
    """Tell every entry on ``denoiser``'s chain that a run is about to start (see :class:`ModelHook`)."""
    chain = HookChain.of(denoiser, create=False)
    if chain is None:
        return
    for hook in list(chain._entries.values()):
        hook.begin_run(run)


def attached_names(owner, method: str = "forward") -> list[str]:
    """The names of the entries attached to ``owner.method``, in order (empty: nothing attached)."""
    chain = HookChain.of(owner, method, create=False)
    return [] if chain is None else chain.names()

