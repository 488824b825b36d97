"""Issue 04 through Engine.generate on tiny checkpoints (real loader): img2img resize modes and denoising strength,
inpainting (overlay, only-masked, 9-channel models), hires fix (latent modes and a pixel upscaler), the refiner
switch, grids, determinism, infotext round trips and bad input."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from webui.config import parse
from webui.core.models.demo_model import write_tiny_checkpoint
from webui.core.generation.engine import GenerationError
from webui.core.io.infotext import parse_generation_parameters
from webui.core.types import GenerationRequest, HiresOptions, InpaintOptions, RefinerOptions
from webui.state import build_state


@pytest.fixture(scope="module")
def extra_ckpts(tmp_path_factory):
    """A second SD1 model (refiner / hires checkpoint) and a 9-channel inpainting model, in a --ckpt-dir folder."""
    d = tmp_path_factory.mktemp("extra-ckpts")
    write_tiny_checkpoint(str(d / "tiny-sd15-other.safetensors"), "SD1", seed=11)
    write_tiny_checkpoint(str(d / "tiny-sd15-inpainting.safetensors"), "SD1", seed=12, in_channels=9)
    write_tiny_checkpoint(str(d / "tiny-ip2p.safetensors"), "SD1", seed=13, in_channels=8)
    write_tiny_checkpoint(str(d / "tiny-sdxl-refiner.safetensors"), "SDXL-refiner", seed=14)
    return d


@pytest.fixture
def state(data_dir, extra_ckpts):
    return build_state(parse(["--nowebui", "--data-dir", str(data_dir), "--ckpt-dir", str(extra_ckpts)]),
                       create_demo=False)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _init_image(w=77, h=53, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.zeros((h, w, 3), dtype=np.uint8)
    base[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    base[..., 1] = np.linspace(255, 0, h, dtype=np.uint8)[:, None]
    base[..., 2] = rng.integers(0, 255, (h, w), dtype=np.uint8)
    return Image.fromarray(base)


def _gen(state, **kw):
    base = dict(prompt="a cat", steps=4, width=64, height=48, seed=123, sampler_name="Euler",
                checkpoint="tiny-sd15.safetensors")
    base.update(kw)
    return state.engine.generate(GenerationRequest(**base))


def _img2img(state, image=None, **kw):
    image = image if image is not None else _init_image()
    kw.setdefault("denoising_strength", 0.5)
    return _gen(state, mode="img2img", init_images=(_png(image),), **kw)


def _arr(im) -> np.ndarray:
    return np.asarray(im.convert("RGB")).astype(int)


@pytest.mark.parametrize("resize_mode", [0, 1, 2, 3])
def test_every_resize_mode_gives_the_requested_size(state, resize_mode):
    res = _img2img(state, resize_mode=resize_mode)
    assert res.images[0].size == (64, 48)
    params = parse_generation_parameters(res.infotexts[0])
    assert params["Denoising strength"] == "0.5" and params["Size-1"] == "64"


def test_img2img_is_deterministic_and_seeds_differ(state):
    a, b, c = _img2img(state), _img2img(state), _img2img(state, seed=124)
    assert _arr(a.images[0]).tobytes() == _arr(b.images[0]).tobytes()
    assert _arr(a.images[0]).tobytes() != _arr(c.images[0]).tobytes()


def test_denoising_strength_extremes(state):
    from pipelines.a1111 import A1111Pipeline

    comp = state.engine.load(state.registry.resolve("tiny-sd15"))
    pipe = A1111Pipeline(comp)
    init = _init_image(64, 48)
    t = torch.from_numpy(np.moveaxis(np.asarray(init).astype(np.float32) / 255.0, 2, 0))[None]
    roundtrip = _arr(pipe.decode(pipe.encode(t, torch.Generator().manual_seed(123)))[0])
    low = _arr(_img2img(state, init, denoising_strength=0.0).images[0])
    high = _arr(_img2img(state, init, denoising_strength=1.0).images[0])
    # strength 0 stays at the init latent (one step at the smallest sigma); strength 1 starts from noise
    assert np.abs(low - roundtrip).mean() < np.abs(high - roundtrip).mean()
    other = _arr(_img2img(state, _init_image(64, 48, seed=5).rotate(90, expand=False), denoising_strength=1.0).images[0])
    other_low = _arr(_img2img(state, _init_image(64, 48, seed=5).rotate(90, expand=False),
                              denoising_strength=0.0).images[0])
    # at strength 1 the init image hardly matters; at 0 it is everything
    assert np.abs(high - other).mean() < np.abs(low - other_low).mean()


def test_img2img_steps_follow_a1111_rule(state):
    calls = []
    comp = state.engine.load(state.registry.resolve("tiny-sd15"))
    handle = comp.unet.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        _img2img(state, steps=10, denoising_strength=0.5)  # int(10 * 0.5) = 5 steps of a 10-step schedule
        assert len(calls) == 6  # t_enc + 1 sampler steps with Euler: one batched cond/uncond call each
    finally:
        handle.remove()


def _mask(size, box) -> Image.Image:
    m = Image.new("L", size, 0)
    ImageDraw.Draw(m).rectangle(box, fill=255)
    return m


def test_inpaint_keeps_the_image_outside_the_mask(state):
    init = _init_image(64, 48)
    mask = _mask((64, 48), (16, 12, 40, 30))
    res = _img2img(state, init, denoising_strength=0.75, inpaint=InpaintOptions(
        mask=_png(mask), mask_blur_x=0, mask_blur_y=0, inpaint_full_res=False, inpainting_fill=1))
    out, src = _arr(res.images[0]), _arr(init)
    outside = np.asarray(mask) == 0
    assert np.array_equal(out[outside], src[outside])  # pasted back exactly where nothing was masked
    assert not np.array_equal(out[~outside], src[~outside])


@pytest.mark.parametrize("fill", [0, 2, 3])
def test_inpaint_fill_modes_run_and_differ(state, fill):
    init = _init_image(64, 48)
    mask = _mask((64, 48), (16, 12, 40, 30))
    common = dict(mask=_png(mask), mask_blur_x=4, mask_blur_y=4, inpaint_full_res=False)
    a = _img2img(state, init, inpaint=InpaintOptions(inpainting_fill=fill, **common))
    b = _img2img(state, init, inpaint=InpaintOptions(inpainting_fill=1, **common))
    assert a.images[0].size == (64, 48)
    assert _arr(a.images[0]).tobytes() != _arr(b.images[0]).tobytes()


def test_only_masked_on_a_small_mask_in_a_large_image(state):
    init = _init_image(256, 200)
    mask = _mask((256, 200), (100, 90, 115, 104))
    res = _img2img(state, init, width=64, height=64, inpaint=InpaintOptions(
        mask=_png(mask), mask_blur_x=0, mask_blur_y=0, inpaint_full_res=True, inpaint_full_res_padding=8))
    out, src = _arr(res.images[0]), _arr(init)
    assert res.images[0].size == (256, 200)  # the whole picture comes back, the crop pasted into it
    far = np.ones((200, 256), dtype=bool)
    far[70:125, 80:135] = False
    assert np.array_equal(out[far], src[far])
    assert not np.array_equal(out[95:100, 105:110], src[95:100, 105:110])


def test_inpainting_checkpoint_uses_masked_image_conditioning(state):
    init = _init_image(64, 48)
    mask = _mask((64, 48), (16, 12, 40, 30))
    res = _img2img(state, init, checkpoint="tiny-sd15-inpainting", inpaint=InpaintOptions(
        mask=_png(mask), inpaint_full_res=False))
    assert res.info["is_using_inpainting_conditioning"] is True
    assert "Conditional mask weight: 1.0" in res.infotexts[0]
    txt = _gen(state, checkpoint="tiny-sd15-inpainting")  # txt2img on an inpainting model: fully masked grey
    assert txt.images[0].size == (64, 48)


def test_batch_count_and_size_with_one_init_image(state):
    res = _img2img(state, batch_size=2, n_iter=2, seed=50)
    assert res.seeds == [50, 51, 52, 53]
    assert res.info["index_of_first_image"] == 1 and len(res.images) == 5  # the grid comes first (return_grid)
    assert res.images[0].size == (128, 96)
    assert len({_arr(im).tobytes() for im in res.images[1:]}) == 4


def test_several_init_images_set_the_batch(state):
    imgs = (_png(_init_image(seed=1)), _png(_init_image(seed=2)))
    res = _gen(state, mode="img2img", init_images=imgs, denoising_strength=0.5, batch_size=4)
    assert res.info["batch_size"] == 2 and res.info["all_seeds"] == [123, 124]


@pytest.mark.parametrize("upscaler", ["Latent", "Latent (antialiased)", "Latent (bicubic)",
                                      "Latent (bicubic antialiased)", "Latent (nearest)", "Latent (nearest-exact)",
                                      "Lanczos"])
def test_hires_fix_produces_the_scaled_size(state, upscaler):
    res = _gen(state, width=32, height=24, steps=2, denoising_strength=0.6,
               hires=HiresOptions(scale=2.0, upscaler=upscaler, second_pass_steps=2))
    assert res.images[0].size == (64, 48)
    params = parse_generation_parameters(res.infotexts[0])
    assert params["Size-1"] == "32" and params["Size-2"] == "24"  # the infotext keeps the first-pass size
    assert params["Hires upscale"] == "2.0" and params["Hires upscaler"] == upscaler
    assert params["Hires steps"] == "2" and params["Denoising strength"] == "0.6"


def test_hires_resize_to_and_errors(state):
    res = _gen(state, width=32, height=24, steps=2, denoising_strength=0.6,
               hires=HiresOptions(resize_x=64, resize_y=0, upscaler="Latent"))
    assert res.images[0].size == (64, 48)  # one zero keeps the aspect ratio
    assert "Hires resize: 64x0" in res.infotexts[0]
    with pytest.raises(GenerationError, match="denoising_strength"):
        _gen(state, width=32, height=24, hires=HiresOptions())
    with pytest.raises(GenerationError, match="hr_upscaler"):
        _gen(state, width=32, height=24, denoising_strength=0.5, hires=HiresOptions(upscaler="NoSuchUpscaler"))


def test_refiner_switches_model_at_the_right_step(state):
    from pipelines.schedules import ModelSigmas

    base = state.engine.load(state.registry.resolve("tiny-sd15"))
    counts = {"base": 0, "refiner": 0}
    other = state.engine.load(state.registry.resolve("tiny-sd15-other"), extra_slots=1)
    hooks = [base.unet.register_forward_pre_hook(lambda m, a: counts.__setitem__("base", counts["base"] + 1)),
             other.unet.register_forward_pre_hook(lambda m, a: counts.__setitem__("refiner", counts["refiner"] + 1))]
    try:
        res = _gen(state, steps=10, refiner=RefinerOptions(checkpoint="tiny-sd15-other", switch_at=0.5))
    finally:
        for h in hooks:
            h.remove()
    # A1111's rule: switch at the first step whose sigma maps to a timestep t with (999 - t) / 1000 >= 0.5
    from webui.core.generation.sampling_plan import plan_sampling

    ms = ModelSigmas(base.alphas_cumprod)
    plan = plan_sampling("Euler", "Automatic", 10, ms, state.settings)
    sigmas = plan.run.sigmas[:-1]
    ratios = [(999 - int(torch.argmin(torch.abs(ms.sigmas - s)))) / 1000 for s in sigmas]
    expected_base = next(i for i, r in enumerate(ratios) if r >= 0.5)
    assert counts == {"base": expected_base, "refiner": 10 - expected_base}
    params = parse_generation_parameters(res.infotexts[0])
    assert params["Refiner"].startswith("tiny-sd15-other [") and params["Refiner switch at"] == "0.5"


def test_bad_img2img_input_is_a_clear_error(state):
    with pytest.raises(GenerationError, match="init_images"):
        _gen(state, mode="img2img", init_images=(b"not an image",), denoising_strength=0.5)
    with pytest.raises(GenerationError, match="init_images"):
        _gen(state, mode="img2img", init_images=(), denoising_strength=0.5)
    with pytest.raises(GenerationError, match="denoising_strength"):
        _img2img(state, denoising_strength=1.5)
    with pytest.raises(GenerationError, match="refiner_checkpoint"):
        _gen(state, refiner=RefinerOptions(checkpoint="no-such-model", switch_at=0.8))
    # a mask of another size is resized to the image, as A1111's UI sends them matched
    res = _img2img(state, inpaint=InpaintOptions(mask=_png(_mask((20, 10), (5, 2, 12, 8))), inpaint_full_res=False))
    assert res.images[0].size == (64, 48)


def test_instruct_pix2pix_image_cfg_scale(state):
    """An 8-channel (instruct-pix2pix) model gets the init image's latent as extra input; Image CFG scale != 1 runs
    A1111's three-way guidance and is written to the infotext."""
    calls = []
    comp = state.engine.load(state.registry.resolve("tiny-ip2p"), extra_slots=1)
    handle = comp.unet.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape))
    try:
        plain = _img2img(state, checkpoint="tiny-ip2p", image_cfg_scale=1.0, steps=2)
        edit = _img2img(state, checkpoint="tiny-ip2p", image_cfg_scale=1.5, steps=2)
    finally:
        handle.remove()
    assert calls[0][:2] == (2, 8) and calls[-1][:2] == (3, 8)  # cond+uncond, then cond/image/uncond
    assert "Image CFG scale: 1.5" in edit.infotexts[0]
    assert _arr(plain.images[0]).tobytes() != _arr(edit.images[0]).tobytes()


def test_sdxl_base_to_sdxl_refiner(state):
    """SDXL base -> SDXL refiner: the refiner's own text encoder and aesthetic-score conditioning take over on the
    same latents; also in the hires pass when option hires_fix_refiner_pass says so."""
    res = _gen(state, checkpoint="tiny-sdxl", width=64, height=64, steps=4,
               refiner=RefinerOptions(checkpoint="tiny-sdxl-refiner", switch_at=0.5))
    assert res.images[0].size == (64, 64)
    params = parse_generation_parameters(res.infotexts[0])
    assert params["Refiner"].startswith("tiny-sdxl-refiner [") and params["Model"] == "tiny-sdxl"
    hr = _gen(state, checkpoint="tiny-sdxl", width=32, height=32, steps=2, denoising_strength=0.5,
              hires=HiresOptions(scale=2, upscaler="Latent"),
              refiner=RefinerOptions(checkpoint="tiny-sdxl-refiner", switch_at=0.5),
              override_settings={"hires_fix_refiner_pass": "second pass"})
    assert hr.images[0].size == (64, 64) and "Refiner: tiny-sdxl-refiner" in hr.infotexts[0]


def test_inpaint_infotext_and_blank_mask(state):
    init = _init_image(64, 48)
    res = _img2img(state, init, inpaint=InpaintOptions(mask=_png(_mask((64, 48), (10, 10, 30, 30))), mask_blur_x=4,
                                                      mask_blur_y=4, inpaint_full_res=True, inpainting_fill=0))
    params = parse_generation_parameters(res.infotexts[0])
    assert (params["Mask blur"], params["Inpaint area"], params["Masked content"]) == ("4", "Only masked", "fill")
    # a blank mask: A1111 runs plain img2img and says so
    blank = _img2img(state, init, inpaint=InpaintOptions(mask=_png(Image.new("L", (64, 48), 0))))
    assert blank.images[0].size == (64, 48) and blank.info["comments"]


def test_init_image_is_encoded_with_the_requests_vae(state, monkeypatch):
    """A1111 loads the selected VAE (and sets tiling) before processing: the init image's encode already uses the
    request's sd_vae, not the checkpoint's own VAE; afterwards the checkpoint's VAE is back."""
    from tests.fixtures import embeddings as fx
    from webui.core.generation import img2img

    vae, cfg = fx.tiny_vae(seed=5)
    os.makedirs(state.config.vae_models_dir, exist_ok=True)
    fx.write_vae_file(os.path.join(state.config.vae_models_dir, "ext.safetensors"), vae, cfg)
    state.vae_registry.refresh()
    comp = state.engine.load(state.registry.resolve("tiny-sd15.safetensors"))
    own = comp.vae
    seen = []
    real = img2img.prepare_img2img

    def spy(p):
        seen.append(p.sd_model.vae)
        return real(p)

    monkeypatch.setattr(img2img, "prepare_img2img", spy)
    res = _gen(state, mode="img2img", init_images=(_png(_init_image()),), denoising_strength=0.5,
               override_settings={"sd_vae": "ext.safetensors"})
    assert seen and seen[0] is not own and "VAE: ext" in res.infotexts[0]
    assert comp.vae is own
