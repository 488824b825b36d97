"""build_ui(state) -> gr.Blocks: A1111's page -- the top bar (checkpoint, quick settings) and the tabs txt2img, img2img,
Extras, PNG Info, Checkpoint Merger, Train, Settings -- with the send-to / paste wiring between them.

The UI closes over the AppState it is given: every job goes through ``state.queue`` (shared with the API), every
setting through ``state.settings``. Nothing is built at import.
"""

from __future__ import annotations

import logging

import gradio as gr

from webui.core.io.paste import paste_values
from webui.core.options import switch_checkpoint
from webui.core.settings import OPTIONS_BY_KEY
from webui.ui import common
from webui.ui import components as c
from webui.ui import ui_config
from webui.ui.tabs import extensions as extensions_tab
from webui.ui.tabs import extras, img2img, merger, pnginfo, settings, train, txt2img

log = logging.getLogger(__name__)

#: Quick settings shown next to the checkpoint when option quicksettings_list was never changed: the issue's (and
#: A1111 users' usual) sd_vae and CLIP_stop_at_last_layers. A stored quicksettings_list is used as it is.
DEFAULT_QUICKSETTINGS = ("sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers")

CSS = """
.webui-context-menu { position: absolute; z-index: 10000; background: #fff; border: 1px solid #888; border-radius: 6px;
  box-shadow: 0 2px 8px rgba(0,0,0,.25); }
.webui-context-menu ul { list-style: none; margin: 0; padding: 4px 0; }
.webui-context-menu li { padding: 4px 14px; cursor: pointer; color: #222; }
.webui-context-menu li:hover { background: #def; }
.webui-error { border: 1px solid #d33; background: #fee; color: #900; padding: 0.5em 1em; border-radius: 6px; }
.webui-error h3 { margin: 0 0 0.3em 0; color: #900; }
.webui-notice { border: 1px solid #cc8; background: #ffd; color: #553; padding: 0.4em 1em; border-radius: 6px; }
.webui-progress { position: relative; height: 1.6em; border: 1px solid #888; border-radius: 6px; overflow: hidden;
  background: #eee; }
.webui-progress .progress-bar { position: absolute; left: 0; top: 0; bottom: 0; background: #f97316; }
.webui-progress .progress-text { position: relative; padding: 0 0.5em; line-height: 1.6em; font-size: 0.9em;
  color: #111; }
.live-preview img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
.token-counter { text-align: right; font-size: 0.8em; opacity: 0.7; margin-top: -0.5em; }
button.tool { max-width: 3em; min-width: 2.5em !important; }
#interrogate, #deepbooru { white-space: normal; font-size: 0.85em; line-height: 1.2; padding: 0.3em 0.4em; }
.infotext p { font-family: monospace; font-size: 0.85em; word-break: break-word; }
.webui-hidden { display: none !important; }
"""


def quicksettings_keys(state) -> list[str]:
    stored = state.settings.values.get("quicksettings_list")
    keys = list(stored) if stored else list(DEFAULT_QUICKSETTINGS)
    return [k for k in keys if k in OPTIONS_BY_KEY]


def build_ui(state) -> gr.Blocks:
    """The whole page. Component values that depend on stored settings are refreshed on every page load."""
    if state.plugins is not None:
        state.plugins.call("on_before_ui", state=state)
    # the plugins' tabs are built before the page, as A1111 calls ui_tabs_callback before its gr.Blocks: a Blocks
    # made inside the page's context would also render itself where it was made
    plugin_tabs = _plugin_tabs(state)
    with gr.Blocks(title="Stable Diffusion", analytics_enabled=False) as demo:
        top = _top_bar(state)
        if state.demo_notice:
            gr.HTML(f"<div class='webui-notice'>{common.plaintext_to_html(state.demo_notice)}</div>",
                    elem_id="demo_notice")
        # start-up problems (a checkpoint that could not be loaded, ...), read on every page load
        notices = gr.HTML("", elem_id="startup_notices")
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"):
                t2i = txt2img.build(state)
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img"):
                i2i = img2img.build(state)
            with gr.Tab("Extras", id="extras", elem_id="tab_extras"):
                ext = extras.build(state)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                png = pnginfo.build(state)
            with gr.Tab("Checkpoint Merger", id="modelmerger", elem_id="tab_modelmerger"):
                merger.build(state)
            with gr.Tab("Train", id="train", elem_id="tab_train"):
                train.build(state, txt2img=t2i)
            # plugins' own tabs go after Train, before Settings (A1111 ui_tabs_callback)
            for blocks, title, elem_id in plugin_tabs:
                with gr.Tab(title, id=elem_id, elem_id=f"tab_{elem_id}"):
                    blocks.render()
            if state.plugins is not None:
                state.plugins.call("on_ui_settings", settings=state.settings)
            # ui-config.json: stored defaults and limits for the tabs built so far (A1111 ui_loadsave)
            defaults = ui_config.apply_defaults(state, tabs)
            with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                sett = settings.build(state)
                ui_config.defaults_page(defaults)
            with gr.Tab("Extensions", id="extensions", elem_id="tab_extensions"):  # A1111: last, after Settings
                extensions_load, extensions_outputs = extensions_tab.build(state)
        _wire_paste(state, t2i)
        _wire_paste(state, i2i)
        for ui in (t2i, i2i):  # a Checkpoints card selects the checkpoint the top bar shows
            ui.extra_networks.connect_checkpoint(top.checkpoint)
        _wire_send(state, tabs, t2i, i2i, ext, png)
        loads = [*top.load_outputs, *sett.load_outputs, notices]

        def on_load():
            return [*top.load_values(), *sett.load_values(), _notices_html(state)]

        demo.load(on_load, None, loads, show_progress="hidden")
        demo.load(extensions_load, None, extensions_outputs, show_progress="hidden")
        if state.plugins is not None:  # A1111 before/after_component callbacks, each component with its elem_id
            state.plugins.call("on_ui_components", state=state, components=_page_components(demo))
    return demo


def _page_components(demo) -> list:
    """``(component, kwargs)`` for every component of the page, in page order (kwargs as A1111 passes them)."""
    out = []
    for block in list(demo.blocks.values()):
        if isinstance(block, gr.components.Component):
            out.append((block, {"elem_id": block.elem_id, "label": getattr(block, "label", None),
                                "value": getattr(block, "value", None)}))
    return out


# --------------------------------------------------------------------------------------------------------------------
# top bar
# --------------------------------------------------------------------------------------------------------------------


class _Top:
    load_outputs: list
    checkpoint: object
    load_values: object


def _top_bar(state) -> _Top:
    """A1111's quicksettings row: the checkpoint dropdown with 🔄, then the other quick settings. Changing one stores
    and saves it at once (the checkpoint is loaded on the worker first, showing a message while it loads)."""
    keys = quicksettings_keys(state)
    if "sd_model_checkpoint" not in keys:
        keys.insert(0, "sd_model_checkpoint")
    comps: dict[str, object] = {}
    with gr.Row(elem_id="quicksettings", equal_height=True):
        for key in keys:
            opt = OPTIONS_BY_KEY[key]
            if key == "sd_model_checkpoint":
                comps[key] = gr.Dropdown(label="Stable Diffusion checkpoint", choices=c.checkpoint_titles(state),
                                         value=c.current_checkpoint(state), elem_id="setting_sd_model_checkpoint",
                                         allow_custom_value=True, scale=3)
                refresh = gr.Button("🔄", elem_id="refresh_sd_model_checkpoint", min_width=40, scale=0,
                                    elem_classes=["tool"])
            else:
                comp = settings.component_for(state, opt)
                comp.elem_id = f"setting_{key}"
                comps[key] = comp
        status = gr.HTML(elem_id="quicksettings_status")

    def load_values():
        out = []
        for key in keys:
            out.append(c.current_checkpoint(state) if key == "sd_model_checkpoint" else
                       settings.stored_value(state, OPTIONS_BY_KEY[key]))
        return out

    def change_checkpoint(title):
        current = c.current_checkpoint(state)
        if not title or title == current and state.engine.current_model() is not None:
            yield gr.update()
            return
        yield f"<div class='webui-notice'>Loading {common.plaintext_to_html(title)}...</div>"
        try:
            if settings.checked_changes(state, {"sd_model_checkpoint": title}):
                future = common.submit(state, "load-model",
                                       lambda p: switch_checkpoint(state.engine, state.settings, title))
                for tick in common.watch(state, future, previews=False):
                    yield tick.html
                future.result()
        except Exception as e:
            yield common.error_html(e)
            return
        yield ""

    def change_setting(key):
        def fn(value):
            try:
                settings.apply(state, {key: value})
            except Exception as e:
                return common.error_html(e)
            return ""
        return fn

    def refresh_checkpoints():
        state.registry.refresh()
        state.vae_registry.refresh()
        out = [gr.update(choices=c.checkpoint_titles(state), value=c.current_checkpoint(state))]
        if "sd_vae" in comps:
            out.append(gr.update(choices=["Automatic", "None", *state.vae_registry.names()]))
        return out

    for key, comp in comps.items():
        if key == "sd_model_checkpoint":
            comp.input(change_checkpoint, comp, status, show_progress="hidden", concurrency_limit=None)
        else:
            comp.input(change_setting(key), comp, status, show_progress="hidden")
    refresh.click(refresh_checkpoints, None,
                  [comps["sd_model_checkpoint"], *([comps["sd_vae"]] if "sd_vae" in comps else [])],
                  show_progress="hidden")
    top = _Top()
    top.load_outputs = [comps[k] for k in keys]
    top.checkpoint = comps["sd_model_checkpoint"]
    top.load_values = load_values
    return top


# --------------------------------------------------------------------------------------------------------------------
# paste and send-to
# --------------------------------------------------------------------------------------------------------------------


def _paste_updates(state, ui: c.TabUi, text: str) -> dict:
    """Component updates for pasting ``text`` (an infotext) into a tab; nothing for an empty text."""
    if not text or not text.strip():
        return {}
    params = common.parse_infotext(state, text)
    values = paste_values(params, ui.paste_fields)
    updates = {ui.form[name]: value for name, value in values.items() if name in ui.form}
    if "override_settings" in ui.form:
        updates[ui.form["override_settings"]] = c.override_settings_update(state, params, ui.paste_fields)
    return updates


def _wire_paste(state, ui: c.TabUi) -> None:
    """A1111's ↙: fill every field from the prompt box's infotext, or (empty box) from the last generation."""
    targets = c.paste_targets(ui)
    button = ui.toprow.paste

    def paste(prompt_text):
        text = prompt_text if prompt_text and prompt_text.strip() else common.last_generation_text(state)
        return _paste_updates(state, ui, text) or {ui.form["prompt"]: gr.update()}

    button.click(paste, [ui.form["prompt"]], targets, show_progress="hidden")


def _wire_send(state, tabs, t2i: c.TabUi, i2i: c.TabUi, ext: c.TabUi, png: c.TabUi) -> None:
    """Send-to buttons: the image (and its parameters) into img2img / inpaint / extras / txt2img, then switch tab."""

    def target_updates(target: str, image, text: str) -> dict:
        updates: dict = {}
        if target == "txt2img":
            updates.update(_paste_updates(state, t2i, text))
            updates[tabs] = gr.update(selected="txt2img")
        elif target in ("img2img", "inpaint"):
            if image is not None:
                comp = i2i.image_target[target]
                updates[comp] = image if target == "img2img" else {"background": image, "layers": [],
                                                                   "composite": image}
            updates.update(_paste_updates(state, i2i, text))
            mode = 0 if target == "img2img" else 2
            updates[i2i.form["mode"]] = mode
            updates[i2i.mode_tabs] = gr.update(selected=img2img.MODE_IDS[mode])
            updates[tabs] = gr.update(selected="img2img")
        elif target == "extras":
            if image is not None:
                updates[ext.image_target["extras"]] = image
            updates[tabs] = gr.update(selected="extras")
        return updates

    outputs_for = {
        "txt2img": [tabs, *c.paste_targets(t2i)],
        "img2img": [tabs, i2i.mode_tabs, i2i.form["mode"], i2i.image_target["img2img"], *c.paste_targets(i2i)],
        "extras": [tabs, ext.image_target["extras"]],
    }
    outputs_for["inpaint"] = [*outputs_for["img2img"][:3], i2i.image_target["inpaint"], *outputs_for["img2img"][4:]]

    # from a generation tab's gallery
    for ui in (t2i, i2i):
        for target in c.SEND_TARGETS:
            button = ui.output.buttons.get(f"send_{target}")
            if button is None:
                continue

            def send(gallery_value, index, info_json, target=target):
                image = common.gallery_image(gallery_value, int(index) if index is not None else None)
                if image is None:
                    return {}
                text = image.info.get("parameters") or common.selected_infotext(info_json, index)
                return target_updates(target, image, text)

            button.click(send, [ui.output.gallery, ui.output.selected_index, ui.output.generation_info],
                         outputs_for[target], show_progress="hidden")

    # from PNG Info
    for target, button in png.send_buttons.items():
        def send_png(path, text, target=target):
            image = common.open_image(path)
            if image is None:
                return {}
            return target_updates(target, image, text or "")

        button.click(send_png, [png.form["image"], png.form["generation_info"]], outputs_for[target],
                     show_progress="hidden")


def _plugin_tabs(state) -> list:
    """``(Blocks, title, elem_id)`` of every tab the plugins' on_ui_tabs hooks return (built outside the page, as
    A1111 extensions build theirs, then rendered into it)."""
    if state.plugins is None:
        return []
    return [tab for tabs in state.plugins.call("on_ui_tabs", state=state) for tab in tabs]


def page_head(state=None) -> str:
    """The page's own scripts (webui/ui/javascript/*.js, A1111's javascript/ folder), then the loaded extensions'
    javascript/*.js in extension order (A1111's order: its own folder first, then each extension's), inlined."""
    import os

    folder = os.path.join(os.path.dirname(__file__), "javascript")
    files = [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if n.endswith(".js")]
    files += [path for ext in _loaded_extensions(state) for path in ext.javascript]
    scripts = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                scripts.append(f"<script>\n{f.read()}\n</script>")
        except OSError as e:  # an extension file that went away: the page still loads
            log.error("cannot read %s: %s", path, e)
    return "\n".join(scripts)


def extension_css(state) -> str:
    """The loaded extensions' style.css, in extension order, after the page's own CSS (A1111's order)."""
    out = []
    for ext in _loaded_extensions(state):
        if ext.stylesheet:
            try:
                with open(ext.stylesheet, encoding="utf-8") as f:
                    out.append(f"\n/* {ext.name} */\n{f.read()}")
            except OSError as e:
                log.error("cannot read %s: %s", ext.stylesheet, e)
    return "".join(out)


def _loaded_extensions(state) -> list:
    extensions = getattr(state, "extensions", None) if state is not None else None
    return [e for e in extensions.all if e.loaded] if extensions is not None else []


def _notices_html(state) -> str:
    items = getattr(state, "notices", None) or []
    return "".join(f"<div class='webui-notice'>{common.plaintext_to_html(n)}</div>" for n in items)
