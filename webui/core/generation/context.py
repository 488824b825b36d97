"""The per-request context every stage of a generation reads and fills: A1111's ``p``.

``Engine.generate`` builds one :class:`GenerationContext` per request and passes it through the stage modules
(img2img, sampling, hires, refiner, extra networks, processed, outputs) and to the plugin hooks, instead of long
parameter lists. The request itself stays frozen; what a stage decides (sizes, seeds, prompts, infotext entries,
comments, the loaded model) is written here. Attribute names follow A1111's ``StableDiffusionProcessing`` where one
exists (``all_prompts``, ``all_seeds``, ``extra_generation_params``, ``sd_model``, ...); any other attribute falls
through to the request (``p.steps``, ``p.cfg_scale``, ``p.sampler_name``, ``p.override_settings`` ...).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from webui.core.types import CheckpointInfo, GenerationRequest

# The A1111 release whose behaviour (infotext, API, sampling) we reproduce. Written as "Version" in infotexts and
# `info.version`, because A1111's own infotext parser switches compatibility paths on that version number.
A1111_VERSION = "v1.10.1"


class GenerationError(ValueError):
    """A request that cannot be run as asked (bad value, unknown name); the message names the field and choices."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass
class GenerationContext:
    """One request on its way through the engine (A1111's ``p``). Built by ``Engine.generate``; stages fill it."""

    request: GenerationRequest
    opts: Any  # the effective Settings: stored options with the request's override_settings applied
    services: Any  # the Engine: model manager, networks databases, upscalers, face restorers
    progress: Any = None  # the queue's ProgressTracker (None outside the queue)
    plugins: Any = None  # webui.plugins.manager.PluginManager (None: no plugin is called)
    # models
    sd_model: Any = None  # the loaded ModelComponents of the first pass
    pipe: Any = None  # its A1111Pipeline
    hr_checkpoint: CheckpointInfo | None = None
    refiner_checkpoint: CheckpointInfo | None = None
    vae_info: Any = None  # the resolved external VAE (None: the checkpoint's own)
    # sizes and seeds
    init: Any = None  # img2img.Img2ImgInit for img2img/inpaint
    mask_round: bool | None = None  # A1111 p.mask_round set by a script before init (None: the request's)
    hr: Any = None  # imageops.HiresTarget for txt2img with hires fix
    width: int = 0  # the first pass's size (A1111's p.width / p.height)
    height: int = 0
    batch_size: int = 1
    all_seeds: list[int] = field(default_factory=list)
    all_subseeds: list[int] = field(default_factory=list)
    # prompts (after styles and comments; extra-network tags kept, as in the infotext)
    all_prompts: list[str] = field(default_factory=list)
    all_negative_prompts: list[str] = field(default_factory=list)
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    clip_skip: int = 1
    enc_options: Any = None  # conditioning.EncoderOptions
    first_pass: Any = None  # sampling.PassPlan of the first pass
    restore_faces: bool = False
    job_timestamp: str = ""
    # what the job reports
    extra_generation_params: dict[str, Any] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)
    # plugin contributions: UNet hooks for both passes (ControlNet); per-plugin state of this request by plugin name
    unet_hooks: list = field(default_factory=list)
    plugin_data: dict[str, Any] = field(default_factory=dict)
    # the request's scope (set by Engine.generate before the process hook): a plugin enters a per-request change
    # here (scope.enter_context(cm)) and it is undone when the request ends, also on error (house rule 3)
    scope: ExitStack | None = None
    # per-batch state: the active extra networks, prompt encoders, conditioning caches
    batches: "BatchState" = field(default_factory=lambda: BatchState())
    iteration: int = 0

    def __getattr__(self, name: str) -> Any:
        # only called for names that are not fields: the request's fields under A1111's names (p.steps, ...)
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.__dict__["request"], name)

    @property
    def n_iter(self) -> int:
        """The batch count: the request's, unless a plugin's ``process`` changed it (A1111 scripts set ``p.n_iter``:
        Dynamic Prompts makes one batch per ``batch_size`` prompts it generated)."""
        return self.__dict__.get("_n_iter", self.request.n_iter)

    @n_iter.setter
    def n_iter(self, value: int) -> None:
        self.__dict__["_n_iter"] = int(value)

    @property
    def script_args(self) -> tuple:
        """The job's positional script args (A1111 p.script_args); always-on scripts read their slice."""
        return tuple(self.request.extension_args.get("script_args") or ())

    @property
    def all_hr_prompts(self) -> list[str]:
        return [self.hr_prompt] * len(self.all_prompts) if self.hr is not None else []

    @property
    def all_hr_negative_prompts(self) -> list[str]:
        return [self.hr_negative_prompt] * len(self.all_negative_prompts) if self.hr is not None else []

    @property
    def tiling(self) -> bool:
        """The effective tiling (request field, else option tiling), as A1111 fills p.tiling before scripts run."""
        from webui.core.generation import tiling

        return tiling.enabled(self)

    @property
    def outpath_samples(self) -> str:
        from webui.core.io.files import output_dir

        return output_dir(self.opts.get, "img2img" if self.is_img2img else "txt2img", self.services.paths.data_dir)

    @property
    def outpath_grids(self) -> str:
        from webui.core.io.files import output_dir

        return output_dir(self.opts.get, "img2img" if self.is_img2img else "txt2img", self.services.paths.data_dir,
                          grid=True)

    @property
    def is_img2img(self) -> bool:
        return self.request.mode != "txt2img"

    @property
    def passes(self) -> int:
        """Sampling passes per batch (2 with hires fix): the progress job count is n_iter * passes."""
        return 2 if self.hr is not None else 1

    def interrupted(self) -> bool:
        return self.progress is not None and self.progress.interrupted

    def skipped(self) -> bool:
        return self.progress is not None and (self.progress.interrupted or self.progress.skipped)

    def call_hook(self, name: str, **kwargs: Any) -> list:
        """Call plugin hook ``name`` with this context as ``p``; nothing when no plugin manager is attached."""
        if self.plugins is None:
            return []
        return self.plugins.call(name, p=self, **kwargs)


@dataclass
class BatchState:
    """Per-request state across batches: the active extra networks (one ExitStack), prompt encoders and
    conditioning caches (A1111's get_conds_with_caching)."""

    network_key: tuple | None = None
    networks_scope: ExitStack | None = None
    encoders: dict = field(default_factory=dict)
    cond_cache: dict = field(default_factory=dict)

    def conds(self, encoder, prompts, negatives, sched):
        from webui.core.generation.conditioning import (
            ScheduledConds,
            get_learned_conditioning,
            get_multicond_learned_conditioning,
        )

        key = (id(encoder), self.network_key, tuple(prompts), tuple(negatives), sched)
        if key not in self.cond_cache:
            uc = get_learned_conditioning(encoder, list(negatives), sched, is_negative=True)
            c = get_multicond_learned_conditioning(encoder, list(prompts), sched)
            self.cond_cache[key] = ScheduledConds(c, uc)
        return self.cond_cache[key]

    def report_params(self, opts) -> dict:
        out: dict = {}
        for encoder in self.encoders.values():
            out.update(encoder.report.infotext_params(bool(opts.get("textual_inversion_add_hashes_to_infotext"))))
        return out

    def close_networks(self) -> None:
        if self.networks_scope is not None:
            self.networks_scope.close()
            self.networks_scope = None

    def close(self) -> None:
        self.close_networks()


def short_title(info: CheckpointInfo) -> str:
    """A1111 CheckpointInfo.short_title: "<file stem> [<shorthash>]" as the Refiner / Hires checkpoint infotext."""
    return f"{info.stem} [{info.shorthash}]" if info.shorthash else info.stem


def known_overrides(overrides, registry) -> dict:
    """override_settings minus an unknown sd_model_checkpoint (A1111 drops it silently, §6.5)."""
    if not overrides:
        return {}
    out = dict(overrides)
    ckpt = out.get("sd_model_checkpoint")
    if ckpt is not None and registry.resolve(ckpt) is None:
        out.pop("sd_model_checkpoint")
    return out


def validate_request(request: GenerationRequest) -> None:
    """Reject values A1111 would crash on (500) with a 4xx-worthy message naming the field."""
    checks = [
        ("steps", request.steps >= 1, "must be at least 1"),
        ("width", request.width >= 8, "must be at least 8 (the latent is width // 8)"),
        ("height", request.height >= 8, "must be at least 8 (the latent is height // 8)"),
        ("width", request.width <= 16384, "must be at most 16384"),
        ("height", request.height <= 16384, "must be at most 16384"),
        ("batch_size", request.batch_size >= 1, "must be at least 1"),
        ("n_iter", request.n_iter >= 1, "must be at least 1"),
    ]
    if request.denoising_strength is not None:
        checks.append(("denoising_strength", 0.0 <= request.denoising_strength <= 1.0, "must be between 0 and 1"))
    if request.mode != "txt2img":
        checks.append(("denoising_strength", request.denoising_strength is not None,
                       "is needed for img2img (0 keeps the init image, 1 ignores it)"))
        checks.append(("resize_mode", request.resize_mode in (0, 1, 2, 3),
                       "must be 0 (Just resize), 1 (Crop and resize), 2 (Resize and fill) or 3 (latent upscale)"))
    if request.inpaint is not None:
        inp = request.inpaint
        if inp.inpainting_fill not in (0, 1, 2, 3):
            raise GenerationError(f"inpainting_fill must be 0 (fill), 1 (original), 2 (latent noise) or 3 (latent "
                                  f"nothing) (got {inp.inpainting_fill})", "inpainting_fill")
        if inp.mask_blur_x < 0 or inp.mask_blur_y < 0 or inp.mask_blur_x > 256 or inp.mask_blur_y > 256:
            raise GenerationError("mask_blur must be between 0 and 256", "mask_blur")
    if request.refiner is not None and not 0.0 <= request.refiner.switch_at <= 1.0:
        raise GenerationError(f"refiner_switch_at must be between 0 and 1 (got {request.refiner.switch_at})",
                              "refiner_switch_at")
    if request.hires is not None:
        h = request.hires
        if not (0 < h.scale <= 8 or h.resize_x or h.resize_y):
            raise GenerationError(f"hr_scale must be above 0 and at most 8 (got {h.scale})", "hr_scale")
        for name, v in (("hr_resize_x", h.resize_x), ("hr_resize_y", h.resize_y)):
            if not 0 <= v <= 16384:
                raise GenerationError(f"{name} must be between 0 and 16384 (got {v})", name)
        if h.second_pass_steps < 0:
            raise GenerationError("hr_second_pass_steps must be 0 (same as steps) or more", "hr_second_pass_steps")
    for field_name, ok, why in checks:
        if not ok:
            raise GenerationError(f"{field_name} {why} (got {getattr(request, field_name)})", field_name)
