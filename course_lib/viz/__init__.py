"""Plotting helpers. Each returns a matplotlib Figure (one figure per notebook cell)."""
from .plots import line_plot, per_token_plot, roofline_plot

__all__ = ["line_plot", "per_token_plot", "roofline_plot"]
