"""The README is a guide: no leftover template text, every docs/ page it links exists, and its five-minute tour
runs as written (on a small synthetic folder of photos)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def tour_commands() -> list[list[str]]:
    """The commands of the README's tour block (between ``<!-- tour -->`` and ``<!-- /tour -->``), comments
    dropped, each split like a shell would."""
    block = re.search(r"<!-- tour -->\s*```bash\n(.*?)```\s*<!-- /tour -->", README, re.S)
    assert block, "the README has no tour block"
    lines = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    return [shlex.split(line) for line in lines if line]


def test_readme_has_no_placeholders_and_its_doc_links_exist() -> None:
    assert not re.search(r"\b[A-Z]+(?:_[A-Z]+)*_PLACEHOLDER\b|\bTODO\b|\bTBD\b", README)
    links = re.findall(r"\]\((docs/[^)#\s]+)", README)
    assert links and all((REPO / link).is_file() for link in links), [x for x in links if not (REPO / x).is_file()]
    assert "make demo" in README and "make test" in README and "pip install -e" in README


def test_results_page_keeps_its_figures_and_links() -> None:
    """docs/results.md holds the research log: its relative links resolve and its figures name commands."""
    text = (REPO / "docs" / "results.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([a-z0-9-]+\.md)[)#]", text)
    assert links and all((REPO / "docs" / link).is_file() for link in links), links
    assert "bglab demo" in text and "bglab experiment rps-reference" in text
    assert "configs/rps-reference.yaml" not in text.replace("bglab/configs/rps-reference.yaml", "")


def test_tour_commands_parse_with_the_current_cli() -> None:
    """Every tour line names a command and flags the CLI has (checked without running them)."""
    import typer.main

    from bglab.cli.app import app

    commands = typer.main.get_command(app).commands
    tour = tour_commands()
    assert len(tour) >= 6
    for argv in tour:
        assert argv[0] == "bglab", argv
        cmd = commands[argv[1]]
        cmd.make_context(argv[1], argv[2:])  # raises a usage error on an unknown flag or a bad value


def _photos(root: Path) -> None:
    """Two classes of 10 small photos: a coloured square on a plain, random-tone background."""
    from bglab.io.files import write_image

    rng = np.random.default_rng(0)
    for c, col in (("cats", (200, 120, 40)), ("dogs", (60, 90, 200))):
        for i in range(10):
            img = np.empty((72, 96, 3), np.uint8)
            img[:] = rng.integers(150, 255, 3)
            y, x = rng.integers(10, 30), rng.integers(10, 50)
            img[y:y + 30, x:x + 30] = col
            write_image(root / "photos" / c / f"{c}{i}.jpg", img)


@pytest.mark.slow
def test_the_tour_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bglab.cli.app import main

    _photos(tmp_path)
    monkeypatch.chdir(tmp_path)
    for argv in tour_commands():
        assert main(argv[1:]) == 0, argv
    assert (tmp_path / "out" / "my-study" / "report.html").is_file()
    assert len(list((tmp_path / "out" / "cutouts").rglob("*.png"))) == 20
    assert sorted(p.name for p in (tmp_path / "out" / "variants" / "only-fg").iterdir()) == ["cats", "dogs"]
