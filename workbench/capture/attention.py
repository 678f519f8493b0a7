"""Attention interception: q, k, v and probabilities at the kernel call of one attention module.

While a watched attention module runs its forward, a ``TorchFunctionMode`` is active (and only
then). It catches the module's attention kernel call and hands q, k and v, already in the
``(batch, head, token, dim)`` layout the kernel sees, to :meth:`AttentionInterceptor.attend`:

1. q/k/v sites are edited and recorded per token segment (image/text) before the kernel runs;
2. the kernel runs as the model asked (the output stays bit-identical to an unwatched run);
   probabilities are computed exactly beside it from the same q and k (``attention.kernels``).

Kernels we can see: torch's ``scaled_dot_product_attention`` (diffusers' ``native`` backend and
its ``_native_*`` variants, which pick a kernel with ``sdpa_kernel``) and flex attention's
operator (backend ``flex``; run eagerly while recorded, see ``compiled.py``). Any other diffusers
backend (flash-attn, sage, xformers, ...) calls a kernel of another library: watching its
attention sites is refused before the run, with the way to switch.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..attention import kernels
from ..chain import ModelHook
from ..sitemap import kwarg_or_arg
from .layout import token_spans

# The engine (``Recorder``) and its ``SitePlan`` are named in annotations only: this module must not
# import the engine that imports it.

# diffusers backends whose kernel is torch's SDPA (the _native_* pick one of its kernels)
SDPA_BACKENDS = {None, "native", "_native_math", "_native_flash", "_native_efficient", "_native_cudnn"}
FLEX_BACKEND = "flex"


def backend_of(module) -> str | None:
    """The diffusers attention backend an attention module's processor dispatches to; None for a
    processor that calls torch's SDPA itself (no dispatch)."""
    processor = getattr(module, "processor", None)
    if not hasattr(processor, "_attention_backend"):
        return None
    backend = processor._attention_backend
    if backend is None:  # the process-wide default, which diffusers' set_attention_backend also sets
        try:
            from diffusers.models.attention_dispatch import _AttentionBackendRegistry
        except ImportError:  # a diffusers without attention backends: its processors call SDPA
            return None
        backend = _AttentionBackendRegistry._active_backend
    return getattr(backend, "value", backend)


def check_backend(path: str, module) -> None:
    backend = backend_of(module)
    if backend not in SDPA_BACKENDS and backend != FLEX_BACKEND:
        raise ValueError(
            f"{path} uses the attention backend {backend!r}, whose kernel the recorder cannot observe, so its "
            "attention sites (q, k, v, probabilities) cannot be recorded or changed. Switch for the recorded run: "
            "denoiser.set_attention_backend('native') (or 'flex'), then set it back; block outputs work under any backend."
        )


class AttentionInterceptor(ModelHook):
    """Watches one attention module for the sites planned on it: an entry of that module's hook
    chain that enters the kernel observer before the call and leaves it after, also when the call
    raised (``always_call``)."""

    always_call = True

    def __init__(self, recorder: "Recorder", path: str, module: torch.nn.Module, plans: list["SitePlan"]):
        check_backend(path, module)
        self.recorder, self.path, self.module, self.plans = recorder, path, module, plans
        self.backend = backend_of(module)
        self._mode: _KernelObserver | None = None
        self._row_cache: dict[tuple, tuple] = {}  # query rows per grid and device (``_rows``)
        # per-sample attention (the site map's per_sample_attention): each row's kept text tokens,
        # and the row whose kernel call is being observed
        self._samples: torch.Tensor | None = None
        self._row = 0

    def close(self) -> None:
        """Leave the mode if a forward raised between our pre- and post-hook."""
        if self._mode is not None:
            mode, self._mode = self._mode, None
            mode.__exit__(None, None, None)

    def pre_forward(self, module, args, kwargs):
        self.recorder.firing.entered.add(self.path)
        if self.recorder.wants(self.plans):
            tap = self.recorder.site_map.per_sample_attention
            mask = None if tap is None else kwarg_or_arg(args, kwargs, tap)
            self._samples = None if mask is None else mask.bool()
            self._mode = _KernelObserver(self, calls=1 if mask is None else mask.shape[0])
            self._mode.__enter__()

    def post_forward(self, module, args, kwargs, output):
        mode = self._mode
        self.close()
        if mode is not None and self._samples is not None and output is not None and mode.seen != mode.calls:
            raise ValueError(f"{self.path}: the site map says this attention runs one sample at a time, but its kernel "
                             f"ran {mode.seen} time(s) for {mode.calls} samples; was its attention processor replaced?")

    # -- at the kernel call -----------------------------------------------------------------------
    def observed(self, call: int, q, k, v, kernel: Callable, mask_opts: dict, sdpa_opts: dict | None):
        """The module's ``call``-th kernel call: the whole batch, or one sample of it (per-sample attention)."""
        if self._samples is None:
            return self.attend(q, k, v, kernel, mask_opts, sdpa_opts)
        return self._attend_sample(call, q, k, v, kernel, mask_opts, sdpa_opts)

    def _attend_sample(self, row: int, q, k, v, kernel: Callable, mask_opts: dict, sdpa_opts: dict | None):
        """One sample's kernel call over [visual | that sample's kept text tokens] (Mochi): laid out on
        the whole token axis (text tokens at their positions, the dropped ones zero and masked out on
        both sides, so their probability rows and columns are zero), so that every row of the batch is
        recorded and intervened on the same axis. The model's own kernel still runs on the tokens the
        call holds, so its output is unchanged."""
        if mask_opts.get("attn_mask") is not None or mask_opts.get("is_causal"):
            raise NotImplementedError(f"{self.path}: per-sample attention calls that carry their own mask are not supported")
        if q.shape[0] != 1:  # e.g. the family's processor was swapped for a batched one
            raise ValueError(f"{self.path}: the site map says this attention runs one sample at a time, but its kernel "
                             f"call holds {q.shape[0]} samples; was its attention processor replaced?")
        keep = self._samples[row].to(q.device)
        # the one host read of this path (a GPU waits here), as in Mochi's own loop, which takes
        # each sample's kept tokens with nonzero
        kept_text = torch.nonzero(keep).flatten()
        text_len = keep.shape[0]
        length = q.shape[-2] - kept_text.numel() + text_len
        spans = token_spans(self.plans[0].site.tap.query, length, text_len)
        a, _ = spans["text"]
        positions = torch.cat([a + kept_text if kind == "text" else torch.arange(*spans[kind], device=q.device)
                               for kind in spans])  # the call's tokens, in its order, on the whole axis
        present = torch.zeros(length, dtype=torch.bool, device=q.device)
        present[positions] = True

        def embed(x):
            whole = x.new_zeros(x.shape[:-2] + (length, x.shape[-1]))
            whole[..., positions, :] = x
            return whole

        def gather(x):
            return x.index_select(-2, positions)

        self._row = row
        return self.attend(embed(q), embed(k), embed(v), lambda q, k, v: kernel(gather(q), gather(k), gather(v)),
                           dict(mask_opts, attn_mask=present[:, None] & present[None, :]), sdpa_opts, gather)

    def _visit(self, plan: "SitePlan", x, kept=None, fresh: bool = False):
        """``fresh``: ``x`` was computed for this site alone (a block or rows of probabilities), so the
        recording may keep it without a copy."""
        if self._samples is None:
            return self.recorder.visit(plan, x, kept=kept, fresh=fresh)
        return self.recorder.visit_row(plan, x, self._row, self._samples.shape[0], kept=kept)

    def attend(self, q, k, v, kernel: Callable, mask_opts: dict, sdpa_opts: dict | None, gather: Callable | None = None):
        """Edit/record q, k, v and probabilities; return the kernel's output.

        ``kernel(q, k, v)`` runs the module's own kernel; ``mask_opts`` (scale, attn_mask, is_causal)
        define the probabilities; ``sdpa_opts`` is set when the kernel is SDPA (so that the fused
        kernel's log-sum-exp can be reused), None for another kernel. ``gather`` is set for one
        sample's call of per-sample attention: q, k, v lie on the whole token axis, ``kernel``
        takes them so, and ``gather`` takes an output on that axis back to the call's own tokens.
        """
        recorder = self.recorder
        text_len = recorder.geometry.text_len
        layout_q, layout_k = self.plans[0].site.tap.query, self.plans[0].site.tap.key
        if layout_q.segments == layout_k.segments:
            q_spans = k_spans = token_spans(layout_q, q.shape[-2], text_len)
        else:
            q_spans, k_spans = token_spans(layout_q, q.shape[-2], 0), token_spans(layout_k, k.shape[-2], 0)
        # 1. queries, keys, values: edit and record per segment, before the kernel sees them.
        tensors = {"q": q, "k": k, "v": v}
        for plan in self.plans:
            tap = plan.site.tap
            if tap.role == "probs":
                continue
            full = tensors[tap.role]
            start, stop = (q_spans if tap.role == "q" else k_spans)[tap.segment] if tap.segment else (0, full.shape[-2])
            part = full[..., start:stop, :]
            new = self._visit(plan, part)
            if new is not part:
                full = full.clone()
                full[..., start:stop, :] = new
                tensors[tap.role] = full
        q, k, v = tensors["q"], tensors["k"], tensors["v"]
        # 2. probabilities, with the model's kernel kept for the output wherever nothing edits them.
        prob_plans = [p for p in self.plans if p.site.tap.role == "probs"]
        editing = [p for p in prob_plans if any(i.active_at(recorder.clock.step) for i in p.interventions)]
        recording = [p for p in prob_plans if p.record and recorder.clock.selected_now]
        if editing:
            if sdpa_opts is None:
                raise ValueError(f"editing the attention probabilities of {self.path} needs the 'native' attention "
                                 f"backend (it uses {self.backend!r}): denoiser.set_attention_backend('native')")
            probs = kernels.full_probs(q, k, **mask_opts)
            for plan in prob_plans:
                probs = self._visit_block(plan, probs, q_spans, k_spans)
            return probs @ v if gather is None else gather(probs @ v)
        if recording:  # one sample's call (gather): the fused kernel would run on the whole axis, so not it
            return self._record_probs(recording, q, k, v, kernel, mask_opts, sdpa_opts if gather is None else None,
                                      q_spans, k_spans)
        return kernel(q, k, v)

    def _record_probs(self, plans: list["SitePlan"], q, k, v, kernel, mask_opts, sdpa_opts, q_spans, k_spans):
        """Record probabilities beside the model's own kernel (its output is returned), computing
        only the query rows the sites keep: a whole N x N matrix only where a site keeps all of it."""
        kept = {p.site.name: self._kept(p, q_spans, q.device) for p in plans}
        if any(p.site.tap.block is None and kept[p.site.name] is None for p in plans):
            out = kernel(q, k, v)
            probs = kernels.full_probs(q, k, **mask_opts)
            for plan in plans:
                self._visit_block(plan, probs, q_spans, k_spans)
            return out
        rows, lse_rows, lse_at = self._rows(plans, kept, q_spans, q.device)
        blocks = [p for p in plans if p.site.tap.block is not None]
        if blocks and sdpa_opts is not None:
            out, lse = kernels.attention_with_lse(q, k, v, rows=lse_rows, **sdpa_opts)
        else:
            out = kernel(q, k, v)
            lse = kernels.chunked_lse(q, k, rows=lse_rows, **mask_opts) if blocks else None
        for plan in plans:
            site_rows = rows[plan.site.name]
            if plan.site.tap.block is None:  # one kind of queries, a subset of them: those rows over every key
                probs = kernels.full_probs(q, k, rows=site_rows, **mask_opts)
            else:
                site_lse = lse[..., slice(*site_rows) if lse_rows is None else lse_at[plan.site.name]]
                k_kind = plan.site.tap.block.split("->")[1]
                probs = kernels.block_probs(q, k, site_lse, site_rows, k_spans[k_kind], **mask_opts)
            self._visit(plan, probs, fresh=True)
        return out

    def _rows(self, plans: list["SitePlan"], kept: dict, q_spans, device):
        """Per site, its rows of q's token axis: its query span, or the absolute indices of the queries
        it keeps; the rows whose log-sum-exp the blocks need (None: every query, as without subsets);
        and where each block's rows lie among those. Built on the host once per grid and device, so
        that no call waits on the device (``torch.unique`` on a GPU would)."""
        geometry = self.recorder.geometry
        key = (tuple(p.site.name for p in plans), tuple(q_spans.items()), geometry.grid, geometry.frames, device)
        if key not in self._row_cache:
            rows, host = {}, {}
            for plan in plans:
                name = plan.site.name
                start, stop = q_spans[plan.site.query_layout.segments[0]]
                if kept[name] is None:
                    rows[name], host[name] = (start, stop), np.arange(start, stop)
                else:
                    host[name] = self.recorder.recording.queries[name].positions + start
                    rows[name] = torch.as_tensor(host[name], device=device)
            blocks = [p.site.name for p in plans if p.site.tap.block is not None]
            lse_rows, lse_at = None, {}
            if any(kept[name] is not None for name in blocks):
                union = np.unique(np.concatenate([host[name] for name in blocks]))
                lse_rows = torch.as_tensor(union, device=device)
                lse_at = {name: torch.as_tensor(np.searchsorted(union, host[name]), device=device) for name in blocks}
            self._row_cache[key] = rows, lse_rows, lse_at
        return self._row_cache[key]

    def _kept(self, plan: "SitePlan", q_spans, device) -> torch.Tensor | None:
        """Indices of the queries ``plan`` keeps among its own query tokens (``record(..., queries=)``);
        None where it keeps every query."""
        layout = plan.site.query_layout
        if layout is None or len(layout.segments) != 1:
            return None
        start, stop = q_spans[layout.segments[0]]
        return self.recorder.kept_queries(plan, layout.segments[0], stop - start, device)

    def _visit_block(self, plan: "SitePlan", probs, q_spans, k_spans):
        block = plan.site.tap.block
        kept = self._kept(plan, q_spans, probs.device)  # the recorded copy keeps these rows; the model sees all
        if block is None:
            return self._visit(plan, probs, kept=kept)
        q_kind, k_kind = block.split("->")
        (qa, qb), (ka, kb) = q_spans[q_kind], k_spans[k_kind]
        part = probs[..., qa:qb, ka:kb]
        new = self._visit(plan, part, kept=kept)
        if new is not part:
            probs = probs.clone()
            probs[..., qa:qb, ka:kb] = new
        return probs


_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


def _flex_operator():
    try:
        from torch._higher_order_ops.flex_attention import flex_attention
    except ImportError:  # a torch without flex attention
        return None
    return flex_attention


class _KernelObserver(TorchFunctionMode):
    """Active only inside one attention module's forward: routes its kernel call to the interceptor."""

    def __init__(self, interceptor: AttentionInterceptor, calls: int = 1):
        super().__init__()
        # the module's own kernel calls: one, or one per sample (per-sample attention); adapters
        # may call attention again after them, and those calls are not a site
        self.interceptor, self.calls, self.seen = interceptor, calls, 0
        self.flex = _flex_operator()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.seen == self.calls or (func is not F.scaled_dot_product_attention and (self.flex is None or func is not self.flex)):
            return func(*args, **kwargs)
        self.seen += 1
        if func is F.scaled_dot_product_attention:
            return self._sdpa(args, kwargs)
        return self._flex(func, args, kwargs)

    def _sdpa(self, args, kwargs):
        bound = dict(zip(_SDPA_ARGS, args))
        bound.update(kwargs)
        q, k, v = bound.pop("query"), bound.pop("key"), bound.pop("value")
        if bound.get("enable_gqa") and q.shape[1] != k.shape[1]:
            raise NotImplementedError("grouped-query attention is not supported by the recorder yet")
        bound.pop("enable_gqa", None)
        mask_opts = {key: bound.get(key) for key in ("scale", "attn_mask", "is_causal") if bound.get(key) is not None}
        kernel = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **bound)  # noqa: E731
        return self.interceptor.observed(self.seen - 1, q, k, v, kernel, mask_opts, bound)

    def _flex(self, func, args, kwargs):
        # flex_attention(query, key, value, score_mod, block_mask, scale, kernel_options, ...) -> (out, lse, max)
        q, k, v, score_mod, block_mask, scale, *rest = args
        wants_probs = any(p.site.tap.role == "probs" for p in self.interceptor.plans)
        plain = getattr(score_mod, "__name__", "") == "_identity" and getattr(block_mask[-1], "__name__", "") == "noop_mask"
        if wants_probs and not plain:
            raise ValueError(
                f"{self.interceptor.path}: flex attention here runs with a score_mod or block mask, so its probabilities "
                "are not softmax(q k^T * scale); record them with denoiser.set_attention_backend('native')"
            )
        kernel = lambda q, k, v: func(q, k, v, score_mod, block_mask, scale, *rest, **kwargs)  # noqa: E731
        return self.interceptor.observed(self.seen - 1, q, k, v, kernel, {"scale": scale}, None)
