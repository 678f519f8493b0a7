"""Streaming: with ``store=`` each finished step goes to a zarr store and leaves memory.

The recorder calls :func:`flush_step` when a step ends (the next step's first call, or the end of
the run); reading the recording afterwards opens the store.
"""

from __future__ import annotations

from .recording import Recording


def flush_step(recording: Recording, store, step: int) -> None:
    """Write every site captured at ``step`` to ``store`` and drop it from ``recording``."""
    from ..store.sink import StepSink

    if recording._flushed is None:
        recording._flushed = StepSink(store)
    sink = recording._flushed
    for name in recording.captured_sites():
        if recording.has_step(name, step):
            sink.write(name, recording.step_slice(name, step))
    sink.end_step()  # consolidated metadata: the store opens cleanly at any time, also after an interruption
    recording.drop_step(step)
