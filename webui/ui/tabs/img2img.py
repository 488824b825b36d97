"""The img2img tab (A1111 ui.py img2img part): sub-tabs img2img, Sketch, Inpaint, Inpaint sketch, Inpaint upload and
Batch; resize mode; mask controls; denoising. ``to_request`` is the one UI values -> GenerationRequest mapping; the
image-to-mask conversions are A1111 ``modules/img2img.img2img``'s, over gradio's ImageEditor values."""

from __future__ import annotations

import os
from typing import Any

import gradio as gr

from webui.core.generation.imageops import RESIZE_MODES
from webui.core.io import paste
from webui.core.types import GenerationRequest, InpaintOptions
from webui.ui import common
from webui.ui import components as c
from webui.ui import extra_networks
from webui.ui.tabs import txt2img

NAME = "img2img"

#: Sub-tabs in A1111's order; the index is A1111's ``mode`` argument of img2img().
MODES = ("img2img", "Sketch", "Inpaint", "Inpaint sketch", "Inpaint upload", "Batch")
MODE_IDS = ("img2img_img2img_tab", "img2img_img2img_sketch_tab", "img2img_inpaint_tab", "img2img_inpaint_sketch_tab",
            "img2img_inpaint_upload_tab", "img2img_batch_tab")
MASK_MODES = ["Inpaint masked", "Inpaint not masked"]
MASKED_CONTENT = ["fill", "original", "latent noise", "latent nothing"]
INPAINT_AREAS = ["Whole picture", "Only masked"]
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".avif")


class Img2ImgInputError(ValueError):
    """The chosen sub-tab has no usable image (A1111: "Can't ... because no image is selected")."""


def _editor_parts(value) -> tuple[Any, list, Any]:
    if not value:
        return None, [], None
    if isinstance(value, dict):
        layers = [common.open_image(x) for x in (value.get("layers") or []) if x is not None]
        return common.open_image(value.get("background")), layers, common.open_image(value.get("composite"))
    return common.open_image(value), [], None


def _strokes_mask(layers: list, size) -> Any:
    """The painted strokes of the editor's layers as one RGBA image whose alpha is the mask (A1111's inpaint mask)."""
    from PIL import Image

    mask = Image.new("RGBA", size, (0, 0, 0, 0))
    for layer in layers:
        layer = layer.convert("RGBA")
        if layer.size != size:
            layer = layer.resize(size)
        mask = Image.alpha_composite(mask, layer)
    return mask


def image_and_mask(values: dict[str, Any]) -> tuple[Any, Any]:
    """(init image, mask or None) for the selected sub-tab, as A1111 img2img() picks them."""
    import numpy as np
    from PIL import Image, ImageEnhance, ImageFilter

    from webui.core.generation.imageops import create_binary_mask
    from webui.core.io.images import fix_image

    mode = int(values.get("mode") or 0)
    mask = None
    if mode == 0:
        image = common.open_image(values.get("init_img"))
    elif mode == 1:
        background, _, composite = _editor_parts(values.get("sketch"))
        image = composite or background
    elif mode == 2:
        image, layers, _ = _editor_parts(values.get("init_img_with_mask"))
        if image is not None:
            mask = create_binary_mask(_strokes_mask(layers, image.size), round=True)
    elif mode == 3:
        orig, _, composite = _editor_parts(values.get("inpaint_color_sketch"))
        image = composite or orig
        if image is not None:
            orig = (orig or image).convert("RGB")
            image = image.convert("RGB")
            if orig.size != image.size:
                orig = orig.resize(image.size)
            pred = np.any(np.array(image) != np.array(orig), axis=-1)
            mask = Image.fromarray(pred.astype(np.uint8) * 255, "L")
            mask = ImageEnhance.Brightness(mask).enhance(1 - float(values.get("mask_alpha", 0)) / 100)
            blur = ImageFilter.GaussianBlur(int(values.get("mask_blur", 4)))
            image = Image.composite(image.filter(blur), orig, mask.filter(blur))
    elif mode == 4:
        image = common.open_image(values.get("init_img_inpaint"))
        mask = common.open_image(values.get("init_mask_inpaint"))
        if image is not None and mask is None:
            raise Img2ImgInputError("Inpaint upload: upload a mask too")
    else:
        raise Img2ImgInputError("Batch runs over the input folder; use to_request for one image")
    if image is None:
        raise Img2ImgInputError(f"{MODES[mode]}: no image is selected; upload or paste one first")
    return fix_image(image), fix_image(mask) if mask is not None else None


def to_request(values: dict[str, Any], plugins=None, runner=None) -> GenerationRequest:
    """The img2img request from the tab's values by component name (A1111 ``modules/img2img.img2img``).

    ``mode`` is the sub-tab index; with "Resize by" (``selected_scale_tab`` 1) the size is the image's times
    ``scale_by``. Images travel as PNG bytes; the mask (white = repaint) with A1111's inpaint options.
    """
    image, mask = image_and_mask(values)
    width, height = int(values.get("width", 512)), int(values.get("height", 512))
    if int(values.get("selected_scale_tab") or 0) == 1:
        scale_by = float(values.get("scale_by", 1.0))
        width, height = int(image.width * scale_by), int(image.height * scale_by)
    inpaint = None
    if mask is not None:
        blur = int(values.get("mask_blur", 4))
        inpaint = InpaintOptions(
            mask=common.png_bytes(mask),
            mask_blur_x=blur,
            mask_blur_y=blur,
            inpainting_fill=_index(MASKED_CONTENT, values.get("inpainting_fill"), 1),
            inpaint_full_res=_index(INPAINT_AREAS, values.get("inpaint_full_res"), 0) == 1,
            inpaint_full_res_padding=int(values.get("inpaint_full_res_padding", 32)),
            inpainting_mask_invert=_index(MASK_MODES, values.get("inpainting_mask_invert"), 0),
        )
    fields = txt2img.common_fields(values)
    fields.update(width=width, height=height)
    return GenerationRequest(
        mode="img2img",
        **fields,
        denoising_strength=float(values.get("denoising_strength", 0.75)),
        init_images=(common.png_bytes(image),),
        resize_mode=_index(list(RESIZE_MODES), values.get("resize_mode"), 0),
        image_cfg_scale=float(values.get("image_cfg_scale", 1.5)),
        inpaint=inpaint,
        refiner=txt2img.refiner_options(values),
        extension_args=c.script_args(values, plugins, NAME, runner),
    )


def _index(choices: list, value, default: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return choices.index(value) if value in choices else default


def batch_files(folder: str) -> list[str]:
    """Image files of an input folder, sorted by name (A1111 ``shared.listfiles`` over the batch input dir)."""
    if not folder or not os.path.isdir(folder):
        raise Img2ImgInputError(f"Batch: input directory {folder!r} does not exist")
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise Img2ImgInputError(f"Batch: no images in {folder}")
    return files


def batch_requests(values: dict[str, Any], plugins=None, runner=None) -> list[GenerationRequest]:
    """A1111 ``process_batch``: one request per image of the input folder (with the mask of the same name from the
    mask folder, when given); results go to the output folder when one is given."""
    files = batch_files(values.get("batch_input_dir") or "")
    mask_dir = values.get("batch_inpaint_mask_dir") or ""
    output_dir = values.get("batch_output_dir") or ""
    overrides = {"outdir_samples": "", "outdir_img2img_samples": output_dir, "save_to_dirs": False} if output_dir else {}
    requests = []
    for path in files:
        one = {**values, "mode": 0, "init_img": path}
        if mask_dir:
            stem = os.path.splitext(os.path.basename(path))[0]
            masks = [os.path.join(mask_dir, f) for f in sorted(os.listdir(mask_dir))
                     if os.path.splitext(f)[0] == stem] if os.path.isdir(mask_dir) else []
            if masks:
                one.update(mode=4, init_img_inpaint=path, init_mask_inpaint=masks[0])
        req = to_request(one, plugins, runner)
        if overrides:
            req = req.replace(override_settings={**req.override_settings, **overrides})
        requests.append(req)
    return requests


def interrogate_image(values: dict[str, Any]) -> Any:
    """The image the interrogate buttons describe: the selected sub-tab's picture as A1111's ``process_interrogate``
    takes it (img2img, Sketch with its strokes, Inpaint's picture without the mask, Inpaint sketch with its strokes,
    Inpaint upload's picture), as RGB."""
    mode = int(values.get("mode") or 0)
    if mode == 0:
        image = common.open_image(values.get("init_img"))
    elif mode in (1, 3):
        background, _, composite = _editor_parts(values.get("sketch" if mode == 1 else "inpaint_color_sketch"))
        image = composite or background
    elif mode == 2:
        image, _, _ = _editor_parts(values.get("init_img_with_mask"))
    elif mode == 4:
        image = common.open_image(values.get("init_img_inpaint"))
    else:
        raise Img2ImgInputError("Batch interrogates the input folder; use interrogate_batch")
    if image is None:
        raise Img2ImgInputError(f"{MODES[mode]}: no image is selected; upload or paste one first")
    return image.convert("RGB")


def interrogate_batch(interrogate, values: dict[str, Any]) -> list[str]:
    """A1111 ``process_interrogate`` on the Batch sub-tab: each image of the input folder is interrogated and the
    text appended as a line to ``NAME.txt`` in the output folder (the input folder when none is given). Returns the
    files written. Refused with --hide-ui-dir-config (the caller checks)."""
    from PIL import Image

    files = batch_files(values.get("batch_input_dir") or "")
    output_dir = values.get("batch_output_dir") or values.get("batch_input_dir")
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for path in files:
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except (OSError, ValueError):
            continue  # A1111 lists every file; what PIL cannot open is skipped here instead of stopping the run
        text = interrogate(image)
        out = os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0] + ".txt")
        with open(out, "a", encoding="utf-8") as f:
            print(text, file=f)
        written.append(out)
    return written


def wire_interrogate(state, form: common.Form, row: c.Toprow) -> None:
    """The "Interrogate CLIP" / "Interrogate DeepBooru" buttons: the prompt becomes what the interrogator says of
    the selected sub-tab's image (A1111 ``ui.interrogate`` / ``interrogate_deepbooru``); on Batch, NAME.txt files.
    The work runs on the one queue; a missing model file is an error toast naming the file and its folder."""

    def run(model: str, values: dict):
        named = form.named(values)
        try:
            if int(named.get("mode") or 0) == 5:
                if state.config.hide_ui_dir_config:
                    raise Img2ImgInputError("Launched with --hide-ui-dir-config, batch img2img disabled")
                future = common.submit(state, "interrogate", lambda p: interrogate_batch(
                    lambda im: state.interrogators.interrogate(im, model), named))
                written = future.result()
                gr.Info(f"Interrogated {len(written)} image(s) into .txt files")
                return gr.update()
            image = interrogate_image(named)
            future = common.submit(state, "interrogate", lambda p: state.interrogators.interrogate(image, model))
            return future.result()
        except Exception as e:  # a missing model file, no image, a bad folder: said, the prompt kept
            raise gr.Error(str(e)) from e

    row.interrogate.click(lambda values: run("clip", values), form.inputs(), [row.prompt],
                          show_progress="minimal", concurrency_limit=None)
    row.deepbooru.click(lambda values: run("deepdanbooru", values), form.inputs(), [row.prompt],
                        show_progress="minimal", concurrency_limit=None)


def make_requests(values: dict[str, Any], plugins=None, runner=None) -> list[GenerationRequest]:
    if int(values.get("mode") or 0) == 5:
        return batch_requests(values, plugins, runner)
    return [to_request(values, plugins, runner)]


#: The paste button's table: ``webui.core.io.paste`` (shared with the API's ``infotext``).
PASTE_FIELDS = paste.IMG2IMG_FIELDS


def build(state) -> c.TabUi:
    form = common.Form()
    row = c.toprow(state, form, NAME)
    networks = extra_networks.build(state, NAME, row.prompt, row.negative_prompt)
    mode = form.add("mode", gr.Number(value=0, precision=0, visible=False, elem_id="img2img_mode"))
    with gr.Row(elem_id=f"{NAME}_extra_tabs"):
        with gr.Column(scale=4, elem_id=f"{NAME}_settings"):
            with gr.Tabs(elem_id="mode_img2img") as mode_tabs:
                tabs = []
                with gr.Tab(MODES[0], id=MODE_IDS[0], elem_id=MODE_IDS[0]) as t:
                    form.add("init_img", gr.Image(label="Image for img2img", type="pil", image_mode="RGBA",
                                                  elem_id="img2img_image", sources=["upload", "clipboard"],
                                                  height=400, format="png"))
                    tabs.append(t)
                with gr.Tab(MODES[1], id=MODE_IDS[1], elem_id=MODE_IDS[1]) as t:
                    form.add("sketch", gr.ImageEditor(label="Image for img2img", type="pil", image_mode="RGBA",
                                                      elem_id="img2img_sketch", sources=["upload", "clipboard"],
                                                      height=400, format="png", layers=False,
                                                      brush=gr.Brush(color_mode="defaults")))
                    tabs.append(t)
                with gr.Tab(MODES[2], id=MODE_IDS[2], elem_id=MODE_IDS[2]) as t:
                    form.add("init_img_with_mask", gr.ImageEditor(
                        label="Image for inpainting with mask", type="pil", image_mode="RGBA",
                        elem_id="img2maskimg", sources=["upload", "clipboard"], height=400, format="png", layers=False,
                        brush=gr.Brush(colors=["#ffffff"], default_color="#ffffff", color_mode="fixed"),
                        transforms=()))
                    tabs.append(t)
                with gr.Tab(MODES[3], id=MODE_IDS[3], elem_id=MODE_IDS[3]) as t:
                    form.add("inpaint_color_sketch", gr.ImageEditor(
                        label="Color sketch inpainting", type="pil", image_mode="RGBA", elem_id="inpaint_sketch",
                        sources=["upload", "clipboard"], height=400, format="png", layers=False,
                        brush=gr.Brush(color_mode="defaults"), transforms=()))
                    form.add("mask_alpha", gr.Slider(label="Mask transparency", minimum=0, maximum=100, step=1,
                                                     value=0, elem_id="img2img_mask_alpha"))
                    tabs.append(t)
                with gr.Tab(MODES[4], id=MODE_IDS[4], elem_id=MODE_IDS[4]) as t:
                    form.add("init_img_inpaint", gr.Image(label="Image for img2img", type="pil", image_mode="RGBA",
                                                          elem_id="img_inpaint_base", sources=["upload", "clipboard"],
                                                          format="png"))
                    form.add("init_mask_inpaint", gr.Image(label="Mask", type="pil", image_mode="RGBA",
                                                           elem_id="img_inpaint_mask", sources=["upload", "clipboard"],
                                                           format="png"))
                    tabs.append(t)
                with gr.Tab(MODES[5], id=MODE_IDS[5], elem_id=MODE_IDS[5]) as t:
                    hidden = state.config.hide_ui_dir_config
                    gr.HTML("<p>Process images in a directory on the same machine where the server is running."
                            "<br>Leave the output directory empty to save images to the usual output folder.</p>"
                            + ("<p>Disabled: the server runs with --hide-ui-dir-config.</p>" if hidden else ""))
                    form.add("batch_input_dir", gr.Textbox(label="Input directory", interactive=not hidden,
                                                           elem_id="img2img_batch_input_dir"))
                    form.add("batch_output_dir", gr.Textbox(label="Output directory", interactive=not hidden,
                                                            elem_id="img2img_batch_output_dir"))
                    form.add("batch_inpaint_mask_dir", gr.Textbox(label="Inpaint batch mask directory (required for "
                                                                        "inpaint batch processing only)",
                                                                  interactive=not hidden,
                                                                  elem_id="img2img_batch_inpaint_mask_dir"))
                    tabs.append(t)
            for i, t in enumerate(tabs):
                t.select(lambda i=i: i, None, mode, show_progress="hidden", queue=False)
            form.add("resize_mode", gr.Radio(label="Resize mode", choices=list(RESIZE_MODES), value=RESIZE_MODES[0],
                                             elem_id="resize_mode"))
            with gr.Group(elem_id="inpaint_controls"):
                with gr.Row():
                    form.add("mask_blur", gr.Slider(label="Mask blur", minimum=0, maximum=64, step=1, value=4,
                                                    elem_id="img2img_mask_blur"))
                    form.add("inpainting_mask_invert", gr.Radio(label="Mask mode", choices=MASK_MODES,
                                                                value=MASK_MODES[0], elem_id="img2img_mask_mode"))
                with gr.Row():
                    form.add("inpainting_fill", gr.Radio(label="Masked content", choices=MASKED_CONTENT,
                                                         value="original", elem_id="img2img_inpainting_fill"))
                with gr.Row():
                    form.add("inpaint_full_res", gr.Radio(label="Inpaint area", choices=INPAINT_AREAS,
                                                          value=INPAINT_AREAS[0], elem_id="img2img_inpaint_full_res"))
                    form.add("inpaint_full_res_padding", gr.Slider(label="Only masked padding, pixels", minimum=0,
                                                                   maximum=256, step=4, value=32,
                                                                   elem_id="img2img_inpaint_full_res_padding"))
            steps = c.sampler_row(state, form, NAME)
            txt2img.refiner_accordion(state, form, NAME)
            scale_tab = form.add("selected_scale_tab", gr.Number(value=0, precision=0, visible=False))
            with gr.Tabs(elem_id=f"{NAME}_column_size"):
                with gr.Tab("Resize to", id="img2img_tab_resize_to") as resize_to:
                    c.size_rows(form, NAME, with_batch=False)
                with gr.Tab("Resize by", id="img2img_tab_resize_by") as resize_by:
                    form.add("scale_by", gr.Slider(minimum=0.05, maximum=4.0, step=0.05, value=1.0, label="Scale",
                                                   elem_id="img2img_scale"))
            resize_to.select(lambda: 0, None, scale_tab, show_progress="hidden", queue=False)
            resize_by.select(lambda: 1, None, scale_tab, show_progress="hidden", queue=False)
            c.batch_rows(form, NAME)
            with gr.Row():
                c.cfg_row(form, NAME)
                form.add("image_cfg_scale", gr.Slider(minimum=0, maximum=3.0, step=0.05, value=1.5,
                                                      label="Image CFG Scale", elem_id="img2img_image_cfg_scale"))
            form.add("denoising_strength", gr.Slider(minimum=0.0, maximum=1.0, step=0.01, value=0.75,
                                                     label="Denoising strength",
                                                     elem_id="img2img_denoising_strength"))
            seed, subseed, reuse_seed, reuse_subseed, _, _ = c.seed_rows(form, NAME)
            c.override_settings_dropdown(form, NAME)
            c.alwayson_scripts_ui(state, form, NAME, state.scripts_img2img)
            c.script_controls(form, NAME, state.scripts_img2img, state)
        output = c.output_panel(state, NAME)
    networks.connect_gallery(output)
    c.connect_token_counters(state, row, steps)
    wire_interrogate(state, form, row)
    c.connect_reuse_seed(seed, reuse_seed, output, is_subseed=False)
    c.connect_reuse_seed(subseed, reuse_subseed, output, is_subseed=True)
    c.wire_generate(state, NAME, row, form, output,
                    lambda values: make_requests(values, state.plugins, state.scripts_img2img),
                    runner=state.scripts_img2img)
    paste_fields = [*PASTE_FIELDS, *state.scripts_img2img.paste_fields()]  # the scripts' infotext fields too
    ui = c.TabUi(name=NAME, form=form, output=output, paste_fields=paste_fields, tab_id=NAME, toprow=row,
                  extra_networks=networks)
    ui.image_target = {"img2img": form["init_img"], "inpaint": form["init_img_with_mask"]}
    ui.mode_tabs = mode_tabs
    return ui
