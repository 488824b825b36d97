"""Tiny random-weight checkpoints in A1111's single-file layout.

Used for the demo model written on a first start with no checkpoint (so a new user gets a working server at once)
and by the tests. The files use the original LDM key names, so they load through exactly the code path a real
2 GB checkpoint takes; only the sizes are shrunk (32-channel UNet/VAE, 32-wide text encoders).
"""

from __future__ import annotations

import os

import torch

from webui.core.io.files import atomic_write
from webui.core.models import ldm_layout

DEMO_FILENAME = "demo-random-weights-sd15.safetensors"
DEMO_NOTICE = (
    "Using the built-in DEMO checkpoint: it has RANDOM weights and produces noise, not pictures. "
    "Put a real Stable Diffusion checkpoint (.safetensors) into {folder} and select it in the checkpoint list "
    "(or POST /sdapi/v1/options with sd_model_checkpoint)."
)


def _tiny_clip(hidden=32, layers=2, act="quick_gelu", with_projection=False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=hidden,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg)


def _tiny_vae():
    from diffusers import AutoencoderKL

    cfg = dict(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[32, 32, 32, 32],  # four levels: the latent stays 1/8 of the image, as in SD
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
    )
    return AutoencoderKL(**cfg), cfg


def _tiny_unet(arch: str, context_dim: int, adm_in: int | None = None, time_dim: int = 8, in_channels: int = 4):
    from diffusers import UNet2DConditionModel

    cfg: dict = dict(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=[32, 64],
        layers_per_block=1,
        cross_attention_dim=context_dim,
        norm_num_groups=32,
    )
    if arch == "SD1":
        cfg.update(
            down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
            attention_head_dim=8,
        )
    elif arch == "SD2":
        cfg.update(
            down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
            attention_head_dim=[1, 2],
            use_linear_projection=True,
        )
    else:  # SDXL: no attention at the first level, deeper transformers below, size/crop conditioning
        cfg.update(
            down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
            attention_head_dim=[1, 2],
            use_linear_projection=True,
            transformer_layers_per_block=[1, 2],
            addition_embed_type="text_time",
            addition_time_embed_dim=time_dim,
            projection_class_embeddings_input_dim=adm_in,
        )
    return UNet2DConditionModel(**cfg), cfg


def tiny_checkpoint_state_dict(arch: str = "SD1", seed: int = 0, in_channels: int = 4) -> dict[str, torch.Tensor]:
    """A random state dict in A1111's single-file layout for ``arch`` in SD1, SD2, SDXL, SDXL-refiner.
    ``in_channels`` 9 makes an inpainting model, 8 an instruct-pix2pix one."""
    torch.manual_seed(seed)
    vae, vae_cfg = _tiny_vae()
    sd = ldm_layout.vae_to_ldm(vae.state_dict(), vae_cfg)
    if arch == "SD1":
        unet, unet_cfg = _tiny_unet("SD1", 32, in_channels=in_channels)
        sd.update(ldm_layout.clip_to_ldm(_tiny_clip().state_dict(), ldm_layout.SD1_CLIP_PREFIX))
    elif arch == "SD2":
        unet, unet_cfg = _tiny_unet("SD2", 32, in_channels=in_channels)
        te = _tiny_clip(act="gelu", with_projection=True)
        sd.update(ldm_layout.openclip_to_ldm(te.state_dict(), ldm_layout.SD2_OPENCLIP_PREFIX))
    elif arch == "SDXL":
        unet, unet_cfg = _tiny_unet("SDXL", 32 + 32, adm_in=32 + 6 * 8, time_dim=8, in_channels=in_channels)
        sd.update(ldm_layout.clip_to_ldm(_tiny_clip().state_dict(), ldm_layout.SDXL_CLIP_L_PREFIX))
        te2 = _tiny_clip(act="gelu", with_projection=True)
        sd.update(ldm_layout.openclip_to_ldm(te2.state_dict(), ldm_layout.SDXL_CLIP_G_PREFIX))
    elif arch == "SDXL-refiner":
        unet, unet_cfg = _tiny_unet("SDXL", 32, adm_in=32 + 5 * 8, time_dim=8)
        te2 = _tiny_clip(act="gelu", with_projection=True)
        sd.update(ldm_layout.openclip_to_ldm(te2.state_dict(), ldm_layout.SDXL_REFINER_CLIP_G_PREFIX))
    else:
        raise ValueError(f"unknown architecture {arch!r}; choose SD1, SD2, SDXL or SDXL-refiner")
    sd.update(ldm_layout.unet_to_ldm(unet.state_dict(), unet_cfg))
    return {k: v.detach().contiguous() for k, v in sd.items()}


def write_tiny_checkpoint(path: str, arch: str = "SD1", seed: int = 0, metadata: dict | None = None,
                          in_channels: int = 4) -> str:
    """Write a tiny checkpoint atomically (temp file + rename) and return its path."""
    from safetensors.torch import save

    sd = tiny_checkpoint_state_dict(arch, seed, in_channels)
    return atomic_write(path, save(sd, metadata={"format": "pt", **(metadata or {})}))


def ensure_demo_checkpoint(checkpoints_dir: str) -> str:
    """Create the demo checkpoint in ``checkpoints_dir`` if it is missing; return its path."""
    path = os.path.join(checkpoints_dir, DEMO_FILENAME)
    if not os.path.exists(path):
        write_tiny_checkpoint(path, "SD1", seed=1234, metadata={"webui_demo": "random weights"})
    return path
