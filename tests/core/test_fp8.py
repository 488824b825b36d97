"""FP8 weight storage (A1111 options fp8_storage / cache_fp16_weight) on tiny checkpoints through the real loader:
which weights are stored in float8, that generation works and differs slightly, the infotext keys and their paste,
LoRA on float8 weights (restored bit for bit), and "Disable" keeping the default bytes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from tests.fixtures.networks import SD1_KOHYA_MODULES, write_kohya_lora
from webui.config import parse
from webui.core.io.infotext import parse_generation_parameters
from webui.core.models import fp8
from webui.core.types import GenerationRequest
from webui.state import build_state

F8 = torch.float8_e4m3fn


@pytest.fixture
def state(data_dir):
    return build_state(parse(["--nowebui", "--data-dir", str(data_dir)]), create_demo=False)


def _gen(state, fp8_storage=None, checkpoint="tiny-sd15", **kw):
    base = dict(prompt="a cat", steps=2, width=64, height=64, seed=123, sampler_name="Euler", checkpoint=checkpoint)
    base.update(kw)
    if fp8_storage is not None:
        base["override_settings"] = {"fp8_storage": fp8_storage, **base.get("override_settings", {})}
    return state.engine.generate(GenerationRequest(**base))


def _px(result) -> np.ndarray:
    return np.asarray(result.images[0]).astype(int)


def _layers(module):
    return [m for m in module.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]


def _snapshot(comp) -> dict[str, torch.Tensor]:
    return {f"{i}.{k}": v.detach().clone() for i, m in enumerate(comp.modules()) for k, v in m.state_dict().items()}


def _same_weights(comp, snap) -> bool:
    now = _snapshot(comp)
    return now.keys() == snap.keys() and all(
        now[k].dtype == snap[k].dtype and torch.equal(now[k].view(torch.uint8) if now[k].dtype == F8 else now[k],
                                                      snap[k].view(torch.uint8) if snap[k].dtype == F8 else snap[k])
        for k in snap)


def test_enable_stores_unet_and_text_encoder_layers_in_fp8_and_generates(state):
    base = _gen(state)
    comp = state.engine.current_model()
    assert comp.fp8 == fp8.OFF
    assert all(m.weight.dtype == torch.float32 for m in _layers(comp.unet))

    res = _gen(state, fp8_storage="Enable")
    comp = state.engine.current_model()
    assert comp.fp8.enabled
    for module in (comp.unet, comp.text_encoder):
        layers = _layers(module)
        assert layers and all(m.weight.dtype == F8 for m in layers)
    # norms and the VAE keep their dtype (A1111 casts Linear/Conv of everything but the VAE)
    assert comp.unet.conv_norm_out.weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in comp.vae.parameters())
    assert comp.unet.dtype == torch.float32  # the compute dtype (diffusers reports the layer-wise casting's)
    diff = np.abs(_px(res) - _px(base))
    assert res.images[0].size == (64, 64)
    assert 0 < diff.mean() < 20, diff.mean()  # float8 rounding: a slightly different image, not noise

    # back to Disable: the checkpoint is loaded again from its file, so the default bytes come back exactly
    again = _gen(state)
    assert state.engine.current_model().fp8 == fp8.OFF
    assert np.array_equal(_px(again), _px(base))


def test_enable_for_sdxl_leaves_sd1_alone_and_casts_sdxl(state):
    _gen(state, fp8_storage="Enable for SDXL")
    comp = state.engine.current_model()
    assert not comp.fp8.enabled and all(m.weight.dtype == torch.float32 for m in _layers(comp.unet))
    res = _gen(state, fp8_storage="Enable for SDXL", checkpoint="tiny-sdxl")
    comp = state.engine.current_model()
    assert comp.is_sdxl and comp.fp8.enabled
    for module in (comp.unet, comp.text_encoder, comp.text_encoder_2):
        assert all(m.weight.dtype == F8 for m in _layers(module))
    assert "FP8 weight: Enable for SDXL" in res.infotexts[0]


def test_infotext_keys_written_and_pasted_back(data_dir):
    from fastapi.testclient import TestClient

    from webui.app import build_app
    from webui.core.io import paste

    config = parse(["--nowebui", "--data-dir", str(data_dir), "--skip-load-model-at-start"])
    body = dict(prompt="a cat", steps=2, width=64, height=64, seed=123, sampler_name="Euler")
    with TestClient(build_app(config)) as client:
        plain = client.post("/sdapi/v1/txt2img", json=body).json()
        assert "FP8 weight" not in plain["info"]  # A1111 writes them only when the model is fp8
        res = client.post("/sdapi/v1/txt2img", json={**body, "override_settings": {
            "fp8_storage": "Enable", "cache_fp16_weight": True}}).json()
        text = json.loads(res["info"])["infotexts"][0]
        assert "FP8 weight: Enable, Cache FP16 weight for LoRA: True" in text
        # A1111's api.apply_infotext: the settings an infotext names become override settings
        pasted = client.post("/sdapi/v1/txt2img", json={"infotext": text}).json()
        assert json.loads(pasted["info"])["infotexts"][0] == text
        assert pasted["images"][0] == res["images"][0]
    params = parse_generation_parameters(text)
    settings = paste.infotext_settings(params)
    assert settings["fp8_storage"] == "Enable" and str(settings["cache_fp16_weight"]) == "True"
    # the UI's "Override settings" entries of a paste, and back to the options (A1111 get_override_settings)
    pairs = paste.override_settings_pairs(params, [], lambda key: {"fp8_storage": "Disable"}.get(key))
    assert "FP8 weight: Enable" in pairs and "Cache FP16 weight for LoRA: True" in pairs
    assert paste.override_settings_dict(pairs)["fp8_storage"] == "Enable"
    assert paste.override_settings_dict(pairs)["cache_fp16_weight"] is True
    # an infotext without the key means Disable (A1111's backwards-compatibility default)
    assert parse_generation_parameters(json.loads(plain["info"])["infotexts"][0])["FP8 weight"] == "Disable"


@pytest.mark.parametrize("cache_fp16", [False, True])
def test_lora_on_fp8_weights_changes_the_image_and_restores_bit_for_bit(state, cache_fp16):
    overrides = {"fp8_storage": "Enable", "cache_fp16_weight": cache_fp16}
    base = _gen(state, override_settings=overrides)
    comp = state.engine.current_model()
    assert comp.fp8 == fp8.Fp8State(enabled=True, fp16_cache=cache_fp16)
    layer = comp.unet.get_submodule("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q")
    assert (getattr(layer, "fp16_weight", None) is not None) == cache_fp16
    write_kohya_lora(os.path.join(state.config.lora_dir, "tiny_lora.safetensors"), comp, SD1_KOHYA_MODULES,
                     rank=4, alpha=4.0, seed=5)
    state.loras.refresh()
    snap = _snapshot(comp)
    with_lora = _gen(state, prompt="a cat <lora:tiny_lora:1>", override_settings=overrides)
    assert state.engine.current_model() is comp  # same storage: no reload
    assert np.abs(_px(with_lora) - _px(base)).max() > 0
    assert "Lora hashes" in with_lora.infotexts[0]
    assert _same_weights(comp, snap)  # every float8 byte back
    after = _gen(state, override_settings=overrides)
    assert np.array_equal(_px(after), _px(base))


def test_lora_patch_starts_from_the_fp16_cache(state):
    """With cache_fp16_weight the patched float8 weight is (fp16 copy + delta) rounded once, not (float8 + delta)."""
    from webui.core.networks.lora import NetworkActivation, apply_networks

    _gen(state, override_settings={"fp8_storage": "Enable", "cache_fp16_weight": True})
    comp = state.engine.current_model()
    sd = write_kohya_lora(os.path.join(state.config.lora_dir, "one.safetensors"), comp, SD1_KOHYA_MODULES,
                          rank=4, alpha=4.0, seed=7)
    state.loras.refresh()
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    layer = comp.unet.get_submodule("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q")
    delta = (sd[f"{key}.lora_up.weight"] @ sd[f"{key}.lora_down.weight"]) * (4.0 / 4)
    expected = (layer.fp16_weight.float() + delta).to(F8)
    with apply_networks(comp, [NetworkActivation("one", 1.0, 1.0)], state.loras):
        assert torch.equal(layer.weight.view(torch.uint8), expected.view(torch.uint8))


def test_disable_keeps_default_bytes(state):
    base = _gen(state)
    comp = state.engine.current_model()
    disabled = _gen(state, fp8_storage="Disable")
    assert state.engine.current_model() is comp  # same storage: the loaded model is kept
    assert np.array_equal(_px(disabled), _px(base))
    assert "FP8 weight" not in disabled.infotexts[0]


def test_unsupported_device_logs_once_and_does_not_cast(state, monkeypatch, caplog):
    monkeypatch.setattr(fp8, "unsupported_reason", lambda device: "this torch has no float8_e4m3fn")
    base = _gen(state)
    with caplog.at_level("WARNING"):
        a = _gen(state, fp8_storage="Enable")
        _gen(state, fp8_storage="Enable")
    lines = [r for r in caplog.records if "FP8 weight not applied" in r.getMessage()]
    assert len(lines) == 1 and "no float8_e4m3fn" in lines[0].getMessage()
    assert state.engine.current_model().fp8 == fp8.OFF
    assert np.array_equal(_px(a), _px(base)) and "FP8 weight" not in a.infotexts[0]


def test_unsupported_reason_on_this_machine():
    assert fp8.unsupported_reason(torch.device("cpu")) is None
    assert fp8.unsupported_reason(torch.device("mps")) is not None
    assert fp8.wanted("Enable", False) and fp8.wanted("Enable for SDXL", True)
    assert not fp8.wanted("Enable for SDXL", False) and not fp8.wanted("Disable", True)


def test_xyz_fp8_mode_axis_changes_the_image(data_dir):
    """The X/Y/Z "FP8 mode" axis sets fp8_storage per cell: the Enable cell is the fp8 image, Disable the default."""
    import base64
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from tests.plugins.test_xyz_grid import BODY, _args
    from webui.app import build_app

    config = parse(["--nowebui", "--data-dir", str(data_dir), "--skip-load-model-at-start"])
    with TestClient(build_app(config)) as client:
        r = client.post("/sdapi/v1/txt2img", json={**BODY, "script_name": "x/y/z plot",
                                                   "script_args": _args(("FP8 mode", "Disable, Enable"))})
        assert r.status_code == 200, r.text
        data = r.json()
        cells = [np.asarray(Image.open(io.BytesIO(base64.b64decode(b)))).astype(int) for b in data["images"][1:]]
        infos = data["info"]
        alone = client.post("/sdapi/v1/txt2img", json=BODY).json()
        plain = np.asarray(Image.open(io.BytesIO(base64.b64decode(alone["images"][0])))).astype(int)
    assert len(cells) == 2
    assert np.array_equal(cells[0], plain)
    assert np.abs(cells[1] - plain).max() > 0
    assert "FP8 weight: Enable" in infos
