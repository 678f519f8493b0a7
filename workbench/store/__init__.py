"""Storage: recordings and features to and from zarr."""

from .sink import StepSink, open_recording

__all__ = ["StepSink", "open_recording"]
