"""Issue 13 item 6: image URLs in requests are fetched only as A1111's options allow, with a size limit and a
timeout, and never from a local address when api_forbid_local_requests is on -- redirects included."""

from __future__ import annotations

import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from webui.api import image_input
from webui.api.errors import ApiError


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


class _Handler(BaseHTTPRequestHandler):
    routes: dict = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        action = self.routes.get(self.path, ("404", None))
        kind, value = action
        if kind == "png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(value)
        elif kind == "redirect":
            self.send_response(302)
            self.send_header("Location", value)
            self.end_headers()
        elif kind == "slow":
            time.sleep(value)
            self.send_response(200)
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    port = httpd.server_address[1]
    _Handler.routes = {
        "/img.png": ("png", _png()),
        "/big.png": ("png", _png() + b"\0" * 5000),
        "/to-local": ("redirect", f"http://127.0.0.2:{port}/img.png"),
        "/slow": ("slow", 2.0),
    }
    yield f"http://127.0.0.1:{port}"
    httpd.shutdown()


def _options(**kw):
    values = {"api_enable_requests": True, "api_forbid_local_requests": True, "api_useragent": ""}
    values.update(kw)
    return values.get


def test_local_fetch_only_when_allowed(server):
    url = f"{server}/img.png"
    image = image_input.decode_image_input(url, "init_images[0]", _options(api_forbid_local_requests=False))
    assert image.size == (8, 8) and image.getpixel((0, 0))[:3] == (10, 20, 30)
    with pytest.raises(ApiError) as e:
        image_input.decode_image_input(url, "init_images[0]", _options())
    assert e.value.status_code == 403 and e.value.detail == "Request to local resource not allowed"
    with pytest.raises(ApiError) as e:
        image_input.decode_image_input(url, "init_images[0]", _options(api_enable_requests=False))
    assert e.value.status_code == 403 and e.value.detail == "Requests not allowed"


def test_a_redirect_into_a_local_address_is_refused(server, monkeypatch):
    # 127.0.0.1 plays a global host; its redirect leads to 127.0.0.2, a local one: refused at connect time
    monkeypatch.setattr(image_input, "_address_allowed", lambda ip: ip == "127.0.0.1")
    ok = image_input.decode_image_input(f"{server}/img.png", "mask", _options())
    assert ok.size == (8, 8)
    with pytest.raises(ApiError) as e:
        image_input.decode_image_input(f"{server}/to-local", "mask", _options())
    assert e.value.status_code == 403 and "127.0.0.2" in str(e.value.errors)


def test_size_limit_and_timeout(server, monkeypatch):
    monkeypatch.setattr(image_input, "MAX_URL_BYTES", 1000)
    with pytest.raises(ApiError, match="larger than 1000 bytes"):
        image_input.decode_image_input(f"{server}/big.png", "init_images[0]",
                                       _options(api_forbid_local_requests=False))
    monkeypatch.setattr(image_input, "URL_TIMEOUT_S", 0.3)
    started = time.time()
    with pytest.raises(ApiError) as e:
        image_input.decode_image_input(f"{server}/slow", "init_images[0]", _options(api_forbid_local_requests=False))
    assert e.value.status_code == 400 and time.time() - started < 1.8


def test_verify_url_checks_every_address():
    assert image_input.verify_url("http://127.0.0.1:8000/x.png") is False
    assert image_input.verify_url("http://localhost/x.png") is False
    assert image_input.verify_url("not a url") is False
