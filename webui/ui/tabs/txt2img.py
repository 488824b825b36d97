"""The txt2img tab (A1111 ui.py ``create_ui`` txt2img part): prompts, sampling, Hires. fix, Refiner, size, batch, CFG,
seed, Script, ControlNet, and the output panel. ``to_request`` is the one UI values -> GenerationRequest mapping."""

from __future__ import annotations

from typing import Any

import gradio as gr

from webui.core.io import paste
from webui.core.types import GenerationRequest, HiresOptions, RefinerOptions
from webui.ui import common
from webui.ui import components as c
from webui.ui import extra_networks

NAME = "txt2img"

USE_SAME_CHECKPOINT = "Use same checkpoint"
USE_SAME_SAMPLER = "Use same sampler"
USE_SAME_SCHEDULER = "Use same scheduler"


def to_request(values: dict[str, Any], plugins=None, runner=None) -> GenerationRequest:
    """The txt2img request from the tab's values by component name (A1111 ``modules/txt2img.txt2img_create_processing``).

    The UI always saves (option samples_save decides) and keeps the grid; Hires. fix passes its denoising strength
    only when enabled; "Use same ..." choices mean None (the first pass's).
    """
    enable_hr = bool(values.get("enable_hr"))
    hires = None
    if enable_hr:
        hires = HiresOptions(
            scale=float(values.get("hr_scale", 2.0)),
            upscaler=values.get("hr_upscaler") or "Latent",
            second_pass_steps=int(values.get("hr_second_pass_steps", 0)),
            resize_x=int(values.get("hr_resize_x", 0)),
            resize_y=int(values.get("hr_resize_y", 0)),
            checkpoint=_unless(values.get("hr_checkpoint_name"), USE_SAME_CHECKPOINT),
            sampler_name=_unless(values.get("hr_sampler_name"), USE_SAME_SAMPLER),
            scheduler=_unless(values.get("hr_scheduler"), USE_SAME_SCHEDULER),
            prompt=values.get("hr_prompt") or "",
            negative_prompt=values.get("hr_negative_prompt") or "",
        )
    return GenerationRequest(
        mode="txt2img",
        **common_fields(values),
        denoising_strength=float(values.get("denoising_strength", 0.7)) if enable_hr else None,
        hires=hires,
        refiner=refiner_options(values),
        extension_args=c.script_args(values, plugins, NAME, runner),
    )


def common_fields(values: dict[str, Any]) -> dict[str, Any]:
    """The fields txt2img and img2img read the same way (A1111's shared processing arguments)."""
    extra = bool(values.get("seed_extras"))

    def resize_from(key: str) -> int:
        # 0 on the slider means "off" (A1111 only uses seed_resize_from_* above 0); the request's "off" is -1
        return int(values.get(key) or 0) if extra and values.get(key) else -1

    seed = values.get("seed")
    return {
        "prompt": values.get("prompt") or "",
        "negative_prompt": values.get("negative_prompt") or "",
        "styles": tuple(values.get("styles") or ()),
        "seed": int(seed) if seed is not None else -1,
        # A1111 passes the variation controls only while "Extra" is ticked (create_seed_inputs' seed_checkbox)
        "subseed": int(values.get("subseed", -1)) if extra else -1,
        "subseed_strength": float(values.get("subseed_strength", 0.0)) if extra else 0.0,
        "seed_resize_from_w": resize_from("seed_resize_from_w"),
        "seed_resize_from_h": resize_from("seed_resize_from_h"),
        "sampler_name": values.get("sampler_name") or "DPM++ 2M",
        "scheduler": values.get("scheduler") or "Automatic",
        "steps": int(values.get("steps", 20)),
        "cfg_scale": float(values.get("cfg_scale", 7.0)),
        "width": int(values.get("width", 512)),
        "height": int(values.get("height", 512)),
        "batch_size": int(values.get("batch_size", 1)),
        "n_iter": int(values.get("n_iter", 1)),
        "save_images": True,
        "do_not_save_grid": False,
        "override_settings": paste.override_settings_dict(values.get("override_settings")),
    }


def refiner_options(values: dict[str, Any]) -> RefinerOptions | None:
    """A1111's Refiner accordion: used when enabled with a checkpoint chosen."""
    ckpt = values.get("refiner_checkpoint")
    if not values.get("enable_refiner") or ckpt in (None, "", "None"):
        return None
    return RefinerOptions(checkpoint=ckpt, switch_at=float(values.get("refiner_switch_at", 0.8)))


def _unless(value, same: str):
    return None if value in (None, "", same) else value


#: The paste button's table: ``webui.core.io.paste`` (shared with the API's ``infotext``).
PASTE_FIELDS = paste.TXT2IMG_FIELDS


def build(state) -> c.TabUi:
    """Lay the tab out (inside the caller's ``gr.Tab``) and wire Generate, paste, counters and seeds."""
    form = common.Form()
    row = c.toprow(state, form, NAME)
    networks = extra_networks.build(state, NAME, row.prompt, row.negative_prompt)
    with gr.Row(elem_id=f"{NAME}_extra_tabs"):
        with gr.Column(scale=4, elem_id=f"{NAME}_settings"):
            steps = c.sampler_row(state, form, NAME)
            with gr.Accordion("Hires. fix", open=False, elem_id=f"{NAME}_hr"):
                enable_hr = form.add("enable_hr", gr.Checkbox(label="Enable", value=False,
                                                              elem_id=f"{NAME}_enable_hr"))
                with gr.Row():
                    form.add("hr_upscaler", gr.Dropdown(label="Upscaler", choices=c.hires_upscalers(state),
                                                        value="Latent", elem_id=f"{NAME}_hr_upscaler"))
                    form.add("hr_second_pass_steps", gr.Slider(minimum=0, maximum=c.MAX_STEPS, step=1, value=0,
                                                               label="Hires steps", elem_id=f"{NAME}_hires_steps"))
                    form.add("denoising_strength", gr.Slider(minimum=0.0, maximum=1.0, step=0.01, value=0.7,
                                                             label="Denoising strength",
                                                             elem_id=f"{NAME}_denoising_strength"))
                with gr.Row():
                    form.add("hr_scale", gr.Slider(minimum=1.0, maximum=4.0, step=0.05, value=2.0, label="Upscale by",
                                                   elem_id=f"{NAME}_hr_scale"))
                    form.add("hr_resize_x", gr.Slider(minimum=0, maximum=c.MAX_SIDE, step=8, value=0,
                                                      label="Resize width to", elem_id=f"{NAME}_hr_resize_x"))
                    form.add("hr_resize_y", gr.Slider(minimum=0, maximum=c.MAX_SIDE, step=8, value=0,
                                                      label="Resize height to", elem_id=f"{NAME}_hr_resize_y"))
                with gr.Row():
                    form.add("hr_checkpoint_name", gr.Dropdown(
                        label="Hires checkpoint", choices=[USE_SAME_CHECKPOINT, *c.checkpoint_titles(state)],
                        value=USE_SAME_CHECKPOINT, elem_id=f"{NAME}_hr_checkpoint"))
                    form.add("hr_sampler_name", gr.Dropdown(label="Hires sampling method",
                                                            choices=[USE_SAME_SAMPLER, *c.sampler_choices(state)],
                                                            value=USE_SAME_SAMPLER, elem_id=f"{NAME}_hr_sampler"))
                    form.add("hr_scheduler", gr.Dropdown(label="Hires schedule type",
                                                         choices=[USE_SAME_SCHEDULER, *c.scheduler_choices()],
                                                         value=USE_SAME_SCHEDULER, elem_id=f"{NAME}_hr_scheduler"))
                with gr.Row():
                    form.add("hr_prompt", gr.Textbox(label="Hires prompt", lines=2, elem_id=f"{NAME}_hr_prompt",
                                                     placeholder="Prompt for hires fix pass.\nLeave empty to use the "
                                                                 "same prompt as in first pass."))
                    form.add("hr_negative_prompt", gr.Textbox(label="Hires negative prompt", lines=2,
                                                              elem_id=f"{NAME}_hr_neg_prompt",
                                                              placeholder="Negative prompt for hires fix pass.\nLeave "
                                                                          "empty to use the same negative prompt as "
                                                                          "in first pass."))
            refiner_accordion(state, form, NAME)
            c.size_rows(form, NAME)
            c.cfg_row(form, NAME)
            seed, subseed, reuse_seed, reuse_subseed, _, _ = c.seed_rows(form, NAME)
            c.override_settings_dropdown(form, NAME)
            c.alwayson_scripts_ui(state, form, NAME, state.scripts_txt2img)
            c.script_controls(form, NAME, state.scripts_txt2img, state)
        output = c.output_panel(state, NAME)
    networks.connect_gallery(output)
    del enable_hr
    c.connect_token_counters(state, row, steps)
    c.connect_reuse_seed(seed, reuse_seed, output, is_subseed=False)
    c.connect_reuse_seed(subseed, reuse_subseed, output, is_subseed=True)
    c.wire_generate(state, NAME, row, form, output,
                    lambda values: [to_request(values, state.plugins, state.scripts_txt2img)],
                    runner=state.scripts_txt2img)
    paste_fields = [*PASTE_FIELDS, *state.scripts_txt2img.paste_fields()]  # the scripts' infotext fields too
    return c.TabUi(name=NAME, form=form, output=output, paste_fields=paste_fields, tab_id=NAME, toprow=row,
                   extra_networks=networks)


def refiner_accordion(state, form: common.Form, tab: str) -> None:
    """A1111's Refiner (scripts/processing_scripts/refiner.py): checkpoint and "Switch at"."""
    with gr.Accordion("Refiner", open=False, elem_id=f"{tab}_refiner"):
        form.add("enable_refiner", gr.Checkbox(label="Enable", value=False, elem_id=f"{tab}_enable_refiner"))
        with gr.Row():
            form.add("refiner_checkpoint", gr.Dropdown(label="Checkpoint", choices=["None",
                                                                                   *c.checkpoint_titles(state)],
                                                       value="None", elem_id=f"{tab}_refiner_checkpoint"))
            form.add("refiner_switch_at", gr.Slider(minimum=0.01, maximum=1.0, step=0.01, value=0.8,
                                                    label="Switch at", elem_id=f"{tab}_refiner_switch_at"))
