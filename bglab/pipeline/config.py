"""Reading a pipeline config: the file, its version and its list of steps (names checked, settings not yet)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bglab.errors import ConfigError
from bglab.errors import short_repr as _r
from bglab.io.configfile import read_config_file

CONFIG_VERSION = 1
STEP_NAMES: tuple[str, ...] = ("locate", "segment", "background", "crop", "pose", "resize", "grey", "distort")


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a pipeline config file: YAML (.yaml/.yml), TOML (.toml) or JSON (.json)."""
    return read_config_file(path, what="config file", shape_hint="a pipeline config has a 'steps' list")


def step_entries(steps: Any) -> list[tuple[str, dict[str, Any], str]]:
    if steps is None:
        return []
    if not isinstance(steps, Sequence) or isinstance(steps, str):
        raise ConfigError(f"steps: expected a list of steps, got {type(steps).__name__}",
                          hint="e.g. steps: [{resize: {size: 64}}, grey]")
    out = []
    for i, item in enumerate(steps):
        where = f"steps[{i}]"
        if isinstance(item, str):
            name, cfg = item, {}
        elif isinstance(item, Mapping) and "step" in item:
            name, cfg = item["step"], {k: v for k, v in item.items() if k != "step"}
        elif isinstance(item, Mapping) and len(item) == 1:
            ((name, cfg),) = item.items()
            cfg = {} if cfg is None else cfg
            if not isinstance(cfg, Mapping):
                raise ConfigError(f"{where}.{name}: expected a mapping of settings, got {_r(cfg)}")
        else:
            raise ConfigError(f"{where}: cannot read step {_r(item)}",
                              hint="write a step as a name ('grey'), {name: {settings}} or {step: name, ...}")
        name = str(name).strip().lower()
        if name in ("gray", "greyscale", "grayscale"):
            name = "grey"
        if name not in STEP_NAMES:
            raise ConfigError(f"{where}: unknown step {_r(name)}", hint=f"choose one of: {', '.join(STEP_NAMES)}")
        out.append((name, dict(cfg), f"{where}.{name}"))
    return out


# ------------------------------------------------------------------------------------------- pipeline
