"""Every (sampler, schedule type) pair runs through the engine on the tiny SD1 checkpoint, deterministically, and
writes an infotext that parses back to the sampler and schedule."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.schedules import SCHEDULERS
from webui.config import parse
from webui.core.io.infotext import parse_generation_parameters
from webui.core.generation.samplers import SAMPLERS
from webui.core.types import GenerationRequest
from webui.state import build_state


@pytest.fixture(scope="module")
def state(tmp_path_factory, models_root):
    import os

    root, _ = models_root
    d = tmp_path_factory.mktemp("matrix")
    (d / "models").mkdir()
    os.symlink(root / "models" / "Stable-diffusion", d / "models" / "Stable-diffusion")
    return build_state(parse(["--nowebui", "--data-dir", str(d), "--ckpt", str(root / "models/Stable-diffusion/tiny-sd15.safetensors")]), create_demo=False)


@pytest.mark.parametrize("scheduler", [s.label for s in SCHEDULERS])
@pytest.mark.parametrize("sampler", [s.name for s in SAMPLERS])
def test_pair_runs_deterministically(state, sampler, scheduler):
    req = GenerationRequest(prompt="a cat", steps=4, width=32, height=32, seed=99, sampler_name=sampler,
                            scheduler=scheduler, checkpoint="tiny-sd15")
    a = state.engine.generate(req)
    b = state.engine.generate(req)
    assert np.asarray(a.images[0]).tobytes() == np.asarray(b.images[0]).tobytes()
    params = parse_generation_parameters(a.infotexts[0])
    assert params["Sampler"] == sampler
    assert params["Steps"] == "4" and params["Seed"] == "99"
    assert params["Schedule type"] in {s.label for s in SCHEDULERS}
