"""Finding the noise of an image: A1111 ``scripts/img2imgalt.py`` ``find_noise_for_image`` and
``find_noise_for_image_sigma_adjustment`` (the "img2img alternative test" script).

Euler steps run backwards, from the init latent at sigma 0 up the model's own schedule (k-diffusion
``CompVisDenoiser.get_sigmas(steps).flip(0)``), with the original prompt's cond and uncond batched together and
classifier-free guidance; the result, scaled to unit std (or divided by the last sigma with the sigma adjustment),
is the noise that sampling forward with Euler turns back into (approximately) the init image.
"""

from __future__ import annotations

from typing import Callable

import torch

from pipelines.denoiser import Cond, KDenoiser


@torch.no_grad()
def find_noise_for_image(
    denoiser: KDenoiser,
    init_latent: torch.Tensor,
    cond: Cond,
    uncond: Cond,
    cfg_scale: float,
    steps: int,
    *,
    sigma_adjustment: bool = False,
    image_cond: torch.Tensor | None = None,
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """The noise for ``init_latent`` [B, C, h, w]; ``cond`` / ``uncond`` have B rows each, ``image_cond`` (A1111's
    ``p.image_conditioning``, inpainting / instruct-pix2pix models) is given to both halves as A1111 does.

    As A1111, the model output is combined as ``x_in + out * c_out`` (c_skip left out, which for v-prediction models
    is A1111's own formula), and with ``sigma_adjustment`` the first step takes the timestep of ``sigmas[1]`` with
    the scalings of ``sigmas[0]`` (= 0) and divides by ``2 * sigmas[1]`` (briansemrau's variant, A1111 issue 736).
    """
    x = init_latent.float()
    sigmas = denoiser.model_sigmas.get_sigmas(int(steps)).flip(0).to(x.device)
    s_in = x.new_ones([x.shape[0]])
    uncond_rows = uncond.with_rows(image_cond, True)
    cond_rows = cond.with_rows(image_cond, False)
    same_length = uncond.context.shape[1] == cond.context.shape[1]
    both = Cond.cat([uncond_rows, cond_rows]) if same_length else None

    for i in range(1, len(sigmas)):
        x_in = torch.cat([x] * 2)
        sigma = sigmas[i - 1] if sigma_adjustment else sigmas[i]
        sigma_in = torch.cat([sigma * s_in] * 2)
        _, c_out, c_in = (s[:, None, None, None] for s in denoiser.scalings(sigma_in))
        t_sigma = torch.cat([sigmas[i] * s_in] * 2) if sigma_adjustment and i == 1 else sigma_in
        t = denoiser.model_sigmas.sigma_to_t(t_sigma)
        if both is not None:
            out = denoiser.unet_call(x_in * c_in, t, both, sigma_in)
        else:  # prompts of different chunk counts: A1111's torch.cat would fail; the same result in two calls
            n = x.shape[0]
            out = torch.cat([denoiser.unet_call((x_in * c_in)[:n], t[:n], uncond_rows, sigma_in[:n]),
                             denoiser.unet_call((x_in * c_in)[n:], t[n:], cond_rows, sigma_in[n:])])
        denoised_uncond, denoised_cond = (x_in + out * c_out).chunk(2)
        denoised = denoised_uncond + (denoised_cond - denoised_uncond) * cfg_scale

        if sigma_adjustment:
            d = (x - denoised) / (2 * sigmas[i] if i == 1 else sigmas[i - 1])
        else:
            d = (x - denoised) / sigmas[i]
        dt = sigmas[i] - sigmas[i - 1]
        x = x + d * dt
        if callback is not None:
            callback(i, len(sigmas) - 1, x)

    return x / sigmas[-1] if sigma_adjustment else x / x.std()
