"""sd_checkpoints_limit, sd_checkpoint_cache (A1111's RAM cache of unloaded checkpoints) and sd_vae_checkpoint_cache."""

from __future__ import annotations

import pytest

from webui.config import parse
from webui.core.models import cache as cache_mod
from webui.state import build_state


@pytest.fixture
def state(data_dir):
    return build_state(parse(["--nowebui", "--data-dir", str(data_dir)]), create_demo=False)


def _count_loads(monkeypatch):
    loads = []
    real = cache_mod.load_components

    def counting(info, plan, tokenizer_dir):
        loads.append(info.stem)
        return real(info, plan, tokenizer_dir)

    monkeypatch.setattr(cache_mod, "load_components", counting)
    return loads


def test_switching_back_reloads_without_a_ram_cache(state, monkeypatch):
    loads = _count_loads(monkeypatch)
    a, b = state.registry.resolve("tiny-sd15"), state.registry.resolve("tiny-sd2-v")
    first = state.engine.load(a)
    state.engine.load(b)
    again = state.engine.load(a)
    assert loads == ["tiny-sd15", "tiny-sd2-v", "tiny-sd15"] and again is not first
    assert not state.engine.models.ram


def test_ram_cache_keeps_the_unloaded_model_for_a_fast_switch_back(state, monkeypatch):
    state.settings.set("sd_checkpoint_cache", 1)
    loads = _count_loads(monkeypatch)
    a, b, c = (state.registry.resolve(n) for n in ("tiny-sd15", "tiny-sd2-v", "tiny-sdxl"))
    first = state.engine.load(a)
    state.engine.load(b)  # a leaves the device (limit 1) and stays in RAM
    assert list(state.engine.models.ram) == [a.filename]
    assert state.engine.load(a) is first and loads == ["tiny-sd15", "tiny-sd2-v"]
    state.engine.load(c)  # a to RAM, b (older) dropped: at most one kept
    assert list(state.engine.models.ram) == [a.filename]
    state.engine.load(b)
    assert loads == ["tiny-sd15", "tiny-sd2-v", "tiny-sdxl", "tiny-sd2-v"]


def test_vae_cache_size_follows_the_option(state):
    """Two external VAEs used in turn: with sd_vae_checkpoint_cache 0 only the one in use stays loaded; with 1 the
    other stays too."""
    import os

    from tests.fixtures import embeddings as fx
    from webui.core.types import GenerationRequest

    os.makedirs(state.config.vae_models_dir, exist_ok=True)
    for name, seed in (("a.safetensors", 5), ("b.safetensors", 6)):
        vae, cfg = fx.tiny_vae(seed=seed)
        fx.write_vae_file(os.path.join(state.config.vae_models_dir, name), vae, cfg)
    state.vae_registry.refresh()

    def run(vae, cache):
        state.engine.generate(GenerationRequest(prompt="a", steps=1, width=64, height=64, seed=1,
                                                checkpoint="tiny-sd15", override_settings={
                                                    "sd_vae": vae, "sd_vae_checkpoint_cache": cache}))

    run("a.safetensors", 0)
    run("b.safetensors", 0)
    assert len(state.engine.vae_cache) == 1
    run("a.safetensors", 1)
    run("b.safetensors", 1)
    assert len(state.engine.vae_cache) == 2
