"""The attention studies: maps as segmentation, attention-reuse editing (docs/attention.md)."""
