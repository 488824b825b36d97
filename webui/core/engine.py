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
    def __init__(self, *, settings: Settings, registry: CheckpointRegistry, plan: DevicePlan, paths: EnginePaths,
                 vae_registry=None, loras=None, embeddings=None, hypernetworks=None, styles=None,
                 vae_path: str | None = None):
        """The optional collaborators are the model-folder databases of AppState (VaeRegistry, LoraRegistry,
        EmbeddingDatabase, HypernetworkRegistry, StyleDatabase); a missing one turns its feature off."""
        from webui.core.vae import VaeCache

        self.settings = settings
        self.registry = registry
        self.plan = plan
        self.paths = paths
        self.vae_registry = vae_registry
        self.vae_path = vae_path  # --vae-path: wins over the sd_vae option, as in A1111
        self.loras = loras
        self.embeddings = embeddings
        self.hypernetworks = hypernetworks
        self.styles = styles
        self.vae_cache = VaeCache()
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
        """A1111 process_images for txt2img: everything a request changes (settings, networks, VAE) is scoped to
        this call and undone when it returns or fails."""
        from contextlib import ExitStack

        from pipelines.a1111 import A1111Pipeline
        from webui.core import prompts as prompt_parser
        from webui.core.conditioning import (
            EncoderOptions,
            PromptEncoder,
            ScheduledConds,
            SchedulingOptions,
            get_learned_conditioning,
            get_multicond_learned_conditioning,
        )
        from webui.core.samplers import find_sampler
        from webui.core.sampling_plan import plan_sampling

        opts = self.settings.with_overrides(_known_overrides(request.override_settings, self.registry))
        _validate(request)
        comments: list[str] = []

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
        spec = find_sampler(request.sampler_name)
        # Prompt-editing steps count model calls, which second-order samplers make twice per step (A1111's
        # setup_conds: sampler_config.total_steps).
        sched = SchedulingOptions(
            steps=spec.total_steps(request.steps) if spec is not None else request.steps,
            use_old_scheduling=bool(opts.get("use_old_scheduling")),
        )

        # 3. Seeds for every image of the job.
        n_images = request.batch_size * request.n_iter
        all_seeds, all_subseeds = noise_mod.resolve_seeds(
            request.seed, request.subseed, request.subseed_strength, n_images
        )

        # 4. Prompts: styles, then comments (A1111's setup_prompts and the comments script). Extra-network tags stay
        #    in all_prompts (the infotext keeps them) and are taken out per batch below.
        prompt, negative = request.prompt, request.negative_prompt
        if request.styles and self.styles is not None:
            prompt = self.styles.apply_styles_to_prompt(prompt, list(request.styles))
            negative = self.styles.apply_negative_styles_to_prompt(negative, list(request.styles))
            unknown = self.styles.unknown(list(request.styles))
            if unknown:
                comments.append(f"Styles not found: {', '.join(unknown)}")
        if opts.get("enable_prompt_comments"):
            prompt, negative = prompt_parser.strip_comments(prompt), prompt_parser.strip_comments(negative)
        if not request.disable_extra_networks:
            prompt += self._option_network_tags(prompt, opts)
        all_prompts = [prompt] * n_images
        all_negative = [negative] * n_images
        clip_skip = self._clip_skip(request, opts)
        enc_options = EncoderOptions.from_settings(opts, clip_skip)
        width, height = request.width, request.height
        vsf = comp.vae_scale_factor
        shape = (comp.unet.config.in_channels if comp.unet.config.in_channels == 4 else 4, height // vsf, width // vsf)
        if self.embeddings is not None:
            self.embeddings.load(comp)  # rescans only when the folder changed (A1111 does this every generation)

        if progress is not None:
            progress.job_count = request.n_iter
            progress.sampling_steps = request.steps
        job_timestamp = progress.job_timestamp if progress is not None and progress.job_timestamp != "0" else _dt.datetime.now().strftime("%Y%m%d%H%M%S")

        images, infotexts, saved = [], [], []
        extra_params: dict[str, Any] = dict(plan.extra_infotext)
        cond_cache: dict[tuple, Any] = {}
        with ExitStack() as request_scope:
            # 5. VAE for this request (option sd_vae, possibly overridden), swapped in and restored afterwards.
            vae_info = self._use_vae(request_scope, comp, opts)
            networks_scope: ExitStack | None = None
            active_networks: tuple | None = None
            encoder: PromptEncoder | None = None
            try:
                for it in range(request.n_iter):
                    if progress is not None:
                        if progress.interrupted:
                            break
                        progress.job_no = it
                        progress.skipped = False
                    sl = slice(it * request.batch_size, (it + 1) * request.batch_size)
                    seeds, subseeds = all_seeds[sl], all_subseeds[sl]

                    # 6. Extra networks of this batch's prompts (A1111 parse_extra_network_prompts + activate):
                    #    re-activated only when they change between batches.
                    prompts = all_prompts[sl]
                    network_data: dict = {}
                    if not request.disable_extra_networks:
                        prompts, network_data = prompt_parser.parse_extra_networks_batch(prompts)
                    key = _network_key(network_data)
                    if key != active_networks:
                        if networks_scope is not None:
                            networks_scope.close()
                        networks_scope = ExitStack()
                        self._activate_networks(networks_scope, comp, network_data, extra_params, comments)
                        active_networks = key
                        encoder = None  # text-encoder weights may have changed
                    if encoder is None:
                        encoder = PromptEncoder(comp, enc_options, width=width, height=height,
                                                embeddings=self.embeddings)

                    # 7. Conditioning: schedules and AND parts (cached across batches with the same prompts).
                    ckey = (tuple(prompts), tuple(all_negative[sl]), active_networks)
                    if ckey not in cond_cache:
                        uc = get_learned_conditioning(encoder, all_negative[sl], sched, is_negative=True)
                        c = get_multicond_learned_conditioning(encoder, prompts, sched)
                        cond_cache[ckey] = ScheduledConds(c, uc)
                    conds = cond_cache[ckey]

                    # 8. Noise from A1111's per-image RNG.
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

                    # 9. Sample, 10. decode.
                    latents = pipe(
                        conds=conds,
                        cfg_scale=request.cfg_scale,
                        noise=x,
                        rng_next=rng.next,
                        run=plan.run,
                        seeds=seeds,
                        callback=on_step,
                        should_stop=(progress.should_stop if progress is not None else (lambda: False)),
                        batch_cond_uncond=bool(opts.get("batch_cond_uncond")),
                    )
                    batch_images = pipe.decode(latents)
                    extra_params.update(encoder.report.infotext_params(
                        bool(opts.get("textual_inversion_add_hashes_to_infotext"))))

                    # 11. Infotext per image, save when asked.
                    for j, image in enumerate(batch_images):
                        index = it * request.batch_size + j
                        text = self.create_infotext(
                            request, comp, opts, plan, all_prompts, all_negative, all_seeds, all_subseeds, index,
                            extra_params, clip_skip, vae_info,
                        )
                        image.info["parameters"] = text
                        images.append(image)
                        infotexts.append(text)
                        if request.save_images and opts.get("samples_save"):
                            saved.append(self._save(image, request, opts, all_seeds[index], all_prompts[index], text))
                    if progress is not None and progress.interrupted:
                        break
            finally:
                if networks_scope is not None:
                    networks_scope.close()

        for comment in comments:
            log.warning(comment)
        info = self.processed_js(
            request, comp, opts, all_prompts, all_negative, all_seeds, all_subseeds, infotexts, extra_params,
            job_timestamp, clip_skip, vae_info, comments,
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

    # -- per-request scopes ------------------------------------------------------------------------------------------

    @staticmethod
    def _clip_skip(request: GenerationRequest, opts) -> int:
        """Clip skip in effect: override_settings' CLIP_stop_at_last_layers, else the request's ``clip_skip``
        field (what SD.Next-style clients send), else the stored option."""
        if request.override_settings and "CLIP_stop_at_last_layers" in request.override_settings:
            return max(1, int(opts.get("CLIP_stop_at_last_layers") or 1))
        if request.clip_skip is not None and request.clip_skip > 0:
            return int(request.clip_skip)
        return max(1, int(opts.get("CLIP_stop_at_last_layers") or 1))

    def _use_vae(self, scope, comp, opts):
        """Resolve option sd_vae for this model (A1111 sd_vae.resolve_vae) and swap that VAE in for the request.
        Returns the resolution (for the infotext), or None when the checkpoint's own VAE is used."""
        from webui.core import vae as vae_mod

        if self.vae_registry is None:
            return None
        resolution = vae_mod.resolve_vae(
            comp.info.filename, opts.get("sd_vae"), self.vae_registry,
            overrides_per_model_preferences=bool(opts.get("sd_vae_overrides_per_model_preferences")),
            vae_path=self.vae_path,
        )
        if resolution.warning:
            log.warning(resolution.warning)
        if resolution.path is None:
            return None
        module = self.vae_cache.get(resolution.path, comp.arch, self.plan)
        scope.enter_context(vae_mod.use_vae(comp, module))
        return resolution

    def _option_network_tags(self, prompt: str, opts) -> str:
        """The tags A1111 appends for the "Add network to prompt" (``sd_lora``) and "Add hypernetwork to prompt"
        (``sd_hypernetwork``) options, unless the prompt already names that network (extra_networks_lora/_hypernet
        activate). They become part of the prompt, so the infotext shows them, as in A1111."""
        from webui.core import hypernetworks as hn_mod
        from webui.core import prompts as prompt_parser

        _, data = prompt_parser.parse_extra_networks(prompt)
        mult = opts.get("extra_networks_default_multiplier")
        tags = ""
        sd_lora = opts.get("sd_lora")
        if sd_lora and sd_lora != "None" and self.loras is not None and self.loras.resolve(sd_lora) is not None:
            named = [p for p in data.get("lora", []) + data.get("lyco", []) if tuple(p.positional)[:1] == (sd_lora,)]
            if not named:
                tags += f"<lora:{sd_lora}:{mult}>"
        if self.hypernetworks is not None:
            tag = hn_mod.prompt_tag_for_setting(opts.get("sd_hypernetwork"), data.get("hypernet", []),
                                                self.hypernetworks, mult)
            tags += tag or ""
        return tags

    def _activate_networks(self, scope, comp, network_data: dict, extra_params: dict, comments: list[str]) -> None:
        """A1111 extra_networks.activate for LoRA/LyCORIS and hypernetworks, scoped to ``scope``."""
        from webui.core import hypernetworks as hn_mod
        from webui.core import networks as lora_mod

        extra_params.pop("Lora hashes", None)
        lora_params = list(network_data.get("lora", [])) + list(network_data.get("lyco", []))
        if lora_params and self.loras is not None:
            activations = lora_mod.activations_from_params(lora_params)
            applied = scope.enter_context(lora_mod.apply_networks(comp, activations, self.loras))
            if applied.missing:
                comments.append(f"Lora not found: {', '.join(applied.missing)}")
            comments.extend(applied.errors)
            hashes = applied.hashes_infotext()
            if hashes and self.settings.get("lora_add_hashes_to_infotext"):
                extra_params["Lora hashes"] = hashes
        elif lora_params:
            comments.append("Lora not found: " + ", ".join(p.positional[0] for p in lora_params if p.positional))
        hn_params = list(network_data.get("hypernet", []))
        if hn_params and self.hypernetworks is not None:
            try:
                pairs, missing = hn_mod.activations_from_params(hn_params, self.hypernetworks)
            except ValueError as e:
                raise GenerationError(str(e), "prompt") from e
            if missing:
                comments.append(f"Hypernetwork not found: {', '.join(missing)}")
            loaded = []
            for info, mult in pairs:
                try:
                    loaded.append((self.hypernetworks.load(info), mult))
                except hn_mod.HypernetworkLoadError as e:
                    comments.append(str(e))  # A1111 logs a failed file and goes on without it
            if loaded:
                scope.enter_context(hn_mod.apply_hypernetworks(comp.unet, loaded))
        unknown = sorted(set(network_data) - {"lora", "lyco", "hypernet"})
        if unknown:
            # A1111 logs "Skipping unknown extra network" for tags no extension handles
            comments.append(f"Unknown extra networks skipped: {', '.join(unknown)}")

    # -- infotext and info -------------------------------------------------------------------------------------------

    def create_infotext(self, request, comp, opts, plan, all_prompts, all_negative, all_seeds, all_subseeds, index, extra,
                        clip_skip=1, vae_info=None):
        """A1111 processing.create_infotext for image ``index``."""
        vae_params = self._vae_infotext(vae_info, opts)
        core = {
            "Steps": request.steps,
            "Sampler": plan.sampler_name,
            "Schedule type": request.scheduler,
            "CFG scale": float(request.cfg_scale),
            "Seed": all_seeds[index],
            "Size": f"{request.width}x{request.height}",
            "Model hash": comp.info.shorthash if opts.get("add_model_hash_to_info") else None,
            "Model": comp.info.stem if opts.get("add_model_name_to_info") else None,
            "VAE hash": vae_params.get("VAE hash"),
            "VAE": vae_params.get("VAE"),
            "Variation seed": None if request.subseed_strength == 0 else all_subseeds[index],
            "Variation seed strength": None if request.subseed_strength == 0 else float(request.subseed_strength),
            "Seed resize from": (
                None
                if request.seed_resize_from_w <= 0 or request.seed_resize_from_h <= 0
                else f"{request.seed_resize_from_w}x{request.seed_resize_from_h}"
            ),
            "Clip skip": None if clip_skip <= 1 else clip_skip,
            "ENSD": opts.get("eta_noise_seed_delta") if plan.uses_ensd else None,
            "RNG": opts.get("randn_source") if opts.get("randn_source") != "GPU" else None,
            "Tiling": None,
        }
        params = infotext_mod.ordered_params(
            core, extra, version=A1111_VERSION if opts.get("add_version_to_infotext") else None
        )
        return infotext_mod.build_infotext(all_prompts[index], all_negative[index], params)

    def _vae_infotext(self, vae_info, opts) -> dict:
        if vae_info is None:
            return {}
        from webui.core.vae import vae_infotext

        return vae_infotext(vae_info, self.registry.hash_cache, no_hashing=self.registry.no_hashing,
                            add_hash=bool(opts.get("add_vae_hash_to_info")), add_name=bool(opts.get("add_vae_name_to_info")))

    def processed_js(self, request, comp, opts, all_prompts, all_negative, all_seeds, all_subseeds, infotexts, extra,
                     job_timestamp, clip_skip, vae_info=None, comments=()) -> dict:
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
            "sd_vae_name": self._vae_infotext(vae_info, opts).get("VAE"),
            "sd_vae_hash": self._vae_infotext(vae_info, opts).get("VAE hash"),
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
        if comments:
            # A1111 shows these (missing LoRAs, ...) under the image in the UI; its info has no such key, so clients
            # that do not know it ignore it.
            info["comments"] = list(comments)
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


def _network_key(network_data: dict) -> tuple:
    """A hashable identity of a batch's extra-network tags (A1111 re-activates only when they change)."""
    return tuple(
        (kind, tuple((tuple(p.items), ) for p in params)) for kind, params in sorted(network_data.items())
    )


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
