"""ControlNet units -> control hooks for ``pipelines.denoiser.KDenoiser.control`` (sd-webui-controlnet's UnetHook).

For every UNet evaluation each enabled unit's ControlNet runs on the same input, timestep and text conditioning and
returns its residuals, scaled as scripts/hook.py scales them:

- guidance_start/end: a unit acts while ``sampling_step / sampling_steps`` is within [start, end]
  (UnetHook.guidance_schedule_handler);
- weight: every residual times the weight ("Balanced");
- "My prompt is more important" (soft injection): residual i times ``weight * 0.825 ** (12 - i)``, the first 13
  (SD1.x) or 10 (SDXL) of them; the hires pass forces this for canny and mlsd preprocessors;
- "ControlNet is more important": soft injection plus the residuals only on the positive-prompt rows (cfg injection
  on ``cond.uncond_rows``, the extension's cond_mark);
- shuffle models (global average pooling): the residuals on the positive rows, averaged over space.

A weight of 0 returns no residuals at all, so such a unit leaves the UNet call exactly as without ControlNet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from webui.core.controlnet.errors import ControlNetError
from webui.core.controlnet.models import ControlNetRegistry, LoadedControlNet
from webui.core.controlnet.preprocessors import (
    HWC3,
    OUTER_FIT,
    RESIZE,
    detectmap_proc,
    get_preprocessor,
    pixel_perfect_resolution,
    run_preprocessor,
)
from webui.core.controlnet.units import infotext_params as _infotext_params
from webui.core.types import ControlNetUnit

BALANCED, PROMPT, CONTROL = 0, 1, 2
SOFT_INJECTION_BASE = 0.825  # hook.py: control_scales = [weight * 0.825 ** (12 - i) for i in range(13)]


def align_dim_latent(x: int) -> int:
    """scripts/utils.align_dim_latent: a pixel size rounded down to a whole latent pixel (multiple of 8)."""
    return (x // 8) * 8


def guidance_active(sampling_step: int, sampling_steps: int, start: float, end: float) -> bool:
    """UnetHook.guidance_schedule_handler: ``percent = sampling_step / total_sampling_steps``; the unit is stopped
    when percent < start or percent > end. (20 steps, end 0.5: steps 0..10 are controlled, 11 of 20.)"""
    percent = sampling_step / sampling_steps if sampling_steps else 0.0
    return not (percent < start or percent > end)


def control_scales(weight: float, count: int, soft: bool) -> list[float]:
    """The per-residual multipliers (input-block residuals first, the middle block's last)."""
    if soft:
        return [weight * (SOFT_INJECTION_BASE ** float(12 - i)) for i in range(13)][:count]
    return [weight] * count


@dataclass
class ControlNetHook:
    """One enabled unit as a KDenoiser control hook. ``hint`` is the control image [1, 3, h, w] in 0..1 at the
    generation size; ``hr_hint`` the one for the hires pass (txt2img with hires fix), chosen by the UNet input's
    size as the extension does."""

    unit: ControlNetUnit
    controlnet: LoadedControlNet
    hint: torch.Tensor
    hr_hint: torch.Tensor | None = None

    def _pick_hint(self, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        if self.hr_hint is None:
            return self.hint, False
        h = x.shape[-2] * 8
        if abs(h - self.hint.shape[-2]) < abs(h - self.hr_hint.shape[-2]):
            return self.hint, False
        return self.hr_hint, True

    def __call__(self, ctx) -> dict[str, Any]:
        unit = self.unit
        if not guidance_active(ctx.sampling_step, ctx.sampling_steps, unit.guidance_start, unit.guidance_end):
            return {}
        if unit.weight == 0:
            return {}
        model = self.controlnet.model
        dtype = model.dtype
        x = ctx.x
        if x.shape[1] != model.config.in_channels and x.shape[1] == 9:
            x = x[:, :4]  # inpainting UNet input: the ControlNet sees the 4 latent channels
        hint, in_hires = self._pick_hint(x)
        cond = ctx.cond
        t = ctx.t.to(dtype) if dtype != torch.float32 else ctx.t.float()
        with torch.no_grad():
            down, mid = model(
                x.to(dtype),
                t,
                encoder_hidden_states=cond.context.to(dtype),
                controlnet_cond=hint.to(x.device, dtype),
                added_cond_kwargs={k: v.to(dtype) for k, v in cond.added.items()} if cond.added else None,
                return_dict=False,
            )
        control = list(down) + [mid]
        soft = unit.control_mode != BALANCED
        forced_soft = in_hires and ("canny" in unit.module or "mlsd" in unit.module)
        gap = self.controlnet.global_average_pooling
        if (unit.control_mode == CONTROL or gap) and cond.uncond_rows is not None:
            mark = (~cond.uncond_rows).to(x.device, control[0].dtype)[:, None, None, None]
            control = [c * mark for c in control]
        scales = control_scales(unit.weight, len(control), soft or forced_soft)
        control = [c * s for c, s in zip(control, scales)]
        if gap:
            control = [torch.mean(c, dim=(2, 3), keepdim=True) for c in control]
        return {"down_block_additional_residuals": control[:-1], "mid_block_additional_residual": control[-1]}


# ---------------------------------------------------------------------------------------------------------------
# Building the hooks


def _read_array(data: bytes) -> np.ndarray:
    """external_code.to_base64_nparray: the decoded image as numpy uint8 (PIL's own channel layout)."""
    from webui.core.io.images import read_image

    try:
        return np.array(read_image(data)).astype("uint8")
    except Exception as e:
        raise ControlNetError(f"control image could not be read: {e}") from e


def _as_array(image: Any) -> np.ndarray:
    if isinstance(image, (bytes, bytearray)):
        return _read_array(bytes(image))
    if isinstance(image, np.ndarray):
        return image.astype("uint8")
    return np.array(image).astype("uint8")  # a PIL image


def choose_input_image(unit: ControlNetUnit, index: int, init_image: Any = None,
                       init_resize_mode: int = 0) -> tuple[np.ndarray, int]:
    """Script.choose_input_image: the unit's image (with its mask as alpha; a non-uniform mask on a
    non-inpaint unit is itself the input -- "canvas scribble mode"), else the img2img init image with A1111's resize
    mode. Returns the RGB input and the resize mode to use."""
    if unit.image is not None:
        rgb = HWC3(_read_array(unit.image))
        if unit.mask is not None:
            mask = HWC3(_read_array(unit.mask))[:, :, 0:1]
            if rgb.shape[:2] != mask.shape[:2]:
                raise ControlNetError(f"controlnet unit {index}: image shape ({rgb.shape[:2]}) not aligned with mask "
                                      f"shape ({mask.shape[:2]})")
        else:
            mask = np.zeros_like(rgb)[:, :, 0:1]
        if (mask <= 5).all() or (mask >= 250).all():
            return rgb, unit.resize_mode
        return HWC3(mask[:, :, 0]), unit.resize_mode
    if init_image is not None:
        # external_code.resize_mode_from_value on p.resize_mode (3, latent upscale, is Just Resize)
        mode = init_resize_mode if 0 <= init_resize_mode < 3 else RESIZE
        return HWC3(_as_array(init_image)), mode
    raise ControlNetError(f"controlnet unit {index}: controlnet is enabled but no input image is given")


def _to_hint(detected_map: np.ndarray) -> torch.Tensor:
    """get_pytorch_control: uint8 HWC -> float [1, C, H, W] in 0..1."""
    y = torch.from_numpy(np.ascontiguousarray(detected_map)).float() / 255.0
    return y.permute(2, 0, 1)[None].clone()


def prepare_control(unit: ControlNetUnit, index: int, *, width: int, height: int, registry: ControlNetRegistry,
                    hr_width: int | None = None, hr_height: int | None = None, init_image: Any = None,
                    init_resize_mode: int = 0) -> tuple[torch.Tensor, torch.Tensor | None, list[np.ndarray]]:
    """scripts/controlnet.py get_control for one unit: input image, pixel-perfect resolution, preprocessor, and the
    map fitted to the generation size (and to the hires size). Returns (hint, hr_hint, detected maps)."""
    p = get_preprocessor(unit.module)
    if p is None:
        raise ControlNetError(f"controlnet unit {index}: module({unit.module}) not found in supported modules")
    h, w = align_dim_latent(height), align_dim_latent(width)
    image, resize_mode = choose_input_image(unit, index, init_image, init_resize_mode)
    resolution = unit.processor_res
    if unit.pixel_perfect:
        resolution = pixel_perfect_resolution(image, h, w, resize_mode)
    detected = run_preprocessor(p, image, resolution, unit.threshold_a, unit.threshold_b, registry.annotators)
    maps: list[np.ndarray] = []
    hr_hint = None
    if hr_width is not None and hr_height is not None:
        hr_map = detectmap_proc(detected, resize_mode, align_dim_latent(hr_height), align_dim_latent(hr_width))
        maps.append(hr_map)
        hr_hint = _to_hint(hr_map)
    lr_map = detectmap_proc(detected, resize_mode, h, w)
    maps.append(lr_map)
    return _to_hint(lr_map), hr_hint, maps


def build_control_hooks(units: Sequence[ControlNetUnit], components, *, width: int, height: int, batch_size: int,
                        registry: ControlNetRegistry, hr_width: int | None = None, hr_height: int | None = None,
                        init_image: Any = None, init_resize_mode: int = 0):
    """The enabled units as KDenoiser control hooks, the infotext entries and the detected maps.

    ``width``/``height`` are the first pass's size; ``hr_width``/``hr_height`` the hires pass's (txt2img with hires
    fix), for which the extension prepares a second control map. ``init_image`` (bytes, PIL or array) and
    ``init_resize_mode`` (A1111's img2img resize mode) feed units without an image, as in img2img. The control image
    is shared by all ``batch_size`` images (the extension's default batch option). Models load through ``registry``
    (cached). Returns ``(hooks, {"ControlNet 0": "Module: ...", ...}, [PIL images of the detected maps])``; the
    maps follow the extension's order (hires map first when there is one). Raises :class:`ControlNetError`.
    """
    from PIL import Image

    if batch_size < 1:
        raise ControlNetError(f"batch_size must be at least 1, got {batch_size}")
    enabled = [u for u in units if u.enabled]
    params = _infotext_params(enabled)  # written before the models load, as get_enabled_units does
    hooks: list[ControlNetHook] = []
    maps: list = []
    for index, unit in enumerate(enabled):
        controlnet = registry.load(unit.model, components)
        hint, hr_hint, unit_maps = prepare_control(
            unit, index, width=width, height=height, registry=registry, hr_width=hr_width, hr_height=hr_height,
            init_image=init_image, init_resize_mode=init_resize_mode,
        )
        maps.extend(Image.fromarray(np.ascontiguousarray(m.clip(0, 255).astype(np.uint8))) for m in unit_maps)
        hooks.append(ControlNetHook(unit=unit, controlnet=controlnet, hint=hint, hr_hint=hr_hint))
    return hooks, params, maps


def detect(module: str, images: Sequence[Any], *, registry: ControlNetRegistry, processor_res: float = -1,
           threshold_a: float = -1, threshold_b: float = -1) -> list:
    """POST /controlnet/detect's core: run one preprocessor alone on each image (out-of-range sliders -> their
    defaults, as the extension's unit validation does). Images are encoded bytes, PIL images or arrays.
    Returns PIL images."""
    from PIL import Image

    p = get_preprocessor(module)
    if p is None:
        raise ControlNetError("Module not available")
    values = []
    for value, slider in ((processor_res, p.slider_resolution), (threshold_a, p.slider_1), (threshold_b, p.slider_2)):
        values.append(slider.value if value < slider.minimum or value > slider.maximum else value)
    out = []
    for data in images:
        img = HWC3(_as_array(data))
        result = run_preprocessor(p, img, values[0], values[1], values[2], registry.annotators)
        out.append(Image.fromarray(np.ascontiguousarray(result)))
    return out


__all__ = [
    "BALANCED",
    "CONTROL",
    "OUTER_FIT",
    "PROMPT",
    "ControlNetHook",
    "align_dim_latent",
    "build_control_hooks",
    "choose_input_image",
    "control_scales",
    "detect",
    "guidance_active",
    "prepare_control",
]
