"""Sampler name + schedule type + options -> what the pipeline runs (A1111 KDiffusionSampler/CompVisSampler.sample).

The one place where a resolved sampler meets the settings: which sigmas (or timesteps), eta and s_* values, Brownian
noise, and the infotext keys those choices add. Kept out of the samplers table so the table stays pure data.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from pipelines.a1111 import SamplerRun
from pipelines.schedules import ModelSigmas, compute_sigmas
from webui.core.generation.noise import uses_eta_noise_seed_delta
from webui.core.generation.samplers import SamplerSpec, find_sampler


@dataclass
class SamplingPlan:
    spec: SamplerSpec
    run: SamplerRun
    extra_infotext: dict = field(default_factory=dict)
    uses_ensd: bool = False

    @property
    def sampler_name(self) -> str:
        return self.spec.name


def plan_sampling(sampler_name: str, scheduler: str, steps: int, model_sigmas: ModelSigmas, opts, *, eta=None,
                  s_churn=None, s_tmin=None, s_tmax=None, s_noise=None, is_sdxl=False, device="cpu",
                  lcm_sigmas: ModelSigmas | None = None) -> SamplingPlan:
    """``lcm_sigmas``: the LCM wrapper's schedule (pipelines.denoiser.LCMSigmas), used by the LCM sampler."""
    spec = find_sampler(sampler_name)
    if spec is None or spec.name != sampler_name:
        raise ValueError(f"unknown sampler {sampler_name!r}")
    extra: dict = {}
    kwargs: dict = {}
    params = inspect.signature(spec.function).parameters

    # eta: the request's, else the sampler family's option; written to the infotext when not the default.
    eta_value = eta if eta is not None else float(opts.get(spec.eta_option))
    if spec.uses_eta or "eta" in params:
        kwargs["eta"] = eta_value
        if eta_value != spec.eta_default:
            extra[spec.eta_infotext_field] = eta_value

    if spec.kind == "timesteps":
        from pipelines.timestep_sampling import timesteps_for

        discard = bool(opts.get("always_discard_next_to_last_sigma"))
        if discard:
            extra["Discard penultimate sigma"] = True
        timesteps = timesteps_for(steps, discard)
        if spec.name == "UniPC":
            kwargs.update(variant=opts.get("uni_pc_variant"), skip_type=opts.get("uni_pc_skip_type"),
                          order=int(opts.get("uni_pc_order")), lower_order_final=bool(opts.get("uni_pc_lower_order_final")))
        run = SamplerRun(spec.function, "timesteps", timesteps=timesteps, kwargs=kwargs)
        return SamplingPlan(spec, run, extra, _ensd(spec, opts, eta_value))

    inner = lcm_sigmas if spec.denoiser == "lcm" and lcm_sigmas is not None else model_sigmas
    sigmas, sched_extra = compute_sigmas(
        scheduler,
        steps,
        inner,
        "cpu",
        sampler_default_scheduler=spec.default_scheduler,
        discard_next_to_last_sigma=bool(spec.options.get("discard_next_to_last_sigma")),
        always_discard_next_to_last_sigma=bool(opts.get("always_discard_next_to_last_sigma")),
        sigma_min_override=float(opts.get("sigma_min") or 0),
        sigma_max_override=float(opts.get("sigma_max") or 0),
        rho_override=float(opts.get("rho") or 0),
        beta_alpha=float(opts.get("beta_dist_alpha")),
        beta_beta=float(opts.get("beta_dist_beta")),
        is_sdxl=is_sdxl,
        use_old_karras_scheduler_sigmas=bool(opts.get("use_old_karras_scheduler_sigmas")),
    )
    # A1111 reports the schedule actually used; "Schedule type" stays Automatic for samplers without a default.
    if scheduler in (None, "", "Automatic", "automatic") and not spec.default_scheduler:
        sched_extra.pop("Schedule type", None)
    extra.update(sched_extra)

    # s_churn/s_tmin/s_tmax/s_noise for the functions that take them (A1111 sampler_extra_params); the request's
    # values when given, else the options (s_tmax 0 = infinity).
    values = {
        "s_churn": s_churn if s_churn is not None else float(opts.get("s_churn")),
        "s_tmin": s_tmin if s_tmin is not None else float(opts.get("s_tmin")),
        "s_tmax": (s_tmax if s_tmax is not None else float(opts.get("s_tmax"))) or float("inf"),
        "s_noise": s_noise if s_noise is not None else float(opts.get("s_noise")),
    }
    for name in spec.extra_params:
        if name in params:
            kwargs[name] = values[name]
    if "solver_type" in params and spec.options.get("solver_type"):
        kwargs["solver_type"] = spec.options["solver_type"]
    if spec.sigma_range:  # DPM fast/adaptive: the model's own range, n = steps (A1111 txt2img)
        kwargs.update(sigma_min=model_sigmas.sigma_min, sigma_max=model_sigmas.sigma_max)
        if "n" in params:
            kwargs["n"] = steps
    run = SamplerRun(spec.function, "k", sigmas=sigmas, kwargs=kwargs, denoiser=spec.denoiser,
                     brownian_noise=bool(spec.options.get("brownian_noise"))
                     and not opts.get("no_dpmpp_sde_batch_determinism"))
    return SamplingPlan(spec, run, extra, _ensd(spec, opts, eta_value))


def _ensd(spec: SamplerSpec, opts, eta_value: float) -> bool:
    return uses_eta_noise_seed_delta(int(opts.get("eta_noise_seed_delta") or 0), eta_value,
                                     bool(spec.options.get("uses_ensd")))
