"""`tiling` over /sdapi/v1 (txt2img and img2img), and "Tiling: True" from a pasted infotext, as in A1111 1.10."""

from __future__ import annotations

import base64
import io
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from webui.app import build_app
from webui.config import parse


@pytest.fixture
def client(data_dir):
    config = parse(["--nowebui", "--data-dir", str(data_dir), "--skip-load-model-at-start"])
    with TestClient(build_app(config)) as c:
        yield c


BODY = {"prompt": "a cat", "steps": 2, "width": 64, "height": 64, "seed": 11, "sampler_name": "Euler"}


def test_txt2img_tiling_field_and_echo(client):
    on = client.post("/sdapi/v1/txt2img", json={**BODY, "tiling": True}).json()
    off = client.post("/sdapi/v1/txt2img", json=BODY).json()
    assert on["parameters"]["tiling"] is True and off["parameters"]["tiling"] is None  # A1111: vars(request)
    assert "Tiling: True" in json.loads(on["info"])["infotexts"][0]
    assert "Tiling" not in json.loads(off["info"])["infotexts"][0]
    assert on["images"][0] != off["images"][0]
    # scoped: the next plain request is the same as before
    assert client.post("/sdapi/v1/txt2img", json=BODY).json()["images"][0] == off["images"][0]


def test_img2img_tiling_and_infotext_paste(client):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 30, 200)).save(buf, "PNG")
    body = {**BODY, "init_images": [base64.b64encode(buf.getvalue()).decode()], "denoising_strength": 0.6}
    on = client.post("/sdapi/v1/img2img", json={**body, "tiling": True}).json()
    assert "Tiling: True" in json.loads(on["info"])["infotexts"][0]
    # A1111 1.10: option "tiling" has infotext="Tiling", so a pasted "Tiling: True" joins override_settings
    pasted = client.post("/sdapi/v1/txt2img", json={**BODY, "infotext": "a cat\nSteps: 2, Seed: 11, Tiling: True"})
    assert "Tiling: True" in json.loads(pasted.json()["info"])["infotexts"][0]
