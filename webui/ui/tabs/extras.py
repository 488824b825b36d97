"""The Extras tab (A1111 ``ui_postprocessing``): Single Image / Batch Process / Batch from Directory; Upscale (scale by
or to, two upscalers blended), GFPGAN, CodeFormer. Runs :func:`webui.core.postprocess.extras.run_extras` on the shared queue when
the app state has the upscaler registry and face restorers; otherwise the controls are shown with a notice."""

from __future__ import annotations

from typing import Any

import gradio as gr

from webui.ui import common
from webui.ui import components as c

NAME = "extras"
MODES = ("Single Image", "Batch Process", "Batch from Directory")


def to_request(values: dict[str, Any]):
    """The tab's values by component name -> ``webui.core.postprocess.extras.ExtrasOptions`` (A1111's extras fields)."""
    from webui.core.postprocess.extras import ExtrasOptions

    return ExtrasOptions(
        resize_mode=int(values.get("resize_mode") or 0),
        show_extras_results=bool(values.get("show_extras_results", True)),
        gfpgan_visibility=float(values.get("gfpgan_visibility", 0.0)),
        codeformer_visibility=float(values.get("codeformer_visibility", 0.0)),
        codeformer_weight=float(values.get("codeformer_weight", 0.0)),
        upscaling_resize=float(values.get("upscaling_resize", 2.0)),
        upscaling_resize_w=int(values.get("upscaling_resize_w", 512)),
        upscaling_resize_h=int(values.get("upscaling_resize_h", 512)),
        upscaling_crop=bool(values.get("upscaling_crop", True)),
        upscaler_1=values.get("upscaler_1") or "None",
        upscaler_2=values.get("upscaler_2") or "None",
        extras_upscaler_2_visibility=float(values.get("extras_upscaler_2_visibility", 0.0)),
        max_side_length=int(values.get("max_side_length", 0)),
        # postprocessing for training (A1111's scripts of that name)
        split_enabled=bool(values.get("split_enabled")),
        split_threshold=float(values.get("split_threshold", 0.5)),
        split_overlap_ratio=float(values.get("split_overlap_ratio", 0.2)),
        focal_enabled=bool(values.get("focal_enabled")),
        focal_face_weight=float(values.get("focal_face_weight", 0.9)),
        focal_entropy_weight=float(values.get("focal_entropy_weight", 0.15)),
        focal_edges_weight=float(values.get("focal_edges_weight", 0.5)),
        focal_debug=bool(values.get("focal_debug")),
        autosized_enabled=bool(values.get("autosized_enabled")),
        autosized_mindim=int(values.get("autosized_mindim", 384)),
        autosized_maxdim=int(values.get("autosized_maxdim", 768)),
        autosized_minarea=int(values.get("autosized_minarea", 64 * 64)),
        autosized_maxarea=int(values.get("autosized_maxarea", 640 * 640)),
        autosized_objective=values.get("autosized_objective") or "Maximize area",
        autosized_threshold=float(values.get("autosized_threshold", 0.1)),
        flip_enabled=bool(values.get("flip_enabled")),
        flip_options=tuple(values.get("flip_options") or ()),
        caption_enabled=bool(values.get("caption_enabled")),
        caption_options=tuple(values.get("caption_options") or ()),
    )


def unavailable_reason(state) -> str | None:
    """None when the extras core can run here, else why not (shown on the tab instead of a fake result)."""
    if getattr(state, "upscalers", None) is None or getattr(state, "face_restorers", None) is None:
        return ("Extras cannot run here: the app state has no upscaler registry and face restorers "
                "(AppState.upscalers / AppState.face_restorers).")
    try:
        import webui.core.postprocess.extras  # noqa: F401
    except Exception as e:  # a broken install (a missing dependency): say so on the tab rather than fail the whole page
        return f"Extras is not available: {type(e).__name__}: {e}"
    return None


def build(state) -> c.TabUi:
    form = common.Form()
    why = unavailable_reason(state)
    upscalers = ["None"]
    if why is None:
        upscalers = c.upscaler_names(state)
    mode = form.add("extras_mode", gr.Number(value=0, precision=0, visible=False))
    with gr.Row(equal_height=False):
        with gr.Column(variant="panel"):
            if why:
                gr.HTML(f"<div class='webui-notice'>{common.plaintext_to_html(why)}</div>", elem_id="extras_notice")
            with gr.Tabs(elem_id="mode_extras"):
                with gr.Tab(MODES[0], id="single_image", elem_id="extras_single_tab") as t0:
                    form.add("image", gr.Image(label="Source", type="pil", image_mode="RGBA", elem_id="extras_image",
                                               sources=["upload", "clipboard"], format="png"))
                with gr.Tab(MODES[1], id="batch_process", elem_id="extras_batch_process_tab") as t1:
                    form.add("image_batch", gr.File(label="Batch Process", file_count="multiple",
                                                    elem_id="extras_image_batch"))
                with gr.Tab(MODES[2], id="batch_from_directory", elem_id="extras_batch_directory_tab") as t2:
                    hidden = state.config.hide_ui_dir_config
                    form.add("input_dir", gr.Textbox(label="Input directory", interactive=not hidden,
                                                     elem_id="extras_batch_input_dir"))
                    form.add("output_dir", gr.Textbox(label="Output directory", interactive=not hidden,
                                                      elem_id="extras_batch_output_dir"))
                    form.add("show_extras_results", gr.Checkbox(label="Show result images", value=True,
                                                                elem_id="extras_show_extras_results"))
            for i, t in enumerate((t0, t1, t2)):
                t.select(lambda i=i: i, None, mode, show_progress="hidden", queue=False)
            submit = gr.Button("Generate", elem_id="extras_generate", variant="primary", interactive=why is None)
            with gr.Accordion("Upscale", open=True, elem_id="extras_upscale"):
                resize_mode = form.add("resize_mode", gr.Number(value=0, precision=0, visible=False))
                with gr.Tabs():
                    with gr.Tab("Scale by", id="extras_scale_by_tab") as by:
                        form.add("upscaling_resize", gr.Slider(minimum=1.0, maximum=8.0, step=0.05, value=4,
                                                               label="Resize", elem_id="extras_upscaling_resize"))
                        form.add("max_side_length", gr.Number(label="Max side length", value=0, precision=0,
                                                              elem_id="extras_upscale_max_side_length"))
                    with gr.Tab("Scale to", id="extras_scale_to_tab") as to, gr.Row():
                        form.add("upscaling_resize_w", gr.Slider(label="Width", minimum=64, maximum=8192,
                                                                 step=8, value=512))
                        form.add("upscaling_resize_h", gr.Slider(label="Height", minimum=64, maximum=8192,
                                                                 step=8, value=512))
                        form.add("upscaling_crop", gr.Checkbox(label="Crop to fit", value=True))
                by.select(lambda: 0, None, resize_mode, show_progress="hidden", queue=False)
                to.select(lambda: 1, None, resize_mode, show_progress="hidden", queue=False)
                with gr.Row():
                    form.add("upscaler_1", gr.Dropdown(label="Upscaler 1", choices=upscalers, value="None",
                                                       elem_id="extras_upscaler_1"))
                    form.add("upscaler_2", gr.Dropdown(label="Upscaler 2", choices=upscalers, value="None",
                                                       elem_id="extras_upscaler_2"))
                    form.add("extras_upscaler_2_visibility", gr.Slider(minimum=0.0, maximum=1.0, step=0.001,
                                                                       label="Upscaler 2 visibility", value=0.0))
            with gr.Accordion("GFPGAN", open=False):
                form.add("gfpgan_visibility", gr.Slider(minimum=0.0, maximum=1.0, step=0.001,
                                                        label="Visibility", value=0.0,
                                                        elem_id="extras_gfpgan_visibility"))
            with gr.Accordion("CodeFormer", open=False):
                form.add("codeformer_visibility", gr.Slider(minimum=0.0, maximum=1.0, step=0.001,
                                                            label="Visibility", value=0.0,
                                                            elem_id="extras_codeformer_visibility"))
                form.add("codeformer_weight", gr.Slider(minimum=0.0, maximum=1.0, step=0.001,
                                                        label="Weight (0 = maximum effect, 1 = minimum effect)",
                                                        value=0.0, elem_id="extras_codeformer_weight"))
            _training_sections(form, state)
        with gr.Column(variant="panel"):
            progress = gr.HTML("", elem_id="extras_progress")
            gallery = gr.Gallery(label="Result", show_label=False, elem_id="extras_gallery", columns=4, format="png",
                                 interactive=False)
            html_info = gr.HTML(elem_id="html_info_extras")
            html_log = gr.HTML(elem_id="html_log_extras")

    if why is None:
        def run(values: dict):
            named = form.named(values)
            try:
                opts = to_request(named)
                inputs = _inputs(named)
                upscalers_, restorers = state.upscalers, state.face_restorers
                from webui.core.postprocess.extras import run_extras

                future = common.submit(state, NAME, lambda p: run_extras(
                    int(named.get("extras_mode") or 0), opts, upscalers=upscalers_, restorers=restorers,
                    settings=state.settings, data_dir=state.config.data_dir,
                    hide_ui_dir_config=state.config.hide_ui_dir_config, progress=p,
                    models_dir=state.config.models_dir, interrogators=state.interrogators, **inputs))
            except Exception as e:
                yield {progress: "", html_log: common.error_html(e)}
                return
            for tick in common.watch(state, future, previews=False):
                yield {progress: tick.html}
            try:
                result = future.result()
            except Exception as e:
                yield {progress: "", html_log: common.error_html(e)}
                return
            notes = "".join(f"<div class='webui-notice'>{common.plaintext_to_html(n)}</div>"
                            for n in getattr(result, "comments", ()))
            yield {progress: "", gallery: result.images, html_info: result.html_info, html_log: notes}

        submit.click(run, form.inputs(), [progress, gallery, html_info, html_log], show_progress="hidden",
                     concurrency_limit=None)
    ui = c.TabUi(name=NAME, form=form, tab_id=NAME)
    ui.image_target = {"extras": form["image"]}
    return ui


def _inputs(values: dict[str, Any]) -> dict[str, Any]:
    mode = int(values.get("extras_mode") or 0)
    if mode == 1:
        files = values.get("image_batch") or []
        import os

        return {"image_folder": [(common.open_image(f), os.path.basename(str(f))) for f in files]}
    if mode == 2:
        return {"input_dir": values.get("input_dir") or "", "output_dir": values.get("output_dir") or ""}
    return {"image": common.open_image(values.get("image"))}


def _training_sections(form, state) -> None:
    """A1111's "postprocessing for training" scripts (Split oversized images, Auto focal point crop, Auto-sized crop,
    Create flipped copies): each an accordion with its enable box and A1111's defaults. Splits and crops aim at the
    Upscale section's target size."""
    from webui.core.postprocess.training_prep import face_detector

    # A1111 orders these by (order, name): Caption (4000) comes before Split oversized images (4000)
    with gr.Accordion("Caption", open=False, elem_id="extras_caption"):
        form.add("caption_enabled", gr.Checkbox(label="Caption", value=False, elem_id="extras_caption_enabled"))
        form.add("caption_options", gr.CheckboxGroup(value=["Deepbooru"], choices=["Deepbooru", "BLIP"],
                                                     show_label=False, elem_id="postprocess_caption_options"))
        gr.Markdown("Writes NAME.txt beside each saved image (Settings > Postprocessing > Action for existing "
                    "captions). Deepbooru needs models/torch_deepdanbooru/model-resnet_custom_v3.pt, BLIP "
                    "models/BLIP/model_base_caption_capfilt_large.pth.")
    with gr.Accordion("Split oversized images", open=False, elem_id="extras_split_oversized"):
        form.add("split_enabled", gr.Checkbox(label="Split oversized images", value=False,
                                              elem_id="extras_split_enabled"))
        with gr.Row():
            form.add("split_threshold", gr.Slider(label="Threshold", value=0.5, minimum=0.0, maximum=1.0, step=0.05,
                                                  elem_id="postprocess_split_threshold"))
            form.add("split_overlap_ratio", gr.Slider(label="Overlap ratio", value=0.2, minimum=0.0, maximum=0.9,
                                                      step=0.05, elem_id="postprocess_overlap_ratio"))
    with gr.Accordion("Auto focal point crop", open=False, elem_id="extras_focal_crop"):
        form.add("focal_enabled", gr.Checkbox(label="Auto focal point crop", value=False,
                                              elem_id="extras_focal_enabled"))
        detector = face_detector(state.config.models_dir)
        if detector.note:
            gr.HTML(f"<div class='webui-notice'>{common.plaintext_to_html(detector.note)}</div>",
                    elem_id="extras_focal_face_notice")
        form.add("focal_face_weight", gr.Slider(label="Focal point face weight", value=0.9, minimum=0.0, maximum=1.0,
                                                step=0.05, elem_id="postprocess_focal_crop_face_weight",
                                                interactive=detector.kind is not None))
        form.add("focal_entropy_weight", gr.Slider(label="Focal point entropy weight", value=0.15, minimum=0.0,
                                                   maximum=1.0, step=0.05,
                                                   elem_id="postprocess_focal_crop_entropy_weight"))
        form.add("focal_edges_weight", gr.Slider(label="Focal point edges weight", value=0.5, minimum=0.0,
                                                 maximum=1.0, step=0.05,
                                                 elem_id="postprocess_focal_crop_edges_weight"))
        form.add("focal_debug", gr.Checkbox(label="Create debug image", elem_id="train_process_focal_crop_debug"))
    with gr.Accordion("Auto-sized crop", open=False, elem_id="extras_autosized_crop"):
        form.add("autosized_enabled", gr.Checkbox(label="Auto-sized crop", value=False,
                                                  elem_id="extras_autosized_enabled"))
        gr.Markdown("Each image is center-cropped with an automatically chosen width and height.")
        with gr.Row():
            form.add("autosized_mindim", gr.Slider(minimum=64, maximum=2048, step=8, label="Dimension lower bound",
                                                   value=384, elem_id="postprocess_multicrop_mindim"))
            form.add("autosized_maxdim", gr.Slider(minimum=64, maximum=2048, step=8, label="Dimension upper bound",
                                                   value=768, elem_id="postprocess_multicrop_maxdim"))
        with gr.Row():
            form.add("autosized_minarea", gr.Slider(minimum=64 * 64, maximum=2048 * 2048, step=1,
                                                    label="Area lower bound", value=64 * 64,
                                                    elem_id="postprocess_multicrop_minarea"))
            form.add("autosized_maxarea", gr.Slider(minimum=64 * 64, maximum=2048 * 2048, step=1,
                                                    label="Area upper bound", value=640 * 640,
                                                    elem_id="postprocess_multicrop_maxarea"))
        with gr.Row():
            form.add("autosized_objective", gr.Radio(["Maximize area", "Minimize error"], value="Maximize area",
                                                     label="Resizing objective",
                                                     elem_id="postprocess_multicrop_objective"))
            form.add("autosized_threshold", gr.Slider(minimum=0, maximum=1, step=0.01, label="Error threshold",
                                                      value=0.1, elem_id="postprocess_multicrop_threshold"))
    with gr.Accordion("Create flipped copies", open=False, elem_id="extras_flipped_copies"):
        form.add("flip_enabled", gr.Checkbox(label="Create flipped copies", value=False,
                                             elem_id="extras_flip_enabled"))
        form.add("flip_options", gr.CheckboxGroup(value=["Horizontal"], choices=["Horizontal", "Vertical", "Both"],
                                                  show_label=False, elem_id="postprocess_flip_options"))
