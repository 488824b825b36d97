"""A1111 infotext: building (processing.create_infotext) and parsing (infotext_utils.parse_generation_parameters)."""

from __future__ import annotations

import pytest

from webui.core.io.infotext import (
    INFOTEXT_ORDER,
    build_infotext,
    ordered_params,
    parse_generation_parameters,
    parse_version,
    quote,
    split_sampler_schedule,
    unquote,
)

SPEC_EXAMPLE = (
    "a cat\nSteps: 20, Sampler: Euler, Schedule type: Automatic, CFG scale: 7.0, Seed: 123, Size: 512x512, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1"
)

# Every default parse_generation_parameters inserts, with A1111's types.
DEFAULTS = {
    "Clip skip": "1",
    "Hires resize-1": 0,
    "Hires resize-2": 0,
    "Hires sampler": "Use same sampler",
    "Hires schedule type": "Use same scheduler",
    "Hires checkpoint": "Use same checkpoint",
    "Hires prompt": "",
    "Hires negative prompt": "",
    "Mask mode": "Inpaint masked",
    "Masked content": "original",
    "Inpaint area": "Whole picture",
    "Masked area padding": 32,
    "RNG": "GPU",
    "Schedule type": "Automatic",
    "Schedule max sigma": 0,
    "Schedule min sigma": 0,
    "Schedule rho": 0,
    "VAE Encoder": "Full",
    "VAE Decoder": "Full",
    "FP8 weight": "Disable",
    "Refiner switch by sampling steps": False,
}


def default_core(**over):
    core = {
        "Steps": 20,
        "Sampler": "Euler",
        "Schedule type": "Automatic",
        "CFG scale": 7.0,
        "Image CFG scale": None,
        "Seed": 123,
        "Face restoration": None,
        "Size": "512x512",
        "Model hash": "6ce0161689",
        "Model": "v1-5-pruned-emaonly",
        "Clip skip": None,
        "RNG": None,
        "Tiling": None,
    }
    core.update(over)
    return core


# --- quote / unquote ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("plain", "plain"),
        ("a, b", '"a, b"'),
        ("k: v", '"k: v"'),
        ("two\nlines", '"two\\nlines"'),
        ('say "hi", ok', '"say \\"hi\\", ok"'),
        ("ünï, cødé", '"ünï, cødé"'),  # ensure_ascii=False
        (7.0, 7.0),
        (20, 20),
    ],
)
def test_quote(value, expected):
    assert quote(value) == expected


@pytest.mark.parametrize("text", ["a, b", "k: v", "two\nlines", 'say "hi", ok', "ünï, cødé"])
def test_unquote_reverses_quote(text):
    assert unquote(quote(text)) == text


def test_unquote_leaves_unquoted_and_broken_text():
    assert unquote("plain") == "plain"
    assert unquote("") == ""
    assert unquote('"not json') == '"not json'
    assert unquote('"bad \\q"') == '"bad \\q"'


# --- building ----------------------------------------------------------------------------------------------------


def test_spec_example_byte_for_byte():
    params = ordered_params(default_core(), {}, version="v1.10.1", user=None)
    assert build_infotext("a cat", "", params) == SPEC_EXAMPLE


def test_ordered_params_lays_core_in_a1111_order_whatever_the_input_order():
    core = {"Seed": 1, "Tiling": "True", "Steps": 5, "Size": "64x64", "Sampler": "Euler a", "CFG scale": 7.0}
    params = ordered_params(core, {"Lora hashes": "x: 1"}, version="v1.10.1", user="me")
    assert list(params) == ["Steps", "Sampler", "CFG scale", "Seed", "Size", "Tiling", "Lora hashes", "Version", "User"]
    assert [k for k in INFOTEXT_ORDER if k in core] == list(params)[:6]


def test_ordered_params_extra_updates_existing_key_in_place_and_appends_new_ones():
    params = ordered_params(
        default_core(),
        {"Denoising strength": 0.5, "Schedule type": "Karras", "Hires upscale": 2.0},
        version=None,
        user=None,
    )
    keys = list(params)
    assert keys.index("Schedule type") == 2
    assert params["Schedule type"] == "Karras"
    assert keys[-4:] == ["Denoising strength", "Hires upscale", "Version", "User"]
    text = build_infotext("p", "", params)
    assert "Schedule type: Karras" in text
    assert text.endswith("Denoising strength: 0.5, Hires upscale: 2.0")


def test_ordered_params_rejects_unknown_core_key_listing_valid_ones():
    with pytest.raises(ValueError, match="Steps"):
        ordered_params({"Stepz": 20}, {}, None, None)


def test_build_leaves_out_none_writes_key_only_when_value_equals_key_and_formats_with_str():
    params = {"Steps": 20, "CFG scale": 7.0, "Seed": None, "Tiling": "True", "Flag": "Flag", "Ok": True, "F": 0.25}
    text = build_infotext("a", None, params)
    assert text == "a\nSteps: 20, CFG scale: 7.0, Tiling: True, Flag, Ok: True, F: 0.25"


def test_build_quotes_values_with_commas_colons_newlines():
    params = {"Steps": 20, "Lora hashes": "a: 123, b: 456", "Hires prompt": "x\ny", "Model": "m"}
    text = build_infotext("p", "", params)
    assert text == 'p\nSteps: 20, Lora hashes: "a: 123, b: 456", Hires prompt: "x\\ny", Model: m'


def test_build_negative_prompt_and_strip():
    assert build_infotext("a", "b", {"Steps": 1}) == "a\nNegative prompt: b\nSteps: 1"
    assert build_infotext("", "", {"Steps": 1}) == "Steps: 1"
    assert build_infotext("  a", "", {}) == "a"


# --- parsing -----------------------------------------------------------------------------------------------------


def test_parse_spec_example_exact_dict():
    res = parse_generation_parameters(SPEC_EXAMPLE)
    expected = {
        "Steps": "20",
        "Sampler": "Euler",
        "Schedule type": "Automatic",
        "CFG scale": "7.0",
        "Seed": "123",
        "Size-1": "512",
        "Size-2": "512",
        "Model hash": "6ce0161689",
        "Model": "v1-5-pruned-emaonly",
        "Version": "v1.10.1",
        "Prompt": "a cat",
        "Negative prompt": "",
        **DEFAULTS,
    }
    assert res == expected
    assert list(res)[:10] == ["Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size-1", "Size-2",
                              "Model hash", "Model", "Version"]


def test_round_trip_with_quoted_values_multiline_prompts_and_negative():
    prompt = "a cat,\n(sitting:1.2) on a mat"
    negative = "blurry,\nlow quality"
    extra = {"Lora hashes": "cat: abc123, mat: def456", "Hires prompt": "line1\nline2: x", "Denoising strength": 0.7}
    core = default_core(**{"Seed resize from": "256x320", "Clip skip": 2, "RNG": "CPU"})
    params = ordered_params(core, extra, version="v1.10.1", user=None)
    text = build_infotext(prompt, negative, params)
    res = parse_generation_parameters(text)

    assert res["Prompt"] == prompt
    assert res["Negative prompt"] == negative
    assert res["Lora hashes"] == "cat: abc123, mat: def456"
    assert res["Hires prompt"] == "line1\nline2: x"
    assert res["Denoising strength"] == "0.7"
    assert (res["Size-1"], res["Size-2"]) == ("512", "512")
    assert (res["Seed resize from-1"], res["Seed resize from-2"]) == ("256", "320")
    assert res["Clip skip"] == "2"
    assert res["RNG"] == "CPU"
    assert res["CFG scale"] == "7.0"
    assert res["Emphasis"] == "Original"  # the prompt uses (x:1.2)
    for k, v in params.items():
        if v is not None and k not in ("Size", "Seed resize from"):
            assert res[k] == (v if isinstance(v, str) else str(v)), k


def test_parse_last_line_needs_three_params_else_it_is_prompt():
    res = parse_generation_parameters("first line\nSteps: 20, Seed: 1")
    assert res["Prompt"] == "first line\nSteps: 20, Seed: 1"
    assert "Steps" not in res

    res = parse_generation_parameters("a\nNegative prompt: b\nc\nSteps: 20, Seed: 1, Sampler: Euler")
    assert res["Prompt"] == "a"
    assert res["Negative prompt"] == "b\nc"
    assert res["Steps"] == "20"


def test_parse_strips_lines_and_whole_text():
    res = parse_generation_parameters("  \n  a  \n  Negative prompt:   b  \nSteps: 1, Seed: 2, Sampler: Euler\n\n")
    assert res["Prompt"] == "a"
    assert res["Negative prompt"] == "b"


def test_parse_empty_text_and_no_metadata_is_never_empty():
    res = parse_generation_parameters("")
    assert res == {"Prompt": "", "Negative prompt": "", **DEFAULTS}


def test_parse_bare_key_and_empty_value():
    # A bare key (value == key) has no colon, so re_param skips it; an empty value makes A1111 skip the pair.
    res = parse_generation_parameters("p\nSteps: 20, Tiling, Seed: 5, Hires prompt: , Sampler: Euler")
    assert res["Steps"] == "20" and res["Seed"] == "5" and res["Sampler"] == "Euler"
    assert "Tiling" not in res
    assert res["Hires prompt"] == ""  # the default


def test_parse_sampler_with_schedule_suffix_is_kept_as_written():
    res = parse_generation_parameters("p\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1")
    assert res["Sampler"] == "DPM++ 2M Karras"
    assert res["Schedule type"] == "Automatic"


def test_parse_fp8_adds_cache_flag_and_hypernet_goes_into_prompt():
    res = parse_generation_parameters("p\nSteps: 1, Seed: 1, FP8 weight: Enable for SDXL, Hypernet: hn")
    assert res["Cache FP16 weight for LoRA"] is False
    assert res["Prompt"] == "p<hypernet:hn:1.0>"


def test_parse_old_first_pass_size():
    res = parse_generation_parameters("p\nSteps: 1, Size: 1024x768, First pass size: 0x0, Seed: 1")
    assert (res["Size-1"], res["Size-2"]) == (640, 448)
    assert (res["Hires resize-1"], res["Hires resize-2"]) == (1024, 768)


def test_parse_backcompat_by_version():
    text = "a [b:c:5]\nSteps: 1, Sampler: DDIM, Seed: 1, Refiner: r, Version: v1.5.2"
    res = parse_generation_parameters(text)
    assert res["Old prompt editing timelines"] is True
    assert res["Pad conds v0"] is True
    assert res["Downcast alphas_cumprod"] is True
    assert res["Refiner switch by sampling steps"] is True

    res = parse_generation_parameters(SPEC_EXAMPLE)
    assert "Downcast alphas_cumprod" not in res
    res = parse_generation_parameters(text, auto_backcompat=False)
    assert "Pad conds v0" not in res


def test_parse_version():
    assert parse_version(None) is None
    assert parse_version("garbage!") is None
    assert parse_version("v1.7.0-225-g12345") == parse_version("v1.7.0-225")
    assert parse_version("v1.10.1") > parse_version("1.8.0-139")


def test_parse_emphasis_only_when_weights_used():
    assert "Emphasis" not in parse_generation_parameters("a \\(b\\) BREAK c\nSteps: 1, Seed: 1, Sampler: Euler")
    assert parse_generation_parameters("a [b]\nSteps: 1, Seed: 1, Sampler: Euler")["Emphasis"] == "Original"
    assert parse_generation_parameters("a\nSteps: 1, Seed: 1, Emphasis: None")["Emphasis"] == "None"


def test_parse_skip_fields():
    res = parse_generation_parameters(SPEC_EXAMPLE, skip_fields=["Seed", "Clip skip", "Missing"])
    assert "Seed" not in res and "Clip skip" not in res


def test_parse_styles_extraction():
    def extract(prompt, negative):
        if prompt.endswith(", style text"):
            return ["S"], prompt[: -len(", style text")], negative
        return [], prompt, negative

    text = "a cat, style text\nSteps: 1, Seed: 1, Sampler: Euler"
    res = parse_generation_parameters(text, extract_styles=extract)
    assert res["Prompt"] == "a cat"
    assert res["Styles array"] == ["S"]
    assert "Styles array" not in parse_generation_parameters("a\nSteps: 1, Seed: 1, Sampler: Euler",
                                                             extract_styles=extract)
    assert parse_generation_parameters(text, extract_styles=extract, infotext_styles="Ignore")["Prompt"] == (
        "a cat, style text"
    )
    # Hires prompt with different styles: nothing removed
    text_hr = 'a cat, style text\nSteps: 1, Seed: 1, Hires prompt: "other"'
    res = parse_generation_parameters(text_hr, extract_styles=extract)
    assert res["Prompt"] == "a cat, style text" and "Styles array" not in res


def test_split_sampler_schedule_legacy_names():
    schedulers = [("Automatic", "automatic"), ("Karras", "karras"), ("Exponential", "exponential"),
                  ("SGM Uniform", "sgm_uniform", "SGMUniform")]
    assert split_sampler_schedule("DPM++ 2M Karras", None, schedulers) == ("DPM++ 2M", "Karras")
    assert split_sampler_schedule("DPM++ 2M SDE Exponential", "Automatic", schedulers) == ("DPM++ 2M SDE",
                                                                                            "Exponential")
    assert split_sampler_schedule("Euler SGMUniform", None, schedulers) == ("Euler", "SGM Uniform")
    assert split_sampler_schedule("Euler", "karras", schedulers) == ("Euler", "Karras")
    assert split_sampler_schedule("Euler", "Karras", schedulers) == ("Euler", "Karras")
    assert split_sampler_schedule("Euler", "bogus", schedulers) == ("Euler", "Automatic")


# --- real-world A1111 infotexts (expected dicts written by hand from infotext_utils.parse_generation_parameters) ---

REAL_WORLD = [
    pytest.param(
        "masterpiece, best quality, 1girl, <lora:add_detail:0.7>, (smile:1.2)\n"
        "Negative prompt: easynegative, (worst quality:1.4)\n"
        "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234567890, Size: 832x1216, "
        "Model hash: 31e35c80fc, Model: sd_xl_base_1.0, VAE hash: 235745af8d, VAE: sdxl_vae.safetensors, "
        "Denoising strength: 0.4, Clip skip: 2, Hires upscale: 1.5, Hires steps: 15, Hires upscaler: 4x-UltraSharp, "
        'Lora hashes: "add_detail: 7c6bad76eb54", TI hashes: "easynegative: c74b4e810b03", Version: v1.10.1',
        {
            "Prompt": "masterpiece, best quality, 1girl, <lora:add_detail:0.7>, (smile:1.2)",
            "Negative prompt": "easynegative, (worst quality:1.4)",
            "Steps": "30", "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": "7", "Seed": "1234567890",
            "Size-1": "832", "Size-2": "1216", "Model hash": "31e35c80fc", "Model": "sd_xl_base_1.0",
            "VAE hash": "235745af8d", "VAE": "sdxl_vae.safetensors", "Denoising strength": "0.4", "Clip skip": "2",
            "Hires upscale": "1.5", "Hires steps": "15", "Hires upscaler": "4x-UltraSharp",
            "Lora hashes": "add_detail: 7c6bad76eb54", "TI hashes": "easynegative: c74b4e810b03",
            "Version": "v1.10.1", "Emphasis": "Original",
        },
        id="v1.10.1-sdxl-hires-lora-ti",
    ),
    pytest.param(
        "a photo of a cat\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 42, Face restoration: CodeFormer, "
        "Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.7, ENSD: 31337, "
        "Hires upscale: 2, Hires upscaler: Latent",
        {
            "Prompt": "a photo of a cat", "Negative prompt": "",
            "Steps": "20", "Sampler": "DPM++ 2M Karras", "CFG scale": "7", "Seed": "42",
            "Face restoration": "CodeFormer", "Size-1": "512", "Size-2": "512", "Model hash": "6ce0161689",
            "Model": "v1-5-pruned-emaonly", "Denoising strength": "0.7", "ENSD": "31337", "Hires upscale": "2",
            "Hires upscaler": "Latent",
        },
        id="2023-legacy-sampler-name-no-version",
    ),
    pytest.param(
        "portrait of a knight\nNegative prompt: blurry\nSteps: 50, Sampler: Euler a, CFG scale: 7.5, Seed: 3405691582, "
        "Size: 1024x768, Model hash: 7460a6fa, Denoising strength: 0.7, First pass size: 0x0",
        {
            "Prompt": "portrait of a knight", "Negative prompt": "blurry",
            "Steps": "50", "Sampler": "Euler a", "CFG scale": "7.5", "Seed": "3405691582",
            # old hires fix: Size becomes the first pass (old_hires_fix_first_pass_dimensions), ints as A1111 sets
            "Size-1": 640, "Size-2": 448, "Hires resize-1": 1024, "Hires resize-2": 768,
            "First pass size-1": "0", "First pass size-2": "0",
            "Model hash": "7460a6fa", "Denoising strength": "0.7",
        },
        id="2022-old-hires-first-pass-size",
    ),
    pytest.param(
        "a castle on a hill\nNegative prompt: lowres\nSteps: 25, Sampler: Euler a, CFG scale: 6, Seed: 100, "
        "Size: 1024x1024, Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Variation seed: 200, "
        "Variation seed strength: 0.3, Seed resize from: 768x768, RNG: CPU, Refiner: sd_xl_refiner_1.0 [7440042bbd], "
        "Refiner switch at: 0.8, Version: v1.6.0",
        {
            "Prompt": "a castle on a hill", "Negative prompt": "lowres",
            "Steps": "25", "Sampler": "Euler a", "CFG scale": "6", "Seed": "100", "Size-1": "1024", "Size-2": "1024",
            "Model hash": "31e35c80fc", "Model": "sd_xl_base_1.0", "Variation seed": "200",
            "Variation seed strength": "0.3", "Seed resize from-1": "768", "Seed resize from-2": "768", "RNG": "CPU",
            "Refiner": "sd_xl_refiner_1.0 [7440042bbd]", "Refiner switch at": "0.8", "Version": "v1.6.0",
            # infotext_versions.backcompat for v1.6.0
            "Downcast alphas_cumprod": True, "Refiner switch by sampling steps": True,
        },
        id="v1.6.0-refiner-variation-seed-backcompat",
    ),
    pytest.param(
        "a dog, [sitting]\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 512x512, Model hash: 81761151, "
        "Denoising strength: 0.75, Mask blur: 4, Hypernet: anime, Hypernet strength: 0.8, Version: v1.2.0",
        {
            "Prompt": "a dog, [sitting]<hypernet:anime:0.8>", "Negative prompt": "",
            "Steps": "20", "Sampler": "Euler", "CFG scale": "7", "Seed": "5", "Size-1": "512", "Size-2": "512",
            "Model hash": "81761151", "Denoising strength": "0.75", "Mask blur": "4", "Hypernet": "anime",
            "Hypernet strength": "0.8", "Version": "v1.2.0", "Emphasis": "Original",
            "Old prompt editing timelines": True, "Downcast alphas_cumprod": True,
        },
        id="v1.2.0-img2img-hypernet",
    ),
    pytest.param(
        "a [cat:dog:0.5]\nSteps: 50, Sampler: DDIM, CFG scale: 7, Seed: 8, Size: 512x512, Version: v1.5.1",
        {
            "Prompt": "a [cat:dog:0.5]", "Negative prompt": "",
            "Steps": "50", "Sampler": "DDIM", "CFG scale": "7", "Seed": "8", "Size-1": "512", "Size-2": "512",
            "Version": "v1.5.1", "Emphasis": "Original",
            "Old prompt editing timelines": True, "Pad conds v0": True, "Downcast alphas_cumprod": True,
        },
        id="v1.5.1-ddim-prompt-editing",
    ),
    pytest.param(
        "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x768, "
        'Hires prompt: "a \\"big\\" cat,\\ndetailed", ADetailer model: face_yolov8n.pt, '
        'ADetailer prompt: "smile, happy", ADetailer version: 24.8.0, Version: v1.10.1',
        {
            "Prompt": "a cat", "Negative prompt": "",
            "Steps": "20", "Sampler": "Euler a", "CFG scale": "7", "Seed": "1", "Size-1": "512", "Size-2": "768",
            "Hires prompt": 'a "big" cat,\ndetailed', "ADetailer model": "face_yolov8n.pt",
            "ADetailer prompt": "smile, happy", "ADetailer version": "24.8.0", "Version": "v1.10.1",
        },
        id="quoted-values-adetailer",
    ),
    pytest.param(
        "line one BREAK\nline two \\(literal\\)\nNegative prompt: bad\nworse\n"
        "Steps: 4, Sampler: LCM, Schedule type: SGM Uniform, CFG scale: 1.5, Seed: 9, Size: 768x768, "
        "Emphasis: No norm, FP8 weight: Enable for SDXL, Cache FP16 weight for LoRA: True, Version: v1.10.1",
        {
            "Prompt": "line one BREAK\nline two \\(literal\\)", "Negative prompt": "bad\nworse",
            "Steps": "4", "Sampler": "LCM", "Schedule type": "SGM Uniform", "CFG scale": "1.5", "Seed": "9",
            "Size-1": "768", "Size-2": "768", "Emphasis": "No norm", "FP8 weight": "Enable for SDXL",
            "Cache FP16 weight for LoRA": "True", "Version": "v1.10.1",
        },
        id="multiline-break-fp8-emphasis",
    ),
    pytest.param(
        "a house\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 3, Size: 512x512, "
        'ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0", '
        "AddNet Enabled: True, AddNet Module 1: LoRA, AddNet Model 1: myLora(2a5f4e7b), AddNet Weight A 1: 0.8, "
        "AddNet Weight B 1: 0.8",
        {
            "Prompt": "a house", "Negative prompt": "",
            "Steps": "20", "Sampler": "Euler a", "CFG scale": "7", "Seed": "3", "Size-1": "512", "Size-2": "512",
            "ControlNet 0": "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0",
            "AddNet Enabled": "True", "AddNet Module 1": "LoRA", "AddNet Model 1": "myLora(2a5f4e7b)",
            "AddNet Weight A 1": "0.8", "AddNet Weight B 1": "0.8",
        },
        id="controlnet-and-addnet-fields",
    ),
    pytest.param(
        "just a prompt\nNegative prompt: nothing\nSteps: 20, Seed: 1",
        {"Prompt": "just a prompt", "Negative prompt": "nothing\nSteps: 20, Seed: 1"},
        id="short-last-line-is-prompt-text",
    ),
    pytest.param(
        "1girl, solo\nNegative prompt: lowres\nSteps: 28, Sampler: Euler a, CFG scale: 11, Seed: 42, Size: 512x768, "
        "Clip skip: 2, ENSD: 31337",
        {
            "Prompt": "1girl, solo", "Negative prompt": "lowres",
            "Steps": "28", "Sampler": "Euler a", "CFG scale": "11", "Seed": "42", "Size-1": "512", "Size-2": "768",
            "Clip skip": "2", "ENSD": "31337",
        },
        id="novelai-converted",
    ),
]


@pytest.mark.parametrize("text, expected", REAL_WORLD)
def test_parse_real_world_infotexts(text, expected):
    assert parse_generation_parameters(text) == {**DEFAULTS, **expected}


def test_infotext_pasted_addnet_fields_become_lora_tags():
    from webui.core.io.infotext import infotext_pasted

    text = REAL_WORLD[8].values[0]
    params = infotext_pasted(parse_generation_parameters(text))
    # A1111 networks.infotext_pasted: name without the (hash), weight A, appended on a new line
    assert params["Prompt"] == "a house\n<lora:myLora:0.8>"
    params = infotext_pasted({"Prompt": "p", "AddNet Module 1": "Hypernetwork", "AddNet Model 1": "x(12ab)",
                              "AddNet Module 2": "LoRA", "AddNet Model 2": "y"})
    assert params["Prompt"] == "p\n<lora:y:1.0>"


def test_infotext_pasted_lora_hashes_rewrite_to_current_alias():
    from webui.core.io.infotext import infotext_pasted, lora_hashes_pasted

    params = {"Prompt": "a <lora:old_name:0.7> and <lora:other:1> <lora:gone:0.5>",
              "Lora hashes": "old_name: 7c6bad76eb54, other: 111111111111, gone: 222222222222"}
    lookup = {"7c6bad76eb54": "new_name", "111111111111": "other"}.get
    assert lora_hashes_pasted(dict(params), lookup)["Prompt"] == (
        "a <lora:new_name:0.7> and <lora:other:1> <lora:gone:0.5>"
    )
    assert infotext_pasted(dict(params), lookup)["Prompt"] == "a <lora:new_name:0.7> and <lora:other:1> <lora:gone:0.5>"
    assert infotext_pasted(dict(params))["Prompt"] == params["Prompt"]  # no lookup: untouched
    broken = {"Prompt": "<lora:a:1>", "Lora hashes": "no colon here"}
    assert lora_hashes_pasted(dict(broken), lookup) == broken  # A1111 reports and leaves it
