"""A1111's API request/response models (field names, defaults and order of v1.10.1's ``modules/api/models.py``) and
the one mapping from a request model to a :class:`GenerationRequest` (``to_request``).

A1111 runs pydantic v1: lenient coercion ("20" -> 20, 20.7 -> 20, numbers -> strings), every field Optional, unknown
keys ignored. We run pydantic v2 and restore those semantics with the annotated types below. Beyond A1111, request
values that could only crash a job (non-finite floats, absurd sizes) are refused with a 422 before anything is
queued or allocated; the limits are the ``MAX_*`` constants.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, create_model

from webui.core.types import GenerationRequest

# -- request limits (ours; A1111 has none and crashes or runs out of memory instead) ---------------------------------

#: Largest width or height accepted, in pixels (the engine's limit too). A 16384 px side is a 2048x2048 latent.
MAX_SIDE = 16384
#: Largest width * height * batch_size: one batch of at most 16384x16384 pixels (a 67 MB float latent).
MAX_BATCH_PIXELS = MAX_SIDE * MAX_SIDE
#: Largest batch_size * n_iter: every image's seed is drawn up front.
MAX_IMAGES = 10_000
#: Most sampling steps: the sigma schedule is allocated up front.
MAX_STEPS = 10_000
#: Seeds (and variation seeds) are signed 64-bit integers, what torch's generators take (-1 draws a random one).
MIN_SEED, MAX_SEED = -(2**63), 2**63 - 1


def _v1_int(value: Any) -> Any:
    """pydantic v1 int: ``int(value)`` -- floats truncate, bools become 0/1, integer strings parse ("20.5" fails)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return value
    return value


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError("must be a finite number (not inf or nan)")
    return value


Int = Annotated[int, BeforeValidator(_v1_int)]
Float = Annotated[float, AfterValidator(_finite)]


class A1111Model(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, protected_namespaces=())


class StableDiffusionProcessingAPI(A1111Model):
    """The fields txt2img and img2img share (spec §6.2 "Common to both"), in A1111's model order."""

    prompt: str | None = ""
    negative_prompt: str | None = ""
    styles: list[str] | None = None
    seed: Int | None = Field(-1, description="-1 draws a random seed; a signed 64-bit integer")
    subseed: Int | None = Field(-1, description="-1 draws a random variation seed; a signed 64-bit integer")
    subseed_strength: Float | None = 0
    seed_resize_from_h: Int | None = -1
    seed_resize_from_w: Int | None = -1
    sampler_name: str | None = Field(None, description="a name from /sdapi/v1/samplers; legacy names such as "
                                        "'DPM++ 2M Karras' are split into sampler and schedule type")
    scheduler: str | None = Field(None, description="a name or label from /sdapi/v1/schedulers")
    batch_size: Int | None = 1
    n_iter: Int | None = 1
    steps: Int | None = Field(50, description=f"1 to {MAX_STEPS}")
    cfg_scale: Float | None = 7.0
    width: Int | None = Field(512, description=f"8 to {MAX_SIDE} pixels")
    height: Int | None = Field(512, description=f"8 to {MAX_SIDE} pixels")
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool | None = False
    do_not_save_grid: bool | None = False
    eta: Float | None = None
    denoising_strength: Float | None = None
    s_min_uncond: Float | None = None
    s_churn: Float | None = None
    s_tmax: Float | None = None
    s_tmin: Float | None = None
    s_noise: Float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool | None = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: Float | None = None
    disable_extra_networks: bool | None = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None


class StableDiffusionTxt2ImgProcessingAPI(StableDiffusionProcessingAPI):
    """POST /sdapi/v1/txt2img body (spec §6.2), in A1111's field order. Every field may be null (A1111's Optional)."""

    enable_hr: bool | None = False
    firstphase_width: Int | None = 0
    firstphase_height: Int | None = 0
    hr_scale: Float | None = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: Int | None = 0
    hr_resize_x: Int | None = 0
    hr_resize_y: Int | None = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str | None = ""
    hr_negative_prompt: str | None = ""
    force_task_id: str | None = Field(None, description="the task id to use (for /sdapi/v1/progress?id_task= "
                                         "and /internal/progress); must not be queued or running already")
    sampler_index: str | None = Field("Euler", description="legacy: the sampler used when sampler_name is empty")
    script_name: str | None = None
    script_args: list | None = Field(default_factory=list)
    send_images: bool | None = True
    save_images: bool | None = False
    alwayson_scripts: dict[str, Any] | None = Field(default_factory=dict)
    infotext: str | None = None
    # Beyond A1111 (SD.Next/Forge clients and seed document 002 send it): clip skip for this request; an
    # override_settings CLIP_stop_at_last_layers wins. Left out of the ``parameters`` echo, which stays A1111's.
    clip_skip: Int | None = Field(None, exclude=True, description="clip skip for this request (beyond A1111)")


class StableDiffusionImg2ImgProcessingAPI(StableDiffusionProcessingAPI):
    """POST /sdapi/v1/img2img body (spec §6.2): the common fields, then img2img's, in A1111's model order."""

    denoising_strength: Float | None = Field(0.75, description="0 keeps the init image, 1 ignores it")
    init_images: list[str] | None = Field(None, description="base64 images (required); one is repeated for the batch")
    resize_mode: Int | None = Field(0, description="0 Just resize, 1 Crop and resize, 2 Resize and fill, "
                                                   "3 Just resize (latent upscale)")
    image_cfg_scale: Float | None = None
    mask: str | None = Field(None, description="base64 inpainting mask; white = repaint")
    mask_blur_x: Int | None = 4
    mask_blur_y: Int | None = 4
    mask_blur: Int | None = None
    mask_round: bool | None = True
    inpainting_fill: Int | None = Field(0, description="0 fill, 1 original, 2 latent noise, 3 latent nothing")
    inpaint_full_res: bool | None = Field(True, description="true: only the masked region (\"Only masked\")")
    inpaint_full_res_padding: Int | None = 0
    inpainting_mask_invert: Int | None = 0
    initial_noise_multiplier: Float | None = None
    latent_mask: str | None = None
    force_task_id: str | None = Field(None, description="the task id to use (for /sdapi/v1/progress?id_task= "
                                                        "and /internal/progress)")
    sampler_index: str | None = Field("Euler", description="legacy: the sampler used when sampler_name is empty")
    include_init_images: bool | None = Field(False, description="echo init_images and mask in `parameters`")
    script_name: str | None = None
    script_args: list | None = Field(default_factory=list)
    send_images: bool | None = True
    save_images: bool | None = False
    alwayson_scripts: dict[str, Any] | None = Field(default_factory=dict)
    infotext: str | None = None
    clip_skip: Int | None = Field(None, exclude=True, description="clip skip for this request (beyond A1111)")


class ImageToImageResponse(BaseModel):
    images: list[str] | None = Field(default=None, title="Image", description="The generated image in base64 format.")
    parameters: dict
    info: str


class TextToImageResponse(BaseModel):
    images: list[str] | None = Field(default=None, title="Image", description="The generated image in base64 format.")
    parameters: dict
    info: str


class PNGInfoRequest(A1111Model):
    image: str = Field(title="Image", description="The base64 encoded PNG image (a data: URL is accepted too)")


class PNGInfoResponse(BaseModel):
    info: str = Field(title="Image info", description="A string with the parameters used to generate the image")
    items: dict = Field(title="Items", description="A dictionary containing all the other fields the image had")
    parameters: dict = Field(title="Parameters", description="A dictionary with parsed generation info fields")


class ProgressState(BaseModel):
    """A1111 ``shared.state.dict()``."""

    skipped: bool
    interrupted: bool
    stopping_generation: bool
    job: str
    job_count: int
    job_timestamp: str
    job_no: int
    sampling_step: int
    sampling_steps: int


class ProgressResponse(BaseModel):
    progress: float = Field(title="Progress", description="The progress with a range of 0 to 1")
    eta_relative: float = Field(title="ETA in secs")
    state: ProgressState = Field(title="State", description="The current state snapshot")
    current_image: str | None = Field(default=None, title="Current image", description="The current image in "
                                         "base64 format. opts.show_progress_every_n_steps is required for this to work.")
    textinfo: str | None = Field(default=None, title="Info text", description="Info text used by WebUI.")


class TaskProgressResponse(ProgressResponse):
    """GET /sdapi/v1/progress?id_task=... (ours): the progress of that task only, plus where it stands."""

    id_task: str = Field(title="Task ID")
    status: Literal["queued", "running", "finished", "interrupted", "failed", "cancelled", "unknown"] = Field(
        title="Status", description="queued: waiting (see queue_position); running; finished, interrupted, failed "
        "or cancelled: done; unknown: never seen (or long forgotten)")
    queue_position: int | None = Field(default=None, title="Queue position", description="1-based, while queued")
    queue_size: int = Field(default=0, title="Queue size", description="tasks waiting now")


class InternalProgressRequest(A1111Model):
    id_task: str | None = Field(default=None, title="Task ID", description="id of the task to get progress for")
    id_live_preview: Int = Field(default=-1, title="Live preview image ID",
                                 description="id of last received last preview image")
    live_preview: bool = Field(default=True, title="Include live preview", description="boolean flag indicating "
                               "whether to include the live preview image")


class InternalProgressResponse(BaseModel):
    active: bool = Field(title="Whether the task is being worked on right now")
    queued: bool = Field(title="Whether the task is in queue")
    completed: bool = Field(title="Whether the task has already finished")
    progress: float | None = Field(default=None, title="Progress", description="The progress with a range of 0 to 1")
    eta: float | None = Field(default=None, title="ETA in secs")
    live_preview: str | None = Field(default=None, title="Live preview image",
                                        description="Current live preview; a data: uri")
    id_live_preview: int | None = Field(default=None, title="Live preview image ID",
                                           description="Send this together with next request to prevent receiving "
                                           "same image")
    textinfo: str | None = Field(default=None, title="Info text", description="Info text used by WebUI.")


class PendingTasksResponse(BaseModel):
    size: int = Field(title="Pending task size")
    tasks: list[str] = Field(title="Pending task ids")


class EmptyResponse(BaseModel):
    """``{}``: what A1111 answers to interrupt, unload-checkpoint and reload-checkpoint."""


class SamplerItem(BaseModel):
    name: str = Field(title="Name")
    aliases: list[str] = Field(title="Aliases")
    options: dict[str, str] = Field(title="Options")


class SchedulerItem(BaseModel):
    name: str = Field(title="Name")
    label: str = Field(title="Label")
    aliases: list[str] | None = Field(title="Aliases")
    default_rho: float | None = Field(title="Default Rho")
    need_inner_model: bool | None = Field(title="Needs Inner Model")


class LatentUpscalerModeItem(BaseModel):
    name: str = Field(title="Name")


class SDModelItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    title: str = Field(title="Title")
    model_name: str = Field(title="Model Name")
    hash: str | None = Field(default=None, title="Short hash")
    sha256: str | None = Field(default=None, title="sha256 hash")
    filename: str = Field(title="Filename")
    config: str | None = Field(default=None, title="Config file")


class MemoryResponse(BaseModel):
    ram: dict = Field(title="RAM", description="System memory stats")
    cuda: dict = Field(title="CUDA", description="nVidia CUDA memory stats")


class ScriptsList(BaseModel):
    txt2img: list | None = Field(default=None, title="Txt2img", description="Titles of scripts (txt2img)")
    img2img: list | None = Field(default=None, title="Img2img", description="Titles of scripts (img2img)")


class ScriptArg(BaseModel):
    label: str | None = Field(default=None, title="Label", description="Name of the argument in UI")
    value: Any | None = Field(default=None, title="Value", description="Default value of the argument")
    minimum: Any | None = Field(default=None, title="Minimum", description="Minimum allowed value for the argument")
    maximum: Any | None = Field(default=None, title="Maximum", description="Maximum allowed value for the argument")
    step: Any | None = Field(default=None, title="Step", description="Step for changing value of the argument")
    choices: list[str] | None = Field(default=None, title="Choices", description="Possible values for the argument")


class ScriptInfo(BaseModel):
    name: str | None = Field(default=None, title="Name", description="Script name")
    is_alwayson: bool | None = Field(default=None, title="IsAlwayson",
                                        description="Flag specifying whether this script is an alwayson script")
    is_img2img: bool | None = Field(default=None, title="IsImg2img",
                                       description="Flag specifying whether this script is an img2img script")
    args: list[ScriptArg] = Field(title="Arguments", description="List of script's arguments")


class ExtensionItem(BaseModel):
    name: str = Field(title="Name", description="Extension name")
    remote: str = Field(title="Remote", description="Extension Repository URL")
    branch: str = Field(title="Branch", description="Extension Repository Branch")
    commit_hash: str = Field(title="Commit Hash", description="Extension Repository Commit Hash")
    version: str = Field(title="Version", description="Extension Version")
    commit_date: str = Field(title="Commit Date", description="Extension Repository Commit Date")
    enabled: bool = Field(title="Enabled", description="Flag specifying whether this extension is enabled")


class LoraItem(BaseModel):
    name: str = Field(title="Name")
    alias: str = Field(title="Alias")
    path: str = Field(title="Path")
    metadata: dict = Field(title="Metadata")


class EmbeddingItem(BaseModel):
    step: int | None = Field(default=None, title="Step", description="The number of steps that were used to train "
                                                                       "this embedding, if available")
    sd_checkpoint: str | None = Field(default=None, title="SD Checkpoint",
                                      description="The hash of the checkpoint this embedding was trained on")
    sd_checkpoint_name: str | None = Field(default=None, title="SD Checkpoint Name",
                                           description="The name of the checkpoint this embedding was trained on")
    shape: int = Field(title="Shape", description="The length of each individual vector in the embedding")
    vectors: int = Field(title="Vectors", description="The number of vectors in the embedding")


class EmbeddingsResponse(BaseModel):
    loaded: dict[str, EmbeddingItem] = Field(title="Loaded", description="Embeddings loaded for the current model")
    skipped: dict[str, EmbeddingItem] = Field(title="Skipped", description="Embeddings skipped for the current "
                                              "model (likely due to architecture incompatibility)")


class HypernetworkItem(BaseModel):
    name: str = Field(title="Name")
    path: str | None = Field(default=None, title="Path")


class SDVaeItem(BaseModel):
    model_name: str = Field(title="Model Name")
    filename: str = Field(title="Filename")


class PromptStyleItem(BaseModel):
    name: str = Field(title="Name")
    prompt: str | None = Field(default=None, title="Prompt")
    negative_prompt: str | None = Field(default=None, title="Negative Prompt")


def options_model() -> type[BaseModel]:
    """A1111's ``Options`` response model: one field per registered option, typed from its default.

    A1111 maps int to float and types falsy defaults as Any; we keep ints as ints (what a running A1111 v1.10.1
    returns, spec Corrections 2) and type falsy defaults from their type too, except None (Any).
    """
    from webui.core.settings import OPTIONS

    fields: dict[str, Any] = {}
    for opt in OPTIONS:
        kind = Any if opt.default is None else type(opt.default)
        fields[opt.key] = (kind | None, Field(default=opt.default, description=opt.label))
    return create_model("Options", **fields)


def flags_model(flags: dict[str, Any]) -> type[BaseModel]:
    """A1111's ``Flags`` response model (GET /sdapi/v1/cmd-flags): one field per argparse dest, in parser order."""
    from webui.config import build_parser

    helps = {a.dest: a.help for a in build_parser()._actions if a.dest != "help"}
    fields: dict[str, Any] = {}
    for dest, value in flags.items():
        kind = Any if value is None else type(value)
        help_text = helps.get(dest)
        description = None if help_text == "==SUPPRESS==" else help_text
        fields[dest] = (kind | None, Field(default=None, description=description))
    return create_model("Flags", **fields)


# -- infotext in the request (spec §6.5) --------------------------------------------------------------------------

def apply_infotext(body, settings=None, plugins=None):
    """A1111 api.apply_infotext: the request's ``infotext`` fills every field the JSON did not set explicitly, from
    the same paste table as the UI's paste button (``webui.core.io.paste``), and the settings it mentions join
    ``override_settings`` (the request's keys win). Returns a new body."""
    from webui.core.io import paste
    from webui.core.io.infotext import parse_generation_parameters

    if not body.infotext:
        return body
    params = parse_generation_parameters(body.infotext)
    if plugins is not None:
        plugins.call("on_infotext_pasted", infotext=body.infotext, params=params)  # A1111 infotext_pasted_callback
    explicit = body.model_fields_set
    fields = type(body).model_fields
    mode = "txt2img" if "enable_hr" in fields else "img2img"
    data = paste.api_values(params, mode, skip=lambda name: name not in fields or name in explicit)
    overrides = paste.infotext_settings(params)
    if "Model hash" in params and settings is not None and not settings.get("disable_weights_auto_swap"):
        overrides["sd_model_checkpoint"] = params.get("Model") or params["Model hash"]
    if overrides:
        data["override_settings"] = {**overrides, **(body.override_settings or {})}
    merged = {**data, **body.model_dump(include=explicit - {"override_settings"} if overrides else explicit)}
    return type(body).model_validate(merged)


# -- the one request mapping -----------------------------------------------------------------------------------------


def _or(value, default):
    return default if value is None else value


def to_request(body, *, mode: str = "txt2img", task_id: str | None = None,
               override_settings: dict[str, Any] | None = None, init_images: tuple[bytes, ...] = (),
               mask: bytes | None = None, extension_args: dict | None = None) -> GenerationRequest:
    """The one A1111 txt2img/img2img body -> GenerationRequest mapping (sampler resolution per spec §6.3).

    ``override_settings`` is the body's, already checked and coerced by the handler (``webui.api.options``);
    ``init_images`` and ``mask`` are the decoded bytes of the img2img body's base64 images.
    """
    from webui.core.types import HiresOptions, InpaintOptions, RefinerOptions

    from webui.core.generation.samplers import resolve_sampler_and_scheduler

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
        s_min_uncond=body.s_min_uncond,
        s_tmin=body.s_tmin,
        s_tmax=body.s_tmax,
        s_noise=body.s_noise,
        denoising_strength=body.denoising_strength,
        override_settings=dict(body.override_settings or {}) if override_settings is None else dict(override_settings),
        save_images=bool(body.save_images),
        do_not_save_grid=not bool(body.save_images),  # A1111 api.py: p.do_not_save_grid = not save_images
        extension_args=dict(extension_args or {}),
        task_id=task_id,
        sampler_fallback=fallback,
        clip_skip=body.clip_skip,
        disable_extra_networks=bool(body.disable_extra_networks),
        restore_faces=body.restore_faces,
        tiling=body.tiling,
        refiner=(RefinerOptions(checkpoint=body.refiner_checkpoint, switch_at=float(_or(body.refiner_switch_at, 0.8)))
                 if body.refiner_checkpoint not in (None, "", "None", "none") else None),
        **(_txt2img_fields(body, HiresOptions) if mode == "txt2img" else
           _img2img_fields(body, InpaintOptions, init_images, mask)),
    )


def _txt2img_fields(body, HiresOptions) -> dict[str, Any]:
    if not body.enable_hr:
        return {}
    return dict(
        hires=HiresOptions(
            scale=float(_or(body.hr_scale, 2.0)),
            upscaler=body.hr_upscaler or "Latent",
            second_pass_steps=_or(body.hr_second_pass_steps, 0),
            resize_x=_or(body.hr_resize_x, 0),
            resize_y=_or(body.hr_resize_y, 0),
            checkpoint=body.hr_checkpoint_name,
            sampler_name=body.hr_sampler_name or None,
            scheduler=body.hr_scheduler or None,
            prompt=_or(body.hr_prompt, ""),
            negative_prompt=_or(body.hr_negative_prompt, ""),
        ),
        firstphase_width=_or(body.firstphase_width, 0),
        firstphase_height=_or(body.firstphase_height, 0),
    )


def _img2img_fields(body, InpaintOptions, init_images, mask) -> dict[str, Any]:
    blur_x, blur_y = _or(body.mask_blur_x, 4), _or(body.mask_blur_y, 4)
    if body.mask_blur is not None:  # A1111's mask_blur setter: an int sets both
        blur_x = blur_y = body.mask_blur
    inpaint = None
    if mask is not None:
        inpaint = InpaintOptions(
            mask=mask, mask_blur_x=blur_x, mask_blur_y=blur_y, mask_round=bool(_or(body.mask_round, True)),
            inpainting_fill=_or(body.inpainting_fill, 0), inpaint_full_res=bool(_or(body.inpaint_full_res, True)),
            inpaint_full_res_padding=_or(body.inpaint_full_res_padding, 0),
            inpainting_mask_invert=_or(body.inpainting_mask_invert, 0),
        )
    return dict(
        init_images=tuple(init_images),
        resize_mode=_or(body.resize_mode, 0),
        image_cfg_scale=body.image_cfg_scale,
        initial_noise_multiplier=body.initial_noise_multiplier,
        inpaint=inpaint,
        include_init_images=bool(body.include_init_images),
    )


def limit_problems(body: StableDiffusionTxt2ImgProcessingAPI) -> list[tuple[str, str]]:
    """(field, message) for every value beyond the documented limits; checked before anything is queued."""
    problems = []
    for name in ("seed", "subseed"):
        value = getattr(body, name)
        if value is not None and not MIN_SEED <= value <= MAX_SEED:
            problems.append((name, f"{name} must be a signed 64-bit integer, {MIN_SEED} to {MAX_SEED} (got {value})"))
    for name in ("seed_resize_from_w", "seed_resize_from_h"):
        value = getattr(body, name)
        if value is not None and value > MAX_SIDE:
            problems.append((name, f"{name} must be at most {MAX_SIDE} pixels (got {value})"))
    if getattr(body, "enable_hr", False) and body.denoising_strength is None:
        # A1111 fails with a TypeError (500) here; a missing value is a request validation problem (422)
        problems.append(("denoising_strength", "denoising_strength is needed with enable_hr: Hires. fix runs its "
                                               "second pass at that strength, e.g. 0.7"))
    width, height = _or(body.width, 512), _or(body.height, 512)
    batch_size, n_iter, steps = _or(body.batch_size, 1), _or(body.n_iter, 1), _or(body.steps, 50)
    for name, value in (("width", width), ("height", height)):
        if value > MAX_SIDE:
            problems.append((name, f"{name} must be at most {MAX_SIDE} pixels (got {value})"))
    if steps > MAX_STEPS:
        problems.append(("steps", f"steps must be at most {MAX_STEPS} (got {steps})"))
    if batch_size > 0 and width > 0 and height > 0 and width * height * batch_size > MAX_BATCH_PIXELS:
        problems.append(("batch_size", (f"width * height * batch_size must be at most {MAX_BATCH_PIXELS} pixels "
                                        f"(got {width} * {height} * {batch_size})")))
    if batch_size > 0 and n_iter > 0 and batch_size * n_iter > MAX_IMAGES:
        problems.append(("n_iter", (f"batch_size * n_iter must be at most {MAX_IMAGES} images "
                                    f"(got {batch_size} * {n_iter})")))
    return problems
