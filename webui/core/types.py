"""Plain data types shared by the core, the API and the UI.

Frozen dataclasses only: no tensors, no PIL images in requests, no UI objects. A request is built once by an
adapter (``webui/api/models.py`` or a UI tab) and never mutated; scoped changes work on copies.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint file as A1111 lists it in /sdapi/v1/sd-models.

    ``name`` is the path relative to the checkpoint folder (with extension), ``title`` is "name [hash10]" once the
    sha256 is known, else just ``name``.
    """

    filename: str
    name: str
    model_name: str
    sha256: str | None = None
    config: str | None = None

    @property
    def shorthash(self) -> str | None:
        return self.sha256[:10] if self.sha256 else None

    @property
    def title(self) -> str:
        return f"{self.name} [{self.shorthash}]" if self.sha256 else self.name

    @property
    def stem(self) -> str:
        """File name without folder and extension, as A1111's infotext ``Model:`` field writes it."""
        import os

        return os.path.splitext(os.path.basename(self.name))[0]


@dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    """Everything one generation needs (A1111's StableDiffusionProcessing fields, resolved to plain values).

    Sampler and scheduler are already resolved to A1111 names/labels by the adapter (``webui.core.samplers``).
    ``seed``/``subseed`` may still be -1; the engine draws them.
    """

    mode: str = "txt2img"
    prompt: str = ""
    negative_prompt: str = ""
    styles: tuple[str, ...] = ()
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_w: int = -1
    seed_resize_from_h: int = -1
    sampler_name: str = "Euler"
    scheduler: str = "Automatic"
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    batch_size: int = 1
    n_iter: int = 1
    eta: float | None = None
    s_churn: float | None = None
    s_tmin: float | None = None
    s_tmax: float | None = None
    s_noise: float | None = None
    denoising_strength: float | None = None
    checkpoint: str | None = None
    clip_skip: int | None = None  # the request's own clip skip (None: option CLIP_stop_at_last_layers)
    disable_extra_networks: bool = False  # leave <lora:...> and other tags in the text, activate nothing
    override_settings: Mapping[str, Any] = field(default_factory=dict)
    save_images: bool = False
    extension_args: Mapping[str, Any] = field(default_factory=dict)
    task_id: str | None = None
    # Set by the adapter when it had to fall back (A1111 falls back silently; we record it in `info`).
    sampler_fallback: str | None = None

    def replace(self, **changes: Any) -> "GenerationRequest":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class GenerationResult:
    """Images (PIL) plus the per-image infotexts, seeds and A1111's ``Processed.js()`` info dict."""

    images: list
    infotexts: list[str]
    seeds: list[int]
    subseeds: list[int]
    info: dict
    request: GenerationRequest
    saved_paths: list[str] = field(default_factory=list)
