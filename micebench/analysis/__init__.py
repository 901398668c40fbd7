"""Analyses of model internals (segment-to-segment attention)."""
