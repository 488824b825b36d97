"""--medvram, --medvram-sdxl and --lowvram on CPU: the offload hooks bring each part in when it runs (counted, in
order, at each stage of a generation), one part at a time, and the pictures are the default path's, byte for byte."""

from __future__ import annotations

import os

import numpy as np
import pytest

from webui.config import parse
from webui.core.models import offload
from webui.core.types import GenerationRequest, HiresOptions
from webui.state import build_state


def _state(tmp_path, models_root, *flags):
    root, _ = models_root
    d = tmp_path / ("data" + "".join(flags))
    (d / "models").mkdir(parents=True)
    os.symlink(root / "models" / "Stable-diffusion", d / "models" / "Stable-diffusion")
    return build_state(parse(["--nowebui", "--data-dir", str(d), *flags]), create_demo=False)


def _gen(state, **kw):
    base = dict(prompt="a cat", steps=2, width=64, height=64, seed=5, sampler_name="Euler a", checkpoint="tiny-sd15")
    base.update(kw)
    return state.engine.generate(GenerationRequest(**base))


def _bytes(res):
    return [np.asarray(im).tobytes() for im in res.images]


@pytest.fixture(scope="module")
def plain(tmp_path_factory, models_root):
    return _state(tmp_path_factory.mktemp("plain"), models_root)


def _watch(comp, residency):
    """Record, each time a part's forward has run, which part the residency held: it must be that very part."""
    seen = []
    hooks = []
    parts = [(n, getattr(comp, n)) for n in ("text_encoder", "unet") if getattr(comp, n) is not None]
    for name, m in parts + [("vae", comp.vae.decoder)]:
        hooks.append(m.register_forward_hook(
            lambda mod, args, out, name=name: seen.append((name, getattr(residency.current, offload.MARK, None)))))
    return seen, hooks


def test_medvram_one_part_at_a_time_same_pixels(tmp_path, models_root, plain):
    st = _state(tmp_path, models_root, "--medvram")
    comp = st.engine.load(st.engine.resolve_checkpoint("tiny-sd15"))
    res = st.engine.models.residency
    assert offload.mode_for(st.plan, comp) == "medvram"
    assert res.current is None  # after load every part is off the execution device (A1111 setup_for_low_vram)
    seen, hooks = _watch(comp, res)
    try:
        out = _gen(st)
    finally:
        for h in hooks:
            h.remove()
    assert _bytes(out) == _bytes(_gen(plain))
    # each stage ran with its own part resident: text encoder (prompt, negative), UNet (each step), VAE
    assert [name for name, _ in seen] == ["text_encoder", "text_encoder", "unet", "unet", "vae"]
    assert all(name == holder for name, holder in seen)
    assert res.trace == ["text_encoder", "unet", "vae"]
    assert dict(res.loads) == {"text_encoder": 1, "unet": 1, "vae": 1}
    out2 = _gen(st, n_iter=2)  # next job, two batches (the second reuses the cached conditioning)
    assert res.trace[3:] == ["text_encoder", "unet", "vae", "unet", "vae"]
    assert len(out2.images) == 3


def test_lowvram_streams_unet_blocks_same_pixels(tmp_path, models_root, plain):
    st = _state(tmp_path, models_root, "--lowvram")
    comp = st.engine.load(st.engine.resolve_checkpoint("tiny-sd15"))
    res = st.engine.models.residency
    out = _gen(st, steps=3)
    assert _bytes(out) == _bytes(_gen(plain, steps=3))
    blocks = [u for u in res.loads if u.startswith("unet.")]
    expected = {"unet.time_embedding"} | {
        f"unet.{group}.{i}.{part}.{j}"
        for group in ("down_blocks", "up_blocks") for i, block in enumerate(getattr(comp.unet, group))
        for part, child in block.named_children() for j in range(len(child))
    } | {f"unet.mid_block.{part}.{j}" for part, child in comp.unet.mid_block.named_children()
         for j in range(len(child))}
    assert set(blocks) == expected
    assert all(res.loads[b] == 3 for b in blocks)  # every block brought in once per step (cond+uncond batched)
    assert res.trace[0] == "text_encoder" and res.trace[-1] == "vae" and "unet" not in res.loads
    # the UNet's small rest stays put; only the blocks move
    assert getattr(comp.unet.conv_in, offload.MARK, None) is None


def test_medvram_sdxl_only_for_sdxl(tmp_path, models_root, plain):
    st = _state(tmp_path, models_root, "--medvram-sdxl")
    res = st.engine.models.residency
    out = _gen(st)
    assert not res.trace  # SD1.5: no offloading
    assert _bytes(out) == _bytes(_gen(plain))
    xl = _gen(st, checkpoint="tiny-sdxl")
    assert res.trace == ["text_encoders", "unet", "vae"]  # SDXL's two encoders move as one part (A1111)
    assert _bytes(xl) == _bytes(_gen(plain, checkpoint="tiny-sdxl"))


def test_medvram_img2img_hires_and_model_switch(tmp_path, models_root, plain):
    import io

    from PIL import Image

    st = _state(tmp_path, models_root, "--medvram")
    res = st.engine.models.residency
    hires = HiresOptions(scale=1.5, upscaler="Latent", second_pass_steps=1)
    assert _bytes(_gen(st, hires=hires, denoising_strength=0.5)) == _bytes(_gen(plain, hires=hires,
                                                                              denoising_strength=0.5))
    # latent hires: the hires conditioning, no decode between the passes
    assert res.trace == ["text_encoder", "unet", "text_encoder", "unet", "vae"]
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 90, 200)).save(buf, format="PNG")
    kw = dict(mode="img2img", init_images=(buf.getvalue(),), denoising_strength=0.6)
    res.release(res.current)  # the VAE of the last decode off the device: the encode must bring it back
    before = len(res.trace)
    assert _bytes(_gen(st, **kw)) == _bytes(_gen(plain, **kw))
    assert res.trace[before:] == ["vae", "text_encoder", "unet", "vae"]  # encode, prompts, sampling, decode
    # another checkpoint: the first one's hooks are removed when it leaves the cache
    first = st.engine.current_model()
    _gen(st, checkpoint="tiny-sdxl")
    assert not any(hasattr(m, "_hf_hook") for part in first.modules() for m in part.modules())
    assert all(res.current is not m for m in first.modules())


def test_always_batch_cond_uncond_does_nothing_as_in_a1111():
    # A1111 1.10's --always-batch-cond-uncond: "does not do anything" (batch_cond_uncond is an option now)
    assert parse(["--always-batch-cond-uncond"]).extra("always_batch_cond_uncond") is True


def test_interrogate_frees_the_device_under_medvram(tmp_path, models_root):
    """A1111 interrogate: lowvram.send_everything_to_cpu() first, so the interrogator has the device's memory."""
    from PIL import Image

    from tests.fixtures.deepbooru import write_deepbooru_model

    st = _state(tmp_path, models_root, "--medvram")
    _gen(st)
    res = st.engine.models.residency
    assert res.current is not None  # the VAE stayed on the device after the decode
    write_deepbooru_model(str(tmp_path / "data--medvram"), ["a", "b"], scores=[0.9, 0.1])
    assert st.interrogators.interrogate(Image.new("RGB", (16, 16)), "deepdanbooru") == "a"
    assert res.current is None
    assert _state(tmp_path / "plain", models_root).interrogators.free_device is None
