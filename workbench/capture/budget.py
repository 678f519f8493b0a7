"""The memory budget of a recording: refuse a capture that will not fit, early."""

from __future__ import annotations

import os


class CaptureTooLarge(MemoryError):
    """A recording would need more memory than allowed."""


def default_max_bytes() -> int:
    """Half of physical memory, at most 8 GiB, unless WORKBENCH_MAX_CAPTURE_BYTES says otherwise."""
    if "WORKBENCH_MAX_CAPTURE_BYTES" in os.environ:
        return int(float(os.environ["WORKBENCH_MAX_CAPTURE_BYTES"]))
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        physical = 16 << 30
    return min(8 << 30, physical // 2)


def check_budget(held_bytes: int, n_steps: int | None, max_bytes: int) -> None:
    """``held_bytes`` is one step's capture (measured with each tensor's true element size); with
    ``n_steps`` the whole recording is projected from it."""
    projected = held_bytes * n_steps if n_steps else held_bytes
    if projected > max_bytes:
        raise CaptureTooLarge(
            f"this recording needs about {projected / 2**20:.1f} MiB (measured on its first step), over the "
            f"limit of {max_bytes / 2**20:.1f} MiB. Record fewer sites or steps, reduce at capture time "
            "(reduce=('head',), dtype=torch.float16, probability blocks instead of whole matrices), stream to "
            "a store (store='run.zarr'), or raise max_bytes= / WORKBENCH_MAX_CAPTURE_BYTES."
        )
