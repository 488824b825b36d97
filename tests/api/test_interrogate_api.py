"""POST /sdapi/v1/interrogate without model files: A1111's 404s in its order, the 400 naming the missing files,
and the Loopback script's interrogation asking for them; Extras' caption-file rules. The runs with (tiny, random)
model files are in tests/api/test_interrogate_models.py."""

from __future__ import annotations

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from webui.app import build_app
from webui.config import parse


def _b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


IMAGE = _b64(Image.new("RGB", (32, 32), (200, 30, 30)))


@pytest.fixture
def client(data_dir):
    config = parse(["--data-dir", str(data_dir), "--skip-load-model-at-start", "--nowebui"])
    with TestClient(build_app(config)) as c:
        yield c


def test_a1111_checks_in_order(client):
    # image null: 404 "Image not found", before anything else (even an unknown model)
    r = client.post("/sdapi/v1/interrogate", json={"image": None, "model": "nope"})
    assert r.status_code == 404 and r.json()["detail"] == "Image not found"
    # the image is decoded before the model is checked: a bad image wins over a bad model
    r = client.post("/sdapi/v1/interrogate", json={"image": "not base64!", "model": "nope"})
    assert 400 <= r.status_code < 500 and r.status_code != 404
    r = client.post("/sdapi/v1/interrogate", json={"image": IMAGE, "model": "nope"})
    assert r.status_code == 404 and r.json()["detail"] == "Model not found"
    assert set(r.json()) == {"error", "detail", "body", "errors"}


@pytest.mark.parametrize("model, names", [
    ("clip", ("model_base_caption_capfilt_large.pth", "BLIP")),
    ("deepdanbooru", ("model-resnet_custom_v3.pt", "torch_deepdanbooru")),
])
def test_missing_model_files_are_named(client, model, names):
    r = client.post("/sdapi/v1/interrogate", json={"image": IMAGE, "model": model})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "InterrogatorUnavailable"
    for name in names:
        assert name in body["detail"]
    # the server serves on
    assert client.get("/sdapi/v1/progress").status_code == 200


def test_default_model_is_clip(client):
    r = client.post("/sdapi/v1/interrogate", json={"image": IMAGE})
    assert r.status_code == 400 and "model_base_caption_capfilt_large.pth" in r.json()["detail"]


def test_options_listed(client):
    opts = client.get("/sdapi/v1/options").json()
    assert opts["interrogate_clip_min_length"] == 24 and opts["interrogate_clip_max_length"] == 48
    assert opts["interrogate_deepbooru_score_threshold"] == 0.5 and opts["deepbooru_sort_alpha"] is True
    assert opts["postprocessing_existing_caption_action"] == "Ignore"


@pytest.mark.parametrize("action, existing, expected", [
    ("Ignore", "old tags", "new caption"),
    ("Keep", "old tags", "old tags"),
    ("Prepend", "old tags", "old tags new caption"),
    ("Append", "old tags", "new caption old tags"),
    ("Keep", None, "new caption"),
])
def test_caption_file_rules(tmp_path, action, existing, expected):
    from webui.core.postprocess.extras import write_caption

    image_path = tmp_path / "00001.png"
    if existing is not None:
        (tmp_path / "00001.txt").write_text(existing + "\n", encoding="utf8")
    written = write_caption(str(image_path), "new caption", action)
    assert written == str(tmp_path / "00001.txt")
    assert (tmp_path / "00001.txt").read_text(encoding="utf8") == expected


def test_img2img_interrogate_batch_writes_txt_files(tmp_path):
    """The Batch sub-tab: one line per interrogation appended to NAME.txt in the output folder (A1111 prints into the
    file opened for append); files PIL cannot read are skipped."""
    from webui.ui.tabs.img2img import interrogate_batch

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(src / "a.png")
    Image.new("RGB", (8, 6), (4, 5, 6)).save(src / "b.png")
    (src / "notes.png").write_bytes(b"not an image")
    seen = []

    def interrogate(image):
        seen.append(image.size)
        return f"tags {image.size[0]}x{image.size[1]}"

    values = {"batch_input_dir": str(src), "batch_output_dir": str(out)}
    written = interrogate_batch(interrogate, values)
    assert sorted(p.split("/")[-1] for p in written) == ["a.txt", "b.txt"] and seen == [(8, 8), (8, 6)]
    interrogate_batch(interrogate, values)
    assert (out / "a.txt").read_text(encoding="utf-8") == "tags 8x8\ntags 8x8\n"
    # no output folder: next to the inputs
    interrogate_batch(interrogate, {"batch_input_dir": str(src), "batch_output_dir": ""})
    assert (src / "b.txt").read_text(encoding="utf-8") == "tags 8x6\n"
