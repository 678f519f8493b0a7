"""Attention: exact probabilities beside the fused kernel (``kernels``); decomposition into the
four query->key blocks, per-word maps and DAAM's intersection over area between words
(``maps``); their export to image files (``export``); per-block statistics and the row-sum check
(``stats``)."""

from .export import export
from .maps import block_mass, decompose, intersection_over_area, rename_axes, resize, to_grid, word_maps, words_of
from .stats import entropy, locality, validate

__all__ = ["block_mass", "decompose", "entropy", "export", "intersection_over_area", "locality", "rename_axes", "resize",
           "to_grid", "validate", "word_maps", "words_of"]
