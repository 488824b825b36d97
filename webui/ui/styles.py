"""The styles editor under the Styles dropdown (A1111 1.10 ``ui_prompt_styles.UiPromptStyles``): 🖌️ opens a dialog
where a style is picked (or a new name typed), filled from the main prompts (📝), edited, saved, deleted, or the
selected styles applied to the prompts (📋); 🔄 reads the styles files again.

Storage is ``webui.core.generation.prompts.StyleDatabase`` (A1111's several ``--styles-file`` files and patterns;
a style goes back to the file it came from, new ones to the first file; every file written atomically with a
``.bak``). This module only wires gradio to it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr

from webui.ui import common

log = logging.getLogger(__name__)

#: A1111's tool-button symbols (ui_prompt_styles.py).
EDIT_SYMBOL = "🖌️"
MATERIALIZE_SYMBOL = "📋"
COPY_SYMBOL = "📝"
REFRESH_SYMBOL = "🔄"

STYLES_INFO = ("Styles allow you to add custom text to prompt. Use the {prompt} token in style text, and it will be "
               "replaced with user's prompt when applying style. Otherwise, style's text will be added to the end of "
               "the prompt.")


def names(state) -> list[str]:
    return [s.name for s in state.styles.list()] if state.styles is not None else []


def select_style(state, name: str):
    """A1111 ``select_style``: the style's texts (left alone for a new name); Delete shown for an existing style,
    Save for any non-empty name."""
    style = state.styles.get(name) if state.styles is not None and name else None
    return (style.prompt if style else gr.update(), style.negative_prompt if style else gr.update(),
            gr.update(visible=style is not None), gr.update(visible=bool(name)))


def save_style(state, name: str, prompt: str, negative_prompt: str) -> None:
    """A1111 ``save_style``: add or replace the style (keeping its file) and write the styles files."""
    if not name or state.styles is None:
        return
    state.styles.set_style(name, prompt or "", negative_prompt or "")
    state.styles.save_styles()


def delete_style(state, name: str) -> None:
    """A1111 ``delete_style``: remove it and write the styles files."""
    if not name or state.styles is None:
        return
    if state.styles.delete_style(name):
        state.styles.save_styles()


def materialize(state, prompt: str, negative_prompt: str, chosen: list | None):
    """A1111 ``materialize_styles`` (📋): write the chosen styles into the prompts and clear the selection."""
    if not chosen or state.styles is None:
        return gr.update(), gr.update(), gr.update()
    return (state.styles.apply_styles_to_prompt(prompt or "", chosen),
            state.styles.apply_negative_styles_to_prompt(negative_prompt or "", chosen), [])


@dataclass
class StylesUi:
    dropdown: Any
    edit: Any
    dialog: Any
    selection: Any
    prompt: Any
    negative_prompt: Any
    save: Any
    delete: Any
    close: Any
    refresh: Any
    materialize: Any
    copy: Any


def dropdown_row(state, form: common.Form, tab: str):
    """The Styles dropdown and its 🖌️ button, in the prompt row (A1111 ``{tab}_styles_row``)."""
    with gr.Row(elem_id=f"{tab}_styles_row", equal_height=True):
        dropdown = form.add("styles", gr.Dropdown(label="Styles", choices=names(state), value=[], multiselect=True,
                                                  elem_id=f"{tab}_styles", scale=6, min_width=100))
        edit = gr.Button(EDIT_SYMBOL, elem_id=f"{tab}_styles_edit_button", min_width=40, scale=0,
                         elem_classes=["tool"])
    return dropdown, edit


def dialog(state, tab: str, dropdown, edit, main_prompt, main_negative) -> StylesUi:
    """The edit dialog (hidden until 🖌️), wired to the core style database."""
    with gr.Column(visible=False, elem_id=f"{tab}_styles_dialog", elem_classes=["popup-dialog"]) as box:
        with gr.Row():
            selection = gr.Dropdown(label="Styles", elem_id=f"{tab}_styles_edit_select", choices=names(state),
                                    value=None, allow_custom_value=True, info=STYLES_INFO, scale=6)
            refresh = gr.Button(REFRESH_SYMBOL, elem_id=f"refresh_{tab}_styles", min_width=40, scale=0,
                                elem_classes=["tool"])
            apply = gr.Button(MATERIALIZE_SYMBOL, elem_id=f"{tab}_style_apply_dialog", min_width=40, scale=0,
                              elem_classes=["tool"])
            copy = gr.Button(COPY_SYMBOL, elem_id=f"{tab}_style_copy", min_width=40, scale=0, elem_classes=["tool"])
        prompt = gr.Textbox(label="Prompt", elem_id=f"{tab}_edit_style_prompt", lines=3)
        negative = gr.Textbox(label="Negative prompt", elem_id=f"{tab}_edit_style_neg_prompt", lines=3)
        with gr.Row():
            save = gr.Button("Save", variant="primary", elem_id=f"{tab}_edit_style_save", visible=False)
            delete = gr.Button("Delete", variant="primary", elem_id=f"{tab}_edit_style_delete", visible=False)
            close = gr.Button("Close", variant="secondary", elem_id=f"{tab}_edit_style_close")
    box.do_not_save_to_config = True  # ui-config.json: the dialog's fields are not defaults (A1111 leaves them out)
    ui = StylesUi(dropdown, edit, box, selection, prompt, negative, save, delete, close, refresh, apply, copy)

    def refreshed(reload: bool = False):
        if reload and state.styles is not None:
            state.styles.reload()
        choices = names(state)
        return gr.update(choices=choices), gr.update(choices=choices)

    def on_save(name, p, n):
        try:
            save_style(state, name, p, n)
        except OSError as e:  # a read-only styles file: say so, keep the dialog
            gr.Warning(f"Could not save styles: {e}")
            return gr.update()
        return gr.update(visible=bool(name))

    def on_delete(name):
        try:
            delete_style(state, name)
        except OSError as e:
            gr.Warning(f"Could not save styles: {e}")
            return gr.update(), gr.update(), gr.update()
        return None, "", ""

    selection.change(lambda name: select_style(state, name), [selection], [prompt, negative, delete, save],
                     show_progress="hidden")
    save.click(on_save, [selection, prompt, negative], [delete], show_progress="hidden").then(
        refreshed, None, [dropdown, selection], show_progress="hidden")
    # A1111 asks before deleting; a dismissed confirm sends an empty name, which deletes nothing
    delete.click(on_delete, [selection], [selection, prompt, negative], show_progress="hidden",
                 js="(name) => (name && confirm('Delete style ' + name + '?')) ? name : ''").then(
        refreshed, None, [dropdown, selection], show_progress="hidden")
    refresh.click(lambda: refreshed(True), None, [dropdown, selection], show_progress="hidden")
    apply.click(lambda p, n, s: materialize(state, p, n, s), [main_prompt, main_negative, dropdown],
                [main_prompt, main_negative, dropdown], show_progress="hidden")
    copy.click(lambda p, n: (p, n), [main_prompt, main_negative], [prompt, negative], show_progress="hidden",
               queue=False)
    edit.click(lambda: gr.update(visible=True), None, [box], show_progress="hidden", queue=False)
    close.click(lambda: gr.update(visible=False), None, [box], show_progress="hidden", queue=False)
    return ui
