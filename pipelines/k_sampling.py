"""k-diffusion-style samplers over a sigma schedule, as AUTOMATIC1111 v1.10.1 runs them.

Every sampler has the k-diffusion shape::

    sample_<name>(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, **params)

``model(x, sigma_batch, **extra_args)`` returns the denoised latent (classifier-free guidance already applied by the
caller); ``callback`` receives ``{'x', 'i', 'sigma', 'sigma_hat', 'denoised'}`` once per step. The maths follows
crowsonkb/k-diffusion ``k_diffusion/sampling.py`` at the commit A1111 v1.10.1 pins (ab527a9, MIT licence), written
again here operation by operation (same order of floating-point operations, so results match bit for bit), plus
A1111's own ``restart_sampler`` (sd_samplers_extra.py) and ``sample_lcm`` (sd_samplers_lcm.py).

Random numbers: A1111 replaces ``torch`` inside k-diffusion's module with its per-image RNG (``TorchHijack``), so
*every* ``torch.randn_like(x)`` in the sampler (including the churn noise of Euler/Heun/DPM2, drawn on every step even
when unused) comes from ``p.rng.next()``. Here each such draw calls ``noise_sampler(sigma, sigma_next)``; without one
it falls back to ``torch.randn_like(x)``. The three DPM++ SDE samplers default, as k-diffusion does, to a
``BrownianTreeNoiseSampler`` with a random seed; A1111 always passes one seeded with the images' seeds.

``sample_dpm_fast`` and ``sample_dpm_adaptive`` take a sigma *range* in k-diffusion (``sigma_min``, ``sigma_max``,
``n``); here they also accept ``sigmas`` and derive the range from it the way A1111's img2img path does. For txt2img
A1111 passes the model's own sigma range and ``n = steps`` (ignoring the schedule): the caller passes those as
keywords (see ``SamplerSpec.sigma_range`` in webui/core/generation/samplers.py).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch

__all__ = [
    "append_dims",
    "append_zero",
    "to_d",
    "get_ancestral_step",
    "default_noise_sampler",
    "BrownianTreeNoiseSampler",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_heun",
    "sample_dpm_2",
    "sample_dpm_2_ancestral",
    "sample_lms",
    "sample_dpm_fast",
    "sample_dpm_adaptive",
    "sample_dpmpp_2s_ancestral",
    "sample_dpmpp_sde",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_dpmpp_3m_sde",
    "sample_restart",
    "restart_sampler",
    "sample_lcm",
]


# --------------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------------


def append_dims(x: torch.Tensor, target_dims: int) -> torch.Tensor:
    """Reproduces k_diffusion.utils.append_dims: add trailing singleton dimensions up to ``target_dims``."""
    extra = target_dims - x.ndim
    if extra < 0:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}, which is less")
    return x[(...,) + (None,) * extra]


def append_zero(x: torch.Tensor) -> torch.Tensor:
    """Reproduces k_diffusion.sampling.append_zero: the schedule ends at sigma 0."""
    return torch.cat([x, x.new_zeros([1])])


def _karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device="cpu") -> torch.Tensor:
    """Reproduces k_diffusion.sampling.get_sigmas_karras (used inside A1111's restart sampler)."""
    ramp = torch.linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return append_zero(sigmas).to(device)


def to_d(x: torch.Tensor, sigma, denoised: torch.Tensor) -> torch.Tensor:
    """Reproduces k_diffusion.sampling.to_d: denoiser output -> Karras ODE derivative dx/dsigma."""
    return (x - denoised) / append_dims(sigma, x.ndim)


def get_ancestral_step(sigma_from, sigma_to, eta=1.0):
    """Reproduces k_diffusion.sampling.get_ancestral_step: (sigma_down, sigma_up) of an ancestral step."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def default_noise_sampler(x: torch.Tensor) -> Callable:
    """Reproduces k_diffusion.sampling.default_noise_sampler: fresh standard normal noise shaped like ``x``."""
    return lambda sigma, sigma_next: torch.randn_like(x)


def _noise_or_default(noise_sampler, x):
    return default_noise_sampler(x) if noise_sampler is None else noise_sampler


# --------------------------------------------------------------------------------------------------------------------
# Brownian tree noise (DPM++ SDE family)
# --------------------------------------------------------------------------------------------------------------------


@functools.cache
def _randn_brownian_interval():
    """torchsde's ``BrownianInterval`` with its normal draws taken from a given ``randn(seed, size)``.

    A1111 (sd_samplers_common.replace_torchsde_browinan) replaces torchsde's module function
    ``brownian_interval._randn`` for good with its ``devices.randn_local``, so that the Brownian tree honours the
    ``randn_source`` option. torchsde offers no hook for this: ``entropy`` only seeds numpy's ``SeedSequence``, which
    picks the per-node seeds, while the normals themselves come from that module function, looked up at call time by
    ``_Interval._randn`` (and ``_randn_levy``); and ``BrownianTree`` builds a plain ``BrownianInterval``. So, without
    replacing anything of torchsde's, we subclass: the tree's top node is a ``BrownianInterval`` subclass and every
    node it splits off is an ``_Interval`` subclass, both overriding the two draw methods with the same call A1111's
    replacement makes, ``randn(seed, size).to(device, dtype)``. Everything else (the splitting, the per-node seeds,
    the Brownian-bridge arithmetic, the caching) is torchsde's own code, so the values are torchsde's bit for bit.

    The subclasses rest on torchsde 0.2.x internals (``_Interval``, ``_split_exact`` creating the two children, the
    ``_randn``/``_randn_levy`` methods); tests/pipelines/test_k_sampling.py checks the result against torchsde's own
    tree with its module function routed the old way, so a torchsde change that breaks this shows up there.
    Built on first use, as torchsde is imported lazily.
    """
    from torchsde._brownian.brownian_interval import BrownianInterval, _Interval

    class _Draws:
        __slots__ = ()

        def _draw(self, seed, size):
            top = self._top
            return top._randn_fn(int(seed), tuple(size)).to(device=top._device, dtype=top._dtype)

        def _randn(self, seed):
            return self._draw(seed, self._top._size)

        def _randn_levy(self):
            size = self._top._size
            return self._draw(self._a_seed(), (*size, *size[-1:]))

        def _split_exact(self, midway):
            # torchsde makes the two children plain _Interval objects (their own splits would draw with torchsde's
            # generator); put ours in their place, built with the same arguments. A node's seeds and midway are set by
            # torchsde's method above and the children hold no state of their own yet, so nothing else changes.
            super()._split_exact(midway)
            top = self._top
            self._left_child = _Node(start=self._start, end=midway, parent=self, is_left=True, top=top)
            self._right_child = _Node(start=midway, end=self._end, parent=self, is_left=False, top=top)

    class _Node(_Draws, _Interval):
        __slots__ = ()

    class _Top(_Draws, BrownianInterval):
        __slots__ = ("_randn_fn",)

        def __init__(self, *, randn, **kwargs):
            self._randn_fn = randn  # before BrownianInterval.__init__, which draws the whole interval's increment
            super().__init__(**kwargs)

    return _Top


class _BatchedBrownianTree:
    """Reproduces k_diffusion.sampling.BatchedBrownianTree: one torchsde.BrownianTree per batch item (one seed each).

    With ``randn`` each item's tree is the interval ``torchsde.BrownianTree`` wraps, built with the same arguments
    (``tol=1e-6, pool_size=24, halfway_tree=True``) but drawing from ``randn`` (see ``_randn_brownian_interval``);
    queried with both ends, as here, ``BrownianTree`` returns its interval's value unchanged.
    """

    def __init__(self, x, t0, t1, seed=None, randn=None, w0=None):
        import torchsde

        t0, t1, self.sign = self.sort(t0, t1)
        w0 = torch.zeros_like(x) if w0 is None else w0
        if seed is None:
            seed = torch.randint(0, 2**63 - 1, []).item()
        self.batched = True
        try:
            assert len(seed) == x.shape[0]
            w0 = w0[0]
        except TypeError:
            seed = [seed]
            self.batched = False
        if randn is None:
            self.trees = [torchsde.BrownianTree(t0, w0, t1, entropy=s) for s in seed]
        else:
            interval = _randn_brownian_interval()
            self.trees = [interval(randn=randn, t0=t0, t1=t1, size=w0.shape, dtype=w0.dtype, device=w0.device,
                                   entropy=s, tol=1e-6, pool_size=24, halfway_tree=True) for s in seed]

    @staticmethod
    def sort(a, b):
        return (a, b, 1) if a < b else (b, a, -1)

    def __call__(self, t0, t1):
        t0, t1, sign = self.sort(t0, t1)
        w = torch.stack([tree(t0, t1) for tree in self.trees]) * (self.sign * sign)
        return w if self.batched else w[0]


class BrownianTreeNoiseSampler:
    """Reproduces k_diffusion.sampling.BrownianTreeNoiseSampler (with A1111's seeding of it).

    Args:
        x: tensor whose shape (and, for the result, device and dtype) the noise takes.
        sigma_min, sigma_max: the valid interval; A1111 passes ``sigmas[sigmas > 0].min()`` and ``sigmas.max()``.
        seed: an int, or one seed per batch item (A1111: the current batch's ``all_seeds``, no ENSD, no subseeds).
        transform: maps sigma to the tree's internal time (identity in A1111).
        randn_device: where the tree draws its normals. A1111 draws them with ``devices.randn_local``: on the CPU for
            ``randn_source`` "CPU", on the GPU for "GPU". ``None`` means ``x.device``.
        randn: optional ``randn(seed: int, shape: tuple) -> Tensor`` replacing torchsde's generator (A1111's "NV"
            source, Philox); its output is moved to the tree's device and dtype as A1111 does.

    The tree works in float32 (A1111 samples in float32); results are returned in ``x``'s dtype on ``x``'s device.
    """

    def __init__(self, x, sigma_min, sigma_max, seed=None, transform=lambda x: x, *, randn_device=None, randn=None):
        self.transform = transform
        self.out_device = x.device
        self.out_dtype = x.dtype
        device = torch.device(randn_device) if randn_device is not None else x.device
        proto = torch.zeros(x.shape, dtype=torch.float32, device=device)
        t0, t1 = self.transform(torch.as_tensor(sigma_min)), self.transform(torch.as_tensor(sigma_max))
        self.tree = _BatchedBrownianTree(proto, t0, t1, seed, randn=randn, w0=torch.zeros_like(proto))

    def __call__(self, sigma, sigma_next):
        t0, t1 = self.transform(torch.as_tensor(sigma)), self.transform(torch.as_tensor(sigma_next))
        out = self.tree(t0, t1) / (t1 - t0).abs().sqrt()
        return out.to(device=self.out_device, dtype=self.out_dtype)


def _brownian_default(noise_sampler, x, sigmas):
    if noise_sampler is not None:
        return noise_sampler
    sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
    return BrownianTreeNoiseSampler(x, sigma_min, sigma_max)


# --------------------------------------------------------------------------------------------------------------------
# Karras et al. (2022) samplers
# --------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                 s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Reproduces k_diffusion.sampling.sample_euler (Karras et al. 2022, Algorithm 2 with Euler steps).

    The churn noise is drawn on every step, as in k-diffusion, even when ``s_churn`` is 0 (it advances A1111's RNG).
    """
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _noise_or_default(noise_sampler, x)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        gamma = min(s_churn / (len(sigmas) - 1), 2**0.5 - 1) if s_tmin <= sigmas[i] <= s_tmax else 0.0
        eps = noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise
        sigma_hat = sigmas[i] * (gamma + 1)
        if gamma > 0:
            x = x + eps * (sigma_hat**2 - sigmas[i] ** 2) ** 0.5
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigma_hat, "denoised": denoised})
        dt = sigmas[i + 1] - sigma_hat
        x = x + d * dt
    return x


@torch.no_grad()
def sample_euler_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                           eta=1.0, s_noise=1.0):
    """Reproduces k_diffusion.sampling.sample_euler_ancestral (ancestral sampling with Euler steps)."""
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _noise_or_default(noise_sampler, x)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        d = to_d(x, sigmas[i], denoised)
        dt = sigma_down - sigmas[i]
        x = x + d * dt
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_heun(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Reproduces k_diffusion.sampling.sample_heun (Karras et al. 2022, Algorithm 2 with Heun steps)."""
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _noise_or_default(noise_sampler, x)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        gamma = min(s_churn / (len(sigmas) - 1), 2**0.5 - 1) if s_tmin <= sigmas[i] <= s_tmax else 0.0
        eps = noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise
        sigma_hat = sigmas[i] * (gamma + 1)
        if gamma > 0:
            x = x + eps * (sigma_hat**2 - sigmas[i] ** 2) ** 0.5
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigma_hat, "denoised": denoised})
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = model(x_2, sigmas[i + 1] * s_in, **extra_args)
            d_2 = to_d(x_2, sigmas[i + 1], denoised_2)
            d_prime = (d + d_2) / 2
            x = x + d_prime * dt
    return x


@torch.no_grad()
def sample_dpm_2(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                 s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Reproduces k_diffusion.sampling.sample_dpm_2 (DPM-Solver-2 midpoint in log sigma, Karras churn)."""
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _noise_or_default(noise_sampler, x)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        gamma = min(s_churn / (len(sigmas) - 1), 2**0.5 - 1) if s_tmin <= sigmas[i] <= s_tmax else 0.0
        eps = noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise
        sigma_hat = sigmas[i] * (gamma + 1)
        if gamma > 0:
            x = x + eps * (sigma_hat**2 - sigmas[i] ** 2) ** 0.5
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigma_hat, "denoised": denoised})
        if sigmas[i + 1] == 0:
            dt = sigmas[i + 1] - sigma_hat
            x = x + d * dt
        else:
            sigma_mid = sigma_hat.log().lerp(sigmas[i + 1].log(), 0.5).exp()
            dt_1 = sigma_mid - sigma_hat
            dt_2 = sigmas[i + 1] - sigma_hat
            x_2 = x + d * dt_1
            denoised_2 = model(x_2, sigma_mid * s_in, **extra_args)
            d_2 = to_d(x_2, sigma_mid, denoised_2)
            x = x + d_2 * dt_2
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                           eta=1.0, s_noise=1.0):
    """Reproduces k_diffusion.sampling.sample_dpm_2_ancestral (ancestral DPM-Solver-2 steps)."""
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _noise_or_default(noise_sampler, x)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            dt = sigma_down - sigmas[i]
            x = x + d * dt
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            dt_1 = sigma_mid - sigmas[i]
            dt_2 = sigma_down - sigmas[i]
            x_2 = x + d * dt_1
            denoised_2 = model(x_2, sigma_mid * s_in, **extra_args)
            d_2 = to_d(x_2, sigma_mid, denoised_2)
            x = x + d_2 * dt_2
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def _linear_multistep_coeff(order, t, i, j):
    """Reproduces k_diffusion.sampling.linear_multistep_coeff: integral of the j-th Lagrange basis polynomial."""
    from scipy import integrate

    if order - 1 > i:
        raise ValueError(f"Order {order} too high for step {i}")

    def fn(tau):
        prod = 1.0
        for k in range(order):
            if j == k:
                continue
            prod *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        return prod

    return integrate.quad(fn, t[i], t[i + 1], epsrel=1e-4)[0]


@torch.no_grad()
def sample_lms(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, order=4):
    """Reproduces k_diffusion.sampling.sample_lms (linear multistep, order 4, coefficients by scipy quadrature)."""
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    sigmas_cpu = sigmas.detach().cpu().numpy()
    ds = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        d = to_d(x, sigmas[i], denoised)
        ds.append(d)
        if len(ds) > order:
            ds.pop(0)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        cur_order = min(i + 1, order)
        coeffs = [_linear_multistep_coeff(cur_order, sigmas_cpu, i, j) for j in range(cur_order)]
        x = x + sum(coeff * d for coeff, d in zip(coeffs, reversed(ds)))
    return x


# --------------------------------------------------------------------------------------------------------------------
# DPM-Solver (fast / adaptive)
# --------------------------------------------------------------------------------------------------------------------


class _PIDStepSizeController:
    """Reproduces k_diffusion.sampling.PIDStepSizeController (adaptive step size for DPM adaptive)."""

    def __init__(self, h, pcoeff, icoeff, dcoeff, order=1, accept_safety=0.81, eps=1e-8):
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.eps = eps
        self.errs = []

    def limiter(self, x):
        return 1 + math.atan(x - 1)

    def propose_step(self, error):
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = self.limiter(factor)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2] = self.errs[1]
            self.errs[1] = self.errs[0]
        self.h *= factor
        return accept


class _DPMSolver:
    """Reproduces k_diffusion.sampling.DPMSolver (Lu et al. 2022) in t = -log(sigma)."""

    def __init__(self, model, extra_args=None, info_callback=None):
        self.model = model
        self.extra_args = {} if extra_args is None else extra_args
        self.info_callback = info_callback

    def t(self, sigma):
        return -sigma.log()

    def sigma(self, t):
        return t.neg().exp()

    def eps(self, eps_cache, key, x, t):
        if key in eps_cache:
            return eps_cache[key], eps_cache
        sigma = self.sigma(t) * x.new_ones([x.shape[0]])
        eps = (x - self.model(x, sigma, **self.extra_args)) / self.sigma(t)
        return eps, {key: eps, **eps_cache}

    def dpm_solver_1_step(self, x, t, t_next, eps_cache=None):
        eps_cache = {} if eps_cache is None else eps_cache
        h = t_next - t
        eps, eps_cache = self.eps(eps_cache, "eps", x, t)
        x_1 = x - self.sigma(t_next) * h.expm1() * eps
        return x_1, eps_cache

    def dpm_solver_2_step(self, x, t, t_next, r1=1 / 2, eps_cache=None):
        eps_cache = {} if eps_cache is None else eps_cache
        h = t_next - t
        eps, eps_cache = self.eps(eps_cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1, eps_cache = self.eps(eps_cache, "eps_r1", u1, s1)
        x_2 = x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)
        return x_2, eps_cache

    def dpm_solver_3_step(self, x, t, t_next, r1=1 / 3, r2=2 / 3, eps_cache=None):
        eps_cache = {} if eps_cache is None else eps_cache
        h = t_next - t
        eps, eps_cache = self.eps(eps_cache, "eps", x, t)
        s1 = t + r1 * h
        s2 = t + r2 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1, eps_cache = self.eps(eps_cache, "eps_r1", u1, s1)
        u2 = (x - self.sigma(s2) * (r2 * h).expm1() * eps
              - self.sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps))
        eps_r2, eps_cache = self.eps(eps_cache, "eps_r2", u2, s2)
        x_3 = x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)
        return x_3, eps_cache

    def dpm_solver_fast(self, x, t_start, t_end, nfe, eta=0.0, s_noise=1.0, noise_sampler=None):
        noise_sampler = _noise_or_default(noise_sampler, x)
        if not t_end > t_start and eta:
            raise ValueError("eta must be 0 for reverse sampling")

        m = math.floor(nfe / 3) + 1
        ts = torch.linspace(t_start, t_end, m + 1, device=x.device)

        if nfe % 3 == 0:
            orders = [3] * (m - 2) + [2, 1]
        else:
            orders = [3] * (m - 1) + [nfe % 3]

        for i in range(len(orders)):
            eps_cache = {}
            t, t_next = ts[i], ts[i + 1]
            if eta:
                sd, su = get_ancestral_step(self.sigma(t), self.sigma(t_next), eta)
                t_next_ = torch.minimum(t_end, self.t(sd))
                su = (self.sigma(t_next) ** 2 - self.sigma(t_next_) ** 2) ** 0.5
            else:
                t_next_, su = t_next, 0.0

            eps, eps_cache = self.eps(eps_cache, "eps", x, t)
            denoised = x - self.sigma(t) * eps
            if self.info_callback is not None:
                self.info_callback({"x": x, "i": i, "t": ts[i], "t_up": t, "denoised": denoised})

            if orders[i] == 1:
                x, eps_cache = self.dpm_solver_1_step(x, t, t_next_, eps_cache=eps_cache)
            elif orders[i] == 2:
                x, eps_cache = self.dpm_solver_2_step(x, t, t_next_, eps_cache=eps_cache)
            else:
                x, eps_cache = self.dpm_solver_3_step(x, t, t_next_, eps_cache=eps_cache)

            x = x + su * s_noise * noise_sampler(self.sigma(t), self.sigma(t_next))

        return x

    def dpm_solver_adaptive(self, x, t_start, t_end, order=3, rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0.0,
                            icoeff=1.0, dcoeff=0.0, accept_safety=0.81, eta=0.0, s_noise=1.0, noise_sampler=None):
        noise_sampler = _noise_or_default(noise_sampler, x)
        if order not in {2, 3}:
            raise ValueError("order should be 2 or 3")
        forward = t_end > t_start
        if not forward and eta:
            raise ValueError("eta must be 0 for reverse sampling")
        h_init = abs(h_init) * (1 if forward else -1)
        atol = torch.tensor(atol)
        rtol = torch.tensor(rtol)
        s = t_start
        x_prev = x
        accept = True
        pid = _PIDStepSizeController(h_init, pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
        info = {"steps": 0, "nfe": 0, "n_accept": 0, "n_reject": 0}

        while s < t_end - 1e-5 if forward else s > t_end + 1e-5:
            eps_cache = {}
            t = torch.minimum(t_end, s + pid.h) if forward else torch.maximum(t_end, s + pid.h)
            if eta:
                sd, su = get_ancestral_step(self.sigma(s), self.sigma(t), eta)
                t_ = torch.minimum(t_end, self.t(sd))
                su = (self.sigma(t) ** 2 - self.sigma(t_) ** 2) ** 0.5
            else:
                t_, su = t, 0.0

            eps, eps_cache = self.eps(eps_cache, "eps", x, s)
            denoised = x - self.sigma(s) * eps

            if order == 2:
                x_low, eps_cache = self.dpm_solver_1_step(x, s, t_, eps_cache=eps_cache)
                x_high, eps_cache = self.dpm_solver_2_step(x, s, t_, eps_cache=eps_cache)
            else:
                x_low, eps_cache = self.dpm_solver_2_step(x, s, t_, r1=1 / 3, eps_cache=eps_cache)
                x_high, eps_cache = self.dpm_solver_3_step(x, s, t_, eps_cache=eps_cache)
            delta = torch.maximum(atol, rtol * torch.maximum(x_low.abs(), x_prev.abs()))
            error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
            accept = pid.propose_step(error)
            if accept:
                x_prev = x_low
                x = x_high + su * s_noise * noise_sampler(self.sigma(s), self.sigma(t))
                s = t
                info["n_accept"] += 1
            else:
                info["n_reject"] += 1
            info["nfe"] += order
            info["steps"] += 1

            if self.info_callback is not None:
                self.info_callback({"x": x, "i": info["steps"] - 1, "t": s, "t_up": s, "denoised": denoised,
                                    "error": error, "h": pid.h, **info})

        return x, info


def _sigma_range(sigmas, sigma_min, sigma_max, n):
    """The (sigma_min, sigma_max, n) A1111's img2img path derives from a schedule for DPM fast/adaptive."""
    if sigma_min is None:
        sigma_min = sigmas[-2]  # the last sigma is 0, which DPM fast/adaptive cannot take
    if sigma_max is None:
        sigma_max = sigmas[0]
    if n is None and sigmas is not None:
        n = len(sigmas) - 1
    return sigma_min, sigma_max, n


@torch.no_grad()
def sample_dpm_fast(model, x, sigmas=None, extra_args=None, callback=None, disable=None, noise_sampler=None,
                    eta=0.0, s_noise=1.0, *, sigma_min=None, sigma_max=None, n=None):
    """Reproduces k_diffusion.sampling.sample_dpm_fast (DPM-Solver-Fast, fixed step size, ``n`` model calls).

    ``sigma_min``/``sigma_max``/``n`` default to ``sigmas[-2]``/``sigmas[0]``/``len(sigmas) - 1`` (A1111 img2img);
    A1111's txt2img passes the model's own sigma range and ``n = steps`` instead.
    """
    sigma_min, sigma_max, n = _sigma_range(sigmas, sigma_min, sigma_max, n)
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError("sigma_min and sigma_max must not be 0")
    solver = _DPMSolver(model, extra_args)
    if callback is not None:
        solver.info_callback = lambda info: callback(
            {"sigma": solver.sigma(info["t"]), "sigma_hat": solver.sigma(info["t_up"]), **info})
    return solver.dpm_solver_fast(x, solver.t(torch.as_tensor(sigma_max)), solver.t(torch.as_tensor(sigma_min)), n,
                                  eta, s_noise, noise_sampler)


@torch.no_grad()
def sample_dpm_adaptive(model, x, sigmas=None, extra_args=None, callback=None, disable=None, noise_sampler=None,
                        order=3, rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0.0, icoeff=1.0, dcoeff=0.0,
                        accept_safety=0.81, eta=0.0, s_noise=1.0, return_info=False, *,
                        sigma_min=None, sigma_max=None):
    """Reproduces k_diffusion.sampling.sample_dpm_adaptive (DPM-Solver-23 with a PID step-size controller).

    The range defaults as in ``sample_dpm_fast``; the number of steps is chosen by the controller.
    """
    sigma_min, sigma_max, _ = _sigma_range(sigmas, sigma_min, sigma_max, None)
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError("sigma_min and sigma_max must not be 0")
    solver = _DPMSolver(model, extra_args)
    if callback is not None:
        solver.info_callback = lambda info: callback(
            {"sigma": solver.sigma(info["t"]), "sigma_hat": solver.sigma(info["t_up"]), **info})
    x, info = solver.dpm_solver_adaptive(x, solver.t(torch.as_tensor(sigma_max)), solver.t(torch.as_tensor(sigma_min)),
                                         order, rtol, atol, h_init, pcoeff, icoeff, dcoeff, accept_safety, eta,
                                         s_noise, noise_sampler)
    if return_info:
        return x, info
    return x


# --------------------------------------------------------------------------------------------------------------------
# DPM-Solver++ family
# --------------------------------------------------------------------------------------------------------------------


def _sigma_fn(t):
    return t.neg().exp()


def _t_fn(sigma):
    return sigma.log().neg()


@torch.no_grad()
def sample_dpmpp_2s_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                              eta=1.0, s_noise=1.0):
    """Reproduces k_diffusion.sampling.sample_dpmpp_2s_ancestral (ancestral DPM-Solver++(2S))."""
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _noise_or_default(noise_sampler, x)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if sigma_down == 0:
            d = to_d(x, sigmas[i], denoised)
            dt = sigma_down - sigmas[i]
            x = x + d * dt
        else:
            t, t_next = _t_fn(sigmas[i]), _t_fn(sigma_down)
            r = 1 / 2
            h = t_next - t
            s = t + r * h
            x_2 = (_sigma_fn(s) / _sigma_fn(t)) * x - (-h * r).expm1() * denoised
            denoised_2 = model(x_2, _sigma_fn(s) * s_in, **extra_args)
            x = (_sigma_fn(t_next) / _sigma_fn(t)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                     eta=1.0, s_noise=1.0, r=1 / 2):
    """Reproduces k_diffusion.sampling.sample_dpmpp_sde (DPM-Solver++ stochastic, two model calls per step)."""
    noise_sampler = _brownian_default(noise_sampler, x, sigmas)
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if sigmas[i + 1] == 0:
            d = to_d(x, sigmas[i], denoised)
            dt = sigmas[i + 1] - sigmas[i]
            x = x + d * dt
        else:
            t, t_next = _t_fn(sigmas[i]), _t_fn(sigmas[i + 1])
            h = t_next - t
            s = t + h * r
            fac = 1 / (2 * r)

            sd, su = get_ancestral_step(_sigma_fn(t), _sigma_fn(s), eta)
            s_ = _t_fn(sd)
            x_2 = (_sigma_fn(s_) / _sigma_fn(t)) * x - (t - s_).expm1() * denoised
            x_2 = x_2 + noise_sampler(_sigma_fn(t), _sigma_fn(s)) * s_noise * su
            denoised_2 = model(x_2, _sigma_fn(s) * s_in, **extra_args)

            sd, su = get_ancestral_step(_sigma_fn(t), _sigma_fn(t_next), eta)
            t_next_ = _t_fn(sd)
            denoised_d = (1 - fac) * denoised + fac * denoised_2
            x = (_sigma_fn(t_next_) / _sigma_fn(t)) * x - (t - t_next_).expm1() * denoised_d
            x = x + noise_sampler(_sigma_fn(t), _sigma_fn(t_next)) * s_noise * su
    return x


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """Reproduces k_diffusion.sampling.sample_dpmpp_2m (DPM-Solver++(2M), deterministic)."""
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        t, t_next = _t_fn(sigmas[i]), _t_fn(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (_sigma_fn(t_next) / _sigma_fn(t)) * x - (-h).expm1() * denoised
        else:
            h_last = t - _t_fn(sigmas[i - 1])
            r = h_last / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (_sigma_fn(t_next) / _sigma_fn(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                        eta=1.0, s_noise=1.0, solver_type="midpoint"):
    """Reproduces k_diffusion.sampling.sample_dpmpp_2m_sde (DPM-Solver++(2M) SDE; A1111's "Heun" variant passes
    ``solver_type='heun'``)."""
    if solver_type not in {"heun", "midpoint"}:
        raise ValueError("solver_type must be 'heun' or 'midpoint'")
    noise_sampler = _brownian_default(noise_sampler, x, sigmas)
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    old_denoised = None
    h_last = None
    h = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            eta_h = eta * h

            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + (-h - eta_h).expm1().neg() * denoised

            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + ((-h - eta_h).expm1().neg() / (-h - eta_h) + 1) * (1 / r) * (denoised - old_denoised)
                elif solver_type == "midpoint":
                    x = x + 0.5 * (-h - eta_h).expm1().neg() * (1 / r) * (denoised - old_denoised)

            if eta:
                x = x + (noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * eta_h).expm1().neg().sqrt()
                         * s_noise)

        old_denoised = denoised
        h_last = h
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                        eta=1.0, s_noise=1.0):
    """Reproduces k_diffusion.sampling.sample_dpmpp_3m_sde (DPM-Solver++(3M) SDE)."""
    noise_sampler = _brownian_default(noise_sampler, x, sigmas)
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    denoised_1, denoised_2 = None, None
    h, h_1, h_2 = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            h_eta = h * (eta + 1)

            x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised

            if h_2 is not None:
                r0 = h_1 / h
                r1 = h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                r = h_1 / h
                d = (denoised - denoised_1) / r
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + phi_2 * d

            if eta:
                x = x + (noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt()
                         * s_noise)

        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


# --------------------------------------------------------------------------------------------------------------------
# A1111's own k-style samplers: Restart and LCM
# --------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_restart(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                   s_noise=1.0, restart_list=None):
    """Reproduces A1111 sd_samplers_extra.restart_sampler (Restart sampling, Xu et al. 2023).

    With ``restart_list`` None: under 20 steps it is plain Heun over ``sigmas``; from 20 steps the schedule is
    *replaced* by a Karras schedule of ``steps - restart_steps * restart_times`` steps between ``sigmas[-2]`` and
    ``sigmas[0]``, with ``restart_times`` restarts (1, or 2 from 36 steps) of ``restart_steps`` (9, or steps // 4)
    Heun steps from sigma ~2 back to ~0.1. Format: ``{min_sigma: [restart_steps, restart_times, max_sigma]}``.
    """
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _noise_or_default(noise_sampler, x)
    s_in = x.new_ones([x.shape[0]])
    step_id = 0

    def heun_step(x, old_sigma, new_sigma, second_order=True):
        nonlocal step_id
        denoised = model(x, old_sigma * s_in, **extra_args)
        d = to_d(x, old_sigma, denoised)
        if callback is not None:
            callback({"x": x, "i": step_id, "sigma": new_sigma, "sigma_hat": old_sigma, "denoised": denoised})
        dt = new_sigma - old_sigma
        if new_sigma == 0 or not second_order:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = model(x_2, new_sigma * s_in, **extra_args)
            d_2 = to_d(x_2, new_sigma, denoised_2)
            d_prime = (d + d_2) / 2
            x = x + d_prime * dt
        step_id += 1
        return x

    steps = sigmas.shape[0] - 1
    if restart_list is None:
        if steps >= 20:
            restart_steps = 9
            restart_times = 1
            if steps >= 36:
                restart_steps = steps // 4
                restart_times = 2
            sigmas = _karras_sigmas(steps - restart_steps * restart_times, sigmas[-2].item(), sigmas[0].item(),
                                    device=sigmas.device)
            restart_list = {0.1: [restart_steps + 1, restart_times, 2]}
        else:
            restart_list = {}

    restart_list = {int(torch.argmin(abs(sigmas - key), dim=0)): value for key, value in restart_list.items()}

    step_list = []
    for i in range(len(sigmas) - 1):
        step_list.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in restart_list:
            restart_steps, restart_times, restart_max = restart_list[i + 1]
            min_idx = i + 1
            max_idx = int(torch.argmin(abs(sigmas - restart_max), dim=0))
            if max_idx < min_idx:
                sigma_restart = _karras_sigmas(restart_steps, sigmas[min_idx].item(), sigmas[max_idx].item(),
                                               device=sigmas.device)[:-1]
                while restart_times > 0:
                    restart_times -= 1
                    step_list.extend(zip(sigma_restart[:-1], sigma_restart[1:]))

    last_sigma = None
    for old_sigma, new_sigma in step_list:
        if last_sigma is None:
            last_sigma = old_sigma
        elif last_sigma < old_sigma:
            x = x + noise_sampler(old_sigma, last_sigma) * s_noise * (old_sigma**2 - last_sigma**2) ** 0.5
        x = heun_step(x, old_sigma, new_sigma)
        last_sigma = new_sigma

    return x


restart_sampler = sample_restart  # A1111's name for it


@torch.no_grad()
def sample_lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """Reproduces A1111 sd_samplers_lcm.sample_lcm: jump to the denoised estimate, re-noise to the next sigma.

    A1111 runs it on its LCMCompVisDenoiser (50 original timesteps, LCM c_skip/c_out), which the caller provides.
    """
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _noise_or_default(noise_sampler, x)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * noise_sampler(sigmas[i], sigmas[i + 1])
    return x
