"""The denoising loop with A1111's semantics on diffusers modules.

One ``__call__`` laid out in numbered steps (diffusers' style): it takes conditioning that the core already built,
the starting noise from A1111's seeds, and a sampler from the table in ``webui.core.generation.samplers``, and returns latents.
Decoding is a separate step because hires fix and the refiner continue from latents.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from pipelines.denoiser import (
    CFGDenoiser,
    KDenoiser,
    LCMDenoiser,
    LCMSigmas,
    MaskBlendArgs,
    RefinerSwitch,
    SamplingInterrupted,
    StepConds,
)
from pipelines.schedules import ModelSigmas


@dataclass
class SamplerRun:
    """What the pipeline needs to run one sampler: the function, its kind, and its keyword arguments."""

    function: Callable
    kind: str  # "k" (sigma space, k-diffusion style) or "timesteps" (DDIM, PLMS, UniPC, DDIM CFG++)
    sigmas: torch.Tensor | None = None  # k samplers
    timesteps: Any = None  # timestep samplers
    kwargs: dict = field(default_factory=dict)
    brownian_noise: bool = False
    denoiser: str = "k-diffusion"  # or "lcm": A1111's LCMCompVisDenoiser


class A1111Pipeline:
    """Runs A1111's sampling over a diffusers UNet and decodes with the VAE."""

    def __init__(self, components):
        self.components = components
        self.model_sigmas = ModelSigmas(components.alphas_cumprod.to(components.plan.device))
        self.lcm_sigmas = LCMSigmas(components.alphas_cumprod.to(components.plan.device))

    def make_inner(self, run: SamplerRun, control: list | None = None):
        """The model the CFG denoiser calls: the k-diffusion wrapper (sigma space), A1111's LCM wrapper, or the eps
        model on integer timesteps (DDIM, PLMS, UniPC), with the request's control hooks (ControlNet)."""
        comp = self.components
        if run.kind == "k" and run.denoiser == "lcm":
            return LCMDenoiser(comp.unet, self.lcm_sigmas, comp.prediction_type, control=list(control or []))
        denoiser = KDenoiser(comp.unet, self.model_sigmas, comp.prediction_type, control=list(control or []))
        if run.kind == "k":
            return denoiser
        alphas = comp.alphas_cumprod.to(comp.plan.device)
        inner = lambda x, t, c: denoiser.eps(x, t, c, alphas)  # noqa: E731
        inner.progress = denoiser.progress  # type: ignore[attr-defined]
        return inner

    @torch.no_grad()
    def __call__(
        self,
        *,
        conds: StepConds,
        cfg_scale: float,
        noise: torch.Tensor,
        rng_next: Callable[[], torch.Tensor],
        run: SamplerRun,
        seeds: list[int],
        callback: Callable[[int, int, torch.Tensor], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        batch_cond_uncond: bool = True,
        pad_cond_uncond_v0: bool = False,
        empty_context: torch.Tensor | None = None,
        init_latent: torch.Tensor | None = None,
        t_enc: int | None = None,
        extra_noise: float = 0.0,
        image_cond: torch.Tensor | None = None,
        image_uncond: torch.Tensor | None = None,
        image_cfg_scale: float | None = None,
        mask: torch.Tensor | None = None,
        nmask: torch.Tensor | None = None,
        control: list | None = None,
        refiner: RefinerSwitch | None = None,
        cfg_callbacks: Any = None,
        uncond_skip: dict | None = None,
        sgm_noise_multiplier: bool = False,
    ) -> torch.Tensor:
        """txt2img from ``noise``; img2img from ``init_latent`` running ``t_enc`` of the schedule's steps (A1111
        sample_img2img); ``mask``/``nmask`` blend the init latent back after every step (inpainting on ordinary
        models); ``image_cond`` is the extra UNet input of inpainting / instruct-pix2pix models."""
        device = self.components.plan.device
        # 1. The guided model: CFGDenoiser over the k-diffusion wrapper (sigma space) or the eps model (timesteps).
        inner = self.make_inner(run, control)
        model = CFGDenoiser(inner, conds, cfg_scale, should_stop=should_stop, batch_cond_uncond=batch_cond_uncond,
                            pad_cond_uncond_v0=pad_cond_uncond_v0, empty_context=empty_context,
                            image_cond=image_cond, image_uncond=image_uncond, image_cfg_scale=image_cfg_scale,
                            mask=mask, nmask=nmask,
                            init_latent=init_latent, refiner=refiner, timesteps_mode=run.kind != "k",
                            callbacks=cfg_callbacks, **(uncond_skip or {}))

        # 2. Sampler arguments: A1111 hands k-diffusion its per-image RNG for every randn_like, or a Brownian tree
        #    seeded from the images' seeds for the SDE samplers (batch-size independent results).
        kwargs = dict(run.kwargs)
        params = inspect.signature(run.function).parameters
        noise = noise.to(device, torch.float32)
        x = noise
        if run.kind == "k":
            sigmas = run.sigmas.to(device)
            full_sigmas = sigmas
            # 3. Starting point: noise scaled to the first sigma (A1111 KDiffusionSampler.sample), or for img2img the
            #    init latent plus noise at the first sigma of the last t_enc+1 steps (sample_img2img).
            if init_latent is not None:
                steps_total = len(sigmas) - 1
                sigmas = sigmas[steps_total - t_enc - 1 :]
                x = init_latent.to(device, torch.float32) + noise * sigmas[0]
                if extra_noise > 0:
                    x = x + noise * extra_noise  # option img2img_extra_noise
                if "sigma_min" in kwargs:
                    kwargs["sigma_min"] = sigmas[-2]
                if "sigma_max" in kwargs:
                    kwargs["sigma_max"] = sigmas[0]
                if "n" in kwargs:
                    kwargs["n"] = len(sigmas) - 1
            elif sgm_noise_multiplier:
                # option sgm_noise_multiplier (A1111 KDiffusionSampler.sample, txt2img only): the official SDXL
                # code's initial noise scale, sqrt(1 + sigma_max^2), instead of sigma_max
                x = noise * torch.sqrt(1.0 + sigmas[0] ** 2.0)
            else:
                x = noise * sigmas[0]
            if "noise_sampler" in params:
                if run.brownian_noise:
                    from pipelines.k_sampling import BrownianTreeNoiseSampler

                    positive = full_sigmas[full_sigmas > 0]
                    kwargs["noise_sampler"] = BrownianTreeNoiseSampler(x, positive.min(), full_sigmas.max(), seed=seeds)
                else:
                    kwargs["noise_sampler"] = lambda s, sn: rng_next().to(device, x.dtype)
            steps = len(sigmas) - 1
        else:
            alphas = self.components.alphas_cumprod.to(device)
            timesteps = run.timesteps
            if init_latent is not None:
                # sd_samplers_timesteps.sample_img2img: noise the init latent to timesteps[t_enc], run t_enc steps
                a = alphas[timesteps[t_enc]]
                x = init_latent.to(device, torch.float32) * a.sqrt() + noise * (1 - a).sqrt()
                if extra_noise > 0:
                    x = x + noise * extra_noise
                timesteps = timesteps[:t_enc]
                if "is_img2img" in params:
                    kwargs["is_img2img"] = True
            if "timesteps" in params:
                kwargs["timesteps"] = timesteps
            if "alphas_cumprod" in params:
                kwargs["alphas_cumprod"] = alphas
            steps = len(timesteps) if timesteps is not None else 0
            if "noise_sampler" in params:
                kwargs["noise_sampler"] = lambda *a: rng_next().to(device, x.dtype)
        progress = inner.progress
        progress.step, progress.steps = 0, steps

        # 4. Loop. The callback feeds progress and previews; an interrupt returns the last denoised latent, as A1111.
        last = {"latent": x}

        def on_step(d: dict) -> None:
            last["latent"] = d["denoised"]
            model.sampling_step = progress.step = d["i"] + 1
            if callback is not None:
                callback(d["i"] + 1, steps, d["denoised"])

        try:
            if run.kind == "k":
                samples = run.function(model, x, sigmas, extra_args={}, callback=on_step, disable=True, **kwargs)
            else:
                timesteps = kwargs.pop("timesteps", run.timesteps)
                samples = run.function(model, x, timesteps, extra_args={}, callback=on_step, disable=True, **kwargs)
        except SamplingInterrupted:
            samples = last["latent"]
        if mask is not None:
            blended = samples * nmask + init_latent.to(samples) * mask  # A1111 sample(): blend after sampling too
            if cfg_callbacks is not None:  # and its scripts' on_mask_blend (the final blend: no denoiser, no sigma)
                mba = MaskBlendArgs(samples, nmask, init_latent.to(samples), mask, blended)
                cfg_callbacks.mask_blend(mba)
                blended = mba.blended_latent
            samples = blended
        return samples

    @torch.no_grad()
    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images [B, 3, H, W] in [0, 1] -> latents (A1111 images_tensor_to_samples, "Full" VAE): the posterior is
        sampled, with ``generator`` so that the same seed gives the same latent (A1111 draws from the global RNG)."""
        vae = self.components.vae
        x = (images * 2.0 - 1.0).to(vae.device, vae.dtype)
        dist = vae.encode(x, return_dict=False)[0]
        mean, std = dist.mean.float(), dist.std.float()
        eps = torch.randn(mean.shape, generator=generator, dtype=torch.float32, device="cpu").to(mean.device)
        return (mean + std * eps) * vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        """VAE decode one image at a time (A1111's decode_latent_batch), clamp to [0, 1], truncate to uint8.

        A half-precision VAE that produces NaNs is retried in float32 (A1111's ``auto_vae_precision``)."""
        vae = self.components.vae
        images = []
        for latent in latents:
            x = self._decode_one(vae, latent)
            if torch.isnan(x).any() and vae.dtype != torch.float32:
                torch.nn.Module.to(vae, dtype=torch.float32)
                x = self._decode_one(vae, latent)
            x = torch.clamp((x.float() + 1.0) / 2.0, min=0.0, max=1.0)
            arr = (255.0 * np.moveaxis(x.cpu().numpy(), 0, 2)).astype(np.uint8)
            images.append(Image.fromarray(arr))
        return images

    @staticmethod
    def _decode_one(vae, latent: torch.Tensor) -> torch.Tensor:
        z = (latent[None] / vae.config.scaling_factor).to(vae.device, vae.dtype)
        return vae.decode(z, return_dict=False)[0][0]
