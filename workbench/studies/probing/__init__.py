"""The probing study: linear probes over extracted feature stores (docs/features.md)."""
