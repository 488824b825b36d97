"""A1111 extensions loaded from extensions/ (issue 15 items 1-2), driven through the API: the fixture extensions of
extension_fixtures.py -- an always-on script with an option and a preload flag, a selectable script calling
process_images twice, a route and a tab, and a broken one next to them."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import sys

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.plugins.extension_fixtures import write_extensions
from webui.app import build_app
from webui.config import ConfigError, parse

BODY = {"prompt": "a cat", "steps": 1, "width": 64, "height": 64, "seed": 11, "sampler_name": "Euler"}


def _app(data_dir, *flags):
    return build_app(parse(["--nowebui", "--data-dir", str(data_dir), "--skip-load-model-at-start", *flags]))


def _pixels(b64: str) -> str:
    return hashlib.sha256(Image.open(io.BytesIO(base64.b64decode(b64))).tobytes()).hexdigest()


@pytest.fixture
def ext_data(data_dir):
    write_extensions(data_dir)
    return data_dir


def test_extensions_load_and_the_broken_one_is_reported(ext_data, caplog):
    caplog.set_level(logging.ERROR)
    app = _app(ext_data, "--seed-prompt-word", "SEED")
    with TestClient(app) as c:
        state = app.state.webui
        by_name = {e.name: e for e in state.extensions.all}
        assert {"seed-prompt", "twice", "routes-and-tab", "broken"} <= set(by_name)
        broken = by_name["broken"]
        assert broken.errors and broken.errors[0].stage == "script"
        assert "SyntaxError" in broken.errors[0].message and broken.errors[0].file.endswith("broken.py")
        assert any("broken" in r.getMessage() and "SyntaxError" in r.getMessage() for r in caplog.records)
        for name in ("seed-prompt", "twice", "routes-and-tab"):
            assert by_name[name].loaded and by_name[name].errors == [], by_name[name].errors
        # the preload flag parses like ours and is listed by /cmd-flags
        assert c.get("/sdapi/v1/cmd-flags").json()["seed_prompt_word"] == "SEED"
        scripts = c.get("/sdapi/v1/scripts").json()
        assert "seed prompt" in scripts["txt2img"] and "seed prompt" in scripts["img2img"]
        assert "twice" in scripts["txt2img"] and "twice" not in scripts["img2img"]
        info = {(i["name"], i["is_img2img"]): i for i in c.get("/sdapi/v1/script-info").json()}
        assert [(a["label"], a["value"]) for a in info[("seed prompt", False)]["args"]] == [
            ("Append the seed", False), ("Mark", "M")]
        assert info[("twice", False)]["args"][0] | {} == {"label": "Seed step", "value": 1, "minimum": 1,
                                                         "maximum": 10, "step": 1, "choices": None}
        # on_app_started: the extension's route is served (no page with --nowebui: demo is None)
        assert c.get("/routes-and-tab/hello").json() == {"hello": "world", "with_ui": False}


def test_always_on_script_rewrites_prompts_and_writes_infotext(ext_data):
    with TestClient(_app(ext_data)) as c:
        body = {**BODY, "batch_size": 2, "alwayson_scripts": {"Seed prompt": {"args": [True, "X"]}}}
        r = c.post("/sdapi/v1/txt2img", json=body)
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
        assert info["all_seeds"] == [11, 12]
        assert info["all_prompts"] == ["a cat, seed 11 tail", "a cat, seed 12 tail"]
        assert all("Seed prompt: X" in t for t in info["infotexts"])
        assert info["infotexts"][1].startswith("a cat, seed 12 tail\n")
        # the rewritten prompt is what conditioned the image: same pixels as asking for that prompt directly
        one = c.post("/sdapi/v1/txt2img", json={**body, "batch_size": 1}).json()
        plain = c.post("/sdapi/v1/txt2img", json={**BODY, "prompt": "a cat, seed 11 tail"}).json()
        assert _pixels(one["images"][0]) == _pixels(plain["images"][0])
        unchanged = c.post("/sdapi/v1/txt2img", json=BODY).json()
        assert _pixels(one["images"][0]) != _pixels(unchanged["images"][0])
        # off (its default): nothing changes
        r = c.post("/sdapi/v1/txt2img", json={**BODY, "alwayson_scripts": {"Seed prompt": {"args": [False, "X"]}}})
        info = json.loads(r.json()["info"])
        assert info["all_prompts"] == ["a cat"] and "Seed prompt" not in info["infotexts"][0]


def test_extension_option_in_options_and_config_json(ext_data):
    with TestClient(_app(ext_data)) as c:
        assert c.get("/sdapi/v1/options").json()["seed_prompt_suffix"] == "tail"
        assert c.post("/sdapi/v1/options", json={"seed_prompt_suffix": "end"}).status_code == 200
        assert c.get("/sdapi/v1/options").json()["seed_prompt_suffix"] == "end"
        # opts.onchange saw it
        assert sys.modules["webui_extension_seed_prompt__seed_prompt"].CHANGES == ["end"]
        r = c.post("/sdapi/v1/txt2img", json={**BODY, "alwayson_scripts": {"Seed prompt": {"args": [True, "X"]}}})
        assert json.loads(r.json()["info"])["all_prompts"] == ["a cat, seed 11 end"]
        # a request's override_settings may name it too (A1111: the options are overridden while the job runs)
        r = c.post("/sdapi/v1/txt2img", json={**BODY, "override_settings": {"seed_prompt_suffix": "once"},
                                             "alwayson_scripts": {"Seed prompt": {"args": [True, "X"]}}})
        assert json.loads(r.json()["info"])["all_prompts"] == ["a cat, seed 11 once"]
        assert c.get("/sdapi/v1/options").json()["seed_prompt_suffix"] == "end"
    stored = json.loads((ext_data / "config.json").read_text())
    assert stored["seed_prompt_suffix"] == "end"
    # with the extension disabled the option is not offered, and its stored value survives a save
    (ext_data / "config.json").write_text(json.dumps({**stored, "disabled_extensions": ["seed-prompt"]}))
    with TestClient(_app(ext_data)) as c:
        assert "seed_prompt_suffix" not in c.get("/sdapi/v1/options").json()
        assert c.post("/sdapi/v1/options", json={"samples_save": False}).status_code == 200
    assert json.loads((ext_data / "config.json").read_text())["seed_prompt_suffix"] == "end"


def test_selectable_script_runs_process_images_twice(ext_data):
    with TestClient(_app(ext_data)) as c:
        r = c.post("/sdapi/v1/txt2img", json={**BODY, "script_name": "twice", "script_args": [3]})
        assert r.status_code == 200, r.text
        images, info = r.json()["images"], json.loads(r.json()["info"])
        assert len(images) == 2 and info["all_seeds"] == [11, 14]
        assert sys.modules["webui_extension_twice__twice"].BASEDIR == str(ext_data / "extensions" / "twice")
        # each run is an ordinary request: the same pixels as asking for that seed alone
        alone = c.post("/sdapi/v1/txt2img", json={**BODY, "seed": 14}).json()
        assert _pixels(images[1]) == _pixels(alone["images"][0])


def test_disable_switches(ext_data):
    # --disable-extra-extensions: none of extensions/ loads (not even its preload: the flag is unknown then)
    with pytest.raises(ConfigError, match="seed-prompt-word"):
        parse(["--nowebui", "--data-dir", str(ext_data), "--disable-extra-extensions", "--seed-prompt-word", "x"])
    app = _app(ext_data, "--disable-extra-extensions")
    with TestClient(app) as c:
        assert "seed prompt" not in c.get("/sdapi/v1/scripts").json()["txt2img"]
        assert c.get("/routes-and-tab/hello").status_code == 404
        assert not any(e.loaded for e in app.state.webui.extensions.all if not e.is_builtin)
    app = _app(ext_data, "--disable-all-extensions")
    assert not any(e.loaded for e in app.state.webui.extensions.all)
    # the options: disabled_extensions names one, disable_all_extensions "extra" / "all"
    (ext_data / "config.json").write_text(json.dumps({"disabled_extensions": ["twice"]}))
    app = _app(ext_data)
    with TestClient(app) as c:
        scripts = c.get("/sdapi/v1/scripts").json()["txt2img"]
        assert "seed prompt" in scripts and "twice" not in scripts
        assert app.state.webui.extensions.get("twice").enabled is False
    (ext_data / "config.json").write_text(json.dumps({"disable_all_extensions": "extra"}))
    app = _app(ext_data)
    assert [e.name for e in app.state.webui.extensions.active()] == [
        e.name for e in app.state.webui.extensions.all if e.is_builtin]


def test_a_failing_script_method_or_missing_api_is_reported_not_fatal(data_dir):
    root = write_extensions(data_dir)
    (root / "needs-more" / "scripts").mkdir(parents=True)
    (root / "needs-more" / "scripts" / "a.py").write_text("from modules import sd_hijack\n")
    (root / "needs-more" / "scripts" / "b.py").write_text("from modules import shared\nshared.no_such_thing\n")
    (root / "raises" / "scripts").mkdir(parents=True)
    (root / "raises" / "scripts" / "r.py").write_text(
        "from modules import scripts\n"
        "class Raises(scripts.Script):\n"
        "    def title(self):\n        return 'Raises'\n"
        "    def show(self, is_img2img):\n        return scripts.AlwaysVisible\n"
        "    def process(self, p):\n        raise RuntimeError('boom in process')\n")
    app = _app(data_dir)
    with TestClient(app) as c:
        ext = app.state.webui.extensions
        messages = [str(e) for e in ext.get("needs-more").errors]
        assert any("modules.sd_hijack is not provided" in m and "ImportError" in m for m in messages), messages
        assert any("modules.shared.no_such_thing" in m and "AttributeError" in m for m in messages), messages
        # the always-on script that raises: reported on its extension, the request and the others go on
        r = c.post("/sdapi/v1/txt2img", json={**BODY, "alwayson_scripts": {"Seed prompt": {"args": [True, "X"]}}})
        assert r.status_code == 200, r.text
        assert json.loads(r.json()["info"])["all_prompts"] == ["a cat, seed 11 tail"]
        assert any("boom in process" in str(e) for e in ext.get("raises").errors)


CALLBACKS = '''
from modules import images, processing, script_callbacks, shared

SEEN = {"denoiser": [], "denoised": 0, "before_saved": [], "saved": [], "loaded": [], "pasted": []}


def denoiser(params):
    SEEN["denoiser"].append((params.sampling_step, params.total_sampling_steps))


def denoised(params):
    SEEN["denoised"] += 1


def before_saved(params):
    SEEN["before_saved"].append(params.p.all_seeds[0])
    params.pnginfo["parameters"] += ", Callbacks: yes"


def saved(params):
    SEEN["saved"].append(params.filename)


def loaded(sd_model):
    SEEN["loaded"].append((sd_model.sd_checkpoint_info.name_for_extra, shared.sd_model.is_sdxl))


def pasted(infotext, params):
    SEEN["pasted"].append(infotext)
    params["Steps"] = "3"


def never(params):
    raise AssertionError("removed callbacks are not called")


def on_app_started(demo, app):
    @app.post("/callbacks/generate")
    def generate():
        p = processing.StableDiffusionProcessingTxt2Img(
            prompt="a dog", steps=1, width=64, height=64, seed=-1, sampler_name="Euler", do_not_save_samples=True)
        processing.fix_seed(p)
        processed = processing.process_images(p)
        grid = images.image_grid(processed.images + processed.images, rows=1)
        return {"seed": p.seed, "all_seeds": processed.all_seeds, "grid": list(grid.size),
                "job": shared.state.job, "samplers": len(__import__("modules.sd_samplers").sd_samplers.all_samplers)}


script_callbacks.on_cfg_denoiser(denoiser)
script_callbacks.on_cfg_denoised(denoised)
script_callbacks.on_cfg_after_cfg(never)
script_callbacks.remove_callbacks_for_function(never)
script_callbacks.on_before_image_saved(before_saved)
script_callbacks.on_image_saved(saved)
script_callbacks.on_model_loaded(loaded)
script_callbacks.on_infotext_pasted(pasted)
script_callbacks.on_app_started(on_app_started)
'''


def test_script_callbacks_and_processing_api(data_dir):
    root = data_dir / "extensions" / "callbacks" / "scripts"
    root.mkdir(parents=True)
    (root / "callbacks.py").write_text(CALLBACKS)
    with TestClient(_app(data_dir)) as c:
        seen = sys.modules["webui_extension_callbacks__callbacks"].SEEN
        r = c.post("/sdapi/v1/txt2img", json={**BODY, "steps": 2, "save_images": True})
        assert r.status_code == 200, r.text
        assert seen["denoiser"] == [(0, 2), (1, 2)] and seen["denoised"] == 2
        assert seen["before_saved"] == [11] and len(seen["saved"]) == 1
        with Image.open(seen["saved"][0]) as saved:
            assert saved.info["parameters"].endswith(", Callbacks: yes")
        assert [x[1] for x in seen["loaded"]] == [False] and seen["loaded"][0][0]
        # infotext_pasted: A1111's hook on the API's infotext field
        r = c.post("/sdapi/v1/txt2img", json={"infotext": "a bird\nSteps: 9, Seed: 5, Size: 64x64"})
        assert r.status_code == 200, r.text
        assert seen["pasted"] and json.loads(r.json()["info"])["steps"] == 3
        # processing from the extension's own route: queued on the worker like any job
        out = c.post("/callbacks/generate").json()
        assert out["all_seeds"] == [out["seed"]] and out["seed"] >= 0
        assert out["grid"] == [128, 64] and out["samplers"] >= 20


def test_installers_sys_path_and_disable_all_option(data_dir, monkeypatch):
    ext = data_dir / "extensions" / "with-installer"
    (ext / "scripts").mkdir(parents=True)
    (ext / "install.py").write_text("import os\nopen(os.environ['MARKER'], 'a').write('ran\\n')\n")
    # scripts/ import a module from the extension's own folder (A1111 puts it first on sys.path while importing)
    (ext / "lib_helper.py").write_text("WORD = 'helped'\n")
    (ext / "scripts" / "uses_lib.py").write_text("import lib_helper\nWORD = lib_helper.WORD\n")
    marker = data_dir / "installed.txt"
    monkeypatch.setenv("MARKER", str(marker))
    monkeypatch.delenv("CI", raising=False)
    app = _app(data_dir)
    assert not marker.exists()  # never without the flag
    assert app.state.webui.extensions.get("with-installer").errors == []
    assert sys.modules["webui_extension_with_installer__uses_lib"].WORD == "helped"
    _app(data_dir, "--run-extension-installers")
    assert marker.read_text() == "ran\n"
    monkeypatch.setenv("CI", "1")  # never on CI, flag or not
    _app(data_dir, "--run-extension-installers")
    assert marker.read_text() == "ran\n"
    # a failing installer is recorded on its extension
    monkeypatch.delenv("CI")
    (ext / "install.py").write_text("raise SystemExit('no network here')\n")
    app = _app(data_dir, "--run-extension-installers")
    errors = app.state.webui.extensions.get("with-installer").errors
    assert errors and errors[0].stage == "install" and "no network here" in errors[0].message
    # option disable_all_extensions "all": nothing loads, built-ins neither
    (data_dir / "config.json").write_text(json.dumps({"disable_all_extensions": "all"}))
    app = _app(data_dir)
    assert app.state.webui.extensions.active() == [] and not any(e.loaded for e in app.state.webui.extensions.all)


FLAKY_UI = '''
import gradio as gr

from modules import scripts


class FlakyUi(scripts.Script):
    """Always on; its ui() makes one more control on its second call (the page's) than on its first (start's)."""

    def title(self):
        return "Flaky UI"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        self.calls = getattr(self, "calls", 0) + 1
        tab = "img2img" if is_img2img else "txt2img"
        with gr.Accordion("Flaky UI", elem_id=f"flaky_accordion_{tab}_{self.calls}"):
            on = gr.Checkbox(label="Flaky on", value=False, elem_id=f"flaky_on_{tab}_{self.calls}")
            text = gr.Textbox(label="Flaky text", value="x")
            made = [on, text] + ([gr.Slider(label="Flaky extra")] if self.calls > 1 else [])
        return made

    def process(self, p, on, text):
        if on:
            p.extra_generation_params["Flaky"] = text


class RaisingUi(scripts.Script):
    """Selectable (txt2img); its ui() raises on its second call, after making a control."""

    def title(self):
        return "Raising UI"

    def show(self, is_img2img):
        return not is_img2img

    def ui(self, is_img2img):
        self.calls = getattr(self, "calls", 0) + 1
        box = gr.Textbox(label="Raising text", value="r", elem_id=f"raising_text_{self.calls}")
        if self.calls > 1:
            raise RuntimeError("boom on the page")
        return [box]
'''


def test_page_ui_fallback_when_ui_changes_or_raises(data_dir):
    """An extension's ui() runs again inside the page (A1111); when that second call makes other controls than the
    first, or raises, the problem is recorded on the extension and the page still builds, with the script's
    controls made from the ScriptArgs of the first call -- the ones Generate reads -- and what the failed call made
    hidden. /script-info and script_args keep the first call's arguments."""
    root = data_dir / "extensions" / "flaky-ui" / "scripts"
    root.mkdir(parents=True)
    (root / "flaky.py").write_text(FLAKY_UI)
    app = build_app(parse(["--api", "--data-dir", str(data_dir), "--skip-load-model-at-start"]))
    with TestClient(app) as c:
        state = app.state.webui
        errors = state.extensions.get("flaky-ui").errors
        stages = [(e.stage, e.message) for e in errors]
        # Flaky on both tabs (the same failure, recorded once) and Raising
        assert [s for s, _ in stages] == ["script ui() on the page"] * 2, stages
        assert any("other controls on the page than at start: 3" in m for _, m in stages), stages
        assert any("boom on the page" in m for _, m in stages), stages

        assert c.get("/").status_code == 200
        config = c.get("/config").json()
        by_elem = {comp["props"].get("elem_id"): comp for comp in config["components"] if comp.get("props")}
        runner = state.scripts_txt2img
        flaky, raising = runner.find("Flaky UI"), runner.find("Raising UI")
        # the fallback: controls built from the ScriptArgs, in an accordion named after the script
        fallback = [by_elem[f"{flaky.elem_id('')}{i}"] for i in range(flaky.args_from, flaky.args_to)]
        assert [(f["type"], f["props"]["label"]) for f in fallback] == [("checkbox", "Flaky on"),
                                                                         ("textbox", "Flaky text")]
        assert by_elem[flaky.elem_id("accordion")]["props"]["visible"] is True
        assert by_elem[flaky.elem_id("group")]["props"]["visible"] is True
        # what the page's call made is hidden, and not what Generate reads
        assert by_elem["flaky_accordion_txt2img_2"]["props"]["visible"] is False
        assert by_elem["raising_text_2"]["props"]["visible"] is False
        raising_fallback = by_elem[f"{raising.elem_id('')}{raising.args_from}"]
        assert raising_fallback["type"] == "textbox" and raising_fallback["props"]["visible"] is True
        generate = by_elem["txt2img_generate"]["id"]
        deps = [d for d in config["dependencies"] if [generate, "click"] in [list(t) for t in d["targets"]]]
        inputs = {i for d in deps for i in d["inputs"]}
        assert {f["id"] for f in fallback} | {raising_fallback["id"]} <= inputs
        assert by_elem["flaky_on_txt2img_2"]["id"] not in inputs and by_elem["raising_text_2"]["id"] not in inputs

        # the API's view is the start's: two args, and they still place and work
        info = {(i["name"], i["is_img2img"]): i for i in c.get("/sdapi/v1/script-info").json()}
        assert [a["label"] for a in info[("flaky ui", False)]["args"]] == ["Flaky on", "Flaky text"]
        r = c.post("/sdapi/v1/txt2img", json={**BODY, "alwayson_scripts": {"Flaky UI": {"args": [True, "yes"]}}})
        assert r.status_code == 200, r.text
        assert "Flaky: yes" in json.loads(r.json()["info"])["infotexts"][0]


PASTE_EXT = '''
import gradio as gr
from modules import scripts


class Script(scripts.Script):
    def title(self):
        return "Paste Ext"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        on = gr.Checkbox(False, label="Paste ext on")
        strength = gr.Slider(0, 1, value=0.5, step=0.05, label="Paste ext strength")
        # A1111's form: (component, infotext key or function of the parsed params)
        self.infotext_fields = [(on, "Paste ext on"), (strength, lambda d: d.get("Paste ext strength"))]
        return [on, strength]

    def process(self, p, on, strength):
        if on:
            p.extra_generation_params["Paste ext on"] = on
            p.extra_generation_params["Paste ext strength"] = strength
'''


def test_extension_infotext_fields_naming_components(data_dir):
    """An extension's infotext_fields name the gradio components its ui() returned: the API's infotext fills those
    args (A1111 mentioned_script_args), converted to each control's type; the JSON's alwayson entry wins."""
    root = data_dir / "extensions" / "paste-ext" / "scripts"
    root.mkdir(parents=True)
    (root / "paste_ext.py").write_text(PASTE_EXT)
    with TestClient(_app(data_dir)) as c:
        text = "a cat\nSteps: 1, Paste ext on: True, Paste ext strength: 0.7"
        r = c.post("/sdapi/v1/txt2img", json={**BODY, "infotext": text})
        assert r.status_code == 200, r.text
        assert "Paste ext on: True, Paste ext strength: 0.7" in json.loads(r.json()["info"])["infotexts"][0]
        r = c.post("/sdapi/v1/txt2img", json={**BODY, "infotext": text,
                                              "alwayson_scripts": {"Paste Ext": {"args": [False]}}})
        assert "Paste ext" not in json.loads(r.json()["info"])["infotexts"][0]
        assert "Paste ext" not in json.loads(c.post("/sdapi/v1/txt2img", json=BODY).json()["info"])["infotexts"][0]
