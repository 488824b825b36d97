"""Issue 13 item 3: the last API-surface differences from A1111 v1.10.1."""

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


def _b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


BODY = {"prompt": "a cat", "steps": 2, "width": 64, "height": 64, "seed": 5, "sampler_name": "Euler"}


def test_img2img_info_lists_denoising_strength_in_extra_params(client):
    r = client.post("/sdapi/v1/img2img", json={**BODY, "init_images": [_b64(Image.new("RGB", (64, 64), "red"))],
                                               "denoising_strength": 0.4})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["extra_generation_params"]["Denoising strength"] == 0.4
    assert info["infotexts"][0].count("Denoising strength: 0.4") == 1  # still once, in its place


def test_options_carry_the_checkpoint_hash_webuiapi_matches(client):
    assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sd15"}).status_code == 200
    options = client.get("/sdapi/v1/options").json()
    # webuiapi util_get_current_model: the model whose sha256 equals options.sd_checkpoint_hash
    models = client.get("/sdapi/v1/sd-models").json()
    current = [m["title"] for m in models if m["sha256"] == options["sd_checkpoint_hash"]]
    assert current == [options["sd_model_checkpoint"]] and len(options["sd_checkpoint_hash"]) == 64
    # the full body posted back (Open WebUI) stays a no-op
    assert client.post("/sdapi/v1/options", json=options).status_code == 200


def test_enable_hr_without_denoising_strength_is_a_422(client):
    r = client.post("/sdapi/v1/txt2img", json={**BODY, "enable_hr": True})
    assert r.status_code == 422
    body = r.json()
    assert set(body) == {"error", "detail", "body", "errors"} and "denoising_strength" in body["errors"]


def test_config_without_login_answers_like_a1111(data_dir):
    config = parse(["--data-dir", str(data_dir), "--skip-load-model-at-start", "--gradio-auth", "u:p"])
    with TestClient(build_app(config)) as c:
        r = c.get("/config")
        assert r.status_code == 401 and r.json() == {"detail": "Not authenticated"}


def test_hires_use_same_sampler_keeps_the_first_pass_sampler(client):
    """A pasted infotext (or a client) may send A1111's UI choice "Use same sampler"; A1111's hires pass then uses the
    first pass's sampler and schedule."""
    body = {**BODY, "width": 32, "height": 32, "enable_hr": True, "hr_scale": 2, "denoising_strength": 0.5,
            "hr_sampler_name": "Use same sampler", "hr_scheduler": "Use same scheduler"}
    r = client.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    same = client.post("/sdapi/v1/txt2img", json={**body, "hr_sampler_name": None, "hr_scheduler": None})
    def pixels(resp):
        return Image.open(io.BytesIO(base64.b64decode(resp.json()["images"][0]))).tobytes()

    assert pixels(r) == pixels(same)
    # the infotext keeps what was sent, as A1111's init() writes hr_sampler_name when it differs from the sampler
    assert "Hires sampler: Use same sampler" in json.loads(r.json()["info"])["infotexts"][0]


def test_a_task_id_no_header_can_carry_is_percent_encoded(client):
    r = client.post("/sdapi/v1/txt2img", json={**BODY, "force_task_id": "tâche-\u0100"})
    assert r.status_code == 200 and r.headers["X-Task-Id"] == "t%C3%A2che-%C4%80"
    assert client.get("/sdapi/v1/progress", params={"id_task": "tâche-\u0100"}).status_code == 200


def test_ngms_over_the_api(client):
    """s_min_uncond (API field, else the option): calls below that sigma skip the negative prompt every other step;
    the image changes and the infotext says NGMS, as A1111's."""

    def pixels(resp):
        return Image.open(io.BytesIO(base64.b64decode(resp.json()["images"][0]))).tobytes()

    body = {**BODY, "steps": 4, "negative_prompt": "ugly"}
    plain = client.post("/sdapi/v1/txt2img", json=body)
    ngms = client.post("/sdapi/v1/txt2img", json={**body, "s_min_uncond": 100.0})
    assert ngms.status_code == 200, ngms.text
    text = json.loads(ngms.json()["info"])["infotexts"][0]
    assert "NGMS: 100.0" in text and "NGMS" not in json.loads(plain.json()["info"])["infotexts"][0]
    assert pixels(ngms) != pixels(plain)
    early = client.post("/sdapi/v1/txt2img", json={**body, "override_settings": {"skip_early_cond": 0.5}})
    assert "Skip Early CFG: 0.5" in json.loads(early.json()["info"])["infotexts"][0]
