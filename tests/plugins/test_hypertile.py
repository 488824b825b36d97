"""Hypertile (A1111 1.10's built-in extension extensions-builtin/hypertile): A1111's tiling arithmetic on small
tensors against hand-written references, the layer tables through the LDM names, the per-request scope, and the
always-on script over the API on tiny checkpoints (off by default, changes the image when on, undone after)."""

from __future__ import annotations

import base64
import io
import json
import random

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from webui.app import build_app
from webui.config import parse
from webui.core.generation import hypertile as ht
from webui.core.io.paste import infotext_settings

# -- A1111's arithmetic -----------------------------------------------------------------------------------------------


def _a1111_split_tokens(x, nh, nw, h, w):
    """einops "b (nh h nw w) c -> (b nh nw) (h w) c" written out index by index."""
    b, _, c = x.shape
    out = torch.empty(b * nh * nw, h * w, c, dtype=x.dtype)
    for bi in range(b):
        for i in range(nh):
            for j in range(nw):
                for y in range(h):
                    for xx in range(w):
                        src = ((i * h + y) * nw + j) * w + xx
                        out[(bi * nh + i) * nw + j, y * w + xx] = x[bi, src]
    return out


def _a1111_split_maps(x, nh, nw):
    """einops "b c (nh h) (nw w) -> (b nh nw) c h w" written out tile by tile."""
    b, c, hh, ww = x.shape
    h, w = hh // nh, ww // nw
    out = torch.empty(b * nh * nw, c, h, w, dtype=x.dtype)
    for bi in range(b):
        for i in range(nh):
            for j in range(nw):
                out[(bi * nh + i) * nw + j] = x[bi, :, i * h:(i + 1) * h, j * w:(j + 1) * w]
    return out


@pytest.mark.parametrize("nh, nw, h, w", [(2, 2, 3, 4), (1, 3, 2, 2), (4, 1, 1, 5)])
def test_token_split_is_a1111s_rearrange_and_merge_inverts_it(nh, nw, h, w):
    x = torch.arange(2 * nh * h * nw * w * 3, dtype=torch.float32).reshape(2, nh * h * nw * w, 3)
    tiles = ht.split_tokens(x, nh, nw, h, w)
    assert torch.equal(tiles, _a1111_split_tokens(x, nh, nw, h, w))
    assert torch.equal(ht.merge_tokens(tiles, nh, nw, h, w), x)
    einops = pytest.importorskip("einops")
    assert torch.equal(tiles, einops.rearrange(x, "b (nh h nw w) c -> (b nh nw) (h w) c", nh=nh, nw=nw, h=h, w=w))


@pytest.mark.parametrize("nh, nw", [(2, 2), (1, 3), (4, 2)])
def test_map_split_is_a1111s_rearrange_and_merge_inverts_it(nh, nw):
    x = torch.randn(2, 3, nh * 4, nw * 2, generator=torch.Generator().manual_seed(0))
    tiles = ht.split_maps(x, nh, nw)
    assert torch.equal(tiles, _a1111_split_maps(x, nh, nw))
    assert torch.equal(ht.merge_maps(tiles, nh, nw), x)


def test_tile_counts_and_sizes_follow_a1111():
    # the largest power of two dividing both sides
    assert ht.largest_tile_size_available(512, 512) == 512
    assert ht.largest_tile_size_available(768, 512) == 256
    assert ht.largest_tile_size_available(520, 512) == 8
    # A1111's h is round(sqrt(hw * width / height)): the latent *width* of a landscape image comes first
    assert ht.find_hw_candidates(96 * 64, 768 / 512) == (96, 64)
    assert ht.find_hw_candidates(64 * 64, 1.0) == (64, 64)
    # no exact pair from the rounded roots (6 x 6): the divisor pair whose w / h is closest (5/7 beats 7/5)
    assert ht.find_hw_candidates(7 * 5, 1.0) == (7, 5)
    # random_divisor: the max_options largest tile counts, one randint per call even with a single choice
    rng, ref = random.Random(1), random.Random(1)
    assert ht.random_divisor(64, 32, 3, rng) == [2, 1][ref.randint(0, 1)]
    assert ht.random_divisor(64, 16, 1, rng) == 4 and ref.randint(0, 0) == 0
    assert ht.random_divisor(64, 16, 3, rng) == [4, 2, 1][ref.randint(0, 2)]
    assert ht.random_divisor(8, 16, 3, rng) == 1 and ref.randint(0, 0) == 0  # min_value capped at value
    assert rng.getstate() == ref.getstate()


def test_tiled_call_tiles_unet_tokens_and_vae_maps_as_a1111():
    seen = []

    def forward(x, *args, **kwargs):
        seen.append(tuple(x.shape))
        return x * 2

    # UNet, depth 0, 256x256: latent tile max(128, 128) // 8 = 16 on a 32x32 map -> counts [2, 1] (swap size 3)
    params = ht.LayerParams(depth=0, tile_size=128, swap_size=3, aspect_ratio=1.0, enabled=True)
    x = torch.randn(2, 32 * 32, 4, generator=torch.Generator().manual_seed(0))
    rng, ref = random.Random(7), random.Random(7)
    nh, nw = [2, 1][ref.randint(0, 1)], [2, 1][ref.randint(0, 1)]
    out = ht.tiled_call(forward, params, rng, (x,), {})
    assert torch.equal(out, x * 2)  # an elementwise forward: the tiles go back where they came from
    expected = (2 * nh * nw, 32 * 32 // (nh * nw), 4)
    assert seen[-1] == (expected if nh * nw > 1 else (2, 1024, 4))
    # swap size 1: always the largest count; depth 1 doubles the tile (16 * 2 = 32 on a 32x32 map: no tiling)
    params.swap_size = 1
    ht.tiled_call(forward, params, rng, (x,), {})
    assert seen[-1] == (8, 256, 4)
    params.depth = 1
    ht.tiled_call(forward, params, rng, (x,), {})
    assert seen[-1] == (2, 1024, 4)
    # the VAE's maps (4-D), called with a keyword as diffusers may
    vparams = ht.LayerParams(depth=0, tile_size=128, swap_size=1, enabled=True)
    maps = torch.randn(1, 3, 32, 48)
    out = ht.tiled_call(lambda hidden_states, temb=None: hidden_states + 1, vparams, rng, (),
                        {"hidden_states": maps, "temb": None})
    assert torch.equal(out, maps + 1)
    # disabled: no draw from the RNG, the forward as is
    state = rng.getstate()
    params.enabled = False
    ht.tiled_call(forward, params, rng, (x,), {})
    assert seen[-1] == (2, 1024, 4) and rng.getstate() == state


def test_diffusers_names_map_to_a1111s_ldm_names():
    class Config:
        block_out_channels = (320, 640, 1280, 1280)
        layers_per_block = 2

    sd = Config()
    assert ht.unet_ldm_name("down_blocks.0.attentions.1.transformer_blocks.0.attn1", sd) == \
        "input_blocks.2.1.transformer_blocks.0.attn1"
    assert ht.unet_ldm_name("down_blocks.2.attentions.0.transformer_blocks.0.attn1", sd) == \
        "input_blocks.7.1.transformer_blocks.0.attn1"
    assert ht.unet_ldm_name("up_blocks.1.attentions.2.transformer_blocks.0.attn1", sd) == \
        "output_blocks.5.1.transformer_blocks.0.attn1"
    assert ht.unet_ldm_name("up_blocks.3.attentions.0.transformer_blocks.0.attn1", sd) == \
        "output_blocks.9.1.transformer_blocks.0.attn1"
    assert ht.unet_ldm_name("mid_block.attentions.0.transformer_blocks.0.attn1", sd) == \
        "middle_block.1.transformer_blocks.0.attn1"
    assert ht.unet_ldm_name("down_blocks.0.resnets.0", sd) is None

    class XL:
        block_out_channels = (320, 640, 1280)
        layers_per_block = 2

    assert ht.unet_ldm_name("down_blocks.1.attentions.0.transformer_blocks.1.attn1", XL()) == \
        "input_blocks.4.1.transformer_blocks.1.attn1"
    assert ht.unet_ldm_name("up_blocks.0.attentions.2.transformer_blocks.9.attn1", XL()) == \
        "output_blocks.2.1.transformer_blocks.9.attn1"
    assert ht.unet_ldm_name("up_blocks.1.attentions.0.transformer_blocks.0.attn1", XL()) == \
        "output_blocks.3.1.transformer_blocks.0.attn1"


def test_real_sd15_unet_hooks_a1111s_layers_at_their_depths():
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(  # SD1.5's layout with tiny widths
        block_out_channels=(8, 8, 8, 8), layers_per_block=2, cross_attention_dim=8, attention_head_dim=2,
        norm_num_groups=4, sample_size=8)
    with ht.Hypertile() as tiler:
        tiler.configure(unet, 512, 512, enable=True, tile_size_max=256, swap_size=3, max_depth=1,
                        name_of=lambda n: ht.unet_ldm_name(n, unet.config))
        layers = tiler.layers(unet)
        by_depth = {d: sorted(n for n, p in layers.items() if p.depth == d) for d in range(4)}
        assert by_depth[0] == sorted([
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1",
            "down_blocks.0.attentions.1.transformer_blocks.0.attn1",
            *(f"up_blocks.3.attentions.{j}.transformer_blocks.0.attn1" for j in range(3))])
        assert len(by_depth[1]) == 5 and len(by_depth[2]) == 5
        assert by_depth[3] == ["mid_block.attentions.0.transformer_blocks.0.attn1"]
        assert [p.enabled for p in layers.values()].count(True) == 10  # max depth 1
        assert all(p.tile_size == 256 and p.swap_size == 3 for p in layers.values())
        assert all("forward" in unet.get_submodule(n).__dict__ for n in layers)
    assert not any("forward" in m.__dict__ for m in unet.modules())  # restored


def test_scope_restores_forwards_on_error_and_leaves_an_unenabled_model_alone():
    vae_like = torch.nn.Module()
    vae_like.decoder = torch.nn.Module()
    vae_like.decoder.mid_block = torch.nn.Module()
    vae_like.decoder.mid_block.attentions = torch.nn.ModuleList([torch.nn.Identity()])
    attn = vae_like.decoder.mid_block.attentions[0]
    tiler = ht.Hypertile()
    tiler.configure(vae_like, 256, 256, enable=False)
    assert tiler.layers(vae_like) == {} and "forward" not in attn.__dict__
    with pytest.raises(RuntimeError):
        with tiler:
            tiler.configure(vae_like, 256, 256, enable=True, tile_size_max=128, swap_size=1)
            assert list(tiler.layers(vae_like)) == ["decoder.mid_block.attentions.0"]
            out = attn(torch.ones(1, 2, 32, 32))  # split 2x2 and put back
            assert torch.equal(out, torch.ones(1, 2, 32, 32))
            raise RuntimeError("boom")
    assert "forward" not in attn.__dict__


def test_pasted_infotext_keys_become_the_options():
    assert infotext_settings({"Hypertile U-Net": "True", "Hypertile U-Net max tile size": "128",
                              "Hypertile VAE swap size": "1", "Hypertile U-Net second pass": "True"}) == {
        "hypertile_enable_unet": "True", "hypertile_max_tile_unet": "128", "hypertile_swap_size_vae": "1",
        "hypertile_enable_unet_secondpass": "True"}


# -- the script over the API ------------------------------------------------------------------------------------------

BODY = {"prompt": "a cat", "steps": 1, "width": 256, "height": 256, "seed": 5, "sampler_name": "Euler"}
DEFAULTS = {"hypertile_enable_unet": False, "hypertile_enable_unet_secondpass": False,
            "hypertile_max_depth_unet": 3, "hypertile_max_tile_unet": 256, "hypertile_swap_size_unet": 3,
            "hypertile_enable_vae": False, "hypertile_max_depth_vae": 3, "hypertile_max_tile_vae": 128,
            "hypertile_swap_size_vae": 3}


@pytest.fixture(scope="module")
def client(tmp_path_factory, models_root):
    # the data_dir fixture's layout, once for the module (one model load for all the API tests)
    root, _ = models_root
    data = tmp_path_factory.mktemp("hypertile")
    (data / "models").mkdir()
    (data / "models" / "Stable-diffusion").symlink_to(root / "models" / "Stable-diffusion", target_is_directory=True)
    config = parse(["--nowebui", "--data-dir", str(data), "--skip-load-model-at-start"])
    with TestClient(build_app(config)) as c:
        yield c


def _run(client, **kw):
    r = client.post("/sdapi/v1/txt2img", json={**BODY, **kw})
    assert r.status_code == 200, r.text
    body = r.json()
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["images"][0]))).convert("RGB"))
    return image, json.loads(body["info"])["infotexts"][0]


def _no_wrapped_forwards(client):
    comp = client.app.state.webui.engine.current_model()
    return not any("forward" in m.__dict__ for part in (comp.unet, comp.vae) for m in part.modules())


def test_options_have_a1111s_keys_and_defaults(client):
    opts = client.get("/sdapi/v1/options").json()
    assert {k: opts[k] for k in DEFAULTS} == DEFAULTS
    assert opts["hypertile_explanation"].startswith("<a href='https://github.com/tfernd/HyperTile'>Hypertile</a>")


def test_listed_as_a1111_names_it_and_accepted_in_alwayson_scripts(client):
    scripts = client.get("/sdapi/v1/scripts").json()
    assert "Hypertile" in scripts["txt2img"] and "Hypertile" in scripts["img2img"]
    info = [s for s in client.get("/sdapi/v1/script-info").json() if s["name"] == "Hypertile"]
    assert [(s["is_alwayson"], s["is_img2img"], s["args"]) for s in info] == [(True, False, []), (True, True, [])]
    r = client.post("/sdapi/v1/txt2img", json={**BODY, "width": 64, "height": 64,
                                                "alwayson_scripts": {"Hypertile": {"args": []}}})
    assert r.status_code == 200, r.text


def test_off_by_default_on_changes_the_image_and_is_undone(client):
    before, text = _run(client)
    assert "Hypertile" not in text
    # disabled explicitly: the same bytes as not mentioning it
    same, _ = _run(client, override_settings={"hypertile_enable_unet": False, "hypertile_enable_vae": False})
    assert same.tobytes() == before.tobytes()
    # the UNet tiled: 256x256 with max tile 128 -> 16-latent tiles on the 32x32 map of depth 0; swap size 1 always
    # takes the largest tile count (2 x 2)
    tiled = {"hypertile_enable_unet": True, "hypertile_max_tile_unet": 128, "hypertile_swap_size_unet": 1}
    on, text = _run(client, override_settings=tiled)
    assert on.tobytes() != before.tobytes()
    assert ("Hypertile U-Net: True, Hypertile U-Net max tile size: 128, Hypertile U-Net swap size: 1, "
            "Version") in text  # the max depth is at its default: left out, as A1111
    assert _no_wrapped_forwards(client)
    again, _ = _run(client)
    assert again.tobytes() == before.tobytes()
    on2, _ = _run(client, override_settings=tiled)
    assert on2.tobytes() == on.tobytes()


def test_the_swap_is_drawn_from_a1111s_rng_seeded_with_the_first_seed(client):
    # swap size 3 on a 32x32 map with 16-latent tiles: counts [2, 1], one randint(0, 1) per side, from
    # random.Random(all_seeds[0]); the tiny SD1.5 UNet has one depth-0 layer and it is called once (1 step)
    def draws(seed):
        rng = random.Random(seed)
        return [2, 1][rng.randint(0, 1)], [2, 1][rng.randint(0, 1)]

    swap3 = {"hypertile_enable_unet": True, "hypertile_max_tile_unet": 128}
    assert draws(5) == (1, 1)  # seed 5: no tiling at all, so the image is the untiled one
    assert _run(client, override_settings=swap3)[0].tobytes() == _run(client)[0].tobytes()
    seed = next(s for s in range(6, 100) if draws(s) != (1, 1))
    assert _run(client, seed=seed, override_settings=swap3)[0].tobytes() != _run(client, seed=seed)[0].tobytes()


def test_vae_tiling_and_its_infotext(client):
    before, _ = _run(client)
    on, text = _run(client, override_settings={"hypertile_enable_vae": True, "hypertile_swap_size_vae": 1})
    assert "Hypertile VAE: True, Hypertile VAE swap size: 1" in text and "Hypertile U-Net" not in text
    assert on.tobytes() != before.tobytes()
    # "minimal change in the generated picture" (A1111's note): same overall image
    assert np.abs(on.astype(int) - before.astype(int)).mean() < 40
    assert _no_wrapped_forwards(client)
    assert _run(client)[0].tobytes() == before.tobytes()


def test_second_pass_only(client):
    hires = {"enable_hr": True, "hr_scale": 2, "denoising_strength": 0.5, "width": 128, "height": 128}
    before, _ = _run(client, **hires)
    on, text = _run(client, **hires, override_settings={"hypertile_enable_unet_secondpass": True,
                                                        "hypertile_max_tile_unet": 128,
                                                        "hypertile_swap_size_unet": 1})
    # the first pass (128x128) is too small to tile; the 256x256 second pass is tiled
    assert "Hypertile U-Net second pass: True" in text and "Hypertile U-Net max tile size: 128" in text
    assert "Hypertile U-Net: True" not in text
    assert on.tobytes() != before.tobytes()
    assert _no_wrapped_forwards(client)


def test_pasted_infotext_turns_it_on(client):
    # A1111 1.10: the options have infotext names, so an infotext pasted through the API's "infotext" sets them
    tiled = {"hypertile_enable_unet": True, "hypertile_max_tile_unet": 128, "hypertile_swap_size_unet": 1}
    on, _ = _run(client, override_settings=tiled)
    pasted, text = _run(client, infotext="a cat\nSteps: 1, Seed: 5, Size: 256x256, Hypertile U-Net: True, "
                                         "Hypertile U-Net max tile size: 128, Hypertile U-Net swap size: 1")
    assert "Hypertile U-Net: True" in text
    assert pasted.tobytes() == on.tobytes()
