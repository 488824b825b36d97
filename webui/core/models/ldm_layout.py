"""Diffusers module state dicts -> the original LDM single-file key layout A1111 reads and writes.

Why by hand: diffusers ships only the other direction (``single_file_utils.convert_ldm_*``) inside the package;
its reverse scripts live outside the wheel and hard-code SD1/SDXL block counts. We need the reverse to write
checkpoints in A1111's layout (the embedded demo model, test fixtures, later the checkpoint merger's output), for
any number of UNet levels, so that those files go through exactly the loader a user's 2 GB file goes through.
"""

from __future__ import annotations

import re

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_CLIP_PREFIX = "cond_stage_model.transformer."
SD2_OPENCLIP_PREFIX = "cond_stage_model.model."
SDXL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
SDXL_CLIP_G_PREFIX = "conditioner.embedders.1.model."
SDXL_REFINER_CLIP_G_PREFIX = "conditioner.embedders.0.model."

_RESNET_RENAMES = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
]


def unet_to_ldm(sd: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """UNet2DConditionModel state dict -> ``model.diffusion_model.*`` keys (openaimodel.UNetModel numbering)."""
    levels = len(config["block_out_channels"])
    per_level = config["layers_per_block"]
    prefixes: list[tuple[str, str]] = [("conv_in.", "input_blocks.0.0.")]
    for i in range(levels):
        for j in range(per_level):
            n = 1 + i * (per_level + 1) + j
            prefixes.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{n}.0."))
            prefixes.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{n}.1."))
        if i < levels - 1:
            prefixes.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(i + 1) * (per_level + 1)}.0.op."))
    prefixes += [
        ("mid_block.resnets.0.", "middle_block.0."),
        ("mid_block.attentions.0.", "middle_block.1."),
        ("mid_block.resnets.1.", "middle_block.2."),
    ]
    up_types = config["up_block_types"]
    for i in range(levels):
        has_attn = "CrossAttn" in up_types[i]
        for j in range(per_level + 1):
            n = i * (per_level + 1) + j
            prefixes.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{n}.0."))
            prefixes.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{n}.1."))
        if i < levels - 1:
            n = i * (per_level + 1) + per_level
            prefixes.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{n}.{2 if has_attn else 1}."))
    prefixes += [
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("add_embedding.linear_1.", "label_emb.0.0."),
        ("add_embedding.linear_2.", "label_emb.0.2."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
    ]
    out = {}
    for key, value in sd.items():
        new = None
        for hf, ldm in prefixes:
            if key.startswith(hf):
                rest = key[len(hf):]
                if ".resnets." in hf:
                    for a, b in _RESNET_RENAMES:
                        if rest.startswith(a + "."):
                            rest = b + rest[len(a):]
                            break
                new = ldm + rest
                break
        if new is None:
            raise KeyError(f"unmapped UNet key {key}")
        out[UNET_PREFIX + new] = value
    return out


def vae_to_ldm(sd: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """AutoencoderKL state dict -> ``first_stage_model.*`` keys (ldm Encoder/Decoder numbering)."""
    levels = len(config["block_out_channels"])
    out = {}
    for key, value in sd.items():
        k = key
        k = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2.", k)
        k = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", k)
        k = re.sub(
            r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.",
            lambda m: f"decoder.up.{levels - 1 - int(m.group(1))}.block.{m.group(2)}.",
            k,
        )
        k = re.sub(
            r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
            lambda m: f"decoder.up.{levels - 1 - int(m.group(1))}.upsample.",
            k,
        )
        k = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m.group(1)) + 1}.", k)
        if "mid_block.attentions.0." in k:
            k = k.replace("mid_block.attentions.0.", "mid.attn_1.")
            for a, b in (("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out.")):
                k = k.replace(a, b)
            if k.endswith("weight") and value.ndim == 2:
                value = value.reshape(*value.shape, 1, 1)  # LDM keeps the VAE attention as 1x1 convolutions
        k = k.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        out[VAE_PREFIX + k] = value
    return out


def clip_to_ldm(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """transformers CLIPTextModel (OpenAI CLIP-L) keys are stored unchanged under a prefix in LDM files."""
    return {
        prefix + (k if k.startswith("text_model.") else "text_model." + k): v
        for k, v in sd.items()
        if not k.endswith("position_ids")
    }


def openclip_to_ldm(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """transformers CLIPTextModel(WithProjection) -> open_clip ``model.*`` keys (fused qkv, resblocks)."""
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        if key.endswith("position_ids"):
            continue
        if key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
            continue
        k = key.replace("text_model.embeddings.token_embedding.weight", "token_embedding.weight")
        k = k.replace("text_model.embeddings.position_embedding.weight", "positional_embedding")
        k = k.replace("text_model.final_layer_norm.", "ln_final.")
        k = k.replace("text_model.encoder.layers.", "transformer.resblocks.")
        k = k.replace("layer_norm1", "ln_1").replace("layer_norm2", "ln_2")
        k = k.replace(".mlp.fc1.", ".mlp.c_fc.").replace(".mlp.fc2.", ".mlp.c_proj.")
        k = k.replace(".self_attn.out_proj.", ".attn.out_proj.")
        m = re.match(r"(.*)\.self_attn\.([qkv])_proj\.(weight|bias)$", k)
        if m:
            fused.setdefault(f"{m.group(1)}.attn.in_proj_{m.group(3)}", {})[m.group(2)] = value
            continue
        out[prefix + k] = value
    for k, parts in fused.items():
        out[prefix + k] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out
