"""A1111's Extra options section: settings listed in extra_options_txt2img become script args whose values apply to
the job as override_settings (unless the request overrides them itself)."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from webui.app import build_app
from webui.config import parse

BODY = {"prompt": "a cat", "steps": 1, "width": 64, "height": 64, "seed": 3, "sampler_name": "Euler"}


def test_extra_options_args_apply_as_override_settings(data_dir):
    (data_dir / "config.json").write_text(json.dumps({"extra_options_txt2img": ["CLIP_stop_at_last_layers"]}))
    config = parse(["--nowebui", "--data-dir", str(data_dir), "--skip-load-model-at-start"])
    with TestClient(build_app(config)) as c:
        info = {(i["name"], i["is_img2img"]): i for i in c.get("/sdapi/v1/script-info").json()}
        args = info[("extra options", False)]["args"]
        assert [a["label"] for a in args] == ["Clip skip"] and args[0]["value"] == 1
        assert info[("extra options", True)]["args"] == []
        r = c.post("/sdapi/v1/txt2img", json={**BODY, "alwayson_scripts": {"Extra options": {"args": [2]}}})
        assert r.status_code == 200, r.text
        assert "Clip skip: 2" in json.loads(r.json()["info"])["infotexts"][0]
        # the request's own override wins
        r = c.post("/sdapi/v1/txt2img", json={**BODY, "override_settings": {"CLIP_stop_at_last_layers": 3},
                                             "alwayson_scripts": {"Extra options": {"args": [2]}}})
        assert "Clip skip: 3" in json.loads(r.json()["info"])["infotexts"][0]
        # the stored option is untouched
        assert c.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 1
