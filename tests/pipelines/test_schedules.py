"""pipelines.schedules against A1111 v1.10.1's sigma schedules for SD1.5 (and SDXL's AYS table).

Where the expected numbers come from: a separate scratch script (not part of the repository, not importing
``pipelines``) transcribed A1111 v1.10.1 ``modules/sd_schedulers.py``, ``KDiffusionSampler.get_sigmas`` in
``modules/sd_samplers_kdiffusion.py`` and k-diffusion ab527a9 (the commit A1111 pins) ``sampling.get_sigmas_*`` and
``external.DiscreteSchedule`` line by line, built the SD1.5 model schedule as ldm does (float64 scaled-linear betas
0.00085..0.012, cumprod, float32 buffer, ``CompVisDenoiser`` sigmas), and printed the results with torch on the CPU.
The Beta rows were computed the same way with ``scipy.stats.beta.ppf`` (scipy 1.17), as A1111 does. Values are float32
printed to 9 significant digits; 30-step rows record the length, the first 5, the last 3 and the float64 sum.
"""

from __future__ import annotations

import inspect
from typing import NamedTuple

import pytest
import torch

from pipelines import schedules
from pipelines.schedules import SCHEDULERS, ModelSigmas, alphas_cumprod_sd, compute_sigmas, find_scheduler

TOL = 1e-5


class S(NamedTuple):
    """A long schedule: its length, first five and last three values, and the sum of all values."""

    length: int
    first5: list
    last3: list
    total: float


# (schedule name, steps) -> A1111's sigmas for SD1.5 with default options
EXPECTED = {
    ("uniform", 1): [14.6146431, 0],
    ("uniform", 2): [14.6146431, 0.0291675366, 0],
    ("uniform", 10): [14.6146431, 7.83988285, 4.60917425, 2.91830707, 1.95016146, 1.34492779, 0.932358027,
        0.624976933, 0.368657798, 0.0291675366, 0],
    ("uniform", 30): S(31, [14.6146431, 11.91751, 9.81415844, 8.15843964, 6.84304333], [0.183450952, 0.0291675366,
        0], 95.04478576),
    ("karras", 1): [14.6146431, 0],
    ("karras", 2): [14.6146431, 0.0291675385, 0],
    ("karras", 10): [14.6146431, 9.10293388, 5.47839928, 3.16860938, 1.74942338, 0.914076567, 0.446920872,
        0.201399833, 0.0819110796, 0.0291675385, 0],
    ("karras", 30): S(31, [14.6146431, 12.6606045, 10.9349232, 9.4149189, 8.07973289], [0.0408581831,
        0.0291675385, 0], 97.43249076),
    ("exponential", 1): [14.6146431, 0],
    ("exponential", 2): [14.6146431, 0.0291675366, 0],
    ("exponential", 10): [14.6146431, 7.32488155, 3.67124176, 1.84003198, 0.922226787, 0.462221593, 0.231666163,
        0.116111435, 0.0581952259, 0.0291675366, 0],
    ("exponential", 30): S(31, [14.6146431, 11.7947464, 9.51894951, 7.68226719, 6.19997263], [0.0361409336,
        0.0291675366, 0], 75.62113132),
    ("polyexponential", 1): [14.6146431, 0],
    ("polyexponential", 2): [14.6146431, 0.0291675366, 0],
    ("polyexponential", 10): [14.6146431, 7.32488346, 3.67124176, 1.84003234, 0.922227025, 0.462221593,
        0.231666163, 0.116111435, 0.0581952259, 0.0291675366, 0],
    ("polyexponential", 30): S(31, [14.6146431, 11.7947464, 9.51894951, 7.68226719, 6.19997263], [0.0361409336,
        0.0291675366, 0], 75.62113118),
    ("sgm_uniform", 1): [14.6146431, 0],
    ("sgm_uniform", 2): [14.6146431, 1.61558032, 0],
    ("sgm_uniform", 10): [14.6146431, 8.30717278, 5.0924077, 3.32506895, 2.27973056, 1.61558032, 1.16286457,
        0.831883729, 0.571188927, 0.343704849, 0],
    ("sgm_uniform", 30): S(31, [14.6146431, 11.9969053, 9.93908215, 8.30717278, 7.0018549], [0.266689807,
        0.180125937, 0], 98.02473165),
    ("kl_optimal", 1): [14.6146326, 0.0291675348],
    ("kl_optimal", 2): [14.6146326, 0.961588383, 0.0291675348],
    ("kl_optimal", 10): [14.6146326, 4.5650382, 2.63288832, 1.78644598, 1.29476786, 0.961588383, 0.711627066,
        0.509419739, 0.335637689, 0.178346843, 0.0291675348],
    ("kl_optimal", 30): S(31, [14.6146326, 8.47662449, 5.94896936, 4.5650382, 3.68832874], [0.128073975,
        0.0784301683, 0.0291675348], 62.80918738),
    ("align_your_steps", 1): [0.0289999992, 0],
    ("align_your_steps", 2): [14.6149998, 0.0289999992, 0],
    ("align_your_steps", 10): [14.6149998, 6.11351347, 3.56511378, 2.39387345, 1.64995551, 1.13578737,
        0.742518306, 0.445007443, 0.169205129, 0.0289999992, 0],
    ("align_your_steps", 30): S(31, [14.6149998, 11.0377846, 8.33613968, 6.36058426, 5.32193327], [0.0513431691,
        0.0289999992, 0], 80.15123932),
    ("simple", 1): [14.6146421, 0],
    ("simple", 2): [14.6146421, 1.61288619, 0],
    ("simple", 10): [14.6146421, 8.30280399, 5.08776283, 3.32108307, 2.27646303, 1.61288619, 1.16057837,
        0.829859555, 0.569284916, 0.341673881, 0],
    ("simple", 30): S(31, [14.6146421, 12.0177441, 9.97203827, 8.30280399, 7.00887299], [0.265252471, 0.17925863,
        0], 98.07744016),
    ("normal", 1): [14.6146431, 0],
    ("normal", 2): [14.6146431, 0.0291675366, 0],
    ("normal", 10): [14.6146431, 7.83988285, 4.60917425, 2.91830707, 1.95016146, 1.34492779, 0.932358027,
        0.624976933, 0.368657798, 0.0291675366, 0],
    ("normal", 30): S(31, [14.6146431, 11.91751, 9.81415844, 8.15843964, 6.84304333], [0.183450952, 0.0291675366,
        0], 95.04478576),
    ("ddim", 1): [0.041314479, 0],
    ("ddim", 2): [1.62369227, 0.041314479, 0],
    ("ddim", 10): [8.39068508, 5.13443089, 3.34776378, 2.29285383, 1.62369227, 1.16821599, 0.835652769,
        0.574050307, 0.346186757, 0.041314479, 0],
    ("ddim", 30): S(32, [13.925848, 11.4768467, 9.54358196, 8.00431061, 6.76838303], [0.182166025, 0.041314479,
        0], 95.06569917),
    ("beta", 1): [14.6146421, 0],
    ("beta", 2): [14.6146421, 0.0291675348, 0],
    ("beta", 10): [14.6146421, 13.9277859, 12.4909811, 10.5976086, 8.44243717, 6.20137215, 4.04620123, 2.15282869,
        0.716024041, 0.0291675348, 0],
    ("beta", 30): S(31, [14.6146421, 14.5159225, 14.3023825, 14.0040817, 13.6349258], [0.127887368, 0.0291675348,
        0], 219.6571448),
}

# A1111 with other options, SD1.5 unless named SDXL (same provenance)
AYS_SDXL = {
    1: [0.0289999992, 0],
    2: [14.6149998, 0.0289999992, 0],
    10: [14.6149998, 5.96339703, 3.33896518, 1.85504568, 1.10232639, 0.674958587, 0.431141734, 0.260620564,
        0.122519389, 0.0289999992, 0],
    11: [14.6149998, 6.31500006, 3.77099991, 2.18099999, 1.34200001, 0.861999989, 0.555000007, 0.379999995,
        0.233999997, 0.112999998, 0.0289999992, 0],
    30: S(31, [14.6149998, 10.9429617, 8.19352722, 6.20371866, 5.19325209], [0.0463533252, 0.0289999992, 0],
        72.11721931),
}
AYS_SD15_11 = [14.6149998, 6.4749999, 3.86100006, 2.69700003, 1.88600004, 1.39600003, 0.963, 0.65200001,
    0.398999989, 0.151999995, 0.0289999992, 0]
AUTOMATIC_NO_DEFAULT = {1: [14.6146431, 0], 2: [14.6146431, 0.0291675366, 0], 10: [14.6146431, 7.83988285,
    4.60917425, 2.91830707, 1.95016146, 1.34492779, 0.932358027, 0.624976933, 0.368657798, 0.0291675366, 0], 30: S(31,
    [14.6146431, 11.91751, 9.81415844, 8.15843964, 6.84304333], [0.183450952, 0.0291675366, 0], 95.04478576)}
AUTOMATIC_KARRAS_10 = [14.6146431, 9.10293388, 5.47839928, 3.16860938, 1.74942338, 0.914076567, 0.446920872,
    0.201399833, 0.0819110796, 0.0291675385, 0]
# DPM2-style sampler option discard_next_to_last_sigma, Karras, 10 steps
KARRAS_DISCARD_10 = [14.6146431, 9.55826855, 6.08215952, 3.75126195, 2.23216105, 1.27410495, 0.692573905,
    0.355184764, 0.169757962, 0.0743636265, 0]
# setting always_discard_next_to_last_sigma, Automatic with no sampler default, 10 steps
AUTOMATIC_ALWAYS_DISCARD_10 = [14.6146431, 8.30717278, 5.0924077, 3.32506895, 2.27973056, 1.61558032, 1.16286457,
    0.831883729, 0.571188927, 0.343704849, 0]
# sampler discards and the setting is on too (DPM++ 3M SDE style, Exponential), 10 steps
EXPONENTIAL_BOTH_DISCARD_10 = [14.6146431, 7.84873104, 4.21512604, 2.26371479, 1.21571803, 0.652895868,
    0.350634873, 0.188306913, 0.101129398, 0.0543110929, 0]
# settings sigma_min=0.1, sigma_max=10, rho=5, 10 steps
OVERRIDES_10 = {
    "karras": [10.000001, 7.07447958, 4.87760258, 3.26389909, 2.10869908, 1.30651891, 0.7694574, 0.42558983,
        0.217365578, 0.100000016, 0],
    "polyexponential": [10, 1.28782809, 0.37089932, 0.183389515, 0.127598122, 0.108313613, 0.101913214,
        0.100249887, 0.100007795, 0.099999994, 0],
    "exponential": [10, 5.99484253, 3.59381342, 2.15443444, 1.29154956, 0.77426374, 0.464158922, 0.278255939,
        0.166810051, 0.099999994, 0],
    "kl_optimal": [9.99999523, 4.14347601, 2.54824805, 1.7831279, 1.32021868, 0.99999994, 0.757450283,
        0.560812175, 0.392426431, 0.241343156, 0.100000001],
    "sgm_uniform": [10, 6.20286798, 4.07967663, 2.81499434, 2.01374865, 1.47440386, 1.08899534, 0.796565592,
        0.559811473, 0.350003213, 0],
    "normal": [10, 5.90468645, 3.74274254, 2.50906229, 1.74960113, 1.24592829, 0.886327147, 0.609081864,
        0.373029649, 0.099999994, 0],
    "uniform": [14.6146431, 7.83988285, 4.60917425, 2.91830707, 1.95016146, 1.34492779, 0.932358027, 0.624976933,
        0.368657798, 0.0291675366, 0],
    "align_your_steps": [14.6149998, 6.11351347, 3.56511378, 2.39387345, 1.64995551, 1.13578737, 0.742518306,
        0.445007443, 0.169205129, 0.0289999992, 0],
    "beta": [10, 9.53379059, 8.55854893, 7.27340841, 5.81056976, 4.28943014, 2.82659149, 1.54145086, 0.566209018,
        0.100000001, 0],
}
# setting rho=7 with Polyexponential (default rho 1), 10 steps
POLYEXPONENTIAL_RHO7_10 = [14.6146431, 0.445347846, 0.0850693285, 0.0419679694, 0.0322849192, 0.0297953282,
    0.0292505678, 0.0291723907, 0.0291675702, 0.0291675366, 0]
# setting use_old_karras_scheduler_sigmas, Karras, 10 steps
KARRAS_OLD_SIGMAS_10 = [10, 6.80216455, 4.52420378, 2.93411994, 1.84930205, 1.12818193, 0.662885845, 0.372822255,
    0.19914104, 0.100000001, 0]
# settings beta_dist_alpha=0.5, beta_dist_beta=0.7, 10 steps
BETA_A05_B07_10 = [14.6146421, 13.24405, 11.103281, 8.733881, 6.39526081, 4.26742649, 2.48372507, 1.14222908,
    0.310732722, 0.0291675348, 0]
# Beta with always_discard_next_to_last_sigma, 10 steps
BETA_DISCARD_10 = [14.6146421, 14.0372849, 12.8217697, 11.2013931, 9.32447624, 7.32190466, 5.31933355, 3.44241667,
    1.8220396, 0.606524885, 0]


@pytest.fixture(scope="module")
def inner() -> ModelSigmas:
    return ModelSigmas(alphas_cumprod_sd())


def assert_schedule(actual: torch.Tensor, expected) -> None:
    assert actual.dtype == torch.float32
    values = [float(v) for v in actual]
    if isinstance(expected, S):
        assert len(values) == expected.length
        assert values[:5] == pytest.approx(expected.first5, abs=TOL)
        assert values[-3:] == pytest.approx(expected.last3, abs=TOL)
        assert sum(values) == pytest.approx(expected.total, abs=10 * TOL)
    else:
        assert values == pytest.approx(expected, abs=TOL)


# ---- the model discretisation --------------------------------------------------------------------------------------


def test_model_sigmas_are_sd15s(inner):
    assert len(inner) == 1000
    assert inner.sigmas.dtype == torch.float32
    assert bool((inner.sigmas[1:] > inner.sigmas[:-1]).all())
    assert inner.sigma_min == pytest.approx(0.0291675348, abs=1e-9)
    assert inner.sigma_max == pytest.approx(14.6146421, abs=1e-6)
    assert torch.equal(inner.log_sigmas, inner.sigmas.log())


def test_sigma_to_t_and_back(inner):
    assert inner.sigma_to_t(torch.tensor(inner.sigma_max)).item() == pytest.approx(999.0)
    assert inner.sigma_to_t(torch.tensor(inner.sigma_min)).item() == pytest.approx(0.0)
    assert inner.sigma_to_t(inner.sigmas[500]).item() == pytest.approx(500.0, abs=1e-3)
    t = torch.tensor([0.0, 17.0, 250.5, 998.25, 999.0])
    assert torch.allclose(inner.sigma_to_t(inner.t_to_sigma(t)), t, atol=1e-3)
    assert torch.allclose(inner.t_to_sigma(torch.tensor([3.0, 640.0])), inner.sigmas[[3, 640]], rtol=1e-6, atol=0)
    # out-of-range sigmas clamp to the table's ends
    assert inner.sigma_to_t(torch.tensor(100.0)).item() == pytest.approx(999.0)
    assert inner.sigma_to_t(torch.tensor(0.001)).item() == pytest.approx(0.0)
    nearest = int(round(inner.sigma_to_t(torch.tensor(1.0)).item()))
    assert inner.sigma_to_t(torch.tensor(1.0), quantize=True).item() == nearest


def test_get_sigmas_is_k_diffusion_discretisation(inner):
    assert_schedule(inner.get_sigmas(10), AUTOMATIC_NO_DEFAULT[10])
    assert torch.equal(inner.get_sigmas(), torch.cat([inner.sigmas.flip(0), torch.zeros(1)]))


# ---- every schedule at 1, 2, 10 and 30 steps ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "steps"), list(EXPECTED))
def test_schedule_equals_a1111(inner, name, steps):
    sigmas, extra = compute_sigmas(name, steps, inner)
    assert_schedule(sigmas, EXPECTED[(name, steps)])
    assert extra["Schedule type"] == find_scheduler(name).label


@pytest.mark.parametrize(("name", "steps"), list(EXPECTED))
def test_schedule_functions_direct(inner, name, steps):
    fn = find_scheduler(name).function
    out = fn(steps, inner.sigma_min, inner.sigma_max, inner, "cpu", rho=None, is_sdxl=False, alpha=0.6, beta=0.6)
    assert_schedule(out, EXPECTED[(name, steps)])


def test_labels_are_accepted_like_names(inner):
    for entry in SCHEDULERS[1:]:
        by_name, _ = compute_sigmas(entry.name, 7, inner)
        by_label, _ = compute_sigmas(entry.label, 7, inner)
        assert torch.equal(by_name, by_label)


def test_every_schedule_ends_in_zero_except_kl_optimal(inner):
    for entry in SCHEDULERS[1:]:
        sigmas, _ = compute_sigmas(entry.name, 12, inner)
        if entry.name == "kl_optimal":  # A1111 v1.10.1 appends no zero: the last sigma is sigma_min
            assert sigmas[-1].item() == pytest.approx(inner.sigma_min, abs=1e-7)
        else:
            assert sigmas[-1].item() == 0.0


def test_ddim_schedule_gives_an_extra_step_when_1000_is_not_a_multiple(inner):
    assert len(compute_sigmas("ddim", 30, inner)[0]) == 32  # A1111 quirk: 31 sampling steps for 30
    assert len(compute_sigmas("ddim", 10, inner)[0]) == 11


# ---- Automatic -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 10, 30])
@pytest.mark.parametrize("scheduler", [None, "", "Automatic", "automatic"])
def test_automatic_without_sampler_default_is_the_model_discretisation(inner, scheduler, steps):
    sigmas, extra = compute_sigmas(scheduler, steps, inner)
    assert_schedule(sigmas, AUTOMATIC_NO_DEFAULT[steps])
    assert extra == {}


def test_automatic_with_sampler_default(inner):
    sigmas, extra = compute_sigmas("Automatic", 10, inner, sampler_default_scheduler="karras")
    assert_schedule(sigmas, AUTOMATIC_KARRAS_10)
    assert extra == {"Schedule type": "Karras"}  # A1111 writes the resolved label
    # an explicit schedule wins over the sampler's default
    sigmas, extra = compute_sigmas("Exponential", 10, inner, sampler_default_scheduler="karras")
    assert_schedule(sigmas, EXPECTED[("exponential", 10)])
    assert extra == {"Schedule type": "Exponential"}


def test_model_discretisation_ignores_overrides(inner):
    sigmas, extra = compute_sigmas("Automatic", 10, inner, sigma_min_override=0.1, sigma_max_override=10,
        rho_override=5)
    assert_schedule(sigmas, AUTOMATIC_NO_DEFAULT[10])
    assert extra == {}


# ---- discard penultimate sigma -------------------------------------------------------------------------------------


def test_sampler_discard_next_to_last_sigma(inner):
    sigmas, extra = compute_sigmas("karras", 10, inner, discard_next_to_last_sigma=True)
    assert_schedule(sigmas, KARRAS_DISCARD_10)
    assert len(sigmas) == 11
    assert "Discard penultimate sigma" not in extra
    full, _ = compute_sigmas("karras", 11, inner)
    assert torch.equal(sigmas, torch.cat([full[:-2], full[-1:]]))


def test_always_discard_setting_adds_infotext(inner):
    sigmas, extra = compute_sigmas(None, 10, inner, always_discard_next_to_last_sigma=True)
    assert_schedule(sigmas, AUTOMATIC_ALWAYS_DISCARD_10)
    assert extra == {"Discard penultimate sigma": True}


def test_always_discard_with_a_discarding_sampler_adds_nothing(inner):
    sigmas, extra = compute_sigmas("exponential", 10, inner, discard_next_to_last_sigma=True,
                                   always_discard_next_to_last_sigma=True)
    assert_schedule(sigmas, EXPONENTIAL_BOTH_DISCARD_10)
    assert extra == {"Schedule type": "Exponential"}


def test_beta_with_discard(inner):
    sigmas, _ = compute_sigmas("beta", 10, inner, always_discard_next_to_last_sigma=True)
    assert_schedule(sigmas, BETA_DISCARD_10)


# ---- overrides -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(OVERRIDES_10))
def test_sigma_and_rho_overrides(inner, name):
    sigmas, extra = compute_sigmas(name, 10, inner, sigma_min_override=0.1, sigma_max_override=10.0, rho_override=5.0)
    assert_schedule(sigmas, OVERRIDES_10[name])
    entry = find_scheduler(name)
    expected = {"Schedule type": entry.label, "Schedule min sigma": 0.1, "Schedule max sigma": 10.0}
    if entry.default_rho != -1:  # only Karras and Polyexponential take rho
        expected["Schedule rho"] = 5.0
    if name == "beta":
        expected.update({"Beta schedule alpha": 0.6, "Beta schedule beta": 0.6})
    assert extra == expected


def test_overrides_equal_to_the_model_or_default_are_not_applied(inner):
    sigmas, extra = compute_sigmas("karras", 10, inner, sigma_min_override=inner.sigma_min,
                                   sigma_max_override=inner.sigma_max, rho_override=7.0)
    assert_schedule(sigmas, EXPECTED[("karras", 10)])
    assert extra == {"Schedule type": "Karras"}


def test_rho_for_polyexponential(inner):
    sigmas, extra = compute_sigmas("polyexponential", 10, inner, rho_override=7.0)
    assert_schedule(sigmas, POLYEXPONENTIAL_RHO7_10)
    assert extra == {"Schedule type": "Polyexponential", "Schedule rho": 7.0}
    _, extra = compute_sigmas("polyexponential", 10, inner, rho_override=1.0)
    assert "Schedule rho" not in extra


def test_old_karras_sigmas_setting(inner):
    sigmas, extra = compute_sigmas("karras", 10, inner, use_old_karras_scheduler_sigmas=True)
    assert_schedule(sigmas, KARRAS_OLD_SIGMAS_10)
    assert extra == {"Schedule type": "Karras"}


def test_beta_options(inner):
    sigmas, extra = compute_sigmas("Beta", 10, inner, beta_alpha=0.5, beta_beta=0.7)
    assert_schedule(sigmas, BETA_A05_B07_10)
    assert extra == {"Schedule type": "Beta", "Beta schedule alpha": 0.5, "Beta schedule beta": 0.7}


def test_beta_quantile():
    assert schedules.beta_ppf(0.0, 0.6, 0.6) == 0.0
    assert schedules.beta_ppf(1.0, 0.6, 0.6) == 1.0
    assert schedules.beta_ppf(0.5, 0.6, 0.6) == pytest.approx(0.5, abs=1e-14)  # symmetric
    assert schedules.beta_ppf(0.3, 1.0, 1.0) == pytest.approx(0.3, abs=1e-14)  # uniform
    assert schedules.beta_ppf(0.25, 2.0, 1.0) == pytest.approx(0.5, abs=1e-14)  # cdf x**2
    assert schedules.beta_ppf(0.19, 1.0, 2.0) == pytest.approx(0.1, abs=1e-14)  # cdf 1-(1-x)**2


# ---- Align Your Steps ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 10, 11, 30])
def test_align_your_steps_sdxl(inner, steps):
    sigmas, _ = compute_sigmas("Align Your Steps", steps, inner, is_sdxl=True)
    assert_schedule(sigmas, AYS_SDXL[steps])


def test_align_your_steps_tables_differ_and_11_steps_is_the_table(inner):
    sd15, _ = compute_sigmas("align_your_steps", 11, inner)
    sdxl, _ = compute_sigmas("align_your_steps", 11, inner, is_sdxl=True)
    assert_schedule(sd15, AYS_SD15_11)
    assert not torch.equal(sd15, sdxl)
    assert [round(float(v), 3) for v in sd15[:-1]] == list(schedules.AYS_SIGMAS_SD15)
    assert [round(float(v), 3) for v in sdxl[:-1]] == list(schedules.AYS_SIGMAS_SDXL)


# ---- hires pass and errors -----------------------------------------------------------------------------------------


def test_hires_pass_writes_hires_schedule_type_only_when_different(inner):
    _, extra = compute_sigmas("karras", 5, inner, is_hr_pass=True, first_pass_schedule_type="Karras")
    assert extra == {}
    _, extra = compute_sigmas("exponential", 5, inner, is_hr_pass=True, first_pass_schedule_type="Karras")
    assert extra == {"Hires schedule type": "Exponential"}


def test_unknown_schedule_lists_choices(inner):
    with pytest.raises(ValueError, match="Karras") as info:
        compute_sigmas("Krras", 10, inner)
    assert "Align Your Steps" in str(info.value)
    with pytest.raises(ValueError):
        find_scheduler("SGMUniform")  # A1111's map has names and labels only
    assert find_scheduler("SGMUniform", aliases=True).name == "sgm_uniform"


def test_result_device_and_dtype(inner):
    sigmas, _ = compute_sigmas("karras", 4, inner, torch.device("cpu"))
    assert sigmas.device.type == "cpu" and sigmas.dtype == torch.float32


# ---- the table -----------------------------------------------------------------------------------------------------


def test_scheduler_table_matches_spec_15_2():
    rows = [(s.name, s.label, s.aliases, s.default_rho, s.need_inner_model, s.function is None) for s in SCHEDULERS]
    assert rows == [
        ("automatic", "Automatic", (), -1.0, False, True),
        ("uniform", "Uniform", (), -1.0, True, False),
        ("karras", "Karras", (), 7.0, False, False),
        ("exponential", "Exponential", (), -1.0, False, False),
        ("polyexponential", "Polyexponential", (), 1.0, False, False),
        ("sgm_uniform", "SGM Uniform", ("SGMUniform",), -1.0, True, False),
        ("kl_optimal", "KL Optimal", (), -1.0, False, False),
        ("align_your_steps", "Align Your Steps", (), -1.0, False, False),
        ("simple", "Simple", (), -1.0, True, False),
        ("normal", "Normal", (), -1.0, True, False),
        ("ddim", "DDIM", (), -1.0, True, False),
        ("beta", "Beta", (), -1.0, True, False),
    ]


def test_schedule_functions_share_one_signature():
    for entry in SCHEDULERS[1:]:
        params = inspect.signature(entry.function).parameters
        assert list(params)[:5] == ["n", "sigma_min", "sigma_max", "inner", "device"], entry.name
