"""The hook file and the plugin manager: hooks run where A1111 calls its scripts, a plugin can change a generation
through them, and a raising hook fails its request (naming the plugin) while the server goes on."""

from __future__ import annotations

import ast
import os
import inspect
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from webui.app import build_app
from webui.config import parse
from webui.core.types import GenerationRequest, HiresOptions
from webui.plugins import hooks
from webui.plugins.hooks import hookimpl
from webui.plugins.manager import PluginError, PluginManager
from webui.state import build_state


@pytest.fixture
def state(data_dir):
    return build_state(parse(["--nowebui", "--data-dir", str(data_dir)]), create_demo=False)


def _request(**kw):
    base = dict(prompt="a cat", steps=2, width=64, height=64, seed=123, sampler_name="Euler", checkpoint="tiny-sd15")
    base.update(kw)
    return GenerationRequest(**base)


class Recorder:
    """Records every generation hook with what it saw."""

    def __init__(self):
        self.calls = []

    @hookimpl
    def before_process(self, p):
        self.calls.append(("before_process", p.all_seeds == []))

    @hookimpl
    def process(self, p):
        self.calls.append(("process", list(p.all_seeds), p.width))

    @hookimpl
    def before_process_batch(self, p, batch_number, seeds):
        self.calls.append(("before_process_batch", batch_number, list(seeds)))

    @hookimpl
    def process_batch(self, p, batch_number):
        self.calls.append(("process_batch", batch_number))

    @hookimpl
    def before_hr(self, p):
        self.calls.append(("before_hr",))

    @hookimpl
    def postprocess_batch(self, p, images, batch_number):
        self.calls.append(("postprocess_batch", batch_number, len(images)))

    @hookimpl
    def postprocess_image(self, p, pp):
        self.calls.append(("postprocess_image", pp.image.size))

    @hookimpl
    def postprocess(self, p, processed):
        self.calls.append(("postprocess", len(processed.images)))

    @hookimpl
    def on_cfg_denoiser(self, params):
        self.calls.append(("cfg_denoiser", params.total_sampling_steps))

    @hookimpl
    def on_cfg_after_cfg(self, params):
        self.calls.append(("cfg_after_cfg",))


def test_hookspecs_are_one_short_file_named_after_a1111():
    names = {n for n, f in inspect.getmembers(hooks, inspect.isfunction) if hasattr(f, "webui_spec")}
    a1111 = {"before_process", "process", "before_process_batch", "process_batch", "postprocess_batch",
             "postprocess_batch_list", "postprocess_image", "postprocess_maskoverlay", "postprocess", "before_hr",
             "on_cfg_denoiser", "on_cfg_denoised", "on_cfg_after_cfg", "on_before_image_saved", "on_image_saved",
             "on_model_loaded", "on_app_started", "on_ui_tabs", "on_ui_settings", "on_infotext_pasted"}
    assert a1111 <= names
    tree = ast.parse(inspect.getsource(hooks))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            doc = ast.get_docstring(node)
            assert doc and len(doc.splitlines()) <= 2, node.name  # one docstring line each (wrapped at most once)


def test_hooks_run_in_a1111_order(state):
    rec = Recorder()
    state.plugins.register(rec, "recorder")
    res = state.engine.generate(_request(batch_size=2, n_iter=2, seed=10))
    names = [c[0] for c in rec.calls if not c[0].startswith("cfg")]
    per_image = ["postprocess_image"] * 2
    batch = ["before_process_batch", "process_batch", "postprocess_batch", *per_image]
    assert names == ["before_process", "process", *batch, *batch, "postprocess"]
    assert ("process", [10, 11, 12, 13], 64) in rec.calls
    assert ("before_process_batch", 1, [12, 13]) in rec.calls
    assert ("postprocess", len(res.images)) in rec.calls
    # the denoiser hooks: once per model call, with the job's step count
    assert ("cfg_denoiser", 2) in rec.calls and ("cfg_after_cfg",) in rec.calls


def test_before_hr_is_called_for_the_second_pass(state):
    rec = Recorder()
    state.plugins.register(rec, "recorder")
    state.engine.generate(_request(width=32, height=32, denoising_strength=0.5,
                                   hires=HiresOptions(scale=2, upscaler="Latent")))
    names = [c[0] for c in rec.calls if not c[0].startswith("cfg")]
    assert names.index("process_batch") < names.index("before_hr") < names.index("postprocess_batch")


def test_plugins_change_the_image_and_leave_no_trace(state):
    base = np.asarray(state.engine.generate(_request()).images[0])

    class Darken:
        @hookimpl
        def on_cfg_after_cfg(self, params):
            params.x = params.x * 0.5

    state.plugins.register(Darken(), "darken")
    changed = np.asarray(state.engine.generate(_request()).images[0])
    state.plugins.unregister("darken")
    again = np.asarray(state.engine.generate(_request()).images[0])
    assert changed.tobytes() != base.tobytes()
    assert again.tobytes() == base.tobytes()


def test_postprocess_image_replaces_the_image_and_its_infotext_is_kept(state):
    from PIL import Image

    class Flat:
        @hookimpl
        def postprocess_image(self, p, pp):
            pp.image = Image.new("RGB", pp.image.size, (9, 8, 7))

    state.plugins.register(Flat(), "flat")
    res = state.engine.generate(_request())
    assert res.images[0].getpixel((0, 0)) == (9, 8, 7) and "Seed: 123" in res.images[0].info["parameters"]


def test_a_raising_hook_names_the_plugin_and_the_server_goes_on(data_dir):
    class Broken:
        @hookimpl
        def process_batch(self, p):
            raise RuntimeError("boom")

    config = parse(["--nowebui", "--data-dir", str(data_dir), "--skip-load-model-at-start"])
    with TestClient(build_app(config), raise_server_exceptions=False) as client:
        state = client.app.state.webui
        state.plugins.register(Broken(), "broken-plugin")
        body = {"prompt": "a cat", "steps": 2, "width": 64, "height": 64, "seed": 1}
        r = client.post("/sdapi/v1/txt2img", json=body)
        assert r.status_code == 500
        data = r.json()
        assert data["error"] == "PluginError" and "broken-plugin" in data["detail"] and "process_batch" in data["detail"]
        state.plugins.unregister("broken-plugin")
        ok = client.post("/sdapi/v1/txt2img", json=body)
        assert ok.status_code == 200 and json.loads(ok.json()["info"])["all_seeds"] == [1]


def test_manager_calls_each_impl_and_wraps_only_foreign_errors():
    from webui.core.generation.context import GenerationError

    pm = PluginManager()

    class A:
        @hookimpl
        def alwayson_scripts(self, is_img2img):
            return ["A"]

    class B:
        @hookimpl
        def alwayson_scripts(self, is_img2img):
            raise GenerationError("bad value", "field")

    pm.register(A(), "a")
    assert pm.call("alwayson_scripts", is_img2img=False) == [["A"]]
    assert pm.has("alwayson_scripts") and not pm.has("on_cfg_denoised")
    pm.register(B(), "b")
    with pytest.raises(GenerationError):  # a plugin refusing the request's input stays a client error
        pm.call("alwayson_scripts", is_img2img=False)
    pm.unregister("b")

    class C:
        @hookimpl
        def alwayson_scripts(self, is_img2img):
            return 1 / 0

    pm.register(C(), "c")
    with pytest.raises(PluginError, match="c: alwayson_scripts failed: ZeroDivisionError"):
        pm.call("alwayson_scripts", is_img2img=False)


def test_model_loaded_hook(state):
    seen = []

    class Watch:
        @hookimpl
        def on_model_loaded(self, sd_model):
            seen.append(sd_model.info.stem)

    state.plugins.register(Watch(), "watch")
    state.engine.load(state.registry.resolve("tiny-sd15"))
    state.engine.load(state.registry.resolve("tiny-sd15"))  # cached: no second load
    assert seen == ["tiny-sd15"]


def test_plugin_tab_and_settings_hook_in_the_page(data_dir):
    import gradio as gr

    from webui.ui.blocks import build_ui

    seen = []

    class TabPlugin:
        @hookimpl
        def on_ui_tabs(self, state):
            with gr.Blocks() as blocks:
                gr.Markdown("hello from a plugin")
            return [(blocks, "My Plugin", "my_plugin")]

        @hookimpl
        def on_ui_settings(self, settings):
            seen.append(settings)

    state = build_state(parse(["--data-dir", str(data_dir)]), create_demo=False)
    state.plugins.register(TabPlugin(), "tabplugin")
    page = json.dumps(build_ui(state).get_config_file())
    assert "My Plugin" in page and "hello from a plugin" in page and "tab_my_plugin" in page
    assert seen == [state.settings]


def test_infotext_pasted_hook_reaches_the_api_request(data_dir):
    class Paste:
        @hookimpl
        def on_infotext_pasted(self, infotext, params):
            if "My steps" in params:
                params["Steps"] = params["My steps"]

    config = parse(["--nowebui", "--data-dir", str(data_dir), "--skip-load-model-at-start"])
    with TestClient(build_app(config)) as client:
        client.app.state.webui.plugins.register(Paste(), "paste")
        text = "a cat\nSteps: 5, Sampler: Euler, CFG scale: 7, Seed: 3, Size: 64x64, My steps: 2"
        r = client.post("/sdapi/v1/txt2img", json={"infotext": text})
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
        assert info["steps"] == 2 and info["all_seeds"] == [3]


def test_p_carries_a1111_names(state):
    seen = {}

    class Look:
        @hookimpl
        def process(self, p):
            seen.update(prompt=p.prompt, steps=p.steps, cfg_scale=p.cfg_scale, sampler_name=p.sampler_name,
                        all_seeds=list(p.all_seeds), all_hr_prompts=p.all_hr_prompts, tiling=p.tiling,
                        outpath=p.outpath_samples, grids=p.outpath_grids, width=p.width, n_iter=p.n_iter,
                        script_args=p.script_args, do_not_save_grid=p.do_not_save_grid,
                        extra=dict(p.extra_generation_params))

    state.plugins.register(Look(), "look")
    state.engine.generate(_request(seed=7, n_iter=2, width=32, height=32, denoising_strength=0.5,
                                   hires=HiresOptions(scale=2, upscaler="Latent", prompt="a dog")))
    assert seen["prompt"] == "a cat" and seen["steps"] == 2 and seen["sampler_name"] == "Euler"
    assert seen["all_seeds"] == [7, 8] and seen["all_hr_prompts"] == ["a dog", "a dog"] and seen["width"] == 32
    assert seen["tiling"] is False and seen["n_iter"] == 2 and seen["script_args"] == ()
    assert seen["outpath"].endswith(os.path.join("outputs", "txt2img-images"))
    assert seen["grids"].endswith(os.path.join("outputs", "txt2img-grids"))
    assert seen["extra"]["Hires upscaler"] == "Latent"
