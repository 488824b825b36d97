"""A1111's timestep samplers: DDIM, DDIM CFG++, PLMS and UniPC (sd_samplers_timesteps_impl.py, v1.10.1).

These work on the model's discrete timesteps, not on sigmas, and ignore the schedule type::

    ddim(model, x, timesteps, extra_args=None, callback=None, disable=None, eta=0.0, *,
         alphas_cumprod, noise_sampler=None)

``model(x, t_batch, **extra_args)`` returns the noise prediction eps (CFG applied by the caller; for v-prediction
models the caller converts v to eps first, as A1111's CompVisTimestepsVDenoiser does). ``alphas_cumprod`` is the
model's 1000-entry cumulative product of alphas, on any device. ``timesteps`` is what ``timesteps_for(steps)`` gives
(A1111's ``CompVisSampler.get_timesteps``); img2img slices it, which is later work.

A1111 quirks kept on purpose: with ``steps`` dividing 1000 the loop runs ``len(timesteps) - 1`` model steps (index 0,
t=1, is never denoised from; the last step lands on alpha_bar[1]); with other step counts ``timesteps`` has one entry
more than ``steps`` (e.g. 31 for 30). UniPC runs ``len(timesteps)`` steps on its own continuous time grid and calls
the model with fractional timesteps.
"""

from __future__ import annotations


import numpy as np
import torch

__all__ = ["timesteps_for", "ddim", "ddim_cfgpp", "plms", "unipc", "NoiseScheduleVP", "UniPC"]

#: A1111's CFG++ scale mapping: the CFG scale is multiplied by this (so 12.5 -> 1.0).
CFGPP_SCALE_MULTIPLIER = 1 / 12.5


def timesteps_for(steps: int, discard_next_to_last_sigma: bool = False) -> torch.Tensor:
    """Reproduces A1111 CompVisSampler.get_timesteps: ``clip(range(0, 1000, 1000 // steps) + 1, 0, 999)``.

    ``discard_next_to_last_sigma`` (option ``always_discard_next_to_last_sigma``) only adds one step here, as in A1111.
    """
    if discard_next_to_last_sigma:
        steps += 1
    return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)


def _float64_for(x: torch.Tensor) -> torch.dtype:
    """Reproduces A1111 modules.torch_utils.float64: float64, except float32 on devices without it (mps, xpu)."""
    return torch.float32 if x.device.type in ("mps", "xpu") else torch.float64


def _ddim_tables(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, x: torch.Tensor, eta: float):
    """alpha_bar at each timestep, at the previous one (index 0 pads with timestep 0), sqrt(1 - alpha_bar), and the
    DDIM noise scale eta * sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev)) computed in float64 as A1111's numpy code."""
    ts = timesteps.to(alphas_cumprod.device)
    alphas = alphas_cumprod[ts]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(ts[:-1], pad=(1, 0))].to(_float64_for(x))
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    a_prev64 = alphas_prev.cpu().to(torch.float64)
    a = alphas.cpu()
    # A1111 mixes numpy float64 and torch: ndarray / tensor runs as tensor.reciprocal() * ndarray, so 1 / (1 - a) is
    # taken in alpha_bar's own dtype (float32) and only then promoted to float64; the square root is numpy's
    # (it can differ from torch's float64 sqrt in the last bit)
    inner = (1 - a).reciprocal().to(torch.float64) * (1 - a_prev64) * (1 - a.to(torch.float64) / a_prev64)
    sigmas = eta * torch.from_numpy(np.sqrt(inner.numpy()))
    return alphas, alphas_prev, sqrt_one_minus_alphas, sigmas


def _default_noise(noise_sampler, x):
    return (lambda a, b: torch.randn_like(x)) if noise_sampler is None else noise_sampler


def _ddim_loop(model, x, timesteps, extra_args, callback, eta, alphas_cumprod, noise_sampler, use_uncond):
    alphas, alphas_prev, sqrt_one_minus_alphas, sigmas = _ddim_tables(alphas_cumprod, timesteps, x, eta)
    noise_sampler = _default_noise(noise_sampler, x)
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones((x.shape[0]))
    s_x = x.new_ones((x.shape[0], 1, 1, 1))
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i

        e_t = model(x, timesteps[index].item() * s_in, **extra_args)
        direction = model.last_noise_uncond if use_uncond else e_t

        a_t = alphas[index].item() * s_x
        a_prev = alphas_prev[index].item() * s_x
        sigma_t = sigmas[index].item() * s_x
        sqrt_one_minus_at = sqrt_one_minus_alphas[index].item() * s_x

        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        dir_xt = (1.0 - a_prev - sigma_t**2).sqrt() * direction
        noise = sigma_t * noise_sampler(timesteps[index], timesteps[index - 1])
        x = a_prev.sqrt() * pred_x0 + dir_xt + noise

        if callback is not None:
            callback({"x": x, "i": i, "sigma": 0, "sigma_hat": 0, "denoised": pred_x0})
    return x


@torch.no_grad()
def ddim(model, x, timesteps, extra_args=None, callback=None, disable=None, eta=0.0, *, alphas_cumprod,
         noise_sampler=None):
    """Reproduces A1111 sd_samplers_timesteps_impl.ddim (DDIM, Song et al. 2020; eta from option ``eta_ddim``).

    The noise term is drawn on every step even at eta 0, as A1111 does (it advances the per-image RNG).
    """
    return _ddim_loop(model, x, timesteps, extra_args, callback, eta, alphas_cumprod, noise_sampler, False)


@torch.no_grad()
def ddim_cfgpp(model, x, timesteps, extra_args=None, callback=None, disable=None, eta=0.0, *, alphas_cumprod,
               noise_sampler=None):
    """Reproduces A1111 sd_samplers_timesteps_impl.ddim_cfgpp (CFG++, Chung et al. 2024).

    The step direction uses the *unconditional* eps. As A1111 does with its CFG denoiser, this sets on ``model``
    ``cond_scale_multiplier = 1 / 12.5`` (the caller must multiply its CFG scale by it) and
    ``need_last_noise_uncond = True``, and after each call reads ``model.last_noise_uncond`` (the caller's model
    callable must store the unconditional eps of the batch there).
    """
    model.cond_scale_multiplier = CFGPP_SCALE_MULTIPLIER
    model.need_last_noise_uncond = True
    return _ddim_loop(model, x, timesteps, extra_args, callback, eta, alphas_cumprod, noise_sampler, True)


@torch.no_grad()
def plms(model, x, timesteps, extra_args=None, callback=None, disable=None, *, alphas_cumprod):
    """Reproduces A1111 sd_samplers_timesteps_impl.plms (pseudo linear multistep, Liu et al. 2022).

    The first step is a pseudo improved Euler step (two model calls), then Adams-Bashforth of order 2, 3, 4.
    """
    ts_dev = timesteps.to(alphas_cumprod.device)
    alphas = alphas_cumprod[ts_dev]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(ts_dev[:-1], pad=(1, 0))].to(_float64_for(x))
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)

    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    s_x = x.new_ones((x.shape[0], 1, 1, 1))
    old_eps = []

    def step(x, e_t, index):
        a_t = alphas[index].item() * s_x
        a_prev = alphas_prev[index].item() * s_x
        sqrt_one_minus_at = sqrt_one_minus_alphas[index].item() * s_x
        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        dir_xt = (1.0 - a_prev).sqrt() * e_t
        x_prev = a_prev.sqrt() * pred_x0 + dir_xt
        return x_prev, pred_x0

    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        ts = timesteps[index].item() * s_in
        t_next = timesteps[max(index - 1, 0)].item() * s_in

        e_t = model(x, ts, **extra_args)

        if len(old_eps) == 0:
            x_prev, pred_x0 = step(x, e_t, index)
            e_t_next = model(x_prev, t_next, **extra_args)
            e_t_prime = (e_t + e_t_next) / 2
        elif len(old_eps) == 1:
            e_t_prime = (3 * e_t - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            e_t_prime = (23 * e_t - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            e_t_prime = (55 * e_t - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24

        x_prev, pred_x0 = step(x, e_t_prime, index)

        old_eps.append(e_t)
        if len(old_eps) >= 4:
            old_eps.pop(0)

        x = x_prev

        if callback is not None:
            callback({"x": x, "i": i, "sigma": 0, "sigma_hat": 0, "denoised": pred_x0})
    return x


# --------------------------------------------------------------------------------------------------------------------
# UniPC (Zhao et al. 2023), as A1111's modules/models/diffusion/uni_pc/uni_pc.py runs it: discrete VP schedule,
# data prediction (predict_x0), no thresholding, multistep.
# --------------------------------------------------------------------------------------------------------------------


def _interpolate(x: torch.Tensor, xp: torch.Tensor, yp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear f(x) through (xp, yp), extended linearly beyond the ends.

    Same segment choice as uni_pc.interpolate_fn (x: [N, 1], xp/yp: [1, K], xp increasing): the segment ending at the
    first keypoint >= x, clamped to the first/last segment; value start_y + (x - start_x) * dy / dx.
    """
    k = xp.shape[1]
    idx = torch.searchsorted(xp[0].contiguous(), x[:, 0].contiguous(), right=False)
    idx = idx.clamp(1, k - 1)
    start_x, end_x = xp[0, idx - 1], xp[0, idx]
    start_y, end_y = yp[0, idx - 1], yp[0, idx]
    out = start_y + (x[:, 0] - start_x) * (end_y - start_y) / (end_x - start_x)
    return out[:, None]


def _expand(v: torch.Tensor, dims: int) -> torch.Tensor:
    return v[(...,) + (None,) * (dims - 1)]


class NoiseScheduleVP:
    """Reproduces uni_pc.NoiseScheduleVP('discrete', alphas_cumprod=...): t_i = (i + 1) / N, log alpha interpolated."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        log_alphas = 0.5 * torch.log(alphas_cumprod)
        self.total_N = len(log_alphas)
        self.T = 1.0
        self.t_array = torch.linspace(0.0, 1.0, self.total_N + 1)[1:].reshape((1, -1))
        self.log_alpha_array = log_alphas.reshape((1, -1))

    def marginal_log_mean_coeff(self, t):
        return _interpolate(t.reshape((-1, 1)), self.t_array.to(t.device),
                            self.log_alpha_array.to(t.device)).reshape((-1))

    def marginal_alpha(self, t):
        return torch.exp(self.marginal_log_mean_coeff(t))

    def marginal_std(self, t):
        return torch.sqrt(1.0 - torch.exp(2.0 * self.marginal_log_mean_coeff(t)))

    def marginal_lambda(self, t):
        log_mean_coeff = self.marginal_log_mean_coeff(t)
        log_std = 0.5 * torch.log(1.0 - torch.exp(2.0 * log_mean_coeff))
        return log_mean_coeff - log_std

    def inverse_lambda(self, lamb):
        log_alpha = -0.5 * torch.logaddexp(torch.zeros((1,)).to(lamb.device), -2.0 * lamb)
        t = _interpolate(log_alpha.reshape((-1, 1)), torch.flip(self.log_alpha_array.to(lamb.device), [1]),
                         torch.flip(self.t_array.to(lamb.device), [1]))
        return t.reshape((-1,))


class UniPC:
    """Reproduces A1111's UniPC / UniPCCFG (multistep, data prediction, variants bh1, bh2, vary_coeff).

    ``eps_model(x, t_input, **extra_args)`` is called with t_input = (t - 1/N) * 1000 (continuous, fractional).
    """

    def __init__(self, eps_model, noise_schedule: NoiseScheduleVP, extra_args=None, variant="bh1", callback=None):
        if variant not in ("bh1", "bh2", "vary_coeff"):
            raise ValueError(f"unknown UniPC variant {variant!r}; choose bh1, bh2 or vary_coeff")
        self.eps_model = eps_model
        self.noise_schedule = noise_schedule
        self.extra_args = {} if extra_args is None else extra_args
        self.variant = variant
        self.predict_x0 = True
        self.callback = callback
        self.index = 0

    def after_update(self, x, model_x):
        if self.callback is not None:
            self.callback({"x": x, "i": self.index, "sigma": 0, "sigma_hat": 0, "denoised": model_x})
        self.index += 1

    def model_fn(self, x, t):
        """Data prediction x0 = (x - sigma_t * eps) / alpha_t (uni_pc.UniPC.data_prediction_fn, no thresholding)."""
        t_input = (t - 1.0 / self.noise_schedule.total_N) * 1000.0
        noise = self.eps_model(x, t_input, **self.extra_args)
        dims = x.dim()
        alpha_t, sigma_t = self.noise_schedule.marginal_alpha(t), self.noise_schedule.marginal_std(t)
        return (x - _expand(sigma_t, dims) * noise) / _expand(alpha_t, dims)

    def get_time_steps(self, skip_type, t_T, t_0, N, device):
        if skip_type == "logSNR":
            lambda_T = self.noise_schedule.marginal_lambda(torch.tensor(t_T).to(device))
            lambda_0 = self.noise_schedule.marginal_lambda(torch.tensor(t_0).to(device))
            logsnr_steps = torch.linspace(lambda_T.cpu().item(), lambda_0.cpu().item(), N + 1).to(device)
            return self.noise_schedule.inverse_lambda(logsnr_steps)
        if skip_type == "time_uniform":
            return torch.linspace(t_T, t_0, N + 1).to(device)
        if skip_type == "time_quadratic":
            t_order = 2
            return torch.linspace(t_T ** (1.0 / t_order), t_0 ** (1.0 / t_order), N + 1).pow(t_order).to(device)
        raise ValueError(f"Unsupported skip_type {skip_type}; choose logSNR, time_uniform or time_quadratic")

    def update(self, x, model_prev_list, t_prev_list, t, order, use_corrector=True):
        if len(t.shape) == 0:
            t = t.view(-1)
        if "bh" in self.variant:
            return self._bh_update(x, model_prev_list, t_prev_list, t, order, use_corrector=use_corrector)
        return self._vary_update(x, model_prev_list, t_prev_list, t, order, use_corrector=use_corrector)

    def _vary_update(self, x, model_prev_list, t_prev_list, t, order, use_corrector=True):
        ns = self.noise_schedule
        assert order <= len(model_prev_list)
        t_prev_0 = t_prev_list[-1]
        lambda_prev_0 = ns.marginal_lambda(t_prev_0)
        lambda_t = ns.marginal_lambda(t)
        model_prev_0 = model_prev_list[-1]
        sigma_prev_0, sigma_t = ns.marginal_std(t_prev_0), ns.marginal_std(t)
        alpha_t = torch.exp(ns.marginal_log_mean_coeff(t))
        h = lambda_t - lambda_prev_0

        rks = []
        D1s = []
        for i in range(1, order):
            t_prev_i = t_prev_list[-(i + 1)]
            model_prev_i = model_prev_list[-(i + 1)]
            lambda_prev_i = ns.marginal_lambda(t_prev_i)
            rk = (lambda_prev_i - lambda_prev_0) / h
            rks.append(rk)
            D1s.append((model_prev_i - model_prev_0) / rk)
        rks.append(1.0)
        rks = torch.tensor(rks, device=x.device)

        K = len(rks)
        C = []
        col = torch.ones_like(rks)
        for k in range(1, K + 1):
            C.append(col)
            col = col * rks / (k + 1)
        C = torch.stack(C, dim=1)

        if len(D1s) > 0:
            D1s = torch.stack(D1s, dim=1)
            A_p = torch.linalg.inv(C[:-1, :-1])
        if use_corrector:
            A_c = torch.linalg.inv(C)

        hh = -h
        h_phi_1 = torch.expm1(hh)
        h_phi_ks = []
        factorial_k = 1
        h_phi_k = h_phi_1
        for k in range(1, K + 2):
            h_phi_ks.append(h_phi_k)
            h_phi_k = h_phi_k / hh - 1 / factorial_k
            factorial_k *= k + 1

        model_t = None
        x_t_ = sigma_t / sigma_prev_0 * x - alpha_t * h_phi_1 * model_prev_0
        x_t = x_t_
        if len(D1s) > 0:
            for k in range(K - 1):
                x_t = x_t - alpha_t * h_phi_ks[k + 1] * torch.einsum("bkchw,k->bchw", D1s, A_p[k].to(D1s.dtype))
        if use_corrector:
            model_t = self.model_fn(x_t, t)
            D1_t = model_t - model_prev_0
            x_t = x_t_
            k = 0
            for k in range(K - 1):
                x_t = x_t - alpha_t * h_phi_ks[k + 1] * torch.einsum("bkchw,k->bchw", D1s, A_c[k][:-1].to(D1s.dtype))
            x_t = x_t - alpha_t * h_phi_ks[K] * (D1_t * A_c[k][-1])
        return x_t, model_t

    def _bh_update(self, x, model_prev_list, t_prev_list, t, order, use_corrector=True):
        ns = self.noise_schedule
        assert order <= len(model_prev_list)
        dims = x.dim()

        t_prev_0 = t_prev_list[-1]
        lambda_prev_0 = ns.marginal_lambda(t_prev_0)
        lambda_t = ns.marginal_lambda(t)
        model_prev_0 = model_prev_list[-1]
        sigma_prev_0, sigma_t = ns.marginal_std(t_prev_0), ns.marginal_std(t)
        alpha_t = torch.exp(ns.marginal_log_mean_coeff(t))
        h = lambda_t - lambda_prev_0

        rks = []
        D1s = []
        for i in range(1, order):
            t_prev_i = t_prev_list[-(i + 1)]
            model_prev_i = model_prev_list[-(i + 1)]
            lambda_prev_i = ns.marginal_lambda(t_prev_i)
            rk = ((lambda_prev_i - lambda_prev_0) / h)[0]
            rks.append(rk)
            D1s.append((model_prev_i - model_prev_0) / rk)
        rks.append(1.0)
        rks = torch.tensor(rks, device=x.device)

        R = []
        b = []
        hh = -h[0]
        h_phi_1 = torch.expm1(hh)  # h * phi_1(h) = e^h - 1
        h_phi_k = h_phi_1 / hh - 1
        factorial_i = 1
        B_h = hh if self.variant == "bh1" else torch.expm1(hh)
        for i in range(1, order + 1):
            R.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * factorial_i / B_h)
            factorial_i *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial_i
        R = torch.stack(R)
        b = torch.tensor(b, device=x.device)

        use_predictor = len(D1s) > 0
        rhos_p = None
        if len(D1s) > 0:
            D1s = torch.stack(D1s, dim=1)  # (B, K, C, H, W)
            rhos_p = torch.tensor([0.5], device=b.device) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
        else:
            D1s = None

        if use_corrector:
            rhos_c = torch.tensor([0.5], device=b.device) if order == 1 else torch.linalg.solve(R, b)

        model_t = None
        x_t_ = _expand(sigma_t / sigma_prev_0, dims) * x - _expand(alpha_t * h_phi_1, dims) * model_prev_0
        # (coefficients are float32 as in A1111; cast to the latents' dtype so float64/float16 latents work too --
        # a no-op for A1111's float32 latents)
        pred_res = torch.einsum("k,bkchw->bchw", rhos_p.to(D1s.dtype), D1s) if use_predictor else 0
        x_t = x_t_ - _expand(alpha_t * B_h, dims) * pred_res

        if use_corrector:
            model_t = self.model_fn(x_t, t)
            corr_res = torch.einsum("k,bkchw->bchw", rhos_c[:-1].to(D1s.dtype), D1s) if D1s is not None else 0
            D1_t = model_t - model_prev_0
            x_t = x_t_ - _expand(alpha_t * B_h, dims) * (corr_res + rhos_c[-1] * D1_t)
        return x_t, model_t

    def sample(self, x, steps, t_start=None, t_end=None, order=3, skip_type="time_uniform", lower_order_final=True):
        t_0 = 1.0 / self.noise_schedule.total_N if t_end is None else t_end
        t_T = self.noise_schedule.T if t_start is None else t_start
        if steps < order:
            raise ValueError(f"UniPC order ({order}) must be < sampling steps ({steps}); A1111 fails the same way")
        timesteps = self.get_time_steps(skip_type=skip_type, t_T=t_T, t_0=t_0, N=steps, device=x.device)
        assert timesteps.shape[0] - 1 == steps
        vec_t = timesteps[0].expand((x.shape[0]))
        model_prev_list = [self.model_fn(x, vec_t)]
        t_prev_list = [vec_t]
        # the first `order` values come from lower-order multistep updates
        for init_order in range(1, order):
            vec_t = timesteps[init_order].expand(x.shape[0])
            x, model_x = self.update(x, model_prev_list, t_prev_list, vec_t, init_order, use_corrector=True)
            if model_x is None:
                model_x = self.model_fn(x, vec_t)
            self.after_update(x, model_x)
            model_prev_list.append(model_x)
            t_prev_list.append(vec_t)

        for step in range(order, steps + 1):
            vec_t = timesteps[step].expand(x.shape[0])
            step_order = min(order, steps + 1 - step) if lower_order_final else order
            use_corrector = step != steps  # no corrector on the last step
            x, model_x = self.update(x, model_prev_list, t_prev_list, vec_t, step_order, use_corrector=use_corrector)
            self.after_update(x, model_x)
            for i in range(order - 1):
                t_prev_list[i] = t_prev_list[i + 1]
                model_prev_list[i] = model_prev_list[i + 1]
            t_prev_list[-1] = vec_t
            if step < steps:
                if model_x is None:
                    model_x = self.model_fn(x, vec_t)
                model_prev_list[-1] = model_x
        return x


@torch.no_grad()
def unipc(model, x, timesteps, extra_args=None, callback=None, disable=None, is_img2img=False, *, alphas_cumprod,
          variant="bh1", skip_type="time_uniform", order=3, lower_order_final=True):
    """Reproduces A1111 sd_samplers_timesteps_impl.unipc: UniPC over ``len(timesteps)`` steps.

    Options are A1111's ``uni_pc_variant`` ("bh1"), ``uni_pc_skip_type`` ("time_uniform"), ``uni_pc_order`` (3) and
    ``uni_pc_lower_order_final`` (True). For img2img A1111 starts at t = timesteps[-1] / 1000 + 1 / 1000.
    """
    with torch.no_grad():
        ns = NoiseScheduleVP(alphas_cumprod)
        t_start = timesteps[-1] / 1000 + 1 / 1000 if is_img2img else None
        sampler = UniPC(model, ns, extra_args=extra_args, variant=variant, callback=callback)
        return sampler.sample(x, steps=len(timesteps), t_start=t_start, skip_type=skip_type, order=order,
                              lower_order_final=lower_order_final)


