"""A1111's refiner: switch to another checkpoint at a fraction of the schedule, on the same latents and noise
(``sd_samplers_common.apply_refiner``), in the first pass, the hires pass or both."""

from __future__ import annotations

from webui.core.generation.context import short_title


def refiner_in_pass(opts, has_hires: bool, second: bool) -> bool:
    """A1111 apply_refiner: with hires fix, option hires_fix_refiner_pass picks the pass(es)."""
    if not has_hires:
        return True
    which = opts.get("hires_fix_refiner_pass") or "second pass"
    return which == "both passes" or (which == "second pass") == second


def refiner_switch(p, comp, pipe, pass_plan, prompts, negatives, width, height):
    """A RefinerSwitch that loads the refiner (keeping the base loaded when the cache allows two), builds its
    conditioning (its own text encoders; SDXL refiner: aesthetic scores) and continues on the same latents."""
    from pipelines.a1111 import A1111Pipeline
    from pipelines.denoiser import RefinerSwitch
    from webui.core.generation import optimizations
    from webui.core.generation.conditioning import (
        EncoderOptions,
        PromptEncoder,
        ScheduledConds,
        get_learned_conditioning,
        get_multicond_learned_conditioning,
    )

    request, opts, refiner_info, services = p.request, p.opts, p.refiner_checkpoint, p.services
    if refiner_info.filename == comp.info.filename:
        return None  # A1111: no switch onto the same model
    extra_params = p.extra_generation_params
    extra_params["Refiner"] = short_title(refiner_info)
    extra_params["Refiner switch at"] = request.refiner.switch_at
    by_steps = bool(opts.get("refiner_switch_by_sample_steps"))
    if by_steps:
        extra_params["Refiner switch by sampling steps"] = True
    run = pass_plan.plan.run
    runs = (pass_plan.t_enc + 1) if pass_plan.t_enc is not None else (
        len(run.sigmas) - 1 if run.sigmas is not None else len(run.timesteps))

    def build(timesteps_mode: bool):
        ref_comp = services.load(refiner_info, extra_slots=1, opts=opts)
        switch.components = ref_comp
        optimizations.use_attention(p, ref_comp)
        ref_pipe = A1111Pipeline(ref_comp)
        enc = PromptEncoder(ref_comp, EncoderOptions.from_settings(opts, p.clip_skip),
                            width=width, height=height, embeddings=services.embeddings)
        uc = get_learned_conditioning(enc, negatives, pass_plan.sched, is_negative=True)
        c = get_multicond_learned_conditioning(enc, prompts, pass_plan.sched)
        return ref_pipe.make_inner(run), ScheduledConds(c, uc)

    switch = RefinerSwitch(
        switch_at=float(request.refiner.switch_at), model_sigmas=pipe.model_sigmas, build=build,
        total_calls=pass_plan.sched.steps if by_steps else runs, by_sample_steps=by_steps,
    )
    switch.components = None
    return switch
