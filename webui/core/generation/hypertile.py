"""A1111's Hypertile (built-in extension ``extensions-builtin/hypertile``, after tfernd/HyperTile): self-attention
on tiles of the hidden states instead of the whole image, in the UNet's ``attn1`` layers at the depths A1111 picks
and in the VAE decoder's mid-block attention.

The arithmetic is A1111's ``hypertile.py``, kept as it is because it decides the output:

* ``largest_tile_size_available(width, height)``: the largest power of two dividing gcd(width, height); the tile
  size is that, capped by the option's max tile size; a layer's latent tile is ``max(128, tile_size) // 8``, times
  ``2 ** depth`` in the UNet (the feature maps halve per depth).
* ``random_divisor(value, min_value, max_options)``: the number of tiles along one side, drawn among the
  ``max_options`` (the "swap size") largest counts ``value // d`` for the divisors ``d >= min_value`` of ``value``,
  with a seeded ``random.Random`` (``set_hypertile_seed(p.all_seeds[0])``) that every hooked layer's call draws
  from in call order, one draw per side, even when there is a single choice.
* The UNet's tokens are cut with ``find_hw_candidates(hw, width / height)``, whose first value is
  ``round(sqrt(hw * width / height))`` -- the latent *width* for a landscape image, used as the row count (A1111's
  quirk for non-square images; the tiles are then not spatial rectangles, but they are what A1111 computes) -- and
  A1111's einops patterns ``b (nh h nw w) c -> (b nh nw) (h w) c`` and back; the VAE's maps with
  ``b c (nh h) (nw w) -> (b nh nw) c h w``. Here they are written with reshape/permute (no einops dependency).

A1111 finds the layers by name in its LDM model (``input_blocks.1.1.transformer_blocks.0.attn1``, ...); ours is a
diffusers UNet, so each diffusers ``attn1`` name is translated to the LDM name it has in A1111's model
(:func:`unet_ldm_name`, from the UNet's ``layers_per_block``) and matched against A1111's tables, SD1/SD2 and SDXL
alike. The VAE's attention is matched by A1111's diffusers entry ``decoder.mid_block.attentions.0``.

A1111 replaces ``module.forward`` of those layers for good and turns them on or off per request. Here (house rule
3) :class:`Hypertile` wraps the ``forward`` of the module *instances* for one request and restores them when it
closes, also on error; no class is patched.
"""

from __future__ import annotations

import functools
import math
import random
import re
from dataclasses import dataclass
from typing import Any, Callable

import torch

# A1111 DEPTH_LAYERS / DEPTH_LAYERS_XL, the LDM names (what A1111's model has; its diffusers entries match nothing
# there, except the VAE's, which is the one we use). Matched with ``name.endswith(entry)``.
DEPTH_LAYERS: dict[int, tuple[str, ...]] = {
    0: (
        "input_blocks.1.1.transformer_blocks.0.attn1",
        "input_blocks.2.1.transformer_blocks.0.attn1",
        "output_blocks.9.1.transformer_blocks.0.attn1",
        "output_blocks.10.1.transformer_blocks.0.attn1",
        "output_blocks.11.1.transformer_blocks.0.attn1",
        "decoder.mid_block.attentions.0",  # the VAE (diffusers name)
        "decoder.mid.attn_1",  # the VAE (LDM name)
    ),
    1: (
        "input_blocks.4.1.transformer_blocks.0.attn1",
        "input_blocks.5.1.transformer_blocks.0.attn1",
        "output_blocks.6.1.transformer_blocks.0.attn1",
        "output_blocks.7.1.transformer_blocks.0.attn1",
        "output_blocks.8.1.transformer_blocks.0.attn1",
    ),
    2: (
        "input_blocks.7.1.transformer_blocks.0.attn1",
        "input_blocks.8.1.transformer_blocks.0.attn1",
        "output_blocks.3.1.transformer_blocks.0.attn1",
        "output_blocks.4.1.transformer_blocks.0.attn1",
        "output_blocks.5.1.transformer_blocks.0.attn1",
    ),
    3: ("middle_block.1.transformer_blocks.0.attn1",),
}

DEPTH_LAYERS_XL: dict[int, tuple[str, ...]] = {
    0: (
        "input_blocks.4.1.transformer_blocks.0.attn1",
        "input_blocks.5.1.transformer_blocks.0.attn1",
        "output_blocks.3.1.transformer_blocks.0.attn1",
        "output_blocks.4.1.transformer_blocks.0.attn1",
        "output_blocks.5.1.transformer_blocks.0.attn1",
        "decoder.mid_block.attentions.0",
        "decoder.mid.attn_1",
    ),
    1: (
        "input_blocks.4.1.transformer_blocks.1.attn1",
        "input_blocks.5.1.transformer_blocks.1.attn1",
        "output_blocks.3.1.transformer_blocks.1.attn1",
        "output_blocks.4.1.transformer_blocks.1.attn1",
        "output_blocks.5.1.transformer_blocks.1.attn1",
        *(f"{block}.{k}.attn1"
          for k in range(10)
          for block in ("input_blocks.7.1.transformer_blocks", "input_blocks.8.1.transformer_blocks",
                        "output_blocks.0.1.transformer_blocks", "output_blocks.1.1.transformer_blocks",
                        "output_blocks.2.1.transformer_blocks")),
    ),
    2: tuple(f"middle_block.1.transformer_blocks.{k}.attn1" for k in range(10)),
    3: (),
}


# -- A1111's arithmetic ---------------------------------------------------------------------------------------------

def random_divisor(value: int, min_value: int, max_options: int, rng: random.Random) -> int:
    """A1111 ``random_divisor``: a tile count for a side of ``value``, drawn among the ``max_options`` largest
    ``value // d`` over the divisors ``d >= min(min_value, value)``; one ``rng.randint`` per call, as A1111."""
    min_value = min(min_value, value)
    divisors = [i for i in range(min_value, value + 1) if value % i == 0]
    ns = [value // i for i in divisors[:max_options]]
    idx = rng.randint(0, len(ns) - 1)
    return ns[idx]


@functools.lru_cache(maxsize=None)
def largest_tile_size_available(width: int, height: int) -> int:
    """A1111: the largest power of two that divides both sizes."""
    gcd = math.gcd(width, height)
    size = 1
    while gcd % (size * 2) == 0:
        size *= 2
    return size


def iterative_closest_divisors(hw: int, aspect_ratio: float) -> tuple[int, int]:
    """A1111: the divisor pair (h, hw // h) whose ratio w / h is closest to ``aspect_ratio``."""
    divisors = [i for i in range(2, hw + 1) if hw % i == 0]
    pairs = [(i, hw // i) for i in divisors]
    ratios = [w / h for h, w in pairs]
    closest_ratio = min(ratios, key=lambda x: abs(x - aspect_ratio))
    return pairs[ratios.index(closest_ratio)]


@functools.lru_cache(maxsize=None)
def find_hw_candidates(hw: int, aspect_ratio: float) -> tuple[int, int]:
    """A1111: h and w with h * w == hw from ``h = round(sqrt(hw * aspect_ratio))``, ``w = round(sqrt(hw /
    aspect_ratio))`` (``aspect_ratio`` = width / height), fixed up to exact divisors."""
    h, w = round(math.sqrt(hw * aspect_ratio)), round(math.sqrt(hw / aspect_ratio))
    if h * w != hw:
        w_candidate = hw / h
        if not w_candidate.is_integer():
            h_candidate = hw / w
            if not h_candidate.is_integer():
                return iterative_closest_divisors(hw, aspect_ratio)
            h = int(h_candidate)
        else:
            w = int(w_candidate)
    return h, w


def split_tokens(x: torch.Tensor, nh: int, nw: int, h: int, w: int) -> torch.Tensor:
    """einops ``b (nh h nw w) c -> (b nh nw) (h w) c`` (``h``, ``w``: one tile's sides)."""
    b, _, c = x.shape
    return x.reshape(b, nh, h, nw, w, c).permute(0, 1, 3, 2, 4, 5).reshape(b * nh * nw, h * w, c)


def merge_tokens(x: torch.Tensor, nh: int, nw: int, h: int, w: int) -> torch.Tensor:
    """einops ``(b nh nw) (h w) c -> b (nh h nw w) c``: the inverse of :func:`split_tokens`."""
    bn, _, c = x.shape
    b = bn // (nh * nw)
    return x.reshape(b, nh, nw, h, w, c).permute(0, 1, 3, 2, 4, 5).reshape(b, nh * h * nw * w, c)


def split_maps(x: torch.Tensor, nh: int, nw: int) -> torch.Tensor:
    """einops ``b c (nh h) (nw w) -> (b nh nw) c h w``."""
    b, c, hh, ww = x.shape
    h, w = hh // nh, ww // nw
    return x.reshape(b, c, nh, h, nw, w).permute(0, 2, 4, 1, 3, 5).reshape(b * nh * nw, c, h, w)


def merge_maps(x: torch.Tensor, nh: int, nw: int) -> torch.Tensor:
    """einops ``(b nh nw) c h w -> b c (nh h) (nw w)``: the inverse of :func:`split_maps`."""
    bn, c, h, w = x.shape
    b = bn // (nh * nw)
    return x.reshape(b, nh, nw, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(b, c, nh * h, nw * w)


@dataclass
class LayerParams:
    """A1111 ``HypertileParams``: one hooked layer's depth and the current configuration of its model."""

    depth: int = 0
    layer_name: str = ""
    tile_size: int = 0
    swap_size: int = 0
    aspect_ratio: float = 1.0
    enabled: bool = False


def tiled_call(forward: Callable, params: LayerParams, rng: random.Random, args: tuple, kwargs: dict,
               scale_depth: bool = True):
    """A1111 ``self_attn_forward``'s wrapper: ``forward`` on tiles of its input (4-D: the VAE's maps; 3-D: the
    UNet's tokens), the tiles put back together after."""
    if not params.enabled:
        return forward(*args, **kwargs)
    if args:
        x, rest, key = args[0], args[1:], None
    else:  # called as forward(hidden_states=...)
        key = "hidden_states"
        x, rest = kwargs[key], ()
        kwargs = {k: v for k, v in kwargs.items() if k != key}

    def call(t):
        return forward(t, *rest, **kwargs) if key is None else forward(*rest, **{key: t}, **kwargs)

    latent_tile_size = max(128, params.tile_size) // 8
    if x.ndim == 4:  # the VAE
        _, _, h, w = x.shape
        nh = random_divisor(h, latent_tile_size, params.swap_size, rng)
        nw = random_divisor(w, latent_tile_size, params.swap_size, rng)
        if nh * nw <= 1:
            return call(x)
        return merge_maps(call(split_maps(x, nh, nw)), nh, nw)
    hw = x.size(1)  # the UNet
    h, w = find_hw_candidates(hw, params.aspect_ratio)
    assert h * w == hw, f"Invalid aspect ratio {params.aspect_ratio} for input of shape {tuple(x.shape)}, hw={hw}"
    factor = 2 ** params.depth if scale_depth else 1
    nh = random_divisor(h, latent_tile_size * factor, params.swap_size, rng)
    nw = random_divisor(w, latent_tile_size * factor, params.swap_size, rng)
    if nh * nw <= 1:
        return call(x)
    th, tw = h // nh, w // nw
    return merge_tokens(call(split_tokens(x, nh, nw, th, tw)), nh, nw, th, tw)


# -- layer names ----------------------------------------------------------------------------------------------------

_DOWN = re.compile(r"^down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)$")
_UP = re.compile(r"^up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)$")
_MID = re.compile(r"^mid_block\.attentions\.0\.(.*)$")


def unet_ldm_name(name: str, config: Any) -> str | None:
    """The LDM name (A1111's model) of a diffusers UNet2DConditionModel submodule inside a Transformer2DModel:
    ``down_blocks.i.attentions.j.X`` -> ``input_blocks.k.1.X``, ``mid_block.attentions.0.X`` ->
    ``middle_block.1.X``, ``up_blocks.i.attentions.j.X`` -> ``output_blocks.k.1.X``; None for anything else."""
    levels = len(config.block_out_channels)
    lpb = config.layers_per_block
    per_level = list(lpb) if isinstance(lpb, (list, tuple)) else [lpb] * levels
    m = _DOWN.match(name)
    if m:
        i, j, rest = int(m[1]), int(m[2]), m[3]
        # input_blocks: 0 is conv_in; each level has its res(+attn) layers, then a downsampler (not the last level)
        return f"input_blocks.{1 + sum(n + 1 for n in per_level[:i]) + j}.1.{rest}"
    m = _MID.match(name)
    if m:
        return f"middle_block.1.{m[1]}"
    m = _UP.match(name)
    if m:
        i, j, rest = int(m[1]), int(m[2]), m[3]
        up = list(reversed(per_level))  # an up level has layers_per_block + 1 layers, the upsampler in the last
        return f"output_blocks.{sum(n + 1 for n in up[:i]) + j}.1.{rest}"
    return None


# -- the per-request scope ------------------------------------------------------------------------------------------

class Hypertile:
    """One request's Hypertile: its RNG (A1111's module-level ``RNG_INSTANCE``), the hooked layers of each model
    (hooked on the first enabled configuration, as A1111's ``hypertile_hook_model``) and their restoration.

    Use as a context manager, or call :meth:`close`: every wrapped ``forward`` is put back as it was."""

    def __init__(self):
        self.rng = random.Random()
        self._models: dict[int, dict[str, tuple[torch.nn.Module, LayerParams]]] = {}
        self._restore: list[tuple[torch.nn.Module, bool, Any]] = []

    def __enter__(self) -> "Hypertile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def seed(self, seed: int) -> None:
        """A1111 ``set_hypertile_seed``."""
        self.rng.seed(seed)

    def layers(self, model: torch.nn.Module) -> dict[str, LayerParams]:
        """The hooked layers of ``model`` by module name (empty when it was never hooked)."""
        return {name: params for name, (_, params) in self._models.get(id(model), {}).items()}

    def configure(self, model: torch.nn.Module, width: int, height: int, *, enable: bool = False,
                  tile_size_max: int = 128, swap_size: int = 1, max_depth: int = 3, is_sdxl: bool = False,
                  name_of: Callable[[str], str | None] | None = None) -> None:
        """A1111 ``hypertile_hook_model``: hook ``model``'s layers of A1111's depth tables the first time it is
        enabled, then set every hooked layer's tile size, swap size, aspect ratio and on/off (``enable`` and its
        depth within ``max_depth``) for ``width`` x ``height``. ``name_of`` maps a module name to the name A1111's
        tables use (the LDM name of a UNet layer: :func:`unet_ldm_name`); default: the name itself."""
        hooked = self._models.get(id(model))
        if hooked is None:
            if not enable:
                return
            hooked = self._hook(model, DEPTH_LAYERS_XL if is_sdxl else DEPTH_LAYERS, name_of or (lambda n: n))
            self._models[id(model)] = hooked
        aspect_ratio = width / height
        tile_size = min(largest_tile_size_available(width, height), tile_size_max)
        for _, params in hooked.values():
            params.tile_size = tile_size
            params.swap_size = swap_size
            params.aspect_ratio = aspect_ratio
            params.enabled = enable and params.depth <= max_depth

    def _hook(self, model, layers, name_of) -> dict[str, tuple[torch.nn.Module, LayerParams]]:
        hooked: dict[str, tuple[torch.nn.Module, LayerParams]] = {}
        named = list(model.named_modules())
        for depth in range(4):
            for name, module in named:
                table_name = name_of(name)
                if table_name is None or name in hooked:
                    continue
                if any(table_name.endswith(entry) for entry in layers[depth]):
                    params = LayerParams(depth=depth, layer_name=name)
                    self._wrap(module, params)
                    hooked[name] = (module, params)
        return hooked

    def _wrap(self, module: torch.nn.Module, params: LayerParams) -> None:
        had_own = "forward" in module.__dict__
        previous = module.__dict__.get("forward")
        forward = module.forward  # the bound method, or a wrapper another scope put on this instance
        rng_owner = self

        @functools.wraps(forward)
        def hypertile_forward(*args, **kwargs):
            return tiled_call(forward, params, rng_owner.rng, args, kwargs)

        module.forward = hypertile_forward
        self._restore.append((module, had_own, previous))

    def close(self) -> None:
        """Every hooked layer's ``forward`` as it was before this request (newest first)."""
        while self._restore:
            module, had_own, previous = self._restore.pop()
            if had_own:
                module.forward = previous
            else:
                module.__dict__.pop("forward", None)
        self._models.clear()
