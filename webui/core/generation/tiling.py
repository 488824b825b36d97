"""A1111's "Tiling": seamless (tileable) images by circular padding in every 2-D convolution of the model.

A1111 1.10 (``modules/sd_hijack.py`` ``StableDiffusionModelHijack.apply_circular``): the hijack keeps a flat list of
every submodule of the loaded model (UNet, VAE, text encoders; ``flatten(m)`` at hijack time) and
``apply_circular(enable)`` sets ``padding_mode = 'circular'`` on each ``torch.nn.Conv2d`` of that list ('zeros'
again when disabled). ``processing.process_images_inner`` resolves ``p.tiling`` (``None`` -> option ``tiling``,
``shared_options`` "Tiling", default False) and calls ``apply_circular(p.tiling)`` before anything runs, so the
init-image encode, every sampling pass and the decode of that model are circular; ``create_infotext`` writes
``"Tiling": "True" if p.tiling else None``.

A refiner or hires-fix checkpoint that A1111 switches to mid-request is not tiled: ``sd_models.reload_model_weights``
calls ``undo_hijack`` on the outgoing model, which runs ``apply_circular(False)``, and the incoming model is hijacked
with ``circular_enabled`` False. So only the request's own model is switched here: ``p.sd_model``'s modules with the
request's VAE (enter after the VAE swap), the refiner's and the hires checkpoint's components are left alone.

Here it is a scope (house rule 3): ``padding_mode`` is set on the instances of the loaded model's Conv2d layers and
each layer's previous value is restored on exit, also on error; no torch class is patched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def enabled(p) -> bool:
    """A1111 ``if p.tiling is None: p.tiling = opts.tiling``: the request's ``tiling`` when given, else the effective
    option (``override_settings`` included)."""
    value = p.request.tiling
    if value is None:
        value = p.opts.get("tiling")
    if isinstance(value, str):  # an override pasted from an infotext ("Tiling: True"): A1111 Options.cast_value
        return value != "False" and value != ""
    return bool(value)


def conv_layers(components) -> list[torch.nn.Conv2d]:
    """Every 2-D convolution of the model's modules (UNet, VAE, text encoders), each once: A1111's walk of the whole
    model. ``isinstance`` rather than A1111's exact ``type(...) ==``: A1111's models only hold plain ``Conv2d``,
    while diffusers may hold subclasses of it for the same layers."""
    layers, seen = [], set()
    for module in components.modules():
        for layer in module.modules():
            if isinstance(layer, torch.nn.Conv2d) and id(layer) not in seen:
                seen.add(id(layer))
                layers.append(layer)
    return layers


@contextmanager
def circular_padding(p, components: Any = None) -> Iterator[bool]:
    """For the block, circular padding in every Conv2d of ``components`` (default ``p.sd_model``) when the request
    asks for tiling (:func:`enabled`); the previous padding modes afterwards. Yields whether tiling is on."""
    if not enabled(p):
        yield False
        return
    saved = [(layer, layer.padding_mode) for layer in conv_layers(components if components is not None
                                                                    else p.sd_model)]
    try:
        for layer, _ in saved:
            layer.padding_mode = "circular"
        yield True
    finally:
        for layer, mode in reversed(saved):
            layer.padding_mode = mode


def infotext_value(p) -> str | None:
    """A1111 create_infotext: ``"Tiling": "True" if p.tiling else None``."""
    return "True" if enabled(p) else None
