"""The model as A1111's samplers see it: a k-diffusion denoiser with classifier-free guidance.

A1111 wraps the LDM UNet in k-diffusion's ``CompVisDenoiser``/``CompVisVDenoiser`` (sigma -> scalings, continuous
timestep from log-sigma interpolation) and then in ``CFGDenoiser`` (cond and uncond in one batch when their token
lengths match, separately otherwise; denoised = uncond + (cond - uncond) * scale). This module reproduces that on a
diffusers UNet so our sampling is A1111's sampling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from pipelines.schedules import ModelSigmas


@dataclass
class Cond:
    """Text conditioning for a batch: cross-attention context [B, 77*k, D] and, for SDXL, the UNet's added vector."""

    context: torch.Tensor
    added: dict[str, torch.Tensor] | None = None  # {"text_embeds": [B, P], "time_ids": [B, n]} for SDXL
    # Set by the CFG denoiser on what it hands the model: image conditioning concatenated to the UNet input
    # (inpainting / instruct-pix2pix models, A1111's c_concat) and which rows are the negative prompt's.
    concat: torch.Tensor | None = None
    uncond_rows: torch.Tensor | None = None  # bool [B]

    def __len__(self) -> int:
        return self.context.shape[0]

    @staticmethod
    def cat(conds: list["Cond"]) -> "Cond":
        added = None
        if conds[0].added is not None:
            added = {k: torch.cat([c.added[k] for c in conds]) for k in conds[0].added}
        concat = torch.cat([c.concat for c in conds]) if conds[0].concat is not None else None
        rows = torch.cat([c.uncond_rows for c in conds]) if conds[0].uncond_rows is not None else None
        return Cond(torch.cat([c.context for c in conds]), added, concat, rows)

    def with_rows(self, concat: torch.Tensor | None, uncond: bool) -> "Cond":
        """This conditioning as the model sees it for one part of the CFG batch."""
        rows = torch.full((len(self),), uncond, dtype=torch.bool, device=self.context.device)
        return Cond(self.context, self.added, concat, rows)

    def padded_to(self, tokens: int) -> "Cond":
        """The context lengthened to ``tokens`` by repeating its last vector (A1111 reconstruct_multicond_batch's fix
        for prompts of different chunk counts in one batch)."""
        missing = tokens - self.context.shape[1]
        if missing <= 0:
            return self
        last = self.context[:, -1:].repeat(1, missing, 1)
        return Cond(torch.cat([self.context, last], dim=1), self.added)

    def rows(self, index: int) -> "Cond":
        """Batch row ``index`` as a batch of one."""
        added = {k: v[index : index + 1] for k, v in self.added.items()} if self.added is not None else None
        return Cond(self.context[index : index + 1], added)


class StepConds:
    """What the CFG denoiser asks for at each model call: A1111's reconstruct_multicond_batch/reconstruct_cond_batch
    result. ``at(step)`` returns ``(conds_list, cond, uncond)``: ``cond`` holds every AND-part of every image
    stacked in order, ``conds_list[i]`` lists ``(row in cond, weight)`` for image ``i``."""

    def at(self, step: int) -> tuple[list[list[tuple[int, float]]], Cond, Cond]:  # pragma: no cover - interface
        raise TypeError(f"{type(self).__name__} must define at(step)")


@dataclass
class FixedConds(StepConds):
    """One cond and one uncond for every step (no prompt editing, no AND): the plain case."""

    cond: Cond
    uncond: Cond

    def at(self, step: int):
        return [[(i, 1.0)] for i in range(len(self.cond))], self.cond, self.uncond


@dataclass
class ControlContext:
    """What a control hook (ControlNet) sees of one UNet call: the scaled UNet input, the timestep, the conditioning
    (with ``uncond_rows``), and the sampler's progress (A1111's state.sampling_step / sampling_steps)."""

    x: torch.Tensor
    t: torch.Tensor
    sigma: torch.Tensor | None
    cond: Cond
    sampling_step: int
    sampling_steps: int


@dataclass
class SamplingProgress:
    """The sampler's step counter, shared by the pipeline (which advances it) and the control hooks."""

    step: int = 0
    steps: int = 0


@dataclass
class KDenoiser:
    """k-diffusion's CompVisDenoiser (eps) / CompVisVDenoiser (v) over a diffusers UNet.

    ``model_sigmas`` supplies ``sigma_to_t`` (k-diffusion DiscreteSchedule's log-sigma interpolation).
    ``control`` hooks (ControlNet) return extra UNet keyword arguments (residuals) for each call.
    """

    unet: Any
    model_sigmas: Any
    prediction_type: str = "epsilon"
    control: list = field(default_factory=list)
    progress: SamplingProgress = field(default_factory=SamplingProgress)

    def scalings(self, sigma: torch.Tensor):
        c_in = 1 / (sigma**2 + 1) ** 0.5
        if self.prediction_type == "v_prediction":
            c_skip = 1 / (sigma**2 + 1)
            c_out = -sigma * c_in
        else:
            c_skip = torch.ones_like(sigma)
            c_out = -sigma
        return c_skip, c_out, c_in

    def unet_call(self, x_in: torch.Tensor, t: torch.Tensor, cond: Cond, sigma: torch.Tensor | None) -> torch.Tensor:
        """The UNet on an already-scaled input; image conditioning is concatenated on the channel axis (LDM's
        hybrid conditioning) and control hooks add their residuals."""
        dtype = self.unet.dtype
        sample = x_in if cond.concat is None else torch.cat([x_in, cond.concat.to(x_in)], dim=1)
        kwargs: dict[str, Any] = {}
        for hook in self.control:
            extra = hook(ControlContext(x_in, t, sigma, cond, self.progress.step, self.progress.steps))
            for key, value in (extra or {}).items():
                if key in kwargs and value is not None and kwargs[key] is not None:
                    kwargs[key] = _add_residuals(kwargs[key], value)
                elif value is not None:
                    kwargs[key] = value
        return self.unet(
            sample.to(dtype),
            t.to(dtype) if dtype != torch.float32 else t.float(),
            encoder_hidden_states=cond.context.to(dtype),
            added_cond_kwargs={k: v.to(dtype) for k, v in cond.added.items()} if cond.added else None,
            return_dict=False,
            **kwargs,
        )[0].to(x_in.dtype)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        c_skip, c_out, c_in = (s[:, None, None, None] for s in self.scalings(sigma))
        t = self.model_sigmas.sigma_to_t(sigma)
        out = self.unet_call(x * c_in, t, cond, sigma)
        return x * c_skip + out * c_out

    def eps(self, x: torch.Tensor, t: torch.Tensor, cond: Cond, alphas_cumprod: torch.Tensor) -> torch.Tensor:
        """The UNet's noise prediction at integer timestep ``t`` on an unscaled (DDPM) latent: what A1111's
        timestep samplers (DDIM, PLMS, UniPC) call. v-models are converted to eps."""
        out = self.unet_call(x, t, cond, None)
        if self.prediction_type == "v_prediction":
            a = alphas_cumprod.to(x.device)[t.long()][:, None, None, None]
            out = a.sqrt() * out + (1 - a).sqrt() * x
        return out


def _add_residuals(a, b):
    """Two control hooks' residuals add up (several ControlNet units, as the extension sums them)."""
    if isinstance(a, (list, tuple)):
        return [x + y for x, y in zip(a, b)]
    return a + b


@dataclass
class CFGDenoiser:
    """A1111's CFGDenoiser: one call per model evaluation, counts them in ``step`` (prompt editing and AND switch on
    that count, as A1111's does), supports interrupt/skip via ``should_stop``.

    ``conds`` gives the conditioning for the current step (:class:`StepConds`). AND-composed prompts put several
    cond rows per image through the model; ``combine`` adds each one's guidance with its weight
    (A1111 combine_denoised)."""

    inner: Callable[[torch.Tensor, torch.Tensor, Cond], torch.Tensor]
    conds: StepConds
    cfg_scale: float
    cond_scale_multiplier: float = 1.0  # DDIM CFG++ sets 1/12.5
    need_last_noise_uncond: bool = False
    # A1111's uncond skipping: "Skip Early CFG" (option skip_early_cond, a fraction of the model calls) and NGMS
    # (s_min_uncond: every other call -- all with s_min_uncond_all -- once sigma is below it). A skipped call runs
    # only the cond rows and uses them as the uncond too, i.e. no CFG for that call. ``skip_report`` collects the
    # infotext entries A1111 writes when a skip happened.
    s_min_uncond: float = 0.0
    s_min_uncond_all: bool = False
    skip_early_cond: float = 0.0
    total_steps: int = 0
    skip_report: dict = field(default_factory=dict)
    should_stop: Callable[[], bool] = lambda: False
    batch_cond_uncond: bool = True
    # A1111 options pad_cond_uncond_v0 (repeat the negative's last vector / cut it) and pad_cond_uncond (append
    # empty-prompt chunks, ``empty_context`` [1, 77, D]) for prompts of different chunk counts; neither: run apart.
    pad_cond_uncond_v0: bool = False
    empty_context: torch.Tensor | None = None
    # img2img/inpainting: image conditioning per image [B, C, h, w] for 9-/8-channel UNets, and A1111's latent
    # mask blend (denoised = denoised * nmask + init_latent * mask after each step)
    image_cond: torch.Tensor | None = None
    image_uncond: torch.Tensor | None = None  # the uncond rows' image conditioning (default: image_cond)
    # instruct-pix2pix ("edit") models with Image CFG scale != 1: A1111's three-way batch (cond, image-cond,
    # uncond) and combine_denoised_for_edit_model
    image_cfg_scale: float | None = None
    mask: torch.Tensor | None = None
    nmask: torch.Tensor | None = None
    init_latent: torch.Tensor | None = None
    refiner: "RefinerSwitch | None" = None
    timesteps_mode: bool = False  # DDIM/PLMS/UniPC call the model with timesteps where k samplers pass sigmas
    # per-step callbacks (A1111's cfg_denoiser / cfg_denoised / cfg_after_cfg script callbacks and on_mask_blend): an
    # object with denoiser(params), denoised(params), after_cfg(params), mask_blend(mba); None when nobody listens
    callbacks: Any = None
    sampling_step: int = 0
    step: int = 0
    last_noise_uncond: torch.Tensor | None = field(default=None, repr=False)
    _conds_list: list = field(default_factory=list, repr=False)

    def combine(self, x_out: torch.Tensor, n: int) -> torch.Tensor:
        uncond_out = x_out[-n:]
        denoised = uncond_out.clone()
        scale = self.cfg_scale * self.cond_scale_multiplier
        if all(len(c) == 1 and c[0] == (i, 1.0) for i, c in enumerate(self._conds_list)):
            # the plain case, in one tensor operation (same values as the loop below with weight 1.0)
            denoised += (x_out[:n] - uncond_out) * scale
            return denoised
        for i, conds in enumerate(self._conds_list):
            for cond_index, weight in conds:
                denoised[i] += (x_out[cond_index] - uncond_out[i]) * (weight * scale)
        return denoised

    def run(self, x: torch.Tensor, sigma: torch.Tensor, fn) -> torch.Tensor:
        if self.should_stop():
            raise SamplingInterrupted()
        if self.refiner is not None and not self.refiner.done and self.refiner.should_switch(
            sigma, self.step, self.timesteps_mode
        ):
            self.refiner.switched_at_call = self.step
            self.inner, self.conds = self.refiner.switch(self.timesteps_mode)
            fn = self.inner
        conds_list, cond, uncond = self.conds.at(self.step)
        self._conds_list = conds_list
        if self.callbacks is not None:
            params = CFGDenoiserParams(x, self.image_cond, sigma, self.sampling_step, 0, cond, uncond)
            self.callbacks.denoiser(params)
            x, sigma, cond, uncond = params.x, params.sigma, params.text_cond, params.text_uncond
        if self._is_edit():
            return self._run_edit(x, sigma, fn, conds_list, cond, uncond)
        skip_uncond = self._skip_uncond(sigma)
        repeats = [len(c) for c in conds_list]
        if all(r == 1 for r in repeats):
            x_in, sigma_in = torch.cat([x, x]), torch.cat([sigma, sigma])
        else:
            x_in = torch.cat([x[i : i + 1].repeat(r, 1, 1, 1) for i, r in enumerate(repeats)] + [x])
            sigma_in = torch.cat([sigma[i : i + 1].repeat(r) for i, r in enumerate(repeats)] + [sigma])
        n_cond = len(cond)
        if cond.context.shape[1] != uncond.context.shape[1]:
            cond, uncond = self._pad(cond, uncond)
        cond_ic = uncond_ic = None
        if self.image_cond is not None:
            ic = self.image_cond
            cond_ic = torch.cat([ic[i : i + 1].repeat(r, 1, 1, 1) for i, r in enumerate(repeats)])
            uncond_ic = self.image_uncond if self.image_uncond is not None else ic
        cond, uncond = cond.with_rows(cond_ic, False), uncond.with_rows(uncond_ic, True)
        if skip_uncond:
            x_out = fn(x_in[:n_cond], sigma_in[:n_cond], cond)
            # A1111: the cond-denoised image stands where the uncond-denoised one would be
            fake_uncond = torch.cat([x_out[c[0][0] : c[0][0] + 1] for c in conds_list])
            x_out = torch.cat([x_out, fake_uncond])
        elif cond.context.shape[1] == uncond.context.shape[1] and self.batch_cond_uncond:
            x_out = fn(x_in, sigma_in, Cond.cat([cond, uncond]))
        elif cond.context.shape[1] == uncond.context.shape[1]:
            x_out = torch.cat([fn(x_in[:n_cond], sigma_in[:n_cond], cond), fn(x_in[n_cond:], sigma_in[n_cond:], uncond)])
        else:  # different chunk counts: A1111 runs cond and uncond as separate batches
            x_out = torch.cat([fn(x_in[:n_cond], sigma_in[:n_cond], cond), fn(x_in[n_cond:], sigma_in[n_cond:], uncond)])
        self.step += 1
        return x_out

    def _skip_uncond(self, sigma: torch.Tensor) -> bool:
        """A1111 CFGDenoiser.forward's skip_uncond (the step counter is its model-call count, ``sigma`` is the
        timestep for DDIM/PLMS/UniPC, as in A1111)."""
        if self.need_last_noise_uncond:
            return False
        if self.skip_early_cond and self.step / max(1, self.total_steps) <= self.skip_early_cond:
            self.skip_report["Skip Early CFG"] = self.skip_early_cond
            return True
        if (self.step % 2 or self.s_min_uncond_all) and self.s_min_uncond > 0 and float(sigma[0]) < self.s_min_uncond:
            self.skip_report["NGMS"] = self.s_min_uncond
            if self.s_min_uncond_all:
                self.skip_report["NGMS all steps"] = self.s_min_uncond_all
            return True
        return False

    def _is_edit(self) -> bool:
        return self.image_cond is not None and self.image_cfg_scale is not None and self.image_cfg_scale != 1.0

    def _run_edit(self, x, sigma, fn, conds_list, cond, uncond):
        """A1111's is_edit_model branch: rows (prompt + image), (no prompt + image), (no prompt, no image)."""
        if any(len(c) != 1 for c in conds_list):
            raise ValueError("AND is not supported for InstructPix2Pix checkpoint (unless using Image CFG scale = 1.0)")
        if cond.context.shape[1] != uncond.context.shape[1]:
            cond, uncond = self._pad(cond, uncond)
            uncond = uncond.padded_to(cond.context.shape[1])
            cond = cond.padded_to(uncond.context.shape[1])
        ic = self.image_cond
        parts = [cond.with_rows(ic, False), uncond.with_rows(ic, True), uncond.with_rows(torch.zeros_like(ic), True)]
        x_out = fn(torch.cat([x, x, x]), torch.cat([sigma, sigma, sigma]), Cond.cat(parts))
        self.step += 1
        return x_out

    def _pad(self, cond: Cond, uncond: Cond) -> tuple[Cond, Cond]:
        """A1111 CFGDenoiser.pad_cond_uncond_v0 / pad_cond_uncond."""
        if self.pad_cond_uncond_v0:
            tokens = cond.context.shape[1]
            if uncond.context.shape[1] < tokens:
                return cond, uncond.padded_to(tokens)
            return cond, Cond(uncond.context[:, :tokens], uncond.added)
        if self.empty_context is not None:
            empty = self.empty_context.to(cond.context.device, cond.context.dtype)
            repeats = (cond.context.shape[1] - uncond.context.shape[1]) // empty.shape[1]

            def padded(c: Cond, n: int) -> Cond:
                return Cond(torch.cat([c.context, empty.repeat(c.context.shape[0], n, 1)], dim=1), c.added)

            if repeats < 0:
                return padded(cond, -repeats), uncond
            if repeats > 0:
                return cond, padded(uncond, repeats)
        return cond, uncond

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        x_out = self.run(x, sigma, self.inner)
        if self.callbacks is not None:
            denoised_params = CFGDenoisedParams(x_out, self.sampling_step, 0, self.inner)
            self.callbacks.denoised(denoised_params)
            x_out = denoised_params.x
        self.last_noise_uncond = x_out[-x.shape[0]:]  # DDIM CFG++ reads the unguided prediction
        if self._is_edit():
            out_cond, out_img_cond, out_uncond = x_out.chunk(3)
            scale = self.cfg_scale * self.cond_scale_multiplier
            denoised = out_uncond + scale * (out_cond - out_img_cond) + self.image_cfg_scale * (out_img_cond - out_uncond)
        else:
            denoised = self.combine(x_out, x.shape[0])
        if self.mask is not None:
            # A1111 (mask_before_denoising False): keep the original latent where the mask says so
            blended = denoised * self.nmask + self.init_latent * self.mask
            if self.callbacks is not None:  # A1111 apply_blend: scripts' on_mask_blend may replace the blend
                mba = MaskBlendArgs(denoised, self.nmask, self.init_latent, self.mask, blended, denoiser=self,
                                    sigma=sigma)
                self.callbacks.mask_blend(mba)
                blended = mba.blended_latent
            denoised = blended
        if self.callbacks is not None:
            after = AfterCFGCallbackParams(denoised, self.sampling_step, 0)
            self.callbacks.after_cfg(after)
            denoised = after.x
        return denoised


@dataclass
class CFGDenoiserParams:
    """A1111 script_callbacks.CFGDenoiserParams: what on_cfg_denoiser sees (and may replace) before the UNet call."""

    x: torch.Tensor
    image_cond: torch.Tensor | None
    sigma: torch.Tensor
    sampling_step: int
    total_sampling_steps: int
    text_cond: Any
    text_uncond: Any


@dataclass
class CFGDenoisedParams:
    """A1111 CFGDenoisedParams: the UNet outputs (cond rows, then uncond rows) before CFG combines them."""

    x: torch.Tensor
    sampling_step: int
    total_sampling_steps: int
    inner_model: Any


@dataclass
class AfterCFGCallbackParams:
    """A1111 AfterCFGCallbackParams: the guided prediction after CFG; ``x`` may be replaced."""

    x: torch.Tensor
    sampling_step: int
    total_sampling_steps: int


@dataclass
class MaskBlendArgs:
    """A1111 scripts.MaskBlendArgs: one inpainting latent blend. ``blended_latent`` starts as the hard blend
    ``current_latent * nmask + init_latent * mask`` and may be replaced; the final blend after sampling has no
    ``denoiser`` and no ``sigma`` (``is_final_blend``)."""

    current_latent: torch.Tensor
    nmask: torch.Tensor
    init_latent: torch.Tensor
    mask: torch.Tensor
    blended_latent: torch.Tensor
    denoiser: Any = None
    sigma: torch.Tensor | None = None

    @property
    def is_final_blend(self) -> bool:
        return self.denoiser is None


@dataclass
class LCMDenoiser(KDenoiser):
    """A1111's LCMCompVisDenoiser: eps model on the 50-step LCM timestep grid, then LCM's boundary scalings
    (sigma_data 0.5, timestep scaled by 10) applied to the eps-denoised estimate."""

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        denoised = super().__call__(x, sigma, cond)
        t = self.model_sigmas.sigma_to_t(sigma).to(x.dtype)[:, None, None, None] * 10.0
        c_skip = 0.25 / (t**2 + 0.25)
        c_out = t / (t**2 + 0.25) ** 0.5
        return c_out * denoised + c_skip * x


@dataclass
class RefinerSwitch:
    """A1111's refiner (sd_samplers_common.apply_refiner): once the completed fraction of the schedule reaches
    ``switch_at``, the sampler goes on with another model on the same latents and noise. The fraction is
    (999 - timestep) / 1000 for the current sigma's nearest model timestep, or model calls / expected calls with
    option refiner_switch_by_sample_steps (and for timestep samplers without a sigma).

    ``build(timesteps_mode)`` loads the refiner and returns its ``(inner model, StepConds)``."""

    switch_at: float
    model_sigmas: Any
    build: Callable[[bool], tuple[Callable, "StepConds"]]
    total_calls: int = 1
    by_sample_steps: bool = False
    done: bool = False
    switched_at_call: int | None = None

    def completed_ratio(self, sigma: torch.Tensor, call: int, timesteps_mode: bool) -> float:
        if self.by_sample_steps:
            return call / max(1, self.total_calls)
        if timesteps_mode:  # "sigma" is the timestep for DDIM and friends
            timestep = int(torch.max(sigma).item())
        else:
            sigmas = self.model_sigmas.sigmas.to(sigma.device)
            timestep = int(torch.argmin(torch.abs(sigmas - torch.max(sigma))).item())
        return (999 - timestep) / 1000

    def should_switch(self, sigma: torch.Tensor, call: int, timesteps_mode: bool) -> bool:
        return self.completed_ratio(sigma, call, timesteps_mode) >= self.switch_at

    def switch(self, timesteps_mode: bool):
        self.done = True
        return self.build(timesteps_mode)


class SamplingInterrupted(Exception):
    """Raised inside the sampler loop when the job was interrupted or skipped; the pipeline catches it."""


class LCMSigmas(ModelSigmas):
    """A1111's LCMCompVisDenoiser schedule: 50 "original" timesteps (every 20th of the 1000), timesteps snapped to
    them, sigmas linear in t. Its scalings live in pipelines.denoiser.LCMDenoiser."""

    timesteps = 1000
    original_timesteps = 50

    def __init__(self, alphas_cumprod: torch.Tensor):
        self.skip_steps = self.timesteps // self.original_timesteps
        valid = torch.zeros(self.original_timesteps, dtype=torch.float32)
        for x in range(self.original_timesteps):
            valid[self.original_timesteps - 1 - x] = alphas_cumprod[self.timesteps - 1 - x * self.skip_steps]
        super().__init__(valid)

    def sigma_to_t(self, sigma, quantize=None):
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        dists = sigma.log() - self.log_sigmas.to(sigma.device)[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape) * self.skip_steps + (self.skip_steps - 1)

    def t_to_sigma(self, t):
        t = torch.clamp(((torch.as_tensor(t) - (self.skip_steps - 1)) / self.skip_steps).float(), min=0,
                        max=len(self.sigmas) - 1)
        return super().t_to_sigma(t)

    def get_sigmas(self, n=None):
        if n is None:
            return torch.cat([self.sigmas.flip(0), self.sigmas.new_zeros(1)])
        start = self.sigma_to_t(torch.tensor(self.sigma_max))
        end = self.sigma_to_t(torch.tensor(self.sigma_min))
        t = torch.linspace(float(start), float(end), n)
        return torch.cat([self.t_to_sigma(t), t.new_zeros(1)])
