"""Colours as users write them (``#rrggbb``, ``r,g,b``, a name) and the one default background colour.

A light module (no numpy) so the CLI's ``--help`` and the server can share the default without heavy imports.
"""

from __future__ import annotations

from bglab.errors import ConfigError

NAMES: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255), "black": (0, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
    "grey": (128, 128, 128), "gray": (128, 128, 128), "red": (255, 0, 0),
}

DEFAULT_COLOR_NAME = "white"
"""The default background colour of ``mode color`` everywhere: ``bglab remove``, the Python API, the HTTP API and
the web page (whose colour picker starts at the same value; a test keeps them equal)."""
DEFAULT_COLOR: tuple[int, int, int] = NAMES[DEFAULT_COLOR_NAME]


def parse_color(text: str) -> tuple[int, int, int]:
    """Parse ``#rrggbb``, ``r,g,b`` or a few names (white, black, green, blue, grey, red) into an RGB tuple."""
    t = text.strip().lower()
    if t in NAMES:
        return NAMES[t]
    try:
        if t.startswith("#") and len(t) == 7:
            return (int(t[1:3], 16), int(t[3:5], 16), int(t[5:7], 16))
        parts = [int(p) for p in t.split(",")]
        if len(parts) == 3 and all(0 <= p <= 255 for p in parts):
            return (parts[0], parts[1], parts[2])
    except ValueError:
        pass
    raise ConfigError(f"cannot read colour {text!r}", hint="use #rrggbb, r,g,b (0-255) or a name like white")
