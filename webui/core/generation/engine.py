"""Engine.generate: THE one generation path, for the API and the UI alike.

Runs on the queue's worker thread only (it owns the models). A request is never changed; the effective settings are
a copy with the request's ``override_settings`` applied. ``generate`` is A1111's ``process_images`` as a short
recipe; each step is a stage module of this package working on one :class:`GenerationContext` (A1111's ``p``), and
the plugin hooks (``webui/plugins/hooks.py``) are called where A1111 calls its scripts.
"""

from __future__ import annotations

import datetime as _dt
import logging
from contextlib import ExitStack
from dataclasses import dataclass

from webui.core.generation import extra_networks, hires, img2img, outputs, processed, refiner, sampling
from webui.core.generation import noise as noise_mod
from webui.core.generation import optimizations
from webui.core.generation import tiling
from webui.core.generation.context import GenerationContext, GenerationError, known_overrides, validate_request
from webui.core.models.cache import ModelManager
from webui.core.models.loader import ModelComponents
from webui.core.models.registry import CheckpointRegistry
from webui.core.settings import Settings
from webui.core.types import CheckpointInfo, GenerationRequest, GenerationResult

log = logging.getLogger(__name__)


@dataclass
class EnginePaths:
    data_dir: str
    tokenizer_dir: str


class Engine:
    def __init__(self, *, settings: Settings, registry: CheckpointRegistry, plan, paths: EnginePaths,
                 vae_registry=None, loras=None, embeddings=None, hypernetworks=None, styles=None,
                 vae_path: str | None = None, upscalers=None, face_restorers=None, plugins=None,
                 interrogators=None):
        """The optional collaborators are the model-folder databases of AppState (VaeRegistry, LoraRegistry,
        EmbeddingDatabase, HypernetworkRegistry, StyleDatabase, upscalers, face restorers); a missing one turns its
        feature off. ``plugins`` (webui.plugins.manager.PluginManager) receives the generation hooks."""
        from webui.core.networks.vae import VaeCache

        self.settings = settings
        self.registry = registry
        self.plan = plan
        self.paths = paths
        self.vae_registry = vae_registry
        self.vae_path = vae_path  # --vae-path: wins over the sd_vae option, as in A1111
        self.upscalers = upscalers  # pixel upscalers for the hires pass (webui.core.postprocess); None: Lanczos/Nearest
        self.face_restorers = face_restorers  # webui.core.postprocess.face_restore.FaceRestorers; None: refused
        self.interrogators = interrogators  # webui.core.interrogate.Interrogators (Loopback's interrogation); None: refused
        self.loras = loras
        self.embeddings = embeddings
        self.hypernetworks = hypernetworks
        self.styles = styles
        self.plugins = plugins
        self.vae_cache = VaeCache()
        self.models = ModelManager(
            settings=settings, registry=registry, plan=plan, tokenizer_dir=paths.tokenizer_dir,
            on_loaded=(lambda comp: plugins.call("on_model_loaded", sd_model=comp)) if plugins is not None else None,
        )

    # -- models ------------------------------------------------------------------------------------------------------

    def resolve_checkpoint(self, name: str | None) -> CheckpointInfo:
        """A checkpoint by any of A1111's aliases; None -> the stored setting, else the first file."""
        return self.models.resolve(name)

    def load(self, info: CheckpointInfo, extra_slots: int = 0, opts=None) -> ModelComponents:
        """The loaded model for ``info`` (see ModelManager.load; ``opts``: the request's options, for FP8 weight)."""
        return self.models.load(info, extra_slots, opts)

    def current_model(self) -> ModelComponents | None:
        return self.models.current()

    def unload(self) -> None:
        self.models.unload()

    # -- generation --------------------------------------------------------------------------------------------------

    def generate(self, request: GenerationRequest, progress=None) -> GenerationResult:
        """A1111 process_images for txt2img and img2img (with inpainting, hires fix and the refiner): everything a
        request changes (settings, networks, VAE, model switches) is scoped to this call and undone when it returns
        or fails."""
        from pipelines.a1111 import A1111Pipeline

        validate_request(request)
        p = GenerationContext(request=request, services=self, progress=progress, plugins=self.plugins,
                              opts=self.settings.with_overrides(known_overrides(request.override_settings,
                                                                                self.registry)))
        p.call_hook("before_process")

        images, infotexts, saved = [], [], []
        with ExitStack() as request_scope:
            p.scope = request_scope
            # 1. Models: override_settings > request > stored setting; hires and refiner checkpoints resolved up
            #    front so that a wrong name fails before any work (A1111 raises on them too, with a 500; we say which
            #    name). Then this request's VAE (option sd_vae, possibly overridden) and A1111's apply_circular
            #    (p.tiling), both in effect from the init image's encode on and undone when the request ends.
            self._setup_models(p)
            p.pipe = A1111Pipeline(p.sd_model)
            p.vae_info = self._use_vae(request_scope, p.sd_model, p.opts)
            optimizations.use_attention(p, p.sd_model)  # cross_attention_optimization, upcast_attn, the flags
            request_scope.enter_context(tiling.circular_padding(p))
            request_scope.callback(p.batches.close)

            # 2. Seeds for every image of the job; init images decide the batch size of img2img (A1111 init).
            p.init = img2img.prepare_img2img(p) if p.is_img2img else None
            p.batch_size = p.init.batch_size if p.init is not None else request.batch_size
            p.all_seeds, p.all_subseeds = noise_mod.resolve_seeds(
                request.seed, request.subseed, request.subseed_strength, p.batch_size * request.n_iter)

            # 3. Sizes: txt2img with hires samples its first pass at the first-pass size.
            p.hr = hires.hires_plan(p) if request.hires is not None and not p.is_img2img else None
            p.width, p.height = (p.hr.width, p.hr.height) if p.hr is not None else (request.width, request.height)

            # 4. Prompts (styles, comments, option network tags), clip skip, embeddings.
            self._setup_prompts(p)

            # 5. Sampler, schedule and the steps actually run (img2img: A1111's denoising-strength rule); the
            #    infotext entries known up front; face restoration checked; then the plugins' process step.
            self._setup_sampling(p)
            p.call_hook("process")
            if progress is not None and p.n_iter != request.n_iter:
                progress.job_count = p.n_iter * p.passes  # a plugin changed the batch count (Dynamic Prompts)

            for it in range(p.n_iter):
                if p.interrupted():
                    break
                if not p.all_prompts[it * p.batch_size:(it + 1) * p.batch_size]:
                    break  # A1111: a plugin left fewer prompts than n_iter * batch_size (Dynamic Prompts)
                if progress is not None:
                    progress.job_no = it * p.passes
                    progress.skipped = False
                p.iteration = it
                # 6-12. One batch: networks, conditioning, noise, sampling, hires, decode, per-image work.
                batch_images, batch_texts, batch_saved = self._run_batch(p, it)
                images += batch_images
                infotexts += batch_texts
                saved += batch_saved
                if p.interrupted():
                    break

        # 13. The grid of a multi-image job (A1111: first in the list when return_grid; saved when grid_save).
        index_of_first_image = 0
        opts = p.opts
        unwanted = len(images) < 2 and bool(opts.get("grid_only_if_multiple"))
        if (opts.get("return_grid") or opts.get("grid_save")) and not request.do_not_save_grid and not unwanted:
            grid, grid_text = outputs.make_grid(p, images, infotexts)
            if opts.get("return_grid"):
                images.insert(0, grid)
                infotexts.insert(0, grid_text)
                index_of_first_image = 1
            if opts.get("grid_save"):
                saved.append(outputs.save_grid(p, grid, grid_text))

        # 14. The result, A1111's info, and the plugins' postprocess (ControlNet appends its detected maps).
        for comment in p.comments:
            log.warning(comment)
        result = GenerationResult(images=images, infotexts=infotexts, seeds=p.all_seeds, subseeds=p.all_subseeds,
                                  info=processed.processed_js(p, infotexts, index_of_first_image), request=request,
                                  saved_paths=saved)
        p.call_hook("postprocess", processed=result)
        return result

    # -- the steps of generate ---------------------------------------------------------------------------------------

    def _setup_models(self, p: GenerationContext) -> None:
        request = p.request
        ckpt_name = request.override_settings.get("sd_model_checkpoint") if request.override_settings else None
        if ckpt_name and self.registry.resolve(ckpt_name) is None:
            ckpt_name = None  # A1111 silently drops an unknown checkpoint in override_settings
        info = self.resolve_checkpoint(ckpt_name or request.checkpoint)
        if request.hires is not None and request.hires.checkpoint not in (None, "", "Use same checkpoint"):
            p.hr_checkpoint = self.models.named(request.hires.checkpoint, "hr_checkpoint_name", GenerationError)
        if request.refiner is not None and request.refiner.checkpoint not in ("", "None"):
            p.refiner_checkpoint = self.models.named(request.refiner.checkpoint, "refiner_checkpoint", GenerationError)
        p.sd_model = self.load(info, opts=p.opts)

    def _setup_prompts(self, p: GenerationContext) -> None:
        """Styles, then comments (A1111's setup_prompts and the comments script). Extra-network tags stay in
        all_prompts (the infotext keeps them) and are taken out per batch."""
        from webui.core.generation import prompts as prompt_parser
        from webui.core.generation.conditioning import EncoderOptions

        request, opts = p.request, p.opts
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
                p.comments.append(f"Styles not found: {', '.join(unknown)}")
        if opts.get("enable_prompt_comments"):
            prompt, negative = prompt_parser.strip_comments(prompt), prompt_parser.strip_comments(negative)
            hr_prompt, hr_negative = prompt_parser.strip_comments(hr_prompt), prompt_parser.strip_comments(hr_negative)
        if not request.disable_extra_networks:
            prompt += extra_networks.option_network_tags(p, prompt)
        n_images = p.batch_size * request.n_iter
        p.all_prompts = [prompt] * n_images
        p.all_negative_prompts = [negative] * n_images
        p.hr_prompt, p.hr_negative_prompt = hr_prompt, hr_negative
        p.clip_skip = self._clip_skip(request, opts)
        p.enc_options = EncoderOptions.from_settings(opts, p.clip_skip)
        if self.embeddings is not None:
            self.embeddings.load(p.sd_model)  # rescans only when the folder changed (A1111 does this every generation)

    def _setup_sampling(self, p: GenerationContext) -> None:
        request, progress = p.request, p.progress
        if progress is not None:
            progress.job_count = request.n_iter * p.passes
            progress.sampling_steps = request.steps
        p.job_timestamp = (progress.job_timestamp if progress is not None and progress.job_timestamp != "0"
                           else _dt.datetime.now().strftime("%Y%m%d%H%M%S"))
        p.first_pass = sampling.plan_pass(p, p.pipe, p.sd_model, request.sampler_name, request.scheduler,
                                          request.steps, p.init is not None, request.denoising_strength)
        p.extra_generation_params.update(p.first_pass.plan.extra_infotext)
        if p.init is not None:
            p.extra_generation_params.update(p.init.extra_params)
            p.comments.extend(p.init.comments)
        if p.hr is not None:
            p.extra_generation_params.update(hires.hires_infotext(p))
        self._setup_face_restoration(p)

    def _setup_face_restoration(self, p: GenerationContext) -> None:
        request, opts = p.request, p.opts
        p.restore_faces = bool(request.restore_faces if request.restore_faces is not None
                               else opts.get("face_restoration"))
        if p.restore_faces:
            if self.face_restorers is None:
                raise GenerationError("restore_faces: face restoration is not available on this server", "restore_faces")
            self.face_restorers.check(opts.get("face_restoration_model"))  # no model file: a clear error, up front

    def _run_batch(self, p: GenerationContext, it: int) -> tuple[list, list, list]:
        """One batch of A1111's process_images loop: its extra networks and conditioning, noise from the per-image
        RNG, the first pass (with the refiner switch), the hires pass, decoding and the per-image work."""
        from pipelines.a1111 import A1111Pipeline
        from webui.core.generation import prompts as prompt_parser

        request, opts, comp, pipe, init = p.request, p.opts, p.sd_model, p.pipe, p.init
        sl = slice(it * p.batch_size, (it + 1) * p.batch_size)
        seeds, subseeds = p.all_seeds[sl], p.all_subseeds[sl]
        prompts = p.all_prompts[sl]
        p.call_hook("before_process_batch", batch_number=it, prompts=prompts, seeds=seeds, subseeds=subseeds)

        # 7. Extra networks of this batch's prompts (A1111 parse_extra_network_prompts + activate): re-activated
        #    only when they change between batches; then the conditioning.
        network_data: dict = {}
        if not request.disable_extra_networks:
            prompts, network_data = prompt_parser.parse_extra_networks_batch(prompts)
        encoder = extra_networks.networks_for_batch(p, comp, network_data, p.width, p.height)
        p.call_hook("process_batch", batch_number=it, prompts=prompts, seeds=seeds, subseeds=subseeds)
        conds = p.batches.conds(encoder, prompts, p.all_negative_prompts[sl], p.first_pass.sched)

        # 8. Noise from A1111's per-image RNG, at the latent size of this pass.
        latent_h = init.latent.shape[2] if init is not None else p.height // comp.vae_scale_factor
        latent_w = init.latent.shape[3] if init is not None else p.width // comp.vae_scale_factor
        rng = sampling.make_rng(p, (4, latent_h, latent_w), seeds, subseeds)
        x = rng.next()
        # 8b. img2img: a plugin may replace the noise (A1111 scripts that override p.sample: img2img alternative
        #     test), which then goes to the sampler as it is, without the noise multiplier.
        replaced = None
        if init is not None and p.plugins is not None and p.plugins.has("sample_noise"):
            replaced = p.call_hook("sample_noise", noise=x, batch_number=it, seeds=seeds, subseeds=subseeds,
                                   encoder=encoder)
        if replaced:
            x = replaced[-1]
        elif init is not None and init.noise_multiplier != 1.0:
            x = x * init.noise_multiplier

        # 9. Sample (first pass), with the refiner switch when asked for this pass.
        switch = None
        if p.refiner_checkpoint is not None and refiner.refiner_in_pass(opts, p.hr is not None, second=False):
            switch = refiner.refiner_switch(p, comp, pipe, p.first_pass, prompts, p.all_negative_prompts[sl],
                                            p.width, p.height)
        latents = sampling.sample(
            p, pipe, p.first_pass, conds=conds, encoder=encoder, noise=x, rng=rng, seeds=seeds,
            init_latent=init.latent if init is not None else None,
            image_cond=(init.image_cond if init is not None
                        else img2img.txt2img_image_cond(comp, pipe, len(seeds), p.width, p.height, seeds)),
            image_uncond=init.image_uncond if init is not None else None,
            image_cfg_scale=(request.image_cfg_scale if init is not None and init.image_cond is not None
                             and comp.unet.config.in_channels == 8 else None),
            mask=init.mask if init is not None else None, nmask=init.nmask if init is not None else None,
            control=p.unet_hooks, refiner=switch,
        )
        sample_comp = switch.components if switch is not None and switch.done else comp

        # 10. Hires fix: upscale, then an img2img pass at the target size.
        if p.hr is not None and not p.skipped():
            if p.progress is not None:
                p.progress.job_no = it * p.passes + 1
            latents, sample_comp = hires.hires_pass(p, latents, sample_comp, seeds, subseeds, p.all_prompts[sl])

        # 10b. The plugins' post_sample (A1111 Script.post_sample): the samples before decoding, replaceable.
        if p.plugins is not None and p.plugins.has("post_sample"):
            ps = PostSampleArgs(latents)
            p.call_hook("post_sample", ps=ps)
            latents = ps.samples

        # 11. Decode with the VAE of the model that finished (the refiner's when it took over).
        decoder = pipe if sample_comp is comp else A1111Pipeline(sample_comp)
        batch_images = decoder.decode(latents)
        p.extra_generation_params.update(p.batches.report_params(opts))
        p.call_hook("postprocess_batch", images=batch_images, batch_number=it)
        if p.plugins is not None and p.plugins.has("postprocess_batch_list"):
            pp = PostprocessBatchListArgs(batch_images)
            p.call_hook("postprocess_batch_list", pp=pp, batch_number=it)
            batch_images = pp.images

        # 12. Per image: face restoration, the plugins' postprocess_image, color correction and the inpainting
        #     overlay (A1111's order), infotext, save.
        images, infotexts, saved = [], [], []
        for j, image in enumerate(batch_images):
            index = it * p.batch_size + j
            if p.restore_faces:
                image = self.face_restorers.restore_faces(image, opts)
            pp = PostprocessImageArgs(image)
            p.call_hook("postprocess_image", pp=pp)
            image = pp.image
            if init is not None:
                # A1111: the plugins' postprocess_maskoverlay may replace the overlay (and its mask) before the
                # color correction and apply_overlay
                ppmo = PostprocessMaskOverlayArgs(j, init.mask_for_overlay,
                                                  init.overlays[j] if init.overlays is not None else None)
                p.call_hook("postprocess_maskoverlay", ppmo=ppmo)
                image = init.finish(image, j, ppmo.overlay_image)
            text = processed.create_infotext(p, index)
            image.info["parameters"] = text
            images.append(image)
            infotexts.append(text)
            if request.save_images and opts.get("samples_save"):
                saved.append(outputs.save_image(p, image, index, text))
        return images, infotexts, saved

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

    def use_vae(self, scope, comp, opts=None):
        """The VAE a generation with ``opts`` (default: the stored settings) would use, swapped into ``comp`` until
        ``scope`` (an ExitStack) closes: training encodes its images with it, as A1111's trainer uses the loaded
        VAE."""
        return self._use_vae(scope, comp, opts if opts is not None else self.settings)

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
        # the VAE in use plus sd_vae_checkpoint_cache others kept loaded (A1111 checkpoints_loaded for VAEs)
        self.vae_cache.max_items = 1 + max(0, int(opts.get("sd_vae_checkpoint_cache") or 0))
        module = self.vae_cache.get(resolution.path, comp.arch, self.plan)
        scope.enter_context(vae_mod.use_vae(comp, module))
        return resolution


class PostprocessImageArgs:
    """A1111 scripts.PostprocessImageArgs: the image a postprocess_image hook may replace."""

    def __init__(self, image):
        self.image = image


class PostprocessBatchListArgs:
    """A1111 scripts.PostprocessBatchListArgs: the batch's images as a list a hook may replace or extend."""

    def __init__(self, images):
        self.images = list(images)


class PostprocessMaskOverlayArgs:
    """A1111 scripts.PostProcessMaskOverlayArgs: the index of the image in its batch, the mask for the overlay and
    the overlay about to be pasted over it (None for plain img2img), both replaceable."""

    def __init__(self, index, mask_for_overlay, overlay_image):
        self.index = index
        self.mask_for_overlay = mask_for_overlay
        self.overlay_image = overlay_image


class PostSampleArgs:
    """A1111 scripts.PostSampleArgs: a batch's samples after sampling, before decoding; ``samples`` may be replaced."""

    def __init__(self, samples):
        self.samples = samples
