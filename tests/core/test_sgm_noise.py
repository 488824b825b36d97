"""Option sgm_noise_multiplier (A1111 KDiffusionSampler.sample): k-diffusion txt2img starts from
noise * sqrt(1 + sigma_max^2) instead of noise * sigma_max and writes "SGM noise multiplier: True"; the timestep
samplers (DDIM, PLMS, UniPC) and img2img do not read it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from webui.config import parse
from webui.core.io.infotext import parse_generation_parameters
from webui.core.io.paste import INFOTEXT_SETTINGS
from webui.core.types import GenerationRequest
from webui.state import build_state


@pytest.fixture
def state(data_dir):
    return build_state(parse(["--nowebui", "--data-dir", str(data_dir)]), create_demo=False)


def _gen(state, sgm: bool, **kw):
    base = dict(prompt="a cat", steps=3, width=64, height=64, seed=7, sampler_name="Euler",
                override_settings={"sgm_noise_multiplier": sgm} if sgm else {})
    base.update(kw)
    return state.engine.generate(GenerationRequest(**base))


def test_k_sampler_scales_initial_noise_and_writes_infotext(state, monkeypatch):
    import pipelines.a1111 as a1111

    seen = []
    original = a1111.torch.sqrt

    def spy(t):
        seen.append(t.clone())
        return original(t)

    plain = _gen(state, False)
    monkeypatch.setattr(a1111.torch, "sqrt", spy)
    sgm = _gen(state, True)
    monkeypatch.undo()
    assert "SGM noise multiplier: True" in sgm.infotexts[0]
    assert "SGM noise multiplier" not in plain.infotexts[0]
    assert np.asarray(sgm.images[0]).tobytes() != np.asarray(plain.images[0]).tobytes()
    # the scale is sqrt(1 + sigma_max^2) of the schedule (SD1's sigma_max 14.6146...)
    assert len(seen) == 1 and torch.allclose(seen[0], torch.tensor(1.0 + 14.6146431 ** 2), rtol=1e-5)
    params = parse_generation_parameters(sgm.infotexts[0])
    assert params["SGM noise multiplier"] in (True, "True")
    assert INFOTEXT_SETTINGS["SGM noise multiplier"] == "sgm_noise_multiplier"


def test_timestep_samplers_ignore_it(state):
    for sampler in ("DDIM", "UniPC"):
        on, off = _gen(state, True, sampler_name=sampler), _gen(state, False, sampler_name=sampler)
        assert "SGM noise multiplier" not in on.infotexts[0]
        assert np.asarray(on.images[0]).tobytes() == np.asarray(off.images[0]).tobytes()
