"""Routes without a model: --api-auth on every route, the OpenAPI schema, UI-only routes, options checks and
--freeze-settings*, cmd-flags, memory, scripts, extensions."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from webui.app import build_app
from webui.config import parse

PUBLIC = {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/"}


def _client(data_dir, *flags):
    config = parse(["--data-dir", str(data_dir), "--skip-load-model-at-start", *flags])
    return TestClient(build_app(config))


@pytest.fixture
def client(data_dir):
    with _client(data_dir, "--api") as c:
        yield c


def test_every_route_needs_api_auth(data_dir):
    """Enumerate what the app registers: everything but the docs needs credentials (A1111 leaves /internal/* and
    the Lora routes open; we do not), with A1111's 401 body and the WWW-Authenticate header it forgets."""
    with _client(data_dir, "--api", "--api-auth", "alice:s3cret,bob:pw") as c:
        routes = [(r.path, m) for r in c.app.routes if hasattr(r, "methods") for m in sorted(r.methods)
                  if m != "HEAD"]
        guarded = [(p, m) for p, m in routes if p not in PUBLIC]
        assert {p for p, _ in guarded} >= {"/sdapi/v1/txt2img", "/sdapi/v1/options", "/sdapi/v1/progress",
                                           "/internal/progress", "/internal/pending-tasks"}
        assert all(p.startswith(("/sdapi/", "/internal/", "/controlnet/")) for p, _ in guarded), guarded
        bad_b64 = {"Authorization": "Basic %%%not-base64"}
        no_colon = {"Authorization": "Basic " + base64.b64encode(b"alice").decode()}
        for path, method in guarded:
            for headers, auth, detail in (
                ({}, None, "Not authenticated"),
                ({"Authorization": "Bearer x"}, None, "Not authenticated"),
                (bad_b64, None, "Invalid authentication credentials"),
                (no_colon, None, "Invalid authentication credentials"),
                ({}, ("alice", "wrong"), "Incorrect username or password"),
                ({}, ("mallory", "s3cret"), "Incorrect username or password"),
                ({}, ("bob", "s3cret"), "Incorrect username or password"),
            ):
                r = c.request(method, path, headers=headers, auth=auth)
                assert r.status_code == 401, (method, path, r.status_code, r.text)
                assert r.json() == {"error": "HTTPException", "detail": detail, "body": "", "errors": ""}
                assert r.headers["www-authenticate"] == "Basic"
            if method == "GET":
                assert c.get(path, auth=("bob", "pw")).status_code == 200, path
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert c.get(path).status_code == 200
        # a well-formed body with bad values gets 401 first (FastAPI runs the auth dependency before validation)
        assert c.post("/sdapi/v1/txt2img", json={"steps": "x"}).status_code == 401
        assert c.post("/sdapi/v1/txt2img", json={"steps": "x"}, auth=("alice", "s3cret")).status_code == 422


def test_openapi_has_typed_schemas(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    api_routes = [r for r in client.app.routes if isinstance(r, APIRoute) and r.include_in_schema]
    assert api_routes
    for route in api_routes:
        for method in route.methods:
            op = spec["paths"][route.path][method.lower()]
            schema = op["responses"]["200"]["content"]["application/json"]["schema"]
            assert schema, (route.path, method)
            for ref in _refs(schema):
                assert ref.split("/")[-1] in schemas, ref
    assert schemas["Options"]["properties"]["jpeg_quality"]["anyOf"][0]["type"] == "integer"
    assert schemas["Options"]["properties"]["samples_format"]["anyOf"][0]["type"] == "string"
    assert schemas["Options"]["properties"]["eta_ancestral"]["anyOf"][0]["type"] == "number"
    assert "port" in schemas["Flags"]["properties"] and "api_auth" in schemas["Flags"]["properties"]
    assert list(schemas["ProgressResponse"]["properties"]) == ["progress", "eta_relative", "state", "current_image",
                                                               "textinfo"]
    txt2img = spec["paths"]["/sdapi/v1/txt2img"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert txt2img["$ref"].endswith("StableDiffusionTxt2ImgProcessingAPI")
    assert list(schemas["StableDiffusionTxt2ImgProcessingAPI"]["properties"])[:3] == ["prompt", "negative_prompt",
                                                                                     "styles"]
    assert client.get("/docs").status_code == 200 and "swagger" in client.get("/docs").text.lower()
    assert client.get("/redoc").status_code == 200


def _refs(schema):
    if isinstance(schema, dict):
        for k, v in schema.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(schema, list):
        for v in schema:
            yield from _refs(v)


@pytest.mark.parametrize("path", ["/sdapi/v1/version"])
def test_later_features_are_absent(client, path):
    assert client.post(path, json={}).status_code in (404, 405)
    assert client.get(path).status_code in (404, 405)
    assert client.get(path).json() == {"detail": "Not Found"}


def test_internal_routes_only_with_the_ui(data_dir):
    with _client(data_dir, "--api") as c:
        assert c.get("/internal/ping").json() == {}
        assert c.get("/internal/pending-tasks").json() == {"size": 0, "tasks": []}
        assert c.post("/internal/progress", json={"id_task": "task(x)"}).json() == {
            "active": False, "queued": False, "completed": False, "progress": None, "eta": None,
            "live_preview": None, "id_live_preview": -1, "textinfo": "Waiting..."}
    with _client(data_dir, "--nowebui") as c:
        for path in ("/internal/ping", "/internal/pending-tasks"):
            assert c.get(path).status_code == 404
        assert c.get("/sdapi/v1/progress").status_code == 200


def test_idle_progress_interrupt_and_skip(client):
    p = client.get("/sdapi/v1/progress").json()
    assert p == {"progress": 0.0, "eta_relative": 0.0, "state": {
        "skipped": False, "interrupted": False, "stopping_generation": False, "job": "", "job_count": 0,
        "job_timestamp": "0", "job_no": 0, "sampling_step": 0, "sampling_steps": 0},
        "current_image": None, "textinfo": None}
    assert client.post("/sdapi/v1/interrupt").json() == {}
    assert client.post("/sdapi/v1/skip").json() is None
    p = client.get("/sdapi/v1/progress").json()
    assert p["state"]["interrupted"] is True and p["state"]["skipped"] is True and p["state"]["job_count"] == 0
    mine = client.get("/sdapi/v1/progress", params={"id_task": "task(nobody)"}).json()
    assert mine["status"] == "unknown" and mine["textinfo"] == "Waiting..." and mine["state"]["interrupted"] is False
    assert client.post("/sdapi/v1/interrupt", params={"id_task": "task(nobody)"}).status_code == 404


# -- options ----------------------------------------------------------------------------------------------------------


def test_options_values_are_checked_and_coerced(client, data_dir):
    def post(body):
        return client.post("/sdapi/v1/options", json=body)

    assert post({"jpeg_quality": "95", "CLIP_stop_at_last_layers": 2.0, "live_previews_enable": "no",
                 "samples_format": "PNG", "eta_ancestral": 1}).json() is None
    opts = client.get("/sdapi/v1/options").json()
    assert (opts["jpeg_quality"], opts["CLIP_stop_at_last_layers"], opts["live_previews_enable"]) == (95, 2, False)
    assert opts["samples_format"] == "png" and opts["eta_ancestral"] == 1.0
    saved = json.loads((data_dir / "config.json").read_text())
    assert saved["jpeg_quality"] == 95 and saved["CLIP_stop_at_last_layers"] == 2

    for body, words in (
        ({"jpeg_quality": 1000}, ["jpeg_quality", "at most 100"]),
        ({"jpeg_quality": "high"}, ["jpeg_quality", "integer"]),
        ({"samples_format": "gif"}, ["samples_format", "png, jpg, jpeg, webp"]),
        ({"eta_ancestral": "nan"}, ["eta_ancestral", "finite"]),
        ({"hide_samplers": "Euler"}, ["hide_samplers", "list"]),
        ({"sd_vae": "nope.safetensors"}, ["sd_vae", "Automatic, None"]),
    ):
        r = post(body)
        assert r.status_code == 422, r.text
        assert all(w in r.json()["detail"] for w in words), r.json()
    r = post({"jpeg_quality": 70, "samples_format": "gif"})  # all or nothing
    assert r.status_code == 422 and client.get("/sdapi/v1/options").json()["jpeg_quality"] == 95
    assert post({"api_enable_requests": False}).status_code == 200  # API-restricted: ignored, as A1111
    assert client.get("/sdapi/v1/options").json()["api_enable_requests"] is True
    r = post({"sd_model_checkpoint": "missing.safetensors"})
    assert r.status_code == 404 and r.json()["errors"] == "model 'missing.safetensors' not found"
    assert post({"no_such_key": 1}).status_code == 400


def test_freeze_settings(data_dir):
    with _client(data_dir, "--api", "--freeze-settings") as c:
        opts = c.get("/sdapi/v1/options").json()
        assert c.post("/sdapi/v1/options", json=opts).status_code == 200  # the unchanged round trip still works
        r = c.post("/sdapi/v1/options", json={"jpeg_quality": 81})
        assert r.status_code == 403
        assert r.json() == {"error": "AssertionError", "detail": "changing settings is disabled", "body": "",
                            "errors": "changing settings is disabled"}
        r = c.post("/sdapi/v1/txt2img", json={"override_settings": {"CLIP_stop_at_last_layers": 3}})
        assert r.status_code == 403 and c.app.state.webui.queue.pending_count == 0


def test_freeze_sections_and_keys(data_dir):
    with _client(data_dir, "--api", "--freeze-settings-in-sections", "saving-images, ui",
                 "--freeze-specific-settings", "CLIP_stop_at_last_layers") as c:
        r = c.post("/sdapi/v1/options", json={"jpeg_quality": 81})
        assert r.status_code == 403 and "section 'saving-images'" in r.json()["detail"]
        r = c.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2})
        assert r.status_code == 403 and "--freeze-specific-settings" in r.json()["detail"]
        assert c.post("/sdapi/v1/options", json={"eta_ancestral": 0.5}).status_code == 200


def test_hide_ui_dir_config_ignores_folder_options(data_dir):
    with _client(data_dir, "--api", "--hide-ui-dir-config") as c:
        assert c.post("/sdapi/v1/options", json={"outdir_samples": "/tmp/elsewhere", "jpeg_quality": 70}).json() is None
        opts = c.get("/sdapi/v1/options").json()
        assert opts["outdir_samples"] == "" and opts["jpeg_quality"] == 70


def test_refresh_checkpoints_rescans(data_dir, models_root, tmp_path):
    extra = tmp_path / "more-checkpoints"
    extra.mkdir()
    with _client(data_dir, "--api", "--ckpt-dir", str(extra)) as c:
        before = {m["model_name"] for m in c.get("/sdapi/v1/sd-models").json()}
        (extra / "added.safetensors").symlink_to(models_root[1]["SD1"])
        assert "added" not in before
        assert c.post("/sdapi/v1/refresh-checkpoints").json() is None
        after = c.get("/sdapi/v1/sd-models").json()
        added = next(m for m in after if m["model_name"] == "added")
        assert added["title"] == "added.safetensors" and added["filename"] == str(extra / "added.safetensors")


# -- listings ---------------------------------------------------------------------------------------------------------


def test_cmd_flags_memory_scripts(data_dir):
    with _client(data_dir, "--api", "--port", "7999", "--api-auth", "u:p") as c:
        flags = c.get("/sdapi/v1/cmd-flags", auth=("u", "p")).json()
        assert list(flags)[:4] == ["api", "nowebui", "listen", "server_name"]
        assert flags["port"] == 7999 and flags["api_auth"] == "u:p" and flags["data_dir"] == str(data_dir)
        assert isinstance(flags["styles_file"], list)
        mem = c.get("/sdapi/v1/memory", auth=("u", "p")).json()
        assert list(mem) == ["ram", "cuda"] and mem["ram"]["used"] > 0
        assert mem["ram"]["total"] == pytest.approx(mem["ram"]["free"] + mem["ram"]["used"])
        import torch

        if not torch.cuda.is_available():
            assert mem["cuda"] == {"error": "unavailable"}
        # A1111's always-on processing scripts and the built-in ControlNet, listed lower-cased as A1111 lists titles
        scripts = c.get("/sdapi/v1/scripts", auth=("u", "p")).json()
        for tab in ("txt2img", "img2img"):
            assert scripts[tab][:4] == ["refiner", "seed", "sampler", "comments"] and "controlnet" in scripts[tab]
        infos = c.get("/sdapi/v1/script-info", auth=("u", "p")).json()
        by_name = {(i["name"], i["is_img2img"]): i for i in infos}
        assert by_name[("controlnet", False)]["is_alwayson"] and by_name[("controlnet", True)]["is_alwayson"]
        assert [a["label"] for a in by_name[("refiner", False)]["args"]] == ["Refiner", "Checkpoint", "Switch at"]
        assert [a["value"] for a in by_name[("seed", True)]["args"]] == [-1, False, -1, 0.0, 0, 0]
        assert [m["name"] for m in c.get("/sdapi/v1/latent-upscale-modes", auth=("u", "p")).json()] == [
            "Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)", "Latent (nearest)",
            "Latent (nearest-exact)"]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_extensions_lists_git_checkouts(data_dir):
    ext = data_dir / "extensions"
    repo = ext / "sd-webui-example"
    repo.mkdir(parents=True)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "remote", "add", "origin", "https://example.com/sd-webui-example.git"], check=True)
    (repo / "README").write_text("x")
    subprocess.run([*git, "add", "README"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], check=True,
                   env={"GIT_COMMITTER_DATE": "1700000000 +0000", "GIT_AUTHOR_DATE": "1700000000 +0000",
                        "PATH": "/usr/bin:/bin"})
    (ext / "not-a-repo").mkdir()
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    with _client(data_dir, "--api") as c:
        assert c.get("/sdapi/v1/extensions").json() == [{
            "name": "sd-webui-example", "remote": "https://example.com/sd-webui-example.git", "branch": "main",
            "commit_hash": head, "version": head[:8], "commit_date": "1700000000", "enabled": True}]
