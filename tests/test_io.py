"""bglab.io.files: every bad-input case gives ImageReadError naming the file or the documented result; writes are
atomic."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from badinput import GREY16, RGB16, BadCase, make_bad_corpus, png_bytes
from conftest import shared_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from bglab.errors import BglabError, ConfigError, DatasetError, ImageReadError, ImageWriteError, MaskError
from bglab.io import files as bio

# --------------------------------------------------------------------------------------------------------------
# the bad-input corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BadCase]:
    return make_bad_corpus(tmp_path_factory.mktemp("bad"))


def _case_names() -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return sorted(make_bad_corpus(Path(d)))


CASES = _case_names()
IMAGE_CASES = [n for n in CASES if not n.startswith("mask_") or n == "mask_image"]
MASK_CASES = [n for n in CASES if n.startswith("mask_") and n != "mask_image"]


def test_corpus_covers_the_issue(corpus: dict[str, BadCase]) -> None:
    must = {
        "truncated_jpeg", "empty_jpg", "text_as_jpg", "png_16bit_grey", "png_16bit_rgb", "jpeg_cmyk",
        "png_palette_transparency", "jpeg_exif_rot6", "png_1x1", "png_bomb_header", "jpeg_grey", "png_la", "bmp",
        "gif_animated", "tiff_rgb", "dir_named_jpg", "missing", "png_garbage_tail", "png_bad_crc",
        "mask_wrong_size", "mask_transposed",
    }  # fmt: skip
    assert must <= set(corpus)
    for name, case in corpus.items():
        assert case.kind in ("ok", "error"), name
        assert case.role in ("image", "mask"), name
        assert (case.shape is not None) == (case.kind == "ok" or case.role == "mask"), name
        assert case.description, name
        if case.role == "mask":
            assert case.pairs_with in corpus, name
    assert corpus["png_bomb_header"].path.stat().st_size < 200
    assert corpus["dir_named_jpg"].path.is_dir() and not corpus["missing"].path.exists()


@pytest.mark.parametrize("name", IMAGE_CASES)
def test_read_image_corpus(corpus: dict[str, BadCase], name: str) -> None:
    case = corpus[name]
    assert case.role == "image"
    if case.kind == "ok":
        img = bio.read_image(case.path)
        assert img.shape == case.shape and img.dtype == np.uint8 and img.flags.c_contiguous
        rgba = bio.read_image(case.path, alpha=True)
        assert rgba.shape == (*case.shape[:2], 4) and rgba.dtype == np.uint8
        np.testing.assert_array_equal(rgba[..., :3], img)
    else:
        with pytest.raises(ImageReadError) as info:
            bio.read_image(case.path)
        err = info.value
        assert case.path.name in str(err) and err.path == case.path
        assert case.message is not None and case.message in str(err).lower(), str(err)
        assert err.hint, "every read error carries a hint"


@pytest.mark.parametrize("name", [n for n in IMAGE_CASES if n not in ("missing", "dir_named_jpg")])
def test_decode_image_corpus(corpus: dict[str, BadCase], name: str) -> None:
    case = corpus[name]
    data = case.path.read_bytes()
    if case.kind == "ok":
        img = bio.decode_image(data, name=case.path.name)
        np.testing.assert_array_equal(img, bio.read_image(case.path))
    else:
        with pytest.raises(ImageReadError) as info:
            bio.decode_image(data, name="upload-" + case.path.name)
        assert "upload-" + case.path.name in str(info.value)
        assert case.message in str(info.value).lower()


@pytest.mark.parametrize("name", IMAGE_CASES)
def test_image_size_corpus(corpus: dict[str, BadCase], name: str) -> None:
    case = corpus[name]
    if case.kind == "ok":
        h, w = case.shape[:2]
        assert bio.image_size(case.path) == (w, h)
        return
    try:  # header-only: a file with a sound header but broken pixels still has a size
        size = bio.image_size(case.path)
    except ImageReadError as err:
        assert case.path.name in str(err)
    else:
        assert len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)


@pytest.mark.parametrize("name", MASK_CASES)
def test_mask_corpus(corpus: dict[str, BadCase], name: str) -> None:
    case = corpus[name]
    image = bio.read_image(corpus[case.pairs_with].path)
    mask = bio.read_mask(case.path)
    assert mask.shape == case.shape and mask.dtype == np.uint8
    if case.kind == "ok":
        np.testing.assert_array_equal(bio.read_mask(case.path, shape=image.shape), mask)
        bio.check_mask_shape(mask, image.shape)
    else:
        with pytest.raises(MaskError) as info:
            bio.read_mask(case.path, shape=image.shape)
        assert case.path.name in str(info.value) and case.message in str(info.value)
        with pytest.raises(MaskError, match=re.escape(case.message)):
            bio.check_mask_shape(mask, image.shape)


def test_bad_corpus_pixel_values(corpus: dict[str, BadCase]) -> None:
    np.testing.assert_array_equal(bio.read_image(corpus["png_16bit_grey"].path)[..., 1], GREY16 >> 8)
    np.testing.assert_array_equal(bio.read_image(corpus["tiff_16bit_grey_be"].path)[..., 2], GREY16 >> 8)
    np.testing.assert_array_equal(bio.read_image(corpus["png_16bit_rgb"].path), RGB16 >> 8)
    rgba16 = bio.read_image(corpus["png_16bit_rgba"].path, alpha=True)
    np.testing.assert_array_equal(rgba16[..., :3], RGB16 >> 8)
    np.testing.assert_array_equal(rgba16[..., 3], GREY16 >> 8)
    expect_f = np.rint(GREY16 / 65535.0 * 255).astype(np.int16)
    for name in ("tiff_float_grey", "tiff_float_rgb"):
        got = bio.read_image(corpus[name].path).astype(np.int16)
        assert np.abs(got - expect_f[..., None]).max() <= 1, name
    one = bio.read_image(corpus["png_1x1"].path, alpha=True)
    assert one.tolist() == [[[10, 20, 30, 255]]]


def test_exif_orientation_is_applied(corpus: dict[str, BadCase]) -> None:
    img = bio.read_image(corpus["jpeg_exif_rot6"].path)
    assert img.shape == (40, 20, 3)  # stored 40x20 (WxH), displayed 20x40
    top, bottom = img[:18].reshape(-1, 3).mean(0), img[22:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[1] < 40 and top[2] < 40  # the red left half is now on top
    assert bottom.max() < 40


def test_alpha_channels_are_kept(corpus: dict[str, BadCase]) -> None:
    pal = bio.read_image(corpus["png_palette_transparency"].path, alpha=True)
    with Image.open(corpus["png_palette_transparency"].path) as im:
        index = np.asarray(im)
    np.testing.assert_array_equal(pal[..., 3], np.where(index == 0, 0, 255))
    la = bio.read_image(corpus["png_la"].path, alpha=True)
    np.testing.assert_array_equal(la[..., 0], la[..., 2])
    assert len(np.unique(la[..., 3])) > 10
    opaque = bio.read_image(corpus["jpeg_grey"].path, alpha=True)
    assert (opaque[..., 3] == 255).all()


def test_cmyk_converts_to_matching_rgb(corpus: dict[str, BadCase]) -> None:
    cmyk = bio.read_image(corpus["jpeg_cmyk"].path).astype(np.int16)
    ref = bio.read_image(corpus["png_garbage_tail"].path).astype(np.int16)  # the same picture, lossless
    assert np.abs(cmyk - ref).mean() < 6


def test_bomb_is_refused_from_the_header_before_decoding(
    corpus: dict[str, BadCase], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 300x300 PNG (90,000 px) that claims its real size; any pixel decoding would hit the patched load().
    p = tmp_path / "big.png"
    p.write_bytes(png_bytes(300, 300, (b"\x00" + b"\x80" * 900) * 300))
    assert bio.read_image(p).shape == (300, 300, 3)

    def no_decoding(self: object) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageReadError, match=r"300x300 = 90,000 pixels, over the limit of 89,999"):
        bio.read_image(p, max_pixels=89_999)
    with pytest.raises(ImageReadError, match="30000x30000"):
        bio.read_image(corpus["png_bomb_header"].path)
    assert bio.image_size(corpus["png_bomb_header"].path) == (30000, 30000)


def test_max_pixels_argument_and_environment(
    corpus: dict[str, BadCase], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = corpus["png_garbage_tail"].path  # 64x48 = 3072 px
    monkeypatch.delenv(bio.MAX_PIXELS_ENV, raising=False)
    assert bio.max_pixels_limit() == bio.DEFAULT_MAX_PIXELS == 100_000_000
    assert bio.read_image(path, max_pixels=3072).shape == (48, 64, 3)
    with pytest.raises(ImageReadError, match="too large"):
        bio.read_image(path, max_pixels=3071)
    monkeypatch.setenv(bio.MAX_PIXELS_ENV, "3000")
    with pytest.raises(ImageReadError, match=bio.MAX_PIXELS_ENV):  # the hint names the variable
        bio.read_image(path)
    with pytest.raises(ImageReadError, match="too large"):
        bio.decode_image(path.read_bytes())
    assert bio.read_image(path, max_pixels=4000).shape == (48, 64, 3)  # the argument wins
    monkeypatch.setenv(bio.MAX_PIXELS_ENV, "2e8")
    assert bio.max_pixels_limit() == 200_000_000
    monkeypatch.setenv(bio.MAX_PIXELS_ENV, "lots")
    with pytest.raises(ConfigError, match=bio.MAX_PIXELS_ENV):
        bio.read_image(path)
    with pytest.raises(ConfigError):
        bio.read_image(path, max_pixels=0)


def test_pillow_guard_is_reported_when_the_limit_is_raised_past_it(corpus: dict[str, BadCase]) -> None:
    with pytest.raises(ImageReadError, match="MAX_IMAGE_PIXELS"):
        bio.read_image(corpus["png_bomb_header"].path, max_pixels=10**12)


def test_missing_file_suggests_a_sibling(tmp_path: Path) -> None:
    (tmp_path / "cat.jpeg").write_bytes(b"x")
    with pytest.raises(ImageReadError, match=r"did you mean cat\.jpeg"):
        bio.read_image(tmp_path / "cat.jpg")
    with pytest.raises(ImageReadError, match="does not exist either"):
        bio.read_image(tmp_path / "nowhere" / "cat.jpg")
    with pytest.raises(ImageReadError, match="does not exist either"):
        bio.image_size(tmp_path / "nowhere" / "cat.jpg")


def test_decode_image_rejects_non_bytes() -> None:
    with pytest.raises(ImageReadError, match="<bytes>.*empty"):
        bio.decode_image(b"")
    with pytest.raises(ImageReadError, match="expected bytes"):
        bio.decode_image("not bytes")  # type: ignore[arg-type]


_SEEDS: dict[str, bytes] = {}


def _seed_files() -> dict[str, bytes]:
    if not _SEEDS:
        rng = np.random.default_rng(3)
        arr = rng.integers(0, 256, (24, 32, 3), np.uint8)
        for fmt, opts in {
            "PNG": {},
            "JPEG": {"quality": 80},
            "GIF": {},
            "TIFF": {},
            "BMP": {},
            "WEBP": {},
        }.items():
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format=fmt, **opts)
            _SEEDS[fmt] = buf.getvalue()
    return _SEEDS


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from(["PNG", "JPEG", "GIF", "TIFF", "BMP", "WEBP"]),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_fuzzed_files_never_raise_anything_else(
    fmt: str, edits: list[tuple[float, int]], cut: float | None
) -> None:
    data = bytearray(_seed_files()[fmt])
    for where, value in edits:
        data[int(where * len(data))] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    try:
        img = bio.decode_image(bytes(data), name="fuzz.bin")
    except ImageReadError as err:
        assert "fuzz.bin" in str(err)
    else:
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


# --------------------------------------------------------------------------------------------------------------
# real data


def test_real_png_matches_opencv(shared_data: Path) -> None:
    files = sorted(shared_path("rps", "webcam", "rock").glob("*.png"))[:5]
    assert files
    for f in files:
        img = bio.read_image(f)
        assert img.shape == (200, 300, 3) and img.dtype == np.uint8
        np.testing.assert_array_equal(
            img, cv2.cvtColor(cv2.imread(str(f), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        )
        assert bio.image_size(f) == (300, 200)


def test_real_jpegs_and_masks(shared_data: Path) -> None:
    root = shared_path("pets3", "Abyssinian")
    stems = sorted(p.stem for p in (root / "images").glob("*.jpg"))[:6]
    assert stems
    for stem in stems:
        img = bio.read_image(root / "images" / f"{stem}.jpg")
        assert img.ndim == 3 and img.shape[2] == 3 and max(img.shape[:2]) <= 384
        ref = cv2.cvtColor(cv2.imread(str(root / "images" / f"{stem}.jpg")), cv2.COLOR_BGR2RGB)
        assert np.abs(img.astype(np.int16) - ref).mean() < 2  # two JPEG decoders agree
        mask = bio.read_mask(root / "masks" / f"{stem}.png", shape=img.shape)
        assert mask.shape == img.shape[:2] and set(np.unique(mask).tolist()) <= {0, 255}
        w, h = bio.image_size(root / "images" / f"{stem}.jpg")
        assert (h, w) == img.shape[:2]
    with pytest.raises(MaskError, match="transposed"):
        bio.check_mask_shape(mask.T, img.shape, path=root / "masks" / f"{stem}.png")


def test_real_backgrounds_and_listing(shared_data: Path) -> None:
    folder = shared_path("backgrounds")
    listed = bio.list_images(folder)
    assert listed == sorted(folder.glob("*.jpg")) and len(listed) >= 20
    for f in listed[:5]:
        img = bio.read_image(f)
        assert img.shape[2] == 3 and bio.image_size(f) == (img.shape[1], img.shape[0])


def test_real_round_trips(shared_data: Path, tmp_path: Path) -> None:
    src = bio.read_image(min(shared_path("rps", "webcam", "paper").glob("*.png")))
    out = bio.write_image(tmp_path / "a" / "b" / "copy.png", src)  # parents are created
    np.testing.assert_array_equal(bio.read_image(out), src)
    np.testing.assert_array_equal(bio.decode_image(bio.encode_image(src, "png")), src)
    jpg = bio.read_image(bio.write_image(tmp_path / "copy.jpg", src, quality=95))
    assert jpg.shape == src.shape and np.abs(jpg.astype(np.int16) - src).mean() < 3
    low = bio.decode_image(bio.encode_image(src, "jpg", quality=20))
    assert np.abs(low.astype(np.int16) - src).mean() > np.abs(jpg.astype(np.int16) - src).mean()
    alpha = (np.arange(src.shape[1]) % 256).astype(np.uint8)[None, :].repeat(src.shape[0], 0)
    rgba = np.dstack([src, alpha])
    for name in ("cut.png", "cut.webp"):
        back = bio.read_image(bio.write_image(tmp_path / name, rgba, quality=100), alpha=True)
        np.testing.assert_array_equal(back, rgba)
    lossy = bio.read_image(bio.write_image(tmp_path / "lossy.webp", src, quality=80))
    assert np.abs(lossy.astype(np.int16) - src).mean() < 8
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # no temp files left


# --------------------------------------------------------------------------------------------------------------
# writing


def test_encode_image_validates_input() -> None:
    rgb = np.zeros((4, 5, 3), np.uint8)
    with pytest.raises(ImageWriteError, match="PNG or WebP"):
        bio.encode_image(np.zeros((4, 5, 4), np.uint8), "jpeg")
    for bad in (
        rgb.astype(np.float32),
        rgb.astype(bool),
        np.zeros((4, 5, 2), np.uint8),
        np.zeros((0, 5, 3), np.uint8),
    ):
        with pytest.raises(ImageWriteError):
            bio.encode_image(bad, "png")
    with pytest.raises(ImageWriteError, match="bmp"):
        bio.encode_image(rgb, "bmp")
    with pytest.raises(ImageWriteError, match="quality"):
        bio.encode_image(rgb, "jpeg", quality=0)
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    back = bio.decode_image(bio.encode_image(grey, "png"))
    np.testing.assert_array_equal(back, np.dstack([grey] * 3))
    assert bio.decode_image(bio.encode_image(rgb, ".JPG")).shape == (4, 5, 3)


def test_write_image_failure_leaves_destination_untouched(tmp_path: Path) -> None:
    dest = tmp_path / "keep.jpg"
    dest.write_bytes(b"old contents")
    with pytest.raises(ImageWriteError, match=r"keep\.jpg.*alpha"):
        bio.write_image(dest, np.zeros((8, 8, 4), np.uint8))
    assert dest.read_bytes() == b"old contents"
    with pytest.raises(ImageWriteError, match="suffix"):
        bio.write_image(tmp_path / "out.bmp", np.zeros((8, 8, 3), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.jpg"]


def test_atomic_write_cleans_up_when_replace_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "img.png"
    dest.write_bytes(b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bio.os, "replace", broken_replace)
    with pytest.raises(ImageWriteError, match="No space left"):
        bio.write_image(dest, np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(BglabError, match="No space left"):
        bio.atomic_write_text(tmp_path / "m.json", "{}")
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.png"]


def test_atomic_write_bytes_and_text(tmp_path: Path) -> None:
    p = bio.atomic_write_text(tmp_path / "sub" / "manifest.json", '{"a": "é"}\n')
    assert p.read_text(encoding="utf-8") == '{"a": "é"}\n'
    bio.atomic_write_bytes(p, b"new", fsync=True)
    assert p.read_bytes() == b"new"
    umask = os.umask(0)
    os.umask(umask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(BglabError, match="directory"):
        bio.atomic_write_bytes(tmp_path / "sub", b"x")
    assert sorted(q.name for q in (tmp_path / "sub").iterdir()) == ["manifest.json"]


# --------------------------------------------------------------------------------------------------------------
# masks


def test_write_and_read_masks(tmp_path: Path) -> None:
    binary = np.zeros((10, 12), bool)
    binary[2:5, 3:9] = True
    m = bio.read_mask(bio.write_mask(tmp_path / "b.png", binary))
    np.testing.assert_array_equal(m, binary.astype(np.uint8) * 255)
    soft = np.linspace(0, 1, 120, dtype=np.float32).reshape(10, 12)
    m = bio.read_mask(bio.write_mask(tmp_path / "s.png", soft))
    np.testing.assert_array_equal(m, np.rint(soft * 255).astype(np.uint8))
    u8 = (np.arange(120) * 2).astype(np.uint8).reshape(10, 12)
    np.testing.assert_array_equal(bio.read_mask(bio.write_mask(tmp_path / "u.png", u8[..., None])), u8)
    with Image.open(tmp_path / "u.png") as im:
        assert im.mode == "L" and im.format == "PNG"
    for bad in (soft * 2, np.full((3, 3), np.nan), np.zeros((3, 3, 3), np.uint8), np.zeros((3, 3), np.int64)):
        with pytest.raises(ImageWriteError):
            bio.write_mask(tmp_path / "bad.png", bad)
    with pytest.raises(ImageWriteError, match="PNG"):
        bio.write_mask(tmp_path / "m.jpg", binary)
    assert not (tmp_path / "bad.png").exists() and not (tmp_path / "m.jpg").exists()


def _save(path: Path, im: Image.Image) -> Path:
    im.save(path)
    return path


def test_read_mask_colour_modes(tmp_path: Path) -> None:
    alpha = np.zeros((6, 8), np.uint8)
    alpha[1:4, 2:6] = 200
    colour = np.random.default_rng(0).integers(0, 256, (6, 8, 3), np.uint8)
    cutout = _save(tmp_path / "cutout.png", Image.fromarray(np.dstack([colour, alpha])))
    np.testing.assert_array_equal(bio.read_mask(cutout), alpha)  # coloured RGBA: the alpha channel
    grey_rgb = _save(tmp_path / "grey_rgb.png", Image.fromarray(np.dstack([alpha] * 3)))
    np.testing.assert_array_equal(bio.read_mask(grey_rgb), alpha)
    black_alpha = _save(
        tmp_path / "black_alpha.png", Image.fromarray(np.dstack([np.zeros((6, 8, 3), np.uint8), alpha]))
    )
    np.testing.assert_array_equal(bio.read_mask(black_alpha), alpha)
    la = _save(tmp_path / "la.png", Image.merge("LA", [Image.new("L", (8, 6), 0), Image.fromarray(alpha)]))
    np.testing.assert_array_equal(bio.read_mask(la), alpha)
    bilevel = _save(tmp_path / "one.png", Image.fromarray(alpha > 0))
    np.testing.assert_array_equal(bio.read_mask(bilevel), np.where(alpha > 0, 255, 0))
    pal = Image.fromarray((alpha > 0).astype(np.uint8)).convert("P")
    pal.putpalette([0, 0, 0, 255, 255, 255])
    np.testing.assert_array_equal(
        bio.read_mask(_save(tmp_path / "pal.png", pal)), np.where(alpha > 0, 255, 0)
    )
    sixteen = _save(tmp_path / "m16.png", Image.fromarray(alpha.astype(np.uint16) * 257))
    np.testing.assert_array_equal(bio.read_mask(sixteen), alpha)
    with pytest.raises(MaskError, match=r"mask is 8x6 \(WxH\) but the image is 9x6"):
        bio.read_mask(cutout, shape=(6, 9))


def test_check_mask_shape_messages() -> None:
    bio.check_mask_shape(np.zeros((50, 100), np.uint8), (50, 100, 3))
    bio.check_mask_shape(np.zeros((50, 100, 1), np.uint8), (50, 100))
    with pytest.raises(MaskError) as info:
        bio.check_mask_shape(np.zeros((50, 100), np.uint8), (100, 200, 3), path="m.png")
    text = str(info.value)
    assert "mask is 100x50 (WxH) but the image is 200x100; masks must match the image size" in text
    assert "nearest neighbour" in text and text.startswith("m.png")
    with pytest.raises(MaskError, match="rotated/transposed"):
        bio.check_mask_shape(np.zeros((200, 100), bool), (100, 200))
    with pytest.raises(MaskError, match="single-channel"):
        bio.check_mask_shape(np.zeros((100, 200, 3), np.uint8), (100, 200))


# --------------------------------------------------------------------------------------------------------------
# listing


def test_list_images(tmp_path: Path, corpus: dict[str, BadCase]) -> None:
    for rel in (
        "b.jpg",
        "a.PNG",
        "sub/c.webp",
        "sub/deep/d.tiff",
        ".hidden.jpg",
        ".cache/e.jpg",
        "notes.txt",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "folder.jpg").mkdir()
    names = [p.relative_to(tmp_path).as_posix() for p in bio.list_images(tmp_path)]
    assert names == ["a.PNG", "b.jpg", "sub/c.webp", "sub/deep/d.tiff"]
    assert [p.name for p in bio.list_images(tmp_path, recursive=False)] == ["a.PNG", "b.jpg"]
    listed = bio.list_images(corpus["png_1x1"].path.parent)
    assert corpus["dir_named_jpg"].path not in listed and corpus["png_1x1"].path in listed
    with pytest.raises(DatasetError, match="not found"):
        bio.list_images(tmp_path / "nope")
    assert bio.IMAGE_SUFFIXES == frozenset(
        {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
    )
    assert bio.MASK_SUFFIXES <= bio.IMAGE_SUFFIXES and ".png" in bio.MASK_SUFFIXES
