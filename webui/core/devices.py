"""Device and precision choice, from A1111's device flags (--use-cpu, --precision, --no-half, --no-half-vae).

Probed when an Engine is built, never at import.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DevicePlan:
    device: torch.device
    dtype: torch.dtype  # UNet and text encoders
    vae_dtype: torch.dtype
    medvram: bool = False
    lowvram: bool = False
    medvram_sdxl: bool = False  # --medvram for SDXL models only
    attention: Any = None  # webui.core.models.attention.AttentionOptions: the --opt-* / --xformers flags
    channels_last: bool = False  # --opt-channelslast

    @property
    def description(self) -> str:
        return f"{self.device.type} ({str(self.dtype).removeprefix('torch.')}, VAE {str(self.vae_dtype).removeprefix('torch.')})"


def plan_devices(
    *,
    use_cpu: tuple[str, ...] | list[str] | None = None,
    precision: str = "autocast",
    no_half: bool = False,
    no_half_vae: bool = False,
    medvram: bool = False,
    lowvram: bool = False,
    device_id: str | None = None,
    medvram_sdxl: bool = False,
    attention: Any = None,
    channels_last: bool = False,
    cpu_autocast: bool = False,
) -> DevicePlan:
    """CUDA (or Apple MPS) when present unless ``--use-cpu all|sd``; half precision there unless ``--no-half`` or
    ``--precision full`` (A1111's rules). The CPU runs float32 (float16 on CPU is slow and lossy); with
    ``cpu_autocast`` (an explicit ``--precision autocast``, beyond A1111, which runs float32 on CPU) the UNet and the
    text encoders hold bfloat16 weights where the CPU computes bfloat16 natively -- the VAE stays float32, the
    sampler's maths float32 -- else float32 with a log line saying so. bfloat16 weights rather than
    ``torch.autocast``: autocast re-casts every weight at every step, which measured slower than float32 here."""
    cpu_modules = {m.lower() for m in (use_cpu or ())}
    force_cpu = bool(cpu_modules & {"all", "sd"})
    if not force_cpu and torch.cuda.is_available():
        device = torch.device(f"cuda:{device_id}" if device_id is not None else "cuda")
    elif not force_cpu and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    full = no_half or precision == "full" or device.type == "cpu"
    dtype = torch.float32 if full else torch.float16
    vae_dtype = torch.float32 if (full or no_half_vae) else torch.float16
    if cpu_autocast and device.type == "cpu" and not no_half:
        from webui.core.generation.optimizations import cpu_bf16_supported

        if cpu_bf16_supported():
            dtype = torch.bfloat16
        else:
            log.warning("--precision autocast: this CPU has no bfloat16 support; running float32")
    return DevicePlan(device=device, dtype=dtype, vae_dtype=vae_dtype, medvram=medvram, lowvram=lowvram,
                      medvram_sdxl=medvram_sdxl, attention=attention, channels_last=channels_last)
