"""The Train tab (A1111 ``textual_inversion/ui`` and ``hypernetworks/ui`` as laid out in ``ui.py``): Create embedding,
Create hypernetwork, Train. Each button builds its args object with :func:`to_create_embedding` /
:func:`to_create_hypernetwork` / :func:`to_train` (A1111's argument names, the same objects the API builds) and runs
``webui.core.train`` on the shared queue, so the progress bar, /sdapi/v1/progress and Interrupt follow it like any
other job. "Read parameters from txt2img tab" takes the preview prompt, sampler, steps, CFG, seed and size from the
txt2img tab's controls, as A1111 does."""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

from webui.ui import common
from webui.ui import components as c

NAME = "train"
HN_SIZES = ["768", "320", "640", "1024", "1280"]
ACTIVATIONS = ["linear", "relu", "leakyrelu", "elu", "swish", "tanh", "sigmoid"]
PREVIEW_FROM_TXT2IMG = ("prompt", "negative_prompt", "steps", "sampler_name", "cfg_scale", "seed", "width", "height")


def to_create_embedding(values: dict[str, Any]):
    from webui.core.train.args import CreateEmbeddingArgs

    return CreateEmbeddingArgs(name=values.get("new_embedding_name") or "",
                               num_vectors_per_token=int(values.get("nvpt") or 1),
                               overwrite_old=bool(values.get("overwrite_old_embedding")),
                               init_text=values.get("initialization_text") or "")


def to_create_hypernetwork(values: dict[str, Any]):
    from webui.core.train.args import CreateHypernetworkArgs

    return CreateHypernetworkArgs(
        name=values.get("new_hypernetwork_name") or "",
        enable_sizes=tuple(int(s) for s in values.get("new_hypernetwork_sizes") or ()),
        overwrite_old=bool(values.get("overwrite_old_hypernetwork")),
        layer_structure=values.get("new_hypernetwork_layer_structure") or None,
        activation_func=values.get("new_hypernetwork_activation_func") or None,
        weight_init=values.get("new_hypernetwork_initialization_option") or None,
        add_layer_norm=bool(values.get("new_hypernetwork_add_layer_norm")),
        use_dropout=bool(values.get("new_hypernetwork_use_dropout")),
        dropout_structure=values.get("new_hypernetwork_dropout_structure") or None,
    )


def to_train(values: dict[str, Any], kind: str, txt2img: dict[str, Any] | None = None):
    """The Train sub-tab's values -> TrainEmbeddingArgs (``kind`` "embedding") or TrainHypernetworkArgs. ``txt2img``:
    the txt2img tab's values by name, read for previews when "Read parameters ... from txt2img tab" is ticked."""
    from webui.core.train.args import TrainEmbeddingArgs, TrainHypernetworkArgs

    t2i = txt2img or {}
    seed = t2i.get("seed")
    common_args = dict(
        batch_size=int(values.get("batch_size") or 1),
        gradient_step=int(values.get("gradient_step") or 1),
        data_root=values.get("dataset_directory") or "",
        log_directory=values.get("log_directory") or "",
        training_width=int(values.get("training_width") or 512),
        training_height=int(values.get("training_height") or 512),
        varsize=bool(values.get("varsize")),
        steps=int(values.get("steps") or 0),
        clip_grad_mode=values.get("clip_grad_mode") or "disabled",
        clip_grad_value=str(values.get("clip_grad_value") or "0.1"),
        shuffle_tags=bool(values.get("shuffle_tags")),
        tag_drop_out=float(values.get("tag_drop_out") or 0),
        latent_sampling_method=values.get("latent_sampling_method") or "once",
        use_weight=bool(values.get("use_weight")),
        create_image_every=int(values.get("create_image_every") or 0),
        template_filename=values.get("template_file") or "",
        preview_from_txt2img=bool(values.get("preview_from_txt2img")),
        preview_prompt=t2i.get("prompt") or "",
        preview_negative_prompt=t2i.get("negative_prompt") or "",
        preview_steps=int(t2i.get("steps") or 20),
        preview_sampler_name=t2i.get("sampler_name") or "DPM++ 2M",
        preview_cfg_scale=float(t2i.get("cfg_scale") or 7.0),
        preview_seed=int(seed) if seed is not None else -1,
        preview_width=int(t2i.get("width") or 512),
        preview_height=int(t2i.get("height") or 512),
    )
    if kind == "embedding":
        return TrainEmbeddingArgs(embedding_name=values.get("train_embedding_name") or "",
                                  learn_rate=str(values.get("embedding_learn_rate") or ""),
                                  save_embedding_every=int(values.get("save_embedding_every") or 0),
                                  save_image_with_stored_embedding=bool(values.get("save_image_with_stored_embedding")),
                                  **common_args)
    return TrainHypernetworkArgs(hypernetwork_name=values.get("train_hypernetwork_name") or "",
                                 learn_rate=str(values.get("hypernetwork_learn_rate") or ""),
                                 save_hypernetwork_every=int(values.get("save_embedding_every") or 0),
                                 **common_args)


def _embedding_names(state) -> list[str]:
    return sorted(state.embeddings.loaded) if state.embeddings is not None else []


def _hypernetwork_names(state) -> list[str]:
    if state.hypernetworks is None:
        return []
    state.hypernetworks.refresh()
    return state.hypernetworks.names()


def _templates(state) -> list[str]:
    from webui.state import training_services

    return list(training_services(state).templates())


def _notice(text: str) -> str:
    return f"<div class='webui-notice'>{common.plaintext_to_html(text)}</div>"


def build(state, txt2img: c.TabUi | None = None) -> c.TabUi:
    form = common.Form()
    templates = _templates(state)
    with gr.Row(equal_height=False):
        with gr.Column(variant="compact"), gr.Tabs(elem_id="train_tabs"):
            with gr.Tab("Create embedding", id="train_create_embedding"):
                form.add("new_embedding_name", gr.Textbox(label="Name", elem_id="train_new_embedding_name"))
                form.add("initialization_text", gr.Textbox(label="Initialization text", value="*",
                                                           elem_id="train_initialization_text"))
                form.add("nvpt", gr.Slider(label="Number of vectors per token", minimum=1, maximum=75, step=1,
                                           value=1, elem_id="train_nvpt"))
                form.add("overwrite_old_embedding", gr.Checkbox(value=False, label="Overwrite Old Embedding",
                                                                elem_id="train_overwrite_old_embedding"))
                create_embedding = gr.Button("Create embedding", variant="primary",
                                             elem_id="train_create_embedding")
            with gr.Tab("Create hypernetwork", id="train_create_hypernetwork"):
                form.add("new_hypernetwork_name", gr.Textbox(label="Name", elem_id="train_new_hypernetwork_name"))
                form.add("new_hypernetwork_sizes", gr.CheckboxGroup(label="Modules", value=["768", "320", "640",
                                                                                            "1280"],
                                                                    choices=HN_SIZES,
                                                                    elem_id="train_new_hypernetwork_sizes"))
                form.add("new_hypernetwork_layer_structure", gr.Textbox(
                    "1, 2, 1", label="Enter hypernetwork layer structure",
                    placeholder="1st and last digit must be 1. ex:'1, 2, 1'",
                    elem_id="train_new_hypernetwork_layer_structure"))
                form.add("new_hypernetwork_activation_func", gr.Dropdown(
                    value="linear", label="Select activation function of hypernetwork. Recommended : Swish / "
                    "Linear(none)", choices=ACTIVATIONS, elem_id="train_new_hypernetwork_activation_func"))
                form.add("new_hypernetwork_initialization_option", gr.Dropdown(
                    value="Normal", label="Select Layer weights initialization. Recommended: Kaiming for relu-like,"
                    " Xavier for sigmoid-like, Normal otherwise",
                    choices=["Normal", "KaimingUniform", "KaimingNormal", "XavierUniform", "XavierNormal"],
                    elem_id="train_new_hypernetwork_initialization_option"))
                form.add("new_hypernetwork_add_layer_norm", gr.Checkbox(
                    label="Add layer normalization", elem_id="train_new_hypernetwork_add_layer_norm"))
                form.add("new_hypernetwork_use_dropout", gr.Checkbox(
                    label="Use dropout", elem_id="train_new_hypernetwork_use_dropout"))
                form.add("new_hypernetwork_dropout_structure", gr.Textbox(
                    "0, 0, 0", label="Enter hypernetwork Dropout structure (or empty). Recommended : 0~0.35 "
                    "incrementing sequence: 0, 0.05, 0.15", placeholder="1st and last digit must be 0 and values "
                    "should be between 0 and 1. ex:'0, 0.01, 0'", elem_id="train_new_hypernetwork_dropout_structure"))
                form.add("overwrite_old_hypernetwork", gr.Checkbox(value=False, label="Overwrite Old Hypernetwork",
                                                                   elem_id="train_overwrite_old_hypernetwork"))
                create_hypernetwork = gr.Button("Create hypernetwork", variant="primary",
                                                elem_id="train_create_hypernetwork")
            with gr.Tab("Train", id="train_train"):
                gr.HTML("<p>Train an embedding or Hypernetwork; you must specify a directory with a set of 1:1 "
                        "ratio images.</p>")
                with gr.Row():
                    emb = form.add("train_embedding_name", gr.Dropdown(
                        label="Embedding", choices=_embedding_names(state), elem_id="train_embedding"))
                    hn = form.add("train_hypernetwork_name", gr.Dropdown(
                        label="Hypernetwork", choices=_hypernetwork_names(state), elem_id="train_hypernetwork"))
                    refresh = gr.Button("🔄", elem_id="train_refresh", min_width=40, scale=0,
                                        elem_classes=["tool"])
                with gr.Row():
                    form.add("embedding_learn_rate", gr.Textbox(label="Embedding Learning rate", value="0.005",
                                                                placeholder="Embedding Learning rate",
                                                                elem_id="train_embedding_learn_rate"))
                    form.add("hypernetwork_learn_rate", gr.Textbox(label="Hypernetwork Learning rate",
                                                                   value="0.00001",
                                                                   elem_id="train_hypernetwork_learn_rate"))
                with gr.Row():
                    form.add("clip_grad_mode", gr.Dropdown(value="disabled", label="Gradient Clipping",
                                                           choices=["disabled", "value", "norm"],
                                                           elem_id="train_clip_grad_mode"))
                    form.add("clip_grad_value", gr.Textbox(value="0.1", show_label=False,
                                                           placeholder="Gradient clip value",
                                                           elem_id="train_clip_grad_value"))
                with gr.Row():
                    form.add("batch_size", gr.Number(label="Batch size", value=1, precision=0,
                                                     elem_id="train_batch_size"))
                    form.add("gradient_step", gr.Number(label="Gradient accumulation steps", value=1,
                                                        precision=0, elem_id="train_gradient_step"))
                form.add("dataset_directory", gr.Textbox(label="Dataset directory",
                                                         placeholder="Path to directory with input images",
                                                         elem_id="train_dataset_directory"))
                form.add("log_directory", gr.Textbox(label="Log directory", value="textual_inversion",
                                                     placeholder="Path to directory where to write outputs",
                                                     elem_id="train_log_directory"))
                with gr.Row():
                    template = form.add("template_file", gr.Dropdown(
                        label="Prompt template", choices=templates,
                        value="style_filewords.txt" if "style_filewords.txt" in templates else None,
                        elem_id="train_template_file"))
                with gr.Row():
                    form.add("training_width", gr.Slider(minimum=64, maximum=2048, step=8, label="Width",
                                                         value=512, elem_id="train_training_width"))
                    form.add("training_height", gr.Slider(minimum=64, maximum=2048, step=8, label="Height",
                                                          value=512, elem_id="train_training_height"))
                form.add("varsize", gr.Checkbox(label="Do not resize images", value=False,
                                                elem_id="train_varsize"))
                form.add("steps", gr.Number(label="Max steps", value=100000, precision=0, elem_id="train_steps"))
                with gr.Row():
                    form.add("create_image_every", gr.Number(label="Save an image to log directory every N steps,"
                                                             " 0 to disable", value=500, precision=0,
                                                             elem_id="train_create_image_every"))
                    form.add("save_embedding_every", gr.Number(label="Save a copy of embedding to log directory "
                                                               "every N steps, 0 to disable", value=500,
                                                               precision=0, elem_id="train_save_embedding_every"))
                form.add("use_weight", gr.Checkbox(label="Use PNG alpha channel as loss weight", value=False,
                                                   elem_id="use_weight"))
                form.add("save_image_with_stored_embedding", gr.Checkbox(
                    label="Save images with embedding in PNG chunks", value=True,
                    elem_id="train_save_image_with_stored_embedding"))
                form.add("preview_from_txt2img", gr.Checkbox(
                    label="Read parameters (prompt, etc...) from txt2img tab when making previews", value=False,
                    elem_id="train_preview_from_txt2img", interactive=txt2img is not None))
                with gr.Row():
                    form.add("shuffle_tags", gr.Checkbox(label="Shuffle tags by ',' when creating prompts.",
                                                         value=False, elem_id="train_shuffle_tags"))
                    form.add("tag_drop_out", gr.Slider(minimum=0, maximum=1, step=0.1, label="Drop out tags when "
                                                       "creating prompts.", value=0,
                                                       elem_id="train_tag_drop_out"))
                form.add("latent_sampling_method", gr.Radio(label="Choose latent sampling method", value="once",
                                                            choices=["once", "deterministic", "random"],
                                                            elem_id="train_latent_sampling_method"))
                with gr.Row():
                    interrupt = gr.Button("Interrupt", elem_id="train_interrupt_training")
                    train_hn = gr.Button("Train Hypernetwork", variant="primary",
                                         elem_id="train_train_hypernetwork")
                    train_emb = gr.Button("Train Embedding", variant="primary", elem_id="train_train_embedding")
        with gr.Column(elem_id="ti_gallery_container"):
            progress = gr.HTML("", elem_id="ti_progress")
            textinfo = gr.HTML("", elem_id="ti_output")
            preview = gr.Image(label="Preview", interactive=False, elem_id="ti_preview", type="pil")
            outcome = gr.HTML("", elem_id="ti_outcome")

    t2i_names = [n for n in PREVIEW_FROM_TXT2IMG if txt2img is not None and n in txt2img.form]
    t2i_inputs = [txt2img.form[n] for n in t2i_names]

    def choices():
        return gr.update(choices=_embedding_names(state)), gr.update(choices=_hypernetwork_names(state)), \
            gr.update(choices=_templates(state))

    refresh.click(choices, None, [emb, hn, template], show_progress="hidden")

    def run_job(kind: str, fn):
        """Queue ``fn(progress)``; yield progress, A1111's textinfo and previews until it ends."""
        future = common.submit(state, kind, fn)
        tracker = state.queue.progress
        for tick in common.watch(state, future):
            running = tracker.current_task == future.task_id
            update = {progress: tick.html,
                      textinfo: tracker.textinfo if running and tracker.textinfo else gr.update()}
            if tick.preview is not None:
                update[preview] = tick.preview
            yield update, None
        try:
            yield {progress: ""}, future.result()
        except Exception as e:
            yield {progress: "", outcome: common.error_html(e)}, None

    def create_embedding_click(values: dict):
        from webui.core.train.textual_inversion import create_embedding as create
        from webui.state import training_services

        try:
            args = to_create_embedding(form.named(values))
        except Exception as e:
            yield {outcome: common.error_html(e)}
            return
        services = training_services(state)
        for update, result in run_job("create_embedding", lambda p: create(services, args)):
            if result is not None:
                update.update({outcome: _notice(f"Created: {result}"), emb: gr.update(choices=_embedding_names(state))})
            yield update

    def create_hypernetwork_click(values: dict):
        from webui.core.train.hypernetwork import create_hypernetwork as create
        from webui.state import training_services

        try:
            args = to_create_hypernetwork(form.named(values))
        except Exception as e:
            yield {outcome: common.error_html(e)}
            return
        services = training_services(state)
        for update, result in run_job("create_hypernetwork", lambda p: create(services, args)):
            if result is not None:
                update.update({outcome: _notice(f"Created: {result}"),
                               hn: gr.update(choices=_hypernetwork_names(state))})
            yield update

    def train_click(kind: str):
        def handler(values: dict):
            from webui.core.train.args import validate_train
            from webui.state import training_services

            named = form.named(values)
            t2i = {}
            if t2i_inputs:
                by_id = {id(comp): n for n, comp in zip(t2i_names, t2i_inputs)}
                t2i = {by_id[id(comp)]: v for comp, v in values.items() if id(comp) in by_id}
            services = training_services(state)
            try:
                args = to_train(named, kind, t2i)
                validate_train(args, services.templates())
            except Exception as e:
                yield {outcome: common.error_html(e)}
                return
            if kind == "embedding":
                from webui.core.train.textual_inversion import train_embedding as train
            else:
                from webui.core.train.hypernetwork import train_hypernetwork as train
            yield {outcome: "", textinfo: ""}
            for update, result in run_job(f"train_{kind}", lambda p: train(services, args, p)):
                if result is not None:
                    # A1111's answer text under the gallery
                    what = "Training" + (" interrupted" if result.interrupted else " finished")
                    text = (f"{what} at step {result.steps_done}.<br/>{kind.capitalize()} saved to "
                            f"{html.escape(result.filename)}")
                    if result.message:
                        text = html.escape(result.message)
                    update[outcome] = f"<div class='webui-notice'>{text}</div>"
                    update[emb] = gr.update(choices=_embedding_names(state))
                yield update
        return handler

    outputs = [progress, textinfo, preview, outcome, emb, hn]
    create_embedding.click(create_embedding_click, form.inputs("new_embedding_name", "initialization_text", "nvpt",
                                                               "overwrite_old_embedding"),
                           outputs, show_progress="hidden", concurrency_limit=None)
    create_hypernetwork.click(create_hypernetwork_click,
                              form.inputs(*[n for n in form.components if n.startswith(("new_hypernetwork_",
                                                                                         "overwrite_old_hyper"))]),
                              outputs, show_progress="hidden", concurrency_limit=None)
    train_inputs = form.inputs() | set(t2i_inputs)
    train_emb.click(train_click("embedding"), train_inputs, outputs, show_progress="hidden", concurrency_limit=None)
    train_hn.click(train_click("hypernetwork"), train_inputs, outputs, show_progress="hidden",
                   concurrency_limit=None)
    interrupt.click(lambda: state.queue.interrupt(), None, None, show_progress="hidden", queue=False)
    return c.TabUi(name=NAME, form=form, tab_id=NAME)
