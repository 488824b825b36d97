"""The single-file loader on tiny A1111-layout checkpoints: every architecture, weights intact, safe pickles."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from webui.core.devices import plan_devices
from webui.core.models.loader import (
    SD1,
    SD2,
    SDXL,
    SDXL_REFINER,
    CheckpointLoadError,
    UnsafeCheckpointError,
    load_components,
    read_state_dict,
)
from webui.core.types import CheckpointInfo
from tests.fixtures.checkpoints import write_malicious_checkpoint, write_pickle_checkpoint


def _info(path, config=None):
    return CheckpointInfo(filename=str(path), name=os.path.basename(path), model_name="m", config=config)


@pytest.mark.parametrize("arch", ["SD1", "SD2", "SDXL"])
def test_each_architecture_loads(models_root, tokenizer_dir, arch):
    _, paths = models_root
    yaml = os.path.splitext(paths[arch])[0] + ".yaml"
    comp = load_components(_info(paths[arch], yaml if os.path.exists(yaml) else None), plan_devices(), tokenizer_dir)
    assert comp.arch == {"SD1": SD1, "SD2": SD2, "SDXL": SDXL}[arch]
    assert comp.vae_scale_factor == 8
    assert comp.unet.config.in_channels == 4
    if arch == "SDXL":
        assert comp.text_encoder is not None and comp.text_encoder_2 is not None
        assert comp.unet.config.addition_embed_type == "text_time"
        assert comp.unet.config.cross_attention_dim == 64  # CLIP-L width + bigG width
    # SD2's .yaml says parameterization "v", as A1111's v2-inference-v.yaml does
    assert comp.prediction_type == ("v_prediction" if arch == "SD2" else "epsilon")


def test_refiner_detected(tmp_path, tokenizer_dir):
    from webui.core.models.demo_model import write_tiny_checkpoint

    p = write_tiny_checkpoint(str(tmp_path / "refiner.safetensors"), "SDXL-refiner")
    comp = load_components(_info(p), plan_devices(), tokenizer_dir)
    assert comp.arch == SDXL_REFINER and comp.text_encoder is None and comp.text_encoder_2 is not None


def test_weights_survive_the_round_trip(tokenizer_dir, tmp_path):
    """LDM file written from diffusers modules -> loader -> the very same tensors (UNet, VAE, text encoder)."""
    from webui.core.models import demo_model

    torch.manual_seed(7)
    unet, _ = demo_model._tiny_unet("SD1", 32)
    path = demo_model.write_tiny_checkpoint(str(tmp_path / "rt.safetensors"), "SD1", seed=7)
    comp = load_components(_info(path), plan_devices(), tokenizer_dir)
    sd = read_state_dict(path)
    # conv_in of the UNet and the first VAE conv are stored under their LDM names
    assert torch.equal(comp.unet.conv_in.weight, sd["model.diffusion_model.input_blocks.0.0.weight"])
    assert torch.equal(comp.vae.encoder.conv_in.weight, sd["first_stage_model.encoder.conv_in.weight"])
    emb = sd["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"]
    assert torch.equal(comp.text_encoder.get_input_embeddings().weight, emb)
    # every UNet tensor of the file reached the model (same count, same total)
    ldm_unet = [v for k, v in sd.items() if k.startswith("model.diffusion_model.")]
    params = list(comp.unet.state_dict().values())
    assert len(ldm_unet) == len(params)
    assert torch.isclose(sum(v.double().sum() for v in ldm_unet), sum(p.double().sum() for p in params))


def test_type_comes_from_weights_not_the_file_name(models_root, tmp_path, tokenizer_dir):
    _, paths = models_root
    misleading = tmp_path / "sdxl_base_1.0.safetensors"
    shutil.copy(paths["SD1"], misleading)
    assert load_components(_info(misleading), plan_devices(), tokenizer_dir).arch == SD1


def test_pickled_ckpt_loads_through_the_safe_loader(tmp_path, tokenizer_dir):
    p = write_pickle_checkpoint(str(tmp_path / "old.ckpt"))
    assert load_components(_info(p), plan_devices(), tokenizer_dir).arch == SD1


def test_malicious_ckpt_is_refused(tmp_path):
    if os.path.exists("/tmp/webui-test-pwned"):
        os.unlink("/tmp/webui-test-pwned")
    p = write_malicious_checkpoint(str(tmp_path / "evil.ckpt"))
    with pytest.raises(UnsafeCheckpointError) as e:
        read_state_dict(p)
    assert "evil.ckpt" in str(e.value)
    assert not os.path.exists("/tmp/webui-test-pwned")


def test_not_a_checkpoint(tmp_path, tokenizer_dir):
    from safetensors.torch import save_file

    p = tmp_path / "lora.safetensors"
    save_file({"lora_unet_x.lora_up.weight": torch.zeros(2, 2)}, str(p))
    with pytest.raises(CheckpointLoadError, match="no Stable Diffusion UNet"):
        load_components(_info(p), plan_devices(), tokenizer_dir)


def test_truncated_file_is_a_clear_error(tmp_path):
    p = tmp_path / "broken.safetensors"
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(CheckpointLoadError, match="broken.safetensors"):
        read_state_dict(str(p))


def test_tokenizer_matches_clip_vocabulary(tokenizer_dir):
    from webui.core.models.tokenizers import clip_tokenizer

    tok = clip_tokenizer(tokenizer_dir)
    assert len(tok) == 49408
    assert tok.bos_token_id == 49406 and tok.eos_token_id == 49407
    # "a photo of a cat" in OpenAI CLIP's vocabulary
    assert tok("a photo of a cat", add_special_tokens=False)["input_ids"] == [320, 1125, 539, 320, 2368]
    assert tok.get_vocab()[",</w>"] == 267
