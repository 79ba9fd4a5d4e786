"""Readers of the paper's training sources, one module per family (see `registry.KINDS` for the list)."""
