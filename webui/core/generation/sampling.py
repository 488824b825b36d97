"""One sampling pass: the sampler plan (steps, sigmas, t_enc), the per-image RNG, the progress callback and the
pipeline call, shared by the first pass and the hires pass (A1111 ``sampler.sample`` / ``sample_img2img``)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from webui.core.generation import noise as noise_mod
from webui.core.generation import optimizations


@dataclass
class PassPlan:
    plan: Any  # SamplingPlan
    sched: Any  # SchedulingOptions
    t_enc: int | None = None  # img2img passes: steps run of the longer schedule


def plan_pass(p, pipe, comp, sampler_name, scheduler, steps, img2img: bool, denoising) -> PassPlan:
    """Sampler run for one pass. img2img passes (img2img, the hires pass) take A1111's setup_img2img_steps:
    ``t_enc`` steps of a longer schedule; the hires pass always uses the fixed-steps rule."""
    from webui.core.generation.conditioning import SchedulingOptions
    from webui.core.generation.imageops import img2img_steps
    from webui.core.generation.samplers import find_sampler
    from webui.core.generation.sampling_plan import plan_sampling

    request, opts = p.request, p.opts
    t_enc = None
    total = steps
    if img2img:
        fix = bool(opts.get("img2img_fix_steps")) if request.mode != "txt2img" else True
        total, t_enc = img2img_steps(steps, float(denoising), fix)
    plan = plan_sampling(
        sampler_name, scheduler, max(total, 1), pipe.model_sigmas, opts,
        eta=request.eta, s_churn=request.s_churn, s_tmin=request.s_tmin, s_tmax=request.s_tmax,
        s_noise=request.s_noise, is_sdxl=comp.is_sdxl, device=p.services.plan.device, lcm_sigmas=pipe.lcm_sigmas,
    )
    spec = find_sampler(sampler_name)
    # Prompt-editing steps count model calls, which second-order samplers make twice per step (A1111's
    # setup_conds: sampler_config.total_steps); img2img counts the steps it runs.
    run_steps = (t_enc + 1) if t_enc is not None else steps
    sched = SchedulingOptions(
        steps=spec.total_steps(run_steps) if spec is not None else run_steps,
        use_old_scheduling=bool(p.opts.get("use_old_scheduling")),
    )
    return PassPlan(plan, sched, t_enc)


def make_rng(p, shape, seeds, subseeds):
    """A1111's per-image RNG for this pass's latent shape (variation seeds, seed resize, RNG source, ENSD)."""
    request, opts = p.request, p.opts
    return noise_mod.ImageRNG(
        shape,
        seeds,
        subseeds=subseeds,
        subseed_strength=request.subseed_strength,
        seed_resize_from_h=request.seed_resize_from_h,
        seed_resize_from_w=request.seed_resize_from_w,
        randn_source=opts.get("randn_source"),
        device=p.services.plan.device,
        eta_noise_seed_delta=int(opts.get("eta_noise_seed_delta") or 0),
    )


def on_step(progress):
    """The sampler callback: the shared progress source (API /progress, UI) and a console bar per sampling pass,
    as A1111 prints one with tqdm (to stderr; off when stderr is not a terminal, e.g. under CI)."""
    from tqdm import tqdm

    bar: dict[str, Any] = {}

    def callback(step: int, steps: int, latent) -> None:
        if progress is not None:
            progress.step(step, steps, latent)
        if "bar" not in bar:
            bar["bar"] = tqdm(total=steps, leave=True, disable=not sys.stderr.isatty(), file=sys.stderr)
        bar["bar"].update(1)
        if step >= steps:
            bar.pop("bar").close()

    return callback


CFG_HOOKS = frozenset({"on_cfg_denoiser", "on_cfg_denoised", "on_cfg_after_cfg"})


class CfgCallbacks:
    """The denoiser's per-step plugin hooks (A1111 on_cfg_denoiser / on_cfg_denoised / on_cfg_after_cfg, and
    on_mask_blend for inpainting), given to the pipeline only when some plugin implements one of them, so that
    sampling without plugins pays nothing; hooks nobody implements are not called."""

    def __init__(self, p, total_steps: int, hooks: frozenset = CFG_HOOKS):
        self.p = p
        self.total_steps = total_steps
        self.hooks = hooks

    def _call(self, hook: str, params) -> None:
        if hook in self.hooks:
            params.total_sampling_steps = self.total_steps
            self.p.call_hook(hook, params=params)

    def denoiser(self, params) -> None:
        self._call("on_cfg_denoiser", params)

    def denoised(self, params) -> None:
        self._call("on_cfg_denoised", params)

    def after_cfg(self, params) -> None:
        self._call("on_cfg_after_cfg", params)

    def mask_blend(self, mba) -> None:
        if "on_mask_blend" in self.hooks:
            self.p.call_hook("on_mask_blend", mba=mba)


def cfg_callbacks(p, steps: int, masked: bool = False) -> CfgCallbacks | None:
    """The callbacks of a pass; on_mask_blend counts only for a pass with a latent mask (inpainting)."""
    plugins = p.plugins
    if plugins is None:
        return None
    wanted = CFG_HOOKS | {"on_mask_blend"} if masked else CFG_HOOKS
    hooks = frozenset(h for h in wanted if plugins.has(h))
    return CfgCallbacks(p, steps, hooks) if hooks else None


def sample(p, pipe, pass_plan: PassPlan, *, conds, encoder, noise, rng, seeds, init_latent=None, image_cond=None,
           image_uncond=None, image_cfg_scale=None, mask=None, nmask=None, control=None, refiner=None, steps=None):
    """Run one pass through the pipeline with the request's guidance options. Both passes get the padding options
    (A1111's CFGDenoiser reads pad_cond_uncond / pad_cond_uncond_v0 on every call) and every img2img pass -- the
    hires pass included, which A1111 runs through ``sample_img2img`` -- gets option img2img_extra_noise."""
    opts = p.opts
    extra_noise = float(opts.get("img2img_extra_noise") or 0) if init_latent is not None else 0.0
    skip = uncond_skip(p, pass_plan)
    # A1111 reads sgm_noise_multiplier only in KDiffusionSampler.sample: k-diffusion samplers, from noise
    sgm = bool(opts.get("sgm_noise_multiplier")) and init_latent is None and pass_plan.plan.run.kind == "k"
    hr = p.hr is not None and pass_plan is not p.first_pass
    with optimizations.pass_scope(p, pipe.components, hr=hr):  # token merging at this pass's ratio
        latents = pipe(
            conds=conds,
            cfg_scale=p.request.cfg_scale,
            noise=noise,
            rng_next=rng.next,
            run=pass_plan.plan.run,
            seeds=seeds,
            callback=on_step(p.progress),
            should_stop=(p.progress.should_stop if p.progress is not None else (lambda: False)),
            batch_cond_uncond=bool(opts.get("batch_cond_uncond")),
            pad_cond_uncond_v0=bool(opts.get("pad_cond_uncond_v0")),
            empty_context=encoder([""]).context if opts.get("pad_cond_uncond") else None,
            init_latent=init_latent,
            t_enc=pass_plan.t_enc,
            extra_noise=extra_noise,
            image_cond=image_cond,
            image_uncond=image_uncond,
            image_cfg_scale=image_cfg_scale,
            mask=mask,
            nmask=nmask,
            control=control,
            refiner=refiner,
            cfg_callbacks=cfg_callbacks(p, steps if steps is not None else p.request.steps, mask is not None),
            uncond_skip=skip,
            sgm_noise_multiplier=sgm,
        )
    if sgm:
        p.extra_generation_params["SGM noise multiplier"] = True
    if skip is not None:
        p.extra_generation_params.update(skip["skip_report"])  # A1111 writes these when a call was skipped
    return latents


def uncond_skip(p, pass_plan: PassPlan) -> dict | None:
    """A1111's NGMS (``s_min_uncond``: the request's, else the option; ``s_min_uncond_all``) and "Skip Early CFG"
    (option ``skip_early_cond``) for the denoiser, or None when both are off."""
    opts, request = p.opts, p.request
    s_min_uncond = float(request.s_min_uncond if request.s_min_uncond is not None else opts.get("s_min_uncond") or 0)
    skip_early = float(opts.get("skip_early_cond") or 0)
    if s_min_uncond <= 0 and skip_early == 0:
        return None
    return {"s_min_uncond": s_min_uncond, "s_min_uncond_all": bool(opts.get("s_min_uncond_all")),
            "skip_early_cond": skip_early, "total_steps": int(pass_plan.sched.steps), "skip_report": {}}
