"""Safe image and mask I/O: decode any common format to RGB(A) uint8, refuse bad files with one clear error.

Every read raises `ImageReadError` (naming the file and the fix) for missing, empty, truncated, corrupt, non-image or
over-sized files; every write is atomic (temp file ``.<name>.bglab-<pid>-<random>.tmp`` in the same folder +
`os.replace`; `remove_temp_files` removes only those whose process is gone). Pillow is the decoder; OpenCV
is used only for TIFFs Pillow cannot identify (e.g. multi-channel float).
"""

from __future__ import annotations

import hashlib
import contextlib
import io
import os
import re
import struct
import tempfile
import warnings
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, TiffImagePlugin, UnidentifiedImageError

from bglab.errors import BglabError, ConfigError, DatasetError, ImageReadError, ImageWriteError, MaskError, \
    safe_text

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "MASK_SUFFIXES",
    "MAX_PIXELS_ENV",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_mask_shape",
    "check_separate",
    "decode_image",
    "encode_image",
    "image_size",
    "sha256_file",
    "list_images",
    "list_images_checked",
    "max_pixels_limit",
    "prepare_output_dir",
    "read_image",
    "read_mask",
    "remove_temp_files",
    "write_image",
    "write_mask",
]

DEFAULT_MAX_PIXELS = 100_000_000
"""Largest image (width x height, from the header) read by default: 100 megapixels.

This is also the memory bound of one worker process: decoding, converting and segmenting one image costs about
25 bytes per pixel at peak (an 8000 x 8000 JPEG, 64 MP: ~1.6 GB), so at this limit a worker peaks near 2.5 GB;
a run with ``--workers N`` needs N times that. Lower it with `MAX_PIXELS_ENV` on small machines."""

BYTES_PER_PIXEL_PEAK = 25
"""Measured peak memory per input pixel of one worker (decode + RGB copy + float mask + output)."""

MAX_PIXELS_ENV = "BGLAB_MAX_PIXELS"
"""Environment variable overriding `DEFAULT_MAX_PIXELS` (an explicit `max_pixels=` argument wins over it)."""

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)
"""Lower-case suffixes `list_images` picks up (matching is case-insensitive)."""

MASK_SUFFIXES: frozenset[str] = frozenset({".png", ".bmp", ".tif", ".tiff", ".gif", ".webp"})
"""Suffixes looked for when pairing masks with images: lossless formats (`read_mask` still reads any image)."""

# zlib level for PNG: 1 is ~4x faster than Pillow's default 6 for ~10 % larger files (measured on a
# 512x288 RGBA cut-out: 11 ms / 222 kB vs 48 ms / 201 kB); lossless either way.
PNG_COMPRESS_LEVEL = 1
_WRITE_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
_SUFFIX_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}
_ORIENTATION_TAG = 0x0112
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
)
_TIFF_PREFIXES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_SUPPORTED = "JPEG, PNG, WebP, BMP, TIFF, GIF"
_HINT_TRUNCATED = "the file is incomplete (interrupted download or copy); re-download or re-export it"
_HINT_CORRUPT = "the file is damaged; re-download or re-export it"
_HINT_TOO_LARGE = (
    "possibly a decompression bomb; if you trust the file, raise the limit with max_pixels= "
    f"or the {MAX_PIXELS_ENV} environment variable"
)

# Temp files of atomic writes: ".<name>.bglab-<pid>-<random>.tmp". Only names of this pattern whose writing
# process is gone are ever removed (remove_temp_files): never a user's own ".draft.tmp", never a live run's file.
_TMP_PREFIX = "bglab-"
_TMP_RE = re.compile(r"^\..+\.bglab-(\d+)-[A-Za-z0-9_]+\.tmp$")

# Read once so temp files get the permissions a plain open() would give (mkstemp creates them 0600).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


# --------------------------------------------------------------------------------------------------------------
# limits


def max_pixels_limit(max_pixels: int | None = None) -> int:
    """The pixel limit in force: `max_pixels` if given, else $BGLAB_MAX_PIXELS, else `DEFAULT_MAX_PIXELS`."""
    if max_pixels is not None:
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
            raise ConfigError(f"max_pixels must be a positive integer, got {max_pixels!r}")
        return max_pixels
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw.replace("_", "")))  # accepts 200000000, 200_000_000 and 2e8
    except (ValueError, OverflowError):
        value = 0
    if value <= 0:
        raise ConfigError(
            f"{MAX_PIXELS_ENV}={raw!r} is not a positive number of pixels",
            hint=f"set it to e.g. 200000000, or unset it for the default {DEFAULT_MAX_PIXELS}",
        )
    return value


def _check_size(size: tuple[int, int], limit: int, name: str | Path) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageReadError(f"image header claims an empty size {w}x{h}", path=name, hint=_HINT_CORRUPT)
    if w * h > limit:
        raise _too_large(f"{w}x{h} = {w * h:,}", limit, name)


def _too_large(what: str, limit: int, name: str | Path) -> ImageReadError:
    return ImageReadError(
        f"image is too large: the header says {what} pixels, over the limit of {limit:,}",
        path=name,
        hint=_HINT_TOO_LARGE,
    )


def _bomb_error(exc: Exception, head: bytes, name: str | Path, limit: int) -> ImageReadError:
    """Map Pillow's DecompressionBombError (raised by Image.open itself) to a size error."""
    size = _png_ihdr_size(head)
    if size is not None and size[0] * size[1] > limit:
        return _too_large(f"{size[0]}x{size[1]} = {size[0] * size[1]:,}", limit, name)
    m = re.search(r"\((\d+) pixels\)", str(exc))
    if m and int(m.group(1)) > limit:
        return _too_large(f"{int(m.group(1)):,}", limit, name)
    return ImageReadError(
        f"image is too large for Pillow's own guard ({exc})",
        path=name,
        hint="raise PIL.Image.MAX_IMAGE_PIXELS as well as max_pixels= if you trust the file",
    )


def _png_ihdr_size(head: bytes) -> tuple[int, int] | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR" and len(head) >= 24:
        w, h = struct.unpack(">II", head[16:24])
        return int(w), int(h)
    return None


# --------------------------------------------------------------------------------------------------------------
# reading


def read_image(
    path: str | os.PathLike[str], *, alpha: bool = False, max_pixels: int | None = None
) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3), or RGBA (H, W, 4) with `alpha=True` (255 where it has none).

    EXIF orientation is applied; any unreadable file raises `ImageReadError` naming it.
    """
    p = Path(path)
    data = _read_file_bytes(p)
    return _image_to_array(_decode(data, p, max_pixels_limit(max_pixels)), alpha, p)


def decode_image(
    data: bytes, *, name: str = "<bytes>", alpha: bool = False, max_pixels: int | None = None
) -> np.ndarray:
    """Decode image bytes (e.g. an upload) with the same rules as `read_image`; errors name `name`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageReadError(f"expected bytes, got {type(data).__name__}", path=name)
    data = bytes(data)
    if not data:
        raise ImageReadError("data is empty (0 bytes)", path=name, hint="the upload or file is empty")
    return _image_to_array(_decode(data, name, max_pixels_limit(max_pixels)), alpha, name)


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) of an image from its header only (no pixel decoding), EXIF rotation applied."""
    p = Path(path)
    _check_readable_file(p)
    try:
        with open(p, "rb") as fp:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    with Image.open(fp) as im:
                        w, h = im.size
                        orientation = _header_orientation(im)
            except Image.DecompressionBombError as exc:
                # Pillow's own guard refuses to open it; a PNG header still gives the size.
                fp.seek(0)
                size = _png_ihdr_size(fp.read(24))
                if size is None:
                    raise ImageReadError(
                        f"Pillow refuses to open the header ({exc})", path=p, hint=_HINT_TOO_LARGE
                    ) from None
                return size
            except UnidentifiedImageError:
                fp.seek(0)
                head = fp.read(16)
                if head.startswith(_TIFF_PREFIXES):
                    w, h, orientation = _tiff_header(fp, p)
                else:
                    raise _unidentified_error(head, p) from None
    except BglabError:
        raise
    except Exception as exc:  # noqa: BLE001 -- Pillow raises many exception types on malformed headers
        raise _decode_error(exc, p) from None
    if orientation in _TRANSPOSED_ORIENTATIONS:
        w, h = h, w
    return int(w), int(h)


def _header_orientation(im: Image.Image) -> int:
    """EXIF orientation without decoding pixels (Pillow's PNG getexif would load the image)."""
    try:
        if im.format == "PNG":
            raw = im.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
        else:
            exif = im.getexif()
        return int(exif.get(_ORIENTATION_TAG, 1) or 1)
    except Exception:  # noqa: BLE001 -- a broken EXIF block is ignored, as when reading
        return 1


def _read_file_bytes(p: Path) -> bytes:
    _check_readable_file(p)
    try:
        data = p.read_bytes()
    except IsADirectoryError:
        raise _directory_error(p) from None
    except PermissionError:
        raise ImageReadError("permission denied", path=p, hint="check the file's permissions") from None
    except OSError as exc:
        raise ImageReadError(f"cannot read the file: {exc.strerror or exc}", path=p) from None
    if not data:
        raise ImageReadError(
            "file is empty (0 bytes)", path=p, hint="re-download or re-export it; the copy probably failed"
        )
    return data


def _check_readable_file(p: Path) -> None:
    if p.is_dir():
        raise _directory_error(p)
    if not p.exists():
        raise ImageReadError("file not found", path=p, hint=_missing_hint(p))


def _directory_error(p: Path) -> ImageReadError:
    return ImageReadError(
        "is a directory, not an image file", path=p, hint="pass a file, or list a folder with list_images()"
    )


def _missing_hint(p: Path) -> str:
    parent = p.parent
    if not parent.is_dir():
        return f"the folder {parent} does not exist either; check the path"
    try:
        stem = p.stem.lower()
        near = sorted(c.name for c in parent.iterdir() if c.stem.lower() == stem and c.name != p.name)[:3]
    except OSError:
        near = []
    if near:
        return "did you mean " + " or ".join(near) + "?"
    return "check the path and the current directory"


def _decode(data: bytes, name: str | Path, limit: int) -> Image.Image:
    """Open `data`, refuse it by header size, decode it fully and apply EXIF orientation."""
    try:
        with warnings.catch_warnings():
            # bglab applies its own limit below; Pillow's warning threshold is lower than ours.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                im = Image.open(io.BytesIO(data))
            except Image.DecompressionBombError as exc:
                raise _bomb_error(exc, data[:32], name, limit) from None
            except UnidentifiedImageError:
                if data.startswith(_TIFF_PREFIXES):
                    return _decode_tiff_with_cv2(data, name, limit)
                raise _unidentified_error(data[:512], name) from None
            _check_size(im.size, limit, name)
            if im.format == "PNG":
                problem = _png_chunk_problem(data)
                if problem is not None:
                    raise _problem_error(problem, name)
            im.load()  # the first frame of multi-frame files
            # A broken EXIF block should not make a readable image unreadable.
            with contextlib.suppress(Exception):
                ImageOps.exif_transpose(im, in_place=True)
            return im
    except BglabError:
        raise
    except Exception as exc:  # noqa: BLE001 -- Pillow raises OSError, SyntaxError, ValueError, struct.error, ...
        raise _decode_error(exc, name) from None


def _problem_error(problem: tuple[str, str], name: str | Path) -> ImageReadError:
    kind, detail = problem
    if kind == "truncated":
        return ImageReadError(f"truncated image: {detail}", path=name, hint=_HINT_TRUNCATED)
    return ImageReadError(f"corrupt image data: {detail}", path=name, hint=_HINT_CORRUPT)


def _png_chunk_problem(data: bytes) -> tuple[str, str] | None:
    """Walk the PNG chunks up to IEND checking CRCs (Pillow skips IDAT CRCs); bytes after IEND are ignored."""
    pos, n = 8, len(data)
    while True:
        if pos + 8 > n:
            return ("truncated", f"PNG ends at byte {n} before its IEND chunk")
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if end > n:
            return (
                "truncated",
                f"PNG chunk {ctype!r} at byte {pos} runs past the end of the file ({n} bytes)",
            )
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(data[pos + 4 : end - 4]) & 0xFFFFFFFF != crc:
            name = ctype.decode("latin-1")
            return ("corrupt", f"CRC mismatch in PNG chunk {name!r} at byte {pos}")
        if ctype == b"IEND":
            return None
        pos = end


def _sniff(head: bytes) -> str | None:
    for sig, fmt in _SIGNATURES:
        if head.startswith(sig):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return None


def _unidentified_error(head: bytes, name: str | Path) -> ImageReadError:
    fmt = _sniff(head)
    if fmt is not None:
        return ImageReadError(
            f"corrupt {fmt} header: the file starts like a {fmt} but cannot be parsed",
            path=name,
            hint=_HINT_CORRUPT,
        )
    sample = head[:512]
    if not sample.strip():
        return ImageReadError(
            "not an image: the file holds only blank or zero bytes", path=name, hint=_HINT_CORRUPT
        )
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text[:-4]):
        what = "HTML (a saved web page or error message?)" if "<" in text.lower()[:200] else "text"
        return ImageReadError(
            f"not an image: the file contains {what}",
            path=name,
            hint="check where the file came from; it has an image name but no image data",
        )
    return ImageReadError(
        "not a recognised image format",
        path=name,
        hint=f"supported formats: {_SUPPORTED}; the file may be corrupt or another format",
    )


def _decode_error(exc: Exception, name: str | Path) -> ImageReadError:
    text = str(exc) or type(exc).__name__
    low = text.lower()
    if isinstance(exc, MemoryError):
        return ImageReadError(
            "not enough memory to decode the image", path=name, hint="lower max_pixels or free memory"
        )
    if isinstance(exc, EOFError) or "truncated" in low or "premature end" in low:
        return ImageReadError(f"truncated image: {text}", path=name, hint=_HINT_TRUNCATED)
    if "not supported" in low or "unsupported" in low or "conversion from" in low:
        return ImageReadError(
            f"unsupported image variant: {text}",
            path=name,
            hint="convert it to 8-bit RGB PNG or JPEG with another tool",
        )
    return ImageReadError(f"corrupt image data: {type(exc).__name__}: {text}", path=name, hint=_HINT_CORRUPT)


def _tiff_header(fp: BinaryIO, name: str | Path) -> tuple[int, int, int]:
    """(width, height, orientation) from a TIFF's first IFD, without decoding pixels."""
    ifd = _tiff_ifd(fp, name)
    return ifd[256], ifd[257], int(ifd.get(274, 1) or 1)


def _tiff_ifd(fp: BinaryIO, name: str | Path) -> TiffImagePlugin.ImageFileDirectory_v2:
    fp.seek(0)
    head = fp.read(16)
    ifd = TiffImagePlugin.ImageFileDirectory_v2(head if head[2] == 43 else head[:8])
    fp.seek(ifd.next)
    ifd.load(fp)
    w, h = ifd.get(256), ifd.get(257)
    if not isinstance(w, int) or not isinstance(h, int):
        raise ImageReadError("corrupt TIFF header: no image width/height", path=name, hint=_HINT_CORRUPT)
    return ifd


def _as_tuple(value: object) -> tuple[object, ...]:
    return value if isinstance(value, tuple) else (value,)


def _decode_tiff_with_cv2(data: bytes, name: str | Path, limit: int) -> Image.Image:
    """Fallback for float or >8-bit TIFFs Pillow cannot identify (e.g. float RGB): OpenCV, size-checked first."""
    import cv2

    ifd = _tiff_ifd(io.BytesIO(data), name)
    high_depth = 3 in _as_tuple(ifd.get(339, 1)) or any(
        isinstance(b, int) and b > 8 for b in _as_tuple(ifd.get(258, 8))
    )
    if (
        not high_depth
    ):  # an ordinary TIFF that Pillow cannot parse is damaged; OpenCV is laxer, so do not ask it
        raise ImageReadError(
            "corrupt TIFF: the header parses but Pillow cannot read the image", path=name, hint=_HINT_CORRUPT
        )
    w, h, orientation = ifd[256], ifd[257], int(ifd.get(274, 1) or 1)
    _check_size((w, h), limit, name)
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.size == 0:
        raise ImageReadError(
            "TIFF variant not supported by Pillow or OpenCV",
            path=name,
            hint="convert it to 8-bit RGB TIFF/PNG with another tool",
        )
    if arr.ndim == 3 and arr.shape[2] in (1, 2):  # grey, grey + alpha: keep the grey
        arr = arr[..., 0]
    elif arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[..., [2, 1, 0, 3][: arr.shape[2]]]  # OpenCV gives BGR(A)
    elif arr.ndim != 2:
        raise ImageReadError(
            f"TIFF with {arr.shape[2]} channels is not supported", path=name, hint="export it as RGB or RGBA"
        )
    arr8 = _to_uint8(arr)
    im = Image.fromarray(np.ascontiguousarray(arr8))
    return _orient(im, orientation)


def _orient(im: Image.Image, orientation: int) -> Image.Image:
    ops = {
        2: [Image.Transpose.FLIP_LEFT_RIGHT],
        3: [Image.Transpose.ROTATE_180],
        4: [Image.Transpose.FLIP_TOP_BOTTOM],
        5: [Image.Transpose.TRANSPOSE],
        6: [Image.Transpose.ROTATE_270],
        7: [Image.Transpose.TRANSVERSE],
        8: [Image.Transpose.ROTATE_90],
    }.get(orientation, [])
    for op in ops:
        im = im.transpose(op)
    return im


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale integer or float pixel data to uint8: 16-bit >> 8; float [0, 1] x 255; other ranges min-max."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        a = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if lo >= 0 and hi <= 1:
            a = a * 255.0
        elif lo >= 0 and hi <= 255:
            pass
        elif lo >= 0 and hi <= 65535:
            a = a / 257.0
        else:
            a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        return np.clip(np.rint(a), 0, 255).astype(np.uint8)
    a = arr.astype(np.int64)
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    if arr.dtype.itemsize == 2 and lo >= 0:  # 16-bit: keep the high byte, like Pillow does for RGB;16
        return (a >> 8).astype(np.uint8)
    if lo >= 0 and hi <= 255:
        return a.astype(np.uint8)
    if lo >= 0 and hi <= 65535:
        return (a >> 8).astype(np.uint8)
    return ((a - lo) * 255 // max(hi - lo, 1)).astype(np.uint8)


def _high_depth_grey(im: Image.Image) -> np.ndarray | None:
    """uint8 (H, W) for 16/32-bit integer and float modes (I;16*, I, F); None for ordinary modes."""
    if im.mode.startswith("I;16"):
        return (np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)
    if im.mode in ("I", "F"):
        return _to_uint8(np.asarray(im))
    return None


def _image_to_array(im: Image.Image, alpha: bool, name: str | Path) -> np.ndarray:
    try:
        grey = _high_depth_grey(im)
        if grey is not None:
            chans = [grey] * 3 + ([np.full_like(grey, 255)] if alpha else [])
            return np.ascontiguousarray(np.stack(chans, axis=-1))
        if im.mode == "RGB" and not alpha:
            out = np.asarray(im)
        elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV") or (
            im.mode in ("RGB", "L", "1") and "transparency" not in im.info
        ):
            rgb = np.asarray(im.convert("RGB"))
            out = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]) if alpha else rgb
        else:  # modes with (possible) alpha: RGBA, LA, PA, P, RGBa, La, or colour keys via info['transparency']
            rgba = np.asarray(im.convert("RGBA"))
            out = rgba if alpha else rgba[..., :3]
        return np.ascontiguousarray(out, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001
        raise _decode_error(exc, name) from None


# --------------------------------------------------------------------------------------------------------------
# masks


def read_mask(
    path: str | os.PathLike[str], *, shape: tuple[int, ...] | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """Read a mask as uint8 (H, W); with `shape` (the image's (H, W[, C])) also check that the sizes match.

    L/1/P: luminance; RGB(A): the colour if grey, else a non-constant alpha, else luminance; 16-bit scaled >> 8.
    """
    p = Path(path)
    im = _decode(_read_file_bytes(p), p, max_pixels_limit(max_pixels))
    try:
        mask = _mask_array(im)
    except BglabError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _decode_error(exc, p) from None
    if shape is not None:
        check_mask_shape(mask, shape, path=p)
    return mask


def _mask_array(im: Image.Image) -> np.ndarray:
    grey = _high_depth_grey(im)
    if grey is not None:
        return np.ascontiguousarray(grey)
    if im.mode in ("L", "1", "P"):
        return np.ascontiguousarray(np.asarray(im.convert("L")))
    if im.mode in ("LA", "La", "PA"):
        la = np.asarray(im.convert("LA"))
        colour, a = la[..., 0], la[..., 1]
        if _constant(colour) and not _constant(a):
            return np.ascontiguousarray(a)
        return np.ascontiguousarray(colour)
    rgba = np.asarray(im.convert("RGBA"))
    r, g, b, a = (rgba[..., i] for i in range(4))
    grey_colour = np.array_equal(r, g) and np.array_equal(r, b)
    if grey_colour and not _constant(r):
        return np.ascontiguousarray(r)
    if im.mode in ("RGBA", "RGBa") and not _constant(a):
        return np.ascontiguousarray(a)
    return np.ascontiguousarray(np.asarray(im.convert("L")))


def _constant(a: np.ndarray) -> bool:
    return a.size == 0 or bool(a.min() == a.max())


def check_mask_shape(
    mask: np.ndarray, image_shape: tuple[int, ...], *, path: str | os.PathLike[str] | None = None
) -> None:
    """Raise `MaskError` unless `mask` is single-channel and its (H, W) equals `image_shape[:2]`."""
    shp = tuple(np.shape(mask))
    if len(shp) == 3 and shp[2] == 1:
        shp = shp[:2]
    if len(shp) != 2:
        raise MaskError(
            f"mask has shape {shp}; masks must be single-channel (H, W)",
            path=path,
            hint="use one channel (e.g. mask[..., 0] or the alpha channel), or read it with read_mask()",
        )
    if len(image_shape) < 2:
        raise MaskError(f"image shape {tuple(image_shape)} has no (H, W)", path=path)
    mh, mw = int(shp[0]), int(shp[1])
    ih, iw = int(image_shape[0]), int(image_shape[1])
    if (mh, mw) == (ih, iw):
        return
    if (mh, mw) == (iw, ih):
        raise MaskError(
            f"mask is {mw}x{mh} (WxH) but the image is {iw}x{ih}; the mask looks rotated/transposed",
            path=path,
            hint="EXIF orientation applied to the image but not the mask? re-export the mask upright, "
            "or rotate it to match",
        )
    same_aspect = abs(mw * ih - mh * iw) <= max(mw, mh, iw, ih)
    raise MaskError(
        f"mask is {mw}x{mh} (WxH) but the image is {iw}x{ih}; masks must match the image size",
        path=path,
        hint="resize with nearest neighbour, or regenerate"
        + ("; the aspect ratio matches, so a nearest-neighbour resize is safe" if same_aspect else ""),
    )


def write_mask(path: str | os.PathLike[str], mask: np.ndarray) -> Path:
    """Write a mask (bool, uint8, or float in [0, 1] scaled to 0..255) as an 8-bit single-channel PNG, atomically."""
    p = Path(path)
    if p.suffix.lower() != ".png":
        raise ImageWriteError(
            f"masks are written as PNG, not {p.suffix or '(no suffix)'}",
            path=p,
            hint="use a .png name (lossy formats would change mask values)",
        )
    arr = np.asarray(mask)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 or arr.size == 0:
        raise ImageWriteError(f"mask must be a non-empty (H, W) array, got shape {arr.shape}", path=p)
    if arr.dtype == np.bool_:
        out = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint8:
        out = arr
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageWriteError("mask contains NaN or infinite values", path=p)
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ImageWriteError(
                f"float mask values must lie in [0, 1], got [{lo:g}, {hi:g}]",
                path=p,
                hint="scale it to [0, 1], or pass uint8 0..255",
            )
        out = np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    else:
        raise ImageWriteError(
            f"mask dtype {arr.dtype} is not supported",
            path=p,
            hint="pass bool, uint8 (0..255) or float in [0, 1]",
        )
    data = _encode_pil(Image.fromarray(np.ascontiguousarray(out)), "PNG", {}, p)
    return _atomic_write(p, data, fsync=False, error=ImageWriteError)


# --------------------------------------------------------------------------------------------------------------
# writing


def encode_image(image: np.ndarray, fmt: str, *, quality: int = 95) -> bytes:
    """Encode uint8 (H, W), (H, W, 3) RGB or (H, W, 4) RGBA as "png", "jpeg"/"jpg" or "webp" bytes.

    `quality` (1-100) applies to JPEG and WebP; WebP at quality 100 is lossless.
    """
    return _encode(image, fmt, quality, None)


def _encode(image: np.ndarray, fmt: str, quality: int, path: Path | None) -> bytes:
    key = str(fmt).lower().lstrip(".")
    pil_fmt = _WRITE_FORMATS.get(key)
    if pil_fmt is None:
        raise ImageWriteError(f"cannot write format {fmt!r}", path=path, hint="use png, jpeg/jpg or webp")
    if not isinstance(image, np.ndarray):
        raise ImageWriteError(f"expected a numpy array, got {type(image).__name__}", path=path)
    if image.dtype != np.uint8:
        raise ImageWriteError(
            f"image dtype must be uint8, got {image.dtype}",
            path=path,
            hint="convert with np.clip(x, 0, 255).astype(np.uint8) (or x * 255 for [0, 1] floats)",
        )
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))) or image.size == 0:
        raise ImageWriteError(
            f"image shape must be (H, W), (H, W, 3) or (H, W, 4) and non-empty, got {image.shape}", path=path
        )
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ImageWriteError(f"quality must be an integer 1-100, got {quality!r}", path=path)
    has_alpha = image.ndim == 3 and image.shape[2] == 4
    if pil_fmt == "JPEG" and has_alpha:
        raise ImageWriteError(
            "JPEG cannot store an alpha channel",
            path=path,
            hint="write PNG or WebP to keep transparency, or drop it with image[..., :3]",
        )
    im = Image.fromarray(np.ascontiguousarray(image))
    opts: dict[str, object] = {}
    if pil_fmt == "JPEG":
        opts = {"quality": quality}
    elif pil_fmt == "PNG":
        opts = {"compress_level": PNG_COMPRESS_LEVEL}
    elif pil_fmt == "WEBP":
        opts = {"lossless": True, "quality": 100, "exact": True} if quality == 100 else {"quality": quality}
    return _encode_pil(im, pil_fmt, opts, path)


def _encode_pil(im: Image.Image, pil_fmt: str, opts: dict[str, object], path: Path | None) -> bytes:
    buf = io.BytesIO()
    try:
        im.save(buf, format=pil_fmt, **opts)
    except Exception as exc:  # noqa: BLE001 -- e.g. JPEG over 65535 px, WebP over 16383 px
        raise ImageWriteError(
            f"cannot encode {im.width}x{im.height} {im.mode} as {pil_fmt}: {exc}", path=path
        ) from None
    return buf.getvalue()


def write_image(path: str | os.PathLike[str], image: np.ndarray, *, quality: int = 95) -> Path:
    """Write an image atomically, format from the suffix (.png, .jpg/.jpeg, .webp); parent folders are created."""
    p = Path(path)
    fmt = _SUFFIX_FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise ImageWriteError(
            f"cannot write images with suffix {p.suffix or '(none)'!r}",
            path=p,
            hint="use .png, .jpg/.jpeg or .webp",
        )
    data = _encode(image, fmt, quality, p)
    return _atomic_write(p, data, fsync=False, error=ImageWriteError)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = False) -> Path:
    """Write `data` to `path` atomically (temp file in the same folder + os.replace); raises `BglabError`."""
    return _atomic_write(Path(path), bytes(data), fsync=fsync, error=BglabError)



def atomic_write_npz(path: str | os.PathLike[str], **arrays: Any) -> None:
    """Write ``arrays`` as an uncompressed ``.npz`` atomically (folders made as needed; read back with
    ``allow_pickle=False``)."""
    import io as _io

    buf = _io.BytesIO()
    np.savez(buf, **arrays)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write one array as ``.npy`` atomically, without pickles (folders made as needed)."""
    import io as _io

    buf = _io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_text(path: str | os.PathLike[str], text: str, *, fsync: bool = False) -> Path:
    """Write UTF-8 `text` to `path` atomically, like `atomic_write_bytes`.

    Non-UTF-8 file names inside `text` (lone surrogates from `os.fsdecode`) are written as ``\\xNN`` escapes
    (`bglab.errors.safe_text`), so a report naming such a file is always written."""
    return _atomic_write(Path(path), safe_text(text).encode("utf-8"), fsync=fsync, error=BglabError)


def _atomic_write(p: Path, data: bytes, *, fsync: bool, error: type[BglabError]) -> Path:
    if p.is_dir():
        raise error("destination is a directory", path=p, hint="give a file name")
    parent = p.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"cannot create the folder {parent}: {exc.strerror or exc}", path=p) from None
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{p.name}.{_TMP_PREFIX}{os.getpid()}-", suffix=".tmp")
    except OSError as exc:
        raise error(
            f"cannot write in {parent}: {exc.strerror or exc}",
            path=p,
            hint="check the folder's permissions and free space",
        ) from None
    try:
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                if fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~_UMASK)
            os.replace(tmp, p)
        except OSError as exc:
            raise error(
                f"cannot write the file: {exc.strerror or exc}",
                path=p,
                hint="check the folder's permissions and free space",
            ) from None
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if fsync:
        _fsync_dir(parent)
    return p


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------------------
# listing


def list_images(folder: str | os.PathLike[str], *, recursive: bool = True) -> list[Path]:
    """Image files under `folder` by `IMAGE_SUFFIXES` (any case), sorted; hidden files and folders are skipped.

    Sub-folders that cannot be read and symlink loops are left out here; `list_images_checked` reports them.
    """
    return list_images_checked(folder, recursive=recursive)[0]


def list_images_checked(
    folder: str | os.PathLike[str], *, recursive: bool = True
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Like `list_images`, plus ``(path, problem)`` for every input that cannot be listed or read.

    Problems: a sub-folder that cannot be read (permissions), a symlinked folder that leads back to a folder
    already listed (a symlink loop), and an image name that is not a readable file (a broken or looping symlink).
    Symlinked folders are followed (once each). The caller reports the problems as failures; nothing is
    silently left out.
    """
    root = Path(folder)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "folder not found"
        raise DatasetError(what, path=root, hint="pass the folder that holds the images")
    found: list[Path] = []
    problems: list[tuple[Path, str]] = []

    def onerror(exc: OSError) -> None:
        where = Path(exc.filename) if exc.filename else root
        problems.append((where, f"cannot read this folder: {exc.strerror or exc}; its images are not "
                                "processed (check its permissions)"))

    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=onerror):
        here = Path(dirpath)
        try:
            st = os.stat(here)
            ident = (st.st_dev, st.st_ino)
        except OSError as exc:
            onerror(exc)
            dirnames[:] = []
            continue
        if ident in seen:
            problems.append((here, "symlink loop: this folder leads back to one already listed; not followed"))
            dirnames[:] = []
            continue
        seen.add(ident)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            p = here / name
            if p.is_file():
                found.append(p)
            else:
                problems.append((p, "not a readable file (a broken symlink or a symlink loop?)"))
        if not recursive:
            break
    return sorted(found), problems


def remove_temp_files(folder: str | os.PathLike[str]) -> int:
    """Delete the temp files that killed atomic writes left under `folder`; returns the count.

    Only bglab's own temp files (``.<name>.bglab-<pid>-<random>.tmp``) whose writing process no longer runs
    are removed: a user's ``.draft.tmp`` and the temp file of a run still writing are never touched.
    """
    n = 0
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            m = _TMP_RE.match(name)
            if m is None or _pid_alive(int(m.group(1))):
                continue
            try:
                os.unlink(os.path.join(dirpath, name))
                n += 1
            except OSError:
                pass
    return n


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process is not writing while it cleans up
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _real(p: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(os.path.abspath(os.fspath(p))))


def relative_posix(path: str | os.PathLike[str], base: str | os.PathLike[str]) -> str:
    """``path`` relative to ``base`` when it lies under it, else absolute; always with forward slashes (how
    manifests and review keys name files, so they read the same on every system)."""
    ap, ab = Path(os.path.abspath(path)), Path(os.path.abspath(base))
    try:
        return ap.relative_to(ab).as_posix()
    except ValueError:
        return ap.as_posix()


def check_separate(sources: Iterable[str | os.PathLike[str]], dst: str | os.PathLike[str], *,
                   what: str = "output folder") -> None:
    """Refuse (`ConfigError`) a destination that overlaps a source, before anything is written.

    A source folder may not be `dst`, lie inside it, or hold it (outputs would replace the originals, or be read
    back as inputs by the next run); a source file may not lie inside `dst`. Symlinks are resolved. This holds
    with ``--overwrite`` too: it is the one check every batch command (remove, preprocess, variants, key) uses.
    """
    out = _real(dst)
    for src in sources:
        s = _real(src)
        if s.is_dir():
            if s == out:
                problem = f"the {what} is the source folder {src}"
            elif s in out.parents:
                problem = f"the {what} lies inside the source folder {src}"
            elif out in s.parents:
                problem = f"the source folder {src} lies inside the {what}"
            else:
                continue
        elif out in s.parents or s == out:
            problem = f"the source file {src} lies inside the {what}"
        else:
            continue
        raise ConfigError(f"{problem}: outputs would replace or mix with the inputs", path=dst,
                          hint="choose an output folder outside the inputs (nothing was written)")


def prepare_output_dir(dst: str | os.PathLike[str], *, what: str = "output folder") -> Path:
    """Create `dst` (with parents) and check that it is a writable folder; a clean `ConfigError` otherwise."""
    p = Path(dst)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"the {what} is an existing file, not a folder", path=p,
                          hint="give a folder path (it is created when missing)")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"cannot create the {what}: a file is in the way", path=p,
                          hint="give a folder path whose parents are folders") from None
    except OSError as exc:
        raise ConfigError(f"cannot create the {what}: {exc.strerror or exc}", path=p,
                          hint="check the parent folder's permissions, or choose another folder") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise ConfigError(f"the {what} is not writable", path=p,
                          hint="check its permissions, or choose another folder")
    return p


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (model and weights checksums)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
