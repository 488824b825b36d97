"""webui.core.generation.noise against A1111 v1.10.1's rng.py / rng_philox.py / processing.py seed handling.

Where the recorded numbers come from:
* CPU source: ``torch.manual_seed(seed); torch.randn(shape)`` on the CPU (deterministic across machines), and a scratch
  transcription of A1111 ``rng.ImageRNG`` (global-RNG version, randn_source "CPU") for the batch, variation, seed
  resize and ENSD cases. The scratch script is not part of the repository and does not import ``webui``.
* NV source: the docstring of A1111 ``modules/rng_philox.py`` (``Generator(seed=0).randn((3, 4))``, which A1111 prints
  to 8 digits and which is itself NVIDIA's ``torch.randn`` output, hence the 1e-6 tolerance) and an independent
  pure-Python Philox4x32-10 + Box-Muller written from the algorithm with Python integers; A1111's numpy code was
  checked to give those same numbers bit for bit.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from webui.core.generation import noise
from webui.core.generation.noise import ImageRNG, PhiloxGenerator, resolve_seeds, slerp

SHAPE = (4, 64, 64)

CPU_12345_FIRST8 = [-1.47980773, 0.487305999, -3.01279378, 0.443855196, 0.359756202, -0.0123481303, 0.218522444,
                    -1.28146839]
CPU_12345_SUM = -94.8553324934
CPU_12345_SECOND_FIRST4 = [-0.698099375, -0.263079882, -0.911585152, 1.01634157]

# A1111 rng_philox docstring, Generator(seed=0).randn(shape=(3, 4))
NV_DOCSTRING_SEED0 = [-0.92466259, -0.42534415, -2.6438457, 0.14518388, -0.12086647, -0.57972564, -0.62285122,
                      -0.32838709, -1.07454231, -0.36314407, -1.67105067, 2.26550497]
# independent pure-Python Philox port
NV_SEED0_12 = [-0.924662411, -0.425343961, -2.6438458, 0.145183876, -0.120866507, -0.579725683, -0.622851312,
               -0.328387141, -1.07454205, -0.3631441, -1.67105043, 2.26550508]
NV_12345_FIRST8 = [0.578641295, -0.524755478, -0.291903734, 0.0140138948, -2.1647296, 0.278987259, 1.61639607,
                   -0.167788699]
NV_12345_OFFSET1_FIRST8 = [2.70128512, -0.710389614, -1.37546325, -1.51998472, 1.86082971, -0.211653769, 0.0992371812,
                           -0.866603553]
NV_12345_SUM = -207.73388518
NV_4294967293_FIRST4 = [-1.11401427, -0.807963192, -1.29422283, 0.141948551]


def first4_sum(t: torch.Tensor) -> tuple[list[float], float, float]:
    return t.flatten()[:4].tolist(), float(t.double().sum()), float(t.double().abs().sum())


def assert_recorded(t: torch.Tensor, first4, total, abstotal) -> None:
    f4, s, a = first4_sum(t)
    assert f4 == pytest.approx(first4, abs=1e-6)
    assert s == pytest.approx(total, abs=1e-3)
    assert a == pytest.approx(abstotal, abs=1e-2)


# ---- sources -------------------------------------------------------------------------------------------------------


def test_cpu_noise_for_seed_12345():
    x = noise.randn(12345, SHAPE, "CPU")
    assert x.shape == SHAPE and x.dtype == torch.float32
    assert x.flatten()[:8].tolist() == pytest.approx(CPU_12345_FIRST8, abs=1e-7)
    assert float(x.double().sum()) == pytest.approx(CPU_12345_SUM, abs=1e-4)


def test_image_rng_starting_noise_for_seed_12345():
    x = ImageRNG(SHAPE, [12345], randn_source="CPU").first()
    assert x.shape == (1, *SHAPE)
    assert x.flatten()[:8].tolist() == pytest.approx(CPU_12345_FIRST8, abs=1e-7)
    assert float(x.double().sum()) == pytest.approx(CPU_12345_SUM, abs=1e-4)


def test_gpu_source_on_a_cpu_device_is_the_cpu_generator():
    assert torch.equal(noise.randn(12345, SHAPE, "GPU", "cpu"), noise.randn(12345, SHAPE, "CPU", "cpu"))


def test_randn_local_and_generators():
    assert torch.equal(noise.randn_local(12345, SHAPE, "CPU"), noise.randn(12345, SHAPE, "CPU"))
    g = noise.create_generator(12345, "CPU")
    first = noise.randn(999, SHAPE, "CPU", generator=g)  # with a generator the seed argument does not matter
    assert first.flatten()[:8].tolist() == pytest.approx(CPU_12345_FIRST8, abs=1e-7)
    second = noise.randn_without_seed(SHAPE, g, "CPU")
    assert second.flatten()[:4].tolist() == pytest.approx(CPU_12345_SECOND_FIRST4, abs=1e-7)
    like = noise.randn_like(torch.zeros(2, 3, dtype=torch.float64), noise.create_generator(1, "CPU"), "CPU")
    assert like.shape == (2, 3) and like.dtype == torch.float64


def test_unknown_source_lists_choices():
    with pytest.raises(ValueError, match="GPU, CPU, NV"):
        noise.randn(1, (2,), "cuda")


# ---- NV (Philox) ---------------------------------------------------------------------------------------------------


def test_philox_matches_a1111_docstring():
    out = PhiloxGenerator(0).randn((3, 4))
    assert out.dtype == np.float32 and out.shape == (3, 4)
    assert out.flatten().tolist() == pytest.approx(NV_DOCSTRING_SEED0, abs=1e-6)
    assert out.flatten().tolist() == pytest.approx(NV_SEED0_12, abs=1e-7)


def test_philox_matches_independent_port():
    g = PhiloxGenerator(12345)
    a = g.randn(SHAPE)
    b = g.randn(SHAPE)  # the second call uses counter offset 1
    assert a.flatten()[:8].tolist() == pytest.approx(NV_12345_FIRST8, abs=1e-7)
    assert b.flatten()[:8].tolist() == pytest.approx(NV_12345_OFFSET1_FIRST8, abs=1e-7)
    assert float(a.astype(np.float64).sum()) == pytest.approx(NV_12345_SUM, abs=1e-4)
    assert PhiloxGenerator(4294967293).randn((4,)).tolist() == pytest.approx(NV_4294967293_FIRST4, abs=1e-7)


def test_nv_source_through_image_rng():
    rng = ImageRNG(SHAPE, [12345, 0], randn_source="NV")
    first = rng.next()
    assert first[0].flatten()[:8].tolist() == pytest.approx(NV_12345_FIRST8, abs=1e-7)
    assert first[1].flatten()[:12].tolist() == pytest.approx(NV_SEED0_12, abs=1e-7)
    second = rng.next()
    assert second[0].flatten()[:8].tolist() == pytest.approx(NV_12345_OFFSET1_FIRST8, abs=1e-7)
    assert torch.equal(noise.randn_local(12345, SHAPE, "NV"), first[0])


# ---- batches, variation seeds, seed resize, ENSD -------------------------------------------------------------------


def test_batch_uses_one_generator_per_image():
    rng = ImageRNG(SHAPE, [12345, 12346], randn_source="CPU")
    first, second = rng.next(), rng.next()
    assert first.shape == (2, *SHAPE)
    assert_recorded(first[0], [-1.47980773, 0.487305999, -3.01279378, 0.443855196], -94.85533249, 12917.4142)
    assert_recorded(first[1], [1.1709094, 0.831371367, -2.73405027, -1.57619929], -6.060723138, 13018.34594)
    assert_recorded(second[0], [-0.698099375, -0.263079882, -0.911585152, 1.01634157], -22.55358418, 13062.40198)
    assert_recorded(second[1], [0.64164114, 1.20311105, 1.60178792, 0.426860601], 101.2347637, 12970.63909)
    # image 2 of a batch is the same as that seed generated alone
    alone = ImageRNG(SHAPE, [12346], randn_source="CPU")
    assert torch.equal(alone.next()[0], first[1])
    assert torch.equal(alone.next()[0], second[1])


def test_variation_strength_zero_is_the_plain_seed():
    plain = ImageRNG(SHAPE, [12345], randn_source="CPU").first()
    varied = ImageRNG(SHAPE, [12345], subseeds=[777], subseed_strength=0.0, randn_source="CPU").first()
    assert torch.equal(plain, varied)


def test_variation_strength_one_is_the_subseed():
    sub = ImageRNG(SHAPE, [777], randn_source="CPU").first()
    varied = ImageRNG(SHAPE, [12345], subseeds=[777], subseed_strength=1.0, randn_source="CPU").first()
    assert torch.allclose(varied, sub, atol=1e-6)
    # a short subseed list uses subseed 0 for the rest
    two = ImageRNG(SHAPE, [12345, 12345], subseeds=[777], subseed_strength=1.0, randn_source="CPU").first()
    assert torch.allclose(two[1], ImageRNG(SHAPE, [0], randn_source="CPU").first()[0], atol=1e-6)


def test_variation_strength_between():
    rng = ImageRNG(SHAPE, [12345], subseeds=[777], subseed_strength=0.3, randn_source="CPU")
    assert_recorded(rng.next(), [-1.2421397, 0.415693879, -2.73908806, 0.0332222283], -54.51442845, 12976.54904)
    # later per-step noise comes from the image's own seed, not the subseed
    assert_recorded(rng.next(), [-0.698099375, -0.263079882, -0.911585152, 1.01634157], -22.55358418, 13062.40198)


def test_seed_resize_keeps_the_overlapping_region():
    # resize from 640x384 to 512x512: old latent 48x80, new 64x64
    x = ImageRNG(SHAPE, [12345], seed_resize_from_h=384, seed_resize_from_w=640, randn_source="CPU").first()[0]
    old = noise.randn(12345, (4, 48, 80), "CPU")
    full = noise.randn(12345, SHAPE, "CPU")
    assert torch.equal(x[:, 8:56, :], old[:, :, 8:72])  # rows centred, columns cropped to the centre
    assert torch.equal(x[:, :8, :], full[:, :8, :])
    assert torch.equal(x[:, 56:, :], full[:, 56:, :])
    assert_recorded(x, [-1.47980773, 0.487305999, -3.01279378, 0.443855196], 22.40572404, 12906.63753)


def test_seed_resize_with_variation():
    # from 256x768 (latent 96x32) with variation 0.5
    x = ImageRNG(SHAPE, [12345], subseeds=[777], subseed_strength=0.5, seed_resize_from_h=768, seed_resize_from_w=256,
                 randn_source="CPU").first()[0]
    old = slerp(0.5, noise.randn(12345, (4, 96, 32), "CPU"), noise.randn(777, (4, 96, 32), "CPU"))
    assert torch.equal(x[:, :, 16:48], old[:, 16:80, :])
    assert_recorded(x, [-1.47980773, 0.487305999, -3.01279378, 0.443855196], -97.78416757, 13164.75759)


def test_seed_resize_to_the_same_size_or_unset_is_plain():
    plain = ImageRNG(SHAPE, [12345], randn_source="CPU").first()
    same = ImageRNG(SHAPE, [12345], seed_resize_from_h=512, seed_resize_from_w=512, randn_source="CPU").first()
    unset = ImageRNG(SHAPE, [12345], seed_resize_from_h=-1, seed_resize_from_w=-1, randn_source="CPU").first()
    one_side = ImageRNG(SHAPE, [12345], seed_resize_from_h=384, seed_resize_from_w=0, randn_source="CPU").first()
    assert torch.equal(plain, same) and torch.equal(plain, unset) and torch.equal(plain, one_side)


def test_ensd_reseeds_the_per_step_generators_after_the_starting_noise():
    rng = ImageRNG(SHAPE, [12345, 12346], randn_source="CPU", eta_noise_seed_delta=31337)
    start = rng.next()
    assert torch.equal(start, ImageRNG(SHAPE, [12345, 12346], randn_source="CPU").first())  # start unaffected
    step = rng.next()
    assert_recorded(step[0], [0.374910384, 0.181181788, 0.667175651, -0.792972147], -59.28692594, 13050.30185)
    assert_recorded(step[1], [-1.58843565, 1.33809304, 0.848641455, -0.211962998], -97.24038338, 12935.14832)
    assert torch.equal(step[0], noise.randn_local(12345 + 31337, SHAPE, "CPU"))


def test_ensd_written_to_infotext_only_for_ensd_samplers_with_eta():
    assert noise.uses_eta_noise_seed_delta(31337, 1.0, True)
    assert not noise.uses_eta_noise_seed_delta(31337, 0.0, True)
    assert not noise.uses_eta_noise_seed_delta(31337, 1.0, False)
    assert not noise.uses_eta_noise_seed_delta(0, 1.0, True)


def test_slerp_endpoints_and_parallel_fallback():
    a, b = noise.randn(1, SHAPE, "CPU"), noise.randn(2, SHAPE, "CPU")
    assert torch.allclose(slerp(0.0, a, b), a, atol=1e-6)
    assert torch.allclose(slerp(1.0, a, b), b, atol=1e-6)
    # almost parallel: A1111 falls back to low * val + high * (1 - val) (weights reversed)
    assert torch.allclose(slerp(0.25, a, a * 2), a * 0.25 + a * 2 * 0.75)


# ---- seeds ---------------------------------------------------------------------------------------------------------


def test_latent_shape():
    assert noise.latent_shape(512, 768) == (4, 96, 64)
    assert noise.latent_shape(513, 519) == (4, 64, 64)


def test_resolve_seeds_batch():
    assert resolve_seeds(100, 200, 0.0, 3) == ([100, 101, 102], [200, 201, 202])
    # with a variation strength every image keeps the seed; subseeds still count up
    assert resolve_seeds(100, 200, 0.5, 3) == ([100, 100, 100], [200, 201, 202])
    assert resolve_seeds([5, 9], [1, 2], 0.0, 2) == ([5, 9], [1, 2])
    assert resolve_seeds("42", "7", 0.0, 2) == ([42, 43], [7, 8])


def test_resolve_seeds_random():
    expected = random.Random(3)
    seed, subseed = expected.randrange(4294967294), expected.randrange(4294967294)  # seed drawn first
    assert resolve_seeds(-1, -1, 0.0, 2, rand=random.Random(3)) == ([seed, seed + 1], [subseed, subseed + 1])
    for value in (None, "", "not a number"):
        seeds, _ = resolve_seeds(value, 1, 0.0, 1, rand=random.Random(3))
        assert seeds == [seed]
    for _ in range(20):
        s, _ = resolve_seeds(-1, 0, 0.0, 1)
        assert 0 <= s[0] < 4294967294
