"""Checks of one pipeline config value each, every error a ConfigError naming the key (``steps[0].crop.margin``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bglab.errors import BackendError, ConfigError
from bglab.errors import short_repr as _r
from bglab.io.colors import parse_color
from bglab.io.configfile import check_bool, check_number, config_error


def check_keys(where: str, cfg: Mapping[str, Any], allowed: Sequence[str]) -> None:
    for k in cfg:
        if k not in allowed:
            raise config_error(where, f"unknown key {_r(k)}", f"allowed keys: {', '.join(allowed)}")


def choice(where: str, key: str, value: Any, allowed: Sequence[str]) -> str:
    v = str(value).strip().lower()
    if v == "color":  # American spelling accepted everywhere
        v = "colour"
    if v not in allowed:
        raise config_error(f"{where}.{key}", f"{_r(value)} is not allowed", f"choose one of: {', '.join(allowed)}")
    return v


def number(where: str, key: str, value: Any, *, lo: float | None = None, hi: float | None = None,
            integer: bool = False) -> Any:
    return check_number(f"{where}.{key}", value, lo=lo, hi=hi, integer=integer, text=True)


def boolean(where: str, key: str, value: Any) -> bool:
    return check_bool(f"{where}.{key}", value, text=True)


def colour(where: str, key: str, value: Any) -> tuple[int, int, int]:
    if isinstance(value, str):
        try:
            return parse_color(value)
        except ConfigError as exc:
            raise config_error(f"{where}.{key}", exc.message, exc.hint) from None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255:
        return (value, value, value)
    if isinstance(value, Sequence) and len(value) == 3 and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value):
        return (int(value[0]), int(value[1]), int(value[2]))
    raise config_error(f"{where}.{key}", f"cannot read colour {_r(value)}",
                "use [r, g, b] (0-255), one grey level, #rrggbb or a name like black")


def backend_options(where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise config_error(f"{where}.options", f"expected a mapping of backend options, got {_r(value)}")
    return {str(k).replace("-", "_"): v for k, v in value.items()}


def backend_name(where: str, value: Any, kind: str) -> str:
    """A registered backend of ``kind`` (:func:`bglab.foreground.resolve`), the error naming the config key."""
    from bglab.foreground import backends, resolve

    name = str(value).strip()
    try:
        return resolve(name, kind).name  # type: ignore[arg-type]
    except BackendError:
        names = [b.name for b in backends(kind)]  # type: ignore[arg-type]
        raise config_error(f"{where}.backend", f"unknown {kind} {_r(name)}",
                           f"choose one of: {', '.join(names)}") from None


# --------------------------------------------------------------------------------------- sample state
