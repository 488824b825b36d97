"""Training (issue 16): create and train embeddings and hypernetworks on the tiny SD1 checkpoint through the real
loader, as A1111's textual_inversion.py / hypernetwork.py do it. Sizes are tiny (32 px images, 4 of them) so a step
takes a fraction of a second on a CPU."""

from __future__ import annotations

import csv
import dataclasses
import glob
import hashlib
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from webui.config import parse
from webui.core.networks.embeddings import load_embedding_file
from webui.core.networks.hypernetworks import load_hypernetwork
from webui.core.train import common
from webui.core.train.args import (
    CreateEmbeddingArgs,
    CreateHypernetworkArgs,
    TrainEmbeddingArgs,
    TrainHypernetworkArgs,
    TrainingInputError,
    from_kwargs,
)
from webui.core.train.hypernetwork import create_hypernetwork, train_hypernetwork
from webui.core.train.schedule import LearnRateScheduler, ScheduleError, parse_schedule
from webui.core.train.textual_inversion import checksum, create_embedding, train_embedding
from webui.core.types import GenerationRequest
from webui.state import build_state, training_services

SIZE = 32


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread. On a shared 2-core machine torch's default two threads spin against other
    processes and a tiny step gets 10-20x slower; restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def state(data_dir):
    s = build_state(parse(["--nowebui", "--data-dir", str(data_dir)]), create_demo=False)
    s.settings.set("sd_model_checkpoint", "tiny-sd15.safetensors")
    s.settings.set("training_write_csv_every", 1)
    s.settings.set("save_optimizer_state", True)
    return s


@pytest.fixture
def dataset(tmp_path):
    """4 tiny images: two captioned by file name, two by .txt files."""
    d = tmp_path / "dataset"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i, name in enumerate(["01-red ball", "02-blue cube", "img3", "img4"]):
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(d / f"{name}.png")
    (d / "img3.txt").write_text("green cone, small")
    (d / "img4.txt").write_text("yellow star")
    (d / "notes.md").write_text("not an image: skipped")
    return str(d)


def _weights_digest(comp) -> str:
    h = hashlib.sha256()
    for m in comp.modules():
        for k, v in sorted(m.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@pytest.fixture
def fixed_noise(monkeypatch):
    """The same timesteps and noise at every step, so the loss moves only because the embedding moves (the real
    loss draws them at random, which at this size hides the trend in noise)."""
    real = common.diffusion_loss

    def fixed(comp, latents, context, weight=None, generator=None):
        # each image its own fixed draw, whatever its place in the (shuffled) batch
        seeds = [int(hashlib.sha256(x.numpy().tobytes()).hexdigest()[:8], 16) for x in latents]
        return real(comp, latents, context, weight, generator=[torch.Generator().manual_seed(s) for s in seeds])

    monkeypatch.setattr(common, "diffusion_loss", fixed)


def _image(state, prompt: str, **kw):
    return state.engine.generate(GenerationRequest(prompt=prompt, steps=3, width=SIZE, height=SIZE, seed=5,
                                                   sampler_name="Euler", **kw)).images[0]


# --- learning-rate schedules ----------------------------------------------------------------------------------------


def test_learn_rate_schedules_as_a1111():
    assert parse_schedule("0.005:100, 1e-3:1000, 1e-5", 2000) == [(0.005, 100), (1e-3, 1000), (1e-5, 2000)]
    assert parse_schedule("0.005:100, 1e-3:1000, 1e-5", 500) == [(0.005, 100), (1e-3, 500)]  # cut at max steps
    assert parse_schedule("0.005:100, 1e-3:1000", 2000, cur_step=150) == [(1e-3, 1000)]  # resumed past 100
    assert parse_schedule("0.1:-1", 30) == [(0.1, 30)]
    s = LearnRateScheduler("0.5:2, 0.25:4", 10)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=s.learn_rate)
    seen = []
    for step in range(6):
        s.apply(opt, step)
        seen.append((step, opt.param_groups[0]["lr"], s.finished))
    assert seen == [(0, 0.5, False), (1, 0.5, False), (2, 0.25, False), (3, 0.25, False), (4, 0.25, True),
                    (5, 0.25, True)]
    for bad in ("", "abc", "0.1:x", "0.1:2:3", "-1", "0.1:2,", "0.1:2, oops"):
        with pytest.raises(ScheduleError):
            parse_schedule(bad, 4)


def test_kwargs_name_the_field():
    with pytest.raises(TrainingInputError) as e:
        from_kwargs(CreateEmbeddingArgs, {"name": "x", "num_vectors_per_token": 1})
    assert e.value.field == "overwrite_old"
    with pytest.raises(TrainingInputError) as e:
        from_kwargs(CreateEmbeddingArgs, {"name": "x", "num_vectors_per_token": "two", "overwrite_old": False})
    assert e.value.field == "num_vectors_per_token"
    with pytest.raises(TrainingInputError) as e:
        from_kwargs(CreateEmbeddingArgs, {"name": "x", "num_vectors_per_token": 1, "overwrite_old": 0, "bogus": 1})
    assert e.value.field == "bogus"
    a = from_kwargs(CreateEmbeddingArgs, {"name": "x", "num_vectors_per_token": "2", "overwrite_old": "false"})
    assert (a.num_vectors_per_token, a.overwrite_old, a.init_text) == (2, False, "*")


# --- create -------------------------------------------------------------------------------------------------------


def test_create_embedding_is_a1111s_file_and_loads_at_once(state):
    svc = training_services(state)
    fn = create_embedding(svc, CreateEmbeddingArgs(name="my/new:tok", num_vectors_per_token=3, overwrite_old=False,
                                                   init_text="red ball"))
    assert fn == os.path.join(state.config.embeddings_dir, "mynewtok.pt")  # A1111 strips illegal characters
    data = torch.load(fn, weights_only=True)
    assert sorted(data) == ["name", "sd_checkpoint", "sd_checkpoint_name", "step", "string_to_param",
                            "string_to_token"]
    assert data["string_to_token"] == {"*": 265} and data["step"] == 0 and data["name"] == "mynewtok"
    vec = data["string_to_param"]["*"]
    comp = state.engine.current_model()
    ids = comp.tokenizer("red ball", add_special_tokens=False)["input_ids"]
    table = comp.text_encoder.get_input_embeddings().weight.detach().float().cpu()
    # 3 vectors spread over the 2 tokens: rows 0, 0, 1 (A1111: embedded[i * n // nvpt])
    assert torch.equal(vec, torch.stack([table[ids[0]], table[ids[0]], table[ids[1]]]))
    assert state.embeddings.api_listing()["loaded"]["mynewtok"]["vectors"] == 3
    with pytest.raises(TrainingInputError) as e:
        create_embedding(svc, CreateEmbeddingArgs(name="mynewtok", num_vectors_per_token=1, overwrite_old=False))
    assert e.value.status == 409 and "already exists" in str(e.value)
    create_embedding(svc, CreateEmbeddingArgs(name="mynewtok", num_vectors_per_token=1, overwrite_old=True,
                                              init_text=""))
    assert torch.count_nonzero(torch.load(fn, weights_only=True)["string_to_param"]["*"]) == 0  # no text: zeros


def test_create_hypernetwork_is_a1111s_file(state):
    svc = training_services(state)
    fn = create_hypernetwork(svc, CreateHypernetworkArgs(name="hn", enable_sizes=(32, 64), overwrite_old=False,
                                                         layer_structure="1, 2, 1", activation_func="relu",
                                                         add_layer_norm=True, use_dropout=True,
                                                         dropout_structure="0, 0.1, 0"))
    data = torch.load(fn, weights_only=True)
    assert {k for k in data if not isinstance(k, int)} == {
        "step", "name", "layer_structure", "activation_func", "is_layer_norm", "weight_initialization",
        "sd_checkpoint", "sd_checkpoint_name", "activate_output", "use_dropout", "dropout_structure",
        "last_layer_dropout", "optional_info"}
    assert data["dropout_structure"] == [0, 0.1, 0] and data["last_layer_dropout"] is True
    assert data["weight_initialization"] == "Normal" and data["activate_output"] is False
    hn = load_hypernetwork(fn)
    assert hn.sizes == [32, 64] and [type(m).__name__ for m in hn.layers[32][0].linear] == [
        "Linear", "ReLU", "LayerNorm", "Dropout", "Linear", "LayerNorm"]
    assert torch.count_nonzero(hn.layers[32][0].linear[0].bias) == 0  # A1111 "Normal": zero biases
    assert state.hypernetworks.resolve("hn") is not None
    with pytest.raises(TrainingInputError) as e:
        create_hypernetwork(svc, CreateHypernetworkArgs(name="x", enable_sizes=(32,), overwrite_old=False,
                                                        layer_structure="2, 1"))
    assert e.value.field == "layer_structure"


# --- train ----------------------------------------------------------------------------------------------------------


def _train_args(dataset, **kw) -> TrainEmbeddingArgs:
    base = dict(embedding_name="tok", learn_rate="0.05", batch_size=4, data_root=dataset, training_width=SIZE,
                training_height=SIZE, steps=30, create_image_every=15, save_embedding_every=15,
                template_filename="subject_filewords.txt", preview_from_txt2img=True, preview_prompt="a tok",
                preview_steps=2, preview_sampler_name="Euler", preview_width=SIZE, preview_height=SIZE,
                preview_seed=3, latent_sampling_method="deterministic")
    base.update(kw)
    return TrainEmbeddingArgs(**base)


def test_train_embedding_end_to_end(state, dataset, fixed_noise, caplog):
    svc = training_services(state)
    create_embedding(svc, CreateEmbeddingArgs(name="tok", num_vectors_per_token=2, overwrite_old=False,
                                              init_text="ball"))
    comp = state.engine.current_model()
    before_image = _image(state, "a photo of tok")
    digest = _weights_digest(comp)

    result = train_embedding(svc, _train_args(dataset))
    # 30 steps lower the loss: first five against the last five
    assert len(result.losses) == 30 and result.steps_done == 30 and not result.interrupted
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert last < first * 0.995, (first, last)
    # the model's own weights are untouched, bit for bit
    assert _weights_digest(comp) == digest
    # the final file: A1111's layout, step 30, the checkpoint it was trained on, loaded as an embedding at once
    data = torch.load(result.filename, weights_only=True)
    assert data["step"] == 30 and data["name"] == "tok" and data["sd_checkpoint"] == comp.info.shorthash
    assert data["sd_checkpoint_name"] == comp.info.model_name
    assert state.embeddings.get("tok").step == 30
    # ... and it changes the image of a prompt that uses it
    after_image = _image(state, "a photo of tok")
    assert before_image.tobytes() != after_image.tobytes()
    assert _image(state, "a photo of cat").tobytes() == _image(state, "a photo of cat").tobytes()

    # the log folder: A1111's layout and names (steps_done = step + 1)
    logs = glob.glob(os.path.join(state.config.data_dir, "textual_inversion", "*", "tok"))
    assert len(logs) == 1
    log_dir = logs[0]
    assert sorted(os.listdir(os.path.join(log_dir, "embeddings"))) == ["tok-15.pt", "tok-15.pt.optim",
                                                                       "tok-30.pt", "tok-30.pt.optim"]
    assert sorted(os.listdir(os.path.join(log_dir, "images"))) == ["tok-15.png", "tok-30.png"]
    assert not os.path.exists(os.path.join(log_dir, "tensorboard"))  # option training_enable_tensorboard off
    assert torch.load(os.path.join(log_dir, "embeddings", "tok-15.pt"), weights_only=True)["step"] == 14
    with open(os.path.join(log_dir, "textual_inversion_loss.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 31))
    assert [r["loss"] for r in rows] == [f"{x:.7f}" for x in result.losses]
    assert glob.glob(os.path.join(log_dir, "settings-*.json"))
    # the preview PNG with the embedding stored: loads back as the embedding saved at that step
    png = os.path.join(log_dir, "image_embeddings", "tok-15.png")
    stored = load_embedding_file(png)
    saved = torch.load(os.path.join(log_dir, "embeddings", "tok-15.pt"), weights_only=True)
    assert stored.name == "tok-15" and torch.equal(stored.vec, saved["string_to_param"]["*"])
    from webui.core.networks.embeddings import extract_image_data_embed

    with Image.open(png) as im:  # the copy hidden in the pixels too (what survives a re-encode of the text chunks)
        hidden = extract_image_data_embed(im)
    assert torch.allclose(hidden["string_to_param"]["*"].float(), saved["string_to_param"]["*"])
    # the optimizer state beside the file, keyed by A1111's checksum of the vectors
    optim = torch.load(result.filename + ".optim", weights_only=True)
    assert optim["hash"] == checksum(data["string_to_param"]["*"]) and optim["optimizer_state_dict"]["state"]

    # resume: the step count continues from 30 with the saved optimizer
    with caplog.at_level(logging.INFO, logger="webui.core.train.textual_inversion"):
        resumed = train_embedding(svc, _train_args(dataset, steps=34, create_image_every=0, save_embedding_every=0))
    assert resumed.steps_done == 34 and len(resumed.losses) == 4
    assert "Loaded existing optimizer from checkpoint" in caplog.text
    assert torch.load(result.filename, weights_only=True)["step"] == 34
    # trained beyond the max steps: nothing to do, A1111's message
    again = train_embedding(svc, _train_args(dataset, steps=20, create_image_every=0, save_embedding_every=0))
    assert again.message == "Model has already been trained beyond specified max steps" and again.losses == []
    assert _weights_digest(comp) == digest


def test_hypernetwork_trains_and_applies(state, dataset, fixed_noise):
    svc = training_services(state)
    create_hypernetwork(svc, CreateHypernetworkArgs(name="hn", enable_sizes=(32,), overwrite_old=False,
                                                    weight_init="XavierNormal"))
    comp = state.engine.current_model() or state.engine.load(state.engine.resolve_checkpoint(None))
    digest = _weights_digest(comp)
    before = load_hypernetwork(os.path.join(state.config.hypernetwork_dir, "hn.pt"))
    plain = _image(state, "a photo")
    with_untrained = _image(state, "a photo <hypernet:hn:1>")
    args = TrainHypernetworkArgs(hypernetwork_name="hn", learn_rate="0.001", batch_size=4, data_root=dataset,
                                 training_width=SIZE, training_height=SIZE, steps=8, create_image_every=4,
                                 save_hypernetwork_every=4, template_filename="hypernetwork.txt",
                                 preview_from_txt2img=True, preview_prompt="a photo", preview_steps=2,
                                 preview_sampler_name="Euler", preview_width=SIZE, preview_height=SIZE)
    result = train_hypernetwork(svc, args)
    assert result.steps_done == 8 and len(result.losses) == 8
    assert result.losses[-1] < result.losses[0]
    assert _weights_digest(comp) == digest
    after = load_hypernetwork(result.filename)
    assert after.step == 8 and after.sd_checkpoint == comp.info.shorthash
    assert not torch.equal(after.layers[32][0].linear[0].weight, before.layers[32][0].linear[0].weight)
    log_dir = glob.glob(os.path.join(state.config.data_dir, "textual_inversion", "*", "hn"))[0]
    assert sorted(os.listdir(os.path.join(log_dir, "hypernetworks"))) == ["hn-4.pt", "hn-4.pt.optim", "hn-8.pt",
                                                                          "hn-8.pt.optim"]
    assert sorted(os.listdir(os.path.join(log_dir, "images"))) == ["hn-4.png", "hn-8.png"]
    assert not os.path.exists(os.path.join(log_dir, "tensorboard"))  # option training_enable_tensorboard off
    assert os.path.exists(os.path.join(log_dir, "hypernetwork_loss.csv"))
    # the trained file applies: the image changes against both the plain one and the untrained hypernetwork's
    with_trained = _image(state, "a photo <hypernet:hn:1>")
    assert with_trained.tobytes() != plain.tobytes() and with_trained.tobytes() != with_untrained.tobytes()
    assert _image(state, "a photo").tobytes() == plain.tobytes()  # and nothing of it stays behind


def test_bad_training_input_names_the_field(state, dataset, tmp_path):
    svc = training_services(state)
    create_embedding(svc, CreateEmbeddingArgs(name="tok", num_vectors_per_token=1, overwrite_old=False))
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (dict(embedding_name="nope"), "embedding_name"),
        (dict(data_root=str(tmp_path / "missing")), "data_root"),
        (dict(data_root=str(empty)), "data_root"),
        (dict(learn_rate="0.005:100, fast"), "learn_rate"),
        (dict(steps=0), "steps"),
        (dict(template_filename="nope.txt"), "template_filename"),
        (dict(training_width=30), "training_width"),
        (dict(clip_grad_mode="norm", clip_grad_value="x"), "clip_grad_value"),
    ]
    for change, field in cases:
        with pytest.raises(TrainingInputError) as e:
            train_embedding(svc, _train_args(dataset, **change))
        assert e.value.field == field, change
    Image.new("RGB", (36, 32)).save(os.path.join(dataset, "odd.png"))
    with pytest.raises(TrainingInputError) as e:
        train_embedding(svc, _train_args(dataset, varsize=True))
    assert e.value.field == "varsize" and "odd.png" in str(e.value)
    assert not glob.glob(os.path.join(state.config.data_dir, "textual_inversion", "*", "tok", "*"))  # nothing written


def test_dataset_is_encoded_with_the_selected_vae(state, dataset, monkeypatch):
    """Option sd_vae: the dataset's latents come from the VAE generations use (A1111 trains on the loaded VAE);
    the checkpoint's own VAE is back in place afterwards."""
    from tests.fixtures import embeddings as fx

    vae, cfg = fx.tiny_vae(seed=9)
    fx.write_vae_file(os.path.join(state.config.vae_models_dir, "other.vae.safetensors"), vae, cfg)
    state.vae_registry.refresh()
    state.settings.set("sd_vae", "other.vae.safetensors")
    svc = training_services(state)
    create_embedding(svc, CreateEmbeddingArgs(name="tok", num_vectors_per_token=1, overwrite_old=False))
    comp = state.engine.current_model()
    own = comp.vae
    used = []
    real = common.vae_encoder
    monkeypatch.setattr(common, "vae_encoder", lambda c: used.append(c.vae) or real(c))
    train_embedding(svc, _train_args(dataset, steps=2, create_image_every=0, save_embedding_every=0))
    assert len(used) == 1 and used[0] is not own
    assert torch.equal(used[0].encoder.conv_in.weight.cpu(), vae.encoder.conv_in.weight)
    assert comp.vae is own


def test_sd2_v_prediction_trains_and_sdxl_is_refused(state, dataset):
    """SD2 (OpenCLIP, v-prediction): the velocity target; SDXL: a clear refusal, as A1111's trainer cannot either."""
    svc = training_services(state)
    state.settings.set("sd_model_checkpoint", "tiny-sd2-v.safetensors")
    comp = state.engine.load(state.engine.resolve_checkpoint(None))
    assert comp.arch == "SD2" and comp.prediction_type == "v_prediction"
    create_embedding(svc, CreateEmbeddingArgs(name="tok2", num_vectors_per_token=1, overwrite_old=False))
    result = train_embedding(svc, _train_args(dataset, embedding_name="tok2", steps=3, create_image_every=0,
                                              save_embedding_every=0))
    assert result.steps_done == 3 and all(np.isfinite(result.losses))
    vec = torch.load(result.filename, weights_only=True)["string_to_param"]["*"]
    assert vec.shape == (1, comp.text_encoder.get_input_embeddings().weight.shape[1])
    state.settings.set("sd_model_checkpoint", "tiny-sdxl.safetensors")
    state.engine.load(state.engine.resolve_checkpoint(None))
    with pytest.raises(TrainingInputError) as e:
        create_embedding(svc, CreateEmbeddingArgs(name="tokxl", num_vectors_per_token=1, overwrite_old=False))
    assert "SD1.x and SD2.x" in str(e.value)
    with pytest.raises(common.TrainingError, match="SD1.x or SD2.x"):
        train_embedding(svc, _train_args(dataset, embedding_name="tok2", steps=5))


def test_a_failing_hypernetwork_training_still_saves_the_layers(state, dataset, monkeypatch):
    """A1111 saves a hypernetwork after an error in its loop (the steps done are kept); the error still reaches the
    caller (the API puts it in its answer)."""
    svc = training_services(state)
    create_hypernetwork(svc, CreateHypernetworkArgs(name="hn", enable_sizes=(32,), overwrite_old=False))
    real = common.diffusion_loss
    calls = []

    def failing(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom at the third step")
        return real(*a, **kw)

    monkeypatch.setattr(common, "diffusion_loss", failing)
    args = TrainHypernetworkArgs(hypernetwork_name="hn", learn_rate="0.001", batch_size=4, data_root=dataset,
                                 training_width=SIZE, training_height=SIZE, steps=10, create_image_every=0,
                                 save_hypernetwork_every=0, template_filename="hypernetwork.txt",
                                 shuffle_tags=True)  # captions encoded per use (nothing cached)
    with pytest.raises(RuntimeError, match="boom"):
        train_hypernetwork(svc, args)
    assert load_hypernetwork(os.path.join(state.config.hypernetwork_dir, "hn.pt")).step == 2


def test_shuffled_and_dropped_tags_make_new_captions_each_time(tmp_path):
    """A1111 create_text: a template line with [name] and [filewords]; shuffle and drop-out per use."""
    import random

    from webui.core.train.dataset import PersonalizedDataset, caption_for

    d = tmp_path / "ds"
    d.mkdir()
    Image.new("RGB", (8, 8)).save(d / "007 a, b, c, d.png")
    path = str(d / "007 a, b, c, d.png")
    assert caption_for(path) == "a, b, c, d"  # leading numbers removed (A1111 re_numbers_at_start)
    assert caption_for(path, r"\w+", "+") == "a+b+c+d"  # dataset_filename_word_regex / _join_string

    def encode(pixels):
        z = torch.zeros(1, 4, 1, 1)
        return z, z

    ds = PersonalizedDataset([path], width=8, height=8, placeholder_token="tok", template_lines=["[name] of [filewords]"],
                             encode=encode, shuffle_tags=True, tag_drop_out=0.3, rng=random.Random(1))
    texts = {next(ds.batches()).cond_text[0] for _ in range(30)}
    assert len(texts) > 5 and all(t.startswith("tok of ") for t in texts)
    plain = PersonalizedDataset([path], width=8, height=8, placeholder_token="tok",
                                template_lines=["[name] of [filewords]"], encode=encode)
    assert {next(plain.batches()).cond_text[0] for _ in range(5)} == {"tok of a, b, c, d"}


# --- tensorboard (options training_enable_tensorboard, training_tensorboard_save_images) ---------------------------


def _tensorboard_events(log_dir: str):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(log_dir, "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _scalars(acc, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _open_writers() -> list:
    """The background threads of SummaryWriters not closed (each writer's flushing thread lives until close)."""
    import threading

    return [t for t in threading.enumerate() if type(t).__name__ == "_AsyncWriterThread"]


def test_tensorboard_logs_embedding_training(state, dataset):
    """A1111's tags and steps: "Loss/train" (the mean of the last 3 * len(ds) step losses) and "Learn rate/train" at
    the global step, their "/epoch-N" twins at the step within the epoch (epoch = step // number of images), the
    previews as "Validation at epoch N"; the writer is closed at the end, so the events are on disk at once although
    the flush period is 120 s."""
    state.settings.set("training_enable_tensorboard", True)
    state.settings.set("training_tensorboard_save_images", True)
    svc = training_services(state)
    create_embedding(svc, CreateEmbeddingArgs(name="tok", num_vectors_per_token=1, overwrite_old=False))
    result = train_embedding(svc, _train_args(dataset, batch_size=1, steps=6, learn_rate="0.05:3, 0.01",
                                              create_image_every=3, save_embedding_every=0,
                                              save_image_with_stored_embedding=False))
    assert result.steps_done == 6 and not _open_writers()
    log_dir = glob.glob(os.path.join(state.config.data_dir, "textual_inversion", "*", "tok"))[0]
    assert glob.glob(os.path.join(log_dir, "tensorboard", "events.out.tfevents.*"))
    acc = _tensorboard_events(log_dir)
    running = [float(np.mean(result.losses[:k])) for k in range(1, 7)]
    loss = _scalars(acc, "Loss/train")
    assert [s for s, _ in loss] == [1, 2, 3, 4, 5, 6]
    assert np.allclose([v for _, v in loss], running, rtol=1e-5)
    lr = _scalars(acc, "Learn rate/train")  # the schedule's rate for each step ("0.05:3": steps 1-3)
    assert [s for s, _ in lr] == [1, 2, 3, 4, 5, 6]
    assert np.allclose([v for _, v in lr], [0.05] * 3 + [0.01] * 3)
    # 4 images, batch 1: steps 1-3 are epoch 0 (its steps 2-4), steps 4-6 epoch 1 (its steps 1-3)
    assert [s for s, _ in _scalars(acc, "Loss/train/epoch-0")] == [2, 3, 4]
    assert [s for s, _ in _scalars(acc, "Loss/train/epoch-1")] == [1, 2, 3]
    assert [s for s, _ in _scalars(acc, "Learn rate/train/epoch-1")] == [1, 2, 3]
    # previews after steps 2 and 5 (A1111 names them -3 and -6), tagged with the trainer's epoch
    assert sorted(acc.Tags()["images"]) == ["Validation at epoch 0", "Validation at epoch 1"]
    (image,) = acc.Images("Validation at epoch 1")
    assert (image.step, image.width, image.height) == (5, SIZE, SIZE)
    import io

    with Image.open(io.BytesIO(image.encoded_image_string)) as logged, \
            Image.open(os.path.join(log_dir, "images", "tok-6.png")) as saved:
        assert np.array_equal(np.array(logged.convert("RGB")), np.array(saved.convert("RGB")))  # that preview
    assert acc.Images("Validation at epoch 0")[0].step == 2


def test_tensorboard_logs_hypernetwork_training_and_closes_on_error(state, dataset, monkeypatch):
    """The hypernetwork trainer logs the same scalars (no images without training_tensorboard_save_images); a run
    that fails in its third step still leaves the events of the first two on disk (the writer is closed on the way
    out, which A1111 does not do)."""
    state.settings.set("training_enable_tensorboard", True)
    svc = training_services(state)
    create_hypernetwork(svc, CreateHypernetworkArgs(name="hn", enable_sizes=(32,), overwrite_old=False))
    args = TrainHypernetworkArgs(hypernetwork_name="hn", learn_rate="0.001", batch_size=4, data_root=dataset,
                                 training_width=SIZE, training_height=SIZE, steps=5, create_image_every=5,
                                 save_hypernetwork_every=0, template_filename="hypernetwork.txt",
                                 preview_from_txt2img=True, preview_prompt="a photo", preview_steps=2,
                                 preview_sampler_name="Euler", preview_width=SIZE, preview_height=SIZE)
    result = train_hypernetwork(svc, args)
    assert result.steps_done == 5 and not _open_writers()
    log_dir = glob.glob(os.path.join(state.config.data_dir, "textual_inversion", "*", "hn"))[0]
    acc = _tensorboard_events(log_dir)
    loss = _scalars(acc, "Loss/train")
    assert [s for s, _ in loss] == [1, 2, 3, 4, 5]
    assert np.allclose([v for _, v in loss], [np.mean(result.losses[:k]) for k in range(1, 6)], rtol=1e-5)
    assert [s for s, _ in _scalars(acc, "Learn rate/train")] == [1, 2, 3, 4, 5]
    assert np.allclose([v for _, v in _scalars(acc, "Learn rate/train")], 0.001)
    # 4 images, batch 4 (one step an epoch), but A1111's tensorboard epoch counts images: steps 1-3 in epoch 0
    assert [s for s, _ in _scalars(acc, "Loss/train/epoch-0")] == [2, 3, 4]
    assert [s for s, _ in _scalars(acc, "Loss/train/epoch-1")] == [1, 2]
    assert acc.Tags()["images"] == []  # a preview was made (hn-5.png), but images in tensorboard are off
    assert os.path.exists(os.path.join(log_dir, "images", "hn-5.png"))

    real = common.diffusion_loss
    calls = []

    def failing(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom at the third step")
        return real(*a, **kw)

    monkeypatch.setattr(common, "diffusion_loss", failing)
    for f in glob.glob(os.path.join(log_dir, "tensorboard", "*")):
        os.remove(f)
    with pytest.raises(RuntimeError, match="boom"):
        train_hypernetwork(svc, dataclasses.replace(args, steps=10, create_image_every=0))
    assert not _open_writers()
    assert [s for s, _ in _scalars(_tensorboard_events(log_dir), "Loss/train")] == [6, 7]


def test_tensorboard_without_the_package_is_refused_before_anything_is_written(state, dataset, monkeypatch):
    import sys

    svc = training_services(state)
    create_embedding(svc, CreateEmbeddingArgs(name="tok", num_vectors_per_token=1, overwrite_old=False))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as when it is not installed
    train_embedding(svc, _train_args(dataset, steps=1, create_image_every=0, save_embedding_every=0))  # option off
    logs = os.path.join(state.config.data_dir, "textual_inversion")
    assert not glob.glob(os.path.join(logs, "*", "tok", "tensorboard"))
    state.settings.set("training_enable_tensorboard", True)
    for train, args in ((train_embedding, _train_args(dataset, steps=3)),
                        (train_hypernetwork, TrainHypernetworkArgs(
                            hypernetwork_name="hn", learn_rate="0.001", data_root=dataset, training_width=SIZE,
                            training_height=SIZE, steps=3, template_filename="hypernetwork.txt"))):
        with pytest.raises(TrainingInputError) as e:
            train(svc, args)
        assert e.value.field == "training_enable_tensorboard" and "tensorboard" in e.value.message
        assert 400 <= e.value.status < 500
    assert torch.load(os.path.join(state.config.embeddings_dir, "tok.pt"), weights_only=True)["step"] == 1
    assert not glob.glob(os.path.join(logs, "*", "hn"))
