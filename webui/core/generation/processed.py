"""What a generation reports: each image's infotext (A1111 ``processing.create_infotext``) and the ``info`` dict
(A1111 ``Processed.js()``)."""

from __future__ import annotations

from webui.core.generation import optimizations, tiling
from webui.core.generation.context import A1111_VERSION
from webui.core.io import infotext as infotext_mod
from webui.core.models import fp8


def create_infotext(p, index: int, comp=None) -> str:
    """A1111 processing.create_infotext for image ``index`` of the job."""
    request, opts, hr, init = p.request, p.opts, p.hr, p.init
    comp = comp or p.sd_model
    plan = p.first_pass.plan
    vae_params = vae_infotext(p)
    clip_skip = p.clip_skip
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
        "Seed": p.all_seeds[index],
        "Face restoration": opts.get("face_restoration_model") if p.restore_faces else None,
        "Size": f"{hr.width}x{hr.height}" if hr is not None else f"{request.width}x{request.height}",
        "Model hash": comp.info.shorthash if opts.get("add_model_hash_to_info") else None,
        "Model": comp.info.stem if opts.get("add_model_name_to_info") else None,
        **fp8.infotext_params(comp, opts),  # "FP8 weight", "Cache FP16 weight for LoRA": only when the model is fp8
        "VAE hash": vae_params.get("VAE hash"),
        "VAE": vae_params.get("VAE"),
        "Variation seed": None if request.subseed_strength == 0 else p.all_subseeds[index],
        "Variation seed strength": None if request.subseed_strength == 0 else float(request.subseed_strength),
        "Seed resize from": (
            None
            if request.seed_resize_from_w <= 0 or request.seed_resize_from_h <= 0
            else f"{request.seed_resize_from_w}x{request.seed_resize_from_h}"
        ),
        "Clip skip": None if clip_skip <= 1 else clip_skip,
        "ENSD": opts.get("eta_noise_seed_delta") if plan.uses_ensd else None,
        **optimizations.infotext_params(p),
        "RNG": opts.get("randn_source") if opts.get("randn_source") != "GPU" else None,
        "Tiling": tiling.infotext_value(p),
    }
    params = infotext_mod.ordered_params(
        core, p.extra_generation_params, version=A1111_VERSION if opts.get("add_version_to_infotext") else None
    )
    return infotext_mod.build_infotext(p.all_prompts[index], p.all_negative_prompts[index], params)


def vae_infotext(p) -> dict:
    """"VAE" / "VAE hash" of the external VAE in use (empty when the checkpoint's own VAE is used)."""
    if p.vae_info is None:
        return {}
    from webui.core.networks.vae import vae_infotext as make

    registry, opts = p.services.registry, p.opts
    return make(p.vae_info, registry.hash_cache, no_hashing=registry.no_hashing,
                add_hash=bool(opts.get("add_vae_hash_to_info")), add_name=bool(opts.get("add_vae_name_to_info")))


def processed_js(p, infotexts, index_of_first_image=0) -> dict:
    """A1111 ``Processed.js()`` keys, in order (spec §6.6)."""
    request, opts, comp = p.request, p.opts, p.sd_model
    vae = vae_infotext(p)
    all_prompts, all_negative = p.all_prompts, p.all_negative_prompts
    all_seeds, all_subseeds = p.all_seeds, p.all_subseeds
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
        "batch_size": p.batch_size,
        "restore_faces": p.restore_faces,
        "face_restoration_model": opts.get("face_restoration_model") if p.restore_faces else None,
        "sd_model_name": comp.info.stem,
        "sd_model_hash": comp.info.shorthash,
        "sd_vae_name": vae.get("VAE"),
        "sd_vae_hash": vae.get("VAE hash"),
        "seed_resize_from_w": request.seed_resize_from_w,
        "seed_resize_from_h": request.seed_resize_from_h,
        "denoising_strength": request.denoising_strength,
        "extra_generation_params": dict(p.extra_generation_params),
        "index_of_first_image": index_of_first_image,
        "infotexts": infotexts,
        "styles": list(request.styles),
        "job_timestamp": p.job_timestamp,
        "clip_skip": p.clip_skip,
        "is_using_inpainting_conditioning": bool(p.init is not None and p.init.uses_inpainting_conditioning),
        "version": A1111_VERSION,
    }
    if p.comments:
        # A1111 shows these (missing LoRAs, ...) under the image in the UI; its info has no such key, so clients
        # that do not know it ignore it.
        info["comments"] = list(p.comments)
    if request.sampler_fallback:
        # A1111 falls back silently; we keep its result but tell the client what happened.
        info["sampler_fallback"] = request.sampler_fallback
    return info
