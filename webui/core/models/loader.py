"""Single-file checkpoints (A1111's ``.safetensors`` / ``.ckpt``) -> diffusers components, offline.

What A1111 does with a ``.yaml`` config per model family, we do from the state dict itself: the model family is
detected from keys (never from the file name, as A1111's ``sd_models_config.guess_model_config_from_state_dict``),
and every size (channels, levels, depths, widths) is read from tensor shapes, so SD1.x, SD2.x (eps and v), SDXL base
and refiner -- and the tiny random models of our tests and demo -- go through the same code. Key renaming uses
diffusers' own ``single_file_utils`` converters; configs are built here, so nothing is fetched from the Hub.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from webui.core.devices import DevicePlan
from webui.core.models.fp8 import Fp8State
from webui.core.types import CheckpointInfo

log = logging.getLogger(__name__)

SD1, SD2, SDXL, SDXL_REFINER = "SD1", "SD2", "SDXL", "SDXL-refiner"

_SDXL_CLIP_G = "conditioner.embedders.1.model."
_SDXL_REFINER_CLIP_G = "conditioner.embedders.0.model."
_SD2_CLIP = "cond_stage_model.model."
_SD1_CLIP = "cond_stage_model.transformer."
_SDXL_CLIP_L = "conditioner.embedders.0.transformer."
_UNET = "model.diffusion_model."


class CheckpointLoadError(Exception):
    """A checkpoint could not be loaded; the message names the file and the reason."""


class UnsafeCheckpointError(CheckpointLoadError):
    """A pickle (.ckpt/.pt) wanted to run code or build objects other than tensors; refused."""


@dataclass
class ModelComponents:
    """A loaded checkpoint: diffusers modules plus what A1111's sampling needs to know about the model."""

    info: CheckpointInfo
    arch: str
    prediction_type: str  # "epsilon" | "v_prediction"
    unet: Any
    vae: Any
    text_encoder: Any | None  # CLIP-L (SD1, SDXL) or OpenCLIP-H (SD2); None for the SDXL refiner
    tokenizer: Any | None
    text_encoder_2: Any | None = None  # OpenCLIP-bigG (SDXL base and refiner)
    tokenizer_2: Any | None = None
    alphas_cumprod: torch.Tensor = field(default_factory=lambda: sd_alphas_cumprod())
    plan: DevicePlan | None = None
    fp8: Fp8State = field(default_factory=Fp8State)  # FP8 weight storage (option fp8_storage), see models/fp8.py

    @property
    def is_sdxl(self) -> bool:
        return self.arch in (SDXL, SDXL_REFINER)

    @property
    def is_inpainting(self) -> bool:
        return self.unet.config.in_channels == 9

    @property
    def sd_checkpoint_info(self) -> CheckpointInfo:
        """A1111's name for the loaded checkpoint's info: extension scripts read ``p.sd_model.sd_checkpoint_info``
        (filename, name, model_name, title, sha256, shorthash)."""
        return self.info

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def modules(self):
        return [m for m in (self.unet, self.vae, self.text_encoder, self.text_encoder_2) if m is not None]


def sd_alphas_cumprod() -> torch.Tensor:
    """The DDPM schedule every SD1/SD2/SDXL checkpoint was trained with (LDM's register_schedule values)."""
    from pipelines.schedules import alphas_cumprod_sd

    return alphas_cumprod_sd()


# ---------------------------------------------------------------------------------------------------------------
# Reading files


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file. Pickles go through ``torch.load(weights_only=True)``: a file that tries to
    import or call anything but tensor rebuilding is refused with :class:`UnsafeCheckpointError`."""
    if not os.path.isfile(path):
        raise CheckpointLoadError(f"checkpoint file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(path, device="cpu")
        else:
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:
                obj = torch.load(path, map_location="cpu", weights_only=True)
            sd = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
            if not isinstance(sd, dict):
                raise CheckpointLoadError(f"{path}: not a state dict")
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"refused to load {path}: the pickle wants to run code or build non-tensor objects, which a safe "
            f"checkpoint never needs ({str(e).splitlines()[0]}). Convert it to .safetensors or use a trusted file."
        ) from e
    except CheckpointLoadError:
        raise
    except Exception as e:  # corrupt or truncated file, wrong format
        raise CheckpointLoadError(f"could not read {path}: {e}") from e
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def read_yaml_config(path: str | None) -> dict:
    if not path or not os.path.isfile(path):
        return {}
    import yaml

    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


# ---------------------------------------------------------------------------------------------------------------
# Detection


def detect_architecture(sd: dict[str, torch.Tensor]) -> str:
    """Model family from keys, as A1111's guess_model_config_from_state_dict."""
    if f"{_UNET}input_blocks.0.0.weight" not in sd:
        raise CheckpointLoadError("no Stable Diffusion UNet in this file (is it a LoRA, VAE or embedding?)")
    if f"{_SDXL_CLIP_G}ln_final.weight" in sd:
        return SDXL
    if f"{_SDXL_REFINER_CLIP_G}ln_final.weight" in sd:
        return SDXL_REFINER
    if f"{_SD2_CLIP}transformer.resblocks.0.attn.in_proj_weight" in sd:
        return SD2
    if any(k.startswith(_SD1_CLIP) for k in sd):
        return SD1
    raise CheckpointLoadError("unrecognised checkpoint: a UNet but no known text encoder (SD1, SD2, SDXL)")


def _count(sd: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd for m in [rx.match(k)] if m})


def unet_config_from_ldm(sd: dict[str, torch.Tensor], arch: str, yaml_cfg: dict | None = None) -> dict:
    """A diffusers UNet2DConditionModel config read from LDM tensor shapes (openaimodel.UNetModel layout)."""
    u = _UNET
    model_channels = sd[f"{u}input_blocks.0.0.weight"].shape[0]
    in_channels = sd[f"{u}input_blocks.0.0.weight"].shape[1]
    out_channels = sd[f"{u}out.2.weight"].shape[0]
    n_input = _count(sd, rf"{re.escape(u)}input_blocks\.(\d+)\.")
    # Walk input blocks: resnets until a downsample ("op") closes a level.
    levels: list[dict] = [{"channels": None, "resnets": 0, "depth": 0}]
    for n in range(1, n_input):
        if f"{u}input_blocks.{n}.0.op.weight" in sd:
            levels.append({"channels": None, "resnets": 0, "depth": 0})
            continue
        lvl = levels[-1]
        lvl["channels"] = sd[f"{u}input_blocks.{n}.0.out_layers.3.weight"].shape[0]
        lvl["resnets"] += 1
        lvl["depth"] = max(lvl["depth"], _count(sd, rf"{re.escape(u)}input_blocks\.{n}\.1\.transformer_blocks\.(\d+)\."))
    layers_per_block = levels[0]["resnets"]
    block_out = [lv["channels"] for lv in levels]
    has_attn = [lv["depth"] > 0 for lv in levels]
    linear = any(k.endswith("proj_in.weight") and v.ndim == 2 for k, v in sd.items() if k.startswith(u))
    context_dim = next(v.shape[1] for k, v in sd.items() if k.startswith(u) and k.endswith("attn2.to_k.weight"))
    if arch == SD1 and not linear:
        heads: Any = 8  # v1-inference.yaml: num_heads 8 at every level
    else:
        # SD2/SDXL yamls fix num_head_channels 64; tiny models keep at least one head.
        head_channels = min(64, model_channels)
        heads = [max(1, c // head_channels) for c in block_out]
    mid_depth = _count(sd, rf"{re.escape(u)}middle_block\.1\.transformer_blocks\.(\d+)\.")
    depths = [max(lv["depth"], 1) for lv in levels]
    if mid_depth and mid_depth != depths[-1]:
        depths[-1] = mid_depth
    config: dict[str, Any] = {
        "sample_size": 128 if arch in (SDXL, SDXL_REFINER) else 64,
        "in_channels": in_channels,
        "out_channels": out_channels,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in has_attn],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(has_attn)],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "block_out_channels": block_out,
        "layers_per_block": layers_per_block,
        "cross_attention_dim": context_dim,
        "attention_head_dim": heads,
        "use_linear_projection": linear,
        "transformer_layers_per_block": depths if any(d > 1 for d in depths) else 1,
    }
    if f"{u}label_emb.0.0.weight" in sd:
        adm_in = sd[f"{u}label_emb.0.0.weight"].shape[1]
        pooled = _pooled_dim(sd, arch)
        n_ids = 5 if arch == SDXL_REFINER else 6  # refiner: size, crop, aesthetic score; base: size, crop, target
        config.update(
            addition_embed_type="text_time",
            addition_time_embed_dim=(adm_in - pooled) // n_ids,
            projection_class_embeddings_input_dim=adm_in,
        )
    if arch == SD2:
        config["upcast_attention"] = True  # SD2.x overflows fp16 attention (black images) without it
    return config


def _pooled_dim(sd: dict, arch: str) -> int:
    prefix = _SDXL_CLIP_G if arch == SDXL else _SDXL_REFINER_CLIP_G
    proj = sd.get(prefix + "text_projection")
    return proj.shape[1] if proj is not None else sd[prefix + "token_embedding.weight"].shape[1]


def vae_config_from_ldm(sd: dict[str, torch.Tensor], arch: str, yaml_cfg: dict | None = None) -> dict:
    """A diffusers AutoencoderKL config from LDM Encoder/Decoder shapes."""
    v = "first_stage_model."
    n_levels = _count(sd, rf"{re.escape(v)}encoder\.down\.(\d+)\.")
    block_out = [sd[f"{v}encoder.down.{i}.block.0.conv2.weight"].shape[0] for i in range(n_levels)]
    scaling = 0.13025 if arch in (SDXL, SDXL_REFINER) else 0.18215
    scaling = float((yaml_cfg or {}).get("model", {}).get("params", {}).get("scale_factor", scaling))
    return {
        "in_channels": sd[f"{v}encoder.conv_in.weight"].shape[1],
        "out_channels": sd[f"{v}decoder.conv_out.weight"].shape[0],
        "down_block_types": ["DownEncoderBlock2D"] * n_levels,
        "up_block_types": ["UpDecoderBlock2D"] * n_levels,
        "block_out_channels": block_out,
        "layers_per_block": _count(sd, rf"{re.escape(v)}encoder\.down\.0\.block\.(\d+)\."),
        "latent_channels": sd[f"{v}decoder.conv_in.weight"].shape[1],
        "sample_size": 1024 if arch in (SDXL, SDXL_REFINER) else 512,
        "scaling_factor": scaling,
        "norm_num_groups": 32,
    }


def _clip_config(hidden: int, layers: int, intermediate: int, vocab: int, positions: int, act: str, proj: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),  # CLIP-L 12, OpenCLIP-H 16, bigG 20: all 64-wide heads
        max_position_embeddings=positions,
        hidden_act=act,
        projection_dim=proj,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
    )


def detect_prediction_type(sd: dict, arch: str, yaml_cfg: dict, unet, plan: DevicePlan) -> str:
    """v-prediction from the accompanying .yaml (``parameterization: "v"``), a ``v_pred`` marker key, or -- for SD2
    without a yaml -- A1111's probe (is_using_v_parameterization_for_sd2): at t=999 an eps model's output stays
    near its input, a v model's is strongly negative."""
    param = (yaml_cfg.get("model", {}).get("params", {}) or {}).get("parameterization")
    if param:
        return "v_prediction" if param == "v" else "epsilon"
    if "v_pred" in sd:
        return "v_prediction"
    if arch != SD2 or unet.config.in_channels != 4:
        return "epsilon"
    with torch.no_grad():
        dev, dt = next(unet.parameters()).device, next(unet.parameters()).dtype
        x = torch.full((1, 4, 8, 8), 0.5, device=dev, dtype=dt)
        cond = torch.full((1, 2, unet.config.cross_attention_dim), 0.5, device=dev, dtype=dt)
        out = unet(x, torch.tensor([999], device=dev), encoder_hidden_states=cond).sample
        return "v_prediction" if (out - x).float().mean().item() < -1 else "epsilon"


# ---------------------------------------------------------------------------------------------------------------
# Building modules


def _materialise(factory, state_dict: dict[str, torch.Tensor], name: str, path: str, ignore=("position_ids",)):
    """Build a module without random init (meta device) and assign the checkpoint tensors to it."""
    with torch.device("meta"):
        module = factory()
    expected = module.state_dict().keys()
    if "embeddings.token_embedding.weight" in expected:
        # transformers >= 5 keeps CLIPTextModel's weights without the "text_model." prefix LDM files carry
        state_dict = {k.removeprefix("text_model."): v for k, v in state_dict.items()}
    missing, unexpected = module.load_state_dict(state_dict, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith(ignore)]
    if missing:
        raise CheckpointLoadError(f"{path}: {name} weights missing from the file: {', '.join(missing[:5])}...")
    for mod_name, mod in module.named_modules():
        for buf_name, buf in list(mod.named_buffers(recurse=False)):
            if buf.is_meta and buf_name == "position_ids":
                mod.register_buffer(buf_name, torch.arange(buf.shape[-1]).expand(buf.shape), persistent=False)
            elif buf.is_meta:
                raise CheckpointLoadError(f"{path}: {name} buffer {mod_name}.{buf_name} not in the file")
    if unexpected:
        log.debug("%s: %d unexpected %s keys ignored", path, len(unexpected), name)
    return module.eval().requires_grad_(False)


def _openclip_to_hf(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """open_clip text tower keys -> transformers CLIPTextModel(WithProjection) keys, keeping every layer (diffusers'
    converter drops SD2's last layer by name, which only fits 24-layer models; A1111 keeps it and skips it at
    run time, and so do we)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if not key.startswith(prefix):
            continue
        k = key[len(prefix):]
        if k == "text_projection":
            out["text_projection.weight"] = value.T.contiguous()
            continue
        if k == "logit_scale":
            continue
        k = k.replace("token_embedding.weight", "text_model.embeddings.token_embedding.weight")
        k = k.replace("positional_embedding", "text_model.embeddings.position_embedding.weight")
        k = k.replace("ln_final.", "text_model.final_layer_norm.")
        k = k.replace("transformer.resblocks.", "text_model.encoder.layers.")
        k = k.replace(".ln_1.", ".layer_norm1.").replace(".ln_2.", ".layer_norm2.")
        k = k.replace(".mlp.c_fc.", ".mlp.fc1.").replace(".mlp.c_proj.", ".mlp.fc2.")
        k = k.replace(".attn.out_proj.", ".self_attn.out_proj.")
        m = re.match(r"(.*)\.attn\.in_proj_(weight|bias)$", k)
        if m:
            q, kk, v = value.chunk(3, dim=0)
            for part, t in (("q", q), ("k", kk), ("v", v)):
                out[f"{m.group(1)}.self_attn.{part}_proj.{m.group(2)}"] = t.contiguous()
            continue
        out[k] = value
    return out


def _clip_l(sd: dict, prefix: str, path: str):
    from transformers import CLIPTextModel

    hf = {}
    for k, v in sd.items():
        if k.startswith(prefix):
            rest = k[len(prefix):]
            hf[rest if rest.startswith("text_model.") else "text_model." + rest] = v
    emb = hf["text_model.embeddings.token_embedding.weight"]
    cfg = _clip_config(
        hidden=emb.shape[1],
        layers=_count(hf, r"text_model\.encoder\.layers\.(\d+)\."),
        intermediate=hf["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        vocab=emb.shape[0],
        positions=hf["text_model.embeddings.position_embedding.weight"].shape[0],
        act="quick_gelu",
        proj=emb.shape[1],
    )
    return _materialise(lambda: CLIPTextModel(cfg), hf, "text encoder (CLIP-L)", path)


def _open_clip(sd: dict, prefix: str, path: str, with_projection: bool):
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    hf = _openclip_to_hf(sd, prefix)
    emb = hf["text_model.embeddings.token_embedding.weight"]
    proj = hf.get("text_projection.weight")
    cfg = _clip_config(
        hidden=emb.shape[1],
        layers=_count(hf, r"text_model\.encoder\.layers\.(\d+)\."),
        intermediate=hf["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        vocab=emb.shape[0],
        positions=hf["text_model.embeddings.position_embedding.weight"].shape[0],
        act="gelu",
        proj=proj.shape[0] if proj is not None else emb.shape[1],
    )
    if with_projection:
        return _materialise(lambda: CLIPTextModelWithProjection(cfg), hf, "text encoder (OpenCLIP)", path)
    hf.pop("text_projection.weight", None)
    return _materialise(lambda: CLIPTextModel(cfg), hf, "text encoder (OpenCLIP)", path)


def load_components(info: CheckpointInfo, plan: DevicePlan, tokenizer_dir: str) -> ModelComponents:
    """Load one checkpoint file into diffusers modules on ``plan.device``. Raises :class:`CheckpointLoadError`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    from webui.core.models.tokenizers import clip_tokenizer

    path = info.filename
    sd = read_state_dict(path)
    arch = detect_architecture(sd)
    yaml_cfg = read_yaml_config(info.config)
    log.info("Loading %s (%s) from %s", info.title, arch, path)
    try:
        unet_cfg = unet_config_from_ldm(sd, arch, yaml_cfg)
        unet_sd = convert_ldm_unet_checkpoint(sd, unet_cfg)
        unet = _materialise(lambda: UNet2DConditionModel(**unet_cfg), unet_sd, "UNet", path)
        vae_cfg = vae_config_from_ldm(sd, arch, yaml_cfg)
        vae_sd = convert_ldm_vae_checkpoint(sd, vae_cfg)
        vae = _materialise(lambda: AutoencoderKL(**vae_cfg), vae_sd, "VAE", path)
        text_encoder = tokenizer = text_encoder_2 = tokenizer_2 = None
        if arch == SD1:
            text_encoder = _clip_l(sd, _SD1_CLIP, path)
            tokenizer = clip_tokenizer(tokenizer_dir, "<|endoftext|>")
        elif arch == SD2:
            text_encoder = _open_clip(sd, _SD2_CLIP, path, with_projection=False)
            tokenizer = clip_tokenizer(tokenizer_dir, "!")
        elif arch == SDXL:
            text_encoder = _clip_l(sd, _SDXL_CLIP_L, path)
            tokenizer = clip_tokenizer(tokenizer_dir, "<|endoftext|>")
            text_encoder_2 = _open_clip(sd, _SDXL_CLIP_G, path, with_projection=True)
            tokenizer_2 = clip_tokenizer(tokenizer_dir, "!")
        else:
            text_encoder_2 = _open_clip(sd, _SDXL_REFINER_CLIP_G, path, with_projection=True)
            tokenizer_2 = clip_tokenizer(tokenizer_dir, "!")
    except CheckpointLoadError:
        raise
    except (KeyError, RuntimeError, ValueError, StopIteration) as e:
        raise CheckpointLoadError(f"{path}: not a loadable {arch} checkpoint ({type(e).__name__}: {e})") from e
    modules = [m for m in (unet, vae, text_encoder, text_encoder_2) if m is not None]
    from_file = {t.data_ptr() for m in modules for t in (*m.parameters(), *m.buffers())}
    # torch.nn.Module.to, not diffusers' override: its fp32-module warning does not apply to our own casts
    torch.nn.Module.to(unet, plan.device, plan.dtype)
    torch.nn.Module.to(vae, plan.device, plan.vae_dtype)
    for te in (text_encoder, text_encoder_2):
        if te is not None:
            te.to(plan.device, plan.dtype)
    if plan.device.type == "cpu":
        # On the CPU with an unchanged dtype .to() copies nothing, so the tensors would still be pages of the file's
        # memory map: replacing the file on disk (a merge saved over it, a re-download) would change or crash the
        # live model, and in-place LoRA patches would touch the mapping. Own copies of exactly those tensors (a
        # tensor .to() converted is a copy already: copying it again doubled the load time of an fp16 file).
        with torch.no_grad():
            for module in modules:
                for t in list(module.parameters()) + list(module.buffers()):
                    if t.data_ptr() in from_file:
                        t.data = t.data.clone()
    prediction = detect_prediction_type(sd, arch, yaml_cfg, unet, plan)
    del sd
    return ModelComponents(
        info=info,
        arch=arch,
        prediction_type=prediction,
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        plan=plan,
    )
