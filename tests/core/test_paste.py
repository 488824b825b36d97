"""webui.core.io.paste: the one infotext paste table, read by the UI's paste button and the API's ``infotext``."""

from webui.api.models import StableDiffusionImg2ImgProcessingAPI, StableDiffusionTxt2ImgProcessingAPI, apply_infotext
from webui.core.io import paste
from webui.core.io.infotext import parse_generation_parameters
from webui.ui.tabs import img2img, txt2img

HIRES = ("a house\nNegative prompt: ugly\nSteps: 12, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 4, "
         "Seed: 99, Size: 64x48, Batch size: 2, Denoising strength: 0.4, Hires upscale: 2, Hires upscaler: Latent, "
         "Hires steps: 3, Variation seed: 5, Variation seed strength: 0.1, Clip skip: 2")
IMG2IMG = "p\nSteps: 5, Sampler: Euler, Seed: 1, Size: 64x64, Denoising strength: 0.3, Mask blur: 8"


def test_ui_tabs_and_api_read_the_same_table():
    assert txt2img.PASTE_FIELDS is paste.TXT2IMG_FIELDS
    assert img2img.PASTE_FIELDS is paste.IMG2IMG_FIELDS
    names = [f.name for f in paste.TXT2IMG_FIELDS]
    assert len(names) == len(set(names))


def _ui(text, fields):
    return paste.paste_values(parse_generation_parameters(text), fields)


def _api(text, model=StableDiffusionTxt2ImgProcessingAPI, **explicit):
    return apply_infotext(model(infotext=text, **explicit))


def test_hires_infotext_enables_hires_fix_on_both_sides():
    ui = _ui(HIRES, txt2img.PASTE_FIELDS)
    body = _api(HIRES)
    assert ui["enable_hr"] is True and body.enable_hr is True
    for name in ("prompt", "negative_prompt", "steps", "sampler_name", "scheduler", "cfg_scale", "seed", "width",
                 "height", "batch_size", "denoising_strength", "hr_scale", "hr_upscaler", "hr_second_pass_steps",
                 "subseed", "subseed_strength"):
        assert getattr(body, name) == ui[name], name
    # A1111's get_scheduler_from_infotext: Karras is DPM++ 2M's own default, so it reads as Automatic
    assert (body.sampler_name, body.scheduler, body.batch_size, body.hr_scale) == ("DPM++ 2M", "Automatic", 2, 2.0)
    assert body.override_settings["CLIP_stop_at_last_layers"] == "2"  # settings it names join override_settings


def test_enable_hr_follows_a1111s_rule_on_both_sides():
    # A1111's lambda: a denoising strength and any Hires key -- and its parser always adds "Hires resize-1: 0", so
    # an img2img infotext pasted into txt2img turns Hires. fix on, in the UI and through the API alike
    assert _ui(IMG2IMG, txt2img.PASTE_FIELDS)["enable_hr"] is True and _api(IMG2IMG).enable_hr is True
    plain = "x\nSteps: 3, Sampler: Euler, Seed: 1"
    assert _ui(plain, txt2img.PASTE_FIELDS)["enable_hr"] is False and _api(plain).enable_hr is False
    # explicit JSON wins over the infotext
    assert _api(HIRES, enable_hr=False).enable_hr is False


def test_api_takes_only_api_fields_and_explicit_json_wins():
    body = _api(HIRES, prompt="a cat", seed=7)
    assert (body.prompt, body.seed, body.negative_prompt) == ("a cat", 7, "ugly")
    text = IMG2IMG + ", Inpaint area: Only masked, Masked area padding: 24, Image CFG scale: 1.2"
    ui = _ui(text, img2img.PASTE_FIELDS)
    assert ui["inpaint_full_res"] == "Only masked" and ui["inpaint_full_res_padding"] == 24
    i2i = _api(text, StableDiffusionImg2ImgProcessingAPI)
    assert i2i.mask_blur == 8 and i2i.image_cfg_scale == 1.2 and i2i.denoising_strength == 0.3
    # UI radio labels are not the API's values: the API leaves those fields at their defaults
    default = StableDiffusionImg2ImgProcessingAPI()
    assert (i2i.inpaint_full_res, i2i.inpaint_full_res_padding) == (default.inpaint_full_res,
                                                                    default.inpaint_full_res_padding)
    assert "enable_hr" not in StableDiffusionImg2ImgProcessingAPI.model_fields


def test_paste_values_conversions_skip_bad_values():
    fields = [paste.PasteField("steps", "Steps", int), paste.PasteField("styles", lambda d: d.get("S"), list),
              paste.PasteField("flag", "F", bool)]
    assert paste.paste_values({"Steps": "many", "S": "not a list", "F": "False"}, fields) == {"flag": False}
    assert paste.paste_values({"Steps": "12.0", "S": ("a",), "F": "1"}, fields) == {
        "steps": 12, "styles": ["a"], "flag": True}


# -- the UI's "Override settings" (A1111 get_override_settings / create_override_settings_dict) ---------------------


def test_override_settings_pairs_from_a_pasted_infotext():
    from webui.core.io.paste import TXT2IMG_FIELDS, override_settings_dict, override_settings_pairs

    params = parse_generation_parameters(
        "a cat\nSteps: 7, Sampler: Euler, Seed: 1, Size: 64x64, Clip skip: 2, ENSD: 31337, RNG: CPU, "
        "Eta: 0.5, VAE: none.pt, Model hash: 0123456789, Emphasis: Original")
    from webui.core.settings import OPTIONS_BY_KEY

    stored = {"sd_model_checkpoint": "a.safetensors [abc]", "emphasis": "Original"}

    def current(key):
        return stored.get(key, OPTIONS_BY_KEY[key].default)

    pairs = override_settings_pairs(params, TXT2IMG_FIELDS, current)
    # settings without a control, in the table's order; Emphasis equals the current value; no checkpoint while
    # disable_weights_auto_swap is on (A1111's default); Steps/Seed have controls
    assert pairs == ["Clip skip: 2", "ENSD: 31337", "Eta: 0.5", "RNG: CPU", "VAE: none.pt"]
    assert override_settings_pairs(params, TXT2IMG_FIELDS, current, disable_weights_auto_swap=False)[-1] == \
        "Model hash: 0123456789"
    # and back to the request's override_settings, typed as the options are
    assert override_settings_dict([*pairs, "Model hash: 0123456789", "Nonsense: 3", "Eta DDIM: x"]) == {
        "CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337, "randn_source": "CPU", "eta_ancestral": 0.5,
        "sd_vae": "none.pt", "sd_model_checkpoint": "0123456789"}
    # a value that does not fit the option is not offered
    assert override_settings_pairs({"Clip skip": "lots"}, TXT2IMG_FIELDS, current) == []
