"""Every A1111 sampler against an independent reference of its update, on an analytic denoiser.

The data are x0 ~ N(mu, s^2) per element, so the optimal denoiser is known in closed form:
D(x, sigma) = (s^2 x + sigma^2 mu) / (s^2 + sigma^2), and the probability-flow ODE from (x_T, sigma_max) ends at
mu + (x_T - mu) * s / sqrt(s^2 + sigma_max^2). The references below are written from the published update rules
(k-diffusion ab527a9 sampling.py, A1111 v1.10.1 sd_samplers_extra/lcm/timesteps_impl and uni_pc.py) with plain
Python/numpy float64 scalars, independently of pipelines/; both sides get the same fixed noise sequence, and every
step's x (from the callback) is compared, not only the end.

(A separate scratch comparison against the original k-diffusion and A1111 sources found our port bit-identical for
all samplers at 1-50 steps; those sources are not importable here, so these tests use the independent references.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipelines import k_sampling as ks
from pipelines import timestep_sampling as ts

S = 0.3  # data std
SHAPE = (2, 4, 8, 8)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1234)
    x0 = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    mu = torch.randn((1, 4, 8, 8), generator=g, dtype=torch.float64) * 0.5
    noise = [torch.randn(SHAPE, generator=g, dtype=torch.float64) for _ in range(400)]
    return x0, mu, noise


def D_of(mu):
    def D(x, sigma):
        sg = sigma.reshape(-1, 1, 1, 1).to(x.dtype) if torch.is_tensor(sigma) else sigma
        return (S**2 * x + sg**2 * mu) / (S**2 + sg**2)
    return D


class FixedNoise:
    """Hands out a fixed sequence of noise tensors, one per call, and counts calls."""

    def __init__(self, seq):
        self.seq, self.n = seq, 0

    def __call__(self, *_):
        v = self.seq[self.n]
        self.n += 1
        return v


def karras_np(n, smin=0.0291675, smax=14.6146, rho=7.0):
    ramp = np.linspace(0, 1, n)
    sig = (smax ** (1 / rho) + ramp * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    return [float(v) for v in sig] + [0.0]


def run_ours(fn, D, x, sigmas, noise, **params):
    """Run one of our samplers with the fixed noise; return (result, x at the start of each step, noise draws)."""
    xs = []
    fixed = FixedNoise(noise)
    out = fn(D, x, torch.tensor(sigmas, dtype=torch.float64), noise_sampler=fixed,
             callback=lambda d: xs.append(d["x"].clone()), **params)
    return out, xs, fixed.n


def ancestral(s_from, s_to, eta):
    if not eta:
        return s_to, 0.0
    up = min(s_to, eta * math.sqrt(s_to**2 * (s_from**2 - s_to**2) / s_from**2))
    return math.sqrt(s_to**2 - up**2), up


# ---------------------------------------------------------------------------------------------------------------------
# references (k-diffusion formulas, float64 scalars)
# ---------------------------------------------------------------------------------------------------------------------


def ref_churn(kind, D, x, sig, noise, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Euler / Heun / DPM2 with Karras churn (Karras et al. 2022, Algorithm 2)."""
    xs, n = [], len(sig) - 1
    for i in range(n):
        s, s_next = sig[i], sig[i + 1]
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= s <= s_tmax else 0.0
        eps = noise.pop(0) * s_noise
        s_hat = s * (gamma + 1)
        if gamma > 0:
            x = x + eps * math.sqrt(s_hat**2 - s**2)
        xs.append(x)
        d = (x - D(x, s_hat)) / s_hat
        if s_next == 0 or kind == "euler":
            x = x + d * (s_next - s_hat)
        elif kind == "heun":
            x2 = x + d * (s_next - s_hat)
            d2 = (x2 - D(x2, s_next)) / s_next
            x = x + (d + d2) / 2 * (s_next - s_hat)
        else:  # dpm2: midpoint in log sigma
            s_mid = math.exp((math.log(s_hat) + math.log(s_next)) / 2)
            x2 = x + d * (s_mid - s_hat)
            d2 = (x2 - D(x2, s_mid)) / s_mid
            x = x + d2 * (s_next - s_hat)
    return x, xs


def ref_ancestral(kind, D, x, sig, noise, eta=1.0, s_noise=1.0):
    """Euler a / DPM2 a / DPM++ 2S a."""
    xs = []
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        xs.append(x)
        den = D(x, s)
        s_down, s_up = ancestral(s, s_next, eta)
        if kind == "euler" or s_down == 0:
            x = x + (x - den) / s * (s_down - s)
        elif kind == "dpm2":
            s_mid = math.exp((math.log(s) + math.log(s_down)) / 2)
            x2 = x + (x - den) / s * (s_mid - s)
            x = x + (x2 - D(x2, s_mid)) / s_mid * (s_down - s)
        else:  # dpmpp_2s: exponential integrator in lambda = -log sigma, midpoint r = 1/2
            s_mid = math.sqrt(s * s_down)
            x2 = (s_mid / s) * x - math.expm1(-(math.log(s) - math.log(s_mid))) * den
            x = (s_down / s) * x - math.expm1(-(math.log(s) - math.log(s_down))) * D(x2, s_mid)
        if kind == "dpm2":
            if s_down != 0:
                x = x + noise.pop(0) * s_noise * s_up
        elif s_next > 0:
            x = x + noise.pop(0) * s_noise * s_up
    return x, xs


def ref_lms(D, x, sig, order=4):
    """Linear multistep: exact integrals of the Lagrange basis over [sigma_i, sigma_i+1]."""
    xs, ds = [], []
    for i in range(len(sig) - 1):
        xs.append(x)
        ds.append((x - D(x, sig[i])) / sig[i])
        ds = ds[-order:]
        k = min(i + 1, order)
        upd = 0
        for j in range(k):
            nodes = [sig[i - m] for m in range(k) if m != j]
            poly = np.poly1d([1.0])
            for nd in nodes:
                poly = poly * np.poly1d([1.0, -nd]) / (sig[i - j] - nd)
            integ = poly.integ()
            upd = upd + (integ(sig[i + 1]) - integ(sig[i])) * ds[-1 - j]
        x = x + upd
    return x, xs


def ref_dpmpp_2m(D, x, sig):
    xs, old = [], None
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        xs.append(x)
        den = D(x, s)
        if old is None or s_next == 0:
            x = (s_next / s) * x - (s_next / s - 1) * den
        else:
            h = math.log(s) - math.log(s_next)
            r = (math.log(sig[i - 1]) - math.log(s)) / h
            dd = (1 + 1 / (2 * r)) * den - (1 / (2 * r)) * old
            x = (s_next / s) * x - math.expm1(-h) * dd
        old = den
    return x, xs


def ref_dpmpp_sde(D, x, sig, noise, eta=1.0, s_noise=1.0, r=0.5):
    xs = []
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        xs.append(x)
        den = D(x, s)
        if s_next == 0:
            x = x + (x - den) / s * (s_next - s)
            continue
        lam, lam_next = -math.log(s), -math.log(s_next)
        lam_mid = lam + (lam_next - lam) * r
        s_mid = math.exp(-lam_mid)
        sd, su = ancestral(s, s_mid, eta)
        x2 = (sd / s) * x - math.expm1(lam - (-math.log(sd))) * den
        x2 = x2 + noise.pop(0) * s_noise * su
        den2 = D(x2, s_mid)
        sd, su = ancestral(s, s_next, eta)
        fac = 1 / (2 * r)
        x = (sd / s) * x - math.expm1(lam - (-math.log(sd))) * ((1 - fac) * den + fac * den2)
        x = x + noise.pop(0) * s_noise * su
    return x, xs


def ref_dpmpp_2m_sde(D, x, sig, noise, eta=1.0, s_noise=1.0, solver="midpoint"):
    xs, old, h_last = [], None, None
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        xs.append(x)
        den = D(x, s)
        if s_next == 0:
            x = den
        else:
            h = math.log(s) - math.log(s_next)
            eh = eta * h
            x = s_next / s * math.exp(-eh) * x - math.expm1(-h - eh) * den
            if old is not None:
                r = h_last / h
                if solver == "heun":
                    x = x + (-math.expm1(-h - eh) / (-h - eh) + 1) * (1 / r) * (den - old)
                else:
                    x = x + 0.5 * -math.expm1(-h - eh) * (1 / r) * (den - old)
            if eta:
                x = x + noise.pop(0) * s_next * math.sqrt(-math.expm1(-2 * eh)) * s_noise
            h_last = h
        old = den
    return x, xs


def ref_dpmpp_3m_sde(D, x, sig, noise, eta=1.0, s_noise=1.0):
    xs = []
    d_1 = d_2 = h_1 = h_2 = None
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        xs.append(x)
        den = D(x, s)
        h = None
        if s_next == 0:
            x = den
        else:
            h = math.log(s) - math.log(s_next)
            he = h * (eta + 1)
            x = math.exp(-he) * x - math.expm1(-he) * den
            phi2 = math.expm1(-he) / he + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0, d1_1 = (den - d_1) / r0, (d_1 - d_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x = x + phi2 * d1 - (phi2 / he - 0.5) * d2
            elif h_1 is not None:
                x = x + phi2 * (den - d_1) / (h_1 / h)
            if eta:
                x = x + noise.pop(0) * s_next * math.sqrt(-math.expm1(-2 * h * eta)) * s_noise
        d_1, d_2 = den, d_1
        h_1, h_2 = h, h_1
    return x, xs


def _dpm_solver_step(D, x, t, t_next, order, r1=None):
    """One DPM-Solver-1/2/3 step (Lu et al. 2022) in t = -log sigma, eps-form; returns (x, evals dict)."""
    sg = lambda tt: math.exp(-tt)  # noqa: E731
    eps_of = lambda xx, tt: (xx - D(xx, sg(tt))) / sg(tt)  # noqa: E731
    h = t_next - t
    eps = eps_of(x, t)
    if order == 1:
        return x - sg(t_next) * math.expm1(h) * eps
    if order == 2:
        r1 = 0.5 if r1 is None else r1
        s1 = t + r1 * h
        u1 = x - sg(s1) * math.expm1(r1 * h) * eps
        e1 = eps_of(u1, s1)
        return x - sg(t_next) * math.expm1(h) * eps - sg(t_next) / (2 * r1) * math.expm1(h) * (e1 - eps)
    r1, r2 = 1 / 3, 2 / 3
    s1, s2 = t + r1 * h, t + r2 * h
    u1 = x - sg(s1) * math.expm1(r1 * h) * eps
    e1 = eps_of(u1, s1)
    u2 = x - sg(s2) * math.expm1(r2 * h) * eps - sg(s2) * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1) * (e1 - eps)
    e2 = eps_of(u2, s2)
    return x - sg(t_next) * math.expm1(h) * eps - sg(t_next) / r2 * (math.expm1(h) / h - 1) * (e2 - eps)


def ref_dpm_fast(D, x, smin, smax, nfe, noise, eta=0.0, s_noise=1.0):
    t_start, t_end = -math.log(smax), -math.log(smin)
    m = nfe // 3 + 1
    # k-diffusion makes this grid with torch.linspace, in float32 (the default dtype); take the same grid points
    tgrid = torch.linspace(torch.tensor(t_start), torch.tensor(t_end), m + 1).tolist()
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    xs = []
    for i, o in enumerate(orders):
        t, t_next = float(tgrid[i]), float(tgrid[i + 1])
        if eta:
            sd, _ = ancestral(math.exp(-t), math.exp(-t_next), eta)
            t_next_ = min(t_end, -math.log(sd))
            su = math.sqrt(math.exp(-2 * t_next) - math.exp(-2 * t_next_))
        else:
            t_next_, su = t_next, 0.0
        xs.append(x)
        x = _dpm_solver_step(D, x, t, t_next_, o)
        x = x + su * s_noise * noise.pop(0)  # drawn even when su == 0
    return x, xs


def ref_dpm_adaptive(D, x, smin, smax, noise, eta=0.0, s_noise=1.0, rtol=0.05, atol=0.0078, h=0.05, order=3):
    """DPM-Solver-23 with an integral-only step controller: factor = 1 + atan((1/err)^(1/k) - 1), accept >= 0.81."""
    s, t_end = -math.log(smax), -math.log(smin)
    k = 1.5 if eta else order
    x_prev, accepted, rejected = x, 0, 0
    while s < t_end - 1e-5:
        t = min(t_end, s + h)
        if eta:
            sd, _ = ancestral(math.exp(-s), math.exp(-t), eta)
            t_ = min(t_end, -math.log(sd))
            su = math.sqrt(math.exp(-2 * t) - math.exp(-2 * t_))
        else:
            t_, su = t, 0.0
        x_low = _dpm_solver_step(D, x, s, t_, 2, r1=1 / 3)
        x_high = _dpm_solver_step(D, x, s, t_, 3)
        delta = torch.clamp(rtol * torch.maximum(x_low.abs(), x_prev.abs()), min=atol)
        err = float(torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5)
        factor = 1 + math.atan((1 / (err + 1e-8)) ** (1 / k) - 1)
        h *= factor
        if factor >= 0.81:
            accepted += 1
            x_prev = x_low
            x = x_high + su * s_noise * noise.pop(0)
            s = t
        else:
            rejected += 1
    return x, accepted, rejected


def ref_restart(D, x, sig, noise, s_noise=1.0):
    """A1111 restart_sampler: Heun steps; from 20 steps a Karras schedule of steps - k*n steps plus n restarts of k
    Heun steps from sigma ~2 down to ~0.1 (k = 9, n = 1; from 36 steps k = steps // 4, n = 2)."""
    steps = len(sig) - 1
    segs = [(sig[i], sig[i + 1]) for i in range(steps)]
    if steps >= 20:
        k, n = (steps // 4, 2) if steps >= 36 else (9, 1)
        main = karras_np(steps - k * n, sig[-2], sig[0])
        lo = int(np.argmin([abs(v - 0.1) for v in main]))
        hi = int(np.argmin([abs(v - 2.0) for v in main]))
        restart = karras_np(k + 1, main[lo], main[hi])[:-1]
        segs = []
        for i in range(len(main) - 1):
            segs.append((main[i], main[i + 1]))
            if i + 1 == lo and hi < lo:
                segs += [(restart[j], restart[j + 1]) for j in range(len(restart) - 1)] * n
    xs, last = [], None
    for a, b in segs:
        if last is not None and last < a:
            x = x + noise.pop(0) * s_noise * math.sqrt(a**2 - last**2)
        xs.append(x)
        d = (x - D(x, a)) / a
        if b == 0:
            x = x + d * (b - a)
        else:
            x2 = x + d * (b - a)
            x = x + (d + (x2 - D(x2, b)) / b) / 2 * (b - a)
        last = b
    return x, xs


def ref_lcm(D, x, sig, noise):
    xs = []
    for i in range(len(sig) - 1):
        xs.append(x)
        x = D(x, sig[i])
        if sig[i + 1] > 0:
            x = x + sig[i + 1] * noise.pop(0)
    return x, xs


# ---------------------------------------------------------------------------------------------------------------------
# the comparisons
# ---------------------------------------------------------------------------------------------------------------------

STEPS = [1, 2, 5, 12]

CASES = [
    # (our function, params, reference builder(D, x, sig, noise) -> (x, xs), draws noise in ours per call?)
    ("sample_euler", {}, lambda D, x, sig, nz: ref_churn("euler", D, x, sig, nz)),
    ("sample_euler", dict(s_churn=2.0, s_tmin=0.5, s_tmax=10.0, s_noise=1.003),
     lambda D, x, sig, nz: ref_churn("euler", D, x, sig, nz, 2.0, 0.5, 10.0, 1.003)),
    ("sample_heun", {}, lambda D, x, sig, nz: ref_churn("heun", D, x, sig, nz)),
    ("sample_heun", dict(s_churn=1.0), lambda D, x, sig, nz: ref_churn("heun", D, x, sig, nz, 1.0)),
    ("sample_dpm_2", {}, lambda D, x, sig, nz: ref_churn("dpm2", D, x, sig, nz)),
    ("sample_dpm_2", dict(s_churn=1.0, s_noise=0.9), lambda D, x, sig, nz: ref_churn("dpm2", D, x, sig, nz, 1.0,
                                                                                      s_noise=0.9)),
    ("sample_euler_ancestral", dict(eta=1.0), lambda D, x, sig, nz: ref_ancestral("euler", D, x, sig, nz)),
    ("sample_euler_ancestral", dict(eta=0.6, s_noise=1.01),
     lambda D, x, sig, nz: ref_ancestral("euler", D, x, sig, nz, 0.6, 1.01)),
    ("sample_dpm_2_ancestral", dict(eta=1.0), lambda D, x, sig, nz: ref_ancestral("dpm2", D, x, sig, nz)),
    ("sample_dpmpp_2s_ancestral", dict(eta=1.0), lambda D, x, sig, nz: ref_ancestral("2s", D, x, sig, nz)),
    ("sample_dpmpp_2s_ancestral", dict(eta=0.0), lambda D, x, sig, nz: ref_ancestral("2s", D, x, sig, nz, 0.0)),
    ("sample_lms", {}, lambda D, x, sig, nz: ref_lms(D, x, sig)),
    ("sample_dpmpp_2m", {}, lambda D, x, sig, nz: ref_dpmpp_2m(D, x, sig)),
    ("sample_dpmpp_sde", dict(eta=1.0), lambda D, x, sig, nz: ref_dpmpp_sde(D, x, sig, nz)),
    ("sample_dpmpp_sde", dict(eta=0.5, s_noise=0.9), lambda D, x, sig, nz: ref_dpmpp_sde(D, x, sig, nz, 0.5, 0.9)),
    ("sample_dpmpp_2m_sde", dict(eta=1.0), lambda D, x, sig, nz: ref_dpmpp_2m_sde(D, x, sig, nz)),
    ("sample_dpmpp_2m_sde", dict(eta=1.0, solver_type="heun"),
     lambda D, x, sig, nz: ref_dpmpp_2m_sde(D, x, sig, nz, solver="heun")),
    ("sample_dpmpp_3m_sde", dict(eta=1.0), lambda D, x, sig, nz: ref_dpmpp_3m_sde(D, x, sig, nz)),
    ("sample_dpmpp_3m_sde", dict(eta=0.0), lambda D, x, sig, nz: ref_dpmpp_3m_sde(D, x, sig, nz, 0.0)),
    ("sample_lcm", {}, lambda D, x, sig, nz: ref_lcm(D, x, sig, nz)),
    ("sample_restart", {}, lambda D, x, sig, nz: ref_restart(D, x, sig, nz)),
]


def _assert_close(ours, ref, what, rtol=1e-9, atol=1e-9):
    assert ours.shape == ref.shape, what
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("name,params,ref", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_sampler_matches_reference_step_by_step(data, name, params, ref, steps):
    x0, mu, noise = data
    D = D_of(mu)
    sig = karras_np(steps)
    x = x0 * sig[0]
    ref_noise = list(noise)
    ref_x, ref_xs = ref(D, x, sig, ref_noise)
    out, xs, draws = run_ours(getattr(ks, name), D, x, sig, noise, **params)
    assert draws == len(noise) - len(ref_noise), "same number of noise draws, in the same order"
    assert len(xs) == len(ref_xs)
    for i, (a, b) in enumerate(zip(xs, ref_xs)):
        _assert_close(a, b, f"{name} step {i}")
    _assert_close(out, ref_x, f"{name} final")


@pytest.mark.parametrize("steps", [20, 30, 40])
def test_restart_with_restarts_matches_reference(data, steps):
    x0, mu, noise = data
    sig = karras_np(steps)
    x = x0 * sig[0]
    ref_noise = list(noise)
    ref_x, ref_xs = ref_restart(D_of(mu), x, sig, ref_noise)
    out, xs, draws = run_ours(ks.sample_restart, D_of(mu), x, sig, noise)
    assert draws == len(noise) - len(ref_noise) == (1 if steps < 36 else 2)
    assert len(xs) == len(ref_xs) == steps  # (steps - k*n) main steps + n restarts of k steps
    # our restart builds its Karras sigmas in float32 as A1111 does; the reference in float64
    for i, (a, b) in enumerate(zip(xs, ref_xs)):
        _assert_close(a, b, f"restart step {i}", rtol=1e-5, atol=1e-5)
    _assert_close(out, ref_x, "restart final", rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("nfe", [1, 2, 3, 4, 7, 10])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_dpm_fast_matches_reference(data, nfe, eta):
    x0, mu, noise = data
    D = D_of(mu)
    smin, smax = 0.0291675, 14.6146
    x = x0 * smax
    ref_noise = list(noise)
    ref_x, ref_xs = ref_dpm_fast(D, x, smin, smax, nfe, ref_noise, eta=eta)
    xs, fixed = [], FixedNoise(noise)
    out = ks.sample_dpm_fast(D, x, None, sigma_min=torch.tensor(smin, dtype=torch.float64),
                             sigma_max=torch.tensor(smax, dtype=torch.float64), n=nfe, eta=eta, noise_sampler=fixed,
                             callback=lambda d: xs.append(d["x"]))
    assert fixed.n == len(noise) - len(ref_noise)
    assert len(xs) == len(ref_xs)
    # k-diffusion builds the t grid with torch.linspace, in float32, so its sigmas and step sizes are float32 values
    for i, (a, b) in enumerate(zip(xs, ref_xs)):
        _assert_close(a, b, f"dpm_fast step {i}", rtol=2e-5, atol=1e-4)
    _assert_close(out, ref_x, "dpm_fast final", rtol=2e-5, atol=1e-4)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_dpm_adaptive_matches_reference(data, eta):
    x0, mu, noise = data
    D = D_of(mu)
    smin, smax = 0.0291675, 14.6146
    x = x0 * smax
    ref_noise = list(noise)
    ref_x, ref_accepted, ref_rejected = ref_dpm_adaptive(D, x, smin, smax, ref_noise, eta=eta)
    infos, fixed = [], FixedNoise(noise)
    out = ks.sample_dpm_adaptive(D, x, None, sigma_min=torch.tensor(smin, dtype=torch.float64),
                                 sigma_max=torch.tensor(smax, dtype=torch.float64), eta=eta, noise_sampler=fixed,
                                 callback=infos.append)
    assert fixed.n == len(noise) - len(ref_noise) == ref_accepted > 3
    assert (infos[-1]["n_accept"], infos[-1]["n_reject"]) == (ref_accepted, ref_rejected)
    _assert_close(out, ref_x, "dpm_adaptive final", rtol=1e-5, atol=1e-4)


def test_dpm_fast_derives_its_range_from_sigmas_like_a1111_img2img(data):
    x0, mu, noise = data
    sig = torch.tensor(karras_np(8), dtype=torch.float64)
    a = ks.sample_dpm_fast(D_of(mu), x0 * sig[0], sig, noise_sampler=FixedNoise(noise))
    b = ks.sample_dpm_fast(D_of(mu), x0 * sig[0], None, sigma_min=sig[-2], sigma_max=sig[0], n=8,
                           noise_sampler=FixedNoise(noise))
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------------------------------
# convergence and statistics
# ---------------------------------------------------------------------------------------------------------------------

# name -> (which exact endpoint it approaches, tolerance at 120 steps, minimum error ratio from 30 to 120 steps)
ODE_SAMPLERS = {
    "sample_euler": ("denoised", 2e-2, 3),  # first order
    "sample_heun": ("denoised", 1e-3, 10),  # second order
    "sample_dpm_2": ("denoised", 1e-3, 10),
    "sample_dpmpp_2m": ("denoised", 1e-3, 10),
    "sample_lms": ("ode", 1e-4, 50),  # fourth order, integrates on to sigma = 0
}


@pytest.mark.parametrize("name", list(ODE_SAMPLERS))
def test_deterministic_samplers_solve_the_probability_flow_ode(data, name):
    """The ODE's exact solution is x(sigma) = mu + (x_T - mu) * sqrt(S^2 + sigma^2) / sqrt(S^2 + sigma_max^2).

    All but LMS end with a plain denoising step from sigma_min, i.e. at D(x(sigma_min), sigma_min); LMS integrates
    on to sigma = 0. The error must shrink at the sampler's order as the steps grow."""
    x0, mu, _ = data
    target, tol, ratio = ODE_SAMPLERS[name]
    errors = []
    for steps in (30, 120):
        sig = karras_np(steps)
        xT = x0 * sig[0]
        out = getattr(ks, name)(D_of(mu), xT, torch.tensor(sig, dtype=torch.float64))
        s_min, s_max = sig[-2], sig[0]
        if target == "ode":
            exact = mu + (xT - mu) * S / math.sqrt(S**2 + s_max**2)
        else:
            exact = mu + (xT - mu) * S**2 / (math.sqrt(S**2 + s_min**2) * math.sqrt(S**2 + s_max**2))
        assert (out - mu).abs().max() < 4 * S  # near mu on the data's scale
        errors.append((out - exact).abs().max().item())
    assert errors[1] < tol
    assert errors[0] / errors[1] > ratio


@pytest.mark.filterwarnings("ignore:Should have")  # torchsde rounds the tree's ends to 1e-6, as in A1111
@pytest.mark.parametrize("name", ["sample_euler_ancestral", "sample_dpm_2_ancestral", "sample_dpmpp_2s_ancestral",
                                  "sample_dpmpp_sde", "sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde"])
def test_stochastic_samplers_reach_the_data_distribution(name):
    """With many steps the samples' mean and spread approach N(mu, S^2) (the last step denoises from sigma_min,
    which shrinks the spread by S / sqrt(S^2 + sigma_min^2), about 0.5 %)."""
    g = torch.Generator().manual_seed(7)
    mu = 0.7
    shape = (2, 4, 64, 64)
    sig = torch.tensor(karras_np(200), dtype=torch.float64)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * sig[0]
    if name == "sample_dpmpp_sde":  # its two draws per step overlap in time: it needs Brownian increments
        noise = ks.BrownianTreeNoiseSampler(x, sig[-2], sig[0], seed=[1, 2])
    else:
        noise = lambda a, b: torch.randn(shape, generator=g, dtype=torch.float64)  # noqa: E731
    out = getattr(ks, name)(D_of(torch.tensor(mu, dtype=torch.float64)), x, sig, noise_sampler=noise)
    assert abs(out.mean().item() - mu) < 0.005
    assert abs(out.std().item() - S) < 0.01


def test_default_noise_is_randn_like(data):
    x0, mu, _ = data
    sig = torch.tensor(karras_np(4), dtype=torch.float64)
    torch.manual_seed(3)
    a = ks.sample_euler_ancestral(D_of(mu), x0 * sig[0], sig)
    torch.manual_seed(3)
    b = ks.sample_euler_ancestral(D_of(mu), x0 * sig[0], sig, noise_sampler=lambda s, sn: torch.randn_like(x0))
    assert torch.equal(a, b)


def test_ancestral_step_matches_formula():
    down, up = ks.get_ancestral_step(torch.tensor(2.0), torch.tensor(1.0), eta=1.0)
    assert up.item() == pytest.approx(math.sqrt(1 * (4 - 1) / 4))
    assert down.item() == pytest.approx(math.sqrt(1 - 0.75))
    assert ks.get_ancestral_step(2.0, 1.0, eta=0) == (1.0, 0.0)


# ---------------------------------------------------------------------------------------------------------------------
# Brownian tree noise
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Should have")
def test_brownian_tree_is_seeded_per_image_and_batch_independent():
    pytest.importorskip("torchsde")
    sig = torch.tensor(karras_np(10), dtype=torch.float32)
    x = torch.zeros(2, 4, 8, 8)
    smin, smax = sig[sig > 0].min(), sig.max()
    both = ks.BrownianTreeNoiseSampler(x, smin, smax, seed=[11, 22])
    only_second = ks.BrownianTreeNoiseSampler(x[1:], smin, smax, seed=[22])
    again = ks.BrownianTreeNoiseSampler(x, smin, smax, seed=[11, 22])
    draws = []
    for i in range(len(sig) - 2):
        a = both(sig[i], sig[i + 1])
        assert torch.equal(a, again(sig[i], sig[i + 1]))
        assert torch.equal(a[1:], only_second(sig[i], sig[i + 1]))
        draws.append(a)
    z = torch.stack(draws)
    assert abs(z.mean().item()) < 0.1 and abs(z.std().item() - 1) < 0.1  # standard normal increments
    assert not torch.equal(draws[0][0], draws[0][1])


def test_brownian_tree_matches_torchsde_tree_directly():
    torchsde = pytest.importorskip("torchsde")
    x = torch.zeros(1, 4, 8, 8)
    ns = ks.BrownianTreeNoiseSampler(x, 0.03, 14.6, seed=[5])
    tree = torchsde.BrownianTree(torch.as_tensor(0.03), torch.zeros(4, 8, 8), torch.as_tensor(14.6), entropy=5)
    w = tree(torch.as_tensor(1.0), torch.as_tensor(2.0)) * -1  # queried downwards: sign flips
    torch.testing.assert_close(ns(torch.as_tensor(2.0), torch.as_tensor(1.0))[0], w / 1.0, rtol=0, atol=0)


def _philox_like(seed, shape):
    """A stand-in for A1111's "NV" source: a generator that is not torchsde's, returning float64 (cast by the tree)."""
    g = torch.Generator().manual_seed((int(seed) * 2654435761 + 12345) % 2**63)
    return torch.randn(shape, generator=g, dtype=torch.float64)


def test_brownian_tree_custom_randn_is_used_and_torchsde_restored():
    pytest.importorskip("torchsde")
    from torchsde._brownian import brownian_interval

    original = brownian_interval._randn
    calls = []

    def randn(seed, shape):
        calls.append(seed)
        return torch.randn(shape, generator=torch.Generator().manual_seed(seed))

    x = torch.zeros(1, 4, 8, 8)
    ns = ks.BrownianTreeNoiseSampler(x, 0.03, 14.6, seed=[5], randn=randn)
    ns(torch.as_tensor(2.0), torch.as_tensor(1.0))
    assert calls and brownian_interval._randn is original
    # the CPU generator on a CPU tree is exactly torchsde's own
    plain = ks.BrownianTreeNoiseSampler(x, 0.03, 14.6, seed=[5])
    a, b = torch.as_tensor(5.0), torch.as_tensor(3.0)
    assert torch.equal(ns(a, b), plain(a, b))


@pytest.mark.filterwarnings("ignore:Should have")
@pytest.mark.parametrize("name", ["sample_dpmpp_sde", "sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde"])
def test_brownian_tree_custom_randn_patches_nothing(name):
    """House rule 3: torchsde's module function stays in place at every moment of sampling, draws included."""
    pytest.importorskip("torchsde")
    import torchsde
    from torchsde._brownian import brownian_interval

    original = brownian_interval._randn
    seen = {"draws": 0, "model": 0}

    def randn(seed, shape):
        assert brownian_interval._randn is original and torchsde.BrownianTree.__init__ is tree_init
        seen["draws"] += 1
        return _philox_like(seed, shape)

    def model(x, sigma):
        assert brownian_interval._randn is original
        seen["model"] += 1
        return D_of(0.1)(x, sigma)

    tree_init = torchsde.BrownianTree.__init__
    sig = torch.tensor(karras_np(8), dtype=torch.float32)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * sig[0]
    ns = ks.BrownianTreeNoiseSampler(x, sig[sig > 0].min(), sig.max(), seed=[3, 4], randn=randn)
    getattr(ks, name)(model, x, sig, noise_sampler=ns)
    assert seen["draws"] > 10 and seen["model"] >= 7
    assert brownian_interval._randn is original


@pytest.mark.filterwarnings("ignore:Should have")
@pytest.mark.parametrize("seeds", [[0], [4294967295], [7, 2**31 + 5]])
@pytest.mark.parametrize("shape", [(4, 8, 8), (3, 5, 7)])
def test_brownian_tree_custom_randn_equals_a1111s_replacement(monkeypatch, seeds, shape):
    """Bit for bit what A1111 gets by replacing torchsde's ``_randn`` (replace_torchsde_browinan) and using
    k-diffusion's BatchedBrownianTree of plain torchsde.BrownianTree objects: the replacement is made here, in the
    test, with monkeypatch (the reference), never by pipelines/."""
    torchsde = pytest.importorskip("torchsde")
    from torchsde._brownian import brownian_interval

    sig = torch.tensor(karras_np(12), dtype=torch.float32)
    smin, smax = sig[sig > 0].min(), sig.max()
    x = torch.zeros(len(seeds), *shape)
    ours = ks.BrownianTreeNoiseSampler(x, smin, smax, seed=seeds, randn=_philox_like)
    queries = [(sig[i], sig[i + 1]) for i in range(len(sig) - 2)]
    queries += [(sig[1], sig[4]), (smin, smax), (torch.tensor(2.0), torch.tensor(1.0))]
    got = [ours(a, b) for a, b in queries]

    monkeypatch.setattr(brownian_interval, "_randn",
                        lambda size, dtype, device, seed: _philox_like(int(seed), tuple(size)).to(device, dtype))
    trees = [torchsde.BrownianTree(smin, torch.zeros(shape), smax, entropy=s) for s in seeds]
    for (a, b), w in zip(queries, got):
        lo, hi, sign = (a, b, 1) if a < b else (b, a, -1)
        ref = torch.stack([tree(lo, hi) for tree in trees]) * sign / (b - a).abs().sqrt()
        assert torch.equal(w, ref)


# ---------------------------------------------------------------------------------------------------------------------
# timestep samplers
# ---------------------------------------------------------------------------------------------------------------------


def _sd_alphas_cumprod():
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


AC = _sd_alphas_cumprod()


def _abar(t):
    """alpha_bar at a (possibly fractional) timestep, linearly interpolated, float64."""
    t = torch.as_tensor(t, dtype=torch.float64).clamp(0, 999)
    lo = t.floor().long()
    hi = (lo + 1).clamp(max=999)
    w = t - lo
    a = AC.double()
    return a[lo] * (1 - w) + a[hi] * w


def eps_model_of(mu, mu_uncond=None):
    """eps of the analytic denoiser on the DDPM scale: x_t = sqrt(a) x0 + sqrt(1 - a) eps."""

    def eps_at(x, t, m):
        a = _abar(t).reshape(-1, 1, 1, 1)
        z = x / a.sqrt()
        s2 = (1 - a) / a
        return (z - (S**2 * z + s2 * m) / (S**2 + s2)) / s2.sqrt()

    class Model:
        def __init__(self):
            self.last_noise_uncond = None
            self.calls = []

        def __call__(self, x, t, **_):
            self.calls.append(t.clone())
            if mu_uncond is not None:
                self.last_noise_uncond = eps_at(x, t, mu_uncond)
            return eps_at(x, t, mu)

    return Model()


def test_timesteps_for_is_a1111s_grid():
    assert ts.timesteps_for(20).tolist() == [1 + 50 * i for i in range(20)]
    assert len(ts.timesteps_for(30)) == 31 and ts.timesteps_for(30)[-1].item() == 991
    assert ts.timesteps_for(1).tolist() == [1]
    assert ts.timesteps_for(1000)[-1].item() == 999  # clipped
    # the option only adds a step (A1111 CompVisSampler.get_timesteps): 1000 // 21 = 47 -> 22 timesteps
    assert torch.equal(ts.timesteps_for(20, discard_next_to_last_sigma=True), ts.timesteps_for(21))
    assert len(ts.timesteps_for(21)) == 22


def ref_ddim(model, x, tsteps, noise, eta=0.0, uncond=False):
    t = [int(v) for v in tsteps]
    a = [float(AC[v]) for v in t]
    a_prev = [float(AC[0])] + a[:-1]
    xs = []
    for index in range(len(t) - 1, 0, -1):
        at, ap = a[index], a_prev[index]
        sig = eta * math.sqrt((1 - ap) / (1 - at) * (1 - at / ap))
        e = model(x, torch.full((x.shape[0],), float(t[index]), dtype=torch.float64))
        d = model.last_noise_uncond if uncond else e
        x0 = (x - math.sqrt(1 - at) * e) / math.sqrt(at)
        x = math.sqrt(ap) * x0 + math.sqrt(1 - ap - sig**2) * d + sig * noise.pop(0)
        xs.append(x)
    return x, xs


def ref_plms(model, x, tsteps):
    t = [int(v) for v in tsteps]
    a = [float(AC[v]) for v in t]
    a_prev = [float(AC[0])] + a[:-1]
    old, xs = [], []

    def step(x, e, index):
        x0 = (x - math.sqrt(1 - a[index]) * e) / math.sqrt(a[index])
        return math.sqrt(a_prev[index]) * x0 + math.sqrt(1 - a_prev[index]) * e

    tb = lambda v: torch.full((x.shape[0],), float(v), dtype=torch.float64)  # noqa: E731
    for index in range(len(t) - 1, 0, -1):
        e = model(x, tb(t[index]))
        if not old:
            e_next = model(step(x, e, index), tb(t[index - 1]))
            ep = (e + e_next) / 2
        elif len(old) == 1:
            ep = (3 * e - old[-1]) / 2
        elif len(old) == 2:
            ep = (23 * e - 16 * old[-1] + 5 * old[-2]) / 12
        else:
            ep = (55 * e - 59 * old[-1] + 37 * old[-2] - 9 * old[-3]) / 24
        x = step(x, ep, index)
        old = (old + [e])[-3:]
        xs.append(x)
    return x, xs


@pytest.mark.parametrize("steps", [1, 2, 7, 20, 30])
@pytest.mark.parametrize("eta", [0.0, 0.5])
@pytest.mark.parametrize("cfgpp", [False, True])
def test_ddim_matches_reference(data, steps, eta, cfgpp):
    x0, mu, noise = data
    tsteps = ts.timesteps_for(steps)
    ref_noise = list(noise)
    ref_x, ref_xs = ref_ddim(eps_model_of(mu, mu * 0.2), x0, tsteps, ref_noise, eta, uncond=cfgpp)
    model, fixed, xs = eps_model_of(mu, mu * 0.2), FixedNoise(noise), []
    fn = ts.ddim_cfgpp if cfgpp else ts.ddim
    out = fn(model, x0, tsteps, eta=eta, alphas_cumprod=AC, noise_sampler=fixed, callback=lambda d: xs.append(d["x"]))
    assert fixed.n == len(noise) - len(ref_noise) == len(tsteps) - 1  # drawn every step, even at eta 0
    if cfgpp:
        assert model.cond_scale_multiplier == 1 / 12.5 and model.need_last_noise_uncond
    assert len(xs) == len(ref_xs)
    for i, (a, b) in enumerate(zip(xs, ref_xs)):
        _assert_close(a, b, f"ddim step {i}", rtol=1e-6, atol=1e-6)
    _assert_close(out, ref_x, "ddim final", rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("steps", [2, 3, 5, 20, 30])
def test_plms_matches_reference(data, steps):
    x0, mu, _ = data
    tsteps = ts.timesteps_for(steps)
    ref_x, ref_xs = ref_plms(eps_model_of(mu), x0, tsteps)
    xs = []
    out = ts.plms(eps_model_of(mu), x0, tsteps, alphas_cumprod=AC, callback=lambda d: xs.append(d["x"]))
    for i, (a, b) in enumerate(zip(xs, ref_xs)):
        _assert_close(a, b, f"plms step {i}", rtol=1e-6, atol=1e-6)
    _assert_close(out, ref_x, "plms final", rtol=1e-6, atol=1e-6)


def ref_unipc(model, x, steps, order=3, lower_order_final=True, variant="bh1"):
    """UniPC-p / UniPC-c multistep with B(h) = h (bh1) or e^h - 1 (bh2), data prediction, time-uniform grid."""
    N = 1000
    t_arr = np.arange(1, N + 1) / N
    log_a = 0.5 * np.log(AC.double().numpy())
    la = lambda t: float(np.interp(t, t_arr, log_a))  # noqa: E731
    alpha = lambda t: math.exp(la(t))  # noqa: E731
    sig = lambda t: math.sqrt(1 - math.exp(2 * la(t)))  # noqa: E731
    lam = lambda t: la(t) - math.log(sig(t))  # noqa: E731
    grid = [float(v) for v in np.linspace(1.0, 1.0 / N, steps + 1)]

    def x0_of(x, t):
        e = model(x, torch.full((x.shape[0],), (t - 1 / N) * 1000, dtype=torch.float64))
        return (x - sig(t) * e) / alpha(t)

    def update(x, ms, tl, t, k, corrector):
        t0, m0 = tl[-1], ms[-1]
        h = lam(t) - lam(t0)
        rks = [(lam(tl[-(i + 1)]) - lam(t0)) / h for i in range(1, k)]
        D1s = [(ms[-(i + 1)] - m0) / rks[i - 1] for i in range(1, k)]
        rks = np.array(rks + [1.0])
        hh = -h
        B = hh if variant == "bh1" else math.expm1(hh)
        phi, fact, R, b = math.expm1(hh) / hh - 1, 1, [], []
        for i in range(1, k + 1):
            R.append(rks ** (i - 1))
            b.append(phi * fact / B)
            fact *= i + 1
            phi = phi / hh - 1 / fact
        R, b = np.array(R), np.array(b)
        base = sig(t) / sig(t0) * x - alpha(t) * math.expm1(hh) * m0
        pred = 0
        if D1s:
            rp = [0.5] if k == 2 else np.linalg.solve(R[:-1, :-1], b[:-1])
            pred = sum(float(r) * d for r, d in zip(rp, D1s))
        xt = base - alpha(t) * B * pred
        mt = None
        if corrector:
            mt = x0_of(xt, t)
            rc = [0.5] if k == 1 else np.linalg.solve(R, b)
            corr = sum(float(r) * d for r, d in zip(rc[:-1], D1s))
            xt = base - alpha(t) * B * (corr + float(rc[-1]) * (mt - m0))
        return xt, mt

    ms, tl, xs = [x0_of(x, grid[0])], [grid[0]], []
    for k in range(1, order):
        x, m = update(x, ms, tl, grid[k], k, True)
        xs.append(x)
        ms.append(m)
        tl.append(grid[k])
    for step in range(order, steps + 1):
        k = min(order, steps + 1 - step) if lower_order_final else order
        x, m = update(x, ms, tl, grid[step], k, step != steps)
        xs.append(x)
        ms, tl = ms[1:] + [None], tl[1:] + [grid[step]]
        if step < steps:
            ms[-1] = m if m is not None else x0_of(x, grid[step])
    return x, xs


@pytest.mark.parametrize("steps", [3, 5, 10, 20, 30])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_matches_reference(data, steps, variant):
    x0, mu, _ = data
    tsteps = ts.timesteps_for(steps)
    ref_x, ref_xs = ref_unipc(eps_model_of(mu), x0, len(tsteps), variant=variant)
    xs = []
    out = ts.unipc(eps_model_of(mu), x0, tsteps, alphas_cumprod=AC, variant=variant,
                   callback=lambda d: xs.append(d["x"]))
    assert len(xs) == len(ref_xs) == len(tsteps)
    # A1111's UniPC keeps its schedule (t grid, log alpha, lambda, coefficients) in float32; the reference in float64
    for i, (a, b) in enumerate(zip(xs, ref_xs)):
        _assert_close(a, b, f"unipc step {i}", rtol=2e-4, atol=2e-4)
    _assert_close(out, ref_x, "unipc final", rtol=2e-4, atol=2e-4)


def test_unipc_calls_the_model_with_a1111s_fractional_timesteps(data):
    x0, mu, _ = data
    model = eps_model_of(mu)
    ts.unipc(model, x0, ts.timesteps_for(10), alphas_cumprod=AC)
    first = [c[0].item() for c in model.calls[:3]]
    assert first[0] == pytest.approx(999.0)
    assert first[1] == pytest.approx((1.0 + (0.001 - 1.0) / 10 - 0.001) * 1000, rel=1e-5)


def test_unipc_needs_more_steps_than_its_order(data):
    x0, mu, _ = data
    with pytest.raises(ValueError, match="order"):
        ts.unipc(eps_model_of(mu), x0, ts.timesteps_for(2), alphas_cumprod=AC)


@pytest.mark.parametrize("name", ["ddim", "plms", "unipc"])
def test_timestep_samplers_converge_to_the_ode_solution(data, name):
    """On z = x / sqrt(alpha_bar) the ODE solution is z(sigma) = mu + (z_T - mu) * sqrt(S^2 + sigma^2) / sqrt(S^2 +
    sigma_T^2), sigma^2 = (1 - alpha_bar) / alpha_bar. DDIM and PLMS run from timesteps[-1] down to alpha_bar at
    timesteps[0] = 1 (A1111 never steps from index 0); UniPC from t = 1 (timestep 999) to t = 1/1000 (timestep 0).
    (Time-uniform UniPC converges slowly here: its last step spans a large log-SNR range.)"""
    x0, mu, _ = data
    errors = []
    for steps in (50, 200):
        tsteps = ts.timesteps_for(steps)
        out = getattr(ts, name)(eps_model_of(mu), x0, tsteps, alphas_cumprod=AC)
        a_start, a_end = (float(AC[999]), float(AC[0])) if name == "unipc" else (float(AC[tsteps[-1]]), float(AC[1]))
        sig2 = lambda a: (1 - a) / a  # noqa: E731
        z = mu + (x0 / math.sqrt(a_start) - mu) * math.sqrt(S**2 + sig2(a_end)) / math.sqrt(S**2 + sig2(a_start))
        assert (out - mu).abs().max() < 4 * S
        errors.append((out - math.sqrt(a_end) * z).abs().max().item())
    assert errors[1] < 0.025
    assert errors[0] / errors[1] > 3
