"""img2img, inpainting, hires fix and the issue-03 listings over HTTP (real app, real loader, tiny checkpoints)."""

from __future__ import annotations

import base64
import io
import json
import os

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from tests.fixtures.networks import SD1_KOHYA_MODULES, write_kohya_lora
from webui.app import build_app
from webui.config import parse


@pytest.fixture
def client(data_dir):
    config = parse(["--nowebui", "--data-dir", str(data_dir), "--skip-load-model-at-start"])
    with TestClient(build_app(config)) as c:
        yield c


def _b64(image: Image.Image, data_url: bool = False) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    text = base64.b64encode(buf.getvalue()).decode()
    return "data:image/png;base64," + text if data_url else text


def _decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


INIT = Image.linear_gradient("L").convert("RGB").resize((80, 60))
BODY = {"prompt": "a cat", "steps": 3, "width": 64, "height": 48, "seed": 5, "sampler_name": "Euler"}


def test_img2img_wire_format_and_echo(client):
    r = client.post("/sdapi/v1/img2img", json={**BODY, "init_images": [_b64(INIT, data_url=True)],
                                               "denoising_strength": 0.6})
    assert r.status_code == 200, r.text
    data = r.json()
    assert list(data) == ["images", "parameters", "info"]
    assert _decode(data["images"][0]).size == (64, 48)
    assert data["parameters"]["init_images"] is None and data["parameters"]["include_init_images"] is False
    info = json.loads(data["info"])
    assert info["denoising_strength"] == 0.6 and "Denoising strength: 0.6" in info["infotexts"][0]
    assert r.headers["X-Task-Id"].startswith("task(img2img-")


def test_img2img_inpaint_and_errors(client):
    mask = Image.new("L", INIT.size, 0)
    ImageDraw.Draw(mask).rectangle((20, 15, 50, 40), fill=255)
    r = client.post("/sdapi/v1/img2img", json={**BODY, "init_images": [_b64(INIT)], "mask": _b64(mask),
                                               "mask_blur": 2, "inpainting_fill": 1, "include_init_images": True})
    assert r.status_code == 200, r.text
    assert r.json()["parameters"]["init_images"] and r.json()["parameters"]["mask_blur"] == 2
    assert _decode(r.json()["images"][0]).size == INIT.size  # only-masked (the API default) returns the whole image

    missing = client.post("/sdapi/v1/img2img", json=BODY)
    assert missing.status_code == 404 and missing.json()["detail"] == "Init image not found"
    bad = client.post("/sdapi/v1/img2img", json={**BODY, "init_images": ["bm90IGFuIGltYWdl"]})
    assert 400 <= bad.status_code < 500 and "init_images" in json.dumps(bad.json())
    strength = client.post("/sdapi/v1/img2img", json={**BODY, "init_images": [_b64(INIT)], "denoising_strength": 2})
    assert 400 <= strength.status_code < 500 and "denoising_strength" in json.dumps(strength.json())


def test_txt2img_hires_fix_over_http(client):
    body = {**BODY, "width": 32, "height": 24, "steps": 2, "enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent",
            "denoising_strength": 0.5}
    r = client.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    assert _decode(r.json()["images"][0]).size == (64, 48)
    info = json.loads(r.json()["info"])
    assert info["width"] == 32 and "Hires upscaler: Latent" in info["infotexts"][0]
    no_strength = client.post("/sdapi/v1/txt2img", json={**body, "denoising_strength": None})
    assert 400 <= no_strength.status_code < 500 and "denoising_strength" in json.dumps(no_strength.json())
    bad_upscaler = client.post("/sdapi/v1/txt2img", json={**body, "hr_upscaler": "Nope"})
    assert 400 <= bad_upscaler.status_code < 500 and "Latent (bicubic)" in json.dumps(bad_upscaler.json())


def test_api_grid_only_when_saving(client):
    r = client.post("/sdapi/v1/txt2img", json={**BODY, "batch_size": 2})
    assert len(r.json()["images"]) == 2  # A1111's API: do_not_save_grid = not save_images
    assert json.loads(r.json()["info"])["index_of_first_image"] == 0


def test_listings_of_issue_03(client, data_dir):
    state = client.app.state.webui
    comp = state.engine.load(state.registry.resolve("tiny-sd15"))
    write_kohya_lora(os.path.join(state.config.lora_dir, "mylora.safetensors"), comp, SD1_KOHYA_MODULES,
                     metadata={"ss_output_name": "my_alias"})
    with open(state.config.styles_file, "w", encoding="utf-8") as f:
        f.write("name,prompt,negative_prompt\nnice,\"{prompt}, nice\",bad\n")
    assert client.post("/sdapi/v1/refresh-loras").json() is None
    loras = client.get("/sdapi/v1/loras").json()
    assert [(x["name"], x["alias"]) for x in loras] == [("mylora", "my_alias")]
    assert loras[0]["metadata"]["ss_output_name"] == "my_alias" and os.path.isabs(loras[0]["path"])
    assert client.get("/sdapi/v1/prompt-styles").json() == [
        {"name": "nice", "prompt": "{prompt}, nice", "negative_prompt": "bad"}]
    assert client.get("/sdapi/v1/embeddings").json() == {"loaded": {}, "skipped": {}}
    assert client.post("/sdapi/v1/refresh-embeddings").json() is None
    assert client.get("/sdapi/v1/hypernetworks").json() == []
    assert client.get("/sdapi/v1/sd-vae").json() == []
    assert client.post("/sdapi/v1/refresh-vae").json() is None
    # the LoRA applies over HTTP and its hash lands in the infotext
    r = client.post("/sdapi/v1/txt2img", json={**BODY, "prompt": "a cat <lora:mylora:0.8>", "clip_skip": 2})
    text = json.loads(r.json()["info"])["infotexts"][0]
    assert 'Lora hashes: "mylora: ' in text and "Clip skip: 2" in text
    assert "clip_skip" not in r.json()["parameters"]  # the echo stays A1111's model


def test_infotext_fills_the_fields_the_json_left_out(client):
    infotext = ("a dog in the rain\nNegative prompt: blurry\nSteps: 2, Sampler: Euler a, Schedule type: Karras, "
                "CFG scale: 5.5, Seed: 42, Size: 64x48, Clip skip: 2, Version: v1.10.1")
    r = client.post("/sdapi/v1/txt2img", json={"infotext": infotext, "prompt": "a cat", "seed": 7})
    assert r.status_code == 200, r.text
    p = r.json()["parameters"]
    assert (p["prompt"], p["negative_prompt"], p["steps"], p["cfg_scale"], p["width"], p["height"]) == (
        "a cat", "blurry", 2, 5.5, 64, 48)
    assert p["seed"] == 7 and p["sampler_name"] == "Euler a" and p["scheduler"] == "Karras"
    assert str(p["override_settings"]["CLIP_stop_at_last_layers"]) == "2"  # as A1111: settings named in it
    text = json.loads(r.json()["info"])["infotexts"][0]
    assert text.startswith("a cat\nNegative prompt: blurry\nSteps: 2, Sampler: Euler a, Schedule type: Karras,")
    assert "Seed: 7," in text and "Clip skip: 2" in text
