"""The one infotext paste table: parsed infotext key -> request field, with A1111's conversions.

A1111 has one table per tab (``ui.py`` ``txt2img_paste_fields`` / ``img2img_paste_fields`` plus the Sampler, Seed
and Refiner scripts' ``infotext_fields``), each entry a ``PasteField(component, label_or_function, api=field)``. The
UI's paste button fills the components from it, and the API's ``infotext`` request field
(``api.py apply_infotext``) fills the request fields the JSON left out from the same entries. Here too: the UI's
paste button and ``webui.api.models.apply_infotext`` both read :data:`TXT2IMG_FIELDS` / :data:`IMG2IMG_FIELDS`
through :func:`paste_values`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PasteField:
    """A request field filled from a parsed infotext.

    ``name``: the request field (A1111's ``api=`` name, also the UI component's name). ``key``: the infotext key, or
    a function of the parsed dict returning the value (None: leave the field alone). ``kind`` converts the text
    value as A1111 does from the target's type. ``api``: the API's ``infotext`` fills it too (False for UI-only
    controls and for values that are UI labels, not API values -- A1111 gives those no ``api=``).
    """

    name: str
    key: str | Callable[[dict], Any]
    kind: type = str
    api: bool = True


_NO_CHANGE = object()


class Number:
    """A paste ``kind``: an int when the value is integral, else a float. For a fractional slider whose default is
    written as an int (A1111 converts to the default's type, so "0.25" into such a slider fails there and is
    skipped; "1" stays 1, as A1111 writes it back into the infotext)."""


def convert(value: Any, kind: type) -> Any:
    """A parsed infotext value as ``kind``; raises TypeError/ValueError when it does not convert."""
    if kind is bool:
        if isinstance(value, str):
            return value.strip().lower() not in ("false", "0", "")
        return bool(value)
    if kind is Number:
        number = float(value)
        return int(number) if number.is_integer() else number
    if kind is int:
        return int(float(value))
    if kind is float:
        return float(value)
    if kind is list:
        return list(value) if isinstance(value, (list, tuple)) else _NO_CHANGE
    return str(value)


def paste_values(params: dict, fields: list[PasteField]) -> dict[str, Any]:
    """``{name: value}`` for the fields the parsed infotext sets; values that do not convert are skipped (A1111)."""
    out: dict[str, Any] = {}
    for f in fields:
        v = f.key(params) if callable(f.key) else params.get(f.key)
        if v is None:
            continue
        try:
            converted = convert(v, f.kind)
        except (TypeError, ValueError):
            continue
        if converted is not _NO_CHANGE:
            out[f.name] = converted
    return out


# -- A1111's conversion functions (sd_samplers.get_*_from_infotext) ---------------------------------------------------


def sampler_from_infotext(params: dict) -> str | None:
    """A1111 ``sd_samplers.get_sampler_from_infotext``."""
    from webui.core.generation.samplers import get_sampler_and_scheduler

    return get_sampler_and_scheduler(params.get("Sampler"), params.get("Schedule type"))[0].name


def scheduler_from_infotext(params: dict) -> str | None:
    """A1111 ``sd_samplers.get_scheduler_from_infotext``."""
    from webui.core.generation.samplers import get_sampler_and_scheduler

    return get_sampler_and_scheduler(params.get("Sampler"), params.get("Schedule type"))[1].label


def hr_sampler_from_infotext(params: dict) -> str | None:
    """A1111 ``get_hr_sampler_from_infotext``: "Use same sampler" unless the infotext names one."""
    from webui.core.generation.samplers import get_sampler_and_scheduler

    hr = params.get("Hires sampler", "Use same sampler")
    if hr == "Use same sampler":
        return hr
    return get_sampler_and_scheduler(hr, params.get("Hires schedule type"))[0].name


def hr_scheduler_from_infotext(params: dict) -> str | None:
    from webui.core.generation.samplers import get_sampler_and_scheduler

    hr = params.get("Hires sampler", "Use same sampler")
    sched = params.get("Hires schedule type", "Use same scheduler")
    if hr == "Use same sampler":
        return sched if sched == "Use same scheduler" else get_sampler_and_scheduler(None, sched)[1].label
    return get_sampler_and_scheduler(hr, sched)[1].label


def enable_hr_from_infotext(params: dict) -> bool:
    """A1111's ``enable_hr`` paste rule, verbatim: a denoising strength and any Hires key. The parser always adds
    ``Hires resize-1: 0``, so -- as in A1111 -- any infotext with a denoising strength (an img2img one too) turns
    Hires. fix on, in the UI and through the API's ``infotext`` alike."""
    return "Denoising strength" in params and (
        "Hires upscale" in params or "Hires upscaler" in params or "Hires resize-1" in params)


def _styles(params: dict) -> list | None:
    return params["Styles array"] if isinstance(params.get("Styles array"), list) else None


# -- the tables -------------------------------------------------------------------------------------------------------

#: A1111 ``txt2img_paste_fields`` (ui.py) plus the Sampler, Seed and Refiner scripts' fields, and our API-only
#: ``restore_faces`` (A1111's API took it from the old "Face restoration" paste field).
TXT2IMG_FIELDS: list[PasteField] = [
    PasteField("prompt", "Prompt"),
    PasteField("negative_prompt", "Negative prompt"),
    PasteField("cfg_scale", "CFG scale", float),
    PasteField("steps", "Steps", int),
    PasteField("sampler_name", sampler_from_infotext),
    PasteField("scheduler", scheduler_from_infotext),
    PasteField("seed", "Seed", int),
    PasteField("width", "Size-1", int),
    PasteField("height", "Size-2", int),
    PasteField("batch_size", "Batch size", int),
    PasteField("seed_extras", lambda d: True if "Variation seed" in d or "Seed resize from-1" in d else None, bool,
               api=False),
    PasteField("subseed", "Variation seed", int),
    PasteField("subseed_strength", "Variation seed strength", float),
    PasteField("seed_resize_from_w", "Seed resize from-1", int),
    PasteField("seed_resize_from_h", "Seed resize from-2", int),
    PasteField("styles", _styles, list),
    PasteField("denoising_strength", "Denoising strength", float),
    PasteField("enable_hr", enable_hr_from_infotext, bool),
    PasteField("hr_scale", "Hires upscale", float),
    PasteField("hr_upscaler", "Hires upscaler"),
    PasteField("hr_second_pass_steps", "Hires steps", int),
    PasteField("hr_resize_x", "Hires resize-1", int),
    PasteField("hr_resize_y", "Hires resize-2", int),
    PasteField("hr_checkpoint_name", "Hires checkpoint"),
    PasteField("hr_sampler_name", hr_sampler_from_infotext),
    PasteField("hr_scheduler", hr_scheduler_from_infotext),
    PasteField("hr_prompt", "Hires prompt"),
    PasteField("hr_negative_prompt", "Hires negative prompt"),
    PasteField("enable_refiner", lambda d: True if "Refiner" in d else None, bool, api=False),
    PasteField("refiner_checkpoint", "Refiner"),
    PasteField("refiner_switch_at", "Refiner switch at", float),
    PasteField("restore_faces", lambda d: True if "Face restoration" in d else None, bool),
]

#: A1111 ``img2img_paste_fields`` (ui.py): txt2img's shared fields (no Hires. fix) plus the img2img ones. The
#: inpainting radios hold UI labels ("Only masked"), not the API's numbers, so the API leaves them alone.
IMG2IMG_FIELDS: list[PasteField] = [
    f for f in TXT2IMG_FIELDS if not f.name.startswith("hr_") and f.name != "enable_hr"] + [
    PasteField("image_cfg_scale", "Image CFG scale", float),
    PasteField("mask_blur", "Mask blur", int),
    PasteField("inpainting_mask_invert", "Mask mode", api=False),
    PasteField("inpainting_fill", "Masked content", api=False),
    PasteField("inpaint_full_res", "Inpaint area", api=False),
    PasteField("inpaint_full_res_padding", "Masked area padding", int, api=False),
]

#: A1111's ``infotext_to_setting_name_mapping``: infotext key -> option merged into ``override_settings``.
INFOTEXT_SETTINGS: dict[str, str] = {
    "Clip skip": "CLIP_stop_at_last_layers", "Conditional mask weight": "inpainting_mask_weight",
    "ENSD": "eta_noise_seed_delta", "Noise multiplier": "initial_noise_multiplier", "Eta": "eta_ancestral",
    "Eta DDIM": "eta_ddim", "Sigma churn": "s_churn", "Sigma tmin": "s_tmin", "Sigma tmax": "s_tmax",
    "Sigma noise": "s_noise", "Sigma min": "sigma_min", "Sigma max": "sigma_max", "RNG": "randn_source",
    "NGMS": "s_min_uncond", "NGMS all steps": "s_min_uncond_all", "Skip Early CFG": "skip_early_cond",
    "SGM noise multiplier": "sgm_noise_multiplier", "Pad conds": "pad_cond_uncond", "Pad conds v0": "pad_cond_uncond_v0",
    "VAE": "sd_vae",
    "Emphasis": "emphasis", "Discard penultimate sigma": "always_discard_next_to_last_sigma",
    "UniPC variant": "uni_pc_variant", "UniPC skip type": "uni_pc_skip_type", "UniPC order": "uni_pc_order",
    "UniPC lower order final": "uni_pc_lower_order_final", "Token merging ratio": "token_merging_ratio",
    "Token merging ratio hr": "token_merging_ratio_hr", "Beta schedule alpha": "beta_dist_alpha",
    "Beta schedule beta": "beta_dist_beta", "Refiner switch by sampling steps": "refiner_switch_by_sample_steps",
    "Tiling": "tiling", "FP8 weight": "fp8_storage", "Cache FP16 weight for LoRA": "cache_fp16_weight",
    # the Hypertile options' infotext names (A1111 OptionInfo(..., infotext=...))
    "Hypertile U-Net": "hypertile_enable_unet", "Hypertile U-Net second pass": "hypertile_enable_unet_secondpass",
    "Hypertile U-Net max depth": "hypertile_max_depth_unet", "Hypertile U-Net max tile size": "hypertile_max_tile_unet",
    "Hypertile U-Net swap size": "hypertile_swap_size_unet", "Hypertile VAE": "hypertile_enable_vae",
    "Hypertile VAE max depth": "hypertile_max_depth_vae", "Hypertile VAE max tile size": "hypertile_max_tile_vae",
    "Hypertile VAE swap size": "hypertile_swap_size_vae",
}


def fields_for(mode: str) -> list[PasteField]:
    """The paste table of a tab / request mode ("txt2img", else img2img's)."""
    return TXT2IMG_FIELDS if mode == "txt2img" else IMG2IMG_FIELDS


def api_values(params: dict, mode: str, *, skip: Callable[[str], bool] = lambda name: False) -> dict[str, Any]:
    """A1111 ``apply_infotext``'s field part: the values the API's ``infotext`` gives, by request field, for the
    ``api`` entries of the mode's table that ``skip(name)`` does not exclude (fields the JSON set explicitly, or
    that the request model lacks)."""
    return paste_values(params, [f for f in fields_for(mode) if f.api and not skip(f.name)])


def infotext_settings(params: dict) -> dict[str, Any]:
    """The options an infotext names, as ``override_settings`` entries (A1111 ``get_override_settings``)."""
    return {INFOTEXT_SETTINGS[k]: v for k, v in params.items() if k in INFOTEXT_SETTINGS}


# -- "Override settings" of the UI (A1111 infotext_utils.get_override_settings / create_override_settings_dict) ---------

#: Infotext keys whose option is the checkpoint: A1111's sd_model_checkpoint has ``infotext='Model hash'``.
CHECKPOINT_KEY = "Model hash"


def _settings_mapping() -> list[tuple[str, str]]:
    return [*INFOTEXT_SETTINGS.items(), (CHECKPOINT_KEY, "sd_model_checkpoint")]


def override_settings_pairs(params: dict, fields: list[PasteField], current: Callable[[str], Any], *,
                            disable_weights_auto_swap: bool = True) -> list[str]:
    """The ``"<infotext key>: <value>"`` entries pasting ``params`` puts into the UI's "Override settings" dropdown.

    As A1111's ``get_override_settings``: every key naming an option (and no control of the tab's paste table --
    ``fields``' own keys are skipped), whose value converts to the option's type and differs from the current value
    ``current(option)``; the checkpoint ("Model hash") only when option ``disable_weights_auto_swap`` is off.
    """
    from webui.core.options import OptionError, coerce_option
    from webui.core.settings import OPTIONS_BY_KEY

    handled = {f.key for f in fields if isinstance(f.key, str)}
    out = []
    for key, setting in _settings_mapping():
        if key in handled or setting not in OPTIONS_BY_KEY:
            continue
        value = params.get(key)
        if value is None:
            continue
        if setting == "sd_model_checkpoint" and disable_weights_auto_swap:
            continue
        try:
            value = coerce_option(OPTIONS_BY_KEY[setting], value)
        except OptionError:
            continue
        if value == current(setting):
            continue
        out.append(f"{key}: {value}")
    return out


def override_settings_dict(pairs) -> dict[str, Any]:
    """The request's ``override_settings`` from the dropdown's entries (A1111 ``create_override_settings_dict``):
    each ``"key: value"`` back to its option, the value converted to the option's type; an entry that names no
    option or does not convert is left out (A1111 would fail the generation)."""
    from webui.core.options import OptionError, coerce_option
    from webui.core.settings import OPTIONS_BY_KEY

    params = {}
    for pair in pairs or ():
        key, sep, value = str(pair).partition(":")
        if sep:
            params[key.strip()] = value.strip()
    out: dict[str, Any] = {}
    for key, setting in _settings_mapping():
        if key not in params or setting not in OPTIONS_BY_KEY:
            continue
        try:
            out[setting] = coerce_option(OPTIONS_BY_KEY[setting], params[key])
        except OptionError:
            continue
    return out
