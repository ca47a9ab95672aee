"""Building blocks of a decoder layer, each a small module with the math in its docstring."""
