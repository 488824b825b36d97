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
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch

from webui.core.io import infotext as infotext_mod
from webui.core.generation import noise as noise_mod
from webui.core.devices import DevicePlan
from webui.core.io.images import save_generated_image
from webui.core.models.loader import ModelComponents, load_components
from webui.core.models.registry import CheckpointNotFound, CheckpointRegistry
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
                 vae_path: str | None = None, upscalers=None, controlnet=None, face_restorers=None):
        """The optional collaborators are the model-folder databases of AppState (VaeRegistry, LoraRegistry,
        EmbeddingDatabase, HypernetworkRegistry, StyleDatabase); a missing one turns its feature off."""
        from webui.core.networks.vae import VaeCache

        self.settings = settings
        self.registry = registry
        self.plan = plan
        self.paths = paths
        self.vae_registry = vae_registry
        self.vae_path = vae_path  # --vae-path: wins over the sd_vae option, as in A1111
        self.upscalers = upscalers  # pixel upscalers for the hires pass (webui.core.postprocess.extras); None: Lanczos/Nearest
        self.controlnet = controlnet  # webui.core.controlnet.ControlNetRegistry; None: ControlNet units refused
        self.face_restorers = face_restorers  # webui.core.postprocess.face_restore.FaceRestorers; None: restore_faces refused
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

    def load(self, info: CheckpointInfo, extra_slots: int = 0) -> ModelComponents:
        """The loaded model for ``info``, loading it (and evicting beyond the limit) when needed. ``extra_slots``
        lets a second model (refiner, hires checkpoint) stay beside the first for the request, so switching back
        and forth does not reload."""
        with self._lock:
            comp = self.models.get(info)
            if comp is not None:
                return comp
            info = self.registry.ensure_hash(info)
            t0 = time.time()
            comp = load_components(info, self.plan, self.paths.tokenizer_dir)
            log.info("Model %s loaded in %.1fs (%s, %s)", info.title, time.time() - t0, comp.arch, self.plan.description)
            self.models.put(comp, int(self.settings.get("sd_checkpoints_limit") or 1) + extra_slots)
            return comp

    def current_model(self) -> ModelComponents | None:
        return self.models.current

    def unload(self) -> None:
        with self._lock:
            self.models.evict(0)

    # -- generation --------------------------------------------------------------------------------------------------

    def generate(self, request: GenerationRequest, progress=None) -> GenerationResult:
        """A1111 process_images for txt2img and img2img (with inpainting, hires fix and the refiner): everything a
        request changes (settings, networks, VAE, model switches) is scoped to this call and undone when it returns
        or fails."""
        from contextlib import ExitStack

        from pipelines.a1111 import A1111Pipeline
        from webui.core.generation import prompts as prompt_parser
        from webui.core.generation.conditioning import EncoderOptions

        opts = self.settings.with_overrides(_known_overrides(request.override_settings, self.registry))
        _validate(request)
        comments: list[str] = []

        # 1. Model: override_settings > request > stored setting; hires and refiner checkpoints resolved up front so
        #    that a wrong name fails before any work (A1111 raises on them too, with a 500; we say which name).
        ckpt_name = request.override_settings.get("sd_model_checkpoint") if request.override_settings else None
        if ckpt_name and self.registry.resolve(ckpt_name) is None:
            ckpt_name = None  # A1111 silently drops an unknown checkpoint in override_settings
        info = self.resolve_checkpoint(ckpt_name or request.checkpoint)
        hr_info = refiner_info = None
        if request.hires is not None and request.hires.checkpoint not in (None, "", "Use same checkpoint"):
            hr_info = self._named_checkpoint(request.hires.checkpoint, "hr_checkpoint_name")
        if request.refiner is not None and request.refiner.checkpoint not in ("", "None"):
            refiner_info = self._named_checkpoint(request.refiner.checkpoint, "refiner_checkpoint")
        comp = self.load(info)
        info = comp.info
        pipe = A1111Pipeline(comp)

        # 2. Seeds for every image of the job; init images decide the batch size of img2img (A1111 init).
        init = self._prepare_img2img(request, comp, pipe, opts) if request.mode != "txt2img" else None
        batch_size = init.batch_size if init is not None else request.batch_size
        n_images = batch_size * request.n_iter
        all_seeds, all_subseeds = noise_mod.resolve_seeds(
            request.seed, request.subseed, request.subseed_strength, n_images
        )

        # 3. Sizes: txt2img with hires samples its first pass at the first-pass size.
        hr = self._hires_plan(request, opts) if request.hires is not None and request.mode == "txt2img" else None
        width, height = (hr.width, hr.height) if hr is not None else (request.width, request.height)

        # 4. Prompts: styles, then comments (A1111's setup_prompts and the comments script). Extra-network tags stay
        #    in all_prompts (the infotext keeps them) and are taken out per batch below.
        prompt, negative = request.prompt, request.negative_prompt
        hr_prompt = request.hires.prompt if request.hires is not None and request.hires.prompt else request.prompt
        hr_negative = (request.hires.negative_prompt if request.hires is not None and request.hires.negative_prompt
                       else request.negative_prompt)
        if request.styles and self.styles is not None:
            styles = list(request.styles)
            prompt = self.styles.apply_styles_to_prompt(prompt, styles)
            negative = self.styles.apply_negative_styles_to_prompt(negative, styles)
            hr_prompt = self.styles.apply_styles_to_prompt(hr_prompt, styles)
            hr_negative = self.styles.apply_negative_styles_to_prompt(hr_negative, styles)
            unknown = self.styles.unknown(styles)
            if unknown:
                comments.append(f"Styles not found: {', '.join(unknown)}")
        if opts.get("enable_prompt_comments"):
            prompt, negative = prompt_parser.strip_comments(prompt), prompt_parser.strip_comments(negative)
            hr_prompt, hr_negative = prompt_parser.strip_comments(hr_prompt), prompt_parser.strip_comments(hr_negative)
        if not request.disable_extra_networks:
            prompt += self._option_network_tags(prompt, opts)
        all_prompts = [prompt] * n_images
        all_negative = [negative] * n_images
        clip_skip = self._clip_skip(request, opts)
        enc_options = EncoderOptions.from_settings(opts, clip_skip)
        if self.embeddings is not None:
            self.embeddings.load(comp)  # rescans only when the folder changed (A1111 does this every generation)

        # 5. Sampler, schedule and the steps actually run (img2img: A1111's denoising-strength rule).
        passes = 2 if hr is not None else 1
        if progress is not None:
            progress.job_count = request.n_iter * passes
            progress.sampling_steps = request.steps
        job_timestamp = progress.job_timestamp if progress is not None and progress.job_timestamp != "0" else _dt.datetime.now().strftime("%Y%m%d%H%M%S")
        first = self._plan_pass(request, pipe, comp, opts, request.sampler_name, request.scheduler, request.steps,
                                init is not None, request.denoising_strength)

        extra_params: dict[str, Any] = dict(first.plan.extra_infotext)
        if init is not None:
            extra_params.update(init.extra_params)
            comments.extend(init.comments)
        if hr is not None:
            extra_params.update(self._hires_infotext(request, hr, hr_info))
        restore_faces = bool(request.restore_faces if request.restore_faces is not None else opts.get("face_restoration"))
        if restore_faces:
            if self.face_restorers is None:
                raise GenerationError("restore_faces: face restoration is not available on this server", "restore_faces")
            self.face_restorers.check(opts.get("face_restoration_model"))  # no model file: a clear error, up front
        # ControlNet units (the sd-webui-controlnet extension's process step): hooks for every UNet call of both
        # passes, their infotext, and the detected maps the extension returns after the images.
        control, control_maps = self._control(request, comp, width, height, batch_size, hr, extra_params)
        images, infotexts, saved, index_images = [], [], [], []
        with ExitStack() as request_scope:
            # 6. VAE for this request (option sd_vae, possibly overridden), swapped in and restored afterwards.
            vae_info = self._use_vae(request_scope, comp, opts)
            state = _BatchState()
            try:
                for it in range(request.n_iter):
                    if progress is not None:
                        if progress.interrupted:
                            break
                        progress.job_no = it * passes
                        progress.skipped = False
                    sl = slice(it * batch_size, (it + 1) * batch_size)
                    seeds, subseeds = all_seeds[sl], all_subseeds[sl]

                    # 7. Extra networks of this batch's prompts (A1111 parse_extra_network_prompts + activate):
                    #    re-activated only when they change between batches; then the conditioning.
                    prompts = all_prompts[sl]
                    network_data: dict = {}
                    if not request.disable_extra_networks:
                        prompts, network_data = prompt_parser.parse_extra_networks_batch(prompts)
                    encoder = self._networks_for_batch(state, comp, network_data, extra_params, comments, enc_options,
                                                       width, height)
                    conds = state.conds(encoder, prompts, all_negative[sl], first.sched)

                    # 8. Noise from A1111's per-image RNG, at the latent size of this pass.
                    latent_h = (init.latent.shape[2] if init is not None else height // comp.vae_scale_factor)
                    latent_w = (init.latent.shape[3] if init is not None else width // comp.vae_scale_factor)
                    rng = self._rng((4, latent_h, latent_w), seeds, subseeds, request, opts)
                    x = rng.next()
                    if init is not None and init.noise_multiplier != 1.0:
                        x = x * init.noise_multiplier

                    # 9. Sample (first pass), with the refiner switch when asked for this pass.
                    refiner = None
                    if refiner_info is not None and self._refiner_in_pass(opts, hr is not None, second=False):
                        refiner = self._refiner_switch(request, refiner_info, comp, pipe, first, opts, prompts,
                                                       all_negative[sl], width, height, extra_params, comments)
                    latents = pipe(
                        conds=conds,
                        cfg_scale=request.cfg_scale,
                        noise=x,
                        rng_next=rng.next,
                        run=first.plan.run,
                        seeds=seeds,
                        callback=self._on_step(progress),
                        should_stop=(progress.should_stop if progress is not None else (lambda: False)),
                        batch_cond_uncond=bool(opts.get("batch_cond_uncond")),
                        pad_cond_uncond_v0=bool(opts.get("pad_cond_uncond_v0")),
                        empty_context=encoder([""]).context if opts.get("pad_cond_uncond") else None,
                        init_latent=init.latent if init is not None else None,
                        t_enc=first.t_enc,
                        extra_noise=float(opts.get("img2img_extra_noise") or 0) if init is not None else 0.0,
                        image_cond=(init.image_cond if init is not None
                                    else self._txt2img_image_cond(comp, pipe, len(seeds), width, height, seeds)),
                        image_uncond=init.image_uncond if init is not None else None,
                        image_cfg_scale=(request.image_cfg_scale if init is not None and init.image_cond is not None
                                         and comp.unet.config.in_channels == 8 else None),
                        mask=init.mask if init is not None else None,
                        nmask=init.nmask if init is not None else None,
                        control=control,
                        refiner=refiner,
                    )
                    sample_comp = comp
                    if refiner is not None and refiner.done:
                        sample_comp = refiner.components

                    # 10. Hires fix: upscale, then an img2img pass at the target size.
                    if hr is not None and not (progress is not None and (progress.interrupted or progress.skipped)):
                        if progress is not None:
                            progress.job_no = it * passes + 1
                        latents, sample_comp = self._hires_pass(
                            request, hr, hr_info, refiner_info, latents, sample_comp, seeds, subseeds, opts, state,
                            all_prompts[sl], hr_prompt, hr_negative, enc_options, extra_params, comments, progress,
                            control,
                        )

                    # 11. Decode with the VAE of the model that finished (the refiner's when it took over).
                    decoder = pipe if sample_comp is comp else A1111Pipeline(sample_comp)
                    batch_images = decoder.decode(latents)
                    extra_params.update(state.report_params(opts))

                    # 12. Post-processing per image (paste the inpainted crop back, color correction), infotext, save.
                    for j, image in enumerate(batch_images):
                        index = it * batch_size + j
                        if restore_faces:
                            # A1111 restores faces on the decoded image, before color correction and the overlay
                            image = self.face_restorers.restore_faces(image, opts)
                        if init is not None:
                            image = init.finish(image, j)
                        text = self.create_infotext(
                            request, comp, opts, first.plan, all_prompts, all_negative, all_seeds, all_subseeds,
                            index, extra_params, clip_skip, vae_info, init, hr,
                        )
                        image.info["parameters"] = text
                        images.append(image)
                        infotexts.append(text)
                        index_images.append(index)
                        if request.save_images and opts.get("samples_save"):
                            saved.append(self._save(image, request, opts, all_seeds[index], all_prompts[index], text))
                    if progress is not None and progress.interrupted:
                        break
            finally:
                state.close()

        # 13. The grid of a multi-image job (A1111: first in the list when return_grid; saved when grid_save).
        index_of_first_image = 0
        unwanted = len(images) < 2 and bool(opts.get("grid_only_if_multiple"))
        if (opts.get("return_grid") or opts.get("grid_save")) and not request.do_not_save_grid and not unwanted:
            grid, grid_text = self._grid(images, batch_size, request, opts, infotexts)
            if opts.get("return_grid"):
                images.insert(0, grid)
                infotexts.insert(0, grid_text)
                index_of_first_image = 1
            if opts.get("grid_save"):
                saved.append(self._save_grid(grid, request, opts, all_seeds[0], all_prompts[0], grid_text))

        for comment in comments:
            log.warning(comment)
        info = self.processed_js(
            request, comp, opts, all_prompts, all_negative, all_seeds, all_subseeds, infotexts, extra_params,
            job_timestamp, clip_skip, vae_info, comments, batch_size=batch_size,
            index_of_first_image=index_of_first_image, init=init,
        )
        if control_maps and not opts.get("control_net_no_detectmap"):
            # the extension appends its detected maps to the returned images (A1111's info does not list them)
            images.extend(control_maps)
            infotexts.extend([""] * len(control_maps))
        return GenerationResult(
            images=images,
            infotexts=infotexts,
            seeds=all_seeds,
            subseeds=all_subseeds,
            info=info,
            request=request,
            saved_paths=saved,
        )

    # -- the parts of generate ---------------------------------------------------------------------------------------

    @staticmethod
    def _restore_faces(request, opts) -> bool:
        return bool(request.restore_faces if request.restore_faces is not None else opts.get("face_restoration"))

    def _control(self, request, comp, width, height, batch_size, hr, extra_params):
        if not any(u.enabled for u in request.controlnet):
            return None, []
        if self.controlnet is None:
            raise GenerationError("alwayson_scripts.controlnet: ControlNet is not available on this server",
                                  "alwayson_scripts")
        from webui.core.controlnet import build_control_hooks

        hooks, params, maps = build_control_hooks(
            request.controlnet, comp, width=width, height=height, batch_size=batch_size, registry=self.controlnet,
            hr_width=hr.target_width if hr is not None else None, hr_height=hr.target_height if hr is not None else None,
            init_image=request.init_images[0] if request.init_images else None, init_resize_mode=request.resize_mode,
        )
        extra_params.update(params)
        return hooks, maps

    def _named_checkpoint(self, name: str, field_name: str) -> CheckpointInfo:
        info = self.registry.resolve(name) or self.registry.closest(name)
        if info is None:
            raise GenerationError(
                f"{field_name}: no checkpoint named {name!r}; available: {', '.join(self.registry.titles()) or '(none)'}",
                field_name,
            )
        return self.registry.ensure_hash(info)  # its short title goes in the infotext before it is loaded

    def _plan_pass(self, request, pipe, comp, opts, sampler_name, scheduler, steps, img2img: bool, denoising):
        """Sampler run for one pass. img2img passes (img2img, the hires pass) take A1111's setup_img2img_steps:
        ``t_enc`` steps of a longer schedule; the hires pass always uses the fixed-steps rule."""
        from webui.core.generation.conditioning import SchedulingOptions
        from webui.core.generation.imageops import img2img_steps
        from webui.core.generation.samplers import find_sampler
        from webui.core.generation.sampling_plan import plan_sampling

        t_enc = None
        total = steps
        if img2img:
            fix = bool(opts.get("img2img_fix_steps")) if request.mode != "txt2img" else True
            total, t_enc = img2img_steps(steps, float(denoising), fix)
        plan = plan_sampling(
            sampler_name, scheduler, max(total, 1), pipe.model_sigmas, opts,
            eta=request.eta, s_churn=request.s_churn, s_tmin=request.s_tmin, s_tmax=request.s_tmax,
            s_noise=request.s_noise, is_sdxl=comp.is_sdxl, device=self.plan.device, lcm_sigmas=pipe.lcm_sigmas,
        )
        spec = find_sampler(sampler_name)
        # Prompt-editing steps count model calls, which second-order samplers make twice per step (A1111's
        # setup_conds: sampler_config.total_steps); img2img counts the steps it runs.
        run_steps = (t_enc + 1) if t_enc is not None else steps
        sched = SchedulingOptions(
            steps=spec.total_steps(run_steps) if spec is not None else run_steps,
            use_old_scheduling=bool(opts.get("use_old_scheduling")),
        )
        return _PassPlan(plan, sched, t_enc)

    def _rng(self, shape, seeds, subseeds, request, opts):
        return noise_mod.ImageRNG(
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

    @staticmethod
    def _on_step(progress):
        """The sampler callback: the shared progress source (API /progress, UI) and a console bar per sampling pass,
        as A1111 prints one with tqdm (to stderr; off when stderr is not a terminal, e.g. under CI)."""
        import sys

        from tqdm import tqdm

        bar: dict[str, Any] = {}

        def on_step(step: int, steps: int, latent) -> None:
            if progress is not None:
                progress.step(step, steps, latent)
            if "bar" not in bar:
                bar["bar"] = tqdm(total=steps, leave=True, disable=not sys.stderr.isatty(), file=sys.stderr)
            bar["bar"].update(1)
            if step >= steps:
                bar.pop("bar").close()

        return on_step

    def _networks_for_batch(self, state, comp, network_data, extra_params, comments, enc_options, width, height):
        """Activate this batch's extra networks on ``comp`` (when they or the model changed) and return the prompt
        encoder for it."""
        from webui.core.generation.conditioning import PromptEncoder

        key = (id(comp), _network_key(network_data))
        if key != state.network_key:
            state.close_networks()
            state.networks_scope = ExitStack()
            self._activate_networks(state.networks_scope, comp, network_data, extra_params, comments)
            state.network_key = key
            state.encoders.clear()  # text-encoder weights may have changed
        ekey = (id(comp), width, height)
        if ekey not in state.encoders:
            state.encoders[ekey] = PromptEncoder(comp, enc_options, width=width, height=height,
                                                 embeddings=self.embeddings)
        return state.encoders[ekey]

    def _txt2img_image_cond(self, comp, pipe, n, width, height, seeds):
        """A1111 txt2img_image_conditioning: an inpainting (9-channel) model sampling from nothing sees a fully
        masked grey image: mask 1 and the latent of a 0.5 image."""
        if comp.unet.config.in_channels != 9:
            return None
        grey = torch.full((n, 3, height, width), 0.5)
        latent = pipe.encode(grey, torch.Generator().manual_seed(int(seeds[0]) if seeds else 0))
        return torch.nn.functional.pad(latent, (0, 0, 0, 0, 1, 0), value=1.0)

    def _prepare_img2img(self, request, comp, pipe, opts) -> "_Img2ImgInit":
        """A1111 StableDiffusionProcessingImg2Img.init: init images (flattened, resized or cropped to the masked
        region), the mask (binarised, inverted, blurred), fill of the masked area, the init latent, the latent masks
        and the image conditioning of inpainting / instruct-pix2pix models."""
        import numpy as np
        from PIL import Image

        from webui.core.generation import imageops

        if not request.init_images:
            raise GenerationError("init_images: img2img needs at least one init image", "init_images")
        images = [_decode_image(data, f"init_images[{i}]") for i, data in enumerate(request.init_images)]
        batch_size = request.batch_size
        if len(images) > 1:
            if len(images) > batch_size:
                raise GenerationError(
                    f"init_images: {len(images)} images for batch_size {batch_size}; send one image (repeated for the "
                    f"batch) or at most batch_size images", "init_images")
            batch_size = len(images)
        width, height = request.width, request.height
        inp = request.inpaint
        mask = None
        if inp is not None:
            mask = _decode_image(inp.mask, "mask")
            if mask.size != images[0].size:
                mask = mask.resize(images[0].size, Image.LANCZOS)  # A1111's UI sends them matched; resize, as it does
        bgcolor = opts.get("img2img_background_color") or "#ffffff"
        preps = []
        for img in images:
            try:
                if mask is not None:
                    prep = imageops.prepare_inpaint(
                        img, mask, width=width, height=height, resize_mode=request.resize_mode,
                        mask_blur_x=inp.mask_blur_x, mask_blur_y=inp.mask_blur_y, mask_round=inp.mask_round,
                        invert=inp.inpainting_mask_invert, inpaint_full_res=inp.inpaint_full_res,
                        padding=inp.inpaint_full_res_padding, fill_mode=inp.inpainting_fill, background_color=bgcolor,
                    )
                else:
                    prep = imageops.prepare_init_image(img, width=width, height=height,
                                                       resize_mode=request.resize_mode, background_color=bgcolor)
            except ValueError as e:  # combinations A1111 crashes on, said plainly
                raise GenerationError(str(e), "resize_mode") from e
            preps.append(prep)
        first = preps[0]
        overlays = [p.overlay for p in preps] if first.overlay is not None else None
        color_corrections = ([imageops.setup_color_correction(p.image) for p in preps]
                             if opts.get("img2img_color_correction") else None)
        arrays = [np.moveaxis(np.array(p.image.convert("RGB")).astype(np.float32) / 255.0, 2, 0) for p in preps]
        if len(arrays) == 1:
            arrays = arrays * batch_size
            overlays = overlays * batch_size if overlays is not None else None
            color_corrections = color_corrections * batch_size if color_corrections else color_corrections
        image_t = torch.from_numpy(np.stack(arrays))
        seed0 = request.seed if request.seed is not None and request.seed >= 0 else 0
        latent = pipe.encode(image_t, torch.Generator().manual_seed(int(seed0)))
        if first.latent_resize:
            latent = imageops.upscale_latent(latent, width, height, "Latent")

        mask_t = nmask_t = None
        image_mask = first.mask
        if first.latent_mask is not None:
            mask_t, nmask_t = imageops.latent_masks(first.latent_mask, tuple(latent.shape), inp.mask_round)
            if inp.inpainting_fill == 2:
                # latent noise (A1111 draws it from the first seeds' generators)
                seeds, _ = noise_mod.resolve_seeds(request.seed, request.subseed, 0.0, batch_size)
                rand = noise_mod.ImageRNG(tuple(latent.shape[1:]), seeds, device=self.plan.device).next().cpu()
                latent = latent * mask_t + rand * nmask_t
            elif inp.inpainting_fill == 3:
                latent = latent * mask_t

        # image conditioning (A1111 img2img_image_conditioning)
        image_cond = image_uncond = None
        in_ch = comp.unet.config.in_channels
        mask_weight = float(opts.get("inpainting_mask_weight"))
        uses_inpainting_cond = in_ch == 9
        if in_ch == 9:
            source = image_t * 2 - 1
            if image_mask is not None:
                cmask = torch.from_numpy(np.array(image_mask.convert("L")).astype(np.float32) / 255.0)[None, None]
                if inp.mask_round:
                    cmask = torch.round(cmask)
            else:
                cmask = source.new_ones(1, 1, *source.shape[-2:])
            cimage = torch.lerp(source, source * (1.0 - cmask), mask_weight)
            clatent = pipe.encode((cimage + 1) / 2, torch.Generator().manual_seed(int(seed0)))
            cmask = torch.nn.functional.interpolate(cmask, size=latent.shape[-2:]).expand(clatent.shape[0], -1, -1, -1)
            image_cond = torch.cat([cmask, clatent], dim=1)
        elif in_ch == 8:
            # instruct-pix2pix: the init image's latent (posterior mode, unscaled) and zeros for the uncond rows
            vae = comp.vae
            with torch.no_grad():
                dist = vae.encode((image_t * 2 - 1).to(vae.device, vae.dtype), return_dict=False)[0]
            image_cond = dist.mode().float()

        extra: dict[str, Any] = dict(first.extra_generation_params)
        multiplier = (float(request.initial_noise_multiplier) if request.initial_noise_multiplier is not None
                      else float(opts.get("initial_noise_multiplier")))
        if multiplier != 1.0:
            extra["Noise multiplier"] = multiplier
        if opts.get("img2img_extra_noise"):
            extra["Extra noise"] = float(opts.get("img2img_extra_noise"))
        return _Img2ImgInit(
            batch_size=batch_size, latent=latent, image_cond=image_cond, image_uncond=image_uncond, mask=mask_t,
            nmask=nmask_t, noise_multiplier=multiplier, extra_params=extra, overlays=overlays, paste_to=first.paste_to,
            color_corrections=color_corrections, uses_inpainting_conditioning=uses_inpainting_cond,
            mask_weight=mask_weight, init_images=images, comments=list(first.comments),
        )

    def _hires_plan(self, request, opts):
        from webui.core.generation.imageops import LATENT_UPSCALE_MODES, hires_target

        if request.denoising_strength is None:
            raise GenerationError(
                "denoising_strength: Hires. fix (enable_hr) needs a denoising strength for its second pass, e.g. 0.7",
                "denoising_strength")
        hires = request.hires
        upscaler = hires.upscaler or "Latent"
        if upscaler not in LATENT_UPSCALE_MODES and not self._pixel_upscaler_exists(upscaler):
            choices = list(LATENT_UPSCALE_MODES) + self._pixel_upscaler_names()
            raise GenerationError(f"hr_upscaler: could not find upscaler named {upscaler!r}; choices: "
                                  f"{', '.join(choices)}", "hr_upscaler")
        return hires_target(
            request.width, request.height, scale=hires.scale, resize_x=hires.resize_x, resize_y=hires.resize_y,
            firstphase_width=request.firstphase_width, firstphase_height=request.firstphase_height,
            use_old_hires_fix_width_height=bool(opts.get("use_old_hires_fix_width_height")),
        )

    def _pixel_upscaler_names(self) -> list[str]:
        if self.upscalers is not None:
            return [u.name for u in self.upscalers.list(self.settings) if u.name not in ("None",)]
        return ["Lanczos", "Nearest"]

    def _pixel_upscaler_exists(self, name: str) -> bool:
        return name in self._pixel_upscaler_names() or name == "None"

    def _pixel_upscale(self, image, name: str, width: int, height: int):
        """A pixel upscaler for the hires pass (A1111 resize_image mode 0 with upscaler_name): the upscalers of the
        extras module when present, else PIL's Lanczos / Nearest."""
        from PIL import Image

        if self.upscalers is not None:
            return self.upscalers.upscale_to(image, name, width, height, self.settings)
        if name in ("None", "Lanczos"):
            return image.resize((width, height), Image.LANCZOS)
        return image.resize((width, height), Image.NEAREST)

    def _hires_infotext(self, request, hr, hr_info) -> dict:
        hires = request.hires
        out: dict[str, Any] = {"Denoising strength": request.denoising_strength}
        if hr_info is not None:
            out["Hires checkpoint"] = _short_title(hr_info)
        if hires.sampler_name and hires.sampler_name != request.sampler_name:
            out["Hires sampler"] = hires.sampler_name
        if hires.prompt and hires.prompt != request.prompt:
            out["Hires prompt"] = hires.prompt
        if hires.negative_prompt and hires.negative_prompt != request.negative_prompt:
            out["Hires negative prompt"] = hires.negative_prompt
        if hires.scheduler and hires.scheduler != request.scheduler:
            out["Hires schedule type"] = hires.scheduler
        out.update(hr.infotext)
        if hires.second_pass_steps:
            out["Hires steps"] = hires.second_pass_steps
        out["Hires upscaler"] = hires.upscaler or "Latent"
        return out

    def _hires_pass(self, request, hr, hr_info, refiner_info, latents, comp, seeds, subseeds, opts, state,
                    batch_prompts, hr_prompt, hr_negative, enc_options, extra_params, comments, progress,
                    control=None):
        """A1111 sample_hr_pass: latent or pixel upscale to the target size, crop (truncate) to it, fresh noise from
        the same seeds, then img2img with hr_second_pass_steps at denoising_strength; hr_checkpoint_name switches
        the model for this pass."""
        import numpy as np

        from pipelines.a1111 import A1111Pipeline
        from webui.core.generation import imageops
        from webui.core.generation import prompts as prompt_parser

        hires = request.hires
        upscaler = hires.upscaler or "Latent"
        target_w, target_h = hr.target_width, hr.target_height
        hr_comp = self.load(hr_info, extra_slots=1) if hr_info is not None else comp
        pipe = A1111Pipeline(hr_comp)
        if upscaler in imageops.LATENT_UPSCALE_MODES:
            samples = imageops.upscale_latent(latents, target_w, target_h, upscaler)
            image_cond = self._txt2img_image_cond(hr_comp, pipe, len(seeds), target_w, target_h, seeds)
        else:
            lowres = (pipe if hr_comp is comp else A1111Pipeline(comp)).decode(latents)
            arrays = [
                np.moveaxis(np.array(self._pixel_upscale(im, upscaler, target_w, target_h)).astype(np.float32) / 255.0,
                            2, 0)
                for im in lowres
            ]
            decoded = torch.from_numpy(np.stack(arrays))
            samples = pipe.encode(decoded, torch.Generator().manual_seed(int(seeds[0])))
            image_cond = None
            if hr_comp.unet.config.in_channels == 9:
                # A1111 img2img_image_conditioning without a mask: the whole image masked, i.e. the source scaled
                # by (1 - inpainting_mask_weight) in [-1, 1]
                weight = float(opts.get("inpainting_mask_weight"))
                cimage = (decoded * 2 - 1) * (1.0 - weight)
                clatent = pipe.encode((cimage + 1) / 2, torch.Generator().manual_seed(int(seeds[0])))
                image_cond = torch.nn.functional.pad(clatent, (0, 0, 0, 0, 1, 0), value=1.0)
        ty, tx = hr.truncate_y, hr.truncate_x
        samples = samples[:, :, ty // 2 : samples.shape[2] - (ty + 1) // 2, tx // 2 : samples.shape[3] - (tx + 1) // 2]
        rng = self._rng(tuple(samples.shape[1:]), seeds, subseeds, request, opts)
        noise = rng.next()

        sampler_name = hires.sampler_name or request.sampler_name
        scheduler = hires.scheduler or request.scheduler
        steps = hires.second_pass_steps or request.steps
        plan = self._plan_pass(request, pipe, hr_comp, opts, sampler_name, scheduler, steps, True,
                               request.denoising_strength)
        # the hires prompts, with their own extra networks (A1111 hr_extra_network_data)
        n = len(seeds)
        prompts, negatives = [hr_prompt] * n, [hr_negative] * n
        if hr_prompt == request.prompt:
            prompts = list(batch_prompts)
        network_data: dict = {}
        if not request.disable_extra_networks:
            prompts, network_data = prompt_parser.parse_extra_networks_batch(prompts)
        encoder = self._networks_for_batch(state, hr_comp, network_data, extra_params, comments, enc_options,
                                           target_w, target_h)
        conds = state.conds(encoder, prompts, negatives, plan.sched)
        refiner = None
        if refiner_info is not None and self._refiner_in_pass(opts, True, second=True):
            refiner = self._refiner_switch(request, refiner_info, hr_comp, pipe, plan, opts, prompts, negatives,
                                           target_w, target_h, extra_params, comments)
        latents = pipe(
            conds=conds,
            cfg_scale=request.cfg_scale,
            noise=noise,
            rng_next=rng.next,
            run=plan.plan.run,
            seeds=seeds,
            callback=self._on_step(progress),
            should_stop=(progress.should_stop if progress is not None else (lambda: False)),
            batch_cond_uncond=bool(opts.get("batch_cond_uncond")),
            init_latent=samples,
            t_enc=plan.t_enc,
            image_cond=image_cond,
            control=control if hr_comp is comp else None,
            refiner=refiner,
        )
        if refiner is not None and refiner.done:
            hr_comp = refiner.components
        return latents, hr_comp

    @staticmethod
    def _refiner_in_pass(opts, has_hires: bool, second: bool) -> bool:
        """A1111 apply_refiner: with hires fix, option hires_fix_refiner_pass picks the pass(es)."""
        if not has_hires:
            return True
        which = opts.get("hires_fix_refiner_pass") or "second pass"
        return which == "both passes" or (which == "second pass") == second

    def _refiner_switch(self, request, refiner_info, comp, pipe, pass_plan, opts, prompts, negatives, width, height,
                        extra_params, comments):
        """A RefinerSwitch that loads the refiner (keeping the base loaded when the cache allows two), builds its
        conditioning (its own text encoders; SDXL refiner: aesthetic scores) and continues on the same latents."""
        from pipelines.a1111 import A1111Pipeline
        from pipelines.denoiser import RefinerSwitch
        from webui.core.generation.conditioning import (
            EncoderOptions,
            PromptEncoder,
            ScheduledConds,
            get_learned_conditioning,
            get_multicond_learned_conditioning,
        )

        if refiner_info.filename == comp.info.filename:
            return None  # A1111: no switch onto the same model
        extra_params["Refiner"] = _short_title(refiner_info)
        extra_params["Refiner switch at"] = request.refiner.switch_at
        by_steps = bool(opts.get("refiner_switch_by_sample_steps"))
        if by_steps:
            extra_params["Refiner switch by sampling steps"] = True
        run = pass_plan.plan.run
        runs = (pass_plan.t_enc + 1) if pass_plan.t_enc is not None else (
            len(run.sigmas) - 1 if run.sigmas is not None else len(run.timesteps))
        engine = self

        def build(timesteps_mode: bool):
            ref_comp = engine.load(refiner_info, extra_slots=1)
            switch.components = ref_comp
            ref_pipe = A1111Pipeline(ref_comp)
            enc = PromptEncoder(ref_comp, EncoderOptions.from_settings(opts, engine._clip_skip(request, opts)),
                                width=width, height=height, embeddings=engine.embeddings)
            uc = get_learned_conditioning(enc, negatives, pass_plan.sched, is_negative=True)
            c = get_multicond_learned_conditioning(enc, prompts, pass_plan.sched)
            return ref_pipe.make_inner(run), ScheduledConds(c, uc)

        switch = RefinerSwitch(
            switch_at=float(request.refiner.switch_at), model_sigmas=pipe.model_sigmas, build=build,
            total_calls=pass_plan.sched.steps if by_steps else runs, by_sample_steps=by_steps,
        )
        switch.components = None
        return switch

    def _grid(self, images, batch_size, request, opts, infotexts):
        from webui.core.io.images import image_grid

        grid = image_grid(images, batch_size=batch_size, n_rows=int(opts.get("n_rows") or -1),
                          grid_prevent_empty_spots=bool(opts.get("grid_prevent_empty_spots")))
        text = infotexts[0] if infotexts else ""
        grid.info["parameters"] = text
        return grid, text

    def _save_grid(self, grid, request, opts, seed, prompt, text) -> str:
        """A1111 saves the grid of a multi-image job as outputs/<mode>-grids/<date>/grid-NNNN.png."""
        from webui.core.io.images import save_grid

        kind = "img2img" if request.mode != "txt2img" else "txt2img"
        outdir = opts.get("outdir_grids") or opts.get(f"outdir_{kind}_grids")
        if not os.path.isabs(outdir):
            outdir = os.path.join(self.paths.data_dir, outdir)
        return save_grid(
            grid, outdir, seed, prompt, text if opts.get("enable_pnginfo") else None,
            fmt=opts.get("grid_format") or "png", grid_save_to_dirs=bool(opts.get("grid_save_to_dirs")),
            grid_extended_filename=bool(opts.get("grid_extended_filename")), save_to_dirs=bool(opts.get("save_to_dirs")),
            directories_filename_pattern=opts.get("directories_filename_pattern") or "[date]",
            samples_filename_pattern=opts.get("samples_filename_pattern") or "", jpeg_quality=int(opts.get("jpeg_quality")),
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
        from webui.core.networks import vae as vae_mod

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
        from webui.core.networks import hypernetworks as hn_mod
        from webui.core.generation import prompts as prompt_parser

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
        from webui.core.networks import hypernetworks as hn_mod
        from webui.core.networks import lora as lora_mod

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
                        clip_skip=1, vae_info=None, init=None, hr=None):
        """A1111 processing.create_infotext for image ``index``."""
        vae_params = self._vae_infotext(vae_info, opts)
        image_cfg = request.image_cfg_scale if comp.unet.config.in_channels == 8 else None
        core = {
            "Image CFG scale": image_cfg,
            "Denoising strength": request.denoising_strength if init is not None else None,
            "Conditional mask weight": init.mask_weight if init is not None and init.uses_inpainting_conditioning
            else None,
            "Steps": request.steps,
            "Sampler": plan.sampler_name,
            "Schedule type": request.scheduler,
            "CFG scale": float(request.cfg_scale),
            "Seed": all_seeds[index],
            "Face restoration": opts.get("face_restoration_model") if self._restore_faces(request, opts) else None,
            "Size": f"{hr.width}x{hr.height}" if hr is not None else f"{request.width}x{request.height}",
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
        from webui.core.networks.vae import vae_infotext

        return vae_infotext(vae_info, self.registry.hash_cache, no_hashing=self.registry.no_hashing,
                            add_hash=bool(opts.get("add_vae_hash_to_info")), add_name=bool(opts.get("add_vae_name_to_info")))

    def processed_js(self, request, comp, opts, all_prompts, all_negative, all_seeds, all_subseeds, infotexts, extra,
                     job_timestamp, clip_skip, vae_info=None, comments=(), batch_size=None, index_of_first_image=0,
                     init=None) -> dict:
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
            "batch_size": batch_size if batch_size is not None else request.batch_size,
            "restore_faces": self._restore_faces(request, opts),
            "face_restoration_model": opts.get("face_restoration_model") if self._restore_faces(request, opts) else None,
            "sd_model_name": comp.info.stem,
            "sd_model_hash": comp.info.shorthash,
            "sd_vae_name": self._vae_infotext(vae_info, opts).get("VAE"),
            "sd_vae_hash": self._vae_infotext(vae_info, opts).get("VAE hash"),
            "seed_resize_from_w": request.seed_resize_from_w,
            "seed_resize_from_h": request.seed_resize_from_h,
            "denoising_strength": request.denoising_strength,
            "extra_generation_params": dict(extra),
            "index_of_first_image": index_of_first_image,
            "infotexts": infotexts,
            "styles": list(request.styles),
            "job_timestamp": job_timestamp,
            "clip_skip": clip_skip,
            "is_using_inpainting_conditioning": bool(init is not None and init.uses_inpainting_conditioning),
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


@dataclass
class _PassPlan:
    plan: Any  # SamplingPlan
    sched: Any  # SchedulingOptions
    t_enc: int | None = None  # img2img passes: steps run of the longer schedule


@dataclass
class _Img2ImgInit:
    """What A1111's img2img init() prepares once per job."""

    batch_size: int
    latent: torch.Tensor
    image_cond: torch.Tensor | None
    image_uncond: torch.Tensor | None
    mask: torch.Tensor | None
    nmask: torch.Tensor | None
    noise_multiplier: float
    extra_params: dict
    overlays: list | None
    paste_to: tuple | None
    color_corrections: list | None
    uses_inpainting_conditioning: bool
    mask_weight: float
    init_images: list
    comments: list = field(default_factory=list)

    def finish(self, image, j: int):
        """Per output image: color correction, then the inpainting overlay pasted back (A1111 apply_overlay)."""
        from webui.core.generation import imageops

        if self.color_corrections:
            image = imageops.apply_color_correction(self.color_corrections[j], image)
        if self.overlays is not None:
            image, _ = imageops.apply_overlay(image, self.paste_to, self.overlays[j])
        return image


@dataclass
class _BatchState:
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


def _decode_image(data: bytes, field_name: str):
    """Encoded image bytes -> PIL image; undecodable data is the client's error, named by its field."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise GenerationError(f"{field_name}: not a decodable image ({e})", field_name) from e


def _short_title(info: CheckpointInfo) -> str:
    """A1111 CheckpointInfo.short_title: "<file stem> [<shorthash>]" as the Refiner / Hires checkpoint infotext."""
    return f"{info.stem} [{info.shorthash}]" if info.shorthash else info.stem


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
