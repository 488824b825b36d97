"""Create and train textual-inversion embeddings (A1111 ``textual_inversion.py``: ``create_embedding``,
``Embedding.save``/``checksum``, ``train_embedding``, ``save_embedding``).

Files are A1111's: ``{"string_to_token": {"*": 265}, "string_to_param": {"*": vec}, "name", "step",
"sd_checkpoint", "sd_checkpoint_name"}`` in ``<embeddings dir>/<name>.pt``, the optimizer state beside it in
``<name>.pt.optim`` (``{"hash": checksum, "optimizer_state_dict"}``, option ``save_optimizer_state``), copies every N
steps in ``<log>/<date>/<name>/embeddings/<name>-<N>.pt``, previews in ``images/``, previews carrying the embedding in
``image_embeddings/``, the loss in ``textual_inversion_loss.csv``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field

import torch

from webui.core.networks.embeddings import Embedding
from webui.core.train import common
from webui.core.train import tensorboard as train_tensorboard
from webui.core.train.args import (
    CreateEmbeddingArgs,
    TrainEmbeddingArgs,
    TrainingInputError,
    validate_create_embedding,
    validate_train,
)

log = logging.getLogger(__name__)


def checksum(vec: torch.Tensor) -> str:
    """A1111 ``Embedding.checksum``: a 16-bit hash of the vectors, kept in the ``.optim`` file so that an optimizer
    state is only resumed with the vectors it belongs to."""
    r = 0
    for v in (vec.detach().cpu().reshape(-1) * 100).tolist():
        r = (r * 281 ^ int(v) * 997) & 0xFFFFFFFF
    return f"{r & 0xffff:04x}"


def embedding_data(vec: torch.Tensor, name: str, step: int | None, sd_checkpoint: str | None,
                   sd_checkpoint_name: str | None) -> dict:
    """The dict A1111's ``Embedding.save`` pickles."""
    return {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": vec.detach().cpu().float().clone()},
        "name": name,
        "step": step,
        "sd_checkpoint": sd_checkpoint,
        "sd_checkpoint_name": sd_checkpoint_name,
    }


def save_embedding_file(path: str, data: dict, optimizer_state: dict | None = None) -> str:
    """Write the embedding (atomically) and, when given, its optimizer state as ``<path>.optim``."""
    common.torch_save_atomic(data, path)
    if optimizer_state is not None:
        vec = data["string_to_param"]["*"]
        common.torch_save_atomic({"hash": checksum(vec), "optimizer_state_dict": optimizer_state}, f"{path}.optim")
    return path


def init_vectors(comp, init_text: str, num_vectors_per_token: int) -> torch.Tensor:
    """A1111 ``create_embedding``: ``num_vectors_per_token`` rows spread over the token embeddings of
    ``init_text`` (``encode_embedding_init_text``: CLIP-L truncates to that many tokens, OpenCLIP does not), zeros
    when the text is empty."""
    encoder, tokenizer = comp.text_encoder, comp.tokenizer
    text = init_text or "*"
    if comp.arch == "SD1":
        ids = tokenizer(text, max_length=num_vectors_per_token, truncation=True, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        ids = tokenizer("*", add_special_tokens=False)["input_ids"]
    table = encoder.get_input_embeddings()
    with torch.no_grad():
        embedded = table(torch.tensor([ids], device=table.weight.device))[0].float().cpu()
    vec = torch.zeros((num_vectors_per_token, embedded.shape[1]))
    if init_text:
        for i in range(num_vectors_per_token):
            vec[i] = embedded[i * int(embedded.shape[0]) // num_vectors_per_token]
    return vec


def create_embedding(services: common.TrainingServices, args: CreateEmbeddingArgs) -> str:
    """Write a new embedding for the loaded model and load it at once (A1111's API reloads the database). Returns
    the file name. Runs on the queue worker."""
    name = validate_create_embedding(args)
    fn = os.path.join(services.embeddings_dir, f"{name}.pt")
    if not args.overwrite_old and os.path.exists(fn):
        raise TrainingInputError("overwrite_old", f"file {fn} already exists", status=409)
    comp = services.model()
    if comp.arch not in ("SD1", "SD2"):
        raise TrainingInputError("name", f"embeddings can be created for SD1.x and SD2.x models; the loaded model is "
                                          f"{comp.arch}")
    vec = init_vectors(comp, args.init_text, args.num_vectors_per_token)
    save_embedding_file(fn, embedding_data(vec, name, 0, None, None))
    if services.embeddings is not None:
        services.embeddings.load(comp, force=True)
    return fn


@dataclass
class TrainResult:
    filename: str
    steps_done: int
    interrupted: bool
    message: str | None = None
    losses: list = field(default_factory=list)  # per optimizer step


def train_embedding(services: common.TrainingServices, args: TrainEmbeddingArgs, progress=None) -> TrainResult:
    """A1111 ``train_embedding`` on the loaded model. ``progress`` is the queue's tracker (job_count = steps,
    job_no = step, A1111's textinfo, previews as the current image; its ``interrupted`` flag stops the loop, after
    which the embedding is saved with the steps done, as in A1111)."""
    templates = services.templates()
    files = validate_train(args, templates)
    train_tensorboard.check_available(services.settings)  # a missing package: a 4xx before anything is written
    comp = services.model()
    common.check_trainable(comp)
    db = services.embeddings
    db.load(comp)
    current = db.get(args.embedding_name)
    if current is None or current.vec is None:
        raise TrainingInputError("embedding_name", f"unknown embedding {args.embedding_name!r}; loaded: "
                                                  f"{', '.join(db.loaded) or '(none)'}", status=404)
    name = args.embedding_name
    filename = os.path.join(services.embeddings_dir, f"{name}.pt")
    log_directory = common.today_log_directory(services.log_root(args.log_directory), name)
    embedding_dir = os.path.join(log_directory, "embeddings") if args.save_embedding_every > 0 else None
    images_dir = os.path.join(log_directory, "images") if args.create_image_every > 0 else None
    images_embeds_dir = (os.path.join(log_directory, "image_embeddings")
                         if args.create_image_every > 0 and args.save_image_with_stored_embedding else None)
    for d in (embedding_dir, images_dir, images_embeds_dir):
        if d:
            os.makedirs(d, exist_ok=True)

    initial_step = int(current.step or 0)
    schedules, done = common.begin_training(progress, "train-embedding", "Initializing textual inversion training...", args, initial_step)
    if schedules is None:
        return TrainResult(filename, initial_step, False, done)
    scheduler, clip_grad, clip_sched = schedules
    checkpoint = comp.info

    vec = current.vec.detach().clone().float().to(comp.text_encoder.device).requires_grad_(True)
    trained = Embedding(name=name, vectors=vec.shape[0], shape=vec.shape[1], vec=vec, step=initial_step)

    def should_stop() -> bool:
        return progress is not None and progress.interrupted

    with contextlib.ExitStack() as scope, common.frozen_model(comp):
        services.engine.use_vae(scope, comp)  # option sd_vae: the VAE generations use encodes the dataset too
        ds = common.prepare_dataset(services, args, comp, files, templates[args.template_filename], name, progress,
                                    should_stop)
        if services.option("save_training_settings_to_txt"):
            os.makedirs(log_directory, exist_ok=True)
            common.save_settings_to_file(log_directory, {
                **vars(args), "model_name": checkpoint.model_name, "model_hash": checkpoint.shorthash,
                "num_of_dataset_images": len(ds), "num_vectors_per_token": vec.shape[0],
                "initial_step": initial_step, "template_file": templates[args.template_filename]})

        optimizer = torch.optim.AdamW([vec], lr=scheduler.learn_rate, weight_decay=0.0)
        save_optimizer = bool(services.option("save_optimizer_state"))
        if save_optimizer and os.path.exists(f"{filename}.optim"):
            try:
                saved = torch.load(f"{filename}.optim", map_location="cpu", weights_only=True)
            except Exception as e:  # a damaged or foreign file: start afresh, as A1111 does when the hash differs
                log.warning("cannot read %s.optim (%s); starting with a new optimizer", filename, e)
                saved = {}
            if isinstance(saved, dict) and saved.get("hash") == checksum(vec) and saved.get("optimizer_state_dict"):
                optimizer.load_state_dict(saved["optimizer_state_dict"])
                log.info("Loaded existing optimizer from checkpoint")
            else:
                log.info("No saved optimizer exists in checkpoint")

        board = train_tensorboard.open_for_training(services.settings, log_directory, len(ds))
        if board is not None:
            scope.callback(board.close)  # on every way out: the end, an interrupt, an error
        loop = _TrainingLoop(services, comp, args, ds, progress, what="embedding", tensorboard=board)
        parking = common.VaeParking(comp, services.option("unload_models_when_training"))
        parking.park()
        try:
            from webui.core.generation.conditioning import EncoderOptions, PromptEncoder

            encoder = PromptEncoder(comp, EncoderOptions.from_settings(services.settings),
                                    width=args.training_width, height=args.training_height,
                                    embeddings=_TrainingLookup(db, trained))

            def loss_fn(batch):
                with torch.enable_grad():
                    c = encoder.encode(batch.cond_text).context
                    return common.diffusion_loss(comp, batch.latent_sample, c, batch.weight if args.use_weight else None)

            last_saved_file = "<none>"
            yet_to_be_embedded = False

            def after_step(steps_done: int) -> None:
                nonlocal last_saved_file, yet_to_be_embedded
                if embedding_dir is not None and steps_done % args.save_embedding_every == 0:
                    every_name = f"{name}-{steps_done}"
                    last_saved_file = os.path.join(embedding_dir, f"{every_name}.pt")
                    save_embedding_file(last_saved_file,
                                        embedding_data(vec, every_name, trained.step, checkpoint.shorthash,
                                                       checkpoint.model_name),
                                        optimizer.state_dict() if save_optimizer else None)
                    yet_to_be_embedded = True
                loop.last_saved_file = last_saved_file

            def preview(steps_done: int, batch):  # -> the preview image, or None
                nonlocal yet_to_be_embedded
                snapshot = Embedding(name=name, vectors=vec.shape[0], shape=vec.shape[1],
                                     vec=vec.detach().float().cpu().clone(), step=trained.step)
                parking.restore()
                try:
                    with db.overriding(snapshot):
                        image, infotext, prompt = loop.render_preview(batch)
                finally:
                    parking.park()
                if image is None:
                    return None
                if images_embeds_dir and yet_to_be_embedded and os.path.exists(last_saved_file):
                    _save_image_with_embedding(image, last_saved_file, checkpoint, steps_done,
                                               os.path.join(images_embeds_dir, f"{name}-{steps_done}.png"))
                    yet_to_be_embedded = False
                path = common.save_preview(image, images_dir, f"{name}-{steps_done}", infotext,
                                           services.option("samples_format"))
                loop.last_saved_image = f"{path}, prompt: {prompt}"
                return image

            loop.run(trained, optimizer, [vec], scheduler, clip_grad, clip_sched, loss_fn, after_step,
                     preview if images_dir else None, "textual_inversion_loss.csv", log_directory,
                     "Training textual inversion")
            save_embedding_file(filename, embedding_data(vec, name, trained.step, checkpoint.shorthash,
                                                         checkpoint.model_name),
                                optimizer.state_dict() if save_optimizer else None)
        finally:
            parking.restore()
    db.load(comp, force=True)
    return TrainResult(filename, trained.step, should_stop(), losses=loop.losses)


def _save_image_with_embedding(image, embedding_file: str, checkpoint, steps_done: int, path: str) -> None:
    """A1111 "Save images with embedding in PNG chunks": the preview, captioned, with the last saved embedding in
    the ``sd-ti-embedding`` text chunk and hidden in the image's side strips -- loadable back as an embedding."""
    from PIL import PngImagePlugin

    from webui.core.io.files import atomic_write
    from webui.core.train.image_embedding import caption_image_overlay, embedding_to_b64, insert_image_data_embed

    data = torch.load(embedding_file, map_location="cpu", weights_only=True)
    info = PngImagePlugin.PngInfo()
    info.add_text("sd-ti-embedding", embedding_to_b64(data))
    title = f"<{data.get('name', '???')}>"
    try:
        vector_size = next(iter(data["string_to_param"].values())).shape[0]
    except Exception:
        vector_size = "?"
    captioned = caption_image_overlay(image, title, checkpoint.model_name, f"[{checkpoint.shorthash}]",
                                      f"{vector_size}v {steps_done}s")
    captioned = insert_image_data_embed(captioned, data)

    def write(f):
        captioned.save(f, "PNG", pnginfo=info)

    atomic_write(path, write)


class _TrainingLookup:
    """The embedding database as the training prompts see it: the embedding in training answers for its name (its
    vectors carry the gradient), every other loaded embedding as usual."""

    def __init__(self, db, trained: Embedding):
        self.db = db
        self.trained = trained
        self._ids: dict[int, list[int]] = {}

    def find_embedding_at_position(self, tokens, offset: int, tokenizer):
        found, length = self.db.find_embedding_at_position(tokens, offset, tokenizer) if self.db else (None, 0)
        if found is not None and found.name == self.trained.name:
            return self.trained, length
        ids = self._ids.get(id(tokenizer))
        if ids is None:
            ids = list(tokenizer([self.trained.name], truncation=False, add_special_tokens=False)["input_ids"][0])
            self._ids[id(tokenizer)] = ids
        if ids and list(tokens[offset:offset + len(ids)]) == ids and len(ids) >= length:
            return self.trained, len(ids)
        return found, length


class _TrainingLoop:
    """A1111's training loop, shared by embeddings and hypernetworks: epochs of batches, gradient accumulation
    (``j == max_steps_per_epoch`` works as drop_last), the learning-rate and clipping schedules, the step counter
    with A1111's ``steps_done = step + 1`` naming, progress and textinfo, the loss CSV, previews."""

    def __init__(self, services, comp, args, ds, progress, what: str, tensorboard=None):
        self.services, self.comp, self.args, self.ds, self.progress, self.what = services, comp, args, ds, progress, what
        self.tensorboard = tensorboard  # a TrainingTensorboard when the option training_enable_tensorboard is on
        self.last_saved_file = "<none>"
        self.last_saved_image = "<none>"
        self.losses: list[float] = []  # the loss of every optimizer step, in order

    def interrupted(self) -> bool:
        return self.progress is not None and self.progress.interrupted

    def render_preview(self, batch):
        """One txt2img image as A1111's preview (no saving by the engine, no live progress). Returns (image,
        infotext, prompt); the image is also the progress's current image."""
        request = common.preview_request(self.args, batch.cond_text[0])
        with torch.no_grad():
            result = self.services.engine.generate(request, None)
        if not result.images:
            return None, None, request.prompt
        image = result.images[0]
        if self.progress is not None:
            self.progress.current_image = image
            self.progress.id_live_preview += 1
        return image, result.infotexts[0], request.prompt

    def run(self, counter, optimizer, params, scheduler, clip_grad, clip_sched, loss_fn, after_step, preview,
            csv_name: str, log_directory: str, description: str) -> None:
        args, ds, progress = self.args, self.ds, self.progress
        batch_size, gradient_step = ds.batch_size, ds.gradient_step
        steps_per_epoch = len(ds) // batch_size // gradient_step
        max_steps_per_epoch = len(ds) // batch_size - (len(ds) // batch_size) % gradient_step
        csv_every = int(self.services.option("training_write_csv_every") or 0)
        initial_step = counter.step
        loss_step, _loss_step = 0.0, 0.0
        optimizer.zero_grad(set_to_none=True)
        for _ in range((args.steps - initial_step) * gradient_step):
            if scheduler.finished or self.interrupted():
                break
            for j, batch in enumerate(ds.batches()):
                if j == max_steps_per_epoch:
                    break
                scheduler.apply(optimizer, counter.step)
                if scheduler.finished or self.interrupted():
                    break
                if clip_sched is not None:
                    clip_sched.step(counter.step)
                loss = loss_fn(batch) / gradient_step
                _loss_step += loss.item()
                loss.backward()
                if (j + 1) % gradient_step != 0:
                    continue
                if clip_grad is not None:
                    clip_grad(params, clip_sched.learn_rate)
                optimizer.step()
                counter.step += 1
                optimizer.zero_grad(set_to_none=True)
                loss_step, _loss_step = _loss_step, 0.0
                # A1111 names what it saves after step n "-(n+1)" (steps_done = step + 1); kept so that file names
                # and the "every N" moments match A1111's
                steps_done = counter.step + 1
                epoch_num, epoch_step = counter.step // steps_per_epoch, counter.step % steps_per_epoch
                log.debug("%s [Epoch %d: %d/%d] loss: %.7f", description, epoch_num, epoch_step + 1,
                          steps_per_epoch, loss_step)
                self.losses.append(loss_step)
                after_step(steps_done)
                image_epoch = epoch_num
                if self.tensorboard is not None:
                    # A1111 logs these scalars in train_hypernetwork only (train_embedding sets up the writer but
                    # adds nothing but previews); written for embeddings too, at the same point with the same
                    # arithmetic, so that "Enable tensorboard logging" shows an embedding's loss curve as well
                    tb_epoch = self.tensorboard.add_step(loss_step, counter.step, scheduler.learn_rate)
                    if self.what == "hypernetwork":  # A1111's block reassigns epoch_num, which names the image
                        image_epoch = tb_epoch
                common.write_loss(log_directory, csv_name, counter.step, steps_per_epoch,
                                  {"loss": f"{loss_step:.7f}", "learn_rate": scheduler.learn_rate}, csv_every)
                if preview is not None and steps_done % args.create_image_every == 0:
                    image = preview(steps_done, batch)
                    if image is not None and self.tensorboard is not None:
                        self.tensorboard.add_image(image, image_epoch, counter.step)
                if progress is not None:
                    progress.set_job_no(counter.step)
                    progress.textinfo = common.textinfo(loss_step, steps_done, batch.cond_text[0], self.what,
                                                        self.last_saved_file, self.last_saved_image)
