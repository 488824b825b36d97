"""The denoising loop with A1111's semantics on diffusers modules.

One ``__call__`` laid out in numbered steps (diffusers' style): it takes conditioning that the core already built,
the starting noise from A1111's seeds, and a sampler from the table in ``webui.core.samplers``, and returns latents.
Decoding is a separate step because hires fix and the refiner continue from latents.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from pipelines.denoiser import CFGDenoiser, KDenoiser, LCMDenoiser, LCMSigmas, SamplingInterrupted, StepConds
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
        self.denoiser = KDenoiser(components.unet, self.model_sigmas, components.prediction_type)
        self.lcm_sigmas = LCMSigmas(components.alphas_cumprod.to(components.plan.device))

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
    ) -> torch.Tensor:
        device = self.components.plan.device
        # 1. The guided model: CFGDenoiser over the k-diffusion wrapper (sigma space) or the eps model (timesteps).
        if run.kind == "k" and run.denoiser == "lcm":
            inner = LCMDenoiser(self.components.unet, self.lcm_sigmas, self.components.prediction_type)
        elif run.kind == "k":
            inner = self.denoiser
        else:
            alphas = self.components.alphas_cumprod.to(device)
            inner = lambda x, t, c: self.denoiser.eps(x, t, c, alphas)  # noqa: E731
        model = CFGDenoiser(inner, conds, cfg_scale, should_stop=should_stop, batch_cond_uncond=batch_cond_uncond)

        # 2. Sampler arguments: A1111 hands k-diffusion its per-image RNG for every randn_like, or a Brownian tree
        #    seeded from the images' seeds for the SDE samplers (batch-size independent results).
        kwargs = dict(run.kwargs)
        params = inspect.signature(run.function).parameters
        x = noise.to(device, torch.float32)
        if run.kind == "k":
            sigmas = run.sigmas.to(device)
            if "noise_sampler" in params:
                if run.brownian_noise:
                    from pipelines.k_sampling import BrownianTreeNoiseSampler

                    positive = sigmas[sigmas > 0]
                    kwargs["noise_sampler"] = BrownianTreeNoiseSampler(x, positive.min(), sigmas.max(), seed=seeds)
                else:
                    kwargs["noise_sampler"] = lambda s, sn: rng_next().to(device, x.dtype)
            # 3. Starting point: noise scaled to the first sigma (A1111 KDiffusionSampler.sample).
            x = x * sigmas[0]
            steps = len(sigmas) - 1
        else:
            if "timesteps" in params:
                kwargs["timesteps"] = run.timesteps
            if "alphas_cumprod" in params:
                kwargs["alphas_cumprod"] = alphas
            steps = len(run.timesteps) if run.timesteps is not None else 0
            if "noise_sampler" in params:
                kwargs["noise_sampler"] = lambda *a: rng_next().to(device, x.dtype)

        # 4. Loop. The callback feeds progress and previews; an interrupt returns the last denoised latent, as A1111.
        last = {"latent": x}

        def on_step(d: dict) -> None:
            last["latent"] = d["denoised"]
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
        return samples

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
