"""Execution engines for ``bglab preprocess`` beyond the built-in local process pool (``bglab.preprocess``)."""
