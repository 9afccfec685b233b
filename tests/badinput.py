"""A corpus of awkward and broken image files, for testing every reader (io, CLI batch commands, server).

Usage::

    from badinput import make_bad_corpus       # tests/ is on sys.path under pytest
    cases = make_bad_corpus(tmp_path)          # {name: BadCase}
    for name, case in cases.items():
        if case.role == "image" and case.kind == "error":
            with pytest.raises(ImageReadError, match=re.escape(case.path.name)):
                read_image(case.path)

Each `BadCase` says what `bglab.io.files.read_image(path)` (role "image") or
`bglab.io.files.read_mask(path, shape=...)` with the shape of the `pairs_with` image (role "mask") must do: "ok"
with `shape`, or "error" (ImageReadError for images, MaskError for masks) whose message contains `message`.
Everything is generated (no downloads), in well under a second.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image

__all__ = ["GREY16", "RGB16", "BadCase", "make_bad_corpus", "png_bytes"]


@dataclass(frozen=True)
class BadCase:
    """One corpus file and what reading it must give."""

    path: Path
    """The file (may be missing or a directory, on purpose)."""
    kind: Literal["error", "ok"]
    """"ok": reads fine; "error": must raise ImageReadError (images) / MaskError (masks) naming the file."""
    shape: tuple[int, ...] | None
    """For "ok" images: shape of read_image(path) (alpha=False); for masks: shape of read_mask(path) alone."""
    description: str
    message: str | None = None
    """For "error": a lower-case substring of the error message (e.g. "truncated", "too large")."""
    role: Literal["image", "mask"] = "image"
    pairs_with: str | None = None
    """For masks: the corpus key of the image this mask claims to belong to."""


# Known pixel values, so readers can check scaling as well as shapes.
GREY16 = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)
"""16-bit greyscale ramp (H=48, W=64); 8-bit readers must give GREY16 >> 8."""
RGB16 = np.stack([GREY16, GREY16[::-1], np.full_like(GREY16, 0x8000)], axis=-1)
"""16-bit RGB (H=48, W=64, RGB order); 8-bit readers must give RGB16 >> 8."""


def _chunk(ctype: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data) & 0xFFFFFFFF)
    )


def png_bytes(width: int, height: int, raw_rows: bytes, *, color_type: int = 2, bit_depth: int = 8) -> bytes:
    """A PNG built by hand from an IHDR size and (filtered) row bytes; nothing checks they agree (bombs)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw_rows, 9))
        + _chunk(b"IEND", b"")
    )


def _pil_bytes(im: Image.Image, fmt: str, **opts: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **opts)
    return buf.getvalue()


def _cv2_bytes(arr: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, arr)
    assert ok, ext
    return buf.tobytes()


def _photo(h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth deterministic RGB test picture (compresses well, survives JPEG)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], -1).astype(np.uint8)


def make_bad_corpus(dir: Path) -> dict[str, BadCase]:
    """Write the corpus into `dir` (created if needed) and return {case name: BadCase}."""
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    cases: dict[str, BadCase] = {}

    def add(
        name: str,
        filename: str,
        data: bytes | None,
        kind: str,
        shape: tuple[int, ...] | None,
        description: str,
        message: str | None = None,
        **extra: object,
    ) -> None:
        path = d / filename
        if data is not None:
            path.write_bytes(data)
        cases[name] = BadCase(path, kind, shape, description, message, **extra)  # type: ignore[arg-type]

    photo = _photo()
    noisy = np.random.default_rng(1).integers(0, 256, (96, 128, 3), np.uint8)
    jpeg = _pil_bytes(Image.fromarray(noisy), "JPEG", quality=90)  # noise: the cut lands in the scan data
    png = _pil_bytes(Image.fromarray(photo), "PNG")

    # --- broken files -------------------------------------------------------------------------------------
    add(
        "truncated_jpeg",
        "truncated.jpg",
        jpeg[: len(jpeg) // 2],
        "error",
        None,
        "JPEG cut in half (interrupted download)",
        "truncated",
    )
    add(
        "jpeg_header_only",
        "header_only.jpg",
        jpeg[:120],
        "error",
        None,
        "only the first 120 bytes of a JPEG",
        "truncated",
    )
    add("empty_jpg", "empty.jpg", b"", "error", None, "0-byte file named .jpg", "empty")
    add(
        "text_as_jpg",
        "notes.jpg",
        b"these are my notes, not a picture\n" * 3,
        "error",
        None,
        "a text file named .jpg",
        "not an image",
    )
    add(
        "html_as_png",
        "download.png",
        b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n",
        "error",
        None,
        "an HTML error page saved as .png",
        "html",
    )
    add(
        "random_bytes",
        "noise.webp",
        np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes(),
        "error",
        None,
        "random bytes named .webp",
        "not a recognised image",
    )
    add(
        "png_truncated",
        "truncated.png",
        png[: len(png) - 40],
        "error",
        None,
        "PNG missing its last 40 bytes",
        "truncated",
    )
    bad = bytearray(png)
    idat = png.index(b"IDAT")
    bad[idat + 4 + 20] ^= 0xFF  # flip a data byte inside IDAT: the chunk CRC no longer matches
    add(
        "png_bad_crc",
        "bad_crc.png",
        bytes(bad),
        "error",
        None,
        "PNG with one flipped byte inside IDAT (CRC mismatch in the middle)",
        "crc",
    )
    bad = bytearray(png)
    bad[29] ^= 0xFF  # the IHDR CRC
    add(
        "png_bad_header",
        "bad_header.png",
        bytes(bad),
        "error",
        None,
        "PNG whose IHDR CRC is wrong",
        "corrupt png header",
    )
    bomb = png_bytes(30000, 30000, b"\x00" * 64)
    add(
        "png_bomb_header",
        "bomb.png",
        bomb,
        "error",
        None,
        "tiny PNG whose header claims 30000x30000 (900 MP): refused by size before decoding",
        "too large",
    )
    (d / "folder.jpg").mkdir(exist_ok=True)
    add("dir_named_jpg", "folder.jpg", None, "error", None, "a directory named folder.jpg", "directory")
    add("missing", "missing.jpg", None, "error", None, "a file that does not exist", "not found")

    # --- odd but valid files ---------------------------------------------------------------------------------
    add(
        "png_garbage_tail",
        "garbage_tail.png",
        png + b"\x00trailing garbage after IEND" * 10,
        "ok",
        (48, 64, 3),
        "PNG followed by garbage bytes after IEND (ignored)",
    )
    add("png_named_jpg", "really_png.jpg", png, "ok", (48, 64, 3), "a PNG with a .jpg name (content wins)")
    add(
        "png_16bit_grey",
        "grey16.png",
        _cv2_bytes(GREY16, ".png"),
        "ok",
        (48, 64, 3),
        "16-bit greyscale PNG (Pillow mode I;16): scaled >> 8",
    )
    add(
        "png_16bit_rgb",
        "rgb16.png",
        _cv2_bytes(RGB16[..., ::-1].copy(), ".png"),
        "ok",
        (48, 64, 3),
        "16-bit RGB PNG (Pillow opens it as 8-bit RGB, high byte)",
    )
    rgba16 = np.dstack([RGB16[..., ::-1], GREY16])
    add("png_16bit_rgba", "rgba16.png", _cv2_bytes(rgba16, ".png"), "ok", (48, 64, 3), "16-bit RGBA PNG")
    add(
        "tiff_16bit_grey_be",
        "grey16_be.tif",
        _pil_bytes(Image.frombytes("I;16B", (64, 48), GREY16.astype(">u2").tobytes()), "TIFF"),
        "ok",
        (48, 64, 3),
        "big-endian 16-bit greyscale TIFF (mode I;16B)",
    )
    fgrey = (GREY16 / 65535.0).astype(np.float32)
    add(
        "tiff_float_grey",
        "float.tif",
        _pil_bytes(Image.fromarray(fgrey), "TIFF"),
        "ok",
        (48, 64, 3),
        "32-bit float greyscale TIFF in [0, 1] (mode F)",
    )
    add(
        "tiff_float_rgb",
        "float_rgb.tif",
        _cv2_bytes(np.dstack([fgrey] * 3), ".tiff"),
        "ok",
        (48, 64, 3),
        "3-channel float TIFF (Pillow cannot identify it: OpenCV fallback)",
    )
    add(
        "jpeg_cmyk",
        "cmyk.jpg",
        _pil_bytes(Image.fromarray(photo).convert("CMYK"), "JPEG", quality=95),
        "ok",
        (48, 64, 3),
        "CMYK JPEG",
    )
    pal = Image.fromarray(photo).quantize(16)
    add(
        "png_palette_transparency",
        "palette_trns.png",
        _pil_bytes(pal, "PNG", transparency=0),
        "ok",
        (48, 64, 3),
        "palette PNG with a transparent index (alpha=True gives 4 channels)",
    )
    rot = np.zeros((20, 40, 3), np.uint8)
    rot[:, :20] = (255, 0, 0)  # red left half of a 40x20 (WxH) picture
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    add(
        "jpeg_exif_rot6",
        "rot6.jpg",
        _pil_bytes(Image.fromarray(rot), "JPEG", quality=95, exif=exif.tobytes()),
        "ok",
        (40, 20, 3),
        "40x20 JPEG with EXIF orientation 6: reads as 20x40, red half on top",
    )
    add(
        "png_1x1",
        "one.png",
        _pil_bytes(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"),
        "ok",
        (1, 1, 3),
        "1x1 pixel PNG",
    )
    add(
        "jpeg_grey",
        "grey.jpg",
        _pil_bytes(Image.fromarray(photo).convert("L"), "JPEG"),
        "ok",
        (48, 64, 3),
        "greyscale JPEG (mode L)",
    )
    la = Image.merge("LA", [Image.fromarray(photo[..., 0]), Image.fromarray(photo[..., 1])])
    add(
        "png_la",
        "grey_alpha.png",
        _pil_bytes(la, "PNG"),
        "ok",
        (48, 64, 3),
        "greyscale + alpha PNG (mode LA)",
    )
    add(
        "png_bilevel",
        "bilevel.png",
        _pil_bytes(Image.fromarray(photo[..., 0] > 127), "PNG"),
        "ok",
        (48, 64, 3),
        "1-bit PNG (mode 1)",
    )
    add("bmp", "picture.bmp", _pil_bytes(Image.fromarray(photo), "BMP"), "ok", (48, 64, 3), "24-bit BMP")
    frames = [Image.fromarray(photo).quantize(32), Image.fromarray(photo[::-1].copy()).quantize(32)]
    add(
        "gif_animated",
        "anim.gif",
        _pil_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "ok",
        (48, 64, 3),
        "2-frame animated GIF (first frame is read)",
    )
    add(
        "tiff_rgb",
        "picture.tiff",
        _pil_bytes(Image.fromarray(photo), "TIFF", compression="tiff_lzw"),
        "ok",
        (48, 64, 3),
        "LZW-compressed RGB TIFF",
    )
    rgba = np.dstack([photo, photo[..., 0]])
    add(
        "webp_rgba",
        "cutout.webp",
        _pil_bytes(Image.fromarray(rgba), "WEBP", lossless=True),
        "ok",
        (48, 64, 3),
        "lossless WebP with alpha",
    )

    # --- masks that do not fit their image --------------------------------------------------------------------
    add(
        "mask_image",
        "pair.png",
        _pil_bytes(Image.fromarray(_photo(40, 60)), "PNG"),
        "ok",
        (40, 60, 3),
        "a 60x40 image that the mask cases below belong to",
    )
    good = np.zeros((40, 60), np.uint8)
    good[10:30, 15:45] = 255
    add(
        "mask_ok",
        "pair_mask.png",
        _pil_bytes(Image.fromarray(good), "PNG"),
        "ok",
        (40, 60),
        "60x40 mask matching mask_image",
        role="mask",
        pairs_with="mask_image",
    )
    add(
        "mask_wrong_size",
        "pair_mask_small.png",
        _pil_bytes(Image.fromarray(good[::2, ::2].copy()), "PNG"),
        "error",
        (20, 30),
        "30x20 mask for the 60x40 image (half size)",
        "must match",
        role="mask",
        pairs_with="mask_image",
    )
    add(
        "mask_transposed",
        "pair_mask_transposed.png",
        _pil_bytes(Image.fromarray(good.T.copy()), "PNG"),
        "error",
        (60, 40),
        "40x60 mask for the 60x40 image (transposed)",
        "transposed",
        role="mask",
        pairs_with="mask_image",
    )
    return cases
