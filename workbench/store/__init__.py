"""Storage: recordings to and from zarr (``sink``), and the rules of every job that writes a store
(``jobs``: atomic creation, consolidated metadata, chunk records, clean stops, the store's identity;
``claims``: one writer per chunk; ``items``: stores whose chunks are whole Datasets, for the studies'
jobs). See docs/design.md, "Jobs that write stores"."""

from .sink import StepSink, open_recording

__all__ = ["StepSink", "open_recording"]
