"""Figures drawn from the frames of `analysis.read` and `analysis.stats` (matplotlib, no pyplot state)."""
