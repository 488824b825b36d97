"""A1111's samplers as data: name, aliases, implementation and options, and how a request's strings resolve to one.

``SAMPLERS`` is A1111 v1.10.1's ``sd_samplers.all_samplers`` in /sdapi/v1/samplers order (spec §15.1): the
k-diffusion table of sd_samplers_kdiffusion.py, then the timestep samplers of sd_samplers_timesteps.py, then LCM.
``options`` are exactly as A1111 registers them; ``extra_params`` is A1111's ``sampler_extra_params`` for the
function; ``uses_eta`` says whether the function takes ``eta`` (A1111 passes it whenever the signature has it).

Resolution follows spec §6.3 (api.py text2imgapi -> sd_samplers.get_sampler_and_scheduler ->
fix_p_invalid_sampler_and_scheduler), with one deliberate difference (spec "Corrections" 4): an alias such as
``k_euler`` resolves to its sampler instead of silently becoming "DPM++ 2M". Unknown names still fall back to
"DPM++ 2M" as A1111 does, and the resolution says so (``fell_back``) so the API can report it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from pipelines import k_sampling, timestep_sampling

__all__ = [
    "SamplerSpec",
    "SAMPLERS",
    "SAMPLERS_MAP",
    "find_sampler",
    "Resolution",
    "resolve_sampler_and_scheduler",
    "get_sampler_and_scheduler",
    "samplers_api_list",
    "sampler_names",
]


@dataclass(frozen=True)
class SamplerSpec:
    """One A1111 sampler.

    kind: "k" (k-diffusion style over sigmas: ``function(model, x, sigmas, extra_args=..., callback=...,
        noise_sampler=..., **params)`` with a denoiser model) or "timesteps" (``function(model, x, timesteps, ...,
        alphas_cumprod=...)`` with an eps model; the schedule type is ignored).
    options: as A1111 registers them (``scheduler``, ``second_order``, ``brownian_noise``, ``uses_ensd``,
        ``discard_next_to_last_sigma``, ``solver_type``).
    extra_params: A1111's ``sampler_extra_params`` for the function: which of s_churn/s_tmin/s_tmax/s_noise the caller
        passes (A1111 reads them from the options s_churn, s_tmin, s_tmax (0 = inf), s_noise).
    uses_eta: the function takes ``eta``; A1111 then passes the request's eta, else option ``eta_option``.
    sigma_range: the function wants ``sigma_min``/``sigma_max``/``n`` (DPM fast, DPM adaptive). A1111's txt2img passes
        the model's own sigma range and ``n = steps`` (the schedule type is ignored); img2img uses the schedule's
        ``sigmas[-2]``, ``sigmas[0]`` and ``len(sigmas) - 1``, which is what the function does when given only sigmas.
    denoiser: which model wrapper A1111 runs it on: "k-diffusion" (CompVisDenoiser / CompVisVDenoiser over the 1000
        training sigmas), "lcm" (A1111's LCMCompVisDenoiser: 50 original timesteps, LCM boundary scalings) or
        "timesteps" (CompVisTimestepsDenoiser: eps from timesteps; v models converted to eps).
    """

    name: str
    aliases: tuple[str, ...]
    function: Callable[..., Any]
    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)
    extra_params: tuple[str, ...] = ()
    uses_eta: bool = False
    sigma_range: bool = False
    denoiser: str = "k-diffusion"

    @property
    def default_scheduler(self) -> str | None:
        """The schedule type (name) used when the request says Automatic; None = the model's own discretisation."""
        return self.options.get("scheduler")

    @property
    def eta_option(self) -> str:
        """The option that supplies eta when the request has none (A1111 Sampler.eta_option_field)."""
        return "eta_ddim" if self.kind == "timesteps" else "eta_ancestral"

    @property
    def eta_default(self) -> float:
        """eta's default; infotext writes eta only when it differs from this (A1111 Sampler.eta_default)."""
        return 0.0 if self.kind == "timesteps" else 1.0

    @property
    def eta_infotext_field(self) -> str:
        """Infotext key for a non-default eta (A1111 Sampler.eta_infotext_field)."""
        return "Eta DDIM" if self.kind == "timesteps" else "Eta"

    def total_steps(self, steps: int) -> int:
        """Expected model calls for progress, as A1111 SamplerData.total_steps (doubled for second-order samplers)."""
        return steps * 2 if self.options.get("second_order", False) else steps


_CHURN = ("s_churn", "s_tmin", "s_tmax", "s_noise")
_NOISE = ("s_noise",)


def _k(name, function, aliases, options, extra_params=(), uses_eta=False, sigma_range=False, denoiser="k-diffusion"):
    return SamplerSpec(name, tuple(aliases), function, "k", dict(options), tuple(extra_params), uses_eta, sigma_range,
                       denoiser)


def _t(name, function, aliases, uses_eta):
    return SamplerSpec(name, tuple(aliases), function, "timesteps", {}, (), uses_eta, False, "timesteps")


ks = k_sampling
ts = timestep_sampling

# A1111 sd_samplers.all_samplers, in order (spec §15.1).
SAMPLERS: tuple[SamplerSpec, ...] = (
    # sd_samplers_kdiffusion.samplers_k_diffusion
    _k("DPM++ 2M", ks.sample_dpmpp_2m, ["k_dpmpp_2m"], {"scheduler": "karras"}),
    _k("DPM++ SDE", ks.sample_dpmpp_sde, ["k_dpmpp_sde"],
       {"scheduler": "karras", "second_order": True, "brownian_noise": True}, _NOISE, True),
    _k("DPM++ 2M SDE", ks.sample_dpmpp_2m_sde, ["k_dpmpp_2m_sde"],
       {"scheduler": "exponential", "brownian_noise": True}, _NOISE, True),
    _k("DPM++ 2M SDE Heun", ks.sample_dpmpp_2m_sde, ["k_dpmpp_2m_sde_heun"],
       {"scheduler": "exponential", "brownian_noise": True, "solver_type": "heun"}, _NOISE, True),
    _k("DPM++ 2S a", ks.sample_dpmpp_2s_ancestral, ["k_dpmpp_2s_a"],
       {"scheduler": "karras", "uses_ensd": True, "second_order": True}, _NOISE, True),
    _k("DPM++ 3M SDE", ks.sample_dpmpp_3m_sde, ["k_dpmpp_3m_sde"],
       {"scheduler": "exponential", "discard_next_to_last_sigma": True, "brownian_noise": True}, _NOISE, True),
    _k("Euler a", ks.sample_euler_ancestral, ["k_euler_a", "k_euler_ancestral"], {"uses_ensd": True}, (), True),
    _k("Euler", ks.sample_euler, ["k_euler"], {}, _CHURN),
    _k("LMS", ks.sample_lms, ["k_lms"], {}),
    _k("Heun", ks.sample_heun, ["k_heun"], {"second_order": True}, _CHURN),
    _k("DPM2", ks.sample_dpm_2, ["k_dpm_2"],
       {"scheduler": "karras", "discard_next_to_last_sigma": True, "second_order": True}, _CHURN),
    _k("DPM2 a", ks.sample_dpm_2_ancestral, ["k_dpm_2_a"],
       {"scheduler": "karras", "discard_next_to_last_sigma": True, "uses_ensd": True, "second_order": True},
       _NOISE, True),
    _k("DPM fast", ks.sample_dpm_fast, ["k_dpm_fast"], {"uses_ensd": True}, _NOISE, True, sigma_range=True),
    _k("DPM adaptive", ks.sample_dpm_adaptive, ["k_dpm_ad"], {"uses_ensd": True}, (), True, sigma_range=True),
    _k("Restart", ks.sample_restart, ["restart"], {"scheduler": "karras", "second_order": True}),
    # sd_samplers_timesteps.samplers_timesteps
    _t("DDIM", ts.ddim, ["ddim"], True),
    _t("DDIM CFG++", ts.ddim_cfgpp, ["ddim_cfgpp"], True),
    _t("PLMS", ts.plms, ["plms"], False),
    _t("UniPC", ts.unipc, ["unipc"], False),
    # sd_samplers_lcm.samplers_lcm
    _k("LCM", ks.sample_lcm, ["k_lcm"], {}, denoiser="lcm"),
)

del ks, ts

#: exact name -> spec (A1111 sd_samplers.all_samplers_map)
SAMPLERS_MAP: Mapping[str, SamplerSpec] = {s.name: s for s in SAMPLERS}
_ALIASES: Mapping[str, SamplerSpec] = {a: s for s in SAMPLERS for a in s.aliases}


def sampler_names() -> list[str]:
    """All sampler names in /sdapi/v1/samplers order (the UI's dropdown choices)."""
    return [s.name for s in SAMPLERS]


def find_sampler(name: str | None) -> SamplerSpec | None:
    """A sampler by exact name, or (our correction) by exact alias; None for an unknown name.

    Like A1111's ``find_sampler_config``, ``None`` means the first sampler ("DPM++ 2M"). Matching is case-sensitive,
    as A1111's ``all_samplers_map`` (names only there; aliases are our addition).
    """
    if name is None:
        return SAMPLERS[0]
    return SAMPLERS_MAP.get(name) or _ALIASES.get(name)


# --------------------------------------------------------------------------------------------------------------------
# resolution (spec §6.3)
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolution:
    """The sampler and schedule type a request runs with.

    sampler: the resolved spec. scheduler_label: the schedule type's *label* as A1111 has it at processing time
    ("Automatic" = the sampler's own default, else the model's discretisation). fell_back: the sampler string matched
    no name or alias and "DPM++ 2M" was used, as A1111 does silently. original: the sampler string that was looked up
    (``sampler_name`` or, when empty, ``sampler_index``). scheduler_fell_back / original_scheduler: an explicit
    scheduler string that was neither a name nor a label became "Automatic".
    """

    sampler: SamplerSpec
    scheduler_label: str
    fell_back: bool
    original: str | None
    scheduler_fell_back: bool = False
    original_scheduler: str | None = None

    @property
    def sampler_name(self) -> str:
        return self.sampler.name


def _schedulers(schedulers: Sequence[Any] | None) -> Sequence[Any]:
    if schedulers is not None:
        return schedulers
    from pipelines.schedules import SCHEDULERS

    return SCHEDULERS


def get_sampler_and_scheduler(sampler_name: str | None, scheduler_name: str | None, *, convert_automatic: bool = True,
                              schedulers: Sequence[Any] | None = None) -> tuple[SamplerSpec, Any, bool]:
    """A1111 ``sd_samplers.get_sampler_and_scheduler`` -> (sampler spec, scheduler object, fell_back).

    The scheduler starts as the lookup of ``scheduler_name`` by name or label (not alias), else Automatic; then for
    each scheduler in registry order and each of its label, name and aliases, a sampler string ending in " <word>"
    (case-sensitive) takes that scheduler and loses the suffix. The rest must be an exact sampler name (or, our
    correction, an exact alias); otherwise the first sampler is used. With ``convert_automatic``, a scheduler equal to
    the sampler's own default becomes Automatic.
    """
    scheds = _schedulers(schedulers)
    by_name_or_label = {**{s.name: s for s in scheds}, **{s.label: s for s in scheds}}
    automatic = scheds[0]
    found_scheduler = by_name_or_label.get(scheduler_name, automatic) if scheduler_name is not None else automatic

    name = sampler_name or SAMPLERS[0].name
    for scheduler in scheds:
        for word in (scheduler.label, scheduler.name, *(scheduler.aliases or ())):
            if name.endswith(" " + word):
                found_scheduler = scheduler
                name = name[: -(len(word) + 1)]
                break

    sampler = find_sampler(name)
    fell_back = sampler is None
    if sampler is None:
        sampler = SAMPLERS[0]

    if convert_automatic and sampler.options.get("scheduler") == found_scheduler.name:
        found_scheduler = automatic

    return sampler, found_scheduler, fell_back


def resolve_sampler_and_scheduler(sampler_name: str | None, scheduler: str | None, sampler_index: str | None = "Euler",
                                  *, schedulers: Sequence[Any] | None = None) -> Resolution:
    """Spec §6.3 steps 1-5: what /sdapi/v1/txt2img and img2img run for these request fields.

    1. the sampler string is ``sampler_name`` if non-empty, else ``sampler_index`` (the API's default "Euler");
    2. ``get_sampler_and_scheduler`` (legacy combined names such as "DPM++ 2M Karras" split; unknown -> "DPM++ 2M");
    3. (A1111's name validation always passes);
    4. a request without ``scheduler`` takes step 2's label unless it is "Automatic"; an explicit one is kept as sent;
    5. processing re-runs step 2 on the resolved name without the Automatic conversion and normalises the scheduler to
       a label; unknown scheduler strings become "Automatic".
    """
    scheds = _schedulers(schedulers)
    original = sampler_name or sampler_index
    sampler, step2_scheduler, fell_back = get_sampler_and_scheduler(original, scheduler, schedulers=scheds)

    effective_scheduler = scheduler
    if not scheduler and step2_scheduler.label != "Automatic":
        effective_scheduler = step2_scheduler.label

    final_sampler, final_scheduler, _ = get_sampler_and_scheduler(sampler.name, effective_scheduler,
                                                                  convert_automatic=False, schedulers=scheds)
    known = {s.name for s in scheds} | {s.label for s in scheds}
    scheduler_fell_back = bool(effective_scheduler) and effective_scheduler not in known
    return Resolution(final_sampler, final_scheduler.label, fell_back, original, scheduler_fell_back, scheduler)


# --------------------------------------------------------------------------------------------------------------------
# GET /sdapi/v1/samplers
# --------------------------------------------------------------------------------------------------------------------


def _option_str(value: Any) -> str:
    # pydantic's str coercion in A1111's SamplerItem(options: dict[str, str]): True -> "True", "karras" -> "karras"
    return str(value)


def samplers_api_list() -> list[dict[str, Any]]:
    """The body of GET /sdapi/v1/samplers: ``[{name, aliases, options}]`` with option values stringified."""
    return [
        {"name": s.name, "aliases": list(s.aliases), "options": {k: _option_str(v) for k, v in s.options.items()}}
        for s in SAMPLERS
    ]
