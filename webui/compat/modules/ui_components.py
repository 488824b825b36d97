"""A1111 ``modules.ui_components``: its small gradio layout helpers, as gradio subclasses that render as the
gradio block they extend (``get_block_name``), so the page's frontend knows them."""

from __future__ import annotations

import gradio as gr


class FormComponent:
    def get_expected_parent(self):
        return gr.components.Form


class ToolButton(gr.Button):
    """A small square button holding an emoji (A1111's tool button)."""

    def __init__(self, value="", *args, elem_classes=None, **kwargs):
        super().__init__(value, *args, elem_classes=["tool", *(elem_classes or [])], **kwargs)

    def get_block_name(self):
        return "button"


class ResizeHandleRow(gr.Row):
    def get_block_name(self):
        return "row"


class FormRow(gr.Row):
    def get_block_name(self):
        return "row"


class FormColumn(gr.Column):
    def get_block_name(self):
        return "column"


class FormGroup(gr.Group):
    def get_block_name(self):
        return "group"


class FormHTML(gr.HTML):
    def get_block_name(self):
        return "html"


class DropdownMulti(gr.Dropdown):
    def __init__(self, **kwargs):
        super().__init__(multiselect=True, **kwargs)

    def get_block_name(self):
        return "dropdown"


class DropdownEditable(gr.Dropdown):
    def __init__(self, **kwargs):
        super().__init__(allow_custom_value=True, **kwargs)

    def get_block_name(self):
        return "dropdown"


class InputAccordion(gr.Checkbox):
    """A1111's InputAccordion: an accordion whose open/enabled state is a checkbox value (True: on). Used as a
    context manager for the controls inside; its value is the bool a script receives."""

    def __init__(self, value=False, *, label="", elem_id=None, visible=True, open=None, **kwargs):
        self.accordion_label = label
        self._accordion = None
        self._open = value if open is None else open
        super().__init__(value=value, label=label, elem_id=elem_id, visible=visible, **kwargs)

    def get_block_name(self):
        return "checkbox"

    def __enter__(self):
        self._accordion = gr.Accordion(self.accordion_label, open=self._open)
        self._accordion.__enter__()
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self._accordion.__exit__(exc_type, exc_value, traceback)
