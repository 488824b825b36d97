"""The UI's own logic without a browser: each tab's to_request mapping, infotext pasting, the token counter, Settings'
Apply, and how the app mounts the UI (--gradio-auth, --subpath, --share, /internal without --api)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from webui.core.io.infotext import parse_generation_parameters
from webui.core.io.paste import paste_values
from webui.core.types import HiresOptions, RefinerOptions
from webui.ui import common
from webui.ui.tabs import img2img, txt2img

BASE = {"prompt": "a cat", "negative_prompt": "dog", "styles": ["s1"], "seed": 12.0, "sampler_name": "Euler a",
        "scheduler": "Karras", "steps": 9, "cfg_scale": 6.5, "width": 320, "height": 256, "batch_size": 2, "n_iter": 3,
        "subseed": 77, "subseed_strength": 0.25, "seed_resize_from_w": 0, "seed_resize_from_h": 0, "seed_extras": False,
        "denoising_strength": 0.45, "enable_hr": False, "hr_scale": 1.5, "hr_upscaler": "Latent (bicubic)",
        "hr_second_pass_steps": 5, "hr_resize_x": 0, "hr_resize_y": 0, "hr_checkpoint_name": "Use same checkpoint",
        "hr_sampler_name": "Use same sampler", "hr_scheduler": "Use same scheduler", "hr_prompt": "",
        "hr_negative_prompt": "", "enable_refiner": False, "refiner_checkpoint": "None", "refiner_switch_at": 0.8,
        "cn_enabled": False, "script": "None"}


def png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


# -- txt2img ---------------------------------------------------------------------------------------------------------


def test_txt2img_to_request_maps_every_field():
    req = txt2img.to_request(BASE)
    assert (req.mode, req.prompt, req.negative_prompt, req.styles) == ("txt2img", "a cat", "dog", ("s1",))
    assert (req.seed, req.sampler_name, req.scheduler, req.steps, req.cfg_scale) == (12, "Euler a", "Karras", 9, 6.5)
    assert (req.width, req.height, req.batch_size, req.n_iter) == (320, 256, 2, 3)
    assert isinstance(req.seed, int)
    # without "Extra" the variation controls are not sent (A1111's seed checkbox), without Hires no denoising
    assert (req.subseed, req.subseed_strength, req.seed_resize_from_w) == (-1, 0.0, -1)
    assert req.hires is None and req.denoising_strength is None and req.refiner is None
    # the UI saves (option samples_save decides) and keeps the grid
    assert req.save_images is True and req.do_not_save_grid is False
    assert req.extension_args == {}


def test_txt2img_hires_extra_seed_and_refiner():
    req = txt2img.to_request({**BASE, "enable_hr": True, "seed_extras": True, "seed_resize_from_w": 512,
                              "hr_sampler_name": "DDIM", "hr_checkpoint_name": "other.safetensors",
                              "enable_refiner": True, "refiner_checkpoint": "ref.safetensors [abc]",
                              "refiner_switch_at": 0.6})
    assert req.hires == HiresOptions(scale=1.5, upscaler="Latent (bicubic)", second_pass_steps=5,
                                     checkpoint="other.safetensors", sampler_name="DDIM", scheduler=None)
    assert req.denoising_strength == 0.45
    assert (req.subseed, req.subseed_strength, req.seed_resize_from_w, req.seed_resize_from_h) == (77, 0.25, 512, -1)
    assert req.refiner == RefinerOptions(checkpoint="ref.safetensors [abc]", switch_at=0.6)


def test_controlnet_unit_from_the_accordion():
    """The built-in ControlNet plugin maps its accordion's values to ``extension_args["controlnet"]``."""
    from webui.core.types import ControlNetUnit
    from webui.plugins.builtin.controlnet import ControlNetPlugin
    from webui.plugins.manager import PluginManager

    plugins = PluginManager()
    plugins.register(ControlNetPlugin(registry=None), "controlnet")

    def units(values):
        return txt2img.to_request(values, plugins).extension_args.get("controlnet", ())

    assert units({**BASE, "cn_enabled": False, "cn_image": Image.new("RGB", (8, 8))}) == ()
    hint = Image.new("RGB", (8, 8), (1, 2, 3))
    (unit,) = units({**BASE, "cn_enabled": True, "cn_image": hint, "cn_module": "canny",
                              "cn_model": "cn-tiny [0123abcd]", "cn_weight": 0.8, "cn_guidance_start": 0.1,
                              "cn_guidance_end": 0.9, "cn_processor_res": 256, "cn_threshold_a": 100,
                              "cn_threshold_b": 200, "cn_control_mode": 2, "cn_resize_mode": 0,
                              "cn_pixel_perfect": True, "cn_low_vram": False})
    assert unit == ControlNetUnit(enabled=True, module="canny", model="cn-tiny [0123abcd]", weight=0.8,
                                  image=unit.image, resize_mode=0, processor_res=256, threshold_a=100.0,
                                  threshold_b=200.0, guidance_start=0.1, guidance_end=0.9, control_mode=2,
                                  pixel_perfect=True)
    assert tuple(decode(unit.image).getpixel((0, 0))) == (1, 2, 3)
    # Multi-ControlNet: unit 1 ("cn1_") joins when enabled, in unit order; a disabled unit 0 is skipped
    two = units({**BASE, "cn_enabled": True, "cn_module": "canny", "cn_model": "a",
                              "cn1_enabled": True, "cn1_module": "invert", "cn1_model": "b", "cn1_weight": 0.5,
                              "cn2_enabled": False})
    assert [(u.module, u.model, u.weight) for u in two] == [("canny", "a", 1.0), ("invert", "b", 0.5)]
    only_second = units({**BASE, "cn_enabled": False, "cn1_enabled": True, "cn1_model": "b"})
    assert [u.model for u in only_second] == ["b"]


# -- img2img ---------------------------------------------------------------------------------------------------------


def test_img2img_to_request_plain_and_scale_by():
    image = Image.new("RGBA", (96, 64), (10, 20, 30, 255))
    values = {**BASE, "mode": 0, "init_img": image, "resize_mode": "Crop and resize", "denoising_strength": 0.3,
              "image_cfg_scale": 1.25, "selected_scale_tab": 0}
    req = img2img.to_request(values)
    assert req.mode == "img2img" and req.inpaint is None and req.resize_mode == 1
    assert (req.width, req.height, req.denoising_strength, req.image_cfg_scale) == (320, 256, 0.3, 1.25)
    assert np.array_equal(np.asarray(decode(req.init_images[0])), np.asarray(image))
    req = img2img.to_request({**values, "selected_scale_tab": 1, "scale_by": 2.5})
    assert (req.width, req.height) == (240, 160)  # A1111: int(image size * scale)
    with pytest.raises(img2img.Img2ImgInputError, match="no image is selected"):
        img2img.to_request({**values, "init_img": None})


def test_inpaint_mask_is_the_painted_layer():
    """Inpaint: the editor's background is the image; the strokes' alpha (above 128) is the mask, white = repaint."""
    background = Image.new("RGBA", (32, 16), (200, 100, 50, 255))
    layer = Image.new("RGBA", (32, 16), (0, 0, 0, 0))
    layer.paste((255, 255, 255, 255), (4, 2, 10, 8))
    layer.paste((255, 255, 255, 100), (20, 2, 24, 8))  # faint paint: below the threshold
    values = {**BASE, "mode": 2, "init_img_with_mask": {"background": background, "layers": [layer],
                                                        "composite": background},
              "mask_blur": 3, "inpainting_fill": "latent noise", "inpaint_full_res": "Only masked",
              "inpaint_full_res_padding": 16, "inpainting_mask_invert": "Inpaint not masked", "resize_mode": 0}
    req = img2img.to_request(values)
    mask = np.asarray(decode(req.inpaint.mask))
    expected = np.zeros((16, 32), np.uint8)
    expected[2:8, 4:10] = 255
    assert np.array_equal(mask, expected)
    inp = req.inpaint
    assert (inp.mask_blur_x, inp.mask_blur_y, inp.inpainting_fill, inp.inpaint_full_res) == (3, 3, 2, True)
    assert (inp.inpaint_full_res_padding, inp.inpainting_mask_invert) == (16, 1)
    assert decode(req.init_images[0]).size == (32, 16)


def test_inpaint_sketch_mask_is_what_changed():
    """A1111 mode 3: the mask is where the sketch differs from the original; the init image is the blurred blend."""
    orig = Image.new("RGBA", (16, 16), (0, 0, 255, 255))
    sketched = orig.copy()
    sketched.paste((255, 0, 0, 255), (4, 4, 8, 8))
    values = {**BASE, "mode": 3, "mask_alpha": 0, "mask_blur": 0,
              "inpaint_color_sketch": {"background": orig, "layers": [], "composite": sketched}}
    req = img2img.to_request(values)
    mask = np.asarray(decode(req.inpaint.mask))
    assert mask[4:8, 4:8].min() == 255 and mask.sum() == 16 * 255
    init = np.asarray(decode(req.init_images[0]).convert("RGB"))
    assert tuple(init[5, 5]) == (255, 0, 0) and tuple(init[0, 0]) == (0, 0, 255)


def test_img2img_batch_makes_one_request_per_file(tmp_path):
    src, masks, out = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    src.mkdir()
    masks.mkdir()
    for name, color in (("b.png", (1, 2, 3)), ("a.png", (4, 5, 6))):
        Image.new("RGB", (8, 8), color).save(src / name)
    Image.new("L", (8, 8), 255).save(masks / "a.png")
    (src / "notes.txt").write_text("not an image")
    reqs = img2img.make_requests({**BASE, "mode": 5, "batch_input_dir": str(src), "batch_output_dir": str(out),
                                  "batch_inpaint_mask_dir": str(masks)})
    assert len(reqs) == 2
    assert tuple(decode(reqs[0].init_images[0]).convert("RGB").getpixel((0, 0))) == (4, 5, 6)  # a.png first
    assert reqs[0].inpaint is not None and reqs[1].inpaint is None
    assert reqs[0].override_settings == {"outdir_samples": "", "outdir_img2img_samples": str(out),
                                         "save_to_dirs": False}
    with pytest.raises(img2img.Img2ImgInputError, match="does not exist"):
        img2img.make_requests({**BASE, "mode": 5, "batch_input_dir": str(tmp_path / "nope")})


# -- pasting ---------------------------------------------------------------------------------------------------------


def test_paste_fields_follow_a1111():
    text = ("a house\nNegative prompt: ugly\nSteps: 12, Sampler: DPM++ 2M Karras, CFG scale: 4, Seed: 99, "
            "Size: 640x448, Denoising strength: 0.4, Hires upscale: 2, Hires upscaler: Latent, Hires steps: 3, "
            "Variation seed: 5, Variation seed strength: 0.1, Refiner: ref [0123], Refiner switch at: 0.7")
    values = paste_values(parse_generation_parameters(text), txt2img.PASTE_FIELDS)
    assert values["prompt"] == "a house" and values["negative_prompt"] == "ugly"
    assert (values["steps"], values["cfg_scale"], values["seed"]) == (12, 4.0, 99)
    # a legacy combined name is split; Karras is DPM++ 2M's own default, so A1111 shows it as Automatic
    assert (values["sampler_name"], values["scheduler"]) == ("DPM++ 2M", "Automatic")
    assert (values["width"], values["height"]) == (640, 448)
    assert values["enable_hr"] is True and values["hr_scale"] == 2.0 and values["hr_second_pass_steps"] == 3
    assert (values["hr_sampler_name"], values["hr_scheduler"]) == ("Use same sampler", "Use same scheduler")
    assert values["seed_extras"] is True and values["subseed"] == 5 and values["subseed_strength"] == 0.1
    assert values["enable_refiner"] is True and values["refiner_checkpoint"] == "ref [0123]"
    assert values["refiner_switch_at"] == 0.7
    # a plain txt2img infotext enables neither Hires. fix nor the refiner, and a bad number is skipped
    plain = paste_values(parse_generation_parameters("x\nSteps: many, Sampler: Euler, Seed: 1"),
                                txt2img.PASTE_FIELDS)
    assert "steps" not in plain and plain["enable_hr"] is False and "enable_refiner" not in plain
    assert plain["sampler_name"] == "Euler" and plain["scheduler"] == "Automatic"
    legacy = paste_values(parse_generation_parameters("x\nSteps: 3, Sampler: Euler Karras, Seed: 1"),
                                 txt2img.PASTE_FIELDS)
    assert (legacy["sampler_name"], legacy["scheduler"]) == ("Euler", "Karras")


def test_img2img_paste_fields_read_inpaint_keys():
    text = ("p\nSteps: 5, Sampler: Euler, Seed: 1, Size: 64x64, Denoising strength: 0.3, Mask blur: 8, "
            "Inpaint area: Only masked, Masked area padding: 24, Masked content: fill, Mask mode: Inpaint not masked")
    values = paste_values(parse_generation_parameters(text), img2img.PASTE_FIELDS)
    assert values["mask_blur"] == 8 and values["inpaint_full_res"] == "Only masked"
    assert values["inpaint_full_res_padding"] == 24 and values["inpainting_fill"] == "fill"
    assert values["inpainting_mask_invert"] == "Inpaint not masked" and values["denoising_strength"] == 0.3
    assert "enable_hr" not in values


def test_selected_infotext_and_gallery_image(tmp_path):
    info = json.dumps({"infotexts": ["grid", "one", "two"], "index_of_first_image": 1})
    assert common.selected_infotext(info, 2) == "two"
    assert common.selected_infotext(info, None) == "one"  # nothing selected: the first image, not the grid
    assert common.selected_infotext("", 0) == ""
    path = tmp_path / "x.png"
    im = Image.new("RGB", (4, 4))
    from PIL import PngImagePlugin

    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", "hello")
    im.save(path, pnginfo=meta)
    got = common.gallery_image([(str(path), None)], 0)
    assert got.info["parameters"] == "hello" and got.size == (4, 4)


# -- token counter ---------------------------------------------------------------------------------------------------


def test_token_counter_counts_75_token_chunks(tokenizer_dir):
    from webui.core.models.tokenizers import clip_tokenizer

    tok = clip_tokenizer(tokenizer_dir)
    assert common.count_tokens(tok, "", 20) == (0, 75)
    assert common.count_tokens(tok, "a red cat", 20) == (3, 75)
    assert common.count_tokens(tok, "a red cat <lora:foo:1>", 20) == (3, 75)  # extra networks are not counted
    assert common.count_tokens(tok, "(a red:1.3) [cat]", 20) == (3, 75)  # emphasis syntax is not counted
    assert common.count_tokens(tok, "a BREAK b", 20) == (76, 150)  # BREAK pads the first chunk to 75
    assert common.count_tokens(tok, " ".join(["cat"] * 80), 20) == (80, 150)
    # prompt editing: the longest text of the schedule
    assert common.count_tokens(tok, "a [red cat:blue:5]", 20) == (3, 75)
    assert common.count_tokens(tok, "cat AND dog dog dog", 20) == (3, 75)


# -- settings and the mounted app ----------------------------------------------------------------------------------


def _client(data_dir, *flags):
    from webui.app import build_app
    from webui.config import parse

    return TestClient(build_app(parse(["--data-dir", str(data_dir), "--skip-load-model-at-start", *flags])))


def test_settings_apply_checks_and_persists(data_dir):
    from webui.ui.tabs import settings

    with _client(data_dir) as c:
        state = c.app.state.webui
        assert settings.apply(state, {"jpeg_quality": 93.0, "samples_format": "WEBP", "n_rows": -1}) == \
            "2 settings changed: jpeg_quality, samples_format."
        saved = json.loads((data_dir / "config.json").read_text())
        assert saved["jpeg_quality"] == 93 and isinstance(saved["jpeg_quality"], int) and saved["samples_format"] == "webp"
        with pytest.raises(Exception, match="at most 100"):
            settings.apply(state, {"jpeg_quality": 1000, "eta_ddim": 0.5})
        assert state.settings.get("eta_ddim") == 0.0  # all or nothing
        assert settings.apply(state, {"jpeg_quality": 93}) == "Nothing changed."
        sections = dict(settings.sections())
        # every option has a page, but A1111's hidden ones (sd_checkpoint_hash)
        assert sum(len(v) for v in sections.values()) == len([o for o in settings.OPTIONS if o.section != "hidden"])
        assert {"saving-images", "sd", "ui", "infotext"} <= set(sections)


def test_ui_routes_without_api_and_share_refused(data_dir):
    from webui.config import ConfigError

    with _client(data_dir) as c:
        page = c.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        config = c.get("/config").json()
        labels = {comp.get("props", {}).get("label") for comp in config["components"]}
        assert {"txt2img", "img2img", "Extras", "PNG Info", "Checkpoint Merger", "Train", "Settings"} <= labels
        assert c.get("/internal/ping").json() == {}  # the UI's progress routes, as A1111
        assert c.get("/sdapi/v1/options").status_code == 404  # the API needs --api
    with pytest.raises(ConfigError, match="--share"):
        _client(data_dir, "--share")


def test_gradio_auth_and_subpath(data_dir):
    (data_dir / "logins.txt").write_text("bob:pw2\n")
    with _client(data_dir, "--gradio-auth", "alice:pw1", "--gradio-auth-path", str(data_dir / "logins.txt"),
                 "--subpath", "sd", "--api") as c:
        assert c.get("/sd/config").status_code == 401
        assert c.get("/sd/gradio_api/info").status_code == 401
        assert c.post("/sd/login", data={"username": "alice", "password": "nope"}).status_code == 400
        assert c.get("/sd/sdapi/v1/options").status_code == 200  # the API keeps its own --api-auth
        for user, password in (("alice", "pw1"), ("bob", "pw2")):
            c.cookies.clear()
            assert c.post("/sd/login", data={"username": user, "password": password}).status_code == 200
            config = c.get("/sd/config")
            assert config.status_code == 200 and config.json()["root"].endswith("/sd")


def test_script_dropdown_and_alwayson_controls_make_script_args():
    """The Script dropdown's choice and its controls, and an always-on script's controls (Soft Inpainting), become
    the job's positional script_args exactly as the API builds them."""
    from webui.plugins.builtin.scripts import builtin_script_classes
    from webui.plugins.scripts import ScriptRunner

    runner = ScriptRunner([cls() for cls in builtin_script_classes()], is_img2img=False)
    xyz = runner.find("X/Y/Z plot")
    values = {**BASE, "script": "X/Y/Z plot", f"script_arg_{xyz.args_from + 1}": "1,2"}
    args = txt2img.to_request(values, None, runner).extension_args["script_args"]
    assert args[0] == runner.selectable_index("X/Y/Z plot")
    assert args[xyz.args_from + 1] == "1,2"
    assert args == runner.script_args("X/Y/Z plot", [runner.inputs[xyz.args_from].value, "1,2"], {})
    none = txt2img.to_request(BASE, None, runner).extension_args["script_args"]
    assert none == runner.script_args(None, [], {})

    i2i_runner = ScriptRunner([cls() for cls in builtin_script_classes()], is_img2img=True)
    soft = i2i_runner.find("Soft Inpainting")
    init = Image.new("RGB", (64, 64), "red")
    i2i_values = {**BASE, "mode": 0, "init_img": init, f"script_arg_{soft.args_from}": True}
    i2i_args = img2img.to_request(i2i_values, None, i2i_runner).extension_args["script_args"]
    assert i2i_args[soft.args_from] is True and i2i_args[0] == 0


def test_scripts_infotext_fields_join_the_paste_table():
    """A1111 adds each script's infotext_fields to the tab's paste fields: pasting an infotext with soft inpainting
    on sets its controls (form names script_arg_<position>), converted to each control's type; the API's infotext
    fills the always-on ones the same way (mentioned_script_args)."""
    from webui.core.io.infotext import parse_generation_parameters
    from webui.core.io.paste import paste_values
    from webui.plugins.builtin.scripts import builtin_script_classes
    from webui.plugins.scripts import ScriptRunner

    runner = ScriptRunner([cls() for cls in builtin_script_classes()], is_img2img=True)
    soft = runner.find("Soft Inpainting")
    params = parse_generation_parameters("a cat\nSteps: 2, Soft inpainting enabled: True, Soft inpainting schedule "
                                         "bias: 3, Soft inpainting mask influence: 0.25, X Values: \"1, 2\"")
    values = paste_values(params, [*img2img.PASTE_FIELDS, *runner.paste_fields()])
    assert values[f"script_arg_{soft.args_from}"] is True
    assert values[f"script_arg_{soft.args_from + 1}"] == 3 and isinstance(values[f"script_arg_{soft.args_from + 1}"], int)
    assert values[f"script_arg_{soft.args_from + 4}"] == 0.25
    xyz = runner.find("X/Y/Z plot")
    assert values[f"script_arg_{xyz.args_from + 1}"] == "1, 2"  # a selectable script's field: the UI pastes it
    mentioned = runner.mentioned_args(params)  # the API: always-on scripts only
    assert mentioned == {soft.args_from: True, soft.args_from + 1: 3, soft.args_from + 4: 0.25}
    args = runner.script_args(None, [], {"Soft Inpainting": [False]}, mentioned)
    assert args[soft.args_from:soft.args_from + 2] == (False, 3)
