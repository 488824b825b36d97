"""Speed options of one request, each scoped and undone (house rule 3):

- the cross-attention optimization (option ``cross_attention_optimization``, ``upcast_attn``, the ``--opt-*`` /
  ``--xformers`` flags): on the request's model for the whole request (``attention_scope``), see
  webui/core/models/attention.py;
- ``--opt-channelslast``: the UNet's weights in channels-last memory format (A1111 converts at load and keeps it);
- token merging (``token_merging_ratio``, ``_hr``, ``_img2img``) with the ``tomesd`` package, per sampling pass
  (``pass_scope``), A1111's ``apply_token_merging`` arguments, and its infotext keys;
- (``--precision autocast`` on CPU, bfloat16 weights, is the device plan's: webui/core/devices.py.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from webui.core.models import offload

log = logging.getLogger(__name__)


def _flags(p):
    from webui.core.models.attention import AttentionOptions

    return getattr(p.services.plan, "attention", None) or AttentionOptions()


def attention_scope(p, comp):
    """The request's attention optimization on ``comp`` (UNet and VAE) until the request ends; logs the choice as
    A1111 does ("Applying attention optimization: ...") when it changes, and a fallback's reason once."""
    from webui.core.models import attention

    flags = _flags(p)
    choice = attention.choose(p.opts.get("cross_attention_optimization"), flags)
    plan, services = p.services.plan, p.services
    warned = services.__dict__.setdefault("_attention_warnings", set())
    if choice.message and choice.message not in warned:
        warned.add(choice.message)
        log.warning(choice.message)
    if services.__dict__.get("_attention_applied") != choice.name:
        services.__dict__["_attention_applied"] = choice.name
        log.info("Applying attention optimization: %s", choice.name)
    if getattr(plan, "channels_last", False) and comp.unet is not None:
        # A1111 --opt-channelslast converts the model at load and keeps it: done once per loaded UNet
        comp.unet.to(memory_format=torch.channels_last)
    return attention.use_attention(choice, flags, (comp.unet, comp.vae), upcast=bool(p.opts.get("upcast_attn")))


def use_attention(p, comp) -> None:
    """The request's model options on ``comp``, entered into the request's scope once per model (the request's
    checkpoint, and hires / refiner checkpoints switched to mid-request): ``attention_scope``; with --medvram /
    --lowvram the offload hooks on a VAE swapped in for this request too, and tiled VAE decode/encode (diffusers
    ``AutoencoderKL`` tiling, which only tiles images larger than the VAE's sample size)."""
    done = p.__dict__.setdefault("_attention_models", set())
    if id(comp) in done or p.scope is None:
        return
    done.add(id(comp))
    p.scope.enter_context(attention_scope(p, comp))
    models = getattr(p.services, "models", None)
    residency = getattr(models, "residency", None)
    if residency is not None and offload.install(comp, p.services.plan, residency) is not None:
        p.scope.enter_context(vae_tiling(comp.vae))


@contextmanager
def vae_tiling(vae) -> Iterator[None]:
    if vae is None or not hasattr(vae, "use_tiling"):
        yield
        return
    before = vae.use_tiling
    vae.use_tiling = True
    try:
        yield
    finally:
        vae.use_tiling = before


# --------------------------------------------------------------------------------------------------------------------
# token merging
# --------------------------------------------------------------------------------------------------------------------


def token_merging_ratio(p, for_hr: bool = False) -> float:
    """A1111 get_token_merging_ratio (p.token_merging_ratio is always 0 here: options and overrides carry it).
    txt2img: the hires pass takes token_merging_ratio_hr, else token_merging_ratio; img2img: token_merging_ratio
    when overridden for this request, else token_merging_ratio_img2img, else token_merging_ratio."""
    opts = p.opts
    base = float(opts.get("token_merging_ratio") or 0)
    if p.is_img2img:
        overridden = "token_merging_ratio" in (p.request.override_settings or {})
        return (base if overridden else 0.0) or float(opts.get("token_merging_ratio_img2img") or 0) or base
    if for_hr:
        return float(opts.get("token_merging_ratio_hr") or 0) or base
    return base


def tomesd_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tomesd") is not None


def infotext_params(p) -> dict:
    """A1111 create_infotext's "Token merging ratio" / "Token merging ratio hr" (None when 0 / without hires; None
    too without the tomesd package: nothing was merged)."""
    if not tomesd_available():
        return {}
    ratio = token_merging_ratio(p)
    ratio_hr = token_merging_ratio(p, for_hr=True)
    return {
        "Token merging ratio": None if ratio == 0 else ratio,
        "Token merging ratio hr": None if p.hr is None or ratio_hr == 0 else ratio_hr,
    }


@contextmanager
def token_merging(unet, ratio: float) -> Iterator[None]:
    """tomesd on ``unet`` for the block with A1111's arguments (use_rand off: "can cause issues with some samplers";
    self-attention tokens only), removed after. A ratio of 0 changes nothing."""
    if not ratio or unet is None:
        yield
        return
    if not tomesd_available():
        log.warning("token merging ratio %s: the tomesd package is not installed (pip install tomesd, or the [speed] "
                    "extra); sampling without token merging", ratio)
        yield
        return
    import tomesd

    tomesd.apply_patch(unet, ratio=ratio, use_rand=False, merge_attn=True, merge_crossattn=False, merge_mlp=False)
    try:
        yield
    finally:
        tomesd.remove_patch(unet)


# --------------------------------------------------------------------------------------------------------------------
# CPU bfloat16
# --------------------------------------------------------------------------------------------------------------------


def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bfloat16 matmuls natively (oneDNN's AVX512-BF16 / AMX check)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


@contextmanager
def pass_scope(p, comp, hr: bool = False) -> Iterator[None]:
    """One sampling pass: token merging at this pass's ratio."""
    with token_merging(comp.unet, token_merging_ratio(p, for_hr=hr)):
        yield
