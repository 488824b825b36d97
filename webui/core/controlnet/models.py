"""ControlNet model files: the extension's model list (scripts/global_state.py) and loading into diffusers.

Files under models/ControlNet and extensions/sd-webui-controlnet/models (and any extra folder) with the
extension's extensions are listed as ``"<stem> [<old 8-hex hash>]"`` and found by the extension's loose lookup
(scripts/controlnet.py find_closest_lora_model_name). A file in A1111's layout (``control_model.*`` LDM keys, or bare
LDM keys, or diffusers keys) is loaded into diffusers' ``ControlNetModel`` with a config read from tensor shapes --
nothing from the Hub -- and diffusers' own ``convert_controlnet_checkpoint`` for the key names. The "difference"
files (kohya's control_*-diff: weights stored as ControlNet minus base UNet) get the live base UNet's weights added
back, as the extension's build_model_by_guess does.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from webui.core.controlnet.errors import ControlNetError

log = logging.getLogger(__name__)

#: global_state.CN_MODEL_EXTS (compared case-sensitively, as the extension does).
CN_MODEL_EXTS = (".pt", ".pth", ".ckpt", ".safetensors", ".bin")
_LDM_PREFIX = "control_model."


@dataclass(frozen=True)
class ControlNetModelInfo:
    title: str  # "name [hash8]", what /controlnet/model_list lists and units name
    name: str  # file stem
    filename: str


@dataclass
class LoadedControlNet:
    """A ControlNet ready to run: the diffusers module plus what the hook needs to know about it."""

    info: ControlNetModelInfo
    model: Any  # diffusers ControlNetModel
    is_sdxl: bool
    global_average_pooling: bool  # shuffle models (the extension: "shuffle" in the file name)


def _traverse(path: str, found: list) -> list:
    """global_state.traverse_all_files: every file with a model extension, recursively, in scandir order."""
    for entry in os.scandir(path):
        full = os.path.join(path, entry.name)
        st = entry.stat()
        if os.path.splitext(full)[1] in CN_MODEL_EXTS:
            found.append((full, st))
        elif stat.S_ISDIR(st.st_mode):
            _traverse(full, found)
    return found


class ControlNetRegistry:
    """The ControlNet model list and a small cache of loaded models (option control_net_model_cache_size).

    ``model_dirs`` in priority order (models/ControlNet first, then the extension's models folder, then extra
    folders); ``annotator_dir`` is where preprocessor weights live (the extension's annotator/downloads). Nothing is
    scanned until :meth:`refresh`. Owned by the app state; used by the worker thread only.
    """

    def __init__(self, model_dirs: Iterable[str], annotator_dir: str | None = None, *, cache_size: int = 2,
                 device: Any = "cpu"):
        from webui.core.controlnet.preprocessors import AnnotatorContext

        self.model_dirs = [d for d in model_dirs if d]
        self.annotator_dir = annotator_dir
        self.cache_size = cache_size
        self.annotators = AnnotatorContext(annotator_dir, device=device)
        self._models: OrderedDict[str, str | None] = OrderedDict()  # global_state.cn_models: title -> path
        self._names: dict[str, str] = {}  # global_state.cn_models_names: lower stem -> title
        self._cache: OrderedDict[tuple, LoadedControlNet] = OrderedDict()
        self._scanned = False

    # -- the list ------------------------------------------------------------------------------------------------

    def refresh(self) -> list[ControlNetModelInfo]:
        """global_state.update_cn_models: scan the folders; earlier folders win a title both have."""
        from webui.core.models.registry import model_hash

        models: OrderedDict[str, str | None] = OrderedDict()
        for path in self.model_dirs:
            if not os.path.isdir(path):
                continue
            found: OrderedDict[str, str] = OrderedDict()
            for filename, _ in sorted(_traverse(path, []), key=lambda x: os.path.basename(x[0])):
                name = os.path.splitext(os.path.basename(filename))[0]
                if name != "None":  # a hypothetical "None.pt" must not shadow the "None" choice
                    found[f"{name} [{model_hash(filename)}]"] = filename
            models.update({**found, **models})
        self._models = OrderedDict([("None", None), *models.items()])
        self._names = {}
        for title, filename in self._models.items():
            if filename is not None:
                self._names[os.path.splitext(os.path.basename(filename))[0].lower()] = title
        self._scanned = True
        return self.list()

    def _ensure_scanned(self) -> None:
        if not self._scanned:
            self.refresh()

    def list(self) -> list[ControlNetModelInfo]:
        self._ensure_scanned()
        return [ControlNetModelInfo(t, os.path.splitext(os.path.basename(f))[0], f)
                for t, f in self._models.items() if f is not None]

    def model_list(self) -> list[str]:
        """external_code.get_models: the titles, one per lower-cased file stem (what /controlnet/model_list shows;
        "None" is not in it)."""
        self._ensure_scanned()
        return list(self._names.values())

    def resolve(self, name: str | None) -> ControlNetModelInfo | None:
        """Script.build_control_model's lookup: the exact title, else find_closest_lora_model_name -- the stem in
        any case, else the shortest stem containing the name."""
        self._ensure_scanned()
        if not name or name == "None":
            return None
        title = name if self._models.get(name) else None
        if title is None:
            search = name.lower()
            if search in self._names:
                title = self._names[search]
            else:
                applicable = sorted((n for n in self._names if search in n), key=len)
                title = self._names[applicable[0]] if applicable else None
        if title is None:
            return None
        filename = self._models[title]
        return ControlNetModelInfo(title, os.path.splitext(os.path.basename(filename))[0], filename)

    def get_or_raise(self, name: str | None) -> ControlNetModelInfo:
        if not name or name == "None":
            raise ControlNetError("You have not selected any ControlNet Model. Available: "
                                  f"{', '.join(self.model_list()) or '(none in ' + ', '.join(self.model_dirs) + ')'}")
        info = self.resolve(name)
        if info is None:
            available = ", ".join(self.model_list()) or f"(none in {', '.join(self.model_dirs)})"
            raise ControlNetError(f"ControlNet model not found: {name}. Available: {available}")
        return info

    # -- loading -------------------------------------------------------------------------------------------------

    def load(self, name: str, components) -> LoadedControlNet:
        """The named model on the base model's device and dtype, from the cache when it is there (Script.
        load_control_model; the least recently used model is dropped beyond ``cache_size``)."""
        info = self.get_or_raise(name)
        unet = components.unet
        st = os.stat(info.filename)
        key = (info.filename, st.st_mtime_ns, st.st_size, str(unet.device), str(unet.dtype), components.info.filename)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        loaded = load_controlnet(info, unet)
        if self.cache_size > 0:
            while len(self._cache) >= self.cache_size:
                self._cache.popitem(last=False)
            self._cache[key] = loaded
        return loaded

    def clear_cache(self) -> None:
        self._cache.clear()
        self.annotators.detectors.clear()


# ---------------------------------------------------------------------------------------------------------------
# State dict -> ControlNetModel


def _count(sd: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd for m in [rx.match(k)] if m})


def _heads(sd_has_added: bool, block_out: list[int], model_channels: int) -> Any:
    """Attention heads as the extension builds its ControlNets (controlnet_model_guess): SD1.x/SD2.x files get
    controlnet_default_config's ``num_heads: 8``; SDXL files ``num_head_channels: 64`` (tiny test models, narrower
    than 64, keep at least one head per level, as the checkpoint loader does)."""
    if not sd_has_added:
        return 8
    head_channels = min(64, model_channels)
    return [max(1, c // head_channels) for c in block_out]


def _layers_per_block(depths: list[int], mid_depth: int) -> Any:
    """diffusers' transformer_layers_per_block (its last entry is also the mid block's depth)."""
    if not any(d > 1 for d in depths) and mid_depth <= 1:
        return 1
    return [max(d, 1) for d in depths[:-1]] + [max(depths[-1], mid_depth, 1)]


def _added_config(adm_in: int, unet) -> dict[str, Any]:
    """SDXL's text_time embedding: the per-id width comes from the base UNet (256 for every real SDXL)."""
    time_dim = getattr(getattr(unet, "config", None), "addition_time_embed_dim", None) or 256
    return {"addition_embed_type": "text_time", "projection_class_embeddings_input_dim": adm_in,
            "addition_time_embed_dim": time_dim}


def controlnet_config_from_ldm(sd: dict[str, torch.Tensor], unet=None) -> dict[str, Any]:
    """A diffusers ControlNetModel config from the LDM ControlNet's tensor shapes (cldm.ControlNet layout: input
    blocks, zero convs, middle block, input hint block)."""
    model_channels = sd["input_blocks.0.0.weight"].shape[0]
    n_input = _count(sd, r"input_blocks\.(\d+)\.")
    levels: list[dict] = [{"channels": None, "resnets": 0, "depth": 0}]
    for n in range(1, n_input):
        if f"input_blocks.{n}.0.op.weight" in sd:
            levels.append({"channels": None, "resnets": 0, "depth": 0})
            continue
        lvl = levels[-1]
        lvl["channels"] = sd[f"input_blocks.{n}.0.out_layers.3.weight"].shape[0]
        lvl["resnets"] += 1
        lvl["depth"] = max(lvl["depth"], _count(sd, rf"input_blocks\.{n}\.1\.transformer_blocks\.(\d+)\."))
    block_out = [lv["channels"] for lv in levels]
    depths = [lv["depth"] for lv in levels]
    context = [v.shape[1] for k, v in sd.items() if k.endswith("attn2.to_k.weight")]
    mid_depth = _count(sd, r"middle_block\.1\.transformer_blocks\.(\d+)\.")
    hint_convs = sorted(int(m.group(1)) for k in sd for m in [re.match(r"input_hint_block\.(\d+)\.weight$", k)] if m)
    hint_out: list[int] = []
    for i in hint_convs[:-1]:
        c = sd[f"input_hint_block.{i}.weight"].shape[0]
        if not hint_out or hint_out[-1] != c:
            hint_out.append(c)
    added = "label_emb.0.0.weight" in sd
    config: dict[str, Any] = {
        "in_channels": sd["input_blocks.0.0.weight"].shape[1],
        "conditioning_channels": sd["input_hint_block.0.weight"].shape[1],
        "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths],
        "mid_block_type": "UNetMidBlock2DCrossAttn" if mid_depth else "UNetMidBlock2D",
        "block_out_channels": block_out,
        "layers_per_block": levels[0]["resnets"],
        "cross_attention_dim": context[0] if context else 1,
        "attention_head_dim": _heads(added, block_out, model_channels),
        "use_linear_projection": any(k.endswith("proj_in.weight") and v.ndim == 2 for k, v in sd.items()),
        "transformer_layers_per_block": _layers_per_block(depths, mid_depth),
        "conditioning_embedding_out_channels": hint_out,
    }
    if added:
        config.update(_added_config(sd["label_emb.0.0.weight"].shape[1], unet))
    return config


def _is_diffusers_layout(sd: dict) -> bool:
    return "controlnet_cond_embedding.conv_in.weight" in sd


def _diffusers_config_from_shapes(sd: dict[str, torch.Tensor], unet=None) -> dict[str, Any]:
    """A ControlNetModel config for a file already in diffusers naming (e.g. diffusers_xl_canny_*.safetensors)."""
    n_levels = _count(sd, r"down_blocks\.(\d+)\.")
    block_out = [sd[f"down_blocks.{i}.resnets.0.conv2.weight"].shape[0] for i in range(n_levels)]
    depths = [_count(sd, rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.") for i in range(n_levels)]
    mid_depth = _count(sd, r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\.")
    context = [v.shape[1] for k, v in sd.items() if k.endswith("attn2.to_k.weight")]
    hint_out = [sd["controlnet_cond_embedding.conv_in.weight"].shape[0]]
    n_blocks = _count(sd, r"controlnet_cond_embedding\.blocks\.(\d+)\.")
    for i in range(1, n_blocks, 2):
        hint_out.append(sd[f"controlnet_cond_embedding.blocks.{i}.weight"].shape[0])
    added = "add_embedding.linear_1.weight" in sd
    config: dict[str, Any] = {
        "in_channels": sd["conv_in.weight"].shape[1],
        "conditioning_channels": sd["controlnet_cond_embedding.conv_in.weight"].shape[1],
        "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths],
        "mid_block_type": "UNetMidBlock2DCrossAttn" if mid_depth else "UNetMidBlock2D",
        "block_out_channels": block_out,
        "layers_per_block": _count(sd, r"down_blocks\.0\.resnets\.(\d+)\."),
        "cross_attention_dim": context[0] if context else 1,
        "attention_head_dim": _heads(added, block_out, sd["conv_in.weight"].shape[0]),
        "use_linear_projection": any(k.endswith("proj_in.weight") and v.ndim == 2 for k, v in sd.items()),
        "transformer_layers_per_block": _layers_per_block(depths, mid_depth),
        "conditioning_embedding_out_channels": hint_out,
    }
    if added:
        config.update(_added_config(sd["add_embedding.linear_1.weight"].shape[1], unet))
    return config


def _base_unet_ldm(unet) -> dict[str, torch.Tensor]:
    """The live base UNet's weights under LDM names (what a "difference" file is relative to)."""
    from webui.core.models.ldm_layout import UNET_PREFIX, unet_to_ldm

    return {k[len(UNET_PREFIX):]: v for k, v in unet_to_ldm(unet.state_dict(), unet.config).items()}


def controlnet_state_dict(raw: dict[str, torch.Tensor], unet=None, filename: str = "") -> tuple[dict, dict]:
    """A ControlNet file's tensors -> (diffusers state dict, ControlNetModel config). Raises ControlNetError for
    files that are not a ControlNet this server can run (T2I-Adapter, IP-Adapter, Control-LoRA, ...)."""
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    if "lora_controlnet" in raw:
        raise ControlNetError(
            f"{filename}: a Control-LoRA file (Stability's lora_controlnet format); it needs the PEFT-based loader "
            "of diffusers, which this server does not wire in. Use a full ControlNet model."
        )
    if _is_diffusers_layout(raw):
        return raw, _diffusers_config_from_shapes(raw, unet)
    sd = {k.removeprefix(_LDM_PREFIX): v for k, v in raw.items()}
    if "input_hint_block.0.weight" not in sd or "input_blocks.0.0.weight" not in sd:
        kind = ("a T2I-Adapter" if any(k.startswith(("adapter.", "body.", "conv_in.")) for k in sd) else
                "an IP-Adapter" if any(k.startswith(("image_proj", "ip_adapter")) for k in sd) else "not a ControlNet")
        raise ControlNetError(f"{filename}: {kind} model; only ControlNet models are supported")
    if "difference" in sd:
        if unet is None:
            raise ControlNetError(f"{filename}: a 'difference' ControlNet needs the base model's UNet")
        base = _base_unet_ldm(unet)
        sd = {k: (v + base[k].to(v.device, v.dtype) if k in base else v) for k, v in sd.items() if k != "difference"}
    config = controlnet_config_from_ldm(sd, unet)
    converted = convert_controlnet_checkpoint(sd, {"layers_per_block": config["layers_per_block"]})
    converted = {k: v for k, v in converted.items() if v is not None}
    # diffusers' converter leaves SDXL's vector embedding out; its LDM name is label_emb.0.{0,2}
    for a, b in (("linear_1", "0"), ("linear_2", "2")):
        for p in ("weight", "bias"):
            if f"label_emb.0.{b}.{p}" in sd:
                converted[f"add_embedding.{a}.{p}"] = sd[f"label_emb.0.{b}.{p}"]
    return converted, config


def _family(is_sdxl: bool, context_dim: int) -> str:
    return "SDXL" if is_sdxl else f"SD1.x/SD2.x, context {context_dim}"


def _check_compatible(info: ControlNetModelInfo, config: dict, unet) -> None:
    """Script.check_sd_version_compatible, from the weights rather than the file name: an SDXL ControlNet needs an
    SDXL model and the text context widths must agree."""
    cn_xl = config.get("addition_embed_type") == "text_time"
    base_xl = getattr(unet.config, "addition_embed_type", None) == "text_time"
    has_attention = any("CrossAttn" in t for t in config["down_block_types"]) or \
        config["mid_block_type"] == "UNetMidBlock2DCrossAttn"
    if cn_xl != base_xl or (has_attention and config["cross_attention_dim"] != unet.config.cross_attention_dim):
        raise ControlNetError(
            f"ControlNet model {info.title} ({_family(cn_xl, config['cross_attention_dim'])}) is not compatible with "
            f"the loaded model ({_family(base_xl, unet.config.cross_attention_dim)})"
        )


def load_controlnet(info: ControlNetModelInfo, unet) -> LoadedControlNet:
    """Read (safely) and build one ControlNet on the base UNet's device and dtype."""
    from diffusers import ControlNetModel

    from webui.core.models.loader import CheckpointLoadError, read_state_dict

    try:
        raw = read_state_dict(info.filename)
    except CheckpointLoadError as e:
        raise ControlNetError(str(e)) from e
    sd, config = controlnet_state_dict(raw, unet, info.filename)
    _check_compatible(info, config, unet)
    try:
        with torch.device("meta"):
            model = ControlNetModel(**config)
        missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise ControlNetError(f"{info.filename}: not a loadable ControlNet ({type(e).__name__}: {e})") from e
    if missing:
        raise ControlNetError(f"{info.filename}: ControlNet weights missing from the file: {', '.join(missing[:5])}")
    if unexpected:
        log.debug("%s: %d unexpected ControlNet keys ignored", info.filename, len(unexpected))
    model = model.eval().requires_grad_(False)
    torch.nn.Module.to(model, unet.device, unet.dtype)
    if unet.device.type == "cpu":
        with torch.no_grad():  # own copies, not pages of the file's memory map (see loader.load_components)
            for t in list(model.parameters()) + list(model.buffers()):
                t.data = t.data.clone()
    shuffle = "shuffle" in os.path.splitext(os.path.basename(os.path.abspath(info.filename)))[0].lower()
    log.info("ControlNet %s loaded", info.title)
    return LoadedControlNet(info=info, model=model, is_sdxl=config.get("addition_embed_type") == "text_time",
                            global_average_pooling=shuffle)
