"""Device and precision choice, from A1111's device flags (--use-cpu, --precision, --no-half, --no-half-vae).

Probed when an Engine is built, never at import.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DevicePlan:
    device: torch.device
    dtype: torch.dtype  # UNet and text encoders
    vae_dtype: torch.dtype
    medvram: bool = False
    lowvram: bool = False

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
) -> DevicePlan:
    """CUDA (or Apple MPS) when present unless ``--use-cpu all|sd``; half precision there unless ``--no-half`` or
    ``--precision full`` (A1111's rules). The CPU always runs float32: half on CPU is slow and lossy."""
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
    return DevicePlan(device=device, dtype=dtype, vae_dtype=vae_dtype, medvram=medvram, lowvram=lowvram)
