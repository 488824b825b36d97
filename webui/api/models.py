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


class StableDiffusionTxt2ImgProcessingAPI(A1111Model):
    """POST /sdapi/v1/txt2img body (spec §6.2), in A1111's field order. Every field may be null (A1111's Optional)."""

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


# -- the one request mapping -----------------------------------------------------------------------------------------


def _or(value, default):
    return default if value is None else value


def to_request(body: StableDiffusionTxt2ImgProcessingAPI, *, mode: str = "txt2img", task_id: str | None = None,
               override_settings: dict[str, Any] | None = None) -> GenerationRequest:
    """The one A1111 txt2img body -> GenerationRequest mapping (sampler resolution per spec §6.3).

    ``override_settings`` is the body's, already checked and coerced by the handler (``webui.api.options``).
    """
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
        override_settings=dict(body.override_settings or {}) if override_settings is None else dict(override_settings),
        save_images=bool(body.save_images),
        extension_args=dict(body.alwayson_scripts or {}),
        task_id=task_id,
        sampler_fallback=fallback,
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
