"""What embedding and hypernetwork training share: the services they run on, the frozen-model scope, the diffusion
loss (LDM's ``p_losses``), the VAE encoder for the dataset, previews, the loss CSV and the settings file."""

from __future__ import annotations

import contextlib
import csv
import datetime
import html
import io
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from webui.core.io.files import atomic_write

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot run on this model (e.g. an architecture A1111's trainer does not support either)."""


@dataclass
class TrainingServices:
    """What training needs from the application: the engine (models, generation, settings), the embedding database,
    the hypernetwork registry and the folders. Built by the adapters from AppState."""

    engine: Any
    settings: Any
    embeddings: Any
    hypernetworks: Any
    embeddings_dir: str
    hypernetwork_dir: str
    templates_dir: str | None
    base_dir: str  # a relative log directory is under this folder (A1111: its working folder, the install)

    def model(self):
        """The loaded model (the selected checkpoint is loaded when none is)."""
        comp = self.engine.current_model()
        if comp is None:
            comp = self.engine.load(self.engine.resolve_checkpoint(None))
        return comp

    def option(self, key: str) -> Any:
        return self.settings.get(key)

    def templates(self) -> dict[str, str]:
        from webui.core.train.templates import list_templates

        return list_templates(self.templates_dir)

    def log_root(self, log_directory: str) -> str:
        return log_directory if os.path.isabs(log_directory) else os.path.join(self.base_dir, log_directory)


def check_trainable(comp) -> None:
    """A1111's trainer is written for the SD1/SD2 ``cond_stage_model``; SDXL's conditioner and inpainting UNets
    (extra input channels) are refused here with a clear message instead of failing in the middle."""
    if comp.arch not in ("SD1", "SD2"):
        raise TrainingError(f"training embeddings and hypernetworks needs an SD1.x or SD2.x checkpoint; the loaded "
                            f"model {comp.info.name} is {comp.arch}")
    if comp.unet.config.in_channels != 4:
        raise TrainingError(f"training on an inpainting or instruct model ({comp.info.name}, "
                            f"{comp.unet.config.in_channels} input channels) is not supported")


@contextlib.contextmanager
def frozen_model(comp) -> Iterator[None]:
    """Within the block no weight of the model takes a gradient and every module is in eval mode; on leaving, each
    parameter gets back its ``requires_grad`` and each module its mode. The weights themselves are never written."""
    modules = comp.modules()
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    modes = [(sub, sub.training) for m in modules for sub in m.modules()]
    try:
        for p in params:
            p.requires_grad_(False)
        for m in modules:
            m.eval()
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        for sub, mode in modes:
            sub.training = mode


def vae_encoder(comp) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """pixels [1, 3, H, W] in [-1, 1] -> (mean, std) of the latent distribution, scaled as LDM's
    ``get_first_stage_encoding`` scales its sample (``scale_factor``)."""
    vae = comp.vae
    scale = float(vae.config.scaling_factor)

    @torch.no_grad()
    def encode(pixels: torch.Tensor):
        dist = vae.encode(pixels.to(vae.device, vae.dtype), return_dict=False)[0]
        return dist.mean.float() * scale, dist.std.float() * scale

    return encode


def diffusion_loss(comp, latents: torch.Tensor, context: torch.Tensor, weight: torch.Tensor | None = None,
                   generator: torch.Generator | list | None = None) -> torch.Tensor:
    """LDM ``LatentDiffusion.forward`` -> ``p_losses`` as A1111's trainer calls it: a uniform random timestep per
    image, Gaussian noise, the UNet's prediction against the noise (eps models) or the velocity (v models), mean
    squared error (``l_simple_weight`` 1, ``logvar`` 0, so the loss is plain MSE); with ``weight`` (A1111's
    ``weighted_forward``) the squared error is weighted per latent pixel before the mean."""
    unet = comp.unet
    device = unet.device
    x0 = latents.to(device, torch.float32)
    acp = comp.alphas_cumprod.to(device=device, dtype=torch.float32)
    if isinstance(generator, (list, tuple)):  # one generator per image: its draws do not depend on its batch place
        t = torch.cat([torch.randint(0, acp.shape[0], (1,), generator=g) for g in generator]).to(device)
        noise = torch.cat([torch.randn((1, *x0.shape[1:]), generator=g) for g in generator]).to(device)
    else:
        t = torch.randint(0, acp.shape[0], (x0.shape[0],), generator=generator, device="cpu").to(device)
        noise = torch.randn(x0.shape, generator=generator, device="cpu").to(device)
    a = acp[t].sqrt().view(-1, 1, 1, 1)
    s = (1.0 - acp[t]).sqrt().view(-1, 1, 1, 1)
    noisy = a * x0 + s * noise
    out = unet(noisy.to(unet.dtype), t, encoder_hidden_states=context.to(unet.dtype), return_dict=False)[0].float()
    target = a * noise - s * x0 if comp.prediction_type == "v_prediction" else noise
    err = (out - target) ** 2
    if weight is not None:
        err = err * weight.to(device, torch.float32)
    return err.mean()


def torch_save_atomic(obj: Any, path: str) -> str:
    """``torch.save`` through a temporary file: a reader (or the embedding scan) never sees half a file."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write(path, buf.getvalue())


def write_loss(log_directory: str, filename: str, step: int, epoch_len: int, values: dict, every: int) -> None:
    """A1111 ``write_loss``: a CSV row every ``training_write_csv_every`` steps (0: never), header on creation."""
    if every == 0 or step % every != 0:
        return
    path = os.path.join(log_directory, filename)
    write_header = not os.path.exists(path)
    with open(path, "a+", newline="") as fout:
        writer = csv.DictWriter(fout, fieldnames=["step", "epoch", "epoch_step", *values.keys()])
        if write_header:
            writer.writeheader()
        writer.writerow({"step": step, "epoch": (step - 1) // epoch_len, "epoch_step": (step - 1) % epoch_len,
                         **values})


# A1111 textual_inversion/saving_settings.py: what the settings file keeps
SAVED_PARAMS_SHARED = {"model_name", "model_hash", "initial_step", "num_of_dataset_images", "learn_rate",
                       "batch_size", "clip_grad_mode", "clip_grad_value", "gradient_step", "data_root",
                       "log_directory", "training_width", "training_height", "steps", "create_image_every",
                       "template_file", "latent_sampling_method"}
SAVED_PARAMS_TI = {"embedding_name", "num_vectors_per_token", "save_embedding_every",
                   "save_image_with_stored_embedding"}
SAVED_PARAMS_HYPERNET = {"hypernetwork_name", "layer_structure", "activation_func", "weight_init",
                         "add_layer_norm", "use_dropout", "save_hypernetwork_every"}
SAVED_PARAMS_PREVIEWS = {"preview_prompt", "preview_negative_prompt", "preview_steps", "preview_sampler_name",
                         "preview_cfg_scale", "preview_seed", "preview_width", "preview_height"}


def prepare_dataset(services, args, comp, files: list, template_file: str, placeholder_token: str, progress,
                    should_stop: Callable[[], bool]):
    """A1111's PersonalizedDataset as both trainers build it: the dataset's images at the training size, encoded by
    the model's VAE, with the template's prompts (``[name]`` = ``placeholder_token``), the caption options and the
    filename-word options. Shows "Preparing dataset" on the progress meanwhile."""
    import random

    from webui.core.train.dataset import PersonalizedDataset
    from webui.core.train.templates import read_template_lines

    if progress is not None:
        progress.textinfo = f"Preparing dataset from {html.escape(args.data_root)}..."
    return PersonalizedDataset(
        files, width=args.training_width, height=args.training_height, placeholder_token=placeholder_token,
        template_lines=read_template_lines(template_file), encode=vae_encoder(comp),
        batch_size=args.batch_size, gradient_step=args.gradient_step, shuffle_tags=args.shuffle_tags,
        tag_drop_out=args.tag_drop_out, latent_sampling_method=args.latent_sampling_method,
        varsize=args.varsize, use_weight=args.use_weight,
        word_regex=services.option("dataset_filename_word_regex") or "",
        join_string=services.option("dataset_filename_join_string"), should_stop=should_stop,
        rng=random.Random())


def save_settings_to_file(log_directory: str, all_params: dict) -> str:
    """A1111 ``save_settings_to_file``: ``settings-<date-time>.json`` in the log folder."""
    now = datetime.datetime.now()
    params = {"datetime": now.strftime("%Y-%m-%d %H:%M:%S")}
    keys = SAVED_PARAMS_SHARED | SAVED_PARAMS_TI | SAVED_PARAMS_HYPERNET
    if all_params.get("preview_from_txt2img"):
        keys = keys | SAVED_PARAMS_PREVIEWS
    params.update({k: v for k, v in all_params.items() if k in keys})
    path = os.path.join(log_directory, f"settings-{now.strftime('%Y-%m-%d-%H-%M-%S')}.json")
    return atomic_write(path, json.dumps(params, indent=4, default=str))


def textinfo(loss: float, step: int, prompt: str, what: str, last_saved_file: str, last_saved_image: str) -> str:
    """A1111's ``shared.state.textinfo`` during training (HTML, shown under the progress bar)."""
    return f"""
<p>
Loss: {loss:.7f}<br/>
Step: {step}<br/>
Last prompt: {html.escape(prompt)}<br/>
Last saved {what}: {html.escape(last_saved_file)}<br/>
Last saved image: {html.escape(last_saved_image)}<br/>
</p>
"""


def scheduler_for(field: str, text: str, steps: int, initial_step: int):
    """A1111's ``LearnRateScheduler`` from ``initial_step`` on; a schedule with nothing left after the step a resumed
    training starts from (A1111: a StopIteration in the job) is refused naming the field."""
    from webui.core.train.args import TrainingInputError
    from webui.core.train.schedule import LearnRateScheduler, ScheduleError

    try:
        return LearnRateScheduler(text, steps, initial_step)
    except ScheduleError as e:
        raise TrainingInputError(field, f"{e} (the file is at step {initial_step})") from None


def clip_grad_function(mode: str):
    """A1111: ``clip_grad_value_`` for "value", ``clip_grad_norm_`` for "norm", none for "disabled"."""
    return {"value": torch.nn.utils.clip_grad_value_, "norm": torch.nn.utils.clip_grad_norm_}.get(mode)


ALREADY_TRAINED = "Model has already been trained beyond specified max steps"


def begin_training(progress, job: str, textinfo: str, args, initial_step: int):
    """The start both of A1111's trainers share: the queue's tracker set up for ``job`` (job_count = steps), then
    either A1111's "already trained" message (returned as ``(None, message)`` when ``initial_step`` has reached
    ``args.steps``) or the learning-rate schedule, the clipping function and its schedule (``None`` when
    clipping is off) as ``((scheduler, clip_grad, clip_sched), None)``."""
    if progress is not None:
        progress.job = job
        progress.textinfo = textinfo
        progress.job_count = args.steps
    if initial_step >= args.steps:
        if progress is not None:
            progress.textinfo = ALREADY_TRAINED
        return None, ALREADY_TRAINED
    scheduler = scheduler_for("learn_rate", args.learn_rate, args.steps, initial_step)
    clip_grad = clip_grad_function(args.clip_grad_mode)
    clip_sched = scheduler_for("clip_grad_value", args.clip_grad_value, args.steps, initial_step) if clip_grad else None
    return (scheduler, clip_grad, clip_sched), None


def preview_request(args, batch_prompt: str):
    """A1111's preview ``StableDiffusionProcessingTxt2Img``: the txt2img-like preview settings when asked, else the
    batch's first prompt at the training size with 20 steps (A1111's processing defaults otherwise: seed -1, CFG 7,
    and -- its ``sampler_name`` left unset -- the first sampler)."""
    from webui.core.types import GenerationRequest

    if args.preview_from_txt2img:
        return GenerationRequest(prompt=args.preview_prompt, negative_prompt=args.preview_negative_prompt,
                                 steps=args.preview_steps, sampler_name=args.preview_sampler_name,
                                 cfg_scale=args.preview_cfg_scale, seed=args.preview_seed,
                                 width=args.preview_width, height=args.preview_height, do_not_save_grid=True)
    from webui.core.generation.samplers import SAMPLERS

    return GenerationRequest(prompt=batch_prompt, steps=20, width=args.training_width, height=args.training_height,
                             sampler_name=SAMPLERS[0].name, do_not_save_grid=True)


def save_preview(image, images_dir: str, forced_filename: str, infotext: str, fmt: str) -> str:
    """A1111 ``images.save_image(..., forced_filename=..., save_to_dirs=False)``: ``<images_dir>/<name>.<fmt>``."""
    from webui.core.io.images import save_image_atomic

    fmt = (fmt or "png").lower()
    return save_image_atomic(image, os.path.join(images_dir, f"{forced_filename}.{fmt}"), fmt, infotext)


def today_log_directory(log_root: str, name: str) -> str:
    """A1111: ``<log directory>/<YYYY-MM-DD>/<name>``."""
    return os.path.join(log_root, datetime.datetime.now().strftime("%Y-%m-%d"), name)


class VaeParking:
    """Option ``unload_models_when_training``: the VAE waits in RAM while the loss runs (A1111 moves
    ``first_stage_model`` to the CPU), comes back for each preview and at the end (:meth:`restore`)."""

    def __init__(self, comp, unload: bool):
        self.vae = comp.vae
        self.device = comp.vae.device
        self.active = bool(unload) and self.device.type != "cpu"

    def park(self) -> None:
        if self.active:
            self.vae.to("cpu")

    def restore(self) -> None:
        if self.active:
            self.vae.to(self.device)
