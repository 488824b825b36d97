"""X/Y/Z plot (A1111 scripts/xyz_grid.py v1.10.1) over the API with tiny checkpoints: its argument list and axes,
value syntax, the grid and its sub-images (equal to the same requests sent alone), seeds, checkpoint axis, errors."""

from __future__ import annotations

import base64
import io
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from webui.app import build_app
from webui.config import parse
from webui.plugins.builtin.scripts.xyz_grid import (
    AxisOption,
    ScriptXYZGrid,
    add_infotext_params,
    current_axis_options,
    expand_values,
    str_permutations,
)

BOTH = ["Nothing", "Seed", "Var. seed", "Var. strength", "Steps"]
TAIL = ["Checkpoint name", "Negative Guidance minimum sigma", "Sigma Churn", "Sigma min", "Sigma max", "Sigma noise",
        "Schedule type", "Schedule min sigma", "Schedule max sigma", "Schedule rho", "Beta schedule alpha",
        "Beta schedule beta", "Eta", "Clip skip", "Denoising", "Initial noise multiplier", "Extra noise"]
END = ["VAE", "Styles", "UniPC Order", "Face restore", "Token merging ratio", "Token merging ratio high-res",
       "Always discard next-to-last sigma", "SGM noise multiplier", "Refiner checkpoint", "Refiner switch at",
       "RNG source", "FP8 mode", "Size",
       # A1111's built-in Hypertile extension appends its axes when the UI is built
       "[Hypertile] Unet First pass Enabled", "[Hypertile] Unet Second pass Enabled", "[Hypertile] Unet Max Depth",
       "[Hypertile] Unet Max Tile Size", "[Hypertile] Unet Swap Size", "[Hypertile] VAE Enabled",
       "[Hypertile] VAE Max Depth", "[Hypertile] VAE Max Tile Size", "[Hypertile] VAE Swap Size"]
# A1111 v1.10.1 axis_options as each tab lists them (AxisOptionTxt2Img / AxisOptionImg2Img filtered).
TXT2IMG_AXES = [*BOTH, "Hires steps", "CFG Scale", "Prompt S/R", "Prompt order", "Sampler", "Hires sampler", *TAIL,
                "Hires upscaler", *END]
IMG2IMG_AXES = [*BOTH, "CFG Scale", "Image CFG Scale", "Prompt S/R", "Prompt order", "Sampler", *TAIL,
                "Cond. Image Mask Weight", *END]

A1111_ARGS = [  # (label, default) in the order A1111's ui() returns them
    ("X type", "Seed"), ("X values", ""), ("X values", None),
    ("Y type", "Nothing"), ("Y values", ""), ("Y values", None),
    ("Z type", "Nothing"), ("Z values", ""), ("Z values", None),
    ("Draw legend", True), ("Include Sub Images", False), ("Include Sub Grids", False), ("Keep -1 for seeds", False),
    ("Vary seeds for X", False), ("Vary seeds for Y", False), ("Vary seeds for Z", False),
    ("Grid margins (px)", 0), ("Use text inputs instead of dropdowns", False),
]


@pytest.fixture
def client(data_dir):
    config = parse(["--nowebui", "--data-dir", str(data_dir), "--skip-load-model-at-start"])
    with TestClient(build_app(config)) as c:
        yield c


BODY = {"prompt": "a cat", "negative_prompt": "", "steps": 1, "width": 32, "height": 32, "seed": 5,
        "sampler_name": "Euler"}


def _axis(label: str, img2img: bool = False) -> int:
    return (IMG2IMG_AXES if img2img else TXT2IMG_AXES).index(label)


def _args(x=("Nothing", ""), y=("Nothing", ""), z=("Nothing", ""), *, legend=False, sub_images=True,
          sub_grids=False, keep=False, vary=(False, False, False), margin=0, csv_mode=True):
    out = []
    for label, values in (x, y, z):
        out += [_axis(label), values, []]
    return [*out, legend, sub_images, sub_grids, keep, *vary, margin, csv_mode]


def _decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_args_and_axes_equal_a1111s(client):
    assert [o.label for o in current_axis_options(False)] == TXT2IMG_AXES
    assert [o.label for o in current_axis_options(True)] == IMG2IMG_AXES
    info = {(s["name"], s["is_img2img"]): s for s in client.get("/sdapi/v1/script-info").json()}
    for img2img, axes in ((False, TXT2IMG_AXES), (True, IMG2IMG_AXES)):
        args = info[("x/y/z plot", img2img)]["args"]
        assert [(a["label"], a["value"]) for a in args] == A1111_ARGS
        assert args[0]["choices"] == axes and args[3]["choices"] == axes
        assert (args[16]["minimum"], args[16]["maximum"], args[16]["step"]) == (0, 500, 2)
    assert "x/y/z plot" in client.get("/sdapi/v1/scripts").json()["txt2img"]


@pytest.mark.parametrize("kind, text, expected", [
    (int, "1-5", [1, 2, 3, 4, 5]),
    (int, "1-5 (+2)", [1, 3, 5]),
    (int, "10-1 (-3)", [10, 7, 4]),  # A1111: range(start, end + 1, step), so a falling range stops short
    (int, "1-10 [5]", [1, 3, 5, 7, 10]),
    (int, "1, 3-4, 7", [1, 3, 4, 7]),
    (float, "0.5-1.5 (+0.5)", [0.5, 1.0, 1.5]),
    (float, "1-2 [3]", [1.0, 1.5, 2.0]),
    (float, "7, 7.5", [7.0, 7.5]),
    (str, "a, b", ["a", "b"]),
    (str_permutations, "a, b", [("a", "b"), ("b", "a")]),
])
def test_range_syntax(kind, text, expected):
    from webui.plugins.builtin.scripts.xyz_grid import csv_string_to_list_strip

    opt = AxisOption("t", kind, None)
    assert expand_values(opt, csv_string_to_list_strip(text)) == expected


def test_extra_params_go_before_version():
    text = "a cat\nSteps: 1, Seed: 5, Version: v1.10.1"
    assert add_infotext_params(text, {"Script": "X/Y/Z plot", "X Values": "1, 2"}) == (
        'a cat\nSteps: 1, Seed: 5, Script: X/Y/Z plot, X Values: "1, 2", Version: v1.10.1')


def test_steps_by_cfg_grid_and_sub_images_equal_single_requests(client):
    body = {**BODY, "script_name": "x/y/z plot",
            "script_args": _args(("Steps", "1-2"), ("CFG Scale", "5, 7"))}
    r = client.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    info = json.loads(data["info"])
    assert len(data["images"]) == 5
    assert _decode(data["images"][0]).size == (64, 64)  # 2 x 2 cells of 32 px, no legend
    grid_text = info["infotexts"][0]
    assert "Script: X/Y/Z plot, X Type: Steps, X Values: 1-2, Y Type: CFG Scale, Y Values: \"5, 7\"" in grid_text
    assert info["index_of_first_image"] == 1
    cells = [(1, 5.0), (2, 5.0), (1, 7.0), (2, 7.0)]  # x first, then y (A1111's cell order in the grid)
    for (steps, cfg), image in zip(cells, data["images"][1:]):
        alone = client.post("/sdapi/v1/txt2img", json={**BODY, "steps": steps, "cfg_scale": cfg}).json()
        assert alone["images"][0] == image  # same PNG bytes, infotext included

    legend = client.post("/sdapi/v1/txt2img", json={**body, "script_args": _args(
        ("Steps", "1-2"), ("CFG Scale", "5, 7"), legend=True, sub_images=False, margin=4)}).json()
    assert len(legend["images"]) == 1
    w, h = _decode(legend["images"][0]).size
    assert w > 64 + 4 and h > 64 + 4  # legend column / row and margins around the cells


def test_z_axis_makes_a_grid_of_grids(client):
    args = _args(("Steps", "1"), ("CFG Scale", "5"), ("Seed", "3, 4"), sub_images=False, sub_grids=True)
    data = client.post("/sdapi/v1/txt2img", json={**BODY, "script_name": "X/Y/Z plot", "script_args": args}).json()
    sizes = [_decode(b).size for b in data["images"]]
    assert sizes == [(64, 32), (32, 32), (32, 32)]  # the Z grid (two 1x1 grids side by side), then the sub-grids
    info = json.loads(data["info"])
    assert "Z Type: Seed, Z Values: \"3, 4\", Fixed Z Values: \"3, 4\"" in info["infotexts"][0]


def test_seed_axis_fixes_minus_one_unless_kept(client):
    body = {**BODY, "script_name": "x/y/z plot"}
    fixed = json.loads(client.post("/sdapi/v1/txt2img", json={
        **body, "script_args": _args(("Seed", "-1, 7"))}).json()["info"])
    seeds = [int(t.split("Seed: ")[1].split(",")[0]) for t in fixed["infotexts"][1:]]
    assert seeds[0] != -1 and seeds[1] == 7
    assert f'Fixed X Values: "{seeds[0]}, 7"' in fixed["infotexts"][0]

    kept = json.loads(client.post("/sdapi/v1/txt2img", json={
        **body, "seed": -1, "script_args": _args(("Steps", "1, 1"), keep=True)}).json()["info"])
    kept_seeds = [int(t.split("Seed: ")[1].split(",")[0]) for t in kept["infotexts"][1:]]
    assert kept_seeds[0] != kept_seeds[1]  # -1 kept: each cell draws its own seed
    assert "Fixed X Values" not in kept["infotexts"][0]

    varied = json.loads(client.post("/sdapi/v1/txt2img", json={
        **body, "script_args": _args(("Steps", "1, 1"), vary=(True, False, False))}).json()["info"])
    assert [t.split("Seed: ")[1].split(",")[0] for t in varied["infotexts"][1:]] == ["5", "6"]


def test_checkpoint_axis_switches_models_and_keeps_the_option(client):
    before = client.get("/sdapi/v1/options").json()["sd_model_checkpoint"]
    args = _args(("Checkpoint name", ""), csv_mode=False)
    args[2] = ["tiny-sd15", "tiny-sd2-v"]  # the dropdown form
    r = client.post("/sdapi/v1/txt2img", json={**BODY, "script_name": "x/y/z plot", "script_args": args})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert "Model: tiny-sd15" in info["infotexts"][1] and "Model: tiny-sd2-v" in info["infotexts"][2]
    assert "X Values: \"tiny-sd15,tiny-sd2-v\"" in info["infotexts"][0]
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == before


@pytest.mark.parametrize("args, words", [
    ([99, "1"], ["X/Y/Z plot", "X type", "Nothing", "Seed"]),
    (_args(("Steps", "1-x")), ["X/Y/Z plot", "X values", "1-x"]),
    (_args(("Steps", "1"), ("Sampler", "Euler, Nope")), ["X/Y/Z plot", "Y values", "Nope", "Euler a"]),
    (_args(("Checkpoint name", "nope")), ["X/Y/Z plot", "X values", "nope", "tiny-sd15"]),
    (_args(("VAE", "nope")), ["X/Y/Z plot", "X values", "nope", "Automatic"]),
    (_args(("Hires upscaler", "nope")), ["X/Y/Z plot", "X values", "nope", "Latent"]),
    (_args(("Prompt S/R", "dog, cow")), ["X/Y/Z plot", "X values", "dog"]),
    ([1, 2], ["X/Y/Z plot", "X values"]),
])
def test_bad_axis_input_is_a_4xx_before_any_image(client, args, words):
    r = client.post("/sdapi/v1/txt2img", json={**BODY, "script_name": "x/y/z plot", "script_args": args})
    assert 400 <= r.status_code < 500, r.text
    text = json.dumps(r.json())
    for word in words:
        assert word in text


def test_img2img_axes(client):
    init = Image.linear_gradient("L").convert("RGB").resize((32, 32))
    buf = io.BytesIO()
    init.save(buf, format="PNG")
    args = _args(("Denoising", "0.5, 0.75"))
    args[0] = _axis("Denoising", img2img=True)
    r = client.post("/sdapi/v1/img2img", json={**BODY, "init_images": [base64.b64encode(buf.getvalue()).decode()],
                                               "script_name": "x/y/z plot", "script_args": args})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert "Denoising strength: 0.5" in info["infotexts"][1] and "Denoising strength: 0.75" in info["infotexts"][2]


def test_script_class_title():
    assert ScriptXYZGrid().title() == "X/Y/Z plot"



def test_hypertile_axis_sets_the_option_per_cell(client):
    """"[Hypertile] Unet Max Depth" 0,1: each cell runs with that option as an override; out of range is a 422."""
    r = client.post("/sdapi/v1/txt2img", json={**BODY, "script_name": "x/y/z plot", "script_args": _args(
        x=("[Hypertile] Unet Max Depth", "0,1"))})
    assert r.status_code == 200, r.text
    bad = client.post("/sdapi/v1/txt2img", json={**BODY, "script_name": "x/y/z plot", "script_args": _args(
        x=("[Hypertile] Unet Max Depth", "0,7"))})
    assert bad.status_code == 422 and "out of range [0, 3]" in bad.json()["detail"]
