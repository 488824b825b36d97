"""The sd-webui-controlnet accordion under txt2img and img2img: control_net_unit_count units ("Multi-ControlNet"),
each with the extension's labels, and the form values -> units mapping the tab's request carries."""

from __future__ import annotations

import gradio as gr

from webui.ui import common




def controlnet_accordion(state, registry, form: common.Form, tab: str) -> None:
    """The ControlNet units' controls (sd-webui-controlnet's labels); the request carries them in
    ``extension_args["controlnet"]`` and the plugin runs them. Disabled, with the reason, when the model folder cannot
    be read."""
    why = None
    modules, models = ["none"], ["None"]
    try:
        from webui.core.controlnet import module_list

        modules = module_list() or ["none"]
        models = ["None", *registry.model_list()]
    except Exception as e:  # a broken model folder must not break the page
        why = f"ControlNet is not available: {type(e).__name__}: {e}"
    count = max(1, int(state.settings.get("control_net_unit_count") or 1))  # the extension's "Multi-ControlNet"
    with gr.Accordion("ControlNet", open=False, elem_id=f"{tab}_controlnet"):
        if why:
            gr.HTML(f"<div class='webui-notice'>{common.plaintext_to_html(why)}</div>",
                    elem_id=f"{tab}_controlnet_notice")
        interactive = why is None
        with gr.Tabs():
            for index in range(count):
                with gr.Tab(f"ControlNet Unit {index}"):
                    _controlnet_unit(form, tab, _cn_prefix(index), modules, models, interactive)


def _cn_prefix(index: int) -> str:
    """Component names of unit ``index``: "cn_" for the first (what the tests and the paste code use), then "cn1_"..."""
    return "cn_" if index == 0 else f"cn{index}_"


def _controlnet_unit(form: common.Form, tab: str, p: str, modules: list, models: list, interactive: bool) -> None:
    """One unit's controls, with sd-webui-controlnet's labels."""
    with gr.Row():
        form.add(f"{p}enabled", gr.Checkbox(label="Enable", value=False, interactive=interactive,
                                            elem_id=f"{tab}_{p}enabled"))
        form.add(f"{p}pixel_perfect", gr.Checkbox(label="Pixel Perfect", value=False, interactive=interactive))
        form.add(f"{p}low_vram", gr.Checkbox(label="Low VRAM", value=False, interactive=interactive))
    form.add(f"{p}image", gr.Image(label="ControlNet image", type="pil", image_mode="RGB", sources=["upload",
                                   "clipboard"], interactive=interactive, height=256))
    with gr.Row():
        form.add(f"{p}module", gr.Dropdown(label="Preprocessor", choices=modules, value=modules[0],
                                           interactive=interactive))
        form.add(f"{p}model", gr.Dropdown(label="Model", choices=models, value="None", interactive=interactive))
    with gr.Row():
        form.add(f"{p}weight", gr.Slider(label="Control Weight", minimum=0.0, maximum=2.0, step=0.05, value=1.0,
                                         interactive=interactive))
        form.add(f"{p}guidance_start", gr.Slider(label="Starting Control Step", minimum=0.0, maximum=1.0,
                                                 step=0.01, value=0.0, interactive=interactive))
        form.add(f"{p}guidance_end", gr.Slider(label="Ending Control Step", minimum=0.0, maximum=1.0, step=0.01,
                                               value=1.0, interactive=interactive))
    with gr.Row():
        form.add(f"{p}processor_res", gr.Slider(label="Preprocessor Resolution", minimum=64, maximum=2048,
                                                step=8, value=512, interactive=interactive))
        form.add(f"{p}threshold_a", gr.Slider(label="Threshold A", minimum=-1, maximum=256, step=1, value=-1,
                                              interactive=interactive))
        form.add(f"{p}threshold_b", gr.Slider(label="Threshold B", minimum=-1, maximum=256, step=1, value=-1,
                                              interactive=interactive))
    form.add(f"{p}control_mode", gr.Radio(label="Control Mode", choices=CONTROL_MODES, value=CONTROL_MODES[0],
                                          type="index", interactive=interactive))
    form.add(f"{p}resize_mode", gr.Radio(label="Resize Mode", choices=CN_RESIZE_MODES, value=CN_RESIZE_MODES[1],
                                         type="index", interactive=interactive))


CONTROL_MODES = ["Balanced", "My prompt is more important", "ControlNet is more important"]
CN_RESIZE_MODES = ["Just Resize", "Crop and Resize", "Resize and Fill"]


def controlnet_units(values: dict) -> tuple:
    """The accordion's enabled ControlNet units, in unit order, as ``extension_args["controlnet"]``."""
    from webui.core.types import ControlNetUnit

    units = []
    index = 0
    while f"{_cn_prefix(index)}enabled" in values or index == 0:
        p = _cn_prefix(index)
        index += 1
        if not values.get(f"{p}enabled"):
            continue
        image = values.get(f"{p}image")
        units.append(ControlNetUnit(
            enabled=True,
            module=values.get(f"{p}module") or "none",
            model=values.get(f"{p}model") or "None",
            weight=float(values.get(f"{p}weight", 1.0)),
            image=common.png_bytes(image) if image is not None else None,
            resize_mode=int(values.get(f"{p}resize_mode") or 0),
            low_vram=bool(values.get(f"{p}low_vram")),
            processor_res=int(values.get(f"{p}processor_res", -1)),
            threshold_a=float(values.get(f"{p}threshold_a", -1)),
            threshold_b=float(values.get(f"{p}threshold_b", -1)),
            guidance_start=float(values.get(f"{p}guidance_start", 0.0)),
            guidance_end=float(values.get(f"{p}guidance_end", 1.0)),
            control_mode=int(values.get(f"{p}control_mode") or 0),
            pixel_perfect=bool(values.get(f"{p}pixel_perfect")),
        ))
    return tuple(units)
