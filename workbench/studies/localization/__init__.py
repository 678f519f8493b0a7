"""The text-localization study (docs/localization.md)."""
