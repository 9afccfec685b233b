"""Changing the background: one image (``remove``) and the data-set jobs ``variants`` and ``correlated``."""
