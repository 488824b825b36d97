"""A1111's "X/Y/Z plot" (scripts/xyz_grid.py, v1.10.1) on the Script interface: the axes in A1111's list and order
per tab, its value syntaxes (lists, ``1-5``, ``1-5 (+2)``, ``1-10 [5]``, their float forms, the dropdown lists), its
seed options, the grid of grids along Z with legends, the grid infotext and the grid file.

Every cell is one ``process_images(pc)`` on a copy of ``p`` -- an ordinary request (same request and seed, same
bytes as sent alone). Axes that are options (clip skip, VAE, checkpoint, schedule sigmas/rho, RNG, ...) go through
``pc.override_settings[<A1111 option key>]``, which the engine applies for that request only: stored settings never
change, so there is nothing to restore afterwards (A1111's SharedSettingsStackHelper reloads the model instead).

Where we differ from A1111, on purpose:

* Every axis is parsed and checked before the first image (A1111 checks samplers and checkpoints only, and fails
  on the others in the middle of the grid or silently uses a default): an unknown axis type, an unparsable value,
  an unknown sampler, schedule type, checkpoint, VAE (A1111 falls back to Automatic), hires upscaler, RNG source,
  size or a Prompt S/R word missing from the prompt raise :class:`ScriptError` naming the argument and the choices.
* An axis type may be given by index (A1111's positional API form) or by its label.
* A dropdown axis (one with choices) whose dropdown list is empty takes its values from the text box (A1111 then
  makes an empty grid); a non-text ``X values`` (e.g. a number) is refused (A1111 raises TypeError, a 500).
* Cells whose size differs (the Size axis) are centred in cells of the largest size.
* "Token merging ratio" / "Token merging ratio high-res" set their options for the cell: tomesd merges tokens
  (webui/core/generation/optimizations.py). "FP8 mode" sets option fp8_storage for the cell: the checkpoint is
  loaded again with its weights stored in float8 or not (webui/core/models/fp8.py), as A1111 reloads it.
"""

from __future__ import annotations

import copy
import csv
import logging
import os.path
import random
import re
from io import StringIO
from itertools import chain, permutations
from typing import Any, Callable

from webui.plugins.scripts import Script, ScriptArg, ScriptError

log = logging.getLogger(__name__)

TITLE = "X/Y/Z plot"


def _fail(message: str):
    raise ScriptError(TITLE, message)


# -- what each axis does to p ------------------------------------------------------------------------------------------


def apply_field(field: str):
    def fun(p, x, xs):
        setattr(p, field, x)

    return fun


def apply_prompt(p, x, xs):
    if xs[0] not in p.prompt and xs[0] not in p.negative_prompt:
        _fail(f"Prompt S/R did not find {xs[0]} in prompt or negative prompt.")
    p.prompt = p.prompt.replace(xs[0], x)
    p.negative_prompt = p.negative_prompt.replace(xs[0], x)


def apply_order(p, x, xs):
    token_order = []
    # Initially grab the tokens from the prompt, so they can be replaced in order of earliest seen
    for token in x:
        token_order.append((p.prompt.find(token), token))
    token_order.sort(key=lambda t: t[0])

    prompt_parts = []
    # Split the prompt up, taking out the tokens
    for _, token in token_order:
        n = p.prompt.find(token)
        prompt_parts.append(p.prompt[0:n])
        p.prompt = p.prompt[n + len(token):]

    # Rebuild the prompt with the tokens in the order we want
    prompt_tmp = ""
    for idx, part in enumerate(prompt_parts):
        prompt_tmp += part
        prompt_tmp += x[idx]
    p.prompt = prompt_tmp + p.prompt


def _sampler_map() -> dict[str, str]:
    """A1111 sd_samplers.samplers_map: lower-cased names and aliases -> name."""
    from webui.core.generation.samplers import SAMPLERS

    out = {}
    for s in SAMPLERS:
        out[s.name.lower()] = s.name
        for alias in s.aliases:
            out[alias.lower()] = s.name
    return out


def apply_sampler_field(field: str):
    def fun(p, x, xs):
        setattr(p, field, _sampler_map().get(x.lower(), x))

    return fun


def confirm_samplers(p, xs):
    known = _sampler_map()
    for x in xs:
        if x.lower() not in known:
            raise ValueError(f"Unknown sampler: {x}")


def _registry(p):
    return p.engine.registry


def apply_checkpoint(p, x, xs):
    info = _registry(p).closest(x)
    if info is None:
        raise ValueError(f"Unknown checkpoint: {x}")
    p.override_settings["sd_model_checkpoint"] = info.name


def confirm_checkpoints(p, xs):
    for x in xs:
        if _registry(p).closest(x) is None:
            raise ValueError(f"Unknown checkpoint: {x}")


def confirm_checkpoints_or_none(p, xs):
    for x in xs:
        if x in (None, "", "None", "none"):
            continue
        if _registry(p).closest(x) is None:
            raise ValueError(f"Unknown checkpoint: {x}")


def apply_refiner_checkpoint(p, x, xs):
    if x in (None, "", "None", "none"):
        p.refiner_checkpoint = None
        return
    p.refiner_checkpoint = _registry(p).closest(x).title


def apply_size(p, x: str, xs) -> None:
    width, _, height = x.partition("x")
    p.width = int(width.strip())
    p.height = int(height.strip())


def confirm_size(p, xs):
    for x in xs:
        width, sep, height = x.partition("x")
        try:
            int(width.strip()), int(height.strip())
        except ValueError:
            raise ValueError(f"Invalid size {x!r}: write WIDTHxHEIGHT, e.g. 512x768") from None


def _vae_names(p) -> list[str]:
    registry = getattr(p.engine, "vae_registry", None)
    return list(registry.names()) if registry is not None else []


def find_vae(p, name: str) -> str | None:
    """A1111 find_vae (1.10): auto/automatic -> Automatic, none -> None, else the VAE of that name (any case).
    Unknown: None here (A1111 prints and uses Automatic; we refuse it in confirm_vae)."""
    name = name.strip().lower()
    if name in ("auto", "automatic"):
        return "Automatic"
    if name == "none":
        return "None"
    return next((k for k in _vae_names(p) if k.lower() == name), None)


def apply_vae(p, x, xs):
    p.override_settings["sd_vae"] = find_vae(p, x) or "Automatic"


def confirm_vae(p, xs):
    for x in xs:
        if find_vae(p, x) is None:
            raise ValueError(f"Unknown VAE: {x}")


def apply_styles(p, x: str, _):
    p.styles.extend(x.split(","))


def apply_uni_pc_order(p, x, xs):
    p.override_settings["uni_pc_order"] = min(x, p.steps - 1)


def apply_face_restore(p, opt, x):
    opt = opt.lower()
    if opt == "codeformer":
        is_active = True
        # A1111 sets p.face_restoration_model, which its processing never reads; the option is what picks the model.
        p.override_settings["face_restoration_model"] = "CodeFormer"
    elif opt == "gfpgan":
        is_active = True
        p.override_settings["face_restoration_model"] = "GFPGAN"
    else:
        is_active = opt in ("true", "yes", "y", "1")
    p.restore_faces = is_active


def apply_override(field: str, boolean: bool = False):
    def fun(p, x, xs):
        if boolean:
            x = True if x.lower() == "true" else False
        p.override_settings[field] = x

    return fun


def boolean_choice(reverse: bool = False):
    def choice(p=None):
        return ["False", "True"] if reverse else ["True", "False"]

    return choice


def confirm_choices(p, xs, choices: list[str]):
    lowered = {c.lower() for c in choices}
    for x in xs:
        if str(x).lower() not in lowered:
            raise ValueError(f"Unknown value: {x}; valid: {', '.join(choices)}")


# -- legends ---------------------------------------------------------------------------------------------------------


def format_value_add_label(p, opt, x):
    if type(x) == float:
        x = round(x, 8)
    return f"{opt.label}: {x}"


def format_value(p, opt, x):
    if type(x) == float:
        x = round(x, 8)
    return x


def format_value_join_list(p, opt, x):
    return ", ".join(x)


def do_nothing(p, x, xs):
    pass


def format_nothing(p, opt, x):
    return ""


def format_remove_path(p, opt, x):
    return os.path.basename(x)


def str_permutations(x):
    """dummy function for specifying it in AxisOption's type when you want to get a list of permutations"""
    return x


def list_to_csv_string(data_list):
    with StringIO() as o:
        csv.writer(o).writerow(data_list)
        return o.getvalue().strip()


def csv_string_to_list_strip(data_str):
    return list(map(str.strip, chain.from_iterable(csv.reader(StringIO(data_str), skipinitialspace=True))))


# -- choices (read at run time from the engine; A1111 reads its globals) -------------------------------------------------


def _sampler_choices(p) -> list[str]:
    from webui.core.generation.samplers import SAMPLERS

    hidden = set(p.opts.get("hide_samplers") or [])
    return [s.name for s in SAMPLERS if s.name not in hidden]


def _checkpoint_choices(p) -> list[str]:
    return sorted(_registry(p).titles(), key=str.casefold)


def _schedule_choices(p) -> list[str]:
    from pipelines.schedules import SCHEDULERS

    return [s.label for s in SCHEDULERS]


def _confirm_schedules(p, xs):
    from pipelines.schedules import SCHEDULERS

    known = {s.label.lower() for s in SCHEDULERS} | {s.name.lower() for s in SCHEDULERS}
    for x in xs:
        if x.lower() not in known:
            raise ValueError(f"Unknown schedule type: {x}")


def _apply_scheduler(p, x, xs):
    from pipelines.schedules import SCHEDULERS

    lowered = x.lower()
    p.scheduler = next((s.label for s in SCHEDULERS if lowered in (s.label.lower(), s.name.lower())), x)


def _hires_upscaler_choices(p) -> list[str]:
    from webui.core.generation.imageops import LATENT_UPSCALE_MODES

    upscalers = getattr(p.engine, "upscalers", None)
    names = upscalers.names(p.opts) if upscalers is not None else ["None", "Lanczos", "Nearest"]
    return [*LATENT_UPSCALE_MODES, *[n for n in names if n not in LATENT_UPSCALE_MODES]]


def _confirm_hires_upscalers(p, xs):
    choices = _hires_upscaler_choices(p)
    for x in xs:
        if x not in choices:
            raise ValueError(f"Unknown hires upscaler: {x}")


def _style_choices(p) -> list[str]:
    styles = getattr(p.engine, "styles", None)
    names = getattr(styles, "styles", None)
    return list(names) if names else []


def _vae_choices(p) -> list[str]:
    return ["Automatic", "None", *_vae_names(p)]


def _rng_choices(p=None) -> list[str]:
    return ["GPU", "CPU", "NV"]


def _fp8_choices(p=None) -> list[str]:
    return ["Disable", "Enable for SDXL", "Enable"]


def _refiner_choices(p) -> list[str]:
    return ["None", *_checkpoint_choices(p)]


def _confirm_from(choices: Callable):
    def confirm(p, xs):
        confirm_choices(p, xs, choices(p))

    return confirm


# -- the axes ---------------------------------------------------------------------------------------------------------


class AxisOption:
    """One axis type (A1111 AxisOption): ``choices(p)`` when the values come from a list (its dropdown form)."""

    is_img2img: bool | None = None  # None: both tabs

    def __init__(self, label, type, apply, format_value=format_value_add_label, confirm=None, cost=0.0, choices=None,
                 prepare=None):
        self.label = label
        self.type = type
        self.apply = apply
        self.format_value = format_value
        self.confirm = confirm
        self.cost = cost
        self.prepare = prepare
        self.choices = choices

    def __repr__(self) -> str:
        return f"AxisOption({self.label!r})"


class AxisOptionImg2Img(AxisOption):
    is_img2img = True


class AxisOptionTxt2Img(AxisOption):
    is_img2img = False


# A1111 v1.10.1 axis_options, in its order.
axis_options = [
    AxisOption("Nothing", str, do_nothing, format_value=format_nothing),
    AxisOption("Seed", int, apply_field("seed")),
    AxisOption("Var. seed", int, apply_field("subseed")),
    AxisOption("Var. strength", float, apply_field("subseed_strength")),
    AxisOption("Steps", int, apply_field("steps")),
    AxisOptionTxt2Img("Hires steps", int, apply_field("hr_second_pass_steps")),
    AxisOption("CFG Scale", float, apply_field("cfg_scale")),
    AxisOptionImg2Img("Image CFG Scale", float, apply_field("image_cfg_scale")),
    AxisOption("Prompt S/R", str, apply_prompt, format_value=format_value),
    AxisOption("Prompt order", str_permutations, apply_order, format_value=format_value_join_list),
    AxisOptionTxt2Img("Sampler", str, apply_sampler_field("sampler_name"), format_value=format_value,
                      confirm=confirm_samplers, choices=_sampler_choices),
    AxisOptionTxt2Img("Hires sampler", str, apply_sampler_field("hr_sampler_name"), confirm=confirm_samplers,
                      choices=_sampler_choices),
    AxisOptionImg2Img("Sampler", str, apply_sampler_field("sampler_name"), format_value=format_value,
                      confirm=confirm_samplers, choices=_sampler_choices),
    AxisOption("Checkpoint name", str, apply_checkpoint, format_value=format_remove_path, confirm=confirm_checkpoints,
               cost=1.0, choices=_checkpoint_choices),
    # A1111 sets p.s_min_uncond; the override of the option reaches the denoiser's NGMS the same way
    AxisOption("Negative Guidance minimum sigma", float, apply_override("s_min_uncond")),
    AxisOption("Sigma Churn", float, apply_field("s_churn")),
    AxisOption("Sigma min", float, apply_field("s_tmin")),
    AxisOption("Sigma max", float, apply_field("s_tmax")),
    AxisOption("Sigma noise", float, apply_field("s_noise")),
    AxisOption("Schedule type", str, _apply_scheduler, confirm=_confirm_schedules, choices=_schedule_choices),
    AxisOption("Schedule min sigma", float, apply_override("sigma_min")),
    AxisOption("Schedule max sigma", float, apply_override("sigma_max")),
    AxisOption("Schedule rho", float, apply_override("rho")),
    AxisOption("Beta schedule alpha", float, apply_override("beta_dist_alpha")),
    AxisOption("Beta schedule beta", float, apply_override("beta_dist_beta")),
    AxisOption("Eta", float, apply_field("eta")),
    AxisOption("Clip skip", int, apply_override("CLIP_stop_at_last_layers")),
    AxisOption("Denoising", float, apply_field("denoising_strength")),
    AxisOption("Initial noise multiplier", float, apply_field("initial_noise_multiplier")),
    AxisOption("Extra noise", float, apply_override("img2img_extra_noise")),
    AxisOptionTxt2Img("Hires upscaler", str, apply_field("hr_upscaler"), confirm=_confirm_hires_upscalers,
                      choices=_hires_upscaler_choices),
    # A1111 sets p.inpainting_mask_weight; the engine reads option inpainting_mask_weight for the request.
    AxisOptionImg2Img("Cond. Image Mask Weight", float, apply_override("inpainting_mask_weight")),
    AxisOption("VAE", str, apply_vae, confirm=confirm_vae, cost=0.7, choices=_vae_choices),
    AxisOption("Styles", str, apply_styles, choices=_style_choices),
    AxisOption("UniPC Order", int, apply_uni_pc_order, cost=0.5),
    AxisOption("Face restore", str, apply_face_restore, format_value=format_value),
    # token merging with tomesd (webui/core/generation/optimizations.py)
    AxisOption("Token merging ratio", float, apply_override("token_merging_ratio")),
    AxisOption("Token merging ratio high-res", float, apply_override("token_merging_ratio_hr")),
    AxisOption("Always discard next-to-last sigma", str, apply_override("always_discard_next_to_last_sigma", True),
               confirm=_confirm_from(boolean_choice(reverse=True)), choices=boolean_choice(reverse=True)),
    AxisOption("SGM noise multiplier", str, apply_override("sgm_noise_multiplier", True),
               confirm=_confirm_from(boolean_choice(reverse=True)), choices=boolean_choice(reverse=True)),
    AxisOption("Refiner checkpoint", str, apply_refiner_checkpoint, format_value=format_remove_path,
               confirm=confirm_checkpoints_or_none, cost=1.0, choices=_refiner_choices),
    AxisOption("Refiner switch at", float, apply_field("refiner_switch_at")),
    AxisOption("RNG source", str, apply_override("randn_source"), confirm=_confirm_from(_rng_choices),
               choices=_rng_choices),
    # option fp8_storage for the cell: the model reloads with float8 weights or without (cost 0.9: grouped as A1111)
    AxisOption("FP8 mode", str, apply_override("fp8_storage"), cost=0.9, confirm=_confirm_from(_fp8_choices),
               choices=_fp8_choices),
    AxisOption("Size", str, apply_size, confirm=confirm_size),
]


def confirm_range(min_val, max_val, axis_label):
    """A1111 xyz_grid.confirm_range: every value within [min_val, max_val]."""

    def confirm(p, xs):
        for x in xs:
            if not max_val >= x >= min_val:
                _fail(f'{axis_label} value "{x}" out of range [{min_val}, {max_val}]')

    return confirm


# The built-in Hypertile extension's axes (extensions-builtin/hypertile add_axis_options, appended after the core
# ones when the UI is built, as in A1111): per-request option overrides.
axis_options += [
    AxisOption("[Hypertile] Unet First pass Enabled", str, apply_override("hypertile_enable_unet", boolean=True),
               choices=boolean_choice(reverse=True)),
    AxisOption("[Hypertile] Unet Second pass Enabled", str,
               apply_override("hypertile_enable_unet_secondpass", boolean=True), choices=boolean_choice(reverse=True)),
    AxisOption("[Hypertile] Unet Max Depth", int, apply_override("hypertile_max_depth_unet"),
               confirm=confirm_range(0, 3, "[Hypertile] Unet Max Depth"), choices=lambda p=None: [str(x) for x in range(4)]),
    AxisOption("[Hypertile] Unet Max Tile Size", int, apply_override("hypertile_max_tile_unet"),
               confirm=confirm_range(0, 512, "[Hypertile] Unet Max Tile Size")),
    AxisOption("[Hypertile] Unet Swap Size", int, apply_override("hypertile_swap_size_unet"),
               confirm=confirm_range(0, 64, "[Hypertile] Unet Swap Size")),
    AxisOption("[Hypertile] VAE Enabled", str, apply_override("hypertile_enable_vae", boolean=True),
               choices=boolean_choice(reverse=True)),
    AxisOption("[Hypertile] VAE Max Depth", int, apply_override("hypertile_max_depth_vae"),
               confirm=confirm_range(0, 3, "[Hypertile] VAE Max Depth"), choices=lambda p=None: [str(x) for x in range(4)]),
    AxisOption("[Hypertile] VAE Max Tile Size", int, apply_override("hypertile_max_tile_vae"),
               confirm=confirm_range(0, 512, "[Hypertile] VAE Max Tile Size")),
    AxisOption("[Hypertile] VAE Swap Size", int, apply_override("hypertile_swap_size_vae"),
               confirm=confirm_range(0, 64, "[Hypertile] VAE Swap Size")),
]


def current_axis_options(is_img2img: bool) -> list[AxisOption]:
    return [x for x in axis_options if x.is_img2img is None or x.is_img2img == is_img2img]


# -- value syntax (A1111's regular expressions, as they are) ------------------------------------------------------------

re_range = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\(([+-]\d+)\s*\))?\s*")
re_range_float = re.compile(r"\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\(([+-]\d+(?:.\d*)?)\s*\))?\s*")

re_range_count = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\[(\d+)\s*])?\s*")
re_range_count_float = re.compile(r"\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\[(\d+(?:.\d*)?)\s*])?\s*")


def _num(text: str) -> str:
    return re.sub(r"\s+", "", text)  # "+ 5" -> "+5" (Python's int() refuses the inner space A1111's regex allows)


def expand_values(opt: AxisOption, valslist: list[str]) -> list:
    """A1111 process_axis after the list is split: ranges expanded, then every value converted by the axis type.
    Raises ValueError for a value that does not convert."""
    import numpy as np

    if opt.type == int:
        valslist_ext = []
        for val in valslist:
            if val.strip() == "":
                continue
            m = re_range.fullmatch(val)
            mc = re_range_count.fullmatch(val)
            if m is not None:
                start = int(_num(m.group(1)))
                end = int(_num(m.group(2))) + 1
                step = int(m.group(3)) if m.group(3) is not None else 1
                valslist_ext += list(range(start, end, step))
            elif mc is not None:
                start = int(_num(mc.group(1)))
                end = int(_num(mc.group(2)))
                num = int(mc.group(3)) if mc.group(3) is not None else 1
                valslist_ext += [int(x) for x in np.linspace(start=start, stop=end, num=num).tolist()]
            else:
                valslist_ext.append(val)
        valslist = valslist_ext
    elif opt.type == float:
        valslist_ext = []
        for val in valslist:
            if val.strip() == "":
                continue
            m = re_range_float.fullmatch(val)
            mc = re_range_count_float.fullmatch(val)
            if m is not None:
                start = float(_num(m.group(1)))
                end = float(_num(m.group(2)))
                step = float(m.group(3)) if m.group(3) is not None else 1
                valslist_ext += np.arange(start, end + step, step).tolist()
            elif mc is not None:
                start = float(_num(mc.group(1)))
                end = float(_num(mc.group(2)))
                num = int(mc.group(3)) if mc.group(3) is not None else 1
                valslist_ext += np.linspace(start=start, stop=end, num=num).tolist()
            else:
                valslist_ext.append(val)
        valslist = valslist_ext
    elif opt.type == str_permutations:
        valslist = list(permutations(valslist))

    return [opt.type(x) for x in valslist]


def fix_seed_value(value) -> int:
    """A1111 processing.get_fixed_seed: None, '' and -1 become a random seed."""
    if value is None or value == "" or value == -1:
        return int(random.randrange(4294967294))
    return value


# -- grids ------------------------------------------------------------------------------------------------------------


def _uniform(images: list) -> list:
    """Cells of the largest size: smaller images centred on black (only with the Size axis do sizes differ)."""
    from PIL import Image

    w, h = map(max, zip(*(im.size for im in images)))
    out = []
    for im in images:
        if im.size == (w, h):
            out.append(im)
            continue
        cell = Image.new("RGB", (w, h), "black")
        cell.paste(im, ((w - im.width) // 2, (h - im.height) // 2))
        out.append(cell)
    return out


def draw_xyz_grid(p, xs, ys, zs, x_labels, y_labels, z_labels, cell, draw_legend, include_lone_images,
                  include_sub_grids, first_axes_processed, second_axes_processed, margin_size):
    """A1111 draw_xyz_grid: run every cell (the costly axis outermost), then one X*Y grid per Z value with its
    legends and the grid of those grids, inserted first; infotexts / prompts / seeds laid out as A1111 does."""
    from PIL import Image

    from webui.core.generation.processing import Processed
    from webui.core.io.grid_annotations import GridAnnotation, draw_grid_annotations
    from webui.core.io.images import image_grid

    get_option = p.opts.get
    hor_texts = [[GridAnnotation(x)] for x in x_labels]
    ver_texts = [[GridAnnotation(y)] for y in y_labels]
    title_texts = [[GridAnnotation(z)] for z in z_labels]

    list_size = len(xs) * len(ys) * len(zs)
    processed_result = None
    failures: list[Exception] = []

    def process_cell(x, y, z, ix, iy, iz):
        nonlocal processed_result

        def index(ix, iy, iz):
            return ix + iy * len(xs) + iz * len(xs) * len(ys)

        processed = cell(x, y, z, ix, iy, iz, failures)

        if processed_result is None:
            # Use our first processed result object as a template container to hold our full results
            processed_result = copy.copy(processed)
            processed_result.images = [None] * list_size
            processed_result.all_prompts = [None] * list_size
            processed_result.all_seeds = [None] * list_size
            processed_result.infotexts = [None] * list_size
            processed_result.index_of_first_image = 1

        idx = index(ix, iy, iz)
        if processed.images:
            # Non-empty list indicates some degree of success.
            processed_result.images[idx] = processed.images[0]
            processed_result.all_prompts[idx] = processed.all_prompts[0] if processed.all_prompts else p.prompt
            processed_result.all_seeds[idx] = processed.seed
            processed_result.infotexts[idx] = processed.infotexts[0]
        else:
            cell_mode = "P"
            cell_size = (p.width, p.height)
            first = next((im for im in processed_result.images if im is not None), None)
            if first is not None:
                cell_mode = first.mode
                cell_size = first.size  # This corrects size in case of batches
            processed_result.images[idx] = Image.new(cell_mode, cell_size)

    order = {"x": (xs, 0), "y": (ys, 1), "z": (zs, 2)}
    third = ({"x", "y", "z"} - {first_axes_processed, second_axes_processed}).pop()
    axes = [first_axes_processed, second_axes_processed, third]
    for i0, v0 in enumerate(order[axes[0]][0]):
        for i1, v1 in enumerate(order[axes[1]][0]):
            for i2, v2 in enumerate(order[axes[2]][0]):
                picked = {axes[0]: (i0, v0), axes[1]: (i1, v1), axes[2]: (i2, v2)}
                (ix, x), (iy, y), (iz, z) = picked["x"], picked["y"], picked["z"]
                process_cell(x, y, z, ix, iy, iz)

    if failures and len(failures) == list_size:
        # A1111 prints each failure and returns a grid of empty cells; with no image at all we say why instead.
        raise failures[0]
    if not processed_result:
        return Processed(p, [])

    # Newer Pillow has no limit problem here, but A1111 lifts it for big grids: do the same for this call's images.
    Image.MAX_IMAGE_PIXELS = None
    if len({im.size for im in processed_result.images}) > 1:
        processed_result.images = _uniform(processed_result.images)

    z_count = len(zs)

    for i in range(z_count):
        start_index = (i * len(xs) * len(ys)) + i
        end_index = start_index + len(xs) * len(ys)
        grid = image_grid(processed_result.images[start_index:end_index], rows=len(ys))
        if draw_legend:
            grid_max_w, grid_max_h = map(max, zip(*(img.size for img in processed_result.images[start_index:end_index])))
            grid = draw_grid_annotations(grid, grid_max_w, grid_max_h, hor_texts, ver_texts, margin_size,
                                         get_option=get_option)
        processed_result.images.insert(i, grid)
        processed_result.all_prompts.insert(i, processed_result.all_prompts[start_index])
        processed_result.all_seeds.insert(i, processed_result.all_seeds[start_index])
        processed_result.infotexts.insert(i, processed_result.infotexts[start_index])

    z_grid = image_grid(processed_result.images[:z_count], rows=1)
    z_sub_grid_max_w, z_sub_grid_max_h = map(max, zip(*(img.size for img in processed_result.images[:z_count])))
    if draw_legend:
        z_grid = draw_grid_annotations(z_grid, z_sub_grid_max_w, z_sub_grid_max_h, title_texts,
                                       [[GridAnnotation()]], get_option=get_option)
    processed_result.images.insert(0, z_grid)
    # A1111: "Deeper aspects of the program rely on grid info being misaligned between metadata arrays": the grid
    # of grids gets an infotext but no prompt / seed entry.
    processed_result.infotexts.insert(0, processed_result.infotexts[0])

    return processed_result


def add_infotext_params(text: str, params: dict[str, Any]) -> str:
    """``text`` (an image's infotext) with ``params`` added where A1111's create_infotext puts extra generation
    params: after the others, before ``Version`` (and ``User``)."""
    from webui.core.io.infotext import quote

    if not params:
        return text
    added = ", ".join(k if k == v else f"{k}: {quote(v)}" for k, v in params.items() if v is not None)
    head, sep, last = text.rpartition("\n")
    if not sep:
        head, last = "", text
    for marker in (", Version: ", ", User: "):
        pos = last.find(marker)
        if pos >= 0:
            last = f"{last[:pos]}, {added}{last[pos:]}"
            break
    else:
        if last.startswith("Version: ") or last.startswith("User: "):
            last = f"{added}, {last}"
        else:
            last = f"{last}, {added}" if last else added
    return f"{head}\n{last}" if sep else last


class ScriptXYZGrid(Script):
    """A1111 scripts/xyz_grid.py ``Script``: "X/Y/Z plot" in both tabs."""

    def title(self):
        return TITLE

    def ui(self, is_img2img):
        labels = [x.label for x in current_axis_options(is_img2img)]
        args: list[ScriptArg] = []
        for axis, default in (("X", labels[1]), ("Y", labels[0]), ("Z", labels[0])):
            args += [
                ScriptArg(f"{axis} type", default, "dropdown", choices=labels, type="index"),
                ScriptArg(f"{axis} values", "", "textbox", lines=1),
                ScriptArg(f"{axis} values", None, "dropdown", choices=[], multiselect=True, visible=False),
            ]
        args += [
            ScriptArg("Draw legend", True, "checkbox"),
            ScriptArg("Include Sub Images", False, "checkbox"),
            ScriptArg("Include Sub Grids", False, "checkbox"),
            ScriptArg("Keep -1 for seeds", False, "checkbox"),
            ScriptArg("Vary seeds for X", False, "checkbox", info="Use different seeds for images along X axis."),
            ScriptArg("Vary seeds for Y", False, "checkbox", info="Use different seeds for images along Y axis."),
            ScriptArg("Vary seeds for Z", False, "checkbox", info="Use different seeds for images along Z axis."),
            ScriptArg("Grid margins (px)", 0, "slider", minimum=0, maximum=500, step=2),
            ScriptArg("Use text inputs instead of dropdowns", False, "checkbox"),
        ]
        self.infotext_fields = [(0, "X Type"), (1, "X Values"), (3, "Y Type"), (4, "Y Values"), (6, "Z Type"),
                                (7, "Z Values")]
        return args

    # -- argument checks ----------------------------------------------------------------------------------------------

    def _axis(self, options: list[AxisOption], value, arg: str) -> AxisOption:
        listed = ", ".join(f"{i}: {o.label}" for i, o in enumerate(options))
        if value is None or value == "":
            return options[0]  # A1111: "if axle type is None set to 0"
        if isinstance(value, bool):
            _fail(f"{arg}: {value!r} is not an axis type; valid: {listed}")
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            index = int(value)
            if 0 <= index < len(options):
                return options[index]
            _fail(f"{arg}: no axis type at index {index}; valid: {listed}")
        if isinstance(value, str):
            text = value.strip()
            if text.lstrip("-").isdigit():
                return self._axis(options, int(text), arg)
            found = next((o for o in options if o.label.lower() == text.lower()), None)
            if found is not None:
                return found
        _fail(f"{arg}: unknown axis type {value!r}; valid: {listed}")

    def _values(self, p, opt: AxisOption, vals, vals_dropdown, csv_mode: bool, axis: str) -> tuple[list, str]:
        """A1111 process_axis plus the confirm step: (values, the text the infotext's "<axis> Values" shows)."""
        arg = f"{axis} values"
        if vals is None:
            vals = ""
        if isinstance(vals, (list, tuple)):
            vals = list_to_csv_string([str(v) for v in vals])
        if not isinstance(vals, str):
            _fail(f"{arg}: must be text (comma-separated values), got {vals!r}")
        if vals_dropdown is None:
            vals_dropdown = []
        elif isinstance(vals_dropdown, str):
            vals_dropdown = csv_string_to_list_strip(vals_dropdown)
        elif not isinstance(vals_dropdown, (list, tuple)):
            _fail(f"{arg} (dropdown): must be a list of values, got {vals_dropdown!r}")
        vals_dropdown = [str(v) for v in vals_dropdown]

        if opt.label == "Nothing":
            return [0], vals

        if opt.choices is not None and not csv_mode and vals_dropdown:
            valslist = list(vals_dropdown)
            vals = list_to_csv_string(vals_dropdown)
        elif opt.prepare is not None:
            valslist = opt.prepare(vals)
        else:
            valslist = csv_string_to_list_strip(vals)

        try:
            valslist = expand_values(opt, valslist)
        except ValueError as e:
            kind = {int: "whole numbers", float: "numbers"}.get(opt.type, "values")
            _fail(f"{arg}: cannot read {vals!r} as {kind} for axis {opt.label!r} ({e}); write a list (1, 2, 3) or a "
                  f"range (1-5, 1-5 (+2), 1-10 [5])")
        if not valslist:
            choices = f"; choices: {', '.join(map(str, opt.choices(p)))}" if opt.choices is not None else ""
            _fail(f"{arg}: no values for axis {opt.label!r}{choices}")

        if opt.label == "Prompt S/R" and valslist[0] not in p.prompt and valslist[0] not in p.negative_prompt:
            _fail(f"{arg}: Prompt S/R did not find {valslist[0]} in prompt or negative prompt.")

        # Confirm options are valid before starting
        if opt.confirm:
            try:
                opt.confirm(p, valslist)
            except ValueError as e:
                choices = f"; valid: {', '.join(map(str, opt.choices(p)))}" if opt.choices is not None else ""
                message = str(e) if "; valid:" in str(e) else f"{e}{choices}"
                _fail(f"{arg} ({opt.label}): {message}")
        return valslist, vals

    # -- the job ------------------------------------------------------------------------------------------------------

    def run(self, p, x_type=None, x_values="", x_values_dropdown=None, y_type=None, y_values="",
            y_values_dropdown=None, z_type=None, z_values="", z_values_dropdown=None, draw_legend=True,
            include_lone_images=False, include_sub_grids=False, no_fixed_seeds=False, vary_seeds_x=False,
            vary_seeds_y=False, vary_seeds_z=False, margin_size=0, csv_mode=False):
        from webui.core.generation.processing import Processed, process_images

        options = current_axis_options(p.is_img2img)
        x_opt = self._axis(options, x_type, "X type")
        y_opt = self._axis(options, y_type, "Y type")
        z_opt = self._axis(options, z_type, "Z type")

        if not no_fixed_seeds:
            p.seed = fix_seed_value(p.seed)
            p.subseed = fix_seed_value(p.subseed)

        opts = p.opts
        if not opts.get("return_grid"):
            p.batch_size = 1

        xs, x_values = self._values(p, x_opt, x_values, x_values_dropdown, csv_mode, "X")
        ys, y_values = self._values(p, y_opt, y_values, y_values_dropdown, csv_mode, "Y")
        zs, z_values = self._values(p, z_opt, z_values, z_values_dropdown, csv_mode, "Z")

        try:
            margin_size = int(margin_size or 0)
        except (TypeError, ValueError):
            _fail(f"Grid margins (px): {margin_size!r} is not a number of pixels")

        grid_mp = round(len(xs) * len(ys) * len(zs) * p.width * p.height / 1000000)
        max_mp = 200
        try:
            max_mp = int(opts.get("img_max_size_mp") or 200)
        except Exception:  # option not in this schema: A1111's default
            pass
        if grid_mp >= max_mp:
            _fail(f"Resulting grid would be too large ({grid_mp} MPixels) (max configured size is {max_mp} MPixels)")

        def fix_axis_seeds(axis_opt, axis_list):
            if axis_opt.label in ["Seed", "Var. seed"]:
                return [int(random.randrange(4294967294)) if val is None or val == "" or val == -1 else val
                        for val in axis_list]
            return axis_list

        if not no_fixed_seeds:
            xs = fix_axis_seeds(x_opt, xs)
            ys = fix_axis_seeds(y_opt, ys)
            zs = fix_axis_seeds(z_opt, zs)

        image_cell_count = p.n_iter * p.batch_size
        log.info("X/Y/Z plot will create %d images on %d %dx%d grid%s%s.", len(xs) * len(ys) * len(zs) *
                 image_cell_count, len(zs), len(xs), len(ys), "s" if len(zs) > 1 else "",
                 f"; {image_cell_count} images per cell" if image_cell_count > 1 else "")

        # If one of the axes is very slow to change between (like SD model checkpoint), then make sure it is in the
        # outer iteration of the nested `for` loop.
        first_axes_processed = "z"
        second_axes_processed = "y"
        if x_opt.cost > y_opt.cost and x_opt.cost > z_opt.cost:
            first_axes_processed = "x"
            second_axes_processed = "y" if y_opt.cost > z_opt.cost else "z"
        elif y_opt.cost > x_opt.cost and y_opt.cost > z_opt.cost:
            first_axes_processed = "y"
            second_axes_processed = "x" if x_opt.cost > z_opt.cost else "z"
        elif z_opt.cost > x_opt.cost and z_opt.cost > y_opt.cost:
            first_axes_processed = "z"
            second_axes_processed = "x" if x_opt.cost > y_opt.cost else "y"

        grid_infotext: list[str | None] = [None] * (1 + len(zs))
        title = self.title()

        def cell(x, y, z, ix, iy, iz, failures):
            progress = p.progress
            if progress is not None and getattr(progress, "interrupted", False):
                return Processed(p, [], p.seed, "")

            pc = p.copy()
            pc.styles = pc.styles[:]
            x_opt.apply(pc, x, xs)
            y_opt.apply(pc, y, ys)
            z_opt.apply(pc, z, zs)

            xdim = len(xs) if vary_seeds_x else 1
            ydim = len(ys) if vary_seeds_y else 1

            if vary_seeds_x:
                pc.seed += ix
            if vary_seeds_y:
                pc.seed += iy * xdim
            if vary_seeds_z:
                pc.seed += iz * xdim * ydim

            try:
                res = process_images(pc)
            except Exception as e:  # A1111: errors.display(e, "generating image for xyz plot"), an empty cell
                if progress is not None and getattr(progress, "interrupted", False):
                    raise
                log.exception("X/Y/Z plot: generating image for cell (%s, %s, %s)", x, y, z)
                failures.append(e)
                res = Processed(p, [], p.seed, "")

            cell_text = res.infotexts[0] if res.images and res.infotexts else ""

            # Sets subgrid infotexts
            subgrid_index = 1 + iz
            extra: dict[str, Any] = {}
            if grid_infotext[subgrid_index] is None and ix == 0 and iy == 0:
                extra["Script"] = title
                if x_opt.label != "Nothing":
                    extra["X Type"] = x_opt.label
                    extra["X Values"] = x_values
                    if x_opt.label in ["Seed", "Var. seed"] and not no_fixed_seeds:
                        extra["Fixed X Values"] = ", ".join([str(x) for x in xs])
                if y_opt.label != "Nothing":
                    extra["Y Type"] = y_opt.label
                    extra["Y Values"] = y_values
                    if y_opt.label in ["Seed", "Var. seed"] and not no_fixed_seeds:
                        extra["Fixed Y Values"] = ", ".join([str(y) for y in ys])
                grid_infotext[subgrid_index] = add_infotext_params(cell_text, extra)

            # Sets main grid infotext
            if grid_infotext[0] is None and ix == 0 and iy == 0 and iz == 0:
                if z_opt.label != "Nothing":
                    extra["Z Type"] = z_opt.label
                    extra["Z Values"] = z_values
                    if z_opt.label in ["Seed", "Var. seed"] and not no_fixed_seeds:
                        extra["Fixed Z Values"] = ", ".join([str(z) for z in zs])
                grid_infotext[0] = add_infotext_params(cell_text, extra)

            return res

        processed = draw_xyz_grid(
            p,
            xs=xs,
            ys=ys,
            zs=zs,
            x_labels=[x_opt.format_value(p, x_opt, x) for x in xs],
            y_labels=[y_opt.format_value(p, y_opt, y) for y in ys],
            z_labels=[z_opt.format_value(p, z_opt, z) for z in zs],
            cell=cell,
            draw_legend=draw_legend,
            include_lone_images=include_lone_images,
            include_sub_grids=include_sub_grids,
            first_axes_processed=first_axes_processed,
            second_axes_processed=second_axes_processed,
            margin_size=margin_size,
        )

        if not processed.images:
            # It broke, no further handling needed.
            return processed

        z_count = len(zs)

        # Set the grid infotexts to the real ones with extra_generation_params (1 main grid + z_count sub-grids)
        processed.infotexts[: 1 + z_count] = [t or "" for t in grid_infotext[: 1 + z_count]]

        if not include_lone_images:
            # Don't need sub-images anymore, drop from list:
            processed.images = processed.images[: z_count + 1]

        if opts.get("grid_save"):
            # Auto-save main and sub-grids:
            grid_count = z_count + 1 if z_count > 1 else 1
            for g in range(grid_count):
                # A1111: see the comment on the intentional data misalignment in draw_xyz_grid.
                adj_g = g - 1 if g > 0 else g
                save_script_grid(p, processed.images[g], "xyz_grid", processed.infotexts[g],
                                 processed.all_prompts[adj_g], processed.all_seeds[adj_g])
                if not include_sub_grids:  # if not include_sub_grids then skip saving after the first grid
                    break

        if not include_sub_grids:
            # Done with sub-grids, drop all related information:
            for _ in range(z_count):
                del processed.images[1]
                del processed.all_prompts[1]
                del processed.all_seeds[1]
                del processed.infotexts[1]

        return processed


def save_script_grid(p, image, basename: str, infotext: str | None, prompt: str | None, seed) -> str:
    """A1111 ``images.save_image(grid, p.outpath_grids, basename, info=..., extension=opts.grid_format,
    prompt=..., seed=..., grid=True)``: ``<basename>-NNNN-<seed>.png`` (short_filename is False there) in the grids
    folder, through the one grid writer."""
    from webui.core.io.images import save_grid

    opts = p.opts
    return save_grid(
        image, p.outpath_grids, seed, prompt, infotext, fmt=opts.get("grid_format") or "png",
        grid_save_to_dirs=bool(opts.get("grid_save_to_dirs")), grid_extended_filename=True,
        save_to_dirs=bool(opts.get("save_to_dirs")),
        directories_filename_pattern=opts.get("directories_filename_pattern") or "[date]",
        samples_filename_pattern=opts.get("samples_filename_pattern") or "",
        jpeg_quality=int(opts.get("jpeg_quality") or 80), basename=basename,
    )
