"""Engine.generate: THE one generation path, for the API and the UI alike.

Runs on the queue's worker thread only (it owns the models). A request is never changed; the effective settings are
a copy with the request's ``override_settings`` applied.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from webui.core import infotext as infotext_mod
from webui.core import noise as noise_mod
from webui.core.conditioning import encode_prompts
from webui.core.devices import DevicePlan
from webui.core.images import save_generated_image
from webui.core.loader import CheckpointLoadError, ModelComponents, load_components
from webui.core.registry import CheckpointNotFound, CheckpointRegistry
from webui.core.settings import Settings
from webui.core.types import CheckpointInfo, GenerationRequest, GenerationResult

log = logging.getLogger(__name__)

# The A1111 release whose behaviour (infotext, API, sampling) we reproduce. Written as "Version" in infotexts and
# `info.version`, because A1111's own infotext parser switches compatibility paths on that version number.
A1111_VERSION = "v1.10.1"


class GenerationError(ValueError):
    """A request that cannot be run as asked (bad value, unknown name); the message names the field and choices."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass
class EnginePaths:
    data_dir: str
    tokenizer_dir: str


class ModelCache:
    """Loaded checkpoints by file, most recent last, at most ``limit`` (option sd_checkpoints_limit).

    Switching back and forth never grows memory beyond the limit: the least recently used model is dropped first.
    """

    def __init__(self) -> None:
        self._models: OrderedDict[str, ModelComponents] = OrderedDict()

    def get(self, info: CheckpointInfo) -> ModelComponents | None:
        comp = self._models.get(info.filename)
        if comp is not None:
            self._models.move_to_end(info.filename)
        return comp

    def put(self, comp: ModelComponents, limit: int) -> None:
        self._models[comp.info.filename] = comp
        self._models.move_to_end(comp.info.filename)
        while len(self._models) > max(1, limit):
            _, dropped = self._models.popitem(last=False)
            log.info("Unloaded %s", dropped.info.title)
            del dropped
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def evict(self, limit: int) -> None:
        while len(self._models) > max(0, limit):
            self._models.popitem(last=False)

    @property
    def current(self) -> ModelComponents | None:
        return next(reversed(self._models.values()), None)


class Engine:
    def __init__(self, *, settings: Settings, registry: CheckpointRegistry, plan: DevicePlan, paths: EnginePaths):
        self.settings = settings
        self.registry = registry
        self.plan = plan
        self.paths = paths
        self.models = ModelCache()
        self._lock = threading.RLock()  # model loads from request threads (options) vs the worker

    # -- models ------------------------------------------------------------------------------------------------------

    def resolve_checkpoint(self, name: str | None) -> CheckpointInfo:
        """A checkpoint by any of A1111's aliases; None -> the stored setting, else the first file."""
        if name:
            info = self.registry.resolve(name)
            if info is None:
                raise CheckpointNotFound(name, [c.title for c in self.registry.list()])
            return info
        stored = self.settings.get("sd_model_checkpoint")
        info = self.registry.resolve(stored) if stored else None
        if info is None:
            info = self.registry.closest(stored) if stored else None
        if info is None:
            models = self.registry.list()
            if not models:
                raise CheckpointNotFound(stored or "(none)", [])
            info = models[0]
        return info

    def load(self, info: CheckpointInfo) -> ModelComponents:
        """The loaded model for ``info``, loading it (and evicting beyond the limit) when needed."""
        with self._lock:
            comp = self.models.get(info)
            if comp is not None:
                return comp
            info = self.registry.ensure_hash(info)
            t0 = time.time()
            comp = load_components(info, self.plan, self.paths.tokenizer_dir)
            log.info("Model %s loaded in %.1fs (%s, %s)", info.title, time.time() - t0, comp.arch, self.plan.description)
            self.models.put(comp, int(self.settings.get("sd_checkpoints_limit") or 1))
            return comp

    def current_model(self) -> ModelComponents | None:
        return self.models.current

    def unload(self) -> None:
        with self._lock:
            self.models.evict(0)

    # -- generation --------------------------------------------------------------------------------------------------

    def generate(self, request: GenerationRequest, progress=None) -> GenerationResult:
        from pipelines.a1111 import A1111Pipeline
        from webui.core.sampling_plan import plan_sampling

        opts = self.settings.with_overrides(_known_overrides(request.override_settings, self.registry))
        _validate(request)

        # 1. Model: override_settings > request > stored setting.
        ckpt_name = request.override_settings.get("sd_model_checkpoint") if request.override_settings else None
        if ckpt_name and self.registry.resolve(ckpt_name) is None:
            ckpt_name = None  # A1111 silently drops an unknown checkpoint in override_settings
        info = self.resolve_checkpoint(ckpt_name or request.checkpoint)
        comp = self.load(info)
        info = comp.info
        pipe = A1111Pipeline(comp)

        # 2. Sampler and schedule (already resolved to A1111 names by the adapter).
        plan = plan_sampling(
            request.sampler_name,
            request.scheduler,
            request.steps,
            pipe.model_sigmas,
            opts,
            eta=request.eta,
            s_churn=request.s_churn,
            s_tmin=request.s_tmin,
            s_tmax=request.s_tmax,
            s_noise=request.s_noise,
            is_sdxl=comp.is_sdxl,
            device=self.plan.device,
            lcm_sigmas=pipe.lcm_sigmas,
        )

        # 3. Seeds for every image of the job.
        n_images = request.batch_size * request.n_iter
        all_seeds, all_subseeds = noise_mod.resolve_seeds(
            request.seed, request.subseed, request.subseed_strength, n_images
        )
        all_prompts = [request.prompt] * n_images
        all_negative = [request.negative_prompt] * n_images
        clip_skip = int(opts.get("CLIP_stop_at_last_layers") or 1)
        width, height = request.width, request.height
        vsf = comp.vae_scale_factor
        shape = (comp.unet.config.in_channels if comp.unet.config.in_channels == 4 else 4, height // vsf, width // vsf)

        if progress is not None:
            progress.job_count = request.n_iter
            progress.sampling_steps = request.steps
        job_timestamp = progress.job_timestamp if progress is not None and progress.job_timestamp != "0" else _dt.datetime.now().strftime("%Y%m%d%H%M%S")

        images, infotexts, saved = [], [], []
        extra_params: dict[str, Any] = dict(plan.extra_infotext)
        cond_cache: dict[tuple, Any] = {}
        for it in range(request.n_iter):
            if progress is not None:
                if progress.interrupted:
                    break
                progress.job_no = it
                progress.skipped = False
            sl = slice(it * request.batch_size, (it + 1) * request.batch_size)
            seeds, subseeds = all_seeds[sl], all_subseeds[sl]

            # 4. Conditioning (cached across iterations with the same prompts).
            def cond_for(prompts, negative):
                key = (tuple(prompts), negative)
                if key not in cond_cache:
                    cond_cache[key] = encode_prompts(
                        comp,
                        prompts,
                        clip_skip=clip_skip,
                        width=width,
                        height=height,
                        is_negative=negative,
                        comma_padding_backtrack=int(opts.get("comma_padding_backtrack")),
                        sdxl_crop_top=int(opts.get("sdxl_crop_top")),
                        sdxl_crop_left=int(opts.get("sdxl_crop_left")),
                        refiner_aesthetic_score=float(
                            opts.get("sdxl_refiner_low_aesthetic_score" if negative else "sdxl_refiner_high_aesthetic_score")
                        ),
                    )
                return cond_cache[key]

            cond = cond_for(all_prompts[sl], False)
            uncond = cond_for(all_negative[sl], True)

            # 5. Noise from A1111's per-image RNG.
            rng = noise_mod.ImageRNG(
                shape,
                seeds,
                subseeds=subseeds,
                subseed_strength=request.subseed_strength,
                seed_resize_from_h=request.seed_resize_from_h,
                seed_resize_from_w=request.seed_resize_from_w,
                randn_source=opts.get("randn_source"),
                device=self.plan.device,
                eta_noise_seed_delta=int(opts.get("eta_noise_seed_delta") or 0),
            )
            x = rng.next()

            def on_step(step: int, steps: int, latent) -> None:
                if progress is not None:
                    progress.step(step, steps, latent)

            # 6. Sample, 7. decode.
            latents = pipe(
                cond=cond,
                uncond=uncond,
                cfg_scale=request.cfg_scale,
                noise=x,
                rng_next=rng.next,
                run=plan.run,
                seeds=seeds,
                callback=on_step,
                should_stop=(progress.should_stop if progress is not None else (lambda: False)),
            )
            batch_images = pipe.decode(latents)

            # 8. Infotext per image, save when asked.
            for j, image in enumerate(batch_images):
                index = it * request.batch_size + j
                text = self.create_infotext(
                    request, comp, opts, plan, all_prompts, all_negative, all_seeds, all_subseeds, index, extra_params
                )
                image.info["parameters"] = text
                images.append(image)
                infotexts.append(text)
                if request.save_images and opts.get("samples_save"):
                    saved.append(self._save(image, request, opts, all_seeds[index], all_prompts[index], text))
            if progress is not None and progress.interrupted:
                break

        info = self.processed_js(
            request, comp, opts, all_prompts, all_negative, all_seeds, all_subseeds, infotexts, extra_params,
            job_timestamp, clip_skip,
        )
        return GenerationResult(
            images=images,
            infotexts=infotexts,
            seeds=all_seeds,
            subseeds=all_subseeds,
            info=info,
            request=request,
            saved_paths=saved,
        )

    # -- infotext and info -------------------------------------------------------------------------------------------

    def create_infotext(self, request, comp, opts, plan, all_prompts, all_negative, all_seeds, all_subseeds, index, extra):
        """A1111 processing.create_infotext for image ``index``."""
        core = {
            "Steps": request.steps,
            "Sampler": plan.sampler_name,
            "Schedule type": request.scheduler,
            "CFG scale": float(request.cfg_scale),
            "Seed": all_seeds[index],
            "Size": f"{request.width}x{request.height}",
            "Model hash": comp.info.shorthash if opts.get("add_model_hash_to_info") else None,
            "Model": comp.info.stem if opts.get("add_model_name_to_info") else None,
            "Variation seed": None if request.subseed_strength == 0 else all_subseeds[index],
            "Variation seed strength": None if request.subseed_strength == 0 else float(request.subseed_strength),
            "Seed resize from": (
                None
                if request.seed_resize_from_w <= 0 or request.seed_resize_from_h <= 0
                else f"{request.seed_resize_from_w}x{request.seed_resize_from_h}"
            ),
            "Clip skip": None if int(opts.get("CLIP_stop_at_last_layers") or 1) <= 1 else int(opts.get("CLIP_stop_at_last_layers")),
            "ENSD": opts.get("eta_noise_seed_delta") if plan.uses_ensd else None,
            "RNG": opts.get("randn_source") if opts.get("randn_source") != "GPU" else None,
            "Tiling": None,
        }
        params = infotext_mod.ordered_params(
            core, extra, version=A1111_VERSION if opts.get("add_version_to_infotext") else None
        )
        return infotext_mod.build_infotext(all_prompts[index], all_negative[index], params)

    def processed_js(self, request, comp, opts, all_prompts, all_negative, all_seeds, all_subseeds, infotexts, extra,
                     job_timestamp, clip_skip) -> dict:
        """A1111 ``Processed.js()`` keys, in order (spec §6.6)."""
        info = {
            "prompt": all_prompts[0] if all_prompts else request.prompt,
            "all_prompts": all_prompts,
            "negative_prompt": all_negative[0] if all_negative else request.negative_prompt,
            "all_negative_prompts": all_negative,
            "seed": all_seeds[0] if all_seeds else request.seed,
            "all_seeds": all_seeds,
            "subseed": all_subseeds[0] if all_subseeds else request.subseed,
            "all_subseeds": all_subseeds,
            "subseed_strength": request.subseed_strength,
            "width": request.width,
            "height": request.height,
            "sampler_name": request.sampler_name,
            "cfg_scale": float(request.cfg_scale),
            "steps": request.steps,
            "batch_size": request.batch_size,
            "restore_faces": False,
            "face_restoration_model": None,
            "sd_model_name": comp.info.stem,
            "sd_model_hash": comp.info.shorthash,
            "sd_vae_name": None,
            "sd_vae_hash": None,
            "seed_resize_from_w": request.seed_resize_from_w,
            "seed_resize_from_h": request.seed_resize_from_h,
            "denoising_strength": request.denoising_strength,
            "extra_generation_params": dict(extra),
            "index_of_first_image": 0,
            "infotexts": infotexts,
            "styles": list(request.styles),
            "job_timestamp": job_timestamp,
            "clip_skip": clip_skip,
            "is_using_inpainting_conditioning": False,
            "version": A1111_VERSION,
        }
        if request.sampler_fallback:
            # A1111 falls back silently; we keep its result but tell the client what happened.
            info["sampler_fallback"] = request.sampler_fallback
        return info

    def _save(self, image, request, opts, seed, prompt, text) -> str:
        kind = "img2img" if request.mode != "txt2img" else "txt2img"
        outdir = opts.get("outdir_samples") or opts.get(f"outdir_{kind}_samples")
        if not os.path.isabs(outdir):
            outdir = os.path.join(self.paths.data_dir, outdir)
        return save_generated_image(
            image,
            outdir,
            seed,
            prompt,
            text if opts.get("enable_pnginfo") else None,
            fmt=opts.get("samples_format"),
            save_to_dirs=bool(opts.get("save_to_dirs")),
            directories_filename_pattern=opts.get("directories_filename_pattern") or "[date]",
            # The issue's NNNNN-SEED-PROMPT naming: A1111's "[seed]-[prompt_spaces]" pattern when none is set.
            samples_filename_pattern=opts.get("samples_filename_pattern") or "[seed]-[prompt_spaces]",
            add_number=bool(opts.get("save_images_add_number")),
            jpeg_quality=int(opts.get("jpeg_quality")),
        )


def _known_overrides(overrides, registry) -> dict:
    """override_settings minus an unknown sd_model_checkpoint (A1111 drops it silently, §6.5)."""
    if not overrides:
        return {}
    out = dict(overrides)
    ckpt = out.get("sd_model_checkpoint")
    if ckpt is not None and registry.resolve(ckpt) is None:
        out.pop("sd_model_checkpoint")
    return out


def _validate(request: GenerationRequest) -> None:
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
    for field_name, ok, why in checks:
        if not ok:
            raise GenerationError(f"{field_name} {why} (got {getattr(request, field_name)})", field_name)
