"""A1111's uncond skipping in the CFG denoiser: NGMS (s_min_uncond, every other call or all with s_min_uncond_all)
and "Skip Early CFG" (skip_early_cond): a skipped call runs only the cond rows and returns the cond prediction."""

from __future__ import annotations

import torch

from pipelines.denoiser import CFGDenoiser, Cond, FixedConds


def _setup(**kw):
    calls = []

    def inner(x, sigma, cond: Cond):
        calls.append(x.shape[0])
        # the prediction says which rows were cond (1) and uncond (-1)
        sign = torch.where(cond.uncond_rows, -1.0, 1.0) if cond.uncond_rows is not None else torch.ones(x.shape[0])
        return x * 0 + sign[:, None, None, None]

    cond, uncond = Cond(torch.ones(2, 77, 8)), Cond(torch.zeros(2, 77, 8))
    model = CFGDenoiser(inner, FixedConds(cond, uncond), cfg_scale=7.0, **kw)
    return model, calls


def test_ngms_skips_every_other_call_below_the_sigma():
    model, calls = _setup(s_min_uncond=5.0)
    x = torch.zeros(2, 4, 2, 2)
    outs = [model(x, torch.full((2,), s)) for s in (10.0, 3.0, 2.0, 1.0)]
    # call 0: sigma 10 >= 5, full CFG; call 1 (odd) below 5: skipped; call 2 (even): full; call 3: skipped
    assert calls == [4, 2, 4, 2]
    assert torch.equal(outs[1], torch.ones_like(x)) and torch.equal(outs[3], torch.ones_like(x))
    assert torch.equal(outs[2], torch.full_like(x, -1 + (1 - -1) * 7.0))  # uncond + (cond - uncond) * scale
    assert model.skip_report == {"NGMS": 5.0}


def test_ngms_all_steps_and_skip_early_cfg():
    model, calls = _setup(s_min_uncond=5.0, s_min_uncond_all=True)
    x = torch.zeros(2, 4, 2, 2)
    for s in (10.0, 3.0, 2.0):
        model(x, torch.full((2,), s))
    assert calls == [4, 2, 2] and model.skip_report == {"NGMS": 5.0, "NGMS all steps": True}

    early, calls = _setup(skip_early_cond=0.5, total_steps=4)
    for _ in range(4):
        early(x, torch.full((2,), 1.0))
    # calls 0, 1, 2 have step / total_steps <= 0.5
    assert calls == [2, 2, 2, 4] and early.skip_report == {"Skip Early CFG": 0.5}


def test_nothing_skipped_by_default():
    model, calls = _setup()
    x = torch.zeros(2, 4, 2, 2)
    for s in (10.0, 0.1):
        model(x, torch.full((2,), s))
    assert calls == [4, 4] and model.skip_report == {}
