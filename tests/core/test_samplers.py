"""webui.core.generation.samplers: A1111 v1.10.1's sampler table, /sdapi/v1/samplers, and name resolution (spec §6.3, §15.1).

Expected values are transcribed from A1111 v1.10.1 modules/sd_samplers_kdiffusion.py (samplers_k_diffusion,
sampler_extra_params), sd_samplers_timesteps.py, sd_samplers_lcm.py and sd_samplers.py (get_sampler_and_scheduler).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pipelines import k_sampling, timestep_sampling
from webui.core.generation import samplers as S
from webui.core.generation.samplers import SAMPLERS, find_sampler, resolve_sampler_and_scheduler, samplers_api_list

# spec §15.1, in /sdapi/v1/samplers order: (name, aliases, options as the API shows them)
EXPECTED_API = [
    ("DPM++ 2M", ["k_dpmpp_2m"], {"scheduler": "karras"}),
    ("DPM++ SDE", ["k_dpmpp_sde"], {"scheduler": "karras", "second_order": "True", "brownian_noise": "True"}),
    ("DPM++ 2M SDE", ["k_dpmpp_2m_sde"], {"scheduler": "exponential", "brownian_noise": "True"}),
    ("DPM++ 2M SDE Heun", ["k_dpmpp_2m_sde_heun"],
     {"scheduler": "exponential", "brownian_noise": "True", "solver_type": "heun"}),
    ("DPM++ 2S a", ["k_dpmpp_2s_a"], {"scheduler": "karras", "uses_ensd": "True", "second_order": "True"}),
    ("DPM++ 3M SDE", ["k_dpmpp_3m_sde"],
     {"scheduler": "exponential", "discard_next_to_last_sigma": "True", "brownian_noise": "True"}),
    ("Euler a", ["k_euler_a", "k_euler_ancestral"], {"uses_ensd": "True"}),
    ("Euler", ["k_euler"], {}),
    ("LMS", ["k_lms"], {}),
    ("Heun", ["k_heun"], {"second_order": "True"}),
    ("DPM2", ["k_dpm_2"], {"scheduler": "karras", "discard_next_to_last_sigma": "True", "second_order": "True"}),
    ("DPM2 a", ["k_dpm_2_a"],
     {"scheduler": "karras", "discard_next_to_last_sigma": "True", "uses_ensd": "True", "second_order": "True"}),
    ("DPM fast", ["k_dpm_fast"], {"uses_ensd": "True"}),
    ("DPM adaptive", ["k_dpm_ad"], {"uses_ensd": "True"}),
    ("Restart", ["restart"], {"scheduler": "karras", "second_order": "True"}),
    ("DDIM", ["ddim"], {}),
    ("DDIM CFG++", ["ddim_cfgpp"], {}),
    ("PLMS", ["plms"], {}),
    ("UniPC", ["unipc"], {}),
    ("LCM", ["k_lcm"], {}),
]


def test_samplers_api_list_is_a1111s():
    body = samplers_api_list()
    assert [(d["name"], d["aliases"], d["options"]) for d in body] == EXPECTED_API
    assert all(set(d) == {"name", "aliases", "options"} for d in body)
    assert all(isinstance(v, str) for d in body for v in d["options"].values())
    # option order is A1111's registration order too (it shows in the JSON)
    assert list(body[11]["options"]) == ["scheduler", "discard_next_to_last_sigma", "uses_ensd", "second_order"]


def test_table_functions_and_kinds():
    by = {s.name: s for s in SAMPLERS}
    assert len(SAMPLERS) == 20
    assert by["DPM++ 2M SDE Heun"].function is by["DPM++ 2M SDE"].function is k_sampling.sample_dpmpp_2m_sde
    assert by["Restart"].function is k_sampling.sample_restart
    assert by["LCM"].function is k_sampling.sample_lcm and by["LCM"].denoiser == "lcm"
    assert {s.name for s in SAMPLERS if s.kind == "timesteps"} == {"DDIM", "DDIM CFG++", "PLMS", "UniPC"}
    assert by["DDIM"].function is timestep_sampling.ddim and by["UniPC"].function is timestep_sampling.unipc
    assert {s.name for s in SAMPLERS if s.sigma_range} == {"DPM fast", "DPM adaptive"}
    assert all(callable(s.function) for s in SAMPLERS)


def test_extra_params_are_a1111s_sampler_extra_params():
    churn = ("s_churn", "s_tmin", "s_tmax", "s_noise")
    expected = {"Euler": churn, "Heun": churn, "DPM2": churn, "DPM fast": ("s_noise",), "DPM2 a": ("s_noise",),
                "DPM++ 2S a": ("s_noise",), "DPM++ SDE": ("s_noise",), "DPM++ 2M SDE": ("s_noise",),
                "DPM++ 2M SDE Heun": ("s_noise",), "DPM++ 3M SDE": ("s_noise",)}
    for s in SAMPLERS:
        assert s.extra_params == expected.get(s.name, ()), s.name


def test_eta_is_passed_where_the_function_takes_it():
    import inspect

    for s in SAMPLERS:
        assert s.uses_eta == ("eta" in inspect.signature(s.function).parameters), s.name
        for p in s.extra_params:
            assert p in inspect.signature(s.function).parameters, (s.name, p)
    ddim, euler_a = find_sampler("DDIM"), find_sampler("Euler a")
    assert (ddim.eta_option, ddim.eta_default, ddim.eta_infotext_field) == ("eta_ddim", 0.0, "Eta DDIM")
    assert (euler_a.eta_option, euler_a.eta_default, euler_a.eta_infotext_field) == ("eta_ancestral", 1.0, "Eta")


def test_total_steps_doubles_for_second_order():
    assert find_sampler("Heun").total_steps(20) == 40
    assert find_sampler("Euler").total_steps(20) == 20


def test_find_sampler_names_and_aliases():
    assert find_sampler("Euler a").name == "Euler a"
    assert find_sampler("k_euler_ancestral").name == "Euler a"
    assert find_sampler("k_dpmpp_2m").name == "DPM++ 2M"
    assert find_sampler("euler a") is None  # case-sensitive, as A1111's all_samplers_map
    assert find_sampler("nope") is None
    assert find_sampler(None).name == "DPM++ 2M"  # A1111 find_sampler_config(None) -> first sampler


# the 12 schedule types of spec §15.2 (name, label, aliases), written out so these tests stand on their own
SCHEDULERS_15_2 = [SimpleNamespace(name=n, label=lbl, aliases=a) for n, lbl, a in [
    ("automatic", "Automatic", None), ("uniform", "Uniform", None), ("karras", "Karras", None),
    ("exponential", "Exponential", None), ("polyexponential", "Polyexponential", None),
    ("sgm_uniform", "SGM Uniform", ["SGMUniform"]), ("kl_optimal", "KL Optimal", None),
    ("align_your_steps", "Align Your Steps", None), ("simple", "Simple", None), ("normal", "Normal", None),
    ("ddim", "DDIM", None), ("beta", "Beta", None)]]


def _real_schedulers():
    try:
        from pipelines.schedules import SCHEDULERS
    except ImportError:  # pragma: no cover - written by another change
        pytest.skip("pipelines.schedules not available")
    return SCHEDULERS


@pytest.fixture(params=["spec-table", "pipelines.schedules"])
def scheds(request):
    return SCHEDULERS_15_2 if request.param == "spec-table" else _real_schedulers()


def R(sampler_name, scheduler=None, sampler_index="Euler", scheds=None):
    r = resolve_sampler_and_scheduler(sampler_name, scheduler, sampler_index, schedulers=scheds)
    return r.sampler.name, r.scheduler_label, r.fell_back


@pytest.mark.parametrize("sampler_name,scheduler,expected", [
    ("DPM++ 2M Karras", None, ("DPM++ 2M", "Automatic", False)),  # = Karras, the sampler's own default
    ("Euler a Karras", None, ("Euler a", "Karras", False)),
    ("DPM++ 2M SDE Karras", None, ("DPM++ 2M SDE", "Karras", False)),
    ("DPM++ 2M SDE Exponential", None, ("DPM++ 2M SDE", "Automatic", False)),
    ("DPM++ 2M karras", None, ("DPM++ 2M", "Automatic", False)),  # matches the scheduler *name*
    ("Euler karras", None, ("Euler", "Karras", False)),
    ("DPM++ 2M KARRAS", None, ("DPM++ 2M", "Automatic", True)),  # no such sampler -> first sampler, reported
    ("k_euler", None, ("Euler", "Automatic", False)),  # our correction: aliases resolve
    ("k_dpmpp_2m", None, ("DPM++ 2M", "Automatic", False)),
    ("k_euler_a Karras", None, ("Euler a", "Karras", False)),
    ("Euler a SGMUniform", None, ("Euler a", "SGM Uniform", False)),  # aliases count when splitting names
    ("Euler", "karras", ("Euler", "Karras", False)),  # explicit scheduler kept, normalised to its label
    ("Euler", "Karras", ("Euler", "Karras", False)),
    ("DPM++ 2M", "Karras", ("DPM++ 2M", "Karras", False)),  # explicit: no conversion back to Automatic
    ("Euler", "Align Your Steps", ("Euler", "Align Your Steps", False)),
    ("Euler", "nonsense", ("Euler", "Automatic", False)),  # unknown scheduler -> Automatic
    ("Euler", "SGMUniform", ("Euler", "Automatic", False)),  # aliases are not scheduler *names*
    ("Euler a Karras", "Exponential", ("Euler a", "Exponential", False)),  # explicit scheduler wins at step 5
    ("UniPC", None, ("UniPC", "Automatic", False)),
    ("Nope", "Karras", ("DPM++ 2M", "Karras", True)),
])
def test_resolution_examples(scheds, sampler_name, scheduler, expected):
    assert R(sampler_name, scheduler, scheds=scheds) == expected


def test_resolution_uses_sampler_index_when_sampler_name_is_empty(scheds):
    assert R(None, scheds=scheds) == ("Euler", "Automatic", False)  # the API's default sampler is Euler
    assert R("", scheds=scheds) == ("Euler", "Automatic", False)
    assert R(None, sampler_index="DPM++ 2M Karras", scheds=scheds) == ("DPM++ 2M", "Automatic", False)
    assert R(None, sampler_index=None, scheds=scheds) == ("DPM++ 2M", "Automatic", False)


def test_resolution_records_what_fell_back(scheds):
    r = resolve_sampler_and_scheduler("DPM++ 2M KARRAS", "Karras ", schedulers=scheds)
    assert (r.sampler_name, r.fell_back, r.original) == ("DPM++ 2M", True, "DPM++ 2M KARRAS")
    assert (r.scheduler_label, r.scheduler_fell_back, r.original_scheduler) == ("Automatic", True, "Karras ")
    ok = resolve_sampler_and_scheduler("Euler a", "karras", schedulers=scheds)
    assert not ok.fell_back and not ok.scheduler_fell_back and ok.original == "Euler a"


def test_get_sampler_and_scheduler_converts_the_samplers_default_to_automatic(scheds):
    sampler, sched, fell = S.get_sampler_and_scheduler("DPM++ 2M", "Karras", schedulers=scheds)
    assert (sampler.name, sched.label, fell) == ("DPM++ 2M", "Automatic", False)
    sampler, sched, _ = S.get_sampler_and_scheduler("DPM++ 2M", "Karras", convert_automatic=False, schedulers=scheds)
    assert sched.label == "Karras"


def test_default_scheduler_names_exist_in_the_schedule_table():
    names = {s.name for s in _real_schedulers()}
    assert {s.default_scheduler for s in SAMPLERS if s.default_scheduler} <= names


def test_importing_samplers_loads_no_web_framework():
    import subprocess
    import sys

    code = "import sys, webui.core.generation.samplers; print('gradio' in sys.modules or 'fastapi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
