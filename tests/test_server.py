"""The HTTP server (``bglab serve``) through the real app: real photos, the bad-input corpus, every limit."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import io
import json
import sys
import threading
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the 'serve' extra is not installed (pip install 'bglab[serve]')")
pytest.importorskip("multipart", reason="python-multipart (extra 'serve') is not installed")
pytest.importorskip("httpx", reason="httpx (extra 'dev') is needed by FastAPI's TestClient")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # newer Starlette warns that its TestClient will move to httpx2
    from fastapi.testclient import TestClient

from badinput import make_bad_corpus, png_bytes  # noqa: E402

from bglab.errors import ConfigError  # noqa: E402
from bglab.foreground import registry  # noqa: E402
from bglab.foreground.base import SegmenterBase  # noqa: E402
from bglab.serve.app import LimitsMiddleware, create_app  # noqa: E402
from bglab.serve.settings import ServerSettings  # noqa: E402
from tests.conftest import shared_path  # noqa: E402


def make_client(**settings: object) -> TestClient:
    settings.setdefault("backend", "chroma")
    return TestClient(create_app(ServerSettings(**settings)), raise_server_exceptions=False, base_url="http://127.0.0.1")


@pytest.fixture(scope="module")
def client() -> TestClient:
    return make_client()


@pytest.fixture(scope="module")
def webcam_png() -> bytes:
    return sorted(shared_path("rps", "webcam", "paper").glob("*.png"))[0].read_bytes()


def assert_error(resp, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert set(err) == {"code", "message"} and err["message"]
    if code is not None:
        assert err["code"] == code, err
    return err


def decode(resp) -> Image.Image:
    im = Image.open(io.BytesIO(resp.content))
    im.load()
    return im


# --------------------------------------------------------------------------------------------------------------
# real photos


def test_remove_every_mode_on_a_webcam_photo(client, webcam_png):
    original = np.asarray(Image.open(io.BytesIO(webcam_png)).convert("RGB"))
    files = {"image": ("hand.png", webcam_png, "image/png")}

    cut = client.post("/api/remove", files=files)
    assert cut.status_code == 200 and cut.headers["content-type"] == "image/png"
    rgba = np.asarray(decode(cut))
    assert rgba.shape == (200, 300, 4)
    assert rgba[:, :5, 3].max() < 30, "the green screen at the left edge must be transparent"
    coverage = float(cut.headers["x-bglab-coverage"])
    assert 0.05 < coverage < 0.9 and cut.headers["x-bglab-backend"] == "chroma"

    mask = np.asarray(decode(client.post("/api/remove", files=files, data={"mode": "mask"})))
    assert mask.shape == (200, 300) and np.array_equal(mask > 127, rgba[..., 3] > 127)

    red = np.asarray(decode(client.post("/api/remove", files=files, data={"mode": "color", "color": "#ff0000"})))
    assert tuple(red[100, 1]) == (255, 0, 0)
    fg = rgba[..., 3] == 255
    assert np.array_equal(red[fg], original[fg]), "foreground pixels are kept exactly"

    blur = np.asarray(decode(client.post("/api/remove", files=files, data={"mode": "blur", "blur": "8"})))
    assert blur.shape == original.shape and np.array_equal(blur[fg], original[fg])

    crop = decode(client.post("/api/remove", files=files, data={"mode": "crop", "margin": "0"}))
    assert crop.width < 300 or crop.height < 200


def test_swap_needs_and_uses_a_background(client, webcam_png):
    files = {"image": ("hand.png", webcam_png, "image/png")}
    assert_error(client.post("/api/remove", files=files, data={"mode": "swap"}), 400, "bad_parameter")
    bg_path = sorted(shared_path("backgrounds").glob("*.jpg"))[0]
    resp = client.post("/api/remove", data={"mode": "swap"},
                       files={**files, "background": ("bg.jpg", bg_path.read_bytes(), "image/jpeg")})
    assert resp.status_code == 200
    out = np.asarray(decode(resp))
    original = np.asarray(Image.open(io.BytesIO(webcam_png)).convert("RGB"))
    assert out.shape == original.shape
    assert np.abs(out[:, :20].astype(int) - original[:, :20]).mean() > 20, "the green screen was replaced"
    broken = client.post("/api/remove", data={"mode": "swap"},
                         files={**files, "background": ("bg.jpg", b"not an image at all", "image/jpeg")})
    assert "background" in assert_error(broken, 422, "bad_image")["message"]


def test_output_formats(client, webcam_png):
    files = {"image": ("hand.png", webcam_png, "image/png")}
    webp = client.post("/api/remove", files=files, data={"format": "webp"})
    assert webp.headers["content-type"] == "image/webp" and decode(webp).mode == "RGBA"
    jpeg = client.post("/api/remove", files=files, data={"format": "jpeg", "mode": "color"})
    assert jpeg.headers["content-type"] == "image/jpeg" and jpeg.content[:3] == b"\xff\xd8\xff"
    assert "JPEG" in assert_error(client.post("/api/remove", files=files, data={"format": "jpeg"}),
                                  400, "bad_parameter")["message"]


def test_segment_json(client, webcam_png):
    resp = client.post("/api/segment", files={"image": ("hand.png", webcam_png)})
    assert resp.status_code == 200
    body = resp.json()
    assert (body["width"], body["height"], body["backend"]) == (300, 200, "chroma")
    assert 0.05 < body["coverage"] < 0.9
    assert body["boxes"], "a hand on a green screen is one foreground region at least"
    for x0, y0, x1, y1 in body["boxes"]:
        assert 0 <= x0 < x1 <= 300 and 0 <= y0 < y1 <= 200
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask_png_base64"]))))
    assert mask.shape == (200, 300) and mask.dtype == np.uint8
    assert abs((mask >= 128).mean() - body["coverage"]) < 0.01
    x0, y0, x1, y1 = body["boxes"][0]
    assert (mask[y0:y1, x0:x1] >= 128).sum() > 0.9 * (mask >= 128).sum(), "the first box holds the hand"


def test_sxsw_jpeg_without_screen(client):
    path = sorted(shared_path("rps", "sxsw", "paper").glob("*.jpg"))[0]
    with Image.open(path) as im:
        size = im.size
    body = client.post("/api/segment", files={"image": (path.name, path.read_bytes())}).json()
    assert (body["width"], body["height"]) == size
    assert body["coverage"] == 1.0, "chroma keeps everything when there is no screen (documented)"
    resp = client.post("/api/remove", files={"image": (path.name, path.read_bytes())}, data={"mode": "color"})
    assert resp.status_code == 200 and decode(resp).size == size


def test_default_unet_backend_serves_a_mask():
    from bglab.foreground.unet import DEFAULT_MODEL

    if not DEFAULT_MODEL.exists():
        pytest.skip(f"the U-Net model is not trained yet ({DEFAULT_MODEL} missing)")
    # the shipped model's domain (webcam hands); its quality on other scenes is measured in bench/
    path = sorted(shared_path("rps", "webcam", "rock").glob("*.png"))[0]
    client = make_client(backend="unet")
    body = client.post("/api/segment", files={"image": (path.name, path.read_bytes())}).json()
    assert body["backend"] == "unet" and 0.02 < body["coverage"] < 0.95, body.get("coverage")
    assert client.get("/healthz").json()["loaded_backends"] == ["unet"]


# --------------------------------------------------------------------------------------------------------------
# bad input


def test_bad_input_corpus_gives_json_errors_never_500(client, tmp_path):
    cases = make_bad_corpus(tmp_path)
    checked = 0
    for name, case in cases.items():
        if case.role != "image" or not case.path.is_file():
            continue  # a missing file or a folder cannot be uploaded
        data = case.path.read_bytes()
        # the file name and content type lie on purpose: content decides
        resp = client.post("/api/remove", files={"image": ("photo.jpg", data, "image/jpeg")},
                           data={"mode": "mask"})
        if case.kind == "ok":
            assert resp.status_code == 200, (name, resp.text)
            assert decode(resp).size == (case.shape[1], case.shape[0]), name
        else:
            err = assert_error(resp, 422, "bad_image")
            assert case.message in err["message"].lower(), (name, err)
        checked += 1
    assert checked >= 25


def test_bomb_header_is_refused_before_decoding(client):
    bomb = png_bytes(30000, 30000, b"\x00" * 64)
    err = assert_error(client.post("/api/segment", files={"image": ("bomb.png", bomb)}), 422, "bad_image")
    assert "too large" in err["message"]


def test_max_pixels_setting(webcam_png):
    small = make_client(max_pixels=10_000)
    err = assert_error(small.post("/api/remove", files={"image": ("a.png", webcam_png)}), 422, "bad_image")
    assert "60,000" in err["message"] and "10,000" in err["message"]


def test_upload_over_the_limit_is_413(webcam_png):
    small = make_client(max_upload_bytes=4096)
    resp = small.post("/api/remove", files={"image": ("a.png", webcam_png)})
    assert "upload limit" in assert_error(resp, 413, "too_large")["message"]

    def chunks():  # no Content-Length: counted while streaming
        for _ in range(10):
            yield b"x" * 1000

    resp = small.post("/api/remove", content=chunks(),
                      headers={"content-type": "multipart/form-data; boundary=zzz"})
    assert_error(resp, 413, "too_large")


def test_body_limit_stops_reading_the_stream():
    """The middleware refuses while the body streams in: later chunks are never read."""
    pulled = []

    async def inner(scope, receive, send):
        while True:
            msg = await receive()
            if not msg.get("more_body"):
                break

    async def receive():
        pulled.append(1)
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}

    async def run():
        from starlette.exceptions import HTTPException

        mw = LimitsMiddleware(inner, max_bytes=2500)
        scope = {"type": "http", "method": "POST", "path": "/api/remove", "headers": []}
        with pytest.raises(HTTPException) as info:
            await mw(scope, receive, lambda m: asyncio.sleep(0))
        return info.value

    exc = asyncio.run(run())
    assert exc.status_code == 413 and len(pulled) == 3


def test_backend_choice(client, webcam_png):
    files = {"image": ("a.png", webcam_png)}
    assert "chroma" in assert_error(client.post("/api/remove", files=files, data={"backend": "nope"}),
                                    400, "unknown_backend")["message"]
    err = assert_error(client.post("/api/segment", files=files, data={"backend": "mask-files"}),
                       400, "backend_not_allowed")
    assert "path" in err["message"]
    assert_error(client.post("/api/remove", files=files, data={"backend": "full"}), 400, "unknown_backend")
    listed = {b["name"]: b for b in client.get("/api/backends").json()}
    assert listed["mask-files"]["served"] is False and listed["chroma"]["served"] is True
    assert listed["chroma"]["default"] is True and listed["chroma"]["kind"] == "segmenter"
    assert all(set(b) >= {"name", "kind", "available", "summary"} for b in listed.values())
    only = make_client(backends=("chroma",))
    assert_error(only.post("/api/remove", files=files, data={"backend": "grabcut"}), 400, "backend_not_allowed")
    with pytest.raises(ConfigError):
        ServerSettings(backend="mask-files")


def test_validation_and_routing_errors_are_json(client, webcam_png):
    assert "image" in assert_error(client.post("/api/remove"), 422, "validation_error")["message"]
    files = {"image": ("a.png", webcam_png)}
    assert "mode" in assert_error(client.post("/api/remove", files=files, data={"mode": "paint"}),
                                  422, "validation_error")["message"]
    assert_error(client.post("/api/segment", files=files, data={"threshold": "2"}), 422, "validation_error")
    assert_error(client.post("/api/remove", files=files, data={"color": "sky"}), 400, "bad_parameter")
    assert_error(client.post("/api/remove", data={"image": "not a file"}), 422, "validation_error")
    assert_error(client.get("/no/such/page"), 404, "not_found")
    assert_error(client.get("/api/remove"), 405, "method_not_allowed")
    assert_error(client.get("/static/../../etc/passwd"), 404)
    assert_error(client.get("/static/index.py"), 404, "not_found")


# --------------------------------------------------------------------------------------------------------------
# concurrency limit and timeout, with a slow fake backend


class _SlowSegmenter(SegmenterBase):
    name = "slow-test"

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def predict(self, image: np.ndarray, *, source: Path | None = None) -> np.ndarray:
        self.calls += 1
        self.started.set()
        self.release.wait(20)
        return np.ones(image.shape[:2], np.float32)


@pytest.fixture()
def slow_backend(monkeypatch):
    seg = _SlowSegmenter()
    module = types.ModuleType("bglab_test_slow_backend")
    module.create = lambda runtime, **options: seg  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(registry._BACKENDS, "slow-test", registry.BackendInfo(
        "slow-test", "segmenter", module.__name__, "create", "test backend: blocks until released"))
    yield seg
    seg.release.set()


def test_busy_server_answers_503_with_retry_after(slow_backend, webcam_png):
    app = create_app(ServerSettings(backend="slow-test", concurrency=1, queue=0, timeout=30))
    files = {"image": ("a.png", webcam_png)}
    with TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1") as client, \
            concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/api/segment", files=files)
        assert slow_backend.started.wait(10), "the first request reached the backend"
        busy = client.post("/api/segment", files=files)
        assert_error(busy, 503, "busy")
        assert int(busy.headers["retry-after"]) >= 1
        assert client.get("/healthz").json()["pending"] == 1, "health checks are not queued behind work"
        slow_backend.release.set()
        assert first.result(20).status_code == 200
        assert client.post("/api/segment", files=files).status_code == 200, "the slot was given back"
    assert slow_backend.calls == 2, "the refused request never reached the model"


def test_slow_request_answers_504_and_frees_its_slot(slow_backend, webcam_png):
    app = create_app(ServerSettings(backend="slow-test", concurrency=1, queue=0, timeout=0.3))
    files = {"image": ("a.png", webcam_png)}
    with TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1") as client:
        err = assert_error(client.post("/api/remove", files=files), 504, "timeout")
        assert "0.3 s" in err["message"]
        assert client.get("/healthz").json()["pending"] == 1, "the timed-out job still holds its slot"
        assert_error(client.post("/api/remove", files=files), 503, "busy")
        slow_backend.release.set()
        for _ in range(200):
            if client.get("/healthz").json()["pending"] == 0:
                break
            threading.Event().wait(0.02)
        assert client.get("/healthz").json()["pending"] == 0
        assert client.post("/api/remove", files=files).status_code == 200


def test_unexpected_backend_failure_is_a_json_500(monkeypatch, webcam_png):
    class Broken(SegmenterBase):
        name = "broken-test"

        def predict(self, image, *, source=None):
            raise RuntimeError("secret internal detail")

    module = types.ModuleType("bglab_test_broken_backend")
    module.create = lambda runtime, **options: Broken()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(registry._BACKENDS, "broken-test", registry.BackendInfo(
        "broken-test", "segmenter", module.__name__, "create", "test backend: always fails"))
    client = make_client(backend="broken-test")
    err = assert_error(client.post("/api/segment", files={"image": ("a.png", webcam_png)}), 500, "internal_error")
    assert "RuntimeError" in err["message"] and "secret" not in err["message"]
    assert client.get("/healthz").json()["pending"] == 0


# --------------------------------------------------------------------------------------------------------------
# docs, page, settings


def test_openapi_is_valid_and_complete(client):
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.") and spec["info"]["title"] == "bglab"
    assert {"/api/remove", "/api/segment", "/api/backends", "/healthz"} <= set(spec["paths"])
    refs = []

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(spec)
    for ref in refs:  # every reference resolves
        target = spec
        for key in ref.lstrip("#/").split("/"):
            target = target[key]
    body = spec["paths"]["/api/remove"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    props = spec["components"]["schemas"][body["$ref"].split("/")[-1]]["properties"]
    assert {"image", "background", "backend", "mode", "color", "blur", "margin", "threshold", "format"} <= set(props)
    assert props["mode"]["enum"] == ["cutout", "mask", "color", "colour", "blur", "swap", "crop"]  # colour = color
    json.dumps(spec)


def test_pages_are_offline_and_safe(client):
    for path in ("/", "/docs"):
        resp = client.get(path)
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in resp.headers["content-security-policy"]
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert "/static/app.js" in resp.text
    web = Path(__file__).resolve().parents[1] / "bglab" / "serve" / "web"
    for f in ("index.html", "app.js", "style.css"):
        text = (web / f).read_text()
        assert "http://" not in text and "https://" not in text, f"{f} must not load anything external"
        assert client.get(f"/static/{f}" if f != "index.html" else "/").text == text
    page = client.get("/").text
    for needed in ('<input id="image"', '<label for="image"', 'aria-live="polite"', '<button id="go"'):
        assert needed in page


def test_settings_env_roundtrip():
    s = ServerSettings(port=9000, workers=2, backend="chroma", backends=("chroma", "grabcut"), timeout=2.5)
    env = s.to_env()
    assert env["BGLAB_SERVE_WORKERS"] == "2" and env["BGLAB_SERVE_BACKENDS"] == "chroma,grabcut"
    assert ServerSettings.from_env(env) == s
    assert ServerSettings.from_env({}) == ServerSettings()
    with pytest.raises(ConfigError, match="BGLAB_SERVE_PORT"):
        ServerSettings.from_env({"BGLAB_SERVE_PORT": "eighty"})
    with pytest.raises(ConfigError, match="concurrency"):
        ServerSettings(concurrency=0)
    assert ServerSettings(workers=2, threads=0).session_threads >= 1


def test_serve_command_options_all_have_help():
    import inspect

    from bglab.cli.serve import serve

    for name, param in inspect.signature(serve).parameters.items():
        assert getattr(param.default, "help", None), f"--{name} has no help text"


def test_serve_command_refuses_bad_settings_before_starting(capsys):
    from bglab.cli.app import main

    assert main(["serve", "--backend", "nope"]) == 2
    assert main(["serve", "--backend", "mask-files"]) == 2
    assert main(["serve", "--backend", "full"]) == 2
    err = capsys.readouterr().err
    assert "unknown backend 'nope'" in err and "cannot be served" in err and "not a segmenter" in err
