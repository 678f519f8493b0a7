"""Attention: exact probabilities beside the fused kernel (``kernels``), decomposition into the
four query->key blocks and per-word maps (``maps``), per-block statistics (``stats``)."""

from .maps import block_mass, decompose, rename_axes, resize, to_grid, word_maps, words_of
from .stats import entropy, locality

__all__ = ["block_mass", "decompose", "entropy", "locality", "rename_axes", "resize", "to_grid", "word_maps", "words_of"]
