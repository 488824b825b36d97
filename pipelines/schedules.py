"""A1111 v1.10.1 sigma schedules ("Schedule type"), reproduced without k-diffusion or scipy.

What this reproduces:

* ``ModelSigmas`` is k-diffusion's ``external.DiscreteSchedule`` as A1111 builds it for SD/SDXL
  (``CompVisDenoiser(sd_model)``): the model's 1000 discrete sigmas ``sqrt((1 - acp) / acp)`` in float32, ascending,
  with ``sigma_to_t`` / ``t_to_sigma`` (log-sigma interpolation) and ``get_sigmas(n)`` (the "native" discretisation).
* one function per entry of A1111's ``modules/sd_schedulers.py`` (``uniform`` ... ``beta``), plus k-diffusion's
  ``get_sigmas_karras`` / ``get_sigmas_exponential`` / ``get_sigmas_polyexponential``, doing the same float32 torch
  operations in the same order, so the results are equal to A1111's bit for bit on the CPU.
* ``SCHEDULERS``: A1111's ``sd_schedulers.schedulers`` table, in /sdapi/v1/schedulers order.
* ``compute_sigmas``: A1111's ``KDiffusionSampler.get_sigmas`` (sd_samplers_kdiffusion.py): "Automatic" resolution,
  the sigma_min / sigma_max / rho overrides, the Beta options, the discard-penultimate-sigma rule and the infotext
  keys it adds.

Every schedule function has the signature
``fn(n, sigma_min, sigma_max, inner, device, *, rho=None, is_sdxl=False, alpha=0.6, beta=0.6) -> Tensor`` (float32)
and ignores the arguments it does not use, as A1111's functions simply do not take them. The result ends in 0 for
every schedule except "KL Optimal", which in A1111 v1.10.1 ends in ``sigma_min`` (no zero is appended there).

Imports torch and numpy only (no scipy: the Beta quantile is computed here, see ``beta_ppf``).
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import torch

__all__ = [
    "ModelSigmas",
    "alphas_cumprod_sd",
    "Scheduler",
    "SCHEDULERS",
    "SCHEDULERS_MAP",
    "find_scheduler",
    "compute_sigmas",
    "beta_ppf",
    "uniform",
    "karras",
    "exponential",
    "polyexponential",
    "sgm_uniform",
    "kl_optimal",
    "align_your_steps",
    "simple",
    "normal",
    "ddim",
    "beta",
    "AYS_SIGMAS_SD15",
    "AYS_SIGMAS_SDXL",
]

CPU = torch.device("cpu")


def _append_zero(x: torch.Tensor) -> torch.Tensor:
    """k-diffusion ``sampling.append_zero``."""
    return torch.cat([x, x.new_zeros([1])])


# --------------------------------------------------------------------------------------------------------------------
# The model's own discretisation (k-diffusion external.DiscreteSchedule)
# --------------------------------------------------------------------------------------------------------------------


def alphas_cumprod_sd(device: torch.device | str = "cpu") -> torch.Tensor:
    """SD1.x / SD2.x / SDXL ``alphas_cumprod`` exactly as A1111's model holds it (float32, 1000 values).

    Reproduces ldm ``make_beta_schedule("linear", 1000, 0.00085, 0.012)`` (a linspace in sqrt-space, i.e. diffusers'
    "scaled_linear"), computed in float64 (``torch.linspace(..., dtype=float64) ** 2``, ``np.cumprod(1 - betas)``) and
    then stored as a float32 buffer (ldm ``register_schedule``'s ``to_torch``; SDXL's ``LegacyDDPMDiscretization`` +
    ``torch.asarray(..., dtype=float32)`` gives the same numbers). diffusers computes the same schedule in float32,
    which differs in the last bits; use this one to match A1111.
    """
    betas = (torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2).numpy()
    acp = np.cumprod(1.0 - betas, axis=0)
    return torch.tensor(acp, dtype=torch.float32, device=device)


class ModelSigmas:
    """A model's discrete noise levels, as k-diffusion's ``DiscreteSchedule`` (A1111's ``model_wrap``).

    ``sigmas`` are ascending (``sigmas[0]`` is the smallest), float32, computed in float32 from ``alphas_cumprod``
    as ``DiscreteEpsDDPMDenoiser.__init__`` does. ``sigma_min`` / ``sigma_max`` are Python floats, the values A1111
    reads with ``model_wrap.sigmas[0].item()`` / ``sigmas[-1].item()``. ``quantize`` is A1111's option
    ``enable_quantization`` (off by default).
    """

    def __init__(self, alphas_cumprod: torch.Tensor | np.ndarray, *, quantize: bool = False):
        acp = torch.as_tensor(alphas_cumprod)
        if acp.dtype != torch.float32:
            acp = acp.to(torch.float32)
        self.alphas_cumprod = acp
        self.sigmas = ((1 - acp) / acp) ** 0.5
        self.log_sigmas = self.sigmas.log()
        self.quantize = quantize

    @property
    def sigma_min(self) -> float:
        return self.sigmas[0].item()

    @property
    def sigma_max(self) -> float:
        return self.sigmas[-1].item()

    def __len__(self) -> int:
        return self.sigmas.shape[0]

    def sigma_to_t(self, sigma: torch.Tensor | float, quantize: bool | None = None) -> torch.Tensor:
        """k-diffusion ``DiscreteSchedule.sigma_to_t``: fractional timestep by linear interpolation in log sigma."""
        quantize = self.quantize if quantize is None else quantize
        sigma = torch.as_tensor(sigma, dtype=torch.float32) if not torch.is_tensor(sigma) else sigma
        log_sigmas = self.log_sigmas.to(sigma.device)
        log_sigma = sigma.log()
        dists = log_sigma - log_sigmas[:, None]
        if quantize:
            return dists.abs().argmin(dim=0).view(sigma.shape)
        # index of the last table entry not above sigma, kept one below the end so that high_idx exists
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = log_sigmas[low_idx], log_sigmas[high_idx]
        w = ((low - log_sigma) / (low - high)).clamp(0, 1)
        t = (1 - w) * low_idx + w * high_idx
        return t.view(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor | float) -> torch.Tensor:
        """k-diffusion ``DiscreteSchedule.t_to_sigma``: interpolate log sigma between the neighbouring timesteps."""
        t = torch.as_tensor(t).float()
        log_sigmas = self.log_sigmas.to(t.device)
        low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
        log_sigma = (1 - w) * log_sigmas[low_idx] + w * log_sigmas[high_idx]
        return log_sigma.exp()

    def get_sigmas(self, n: int | None = None) -> torch.Tensor:
        """k-diffusion ``DiscreteSchedule.get_sigmas``: n timesteps evenly spaced from the last to 0, then 0."""
        if n is None:
            return _append_zero(self.sigmas.flip(0))
        t_max = len(self.sigmas) - 1
        t = torch.linspace(t_max, 0, n, device=self.sigmas.device)
        return _append_zero(self.t_to_sigma(t))


# --------------------------------------------------------------------------------------------------------------------
# Schedule functions (A1111 modules/sd_schedulers.py, k-diffusion sampling.get_sigmas_*)
# --------------------------------------------------------------------------------------------------------------------


def uniform(n, sigma_min, sigma_max, inner: ModelSigmas, device="cpu", **_ignored) -> torch.Tensor:
    """A1111 ``uniform``: the model wrapper's own ``get_sigmas(n)``."""
    return inner.get_sigmas(n).to(device)


def karras(n, sigma_min, sigma_max, inner=None, device="cpu", *, rho=None, **_ignored) -> torch.Tensor:
    """k-diffusion ``get_sigmas_karras`` (Karras et al. 2022), rho 7 unless given."""
    rho = 7.0 if rho is None else float(rho)
    ramp = torch.linspace(0, 1, n)
    min_inv_rho = float(sigma_min) ** (1 / rho)
    max_inv_rho = float(sigma_max) ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return _append_zero(sigmas).to(device)


def exponential(n, sigma_min, sigma_max, inner=None, device="cpu", **_ignored) -> torch.Tensor:
    """k-diffusion ``get_sigmas_exponential``: evenly spaced in log sigma."""
    sigmas = torch.linspace(math.log(float(sigma_max)), math.log(float(sigma_min)), n).exp()
    return _append_zero(sigmas).to(device)


def polyexponential(n, sigma_min, sigma_max, inner=None, device="cpu", *, rho=None, **_ignored) -> torch.Tensor:
    """k-diffusion ``get_sigmas_polyexponential``: polynomial (power rho, default 1) in log sigma."""
    rho = 1.0 if rho is None else float(rho)
    log_min, log_max = math.log(float(sigma_min)), math.log(float(sigma_max))
    ramp = torch.linspace(1, 0, n) ** rho
    sigmas = torch.exp(ramp * (log_max - log_min) + log_min)
    return _append_zero(sigmas).to(device)


def _timestep_spaced(n_points, keep, sigma_min, sigma_max, inner: ModelSigmas) -> torch.Tensor:
    """Shared body of A1111 ``sgm_uniform`` and ``normal_scheduler``: timesteps evenly spaced between
    t(sigma_max) and t(sigma_min) (``n_points`` of them, the first ``keep`` used), mapped back to sigmas, then 0."""
    start = inner.sigma_to_t(torch.tensor(float(sigma_max))).item()
    end = inner.sigma_to_t(torch.tensor(float(sigma_min))).item()
    timesteps = torch.linspace(start, end, n_points)[:keep]
    sigs = inner.t_to_sigma(timesteps).to(CPU)  # elementwise, so equal to A1111's per-element loop
    return _append_zero(sigs.to(torch.float32))


def sgm_uniform(n, sigma_min, sigma_max, inner: ModelSigmas, device="cpu", **_ignored) -> torch.Tensor:
    """A1111 ``sgm_uniform``: n+1 timesteps from t(sigma_max) to t(sigma_min), the last dropped, then 0."""
    return _timestep_spaced(n + 1, n, sigma_min, sigma_max, inner).to(device)


def normal(n, sigma_min, sigma_max, inner: ModelSigmas, device="cpu", **_ignored) -> torch.Tensor:
    """A1111 ``normal_scheduler`` (sgm=False): n timesteps from t(sigma_max) to t(sigma_min), then 0."""
    return _timestep_spaced(n, n, sigma_min, sigma_max, inner).to(device)


def kl_optimal(n, sigma_min, sigma_max, inner=None, device="cpu", **_ignored) -> torch.Tensor:
    """A1111 ``kl_optimal``: tan of a linear ramp from atan(sigma_max) to atan(sigma_min), n+1 points.

    As in A1111 v1.10.1 no zero is appended: the last value is sigma_min (ComfyUI's version sets it to 0).
    """
    alpha_min = torch.arctan(torch.tensor(float(sigma_min)))
    alpha_max = torch.arctan(torch.tensor(float(sigma_max)))
    step_indices = torch.arange(n + 1)
    sigmas = torch.tan(step_indices / n * alpha_min + (1.0 - step_indices / n) * alpha_max)
    return sigmas.to(device)


# NVIDIA "Align Your Steps" 10-step schedules (A1111 get_align_your_steps_sigmas; research.nvidia.com AYS how-to)
AYS_SIGMAS_SD15 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
AYS_SIGMAS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)


def _loglinear_interp(t_steps, num_steps: int) -> np.ndarray:
    """A1111 ``loglinear_interp``: resample a decreasing list to num_steps points, linearly in log space."""
    xs = np.linspace(0, 1, len(t_steps))
    ys = np.log(np.asarray(t_steps, dtype=np.float64)[::-1])
    new_ys = np.interp(np.linspace(0, 1, num_steps), xs, ys)
    return np.exp(new_ys)[::-1].copy()


def align_your_steps(n, sigma_min=None, sigma_max=None, inner=None, device="cpu", *, is_sdxl=False,
                     **_ignored) -> torch.Tensor:
    """A1111 ``get_align_your_steps_sigmas``: the 11-point table (SDXL or SD1.5) resampled to n points, then 0.

    sigma_min / sigma_max are ignored (A1111 too). Quirk kept: n=1 gives [0.029, 0].
    """
    table = AYS_SIGMAS_SDXL if is_sdxl else AYS_SIGMAS_SD15
    if n != len(table):
        sigmas = np.append(_loglinear_interp(table, n), [0.0])
    else:
        sigmas = list(table) + [0.0]
    return torch.tensor(np.asarray(sigmas, dtype=np.float64), dtype=torch.float32).to(device)


def simple(n, sigma_min, sigma_max, inner: ModelSigmas, device="cpu", **_ignored) -> torch.Tensor:
    """A1111 ``simple_scheduler``: every (len/n)-th model sigma counted from the top, then 0."""
    stride = len(inner.sigmas) / n
    sigs = [float(inner.sigmas[-(1 + int(x * stride))]) for x in range(n)] + [0.0]
    return torch.tensor(sigs, dtype=torch.float32).to(device)


def ddim(n, sigma_min, sigma_max, inner: ModelSigmas, device="cpu", **_ignored) -> torch.Tensor:
    """A1111 ``ddim_scheduler``: model sigmas at indices 1, 1+s, 1+2s, ... (s = len//n), reversed, then 0.

    Quirk kept: when 1000 is not a multiple of n this yields more than n sigmas (n=30 gives 31 steps).
    """
    stride = max(len(inner.sigmas) // n, 1)
    sigs = [float(inner.sigmas[x]) for x in range(1, len(inner.sigmas), stride)]
    sigs = sigs[::-1] + [0.0]
    return torch.tensor(sigs, dtype=torch.float32).to(device)


def beta(n, sigma_min, sigma_max, inner=None, device="cpu", *, alpha=0.6, beta=0.6, **_ignored) -> torch.Tensor:
    """A1111 ``beta_scheduler`` ("Beta Sampling is All You Need", Lee et al. 2024), v1.10.1 form.

    Quantiles of Beta(alpha, beta) at 1 - linspace(0, 1, n), mapped linearly onto [sigma_min, sigma_max] in float64
    (v1.10.1 interpolates in sigma space, not timestep space), then 0. A1111 uses ``scipy.stats.beta.ppf``; here
    ``beta_ppf`` computes the same quantile to double precision.
    """
    qs = 1 - np.linspace(0, 1, n)
    lo, hi = float(sigma_min), float(sigma_max)
    sigmas = [lo + (beta_ppf(float(q), float(alpha), float(beta)) * (hi - lo)) for q in qs] + [0.0]
    return torch.tensor(np.asarray(sigmas, dtype=np.float64), dtype=torch.float32).to(device)


# --------------------------------------------------------------------------------------------------------------------
# Beta distribution quantile (replaces scipy.stats.beta.ppf)
# --------------------------------------------------------------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = tiny if abs(d) < tiny else d
    d = 1.0 / d
    h = d
    for m in range(1, 10000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = tiny if abs(d) < tiny else d
        c = 1.0 + aa / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = tiny if abs(d) < tiny else d
        c = 1.0 + aa / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_bt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    bt = math.exp(log_bt)
    if x < (a + 1.0) / (a + b + 2.0):
        return bt * _betacf(a, b, x) / a
    return 1.0 - bt * _betacf(b, a, 1.0 - x) / b


def beta_ppf(q: float, a: float, b: float) -> float:
    """Quantile of the Beta(a, b) distribution (what ``scipy.stats.beta.ppf(q, a, b)`` returns), float64.

    Bisection on the regularised incomplete beta function until the bracket is one float apart; 0 and 1 map to the
    support's ends as in scipy. Accurate to ~1e-15, far below float32 resolution of the resulting sigmas.
    """
    if not (a > 0 and b > 0):
        raise ValueError(f"Beta schedule alpha and beta must be > 0, got alpha={a}, beta={b}")
    if q <= 0.0:
        return 0.0
    if q >= 1.0:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if _betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# --------------------------------------------------------------------------------------------------------------------
# The table and A1111's KDiffusionSampler.get_sigmas
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scheduler:
    """One A1111 schedule type (``sd_schedulers.Scheduler``). ``function`` is None for "automatic"."""

    name: str
    label: str
    function: Callable[..., torch.Tensor] | None
    default_rho: float = -1.0
    need_inner_model: bool = False
    aliases: tuple[str, ...] = field(default_factory=tuple)


# A1111 sd_schedulers.schedulers, in /sdapi/v1/schedulers order (spec §15.2).
SCHEDULERS: tuple[Scheduler, ...] = (
    Scheduler("automatic", "Automatic", None),
    Scheduler("uniform", "Uniform", uniform, need_inner_model=True),
    Scheduler("karras", "Karras", karras, default_rho=7.0),
    Scheduler("exponential", "Exponential", exponential),
    Scheduler("polyexponential", "Polyexponential", polyexponential, default_rho=1.0),
    Scheduler("sgm_uniform", "SGM Uniform", sgm_uniform, need_inner_model=True, aliases=("SGMUniform",)),
    Scheduler("kl_optimal", "KL Optimal", kl_optimal),
    Scheduler("align_your_steps", "Align Your Steps", align_your_steps),
    Scheduler("simple", "Simple", simple, need_inner_model=True),
    Scheduler("normal", "Normal", normal, need_inner_model=True),
    Scheduler("ddim", "DDIM", ddim, need_inner_model=True),
    Scheduler("beta", "Beta", beta, need_inner_model=True),
)

# A1111 sd_schedulers.schedulers_map: keyed by name and by label (not aliases).
SCHEDULERS_MAP: Mapping[str, Scheduler] = types.MappingProxyType(
    {**{s.name: s for s in SCHEDULERS}, **{s.label: s for s in SCHEDULERS}}
)


def find_scheduler(name_or_label: str, *, aliases: bool = False) -> Scheduler:
    """Look a schedule type up by name or label (and aliases if asked); unknown names raise listing the choices."""
    found = SCHEDULERS_MAP.get(name_or_label)
    if found is None and aliases:
        found = next((s for s in SCHEDULERS if name_or_label in s.aliases), None)
    if found is None:
        choices = ", ".join(f"{s.label} ({s.name})" for s in SCHEDULERS)
        raise ValueError(f"Unknown schedule type {name_or_label!r}; choose one of: {choices}")
    return found


def compute_sigmas(
    scheduler: str | None,
    steps: int,
    inner: ModelSigmas,
    device: torch.device | str = "cpu",
    *,
    sampler_default_scheduler: str | None = None,
    discard_next_to_last_sigma: bool = False,
    always_discard_next_to_last_sigma: bool = False,
    sigma_min_override: float = 0.0,
    sigma_max_override: float = 0.0,
    rho_override: float = 0.0,
    beta_alpha: float = 0.6,
    beta_beta: float = 0.6,
    is_sdxl: bool = False,
    use_old_karras_scheduler_sigmas: bool = False,
    is_hr_pass: bool = False,
    first_pass_schedule_type: str | None = None,
) -> tuple[torch.Tensor, dict]:
    """A1111 ``KDiffusionSampler.get_sigmas`` (sd_samplers_kdiffusion.py, v1.10.1).

    scheduler: a schedule type name or label ("karras" / "Karras"); None, "" and "Automatic" mean Automatic, which
        uses ``sampler_default_scheduler`` (the sampler's ``options['scheduler']``, e.g. "karras" for DPM++ 2M) or,
        when that is None, the model's own ``inner.get_sigmas(steps)``.
    discard_next_to_last_sigma: the sampler's own option (DPM2, DPM2 a, DPM++ 3M SDE);
    always_discard_next_to_last_sigma: the setting of that name; it forces discarding for every sampler and adds
        ``"Discard penultimate sigma": True`` to the infotext when the sampler would not have discarded anyway.
        Discarding computes steps+1 sigmas and drops the next-to-last one.
    sigma_min_override / sigma_max_override / rho_override: settings ``sigma_min`` / ``sigma_max`` / ``rho``
        (0 = off). Applied only for schedule types that have a function (never to the model's native discretisation)
        and only when different from the model's value (sigma) or the schedule's default rho (rho; only schedules with
        a default rho, i.e. Karras and Polyexponential, take one). Each applied override is written to the infotext
        ("Schedule min sigma", "Schedule max sigma", "Schedule rho"), also for schedules that then ignore it, as A1111.
    beta_alpha / beta_beta: settings ``beta_dist_alpha`` / ``beta_dist_beta``, written as "Beta schedule alpha/beta"
        whenever Beta is used.
    is_sdxl: picks the Align Your Steps table. use_old_karras_scheduler_sigmas: the setting, default range (0.1, 10).
    is_hr_pass / first_pass_schedule_type: in the hires pass A1111 writes "Hires schedule type" instead of
        "Schedule type", and only when it differs from the first pass's "Schedule type".

    Returns (sigmas as float32 on ``device``, the infotext entries A1111's get_sigmas adds).
    Unknown scheduler names raise ValueError (A1111 would silently use the native discretisation; the API layer
    normalises unknown names to Automatic first, spec §6.3).
    """
    extra: dict = {}

    discard = bool(discard_next_to_last_sigma)
    if always_discard_next_to_last_sigma and not discard:
        discard = True
        extra["Discard penultimate sigma"] = True

    n = steps + 1 if discard else steps

    entry = find_scheduler(scheduler) if scheduler else SCHEDULERS_MAP["automatic"]
    if entry.function is None:  # Automatic -> the sampler's default schedule, if any
        entry = find_scheduler(sampler_default_scheduler) if sampler_default_scheduler else entry

    m_sigma_min, m_sigma_max = inner.sigma_min, inner.sigma_max
    sigma_min, sigma_max = (0.1, 10.0) if use_old_karras_scheduler_sigmas else (m_sigma_min, m_sigma_max)

    if entry.function is None:
        sigmas = inner.get_sigmas(n)
    else:
        if not is_hr_pass:
            extra["Schedule type"] = entry.label
        elif entry.label != first_pass_schedule_type:
            extra["Hires schedule type"] = entry.label

        kwargs: dict = {}
        if sigma_min_override != 0 and sigma_min_override != m_sigma_min:
            sigma_min = sigma_min_override
            extra["Schedule min sigma"] = sigma_min_override
        if sigma_max_override != 0 and sigma_max_override != m_sigma_max:
            sigma_max = sigma_max_override
            extra["Schedule max sigma"] = sigma_max_override
        if entry.default_rho != -1 and rho_override != 0 and rho_override != entry.default_rho:
            kwargs["rho"] = rho_override
            extra["Schedule rho"] = rho_override
        if entry.name == "beta":
            extra["Beta schedule alpha"] = beta_alpha
            extra["Beta schedule beta"] = beta_beta

        sigmas = entry.function(n, sigma_min, sigma_max, inner, CPU, is_sdxl=is_sdxl, alpha=beta_alpha,
                                beta=beta_beta, **kwargs)

    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])

    return sigmas.to(device=device, dtype=torch.float32), extra
