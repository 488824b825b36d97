"""Prompt matrix (A1111 scripts/prompt_matrix.py v1.10.1) over the API with a tiny checkpoint: its arguments,
2^n images with A1111's prompts and seeds, each equal to that request sent alone, the grid with its legends."""

from __future__ import annotations

import base64
import io
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from webui.app import build_app
from webui.config import parse
from webui.core.io.grid_annotations import prompt_matrix_annotations
from webui.plugins.builtin.scripts.prompt_matrix import matrix_prompts


@pytest.fixture
def client(data_dir):
    config = parse(["--nowebui", "--data-dir", str(data_dir), "--skip-load-model-at-start"])
    with TestClient(build_app(config)) as c:
        yield c


BODY = {"prompt": "a cat|red|big", "negative_prompt": "", "steps": 1, "width": 32, "height": 32, "seed": 5,
        "sampler_name": "Euler", "script_name": "prompt matrix"}


def _decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_args_equal_a1111s(client):
    info = {(s["name"], s["is_img2img"]): s for s in client.get("/sdapi/v1/script-info").json()}
    for img2img in (False, True):
        args = info[("prompt matrix", img2img)]["args"]
        assert [(a["label"], a["value"]) for a in args] == [
            ("Put variable parts at start of prompt", False), ("Use different seed for each picture", False),
            ("Select prompt", "positive"), ("Select joining char", "comma"), ("Grid margins (px)", 0)]
        assert args[2]["choices"] == ["positive", "negative"] and args[3]["choices"] == ["comma", "space"]
        assert (args[4]["minimum"], args[4]["maximum"], args[4]["step"]) == (0, 500, 2)


def test_prompts_as_a1111():
    assert matrix_prompts("a cat|red|big", False, "comma")[1] == ["a cat", "a cat, red", "a cat, big",
                                                                   "a cat, red, big"]
    assert matrix_prompts("a cat | red, | big", True, "space")[1] == ["a cat ", "red a cat ", "big a cat ",
                                                                      "red big a cat "]
    hor, ver = prompt_matrix_annotations(["a", "b", "c", "d"])
    assert len(hor) == 4 and len(ver) == 2  # ceil(3 / 2) parts across, the rest down
    assert [line.is_active for line in hor[2]] == [False, True]


def test_matrix_makes_2_pow_n_images_equal_to_single_requests(client):
    r = client.post("/sdapi/v1/txt2img", json={**BODY, "script_args": [False, True]})
    assert r.status_code == 200, r.text
    data = r.json()
    info = json.loads(data["info"])
    assert len(data["images"]) == 1 + 4
    assert info["all_prompts"] == ["a cat", "a cat, red", "a cat, big", "a cat, red, big"]
    assert info["all_seeds"] == [5, 6, 7, 8] and info["index_of_first_image"] == 1
    grid = _decode(data["images"][0])
    assert grid.width > 2 * 32 and grid.height > 2 * 32  # 2 x 2 cells plus the legends
    for i, image in enumerate(data["images"][1:]):
        alone = client.post("/sdapi/v1/txt2img", json={
            **{k: v for k, v in BODY.items() if k != "script_name"}, "prompt": info["all_prompts"][i],
            "seed": 5 + i}).json()
        assert alone["images"][0] == image


def test_negative_prompt_and_same_seed(client):
    body = {**BODY, "prompt": "a cat", "negative_prompt": "ugly|blurry"}
    info = json.loads(client.post("/sdapi/v1/txt2img", json={**body, "script_args": [
        True, False, "negative", "space"]}).json()["info"])
    assert info["all_negative_prompts"] == ["ugly", "blurry ugly"]
    assert info["all_prompts"] == ["a cat", "a cat"] and info["all_seeds"] == [5, 5]


def test_bad_choice_is_a_4xx_naming_the_argument(client):
    r = client.post("/sdapi/v1/txt2img", json={**BODY, "script_args": [False, False, "sideways"]})
    assert 400 <= r.status_code < 500
    text = json.dumps(r.json())
    assert "Prompt matrix" in text and "Select prompt" in text and "negative" in text
