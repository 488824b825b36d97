"""External VAEs: the file layouts users have, A1111's resolve_vae order, the per-request swap and the infotext."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch

from tests.fixtures import embeddings as fx
from tests.fixtures.checkpoints import write_malicious_checkpoint
from webui.core.devices import DevicePlan, plan_devices
from webui.core.models.loader import load_components
from webui.core.models.registry import HashCache, VaeRegistry
from webui.core.types import CheckpointInfo
from webui.core.networks.vae import (
    SOURCE_COMMANDLINE,
    SOURCE_NEAR_CHECKPOINT,
    SOURCE_SETTINGS,
    SOURCE_USER_METADATA,
    VaeCache,
    VaeLoadError,
    VaeResolution,
    load_vae_file,
    resolve_vae,
    use_vae,
    vae_infotext,
)

CPU = plan_devices(use_cpu=["all"])


@pytest.fixture(scope="module")
def source_vae():
    return fx.tiny_vae(seed=5)


@pytest.fixture(scope="module")
def latents():
    return torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "name, layout, extra",
    [
        ("vae-ft-mse.safetensors", "ldm", False),  # standalone VAE: LDM keys without a prefix
        ("vae-ft-mse-840000-ema-pruned.ckpt", "ldm", True),  # {"state_dict"} + model_ema.* / loss.* extras
        ("cut-from-checkpoint.pt", "ldm-prefixed", True),  # first_stage_model.* keys
        ("diffusion_pytorch_model.safetensors", "diffusers", False),
        ("old-diffusers.safetensors", "diffusers-old", False),  # query/key/value/proj_attn attention names
    ],
)
def test_vae_file_layouts_decode_exactly_like_their_source(tmp_path, source_vae, latents, name, layout, extra):
    vae, cfg = source_vae
    path = fx.write_vae_file(str(tmp_path / name), vae, cfg, layout, extra_keys=extra)
    loaded = load_vae_file(path, "SD1", CPU)
    assert loaded is not vae and loaded.config.scaling_factor == 0.18215
    with torch.no_grad():
        assert torch.equal(loaded.decode(latents).sample, vae.decode(latents).sample)
        image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        assert torch.equal(loaded.encode(image).latent_dist.mean, vae.encode(image).latent_dist.mean)


def test_sdxl_scaling_dtype_and_file_independence(tmp_path, source_vae, latents):
    vae, cfg = source_vae
    path = fx.write_vae_file(str(tmp_path / "sdxl_vae.safetensors"), vae, cfg)
    assert load_vae_file(path, "SDXL", CPU).config.scaling_factor == 0.13025
    bf16 = load_vae_file(path, "SD1", DevicePlan(torch.device("cpu"), torch.float32, torch.bfloat16))
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    # the loaded module owns its weights: replacing the file on disk does not reach into it
    loaded = load_vae_file(path, "SD1", CPU)
    with torch.no_grad():
        before = loaded.decode(latents).sample
    fx.write_vae_file(path, fx.tiny_vae(seed=6)[0], cfg)
    with torch.no_grad():
        assert torch.equal(loaded.decode(latents).sample, before)


def test_unloadable_files_raise_vae_load_error_naming_the_file(tmp_path):
    missing = str(tmp_path / "missing.safetensors")
    with pytest.raises(VaeLoadError, match="missing.safetensors"):
        load_vae_file(missing, "SD1", CPU)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(VaeLoadError, match="garbage.pt"):
        load_vae_file(str(garbage), "SD1", CPU)
    embedding = fx.write_kohya_embedding(str(tmp_path / "embedding.safetensors"), torch.zeros(1, 32))
    with pytest.raises(VaeLoadError, match="embedding.safetensors.*no VAE weights"):
        load_vae_file(embedding, "SD1", CPU)
    if os.path.exists("/tmp/webui-test-pwned"):
        os.unlink("/tmp/webui-test-pwned")
    with pytest.raises(VaeLoadError, match="evil.ckpt"):
        load_vae_file(write_malicious_checkpoint(str(tmp_path / "evil.ckpt")), "SD1", CPU)
    assert not os.path.exists("/tmp/webui-test-pwned")
    vae, cfg = fx.tiny_vae(seed=1)
    sd = fx.vae_state_dict(vae, cfg)
    del sd["decoder.conv_out.weight"]
    from safetensors.torch import save_file

    save_file(sd, str(tmp_path / "truncated.safetensors"))
    with pytest.raises(VaeLoadError, match="truncated.safetensors"):
        load_vae_file(str(tmp_path / "truncated.safetensors"), "SD1", CPU)


# ---------------------------------------------------------------------------------------------------------------
# resolve_vae


@pytest.fixture
def vae_layout(tmp_path):
    """models/Stable-diffusion with a checkpoint and a VAE beside it; models/VAE with two more."""
    ckpt_dir, vae_dir = tmp_path / "models" / "Stable-diffusion", tmp_path / "models" / "VAE"
    for p in (ckpt_dir / "anime.safetensors", ckpt_dir / "anime.vae.pt", ckpt_dir / "plain.safetensors",
              vae_dir / "kl-f8.safetensors", vae_dir / "sub" / "sdxl_vae.safetensors"):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(p.name.encode())
    registry = VaeRegistry(str(vae_dir), str(ckpt_dir))
    registry.refresh()
    return ckpt_dir, vae_dir, registry


def test_resolve_vae_automatic_none_and_names(vae_layout):
    ckpt_dir, vae_dir, registry = vae_layout
    anime, plain = str(ckpt_dir / "anime.safetensors"), str(ckpt_dir / "plain.safetensors")
    near = str(ckpt_dir / "anime.vae.pt")
    kl = str(vae_dir / "kl-f8.safetensors")

    assert resolve_vae(anime, "Automatic", registry) == VaeResolution(SOURCE_NEAR_CHECKPOINT, near)
    assert resolve_vae(anime, "auto", registry) == VaeResolution(SOURCE_NEAR_CHECKPOINT, near)  # old config value
    own = resolve_vae(plain, "Automatic", registry)  # nothing near: the checkpoint's own VAE
    assert own.path is None and own.is_checkpoint_vae and own.warning is None and own.resolved is False
    assert resolve_vae(anime, "None", registry) == VaeResolution()  # the checkpoint's own, even with one near
    assert resolve_vae(anime, "kl-f8.safetensors", registry) == VaeResolution(SOURCE_SETTINGS, kl)
    assert resolve_vae(plain, "sdxl_vae.safetensors", registry).path == str(vae_dir / "sub" / "sdxl_vae.safetensors")
    assert resolve_vae(anime, "kl-f8.safetensors", registry).name == "kl-f8.safetensors"

    unknown = resolve_vae(anime, "nope.pt", registry)
    assert unknown.path is None and unknown.resolved is False
    assert unknown.warning.startswith("Couldn't find VAE named nope.pt; using None instead")
    assert unknown.choices == ("Automatic", "None", "anime.vae.pt", "kl-f8.safetensors", "sdxl_vae.safetensors")
    assert all(c in unknown.warning for c in unknown.choices)

    # sd_vae_overrides_per_model_preferences off: the VAE near the checkpoint wins over the setting
    assert resolve_vae(anime, "kl-f8.safetensors", registry, overrides_per_model_preferences=False) == VaeResolution(
        SOURCE_NEAR_CHECKPOINT, near
    )
    assert resolve_vae(plain, "kl-f8.safetensors", registry, overrides_per_model_preferences=False).path == kl
    # --vae-path beats everything
    assert resolve_vae(anime, "None", registry, vae_path=kl) == VaeResolution(SOURCE_COMMANDLINE, kl)


def test_resolve_vae_user_metadata(vae_layout):
    ckpt_dir, vae_dir, registry = vae_layout
    anime = str(ckpt_dir / "anime.safetensors")
    kl = str(vae_dir / "kl-f8.safetensors")
    meta = ckpt_dir / "anime.json"  # Extra Networks "edit metadata" of the checkpoint
    meta.write_text(json.dumps({"description": "x", "vae": "kl-f8.safetensors"}))
    assert resolve_vae(anime, "Automatic", registry) == VaeResolution(SOURCE_USER_METADATA, kl)
    # an explicit setting still overrides per-model preferences (the default)
    assert resolve_vae(anime, "None", registry) == VaeResolution()
    assert resolve_vae(anime, "sdxl_vae.safetensors", registry).source == SOURCE_SETTINGS
    meta.write_text(json.dumps({"vae": "None"}))
    assert resolve_vae(anime, "Automatic", registry) == VaeResolution()  # metadata None beats the VAE near it
    meta.write_text(json.dumps({"vae": "gone.pt"}))
    assert resolve_vae(anime, "Automatic", registry).source == SOURCE_NEAR_CHECKPOINT
    meta.write_text("{broken")
    assert resolve_vae(anime, "Automatic", registry).source == SOURCE_NEAR_CHECKPOINT


# ---------------------------------------------------------------------------------------------------------------
# Using a VAE for one request


@pytest.fixture(scope="module")
def sd1(models_root, tokenizer_dir):
    path = models_root[1]["SD1"]
    info = CheckpointInfo(filename=path, name="tiny-sd15.safetensors", model_name="m")
    return load_components(info, CPU, tokenizer_dir)


def test_use_vae_swaps_for_the_block_and_leaves_the_checkpoint_vae_untouched(sd1, tmp_path, source_vae, latents):
    vae, cfg = source_vae
    external = load_vae_file(fx.write_vae_file(str(tmp_path / "ext.safetensors"), vae, cfg), "SD1", CPU)
    own = sd1.vae
    weights = {k: v.clone() for k, v in own.state_dict().items()}
    with use_vae(sd1, external) as active:
        assert active is external and sd1.vae is external
        with torch.no_grad():
            assert torch.equal(sd1.vae.decode(latents).sample, vae.decode(latents).sample)
    assert sd1.vae is own
    with pytest.raises(RuntimeError, match="during decode"):
        with use_vae(sd1, external):
            raise RuntimeError("failure during decode")
    assert sd1.vae is own
    with use_vae(sd1, None) as active:
        assert active is own and sd1.vae is own
    assert all(torch.equal(v, weights[k]) for k, v in own.state_dict().items())
    # a VAE of another model family (16 latent channels) is refused, nothing swapped
    other = fx.tiny_vae(seed=2, latent_channels=16)[0]
    with pytest.raises(VaeLoadError, match="16 latent channels"):
        with use_vae(sd1, other):
            pass
    assert sd1.vae is own


def test_vae_cache_is_bounded_and_notices_replaced_files(tmp_path, source_vae):
    vae, cfg = source_vae
    a = fx.write_vae_file(str(tmp_path / "a.safetensors"), vae, cfg)
    b = fx.write_vae_file(str(tmp_path / "b.safetensors"), vae, cfg)
    calls = []

    def loader(path, arch, plan):
        calls.append(os.path.basename(path))
        return object()

    cache = VaeCache(max_items=1, loader=loader)
    first = cache.get(a, "SD1", CPU)
    assert cache.get(a, "SD1", CPU) is first and calls == ["a.safetensors"]
    cache.get(b, "SD1", CPU)
    assert len(cache) == 1
    assert cache.get(a, "SD1", CPU) is not first and calls == ["a.safetensors", "b.safetensors", "a.safetensors"]
    st = os.stat(a)
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # replaced on disk
    cache.get(a, "SD1", CPU)
    assert calls[-1] == "a.safetensors" and len(calls) == 4 and len(cache) == 1
    cache.get(a, "SDXL", CPU)  # another scaling factor: another module
    assert len(calls) == 5
    uncached = VaeCache(max_items=0, loader=loader)
    uncached.get(a, "SD1", CPU)
    uncached.get(a, "SD1", CPU)
    assert len(calls) == 7 and len(uncached) == 0
    with pytest.raises(VaeLoadError, match="gone.safetensors"):
        cache.get(str(tmp_path / "gone.safetensors"), "SD1", CPU)
    real = VaeCache()
    assert real.get(a, "SD1", CPU).config.latent_channels == 4


def test_vae_infotext_as_a1111_writes_it(tmp_path, vae_layout):
    _, vae_dir, _ = vae_layout
    kl = str(vae_dir / "kl-f8.safetensors")
    sha = hashlib.sha256(open(kl, "rb").read()).hexdigest()
    cache = HashCache(str(tmp_path / "cache.json"))
    assert vae_infotext(VaeResolution(), cache) == {}
    assert vae_infotext(None, cache) == {}
    info = vae_infotext(VaeResolution(SOURCE_SETTINGS, kl), cache)
    assert info == {"VAE hash": sha[:10], "VAE": "kl-f8.safetensors"} and list(info) == ["VAE hash", "VAE"]
    assert cache.sha256_from_cache(kl, "vae/kl-f8.safetensors") == sha
    unhashed = vae_infotext(VaeResolution(SOURCE_SETTINGS, kl), HashCache(None), no_hashing=True)
    assert unhashed == {"VAE": "kl-f8.safetensors"}
    assert vae_infotext(VaeResolution(SOURCE_SETTINGS, kl), cache, add_name=False) == {"VAE hash": sha[:10]}
