"""The Settings tab (A1111 ``ui_settings``): every option of the schema (``webui.core.settings.OPTIONS``), grouped by
section with a section list on the left and "Show all pages"; Apply settings (checked exactly as POST
/sdapi/v1/options checks them, saved to config.json), Defaults (fills in the defaults, applied by Apply), Reload UI.
The values shown are read from the stored settings on every page load, so a reload shows what is saved."""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from webui.core.options import changed_options, store_options, switch_checkpoint
from webui.core.settings import OPTIONS, Option
from webui.ui import common
from webui.ui import components as c

log = logging.getLogger(__name__)

NAME = "settings"

#: A1111's section titles (shared_options.py ``options_section((id, title), ...)``).
SECTION_TITLES = {
    "saving-images": "Saving images/grids",
    "saving-paths": "Paths for saving",
    "saving-to-dirs": "Saving to a directory",
    "sd": "Stable Diffusion",
    "sdxl": "Stable Diffusion XL",
    "extra_networks": "Extra Networks",
    "vae": "VAE",
    "img2img": "img2img",
    "optimizations": "Optimizations",
    "compatibility": "Compatibility",
    "infotext": "Infotext",
    "ui": "User interface",
    "sampler-params": "Sampler parameters",
    "face-restoration": "Face restoration",
    "upscaling": "Upscaling",
    "system": "System",
    "api": "API",
    "training": "Training",
    "interrogate": "Interrogate",
    "postprocessing": "Postprocessing",
    "hypertile": "Hypertile",
    "settings_in_ui": "Settings in UI",
}


def sections(settings=None) -> list[tuple[str, list[Option]]]:
    """(section id, its options) in table order, then the sections extensions added (their options too)."""
    out: dict[str, list[Option]] = {}
    for opt in (settings.options() if settings is not None else OPTIONS):
        if opt.section == "hidden":  # A1111's hidden options (section None) have no page
            continue
        out.setdefault(opt.section, []).append(opt)
    return list(out.items())


def section_title(section: str, opts: list[Option]) -> str:
    """A1111's title of a section; an extension's section carries its own (``OptionInfo(section=(id, title))``)."""
    if section in SECTION_TITLES:
        return SECTION_TITLES[section]
    return next((o.section_title for o in opts if o.section_title), section)


def choices_for(state, opt: Option) -> list | None:
    """Dropdown choices: the option's own, or the live lists A1111 computes for model/sampler/option keys."""
    if opt.choices:
        return list(opt.choices)
    key = opt.key
    if key == "sd_model_checkpoint":
        return c.checkpoint_titles(state)
    if key == "sd_vae":
        return ["Automatic", "None", *state.vae_registry.names()]
    if key in ("quicksettings_list", "infotext_skip_pasting"):
        return [o.key for o in state.settings.options()] if key == "quicksettings_list" else None
    if key == "hide_samplers":
        from webui.core.generation.samplers import sampler_names

        return sampler_names()
    if key == "sd_hypernetwork":
        return ["None", *(state.hypernetworks.names() if state.hypernetworks is not None else [])]
    if key in ("postprocessing_operation_order", "postprocessing_disable_in_extras"):
        from webui.core.postprocess.extras import POSTPROCESSING_ORDER

        return [name for name, _ in POSTPROCESSING_ORDER]
    if key == "interrogate_clip_skip_categories" and getattr(state, "interrogators", None) is not None:
        return state.interrogators.category_types()  # the *.txt lists of the interrogate/ folder
    return None


def component_for(state, opt: Option):
    """The control A1111 shows for an option, chosen from its default's type, choices and range."""
    label, d = opt.label, opt.default
    if opt.needs_reload_ui:
        label = f"{label} (requires Reload UI)"
    elem_id = f"setting_{opt.key}"
    choices = choices_for(state, opt)
    if opt.display_only:
        return gr.HTML(f"<p>{common.plaintext_to_html(label)}</p>", elem_id=elem_id)
    if opt.kind is not None:  # an extension's option names its control (A1111 OptionInfo.component)
        return extension_component(opt, label, elem_id, choices)
    if isinstance(d, bool):
        return gr.Checkbox(label=label, value=d, elem_id=elem_id)
    if isinstance(d, list):
        return gr.Dropdown(label=label, choices=choices or [], value=list(d), multiselect=True,
                           allow_custom_value=True, elem_id=elem_id)
    if choices is not None:
        return gr.Dropdown(label=label, choices=choices, value=d, allow_custom_value=opt.choices is None,
                           elem_id=elem_id)
    if isinstance(d, (int, float)):
        if opt.minimum is not None and opt.maximum is not None:
            return gr.Slider(label=label, minimum=opt.minimum, maximum=opt.maximum, step=opt.step or 1, value=d,
                             elem_id=elem_id)
        return gr.Number(label=label, value=d, precision=0 if isinstance(d, int) else None, elem_id=elem_id)
    return gr.Textbox(label=label, value="" if d is None else str(d), elem_id=elem_id)


def extension_component(opt: Option, label: str, elem_id: str, choices):
    """The control an extension's option asked for (``shared.OptionInfo(..., gr.Slider, {...})``), with its info."""
    d, kind, info = opt.default, opt.kind, opt.info
    if kind == "checkbox":
        return gr.Checkbox(label=label, value=bool(d), info=info, elem_id=elem_id)
    if kind == "slider":
        return gr.Slider(label=label, minimum=opt.minimum if opt.minimum is not None else 0,
                         maximum=opt.maximum if opt.maximum is not None else 100, step=opt.step or 1, value=d,
                         info=info, elem_id=elem_id)
    if kind == "number":
        return gr.Number(label=label, value=d, info=info, elem_id=elem_id)
    if kind == "radio":
        return gr.Radio(label=label, choices=choices or [], value=d, info=info, elem_id=elem_id)
    if kind in ("dropdown", "checkboxgroup"):
        multi = kind == "checkboxgroup" or isinstance(d, list)
        return gr.Dropdown(label=label, choices=choices or [], value=d, multiselect=multi, info=info,
                           elem_id=elem_id)
    if kind == "html":
        return gr.HTML(str(d or ""), elem_id=elem_id)
    return gr.Textbox(label=label, value="" if d is None else str(d), info=info, elem_id=elem_id)


def stored_value(state, opt: Option) -> Any:
    """The stored value in the form its control holds (None -> "" in text boxes)."""
    value = state.settings.get(opt.key)
    if value is None and not isinstance(opt.default, (bool, list)) and choices_for(state, opt) is None:
        return ""
    return value


def apply(state, values: dict[str, Any]) -> str:
    """A1111 ``run_settings``: every changed value checked as POST /options checks it (type, range, choices,
    --freeze-settings*, --hide-ui-dir-config, VAE/checkpoint names); all or nothing; saved to config.json. A new
    checkpoint is loaded on the worker first and stored under its title."""
    body = {}
    for key, value in values.items():
        opt = state.settings.option(key)
        if opt.display_only:
            continue
        if value == "" and opt.default is None:
            value = None
        if isinstance(opt.default, int) and not isinstance(opt.default, bool) and isinstance(value, float) \
                and value.is_integer():
            value = int(value)
        body[key] = value
    changes = checked_changes(state, body)
    ckpt = changes.get("sd_model_checkpoint")
    if ckpt is not None:
        changes["sd_model_checkpoint"] = common.submit(
            state, "load-model", lambda p: switch_checkpoint(state.engine, state.settings, ckpt, save=False)).result()
    store_options(state.settings, changes)
    if not changes:
        return "Nothing changed."
    return f"{len(changes)} settings changed: {', '.join(changes)}."


def checked_changes(state, body: dict[str, Any]) -> dict[str, Any]:
    """``webui.core.options.changed_options`` for a change made in the UI (as POST /options checks it)."""
    return changed_options(body, settings=state.settings, flags=state.config, registry=state.registry,
                           vae_registry=state.vae_registry, for_request=False)


def build(state) -> c.TabUi:
    form = common.Form()
    groups = sections(state.settings)
    with gr.Row():
        submit = gr.Button("Apply settings", variant="primary", elem_id="settings_submit")
        reload = gr.Button("Reload UI", elem_id="settings_restart_gradio")
        defaults = gr.Button("Defaults", elem_id="settings_defaults")
    result = gr.HTML(elem_id="settings_result")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=180):
            titles = [section_title(s, opts) for s, opts in groups]
            page = gr.Radio(titles, value=titles[0], label="Sections", elem_id="settings_sections")
            show_all = gr.Checkbox(label="Show all pages", value=False, elem_id="settings_show_all_pages")
        with gr.Column(scale=5):
            columns = []
            for i, (section, opts) in enumerate(groups):
                with gr.Column(visible=i == 0, elem_id=f"settings_section_{section}") as col:
                    gr.Markdown(f"### {section_title(section, opts)}")
                    for opt in opts:
                        comp = component_for(state, opt)
                        if not opt.display_only:
                            form.add(opt.key, comp)
                columns.append(col)

    def show(title, everything):
        return [gr.update(visible=bool(everything) or t == title) for t in titles]

    page.change(show, [page, show_all], columns, show_progress="hidden", queue=False)
    show_all.change(show, [page, show_all], columns, show_progress="hidden", queue=False)

    keys = list(form.components)
    outputs = [form[k] for k in keys]

    def run(values: dict):
        named = form.named(values)
        try:
            text = apply(state, named)
        except Exception as e:
            log.info("settings not applied: %s", e)
            return {result: common.error_html(e)}
        return {result: f"<div class='webui-notice'>{common.plaintext_to_html(text)}</div>",
                **{form[k]: stored_value(state, state.settings.option(k)) for k in keys}}

    submit.click(run, form.inputs(), [result, *outputs], show_progress="minimal")
    defaults.click(lambda: [state.settings.option(k).default if state.settings.option(k).default is not None
                            else "" for k in keys], None, outputs, show_progress="hidden", queue=False)
    reload.click(None, None, None, js="() => { window.location.reload(); }")
    ui = c.TabUi(name=NAME, form=form, tab_id=NAME)
    ui.load_values = lambda: [stored_value(state, state.settings.option(k)) for k in keys]
    ui.load_outputs = outputs
    return ui
