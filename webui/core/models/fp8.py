"""FP8 weight storage, A1111 1.10's option ``fp8_storage`` ("Disable" / "Enable for SDXL" / "Enable") and
``cache_fp16_weight``.

A1111 (sd_models.load_model_weights) casts every ``torch.nn.Linear`` / ``Conv2d`` of the model except the VAE to
``float8_e4m3fn`` after loading and computes in the usual dtype (devices.autocast / manual_cast). Here the same
layers -- the UNet's and the text encoders' Linear and Conv -- get diffusers' layer-wise casting hooks
(``diffusers.hooks.apply_layerwise_casting``): weights and biases stored in float8_e4m3fn, cast to the model's
compute dtype for each layer's forward and back after it (float8 -> wider -> float8 is exact, so the stored bytes
never drift). Norms and embeddings stay as they are, as in A1111. With ``cache_fp16_weight`` each cast layer keeps a
float16 CPU copy of its weight and bias (A1111's ``module.fp16_weight`` / ``fp16_bias``) that LoRA patches start
from, so a LoRA is added to the original weights rather than to their float8 rounding.

Which state a loaded model is in is part of the model cache's key (ModelManager.load): switching the option, per
request or stored, reloads the checkpoint from its file, as A1111's reload_model_weights does when check_fp8
changes -- casting back up from float8 would keep the rounding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

CHOICES = ("Disable", "Enable for SDXL", "Enable")
STORAGE_DTYPE_NAME = "float8_e4m3fn"


@dataclass(frozen=True)
class Fp8State:
    """How a model's weights are stored: ``enabled`` (float8) and ``fp16_cache`` (LoRA patches from fp16 copies)."""

    enabled: bool = False
    fp16_cache: bool = False


OFF = Fp8State()


def wanted(option, is_sdxl: bool) -> bool:
    """A1111 ``check_fp8``: "Enable" for every model, "Enable for SDXL" for SDXL models only, else off."""
    return option == "Enable" or (option == "Enable for SDXL" and is_sdxl)


def unsupported_reason(device: torch.device) -> str | None:
    """Why float8 storage cannot be used on ``device`` (None when it can): torch without float8 (< 2.1), Apple MPS
    (A1111's check_fp8 turns it off there), or a device that cannot convert to and from float8."""
    dtype = getattr(torch, STORAGE_DTYPE_NAME, None)
    if dtype is None:
        return f"this torch ({torch.__version__}) has no {STORAGE_DTYPE_NAME} (needs torch >= 2.1)"
    if device.type == "mps":
        return "float8 weights are not supported on Apple MPS"
    try:
        probe = torch.ones(2, device=device).to(dtype).to(torch.float32)
        if not bool(torch.all(probe == 1)):
            return f"{device} does not convert {STORAGE_DTYPE_NAME} correctly"
    except (RuntimeError, TypeError) as e:
        return f"{device} cannot store {STORAGE_DTYPE_NAME} tensors ({e})"
    return None


def _layers(module: torch.nn.Module):
    return [m for m in module.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]


def apply(comp, cache_fp16: bool) -> None:
    """Store ``comp``'s UNet and text-encoder Linear/Conv weights in float8 (see the module docstring); the VAE is
    left alone. ``comp.fp8`` records the state for the model cache and the infotext."""
    from diffusers.hooks import apply_layerwise_casting

    storage = getattr(torch, STORAGE_DTYPE_NAME)
    compute = comp.plan.dtype if comp.plan is not None else comp.unet.dtype
    for module in (comp.unet, comp.text_encoder, comp.text_encoder_2):
        if module is None:
            continue
        if cache_fp16:
            with torch.no_grad():
                for layer in _layers(module):
                    layer.fp16_weight = layer.weight.detach().to("cpu", torch.float16, copy=True)
                    if layer.bias is not None:
                        layer.fp16_bias = layer.bias.detach().to("cpu", torch.float16, copy=True)
        # skip_modules_pattern=(): every Linear/Conv (A1111 casts proj_in/proj_out too, which diffusers' default
        # pattern would skip); only those layer classes get hooks, so norms and embeddings keep their dtype. (None
        # would hook the whole model as one layer, norms included.)
        apply_layerwise_casting(module, storage_dtype=storage, compute_dtype=compute, skip_modules_pattern=())
    comp.fp8 = Fp8State(enabled=True, fp16_cache=bool(cache_fp16))
    log.info("FP8 weight: %s stores its UNet and text-encoder Linear/Conv weights in %s (compute %s%s)",
             comp.info.title, STORAGE_DTYPE_NAME, str(compute).removeprefix("torch."),
             ", FP16 copies cached for LoRA" if cache_fp16 else "")


def infotext_params(comp, opts) -> dict:
    """A1111's "FP8 weight" / "Cache FP16 weight for LoRA" entries, written only when the model is stored in fp8
    (``opts.fp8_storage if devices.fp8 else None``)."""
    if not getattr(comp, "fp8", OFF).enabled:
        return {}
    return {"FP8 weight": opts.get("fp8_storage"), "Cache FP16 weight for LoRA": bool(opts.get("cache_fp16_weight"))}
