"""Create and train hypernetworks (A1111 ``hypernetworks/hypernetwork.py``: ``Hypernetwork.__init__``/``save``,
``create_hypernetwork``, ``train_hypernetwork``, ``save_hypernetwork``).

The file is A1111's ``.pt``: ``{size: (state dict k, state dict v), ..., "step", "name", "layer_structure",
"activation_func", "is_layer_norm", "weight_initialization", "sd_checkpoint", "sd_checkpoint_name",
"activate_output", "use_dropout", "dropout_structure", "last_layer_dropout", "optional_info"}`` in
``--hypernetwork-dir``; the optimizer beside it as ``<name>.pt.optim`` (``optimizer_name``, ``hash``: the first 10
hex digits of the file's sha256, ``optimizer_state_dict``). The layers are trained inside the loaded UNet's attention
(``apply_hypernetwork_layers``), the model's own weights frozen.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import os

import torch

from webui.core.networks.hypernetworks import (
    HypernetworkModule,
    apply_hypernetwork_layers,
    load_hypernetwork,
)
from webui.core.train import common
from webui.core.train import tensorboard as train_tensorboard
from webui.core.train.args import (
    CreateHypernetworkArgs,
    TrainHypernetworkArgs,
    TrainingInputError,
    validate_create_hypernetwork,
    validate_train,
)
from webui.core.train.textual_inversion import TrainResult, _TrainingLoop

log = logging.getLogger(__name__)


def optimizer_classes() -> dict[str, type]:
    """A1111 ``optimizer_dict``: every optimizer class of ``torch.optim`` by its class name."""
    return {n: c for n, c in inspect.getmembers(torch.optim, inspect.isclass)
            if n != "Optimizer" and issubclass(c, torch.optim.Optimizer)}


def init_weights(module: HypernetworkModule, weight_init: str, activation_func: str | None) -> None:
    """A1111 ``HypernetworkModule.__init__`` for a new file: Linear and LayerNorm weights drawn by ``weight_init``
    (LayerNorm always "Normal"), biases zero."""
    from torch.nn.init import kaiming_normal_, kaiming_uniform_, normal_, xavier_normal_, xavier_uniform_, zeros_

    nonlinearity = "leaky_relu" if activation_func == "leakyrelu" else "relu"
    for layer in module.linear:
        if type(layer) not in (torch.nn.Linear, torch.nn.LayerNorm):
            continue
        w, b = layer.weight.data, layer.bias.data
        if weight_init == "Normal" or type(layer) is torch.nn.LayerNorm:
            normal_(w, mean=0.0, std=0.01)
            normal_(b, mean=0.0, std=0)
        elif weight_init == "XavierUniform":
            xavier_uniform_(w)
            zeros_(b)
        elif weight_init == "XavierNormal":
            xavier_normal_(w)
            zeros_(b)
        elif weight_init == "KaimingUniform":
            kaiming_uniform_(w, nonlinearity=nonlinearity)
            zeros_(b)
        elif weight_init == "KaimingNormal":
            kaiming_normal_(w, nonlinearity=nonlinearity)
            zeros_(b)
        else:
            raise KeyError(f"Key {weight_init} is not defined as initialization!")


def hypernetwork_data(layers: dict, *, name: str, step: int, layer_structure, activation_func, add_layer_norm: bool,
                      weight_init: str, sd_checkpoint, sd_checkpoint_name, activate_output: bool, use_dropout: bool,
                      dropout_structure, last_layer_dropout: bool, optional_info=None) -> dict:
    """The dict A1111's ``Hypernetwork.save`` pickles (state dicts copied to the CPU)."""
    state: dict = {}
    for size, (k, v) in layers.items():
        state[size] = tuple({key: t.detach().cpu().clone() for key, t in m.state_dict().items()} for m in (k, v))
    state["step"] = step
    state["name"] = name
    state["layer_structure"] = list(layer_structure)
    state["activation_func"] = activation_func
    state["is_layer_norm"] = add_layer_norm
    state["weight_initialization"] = weight_init
    state["sd_checkpoint"] = sd_checkpoint
    state["sd_checkpoint_name"] = sd_checkpoint_name
    state["activate_output"] = activate_output
    state["use_dropout"] = use_dropout
    state["dropout_structure"] = list(dropout_structure)
    # A1111: (dropout_structure[-2] != 0) when there is a structure
    state["last_layer_dropout"] = (dropout_structure[-2] != 0) if dropout_structure is not None else last_layer_dropout
    state["optional_info"] = optional_info or None
    return state


def file_shorthash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[0:10]


def save_hypernetwork_file(path: str, data: dict, optimizer_name: str | None = None,
                           optimizer_state: dict | None = None) -> str:
    common.torch_save_atomic(data, path)
    if optimizer_state is not None:
        saved = {"optimizer_name": optimizer_name or "AdamW", "hash": file_shorthash(path),
                 "optimizer_state_dict": optimizer_state}
        common.torch_save_atomic(saved, f"{path}.optim")
    return path


def create_hypernetwork(services: common.TrainingServices, args: CreateHypernetworkArgs) -> str:
    """A1111 ``create_hypernetwork``: new layers for each size, written to ``<hypernetwork dir>/<name>.pt``, the
    registry refreshed. Returns the file name."""
    name, layer_structure, dropout = validate_create_hypernetwork(args)
    fn = os.path.join(services.hypernetwork_dir, f"{name}.pt")
    if not args.overwrite_old and os.path.exists(fn):
        raise TrainingInputError("overwrite_old", f"file {fn} already exists", status=409)
    # A1111: with use_dropout and a dropout structure string, that structure; otherwise zeros
    dropout_structure = dropout if dropout is not None else [0] * len(layer_structure)
    weight_init = args.weight_init or "Normal"
    layers = {}
    for size in args.enable_sizes:
        pair = []
        for _ in range(2):
            m = HypernetworkModule(int(size), layer_structure, args.activation_func, args.add_layer_norm, False,
                                   dropout_structure)
            init_weights(m, weight_init, args.activation_func)
            pair.append(m)
        layers[int(size)] = tuple(pair)
    data = hypernetwork_data(layers, name=name, step=0, layer_structure=layer_structure,
                             activation_func=args.activation_func, add_layer_norm=args.add_layer_norm,
                             weight_init=weight_init, sd_checkpoint=None, sd_checkpoint_name=None,
                             activate_output=False, use_dropout=args.use_dropout,
                             dropout_structure=dropout_structure, last_layer_dropout=True)
    os.makedirs(services.hypernetwork_dir, exist_ok=True)
    save_hypernetwork_file(fn, data)
    if services.hypernetworks is not None:
        services.hypernetworks.refresh()
    return fn


def train_hypernetwork(services: common.TrainingServices, args: TrainHypernetworkArgs, progress=None) -> TrainResult:
    """A1111 ``train_hypernetwork`` on the loaded model (see ``train_embedding`` for progress and interrupt)."""
    templates = services.templates()
    files = validate_train(args, templates)
    train_tensorboard.check_available(services.settings)  # a missing package: a 4xx before anything is written
    registry = services.hypernetworks
    registry.refresh()
    name = args.hypernetwork_name.rsplit("(", 1)[0]  # A1111's UI titles were "name(hash)"
    info = registry.resolve(name)
    if info is None:
        raise TrainingInputError("hypernetwork_name", f"unknown hypernetwork {args.hypernetwork_name!r}; available: "
                                                      f"{', '.join(registry.names()) or '(none)'}", status=404)
    comp = services.model()
    common.check_trainable(comp)
    hn = load_hypernetwork(info.path)
    filename = os.path.join(services.hypernetwork_dir, f"{name}.pt")
    log_directory = common.today_log_directory(services.log_root(args.log_directory), name)
    hypernetwork_dir = os.path.join(log_directory, "hypernetworks") if args.save_hypernetwork_every > 0 else None
    images_dir = os.path.join(log_directory, "images") if args.create_image_every > 0 else None
    for d in (hypernetwork_dir, images_dir):
        if d:
            os.makedirs(d, exist_ok=True)
    initial_step = int(hn.step or 0)
    schedules, done = common.begin_training(progress, "train-hypernetwork", "Initializing hypernetwork training...", args, initial_step)
    if schedules is None:
        return TrainResult(filename, initial_step, False, done)
    scheduler, clip_grad, clip_sched = schedules
    checkpoint = comp.info
    device = comp.unet.device
    layers = {size: tuple(m.to(device=device, dtype=torch.float32) for m in pair) for size, pair in hn.layers.items()}
    weights = [p for pair in layers.values() for m in pair for p in m.parameters()]

    class Counter:
        step = initial_step

    counter = Counter()

    def should_stop() -> bool:
        return progress is not None and progress.interrupted

    def train_mode(on: bool) -> None:  # A1111 train_mode / eval_mode
        for pair in layers.values():
            for m in pair:
                m.train(on)
                m.requires_grad_(on)

    def data(step: int) -> dict:
        return hypernetwork_data(layers, name=name, step=step, layer_structure=hn.layer_structure,
                                 activation_func=hn.activation_func, add_layer_norm=hn.add_layer_norm,
                                 weight_init=hn.weight_init, sd_checkpoint=checkpoint.shorthash,
                                 sd_checkpoint_name=checkpoint.model_name, activate_output=hn.activate_output,
                                 use_dropout=hn.use_dropout, dropout_structure=hn.dropout_structure,
                                 last_layer_dropout=hn.last_layer_dropout, optional_info=hn.optional_info)

    with contextlib.ExitStack() as scope, common.frozen_model(comp):
        services.engine.use_vae(scope, comp)  # option sd_vae: the VAE generations use encodes the dataset too
        ds = common.prepare_dataset(services, args, comp, files, templates[args.template_filename], name, progress,
                                    should_stop)
        if services.option("save_training_settings_to_txt"):
            os.makedirs(log_directory, exist_ok=True)
            common.save_settings_to_file(log_directory, {
                **vars(args), "model_name": checkpoint.model_name, "model_hash": checkpoint.sha256,
                "num_of_dataset_images": len(ds), "layer_structure": hn.layer_structure,
                "activation_func": hn.activation_func, "weight_init": hn.weight_init,
                "add_layer_norm": hn.add_layer_norm, "use_dropout": hn.use_dropout, "initial_step": initial_step,
                "template_file": templates[args.template_filename]})

        # A1111: the optimizer named in the .optim file (AdamW when none or unknown), its state when the hash fits
        saved: dict = {}
        if os.path.exists(f"{filename}.optim"):
            try:
                saved = torch.load(f"{filename}.optim", map_location="cpu", weights_only=True)
            except Exception as e:
                log.warning("cannot read %s.optim (%s); starting with a new optimizer", filename, e)
                saved = {}
        optimizer_name = saved.get("optimizer_name", "AdamW") if isinstance(saved, dict) else "AdamW"
        classes = optimizer_classes()
        if optimizer_name not in classes:
            log.warning("Optimizer type %s is not defined!", optimizer_name)
            optimizer_name = "AdamW"
        optimizer = classes[optimizer_name](params=weights, lr=scheduler.learn_rate)
        if saved.get("optimizer_state_dict") and os.path.exists(filename) and \
                saved.get("hash") == file_shorthash(filename):
            try:
                optimizer.load_state_dict(saved["optimizer_state_dict"])
                log.info("Loaded existing optimizer from checkpoint")
            except (RuntimeError, ValueError) as e:
                log.warning("Cannot resume from saved optimizer! %s", e)
        save_optimizer = bool(services.option("save_optimizer_state"))

        board = train_tensorboard.open_for_training(services.settings, log_directory, len(ds))
        if board is not None:
            scope.callback(board.close)  # on every way out: the end, an interrupt, an error
        loop = _TrainingLoop(services, comp, args, ds, progress, what="hypernetwork", tensorboard=board)
        parking = common.VaeParking(comp, services.option("unload_models_when_training"))
        parking.park()
        train_mode(True)
        try:
            from webui.core.generation.conditioning import EncoderOptions, PromptEncoder

            encoder = PromptEncoder(comp, EncoderOptions.from_settings(services.settings),
                                    width=args.training_width, height=args.training_height,
                                    embeddings=services.embeddings)
            # A1111 include_cond: each image's caption encoded once -- unless tags are shuffled or dropped, when
            # every use makes a new caption (then nothing is kept, or the cache would grow without end)
            conds: dict[str, torch.Tensor] = {}
            keep = not (args.shuffle_tags or args.tag_drop_out)

            def cond_for(texts: list[str]) -> torch.Tensor:
                if not keep:
                    return encoder(list(texts)).context
                rows = []
                for t in texts:
                    if t not in conds:
                        conds[t] = encoder([t]).context[0]
                    rows.append(conds[t])
                return torch.stack(rows)

            def loss_fn(batch):
                c = cond_for(batch.cond_text)
                with torch.enable_grad(), apply_hypernetwork_layers(comp.unet, [(layers, 1.0)]):
                    return common.diffusion_loss(comp, batch.latent_sample, c,
                                                 batch.weight if args.use_weight else None)

            def after_step(steps_done: int) -> None:
                if hypernetwork_dir is not None and steps_done % args.save_hypernetwork_every == 0:
                    path = os.path.join(hypernetwork_dir, f"{name}-{steps_done}.pt")
                    save_hypernetwork_file(path, data(counter.step), optimizer_name,
                                           optimizer.state_dict() if save_optimizer else None)
                    loop.last_saved_file = path

            def preview(steps_done: int, batch):  # -> the preview image, or None
                train_mode(False)
                parking.restore()
                try:
                    with apply_hypernetwork_layers(comp.unet, [(layers, 1.0)]):
                        image, infotext, prompt = loop.render_preview(batch)
                finally:
                    parking.park()
                    train_mode(True)
                if image is not None:
                    path = common.save_preview(image, images_dir, f"{name}-{steps_done}", infotext,
                                               services.option("samples_format"))
                    loop.last_saved_image = f"{path}, prompt: {prompt}"
                return image

            try:
                loop.run(counter, optimizer, weights, scheduler, clip_grad, clip_sched, loss_fn, after_step,
                         preview if images_dir else None, "hypernetwork_loss.csv", log_directory,
                         "Training hypernetwork")
            except Exception as e:  # A1111 prints it and still saves the layers as they are (embeddings: not)
                error = e
            else:
                error = None
        finally:
            train_mode(False)
            parking.restore()
        save_hypernetwork_file(filename, data(counter.step), optimizer_name,
                               optimizer.state_dict() if save_optimizer else None)
    registry.refresh()
    if error is not None:
        raise error
    return TrainResult(filename, counter.step, should_stop(), losses=loop.losses)
