"""A1111's Tiling (sd_hijack.apply_circular): circular padding in every Conv2d of the request's model, scoped to the
request, "Tiling: True" in the infotext. Tiny checkpoints through the real loader."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from webui.config import parse
from webui.core.generation import tiling
from webui.core.io.infotext import parse_generation_parameters
from webui.core.types import GenerationRequest
from webui.state import build_state


@pytest.fixture
def state(data_dir):
    return build_state(parse(["--nowebui", "--data-dir", str(data_dir)]), create_demo=False)


def _gen(state, **kw):
    base = dict(prompt="a cat", steps=4, width=64, height=64, seed=123, sampler_name="Euler")
    base.update(kw)
    return state.engine.generate(GenerationRequest(**base))


def _modes(comp) -> list[str]:
    return [layer.padding_mode for layer in tiling.conv_layers(comp)]


def _seam(image) -> dict[str, float]:
    """Pearson correlation of neighbouring columns / rows of the image: the mean over interior neighbours, and across
    the wrap-around seam (last column -> first column, last row -> first row). A seamless image correlates across
    its seam as its neighbouring columns do; the two edges of a plain one are unrelated."""
    a = np.asarray(image).astype(np.float64)

    def corr(u, v):
        u, v = u.ravel() - u.mean(), v.ravel() - v.mean()
        return float(u @ v / np.sqrt((u @ u) * (v @ v)))

    return {
        "cols": float(np.mean([corr(a[:, i], a[:, i + 1]) for i in range(a.shape[1] - 1)])),
        "cols_wrap": corr(a[:, -1], a[:, 0]),
        "rows": float(np.mean([corr(a[i], a[i + 1]) for i in range(a.shape[0] - 1)])),
        "rows_wrap": corr(a[-1], a[0]),
    }


def _assert_seamless(tiled, plain):
    t, p = _seam(tiled), _seam(plain)
    print("seam correlation: tiled", {k: round(v, 3) for k, v in t.items()},
          "plain", {k: round(v, 3) for k, v in p.items()})
    for axis in ("cols", "rows"):
        wrap = f"{axis}_wrap"
        assert t[wrap] > 0.8 * t[axis]  # across the seam as between any two neighbours
        assert p[wrap] < 0.5 * p[axis]  # the plain image's edges do not meet
        assert t[wrap] > p[wrap] + 0.3


class _P:
    """The two things tiling.enabled reads from A1111's p."""

    def __init__(self, request_tiling, opts, sd_model=None):
        self.request = GenerationRequest(prompt="", tiling=request_tiling)
        self.opts = opts
        self.sd_model = sd_model


def test_effective_value_request_then_option():
    # A1111 process_images_inner: `if p.tiling is None: p.tiling = opts.tiling`; an override pasted from an
    # infotext arrives as the text "True" (Options.cast_value for a bool option)
    assert tiling.enabled(_P(True, {"tiling": False}))
    assert not tiling.enabled(_P(False, {"tiling": True}))
    assert tiling.enabled(_P(None, {"tiling": True}))
    assert not tiling.enabled(_P(None, {"tiling": False}))
    assert tiling.enabled(_P(None, {"tiling": "True"}))
    assert not tiling.enabled(_P(None, {"tiling": "False"}))


def test_every_conv_of_unet_and_vae_is_circular_inside_and_restored_after(state):
    comp = state.engine.load(state.registry.resolve("tiny-sd15"))
    layers = tiling.conv_layers(comp)
    unet_convs = [m for m in comp.unet.modules() if isinstance(m, torch.nn.Conv2d)]
    vae_convs = [m for m in comp.vae.modules() if isinstance(m, torch.nn.Conv2d)]
    assert unet_convs and vae_convs and len(layers) == len(unet_convs) + len(vae_convs)
    before = _modes(comp)
    assert set(before) == {"zeros"}
    with tiling.circular_padding(_P(True, {}, comp)) as on:
        assert on and set(_modes(comp)) == {"circular"}
    assert _modes(comp) == before
    with pytest.raises(RuntimeError), tiling.circular_padding(_P(True, {}, comp)):
        raise RuntimeError("boom")
    assert _modes(comp) == before
    with tiling.circular_padding(_P(False, {}, comp)) as on:
        assert not on and _modes(comp) == before


def test_circular_model_is_periodic(state):
    # With circular padding the checkpoint's UNet and VAE decoder commute with a roll of the latent (by a multiple
    # of the UNet's downsampling factor): a shifted latent gives the shifted output, so the output tiles exactly.
    # With zero padding they do not.
    comp = state.engine.load(state.registry.resolve("tiny-sd15"))
    unet, vae = comp.unet, comp.vae
    factor = 2 ** (len(unet.config.block_out_channels) - 1)
    scale = comp.vae_scale_factor
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=g).to(unet.device, unet.dtype)
    ctx = torch.randn(1, 77, unet.config.cross_attention_dim, generator=g).to(unet.device, unet.dtype)
    dy, dx = factor, 3 * factor

    def errors():
        with torch.no_grad():
            rolled = torch.roll(x, (dy, dx), (2, 3))
            u = (torch.roll(unet(x, 10, encoder_hidden_states=ctx).sample, (dy, dx), (2, 3))
                 - unet(rolled, 10, encoder_hidden_states=ctx).sample)
            d = (torch.roll(vae.decode(x).sample, (dy * scale, dx * scale), (2, 3)) - vae.decode(rolled).sample)
        return u.abs().max().item(), d.abs().max().item()

    zeros_unet, zeros_vae = errors()
    with tiling.circular_padding(_P(True, {}, comp)):
        circular_unet, circular_vae = errors()
    print("roll error unet/vae: zeros", zeros_unet, zeros_vae, "circular", circular_unet, circular_vae)
    assert circular_unet < 1e-4 < zeros_unet
    assert circular_vae < 1e-4 < zeros_vae


@pytest.mark.parametrize("ckpt", ["tiny-sd15", "tiny-sd2-v", "tiny-sdxl"])
@pytest.mark.parametrize("seed", [1, 2])
def test_tiled_image_wraps_around(state, ckpt, seed):
    plain = _gen(state, checkpoint=ckpt, seed=seed)
    tiled = _gen(state, checkpoint=ckpt, seed=seed, tiling=True)
    _assert_seamless(tiled.images[0], plain.images[0])
    assert "Tiling: True" in tiled.infotexts[0] and "Tiling" not in plain.infotexts[0]
    assert set(_modes(state.engine.load(state.registry.resolve(ckpt)))) == {"zeros"}


def test_scoped_to_the_request_and_infotext(state):
    comp = state.engine.load(state.registry.resolve("tiny-sd15"))
    before = _modes(comp)
    first = np.asarray(_gen(state).images[0]).tobytes()
    tiled = _gen(state, tiling=True)
    assert _modes(comp) == before
    assert np.asarray(_gen(state).images[0]).tobytes() == first != np.asarray(tiled.images[0]).tobytes()
    # A1111 create_infotext: "Tiling": "True" if p.tiling else None; written at the end of the core keys
    assert tiled.infotexts[0].endswith("Tiling: True, Version: v1.10.1")
    assert parse_generation_parameters(tiled.infotexts[0])["Tiling"] == "True"
    plain = _gen(state, tiling=False)
    assert "Tiling" not in plain.infotexts[0]


def test_option_and_override_turn_it_on(state):
    by_override = _gen(state, override_settings={"tiling": True})
    assert "Tiling: True" in by_override.infotexts[0]
    # the request's explicit false wins over the option, as p.tiling does in A1111
    off = _gen(state, tiling=False, override_settings={"tiling": True})
    assert "Tiling" not in off.infotexts[0]
    state.settings.set("tiling", True)
    by_option = _gen(state)
    assert "Tiling: True" in by_option.infotexts[0]
    assert np.asarray(by_option.images[0]).tobytes() == np.asarray(by_override.images[0]).tobytes()


def test_img2img(state):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    kw = dict(mode="img2img", init_images=(buf.getvalue(),), denoising_strength=0.75, seed=5)
    tiled, plain = _gen(state, tiling=True, **kw), _gen(state, **kw)
    assert "Tiling: True" in tiled.infotexts[0] and "Tiling" not in plain.infotexts[0]
    assert np.asarray(tiled.images[0]).tobytes() != np.asarray(plain.images[0]).tobytes()


def test_the_requests_external_vae_is_covered(state):
    from tests.fixtures.embeddings import tiny_vae, write_vae_file

    path = os.path.join(state.config.vae_models_dir, "other.vae.safetensors")
    vae, cfg = tiny_vae(seed=9)
    write_vae_file(path, vae, cfg)
    state.vae_registry.refresh()
    comp = state.engine.load(state.registry.resolve("tiny-sd15"))
    own_before = [m.padding_mode for m in comp.vae.modules() if isinstance(m, torch.nn.Conv2d)]
    external = state.engine.vae_cache.get(path, comp.arch, state.engine.plan)  # the module the request swaps in
    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.append(mod.padding_mode))
             for m in external.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        res = _gen(state, tiling=True, override_settings={"sd_vae": "other.vae.safetensors"})
    finally:
        for h in hooks:
            h.remove()
    assert "Tiling: True" in res.infotexts[0] and "VAE: other.vae.safetensors" in res.infotexts[0]
    assert seen and set(seen) == {"circular"}  # the decode ran through the external VAE, circular
    assert {m.padding_mode for m in external.modules() if isinstance(m, torch.nn.Conv2d)} == {"zeros"}
    assert [m.padding_mode for m in comp.vae.modules() if isinstance(m, torch.nn.Conv2d)] == own_before
