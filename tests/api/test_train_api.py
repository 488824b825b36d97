"""/sdapi/v1/create/* and /sdapi/v1/train/* (issue 16): A1111's argument names and answers, 4xx naming the argument
for bad input, training as a queue job that /progress follows and /interrupt stops, the server serving on."""

from __future__ import annotations

import glob
import os
import threading
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from webui.app import build_app
from webui.config import parse

SIZE = 32


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors on a shared machine: see tests/core/test_train.py
    yield
    torch.set_num_threads(n)


@pytest.fixture
def client(data_dir):
    config = parse(["--nowebui", "--data-dir", str(data_dir), "--skip-load-model-at-start"])
    with TestClient(build_app(config)) as c:
        assert c.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sd15.safetensors",
                                                 "training_write_csv_every": 1}).status_code == 200
        yield c


@pytest.fixture
def dataset(tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(d / f"{i}-thing.png")
    return str(d)


def train_body(dataset, **kw):
    body = {"id_task": None, "embedding_name": "tok", "learn_rate": "0.005", "batch_size": 1, "gradient_step": 1,
            "data_root": dataset, "log_directory": "textual_inversion", "training_width": SIZE,
            "training_height": SIZE, "varsize": False, "steps": 4, "clip_grad_mode": "disabled",
            "clip_grad_value": "0.1", "shuffle_tags": False, "tag_drop_out": 0, "latent_sampling_method": "once",
            "use_weight": False, "create_image_every": 0, "save_embedding_every": 2,
            "template_filename": "subject.txt", "save_image_with_stored_embedding": True,
            "preview_from_txt2img": False, "preview_prompt": "", "preview_negative_prompt": "", "preview_steps": 2,
            "preview_sampler_name": "Euler", "preview_cfg_scale": 7.0, "preview_seed": -1, "preview_width": SIZE,
            "preview_height": SIZE}
    body.update(kw)
    return body


def test_create_routes_answer_a1111s_strings(client, data_dir):
    r = client.post("/sdapi/v1/create/embedding", json={"name": "tok", "num_vectors_per_token": 2,
                                                        "overwrite_old": False, "init_text": "cat"})
    assert r.status_code == 200
    path = os.path.join(str(data_dir), "embeddings", "tok.pt")
    assert r.json() == {"info": f"create embedding filename: {path}"}
    # loaded at once
    assert client.get("/sdapi/v1/embeddings").json()["loaded"]["tok"] == {
        "step": 0, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 32, "vectors": 2}
    r = client.post("/sdapi/v1/create/embedding", json={"name": "tok", "num_vectors_per_token": 1,
                                                        "overwrite_old": False})
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    assert set(r.json()) == {"error", "detail", "body", "errors"}
    r = client.post("/sdapi/v1/create/hypernetwork", json={"name": "hn", "enable_sizes": [32, 64],
                                                           "overwrite_old": False})
    path = os.path.join(str(data_dir), "models", "hypernetworks", "hn.pt")
    assert r.status_code == 200 and r.json() == {"info": f"create hypernetwork filename: {path}"}
    assert client.get("/sdapi/v1/hypernetworks").json() == [{"name": "hn", "path": path}]


@pytest.mark.parametrize("body, field", [
    ({"num_vectors_per_token": 1, "overwrite_old": False}, "name"),
    ({"name": "x", "num_vectors_per_token": 1}, "overwrite_old"),
    ({"name": "", "num_vectors_per_token": 1, "overwrite_old": False}, "name"),
    ({"name": "x", "num_vectors_per_token": 0, "overwrite_old": False}, "num_vectors_per_token"),
    ({"name": "x", "num_vectors_per_token": 1, "overwrite_old": False, "colour": 1}, "colour"),
])
def test_create_embedding_bad_input(client, body, field):
    r = client.post("/sdapi/v1/create/embedding", json=body)
    assert r.status_code == 422 and r.json()["detail"].startswith(f"{field}:")


def test_train_bad_input_is_4xx_naming_the_field(client, dataset, tmp_path, data_dir):
    client.post("/sdapi/v1/create/embedding", json={"name": "tok", "num_vectors_per_token": 1, "overwrite_old": False})
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (train_body(dataset, embedding_name="nope"), 404, "embedding_name"),
        (train_body(str(tmp_path / "missing")), 422, "data_root"),
        (train_body(str(empty)), 422, "data_root"),
        (train_body(dataset, learn_rate="0.005:10, 1e-3:x"), 422, "learn_rate"),
        (train_body(dataset, steps=0), 422, "steps"),
        ({k: v for k, v in train_body(dataset).items() if k != "steps"}, 422, "steps"),
    ]
    for body, status, field in cases:
        r = client.post("/sdapi/v1/train/embedding", json=body)
        assert r.status_code == status, (field, r.text)
        assert r.json()["detail"].startswith(f"{field}:"), r.json()
    r = client.post("/sdapi/v1/train/hypernetwork",
                    json={**{k: v for k, v in train_body(dataset).items()
                             if k not in ("embedding_name", "save_embedding_every",
                                          "save_image_with_stored_embedding")},
                          "hypernetwork_name": "none-such", "save_hypernetwork_every": 0})
    assert r.status_code == 404 and r.json()["detail"].startswith("hypernetwork_name:")
    assert not glob.glob(os.path.join(str(data_dir), "textual_inversion", "*", "*", "*"))


def test_train_embedding_api_and_interrupt_keeps_what_was_saved(client, dataset, data_dir):
    client.post("/sdapi/v1/create/embedding", json={"name": "tok", "num_vectors_per_token": 1, "overwrite_old": False})
    r = client.post("/sdapi/v1/train/embedding", json=train_body(dataset))
    path = os.path.join(str(data_dir), "embeddings", "tok.pt")
    assert r.status_code == 200 and r.json() == {"info": f"train embedding complete: filename: {path} error: None"}
    assert client.get("/sdapi/v1/embeddings").json()["loaded"]["tok"]["step"] == 4

    # a long training, followed by /progress and stopped by /interrupt
    answer = {}

    def run():
        answer["r"] = client.post("/sdapi/v1/train/embedding", json=train_body(dataset, steps=100000,
                                                                                save_embedding_every=1))

    t = threading.Thread(target=run)
    t.start()
    seen = None
    deadline = time.time() + 120
    while time.time() < deadline:
        p = client.get("/sdapi/v1/progress").json()
        if p["state"]["job"] == "train-embedding" and p["state"]["job_no"] >= 7:
            seen = p
            break
        time.sleep(0.05)
    assert seen is not None, "training never showed its steps in /progress"
    assert seen["state"]["job_count"] == 100000 and "Loss: " in seen["textinfo"] and "Step: " in seen["textinfo"]
    assert 0.01 < seen["progress"] < 0.02 and seen["eta_relative"] > 0
    assert client.post("/sdapi/v1/interrupt").json() == {}
    t.join(60)
    assert not t.is_alive()
    r = answer["r"]
    assert r.status_code == 200 and r.json()["info"] == f"train embedding complete: filename: {path} error: None"
    # what was saved stays, and the embedding itself is saved at the step it reached (as A1111)
    step = torch.load(path, weights_only=True)["step"]
    assert 7 <= step < 100000
    folder = glob.glob(os.path.join(str(data_dir), "textual_inversion", "*", "tok", "embeddings"))[0]
    # saved every step (A1111 names the copy after step n "-(n+1)"): the last copy is the interrupted state itself
    last = torch.load(os.path.join(folder, f"tok-{step + 1}.pt"), weights_only=True)
    assert last["step"] == step and last["name"] == f"tok-{step + 1}"
    assert torch.equal(last["string_to_param"]["*"], torch.load(path, weights_only=True)["string_to_param"]["*"])
    assert len(glob.glob(os.path.join(folder, "tok-*.pt"))) >= 6
    # the server serves on
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "tok", "steps": 2, "width": SIZE, "height": SIZE})
    assert r.status_code == 200 and len(r.json()["images"]) == 1
    assert client.get("/sdapi/v1/progress").json()["state"]["job"] == ""


def test_train_hypernetwork_api(client, dataset, data_dir):
    client.post("/sdapi/v1/create/hypernetwork", json={"name": "hn", "enable_sizes": [32], "overwrite_old": False})
    body = {k: v for k, v in train_body(dataset).items()
            if k not in ("embedding_name", "save_embedding_every", "save_image_with_stored_embedding")}
    r = client.post("/sdapi/v1/train/hypernetwork", json={**body, "hypernetwork_name": "hn", "steps": 2,
                                                          "learn_rate": "0.0001", "save_hypernetwork_every": 0})
    path = os.path.join(str(data_dir), "models", "hypernetworks", "hn.pt")
    # A1111's text says "train embedding" for hypernetworks too
    assert r.status_code == 200 and r.json() == {"info": f"train embedding complete: filename: {path} error: None"}
    assert torch.load(path, weights_only=True)["step"] == 2
    assert glob.glob(os.path.join(str(data_dir), "textual_inversion", "*", "hn", "hypernetwork_loss.csv"))


def test_tensorboard_without_its_package_is_a_4xx_naming_the_option(client, dataset, data_dir, monkeypatch):
    import sys

    client.post("/sdapi/v1/create/embedding", json={"name": "tok", "num_vectors_per_token": 1, "overwrite_old": False})
    assert client.post("/sdapi/v1/options", json={"training_enable_tensorboard": True}).status_code == 200
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as when tensorboard is not installed
    r = client.post("/sdapi/v1/train/embedding", json=train_body(dataset))
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith("training_enable_tensorboard:") and "tensorboard" in r.json()["detail"]
    assert not glob.glob(os.path.join(str(data_dir), "textual_inversion", "*", "*", "*"))
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard")  # installed: the same request trains and logs
    r = client.post("/sdapi/v1/train/embedding", json=train_body(dataset))
    assert r.status_code == 200 and r.json()["info"].endswith("error: None"), r.text
    assert glob.glob(os.path.join(str(data_dir), "textual_inversion", "*", "tok", "tensorboard", "events.out.*"))
