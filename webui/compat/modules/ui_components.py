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
    """A1111's InputAccordion: an accordion whose open state is a checkbox value (True: open, on) -- the bool a
    script receives. As in A1111, the object is that (hidden) checkbox, and ``with InputAccordion(...):`` puts the
    controls inside its accordion. Opening or closing the accordion sets the checkbox; setting the checkbox (a paste,
    an extension's event) opens or closes the accordion. A1111 also draws a checkbox in the accordion's header (its
    javascript/inputAccordion.js) that enables it without opening it; here the open state is the only switch."""

    def __init__(self, value=False, *, label="Accordion", elem_id=None, visible=True, elem_classes=None, **kwargs):
        super().__init__(value=bool(value), label=label, visible=False, elem_classes=elem_classes, **kwargs)
        # A1111 numbers its accordions with a class counter; the block's own id is unique and is no global state
        accordion_id = elem_id or f"input-accordion-{self._id}"
        self.elem_id = f"{accordion_id}-checkbox"
        classes = [elem_classes] if isinstance(elem_classes, str) else list(elem_classes or [])
        self.accordion = gr.Accordion(label, open=bool(value), visible=visible, elem_id=accordion_id,
                                      elem_classes=["input-accordion", *classes])
        self.accordion.expand(lambda: True, None, self, show_progress="hidden", queue=False)
        self.accordion.collapse(lambda: False, None, self, show_progress="hidden", queue=False)
        self.change(lambda on: gr.update(open=bool(on)), self, self.accordion, show_progress="hidden",
                    queue=False)

    def get_block_name(self):
        return "checkbox"

    def extra(self):
        """A1111's column for controls next to the accordion's title (there, moved into the header by its
        javascript); here a column where it is made."""
        return gr.Column(elem_id=f"{self.accordion.elem_id}-extra", elem_classes=["input-accordion-extra"],
                         min_width=0)

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self.accordion.__exit__(exc_type, exc_value, traceback)
