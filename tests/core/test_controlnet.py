"""ControlNet core: units as the sd-webui-controlnet API sends them, the model list, loading A1111-layout files into
diffusers, preprocessors, and the control hook on the tiny SD1 model through the real KDenoiser."""

from __future__ import annotations

import base64
import io
import os

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.denoiser import Cond, KDenoiser
from pipelines.schedules import ModelSigmas
from tests.fixtures.controlnet import tiny_controlnet, write_tiny_controlnet
from webui.core.controlnet import (
    ControlNetError,
    ControlNetRegistry,
    build_control_hooks,
    detect,
    infotext_params,
    module_detail,
    module_list,
    parse_unit_infotext,
    parse_units,
    pixel_perfect_resolution,
    unit_from_infotext,
    unit_infotext,
)
from webui.core.controlnet.hook import ControlNetHook, choose_input_image, control_scales, guidance_active
from webui.core.controlnet.preprocessors import (
    INNER_FIT,
    OUTER_FIT,
    RESIZE,
    AnnotatorContext,
    detectmap_proc,
    get_preprocessor,
    run_preprocessor,
)
from webui.core.devices import plan_devices
from webui.core.models.loader import load_components
from webui.core.models.registry import model_hash
from webui.core.types import CheckpointInfo, ControlNetUnit

CANNY = "control_tiny_sd15_canny"


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _b64(arr: np.ndarray) -> str:
    return base64.b64encode(_png(arr)).decode()


def _synthetic(h=64, w=64) -> np.ndarray:
    """A white square and a gray disc on black: clear edges for canny."""
    img = np.zeros((h, w, 3), np.uint8)
    img[h // 4: h // 2, w // 4: w // 2] = 255
    cv2.circle(img, (3 * w // 4, 3 * h // 4), min(h, w) // 8, (128, 128, 128), -1)
    return img


@pytest.fixture(scope="module")
def sd1(models_root, tokenizer_dir):
    _, paths = models_root
    info = CheckpointInfo(filename=paths["SD1"], name="tiny-sd15.safetensors", model_name="tiny-sd15")
    return load_components(info, plan_devices(), tokenizer_dir)


@pytest.fixture(scope="module")
def cn_dirs(tmp_path_factory, models_root):
    """models/ControlNet (two models, one a "difference" file, one a .pth) and the extension's models folder."""
    _, paths = models_root
    root = tmp_path_factory.mktemp("cn")
    main = root / "models" / "ControlNet"
    ext = root / "extensions" / "sd-webui-controlnet" / "models"
    write_tiny_controlnet(str(main / f"{CANNY}.safetensors"), "SD1", seed=5)
    write_tiny_controlnet(str(main / "sub" / "control_tiny_sd15_depth.pth"), "SD1", seed=6)
    write_tiny_controlnet(str(main / "control_tiny_sd15_canny-diff.safetensors"), "SD1", seed=5,
                          diff_base=paths["SD1"])
    write_tiny_controlnet(str(ext / "control_tiny_sdxl_canny.safetensors"), "SDXL", seed=7)
    (main / "notes.txt").write_text("not a model")
    return str(main), str(ext)


@pytest.fixture(scope="module")
def registry(cn_dirs):
    return ControlNetRegistry(list(cn_dirs), annotator_dir=None)


# ---------------------------------------------------------------------------------------------------------------
# Units


def _unit_dict(**kw):
    d = {"enabled": True, "module": "canny", "model": CANNY, "image": _b64(_synthetic())}
    d.update(kw)
    return d


def test_list_and_positional_forms_parse_the_same():
    img = _b64(_synthetic())
    as_dict = parse_units({"controlnet": {"args": [{
        "enabled": True, "module": "canny", "model": CANNY, "weight": 0.75, "image": img, "resize_mode": 2,
        "low_vram": False, "processor_res": 256, "threshold_a": 50, "threshold_b": 150, "guidance_start": 0.1,
        "guidance_end": 0.9, "pixel_perfect": True, "control_mode": 1, "unknown_key": "ignored"}]}})
    positional = parse_units({"ControlNet": {"args": [[True, "canny", CANNY, 0.75, img, "Resize and Fill", False,
                                                       256, 50, 150, 0.1, 0.9, True, "My prompt is more important"]]}})
    flat = parse_units({"CONTROLNET": {"args": [True, "canny", CANNY, 0.75, img, "Envelope (Outer Fit)", False, 256,
                                                50, 150, 0.1, 0.9, True, 1]}})
    assert as_dict == positional == flat
    u = as_dict[0]
    assert (u.enabled, u.module, u.model, u.weight, u.resize_mode, u.processor_res) == (True, "canny", CANNY, 0.75, 2,
                                                                                        256)
    assert (u.threshold_a, u.threshold_b, u.guidance_start, u.guidance_end) == (50.0, 150.0, 0.1, 0.9)
    assert u.pixel_perfect is True and u.control_mode == 1
    assert Image.open(io.BytesIO(u.image)).size == (64, 64)


def test_aliases_names_and_defaults():
    img = _b64(_synthetic())
    (u,) = parse_units({"controlnet": {"args": [{"enabled": "true", "module": "softedge_pidinet",
                                                 "input_image": "data:image/png;base64," + img, "lowvram": True,
                                                 "guidance": 0.5, "resize_mode": "Inner Fit (Scale to Fit)",
                                                 "control_mode": "ControlNet is more important"}]}})
    assert (u.low_vram, u.guidance_end, u.resize_mode, u.control_mode) == (True, 0.5, 1, 2)
    assert u.image is not None and u.mask is None
    # -1 (and anything outside a slider's range) becomes the preprocessor's default, in the slider's own type
    (c,) = parse_units({"controlnet": {"args": [{"enabled": True, "module": "canny", "threshold_b": 999}]}})
    assert (c.processor_res, c.threshold_a, c.threshold_b) == (512, 100, 200)
    (n,) = parse_units({"controlnet": {"args": [{"enabled": True}]}})
    assert (n.module, n.model, n.processor_res, n.threshold_a, n.threshold_b) == ("none", "None", 512, 0.5, 0.5)
    # a dict without "enabled" is a disabled unit (v1.1.455's default) and keeps its raw values
    (d,) = parse_units({"controlnet": {"args": [{"module": "canny"}, None, "stray script arg"]}})
    assert d.enabled is False and d.processor_res == -1
    # {image, mask} and [image, mask] forms carry the mask
    (m1,) = parse_units({"controlnet": {"args": [{"enabled": True, "image": {"image": img, "mask": img}}]}})
    (m2,) = parse_units({"controlnet": {"args": [{"enabled": True, "image": [img, img]}]}})
    (m3,) = parse_units({"controlnet": {"args": [{"enabled": True, "image": img, "mask_image": img}]}})
    assert m1.mask is not None and m1 == m2 == m3
    assert parse_units({"other": {"args": []}}) == () and parse_units(None) == ()


@pytest.mark.parametrize("bad, field", [
    ({"weight": 2.5}, "weight"),
    ({"weight": "heavy"}, "weight"),
    ({"guidance_start": 0.8, "guidance_end": 0.2}, "guidance_start"),
    ({"guidance_end": 1.5}, "guidance_end"),
    ({"resize_mode": "Stretch"}, "resize_mode"),
    ({"control_mode": 7}, "control_mode"),
    ({"enabled": "maybe"}, "enabled"),
    ({"processor_res": "big"}, "processor_res"),
    ({"image": "not base64 at all!"}, "image"),
    ({"input_image": "x", "image": "y"}, "input_image"),
])
def test_bad_values_name_the_field(bad, field):
    with pytest.raises(ControlNetError, match=field) as e:
        parse_units({"controlnet": {"args": [_unit_dict(**bad)]}})
    assert isinstance(e.value, ValueError)


def test_unknown_module_lists_the_modules():
    with pytest.raises(ControlNetError, match=r"module\(cany\) not found.*softedge_pidinet.*canny"):
        parse_units({"controlnet": {"args": [_unit_dict(module="cany")]}})


def test_infotext_exactly_as_the_extension_writes_it():
    (u,) = parse_units({"controlnet": {"args": [_unit_dict(model=f"{CANNY} [0bbf879a]")]}})
    assert unit_infotext(u) == (
        f"Module: canny, Model: {CANNY} [0bbf879a], Weight: 1.0, Resize Mode: Crop and Resize, Processor Res: 512, "
        "Threshold A: 100, Threshold B: 200, Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: False, "
        "Control Mode: Balanced"
    )
    (v,) = parse_units({"controlnet": {"args": [_unit_dict(threshold_a=50, weight=0.5, control_mode=2,
                                                           resize_mode=0, pixel_perfect=True)]}})
    text = unit_infotext(v)
    assert "Weight: 0.5, Resize Mode: Just Resize" in text and "Threshold A: 50.0" in text
    assert text.endswith("Pixel Perfect: True, Control Mode: ControlNet is more important")
    disabled = ControlNetUnit(enabled=False)
    assert list(infotext_params([disabled, u, v])) == ["ControlNet 0", "ControlNet 1"]  # numbered among enabled
    # a value holding ',' or ':' makes the extension write an empty value
    assert unit_infotext(ControlNetUnit(model="a, b")) == ""
    parsed = parse_unit_infotext(text)
    assert parsed["threshold_a"] == 50.0 and parsed["pixel_perfect"] is True
    assert parsed["control_mode"] == "ControlNet is more important"
    back = unit_from_infotext(text)
    assert (back.module, back.weight, back.threshold_a, back.control_mode, back.resize_mode) == ("canny", 0.5, 50.0, 2,
                                                                                                 0)


def test_module_list_and_detail_shapes():
    names, labels = module_list(), module_list(alias_names=True)
    assert names[0] == labels[0] == "none"
    assert "depth" in names and "depth_midas" in labels and "pidinet" in names and "softedge_pidinet" in labels
    # priority 100 first, by label descending (get_sorted_preprocessors)
    assert labels.index("tile_resample") < labels.index("canny") < labels.index("blur_gaussian")
    detail = module_detail(alias_names=True)
    assert detail["canny"]["sliders"] == [
        {"name": "Resolution", "value": 512, "min": 64, "max": 2048, "step": 8},
        {"name": "Low Threshold", "value": 100, "min": 1, "max": 255, "step": 1},
        {"name": "High Threshold", "value": 200, "min": 1, "max": 255, "step": 1},
    ]
    assert detail["invert (from white bg & black line)"]["sliders"] == []
    assert set(module_detail()) == set(names)


# ---------------------------------------------------------------------------------------------------------------
# Models


def test_model_list_titles_and_loose_lookup(registry, cn_dirs):
    main, ext = cn_dirs
    titles = registry.model_list()
    expected = [
        f"control_tiny_sd15_canny-diff [{model_hash(os.path.join(main, 'control_tiny_sd15_canny-diff.safetensors'))}]",
        f"{CANNY} [{model_hash(os.path.join(main, CANNY + '.safetensors'))}]",
        f"control_tiny_sd15_depth [{model_hash(os.path.join(main, 'sub', 'control_tiny_sd15_depth.pth'))}]",
        f"control_tiny_sdxl_canny [{model_hash(os.path.join(ext, 'control_tiny_sdxl_canny.safetensors'))}]",
    ]
    # models/ControlNet sorted by file name ("-" before "."), then the extension's folder; "None" is not listed
    assert titles == expected
    assert registry.resolve(expected[1]).filename.endswith(CANNY + ".safetensors")
    assert registry.resolve(CANNY.upper()).title == expected[1]  # the stem, any case
    assert registry.resolve("sd15_dep").title == expected[2]  # shortest stem containing the text
    assert registry.resolve("tiny_sd15_canny").title == expected[1]  # canny (shorter) beats canny-diff
    assert registry.resolve("None") is None


def test_missing_model_lists_the_available_ones(registry, sd1):
    with pytest.raises(ControlNetError, match=r"not found: control_v11p_sd15_openpose.*control_tiny_sd15_canny \["):
        registry.load("control_v11p_sd15_openpose [cab727d4]", sd1)
    with pytest.raises(ControlNetError, match="not selected any ControlNet Model"):
        registry.load("None", sd1)


def test_a1111_layout_loads_into_diffusers_exactly(registry, sd1):
    reference, _ = tiny_controlnet("SD1", 5)
    loaded = registry.load(CANNY, sd1)
    got, want = loaded.model.state_dict(), reference.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert not loaded.is_sdxl and not loaded.global_average_pooling
    assert registry.load(f"{CANNY}", sd1) is loaded  # cached
    # a pickled .pth (safe loading) and a "difference" file (base UNet added back) give the same kind of model
    depth = registry.load("control_tiny_sd15_depth", sd1).model.state_dict()
    ref6 = tiny_controlnet("SD1", 6)[0].state_dict()
    assert all(torch.equal(depth[k], ref6[k]) for k in ref6)
    diff = registry.load("control_tiny_sd15_canny-diff", sd1).model.state_dict()
    assert all(torch.allclose(diff[k], want[k], atol=1e-6, rtol=0) for k in want)


def test_sdxl_controlnet_needs_an_sdxl_model(registry, sd1, models_root, tokenizer_dir):
    with pytest.raises(ControlNetError, match="not compatible"):
        registry.load("control_tiny_sdxl_canny", sd1)
    _, paths = models_root
    xl = load_components(CheckpointInfo(filename=paths["SDXL"], name="x", model_name="x"), plan_devices(),
                         tokenizer_dir)
    loaded = registry.load("control_tiny_sdxl_canny", xl)
    reference = tiny_controlnet("SDXL", 7)[0].state_dict()
    got = loaded.model.state_dict()
    assert loaded.is_sdxl and got.keys() == reference.keys()
    assert all(torch.equal(got[k], reference[k]) for k in reference)
    # and it runs with SDXL's added conditioning
    x = torch.randn(2, 4, 8, 8)
    added = {"text_embeds": torch.randn(2, 32), "time_ids": torch.randn(2, 6)}
    down, mid = loaded.model(x, torch.tensor([500.0, 500.0]), encoder_hidden_states=torch.randn(2, 3, 64),
                             controlnet_cond=torch.rand(1, 3, 64, 64), added_cond_kwargs=added, return_dict=False)
    assert len(down) == 4 and down[0].shape == (2, 32, 8, 8) and mid.shape == (2, 64, 4, 4)


def test_not_a_controlnet_is_refused(tmp_path, sd1):
    from safetensors.torch import save_file

    d = tmp_path / "ControlNet"
    d.mkdir()
    save_file({"adapter.body.0.block1.weight": torch.zeros(1)}, str(d / "t2iadapter_canny.safetensors"))
    save_file({"lora_controlnet": torch.zeros(1)}, str(d / "control-lora-canny.safetensors"))
    reg = ControlNetRegistry([str(d)])
    with pytest.raises(ControlNetError, match="T2I-Adapter"):
        reg.load("t2iadapter_canny", sd1)
    with pytest.raises(ControlNetError, match="Control-LoRA"):
        reg.load("control-lora-canny", sd1)


# ---------------------------------------------------------------------------------------------------------------
# The hook on the real denoiser


def _denoise(sd1, control, steps=(0, 1), size=(8, 8)):
    """KDenoiser on a fixed latent and conditioning; cond rows first, then uncond rows (as CFGDenoiser batches)."""
    torch.manual_seed(0)
    x = torch.randn(4, 4, *size)
    context = torch.randn(4, 77, sd1.unet.config.cross_attention_dim)
    cond = Cond(context, uncond_rows=torch.tensor([False, False, True, True]))
    den = KDenoiser(sd1.unet, ModelSigmas(sd1.alphas_cumprod), control=control)
    den.progress.step, den.progress.steps = steps
    return den(x, torch.full((4,), 3.0), cond)


def _hook(registry, sd1, **unit_kw):
    unit = ControlNetUnit(enabled=True, module="canny", model=CANNY, **unit_kw)
    hint = torch.from_numpy(_synthetic()).float().permute(2, 0, 1)[None] / 255.0
    return ControlNetHook(unit=unit, controlnet=registry.load(CANNY, sd1), hint=hint)


def test_hook_changes_the_unet_output_and_weight_zero_is_bit_identical(registry, sd1):
    plain = _denoise(sd1, [])
    controlled = _denoise(sd1, [_hook(registry, sd1)])
    assert not torch.allclose(plain, controlled)
    assert torch.equal(_denoise(sd1, [_hook(registry, sd1, weight=0.0)]), plain)
    # two units' residuals add up
    both = _denoise(sd1, [_hook(registry, sd1, weight=0.5), _hook(registry, sd1, weight=0.5)])
    one = _denoise(sd1, [_hook(registry, sd1, weight=1.0)])
    assert torch.allclose(both, one, atol=1e-5)


class _Counting:
    def __init__(self, hook):
        self.hook, self.active = hook, []

    def __call__(self, ctx):
        out = self.hook(ctx)
        self.active.append(bool(out))
        return out


def test_guidance_end_half_controls_the_extensions_steps(registry, sd1):
    """guidance_end 0.5: percent = step / steps is not above 0.5 for steps 0..steps/2 -> 6 of 10 steps controlled
    (11 of 20), counted on the real denoiser's calls."""
    counter = _Counting(_hook(registry, sd1, guidance_end=0.5))
    den = KDenoiser(sd1.unet, ModelSigmas(sd1.alphas_cumprod), control=[counter])
    x = torch.randn(1, 4, 8, 8)
    cond = Cond(torch.randn(1, 77, sd1.unet.config.cross_attention_dim), uncond_rows=torch.tensor([False]))
    den.progress.steps = 10
    for step in range(10):
        den.progress.step = step
        den(x, torch.full((1,), 2.0), cond)
    assert counter.active == [True] * 6 + [False] * 4
    assert [guidance_active(s, 20, 0.0, 0.5) for s in range(20)] == [True] * 11 + [False] * 9
    assert [guidance_active(s, 20, 0.5, 1.0) for s in range(20)] == [False] * 10 + [True] * 10
    assert sum(guidance_active(s, 30, 0.0, 0.5) for s in range(30)) == 16


def _residuals(hook, sd1):
    from pipelines.denoiser import ControlContext

    torch.manual_seed(1)
    ctx = ControlContext(torch.randn(4, 4, 8, 8), torch.full((4,), 500.0), None,
                         Cond(torch.randn(4, 77, sd1.unet.config.cross_attention_dim),
                              uncond_rows=torch.tensor([False, False, True, True])), 0, 20)
    out = hook(ctx)
    return out["down_block_additional_residuals"] + [out["mid_block_additional_residual"]]


def test_control_modes_scale_as_the_extension(registry, sd1):
    balanced = _residuals(_hook(registry, sd1, weight=0.8), sd1)
    prompt = _residuals(_hook(registry, sd1, weight=0.8, control_mode=1), sd1)
    control = _residuals(_hook(registry, sd1, weight=0.8, control_mode=2), sd1)
    n = len(balanced)
    assert n == 5  # tiny SD1: conv_in + 3 down residuals + mid
    plain = _residuals(_hook(registry, sd1, weight=1.0), sd1)
    for i in range(n):
        assert torch.allclose(balanced[i], plain[i] * 0.8, atol=1e-6)
        # "My prompt is more important": weight * 0.825 ** (12 - i) over the residuals in order
        assert torch.allclose(prompt[i], plain[i] * (0.8 * 0.825 ** (12 - i)), atol=1e-6)
        # "ControlNet is more important": the same scales, and nothing on the negative-prompt rows
        assert torch.equal(control[i][2:], torch.zeros_like(control[i][2:]))
        assert torch.allclose(control[i][:2], prompt[i][:2], atol=1e-6)
    assert control_scales(1.0, 13, True)[-1] == 1.0 and control_scales(1.0, 10, True)[-1] == 0.825 ** 3


# ---------------------------------------------------------------------------------------------------------------
# Preprocessors and control maps


def test_canny_matches_cv2():
    img = _synthetic(64, 64)
    ctx = AnnotatorContext(None)
    p = get_preprocessor("canny")
    out = run_preprocessor(p, img, 64, 100, 200, ctx)
    expected = cv2.Canny(img, 100, 200)
    assert out.shape == (64, 64, 3) and out.any()
    assert np.array_equal(out, np.stack([expected] * 3, axis=2))
    # a size that is not a multiple of 64: edge-padded to 64 x 128, detected, then cropped back
    img2 = _synthetic(48, 80)
    out2 = run_preprocessor(p, img2, 48, 60, 120, ctx)
    padded = np.pad(img2, [[0, 16], [0, 48], [0, 0]], mode="edge")
    assert np.array_equal(out2[:, :, 0], cv2.Canny(padded, 60, 120)[:48, :80])


def test_model_free_preprocessors():
    img = _synthetic(64, 64)
    ctx = AnnotatorContext(None)
    assert np.array_equal(run_preprocessor(get_preprocessor("invert"), img, 0.5, 0.5, 0.5, ctx), 255 - img)
    thr = run_preprocessor(get_preprocessor("threshold"), img, 64, 127, 0.5, ctx)
    assert np.array_equal(thr[:, :, 0], np.where(img.min(axis=2) > 127, 255, 0).astype(np.uint8))
    tile = run_preprocessor(get_preprocessor("tile_resample"), img, 512, 2.0, 0.5, ctx)
    assert tile.shape == (32, 32, 3)
    assert np.array_equal(run_preprocessor(get_preprocessor("tile_resample"), img, 512, 1.0, 0.5, ctx), img)
    blur = run_preprocessor(get_preprocessor("blur_gaussian"), img, 64, 3.0, 0.5, ctx)
    assert np.array_equal(blur, cv2.GaussianBlur(img, (0, 0), 3.0))
    color = run_preprocessor(get_preprocessor("t2ia_color_grid"), _synthetic(128, 128), 128, 0.5, 0.5, ctx)
    assert color.shape == (128, 128, 3) and len(np.unique(color.reshape(-1, 3), axis=0)) <= 4


def test_missing_annotator_weights_name_the_file(tmp_path):
    ctx = AnnotatorContext(str(tmp_path / "annotator" / "downloads"))
    expected = os.path.join(str(tmp_path / "annotator" / "downloads"), "pidinet", "table5_pidinet.pth")
    with pytest.raises(ControlNetError, match=expected.replace("\\", "\\\\")):
        run_preprocessor(get_preprocessor("softedge_pidinet"), _synthetic(), 512, 0.5, 0.5, ctx)
    reg = ControlNetRegistry([], annotator_dir=str(tmp_path / "annotator" / "downloads"))
    with pytest.raises(ControlNetError, match=os.path.join("midas", "dpt_hybrid-midas-501f0c75.pt")):
        detect("depth_midas", [_png(_synthetic())], registry=reg)


def test_pixel_perfect_and_resize_modes():
    img = np.zeros((300, 600, 3), np.uint8)
    assert pixel_perfect_resolution(img, 512, 512, INNER_FIT) == 512  # max(512/300, 512/600) * 300
    assert pixel_perfect_resolution(img, 512, 512, OUTER_FIT) == 256  # min(...) * 300
    src = np.zeros((50, 100, 3), np.uint8)
    src[:, :50] = 255  # left half white
    assert detectmap_proc(src, RESIZE, 32, 48).shape == (32, 48, 3)
    crop = detectmap_proc(src, INNER_FIT, 64, 64)  # scaled to 64 x 128, centre 64 columns: half white, half black
    assert crop.shape == (64, 64, 3) and crop[:, :30].min() == 255 and crop[:, 34:].max() == 0
    fill = detectmap_proc(src, OUTER_FIT, 64, 64)  # scaled to 32 x 64, centred; border = median edge colour
    assert fill.shape == (64, 64, 3) and np.array_equal(fill[16:48], detectmap_proc(src, RESIZE, 32, 64))


def test_mask_drawn_on_a_non_inpaint_unit_is_the_input():
    img = _synthetic()
    mask = np.zeros((64, 64), np.uint8)
    mask[10:20, 10:40] = 255
    unit = ControlNetUnit(enabled=True, module="canny", image=_png(img), mask=_png(mask))
    chosen, mode = choose_input_image(unit, 0)
    assert np.array_equal(chosen, np.stack([mask] * 3, axis=2)) and mode == 1
    plain, _ = choose_input_image(ControlNetUnit(enabled=True, image=_png(img), mask=_png(np.zeros_like(mask))), 0)
    assert np.array_equal(plain, img)
    with pytest.raises(ControlNetError, match="no input image"):
        choose_input_image(ControlNetUnit(enabled=True), 0)
    init, mode = choose_input_image(ControlNetUnit(enabled=True), 0, init_image=Image.fromarray(img), init_resize_mode=3)
    assert np.array_equal(init, img) and mode == RESIZE


def test_build_control_hooks_end_to_end(registry, sd1):
    units = parse_units({"controlnet": {"args": [
        _unit_dict(image=_b64(_synthetic(96, 64)), pixel_perfect=True),
        {"enabled": False, "module": "canny", "model": CANNY},
        _unit_dict(module="invert (from white bg & black line)", model=CANNY.upper(), weight=0.5),
    ]}})
    hooks, params, maps = build_control_hooks(units, sd1, width=64, height=72, batch_size=2, registry=registry,
                                              hr_width=128, hr_height=144)
    assert len(hooks) == 2 and list(params) == ["ControlNet 0", "ControlNet 1"]
    assert params["ControlNet 1"].startswith(f"Module: invert (from white bg & black line), Model: {CANNY.upper()}, "
                                             "Weight: 0.5,")
    assert [m.size for m in maps] == [(128, 144), (64, 72)] * 2  # hires map first, then the first pass's
    assert hooks[0].hint.shape == (1, 3, 72, 64) and hooks[0].hr_hint.shape == (1, 3, 144, 128)
    out = _denoise(sd1, hooks, size=(9, 8))
    assert not torch.allclose(out, _denoise(sd1, [], size=(9, 8)))
    hires = _denoise(sd1, hooks, size=(18, 16))  # the hires pass picks the hires map by the latent's size
    assert not torch.allclose(hires, _denoise(sd1, [], size=(18, 16)))
    with pytest.raises(ControlNetError, match="Available: control_tiny_sd15_canny"):
        build_control_hooks(parse_units({"controlnet": {"args": [_unit_dict(model="nope")]}}), sd1, width=64,
                            height=64, batch_size=1, registry=registry)


def test_detect_runs_a_preprocessor_alone(registry):
    (edges,) = detect("canny", [_png(_synthetic())], registry=registry, processor_res=64, threshold_a=100,
                      threshold_b=200)
    assert np.array_equal(np.array(edges)[:, :, 0], cv2.Canny(_synthetic(), 100, 200))
    with pytest.raises(ControlNetError, match="Module not available"):
        detect("nope", [_png(_synthetic())], registry=registry)


def test_api_handlers(registry, cn_dirs):
    """The thin handlers in the extension's shapes (called directly; the lead mounts them in routes.py)."""
    import asyncio
    from types import SimpleNamespace

    from webui.api.errors import ApiError
    from webui.api.image_input import png_bytes_decoder
    from webui.plugins.builtin.controlnet import api as h
    from webui.core.queue import JobQueue
    from webui.core.settings import Settings

    plugin = SimpleNamespace(registry=registry)
    state = SimpleNamespace(plugins=SimpleNamespace(get=lambda name: plugin), settings=Settings.load(None),
                            queue=JobQueue())
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(webui=state)))
    assert h.version().version == 3
    assert h.model_list(request).model_list == registry.model_list()
    mods = h.module_list_route(alias_names=True)
    assert mods.module_list[0] == "none" and "canny" in mods.module_detail
    assert h.settings(request).control_net_unit_count == 3
    body = h.ControlNetDetectRequest(controlnet_module="canny", controlnet_input_images=[_b64(_synthetic())],
                                     controlnet_processor_res=64)
    out = asyncio.run(h.detect(body, request))
    assert out.info == "Success" and len(out.images) == 1
    edges = np.array(Image.open(io.BytesIO(base64.b64decode(out.images[0]))))
    assert np.array_equal(edges[:, :, 0], cv2.Canny(_synthetic(), 100, 200))
    with pytest.raises(ApiError) as e:
        asyncio.run(h.detect(h.ControlNetDetectRequest(controlnet_module="nope", controlnet_input_images=["x"]),
                             request))
    assert e.value.status_code == 422 and e.value.detail == "Module not available"
    with pytest.raises(ApiError, match="No image selected"):
        asyncio.run(h.detect(h.ControlNetDetectRequest(controlnet_module="canny"), request))
    decode = png_bytes_decoder(state.settings.get)
    (unit,) = parse_units({"controlnet": {"args": [_unit_dict()]}}, decode_image=decode)
    assert np.array_equal(np.array(Image.open(io.BytesIO(unit.image))), _synthetic())
    state.queue.stop()


@pytest.mark.filterwarnings("ignore::UserWarning")  # controlnet_aux's package import re-registers timm models
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_network_preprocessors_read_the_extensions_annotator_layout(tmp_path):
    """softedge_hed and lineart_realistic with random weights at annotator/downloads/<folder>/<file>: run on the
    extension's padded image through controlnet_aux, padding removed, lineart inverted as the extension does."""
    from controlnet_aux.hed import ControlNetHED_Apache2
    from controlnet_aux.lineart import Generator

    downloads = tmp_path / "annotator" / "downloads"
    (downloads / "hed").mkdir(parents=True)
    (downloads / "lineart").mkdir(parents=True)
    torch.manual_seed(0)
    hed_net = ControlNetHED_Apache2().eval()
    torch.save(hed_net.state_dict(), downloads / "hed" / "ControlNetHED.pth")
    line_net = Generator(3, 1, 3).eval()
    torch.save(line_net.state_dict(), downloads / "lineart" / "sk_model.pth")
    torch.save(Generator(3, 1, 3).state_dict(), downloads / "lineart" / "sk_model2.pth")
    ctx = AnnotatorContext(str(downloads))
    img = _synthetic(48, 80)
    padded = np.pad(img, [[0, 16], [0, 48], [0, 0]], mode="edge")
    hed = run_preprocessor(get_preprocessor("softedge_hed"), img, 48, 0.5, 0.5, ctx)
    with torch.no_grad():
        edges = [e[0, 0].numpy() for e in hed_net(torch.from_numpy(padded).float().permute(2, 0, 1)[None])]
    edges = np.stack([cv2.resize(e, (128, 64), interpolation=cv2.INTER_LINEAR) for e in edges], axis=2)
    expected = ((1 / (1 + np.exp(-np.mean(edges, axis=2).astype(np.float64)))) * 255.0).clip(0, 255).astype(np.uint8)
    assert hed.shape == (48, 80, 3) and np.array_equal(hed[:, :, 0], expected[:48, :80])
    line = run_preprocessor(get_preprocessor("lineart_realistic"), img, 48, 0.5, 0.5, ctx)
    with torch.no_grad():
        raw = line_net(torch.from_numpy(padded).float().permute(2, 0, 1)[None] / 255.0)[0][0].numpy()
    raw = (raw * 255.0).clip(0, 255).astype(np.uint8)
    assert line.shape == (48, 80, 3) and np.array_equal(line[:, :, 0], (255 - raw)[:48, :80])
    assert "hed" in ctx.detectors and "lineart" in ctx.detectors  # built once, kept by the registry's context
