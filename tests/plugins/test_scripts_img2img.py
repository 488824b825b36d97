"""The img2img scripts (A1111 loopback.py, outpainting_mk_2.py, poor_mans_outpainting.py, sd_upscale.py) over
the API: A1111's argument lists, each result fed back by Loopback, the canvas grown by the outpainting scripts, and
SD upscale's tiles (real app, real loader, tiny checkpoints, CPU)."""

from __future__ import annotations

import base64
import io
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from webui.app import build_app
from webui.config import parse
from webui.core.io.tiles import combine_grid, split_grid
from webui.plugins.builtin.scripts.loopback import ScriptLoopback
from webui.plugins.builtin.scripts.outpainting_mk_2 import ScriptOutpaintingMk2
from webui.plugins.builtin.scripts.poor_mans_outpainting import ScriptPoorMansOutpainting
from webui.plugins.builtin.scripts.sd_upscale import ScriptSDUpscale

BODY = {"prompt": "a cat", "steps": 1, "width": 64, "height": 64, "seed": 5, "sampler_name": "Euler",
        "denoising_strength": 0.6}


@pytest.fixture
def client(data_dir):
    config = parse(["--nowebui", "--data-dir", str(data_dir), "--skip-load-model-at-start"])
    with TestClient(build_app(config)) as c:
        yield c


def _b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def _init(w: int, h: int) -> Image.Image:
    return Image.linear_gradient("L").convert("RGB").resize((w, h))


def _args(script):
    return [(a.label, a.value, a.minimum, a.maximum, a.step, a.choices) for a in script.ui(True)]


def test_argument_lists_are_a1111s():
    directions = ["left", "right", "up", "down"]
    assert _args(ScriptLoopback()) == [
        ("Loops", 4, 1, 32, 1, None), ("Final denoising strength", 0.5, 0, 1, 0.01, None),
        ("Denoising strength curve", "Linear", None, None, None, ["Aggressive", "Linear", "Lazy"]),
        ("Append interrogated prompt at each iteration", "None", None, None, None, ["None", "CLIP", "DeepBooru"]),
    ]
    mk2 = _args(ScriptOutpaintingMk2())
    assert mk2[0][0] is None and "Recommended settings" in mk2[0][1]  # A1111's gr.HTML info
    assert mk2[1:] == [
        ("Pixels to expand", 128, 8, 256, 8, None), ("Mask blur", 8, 0, 64, 1, None),
        ("Outpainting direction", directions, None, None, None, directions),
        ("Fall-off exponent (lower=higher detail)", 1.0, 0.0, 4.0, 0.01, None),
        ("Color variation", 0.05, 0.0, 1.0, 0.01, None),
    ]
    assert _args(ScriptPoorMansOutpainting()) == [
        ("Pixels to expand", 128, 8, 256, 8, None), ("Mask blur", 4, 0, 64, 1, None),
        ("Masked content", "fill", None, None, None, ["fill", "original", "latent noise", "latent nothing"]),
        ("Outpainting direction", directions, None, None, None, directions),
    ]
    up = _args(ScriptSDUpscale())
    assert up[0][0] is None and "upscale the image" in up[0][1]
    assert up[1:] == [("Tile overlap", 64, 0, 256, 16, None),
                      ("Upscaler", "None", None, None, None, ["None", "Lanczos", "Nearest"]),
                      ("Scale Factor", 2, 0, 4, 1, None)]
    for script in (ScriptLoopback(), ScriptOutpaintingMk2(), ScriptPoorMansOutpainting(), ScriptSDUpscale()):
        assert script.show(True) and not script.show(False)


def test_script_info_lists_them_for_img2img_only(client):
    info = {(s["name"], s["is_img2img"]): s for s in client.get("/sdapi/v1/script-info").json()}
    for name in ("loopback", "outpainting mk2", "poor man's outpainting", "sd upscale"):
        assert (name, True) in info and (name, False) not in info
    assert [a["label"] for a in info[("loopback", True)]["args"]][:2] == ["Loops", "Final denoising strength"]
    assert ("prompts from file or textbox", False) in info and ("prompts from file or textbox", True) in info
    # live lists, as A1111's UI builds them: SD upscale's radio lists the upscaler registry (shared.sd_upscalers),
    # the Refiner's dropdown "" and the checkpoint titles
    upscalers = [u["name"] for u in client.get("/sdapi/v1/upscalers").json()]
    sd_upscale = {a["label"]: a for a in info[("sd upscale", True)]["args"]}
    assert sd_upscale["Upscaler"]["choices"] == upscalers and upscalers[:3] == ["None", "Lanczos", "Nearest"]
    titles = [m["title"] for m in client.get("/sdapi/v1/sd-models").json()]
    refiner = {a["label"]: a for a in info[("refiner", True)]["args"]}
    assert refiner["Checkpoint"]["choices"] == ["", *titles] and titles


def test_loopback_feeds_each_result_back(client):
    body = {**BODY, "init_images": [_b64(_init(64, 64))], "script_name": "Loopback",
            "script_args": [2, 0.3, "Linear", "None"]}
    r = client.post("/sdapi/v1/img2img", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    info = json.loads(data["info"])
    # 2 loops, 1 batch: the one-row grid of both (option return_grid), then each loop's image
    assert len(data["images"]) == 3
    grid, first, second = (_decode(b) for b in data["images"])
    assert grid.size == (128, 64) and first.size == second.size == (64, 64)
    assert "Final denoising strength: 0.3" in info["infotexts"][0] and "Denoising curve: Linear" in info["infotexts"][0]
    assert info["seed"] == 5

    # the second loop alone: the first output as init, seed + 1, the final denoising strength (linear, 2 loops)
    alone = client.post("/sdapi/v1/img2img", json={**BODY, "init_images": [_b64(first)], "seed": 6,
                                                   "denoising_strength": 0.3})
    assert alone.status_code == 200, alone.text
    assert _decode(alone.json()["images"][0]).tobytes() == second.tobytes()
    assert first.tobytes() != second.tobytes()


@pytest.mark.parametrize("choice, missing", [("CLIP", "model_base_caption_capfilt_large.pth"),
                                             ("DeepBooru", "model-resnet_custom_v3.pt")])
def test_loopback_interrogation_names_missing_models(client, choice, missing):
    """Without the interrogator's model files the script stops before its first loop with the file to put where
    (a 4xx); the run with tiny model files is in tests/api/test_interrogate_models.py."""
    body = {**BODY, "init_images": [_b64(_init(64, 64))], "script_name": "Loopback",
            "script_args": [2, 0.3, "Linear", choice]}
    r = client.post("/sdapi/v1/img2img", json=body)
    assert r.status_code == 400 and missing in r.json()["detail"], r.text
    r = client.post("/sdapi/v1/img2img", json={**body, "script_args": [2, 0.3, "Linear", "Florence"]})
    assert 400 <= r.status_code < 500 and "Florence" in r.text


@pytest.mark.parametrize("direction, size", [(["left", "down"], (64, 64)), (["right"], (64, 56)),
                                             (["up"], (56, 64))])
def test_outpainting_mk2_grows_the_canvas(client, direction, size):
    init = _init(56, 56)
    body = {**BODY, "init_images": [_b64(init)], "script_name": "Outpainting mk2",
            "script_args": [None, 8, 2, direction, 1.0, 0.05]}
    r = client.post("/sdapi/v1/img2img", json=body)
    assert r.status_code == 200, r.text
    images = [_decode(b) for b in r.json()["images"]]
    assert len(images) == 1 and images[0].size == size
    text = json.loads(r.json()["info"])["infotexts"][0]
    # mask blur 4 x "Mask blur" in the directions used; A1111 lists it only when x and y are equal
    assert ("Mask blur: 8," in text) == (len(direction) == 2)


def test_poor_mans_outpainting_grows_the_canvas_tile_by_tile(client, monkeypatch):
    import webui.core.generation.processing as processing

    calls = []
    real = processing.process_images
    monkeypatch.setattr(processing, "process_images", lambda p: calls.append((p.width, p.height)) or real(p))
    init = _init(56, 64)
    body = {**BODY, "width": 32, "height": 32, "init_images": [_b64(init)], "script_name": "Poor man's outpainting",
            "script_args": [8, 2, 1, ["left"]]}
    r = client.post("/sdapi/v1/img2img", json=body)
    assert r.status_code == 200, r.text
    images = [_decode(b) for b in r.json()["images"]]
    assert len(images) == 1 and images[0].size == (64, 64)
    # 32x32 tiles overlapping by 8 over 64x64: 3 columns x 3 rows, of which the left column touches the new strip
    assert calls == [(32, 32)] * 3
    # the right part, untouched by any processed tile, is the init image itself
    assert images[0].crop((40, 0, 64, 64)).tobytes() == init.crop((32, 0, 56, 64)).tobytes()


def test_sd_upscale_scales_and_tiles(client, monkeypatch):
    import webui.core.generation.processing as processing

    calls = []
    real = processing.process_images
    monkeypatch.setattr(processing, "process_images", lambda p: calls.append(len(p.init_images)) or real(p))
    init = _init(32, 64)
    body = {**BODY, "init_images": [_b64(init)], "script_name": "SD upscale",
            "script_args": [None, 32, 1, 2]}  # overlap 32, Lanczos (index 1), x2
    r = client.post("/sdapi/v1/img2img", json=body)
    assert r.status_code == 200, r.text
    images = [_decode(b) for b in r.json()["images"]]
    assert len(images) == 1 and images[0].size == (64, 128)
    tiles = split_grid(Image.new("RGB", (64, 128)), 64, 64, 32)
    assert sum(len(row) for _, _, row in tiles.tiles) == 3 == len(calls)  # 64x64 tiles at y = 0, 32, 64
    info = json.loads(r.json()["info"])
    assert "SD upscale overlap: 32, SD upscale upscaler: Lanczos" in info["infotexts"][0]
    assert info["seed"] == 5

    # batch_size 2: two tiles per call; a name works as well as the index
    calls.clear()
    r = client.post("/sdapi/v1/img2img", json={**body, "batch_size": 2, "script_args": [None, 32, "Nearest", 2]})
    assert r.status_code == 200, r.text
    assert calls == [2, 1] and _decode(r.json()["images"][0]).size == (64, 128)


def test_sd_upscale_bad_args_are_4xx(client):
    body = {**BODY, "init_images": [_b64(_init(32, 32))], "script_name": "SD upscale"}
    r = client.post("/sdapi/v1/img2img", json={**body, "script_args": [None, 32, 99, 2]})
    assert 400 <= r.status_code < 500 and "SD upscale" in r.text and "Lanczos" in r.text
    r = client.post("/sdapi/v1/img2img", json={**body, "script_args": [None, 64, 1, 2]})  # overlap = tile size
    assert 400 <= r.status_code < 500 and "Tile overlap" in r.text


def test_split_and_combine_grid_round_trip():
    image = Image.radial_gradient("L").convert("RGB").resize((100, 70))
    grid = split_grid(image, tile_w=48, tile_h=32, overlap=16)
    assert [y for y, _, _ in grid.tiles] == [0, 12, 25, 38] and [x for x, _, _ in grid.tiles[0][2]] == [0, 26, 52]
    assert combine_grid(grid).tobytes() == image.tobytes()  # unchanged tiles blend back into the same image
