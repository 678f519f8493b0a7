"""The SVD latent study (docs/svd.md)."""
