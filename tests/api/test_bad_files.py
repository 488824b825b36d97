"""Issue 13 item 4: one bad VAE, LoRA, embedding, upscaler or ControlNet file gives one clear message naming it, and
everything else goes on working."""

from __future__ import annotations

import base64
import io
import json
import os

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from webui.app import build_app
from webui.config import parse

BODY = {"prompt": "a cat", "steps": 1, "width": 64, "height": 64, "seed": 1, "sampler_name": "Euler"}


def _garbage(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"not a model file at all" * 10)


@pytest.fixture
def client(data_dir):
    _garbage(str(data_dir / "models" / "VAE" / "broken-vae.safetensors"))
    _garbage(str(data_dir / "models" / "Lora" / "broken-lora.safetensors"))
    _garbage(str(data_dir / "embeddings" / "broken-emb.pt"))
    _garbage(str(data_dir / "models" / "ESRGAN" / "broken-up.pth"))
    _garbage(str(data_dir / "models" / "ControlNet" / "broken-cn.safetensors"))
    config = parse(["--nowebui", "--data-dir", str(data_dir), "--skip-load-model-at-start"])
    with TestClient(build_app(config)) as c:
        yield c


def _b64(image):
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_each_bad_file_is_named_and_the_rest_works(client):
    assert client.post("/sdapi/v1/txt2img", json=BODY).status_code == 200
    # VAE
    r = client.post("/sdapi/v1/txt2img", json={**BODY, "override_settings": {"sd_vae": "broken-vae.safetensors"}})
    assert 400 <= r.status_code < 500 and "broken-vae" in json.dumps(r.json())
    # LoRA: the image is made, the failure is named in the comments
    r = client.post("/sdapi/v1/txt2img", json={**BODY, "prompt": "a cat <lora:broken-lora:1>"})
    assert r.status_code == 200 and "broken-lora" in json.dumps(json.loads(r.json()["info"]).get("comments"))
    # embedding: skipped, listed as such
    emb = client.get("/sdapi/v1/embeddings").json()
    assert "broken-emb" not in emb["loaded"]
    # upscaler
    r = client.post("/sdapi/v1/extra-single-image", json={"image": _b64(Image.new("RGB", (16, 16))),
                                                          "upscaling_resize": 2, "upscaler_1": "broken-up"})
    assert 400 <= r.status_code < 500 and "broken-up" in json.dumps(r.json())
    assert any(u["name"] == "Lanczos" for u in client.get("/sdapi/v1/upscalers").json())
    # ControlNet model
    unit = {"enabled": True, "module": "none", "model": "broken-cn", "image": _b64(Image.new("RGB", (64, 64)))}
    r = client.post("/sdapi/v1/txt2img", json={**BODY, "alwayson_scripts": {"controlnet": {"args": [unit]}}})
    assert 400 <= r.status_code < 500 and "broken-cn" in json.dumps(r.json())
    # and the server goes on
    assert client.post("/sdapi/v1/txt2img", json=BODY).status_code == 200
