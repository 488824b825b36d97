"""--medvram, --medvram-sdxl and --lowvram (A1111 ``modules/lowvram.py``) on accelerate's module hooks.

A1111 keeps every part of the model in RAM and, before a part runs, moves it to the GPU and the part that was there
back to RAM: one part on the GPU at a time (``module_in_gpu``). The parts:

- --medvram (and --medvram-sdxl, for SDXL models only): the text encoder(s), the UNet, the VAE;
- --lowvram: the text encoder(s), the VAE, and the UNet's blocks one by one (A1111 input_blocks / middle_block /
  output_blocks / time_embed; here each resnet, transformer and resampler of diffusers' down / mid / up blocks and
  the time and added-condition embeddings), the UNet's small rest (conv_in, conv_out, norm) staying on the GPU.

Each part gets an accelerate ``ModelHook`` whose ``pre_forward`` moves it in (and its inputs) through one
:class:`Residency`; nothing changes the maths, so the pictures are those of the default path. The VAE is hooked on
its children (encoder, quant_conv, post_quant_conv, decoder) because ``AutoencoderKL.decode`` is not ``forward``:
its first child call brings the whole VAE and the latent with it.
"""

from __future__ import annotations

import logging
from collections import Counter

import torch

log = logging.getLogger(__name__)

MARK = "_webui_offload_unit"  # attribute on a part that moves: its name
HOOKED = "_webui_offload_hooked"  # attribute on a module whose forward brings its part in


def mode_for(plan, comp) -> str | None:
    """"lowvram", "medvram" or None for this model under the plan's flags (--medvram-sdxl: SDXL models only)."""
    if getattr(plan, "lowvram", False):
        return "lowvram"
    if getattr(plan, "medvram", False) or (getattr(plan, "medvram_sdxl", False) and comp.is_sdxl):
        return "medvram"
    return None


class Residency:
    """Which offloaded part is on the execution device now (A1111 ``module_in_gpu``), and a count of the moves."""

    def __init__(self, execution_device, offload_device="cpu"):
        self.execution_device = torch.device(execution_device)
        self.offload_device = torch.device(offload_device)
        self.current: torch.nn.Module | None = None
        self.loads: Counter = Counter()  # unit name -> times moved in
        self.trace: list[str] = []  # unit names in the order they were moved in (bounded)

    def bring(self, module: torch.nn.Module) -> None:
        if self.current is module:
            return
        if self.current is not None:
            torch.nn.Module.to(self.current, self.offload_device)
        torch.nn.Module.to(module, self.execution_device)
        self.current = module
        name = getattr(module, MARK, type(module).__name__)
        self.loads[name] += 1
        self.trace.append(name)
        del self.trace[:-4096]

    def release(self, module: torch.nn.Module) -> None:
        if self.current is module:
            torch.nn.Module.to(module, self.offload_device)
            self.current = None

    def send_everything_to_cpu(self) -> None:
        """A1111 ``lowvram.send_everything_to_cpu``: the part on the device goes back (before another model, such as
        an interrogator, needs the device's memory); the next forward brings it in again."""
        if self.current is not None:
            self.release(self.current)


def _hook_class():
    from accelerate.hooks import ModelHook
    from accelerate.utils import send_to_device

    class BringToDevice(ModelHook):
        """Before ``forward``: ``unit`` (this module or the one it belongs to) onto the execution device, and the
        arguments with it."""

        def __init__(self, residency: Residency, unit: torch.nn.Module):
            super().__init__()
            self.residency = residency
            self.unit = unit

        def pre_forward(self, module, *args, **kwargs):
            self.residency.bring(self.unit)
            device = self.residency.execution_device
            return send_to_device(args, device), send_to_device(kwargs, device)

    return BringToDevice


def _units(comp, mode: str) -> tuple[list[tuple[str, torch.nn.Module, list[torch.nn.Module]]], list[torch.nn.Module]]:
    """(unit name, the module that moves, the modules whose forward brings it) and the modules that stay on the
    execution device."""
    units = []
    tes = [te for te in (comp.text_encoder, comp.text_encoder_2) if te is not None]
    if len(tes) == 2:
        # SDXL: both encoders are one part, as A1111 moves SDXL's conditioner as one module (each prompt runs both)
        units.append(("text_encoders", torch.nn.ModuleList(tes), tes))
    elif tes:
        units.append(("text_encoder", tes[0], tes))
    vae = comp.vae
    units.append(("vae", vae, [m for m in (getattr(vae, n, None) for n in ("encoder", "quant_conv", "post_quant_conv",
                                                                            "decoder")) if m is not None]))
    resident: list[torch.nn.Module] = []
    unet = comp.unet
    if mode == "medvram":
        units.append(("unet", unet, [unet]))
        return units, resident
    streamed = []
    for name in ("time_embedding", "add_embedding", "class_embedding"):
        m = getattr(unet, name, None)
        if m is not None:
            streamed.append((f"unet.{name}", m))
    for group in ("down_blocks", "up_blocks"):
        for i, block in enumerate(getattr(unet, group)):
            for part, child in block.named_children():
                for j, m in enumerate(child) if isinstance(child, torch.nn.ModuleList) else [(0, child)]:
                    streamed.append((f"unet.{group}.{i}.{part}.{j}", m))
    if unet.mid_block is not None:
        for part, child in unet.mid_block.named_children():
            for j, m in enumerate(child) if isinstance(child, torch.nn.ModuleList) else [(0, child)]:
                streamed.append((f"unet.mid_block.{part}.{j}", m))
    units += [(n, m, [m]) for n, m in streamed]
    streamed_ids = {id(m) for _, m in streamed}
    blocks = {id(b) for b in (*unet.down_blocks, *unet.up_blocks, unet.mid_block) if b is not None}
    for name, child in unet.named_children():
        if id(child) not in streamed_ids and id(child) not in blocks and not isinstance(child, torch.nn.ModuleList):
            resident.append(child)
    return units, resident


def install(comp, plan, residency: Residency) -> str | None:
    """Hook ``comp``'s parts for the plan's memory mode (once per module; a VAE swapped in later is hooked when this
    is called again) and move them off the execution device. Returns the mode, or None when there is none."""
    from accelerate.hooks import add_hook_to_module

    mode = mode_for(plan, comp)
    if mode is None:
        return None
    hook_class = _hook_class()
    units, resident = _units(comp, mode)
    for name, unit, callers in units:
        if any(getattr(c, HOOKED, False) for c in callers):
            continue
        setattr(unit, MARK, name)
        for caller in callers:
            add_hook_to_module(caller, hook_class(residency, unit), append=True)
            setattr(caller, HOOKED, True)
        if residency.current is not unit:
            torch.nn.Module.to(unit, residency.offload_device)
    for m in resident:
        torch.nn.Module.to(m, residency.execution_device)
    return mode


def uninstall(comp, residency: Residency) -> None:
    """Remove the hooks of ``comp`` (a model leaving the cache), its parts back on the offload device."""
    from accelerate.hooks import remove_hook_from_module

    for module in comp.modules():
        for m in module.modules():
            if getattr(m, HOOKED, False):
                unit = getattr(getattr(m, "_hf_hook", None), "unit", None)
                if unit is not None:
                    residency.release(unit)
                remove_hook_from_module(m)
                delattr(m, HOOKED)


def placement(comp) -> dict[str, str]:
    """Where each part's weights are now (device type of its first parameter), for tests and benchmarks."""
    out = {}
    for name in ("text_encoder", "text_encoder_2", "unet", "vae"):
        m = getattr(comp, name)
        if m is not None:
            out[name] = next(m.parameters()).device.type
    return out
