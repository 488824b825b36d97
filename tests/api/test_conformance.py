"""Conformance: the real app on a loopback port, driven by the real ``webuiapi`` PyPI client and by plain httpx
replays of what Open WebUI, Dify, SillyTavern and oobabooga send (../shared/spec/clients.md).

One server for the module (UI mode: --api, so /internal/* exists) with the tiny SD1 and SD2 checkpoints; every
generation is 64x64 with 1-2 steps unless a test needs a long job to poll or interrupt.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import httpx
import piexif
import piexif.helper
import pytest
import webuiapi
from PIL import Image

from tests.api.live_server import data_dir_with, live_server

SD15 = "tiny-sd15.safetensors"
SD2 = "sd2/tiny-sd2-v.safetensors"
SMALL = {"width": 64, "height": 64, "steps": 2}


@pytest.fixture(scope="module")
def server(models_root, tmp_path_factory):
    data = data_dir_with(tmp_path_factory.mktemp("conformance"), models_root, SD15, SD2)
    with live_server(["--api", "--data-dir", str(data)]) as (url, app):
        yield url, app


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server[0], timeout=300, trust_env=False) as client:
        yield client


@pytest.fixture
def api(server):
    host, port = server[0].removeprefix("http://").split(":")
    client = webuiapi.WebUIApi(host=host, port=int(port), sampler="Euler a", steps=2)
    client.session.trust_env = False
    return client


def _title(http, name):
    return next(m["title"] for m in http.get("/sdapi/v1/sd-models").json() if m["filename"].endswith(name))


def _wait(predicate, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out")


# -- webuiapi ---------------------------------------------------------------------------------------------------------


def test_webuiapi_txt2img_and_png_info(api):
    r = api.txt2img(prompt="a cat", seed=5, cfg_scale=7, **SMALL)
    assert r.image.size == (64, 64) and r.image.format == "PNG"
    assert r.info["seed"] == 5 and r.info["all_seeds"] == [5] and r.info["width"] == 64
    assert r.info["sampler_name"] == "Euler a"
    text = r.info["infotexts"][0]
    assert text.startswith("a cat\nSteps: 2, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.0, Seed: 5, "
                           "Size: 64x64, Model hash: ")
    assert r.parameters["steps"] == 2 and r.parameters["sampler_index"] == "Euler a"
    assert r.image.info["parameters"] == text

    png = api.png_info(r.image)  # webuiapi sends a data: URL
    assert png.info == text
    assert png.parameters["Prompt"] == "a cat" and png.parameters["Seed"] == "5"
    assert png.parameters["Size-1"] == "64" and png.parameters["Size-2"] == "64"
    assert png.parameters["Sampler"] == "Euler a" and png.parameters["Clip skip"] == "1"


def test_webuiapi_lists(api):
    names = [s["name"] for s in api.get_samplers()]
    assert len(names) == 20 and names[:2] == ["DPM++ 2M", "DPM++ SDE"] and "Euler a" in api.util_get_sampler_names()
    assert api.util_get_scheduler_names()[0] == "align_your_steps"
    models = api.get_sd_models()
    assert {m["model_name"] for m in models} == {"tiny-sd15", "sd2_tiny-sd2-v"}
    scripts = api.get_scripts()
    assert scripts["txt2img"][:4] == ["refiner", "seed", "sampler", "comments"] and "controlnet" in scripts["img2img"]
    assert [m["name"] for m in api.get_latent_upscale_modes()][:2] == ["Latent", "Latent (antialiased)"]
    mem = api.get_memory()
    assert set(mem["ram"]) == {"free", "used", "total"} and mem["ram"]["used"] > 0
    flags = api.get_cmd_flags()
    assert flags["api"] is True and flags["nowebui"] is False and flags["port"] is None


def test_webuiapi_util_set_model_and_options(api, http):
    api.util_set_model("sd2/tiny-sd2-v")  # webuiapi picks the closest title and POSTs /options
    sd2_title = _title(http, "tiny-sd2-v.safetensors")
    assert sd2_title.startswith("sd2/tiny-sd2-v.safetensors [")  # hashed once loaded
    assert api.util_get_current_model() == sd2_title
    assert api.get_options()["sd_model_checkpoint"] == sd2_title
    r = api.txt2img(prompt="x", seed=1, **SMALL)
    assert r.info["sd_model_name"] == "tiny-sd2-v"

    api.set_options({"samples_format": "jpg", "jpeg_quality": 90})
    try:
        opts = api.get_options()
        assert opts["samples_format"] == "jpg" and opts["jpeg_quality"] == 90
        r = api.txt2img(prompt="as jpeg", seed=2, **SMALL)
        assert r.image.format == "JPEG"
        comment = piexif.load(r.image.info["exif"])["Exif"][piexif.ExifIFD.UserComment]
        assert piexif.helper.UserComment.load(comment) == r.info["infotexts"][0]
    finally:
        api.set_options({"samples_format": "png", "jpeg_quality": 80})


def test_progress_live_preview_and_interrupt(api, http, server):
    """A long job: webuiapi polls progress (with the "Approx cheap" preview), then interrupts it; the request still
    answers 200 with the partial image, as A1111's does."""
    api.set_options({"live_previews_enable": True, "show_progress_every_n_steps": 1})
    out = {}
    body = {"prompt": "long", "seed": 3, "width": 64, "height": 64, "steps": 400, "force_task_id": "task(long-1)"}
    worker = threading.Thread(target=lambda: out.update(r=http.post("/sdapi/v1/txt2img", json=body)))
    worker.start()
    try:
        def previewing():
            p = api.get_progress()
            return p if p["state"]["sampling_step"] >= 2 and p["current_image"] else None

        p = _wait(previewing)
        assert p["state"]["job"] == "scripts_txt2img" and p["state"]["job_count"] == 1
        assert p["state"]["sampling_steps"] == 400 and 0.01 < p["progress"] < 1 and p["eta_relative"] > 0
        assert list(p) == ["progress", "eta_relative", "state", "current_image", "textinfo"]
        preview = Image.open(io.BytesIO(base64.b64decode(p["current_image"])))
        assert preview.format == "PNG" and preview.size == (8, 8)  # the latent's size
        skipped = http.get("/sdapi/v1/progress", params={"skip_current_image": "true"}).json()
        assert skipped["current_image"] is None
        mine = http.get("/sdapi/v1/progress", params={"id_task": "task(long-1)"}).json()
        assert mine["status"] == "running" and mine["state"]["job"] == "scripts_txt2img"
        internal = http.post("/internal/progress", json={"id_task": "task(long-1)", "id_live_preview": -1}).json()
        assert internal["active"] is True and internal["live_preview"].startswith("data:image/png;base64,")
        assert internal["id_live_preview"] >= 1
        assert api.interrupt() == {}
    finally:
        worker.join(300)
        api.set_options({"show_progress_every_n_steps": 10})
    r = out["r"]
    assert r.status_code == 200 and r.headers["x-task-id"] == "task(long-1)"
    assert len(r.json()["images"]) == 1
    after = api.get_progress()
    assert after["state"]["interrupted"] is True and after["state"]["job_count"] == 0  # A1111 keeps the flag
    api.util_wait_for_ready(check_interval=0.05)  # progress 0 and job_count 0: returns at once
    mine = http.get("/sdapi/v1/progress", params={"id_task": "task(long-1)"}).json()
    assert mine["status"] == "interrupted" and mine["progress"] == 1.0
    done = http.post("/internal/progress", json={"id_task": "task(long-1)"}).json()
    assert done["completed"] is True and done["active"] is False


def test_queued_task_progress_and_cancel_by_id(http, server):
    """Two clients' jobs behind a busy worker: each sees its own queue position, not the running job; one cancels
    its own queued task by id; the other is not touched."""
    queue = server[1].state.webui.queue
    started, release = threading.Event(), threading.Event()
    blocker = queue.submit("other-client", lambda p: (started.set(), release.wait(60)))
    assert started.wait(30)
    out = {}

    def post(name):
        body = {"prompt": name, "seed": 1, **SMALL, "force_task_id": f"task({name})"}
        out[name] = http.post("/sdapi/v1/txt2img", json=body)

    threads = [threading.Thread(target=post, args=(n,)) for n in ("first", "second")]
    try:
        threads[0].start()
        _wait(lambda: queue.pending_tasks() == ["task(first)"])
        threads[1].start()
        _wait(lambda: queue.pending_tasks() == ["task(first)", "task(second)"])
        mine = http.get("/sdapi/v1/progress", params={"id_task": "task(second)"}).json()
        assert (mine["status"], mine["queue_position"], mine["queue_size"]) == ("queued", 2, 2)
        assert mine["textinfo"] == "In queue: 2/2" and mine["progress"] == 0.0
        assert mine["state"]["job"] == "" and mine["state"]["job_count"] == 0  # nothing of the running job
        assert http.get("/internal/pending-tasks").json() == {"size": 2, "tasks": ["task(first)", "task(second)"]}
        internal = http.post("/internal/progress", json={"id_task": "task(first)"}).json()
        assert internal == {"active": False, "queued": True, "completed": False, "progress": None, "eta": None,
                            "live_preview": None, "id_live_preview": -1, "textinfo": "In queue: 1/2"}
        dup = http.post("/sdapi/v1/txt2img", json={**SMALL, "force_task_id": "task(first)"})
        assert dup.status_code == 409 and "task(first)" in dup.json()["detail"]
        assert http.post("/sdapi/v1/interrupt", params={"id_task": "task(second)"}).json() == {}
        threads[1].join(30)
        assert out["second"].status_code == 409 and out["second"].headers["x-task-id"] == "task(second)"
        assert out["second"].json()["error"] == "TaskCancelled"
        assert http.get("/sdapi/v1/progress", params={"id_task": "task(second)"}).json()["status"] == "cancelled"
        assert queue.pending_tasks() == ["task(first)"] and not queue.progress.interrupted
    finally:
        release.set()
        blocker.result(60)
        for t in threads:
            t.join(300)
    assert out["first"].status_code == 200 and out["first"].headers["x-task-id"] == "task(first)"
    assert http.get("/sdapi/v1/progress", params={"id_task": "task(first)"}).json()["status"] == "finished"
    assert http.post("/sdapi/v1/interrupt", params={"id_task": "task(nope)"}).status_code == 404


# -- what other clients send (clients.md) -------------------------------------------------------------------------------


def test_open_webui_posts_the_whole_options_body_back(http):
    opts = http.get("/sdapi/v1/options").json()
    assert http.post("/sdapi/v1/options", json=opts).json() is None  # unchanged: accepted as is
    assert opts["sd_model_checkpoint"] == _title(http, SD2)  # from the util_set_model test
    r = http.post("/sdapi/v1/options", json={**opts, "sd_model_checkpoint": _title(http, SD15)})
    assert r.status_code == 200 and r.json() is None
    after = http.get("/sdapi/v1/options").json()
    assert after["sd_model_checkpoint"] == _title(http, SD15)
    # the switch changed the checkpoint and its hash (A1111 load_model sets sd_checkpoint_hash), nothing else
    switched = ("sd_model_checkpoint", "sd_checkpoint_hash")
    assert {k: v for k, v in after.items() if k not in switched} == \
        {k: v for k, v in opts.items() if k not in switched}
    assert after["sd_checkpoint_hash"] != opts["sd_checkpoint_hash"]
    r = http.post("/sdapi/v1/txt2img", json={"prompt": "owui", "batch_size": 1, **SMALL})
    assert r.status_code == 200 and json.loads(r.json()["info"])["sd_model_name"] == "tiny-sd15"


def test_dify_bare_model_name_and_legacy_payload(http):
    r = http.post("/sdapi/v1/options", content=json.dumps({"sd_model_checkpoint": "tiny-sd15"}).encode())  # no content-type
    assert r.status_code == 200, r.text
    assert http.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == _title(http, SD15)
    legacy = {
        "prompt": "dify", "negative_prompt": "", "width": 64, "height": 64, "steps": 1, "cfg_scale": 7,
        "sampler_index": "Euler a", "seed": 9, "subseed": -1, "subseed_strength": 0, "seed_resize_from_h": -1,
        "seed_resize_from_w": -1, "batch_size": 1, "n_iter": 1, "restore_faces": False, "do_not_save_samples": False,
        "do_not_save_grid": False, "eta": 0, "denoising_strength": 0, "s_min_uncond": 0, "s_churn": 0, "s_tmax": 0,
        "s_tmin": 0, "s_noise": 0, "override_settings": {}, "override_settings_restore_afterwards": True,
        "refiner_checkpoint": "", "refiner_switch_at": 0, "disable_extra_networks": False, "comments": {},
        "enable_hr": False, "firstphase_width": 0, "firstphase_height": 0, "hr_scale": 2, "hr_second_pass_steps": 0,
        "hr_resize_x": 0, "hr_resize_y": 0, "hr_prompt": "", "hr_negative_prompt": "", "styles": [],
        "script_args": ["outpainting mk2"], "script_name": None, "send_images": True, "save_images": False,
        "alwayson_scripts": {},
    }
    r = http.post("/sdapi/v1/txt2img", content=json.dumps(legacy).encode())
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["sampler_name"] == "Euler a" and info["seed"] == 9 and info["steps"] == 1


def test_sillytavern_override_settings_are_restored(http):
    body = {
        "prompt": "tavern", "negative_prompt": "", "sampler_name": "DPM++ 2M", "scheduler": "Automatic", "steps": 2,
        "cfg_scale": 7, "width": 64, "height": 64, "restore_faces": False, "enable_hr": False, "hr_upscaler": "Latent",
        "hr_scale": 2, "denoising_strength": 0.7, "hr_second_pass_steps": 0, "seed": 42,
        "override_settings": {"CLIP_stop_at_last_layers": 2, "sd_vae": "Automatic"},
        "override_settings_restore_afterwards": True, "clip_skip": 2, "save_images": False, "send_images": True,
        "do_not_save_grid": False, "do_not_save_samples": False,
    }
    r = http.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert "Clip skip: 2" in info["infotexts"][0] and info["clip_skip"] == 2
    assert info["extra_generation_params"]["Schedule type"] == "Karras"
    assert http.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 1  # restored

    # override_settings_restore_afterwards false: A1111 leaves the overridden options set after the job
    sticky = {**body, "steps": 1, "override_settings": {"CLIP_stop_at_last_layers": 3},
              "override_settings_restore_afterwards": False}
    try:
        assert http.post("/sdapi/v1/txt2img", json=sticky).status_code == 200
        assert http.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 3
    finally:
        assert http.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 1}).status_code == 200


def test_oobabooga_empty_string_bodies(http):
    assert http.post("/sdapi/v1/unload-checkpoint", json="").json() == {}
    assert http.post("/sdapi/v1/reload-checkpoint", json="").json() == {}
    assert http.post("/sdapi/v1/unload-checkpoint").json() == {}
    r = http.post("/sdapi/v1/txt2img", json={"prompt": "after reload", "seed": 4, **SMALL})
    assert r.status_code == 200  # the next job loads the model again
    assert http.post("/sdapi/v1/reload-checkpoint").json() == {}


# -- bad input over the wire ------------------------------------------------------------------------------------------


def _a1111_error(r, status):
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["error", "detail", "body", "errors"]
    return body


def test_absurd_sizes_are_refused_before_queueing(http, server):
    queue = server[1].state.webui.queue
    t = time.time()
    for field in ("width", "height"):
        err = _a1111_error(http.post("/sdapi/v1/txt2img", json={"prompt": "x", field: 100000}), 422)
        assert f"{field} must be at most 16384" in err["detail"] and err["errors"].startswith(f"{field}:")
    assert "batch_size" in _a1111_error(http.post("/sdapi/v1/txt2img", json={"batch_size": 5000}), 422)["errors"]
    assert "steps" in _a1111_error(http.post("/sdapi/v1/txt2img", json={"steps": 10**9}), 422)["errors"]
    assert "seed" in _a1111_error(http.post("/sdapi/v1/txt2img", json={"seed": 2**70}), 422)["errors"]
    assert "seed_resize_from_w" in _a1111_error(
        http.post("/sdapi/v1/txt2img", json={"seed_resize_from_w": 100000, "seed_resize_from_h": 64}), 422)["errors"]
    assert time.time() - t < 10 and queue.pending_count == 0


@pytest.mark.parametrize("body, field, status", [
    ({"steps": "many"}, "steps", 422),
    ({"styles": "not a list"}, "styles", 422),
    ({"prompt": ["a", "b"]}, "prompt", 422),
    ({"cfg_scale": "nan"}, "cfg_scale", 422),
    ({"override_settings": {"CLIP_stop_at_last_layers": "two"}}, "CLIP_stop_at_last_layers", 422),
    ({"override_settings": {"samples_format": "gif"}}, "png, jpg, jpeg, webp", 422),
    ({"override_settings": {"no_such_option": 1}}, "no_such_option", 400),
    ({"alwayson_scripts": {"ADetailer": {"args": [{"ad_model": "face_yolov8n.pt"}]}}}, "ADetailer", 422),
    ({"alwayson_scripts": {"ControlNet": {"args": [{"enabled": True, "module": "canny", "model": "nope"}]}}},
     "nope", 422),
    ({"alwayson_scripts": {"ADetailer": {"args": [True, False]}}}, "ADetailer", 422),
    # X/Y/Z plot exists: X type 1 (Seed) with X values 2, a number where A1111 reads text -- A1111 fails in
    # csv.reader (a 500 TypeError); we answer 422 naming the script and the argument, before any image.
    ({"script_name": "x/y/z plot", "script_args": [1, 2]}, "X/Y/Z plot: X values", 422),
])
def test_bad_txt2img_fields_name_the_field(http, body, field, status):
    err = _a1111_error(http.post("/sdapi/v1/txt2img", json={"prompt": "x", **SMALL, **body}), status)
    assert field in json.dumps(err)


def test_unknown_script_is_a1111s_422(http):
    err = _a1111_error(http.post("/sdapi/v1/txt2img", json={"alwayson_scripts": {"ADetailer": {"args": []}}}), 422)
    assert err["error"] == "HTTPException" and err["detail"] == "Script 'ADetailer' not found"
    # the built-in ControlNet is a known always-on script: no units is no control, not an error
    assert http.post("/sdapi/v1/txt2img", json={"steps": 1, "width": 64, "height": 64,
                                                "alwayson_scripts": {"ControlNet": {"args": []}}}).status_code == 200


def test_malformed_json_and_wrong_body_types(http):
    err = _a1111_error(http.post("/sdapi/v1/txt2img", content=b"{not json",
                                 headers={"content-type": "application/json"}), 422)
    assert err["detail"][0]["type"] == "value_error.jsondecode" and err["detail"][0]["loc"][0] == "body"
    err = _a1111_error(http.post("/sdapi/v1/txt2img", json=[1, 2]), 422)
    assert err["detail"][0] == {"loc": ["body"], "msg": "value is not a valid dict", "type": "type_error.dict"}
    err = _a1111_error(http.post("/sdapi/v1/txt2img", json={"steps": "x"}), 422)
    assert err["detail"][0] == {"loc": ["body", "steps"], "msg": "value is not a valid integer",
                                "type": "type_error.integer"}
    assert _a1111_error(http.post("/sdapi/v1/options", json=[1]), 422)["detail"][0]["loc"] == ["body"]
    assert http.get("/sdapi/v1/progress", params={"skip_current_image": "maybe"}).status_code == 422


def test_png_info_bad_images(http):
    err = _a1111_error(http.post("/sdapi/v1/png-info", json={"image": "not base64 at all!"}), 400)
    assert err["detail"] == "Invalid encoded image" and err["errors"].startswith("image:")
    err = _a1111_error(http.post("/sdapi/v1/png-info", json={"image": "http://127.0.0.1:9/x.png"}), 403)
    assert err["detail"] == "Request to local resource not allowed"
    assert _a1111_error(http.post("/sdapi/v1/png-info", json={}), 422)["detail"][0]["loc"] == ["body", "image"]
    blank = io.BytesIO()
    Image.new("RGB", (4, 4)).save(blank, format="PNG")
    r = http.post("/sdapi/v1/png-info", json={"image": base64.b64encode(blank.getvalue()).decode()})
    assert r.status_code == 200 and r.json()["info"] == "" and r.json()["parameters"]["Clip skip"] == "1"


def test_server_keeps_serving_after_errors(http):
    for _ in range(3):
        http.post("/sdapi/v1/txt2img", json={"width": 10**6})
        http.post("/sdapi/v1/txt2img", content=b"]")
    r = http.post("/sdapi/v1/txt2img", json={"prompt": "still here", "seed": 7, **SMALL})
    assert r.status_code == 200 and len(r.json()["images"]) == 1


def test_webuiapi_script_call_xyz_plot(api):
    """webuiapi's txt2img(script_name=..., script_args=[...]) as clients send it: positional X/Y/Z args, axis types
    by index into A1111's list; the grid comes first."""
    from webui.plugins.builtin.scripts.xyz_grid import current_axis_options

    labels = [a.label for a in current_axis_options(False)]
    steps, cfg = labels.index("Steps"), labels.index("CFG Scale")
    args = [steps, "1,2", [], cfg, "5,7", [], 0, "", [], True, True, False, False, False, False, False, 0, False]
    r = api.txt2img(prompt="a cat", seed=5, script_name="X/Y/Z plot", script_args=args, **SMALL)
    assert len(r.images) == 5  # the grid, then the four cells (Include Sub Images)
    grid = r.images[0]
    assert grid.size[0] >= 128 and grid.size[1] >= 128  # 2 x 2 cells of 64 x 64, plus the legend margins
    assert all(im.size == (64, 64) for im in r.images[1:])
    assert "Script: X/Y/Z plot, X Type: Steps, X Values: \"1,2\", Y Type: CFG Scale" in r.info["infotexts"][0]
