"""Config fields declared once: a :class:`Field` says a key's kind, default, range, choices and aliases, and a
:class:`Schema` of them parses a mapping (every error a ConfigError naming the key and the fix, unknown keys
refused with the allowed ones) and writes the values back (``to_config``, hence the fingerprint).

One rule differs between configs and is declared, not re-implemented: ``text=True`` (pipeline configs, whose
values also come from ``--set key=value``) also reads ``"0.5"`` and ``"yes"`` (:mod:`bglab.io.configfile`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bglab.errors import ConfigError
from bglab.errors import short_repr as _r
from bglab.io.colors import parse_color
from bglab.io.configfile import check_bool, check_number, config_error

_MISSING = object()


@dataclass(frozen=True)
class Field:
    """One key. ``kind``: float | int | bool | choice | colour | str | any (``parse(where, value)`` reads it);
    ``default`` may be a function of the values read before it; ``optional``: None is kept as None;
    ``write``: whether ``to_config`` writes the key (a function of the values; default always); ``dump`` turns
    the value into what is written; ``what``: a choice refused as ``unknown <what> 'x'`` with ``use a or b``."""

    name: str
    kind: str = "any"
    default: Any = None
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    doc: str = ""
    optional: bool = False
    required: str | None = None  # the hint when the key must be given
    parse: Callable[[str, Any], Any] | None = None
    write: Callable[[Mapping[str, Any]], bool] | None = None
    dump: Callable[[Any], Any] | None = None
    what: str = ""

    def read(self, where: str, value: Any, *, text: bool) -> Any:
        key = f"{where}.{self.name}" if where else self.name
        if self.optional and value is None:
            return None
        if self.parse is not None:
            return self.parse(where, value)
        if self.kind in ("float", "int"):
            return check_number(key, value, lo=self.lo, hi=self.hi, integer=self.kind == "int", text=text)
        if self.kind == "bool":
            return check_bool(key, value, text=text)
        if self.kind == "choice":
            return self._choice(key, value)
        if self.kind == "colour":
            return colour(key, value)
        if self.kind == "str":
            return str(value)
        return value

    def _choice(self, key: str, value: Any) -> str:
        v = str(value).strip().lower() if not self.what else str(value).lower()
        if v == "color" and not self.what:  # American spelling accepted everywhere
            v = "colour"
        if v in self.choices:
            return v
        if self.what:
            raise config_error(key, f"unknown {self.what} {_r(v)}", f"use {' or '.join(self.choices)}")
        raise config_error(key, f"{_r(value)} is not allowed", f"choose one of: {', '.join(self.choices)}")


class Schema:
    """An ordered set of fields: :meth:`parse` a mapping into ``{name: value}``, :meth:`to_config` it back.

    ``unknown_at_key``: an unknown key is reported as ``where.key: unknown key`` (experiment configs) rather
    than ``where: unknown key 'key'`` (pipeline configs)."""

    def __init__(self, *fields: Field, text: bool = False, unknown_at_key: bool = False, make: Any = dict) -> None:
        self.fields = fields
        self.text = text
        self.unknown_at_key = unknown_at_key
        self.make = make
        self.keys: tuple[str, ...] = tuple(k for f in fields for k in (f.name, *f.aliases))

    @classmethod
    def of(cls, dc: type, **kw: Any) -> Schema:
        """The schema of a dataclass whose fields are made by :func:`declare` (:meth:`build` makes one)."""
        kinds = {"float": "float", "int": "int", "bool": "bool", "str": "str"}
        fields = [dataclasses.replace(d, name=f.name, kind=d.kind or kinds.get(str(f.type), "any"))
                  for f in dataclasses.fields(dc) if (d := f.metadata.get("field")) is not None]
        return cls(*fields, make=dc, **kw)

    def build(self, where: str, cfg: Mapping[str, Any]) -> Any:
        """``make(**parse(where, cfg))``: the dataclass of :meth:`of`."""
        return self.make(**self.parse(where, cfg))

    def check_keys(self, where: str, cfg: Mapping[str, Any]) -> None:
        for k in cfg:
            if k not in self.keys:
                hint = f"allowed keys: {', '.join(self.keys)}"
                if self.unknown_at_key:
                    raise config_error(f"{where}.{k}" if where else str(k), "unknown key", hint)
                raise config_error(where, f"unknown key {_r(k)}", hint)

    def parse(self, where: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
        self.check_keys(where, cfg)
        out: dict[str, Any] = {}
        for f in self.fields:
            value = next((cfg[k] for k in (*f.aliases, f.name) if k in cfg), _MISSING)  # an alias wins
            if value is _MISSING:
                if f.required is not None:
                    raise config_error(where, f"missing key {_r(f.name)}", f.required)
                value = f.default(out) if callable(f.default) else f.default
            out[f.name] = f.read(where, value, text=self.text)
        return out

    def to_config(self, values: Any) -> dict[str, Any]:
        """The written config of ``values`` (a mapping or an object with the fields as attributes)."""
        vals = values if isinstance(values, Mapping) else {f.name: getattr(values, f.name) for f in self.fields}
        return {f.name: (f.dump(vals[f.name]) if f.dump else vals[f.name])
                for f in self.fields if f.write is None or f.write(vals)}


def declare(default: Any = None, kind: str = "", *, factory: Callable[[], Any] | None = None, **kw: Any) -> Any:
    """A dataclass field that is also a config :class:`Field` (``kind`` from the annotation when not given)."""
    meta = {"field": Field("", kind, default, **kw)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def colour(key: str, value: Any) -> tuple[int, int, int]:
    """``[r, g, b]`` (0-255), one grey level, ``#rrggbb`` or a colour name; a ConfigError naming ``key``."""
    if isinstance(value, str):
        try:
            return parse_color(value)
        except ConfigError as exc:
            raise config_error(key, exc.message, exc.hint) from None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255:
        return (value, value, value)
    if isinstance(value, Sequence) and len(value) == 3 and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value):
        return (int(value[0]), int(value[1]), int(value[2]))
    raise config_error(key, f"cannot read colour {_r(value)}",
                       "use [r, g, b] (0-255), one grey level, #rrggbb or a name like black")
