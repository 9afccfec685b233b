"""Shared fixtures: where the real data lives, and skipping cleanly where it is absent."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BGLAB_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the shared real data (``../shared/data``); skips the test when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED} (set BGLAB_SHARED_DATA)")
    return SHARED


def shared_path(*parts: str) -> Path:
    """A path under the shared data; skips the calling test when it does not exist."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data missing: {p}")
    return p


def csv_rows(path: Path) -> list[dict[str, str]]:
    """Every row of a CSV file (reports, manifests, metrics) as a dict keyed by the header."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def quick_study(config: str, out: Path, runs: int, epoch: int) -> list[float]:
    """Run a shipped config's --quick profile; check every one of its ``runs`` runs finished; return the clean
    held-out webcam accuracies at ``epoch`` (its last)."""
    from bglab.experiment.config import load_experiment_config
    from bglab.experiment.runner import run_experiment

    cfg = load_experiment_config(REPO / "bglab" / "configs" / config, quick=True)
    summary = run_experiment(cfg, out)
    assert summary["complete"] is True and set(summary["runs"].values()) == {"done"} and len(summary["runs"]) == runs
    return [float(r["accuracy"]) for r in csv_rows(out / "metrics.csv") if r["split"] == "test"
            and r["test_set"] == "webcam" and r["distortion"] == "clean" and r["epoch"] == str(epoch)]


def screen_photos(folder: Path, n: int = 3) -> Path:
    """``n`` small photos ``p{i}.png``: a brown square on a green screen (chroma keys it; any backend finds it)."""
    import numpy as np

    from bglab.io.files import write_image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.zeros((48, 64, 3), np.uint8)
        img[:] = (20, 200, 40)
        img[12:36, 16 + i:40 + i] = (150, 90, 60)
        write_image(folder / f"p{i}.png", img)
    return folder


@pytest.fixture()
def one_torch_thread():
    """Tiny models: one torch thread is as fast and does not stall when other jobs share the cores."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
