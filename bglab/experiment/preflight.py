"""Every check of an experiment config that needs no training, run before the run directory is created.

:func:`preflight` checks that every source the studies use exists, that every used arm resolves (its
``from:`` folder exists, its pipeline parses) and that every backend its steps name is available here, and
raises the first problem as a :class:`bglab.errors.BglabError` naming the config key and the fix. So a
typo in a path or a missing extra fails in a second, with nothing written, instead of after the run
directory (and maybe hours of preprocessing) exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bglab.errors import BackendError, ConfigError, DatasetError

__all__ = ["preflight"]


def _backends(pipeline: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(where, backend name) of every step of a raw pipeline config that names a backend."""
    out: list[tuple[str, str]] = []
    for i, item in enumerate(pipeline.get("steps") or []):
        if not isinstance(item, Mapping) or len(item) != 1:
            continue
        ((name, cfg),) = item.items()
        if not isinstance(cfg, Mapping):
            continue
        if cfg.get("backend"):
            out.append((f"steps[{i}].{name}", str(cfg["backend"])))
        for j, fb in enumerate(cfg.get("fallback") or []):
            b = fb.get("backend") if isinstance(fb, Mapping) else fb
            if b:
                out.append((f"steps[{i}].{name}.fallback[{j}]", str(b)))
    return out


def preflight(cfg: Any) -> None:
    """Check sources, arms and backends of ``cfg`` (an :class:`ExperimentConfig`); raise on the first problem."""
    from bglab.foreground import is_available
    from bglab.pipeline import Pipeline

    for name in cfg.used_sources():
        src = cfg.sources[name]
        if not src.path.exists():
            raise DatasetError(f"source {name!r} not found", path=src.path,
                               hint=f"fix sources.{name}.path (relative paths are relative to the config file)")
    for arm_name in cfg.used_arms():
        arm = cfg.arms[arm_name]
        if arm.source_dir is not None and not arm.source_dir.is_dir():
            raise DatasetError(f"arm {arm_name!r}: the from: folder does not exist", path=arm.source_dir,
                               hint=f"make it (bglab variants SRC DST) or fix arms.{arm_name}.from "
                                    "(relative paths are relative to the config file)")
        try:
            Pipeline.from_config(arm.pipeline)
        except ConfigError as exc:
            raise ConfigError(f"arms.{arm_name}: {exc.message}", path=exc.path, hint=exc.hint) from None
        for where, backend in _backends(arm.pipeline):
            try:
                ok, why = is_available(backend)
            except BackendError as exc:
                raise ConfigError(f"arms.{arm_name}.{where}: {exc.message}", hint=exc.hint) from None
            if not ok:
                raise BackendError(f"arms.{arm_name}.{where}: backend {backend!r} is not available here: {why}",
                                   hint="install its extra (bglab backends lists them), or drop the arm")
