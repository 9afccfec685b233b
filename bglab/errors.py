"""bglab's exception types: one base class, each message naming the file (where there is one) and the fix."""

from __future__ import annotations

import reprlib
from pathlib import Path

MAX_MESSAGE_CHARS = 4000
"""Longest error text bglab builds: a value quoted in a message is cut (see :func:`short_repr`), and so is
the whole message, so a hostile input (a billion-laughs YAML) cannot blow up into megabytes of error text."""

_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdict = 6
_REPR.maxstring = 200
_REPR.maxother = 200
_REPR.maxlong = 40


def short_repr(value: object, limit: int = 240) -> str:
    """``repr(value)`` bounded in depth, items and length: safe to quote any user value in a message."""
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a value whose repr fails is still named
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def safe_text(text: object) -> str:
    """``str(text)`` that encodes as UTF-8: bytes of a non-UTF-8 file name (kept by ``os.fsdecode`` as lone
    surrogates) become ``\\xNN`` escapes, so a report, manifest or terminal line never fails to encode."""
    s = str(text)
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        pass
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


class BglabError(Exception):
    """Base of every error bglab raises on purpose; the CLI prints these without a traceback."""

    def __init__(self, message: str, *, path: str | Path | None = None, hint: str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.hint = hint
        text = f"{self.path}: {message}" if self.path is not None else message
        if hint:
            text = f"{text} ({hint})"
        if len(text) > MAX_MESSAGE_CHARS:
            text = text[: MAX_MESSAGE_CHARS - 20] + " ... (message cut)"
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
