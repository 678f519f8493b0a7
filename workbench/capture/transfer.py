"""Moving captures and timesteps off the device without making the host wait for it.

A blocking device->host copy (``x.cpu()``, ``x.to("cpu")``), ``.item()``, ``float(x)`` or a Python
``if`` on a device tensor makes the host wait until the device has finished all queued work; in a
recorder that does it per captured site and per call, the GPU idles between kernels. So on CUDA:

* a capture is copied into pinned (page-locked) host memory with ``non_blocking=True``: the copy is
  queued behind the kernels that produce the tensor, and the host runs on (:meth:`HostCopies.copy`);
* the host waits once, where the data is read (``Recording`` reads call :meth:`HostCopies.wait`,
  which waits on an event recorded after the last queued copy);
* the timestep of a call is not read on the host until someone asks (:class:`PendingScalar`), unless
  the step clock needs its value at once (selection by ``timesteps=``, guidance run as separate
  calls, a cache that restarts when the timestep rises).

On the CPU a copy is a plain copy and there is nothing to wait for; the timestep is still set aside
unread, so that a run on the CPU reads on the host exactly what a run on a GPU would
(:class:`HostReadCounter` counts those reads; ``benchmarks/gpu_check.py`` and the tests use it).
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def _on_cuda(x: torch.Tensor) -> bool:
    return x.device.type == "cuda"


class HostCopies:
    """The device->host copies of one recording, and the one wait before they are read."""

    def __init__(self):
        self._last: dict[torch.device, torch.cuda.Event] = {}  # per device: recorded after its latest copy

    def copy(self, x: torch.Tensor, dtype: torch.dtype, *, fresh: bool = False) -> torch.Tensor:
        """A host copy of ``x`` in ``dtype`` that never aliases ``x`` (the model may change ``x`` in place;
        ``fresh``: ``x`` is a new tensor nobody else holds, so on the CPU it is kept as it is). From CUDA
        the copy is queued (pinned memory, ``non_blocking``): read it only after :meth:`wait`."""
        if x.device.type == "cpu":
            if fresh:
                return x.to(dtype=dtype)  # x itself where the dtype matches
            # clone(): the same copy as to(copy=True), without its argument parsing (once per capture)
            return x.clone() if x.dtype == dtype else x.to(dtype=dtype, copy=True)
        if not _on_cuda(x):  # another accelerator (mps, xpu): its ordinary copy
            return x.to("cpu", dtype=dtype, copy=True)
        out = torch.empty(x.shape, dtype=dtype, pin_memory=True)
        out.copy_(x, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(x.device))
        self._last[x.device] = event
        return out

    @property
    def pending(self) -> bool:
        return bool(self._last)

    def wait(self) -> None:
        """Block until every queued copy has landed (a no-op when none is queued)."""
        for event in self._last.values():
            event.synchronize()
        self._last.clear()


class PendingScalar:
    """A tensor scalar (a call's timestep) kept aside without reading it on the host: its value is
    read only when someone asks (``float(p)``). From CUDA it is copied to pinned memory without
    waiting; on the CPU it is a copy of the element (nothing to wait for, but the same path, so that
    a run on the CPU shows what a run on a GPU would read)."""

    __slots__ = ("_held", "_event", "_value")

    def __init__(self, t: torch.Tensor):
        element = t.detach().reshape(-1)[0]
        self._event = None
        if _on_cuda(element):
            self._held = torch.empty((), dtype=element.dtype, pin_memory=True)
            self._held.copy_(element, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record(torch.cuda.current_stream(element.device))
        else:
            self._held = element.clone()  # the caller may change its tensor in place
        self._value: float | None = None

    def __float__(self) -> float:
        if self._value is None:
            if self._event is not None:
                self._event.synchronize()
            self._value = float(self._held)  # a host tensor by now: no device involved
            self._held = self._event = None
        return self._value

    def __repr__(self) -> str:
        return f"PendingScalar({float(self)})"


def host_scalar(value, *, now: bool) -> float | PendingScalar:
    """The first element of ``value`` (a number or a tensor; None -> nan): a float if ``now`` or if
    it is no tensor, else a :class:`PendingScalar` read when asked."""
    if value is None:
        return float("nan")
    if isinstance(value, torch.Tensor) and not now:
        return PendingScalar(value)
    return float(torch.as_tensor(value).reshape(-1)[0])


# aten ops whose result the host must wait for when their input is on a GPU: a scalar read
# (``.item()``, ``float(t)``, ``int(t)``, ``if t:``), a comparison returned as a Python bool, and
# ops whose output shape depends on the data
_HOST_READS = {"aten::_local_scalar_dense", "aten::is_nonzero", "aten::equal", "aten::nonzero",
               "aten::masked_select", "aten::unique_dim", "aten::_unique2", "aten::repeat_interleave"}


class HostReadCounter(TorchDispatchMode):
    """Counts, while active, the operations that make the host wait for a GPU: reads of tensor values
    on the host (:data:`_HOST_READS`) and device->host copies made without ``non_blocking`` (on a
    CPU there are none of those). ``counts`` maps operation name -> number of calls.

    On a CPU nothing waits, but the same operations run: a run counted here on the CPU shows what
    the same run would make a GPU's host wait for (the device copies aside)."""

    def __init__(self):
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        if name in _HOST_READS:
            self.counts[name] += 1
        elif name in ("aten::_to_copy", "aten::copy_") and not kwargs.get("non_blocking", False):
            source = args[1] if name == "aten::copy_" else args[0]
            target = args[0].device if name == "aten::copy_" else kwargs.get("device") or source.device
            if isinstance(source, torch.Tensor) and source.device.type == "cuda" and torch.device(target).type == "cpu":
                self.counts["blocking device->host copy"] += 1
        return func(*args, **kwargs)

    @property
    def total(self) -> int:
        return sum(self.counts.values())
