"""The ``bglab`` command end to end: help for every command, ``remove`` on real photos and bad files."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image

from bglab.cli.app import app, main
from tests.conftest import shared_path


def _all_command_paths(t: typer.Typer, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for cmd in t.registered_commands:
        out.append(prefix + (cmd.name or cmd.callback.__name__.replace("_", "-"),))
    for grp in t.registered_groups:
        out.append(prefix + (grp.name,))
        out.extend(_all_command_paths(grp.typer_instance, prefix + (grp.name,)))
    return out


def test_root_help(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for name in ("remove", "demo", "backends"):
        assert name in text


@pytest.mark.parametrize("path", _all_command_paths(app), ids=lambda p: " ".join(p))
def test_every_command_help_renders(path, capsys):
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage" in out and "--help" in out


def _webcam_folder(tmp_path: Path, n: int = 3) -> Path:
    src = shared_path("rps", "webcam", "rock")
    folder = tmp_path / "in"
    folder.mkdir()
    for f in sorted(src.glob("*.png"))[:n]:
        shutil.copy(f, folder / f.name)
    return folder


def test_remove_batch_with_a_corrupt_file(tmp_path, capsys):
    folder = _webcam_folder(tmp_path)
    good = sorted(folder.glob("*.png"))
    (folder / "broken.png").write_bytes(good[0].read_bytes()[:300])  # truncated PNG
    (folder / "notes.jpg").write_text("not an image")
    out = tmp_path / "out"
    code = main(["remove", str(folder), "-o", str(out), "--backend", "chroma"])
    assert code == 1, "a failed file must make the exit code non-zero"
    for f in good:
        res = out / f.name
        assert res.is_file(), f"good output missing: {res}"
        im = Image.open(res)
        assert im.mode == "RGBA" and im.size == (300, 200)
        alpha = np.asarray(im)[..., 3]
        assert alpha[:, :10].mean() < 20, "left edge (green screen) should be transparent"
        assert 0.03 < (alpha > 127).mean() < 0.8
    assert not (out / "broken.png").exists() and not (out / "notes.png").exists()
    assert not list(out.rglob("*.tmp*")), "no temporary files may be left behind"
    rows = list(csv.DictReader((out / "remove_report.csv").open()))
    status = {Path(r["input"]).name: r for r in rows}
    assert status["broken.png"]["status"] == "failed" and "broken.png" in status["broken.png"]["error"]
    assert status["notes.jpg"]["status"] == "failed"
    assert sum(r["status"] == "done" for r in rows) == len(good)
    err = capsys.readouterr().err
    assert "2 of 5 file(s) failed" in err

    # a second run resumes: finished outputs are skipped, failures retried (and fail again)
    code2 = main(["remove", str(folder), "-o", str(out), "--backend", "chroma"])
    assert code2 == 1
    rows2 = list(csv.DictReader((out / "remove_report.csv").open()))
    assert sum(r["status"] == "skipped" for r in rows2) == len(good)


@pytest.mark.parametrize(
    ("mode", "extra", "expect_mode"),
    [("cutout", [], "RGBA"), ("mask", [], "L"), ("color", ["--color", "#0000ff"], "RGB"),
     ("blur", ["--blur", "5"], "RGB"), ("crop", ["--margin", "0.05"], "RGB")],
)
def test_remove_modes(tmp_path, mode, extra, expect_mode):
    folder = _webcam_folder(tmp_path, n=1)
    out = tmp_path / "out"
    assert main(["remove", str(folder), "-o", str(out), "--backend", "chroma", "--mode", mode, *extra]) == 0
    (res,) = [p for p in out.iterdir() if p.suffix == ".png"]
    im = Image.open(res)
    assert im.mode == expect_mode
    arr = np.asarray(im)
    if mode == "crop":
        assert im.size[0] < 300 or im.size[1] < 200, "crop should shrink the green-screen photo"
    elif mode == "color":
        assert tuple(arr[100, 2]) == (0, 0, 255), "background at the left edge becomes the chosen colour"
    elif mode == "mask":
        assert set(np.unique(arr)) <= set(range(256)) and arr[:, :5].max() < 128


def test_remove_swap_needs_background(tmp_path, capsys):
    folder = _webcam_folder(tmp_path, n=1)
    code = main(["remove", str(folder), "-o", str(tmp_path / "o"), "--backend", "chroma", "--mode", "swap"])
    assert code == 2
    assert "--background" in capsys.readouterr().err


def test_remove_swap(tmp_path):
    folder = _webcam_folder(tmp_path, n=1)
    bg = sorted(shared_path("backgrounds").glob("*.jpg"))[0]
    out = tmp_path / "o"
    assert main(["remove", str(folder), "-o", str(out), "--backend", "chroma", "--mode", "swap",
                 "--background", str(bg)]) == 0
    (res,) = [p for p in out.iterdir() if p.suffix == ".png"]
    arr = np.asarray(Image.open(res))
    left = arr[:, :10].reshape(-1, 3).astype(int)
    assert not (left[:, 1] > left[:, 0] + 60).mean() > 0.5, "green screen should be replaced"


def test_unknown_backend_is_a_clear_error(tmp_path, capsys):
    folder = _webcam_folder(tmp_path, n=1)
    code = main(["remove", str(folder), "-o", str(tmp_path / "o"), "--backend", "nope"])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown backend 'nope'" in err and "Traceback" not in err


def test_usage_error_is_reported_not_crashed(capsys):
    assert main(["remove"]) == 2  # missing arguments
    err = capsys.readouterr().err
    assert "Usage" in err and "Traceback" not in err
    assert main(["no-such-command"]) == 2
