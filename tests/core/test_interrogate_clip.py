"""Interrogate CLIP (A1111's modules/interrogate.py): a BLIP caption from Salesforce's original checkpoint layout,
then CLIP-ranked phrases from the category lists, on tiny random models written in the real files' layouts
(tests/fixtures/interrogate.py) and read through the real loaders."""

from __future__ import annotations

import filecmp
import importlib.metadata
import os
import re
import shutil

import pytest
import torch
from PIL import Image

from tests.fixtures.interrogate import (
    BERT_WORDS,
    blip_original_state_dict,
    write_bert_vocab,
    write_blip,
    write_categories,
    write_clip,
)
from webui.core.interrogate import InterrogateFolders, InterrogatorUnavailable
from webui.core.interrogate import blip as blip_module
from webui.core.interrogate.clip import ClipInterrogator, category_types, clip_transform

ARTISTS = ["by alice", "by bob", "by carol", "by dave"]
FLAVORS = ["shiny", "matte", "dark", "bright", "foggy"]
MEDIUMS = ["oil", "ink", "pencil", "photo", "clay"]
PROMPT_TOKENS = 4  # [DEC] a picture of

DEFAULTS = {
    "interrogate_keep_models_in_memory": False,
    "interrogate_return_ranks": False,
    "interrogate_clip_num_beams": 1,
    "interrogate_clip_min_length": 8,  # A1111: 24 and 48; shorter keeps the tests fast
    "interrogate_clip_max_length": 16,
    "interrogate_clip_dict_limit": 1500,
    "interrogate_clip_skip_categories": [],
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("interrogate")
    write_blip(str(root / "models"))
    write_clip(str(root / "clip"))
    # "mediums.top3.x": A1111 reads ".topN." on the name without .txt, so this one keeps 3.
    write_categories(str(root / "interrogate"), {"artists": ARTISTS, "flavors": FLAVORS, "mediums.top3.x": MEDIUMS})
    return root


def folders(root, content_dir=None, clip_dirs=None) -> InterrogateFolders:
    return InterrogateFolders(blip=str(root / "models" / "BLIP"), deepbooru=(),
                              clip=tuple(clip_dirs) if clip_dirs else (str(root / "nowhere"), str(root / "clip")),
                              content_dir=str(content_dir or (root / "interrogate")))


def make(root, device=None, dtype=torch.float32, content_dir=None, clip_dirs=None, **options):
    opts = dict(DEFAULTS, **options)
    device = torch.device("cpu") if device is None else device
    return ClipInterrogator(folders(root, content_dir, clip_dirs), device=device, dtype=dtype,
                            options=opts.__getitem__), opts


@pytest.fixture(scope="module")
def shared(files):
    """One loaded interrogator for the tests that only change options."""
    ci, opts = make(files)
    return ci, opts


@pytest.fixture
def ci(shared):
    ci, opts = shared
    saved = dict(opts)
    yield ci, opts
    opts.clear()
    opts.update(saved)


def image(seed=1, size=(40, 30)) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray((torch.rand(size[1], size[0], 3, generator=g) * 255).byte().numpy(), "RGB")


def split(result: str) -> tuple[str, list[str]]:
    caption, *ranks = result.split(", ")
    return caption, ranks


# -- the whole ---------------------------------------------------------------------------------------------------------

def test_caption_then_one_match_per_category_in_file_order(ci):
    ci, _ = ci
    result = ci.interrogate(image())
    caption, ranks = split(result)
    words = caption.split()
    assert words and all(w in BERT_WORDS for w in words)
    assert "a picture of" not in caption  # the prompt is cut off
    assert caption == ci.generate_caption(image())
    # artists (1), flavors (1), mediums.top3.x (3 distinct), in sorted file-name order
    assert len(ranks) == 5
    assert ranks[0] in ARTISTS and ranks[1] in FLAVORS
    assert set(ranks[2:]) <= set(MEDIUMS) and len(set(ranks[2:])) == 3


def test_same_files_same_image_same_prompt_and_images_differ(files, ci):
    ci, _ = ci
    fresh, _ = make(files)
    assert fresh.interrogate(image()) == ci.interrogate(image())
    assert ci.interrogate(image(seed=2)) != ci.interrogate(image(seed=1))


def test_category_lines_are_encoded_once_per_model(files, ci):
    """The lines' text features do not depend on the image: a second interrogation reuses them (A1111 encodes
    every line again) and gives what a fresh interrogator gives; a reload encodes again."""
    ci, opts = ci
    opts["interrogate_return_ranks"] = True
    first = ci.interrogate(image(seed=1))
    calls = []
    real = ci.clip_model.encode_text
    ci.clip_model.encode_text = lambda tokens: calls.append(len(tokens)) or real(tokens)
    second = ci.interrogate(image(seed=2))
    assert calls == []
    fresh, fresh_opts = make(files)
    fresh_opts["interrogate_return_ranks"] = True
    assert fresh.interrogate(image(seed=2)) == second and ci.interrogate(image(seed=1)) == first
    opts["interrogate_clip_dict_limit"] = 2  # other lines: encoded
    try:
        ci.interrogate(image(seed=1))
    finally:
        del ci.clip_model.encode_text
    assert calls
    assert fresh._text_features
    fresh.unload()
    assert not fresh._text_features


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_ranks_are_clip_softmax_of_100_cosine(files, ci):
    """The (match:score) numbers against an independent computation with open_clip's loader and tokenizer."""
    import open_clip
    from open_clip.openai import load_openai_model

    ci, opts = ci
    opts["interrogate_return_ranks"] = True
    _, ranks = split(ci.interrogate(image()))
    parsed = [re.fullmatch(r"\((.+):(\d\.\d{3})\)", r) for r in ranks]
    assert all(parsed), ranks
    model = load_openai_model(str(files / "clip" / "ViT-L-14.pt"), precision="fp32", device="cpu")
    with torch.no_grad():
        feats = model.encode_image(clip_transform(32)(image()).unsqueeze(0))
        feats = feats / feats.norm(dim=-1, keepdim=True)
        for items, got in ((ARTISTS, parsed[0:1]), (FLAVORS, parsed[1:2]), (MEDIUMS, parsed[2:5])):
            text = model.encode_text(open_clip.tokenize(items))
            probs = (100.0 * feats @ (text / text.norm(dim=-1, keepdim=True)).T).softmax(dim=-1)[0]
            top = probs.topk(len(got))
            assert [m.group(1) for m in got] == [items[i] for i in top.indices]
            assert [m.group(2) for m in got] == [f"{p:.3f}" for p in top.values.tolist()]


def test_dict_limit_and_top_count(ci):
    ci, opts = ci
    opts["interrogate_clip_dict_limit"] = 1
    _, ranks = split(ci.interrogate(image()))
    # one line left in each list: its first, and top3 shrinks to 1 (A1111's min(top_count, len))
    assert ranks == [ARTISTS[0], FLAVORS[0], MEDIUMS[0]]
    opts["interrogate_clip_dict_limit"] = 2
    _, ranks = split(ci.interrogate(image()))
    assert ranks[0] in ARTISTS[:2] and ranks[1] in FLAVORS[:2] and sorted(ranks[2:]) == sorted(MEDIUMS[:2])
    opts["interrogate_clip_dict_limit"] = 0  # no limit
    _, ranks = split(ci.interrogate(image()))
    assert len(ranks) == 5


def test_skip_categories(ci):
    ci, opts = ci
    opts["interrogate_clip_skip_categories"] = ["flavors"]
    _, ranks = split(ci.interrogate(image()))
    assert len(ranks) == 4 and not set(ranks) & set(FLAVORS)
    opts["interrogate_clip_skip_categories"] = ["flavors", "mediums.top3.x"]
    _, ranks = split(ci.interrogate(image()))
    assert len(ranks) == 1 and ranks[0] in ARTISTS
    opts["interrogate_clip_skip_categories"] = []
    assert len(split(ci.interrogate(image()))[1]) == 5


def test_topn_read_from_the_name_without_txt(files, tmp_path):
    """A1111's re_topn on the stem: "x.top2.y.txt" keeps 2; "flavors.top3.txt" (stem "flavors.top3", no dot
    after the number) keeps 1, as in A1111."""
    content = write_categories(str(tmp_path / "cats"), {"a.top2.list": ARTISTS, "flavors.top3": FLAVORS})
    ci, _ = make(files, content_dir=content)
    assert [(c.name, c.topn, c.items) for c in ci.categories()] == [("a.top2.list", 2, ARTISTS),
                                                                    ("flavors.top3", 1, FLAVORS)]
    assert category_types(content) == ["a.top2.list", "flavors.top3"]


def test_caption_length_follows_min_max_and_beams(ci):
    """BLIP's min/max lengths count the prompt's 4 tokens (BLIP passes them to generate as totals)."""
    ci, opts = ci
    img = image()
    opts.update(interrogate_clip_min_length=10, interrogate_clip_max_length=10)
    assert len(ci.generate_caption(img).split()) == 10 - PROMPT_TOKENS
    opts.update(interrogate_clip_min_length=1, interrogate_clip_max_length=7)
    assert 1 <= len(ci.generate_caption(img).split()) <= 7 - PROMPT_TOKENS
    opts.update(interrogate_clip_min_length=20, interrogate_clip_max_length=30)
    greedy = ci.generate_caption(img)
    assert 20 - PROMPT_TOKENS <= len(greedy.split()) <= 30 - PROMPT_TOKENS
    opts["interrogate_clip_num_beams"] = 3
    beams = ci.generate_caption(img)
    assert 20 - PROMPT_TOKENS <= len(beams.split()) <= 30 - PROMPT_TOKENS
    assert beams != greedy


def test_models_rest_on_the_cpu_between_calls(files):
    """BLIP goes to the CPU before CLIP encodes, both after the call; keep-in-memory keeps them on the device.
    (The device here is "cpu:0", so moves to it and back to "cpu" can be told apart without a GPU.)"""
    ci, opts = make(files, device=torch.device("cpu", 0))
    ci.interrogate(image())  # load
    events = []

    def spy(name, module):
        original = module.to

        def to(*args, **kwargs):
            events.append((name, str(kwargs.get("device", args[0] if args else None))))
            return original(*args, **kwargs)
        module.to = to

    spy("blip", ci.blip.model)
    spy("clip", ci.clip_model)
    encode_image = ci.clip_model.encode_image
    ci.clip_model.encode_image = lambda *a, **k: (events.append(("encode_image", "")), encode_image(*a, **k))[1]
    ci.interrogate(image())
    assert events == [("blip", "cpu:0"), ("clip", "cpu:0"), ("blip", "cpu"), ("encode_image", ""),
                      ("clip", "cpu"), ("blip", "cpu")]
    events.clear()
    opts["interrogate_keep_models_in_memory"] = True
    ci.interrogate(image())
    assert events == [("blip", "cpu:0"), ("clip", "cpu:0"), ("encode_image", "")]


def test_unload_drops_the_models_and_the_next_call_reloads(files):
    ci, _ = make(files)
    first = ci.interrogate(image())
    ci.unload()
    assert ci.blip is None and ci.clip_model is None
    assert ci.interrogate(image()) == first


def test_half_precision_runs_the_models_in_half(files):
    ci, _ = make(files, dtype=torch.float16)
    caption, ranks = split(ci.interrogate(image()))
    assert caption and len(ranks) == 5
    assert {p.dtype for p in ci.blip.model.parameters()} == {torch.float16}
    assert ci.clip_model.visual.conv1.weight.dtype == torch.float16


def test_clip_state_dict_file_reads_like_the_torchscript_archive(files, tmp_path):
    write_clip(str(tmp_path / "sd"), jit=False)
    ci, _ = make(files, clip_dirs=[str(tmp_path / "sd")])
    jit, _ = make(files)
    assert ci.interrogate(image()) == jit.interrogate(image())


# -- BLIP's checkpoint conversion --------------------------------------------------------------------------------------

def test_original_blip_keys_land_on_the_transformers_weights(files):
    original = blip_original_state_dict()
    captioner = blip_module.BlipCaptioner(str(files / "models" / "BLIP"))
    hf = captioner.model.state_dict()
    pairs = {
        "visual_encoder.cls_token": "vision_model.embeddings.class_embedding",
        "visual_encoder.pos_embed": "vision_model.embeddings.position_embedding",
        "visual_encoder.patch_embed.proj.weight": "vision_model.embeddings.patch_embedding.weight",
        "visual_encoder.blocks.0.norm1.weight": "vision_model.encoder.layers.0.layer_norm1.weight",
        "visual_encoder.blocks.0.attn.qkv.weight": "vision_model.encoder.layers.0.self_attn.qkv.weight",
        "visual_encoder.blocks.0.attn.proj.bias": "vision_model.encoder.layers.0.self_attn.projection.bias",
        "visual_encoder.blocks.0.norm2.bias": "vision_model.encoder.layers.0.layer_norm2.bias",
        "visual_encoder.blocks.0.mlp.fc2.weight": "vision_model.encoder.layers.0.mlp.fc2.weight",
        "visual_encoder.norm.weight": "vision_model.post_layernorm.weight",
        "text_decoder.bert.encoder.layer.0.crossattention.self.key.weight":
            "text_decoder.bert.encoder.layer.0.crossattention.self.key.weight",
        "text_decoder.cls.predictions.bias": "text_decoder.cls.predictions.bias",
    }
    for old, new in pairs.items():
        assert torch.equal(original[old], hf[new]), (old, new)
    # every original tensor (but the position index buffer) is used once, and every model weight comes from it
    assert len(hf) == len(original) - 1
    config = captioner.model.config
    assert (config.vision_config.image_size, config.vision_config.patch_size) == (32, 16)
    assert config.vision_config.layer_norm_eps == 1e-6
    assert config.text_config.bos_token_id == captioner.tokenizer.convert_tokens_to_ids("[DEC]")
    assert config.text_config.vocab_size == len(captioner.tokenizer)


@pytest.mark.parametrize("change, words", [
    ("extra", ["unexpected", "text_encoder.pooler.dense.weight"]),
    ("drop", ["missing", "vision_model.encoder.layers.0.mlp.fc1.bias"]),
    ("shape", ["wrong shape", "crossattention.self.value.weight"]),
])
def test_blip_checkpoint_mismatches_are_named(tmp_path, change, words):
    sd = blip_original_state_dict()
    if change == "extra":
        sd["text_encoder.pooler.dense.weight"] = torch.zeros(2, 2)
    elif change == "drop":
        del sd["visual_encoder.blocks.0.mlp.fc1.bias"]
    else:
        sd["text_decoder.bert.encoder.layer.0.crossattention.self.value.weight"] = torch.zeros(64, 7)
    write_blip(str(tmp_path / "models"), state_dict=sd)
    with pytest.raises(InterrogatorUnavailable) as e:
        blip_module.BlipCaptioner(str(tmp_path / "models" / "BLIP"))
    assert all(w in str(e.value) for w in words), str(e.value)


def test_blip_tokenizer_from_the_hugging_face_cache_offline(tmp_path, monkeypatch, files):
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    snapshot = hub / "models--bert-base-uncased" / "snapshots" / ("0" * 40)
    write_bert_vocab(str(snapshot))
    (hub / "models--bert-base-uncased" / "refs").mkdir()
    (hub / "models--bert-base-uncased" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    blip_dir = tmp_path / "BLIP"
    blip_dir.mkdir()
    os.symlink(files / "models" / "BLIP" / blip_module.BLIP_FILE, blip_dir / blip_module.BLIP_FILE)
    cached = blip_module.BlipCaptioner(str(blip_dir))
    local = blip_module.BlipCaptioner(str(files / "models" / "BLIP"))
    kw = {"num_beams": 1, "min_length": 8, "max_length": 12, "device": "cpu", "dtype": torch.float32}
    assert cached.caption(image(), **kw) == local.caption(image(), **kw)
    shutil.rmtree(hub)
    with pytest.raises(InterrogatorUnavailable) as e:
        blip_module.BlipCaptioner(str(blip_dir))
    assert os.path.join(str(blip_dir), "bert-base-uncased", "vocab.txt") in str(e.value)
    assert str(hub) in str(e.value) and "Nothing is downloaded" in str(e.value)


# -- missing files -----------------------------------------------------------------------------------------------------

def test_missing_blip_weights_are_named_with_folder_and_url(files, tmp_path):
    write_bert_vocab(str(tmp_path / "BLIP" / "bert-base-uncased"))
    ci = ClipInterrogator(InterrogateFolders(blip=str(tmp_path / "BLIP"), deepbooru=(), clip=(str(files / "clip"),),
                                             content_dir=str(files / "interrogate")),
                          device=torch.device("cpu"), dtype=torch.float32, options=DEFAULTS.__getitem__)
    with pytest.raises(InterrogatorUnavailable) as e:
        ci.interrogate(image())
    msg = str(e.value)
    assert os.path.join(str(tmp_path / "BLIP"), "model_base_caption_capfilt_large.pth") in msg
    assert blip_module.BLIP_URL in msg and "Nothing is downloaded" in msg
    assert "ViT-L-14.pt" not in msg and "vocab.txt" not in msg


def test_every_missing_file_is_named_at_once(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    ci = ClipInterrogator(InterrogateFolders(blip=str(tmp_path / "BLIP"), deepbooru=(), clip=(str(tmp_path / "c"),),
                                             content_dir=str(tmp_path / "interrogate")),
                          device=torch.device("cpu"), dtype=torch.float32, options=DEFAULTS.__getitem__)
    with pytest.raises(InterrogatorUnavailable) as e:
        ci.interrogate(image())
    msg = str(e.value)
    for part in ("model_base_caption_capfilt_large.pth", os.path.join("bert-base-uncased", "vocab.txt"),
                 str(tmp_path / "empty-hub"), "ViT-L-14.pt", str(tmp_path / "c"), "--clip-models-path"):
        assert part in msg, part
    assert not (tmp_path / "interrogate").exists()  # nothing written before the models are there


def test_missing_clip_model_is_named_with_the_folders(files, tmp_path):
    dirs = [str(tmp_path / "a"), str(tmp_path / "b")]
    ci, _ = make(files, clip_dirs=dirs)
    with pytest.raises(InterrogatorUnavailable) as e:
        ci.interrogate(image())
    msg = str(e.value)
    assert "ViT-L-14.pt" in msg and all(d in msg for d in dirs) and "--clip-models-path" in msg
    assert "capfilt" not in msg


def test_unreadable_clip_file_is_unavailable(files, tmp_path):
    (tmp_path / "ViT-L-14.pt").write_bytes(b"not a model")
    ci, _ = make(files, clip_dirs=[str(tmp_path)])
    with pytest.raises(InterrogatorUnavailable, match="ViT-L-14.pt"):
        ci.interrogate(image())


# -- the category folder -----------------------------------------------------------------------------------------------

def test_absent_category_folder_is_filled_from_clip_interrogator(files, tmp_path, shared):
    content = tmp_path / "interrogate"
    assert category_types(str(content)) == ["artists", "flavors", "mediums", "movements"]
    assert not content.exists()  # category_types writes nothing
    ci, _ = shared
    saved = ci.content_dir, ci.loaded_categories
    ci.content_dir, ci.loaded_categories = str(content), None
    try:
        _, ranks = split(ci.interrogate(image()))
    finally:
        ci.content_dir, ci.loaded_categories = saved
    assert sorted(os.listdir(content)) == ["artists.txt", "flavors.txt", "mediums.txt", "movements.txt"]
    dist = importlib.metadata.distribution("clip-interrogator")
    for name in os.listdir(content):
        assert filecmp.cmp(content / name, dist.locate_file(f"clip_interrogator/data/{name}"), shallow=False)
    assert not (tmp_path / "interrogate_tmp").exists()
    assert len(ranks) == 4
    lists = {n: (content / f"{n}.txt").read_text(encoding="utf8").splitlines() for n in ("artists", "flavors")}
    assert ranks[0] in lists["artists"][:1500] and ranks[1] in lists["flavors"][:1500]


def test_a_users_category_folder_is_left_alone(files, tmp_path):
    content = write_categories(str(tmp_path / "mine"), {"colors": ["red", "green"]})
    ci, _ = make(files, content_dir=content)
    _, ranks = split(ci.interrogate(image()))
    assert os.listdir(content) == ["colors.txt"] and len(ranks) == 1 and ranks[0] in ("red", "green")
    assert category_types(content) == ["colors"]


def test_blip_base_sizes_map_onto_transformers_blip_base():
    """The real file's sizes (BLIP base: ViT-B/16 at 384 px, BERT-base with a 30524-token vocabulary), as shapes
    only: the config read from them is BLIP base, and transformers' model built from it takes every key."""
    from types import SimpleNamespace

    from transformers import BlipForConditionalGeneration

    original = blip_original_state_dict(vision={"width": 768, "layers": 12, "patch": 16, "image_size": 384},
                                        text={"width": 768, "layers": 12, "positions": 512}, vocab_size=30524,
                                        device="meta")
    sd = blip_module.convert_state_dict(original)
    bert = SimpleNamespace(bos_token_id=30522, sep_token_id=102, pad_token_id=0)
    config = blip_module.config_from_state_dict(sd, bert)
    v, t = config.vision_config, config.text_config
    assert (v.image_size, v.patch_size, v.hidden_size, v.num_hidden_layers, v.num_attention_heads,
            v.intermediate_size, v.layer_norm_eps) == (384, 16, 768, 12, 12, 3072, 1e-6)
    assert (t.vocab_size, t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.intermediate_size,
            t.encoder_hidden_size, t.max_position_embeddings, t.layer_norm_eps) == (
        30524, 768, 12, 12, 3072, 768, 512, 1e-12)
    assert (t.bos_token_id, t.sep_token_id, t.eos_token_id, t.pad_token_id) == (30522, 102, 102, 0)
    with torch.device("meta"):
        model = BlipForConditionalGeneration(config)
    assert blip_module.key_problems(model.state_dict(), sd) == []


def test_through_the_interrogators_service(files, ci):
    from webui.core.interrogate import Interrogators

    ci, opts = ci
    service = Interrogators(folders(files), device=torch.device("cpu"), dtype=torch.float32, options=opts.__getitem__)
    assert service.interrogate(image(), "clip") == ci.interrogate(image())
    assert service.category_types() == ["artists", "flavors", "mediums.top3.x"]
    service.unload()
    assert service.clip().blip is None
