"""Storage: recordings to and from zarr (``sink``), and the rules of every job that writes a store
(``jobs``: atomic creation, consolidated metadata, chunk records, clean stops; ``claims``: one
writer per chunk). See docs/design.md, "Jobs that write stores"."""

from .sink import StepSink, open_recording

__all__ = ["StepSink", "open_recording"]
