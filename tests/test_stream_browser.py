"""The browser page plays streamed frames: headless Debian Chromium drives the real page over the real server."""

from __future__ import annotations

import shutil

import pytest

from stream_fixtures import face_like_image, tiny_engine, write_wav
from vividhead.inference.server import BackgroundServer, StreamServer, access_policy

pytestmark = pytest.mark.usefixtures("one_thread")   # tiny models on a shared 2-core CPU

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"Debian chromium not installed at {CHROMIUM}")
@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"], ids=["loopback", "all-addresses-with-token"])
def test_page_plays_streamed_frames(tmp_path, host):
    """The page streams on loopback, and off loopback from the printed URL (the token travels to the WebSocket)."""
    playwright = pytest.importorskip("playwright.sync_api")
    engine = tiny_engine(tmp_path / "ckpt")
    access = access_policy(host)
    server = BackgroundServer(StreamServer(engine, engine.reference(face_like_image()), access=access), host=host)
    wav = write_wav(tmp_path / "speech.wav", 2.0)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page()
            page.goto(server.url + "/" + (f"?token={access.token}" if access.token else ""))
            page.set_input_files("#file", str(wav))
            page.click("#upload")
            page.wait_for_function("window.vividhead.done && window.vividhead.framesShown > 0", timeout=90_000)
            state = page.evaluate("window.vividhead")
            playing = page.evaluate("({t: document.getElementById('video').currentTime, "
                                    "mse: MediaSource.isTypeSupported(window.vividhead.mime)})")
            text = {key: page.inner_text(f"#{key}") for key in ("chunks", "latency", "fps", "firstPage")}
            browser.close()
    finally:
        server.stop()
    assert playing["mse"] and state["errors"] == []
    assert state["chunks"] == 2 and state["stats"]["frames"] == 50          # 2 s of audio = 33 + 17 frames
    assert state["framesShown"] > 0 and playing["t"] > 0
    assert text["chunks"] == "2" and text["latency"].endswith("ms") and text["firstPage"].endswith("ms")


