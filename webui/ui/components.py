"""Controls that txt2img and img2img share (A1111 ``ui_toprow.Toprow``, the sampler/size/seed rows, the output panel)
and the Generate wiring: build the request with the tab's ``to_request``, submit it to the shared queue, show the
progress bar and live preview while it runs, then the gallery and infotext -- or a readable error."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from webui.core.io.files import output_dir, under_data_dir
from webui.plugins.scripts import run_generation
from webui.ui import common
from webui.ui import styles as ui_styles

log = logging.getLogger(__name__)

#: A1111's tab names for the send-to buttons and paste targets.
SEND_TARGETS = ("img2img", "inpaint", "extras")

#: Slider limits of A1111's generation tabs (ui.py).
MAX_SIDE = 2048
MAX_STEPS = 150


@dataclass
class OutputPanel:
    """A1111 ``ui_common.create_output_panel``: gallery, infotext, log, buttons."""

    gallery: Any
    preview: Any
    progress: Any
    generation_info: Any
    html_info: Any
    html_log: Any
    selected_index: Any
    download: Any
    buttons: dict[str, Any] = field(default_factory=dict)


@dataclass
class TabUi:
    """What a generation tab exposes to ``blocks.py`` for cross-tab wiring (send-to, paste)."""

    name: str
    form: common.Form
    output: OutputPanel | None = None
    paste_fields: list = field(default_factory=list)
    image_target: Any = None  # where "send to <tab>" puts the image
    tab_id: str = ""
    toprow: Any = None  # the prompt row (its ↙ paste button)
    extra_networks: Any = None  # webui.ui.extra_networks.ExtraNetworksUi under the prompt


# --------------------------------------------------------------------------------------------------------------------
# choices
# --------------------------------------------------------------------------------------------------------------------


def sampler_choices(state) -> list[str]:
    from webui.core.generation.samplers import sampler_names

    hidden = set(state.settings.get("hide_samplers") or ())
    return [n for n in sampler_names() if n not in hidden]


def scheduler_choices() -> list[str]:
    from pipelines.schedules import SCHEDULERS

    return [s.label for s in SCHEDULERS]


def checkpoint_titles(state) -> list[str]:
    return list(state.registry.titles())


def current_checkpoint(state) -> str | None:
    """The title the top bar shows: the loaded model's, else the stored option's, else the first file's."""
    current = state.engine.current_model()
    if current is not None:
        return current.info.title
    stored = state.settings.get("sd_model_checkpoint")
    info = state.registry.resolve(stored) if stored else None
    if info is None and stored:
        info = state.registry.closest(stored)
    if info is None:
        models = state.registry.list()
        info = models[0] if models else None
    return info.title if info is not None else None


def upscaler_names(state) -> list[str]:
    """Pixel upscalers the engine's hires pass knows (the extras upscalers when wired, else Lanczos and Nearest)."""
    ups = getattr(state.engine, "upscalers", None)
    if ups is not None:
        try:
            return [u.name for u in ups.list(state.settings)]
        except Exception:  # a broken model folder must not break the page
            log.exception("listing upscalers failed")
    return ["None", "Lanczos", "Nearest"]


def hires_upscalers(state) -> list[str]:
    from webui.core.generation.imageops import LATENT_UPSCALE_MODES

    return [*LATENT_UPSCALE_MODES, *[n for n in upscaler_names(state) if n not in LATENT_UPSCALE_MODES]]


# --------------------------------------------------------------------------------------------------------------------
# the prompt row
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Toprow:
    prompt: Any
    negative_prompt: Any
    styles: Any
    generate: Any
    interrupt: Any
    skip: Any
    paste: Any
    clear: Any
    apply_styles: Any
    token_counter: Any
    negative_token_counter: Any
    task_id: Any
    styles_dialog: Any = None  # webui.ui.styles.StylesUi
    interrogate: Any = None  # img2img only: "Interrogate CLIP" (A1111 elem_id "interrogate")
    deepbooru: Any = None  # img2img only: "Interrogate DeepBooru" (A1111 elem_id "deepbooru")


def toprow(state, form: common.Form, tab: str) -> Toprow:
    with gr.Row(elem_id=f"{tab}_toprow", equal_height=False):
        with gr.Column(scale=6):
            prompt = form.add("prompt", gr.Textbox(label="Prompt", elem_id=f"{tab}_prompt", lines=3,
                                                   placeholder="Prompt\n(Press Ctrl+Enter to generate)"))
            token_counter = gr.HTML("<span class='token-count'>0/75</span>", elem_id=f"{tab}_token_counter",
                                    elem_classes=["token-counter"])
            negative = form.add("negative_prompt", gr.Textbox(label="Negative prompt", lines=2,
                                                              elem_id=f"{tab}_neg_prompt", placeholder="Negative prompt"))
            negative_counter = gr.HTML("<span class='token-count'>0/75</span>", elem_id=f"{tab}_negative_token_counter",
                                       elem_classes=["token-counter"])
        with gr.Column(scale=1, min_width=180, elem_id=f"{tab}_actions_column"):
            with gr.Row():
                interrupt = gr.Button("Interrupt", elem_id=f"{tab}_interrupt", visible=False, variant="stop")
                skip = gr.Button("Skip", elem_id=f"{tab}_skip", visible=False)
                generate = gr.Button("Generate", elem_id=f"{tab}_generate", variant="primary")
            with gr.Row():
                paste = gr.Button("↙️", elem_id=f"{tab}_paste", min_width=40, scale=0,
                                  elem_classes=["tool"])
                clear = gr.Button("🗑️", elem_id=f"{tab}_clear_prompt", min_width=40, scale=0, elem_classes=["tool"])
                apply_styles = gr.Button("📋", elem_id=f"{tab}_style_apply", min_width=40, scale=0,
                                         elem_classes=["tool"])
            interrogate = deepbooru = None
            if tab == "img2img":  # A1111's interrogate column: the prompt from the image of the selected sub-tab
                with gr.Row(elem_id=f"{tab}_interrogate_container", elem_classes=["interrogate-col"]):
                    interrogate = gr.Button("Interrogate CLIP", elem_id="interrogate", min_width=80)
                    deepbooru = gr.Button("Interrogate DeepBooru", elem_id="deepbooru", min_width=80)
            styles, edit_styles = ui_styles.dropdown_row(state, form, tab)
    styles_dialog = ui_styles.dialog(state, tab, styles, edit_styles, prompt, negative)
    task_id = gr.Textbox(visible=False, elem_id=f"{tab}_task_id")
    row = Toprow(prompt, negative, styles, generate, interrupt, skip, paste, clear, apply_styles, token_counter,
                 negative_counter, task_id, styles_dialog, interrogate, deepbooru)

    apply_styles.click(lambda p, n, s: ui_styles.materialize(state, p, n, s), [prompt, negative, styles],
                       [prompt, negative, styles], show_progress="hidden")
    clear.click(lambda: ("", ""), None, [prompt, negative], show_progress="hidden")
    interrupt.click(lambda t: _interrupt(state, t), [task_id], None, show_progress="hidden", concurrency_limit=None,
                    queue=False)
    skip.click(lambda t: _skip(state, t), [task_id], None, show_progress="hidden", concurrency_limit=None,
               queue=False)
    return row


def connect_token_counters(state, row: Toprow, steps) -> None:
    """A1111's token counters: N/75 after each edit (and when steps change, for prompt editing)."""

    def pos(text, n, styles):
        return common.token_counter_html(state, text, n, styles, is_positive=True)

    def neg(text, n, styles):
        return common.token_counter_html(state, text, n, styles, is_positive=False)

    for trigger in (row.prompt.change, steps.release):
        trigger(pos, [row.prompt, steps, row.styles], [row.token_counter], show_progress="hidden",
                trigger_mode="always_last", queue=False)
    row.negative_prompt.change(neg, [row.negative_prompt, steps, row.styles], [row.negative_token_counter],
                               show_progress="hidden", trigger_mode="always_last", queue=False)


def override_settings_dropdown(form: common.Form, tab: str):
    """A1111 ``create_override_settings_dropdown``: the settings a pasted infotext names that no control of the tab
    holds (Clip skip, VAE, ENSD, RNG, ...), as removable ``"key: value"`` entries; hidden while empty. The next
    generation sends them as its ``override_settings``."""
    dropdown = form.add("override_settings", gr.Dropdown([], value=[], label="Override settings", visible=False,
                                                         multiselect=True, elem_id=f"{tab}_override_settings"))
    dropdown.change(lambda x: gr.update(visible=bool(x)), [dropdown], [dropdown], show_progress="hidden",
                    queue=False)
    return dropdown


def override_settings_update(state, params: dict, fields: list) -> dict:
    """What pasting ``params`` does to the "Override settings" dropdown (A1111 ``connect_paste``'s paste_settings)."""
    from webui.core.io.paste import override_settings_pairs

    pairs = override_settings_pairs(params, fields, state.settings.get,
                                    disable_weights_auto_swap=bool(state.settings.get("disable_weights_auto_swap")))
    return gr.update(value=pairs, choices=pairs, visible=bool(pairs))


def paste_targets(ui: TabUi) -> list:
    """The components pasting an infotext into ``ui`` sets: its paste table's, then "Override settings"."""
    comps = [ui.form[f.name] for f in ui.paste_fields if f.name in ui.form]
    if "override_settings" in ui.form:
        comps.append(ui.form["override_settings"])
    return comps


def _interrupt(state, task_id: str) -> None:
    """Interrupt this tab's task: stopped when running (it still returns what it made), cancelled when queued."""
    if task_id:
        state.queue.interrupt(task_id)


def _skip(state, task_id: str) -> None:
    """Skip the current batch of this tab's task (only when it is the one running)."""
    if task_id and state.queue.current_task == task_id:
        state.queue.skip()


# --------------------------------------------------------------------------------------------------------------------
# the settings column
# --------------------------------------------------------------------------------------------------------------------


def sampler_row(state, form: common.Form, tab: str):
    with gr.Row(elem_id=f"{tab}_sampling_row"):
        form.add("sampler_name", gr.Dropdown(label="Sampling method", choices=sampler_choices(state),
                                             value="DPM++ 2M", elem_id=f"{tab}_sampling"))
        form.add("scheduler", gr.Dropdown(label="Schedule type", choices=scheduler_choices(), value="Automatic",
                                          elem_id=f"{tab}_scheduler"))
        steps = form.add("steps", gr.Slider(minimum=1, maximum=MAX_STEPS, step=1, value=20, label="Sampling steps",
                                            elem_id=f"{tab}_steps"))
    return steps


def size_rows(form: common.Form, tab: str, *, with_batch: bool = True):
    with gr.Row():
        with gr.Column(scale=4):
            width = form.add("width", gr.Slider(minimum=64, maximum=MAX_SIDE, step=8, value=512, label="Width",
                                                elem_id=f"{tab}_width"))
            height = form.add("height", gr.Slider(minimum=64, maximum=MAX_SIDE, step=8, value=512, label="Height",
                                                  elem_id=f"{tab}_height"))
        swap = gr.Button("⇅", elem_id=f"{tab}_res_switch_btn", min_width=40, scale=0, elem_classes=["tool"])
        if with_batch:
            with gr.Column(scale=2):
                form.add("n_iter", gr.Slider(minimum=1, maximum=100, step=1, value=1, label="Batch count",
                                             elem_id=f"{tab}_batch_count"))
                form.add("batch_size", gr.Slider(minimum=1, maximum=8, step=1, value=1, label="Batch size",
                                                 elem_id=f"{tab}_batch_size"))
    swap.click(lambda w, h: (h, w), [width, height], [width, height], show_progress="hidden", queue=False)
    return width, height


def batch_rows(form: common.Form, tab: str):
    with gr.Row():
        form.add("n_iter", gr.Slider(minimum=1, maximum=100, step=1, value=1, label="Batch count",
                                     elem_id=f"{tab}_batch_count"))
        form.add("batch_size", gr.Slider(minimum=1, maximum=8, step=1, value=1, label="Batch size",
                                         elem_id=f"{tab}_batch_size"))


def cfg_row(form: common.Form, tab: str):
    form.add("cfg_scale", gr.Slider(minimum=1.0, maximum=30.0, step=0.5, value=7.0, label="CFG Scale",
                                    elem_id=f"{tab}_cfg_scale"))


def seed_rows(form: common.Form, tab: str):
    """A1111 ``create_seed_inputs``: seed with 🎲 (-1) and ♻️ (last seed), and the Extra variation-seed controls."""
    with gr.Row(elem_id=f"{tab}_seed_row"):
        seed = form.add("seed", gr.Number(label="Seed", value=-1, precision=0, elem_id=f"{tab}_seed", scale=4))
        random_seed = gr.Button("🎲️", elem_id=f"{tab}_random_seed", min_width=40, scale=0, elem_classes=["tool"])
        reuse_seed = gr.Button("♻️", elem_id=f"{tab}_reuse_seed", min_width=40, scale=0, elem_classes=["tool"])
        extra = gr.Checkbox(label="Extra", value=False, elem_id=f"{tab}_subseed_show", scale=1)
    with gr.Group(visible=False, elem_id=f"{tab}_seed_extras") as extras:
        with gr.Row():
            subseed = form.add("subseed", gr.Number(label="Variation seed", value=-1, precision=0,
                                                    elem_id=f"{tab}_subseed", scale=4))
            random_subseed = gr.Button("🎲️", elem_id=f"{tab}_random_subseed", min_width=40, scale=0,
                                       elem_classes=["tool"])
            reuse_subseed = gr.Button("♻️", elem_id=f"{tab}_reuse_subseed", min_width=40, scale=0,
                                      elem_classes=["tool"])
            form.add("subseed_strength", gr.Slider(label="Variation strength", value=0.0, minimum=0, maximum=1,
                                                   step=0.01, elem_id=f"{tab}_subseed_strength", scale=4))
        with gr.Row():
            form.add("seed_resize_from_w", gr.Slider(minimum=0, maximum=MAX_SIDE, step=8, label="Resize seed from width",
                                                     value=0, elem_id=f"{tab}_seed_resize_from_w"))
            form.add("seed_resize_from_h", gr.Slider(minimum=0, maximum=MAX_SIDE, step=8,
                                                     label="Resize seed from height", value=0,
                                                     elem_id=f"{tab}_seed_resize_from_h"))
    form.add("seed_extras", extra)
    random_seed.click(lambda: -1, None, seed, show_progress="hidden", queue=False)
    random_subseed.click(lambda: -1, None, subseed, show_progress="hidden", queue=False)
    extra.change(lambda v: gr.update(visible=bool(v)), extra, extras, show_progress="hidden", queue=False)
    return seed, subseed, reuse_seed, reuse_subseed, extra, extras


def connect_reuse_seed(seed, reuse, output: OutputPanel, *, is_subseed: bool) -> None:
    """A1111 ``connect_reuse_seed``: the seed of the selected image of the last generation (-1 when none)."""

    def reuse_fn(info_json, index):
        try:
            info = json.loads(info_json or "{}")
        except ValueError:
            return -1
        seeds = info.get("all_subseeds" if is_subseed else "all_seeds") or []
        if not seeds:
            return info.get("subseed" if is_subseed else "seed", -1) or -1
        first = int(info.get("index_of_first_image", 0))
        i = int(index or 0) - first
        return seeds[i] if 0 <= i < len(seeds) else seeds[0]

    reuse.click(reuse_fn, [output.generation_info, output.selected_index], seed, show_progress="hidden", queue=False)


def script_controls(form: common.Form, tab: str, runner, state=None) -> None:
    """A1111's Script dropdown ("None" and the tab's selectable scripts) and, under it, each script's controls
    (``script_arg_controls``), shown only while that script is selected. Form names: ``script`` and
    ``script_arg_<position in the job's script_args>``."""
    titles = [s.title() for s in runner.selectable_scripts] if runner is not None else []
    dropdown = form.add("script", gr.Dropdown(label="Script", choices=["None", *titles], value="None",
                                              elem_id=f"{tab}_script", interactive=True))
    groups = []
    for script in runner.selectable_scripts if runner is not None else []:
        with gr.Group(visible=False, elem_id=script.elem_id("group")) as group:
            script_arg_controls(group, script, runner, form, state)
        groups.append(group)
    if groups:
        dropdown.change(lambda title: [gr.update(visible=title == t) for t in titles], dropdown, groups,
                        show_progress="hidden")


def script_arg_controls(container, script, runner, form: common.Form, state=None) -> None:
    """One script's controls inside ``container`` (its group or accordion, the current render context), registered
    as the form's ``script_arg_<position>``: the ones the script makes on the page itself (an A1111 extension's
    ui(), with its layout and events, as A1111 calls it inside its page), else built from its ScriptArgs. When the
    script's own fail (its ui() raises, or makes other controls than at start) the failure is recorded on its
    extension, what it had made is hidden, and the controls are built from the ScriptArgs: the page always builds."""
    if script.args_from is None:  # ui() made no controls at start
        return
    args = runner.inputs[script.args_from:script.args_to]
    made = len(container.children)
    try:
        controls = script.page_controls(runner.is_img2img, args)
    except Exception as e:
        extension = getattr(script, "extension", None)
        if extension is None:  # our own scripts' controls are our code: a failure is a bug to see
            raise
        extension.report("script ui() on the page", script.filename, e)
        for block in container.children[made:]:
            block.visible = False
            block.do_not_save_to_config = True  # not the defaults of ui-config.json (webui/ui/ui_config.py)
        controls = None
    if controls is not None:
        for offset, index in enumerate(range(script.args_from, script.args_to)):
            form.add(f"script_arg_{index}", controls[offset])
        return
    # an always-on script whose own accordion is gone gets one named after it, as the scripts without one
    wrap = gr.Accordion(_accordion_label(script), open=False, elem_id=script.elem_id("accordion")) \
        if script.alwayson and script.own_accordion else contextlib.nullcontext()
    with wrap:
        for index in range(script.args_from, script.args_to):
            form.add(f"script_arg_{index}", script_arg_component(runner.inputs[index],
                                                                 f"{script.elem_id('')}{index}", state))


def _accordion_label(script) -> str:
    """A script may name its accordion apart from its title (Dynamic Prompts: its title carries its version)."""
    return getattr(script, "accordion_label", None) or script.title()


def script_arg_component(arg, elem_id: str, state=None):
    """The gradio control for one ScriptArg (its kind, label, default, limits and choices -- the live lists of
    ``choices_from`` when ``state`` is given)."""
    common_kw = dict(label=arg.label, value=arg.value, elem_id=elem_id, visible=arg.visible, info=arg.info)
    kind = arg.kind
    choices = arg.live_choices(state)
    if kind == "slider":
        return gr.Slider(minimum=arg.minimum, maximum=arg.maximum, step=arg.step, **common_kw)
    if kind == "number":
        return gr.Number(precision=0 if isinstance(arg.value, int) and not isinstance(arg.value, bool) else None,
                         minimum=arg.minimum, maximum=arg.maximum, **common_kw)
    if kind == "checkbox":
        return gr.Checkbox(**common_kw)
    if kind == "dropdown":
        return gr.Dropdown(choices=list(choices or []), multiselect=arg.multiselect, type=arg.type,
                           allow_custom_value=False, **common_kw)
    if kind == "radio":
        return gr.Radio(choices=list(choices or []), type=arg.type, **common_kw)
    if kind == "checkboxgroup":
        return gr.CheckboxGroup(choices=list(choices or []), type=arg.type, **common_kw)
    if kind == "image":
        return gr.Image(type="pil", **{k: v for k, v in common_kw.items() if k != "info"})
    if kind == "html":  # an explanation box (Outpainting mk2, SD upscale): its value is the HTML
        return gr.HTML(arg.value or "", elem_id=elem_id, visible=arg.visible)
    if kind == "state":  # an A1111 extension script's gr.State: a value with no control
        return gr.State(arg.value)
    if kind == "file":
        return gr.File(type="binary", label=arg.label, elem_id=elem_id, visible=arg.visible)
    return gr.Textbox(lines=arg.lines, **common_kw)


def selected_script_args(values: dict, runner) -> tuple:
    """The job's positional ``script_args`` from the form: the selected script's controls over the runner's
    defaults (images as PNG bytes: requests carry no PIL objects)."""

    def args_of(script) -> list:
        out = []
        for index in range(script.args_from, script.args_to):
            value = values.get(f"script_arg_{index}", runner.inputs[index].value)
            out.append(common.png_bytes(value) if hasattr(value, "save") and hasattr(value, "size") else value)
        return out

    # the always-on scripts whose controls are on the page (Soft Inpainting, Extra options)
    alwayson = {s.title(): args_of(s) for s in runner.alwayson_scripts
                if any(f"script_arg_{i}" in values for i in range(s.args_from, s.args_to))}
    title = values.get("script") or "None"
    if title == "None" or runner.find(title) is None:
        return runner.script_args(None, [], alwayson)
    return runner.script_args(title, args_of(runner.find(title)), alwayson)


def alwayson_scripts_ui(state, form: common.Form, tab: str, runner=None) -> None:
    """The always-on scripts' controls under the generation parameters (A1111's AlwaysVisible scripts' ui()): the
    runner's (an accordion each, or a group around the script's own accordion; Refiner, Seed and Sampler are the
    tab's own controls) and the plugins'."""
    for script in runner.alwayson_scripts if runner is not None else []:
        if script.setup_for_ui_only or script.args_to == script.args_from:
            continue
        if script.own_accordion:  # A1111: the script's own accordion (or InputAccordion) in a plain group
            container = gr.Group(elem_id=script.elem_id("group"))
        else:
            container = gr.Accordion(_accordion_label(script), open=False, elem_id=script.elem_id("accordion"))
        with container:
            script_arg_controls(container, script, runner, form, state)
    if state.plugins is not None:
        state.plugins.call("ui_alwayson", state=state, form=form, tab=tab)


def script_args(values: dict, plugins, tab: str, runner=None) -> dict:
    """The form's values -> the request's ``extension_args``: one entry per plugin that has controls on the tab
    ({title: parsed args}), and the job's positional ``script_args`` when the tab has a script runner."""
    out: dict = {}
    if plugins is not None:
        for parsed in plugins.call("ui_script_args", values=values, tab=tab):
            out.update(parsed)
    if runner is not None:
        out["script_args"] = selected_script_args(values, runner)
    return out


# --------------------------------------------------------------------------------------------------------------------
# the output panel
# --------------------------------------------------------------------------------------------------------------------


def output_panel(state, tab: str, *, send_buttons: tuple[str, ...] = SEND_TARGETS) -> OutputPanel:
    with gr.Column(elem_id=f"{tab}_results", scale=5):
        progress = gr.HTML("", elem_id=f"{tab}_progress", elem_classes=["progress-holder"])
        preview = gr.Image(label="Live preview", visible=False, interactive=False, elem_id=f"{tab}_live_preview",
                           height=256, format="png", elem_classes=["live-preview"])
        gallery = gr.Gallery(label="Output", show_label=False, elem_id=f"{tab}_gallery", columns=4, format="png",
                             object_fit="contain", height="auto", preview=True, interactive=False)
        with gr.Row(elem_id=f"{tab}_image_buttons", elem_classes=["image-buttons"]):
            buttons = {
                "open_folder": gr.Button("📂", elem_id=f"{tab}_open_folder", min_width=40,
                                         interactive=not (state.config.is_non_local or state.config.hide_ui_dir_config),
                                         elem_classes=["tool"]),
                "save": gr.Button("💾", elem_id=f"{tab}_save", min_width=40, elem_classes=["tool"]),
                "zip": gr.Button("🗃️", elem_id=f"{tab}_save_zip", min_width=40, elem_classes=["tool"]),
            }
            for target in send_buttons:
                label = {"img2img": "🖼️ img2img", "inpaint": "🎨️ inpaint", "extras": "📐 extras"}[target]
                buttons[f"send_{target}"] = gr.Button(label, elem_id=f"{tab}_send_to_{target}", min_width=40)
        download = gr.File(label="Download", file_count="multiple", interactive=False, visible=False,
                           elem_id=f"{tab}_download_files")
        generation_info = gr.Textbox(visible=False, elem_id=f"{tab}_generation_info")
        selected_index = gr.Number(value=-1, precision=0, visible=False, elem_id=f"{tab}_selected_index")
        html_info = gr.HTML(elem_id=f"html_info_{tab}", elem_classes=["infotext"])
        html_log = gr.HTML(elem_id=f"html_log_{tab}", elem_classes=["html-log"])
    panel = OutputPanel(gallery, preview, progress, generation_info, html_info, html_log, selected_index, download,
                        buttons)

    def select(info_json, evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else (evt.index[0] if evt.index else 0)
        text = common.selected_infotext(info_json, index)
        return index, common.info_html(text) if text else gr.update()

    gallery.select(select, [generation_info], [selected_index, html_info], show_progress="hidden", queue=False)
    buttons["open_folder"].click(lambda: _open_folder(state, tab), None, html_log, show_progress="hidden")
    buttons["save"].click(lambda g, i, info: _save_images(state, tab, g, i, info, as_zip=False),
                          [gallery, selected_index, generation_info], [download, html_log])
    buttons["zip"].click(lambda g, i, info: _save_images(state, tab, g, i, info, as_zip=True),
                         [gallery, selected_index, generation_info], [download, html_log])
    return panel


def _open_folder(state, tab: str) -> str:
    """A1111's 📂: open the output folder on the server's desktop (refused on a non-local server)."""
    if state.config.is_non_local or state.config.hide_ui_dir_config:
        return common.error_html(PermissionError("opening folders is disabled on a server reachable from the network"))
    folder = output_dir(state.settings.get, tab, state.config.data_dir)
    os.makedirs(folder, exist_ok=True)
    opener = shutil.which("xdg-open") or shutil.which("open")
    if opener is None:
        return f"<div class='webui-notice'>{common.plaintext_to_html('Output folder: ' + folder)}</div>"
    subprocess.Popen([opener, folder], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return f"<div class='webui-notice'>{common.plaintext_to_html('Opened ' + folder)}</div>"


def _save_images(state, tab: str, gallery_value, index, info_json, *, as_zip: bool):
    """A1111's 💾 / 🗃️ (ui_common.save_files): copy the shown images (only the selected one with option
    save_selected_only) into ``outdir_save`` with their infotext, and offer them -- or a zip of them -- for download."""
    from webui.core.io.images import save_generated_image

    if not gallery_value:
        return gr.update(visible=False), common.error_html(ValueError("there are no images to save"))
    try:
        info = json.loads(info_json or "{}")
    except ValueError:
        info = {}
    texts = info.get("infotexts") or []
    seeds = info.get("all_seeds") or []
    first = int(info.get("index_of_first_image", 0))
    items = list(enumerate(gallery_value))
    if state.settings.get("save_selected_only") and index is not None and 0 <= int(index) < len(items):
        items = [items[int(index)]]
    outdir = under_data_dir(state.settings.get("outdir_save"), state.config.data_dir)
    saved = []
    try:
        for i, _ in items:
            image = common.gallery_image(gallery_value, i)
            text = texts[i] if i < len(texts) else image.info.get("parameters")
            seed = seeds[i - first] if 0 <= i - first < len(seeds) else None
            saved.append(save_generated_image(image, outdir, seed, None, text, fmt=state.settings.get("samples_format"),
                                              save_to_dirs=False, samples_filename_pattern="[seed]",
                                              jpeg_quality=int(state.settings.get("jpeg_quality"))))
        if as_zip:
            fd, zip_path = tempfile.mkstemp(prefix="images-", suffix=".zip")
            os.close(fd)
            with zipfile.ZipFile(zip_path, "w") as zf:
                for path in saved:
                    zf.write(path, os.path.basename(path))
            saved = [zip_path]
    except Exception as e:
        log.exception("saving images failed")
        return gr.update(visible=False), common.error_html(e)
    names = ", ".join(os.path.basename(p) for p in saved)
    return gr.update(value=saved, visible=True), f"<div class='webui-notice'>Saved: {names}</div>"


# --------------------------------------------------------------------------------------------------------------------
# Generate
# --------------------------------------------------------------------------------------------------------------------


def wire_generate(state, tab: str, row: Toprow, form: common.Form, output: OutputPanel,
                  make_requests: Callable[[dict], list], runner=None) -> None:
    """Generate: ``make_requests(named values)`` builds the request(s) (a tab's ``to_request``; img2img batch makes
    several); each runs as a job on the shared queue while the progress bar and live preview update; then the
    gallery and infotext show the result, or the error as a readable message. The buttons always come back."""

    def running(on: bool) -> dict:
        return {row.generate: gr.update(visible=not on), row.interrupt: gr.update(visible=on),
                row.skip: gr.update(visible=on)}

    def finish(extra: dict) -> dict:
        return {**running(False), output.progress: "", output.preview: gr.update(visible=False, value=None), **extra}

    def generate(values: dict):
        named = form.named(values)
        try:
            requests = make_requests(named)
        except Exception as e:
            yield finish({output.html_log: common.error_html(e)})
            return
        results = []
        yield {**running(True), output.html_log: "", output.progress: "<div class='webui-progress'>Waiting...</div>"}
        for request in requests:
            task_id = common.q.new_task_id(tab)
            request = request.replace(task_id=task_id)
            try:
                future = common.submit(state, tab, lambda p, r=request: run_generation(state.engine, runner, r, p),
                                       task_id)
            except Exception as e:
                yield finish({output.html_log: common.error_html(e)})
                return
            yield {row.task_id: task_id}
            for tick in common.watch(state, future):
                update = {output.progress: tick.html}
                if tick.preview is not None:
                    update[output.preview] = gr.update(value=tick.preview, visible=True)
                yield update
            try:
                results.append(future.result())
            except Exception as e:
                log.warning("%s failed: %s", tab, e)
                yield finish({output.html_log: common.error_html(e)})
                return
            if state.queue.task_status(task_id).status == common.q.INTERRUPTED:
                break  # Interrupt ends an img2img batch too
        if not results:
            yield finish({})
            return
        shown = _merge_results(state, results)
        text = common.selected_infotext(shown.info_json, None)
        common.write_last_generation(state, text)
        yield finish({output.gallery: shown.images, output.generation_info: shown.info_json,
                      output.html_info: shown.html, output.selected_index: -1})

    def restore(task_id: str):
        """A1111 ``restore_progress``: the page came back (a reload) while its task ran -- follow it by its id
        (kept in the browser's localStorage) and show its result; a finished task's result is still shown when it
        is one of the last ones (``state.queue.future``); an unknown id shows nothing."""
        future = state.queue.future(task_id) if task_id else None
        if future is None:
            yield finish({})
            return
        yield {**running(True), row.task_id: task_id, output.html_log: ""}
        for tick in common.watch(state, future):
            update = {output.progress: tick.html}
            if tick.preview is not None:
                update[output.preview] = gr.update(value=tick.preview, visible=True)
            yield update
        try:
            result = future.result()
        except Exception as e:
            yield finish({output.html_log: common.error_html(e)})
            return
        shown = common.shown_result(state, result)
        yield finish({output.gallery: shown.images, output.generation_info: shown.info_json,
                      output.html_info: shown.html, output.selected_index: -1})

    outputs = [row.generate, row.interrupt, row.skip, row.task_id, output.progress, output.preview, output.gallery,
               output.generation_info, output.html_info, output.html_log, output.selected_index]
    inputs = form.inputs()
    # the task id is kept in localStorage while the job runs (javascript/progress_restore.js reads it from the
    # progress bar); it is forgotten when the job's result is shown
    forget = f"() => {{ localStorage.removeItem('{tab}_task_id'); }}"
    row.generate.click(generate, inputs, outputs, show_progress="hidden", concurrency_limit=None).then(
        None, None, None, js=forget)
    row.prompt.submit(generate, inputs, outputs, show_progress="hidden", concurrency_limit=None).then(
        None, None, None, js=forget)
    restore_button = gr.Button("Restore progress", elem_id=f"{tab}_restore_progress", elem_classes=["webui-hidden"])
    restore_button.click(restore, [row.task_id], outputs, show_progress="hidden", concurrency_limit=None,
                         js=f"() => localStorage.getItem('{tab}_task_id') || ''").then(None, None, None, js=forget)


def _merge_results(state, results: list) -> common.ShownResult:
    if len(results) == 1:
        return common.shown_result(state, results[0])
    images, texts, seeds = [], [], []
    for r in results:
        first = int(r.info.get("index_of_first_image", 0))
        images.extend(r.images[first:])
        texts.extend(r.infotexts[first:])
        seeds.extend(r.seeds)
    info_json = json.dumps({"infotexts": texts, "index_of_first_image": 0, "comments": [], "all_seeds": seeds})
    return common.ShownResult(images=images if not state.settings.get("do_not_show_images") else [],
                              info_json=info_json, html=common.info_html(texts[0] if texts else ""))
