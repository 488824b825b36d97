"""The PNG Info tab (A1111 ``ui_postprocessing``/``extras.run_pnginfo``): the generation parameters and other text
chunks of an image, with buttons that send the image and its parameters to txt2img, img2img, inpaint and extras."""

from __future__ import annotations

import gradio as gr

from webui.core.io.images import read_info_from_image
from webui.ui import common
from webui.ui import components as c

NAME = "pnginfo"


def run_pnginfo(path) -> tuple[str, str]:
    """A1111 ``run_pnginfo``: (parameters text, HTML of every item), "Nothing found in the image." when empty."""
    if not path:
        return "", ""
    image = common.open_image(path)
    from webui.core.generation.samplers import SAMPLERS

    samplers_map = {a.lower(): s.name for s in SAMPLERS for a in (s.name, *s.aliases)}
    geninfo, items = read_info_from_image(image, samplers_map)
    items = {**({"parameters": geninfo} if geninfo is not None else {}), **items}
    info = ""
    for key, text in items.items():
        info += (f"<div><p><b>{common.plaintext_to_html(str(key))}</b></p>"
                 f"<p>{common.plaintext_to_html(str(text))}</p></div>\n")
    if not info:
        info = "<div><p>Nothing found in the image.</p></div>"
    return geninfo or "", info


def build(state) -> c.TabUi:
    form = common.Form()
    with gr.Row(equal_height=False):
        with gr.Column(variant="panel"):
            image = form.add("image", gr.Image(elem_id="pnginfo_image", label="Source", sources=["upload", "clipboard"],
                                               interactive=True, type="filepath", image_mode=None, height=400))
        with gr.Column(variant="panel"):
            html = gr.HTML(elem_id="pnginfo_html")
            generation_info = form.add("generation_info", gr.Textbox(visible=False, elem_id="pnginfo_generation_info"))
            with gr.Row(elem_id="pnginfo_send_buttons"):
                buttons = {t: gr.Button(f"Send to {t}", elem_id=f"pnginfo_send_to_{t}")
                           for t in ("txt2img", "img2img", "inpaint", "extras")}
    image.change(lambda p: run_pnginfo(p)[::-1], [image], [html, generation_info], show_progress="hidden")
    ui = c.TabUi(name=NAME, form=form, tab_id=NAME)
    ui.send_buttons = buttons
    return ui
