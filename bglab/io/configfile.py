"""Configuration files: read one (YAML, TOML or JSON) into a mapping, and check its fields.

The field checks (:func:`check_number`, :func:`check_bool`) behind every declared field
(:mod:`bglab.io.schema`), so a number or a true/false is read by one set of rules and refused with one set of
messages, each naming the key. The one difference is declared, not re-implemented: ``text=True`` (pipeline
configs, whose values also come from ``--set key=value``) also reads ``"0.5"`` and ``"yes"``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bglab.errors import ConfigError
from bglab.errors import short_repr as _r

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def config_error(key: str, message: str, hint: str | None = None) -> ConfigError:
    """The error for one config field: ``"<key>: <message>"`` and the fix."""
    return ConfigError(f"{key}: {message}", hint=hint)


def check_number(key: str, value: Any, *, lo: float | None = None, hi: float | None = None, integer: bool = False,
                 text: bool = False) -> Any:
    """``value`` as an int (``integer``) or float, finite and in ``[lo, hi]``; a ConfigError naming ``key``.

    true / false are never numbers; a string is read only with ``text=True``; an integer may be written as a
    whole float (``3.0``) but not as ``3.5``.
    """
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not (isinstance(value, numbers.Real) or (text and isinstance(value, str))):
        raise config_error(key, f"expected {kind}, got {_r(value)}")
    try:
        if integer and not isinstance(value, numbers.Integral | str) and not float(value).is_integer():
            raise ValueError(value)  # 3.5, inf, nan
        x: Any = int(value) if integer else float(value)
    except ValueError:
        raise config_error(key, f"expected {kind}, got {_r(value)}") from None
    except OverflowError:  # an int too large for a float
        x = math.inf
    if isinstance(x, float) and not math.isfinite(x):
        raise config_error(key, f"{_r(value)} is not a finite number", "use a finite value")
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        span = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        raise config_error(key, f"{_r(value)} is out of range", f"use a value in {span}")
    return x


def check_bool(key: str, value: Any, *, text: bool = False) -> bool:
    """``value`` as a bool; with ``text=True`` also true / yes / on / 1 and false / no / off / 0 written as text
    (or 1 / 0 as read from ``-O key=1``)."""
    if isinstance(value, bool):
        return value
    if text and isinstance(value, int) and value in (0, 1):
        return bool(value)
    if text and isinstance(value, str) and value.strip().lower() in (*_TRUE, *_FALSE):
        return value.strip().lower() in _TRUE
    raise config_error(key, f"expected true or false, got {_r(value)}")


def read_config_file(path: str | Path, *, what: str = "config file", shape_hint: str = "") -> dict[str, Any]:
    """Parse ``path`` by suffix (.toml, .json, else YAML); ``what`` names the file in errors.

    Raises :class:`ConfigError` when the file is missing, unreadable, unparsable or not a mapping.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} not found", path=p, hint="check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what}: {exc}", path=p) from None
    suffix = p.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data: Any = tomllib.loads(text)
        elif suffix == ".json":
            import json

            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - yaml / toml / json parse errors
        raise ConfigError(f"cannot parse {what}: {exc}", path=p,
                          hint="YAML (.yaml), TOML (.toml) or JSON (.json); bglab init writes a starting "
                               "config") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{what} must be a mapping", path=p, hint=shape_hint or None)
    return dict(data)
