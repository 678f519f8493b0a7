"""The skip-connection study: spectra, feature dynamics, FreeU (docs/skips.md)."""
