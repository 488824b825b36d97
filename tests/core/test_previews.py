"""Live previews by show_progress_type: Full, Approx NN, Approx cheap, TAESD -- weight files in A1111's layouts
(written here with random or chosen weights), the fallback to Approx cheap with one log line, and the wiring from a
real generation to /sdapi/v1/progress's current_image."""

from __future__ import annotations

import base64
import io
import logging
import os

import numpy as np
import pytest
import torch
from torch import nn

from webui.core.generation.previews import (
    PreviewDecoder,
    VAEApprox,
    cheap_approximation,
    taesd_decoder_state_dict,
)
from webui.core.queue import ProgressTracker

# -- A1111's TAESD decoder as madebyollin/A1111 build it (modules/sd_vae_taesd.py), to write taesd_decoder.pth in
#    its own nn.Sequential layout and to compute the expected output independently of diffusers --------------------

def _conv(n_in, n_out, **kw):
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kw)


class _Clamp(nn.Module):
    def forward(self, x):
        return torch.tanh(x / 3) * 3


class _Block(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.conv = nn.Sequential(_conv(n_in, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x):
        return self.fuse(self.conv(x) + self.skip(x))


def _a1111_taesd_decoder():
    return nn.Sequential(
        _Clamp(), _conv(4, 64), nn.ReLU(),
        _Block(64, 64), _Block(64, 64), _Block(64, 64), nn.Upsample(scale_factor=2), _conv(64, 64, bias=False),
        _Block(64, 64), _Block(64, 64), _Block(64, 64), nn.Upsample(scale_factor=2), _conv(64, 64, bias=False),
        _Block(64, 64), _Block(64, 64), _Block(64, 64), nn.Upsample(scale_factor=2), _conv(64, 64, bias=False),
        _Block(64, 64), _conv(64, 3),
    )


def _write_taesd(path, seed=0):
    torch.manual_seed(seed)
    ref = _a1111_taesd_decoder().eval()
    torch.save(ref.state_dict(), path)
    return ref


def _write_approx_nn(path, rgb_bias=(1.0, 0.5, -1.0)):
    """Zero weights, conv8's bias chosen: every output pixel is leaky_relu(bias) -- a value known by arithmetic."""
    model = VAEApprox()
    sd = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    sd["conv8.bias"] = torch.tensor(rgb_bias)
    torch.save(sd, path)


def _options(**over):
    base = {"live_previews_enable": True, "show_progress_every_n_steps": 1, "show_progress_grid": True, "n_rows": -1,
            "grid_prevent_empty_spots": False, "show_progress_type": "Approx cheap"}
    base.update(over)
    return base.__getitem__


@pytest.fixture
def models_dir(tmp_path):
    (tmp_path / "VAE-approx").mkdir()
    return tmp_path


def test_approx_nn_reads_model_pt_and_is_twice_the_latent_size(models_dir):
    _write_approx_nn(models_dir / "VAE-approx" / "model.pt")
    t = ProgressTracker(options=_options(show_progress_type="Approx NN"),
                        preview_decoder=PreviewDecoder(models_dir=str(models_dir)))
    t.step(1, 2, torch.randn(1, 4, 5, 7))
    image = t.current_image
    assert image.size == (14, 10)  # A1111's VAEApprox: x2 upsample, pad 11, 22 pixels taken by the convolutions
    # leaky_relu((1, 0.5, -1)) = (1, 0.5, -0.1); * 0.5 + 0.5 -> (1, 0.75, 0.45); * 255 truncated
    assert image.getpixel((3, 4)) == (255, 191, 114)


def test_approx_nn_sdxl_reads_its_own_file(models_dir, caplog):
    _write_approx_nn(models_dir / "VAE-approx" / "model.pt", rgb_bias=(-1.0, -1.0, -1.0))
    _write_approx_nn(models_dir / "VAE-approx" / "vaeapprox-sdxl.pt", rgb_bias=(0.0, 0.0, 0.0))
    dec = PreviewDecoder(models_dir=str(models_dir))
    sd = dec.images(torch.zeros(1, 4, 2, 2), "Approx NN", sdxl=False)[0]
    xl = dec.images(torch.zeros(1, 4, 2, 2), "Approx NN", sdxl=True)[0]
    assert sd.getpixel((0, 0)) == (114, 114, 114) and xl.getpixel((0, 0)) == (127, 127, 127)
    assert not caplog.records


def test_taesd_matches_a1111_decoder_on_the_same_file(models_dir):
    ref = _write_taesd(models_dir / "VAE-approx" / "taesd_decoder.pth")
    latent = torch.randn(2, 4, 3, 4, generator=torch.Generator().manual_seed(1))
    dec = PreviewDecoder(models_dir=str(models_dir))
    got = dec.decode(latent, "TAESD")
    with torch.no_grad():
        want = ref(latent) * 2 - 1  # A1111 samples_to_images_tensor, approximation 3
    assert got.shape == (2, 3, 24, 32)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert [im.size for im in dec.images(latent, "TAESD")] == [(32, 24), (32, 24)]


def test_taesd_also_found_in_a1111s_vae_taesd_folder_and_sdxl_file_chosen(models_dir):
    (models_dir / "VAE-taesd").mkdir()
    ref = _write_taesd(models_dir / "VAE-taesd" / "taesdxl_decoder.pth", seed=5)
    latent = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(2))
    dec = PreviewDecoder(models_dir=str(models_dir))
    with torch.no_grad():
        want = ref(latent) * 2 - 1
    torch.testing.assert_close(dec.decode(latent, "TAESD", sdxl=True), want, rtol=1e-5, atol=1e-5)


def test_taesd_key_mapping_accepts_diffusers_layout():
    sd = {"1.weight": 1, "3.conv.0.bias": 2, "decoder.layers.4.skip.weight": 3, "layers.0.bias": 4}
    assert taesd_decoder_state_dict(sd) == {"layers.0.weight": 1, "layers.2.conv.0.bias": 2,
                                            "layers.4.skip.weight": 3, "layers.0.bias": 4}
    with pytest.raises(ValueError):
        taesd_decoder_state_dict({"encoder.weight": 1})


@pytest.mark.parametrize("method", ["Approx NN", "TAESD"])
def test_missing_file_falls_back_to_cheap_with_one_log_line(models_dir, caplog, method):
    dec = PreviewDecoder(models_dir=str(models_dir))
    latent = torch.randn(1, 4, 3, 3)
    with caplog.at_level(logging.WARNING, logger="webui.core.generation.previews"):
        for _ in range(3):
            got = dec.decode(latent, method)
    torch.testing.assert_close(got, cheap_approximation(latent))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    name = "model.pt" if method == "Approx NN" else "taesd_decoder.pth"
    assert method in lines[0] and name in lines[0] and "VAE-approx" in lines[0] and "Approx cheap" in lines[0]


def test_unreadable_file_falls_back_naming_it(models_dir, caplog):
    (models_dir / "VAE-approx" / "taesd_decoder.pth").write_bytes(b"not a checkpoint")
    torch.save({"conv1.weight": torch.zeros(1)}, models_dir / "VAE-approx" / "model.pt")  # wrong layout
    dec = PreviewDecoder(models_dir=str(models_dir))
    latent = torch.randn(1, 4, 2, 2)
    for method in ("TAESD", "Approx NN", "Approx NN"):
        torch.testing.assert_close(dec.decode(latent, method), cheap_approximation(latent))
    lines = [r.getMessage() for r in caplog.records if r.name == "webui.core.generation.previews"]
    assert len(lines) == 2
    assert "taesd_decoder.pth" in lines[0] and "could not be loaded" in lines[0]
    assert "model.pt" in lines[1] and "could not be loaded" in lines[1]


def test_full_uses_the_models_vae_and_no_model_falls_back(caplog):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1).eval()

    class Comp:
        pass

    comp = Comp()
    comp.vae = vae
    latent = torch.randn(2, 4, 3, 3)
    dec = PreviewDecoder(model=lambda: comp)
    got = dec.decode(latent, "Full")
    with torch.no_grad():
        want = vae.decode(latent / vae.config.scaling_factor).sample
    torch.testing.assert_close(got, want)
    assert PreviewDecoder().decode(latent, "Full").shape == (2, 3, 3, 3)  # no model: cheap, latent size
    assert any("Full" in r.getMessage() for r in caplog.records)


def test_full_becomes_approx_nn_under_medvram_and_lowvram():
    """A1111 single_sample_to_image: a "Full" preview would move the offloaded VAE in and out at every preview."""
    from webui.core.devices import plan_devices

    class Comp:
        is_sdxl = False

    comp = Comp()
    for flags, expected in (({}, "Full"), ({"medvram": True}, "Approx NN"), ({"lowvram": True}, "Approx NN")):
        dec = PreviewDecoder(model=lambda: comp, plan=plan_devices(use_cpu=["all"], **flags))
        assert dec.method_for("Full") == expected
        assert dec.method_for("Full", allow_lowvram_full=True) == "Full"
        assert dec.method_for("TAESD") == "TAESD"
    # --medvram-sdxl: SDXL models only
    dec = PreviewDecoder(model=lambda: comp, plan=plan_devices(use_cpu=["all"], medvram_sdxl=True))
    assert dec.method_for("Full") == "Full"
    comp.is_sdxl = True
    assert dec.method_for("Full") == "Approx NN"
    assert PreviewDecoder(model=lambda: None, plan=plan_devices(lowvram=True)).method_for("Full") == "Full"


# -- end to end: a real generation on the tiny checkpoints, previews read back through /sdapi/v1/progress ----------

@pytest.fixture
def app_state(data_dir):
    from webui.app import build_app
    from webui.config import parse

    app = build_app(parse(["--nowebui", "--api", "--data-dir", str(data_dir), "--skip-load-model-at-start"]))
    return app, app.state.webui


def _run(state, method, **opts):
    from webui.core.types import GenerationRequest

    for key, value in {"show_progress_type": method, "show_progress_every_n_steps": 1, **opts}.items():
        state.settings.set(key, value)
    req = GenerationRequest(prompt="a cat", steps=3, width=64, height=64, seed=7, sampler_name="Euler")
    state.queue.start()
    try:
        result = state.queue.submit("txt2img", lambda progress: state.engine.generate(req, progress)).result(120)
    finally:
        state.queue.stop()
    return result, state.queue.progress


@pytest.mark.parametrize("method,size", [("Approx cheap", (8, 8)), ("Approx NN", (16, 16)), ("TAESD", (64, 64))])
def test_generation_previews_by_method(app_state, method, size):
    app, state = app_state
    approx = state.config.models_dir + "/VAE-approx"
    os.makedirs(approx, exist_ok=True)
    _write_approx_nn(approx + "/model.pt")
    _write_taesd(approx + "/taesd_decoder.pth")
    _, tracker = _run(state, method)
    assert tracker.current_image.size == size
    assert tracker.id_live_preview == 3  # every step


def test_full_preview_of_the_last_step_is_the_image_and_progress_serves_it(app_state):
    from fastapi.testclient import TestClient

    app, state = app_state
    result, tracker = _run(state, "Full")
    # Euler's last step lands on sigma 0: its denoised latent is the sample, so the Full preview is the image
    assert np.asarray(tracker.current_image).tobytes() == np.asarray(result.images[0]).tobytes()
    with TestClient(app) as client:
        tracker.job_count = 1  # as while the job runs: /progress shows current_image only then (A1111)
        body = client.get("/sdapi/v1/progress").json()
    from PIL import Image

    shown = Image.open(io.BytesIO(base64.b64decode(body["current_image"])))
    assert np.asarray(shown.convert("RGB")).tobytes() == np.asarray(result.images[0]).tobytes()
