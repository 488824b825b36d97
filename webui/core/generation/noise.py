"""A1111 seed semantics and noise (modules/rng.py, modules/rng_philox.py, processing.py seeds), v1.10.1.

* ``resolve_seeds``: seed/subseed -1 drawn at random, image i of the job uses seed+i (or seed for all images when a
  variation strength is set) and subseed+i (processing.process_images_inner, get_fixed_seed).
* ``randn`` & co.: the three RNG sources of the ``randn_source`` setting (A1111 default "GPU"):
  "GPU" - a torch generator on the device (on a CPU-only machine that is the CPU generator; on MPS, A1111 uses the
  CPU), "CPU" - the CPU torch generator, result moved to the device (same noise on every device),
  "NV" - ``PhiloxGenerator``, A1111's numpy Philox4x32-10 + Box-Muller that imitates NVIDIA's ``torch.randn``.
* ``ImageRNG``: A1111's per-image generators: ``first()`` makes the starting noise (variation seed slerp, seed resize)
  and ``next()`` the per-step noise of ancestral / SDE samplers (A1111 routes k-diffusion's ``torch.randn_like`` to
  ``p.rng.next()``, sd_samplers_common.TorchHijack).

A1111 keeps a global RNG (``torch.manual_seed`` / a global ``nv_rng``). Here every draw that A1111 takes from a freshly
seeded global generator takes it from a fresh local generator seeded the same way, which gives the same numbers
without touching global state.
"""

from __future__ import annotations

import random
from typing import Sequence

import numpy as np
import torch

__all__ = [
    "RANDN_SOURCES",
    "OPT_C",
    "OPT_F",
    "latent_shape",
    "PhiloxGenerator",
    "create_generator",
    "randn",
    "randn_local",
    "randn_like",
    "randn_without_seed",
    "slerp",
    "ImageRNG",
    "fixed_seed",
    "resolve_seeds",
    "uses_eta_noise_seed_delta",
]

RANDN_SOURCES = ("GPU", "CPU", "NV")
OPT_C = 4  # A1111 shared.opt_C: latent channels (SD1/SD2/SDXL)
OPT_F = 8  # A1111 shared.opt_f: VAE downscale factor


def latent_shape(width: int, height: int, channels: int = OPT_C) -> tuple[int, int, int]:
    """A1111's per-image latent shape ``(opt_C, height // opt_f, width // opt_f)``."""
    return (int(channels), int(height) // OPT_F, int(width) // OPT_F)


# --------------------------------------------------------------------------------------------------------------------
# "NV" source: A1111 modules/rng_philox.py
# --------------------------------------------------------------------------------------------------------------------

_PHILOX_M = (0xD2511F53, 0xCD9E8D57)
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)
# float32 constants as rng_philox defines them; the arithmetic below promotes to float64 exactly as numpy does there
_TWO_POW32_INV = np.array([2.3283064e-10], dtype=np.float32)
_TWO_POW32_INV_2PI = np.array([2.3283064e-10 * 6.2831855], dtype=np.float32)


def _split_u64(x: np.ndarray) -> np.ndarray:
    """(N,) uint64 -> (2, N) uint32: row 0 the low words, row 1 the high words (rng_philox.uint32)."""
    return x.view(np.uint32).reshape(-1, 2).transpose(1, 0)


def _philox4x32_10(counter: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Philox 4x32 with 10 rounds (rng_philox.philox4_32), vectorised over columns; modifies its arguments."""
    for r in range(10):
        prod0 = _split_u64(counter[0].astype(np.uint64) * np.uint64(_PHILOX_M[0]))
        prod1 = _split_u64(counter[2].astype(np.uint64) * np.uint64(_PHILOX_M[1]))
        c1, c3 = counter[1].copy(), counter[3].copy()
        counter[0] = prod1[1] ^ c1 ^ key[0]
        counter[1] = prod1[0]
        counter[2] = prod0[1] ^ c3 ^ key[1]
        counter[3] = prod0[0]
        if r < 9:
            key[0] = key[0] + np.uint32(_PHILOX_W[0])
            key[1] = key[1] + np.uint32(_PHILOX_W[1])
    return counter


def _box_muller_first(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """First output of the Box-Muller transform (rng_philox.box_muller), float32."""
    u = x * _TWO_POW32_INV + _TWO_POW32_INV / 2
    v = y * _TWO_POW32_INV_2PI + _TWO_POW32_INV_2PI / 2
    s = np.sqrt(-2.0 * np.log(u))
    return (s * np.sin(v)).astype(np.float32)


class PhiloxGenerator:
    """A1111 ``rng_philox.Generator``: reproduces ``torch.randn(..., device="cuda")`` on the CPU with numpy.

    Each ``randn`` call uses the next counter offset (0, 1, 2, ...); element i of a call uses counter index i.
    """

    def __init__(self, seed: int):
        self.seed = int(seed)
        self.offset = 0

    def randn(self, shape: Sequence[int]) -> np.ndarray:
        n = 1
        for s in shape:
            n *= int(s)
        counter = np.zeros((4, n), dtype=np.uint32)
        counter[0] = self.offset
        counter[2] = np.arange(n, dtype=np.uint32)  # A1111: up to 2**32 numbers per call
        self.offset += 1
        key = np.empty(n, dtype=np.uint64)
        key.fill(self.seed % (1 << 64))
        key = _split_u64(key).copy()
        g = _philox4x32_10(counter, key)
        return _box_muller_first(g[0], g[1]).reshape(tuple(int(s) for s in shape))  # g[2], g[3] discarded


# --------------------------------------------------------------------------------------------------------------------
# rng.py functions, with the source and device explicit instead of read from shared.opts / devices
# --------------------------------------------------------------------------------------------------------------------


def _check_source(source: str) -> str:
    if source not in RANDN_SOURCES:
        raise ValueError(f"Unknown random number source {source!r}; choose one of: {', '.join(RANDN_SOURCES)}")
    return source


def _torch_rng_device(source: str, device: torch.device) -> torch.device:
    """Where A1111 draws torch noise: the CPU for "CPU" (and on MPS), else the device."""
    return torch.device("cpu") if source == "CPU" or device.type == "mps" else device


def create_generator(seed: int, source: str = "GPU", device: torch.device | str = "cpu"):
    """A1111 ``rng.create_generator``: a seeded generator for one image."""
    _check_source(source)
    if source == "NV":
        return PhiloxGenerator(seed)
    gen_device = _torch_rng_device(source, torch.device(device))
    return torch.Generator(gen_device).manual_seed(int(seed))


def _draw(shape, generator, device: torch.device, dtype=None) -> torch.Tensor:
    if isinstance(generator, PhiloxGenerator):
        out = torch.asarray(generator.randn(shape), device=device)
        return out if dtype is None else out.to(dtype)
    kw = {} if dtype is None else {"dtype": dtype}
    return torch.randn(tuple(shape), device=generator.device, generator=generator, **kw).to(device)


def randn(seed: int, shape: Sequence[int], source: str = "GPU", device: torch.device | str = "cpu",
          generator=None) -> torch.Tensor:
    """A1111 ``rng.randn``: noise for ``seed``.

    With ``generator`` the numbers come from that generator (A1111 still reseeds its global RNG with ``seed``, which
    has no effect here); without, from a fresh generator seeded with ``seed`` (= A1111's freshly seeded global RNG).
    """
    device = torch.device(device)
    if generator is None:
        generator = create_generator(seed, source, device)
    return _draw(shape, generator, device)


def randn_local(seed: int, shape: Sequence[int], source: str = "GPU",
                device: torch.device | str = "cpu") -> torch.Tensor:
    """A1111 ``rng.randn_local``: the first tensor of ``seed`` from a local generator.

    A1111 also routes torchsde's Brownian-tree normals through this (sd_samplers_common.replace_torchsde_browinan),
    so Brownian noise samplers must draw ``randn_local(seed, size, source, device)`` to match.
    """
    device = torch.device(device)
    return _draw(shape, create_generator(seed, source, device), device)


def randn_without_seed(shape: Sequence[int], generator, source: str = "GPU",
                       device: torch.device | str = "cpu") -> torch.Tensor:
    """A1111 ``rng.randn_without_seed``: the next tensor from an already seeded generator."""
    _check_source(source)
    return _draw(shape, generator, torch.device(device))


def randn_like(x: torch.Tensor, generator, source: str = "GPU") -> torch.Tensor:
    """A1111 ``rng.randn_like``: noise shaped, placed and typed like ``x`` from an already seeded generator."""
    _check_source(source)
    return _draw(x.shape, generator, x.device, dtype=x.dtype)


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111 ``rng.slerp`` (from discuss.pytorch.org #32475), quirks kept.

    For one image's noise (C, H, W) the norms are taken along dim 1 and the dot products summed along dim 1, so the
    interpolation angle is per (channel, column). When the noises are almost parallel A1111 falls back to
    ``low * val + high * (1 - val)`` - weights reversed - and so does this.
    """
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)

    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)

    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


class ImageRNG:
    """A1111 ``rng.ImageRNG``: one generator per image of a batch.

    ``shape`` is one image's latent shape (C, H, W); ``seeds`` / ``subseeds`` the batch's seeds (``resolve_seeds``).
    ``first()`` returns the starting noise, (batch, C, H, W) on ``device``; ``next()`` returns ``first()`` on its first
    call and afterwards the next draw of every image's generator (the per-step noise for ancestral / SDE steps and
    s_churn; A1111 gives k-diffusion ``p.rng.next()`` wherever it calls ``torch.randn_like``).

    Variation seed: when ``subseeds`` is given and ``subseed_strength != 0``, image i's noise is
    ``slerp(strength, noise(seed_i), noise(subseed_i))`` (subseed 0 when the list is short).
    Seed resize: when both ``seed_resize_from_h`` and ``seed_resize_from_w`` are > 0, the (varied) noise is made at
    (C, from_h // 8, from_w // 8) and pasted, centred, into a full-size draw of the image's own generator.

    ENSD: A1111 v1.10.1 applies the setting ``eta_noise_seed_delta`` here, in ``first()``: once the starting noise is
    made, when the delta is non-zero, every image's generator is replaced by a new one seeded with seed + delta, so
    all noise drawn by ``next()`` afterwards depends on it. This happens for every sampler; whether the sampler ever
    calls ``next()`` (eta != 0 for ancestral samplers, s_churn > 0, ...) decides whether it changes the picture.
    The infotext writes ``ENSD`` only when ``uses_eta_noise_seed_delta`` says so.
    """

    def __init__(self, shape: Sequence[int], seeds: Sequence[int], subseeds: Sequence[int] | None = None,
                 subseed_strength: float = 0.0, seed_resize_from_h: int = 0, seed_resize_from_w: int = 0,
                 randn_source: str = "GPU", device: torch.device | str = "cpu", eta_noise_seed_delta: int = 0):
        self.shape = tuple(int(s) for s in shape)
        self.seeds = [int(s) for s in seeds]
        self.subseeds = None if subseeds is None else [int(s) for s in subseeds]
        self.subseed_strength = float(subseed_strength)
        self.seed_resize_from_h = int(seed_resize_from_h or 0)
        self.seed_resize_from_w = int(seed_resize_from_w or 0)
        self.randn_source = _check_source(randn_source)
        self.device = torch.device(device)
        self.eta_noise_seed_delta = int(eta_noise_seed_delta or 0)

        self.generators = [create_generator(seed, self.randn_source, self.device) for seed in self.seeds]
        self.is_first = True

    def _randn(self, seed: int, shape, generator=None) -> torch.Tensor:
        return randn(seed, shape, self.randn_source, self.device, generator=generator)

    def first(self) -> torch.Tensor:
        """The starting noise (A1111 ``ImageRNG.first``)."""
        if self.seed_resize_from_h <= 0 or self.seed_resize_from_w <= 0:
            noise_shape = self.shape
        else:
            noise_shape = (self.shape[0], self.seed_resize_from_h // OPT_F, self.seed_resize_from_w // OPT_F)

        xs = []
        for i, (seed, generator) in enumerate(zip(self.seeds, self.generators)):
            subnoise = None
            if self.subseeds is not None and self.subseed_strength != 0:
                subseed = 0 if i >= len(self.subseeds) else self.subseeds[i]
                subnoise = self._randn(subseed, noise_shape)

            if noise_shape != self.shape:
                noise = self._randn(seed, noise_shape)  # old-size noise from a fresh generator
            else:
                noise = self._randn(seed, self.shape, generator=generator)

            if subnoise is not None:
                noise = slerp(self.subseed_strength, noise, subnoise)

            if noise_shape != self.shape:
                # paste the old-size noise, centred, into the image's own full-size draw; when the old size is
                # larger along an axis, its centre is cropped instead
                x = self._randn(seed, self.shape, generator=generator)
                dx = (self.shape[2] - noise_shape[2]) // 2
                dy = (self.shape[1] - noise_shape[1]) // 2
                w = noise_shape[2] if dx >= 0 else noise_shape[2] + 2 * dx
                h = noise_shape[1] if dy >= 0 else noise_shape[1] + 2 * dy
                tx = 0 if dx < 0 else dx
                ty = 0 if dy < 0 else dy
                dx = max(-dx, 0)
                dy = max(-dy, 0)
                x[:, ty:ty + h, tx:tx + w] = noise[:, dy:dy + h, dx:dx + w]
                noise = x

            xs.append(noise)

        if self.eta_noise_seed_delta:
            self.generators = [create_generator(seed + self.eta_noise_seed_delta, self.randn_source, self.device)
                               for seed in self.seeds]

        return torch.stack(xs).to(self.device)

    def next(self) -> torch.Tensor:
        """``first()`` on the first call, then one more draw per image (A1111 ``ImageRNG.next``)."""
        if self.is_first:
            self.is_first = False
            return self.first()
        xs = [randn_without_seed(self.shape, g, self.randn_source, self.device) for g in self.generators]
        return torch.stack(xs).to(self.device)


# --------------------------------------------------------------------------------------------------------------------
# Seeds (processing.py)
# --------------------------------------------------------------------------------------------------------------------

SEED_RANGE = 4294967294  # A1111: int(random.randrange(4294967294))


def fixed_seed(seed, rand: random.Random | None = None) -> int:
    """A1111 ``processing.get_fixed_seed``: None, "" or -1 -> a random seed in [0, 4294967294); strings are parsed
    (unparseable -> random)."""
    if seed == "" or seed is None:
        seed = -1
    elif isinstance(seed, str):
        try:
            seed = int(seed)
        except ValueError:
            seed = -1
    if seed == -1:
        return int((rand or random).randrange(SEED_RANGE))
    return int(seed)


def resolve_seeds(seed, subseed, subseed_strength: float, n_images: int,
                  rand: random.Random | None = None) -> tuple[list[int], list[int]]:
    """A1111 ``process_images_inner``'s ``all_seeds`` / ``all_subseeds`` for a job of ``n_images``
    (= n_iter * batch_size). The seed is drawn before the subseed, as in A1111.

    Image i uses seed+i when ``subseed_strength == 0``, else the same seed for all images (the variation comes from
    subseed+i). A list of seeds (subseeds) is used as given.
    """
    seed = seed if isinstance(seed, (list, tuple)) else fixed_seed(seed, rand)
    subseed = subseed if isinstance(subseed, (list, tuple)) else fixed_seed(subseed, rand)

    if isinstance(seed, (list, tuple)):
        all_seeds = [int(s) for s in seed]
    else:
        all_seeds = [int(seed) + (x if subseed_strength == 0 else 0) for x in range(n_images)]

    if isinstance(subseed, (list, tuple)):
        all_subseeds = [int(s) for s in subseed]
    else:
        all_subseeds = [int(subseed) + x for x in range(n_images)]

    return all_seeds, all_subseeds


def uses_eta_noise_seed_delta(eta_noise_seed_delta: int, eta: float | None, sampler_uses_ensd: bool) -> bool:
    """Whether A1111 writes ``ENSD`` to the infotext (processing.create_infotext +
    sd_samplers_common.is_sampler_using_eta_noise_seed_delta): the setting is non-zero, the sampler's effective eta
    (the request's eta, else the sampler's default; pass that resolved value) is not 0, and the sampler has the
    ``uses_ensd`` option. This concerns only the infotext; the reseeding itself is in ``ImageRNG.first``.
    """
    if not eta_noise_seed_delta:
        return False
    if eta == 0:
        return False
    return bool(sampler_uses_ensd)
