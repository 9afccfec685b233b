"""The chroma-key backend (synthetic screens and real webcam hands) and the keying job with its QC."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from bglab.errors import BglabError, ConfigError
from bglab.foreground import Segmenter, create
from bglab.foreground.chroma import ChromaKeySegmenter, estimate_key, parse_key
from bglab.foreground.key import QCRules, key_folder
from bglab.ops.color import despill
from tests.conftest import shared_path

SKIN = (224, 172, 140)
GREEN = (40, 175, 70)
BLUE = (30, 70, 200)


def _screen(colour: tuple[int, int, int], shape=(200, 300), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.empty((*shape, 3), np.float32)
    img[:] = colour
    # a soft shadow and sensor noise, as on a real screen
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img *= (1.0 - 0.35 * np.exp(-((xx - 80) ** 2 + (yy - 150) ** 2) / 1500.0))[..., None]
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _disc(img: np.ndarray, colour=SKIN, centre=(170, 100), r=50) -> tuple[np.ndarray, np.ndarray]:
    out = img.copy()
    truth = np.zeros(img.shape[:2], np.uint8)
    cv2.circle(truth, centre, r, 1, -1)
    out[truth.astype(bool)] = colour
    return out, truth.astype(bool)


def _iou(mask: np.ndarray, truth: np.ndarray) -> float:
    m = mask > 0.5
    return float((m & truth).sum() / (m | truth).sum())


def test_registered_and_satisfies_protocol():
    seg = create("chroma")
    assert isinstance(seg, ChromaKeySegmenter)
    assert isinstance(seg, Segmenter)
    assert seg.name == "chroma"


def test_green_screen_disc_iou():
    img, truth = _disc(_screen(GREEN))
    mask = create("chroma").predict(img)
    assert mask.dtype == np.float32 and mask.shape == truth.shape
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    assert _iou(mask, truth) > 0.95
    assert mask[150, 80] < 0.05  # the shadow on the screen is background


@pytest.mark.parametrize("key", ["auto", "blue", "#1e46c8"])
def test_blue_screen(key):
    img, truth = _disc(_screen(BLUE))
    mask = create("chroma", key=key).predict(img)
    assert _iou(mask, truth) > 0.95


def test_green_key_on_blue_screen_keys_nothing():
    img, _ = _disc(_screen(BLUE))
    assert create("chroma", key="green").predict(img).min() > 0.99


def test_no_screen_gives_all_foreground():
    """Documented: with no coloured screen on the border, nothing is keyed out (mask is all ones)."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)  # no uniform border colour
    seg = create("chroma")
    res = seg.analyse(img)
    assert not res.screen_found and res.key is None
    assert np.all(res.mask == 1.0)


def test_greyscale_image_is_not_a_screen():
    grey = np.full((200, 300, 3), 128, np.uint8)
    img, _ = _disc(grey, colour=(60, 60, 60))
    assert estimate_key(img) is None
    assert np.all(create("chroma").predict(img) == 1.0)
    assert np.all(create("chroma", key="green").predict(img) > 0.99)  # grey is far from green


def test_parse_key_and_bad_options():
    k = parse_key("#00ff00")
    assert k.h == pytest.approx(60) and k.s == 255 and k.channel == "green"
    assert parse_key("Blue") == "blue"
    with pytest.raises(ConfigError):
        parse_key("purple-ish")
    with pytest.raises(ConfigError):
        ChromaKeySegmenter(tolerance=0)


def test_despill_limits_green_near_foreground_only():
    img = np.zeros((20, 20, 3), np.uint8)
    img[:] = (120, 200, 100)  # green-tinted pixel
    img[:, :5] = SKIN
    mask = np.zeros((20, 20), np.float32)
    mask[:, :10] = 1.0
    out = despill(img, mask, band=2)
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert np.all(out[:, 5:10, 1] == 120)  # green limited to max(red, blue)
    assert np.array_equal(out[:, :5], img[:, :5])  # skin untouched
    assert np.array_equal(out[:, 13:], img[:, 13:])  # far from the foreground untouched
    seg = ChromaKeySegmenter(despill=False)
    assert seg.despill(img, mask) is img
    assert np.array_equal(ChromaKeySegmenter().despill(img, mask), despill(img, mask))


def _webcam_files(n_per_class: int) -> list[Path]:
    root = shared_path("rps", "webcam")
    files = []
    for cls in ("rock", "paper", "scissors"):
        files += sorted((root / cls).glob("*.png"))[:n_per_class]
    return files


def _rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_real_webcam_masks_plausible():
    seg = create("chroma")
    for f in _webcam_files(2):
        mask = seg.predict(_rgb(f))
        fg = float((mask > 0.5).mean())
        assert 0.1 < fg < 0.75, (f, fg)
        assert mask[:, :10].max() < 0.5, f  # left columns: the screen, far from the hand
        assert mask[:, -1].mean() > 0.2, f  # the arm enters from the right
        assert mask[:20, :20].max() < 0.5 and mask[-20:, :20].max() < 0.5, f  # far corners


def _make_tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for f in _webcam_files(4):
        (src / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, src / f.parent.name / f.name)
    (src / "rock" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    odd = src / "odd"
    odd.mkdir()
    cv2.imwrite(str(odd / "all_green.png"), cv2.cvtColor(_screen(GREEN), cv2.COLOR_RGB2BGR))
    no_green = np.random.default_rng(3).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    cv2.imwrite(str(odd / "no_green.png"), no_green)
    return src


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as fh:
        return {r["file"]: r for r in csv.DictReader(fh)}


def test_key_folder_outputs_qc_and_resume(tmp_path):
    src = _make_tree(tmp_path)
    dst = tmp_path / "keyed"
    seen = []
    rep = key_folder(src, dst, progress=lambda d, t, i: seen.append((d, t)))
    assert rep.total == 15 and seen[-1] == (15, 15)
    assert (rep.ok, rep.rejected, rep.not_found, rep.errors) == (12, 1, 1, 1)
    for item in rep.items:
        if item.status == "ok":
            m = cv2.imread(str((dst / item.file).with_suffix(".png")), cv2.IMREAD_UNCHANGED)
            assert m.dtype == np.uint8 and m.shape == (200, 300) and 0.1 < (m > 127).mean() < 0.75
    by = {i.file: i for i in rep.items}
    assert by["rock/broken.png"].status == "error" and by["rock/broken.png"].reason
    assert not (dst / "rock" / "broken.png").exists()
    assert by["odd/all_green.png"].status == "not-found" and "min_fg" in by["odd/all_green.png"].reason
    assert by["odd/no_green.png"].status == "rejected" and "max_fg" in by["odd/no_green.png"].reason
    assert (dst / "_rejected" / "odd" / "all_green.png").is_file()
    assert not (dst / "odd" / "all_green.png").exists()
    rows = _rows(dst / "key_report.csv")
    assert len(rows) == 15 and rows["rock/broken.png"]["status"] == "error"
    assert list(next(iter(rows.values()))) == ["file", "status", "fg_fraction", "components", "reason"]
    sheet = cv2.imread(str(dst / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] >= 100 and sheet.shape[1] >= 300

    ok_mask = (dst / rep.items[-1].file).with_suffix(".png")
    before = ok_mask.stat().st_mtime_ns
    rep2 = key_folder(src, dst, sheet=False)
    assert rep2.resumed == 14  # everything but the broken file was done already
    assert (rep2.ok, rep2.rejected, rep2.not_found, rep2.errors) == (12, 1, 1, 1)
    assert ok_mask.stat().st_mtime_ns == before
    assert _rows(dst / "key_report.csv") == rows


def test_qc_rules():
    qc = QCRules()
    assert qc.check(0.3, 1, 0.0) == ""
    assert "min_fg" in qc.check(0.0, 0, 0.0)
    assert "components" in qc.check(0.3, 9, 0.0)
    fg = np.zeros((10, 10), bool)
    fg[:, -3:] = True  # touches only the right (entry) side and the ends of top/bottom
    assert qc.border_fraction(fg) == pytest.approx(6 / 30)
    fg[:, 0] = True
    assert "border" in qc.check(0.4, 1, qc.border_fraction(fg))
    with pytest.raises(ConfigError):
        QCRules(min_fg=0.9, max_fg=0.1)


def test_key_command_exit_code_and_summary(tmp_path):
    import typer
    from typer.testing import CliRunner

    from bglab.cli.key import register

    app = typer.Typer()
    register(app)
    app.callback()(lambda: None)  # keep "key" as a sub-command
    src = _make_tree(tmp_path)
    res = CliRunner().invoke(app, ["key", str(src), str(tmp_path / "k"), "--no-sheet", "--max-fg", "0.9"])
    assert res.exit_code == 1, res.output  # one broken file
    assert "rejected" in res.output and "broken.png" in res.output
    assert (tmp_path / "k" / "key_report.csv").is_file() and not (tmp_path / "k" / "contact_sheet.png").exists()
    res = CliRunner().invoke(app, ["key", "--help"])
    assert res.exit_code == 0 and "--tolerance" in res.output and "--min-fg" in res.output


def test_equalize_lightness_stretches_a_dark_flat_photo_and_keeps_shape_and_hue() -> None:
    """CLAHE on the lightness: a dim, low-contrast image gets a wider lightness range, same shape and dtype,
    its hue (a blue cast stays blue); anything but (H, W, 3) uint8 is refused."""
    import cv2

    from bglab.ops.color import equalize_lightness

    rng = np.random.default_rng(1)
    img = np.zeros((64, 80, 3), np.uint8)
    img[..., 2] = 40 + (rng.random((64, 80)) * 20).astype(np.uint8)  # dim blue
    img[..., 0] = 10 + (rng.random((64, 80)) * 10).astype(np.uint8)
    out = equalize_lightness(img)
    assert out.shape == img.shape and out.dtype == np.uint8
    light = [cv2.cvtColor(a, cv2.COLOR_RGB2LAB)[..., 0] for a in (img, out)]
    assert np.ptp(light[1]) > 2 * np.ptp(light[0])
    assert (out[..., 2] >= out[..., 0]).mean() > 0.95  # still bluer than red
    for bad in (img[..., 0], img.astype(np.float32), img[..., :2]):
        with pytest.raises(BglabError, match="RGB uint8"):
            equalize_lightness(bad)
    with pytest.raises(ConfigError, match="clip"):
        equalize_lightness(img, clip=0)
