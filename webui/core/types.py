"""Plain data types shared by the core, the API and the UI.

Frozen dataclasses only: no tensors, no PIL images in requests, no UI objects. A request is built once by an
adapter (``webui/api/models.py`` or a UI tab) and never mutated; scoped changes work on copies.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint file as A1111 lists it in /sdapi/v1/sd-models.

    ``name`` is the path relative to the checkpoint folder (with extension), ``title`` is "name [hash10]" once the
    sha256 is known, else just ``name``.
    """

    filename: str
    name: str
    model_name: str
    sha256: str | None = None
    config: str | None = None

    @property
    def shorthash(self) -> str | None:
        return self.sha256[:10] if self.sha256 else None

    @property
    def title(self) -> str:
        return f"{self.name} [{self.shorthash}]" if self.sha256 else self.name

    @property
    def stem(self) -> str:
        """File name without folder and extension, as A1111's infotext ``Model:`` field writes it."""
        import os

        return os.path.splitext(os.path.basename(self.name))[0]


@dataclass(frozen=True, kw_only=True)
class HiresOptions:
    """txt2img "Hires. fix" (A1111 StableDiffusionProcessingTxt2Img's hr_* fields). The second pass's denoising
    strength is the request's ``denoising_strength``."""

    scale: float = 2.0
    upscaler: str = "Latent"  # a latent mode of /sdapi/v1/latent-upscale-modes or an upscaler name
    second_pass_steps: int = 0  # 0: the first pass's steps
    resize_x: int = 0
    resize_y: int = 0
    checkpoint: str | None = None  # None / "Use same checkpoint": the first pass's
    sampler_name: str | None = None  # None: the first pass's
    scheduler: str | None = None  # None: the first pass's
    prompt: str = ""  # "": the first pass's
    negative_prompt: str = ""


@dataclass(frozen=True, kw_only=True)
class RefinerOptions:
    """A1111's Refiner: switch to ``checkpoint`` at fraction ``switch_at`` of the sampling schedule."""

    checkpoint: str
    switch_at: float = 0.8


@dataclass(frozen=True, kw_only=True)
class InpaintOptions:
    """img2img with a mask (A1111 StableDiffusionProcessingImg2Img's mask fields, API defaults)."""

    mask: bytes  # encoded image; white = repaint
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_round: bool = True
    inpainting_fill: int = 0  # 0 fill, 1 original, 2 latent noise, 3 latent nothing
    inpaint_full_res: bool = True  # "Only masked"
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0


@dataclass(frozen=True, kw_only=True)
class ControlNetUnit:
    """One sd-webui-controlnet unit, normalised from its API dict (webui.core.controlnet parses and validates)."""

    enabled: bool = True
    module: str = "none"
    model: str = "None"
    weight: float = 1.0
    image: bytes | None = None  # encoded control image
    mask: bytes | None = None
    resize_mode: int = 1  # 0 Just Resize, 1 Crop and Resize, 2 Resize and Fill
    low_vram: bool = False
    processor_res: int = -1
    threshold_a: float = -1
    threshold_b: float = -1
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    control_mode: int = 0  # 0 Balanced, 1 My prompt is more important, 2 ControlNet is more important
    pixel_perfect: bool = False


@dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    """Everything one generation needs (A1111's StableDiffusionProcessing fields, resolved to plain values).

    Sampler and scheduler are already resolved to A1111 names/labels by the adapter (``webui.core.generation.samplers``).
    ``seed``/``subseed`` may still be -1; the engine draws them.
    """

    mode: str = "txt2img"
    prompt: str = ""
    negative_prompt: str = ""
    styles: tuple[str, ...] = ()
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_w: int = -1
    seed_resize_from_h: int = -1
    sampler_name: str = "Euler"
    scheduler: str = "Automatic"
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    batch_size: int = 1
    n_iter: int = 1
    eta: float | None = None
    s_churn: float | None = None
    s_tmin: float | None = None
    s_tmax: float | None = None
    s_noise: float | None = None
    s_min_uncond: float | None = None  # NGMS; None: option s_min_uncond
    denoising_strength: float | None = None
    # img2img / inpaint (mode "img2img"; images are encoded bytes so the request stays plain data)
    init_images: tuple[bytes, ...] = ()
    resize_mode: int = 0  # 0 Just resize, 1 Crop and resize, 2 Resize and fill, 3 Just resize (latent upscale)
    image_cfg_scale: float | None = None
    initial_noise_multiplier: float | None = None
    inpaint: InpaintOptions | None = None
    include_init_images: bool = False
    # txt2img extras
    hires: HiresOptions | None = None
    firstphase_width: int = 0
    firstphase_height: int = 0
    refiner: RefinerOptions | None = None
    restore_faces: bool | None = None
    tiling: bool | None = None
    checkpoint: str | None = None
    clip_skip: int | None = None  # the request's own clip skip (None: option CLIP_stop_at_last_layers)
    disable_extra_networks: bool = False  # leave <lora:...> and other tags in the text, activate nothing
    override_settings: Mapping[str, Any] = field(default_factory=dict)
    save_images: bool = False
    # A1111's p.do_not_save_grid: the API sets it to ``not save_images`` (so API clients get no grid by default),
    # the UI leaves it False
    do_not_save_grid: bool = False
    # the always-on scripts' parsed args by lower-case title (ControlNet: its units), filled by the plugins'
    # prepare_script_args (API) or ui_script_args (UI); each plugin reads its own entry
    extension_args: Mapping[str, Any] = field(default_factory=dict)
    task_id: str | None = None
    # Set by the adapter when it had to fall back (A1111 falls back silently; we record it in `info`).
    sampler_fallback: str | None = None

    def replace(self, **changes: Any) -> "GenerationRequest":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class GenerationResult:
    """Images (PIL) plus the per-image infotexts, seeds and A1111's ``Processed.js()`` info dict."""

    images: list
    infotexts: list[str]
    seeds: list[int]
    subseeds: list[int]
    info: dict
    request: GenerationRequest
    saved_paths: list[str] = field(default_factory=list)
