"""Hires fix (A1111 ``StableDiffusionProcessingTxt2Img``): the target sizes, the infotext, and the second pass --
upscale the first pass's latents (or pixels), fresh noise from the same seeds, img2img at denoising_strength."""

from __future__ import annotations

from typing import Any

import torch

from webui.core.generation import extra_networks, optimizations, refiner, sampling
from webui.core.generation.context import GenerationError, short_title
from webui.core.generation.img2img import txt2img_image_cond


def hires_plan(p):
    """A1111's hires sizes for the request (``__post_init__`` + ``calculate_target_resolution``); checks the
    upscaler name and that a denoising strength is given."""
    from webui.core.generation.imageops import LATENT_UPSCALE_MODES, hires_target

    request, opts = p.request, p.opts
    if request.denoising_strength is None:
        raise GenerationError(
            "denoising_strength: Hires. fix (enable_hr) needs a denoising strength for its second pass, e.g. 0.7",
            "denoising_strength")
    hires = request.hires
    upscaler = hires.upscaler or "Latent"
    if upscaler not in LATENT_UPSCALE_MODES and not _pixel_upscaler_exists(p.services, upscaler):
        choices = list(LATENT_UPSCALE_MODES) + _pixel_upscaler_names(p.services)
        raise GenerationError(f"hr_upscaler: could not find upscaler named {upscaler!r}; choices: "
                              f"{', '.join(choices)}", "hr_upscaler")
    return hires_target(
        request.width, request.height, scale=hires.scale, resize_x=hires.resize_x, resize_y=hires.resize_y,
        firstphase_width=request.firstphase_width, firstphase_height=request.firstphase_height,
        use_old_hires_fix_width_height=bool(opts.get("use_old_hires_fix_width_height")),
    )


def hires_infotext(p) -> dict:
    """The hires entries of the infotext, in A1111's order."""
    request, hr, hr_info = p.request, p.hr, p.hr_checkpoint
    hires = request.hires
    out: dict[str, Any] = {"Denoising strength": request.denoising_strength}
    if hr_info is not None:
        out["Hires checkpoint"] = short_title(hr_info)
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


def hires_pass(p, latents, comp, seeds, subseeds, batch_prompts):
    """A1111 sample_hr_pass: latent or pixel upscale to the target size, crop (truncate) to it, fresh noise from
    the same seeds, then img2img with hr_second_pass_steps at denoising_strength; hr_checkpoint_name switches
    the model for this pass. Returns ``(latents, components that finished)``."""
    import numpy as np

    from pipelines.a1111 import A1111Pipeline
    from webui.core.generation import imageops
    from webui.core.generation import prompts as prompt_parser

    request, opts, hr = p.request, p.opts, p.hr
    hires = request.hires
    upscaler = hires.upscaler or "Latent"
    target_w, target_h = hr.target_width, hr.target_height
    hr_comp = p.services.load(p.hr_checkpoint, extra_slots=1, opts=opts) if p.hr_checkpoint is not None else comp
    optimizations.use_attention(p, hr_comp)
    pipe = A1111Pipeline(hr_comp)
    if upscaler in imageops.LATENT_UPSCALE_MODES:
        samples = imageops.upscale_latent(latents, target_w, target_h, upscaler)
        image_cond = txt2img_image_cond(hr_comp, pipe, len(seeds), target_w, target_h, seeds)
    else:
        lowres = (pipe if hr_comp is comp else A1111Pipeline(comp)).decode(latents)
        arrays = [
            np.moveaxis(np.array(_pixel_upscale(p.services, im, upscaler, target_w, target_h)).astype(np.float32)
                        / 255.0, 2, 0)
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
    rng = sampling.make_rng(p, tuple(samples.shape[1:]), seeds, subseeds)
    noise = rng.next()

    # A1111 sample_hr_pass: None or the UI's "Use same ..." choice (what a pasted infotext may carry) keeps the
    # first pass's sampler and schedule
    sampler_name = hires.sampler_name if hires.sampler_name not in (None, "", "Use same sampler") \
        else request.sampler_name
    scheduler = hires.scheduler if hires.scheduler not in (None, "", "Use same scheduler") else request.scheduler
    steps = hires.second_pass_steps or request.steps
    plan = sampling.plan_pass(p, pipe, hr_comp, sampler_name, scheduler, steps, True, request.denoising_strength)
    if opts.get("img2img_extra_noise"):
        p.extra_generation_params["Extra noise"] = float(opts.get("img2img_extra_noise"))  # A1111 sample_img2img
    # the hires prompts, with their own extra networks (A1111 hr_extra_network_data)
    n = len(seeds)
    prompts, negatives = [p.hr_prompt] * n, [p.hr_negative_prompt] * n
    if p.hr_prompt == request.prompt:
        prompts = list(batch_prompts)
    network_data: dict = {}
    if not request.disable_extra_networks:
        prompts, network_data = prompt_parser.parse_extra_networks_batch(prompts)
    encoder = extra_networks.networks_for_batch(p, hr_comp, network_data, target_w, target_h)
    conds = p.batches.conds(encoder, prompts, negatives, plan.sched)
    switch = None
    if p.refiner_checkpoint is not None and refiner.refiner_in_pass(opts, True, second=True):
        switch = refiner.refiner_switch(p, hr_comp, pipe, plan, prompts, negatives, target_w, target_h)
    p.call_hook("before_hr")  # where A1111 calls it: conds ready, just before sample_img2img
    latents = sampling.sample(
        p, pipe, plan, conds=conds, encoder=encoder, noise=noise, rng=rng, seeds=seeds, init_latent=samples,
        image_cond=image_cond, control=p.unet_hooks if hr_comp is comp else None, refiner=switch, steps=steps,
    )
    if switch is not None and switch.done:
        hr_comp = switch.components
    return latents, hr_comp


def _pixel_upscaler_names(services) -> list[str]:
    if services.upscalers is not None:
        return [u.name for u in services.upscalers.list(services.settings) if u.name not in ("None",)]
    return ["Lanczos", "Nearest"]


def _pixel_upscaler_exists(services, name: str) -> bool:
    return name in _pixel_upscaler_names(services) or name == "None"


def _pixel_upscale(services, image, name: str, width: int, height: int):
    """A pixel upscaler for the hires pass (A1111 resize_image mode 0 with upscaler_name): the upscalers of the
    extras module when present, else PIL's Lanczos / Nearest."""
    from PIL import Image

    if services.upscalers is not None:
        return services.upscalers.upscale_to(image, name, width, height, services.settings)
    if name in ("None", "Lanczos"):
        return image.resize((width, height), Image.LANCZOS)
    return image.resize((width, height), Image.NEAREST)
