"""The Train tab (A1111 ``textual_inversion/ui`` and ``hypernetworks/ui``): laid out with A1111's controls, disabled
with a notice until a training core (``webui.core.train``) exists -- never a fake result."""

from __future__ import annotations

import gradio as gr

from webui.ui import common
from webui.ui import components as c

NAME = "train"


def unavailable_reason() -> str | None:
    try:
        import webui.core.train  # noqa: F401
    except ImportError:
        return "Training is not available yet: there is no training core (webui.core.train) in this build."
    return "Training is not wired into the UI yet."


def build(state) -> c.TabUi:
    form = common.Form()
    why = unavailable_reason()
    off = {"interactive": False}
    gr.HTML(f"<div class='webui-notice'>{common.plaintext_to_html(why)}</div>", elem_id="train_notice")
    embeddings = sorted(state.embeddings.loaded) if state.embeddings is not None else []
    hypernets = state.hypernetworks.names() if state.hypernetworks is not None else []
    with gr.Tabs(elem_id="train_tabs"):
        with gr.Tab("Create embedding", id="train_create_embedding"):
            form.add("new_embedding_name", gr.Textbox(label="Name", **off))
            form.add("initialization_text", gr.Textbox(label="Initialization text", value="*", **off))
            form.add("nvpt", gr.Slider(label="Number of vectors per token", minimum=1, maximum=75, step=1, value=1,
                                       **off))
            form.add("overwrite_old_embedding", gr.Checkbox(value=False, label="Overwrite Old Embedding", **off))
            gr.Button("Create embedding", interactive=False)
        with gr.Tab("Create hypernetwork", id="train_create_hypernetwork"):
            form.add("new_hypernetwork_name", gr.Textbox(label="Name", **off))
            form.add("new_hypernetwork_sizes", gr.CheckboxGroup(label="Modules", value=["768", "320", "640", "1280"],
                                                                choices=["768", "1024", "320", "640", "1280"], **off))
            form.add("new_hypernetwork_layer_structure", gr.Textbox("1, 2, 1", label="Hypernetwork layer structure",
                                                                    **off))
            form.add("new_hypernetwork_activation_func", gr.Dropdown(value="linear", label="Activation function",
                                                                     choices=["linear", "relu", "leakyrelu", "elu",
                                                                              "swish", "tanh", "sigmoid"], **off))
            gr.Button("Create hypernetwork", interactive=False)
        with gr.Tab("Train", id="train_train"):
            gr.HTML("<p>Train an embedding or Hypernetwork; you must specify a directory with a set of 1:1 ratio "
                    "images.</p>")
            with gr.Row():
                form.add("train_embedding_name", gr.Dropdown(label="Embedding", choices=embeddings, **off))
                form.add("train_hypernetwork_name", gr.Dropdown(label="Hypernetwork", choices=hypernets, **off))
            with gr.Row():
                form.add("embedding_learn_rate", gr.Textbox(label="Embedding Learning rate", value="0.005", **off))
                form.add("hypernetwork_learn_rate", gr.Textbox(label="Hypernetwork Learning rate", value="0.00001",
                                                               **off))
            with gr.Row():
                form.add("clip_grad_mode", gr.Dropdown(value="disabled", label="Gradient Clipping",
                                                       choices=["disabled", "value", "norm"], **off))
                form.add("clip_grad_value", gr.Textbox(value="0.1", show_label=False, **off))
            with gr.Row():
                form.add("batch_size", gr.Number(label="Batch size", value=1, precision=0, **off))
                form.add("gradient_step", gr.Number(label="Gradient accumulation steps", value=1, precision=0, **off))
            form.add("dataset_directory", gr.Textbox(label="Dataset directory", placeholder="Path to directory with "
                                                     "input images", **off))
            form.add("log_directory", gr.Textbox(label="Log directory", value="textual_inversion", **off))
            form.add("template_file", gr.Dropdown(label="Prompt template", choices=["style_filewords.txt"],
                                                  value="style_filewords.txt", **off))
            with gr.Row():
                form.add("training_width", gr.Slider(minimum=64, maximum=2048, step=8, label="Width", value=512, **off))
                form.add("training_height", gr.Slider(minimum=64, maximum=2048, step=8, label="Height", value=512,
                                                      **off))
            form.add("steps", gr.Number(label="Max steps", value=100000, precision=0, **off))
            with gr.Row():
                form.add("create_image_every", gr.Number(label="Save an image to log directory every N steps, 0 to "
                                                         "disable", value=500, precision=0, **off))
                form.add("save_embedding_every", gr.Number(label="Save a copy of embedding to log directory every N "
                                                           "steps, 0 to disable", value=500, precision=0, **off))
            with gr.Row():
                gr.Button("Train Embedding", interactive=False)
                gr.Button("Train Hypernetwork", interactive=False)
    return c.TabUi(name=NAME, form=form, tab_id=NAME)
