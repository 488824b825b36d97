"""DeepDanbooru interrogation (issue 16 item 5): the TorchDeepDanbooru network against A1111's layer list, the file
loaded from A1111's folder through the Interrogators that build_state makes, and A1111's tag_multi rules.

Tiny random networks in the released file layout come from tests/fixtures/deepbooru.py."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from tests.fixtures.deepbooru import deepbooru_path, narrow_widths, write_deepbooru_model
from webui.config import parse
from webui.core.generation.imageops import resize_image
from webui.core.interrogate import InterrogatorUnavailable
from webui.core.interrogate.deepbooru import MODEL_URL, DeepBooru
from webui.core.interrogate.deepbooru_model import DeepDanbooruModel, Widths
from webui.state import build_state

# -- the network ---------------------------------------------------------------------------------------------------


def a1111_layers() -> dict[int, tuple[int, int, int, int]]:
    """A1111's ``DeepDanbooruModel.__init__`` transcribed: conv index -> (kernel, in, out, stride). Written from its
    179 ``n_Conv_<i> = nn.Conv2d(...)`` lines as runs of identical bottleneck blocks, independently of the stage
    description our builder uses."""
    layers = {0: (7, 3, 64, 2)}

    def identity_blocks(start: int, count: int, width: int, mid: int) -> int:
        for i in range(start, start + 3 * count, 3):
            layers[i], layers[i + 1], layers[i + 2] = (1, width, mid, 1), (3, mid, mid, 1), (1, mid, width, 1)
        return start + 3 * count

    layers.update({1: (1, 64, 256, 1), 2: (1, 64, 64, 1), 3: (3, 64, 64, 1), 4: (1, 64, 256, 1)})
    assert identity_blocks(5, 2, 256, 64) == 11
    layers.update({11: (1, 256, 512, 2), 12: (1, 256, 128, 1), 13: (3, 128, 128, 2), 14: (1, 128, 512, 1)})
    assert identity_blocks(15, 7, 512, 128) == 36
    layers.update({36: (1, 512, 1024, 2), 37: (1, 512, 256, 1), 38: (3, 256, 256, 2), 39: (1, 256, 1024, 1)})
    assert identity_blocks(40, 19, 1024, 256) == 97
    # the odd one: a strided block whose projection (1024 -> 1024) is numbered after its three convs
    layers.update({97: (1, 1024, 256, 1), 98: (3, 256, 256, 2), 99: (1, 256, 1024, 1), 100: (1, 1024, 1024, 2)})
    assert identity_blocks(101, 19, 1024, 256) == 158
    layers.update({158: (1, 1024, 2048, 2), 159: (1, 1024, 512, 1), 160: (3, 512, 512, 2), 161: (1, 512, 2048, 1)})
    assert identity_blocks(162, 2, 2048, 512) == 168
    layers.update({168: (1, 2048, 4096, 2), 169: (1, 2048, 1024, 1), 170: (3, 1024, 1024, 2), 171: (1, 1024, 4096, 1)})
    assert identity_blocks(172, 2, 4096, 1024) == 178
    layers[178] = (1, 4096, 9176, 1)  # the tag logits, bias=False
    return layers


def test_full_width_network_has_a1111s_keys_and_shapes():
    model = DeepDanbooruModel(device="meta")  # no memory, no random init: 161M parameters
    expected = {}
    for i, (k, cin, cout, _stride) in a1111_layers().items():
        expected[f"n_Conv_{i}.weight"] = (cout, cin, k, k)
        if i != 178:
            expected[f"n_Conv_{i}.bias"] = (cout,)
    got = {key: tuple(t.shape) for key, t in model.state_dict().items()}
    assert got == expected
    assert len(got) == 357
    # 644 MB of float32: the size of the released model-resnet_custom_v3.pt
    assert sum(t.numel() for t in model.state_dict().values()) == 160_956_544
    for i, (_k, _cin, _cout, stride) in a1111_layers().items():
        assert getattr(model, f"n_Conv_{i}").stride == (stride, stride), i
        assert getattr(model, f"n_Conv_{i}").padding == (0, 0), i  # padding is done by F.pad in forward
    assert model.n_MaxPool_0.kernel_size == 3 and model.n_MaxPool_0.stride == 2
    assert Widths.from_state_dict(model.state_dict()) == Widths()


def test_narrow_network_keeps_the_names_and_reads_its_widths_from_the_tensors():
    full = set(DeepDanbooruModel(device="meta").state_dict())
    widths = Widths(stem=3, stages=((2, 5), (3, 6), (4, 7), (2, 7), (3, 8), (2, 9)), tags=11)
    narrow = DeepDanbooruModel(widths, device="meta").state_dict()
    assert set(narrow) == full
    assert Widths.from_state_dict(narrow) == widths
    assert narrow["n_Conv_100.weight"].shape == (7, 7, 1, 1) and narrow["n_Conv_178.weight"].shape == (11, 9, 1, 1)


def test_forward_pads_as_a1111():
    """The input of every conv: the stem's 512 padded (2, 3) -> 517; max-pool on 256 padded (0, 1) with -inf;
    3x3 convs padded (1, 1), or (0, 1) when they stride 2 (TensorFlow "same" padding of the Keras original)."""
    widths = narrow_widths(3)
    model = DeepDanbooruModel(widths)
    seen: dict[str, tuple] = {}
    pool_input = []

    def record(name):
        return lambda module, args: seen.__setitem__(name, tuple(args[0].shape[-2:]))

    for name, module in model.named_children():
        module.register_forward_pre_hook(record(name))
    model.n_MaxPool_0.register_forward_pre_hook(lambda m, args: pool_input.append(args[0]))
    with torch.no_grad():
        y = model(torch.rand(1, 512, 512, 3))
    assert y.shape == (1, 3) and bool(((y > 0) & (y < 1)).all())
    assert seen["n_Conv_0"] == (517, 517)
    assert seen["n_MaxPool_0"] == (257, 257)
    assert torch.isneginf(pool_input[0][..., -1, :]).all() and torch.isneginf(pool_input[0][..., :, -1]).all()
    assert torch.isfinite(pool_input[0][..., :-1, :-1]).all()
    layers = a1111_layers()
    size_in = {1: 128, 11: 128, 36: 64, 97: 32, 158: 16, 168: 8}  # each stage's input size
    strided_3x3 = {13: 129, 38: 65, 98: 33, 160: 17, 170: 9}
    for i, (k, _cin, _cout, stride) in layers.items():
        if k == 3 and stride == 2:
            assert seen[f"n_Conv_{i}"] == (strided_3x3[i],) * 2, i
    assert seen["n_Conv_3"] == (130, 130) and seen["n_Conv_16"] == (66, 66) and seen["n_Conv_176"] == (6, 6)
    for first, size in size_in.items():  # a projection conv sees the stage input as it is
        shortcut = 100 if first == 97 else first
        assert seen[f"n_Conv_{shortcut}"] == (size, size)
    assert seen["n_Conv_178"] == (4, 4)


# -- through the service -------------------------------------------------------------------------------------------

TAGS = ["1girl", "solo", "long_hair", "smile", "rating:safe", "hat_(object)", "back\\slash", "blue_eyes"]
SCORES = [0.9, 0.8, 0.55, 0.5, 0.99, 0.7, 0.6, 0.3]


@pytest.fixture
def data_dir(tmp_path):
    """A data folder without checkpoints (conftest's would write the session's tiny SD models, which
    interrogation does not use)."""
    d = tmp_path / "webui-data"
    (d / "models").mkdir(parents=True)
    return d


@pytest.fixture
def state(data_dir):
    """The AppState the server builds; its ``interrogators`` is the service under test."""
    return build_state(parse(["--nowebui", "--data-dir", str(data_dir)]), create_demo=False)


def _image(seed: int = 0, size=(64, 48)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_tags_with_a1111s_default_options(state, data_dir):
    write_deepbooru_model(data_dir, TAGS, scores=SCORES)
    # >= 0.5 (smile at exactly 0.5 stays), rating:safe left out, sorted by name, _ -> space, \ ( ) escaped
    assert state.interrogators.interrogate(_image(), "deepdanbooru") == (
        "1girl, back\\\\slash, hat \\(object\\), long hair, smile, solo")
    booru = state.interrogators.deepbooru()
    assert booru.model_path == deepbooru_path(data_dir)
    assert booru.model.tags == TAGS


def test_option_effects_apply_on_the_next_call(state, data_dir):
    write_deepbooru_model(data_dir, TAGS, scores=SCORES)
    settings, interrogate = state.settings, state.interrogators.interrogate
    image = _image()

    settings.set("deepbooru_sort_alpha", False)  # by falling score
    assert interrogate(image, "deepdanbooru") == "1girl, solo, hat \\(object\\), back\\\\slash, long hair, smile"
    settings.set("deepbooru_use_spaces", False)
    settings.set("deepbooru_escape", False)
    assert interrogate(image, "deepdanbooru") == "1girl, solo, hat_(object), back\\slash, long_hair, smile"
    settings.set("interrogate_deepbooru_score_threshold", 0.65)
    assert interrogate(image, "deepdanbooru") == "1girl, solo, hat_(object)"
    settings.set("interrogate_return_ranks", True)
    assert interrogate(image, "deepdanbooru") == "(1girl:0.900), (solo:0.800), (hat_(object):0.700)"
    settings.set("deepbooru_escape", True)
    assert interrogate(image, "deepdanbooru") == "(1girl:0.900), (solo:0.800), (hat_\\(object\\):0.700)"
    assert state.interrogators.deepbooru().tag_multi(image, force_disable_ranks=True) == (
        "1girl, solo, hat_\\(object\\)")
    settings.set("interrogate_deepbooru_score_threshold", 0.0)  # everything but rating:*
    assert interrogate(image, "deepdanbooru").count("rating") == 0
    assert interrogate(image, "deepdanbooru").startswith("(rating") is False
    assert "(blue_eyes:0.300)" in interrogate(image, "deepdanbooru")


def test_filter_tags_compare_with_underscores(state, data_dir):
    write_deepbooru_model(data_dir, TAGS, scores=SCORES)
    state.settings.set("deepbooru_filter_tags", " long hair,solo , hat_(object)")
    assert state.interrogators.interrogate(_image(), "deepdanbooru") == "1girl, back\\\\slash, smile"


def test_random_network_is_deterministic_and_follows_the_image(state, data_dir):
    tags = [f"tag_{i}" for i in range(24)]
    write_deepbooru_model(data_dir, tags, seed=3)
    booru = state.interrogators.deepbooru()
    a, b = _image(1, (300, 200)), _image(2, (300, 200))
    first = booru.probabilities(a)
    assert booru.probabilities(a) == first
    assert booru.tag(a) == booru.tag(a)
    other = booru.probabilities(b)
    assert max(abs(first[t] - other[t]) for t in tags) > 1e-3
    assert 0 < sum(p >= 0.5 for p in first.values()) < len(tags)  # neither nothing nor everything
    # A1111 resizes with mode 2 ("Resize and fill") to 512x512, not by stretching
    assert booru.probabilities(resize_image(2, a, 512, 512)) == first
    assert booru.probabilities(a.resize((512, 512), Image.Resampling.LANCZOS)) != first
    assert booru.probabilities(a.convert("RGBA")) == first  # converted to RGB first


def test_model_goes_back_to_the_cpu_unless_kept(data_dir, monkeypatch):
    """Each call moves the model to the device and back to the CPU; interrogate_keep_models_in_memory keeps it
    there. The CPU-only test machine has no second device: the moves are recorded, not made."""
    write_deepbooru_model(data_dir, TAGS, scores=SCORES)
    options = {"interrogate_keep_models_in_memory": False, "interrogate_return_ranks": False,
               "interrogate_deepbooru_score_threshold": 0.5, "deepbooru_sort_alpha": True,
               "deepbooru_use_spaces": True, "deepbooru_escape": True, "deepbooru_filter_tags": ""}
    from webui.core.interrogate import InterrogateFolders

    folders = InterrogateFolders.under(str(data_dir), str(data_dir / "models"))
    booru = DeepBooru(folders, device=torch.device("cuda", 0), dtype=torch.float32, options=options.__getitem__)
    model = booru.load()
    assert next(model.parameters()).device.type == "cpu" and next(model.parameters()).dtype == torch.float32
    moves = []
    monkeypatch.setattr(model, "to", lambda *args: moves.append(torch.device(args[0]).type) or model)
    assert booru.tag(_image()) == "1girl, back\\\\slash, hat \\(object\\), long hair, smile, solo"
    assert moves == ["cuda", "cpu"]
    options["interrogate_keep_models_in_memory"] = True
    booru.tag(_image())
    assert moves == ["cuda", "cpu", "cuda"]
    options["interrogate_keep_models_in_memory"] = False

    def fail(*_):
        raise RuntimeError("boom")

    monkeypatch.setattr(booru, "tag_multi", fail)
    with pytest.raises(RuntimeError):
        booru.tag(_image())
    assert moves[-2:] == ["cuda", "cpu"]  # sent back even when the call fails
    booru.unload()
    assert booru.model is None


def test_missing_file_names_the_file_the_folder_and_the_url(state, data_dir):
    with pytest.raises(InterrogatorUnavailable) as e:
        state.interrogators.interrogate(_image(), "deepdanbooru")
    message = str(e.value)
    assert "model-resnet_custom_v3.pt" in message and MODEL_URL in message
    assert "models/torch_deepdanbooru" in message
    assert os.path.join(str(data_dir), "models", "torch_deepdanbooru") in message
    assert "downloads nothing" in message
    assert not os.path.exists(deepbooru_path(data_dir))
    # the file put in place afterwards is found on the next call, without a restart
    write_deepbooru_model(data_dir, TAGS, scores=SCORES)
    assert state.interrogators.interrogate(_image(), "deepdanbooru").startswith("1girl, ")


def test_any_pt_in_the_folder_is_used_but_the_released_name_first(state, data_dir):
    folder = os.path.dirname(deepbooru_path(data_dir))
    write_deepbooru_model(data_dir, ["other"], scores=[0.9], path=os.path.join(folder, "a-custom.pt"))
    assert state.interrogators.interrogate(_image(), "deepdanbooru") == "other"
    state.interrogators.unload()
    write_deepbooru_model(data_dir, TAGS, scores=SCORES)
    assert state.interrogators.interrogate(_image(), "deepdanbooru").startswith("1girl, ")


def _bad(tmp_path, content) -> DeepBooru:
    from webui.core.interrogate import InterrogateFolders

    path = deepbooru_path(tmp_path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(content, bytes):
        with open(path, "wb") as f:
            f.write(content)
    else:
        torch.save(content, path)
    folders = InterrogateFolders.under(str(tmp_path), str(tmp_path / "models"))
    return DeepBooru(folders, device=torch.device("cpu"), dtype=torch.float32, options=lambda key: None)


class _NotData:
    pass


@pytest.mark.parametrize("content, words", [
    (b"this is not a torch file", "not a readable torch file"),
    (b"PK\x03\x04truncated zip", "not a readable torch file"),
    (b"\x80\x02garbled pickle", "not a readable torch file (the pickle inside is damaged)"),
    ({"weights": _NotData()}, "which loading would run as code (refused)"),  # a pickled class: weights_only
    ([1, 2, 3], "holds a list"),
    ({"tags": ["a"], "n_Conv_0.weight": torch.zeros(4, 3, 7, 7)}, "not the TorchDeepDanbooru"),
])
def test_unusable_files_are_reported_not_crashed_on(tmp_path, content, words):
    booru = _bad(tmp_path, content)
    with pytest.raises(InterrogatorUnavailable) as e:
        booru.tag(_image())
    assert words in str(e.value) and deepbooru_path(tmp_path) in str(e.value) and MODEL_URL in str(e.value)
    assert booru.model is None


def test_wrong_shapes_or_tag_count_are_reported(tmp_path):
    from tests.fixtures.deepbooru import deepbooru_state_dict

    sd = deepbooru_state_dict(TAGS, scores=SCORES)
    sd["n_Conv_50.weight"] = torch.zeros(1, 1, 3, 3)
    with pytest.raises(InterrogatorUnavailable, match="n_Conv_50.weight"):
        _bad(tmp_path, sd).load()
    sd = deepbooru_state_dict(TAGS, scores=SCORES)
    del sd["tags"]
    with pytest.raises(InterrogatorUnavailable, match="no 'tags' entry"):
        _bad(tmp_path, sd).load()
    sd = deepbooru_state_dict(TAGS, scores=SCORES)
    sd["n_Conv_999.weight"] = torch.zeros(1)
    with pytest.raises(InterrogatorUnavailable, match="n_Conv_999"):
        _bad(tmp_path, sd).load()


def test_fewer_tag_names_than_outputs_pair_as_a1111_zips_them(tmp_path, caplog):
    """A1111 zips names with outputs; a file with fewer names still tags (with a warning), the rest ignored."""
    from tests.fixtures.deepbooru import deepbooru_state_dict

    sd = deepbooru_state_dict(TAGS, scores=SCORES)
    sd["tags"] = TAGS[:3]
    booru = _bad(tmp_path, sd)
    booru.options = {"interrogate_keep_models_in_memory": False, "interrogate_return_ranks": False,
                     "interrogate_deepbooru_score_threshold": 0.5, "deepbooru_sort_alpha": True,
                     "deepbooru_use_spaces": True, "deepbooru_escape": True, "deepbooru_filter_tags": ""}.__getitem__
    assert booru.tag(_image()) == "1girl, long hair, solo"
    assert "3 tag names for 8 outputs" in caplog.text
