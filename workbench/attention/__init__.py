"""Attention: exact probabilities beside the fused kernel (``kernels``)."""
