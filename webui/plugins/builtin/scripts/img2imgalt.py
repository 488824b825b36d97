"""A1111 ``scripts/img2imgalt.py`` (v1.10.1): "img2img alternative test", img2img only. The init latent is turned
back into noise by Euler steps run backwards with the original prompt (``pipelines.noise_inversion``), mixed with the
images' random noise by "Randomness", and sampled forward again, so that with the original prompt, Euler, the decode
steps and denoising 1.0 the output is (approximately) the init image and prompt changes edit it.

A1111 replaces ``p.sample``; here ``run`` puts its values in ``p.extension_args[TITLE]`` and the same script object,
registered as a plugin, answers the engine's ``sample_noise`` hook: it returns A1111's
``noise_dt = combined_noise - init_latent / sigmas[0]`` (``sigmas`` the model's own schedule for ``p.steps``), which
the img2img pass starts from as ``init_latent + noise_dt * sigma_sched[0]`` (A1111 sample_img2img). The found noise is
cached on the script object for the same init latent, prompts, CFG scale, steps and sigma adjustment (A1111's
``Cached``).

Differences from A1111:
- The sampler's own noise draws (ancestral/SDE samplers, when "Override `Sampling method` to Euler" is off) come
  from the images' RNG after its first draw; A1111 leaves the first draw to them (its script draws its random noise
  from a separate generator). Euler, the script's sampler, draws none.
- Prompts of different token-chunk counts are inverted in two UNet calls (A1111's ``torch.cat`` fails on them); SDXL
  works (A1111's fails on its dict conditioning); control hooks (ControlNet) do not act during the inversion.
- ``sigmas[0]`` comes from the model's own schedule for every sampler (A1111 reads ``sampler.model_wrap``, which the
  timestep samplers DDIM/PLMS/UniPC do not have, so it fails with them).
"""

from __future__ import annotations

from collections import namedtuple

from webui.plugins.hooks import hookimpl
from webui.plugins.scripts import Script, ScriptArg, ScriptError

TITLE = "img2img alternative test"
# A1111's gr.Markdown("* `CFG Scale` should be 2 or lower."), as gradio renders its value
INFO_HTML = "<ul>\n<li><code>CFG Scale</code> should be 2 or lower.</li>\n</ul>\n"

Cached = namedtuple("Cached", ["noise", "cfg_scale", "steps", "latent", "original_prompt", "original_negative_prompt",
                               "sigma_adjustment"])


class ScriptImg2ImgAlt(Script):
    def __init__(self):
        self.cache = None
        self.inversions = 0  # how many times the noise was found (not taken from the cache)

    def title(self):
        return TITLE

    def show(self, is_img2img):
        return is_img2img

    def ui(self, is_img2img):
        return [
            ScriptArg(None, INFO_HTML, "html"),
            ScriptArg("Override `Sampling method` to Euler?(this method is built for it)", True, "checkbox"),
            ScriptArg("Override `prompt` to the same value as `original prompt`?(and `negative prompt`)", True,
                      "checkbox"),
            ScriptArg("Original prompt", "", "textbox"),
            ScriptArg("Original negative prompt", "", "textbox"),
            ScriptArg("Override `Sampling Steps` to the same value as `Decode steps`?", True, "checkbox"),
            ScriptArg("Decode steps", 50, "slider", minimum=1, maximum=150, step=1),
            ScriptArg("Override `Denoising strength` to 1?", True, "checkbox"),
            ScriptArg("Decode CFG scale", 1.0, "slider", minimum=0.0, maximum=15.0, step=0.1),
            ScriptArg("Randomness", 0.0, "slider", minimum=0.0, maximum=1.0, step=0.01),
            ScriptArg("Sigma adjustment for finding noise for image", False, "checkbox"),
        ]

    def run(self, p, _, override_sampler, override_prompt, original_prompt, original_negative_prompt, override_steps,
            st, override_strength, cfg, randomness, sigma_adjustment):
        from webui.core.generation.processing import process_images

        if not p.init_images:
            raise ScriptError(TITLE, "needs an init image")
        original_prompt = "" if original_prompt is None else str(original_prompt)
        original_negative_prompt = "" if original_negative_prompt is None else str(original_negative_prompt)
        try:
            st = int(st)
            cfg_value, randomness_value = float(cfg), float(randomness)
        except (TypeError, ValueError) as e:
            raise ScriptError(TITLE, f"Decode steps, Decode CFG scale and Randomness must be numbers ({e})") from e
        if st < 1:
            raise ScriptError(TITLE, f"Decode steps must be at least 1, got {st}")
        if override_sampler:
            p.sampler_name = "Euler"
        if override_prompt:
            p.prompt = original_prompt
            p.negative_prompt = original_negative_prompt
        if override_steps:
            p.steps = st
        if override_strength:
            p.denoising_strength = 1.0

        p.extension_args[TITLE] = {
            "original_prompt": original_prompt, "original_negative_prompt": original_negative_prompt,
            "cfg": cfg_value, "st": st, "randomness": randomness_value, "sigma_adjustment": bool(sigma_adjustment),
        }
        p.extra_generation_params["Decode prompt"] = original_prompt
        p.extra_generation_params["Decode negative prompt"] = original_negative_prompt
        p.extra_generation_params["Decode CFG scale"] = cfg
        p.extra_generation_params["Decode steps"] = st
        p.extra_generation_params["Randomness"] = randomness
        p.extra_generation_params["Sigma Adjustment"] = sigma_adjustment

        processed = process_images(p)
        p.seed = p.seed + max(int(p.n_iter or 1), 1)  # A1111's p.seed = p.seed + 1 in each batch's sample_extra
        return processed

    # -- A1111's sample_extra, as the engine's sample_noise hook ------------------------------------------------------

    @hookimpl
    def sample_noise(self, p, noise, encoder):
        import numpy as np
        import torch

        from pipelines.denoiser import KDenoiser
        from pipelines.noise_inversion import find_noise_for_image

        args = p.request.extension_args.get(TITLE)
        if not args or p.init is None:
            return None
        init_latent = p.init.latent.float()
        cfg, st = args["cfg"], args["st"]
        original_prompt, original_negative_prompt = args["original_prompt"], args["original_negative_prompt"]
        sigma_adjustment, randomness = args["sigma_adjustment"], args["randomness"]

        lat = (init_latent.cpu().numpy() * 10).astype(int)
        same_params = (self.cache is not None and self.cache.cfg_scale == cfg and self.cache.steps == st
                       and self.cache.original_prompt == original_prompt
                       and self.cache.original_negative_prompt == original_negative_prompt
                       and self.cache.sigma_adjustment == sigma_adjustment)
        same_everything = (same_params and self.cache.latent.shape == lat.shape
                           and np.abs(self.cache.latent - lat).sum() < 100)

        comp = p.sd_model
        if same_everything:
            rec_noise = self.cache.noise
        else:
            n = init_latent.shape[0]
            cond = encoder(n * [original_prompt])
            uncond = encoder(n * [original_negative_prompt])
            denoiser = KDenoiser(comp.unet, p.pipe.model_sigmas, comp.prediction_type)
            rec_noise = find_noise_for_image(denoiser, init_latent, cond, uncond, cfg, st,
                                             sigma_adjustment=sigma_adjustment, image_cond=p.init.image_cond)
            self.inversions += 1
            self.cache = Cached(rec_noise, cfg, st, lat, original_prompt, original_negative_prompt, sigma_adjustment)

        rand_noise = noise.to(rec_noise.device, torch.float32)
        combined_noise = (((1 - randomness) * rec_noise + randomness * rand_noise)
                          / ((randomness**2 + (1 - randomness) ** 2) ** 0.5))
        sigmas = p.pipe.model_sigmas.get_sigmas(int(p.request.steps))
        return combined_noise - init_latent.to(combined_noise.device) / sigmas[0].to(combined_noise.device)
