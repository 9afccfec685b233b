"""review-seg: blind sheets (columns shuffled per row, key kept apart), bad photos skipped, the tally
(unblinding, refusal of half-judged or edited files), the Wilson interval, and the CLI on real photos."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from bglab.cli import review as review_cmd
from bglab.errors import ConfigError, DatasetError
from bglab.experiment.stats import wilson_interval
from bglab.foreground.review import (JUDGEMENTS_FILE, KEY_FILE, PAGE_FILE, column_letters, make_review,
                                     tally_review)
from bglab.io.files import read_image, write_image


class Square:
    """A fake segmenter: the centre square (``good``) or nothing (``empty``)."""

    def __init__(self, good: bool) -> None:
        self.good = good

    def predict(self, image: np.ndarray, *, source: Path | None = None) -> np.ndarray:
        m = np.zeros(image.shape[:2], np.float32)
        if self.good:
            h, w = m.shape
            m[h // 4:3 * h // 4, w // 4:3 * w // 4] = 1.0
        return m


def _app() -> typer.Typer:
    app = typer.Typer()
    review_cmd.register(app)
    return app


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for i in range(7):
        write_image(root / ("a" if i % 2 else "b") / f"p{i}.png", rng.integers(0, 255, (40 + i, 60, 3), np.uint8))
    return root


def _paths(root: Path) -> list[Path]:
    return sorted(root.rglob("*.png")) + sorted(root.rglob("*.jpg"))


def _fill(folder: Path, judge) -> None:
    """Fill the judgement CSV the way a reviewer would, here from the key (judge(label) -> 'y' / 'n')."""
    key = json.loads((folder / KEY_FILE).read_text())
    with (folder / JUDGEMENTS_FILE).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for line, kr in zip(rows, key["rows"], strict=True):
        for letter in key["columns"]:
            line[letter] = judge(kr["columns"][letter])
    with (folder / JUDGEMENTS_FILE).open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["row", "image", *key["columns"]])
        w.writeheader()
        w.writerows(rows)


def test_make_writes_blind_sheets_and_a_key(photos: Path, tmp_path: Path) -> None:
    segs = {"good": Square(True), "empty": Square(False), "good2": Square(True)}
    out = tmp_path / "review"
    made = make_review(_paths(photos), segs, out, root=photos, sample=5, seed=3, rows_per_sheet=2, cell=64)
    assert made.rows == 5 and len(made.sheets) == 3 and not made.failed
    sheet = read_image(made.sheets[0])
    assert sheet.shape[1] > 4 * 64  # photo + three cut-outs side by side
    with (out / JUDGEMENTS_FILE).open() as fh:
        lines = list(csv.DictReader(fh))
    assert [ln["row"] for ln in lines] == ["1", "2", "3", "4", "5"]
    assert all(ln["A"] == ln["B"] == ln["C"] == "" for ln in lines)  # nothing pre-filled
    assert "good" not in (out / JUDGEMENTS_FILE).read_text()  # the labels live only in the key
    key = json.loads((out / KEY_FILE).read_text())
    orders = [tuple(r["columns"][c] for c in "ABC") for r in key["rows"]]
    assert all(sorted(o) == sorted(segs) for o in orders)
    assert len(set(orders)) > 1  # shuffled per row, not one fixed order
    assert len({r["image"] for r in key["rows"]}) == 5 and all("/" in r["image"] for r in key["rows"])
    # the same seed draws the same photos in the same column orders
    again = make_review(_paths(photos), segs, tmp_path / "again", root=photos, sample=5, seed=3)
    assert json.loads((again.out / KEY_FILE).read_text())["rows"] == key["rows"]


def test_make_skips_bad_photos_and_refuses_to_overwrite(photos: Path, tmp_path: Path) -> None:
    (photos / "b" / "broken.jpg").write_bytes(b"not an image")
    (photos / "b" / "empty.png").write_bytes(b"")
    segs = {"good": Square(True), "empty": Square(False)}
    out = tmp_path / "review"
    made = make_review(_paths(photos), segs, out, root=photos, sample=None, seed=0)
    assert made.rows == 7 and {p.name for p, _ in made.failed} == {"broken.jpg", "empty.png"}
    key = json.loads((out / KEY_FILE).read_text())
    assert {Path(f["image"]).name for f in key["failed"]} == {"broken.jpg", "empty.png"}
    assert all(f["error"] for f in key["failed"])
    with pytest.raises(ConfigError, match="already holds a review"):
        make_review(_paths(photos), segs, out, root=photos, sample=2)
    with pytest.raises(ConfigError, match="2 to 26"):
        make_review(_paths(photos), {"one": Square(True)}, tmp_path / "x", root=photos)
    with pytest.raises(DatasetError, match="no images"):
        make_review([], segs, tmp_path / "y", root=photos)


def test_tally_unblinds_and_refuses_half_judged_files(photos: Path, tmp_path: Path) -> None:
    segs = {"good": Square(True), "empty": Square(False)}
    out = tmp_path / "review"
    make_review(_paths(photos), segs, out, root=photos, sample=6, seed=1)
    with pytest.raises(DatasetError, match="12 blank cell"):
        tally_review(out)
    _fill(out, lambda label: "Y" if label == "good" else "no")
    t = tally_review(out)
    assert t.rows == 6 and t.count("good") == 6 and t.count("empty") == 0
    assert t.usable["good"].dtype == bool

    text = (out / JUDGEMENTS_FILE).read_text().splitlines()
    (out / JUDGEMENTS_FILE).write_text("\n".join([text[0], text[2], text[1], *text[3:]]) + "\n")
    with pytest.raises(DatasetError, match="do not sort"):
        tally_review(out)
    (out / JUDGEMENTS_FILE).write_text("\n".join(text[:-1]) + "\n")
    with pytest.raises(DatasetError, match="5 judgement rows but the key has 6"):
        tally_review(out)
    bad = text[:]
    bad[1] = ",".join(bad[1].split(",")[:2] + ["maybe", "y"])
    (out / JUDGEMENTS_FILE).write_text("\n".join(bad) + "\n")
    with pytest.raises(DatasetError, match="1A='maybe'"):
        tally_review(out)
    with pytest.raises(DatasetError, match="not a review folder"):
        tally_review(tmp_path)


def test_cli_tally_json_counts_and_paired_test(photos: Path, tmp_path: Path) -> None:
    segs = {"good": Square(True), "empty": Square(False)}
    out = tmp_path / "review"
    make_review(_paths(photos), segs, out, root=photos, sample=7, seed=2)
    _fill(out, lambda label: "y" if label == "good" else "n")
    res = CliRunner().invoke(_app(), ["review-seg", "tally", str(out), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["rows"] == 7
    assert data["backends"]["good"]["usable"] == 7 and data["backends"]["empty"]["usable"] == 0
    assert data["backends"]["good"]["ci95"][1] == 1.0 and data["backends"]["empty"]["ci95"][0] == 0.0
    (pair,) = data["pairs"]
    assert {pair["a"], pair["b"]} == {"good", "empty"} and pair["only_a"] + pair["only_b"] == 7
    assert pair["p_exact"] == pytest.approx(2 / 2 ** 7)  # 7 discordant photos, all one way
    table = CliRunner().invoke(_app(), ["review-seg", "tally", str(out)])
    assert table.exit_code == 0 and "7 / 7" in table.stdout and "0 / 7" in table.stdout


def test_wilson_interval_matches_the_textbook() -> None:
    lo, hi = wilson_interval(37, 48)
    assert (lo, hi) == pytest.approx((0.634607, 0.866922), abs=1e-6)  # scipy binomtest(...).proportion_ci
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_column_letters() -> None:
    assert column_letters(3) == ["A", "B", "C"]
    with pytest.raises(ConfigError):
        column_letters(27)


def test_cli_make_on_real_photos(shared_data: Path, tmp_path: Path) -> None:
    wild = shared_data / "hands_wild" / "images"
    if not wild.is_dir():
        pytest.skip(f"shared data missing: {wild}")
    out = tmp_path / "review"
    res = CliRunner().invoke(_app(), ["review-seg", "make", str(wild), "--backends", "unet,box=grabcut",
                                      "-O", "box:max_side=128", "-n", "3", "-o", str(out), "--cell", "96"])
    assert res.exit_code == 0, res.output
    assert "3 photos x 2 backends on 1 sheet(s)" in res.stdout
    key = json.loads((out / KEY_FILE).read_text())
    assert key["backends"] == ["unet", "box"] and key["backend_options"]["box"]["options"] == {"max_side": "128"}
    sheet = read_image(out / "sheet-01.png")
    assert sheet.shape[0] > 3 * 96 and sheet.std() > 10  # real pictures, not blank cells
    res = CliRunner().invoke(_app(), ["review-seg", "make", str(wild), "--backends", "unet", "-o",
                                      str(tmp_path / "one")])
    assert res.exit_code != 0 and not (tmp_path / "one").exists()  # one backend: refused before any work


def test_cli_make_refuses_a_review_folder_inside_the_photos(photos: Path) -> None:
    res = CliRunner().invoke(_app(), ["review-seg", "make", str(photos), "--backends", "unet,box=grabcut",
                                      "-o", str(photos / "review")])
    assert res.exit_code != 0 and "inside the source folder" in str(res.exception)
    assert not (photos / "review").exists()


def test_review_cutout_refines_as_remove_does() -> None:
    from bglab.foreground.review import BACKDROP, review_cutout

    image = np.full((60, 60, 3), 200, np.uint8)
    soft = np.zeros((60, 60), np.float32)
    soft[10:50, 10:50] = 0.9
    soft[28:32, 28:32] = 0.0   # a hole in the hand
    soft[2:4, 55:57] = 0.8     # a speck
    raw = review_cutout(image, soft)
    assert (raw[30, 30] == BACKDROP).all() and (raw[3, 56] == 200).all()
    clean = review_cutout(image, soft, min_region=0.1)
    assert (clean[30, 30] == 200).all() and (clean[3, 56] == BACKDROP).all()
    assert (clean[5, 5] == BACKDROP).all() and (clean[20, 20] == 200).all()


def test_cli_refine_option_is_recorded_and_checked(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "review"
    res = CliRunner().invoke(_app(), ["review-seg", "make", str(photos), "--backends", "raw=unet,clean=unet",
                                      "-O", "clean:refine=true", "-n", "2", "-o", str(out), "--cell", "48"])
    assert res.exit_code == 0, res.output
    key = json.loads((out / KEY_FILE).read_text())
    assert key["refine"] == {"clean": 0.1} and key["backend_options"]["clean"]["options"] == {}
    bad = CliRunner().invoke(_app(), ["review-seg", "make", str(photos), "--backends", "a=unet,b=unet",
                                      "-O", "b:min_region=3", "-o", str(tmp_path / "bad")])
    assert bad.exit_code != 0 and "min_region" in str(bad.exception)


def test_make_on_the_bad_input_corpus_skips_every_bad_file_and_keeps_the_rest(tmp_path: Path) -> None:
    """Corrupt, truncated, empty, 16-bit, CMYK, palette, alpha, EXIF-rotated...: each readable file gets a row,
    each unreadable one is listed with its error, and the review is still written."""
    from badinput import make_bad_corpus

    cases = {n: c for n, c in make_bad_corpus(tmp_path / "bad").items()
             if c.role == "image" and c.path.is_file()}
    made = make_review([c.path for c in cases.values()], {"good": Square(True), "empty": Square(False)},
                       tmp_path / "review", root=tmp_path / "bad", sample=None, seed=0)
    ok = {c.path for c in cases.values() if c.kind == "ok"}
    bad = {c.path for c in cases.values() if c.kind == "error"}
    assert ok and bad
    assert made.rows == len(ok) and {p for p, _ in made.failed} == bad
    assert all(err for _, err in made.failed)
    assert read_image(made.sheets[0]).ndim == 3


def test_page_is_blind_and_has_one_clickable_cell_per_judgement(photos: Path, tmp_path: Path) -> None:
    import re

    segs = {"secret-good": Square(True), "secret-empty": Square(False), "secret-2": Square(True)}
    out = tmp_path / "review"
    make_review(_paths(photos), segs, out, root=photos, sample=4, seed=0, cell=48)
    page = (out / PAGE_FILE).read_text()
    assert "secret" not in page  # the backends' names live only in the key
    assert len(re.findall(r'<button type="button" class="cut" data-row="\d+" data-col="[ABC]"', page)) == 4 * 3
    assert page.count('<tr data-image="') == 4 and page.count("data:image/jpeg;base64,") == 4 * 4
    key = json.loads((out / KEY_FILE).read_text())
    for r in key["rows"]:
        assert f'data-image="{r["image"]}"' in page
    assert 'a.download = "judgements.csv"' in page and 'lines.join("\\n")' in page


def test_tally_reads_a_csv_saved_elsewhere_with_quoted_names(photos: Path, tmp_path: Path) -> None:
    """What the page saves: every image name quoted, the file in another folder (--judgements)."""
    segs = {"good": Square(True), "empty": Square(False)}
    out = tmp_path / "review"
    make_review(_paths(photos), segs, out, root=photos, sample=3, seed=4)
    key = json.loads((out / KEY_FILE).read_text())
    lines = ["row,image,A,B"]
    for r in key["rows"]:
        lines.append(",".join([str(r["row"]), f'"{r["image"]}"',
                               *("y" if r["columns"][c] == "good" else "n" for c in "AB")]))
    saved = tmp_path / "Downloads" / "judgements.csv"
    saved.parent.mkdir()
    saved.write_text("\n".join(lines) + "\n")
    t = tally_review(out, saved)
    assert t.count("good") == 3 and t.count("empty") == 0
    res = CliRunner().invoke(_app(), ["review-seg", "tally", str(out), "--judgements", str(saved), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["backends"]["good"]["usable"] == 3


def test_page_in_a_browser_saves_what_was_clicked(photos: Path, tmp_path: Path) -> None:
    """review.html in headless Chromium: mouse and keyboard judgements, the counter, the saved CSV, the tally."""
    import os

    chromium = Path(os.environ.get("BGLAB_CHROMIUM", "/usr/bin/chromium"))
    if not chromium.exists():
        pytest.skip(f"no Chromium at {chromium} (apt-get install chromium, or set BGLAB_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package (extra 'dev') is missing")
    segs = {"good": Square(True), "empty": Square(False)}
    out = tmp_path / "review"
    make_review(_paths(photos), segs, out, root=photos, sample=3, seed=5, cell=40)
    key = json.loads((out / KEY_FILE).read_text())
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), headless=True,
                                     args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(accept_downloads=True)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((out / PAGE_FILE).as_uri())
            assert page.inner_text("#left") == "6 of 6 left to judge"
            for r in key["rows"]:
                for c in "AB":
                    button = f'button.cut[data-row="{r["row"]}"][data-col="{c}"]'
                    if r["row"] == 1:  # by keyboard: focus, Enter (usable), Enter again (not)
                        page.focus(button)
                        page.keyboard.press("Enter")
                        if r["columns"][c] == "empty":
                            page.keyboard.press("Enter")
                    else:
                        page.click(button)
                        if r["columns"][c] == "empty":
                            page.click(button)
            assert page.inner_text("#left") == "all 6 judged"
            assert "not usable" in (page.get_attribute('button.cut[data-row="2"][data-col="A"]', "aria-label")
                                    + page.get_attribute('button.cut[data-row="2"][data-col="B"]', "aria-label"))
            with page.expect_download() as dl:
                page.click("#save")
            saved = tmp_path / "saved.csv"
            dl.value.save_as(saved)
            assert not errors, errors
        finally:
            browser.close()
    t = tally_review(out, saved)
    assert t.count("good") == 3 and t.count("empty") == 0


def test_cli_make_lists_bad_photos_and_exits_1_with_the_review_written(photos: Path, tmp_path: Path) -> None:
    (photos / "b" / "broken.jpg").write_bytes(b"not a picture")
    out = tmp_path / "review"
    res = CliRunner().invoke(_app(), ["review-seg", "make", str(photos), "--backends", "a=unet,b=unet",
                                      "-o", str(out), "--cell", "48"])
    assert res.exit_code == 1, res.output
    assert "broken.jpg" in res.output and (out / KEY_FILE).is_file() and (out / PAGE_FILE).is_file()
    assert json.loads((out / KEY_FILE).read_text())["failed"][0]["image"].endswith("broken.jpg")
