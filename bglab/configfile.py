"""Read a configuration file (YAML, TOML or JSON) into a mapping, with errors that name the file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bglab.errors import ConfigError


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
