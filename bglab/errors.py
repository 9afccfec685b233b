"""bglab's exception types: one base class, each message naming the file (where there is one) and the fix."""

from __future__ import annotations

from pathlib import Path


class BglabError(Exception):
    """Base of every error bglab raises on purpose; the CLI prints these without a traceback."""

    def __init__(self, message: str, *, path: str | Path | None = None, hint: str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.hint = hint
        text = f"{self.path}: {message}" if self.path is not None else message
        if hint:
            text = f"{text} ({hint})"
        super().__init__(text)
        self.message = message


class ImageReadError(BglabError):
    """A file could not be read as an image: missing, empty, truncated, corrupt, not an image, or too large."""


class ImageWriteError(BglabError):
    """An image or mask could not be written (bad format for the data, or the destination)."""


class MaskError(BglabError):
    """A mask is unusable with its image: wrong size, wrong number of channels, or unreadable."""


class BoxError(BglabError):
    """A bounding box is broken: NaN, reversed or zero-size corners, or outside the image."""


class DatasetError(BglabError):
    """A data set (folder tree or manifest) is malformed: missing columns, unknown files, empty classes."""


class BackendError(BglabError):
    """A segmenter or locator backend cannot run: unknown name, missing optional extra, or missing model file."""


class ModelIntegrityError(BackendError):
    """A model file does not match its recorded checksum (corrupt or replaced)."""


class ConfigError(BglabError):
    """A configuration file or option is invalid."""
