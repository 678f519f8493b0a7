"""The reference models' judged quality: prompt families, scores, weight selection (docs/reference_models.md)."""
