"""ControlNet through alwayson_scripts over HTTP: seed document 002's payload shape (two units, batch 4, LoRA in the
prompt, override_settings for checkpoint and VAE, clip_skip 2, DPM++ SDE Karras) with local model names, list and
dict arg forms, weight 0 equal to no ControlNet, the infotext, and a missing model as a 4xx listing the choices."""

from __future__ import annotations

import base64
import io
import json
import os

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from tests.fixtures.controlnet import write_tiny_controlnet
from tests.fixtures.networks import SD1_KOHYA_MODULES, write_kohya_lora
from webui.app import build_app
from webui.config import parse


@pytest.fixture
def client(data_dir):
    os.makedirs(data_dir / "models" / "ControlNet", exist_ok=True)
    write_tiny_controlnet(str(data_dir / "models" / "ControlNet" / "control_v11p_sd15_canny.safetensors"), "SD1", seed=3)
    write_tiny_controlnet(str(data_dir / "models" / "ControlNet" / "control_v11p_sd15_scribble.safetensors"), "SD1",
                          seed=4)
    config = parse(["--nowebui", "--data-dir", str(data_dir), "--skip-load-model-at-start"])
    with TestClient(build_app(config)) as c:
        yield c


def _b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _control_image() -> Image.Image:
    im = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(im).ellipse((12, 12, 52, 52), outline="white", width=3)
    return im


def _unit(model, module, weight=1.0, **kw):
    return {"enabled": True, "module": module, "model": model, "weight": weight, "image": _b64(_control_image()),
            "resize_mode": "Crop and Resize", "processor_res": 64, "threshold_a": 100, "threshold_b": 200,
            "guidance_start": 0.0, "guidance_end": 1.0, "control_mode": "Balanced", "pixel_perfect": False,
            "lowvram": False, **kw}


BODY = {"prompt": "a cat", "negative_prompt": "ugly", "steps": 3, "width": 64, "height": 64, "seed": 7,
        "sampler_name": "Euler", "cfg_scale": 7}


def _pixels(client, body):
    r = client.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _px(b64: str) -> bytes:
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB").tobytes()


def test_seed_002_style_payload_runs_unchanged(client):
    state = client.app.state.webui
    comp = state.engine.load(state.registry.resolve("tiny-sd15"))
    write_kohya_lora(os.path.join(state.config.lora_dir, "detail.safetensors"), comp, SD1_KOHYA_MODULES)
    state.loras.refresh()
    models = client.get("/controlnet/model_list").json()["model_list"]
    canny = next(m for m in models if m.startswith("control_v11p_sd15_canny ["))
    scribble = next(m for m in models if m.startswith("control_v11p_sd15_scribble ["))
    body = {
        **BODY, "prompt": "a cat <lora:detail:0.6>", "batch_size": 4, "sampler_name": "DPM++ SDE Karras",
        "clip_skip": 2, "override_settings": {"sd_model_checkpoint": "tiny-sd15", "sd_vae": "Automatic"},
        "alwayson_scripts": {"controlnet": {"args": [
            _unit(canny, "canny", 0.8), _unit(scribble, "threshold", 0.6, guidance_end=0.5)]}},
    }
    data = _pixels(client, body)
    info = json.loads(data["info"])
    # batch_size images, then the extension's detected maps (one per unit)
    assert len(info["all_seeds"]) == 4 and len(data["images"]) == 4 + 2
    text = info["infotexts"][0]
    assert 'ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [' in text
    assert "ControlNet 1: " in text and 'Lora hashes: "detail: ' in text and "Clip skip: 2" in text


def test_weight_zero_equals_no_controlnet_and_forms(client):
    models = client.get("/controlnet/model_list").json()["model_list"]
    canny = next(m for m in models if "canny" in m)
    plain = _pixels(client, BODY)["images"][0]
    zero = _pixels(client, {**BODY, "alwayson_scripts": {"ControlNet": {"args": [_unit(canny, "canny", 0.0)]}}})
    assert _px(zero["images"][0]) == _px(plain)
    on = _pixels(client, {**BODY, "alwayson_scripts": {"controlnet": {"args": [_unit(canny, "canny", 1.0)]}}})
    assert _px(on["images"][0]) != _px(plain)
    # the same unit as a dict of named args ({"0": unit}) gives the same image
    as_dict = _pixels(client, {**BODY, "alwayson_scripts": {"controlnet": {"args": {"0": _unit(canny, "canny", 1.0)}}}})
    assert _px(as_dict["images"][0]) == _px(on["images"][0])


def test_missing_model_is_a_4xx_listing_the_choices(client):
    r = client.post("/sdapi/v1/txt2img", json={**BODY, "alwayson_scripts": {"controlnet": {"args": [
        _unit("control_nothing_here", "canny")]}}})
    assert 400 <= r.status_code < 500
    assert "control_v11p_sd15_canny" in json.dumps(r.json())
    assert client.get("/controlnet/version").json() == {"version": 3}
    assert "canny" in client.get("/controlnet/module_list").json()["module_list"]
