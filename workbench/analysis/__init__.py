"""Pure analyses over recordings: segmentation scores, editing, probes."""
