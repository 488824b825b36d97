"""Interrogate through the server with tiny random model files in A1111's folders and layouts (written by
tests/fixtures): POST /sdapi/v1/interrogate, Loopback's "Append interrogated prompt", Extras' Caption step."""

from __future__ import annotations

import base64
import io
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.fixtures.deepbooru import write_deepbooru_model
from webui.app import build_app
from webui.config import parse

TAGS = ["1girl", "solo", "rating:safe", "blue_(sky)", "long_hair"]
SCORES = [0.9, 0.7, 0.99, 0.6, 0.3]


def _b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


IMAGE = Image.new("RGB", (48, 40), (30, 120, 200))


@pytest.fixture
def client(data_dir):
    write_deepbooru_model(str(data_dir), TAGS, scores=SCORES)
    config = parse(["--data-dir", str(data_dir), "--skip-load-model-at-start", "--nowebui"])
    with TestClient(build_app(config)) as c:
        yield c


def test_deepdanbooru_caption(client):
    r = client.post("/sdapi/v1/interrogate", json={"image": _b64(IMAGE), "model": "deepdanbooru"})
    assert r.status_code == 200, r.text
    assert r.json() == {"caption": r"1girl, blue \(sky\), solo"}
    # the options apply to the next call: score order, underscores, ranks, a filter
    r = client.post("/sdapi/v1/options", json={"deepbooru_sort_alpha": False, "deepbooru_use_spaces": False,
                                               "interrogate_return_ranks": True, "deepbooru_filter_tags": "solo"})
    assert r.status_code == 200, r.text
    r = client.post("/sdapi/v1/interrogate", json={"image": "data:image/png;base64," + _b64(IMAGE),
                                                   "model": "deepdanbooru"})
    assert r.json()["caption"] == r"(1girl:0.900), (blue_\(sky\):0.600)"


def test_loopback_appends_the_tags_each_loop(client):
    body = {"prompt": "a cat", "steps": 2, "width": 64, "height": 64, "seed": 3, "sampler_name": "Euler",
            "denoising_strength": 0.5, "init_images": [_b64(Image.new("RGB", (64, 64), (90, 90, 90)))],
            "script_name": "Loopback", "script_args": [2, 0.3, "Linear", "DeepBooru"]}
    r = client.post("/sdapi/v1/img2img", json=body)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["prompt"] == r"a cat, 1girl, blue \(sky\), solo"
    assert info["infotexts"][0].startswith("a cat, 1girl, blue \\(sky\\), solo\n")
    # the original prompt is not repeated: loop 2 is "a cat, <tags>" again, not "a cat, <tags>, <tags>"
    assert all(t.count("1girl") == 1 for t in info["infotexts"])


def test_extras_caption_step_writes_txt(data_dir, tmp_path):
    from webui.state import build_state
    from webui.core.postprocess.extras import EXTRAS_DIRECTORY, ExtrasOptions, run_extras

    write_deepbooru_model(str(data_dir), TAGS, scores=SCORES)
    state = build_state(parse(["--data-dir", str(data_dir), "--skip-load-model-at-start"]))
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(src / "one.png")
    out.mkdir()
    (out / "one.txt").write_text("kept words", encoding="utf8")
    opts = ExtrasOptions(resize_mode=1, upscaling_resize_w=64, upscaling_resize_h=64, caption_enabled=True,
                         caption_options=("Deepbooru",), flip_enabled=True, flip_options=("Horizontal",))
    state.settings.set("postprocessing_existing_caption_action", "Append")
    result = run_extras(EXTRAS_DIRECTORY, opts, upscalers=state.upscalers, restorers=state.face_restorers,
                        settings=state.settings, data_dir=str(data_dir), input_dir=str(src), output_dir=str(out),
                        interrogators=state.interrogators)
    assert sorted(p.rsplit("/", 1)[-1] for p in result.saved) == ["one-1.png", "one.png"]
    assert (out / "one.txt").read_text(encoding="utf8") == r"1girl, blue \(sky\), solo kept words"
    # the flipped copy was made after the Caption step: A1111 gives copies no caption
    assert not (out / "one-1.txt").exists()
    # an unknown caption choice is refused with the choices named
    with pytest.raises(ValueError, match="Deepbooru, BLIP"):
        run_extras(EXTRAS_DIRECTORY, ExtrasOptions(caption_enabled=True, caption_options=("Florence",)),
                   upscalers=state.upscalers, restorers=state.face_restorers, settings=state.settings,
                   data_dir=str(data_dir), input_dir=str(src), output_dir=str(out), interrogators=state.interrogators)


# -- CLIP: BLIP caption + CLIP ranking -------------------------------------------------------------------------------


@pytest.fixture
def clip_client(data_dir, tmp_path):
    from tests.fixtures.interrogate import write_blip, write_categories, write_clip

    write_blip(str(data_dir / "models"))
    clip_dir = tmp_path / "clip-models"
    write_clip(str(clip_dir))
    write_categories(str(data_dir / "interrogate"), {"mediums": ["a painting", "a photo", "a sketch"],
                                                     "movements.top3.list": ["cubism", "baroque", "pop art", "dada"]})
    write_deepbooru_model(str(data_dir), TAGS, scores=SCORES)
    config = parse(["--data-dir", str(data_dir), "--skip-load-model-at-start", "--nowebui",
                    "--clip-models-path", str(clip_dir)])
    with TestClient(build_app(config)) as c:
        yield c


def _parts(caption: str) -> list[str]:
    return [x.strip() for x in caption.split(",")]


def test_clip_caption_then_ranked_phrases(clip_client):
    r = clip_client.post("/sdapi/v1/interrogate", json={"image": _b64(IMAGE), "model": "clip"})
    assert r.status_code == 200, r.text
    caption = r.json()["caption"]
    parts = _parts(caption)
    # BLIP's caption (its prompt "a picture of" stripped), then 1 medium and the 3 best movements (A1111 reads
    # ".top3." in the file's stem, so "movements.top3.list.txt")
    assert len(parts) == 5 and parts[0] and not parts[0].startswith("a picture of")
    assert parts[1] in ("a painting", "a photo", "a sketch")
    assert len(set(parts[2:])) == 3 and set(parts[2:]) <= {"cubism", "baroque", "pop art", "dada"}
    # the same image, the same words; the skip option drops a category; ranks add "(match:score)"
    assert clip_client.post("/sdapi/v1/interrogate", json={"image": _b64(IMAGE)}).json()["caption"] == caption
    clip_client.post("/sdapi/v1/options", json={"interrogate_clip_skip_categories": ["movements.top3.list"],
                                                "interrogate_return_ranks": True})
    ranked = _parts(clip_client.post("/sdapi/v1/interrogate", json={"image": _b64(IMAGE)}).json()["caption"])
    assert ranked[0] == parts[0] and len(ranked) == 2 and ranked[1].startswith(f"({parts[1]}:")


def test_loopback_clip_and_caption_step_blip(clip_client, data_dir, tmp_path):
    body = {"prompt": "", "steps": 2, "width": 64, "height": 64, "seed": 3, "sampler_name": "Euler",
            "denoising_strength": 0.5, "init_images": [_b64(Image.new("RGB", (64, 64), (90, 90, 90)))],
            "script_name": "Loopback", "script_args": [1, 0.3, "Linear", "CLIP"]}
    r = clip_client.post("/sdapi/v1/img2img", json=body)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    # an empty prompt gets no leading ", " (A1111's rule); the prompt is the interrogation itself
    assert len(_parts(info["prompt"])) == 5 and not info["prompt"].startswith(",")

    from webui.core.postprocess.extras import EXTRAS_DIRECTORY, ExtrasOptions, run_extras

    state = clip_client.app.state.webui
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    Image.new("RGB", (40, 40), (10, 200, 30)).save(src / "leaf.png")
    opts = ExtrasOptions(resize_mode=1, upscaling_resize_w=40, upscaling_resize_h=40, caption_enabled=True,
                         caption_options=("Deepbooru", "BLIP"))
    run_extras(EXTRAS_DIRECTORY, opts, upscalers=state.upscalers, restorers=state.face_restorers,
               settings=state.settings, data_dir=str(data_dir), input_dir=str(src), output_dir=str(out),
               interrogators=state.interrogators)
    text = (out / "leaf.txt").read_text(encoding="utf8")
    # DeepBooru's tags, then BLIP's caption alone (A1111's generate_caption: no CLIP ranking)
    blip = state.interrogators.clip().generate_caption(Image.open(src / "leaf.png").convert("RGB"))
    assert text == r"1girl, blue \(sky\), solo, " + blip


def test_a1111_extension_api_names(clip_client):
    """``modules.deepbooru.model`` and ``modules.shared.interrogator`` (tagger extensions use them) reach the app's
    interrogators."""
    from webui.compat import binding
    from webui.compat.modules import deepbooru, shared

    state = clip_client.app.state.webui
    binding.bind(state)
    assert deepbooru.model.tag(IMAGE) == r"1girl, blue \(sky\), solo"
    deepbooru.model.start()
    assert deepbooru.model.tag_multi(IMAGE, force_disable_ranks=True) == r"1girl, blue \(sky\), solo"
    deepbooru.model.stop()
    caption = shared.interrogator.interrogate(IMAGE)
    assert caption == state.interrogators.interrogate(IMAGE, "clip")
    assert caption.startswith(shared.interrogator.generate_caption(IMAGE) + ", ")
