"""The web page end to end: ``bglab serve`` as a subprocess, driven in headless Chromium with the keyboard.

Needs Debian's ``chromium`` at /usr/bin/chromium (``.ci/run`` installs it) and the ``playwright`` Python
package (extra ``dev``); Playwright's own browser downloads are never used. Skips with the reason otherwise.
The screenshot goes to ``out/test-artifacts/web_e2e.png``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import shared_path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("BGLAB_CHROMIUM", "/usr/bin/chromium"))
ARTIFACT = REPO / "out" / "test-artifacts" / "web_e2e.png"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("fastapi", reason="the 'serve' extra is not installed")
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "BGLAB_THREADS": "1"}
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "bglab.cli.app", "serve", "--backend", "chroma",
                                 "--port", str(port), "--log-level", "warning"],
                                stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if proc.poll() is not None:
                pytest.fail(f"bglab serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url + "/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        break
            time.sleep(0.1)
        else:
            pytest.fail(f"bglab serve did not answer in 30 s: {log.read_text()[-2000:]}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set BGLAB_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package (extra 'dev') "
                                   "is not installed")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def test_web_page_with_keyboard(server, browser):
    photo = sorted(shared_path("rps", "webcam", "scissors").glob("*.png"))[0]
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: problems.append(f"external request {r.url}")
            if not r.url.startswith((server, "data:", "blob:")) else None)
    page.goto(server + "/")
    page.wait_for_selector("#backend option[value=chroma]", state="attached")
    assert page.eval_on_selector("#backend", "s => s.value") == "chroma"

    # a bad file: a clear message in the live region, no crash
    page.set_input_files("#image", files=[{"name": "notes.jpg", "mimeType": "image/jpeg",
                                           "buffer": b"these are my notes, not a picture"}])
    page.focus("#go")
    page.keyboard.press("Enter")
    page.wait_for_selector("#message.error")
    message = page.inner_text("#message")
    assert "notes.jpg" in message and "not an image" in message
    assert page.get_attribute("#message", "aria-live") == "polite"
    # no broken-image icon beside the message: the preview of a file the browser cannot draw stays hidden
    assert page.is_hidden("#original") and page.get_attribute("#original", "src") is None
    assert page.is_hidden("#mask") and page.is_hidden("#result")

    # a real photo, driven with the keyboard: arrows pick the mode, Tab reaches the button, Enter runs it
    page.set_input_files("#image", str(photo))
    page.focus("input[name=mode][value=cutout]")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert page.eval_on_selector("input[name=mode]:checked", "r => r.value") == "color"
    assert page.is_visible("#color") and not page.is_visible("#blur")
    for _ in range(12):
        if page.evaluate("document.activeElement.id") == "go":
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "go", "the button is reachable with Tab"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none"), "keyboard focus is visible"
    page.keyboard.press("Enter")
    # a function, not an expression string: the page's CSP forbids eval
    page.wait_for_function("() => document.getElementById('result').naturalWidth > 0"
                           " && document.getElementById('mask').naturalWidth > 0", timeout=30_000)
    assert "Done" in page.inner_text("#message")
    sizes = page.evaluate("['original', 'mask', 'result'].map(id => { const i = document.getElementById(id);"
                          " return [i.naturalWidth, i.naturalHeight]; })")
    assert sizes == [[300, 200]] * 3
    # the background at the left edge is the page's default colour, white (bglab.io.colors); the hand is kept
    corner = page.evaluate("""() => { const i = document.getElementById('result');
        const c = document.createElement('canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight;
        const g = c.getContext('2d'); g.drawImage(i, 0, 0); return Array.from(g.getImageData(2, 100, 1, 1).data); }""")
    assert corner == [255, 255, 255, 255]
    assert page.get_attribute("#download", "href").startswith("blob:")
    assert page.get_attribute("#download", "download").endswith("_color.png")
    assert page.is_visible("#download")
    assert page.is_visible("#original")
    shot = page.screenshot(full_page=True)  # the screenshot artefact below shows the good result

    # an error after a good result clears that result: Swap without a background image
    page.check("input[name=mode][value=swap]")
    page.click("#go")
    page.wait_for_selector("#message.error")
    assert "needs a new background image" in page.inner_text("#message")
    for sel in ("#result", "#mask", "#download"):
        assert page.is_hidden(sel), f"{sel} still shows the previous result next to the error"
    assert page.get_attribute("#result", "src") is None
    assert page.is_visible("#original")  # the chosen photo stays

    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_bytes(shot)
    assert ARTIFACT.stat().st_size > 10_000
    expected = "status of 422"  # the browser logs the refused bad file; the page handled it above
    assert not [p for p in problems if expected not in p], problems
    page.close()


def test_docs_page_lists_endpoints(server, browser):
    page = browser.new_page()
    page.goto(server + "/docs")
    page.wait_for_selector(".endpoint")
    text = page.inner_text("#api-docs")
    for needed in ("POST /api/remove", "POST /api/segment", "GET /api/backends", "GET /healthz", "cutout | mask"):
        assert needed in text
    page.close()
