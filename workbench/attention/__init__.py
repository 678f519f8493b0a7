"""Attention: exact probabilities beside the fused kernel (``kernels``), decomposition into the
four query->key blocks and per-word maps (``maps``)."""

from .maps import block_mass, decompose, to_grid, word_maps, words_of

__all__ = ["block_mass", "decompose", "to_grid", "word_maps", "words_of"]
