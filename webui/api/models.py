"""A1111's API request/response models (field names, defaults and order of v1.10.1's models.py) and the one
mapping from a request model to a :class:`GenerationRequest` (``to_request``).

A1111 runs pydantic v1: lenient coercion ("20" -> 20, 20.7 -> 20, numbers -> strings), every field Optional, unknown
keys ignored. We run pydantic v2 and restore those semantics with the annotated types below.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from webui.core.types import GenerationRequest


def _v1_int(value: Any) -> Any:
    """pydantic v1 int: floats truncate, bools become 0/1, numeric strings parse."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                return int(float(text))
            except ValueError:
                return value
    return value


Int = Annotated[int, BeforeValidator(_v1_int)]


class A1111Model(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, protected_namespaces=())


class StableDiffusionTxt2ImgProcessingAPI(A1111Model):
    """POST /sdapi/v1/txt2img body (spec §6.2), in A1111's field order."""

    prompt: Optional[str] = ""
    negative_prompt: Optional[str] = ""
    styles: Optional[list[str]] = None
    seed: Optional[Int] = -1
    subseed: Optional[Int] = -1
    subseed_strength: Optional[float] = 0
    seed_resize_from_h: Optional[Int] = -1
    seed_resize_from_w: Optional[Int] = -1
    sampler_name: Optional[str] = None
    scheduler: Optional[str] = None
    batch_size: Optional[Int] = 1
    n_iter: Optional[Int] = 1
    steps: Optional[Int] = 50
    cfg_scale: Optional[float] = 7.0
    width: Optional[Int] = 512
    height: Optional[Int] = 512
    restore_faces: Optional[bool] = None
    tiling: Optional[bool] = None
    do_not_save_samples: Optional[bool] = False
    do_not_save_grid: Optional[bool] = False
    eta: Optional[float] = None
    denoising_strength: Optional[float] = None
    s_min_uncond: Optional[float] = None
    s_churn: Optional[float] = None
    s_tmax: Optional[float] = None
    s_tmin: Optional[float] = None
    s_noise: Optional[float] = None
    override_settings: Optional[dict[str, Any]] = None
    override_settings_restore_afterwards: Optional[bool] = True
    refiner_checkpoint: Optional[str] = None
    refiner_switch_at: Optional[float] = None
    disable_extra_networks: Optional[bool] = False
    firstpass_image: Optional[str] = None
    comments: Optional[dict[str, Any]] = None
    enable_hr: Optional[bool] = False
    firstphase_width: Optional[Int] = 0
    firstphase_height: Optional[Int] = 0
    hr_scale: Optional[float] = 2.0
    hr_upscaler: Optional[str] = None
    hr_second_pass_steps: Optional[Int] = 0
    hr_resize_x: Optional[Int] = 0
    hr_resize_y: Optional[Int] = 0
    hr_checkpoint_name: Optional[str] = None
    hr_sampler_name: Optional[str] = None
    hr_scheduler: Optional[str] = None
    hr_prompt: Optional[str] = ""
    hr_negative_prompt: Optional[str] = ""
    force_task_id: Optional[str] = None
    sampler_index: Optional[str] = "Euler"
    script_name: Optional[str] = None
    script_args: Optional[list] = Field(default_factory=list)
    send_images: Optional[bool] = True
    save_images: Optional[bool] = False
    alwayson_scripts: Optional[dict[str, Any]] = Field(default_factory=dict)
    infotext: Optional[str] = None


class TextToImageResponse(BaseModel):
    images: Optional[list[str]] = Field(default=None, title="Image", description="The generated image in base64 format.")
    parameters: dict
    info: str


class SDModelItem(BaseModel):
    title: str
    model_name: str
    hash: Optional[str] = None
    sha256: Optional[str] = None
    filename: str
    config: Optional[str] = None


def _or(value, default):
    return default if value is None else value


def to_request(body: StableDiffusionTxt2ImgProcessingAPI, *, mode: str = "txt2img", task_id: str | None = None) -> GenerationRequest:
    """The one A1111 txt2img body -> GenerationRequest mapping (sampler resolution per spec §6.3)."""
    from webui.core.samplers import resolve_sampler_and_scheduler

    res = resolve_sampler_and_scheduler(body.sampler_name, body.scheduler, body.sampler_index or "Euler")
    fallback = None
    if res.fell_back:
        fallback = f"unknown sampler {res.original!r}; A1111 falls back to {res.sampler.name!r}, and so did we"
    return GenerationRequest(
        mode=mode,
        prompt=_or(body.prompt, ""),
        negative_prompt=_or(body.negative_prompt, ""),
        styles=tuple(body.styles or ()),
        seed=_or(body.seed, -1),
        subseed=_or(body.subseed, -1),
        subseed_strength=float(_or(body.subseed_strength, 0.0)),
        seed_resize_from_w=_or(body.seed_resize_from_w, -1),
        seed_resize_from_h=_or(body.seed_resize_from_h, -1),
        sampler_name=res.sampler.name,
        scheduler=res.scheduler_label,
        steps=_or(body.steps, 50),
        cfg_scale=float(_or(body.cfg_scale, 7.0)),
        width=_or(body.width, 512),
        height=_or(body.height, 512),
        batch_size=_or(body.batch_size, 1),
        n_iter=_or(body.n_iter, 1),
        eta=body.eta,
        s_churn=body.s_churn,
        s_tmin=body.s_tmin,
        s_tmax=body.s_tmax,
        s_noise=body.s_noise,
        denoising_strength=body.denoising_strength,
        override_settings=dict(body.override_settings or {}),
        save_images=bool(body.save_images),
        extension_args=dict(body.alwayson_scripts or {}),
        task_id=task_id,
        sampler_fallback=fallback,
    )
