"""The run directory's metric tables (``metrics/<run>.csv``, ``metrics.csv``): columns, writer and reader.

Kept apart from the runner so that the report reads them without importing the trainer (no import cycle).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

METRIC_COLUMNS = ("protocol", "arm", "variant", "seed", "epoch", "split", "test_set", "distortion", "accuracy",
                  "loss", "n", "session", "test_arm")


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write metric rows as CSV (columns in :data:`METRIC_COLUMNS`, missing cells empty), atomically."""
    from bglab.io.files import atomic_write_text

    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(METRIC_COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in METRIC_COLUMNS})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buf.getvalue())


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Metric rows of a CSV written by :func:`write_metrics`, numbers typed; ``[]`` when the file is absent."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["seed"], r["epoch"], r["n"], r["session"] = int(r["seed"]), int(r["epoch"]), int(r["n"]), int(r["session"])
        r["accuracy"], r["loss"] = float(r["accuracy"]), float(r["loss"])
        r["test_arm"] = r.get("test_arm") or r["arm"]  # files written before matrix studies lack the column
    return rows
