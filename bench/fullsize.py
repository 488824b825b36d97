"""Deterministic full-size random-weight SD1.5 and SDXL checkpoints in A1111's single-file (LDM) layout.

    .venv/bin/python bench/fullsize.py SD1 OUT.safetensors [--seed 0] [--dtype fp16]
    .venv/bin/python bench/fullsize.py SDXL OUT.safetensors

The modules are the real architectures at their real sizes (SD1.5: 860M-parameter UNet, 320/640/1280/1280 channels,
CLIP ViT-L/14 text encoder, the 4-level VAE; SDXL base: 2.6G-parameter UNet with 1/2/10 transformer depths and
text-time conditioning, CLIP-L + OpenCLIP bigG, the same VAE), built on the meta device so that no memory is spent on
an initialisation thrown away; each tensor is then filled from a generator seeded by (seed, key): weights
N(0, 1/fan_in), biases 0, norm scales 1 -- so the activations stay finite over a few steps in fp16. The diffusers
names are written in the LDM layout with webui/core/models/ldm_layout.py, so these files load through exactly the
code path a real downloaded checkpoint takes. Nothing is downloaded. Same arguments, same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def sd15_configs():
    unet = dict(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=[320, 640, 1280, 1280],
        down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        cross_attention_dim=768, attention_head_dim=8,
    )
    clips = [("clip_l", dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                             hidden_act="quick_gelu", projection_dim=768), False)]
    return unet, _vae_config(512), clips


def sdxl_configs():
    unet = dict(
        sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=[320, 640, 1280],
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        transformer_layers_per_block=[1, 2, 10], attention_head_dim=[5, 10, 20], cross_attention_dim=2048,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )
    clips = [
        ("clip_l", dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                        hidden_act="quick_gelu", projection_dim=768), False),
        ("clip_g", dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                        hidden_act="gelu", projection_dim=1280), True),
    ]
    return unet, _vae_config(1024), clips


def _vae_config(sample_size):
    return dict(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
        block_out_channels=[128, 256, 512, 512], sample_size=sample_size,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    )


def _fill(key: str, shape, seed: int, dtype):
    """Deterministic values for one tensor: a generator seeded by (seed, key)."""
    import torch

    g = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little"))
    leaf = key.rsplit(".", 1)[-1]
    if len(shape) >= 2 and leaf == "weight" or "embedding" in key and leaf == "weight":
        fan_in = 1
        for s in shape[1:]:
            fan_in *= s
        return (torch.randn(shape, generator=g) / max(fan_in, 1) ** 0.5).to(dtype)
    if leaf == "weight":  # norms: scale 1
        return torch.ones(shape, dtype=dtype)
    if key.endswith("position_ids"):
        return torch.arange(shape[-1]).expand(shape).clone()
    if "logit_scale" in key:
        return torch.full(shape, 4.6052, dtype=dtype)
    return torch.zeros(shape, dtype=dtype)


def _random_state_dict(module, seed: int, prefix: str, dtype):
    out = {}
    for key, t in module.state_dict().items():
        out[key] = _fill(prefix + key, tuple(t.shape), seed, dtype)
    return out


def checkpoint_state_dict(arch: str, seed: int = 0, dtype_name: str = "fp16") -> dict:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from webui.core.models import ldm_layout

    dtype = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    unet_cfg, vae_cfg, clips = (sd15_configs if arch == "SD1" else sdxl_configs)()
    sd: dict = {}
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(**vae_cfg)
    sd.update(ldm_layout.unet_to_ldm(_random_state_dict(unet, seed, "unet.", dtype), unet.config))
    sd.update(ldm_layout.vae_to_ldm(_random_state_dict(vae, seed, "vae.", dtype), vae.config))
    del unet, vae
    for name, kw, projection in clips:
        cfg = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                             pad_token_id=1, **kw)
        with torch.device("meta"):
            te = (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)
        te_sd = _random_state_dict(te, seed, name + ".", dtype)
        if arch == "SD1":
            sd.update(ldm_layout.clip_to_ldm(te_sd, ldm_layout.SD1_CLIP_PREFIX))
        elif name == "clip_l":
            sd.update(ldm_layout.clip_to_ldm(te_sd, ldm_layout.SDXL_CLIP_L_PREFIX))
        else:
            sd.update(ldm_layout.openclip_to_ldm(te_sd, ldm_layout.SDXL_CLIP_G_PREFIX))
    return {k: v.contiguous() for k, v in sd.items()}


def write_checkpoint(arch: str, path: str, seed: int = 0, dtype_name: str = "fp16") -> str:
    """Write the checkpoint (once: an existing file with the same arguments in its metadata is kept)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    tag = f"{arch}:{seed}:{dtype_name}"
    if os.path.exists(path):
        try:
            with safe_open(path, "pt") as f:
                if (f.metadata() or {}).get("webui_bench") == tag:
                    return path
        except Exception:
            pass
    sd = checkpoint_state_dict(arch, seed, dtype_name)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    save_file(sd, tmp, metadata={"format": "pt", "webui_bench": tag})
    os.replace(tmp, path)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("arch", choices=["SD1", "SDXL"])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=["fp16", "fp32", "bf16"], default="fp16")
    args = ap.parse_args()
    t = time.perf_counter()
    path = write_checkpoint(args.arch, args.out, args.seed, args.dtype)
    n = 0
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        for k in f.keys():
            shape = f.get_slice(k).get_shape()
            size = 1
            for s in shape:
                size *= s
            n += size
    print(f"{path}: {args.arch}, {n / 1e6:.0f}M parameters, {os.path.getsize(path) / 2**30:.2f} GiB, "
          f"{time.perf_counter() - t:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
