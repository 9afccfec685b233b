"""The batch engine (bglab.batch.engine): chunks, order, bad items, interrupt + resume, local pool == Ray; and the
commands on it (remove, variants) giving the same outputs with --engine ray as with the local engine."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from bglab.batch.engine import Journal, run_batch
from bglab.cli.app import main
from bglab.errors import BackendError, ConfigError
from bglab.io.files import write_image, write_mask
from tests.conftest import csv_rows, screen_photos


class Square:
    """A worker: squares ints; a negative int is a bad item, recorded as failed (the rest go on)."""

    def process(self, items):
        return [{"key": str(i), "status": "failed", "error": f"{i}: negative"} if i < 0
                else {"key": str(i), "status": "done", "value": i * i} for i in items]


def _collect(items, **kw):
    got: list[tuple[list, list]] = []
    interrupted = run_batch(items, Square, lambda c, recs: got.append((list(c), recs)), **kw)
    return got, interrupted


@pytest.mark.parametrize("workers", [1, 2])
def test_every_item_once_records_match_their_chunk_and_a_bad_item_does_not_stop_the_rest(workers):
    items = [3, -1, 4, 5, -9, 6, 7]
    got, interrupted = _collect(items, workers=workers, chunk=2)
    assert not interrupted
    assert sorted(len(c) for c, _ in got) == [1, 2, 2, 2]
    for chunk, recs in got:
        assert [r["key"] for r in recs] == [str(i) for i in chunk]  # order kept inside a chunk
    flat = sorted((r for _, recs in got for r in recs), key=lambda r: items.index(int(r["key"])))
    assert [r["status"] for r in flat] == ["done", "failed", "done", "done", "failed", "done", "done"]
    assert [r.get("value") for r in flat if r["status"] == "done"] == [9, 16, 25, 36, 49]
    if workers == 1:  # in this process: chunks come back in input order
        assert [i for c, _ in got for i in c] == items


def test_sigterm_stops_the_run_and_the_journal_resumes_it(tmp_path):
    items = list(range(10))
    journal = Journal(tmp_path)
    journal.open()
    seen = []

    def on_chunk(chunk, recs):
        journal.append(recs)
        seen.extend(chunk)
        if len(seen) == 4:
            os.kill(os.getpid(), signal.SIGTERM)  # what `timeout` or docker sends

    assert run_batch(items, Square, on_chunk, chunk=2) is True
    journal.close()
    done = journal.latest()
    assert sorted(done) == ["0", "1", "2", "3"]
    todo = [i for i in items if str(i) not in done]  # the caller's resume: what is not journalled yet
    journal = Journal(tmp_path)  # the next run
    journal.open()
    assert run_batch(todo, Square, lambda c, recs: journal.append(recs), workers=2, chunk=3) is False
    journal.close()
    assert {k: r["value"] for k, r in journal.latest().items()} == {str(i): i * i for i in items}
    assert journal.appended == 6


def test_unknown_engine_and_silent_cluster_are_refused_before_any_write(tmp_path):
    with pytest.raises(ConfigError, match="unknown engine"):
        run_batch([1], Square, lambda c, r: None, engine="dask")
    src = tmp_path / "in"
    write_image(src / "a.png", np.zeros((8, 8, 3), np.uint8))
    out = tmp_path / "out"
    assert main(["remove", str(src), "-o", str(out), "--backend", "chroma", "--engine", "ray",
                 "--engine-option", "address=127.0.0.1:1"]) != 0
    assert not out.exists()
    from bglab.background.variants import generate_variants

    with pytest.raises(BackendError, match="does not answer"):
        generate_variants(src, tmp_path / "v", "only-fg", engine="ray", engine_options={"address": "127.0.0.1:1"})
    assert not (tmp_path / "v").exists()


@pytest.mark.slow
def test_ray_engine_gives_the_local_records():
    cloudpickle = pytest.importorskip("ray.cloudpickle")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers do not import tests/
    items = [2, -3, 5, 8, 13]
    local, _ = _collect(items, chunk=2)
    ray_got, interrupted = _collect(items, chunk=2, workers=2, engine="ray")
    assert not interrupted
    assert sorted(local) == sorted(ray_got)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(".csv")}


@pytest.mark.slow
def test_remove_and_variants_on_ray_write_the_local_outputs(tmp_path):
    pytest.importorskip("ray")
    src = screen_photos(tmp_path / "in", 4)
    for engine in ("local", "ray"):
        assert main(["remove", str(src), "-o", str(tmp_path / f"r-{engine}"), "--backend", "chroma", "--mode",
                     "color", "--engine", engine, "-w", "2"]) == 0
    assert _tree(tmp_path / "r-local") == _tree(tmp_path / "r-ray") and len(_tree(tmp_path / "r-ray")) == 4
    rows = csv_rows(tmp_path / "r-ray" / "remove_report.csv")
    assert [Path(r["input"]).name for r in rows] == [f"p{i}.png" for i in range(4)]  # input order

    pets = tmp_path / "pets"
    for c in ("ant", "bee"):
        for i in range(3):
            img = np.full((32, 40, 3), 30 * i, np.uint8)
            mask = np.zeros((32, 40), np.uint8)
            mask[8:24, 10 + i:30] = 255
            img[mask > 0] = (200, 100 + 20 * i, 50)
            write_image(pets / c / "images" / f"{c}_{i}.png", img)
            write_mask(pets / c / "masks" / f"{c}_{i}.png", mask)
    for engine in ("local", "ray"):
        assert main(["variants", str(pets), str(tmp_path / f"v-{engine}"), "--kinds", "only-fg,mixed-rand,bg-color",
                     "--engine", engine, "-w", "2"]) == 0
    assert _tree(tmp_path / "v-local") == _tree(tmp_path / "v-ray") and len(_tree(tmp_path / "v-ray")) == 36
    assert (tmp_path / "v-local/manifest.csv").read_bytes() == (tmp_path / "v-ray/manifest.csv").read_bytes()
