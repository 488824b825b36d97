"""Issue 13 item 4: a checkpoint that cannot be used never takes the server hostage."""

from __future__ import annotations

import json
import os

from fastapi.testclient import TestClient

from tests.fixtures.checkpoints import write_malicious_checkpoint
from webui.app import build_app
from webui.config import parse
from webui.core.models.demo_model import DEMO_FILENAME, write_tiny_checkpoint
from webui.state import build_state, load_usable_checkpoint

BODY = {"prompt": "a cat", "steps": 1, "width": 64, "height": 64, "seed": 1}


def _data(tmp_path, files):
    ckpts = tmp_path / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    for name, kind in files:
        path = str(ckpts / name)
        if kind == "evil":
            write_malicious_checkpoint(path)
        elif kind == "truncated":
            write_tiny_checkpoint(path, "SD1", seed=3)
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
        elif kind == "lora-like":
            from safetensors.torch import save_file
            import torch

            save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, path)
        else:
            write_tiny_checkpoint(path, "SD1", seed=5)
    return tmp_path


def test_only_a_malicious_ckpt_falls_back_to_the_demo_model(tmp_path):
    data = _data(tmp_path, [("evil.ckpt", "evil")])
    state = build_state(parse(["--nowebui", "--data-dir", str(data)]))
    title = load_usable_checkpoint(state)
    assert title.startswith(DEMO_FILENAME)
    assert any("evil.ckpt" in n for n in state.notices) and any("demo model" in n for n in state.notices)
    assert not os.path.exists("/tmp/webui-test-pwned")


def test_bad_default_is_skipped_for_the_next_usable_and_named_requests_get_a_4xx(tmp_path):
    data = _data(tmp_path, [("a-broken.safetensors", "truncated"), ("b-lora.safetensors", "lora-like"),
                            ("c-good.safetensors", "good")])
    config = parse(["--nowebui", "--data-dir", str(data)])
    with TestClient(build_app(config)) as client:
        state = client.app.state.webui
        state.queue.submit("wait", lambda p: None).result(timeout=120)  # the start-up load has run
        assert state.settings.get("sd_model_checkpoint").startswith("c-good")
        assert any("a-broken" in n for n in state.notices) and any("b-lora" in n for n in state.notices)
        ok = client.post("/sdapi/v1/txt2img", json=BODY)
        assert ok.status_code == 200 and json.loads(ok.json()["info"])["sd_model_name"] == "c-good"
        named = client.post("/sdapi/v1/txt2img", json={**BODY, "override_settings": {
            "sd_model_checkpoint": "a-broken.safetensors"}})
        assert 400 <= named.status_code < 500 and "a-broken" in json.dumps(named.json())
        # the server goes on
        assert client.post("/sdapi/v1/txt2img", json=BODY).status_code == 200
