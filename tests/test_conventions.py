"""CLI conventions (issue 21): --version, help text, -w = processes / --threads = threads, colour spellings,
one default colour, argument checks before any work, install hints that keep their brackets."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import typer.main

import bglab
from bglab.background.remove import RemoveOptions
from bglab.cli.app import app, main
from bglab.io.colors import DEFAULT_COLOR, DEFAULT_COLOR_NAME, parse_color
from bglab.io.files import read_image
from tests.conftest import csv_rows, screen_photos

COMMANDS = typer.main.get_command(app).commands  # name -> click command (groups: name -> group)
LEAVES = sorted([(n,) for n, c in COMMANDS.items() if not hasattr(c, "commands")]
                + [(n, s) for n, c in COMMANDS.items() for s in getattr(c, "commands", {})])


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"bglab {bglab.__version__}"


@pytest.mark.parametrize("path", LEAVES, ids=" ".join)
def test_help_has_an_example_and_no_python_types(path, capsys):
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"Example: bglab {' '.join(path)}" in out
    assert not re.search(r"<(bool|str|int|float|path|list\[[^\]]*\])[^>]*>", out), out
    assert "..." + "}" not in out and "...}" not in out  # no {SRC...}... usage


def test_workers_mean_processes_and_threads_threads():
    """Every visible --workers has the short form -w; key and correlate (threads) say --threads."""
    for name, cmd in COMMANDS.items():
        for p in cmd.params:
            if "--workers" in p.opts and not p.hidden:
                assert "-w" in p.opts, f"{name}: --workers without -w"
    for name in ("key", "correlate", "remove", "preprocess"):
        assert any("--threads" in p.opts for p in COMMANDS[name].params), name


def test_colour_spellings():
    assert RemoveOptions(mode="colour").mode == "color"
    assert RemoveOptions(mode="Color").mode == "color"
    names = {o for p in COMMANDS["remove"].params for o in p.opts}
    assert {"--color", "--colour"} <= names
    from bglab.pipeline import Pipeline

    for spelling in ("color", "colour"):
        pipe = Pipeline.from_config({"steps": [{"segment": {"backend": "chroma"}},
                                               {"background": {"mode": spelling, "colour": "red"}}]})
        assert pipe.to_config()["steps"][1]["background"]["mode"] == "colour"


def test_variant_kind_bg_colour():
    from bglab.background.variants import parse_kinds

    assert parse_kinds("bg-colour") == parse_kinds("bg-color")


def test_one_default_colour():
    """The CLI, the Python API, the HTTP API and the page start from the same colour."""
    assert parse_color(DEFAULT_COLOR_NAME) == DEFAULT_COLOR == RemoveOptions().color
    remove_opts = {p.name: p for p in COMMANDS["remove"].params}
    assert parse_color(remove_opts["color"].default) == DEFAULT_COLOR
    html = (Path(bglab.__file__).parent / "serve" / "web" / "index.html").read_text()
    page = re.search(r'id="color"[^>]*value="(#[0-9a-fA-F]{6})"', html).group(1)
    assert parse_color(page) == DEFAULT_COLOR
    pytest.importorskip("fastapi")
    from bglab.serve.app import create_app

    schema = create_app().openapi()["components"]["schemas"]
    form = next(v for k, v in schema.items() if "remove" in k.lower())
    assert parse_color(form["properties"]["color"]["default"]) == DEFAULT_COLOR
    assert "colour" in form["properties"]["mode"]["enum"]


def test_remove_colour_mode_and_flag(tmp_path):
    src = screen_photos(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert main(["remove", str(src), "-o", str(out), "--backend", "chroma", "--mode", "colour",
                 "--colour", "red"]) == 0
    img = read_image(out / "p0.png")
    assert tuple(img[2, 2]) == (255, 0, 0)  # the green screen became red


def test_swap_without_background_fails_before_any_work(tmp_path, capsys):
    src = screen_photos(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert main(["remove", str(src), "-o", str(out), "--mode", "swap"]) == 2
    err = capsys.readouterr().err
    assert "--background" in err
    assert "remove" not in err.split("error:")[0]  # no progress bar line before the error
    assert not out.exists()  # nothing created


def test_remove_workers_processes_same_outputs(tmp_path):
    src = screen_photos(tmp_path / "in", 4)
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["remove", str(src), "-o", str(one), "--backend", "chroma"]) == 0
    assert main(["remove", str(src), "-o", str(two), "--backend", "chroma", "--workers", "2"]) == 0
    for f in sorted(src.glob("*.png")):
        assert np.array_equal(read_image(one / f.name), read_image(two / f.name))
    rows = csv_rows(two / "remove_report.csv")
    assert [Path(r["input"]).name for r in rows] == [f"p{i}.png" for i in range(4)]  # input order
    assert {r["status"] for r in rows} == {"done"}


def test_remove_files_workers_needs_a_backend_name(tmp_path):
    from bglab.background.remove import collect_inputs, remove_files
    from bglab.errors import ConfigError
    from bglab.foreground import create

    src = screen_photos(tmp_path / "in", 2)
    with pytest.raises(ConfigError, match="by name"):
        remove_files(collect_inputs([src]), tmp_path / "o", create("chroma"), RemoveOptions(), workers=2)


def test_key_workers_is_a_deprecated_spelling_of_threads(tmp_path, capsys):
    src = screen_photos(tmp_path / "in", 2)
    assert main(["key", str(src), str(tmp_path / "m"), "--workers", "2", "--no-sheet",
                 "--entry-side", "none"]) == 0
    assert "--workers (key) is deprecated; use --threads" in capsys.readouterr().err
    assert len(list((tmp_path / "m").glob("*.png"))) == 2


def test_install_hint_keeps_its_brackets(tmp_path, capsys):
    """Without rembg the hint says pip install 'bglab[rembg]' (Rich markup must not eat [rembg])."""
    from bglab.foreground import is_available

    if is_available("rembg")[0]:
        pytest.skip("rembg is installed here")
    src = screen_photos(tmp_path / "in", 1)
    assert main(["remove", str(src), "-o", str(tmp_path / "o"), "--backend", "rembg"]) == 2
    assert "pip install 'bglab[rembg]'" in capsys.readouterr().err


def test_rembg_with_model_path_runs_without_rembg(tmp_path):
    from bglab.foreground.fetch_models import MODELS_DIR, U2NETP_FILE

    model = Path(MODELS_DIR) / U2NETP_FILE
    if not model.is_file():
        pytest.skip("u2netp.onnx not installed (make models)")
    src = screen_photos(tmp_path / "in", 1)
    assert main(["remove", str(src), "-o", str(tmp_path / "o"), "--backend", "rembg",
                 "-O", f"model_path={model}"]) == 0
    assert (tmp_path / "o" / "p0.png").is_file()


@pytest.mark.parametrize("argv", [["variants", "{missing}", "{out}"], ["preprocess", "{missing}", "{out}"],
                                  ["key", "{missing}", "{out}"]])
def test_input_checks_fail_before_any_progress_bar(tmp_path, capsys, argv):
    """A missing source is one error line, with no progress bar drawn above it."""
    args = [a.format(missing=tmp_path / "missing", out=tmp_path / "out") for a in argv]
    assert main(args) in (1, 2)
    out = capsys.readouterr()
    assert "━" not in out.err + out.out and "missing" in out.err + out.out
