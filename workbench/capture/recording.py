"""A recording: tensors captured per site, step and denoiser call, turned into labelled xarray.

Raw tensors stay as captured (batch first, in the site's canonical layout) so that a recording
can be the source of a patch; ``rec[site]`` / ``rec.dataset`` / ``rec.tree`` build labelled
``xarray`` objects with dims ``(sample, branch, step, *site dims)`` on demand.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import torch
import xarray as xr

from ..sitemap import Geometry, Site, parse_site, stage_index
from .layout import clashing_dims, token_coords, with_sized_dims
from .transfer import HostCopies
from .queries import KeptQueries


@dataclass
class CallInfo:
    step: int
    call: int
    timestep: object  # a float, or on a GPU a transfer.PendingScalar (read with float())
    row_branches: list[str]


@dataclass(repr=False)
class Recording(Mapping):
    """What a ``record`` context captured. A read-only mapping from site name to DataArray."""

    sites: dict[str, Site]
    model_name: str = ""
    family: str = ""
    stages: tuple[str, ...] = ()  # the site map's top-level modules in forward order
    reduce: tuple[str, ...] = ()
    dtype: str | None = None
    prompts: list[str] | None = None
    text_tokens: list[list[str]] | None = None
    text_encoders: list[tuple[str, int]] | None = None  # [(encoder, positions)] along the text axis
    geometry: Geometry | None = None
    interventions: list[str] = field(default_factory=list)
    transform: str = ""  # the name of record(transform=...): captures are its results, not the site's dims
    queries: dict[str, KeptQueries] = field(default_factory=dict)  # per site that keeps some queries only
    _raw: dict[str, dict[tuple[int, int], torch.Tensor]] = field(default_factory=lambda: defaultdict(dict))
    _calls: dict[tuple[int, int], CallInfo] = field(default_factory=dict)
    _calls_of_step: dict[int, list[int]] = field(default_factory=dict)  # the call indices of _calls, per step
    _rows: dict[tuple[str, int, int], list[str]] = field(default_factory=dict)  # per-site row labels if not the call's
    _flushed: object = None  # a StepSink once streamed to a store
    _held: int = 0  # bytes of the captures in memory
    # the engine's device->host copies of the captures: queued on a GPU, waited for once before a read
    host_copies: HostCopies = field(default_factory=HostCopies)

    # -- filling (used by the engine) ------------------------------------------------------------
    def add(self, site: Site, call: CallInfo, tensor: torch.Tensor, rows: list[str] | None = None) -> None:
        step, index = call.step, call.call
        key = (step, index)
        calls_of_step = self._calls_of_step.setdefault(step, [])
        if key not in self._calls:
            calls_of_step.append(index)
        self._calls[key] = call
        per_call = self._raw[site.name]
        # The calls of one step (guidance run as separate calls) are stacked on their rows: refuse, as
        # it happens, a call whose capture cannot stack (Lumina 2's joint sequence holds each call's
        # valid text only, so a conditional and an empty negative prompt give different lengths).
        # Only this step's other calls are looked at (``_calls_of_step``), so an add costs the same
        # at the last step of a long run as at the first.
        for other in calls_of_step:
            held = per_call.get((step, other)) if other != index else None
            if held is not None and held.shape[1:] != tensor.shape[1:]:
                raise ValueError(
                    f"{site.name}: denoiser call {index} of step {step} gives it shape {tuple(tensor.shape[1:])} "
                    f"but call {other} gave {tuple(held.shape[1:])}; the calls of one step are stacked as guidance "
                    "branches, so they must match. The token count of this site depends on the prompt: record the "
                    "branches in separate runs (e.g. the conditional run alone, without guidance), or record sites "
                    "whose shape does not depend on the prompt"
                )
        replaced = per_call.get(key)  # the same site seen twice in one call: the later value replaces the earlier
        per_call[key] = tensor
        self._held += _size(tensor) - (0 if replaced is None else _size(replaced))
        if rows is not None:
            self._rows[(site.name, step, index)] = rows

    def keep_queries(self, site: str, kept: KeptQueries) -> None:
        """Label ``site``'s query axis with the positions it keeps (``record(..., queries=)``)."""
        before = self.queries.get(site)
        if before is not None and not (before.of == kept.of and np.array_equal(before.positions, kept.positions)):
            raise ValueError(f"{site}: its query grid changed within one recording ({before.of} -> {kept.of} tokens), "
                             "so the kept queries differ between calls; record each resolution separately")
        self.queries[site] = kept

    def captured_sites(self) -> list[str]:
        """Names of the sites holding captures in memory."""
        return list(self._raw)

    def has_step(self, site: str, step: int) -> bool:
        return any(s == step for s, _ in self._raw.get(site, ()))

    def nbytes(self) -> int:
        """Bytes held in memory by the captures (each tensor's true element size: 2 for float16/bfloat16)."""
        return self._held  # kept up to date by add/drop_step: the engine asks after every denoiser call

    def raw(self, site: str, step: int, call: int = 0) -> torch.Tensor:
        """The tensor captured at ``site`` for one denoiser call, in its canonical layout."""
        if self.reduce or self.dtype or self.transform:
            raise ValueError(
                f"{site} was recorded with reduce={self.reduce} dtype={self.dtype} transform={self.transform or None}; "
                "record it without reductions (reduce, dtype, transform) to patch from it"
            )
        return self.kept(site, step, call)

    def kept(self, site: str, step: int, call: int = 0) -> torch.Tensor:
        """What the recording kept at ``site`` for one denoiser call: the capture after any
        ``reduce``, ``dtype`` or ``transform`` (:meth:`raw` is the same, checked to be the full capture)."""
        if site not in self._raw:
            raise KeyError(f"{site!r} was not recorded; recorded sites: {', '.join(sorted(self._raw)) or 'none'}")
        self.host_copies.wait()
        per_call = self._raw[site]
        if (step, call) not in per_call:
            have = sorted(per_call)
            raise KeyError(f"{site} has no capture at step {step}, call {call}; captured (step, call): {have}")
        return per_call[(step, call)]

    @property
    def steps(self) -> list[int]:
        return sorted(self._calls_of_step)

    @property
    def timesteps(self) -> list[float]:
        return [float(self._calls[(s, 0)].timestep) for s in self.steps]

    def __repr__(self) -> str:
        """A short summary: sites, their dims and sizes, and the steps (never the tensors)."""
        steps = self.steps
        head = f"Recording of {self.model_name or 'a model'} ({self.family}): {len(self)} site(s)"
        if steps:
            head += f", steps {_ranges(steps)}"
        if self._flushed is not None:
            return head + f", streamed to a store\n" + "\n".join(f"  {name}" for name in self)
        lines = [head]
        for name in self:
            lines.append(f"  {name}: {self._shape_summary(name)}")
        if self.interventions:
            lines.append(f"  interventions: {'; '.join(self.interventions)}")
        return "\n".join(lines)

    __str__ = __repr__

    def _shape_summary(self, name: str) -> str:
        per_call = self._raw[name]
        if not per_call:
            return "(empty)"
        first_step = min(s for s, _ in per_call)
        calls = sorted(c for s, c in per_call if s == first_step)
        rows = sum((self._rows.get((name, first_step, c), self._calls[(first_step, c)].row_branches) for c in calls), [])
        n_branches = len(set(rows))
        tensor = per_call[(first_step, calls[0])]
        if self.transform:
            return f"{tuple(tensor.shape)} per call after {self.transform}"
        dims = [d for d in self.sites[name].dims if d not in self.reduce]
        sizes = {"sample": len(rows) // max(n_branches, 1), "branch": n_branches,
                 "step": len({s for s, _ in per_call}), **dict(zip(dims, tensor.shape[1:]))}
        dtype = str(tensor.dtype).replace("torch.", "")
        return "(" + ", ".join(f"{d}: {n}" for d, n in sizes.items()) + f") {dtype}"

    # -- Mapping: site name -> DataArray ----------------------------------------------------------
    def __getitem__(self, site: str) -> xr.DataArray:
        if self._flushed is not None:
            return self._flushed.open()[site]
        if site not in self._raw:
            raise KeyError(f"{site!r} was not recorded; recorded sites: {', '.join(sorted(self._raw)) or 'none'}")
        return self._to_xarray(site)

    def __iter__(self) -> Iterator[str]:
        return iter(self._flushed.open() if self._flushed is not None else sorted(self._raw, key=self._site_order))

    def __len__(self) -> int:
        return len(list(iter(self)))

    def _site_order(self, name: str) -> int:
        return list(self.sites).index(name) if name in self.sites else len(self.sites)

    @property
    def dataset(self) -> xr.Dataset:
        """All recorded sites as one Dataset, one variable per site.

        Sites whose axes differ in size (latent channels vs. hidden width, a U-Net's resolution
        levels) cannot share a dim name, so every dim that has several sizes in this recording is
        renamed with its size (``channel`` -> ``channel_16``, ``y`` -> ``y_32``) in all variables;
        ``rec[site]`` always keeps the plain names.
        """
        arrays = {name: self[name] for name in self}
        clashing = clashing_dims(array.sizes for array in arrays.values())
        renamed = {name: with_sized_dims(array, clashing) for name, array in arrays.items()}
        return xr.Dataset(renamed, attrs={"model": self.model_name, "family": self.family})

    @property
    def tree(self) -> xr.DataTree:
        """One DataTree node per site, each holding a Dataset with the site's variable."""
        return xr.DataTree.from_dict({name: self[name].to_dataset(name=name) for name in self})

    def save(self, path, *, overwrite: bool = False) -> Path:
        """Write every site to a zarr store (one group per site); read it back with
        ``wb.open_recording(path)``. An existing ``path`` is kept unless ``overwrite=True``: a
        recording is usually the result of minutes of generation, so replacing one is asked for."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists: pass overwrite=True to replace it, or choose another path")
        if path.exists():
            # One store holds one recording: groups of an earlier one must not survive beside it.
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        # zarr format 2: token-string coordinates have no stable zarr v3 data type yet
        self.tree.to_zarr(path, mode="w", consolidated=True, zarr_format=2)
        return path

    # -- assembly ---------------------------------------------------------------------------------
    def step_slice(self, site: str, step: int) -> xr.DataArray:
        """One step of one site as a DataArray (used to stream steps to a store)."""
        return self._to_xarray(site, only_step=step)

    def drop_step(self, step: int) -> None:
        for per_site in self._raw.values():
            for key in [k for k in per_site if k[0] == step]:
                self._held -= _size(per_site.pop(key))

    def _to_xarray(self, name: str, only_step: int | None = None) -> xr.DataArray:
        site = self.sites[name]
        if self.transform:
            raise ValueError(f"{name} was recorded with transform={self.transform}: its captures are the transform's "
                             f"results, not the site's dims {site.dims}; read them with rec.kept(site, step)")
        self.host_copies.wait()
        per_call = self._raw[name]
        steps = sorted({s for s, _ in per_call if only_step is None or s == only_step})
        per_step, branches = [], None
        for step in steps:
            calls = sorted(c for s, c in per_call if s == step)
            tensor = torch.cat([per_call[(step, c)] for c in calls], dim=0)
            rows = sum((self._rows.get((name, step, c), self._calls[(step, c)].row_branches) for c in calls), [])
            by_branch, labels = _split_rows(tensor, rows)
            if branches is not None and labels != branches:
                raise ValueError(f"{name}: guidance branches changed between steps ({branches} vs {labels})")
            branches = labels
            per_step.append(by_branch)
        data = torch.stack(per_step, dim=2)  # (sample, branch, step, *dims)
        dims = ("sample", "branch", "step") + tuple(d for d in site.dims if d not in self.reduce)
        coords = {
            "branch": list(branches),
            "step": steps,
            "timestep": ("step", [float(self._calls[(s, 0)].timestep) for s in steps]),
        }
        if self.prompts is not None and len(self.prompts) == data.shape[0]:
            coords["prompt"] = ("sample", list(self.prompts))
        coords.update(self._axis_coords(site, dims, data.shape))
        attrs = {
            "site": name,
            "meaning": site.meaning,
            "model": self.model_name,
            "family": self.family,
            "stage": stage_index(self.stages, name),
            **parse_site(name).as_attrs(),  # module, kind, block, stream, index: the Site's parts
            "reduce": ",".join(f"{d}:mean" for d in self.reduce) or "none",
            "dtype": str(data.dtype).replace("torch.", ""),
            "interventions": "; ".join(self.interventions) or "none",
        }
        if name in self.queries:  # what the kept query rows are, for readers that need every query (word maps)
            attrs.update(queries=self.queries[name].spec, queries_of=self.queries[name].of)
        return xr.DataArray(_to_numpy(data), dims=dims, coords=coords, attrs=attrs, name=name)

    def _axis_coords(self, site: Site, dims: tuple[str, ...], shape) -> dict:
        coords = {}
        sizes = dict(zip(dims, shape))
        layouts = {"token": site.query_layout, "query": site.query_layout, "key": site.key_layout}
        for axis, layout in layouts.items():
            if axis not in sizes or layout is None or self.geometry is None:
                continue
            kept = self.queries.get(site.name) if axis == "query" else None
            if kept is None:
                coords.update(token_coords(axis, layout, sizes[axis], self.geometry, self.text_tokens, sizes["sample"],
                                           self.text_encoders))
                continue
            # a query subset: label the whole axis, keep the labels of the kept positions
            for coord, (coord_dims, values) in token_coords(axis, layout, kept.of, self.geometry, self.text_tokens,
                                                            sizes["sample"], self.text_encoders).items():
                along = (coord_dims,) if isinstance(coord_dims, str) else coord_dims
                coords[coord] = (coord_dims, np.take(values, kept.positions, axis=along.index(axis)))
            coords[f"{axis}_index"] = (axis, kept.positions)
        for axis in ("y", "x", "head"):
            if axis in sizes:
                coords[axis] = np.arange(sizes[axis])
        return coords


def _split_rows(tensor: torch.Tensor, rows: list[str]) -> tuple[torch.Tensor, tuple[str, ...]]:
    """(batch, ...) with a branch label per row -> (sample, branch, ...)."""
    labels = tuple(dict.fromkeys(rows))
    groups = [tensor[[i for i, r in enumerate(rows) if r == label]] for label in labels]
    if len({g.shape[0] for g in groups}) != 1:
        raise ValueError(f"guidance branches hold different numbers of samples: {[g.shape[0] for g in groups]}")
    return torch.stack(groups, dim=1), labels


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16
        t = t.float()
    return t.numpy()


def _ranges(values: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    parts, start = [], values[0]
    for prev, cur in zip(values, values[1:] + [None]):
        if cur != prev + 1 if cur is not None else True:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = cur
    return ", ".join(parts)


def _size(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()
