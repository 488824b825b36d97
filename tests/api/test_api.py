"""The minimal /sdapi/v1 path end to end (FastAPI TestClient, real app, real loader, tiny checkpoints)."""

from __future__ import annotations

import base64
import io
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from webui.app import build_app
from webui.config import parse
from webui.core.io.images import read_info_from_image


@pytest.fixture
def client(data_dir):
    config = parse(["--nowebui", "--data-dir", str(data_dir), "--skip-load-model-at-start"])
    with TestClient(build_app(config)) as c:
        yield c


BODY = {"prompt": "a cat", "steps": 2, "width": 64, "height": 64, "seed": 11, "sampler_name": "Euler a"}


def _decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_txt2img_wire_format(client):
    r = client.post("/sdapi/v1/txt2img", json=BODY)
    assert r.status_code == 200, r.text
    data = r.json()
    assert list(data) == ["images", "parameters", "info"]
    assert len(data["images"]) == 1 and not data["images"][0].startswith("data:")
    im = _decode(data["images"][0])
    assert im.size == (64, 64)
    text, _ = read_info_from_image(im)
    assert text.startswith("a cat\nSteps: 2, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.0, Seed: 11,")
    info = json.loads(data["info"])
    assert isinstance(data["info"], str) and ", " in data["info"]  # Python json.dumps formatting
    assert list(info)[:6] == ["prompt", "all_prompts", "negative_prompt", "all_negative_prompts", "seed", "all_seeds"]
    assert info["seed"] == 11 and info["sampler_name"] == "Euler a" and info["infotexts"] == [text]
    # parameters echo the request with A1111's defaults filled in
    assert data["parameters"]["steps"] == 2 and data["parameters"]["sampler_index"] == "Euler"
    assert data["parameters"]["send_images"] is True


def test_same_seed_same_bytes_over_http(client):
    a = client.post("/sdapi/v1/txt2img", json=BODY).json()["images"][0]
    b = client.post("/sdapi/v1/txt2img", json=BODY).json()["images"][0]
    c = client.post("/sdapi/v1/txt2img", json={**BODY, "seed": 12}).json()["images"][0]
    assert _decode(a).tobytes() == _decode(b).tobytes()
    assert _decode(a).tobytes() != _decode(c).tobytes()


def test_pydantic_v1_coercion_and_unknown_fields(client):
    r = client.post("/sdapi/v1/txt2img", json={**BODY, "steps": "2", "width": 64.9, "whatever": 1})
    assert r.status_code == 200
    assert r.json()["parameters"]["steps"] == 2 and r.json()["parameters"]["width"] == 64
    assert "whatever" not in r.json()["parameters"]


def test_legacy_sampler_names_and_fallback(client):
    info = json.loads(client.post("/sdapi/v1/txt2img", json={**BODY, "sampler_name": "DPM++ 2M Karras"}).json()["info"])
    assert info["sampler_name"] == "DPM++ 2M"
    assert info["extra_generation_params"]["Schedule type"] == "Karras"
    assert "Schedule type: Karras" in info["infotexts"][0]
    info = json.loads(client.post("/sdapi/v1/txt2img", json={**BODY, "sampler_name": "No such"}).json()["info"])
    assert info["sampler_name"] == "DPM++ 2M" and "No such" in info["sampler_fallback"]


@pytest.mark.parametrize(
    "body, field",
    [({"steps": 0}, "steps"), ({"width": 0}, "width"), ({"height": -64}, "height"), ({"batch_size": 0}, "batch_size")],
)
def test_bad_values_get_a1111_error_shape(client, body, field):
    r = client.post("/sdapi/v1/txt2img", json={**BODY, **body})
    assert r.status_code == 400
    err = r.json()
    assert list(err) == ["error", "detail", "body", "errors"]
    assert field in err["detail"]
    assert client.get("/sdapi/v1/sd-models").status_code == 200  # the server keeps serving


def test_non_json_body(client):
    r = client.post("/sdapi/v1/txt2img", content=b"not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["error"] == "RequestValidationError" and r.json()["detail"][0]["loc"][0] == "body"
    r = client.post("/sdapi/v1/txt2img", json={**BODY, "steps": "many"})
    assert r.status_code == 422 and "steps" in r.json()["errors"]


def test_sd_models_and_checkpoint_aliases(client):
    models = client.get("/sdapi/v1/sd-models").json()
    assert {m["model_name"] for m in models} == {"tiny-sd15", "sd2_tiny-sd2-v", "tiny-sdxl"}
    assert list(models[0]) == ["title", "model_name", "hash", "sha256", "filename", "config"]
    sd2 = next(m for m in models if m["model_name"] == "sd2_tiny-sd2-v")
    assert sd2["config"].endswith("tiny-sd2-v.yaml")
    # POST options with a title, a hash or a bare name selects that checkpoint and stores its title
    for alias in ("tiny-sdxl", "tiny-sdxl.safetensors"):
        assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": alias}).status_code == 200
        title = client.get("/sdapi/v1/options").json()["sd_model_checkpoint"]
        assert title.startswith("tiny-sdxl.safetensors [")
    hash10 = title.split("[")[1].rstrip("]")
    assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": hash10}).status_code == 200
    info = json.loads(client.post("/sdapi/v1/txt2img", json=BODY).json()["info"])
    assert info["sd_model_name"] == "tiny-sdxl" and info["sd_model_hash"] == hash10


def test_missing_checkpoint_is_a_404_listing_choices(client):
    r = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "nope.safetensors"})
    assert r.status_code == 404
    assert r.json()["errors"] == "model 'nope.safetensors' not found"
    assert "tiny-sd15.safetensors" in r.json()["detail"]


def test_unknown_option_key(client):
    r = client.post("/sdapi/v1/options", json={"no_such_option": 1})
    assert r.status_code == 400 and "no_such_option" in r.json()["detail"]


def test_options_defaults(client):
    opts = client.get("/sdapi/v1/options").json()
    assert opts["samples_format"] == "png" and opts["CLIP_stop_at_last_layers"] == 1
    assert opts["randn_source"] == "GPU" and opts["eta_ancestral"] == 1.0


def test_samplers_and_schedulers_lists(client):
    samplers = client.get("/sdapi/v1/samplers").json()
    assert [s["name"] for s in samplers][:3] == ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE"]
    assert len(samplers) == 20
    assert samplers[1]["options"] == {"scheduler": "karras", "second_order": "True", "brownian_noise": "True"}
    schedulers = client.get("/sdapi/v1/schedulers").json()
    assert len(schedulers) == 12 and schedulers[2] == {
        "name": "karras", "label": "Karras", "aliases": None, "default_rho": 7.0, "need_inner_model": False}


def test_api_auth(data_dir):
    config = parse(["--nowebui", "--data-dir", str(data_dir), "--skip-load-model-at-start", "--api-auth", "u:p"])
    with TestClient(build_app(config)) as c:
        r = c.get("/sdapi/v1/sd-models")
        assert r.status_code == 401 and r.json()["detail"] == "Not authenticated"
        assert r.headers["www-authenticate"] == "Basic"
        assert c.get("/sdapi/v1/sd-models", auth=("u", "x")).json()["detail"] == "Incorrect username or password"
        assert c.get("/sdapi/v1/sd-models", auth=("u", "p")).status_code == 200
        assert c.get("/openapi.json").status_code == 200
