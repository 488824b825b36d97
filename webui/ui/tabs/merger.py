"""The Checkpoint Merger tab (A1111 ``ui_checkpoint_merger``): models A/B/C, method, multiplier, format, float16, config
source, bake-in VAE, discard weights, metadata. Runs :func:`webui.core.models.merge.merge_checkpoints` on the shared queue
(the worker owns the disk-heavy work, as A1111 takes its queue lock) when that core is importable."""

from __future__ import annotations

from typing import Any

import gradio as gr

from webui.ui import common
from webui.ui import components as c

NAME = "modelmerger"

INTERP_METHODS = ("No interpolation", "Weighted sum", "Add difference")
CONFIG_SOURCES = ("A, B or C", "B", "C", "Don't")
INTERP_DESCRIPTIONS = {
    "No interpolation": "No interpolation will be used. Requires one model; A. Allows for format conversion and VAE "
                        "baking.",
    "Weighted sum": "A weighted sum will be used for interpolation. Requires two models; A and B. The result is "
                    "calculated as A * (1 - M) + B * M",
    "Add difference": "The difference between the last two models will be added to the first. Requires three "
                      "models; A, B and C. The result is calculated as A + (B - C) * M",
}


def to_request(values: dict[str, Any]):
    """The tab's values by component name -> ``webui.core.models.merge.MergeRequest`` (A1111 run_modelmerger's args)."""
    from webui.core.models.merge import MergeRequest

    def model(key):
        v = values.get(key)
        return v or None

    return MergeRequest(
        primary_model_name=values.get("primary_model_name") or "",
        secondary_model_name=model("secondary_model_name"),
        tertiary_model_name=model("tertiary_model_name"),
        interp_method=values.get("interp_method") or "Weighted sum",
        multiplier=float(values.get("interp_amount", 0.3)),
        save_as_half=bool(values.get("save_as_half")),
        custom_name=values.get("custom_name") or "",
        checkpoint_format=values.get("checkpoint_format") or "safetensors",
        config_source=int(values.get("config_source") or 0),
        bake_in_vae=values.get("bake_in_vae") or "None",
        discard_weights=values.get("discard_weights") or "",
        save_metadata=bool(values.get("save_metadata", True)),
        add_merge_recipe=bool(values.get("add_merge_recipe", True)),
        copy_metadata_fields=bool(values.get("copy_metadata_fields", True)),
        metadata_json=values.get("metadata_json") or "{}",
    )


def unavailable_reason() -> str | None:
    try:
        from webui.core.models.merge import merge_checkpoints  # noqa: F401
    except Exception as e:
        return f"Checkpoint Merger cannot run here: {type(e).__name__}: {e}"
    return None


def build(state) -> c.TabUi:
    form = common.Form()
    why = unavailable_reason()
    titles = c.checkpoint_titles(state)
    vaes = ["None", *state.vae_registry.names()]
    with gr.Row(equal_height=False):
        with gr.Column(variant="compact"):
            if why:
                gr.HTML(f"<div class='webui-notice'>{common.plaintext_to_html(why)}</div>",
                        elem_id="modelmerger_notice")
            gr.HTML("<p>A merger of the two checkpoints will be generated in your <b>checkpoint</b> directory.</p>")
            with gr.Row():
                a = form.add("primary_model_name", gr.Dropdown(titles, label="Primary model (A)",
                                                               elem_id="modelmerger_primary_model_name"))
                b = form.add("secondary_model_name", gr.Dropdown(titles, label="Secondary model (B)",
                                                                 elem_id="modelmerger_secondary_model_name"))
                cc = form.add("tertiary_model_name", gr.Dropdown(titles, label="Tertiary model (C)",
                                                                 elem_id="modelmerger_tertiary_model_name"))
                refresh = gr.Button("🔄", elem_id="modelmerger_refresh_checkpoints", min_width=40, scale=0,
                                    elem_classes=["tool"])
            form.add("custom_name", gr.Textbox(label="Custom Name (Optional)", elem_id="modelmerger_custom_name"))
            form.add("interp_amount", gr.Slider(minimum=0.0, maximum=1.0, step=0.05, label="Multiplier (M) - set to 0 "
                                                "to get model A", value=0.3, elem_id="modelmerger_interp_amount"))
            method = form.add("interp_method", gr.Radio(choices=list(INTERP_METHODS), value="Weighted sum",
                                                        label="Interpolation Method",
                                                        elem_id="modelmerger_interp_method"))
            description = gr.HTML(f"<p>{INTERP_DESCRIPTIONS['Weighted sum']}</p>",
                                  elem_id="modelmerger_interp_description")
            with gr.Row():
                form.add("checkpoint_format", gr.Radio(choices=["ckpt", "safetensors"], value="safetensors",
                                                       label="Checkpoint format",
                                                       elem_id="modelmerger_checkpoint_format"))
                form.add("save_as_half", gr.Checkbox(value=False, label="Save as float16",
                                                     elem_id="modelmerger_save_as_half"))
            form.add("config_source", gr.Radio(choices=list(CONFIG_SOURCES), value=CONFIG_SOURCES[0], type="index",
                                               label="Copy config from", elem_id="modelmerger_config_method"))
            with gr.Row():
                form.add("bake_in_vae", gr.Dropdown(choices=vaes, value="None", label="Bake in VAE",
                                                    elem_id="modelmerger_bake_in_vae"))
            form.add("discard_weights", gr.Textbox(value="", label="Discard weights with matching name",
                                                   elem_id="modelmerger_discard_weights"))
            with gr.Accordion("Metadata", open=False):
                with gr.Row():
                    form.add("save_metadata", gr.Checkbox(value=True, label="Save metadata"))
                    form.add("add_merge_recipe", gr.Checkbox(value=True, label="Add merge recipe metadata"))
                    form.add("copy_metadata_fields", gr.Checkbox(value=True, label="Copy metadata from merged models"))
                form.add("metadata_json", gr.Textbox(value="{}", label="Metadata in JSON format", lines=3))
            merge = gr.Button("Merge", elem_id="modelmerger_merge", variant="primary", interactive=why is None)
        with gr.Column(variant="compact"):
            progress = gr.HTML("", elem_id="modelmerger_progress")
            result = gr.HTML(elem_id="modelmerger_result")

    method.change(lambda m: f"<p>{INTERP_DESCRIPTIONS.get(m, '')}</p>", method, description, show_progress="hidden",
                  queue=False)

    def refresh_models():
        state.registry.refresh()
        titles_ = c.checkpoint_titles(state)
        return [gr.update(choices=titles_) for _ in range(3)]

    refresh.click(refresh_models, None, [a, b, cc], show_progress="hidden")

    if why is None:
        def run(values: dict):
            from webui.core.models.merge import merge_checkpoints

            named = form.named(values)
            try:
                req = to_request(named)

                def job(p):
                    def report(text, step, total):
                        p.textinfo = text
                        p.job_count = max(1, int(total))
                        p.job_no = int(step)

                    return merge_checkpoints(req, state.registry, state.vae_registry,
                                             output_dir=state.config.ckpt_dir, progress=report)

                future = common.submit(state, NAME, job)
            except Exception as e:
                yield {progress: "", result: common.error_html(e)}
                return
            for tick in common.watch(state, future, previews=False):
                yield {progress: tick.html}
            try:
                done = future.result()
            except Exception as e:
                yield {progress: "", result: common.error_html(e)}
                return
            titles_ = c.checkpoint_titles(state)
            yield {progress: "", result: f"<div class='webui-notice'>{common.plaintext_to_html(done.message)}</div>",
                   a: gr.update(choices=titles_), b: gr.update(choices=titles_), cc: gr.update(choices=titles_)}

        merge.click(run, form.inputs(), [progress, result, a, b, cc], show_progress="hidden", concurrency_limit=None)
    return c.TabUi(name=NAME, form=form, tab_id=NAME)
