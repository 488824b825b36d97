"""webui.core.options: coercion, frozen options, changed options and the one checkpoint switch (no HTTP, no UI)."""

import json
import os
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from webui.core.models.registry import CheckpointNotFound, CheckpointRegistry, VaeRegistry
from webui.core.options import (
    HIDE_UI_DIR_CONFIG_KEYS,
    FrozenOption,
    OptionError,
    changed_options,
    coerce_option,
    frozen_reason,
    store_options,
    switch_checkpoint,
)
from webui.core.settings import OPTIONS_BY_KEY, Settings, UnknownOption


@dataclass
class Flags:
    freeze_settings: bool = False
    freeze_settings_in_sections: str | None = None
    freeze_specific_settings: str | None = None
    hide_ui_dir_config: bool = False


def opt(key):
    return OPTIONS_BY_KEY[key]


# -- coerce_option ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key,value,expected", [
    ("save_txt", "yes", True), ("save_txt", 0, False), ("save_txt", "OFF", False), ("save_txt", True, True),
    ("jpeg_quality", "95", 95), ("jpeg_quality", 90.0, 90), ("jpeg_quality", 80, 80),
    ("CLIP_stop_at_last_layers", " 2 ", 2),
    ("samples_format", "JPG", "jpg"),  # a choice matches case-insensitively and is stored as listed
    ("sd_vae", 5, "5"),  # pydantic v1 str coercion
    ("sd_model_checkpoint", ["anything"], ["anything"]),  # default None: the caller checks the meaning
])
def test_coerce_option_values(key, value, expected):
    out = coerce_option(opt(key), value)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize("key,value,message", [
    ("save_txt", "maybe", "option 'save_txt': expected true or false, got 'maybe'"),
    ("jpeg_quality", True, "option 'jpeg_quality': expected an integer, got True"),
    ("jpeg_quality", 1.5, "option 'jpeg_quality': expected an integer, got 1.5"),
    ("jpeg_quality", "x", "option 'jpeg_quality': expected an integer, got 'x'"),
    ("jpeg_quality", 101, "option 'jpeg_quality': must be at most 100 (got 101)"),
    ("jpeg_quality", 0, "option 'jpeg_quality': must be at least 1 (got 0)"),
    ("samples_format", "gif", "option 'samples_format': 'gif' is not one of: png, jpg, jpeg, webp"),
    ("sd_vae", None, "option 'sd_vae': expected a string, got None"),
])
def test_coerce_option_errors_name_the_key(key, value, message):
    with pytest.raises(OptionError) as e:
        coerce_option(opt(key), value)
    assert str(e.value) == message and e.value.key == key
    assert isinstance(e.value, ValueError)


def test_float_option_must_be_finite():
    key = next(k for k, o in OPTIONS_BY_KEY.items() if type(o.default) is float and o.minimum is None
               and o.maximum is None and not o.choices)
    assert coerce_option(opt(key), "0.5") == 0.5
    with pytest.raises(OptionError, match="expected a finite number"):
        coerce_option(opt(key), float("nan"))


# -- frozen options --------------------------------------------------------------------------------------------------


def test_frozen_reason_messages_are_a1111s():
    o = opt("jpeg_quality")
    assert frozen_reason(Flags(), o) is None
    assert frozen_reason(Flags(freeze_settings=True), o) == "changing settings is disabled"
    assert frozen_reason(Flags(freeze_settings_in_sections=f"x, {o.section}"), o) == (
        f"not possible to set 'jpeg_quality' because settings in section '{o.section}' are frozen with "
        "--freeze-settings-in-sections")
    assert frozen_reason(Flags(freeze_specific_settings="a, jpeg_quality"), o) == (
        "not possible to set 'jpeg_quality' because this setting is frozen with --freeze-specific-settings")
    assert frozen_reason(Flags(freeze_specific_settings="save_txt"), o) is None


# -- changed_options -------------------------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path):
    sd = tmp_path / "models" / "Stable-diffusion"
    sd.mkdir(parents=True)
    for name in ("one.safetensors", "two.safetensors"):
        (sd / name).write_bytes(name.encode())
    vae = tmp_path / "models" / "VAE"
    vae.mkdir(parents=True)
    (vae / "good.vae.pt").write_bytes(b"v")
    registry = CheckpointRegistry(str(sd), no_hashing=True)
    registry.refresh()
    vaes = VaeRegistry(str(vae), str(sd))
    vaes.refresh()
    settings = Settings.load(str(tmp_path / "config.json"))
    return SimpleNamespace(settings=settings, registry=registry, vae_registry=vaes, path=tmp_path / "config.json")


def changes(env, body, flags=None, for_request=False):
    return changed_options(body, settings=env.settings, flags=flags or Flags(), registry=env.registry,
                           vae_registry=env.vae_registry, for_request=for_request)


def test_changed_options_keeps_only_real_changes_coerced_in_body_order(env):
    body = {"save_txt": "true", "jpeg_quality": 80, "samples_format": "WEBP", "api_useragent": "x"}
    # jpeg_quality is unchanged (default 80); api_useragent is API-restricted: both dropped
    assert list(changes(env, body).items()) == [("save_txt", True), ("samples_format", "webp")]
    assert changes(env, env.settings.all()) == {}  # the whole GET body posted back is a no-op


def test_changed_options_errors(env):
    with pytest.raises(UnknownOption):
        changes(env, {"save_txt": True, "no_such_option": 1})
    with pytest.raises(OptionError, match="jpeg_quality"):
        changes(env, {"jpeg_quality": 500})
    with pytest.raises(FrozenOption) as e:
        changes(env, {"jpeg_quality": 90}, Flags(freeze_settings=True))
    assert str(e.value) == "changing settings is disabled"
    assert changes(env, {"jpeg_quality": 80}, Flags(freeze_settings=True)) == {}  # unchanged: fine when frozen
    with pytest.raises(OptionError, match="unknown VAE 'bad'; valid values: Automatic, None, good.vae.pt"):
        changes(env, {"sd_vae": "bad"})
    assert changes(env, {"sd_vae": "good.vae.pt"}) == {"sd_vae": "good.vae.pt"}


def test_unknown_checkpoint_is_an_error_for_options_and_left_to_the_engine_for_a_request(env):
    with pytest.raises(CheckpointNotFound):
        changes(env, {"sd_model_checkpoint": "nope"})
    assert changes(env, {"sd_model_checkpoint": "nope"}, for_request=True) == {"sd_model_checkpoint": "nope"}
    assert changes(env, {"sd_model_checkpoint": "two"}) == {"sd_model_checkpoint": "two"}


def test_hide_ui_dir_config_drops_folder_keys(env):
    body = {"outdir_samples": "/elsewhere", "outdir_img2img_grids": "g", "save_txt": True}
    assert "outdir_samples" in HIDE_UI_DIR_CONFIG_KEYS and "outdir_img2img_grids" not in HIDE_UI_DIR_CONFIG_KEYS
    assert changes(env, body, Flags(hide_ui_dir_config=True)) == {"outdir_img2img_grids": "g", "save_txt": True}


def test_store_options_sets_and_saves(env):
    store_options(env.settings, {"save_txt": True})
    assert env.settings.get("save_txt") is True
    assert json.loads(env.path.read_text())["save_txt"] is True


# -- switch_checkpoint -----------------------------------------------------------------------------------------------


class FakeEngine:
    """The four Engine methods switch_checkpoint may use; loading records the call instead of building a model."""

    def __init__(self, registry, settings):
        self.registry, self.settings, self.loaded, self.current = registry, settings, [], None

    def resolve_checkpoint(self, name):
        if name:
            info = self.registry.resolve(name)
            if info is None:
                raise CheckpointNotFound(name, [c.title for c in self.registry.list()])
            return info
        return self.registry.resolve(self.settings.get("sd_model_checkpoint")) or self.registry.list()[0]

    def load(self, info, extra_slots=0):
        self.loaded.append(info.title)
        self.current = SimpleNamespace(info=info)
        return self.current

    def current_model(self):
        return self.current

    def unload(self):
        self.current = None


def test_switch_checkpoint_loads_stores_title_and_saves(env):
    engine = FakeEngine(env.registry, env.settings)
    assert switch_checkpoint(engine, env.settings, "two") == "two.safetensors"
    assert engine.loaded == ["two.safetensors"] and env.settings.get("sd_model_checkpoint") == "two.safetensors"
    assert json.loads(env.path.read_text())["sd_model_checkpoint"] == "two.safetensors"
    # None: the stored one (A1111 preload); nothing changed, so nothing is written
    os.remove(env.path)
    assert switch_checkpoint(engine, env.settings, None) == "two.safetensors" and not env.path.exists()
    with pytest.raises(CheckpointNotFound):
        switch_checkpoint(engine, env.settings, "nope")
    assert env.settings.get("sd_model_checkpoint") == "two.safetensors"


def test_switch_checkpoint_without_load_or_save(env):
    engine = FakeEngine(env.registry, env.settings)
    assert switch_checkpoint(engine, env.settings, "one", load=False, save=False) == "one.safetensors"
    assert engine.loaded == [] and env.settings.get("sd_model_checkpoint") == "one.safetensors"
    assert not env.path.exists()
    # the loaded model's title wins when it is the same file (its title may carry a hash computed at load)
    engine.current = SimpleNamespace(info=SimpleNamespace(filename=env.registry.resolve("two").filename,
                                                          title="two.safetensors [0123456789]"))
    assert switch_checkpoint(engine, env.settings, "two", load=False, save=False) == "two.safetensors [0123456789]"
