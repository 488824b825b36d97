"""ui-config.json on the page (A1111 ``ui_loadsave.add_block`` / ``create_ui``): every labelled control of the tabs
before Settings takes its stored default and limits when the page is built; Settings > Defaults shows what differs
from the file and writes it. The file logic is ``webui.core.ui_config.UiDefaults``; this walks gradio's blocks."""

from __future__ import annotations

import html
import logging

import gradio as gr

from webui.core.ui_config import UiDefaults, default_path

log = logging.getLogger(__name__)

#: Controls A1111 records (ui_loadsave.add_component), with the fields it records for each.
_VALUE_FIELDS = {gr.Slider: ("value", "minimum", "maximum", "step"), gr.Radio: ("value",), gr.Checkbox: ("value",),
                 gr.Textbox: ("value",), gr.Number: ("value",), gr.Dropdown: ("value",)}


def choice_values(control) -> list:
    """A dropdown's or radio's choice values (gradio keeps (label, value) pairs)."""
    return [c[1] if isinstance(c, (tuple, list)) and len(c) == 2 else c for c in getattr(control, "choices", None) or []]


def _fits(control):
    if isinstance(control, gr.Dropdown):
        options = choice_values(control)

        def check(value):
            if getattr(control, "multiselect", False):
                return isinstance(value, list) and all(v in options for v in value)
            return value in options or bool(getattr(control, "allow_custom_value", False))
        return check
    if isinstance(control, gr.Radio):
        return lambda value: value in choice_values(control)
    return None


def _convert(control, field: str):
    if field in ("minimum", "maximum", "step") or (isinstance(control, (gr.Slider, gr.Number)) and field == "value"):
        return float
    if isinstance(control, gr.Textbox) and field == "value":
        return str
    if isinstance(control, gr.Checkbox) or field == "visible":
        return _bool
    return None


def _bool(value):
    if not isinstance(value, bool):
        raise TypeError(f"not true/false: {value!r}")
    return value


def add_component(defaults: UiDefaults, path: str, control) -> None:
    fields = next((f for kind, f in _VALUE_FIELDS.items() if isinstance(control, kind)), None)
    if fields is None and not isinstance(control, gr.Button):
        return
    if getattr(control, "visible", True) is True:
        fields = ("visible", *(fields or ()))
    for name in fields or ():
        current = getattr(control, name, None)
        use, value = defaults.field(f"{path}/{name}", current, control if name == "value" else None,
                                    fits=_fits(control) if name == "value" else None,
                                    convert=_convert(control, name))
        if use and value != current:
            setattr(control, name, value)


def add_block(defaults: UiDefaults, block, path: str) -> None:
    """A1111 ``add_block``: every control under ``block`` by label (buttons by their text), skipping blocks marked
    ``do_not_save_to_config`` (dialogs and pickers whose controls are not defaults)."""
    if getattr(block, "do_not_save_to_config", False):
        return
    children = getattr(block, "children", None)
    if children is not None:
        for child in children:
            add_block(defaults, child, path)
        return
    label = getattr(block, "label", None)
    if label:
        add_component(defaults, f"{path}/{label}", block)
    elif isinstance(block, gr.Button) and block.value:
        add_component(defaults, f"{path}/{block.value}", block)


def apply_defaults(state, tabs) -> UiDefaults:
    """Read ui-config.json, apply it to every tab built so far inside ``tabs`` (A1111 skips Settings and
    Extensions), then write it back with the keys of new controls. Runs while the page is built, before gradio
    freezes the page's config."""
    path = default_path(state.config.data_dir, state.config.extra("ui_config_file"))
    defaults = UiDefaults(path).read()
    for tab in getattr(tabs, "children", []):
        tab_id = getattr(tab, "id", None) or getattr(tab, "elem_id", None)
        if tab_id in (None, "settings", "extensions"):
            continue
        add_block(defaults, tab, str(tab_id))
    try:
        defaults.dump()
    except OSError as e:
        log.warning("could not write %s: %s", path, e)
    return defaults


def defaults_page(defaults: UiDefaults) -> None:
    """Settings > Defaults (A1111 ``UiLoadsave.create_ui`` + ``setup_ui``): View changes / Apply."""
    with gr.Accordion("Defaults", open=False, elem_id="settings_ui_defaults"):
        gr.HTML(f"This page allows you to change default values in UI elements on other tabs.<br />"
                f"Make your changes, press 'View changes' to review the changed default values,<br />"
                f"then press 'Apply' to write them to {html.escape(defaults.filename)}.<br />"
                f"New defaults will apply after you restart the UI.<br />")
        with gr.Row():
            view = gr.Button("View changes", elem_id="ui_defaults_view", variant="secondary")
            apply = gr.Button("Apply", elem_id="ui_defaults_apply", variant="primary")
        review = gr.HTML("", elem_id="ui_defaults_review")
    controls = list(defaults.mapping.values())

    def ui_view(*values):
        try:
            stored = defaults.read_file()
        except (OSError, ValueError) as e:
            return f"<div class='webui-error'>{html.escape(str(e))}</div>"
        rows = [f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(o))}</td><td>{html.escape(str(n))}</td></tr>"
                for k, o, n in defaults.changes(stored, values, choice_values)]
        body = "".join(rows) or "<tr><td colspan=3>No changes</td></tr>"
        return ("<table class='ui-defaults'><thead><tr><th>Path</th><th>Old value</th><th>New value</th></tr></thead>"
                f"<tbody>{body}</tbody></table>")

    def ui_apply(*values):
        try:
            n = defaults.apply_changes(values, choice_values)
        except (OSError, ValueError) as e:
            return f"<div class='webui-error'>{html.escape(str(e))}</div>"
        return "No changes." if n == 0 else f"Wrote {n} changes."

    view.click(ui_view, controls, [review], show_progress="hidden")
    apply.click(ui_apply, controls, [review], show_progress="hidden")
