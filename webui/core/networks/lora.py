"""LoRA and LyCORIS networks for one request, as A1111's built-in Lora extension (``extensions-builtin/Lora``).

Three parts, each after the A1111 file it reproduces:

- ``LoraRegistry``: what is on disk (``networks.list_available_networks`` / ``process_network_files``): files under
  ``--lora-dir`` (models/Lora) then models/LyCORIS, their names, aliases (``ss_output_name``), and the short hash
  written in the ``Lora hashes`` infotext (``network.NetworkOnDisk.set_hash``: the kohya "addnet" hash of
  ``.safetensors`` files, the plain sha256 of others, cut to 12 hex digits).
- ``load_network``: a file -> ``LoadedNetwork`` (``networks.load_network``): every key of the file is mapped to the
  diffusers module it patches (kohya ``lora_unet_*`` in diffusers or LDM naming, ``lora_te*_*``, and diffusers/PEFT
  keys), grouped per module and given to the first module type that accepts its parts (``network_lora``,
  ``network_hada``, ``network_ia3``, ``network_lokr``, ``network_full``, ``network_norm``).
- ``apply_networks``: a context manager that merges the weight deltas into the model
  (``networks.network_apply_weights``: weight = weight + updown * scale * multiplier, several networks in order)
  and puts back the exact original tensors on exit.

Why patch weights in place rather than use diffusers' PEFT adapters: A1111 merges the deltas into the weights (the
speed of a plain model while sampling, and A1111's exact numbers for LoHa/LoKr/IA3/DoRA, which PEFT does not load
from these files), and a request must leave the cached model bit-identical afterwards. Backing up each touched
tensor and copying it back gives that exact undo; unfusing PEFT adapters (a subtraction) does not.

Nothing here is global: the registry (and its bounded cache of loaded networks) is owned by ``AppState``.
"""

from __future__ import annotations

import abc
import builtins
import collections
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch

from webui.core.models.registry import HashCache, _walk_files

logger = logging.getLogger(__name__)

NETWORK_EXTENSIONS = (".pt", ".ckpt", ".safetensors")  # A1111 list_available_networks allowed_extensions
# A1111 network.metadata_tags_order: these metadata keys are listed first, in this order.
METADATA_TAGS_ORDER = {"ss_sd_model_name": 1, "ss_resolution": 2, "ss_clip_skip": 3, "ss_num_train_images": 10,
                       "ss_tag_frequency": 20}
# A1111 list_available_networks seeds forbidden_network_aliases with these. "Addams" keeps its capital A as in A1111,
# where it is compared with name.lower() and so never matches; reproduced, not fixed.
_INITIAL_FORBIDDEN_ALIASES = ("none", "Addams")
ADDNET_HASH_SECTION = "hashes-addnet"  # A1111 hashes.sha256(use_addnet_hash=True) cache.json section
SHORTHASH_LENGTH = 12  # A1111 NetworkOnDisk.set_hash: shorthash = hash[0:12]
_REMOVE_SYMBOLS = str.maketrans("", "", ":,")  # A1111 ExtraNetworkLora.remove_symbols

TEXT_ENCODER, TEXT_ENCODER_2, UNET = "text_encoder", "text_encoder_2", "unet"


class NetworkLoadError(ValueError):
    """A network file could not be read or holds no key that matches the model; the message names the file."""


# ---------------------------------------------------------------------------------------------------------------
# Files on disk


@dataclass(frozen=True)
class LoraInfo:
    """One network file as A1111 lists it (``network.NetworkOnDisk``) and ``/sdapi/v1/loras`` returns it."""

    name: str  # the file stem
    alias: str  # safetensors metadata ss_output_name, else name
    path: str  # absolute
    metadata: dict = field(default_factory=dict, compare=False)  # safetensors header metadata, {} for .pt/.ckpt

    @property
    def is_safetensors(self) -> bool:
        return os.path.splitext(self.path)[1].lower() == ".safetensors"


def read_safetensors_metadata(path: str) -> dict:
    """A1111 ``sd_models.read_metadata_from_safetensors``: the ``__metadata__`` of the header, with string values
    that look like JSON objects parsed (kohya stores ``ss_tag_frequency`` etc. that way), then ordered by
    ``network.metadata_tags_order``. Raises ValueError for a file that is not safetensors."""
    with open(path, "rb") as file:
        header_len = int.from_bytes(file.read(8), "little")
        json_start = file.read(2)
        if header_len <= 2 or json_start not in (b'{"', b"{'"):
            raise ValueError(f"{path} is not a safetensors file")
        header = json.loads(json_start + file.read(header_len - 2))
    res = {}
    for k, v in (header.get("__metadata__") or {}).items():
        res[k] = v
        if isinstance(v, str) and v[0:1] == "{":
            try:
                res[k] = json.loads(v)
            except ValueError:
                pass
    return dict(sorted(res.items(), key=lambda kv: METADATA_TAGS_ORDER.get(kv[0], 999)))


def addnet_hash_safetensors(path: str) -> str:
    """A1111 ``hashes.addnet_hash_safetensors`` (kohya-ss sd-scripts ``train_util``): sha256 of everything after
    the safetensors header, so editing the metadata does not change the hash."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        f.seek(n + 8)
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            h.update(chunk)
    return h.hexdigest()


def _addnet_hash_cached(cache: HashCache, path: str, title: str, compute: bool) -> str | None:
    """The addnet hash from the ``hashes-addnet`` section of ``cache.json`` (where A1111 keeps it, so a shared
    cache file is reused both ways), computed and stored when missing or stale and ``compute`` is true.

    ``HashCache`` only exposes its ``hashes`` section; this reuses its lock, lazy load and atomic write for the
    neighbouring section rather than opening the file a second time (two writers would drop each other's entries).
    """
    try:
        mtime = os.path.getmtime(path)
    except OSError:
        return None
    with cache._lock:
        data = cache._load()
        section = data.get(ADDNET_HASH_SECTION)
        if not isinstance(section, dict):
            section = data[ADDNET_HASH_SECTION] = {}
        entry = section.get(title)
        if isinstance(entry, dict) and entry.get("sha256") and entry.get("mtime", 0) == mtime:
            return entry["sha256"]
    if not compute:
        return None
    logger.info("Calculating sha256 for %s", path)
    value = addnet_hash_safetensors(path)
    with cache._lock:
        section[title] = {"mtime": mtime, "sha256": value}
        try:
            cache._dump()
        except OSError as e:
            logger.warning("cannot write hash cache %s: %s", cache.path, e)
    return value


class LoraRegistry:
    """The LoRA/LyCORIS list (``/sdapi/v1/loras``) and A1111's name lookup for ``<lora:name:...>``.

    ``dirs`` are scanned in order (A1111: ``--lora-dir`` then ``--lyco-dir-backcompat``, i.e. models/Lora then
    models/LyCORIS). Nothing is scanned until ``refresh()``. The registry also owns the bounded cache of loaded
    networks (``in_memory_limit``, A1111 option ``lora_in_memory_limit``, default 0 as in A1111: only the networks
    of the last request stay loaded).
    """

    def __init__(self, dirs: Sequence[str | os.PathLike], hash_cache: HashCache | None = None, *,
                 in_memory_limit: int = 0, no_hashing: bool = False):
        self.dirs = tuple(os.path.abspath(d) for d in dirs)
        self.hash_cache = hash_cache if hash_cache is not None else HashCache(None)
        self.no_hashing = no_hashing
        self.cache = NetworkCache(in_memory_limit)
        self._lock = threading.RLock()
        self._networks: dict[str, LoraInfo] = {}  # A1111 available_networks
        self._aliases: dict[str, LoraInfo] = {}  # A1111 available_network_aliases
        self._forbidden: set[str] = set(_INITIAL_FORBIDDEN_ALIASES)  # A1111 forbidden_network_aliases

    def refresh(self) -> builtins.list[LoraInfo]:
        """Rescan (A1111 ``list_available_networks``; ``/sdapi/v1/refresh-loras``).

        Files in A1111's ``walk_files`` order (folders, then files, in natural order). Two files with the same stem
        (in different sub-folders or in both folders): the later one wins the name, at the first one's place in the
        list (a dict assignment in A1111). An alias already taken (by an earlier name or alias) becomes "forbidden":
        ``resolve`` then looks it up by file name only. Unreadable metadata is logged and the file still listed.
        """
        networks: dict[str, LoraInfo] = {}
        aliases: dict[str, LoraInfo] = {}
        forbidden = set(_INITIAL_FORBIDDEN_ALIASES)
        seen: set[str] = set()
        for folder in self.dirs:
            for path in _walk_files(folder, NETWORK_EXTENSIONS):
                path = os.path.abspath(path)
                # The same folder given twice (--lora-dir pointing at models/LyCORIS) would register every file
                # twice and, in A1111, make every alias forbidden; we list each file once.
                if path in seen or os.path.isdir(path):
                    continue
                seen.add(path)
                name = os.path.splitext(os.path.basename(path))[0]
                metadata: dict = {}
                if path.lower().endswith(".safetensors"):
                    try:
                        metadata = read_safetensors_metadata(path)
                    except (OSError, ValueError) as e:
                        logger.error("reading lora %s: %s", path, e)
                alias = metadata.get("ss_output_name", name)
                alias = alias if isinstance(alias, str) and alias else name
                info = LoraInfo(name=name, alias=alias, path=path, metadata=metadata)
                networks[name] = info
                if info.alias in aliases:
                    forbidden.add(info.alias.lower())
                aliases[name] = info
                aliases[info.alias] = info
        with self._lock:
            self._networks, self._aliases, self._forbidden = networks, aliases, forbidden
            return builtins.list(networks.values())

    def list(self) -> builtins.list[LoraInfo]:
        """Networks in A1111's ``available_networks`` order, as of the last ``refresh``."""
        with self._lock:
            return builtins.list(self._networks.values())

    def resolve(self, name: str) -> LoraInfo | None:
        """A1111 ``load_networks`` lookup: by file name if ``name.lower()`` is a forbidden alias, else by name or
        alias (``available_network_aliases``). Case-sensitive, as A1111's dicts."""
        with self._lock:
            if name.lower() in self._forbidden:
                return self._networks.get(name)
            return self._aliases.get(name)

    def prompt_name(self, info: LoraInfo, lora_preferred_name: str = "Alias from file") -> str:
        """A1111 ``NetworkOnDisk.get_alias``: what the UI writes into ``<lora:...>`` (option ``lora_preferred_name``:
        "Alias from file" or "Filename"); the file name when the alias is forbidden (taken twice)."""
        with self._lock:
            if lora_preferred_name == "Filename" or info.alias.lower() in self._forbidden:
                return info.name
            return info.alias

    def shorthash(self, info: LoraInfo, compute: bool = True) -> str:
        """The hash A1111 writes in ``Lora hashes`` (``NetworkOnDisk.set_hash`` / ``read_hash``): metadata
        ``sshs_model_hash`` if present, else the cached hash (``cache.json``, title ``lora/<name>``: the addnet hash
        of a ``.safetensors``, the full-file sha256 of a ``.pt``/``.ckpt``), computed when missing unless
        ``no_hashing`` or ``compute=False``; the first 12 hex digits. "" when unknown."""
        value = info.metadata.get("sshs_model_hash")
        if not value:
            title = "lora/" + info.name
            compute = compute and not self.no_hashing
            if info.is_safetensors:
                value = _addnet_hash_cached(self.hash_cache, info.path, title, compute)
            elif compute:
                value = self.hash_cache.sha256(info.path, title)
            else:
                value = self.hash_cache.sha256_from_cache(info.path, title)
        return str(value or "")[:SHORTHASH_LENGTH]

    def load(self, info: LoraInfo, components) -> LoadedNetwork:
        """``load_network`` through the cache (keyed by file, mtime and the model it was mapped for)."""
        return self.cache.get_or_load(info, components)


# ---------------------------------------------------------------------------------------------------------------
# Module types: A1111 network_*.py. Each computes ``updown`` (the weight delta) for one module.


def _make_weight_cp(t, wa, wb):
    """A1111 ``lyco_helpers.make_weight_cp`` (LyCORIS CP decomposition)."""
    temp = torch.einsum("i j k l, j r -> i r k l", t, wb)
    return torch.einsum("i j k l, i r -> r j k l", temp, wa)


def _rebuild_conventional(up, down, shape, dyn_dim=None):
    """A1111 ``lyco_helpers.rebuild_conventional``: up @ down, optionally cut to the first ``dyn_dim`` ranks."""
    up = up.reshape(up.size(0), -1)
    down = down.reshape(down.size(0), -1)
    if dyn_dim is not None:
        up = up[:, :dyn_dim]
        down = down[:dyn_dim, :]
    return (up @ down).reshape(shape)


def _rebuild_cp_decomposition(up, down, mid):
    """A1111 ``lyco_helpers.rebuild_cp_decomposition`` (LoCon with ``lora_mid``)."""
    up = up.reshape(up.size(0), -1)
    down = down.reshape(down.size(0), -1)
    return torch.einsum("n m k l, i n, m j -> i j k l", mid, up, down)


def _make_kron(orig_shape, w1, w2):
    """A1111 ``network_lokr.make_kron``."""
    if len(w2.shape) == 4:
        w1 = w1.unsqueeze(2).unsqueeze(2)
    w2 = w2.contiguous()
    return torch.kron(w1, w2).reshape(orig_shape)


def _is_linear(module) -> bool:
    return isinstance(module, torch.nn.Linear)


def _is_conv(module) -> bool:
    return isinstance(module, torch.nn.Conv2d)


PATCHABLE_TYPES = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.LayerNorm)
"""The layers A1111 patches (``lora_patches``: Linear, Conv2d, GroupNorm, LayerNorm; MultiheadAttention does not
occur in diffusers/transformers models)."""


class NetworkModule(abc.ABC):
    """A1111 ``network.NetworkModule``: the parts of one module of a file, and ``finalize_updown``.

    ``w`` holds the file's tensors (CPU, file dtype) under A1111's part names (``lora_up.weight``, ``alpha``, ...).
    """

    kind = "base"

    def __init__(self, network_key: str, target: str, module_path: str, w: dict[str, torch.Tensor], shape):
        self.network_key = network_key  # the first file key of the module (A1111 NetworkWeights.network_key)
        self.target = target  # "unet" | "text_encoder" | "text_encoder_2"
        self.module_path = module_path  # diffusers module name inside that component
        self.shape = tuple(shape)  # the target weight's shape when loaded
        self.w = w
        self.dim = None
        self.bias = w.get("bias")
        self.alpha = w["alpha"].item() if "alpha" in w else None
        self.scale = w["scale"].item() if "scale" in w else None
        self.dora_scale = w.get("dora_scale")
        self.dora_norm_dims = len(self.shape) - 1

    def calc_scale(self) -> float:
        """A1111 ``calc_scale``: explicit ``scale``, else alpha / rank, else 1."""
        if self.scale is not None:
            return self.scale
        if self.dim is not None and self.alpha is not None:
            return self.alpha / self.dim
        return 1.0

    def _t(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return t.to(device=like.device, dtype=like.dtype)

    def apply_weight_decompose(self, updown, orig_weight):
        """A1111 ``NetworkModule.apply_weight_decompose`` (DoRA, ``dora_scale``)."""
        dora_scale = self._t(self.dora_scale, updown)
        merged = updown + orig_weight
        norm = (merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1, keepdim=True)
                .reshape(merged.shape[1], *[1] * self.dora_norm_dims).transpose(0, 1))
        return merged * (dora_scale / norm) - orig_weight

    def finalize_updown(self, updown, orig_weight, output_shape, multiplier: float, ex_bias=None):
        """A1111 ``finalize_updown``: add ``bias``, reshape to the weight, scale, DoRA, then the multiplier."""
        if self.bias is not None:
            updown = updown.reshape(self.bias.shape)
            updown = updown + self._t(self.bias, orig_weight)
            updown = updown.reshape(output_shape)
        if len(output_shape) == 4:
            updown = updown.reshape(output_shape)
        if orig_weight.size().numel() == updown.size().numel():
            updown = updown.reshape(orig_weight.shape)
        if ex_bias is not None:
            ex_bias = ex_bias * multiplier
        updown = updown * self.calc_scale()
        if self.dora_scale is not None:
            updown = self.apply_weight_decompose(updown, orig_weight)
        return updown * multiplier, ex_bias

    @abc.abstractmethod
    def calc_updown(self, orig_weight, module, multiplier: float, dyn_dim: int | None):
        """(updown, ex_bias) to add to ``module``'s weight and bias; ``orig_weight`` is its current float32 weight."""


class LoraModule(NetworkModule):
    """A1111 ``network_lora``: ``lora_up``/``lora_down`` (+ ``lora_mid`` CP-decomposed LoCon), PEFT lora_A/B."""

    kind = "lora"

    @staticmethod
    def accepts(w) -> bool:
        if all(k in w for k in ("lora_up.weight", "lora_down.weight")):
            return True
        if all(k in w for k in ("lora_A.weight", "lora_B.weight")):
            w["lora_up.weight"] = w.pop("lora_B.weight")
            w["lora_down.weight"] = w.pop("lora_A.weight")
            return True
        return False

    def __init__(self, *args):
        super().__init__(*args)
        self.dim = self.w["lora_down.weight"].shape[0]

    def _shaped(self, key: str, module) -> torch.Tensor | None:
        """A1111 ``NetworkModuleLora.create_module``: the tensor reshaped as the Linear/Conv2d it would build."""
        weight = self.w.get(key)
        if weight is None:
            return None
        if _is_linear(module):
            return weight.reshape(weight.shape[0], -1)
        if _is_conv(module):
            if key == "lora_down.weight" and len(weight.shape) == 2:
                return weight.reshape(weight.shape[0], -1, 1, 1)
            if key == "lora_up.weight":
                return weight.reshape(weight.shape[0], -1, 1, 1)
            return weight
        raise RuntimeError(f"Lora layer {self.network_key} matched a layer with unsupported type: "
                           f"{type(module).__name__}")

    def calc_updown(self, orig_weight, module, multiplier, dyn_dim):
        up = self._t(self._shaped("lora_up.weight", module), orig_weight)
        down = self._t(self._shaped("lora_down.weight", module), orig_weight)
        mid = self._shaped("lora_mid.weight", module)
        output_shape = [up.size(0), down.size(1)]
        if mid is not None:
            mid = self._t(mid, orig_weight)
            updown = _rebuild_cp_decomposition(up, down, mid)
            output_shape += mid.shape[2:]
        else:
            if len(down.shape) == 4:
                output_shape += down.shape[2:]
            updown = _rebuild_conventional(up, down, output_shape, dyn_dim)
        return self.finalize_updown(updown, orig_weight, output_shape, multiplier)


class HadaModule(NetworkModule):
    """A1111 ``network_hada`` (LyCORIS LoHa): (w1a @ w1b) * (w2a @ w2b), CP-decomposed with ``hada_t1/t2``."""

    kind = "loha"

    @staticmethod
    def accepts(w) -> bool:
        return all(k in w for k in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"))

    def __init__(self, *args):
        super().__init__(*args)
        self.dim = self.w["hada_w1_b"].shape[0]

    def calc_updown(self, orig_weight, module, multiplier, dyn_dim):
        w1a, w1b, w2a, w2b = (self._t(self.w[k], orig_weight) for k in ("hada_w1_a", "hada_w1_b", "hada_w2_a",
                                                                        "hada_w2_b"))
        t1, t2 = self.w.get("hada_t1"), self.w.get("hada_t2")
        output_shape = [w1a.size(0), w1b.size(1)]
        if t1 is not None:
            output_shape = [w1a.size(1), w1b.size(1)]
            t1 = self._t(t1, orig_weight)
            updown1 = _make_weight_cp(t1, w1a, w1b)
            output_shape += t1.shape[2:]
        else:
            if len(w1b.shape) == 4:
                output_shape += w1b.shape[2:]
            updown1 = _rebuild_conventional(w1a, w1b, output_shape)
        if t2 is not None:
            updown2 = _make_weight_cp(self._t(t2, orig_weight), w2a, w2b)
        else:
            updown2 = _rebuild_conventional(w2a, w2b, output_shape)
        return self.finalize_updown(updown1 * updown2, orig_weight, output_shape, multiplier)


class Ia3Module(NetworkModule):
    """A1111 ``network_ia3`` ((IA)^3): the weight scaled per output (or per input with ``on_input``)."""

    kind = "ia3"

    @staticmethod
    def accepts(w) -> bool:
        return "weight" in w

    def calc_updown(self, orig_weight, module, multiplier, dyn_dim):
        w = self._t(self.w["weight"], orig_weight)
        on_input = self.w["on_input"].item() if "on_input" in self.w else False
        output_shape = [w.size(0), orig_weight.size(1)]
        if on_input:
            output_shape.reverse()
        else:
            w = w.reshape(-1, 1)
        return self.finalize_updown(orig_weight * w, orig_weight, output_shape, multiplier)


class LokrModule(NetworkModule):
    """A1111 ``network_lokr`` (LyCORIS LoKr): kron(w1, w2), each full or low-rank (``_a @ _b``, ``lokr_t2`` CP)."""

    kind = "lokr"

    @staticmethod
    def accepts(w) -> bool:
        has_1 = "lokr_w1" in w or ("lokr_w1_a" in w and "lokr_w1_b" in w)
        has_2 = "lokr_w2" in w or ("lokr_w2_a" in w and "lokr_w2_b" in w)
        return has_1 and has_2

    def __init__(self, *args):
        super().__init__(*args)
        if self.w.get("lokr_w1_b") is not None:
            self.dim = self.w["lokr_w1_b"].shape[0]
        if self.w.get("lokr_w2_b") is not None:
            self.dim = self.w["lokr_w2_b"].shape[0]

    def calc_updown(self, orig_weight, module, multiplier, dyn_dim):
        w = {k: self._t(v, orig_weight) for k, v in self.w.items() if k.startswith("lokr_")}
        w1 = w["lokr_w1"] if "lokr_w1" in w else w["lokr_w1_a"] @ w["lokr_w1_b"]
        if "lokr_w2" in w:
            w2 = w["lokr_w2"]
        elif "lokr_t2" not in w:
            w2 = w["lokr_w2_a"] @ w["lokr_w2_b"]
        else:
            w2 = _make_weight_cp(w["lokr_t2"], w["lokr_w2_a"], w["lokr_w2_b"])
        output_shape = [w1.size(0) * w2.size(0), w1.size(1) * w2.size(1)]
        if len(orig_weight.shape) == 4:
            output_shape = orig_weight.shape
        updown = _make_kron(output_shape, w1, w2)
        return self.finalize_updown(updown, orig_weight, output_shape, multiplier)


class FullModule(NetworkModule):
    """A1111 ``network_full`` (LyCORIS full): the stored difference ``diff`` (and ``diff_b`` for the bias)."""

    kind = "full"

    @staticmethod
    def accepts(w) -> bool:
        return "diff" in w

    def calc_updown(self, orig_weight, module, multiplier, dyn_dim):
        updown = self._t(self.w["diff"], orig_weight)
        ex_bias = self._t(self.w["diff_b"], orig_weight) if "diff_b" in self.w else None
        return self.finalize_updown(updown, orig_weight, self.w["diff"].shape, multiplier, ex_bias)


class NormModule(NetworkModule):
    """A1111 ``network_norm``: LyCORIS deltas for GroupNorm/LayerNorm weight (``w_norm``) and bias (``b_norm``)."""

    kind = "norm"

    @staticmethod
    def accepts(w) -> bool:
        return all(k in w for k in ("w_norm", "b_norm"))

    def calc_updown(self, orig_weight, module, multiplier, dyn_dim):
        updown = self._t(self.w["w_norm"], orig_weight)
        ex_bias = self._t(self.w["b_norm"], orig_weight) if self.w.get("b_norm") is not None else None
        return self.finalize_updown(updown, orig_weight, self.w["w_norm"].shape, multiplier, ex_bias)


# A1111 networks.module_types order (GLoRA and OFT are not supported here: their keys count as unmatched).
MODULE_TYPES = (LoraModule, HadaModule, Ia3Module, LokrModule, FullModule, NormModule)


# ---------------------------------------------------------------------------------------------------------------
# Key mapping: file keys -> (component, diffusers module)


def _components_of(components) -> dict[str, Any]:
    return {n: m for n in (UNET, TEXT_ENCODER, TEXT_ENCODER_2)
            if (m := getattr(components, n, None)) is not None}


class ModuleIndex:
    """Every patchable module of a model under the names network files use for it.

    kohya/A1111 names are a prefix plus the module name with dots turned into underscores:
    ``lora_unet_`` + the diffusers name (SD1 kohya files: ``lora_unet_down_blocks_0_attentions_0_...``) or + the LDM
    name (SDXL kohya files: ``lora_unet_input_blocks_4_1_...``, what A1111 reaches through
    ``convert_diffusers_name_to_compvis`` and its ``lora_unet`` -> ``diffusion_model`` fallback). The LDM names come
    from our own reverse layout (``ldm_layout.unet_to_ldm``), so they follow the model's real block numbering.
    Text encoders: ``lora_te_`` (SD1/SD2; A1111 also accepts ``lora_te1_`` there), ``lora_te1_``/``lora_te2_`` (SDXL).
    """

    def __init__(self, components):
        from webui.core.models.ldm_layout import UNET_PREFIX, unet_to_ldm

        self.modules: dict[tuple[str, str], torch.nn.Module] = {}  # (component, module path) -> module
        self.by_path: dict[tuple[str, str], tuple[str, str]] = {}  # (component, path as files write it) -> key
        self.kohya: dict[str, tuple[str, str]] = {}  # kohya module name -> key
        parts = _components_of(components)
        prefixes = {UNET: ("lora_unet_",), TEXT_ENCODER_2: ("lora_te2_",),
                    TEXT_ENCODER: ("lora_te1_",) if TEXT_ENCODER_2 in parts else ("lora_te_", "lora_te1_")}
        for comp_name, model in parts.items():
            for path, module in model.named_modules():
                if not (isinstance(module, PATCHABLE_TYPES) and getattr(module, "weight", None) is not None):
                    continue
                key = (comp_name, path)
                self.modules[key] = module
                self.by_path[key] = key
                file_path = path
                if comp_name != UNET and not path.startswith(("text_model.", "text_projection")):
                    # transformers 5 dropped the ``text_model`` wrapper of CLIPTextModel; files keep the v4 names
                    file_path = "text_model." + path
                    self.by_path[(comp_name, file_path)] = key
                flat = file_path.replace(".", "_")
                for prefix in prefixes[comp_name]:
                    self.kohya.setdefault(prefix + flat, key)
        unet = parts.get(UNET)
        if unet is not None:
            weights = {k: v for k, v in unet.state_dict(keep_vars=True).items() if k.endswith(".weight")}
            try:
                ldm = unet_to_ldm(weights, unet.config)
            except (KeyError, TypeError) as e:  # a UNet layout we cannot name in LDM terms: diffusers names only
                logger.warning("no LDM module names for this UNet (%s); lora_unet_input_blocks_* keys won't match", e)
                ldm = {}
            by_tensor = {id(v): k for k, v in weights.items()}
            for ldm_key, tensor in ldm.items():
                key = (UNET, by_tensor[id(tensor)][: -len(".weight")])
                if key in self.modules:
                    flat = ldm_key[len(UNET_PREFIX): -len(".weight")].replace(".", "_")
                    self.kohya.setdefault("lora_unet_" + flat, key)


# diffusers / PEFT key suffixes -> A1111 part names
_PEFT_PARTS = (
    ("lora_A.weight", "lora_down.weight"),
    ("lora_B.weight", "lora_up.weight"),
    ("lora_A.default.weight", "lora_down.weight"),
    ("lora_B.default.weight", "lora_up.weight"),
    ("lora_linear_layer.down.weight", "lora_down.weight"),
    ("lora_linear_layer.up.weight", "lora_up.weight"),
    ("lora.down.weight", "lora_down.weight"),
    ("lora.up.weight", "lora_up.weight"),
    ("alpha", "alpha"),
)
_PEFT_COMPONENTS = (("unet.", UNET), ("text_encoder_2.", TEXT_ENCODER_2), ("text_encoder.", TEXT_ENCODER))
_UNET_TOP_LEVEL = ("down_blocks.", "mid_block.", "up_blocks.", "conv_in.", "conv_out.", "time_embedding.")
# diffusers <= 0.20 attention-processor files: ``...attn1.processor.to_q_lora.down.weight``
_RE_PROCESSOR = re.compile(r"^(.*)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$")


def _parse_peft_key(key: str) -> tuple[str, str, str] | None:
    """A diffusers/PEFT key -> (component, diffusers module path, A1111 part name), or None."""
    component = None
    for prefix, name in _PEFT_COMPONENTS:
        if key.startswith(prefix):
            component, key = name, key[len(prefix):]
            break
    if component is None:
        if not key.startswith(_UNET_TOP_LEVEL):
            return None
        component = UNET
    m = _RE_PROCESSOR.match(key)
    if m:
        proj = "to_out.0" if m.group(2) == "to_out" else m.group(2)
        return component, f"{m.group(1)}.{proj}", f"lora_{m.group(3)}.weight"
    for suffix, part in _PEFT_PARTS:
        if key.endswith("." + suffix):
            return component, key[: -len(suffix) - 1], part
    return None


def _peft_scale(metadata: dict, component: str, path: str, rank: int) -> float | None:
    """PEFT ``lora_alpha / r`` from diffusers' ``lora_adapter_metadata`` (``unet.lora_alpha``,
    ``unet.alpha_pattern``, ``unet.use_rslora``), for diffusers files that carry no ``.alpha`` tensors."""
    meta = metadata.get("lora_adapter_metadata")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except ValueError:
            return None
    if not isinstance(meta, dict):
        return None
    alpha = meta.get(f"{component}.lora_alpha")
    for pattern, value in (meta.get(f"{component}.alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", path):  # PEFT get_pattern_key
            alpha = value
            break
    if alpha is None:
        return None
    return float(alpha) / (math.sqrt(rank) if meta.get(f"{component}.use_rslora") else rank)


@dataclass(frozen=True)
class LoadedNetwork:
    """A network file mapped onto one model: its modules keyed by (component, diffusers module path).

    Modules are stored by name, not by reference, so a cached network never keeps a model alive.
    """

    info: LoraInfo
    modules: Mapping[tuple[str, str], NetworkModule]
    unmatched_keys: tuple[str, ...]
    mtime: float


def _read_network_file(path: str) -> dict[str, torch.Tensor]:
    from webui.core.models.loader import CheckpointLoadError, read_state_dict

    try:
        return read_state_dict(path)  # safetensors, or torch.load(weights_only=True) for .pt/.ckpt
    except CheckpointLoadError as e:
        raise NetworkLoadError(f"cannot load network {path}: {e}") from e


def load_network(info: LoraInfo, components) -> LoadedNetwork:
    """Read ``info.path`` and map each module of it to the module of ``components`` it patches
    (A1111 ``networks.load_network``).

    Keys that match no module (or whose parts no module type accepts) are counted in ``unmatched_keys`` and logged,
    as A1111 logs ``keys_failed_to_match``. A file that cannot be read or matches nothing raises
    :class:`NetworkLoadError` naming the file.
    """
    try:
        mtime = os.path.getmtime(info.path)
    except OSError as e:
        raise NetworkLoadError(f"cannot load network {info.path}: {e}") from e
    sd = _read_network_file(info.path)
    index = ModuleIndex(components)
    unmatched: list[str] = []
    matched: dict[tuple[str, str], tuple[str, dict[str, torch.Tensor]]] = {}
    peft_modules: set[tuple[str, str]] = set()
    for key, tensor in sd.items():
        if key.startswith("bundle_emb."):
            # A1111 registers these as textual-inversion embeddings bundled with the LoRA; not handled here
            unmatched.append(key)
            continue
        head, _, part = key.partition(".")
        target = index.kohya.get(head)
        if target is None:
            parsed = _parse_peft_key(key)
            if parsed is not None:
                target, part = index.by_path.get((parsed[0], parsed[1])), parsed[2]
                if target is not None:
                    peft_modules.add(target)
        if target is None:
            unmatched.append(key)
            continue
        entry = matched.setdefault(target, (key, {}))
        entry[1][part] = tensor

    modules: dict[tuple[str, str], NetworkModule] = {}
    for target, (network_key, w) in matched.items():
        module = index.modules[target]
        module_type = next((t for t in MODULE_TYPES if t.accepts(w)), None)
        if module_type is None:
            # A1111 raises "Could not find a module type ..." and fails the whole file; we drop just these keys
            unmatched.extend(f"{network_key.partition('.')[0]}.{p}" for p in w)
            continue
        if target in peft_modules and module_type is LoraModule and "alpha" not in w and "scale" not in w:
            scale = _peft_scale(info.metadata, target[0], target[1], w["lora_down.weight"].shape[0])
            if scale is not None:
                w["scale"] = torch.tensor(scale)
        modules[target] = module_type(network_key, target[0], target[1], w, module.weight.shape)

    if unmatched:
        logger.info("Network %s: %d keys did not match the model", info.path, len(unmatched))
        logger.debug("Network %s didn't match keys: %s", info.path, unmatched)
    if not modules:
        raise NetworkLoadError(
            f"network {info.path} has no key that matches this model ({len(sd)} keys, e.g. "
            f"{', '.join(builtins.list(sd)[:3]) or 'none'}): not a LoRA/LyCORIS file, or made for another model type")
    return LoadedNetwork(info=info, modules=modules, unmatched_keys=tuple(unmatched), mtime=mtime)


class NetworkCache:
    """Loaded networks by (file, mtime, model), in LRU order (A1111 ``networks_in_memory``).

    A1111 keeps the networks of the current request (``loaded_networks``) plus ``lora_in_memory_limit`` others;
    ``trim(keep)`` does the same: entries in ``keep`` stay, the others are evicted oldest first down to ``limit``.
    """

    def __init__(self, limit: int = 0):
        self.limit = max(0, int(limit))
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[tuple, LoadedNetwork] = collections.OrderedDict()

    @staticmethod
    def key(info: LoraInfo, components) -> tuple:
        ckpt = getattr(getattr(components, "info", None), "filename", None)
        return (info.path, os.path.getmtime(info.path), ckpt, getattr(components, "arch", None))

    def get_or_load(self, info: LoraInfo, components) -> LoadedNetwork:
        try:
            key = self.key(info, components)
        except OSError as e:
            raise NetworkLoadError(f"cannot load network {info.path}: {e}") from e
        with self._lock:
            net = self._entries.get(key)
            if net is not None:
                self._entries.move_to_end(key)
                return net
        net = load_network(info, components)
        with self._lock:
            # a newer version of the same file for the same model replaces the old one
            for old in [k for k in self._entries if k[0] == key[0] and k[2:] == key[2:]]:
                del self._entries[old]
            self._entries[key] = net
        return net

    def trim(self, keep: Iterable[LoadedNetwork] = ()) -> None:
        keep_ids = {id(n) for n in keep}
        with self._lock:
            others = [k for k, v in self._entries.items() if id(v) not in keep_ids]
            for k in others[: max(0, len(others) - self.limit)]:
                del self._entries[k]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


# ---------------------------------------------------------------------------------------------------------------
# Activation


@dataclass(frozen=True)
class NetworkActivation:
    """One ``<lora:name:te:unet:dyn>`` tag: ``name`` as written (file name or alias)."""

    name: str
    te_multiplier: float = 1.0
    unet_multiplier: float = 1.0
    dyn_dim: int | None = None


def activations_from_params(params: Iterable[Any]) -> builtins.list[NetworkActivation]:
    """A1111 ``ExtraNetworkLora.activate``: ``<lora:name:te:unet:dyn>`` -> activations. ``unet`` defaults to
    ``te``, ``te`` to 1; named ``te=``, ``unet=``, ``dyn=`` override the positional ones. Accepts any objects with
    ``positional`` and ``named`` (``prompts.ExtraNetworkParams``). A tag without a name or with a non-number
    multiplier raises ValueError (A1111 fails the generation there too)."""
    out = []
    for p in params:
        positional, named = tuple(p.positional), p.named
        if not positional:
            raise ValueError(f"<lora:...> tag without a network name: {':'.join(getattr(p, 'items', ()))!r}")
        te = float(positional[1]) if len(positional) > 1 else 1.0
        te = float(named.get("te", te))
        unet = float(positional[2]) if len(positional) > 2 else te
        unet = float(named.get("unet", unet))
        dyn = int(positional[3]) if len(positional) > 3 else None
        dyn = int(named["dyn"]) if "dyn" in named else dyn
        out.append(NetworkActivation(name=positional[0], te_multiplier=te, unet_multiplier=unet, dyn_dim=dyn))
    return out


def activations_from_extra_networks(extra: Mapping[str, Sequence[Any]]) -> builtins.list[NetworkActivation]:
    """``lora`` and its alias ``lyco`` together, in the order the tag types first appear (A1111
    ``extra_networks.lookup_extra_networks`` extends one list per extra network, in the dict's order)."""
    params: builtins.list[Any] = []
    for kind, items in extra.items():
        if kind in ("lora", "lyco"):
            params.extend(items)
    return activations_from_params(params)


@dataclass
class AppliedNetworks:
    """What ``apply_networks`` did: the networks applied (in prompt order), names not found, error comments."""

    applied: builtins.list[tuple[LoraInfo, NetworkActivation]] = field(default_factory=builtins.list)
    missing: builtins.list[str] = field(default_factory=builtins.list)
    errors: builtins.list[str] = field(default_factory=builtins.list)
    networks: builtins.list[LoadedNetwork] = field(default_factory=builtins.list)
    hashes: builtins.list[tuple[str, str]] = field(default_factory=builtins.list)  # (name as written, shorthash)

    def hashes_infotext(self) -> str | None:
        """A1111's ``Lora hashes`` value: ``name: shorthash`` joined by ", ", ``name`` as written in the prompt
        (``mentioned_name``) with ":" and "," removed; networks without a hash are left out; a name given twice
        appears once (A1111 builds a dict). None when empty."""
        d: dict[str, str] = {}
        for name, short in self.hashes:
            if short and name:
                d[name.translate(_REMOVE_SYMBOLS)] = short
        return ", ".join(f"{k}: {v}" for k, v in d.items()) or None


class _Backups:
    """The original weight/bias of every module touched, copied before its first change (A1111
    ``network_weights_backup`` / ``network_bias_backup``, kept on the CPU as A1111 does)."""

    def __init__(self):
        self._saved: dict[int, tuple[torch.nn.Module, torch.Tensor, torch.Tensor | None, bool]] = {}

    def save(self, module: torch.nn.Module) -> bool:
        """Back ``module`` up; True when this is its first change in this application."""
        if id(module) in self._saved:
            return False
        bias = getattr(module, "bias", None)
        self._saved[id(module)] = (
            module,
            module.weight.detach().to("cpu", copy=True),
            bias.detach().to("cpu", copy=True) if bias is not None else None,
            bias is None,
        )
        return True

    def restore(self) -> None:
        with torch.no_grad():
            for module, weight, bias, had_no_bias in reversed(builtins.list(self._saved.values())):
                module.weight.copy_(weight)
                if had_no_bias:
                    if getattr(module, "bias", None) is not None:
                        module.bias = None  # a norm/full network created it (A1111 restore_weights_backup)
                else:
                    module.bias.copy_(bias)
        self._saved.clear()


def _patch_module(module, net_module: NetworkModule, multiplier: float, dyn_dim: int | None,
                  first: bool = False) -> None:
    """A1111 ``network_apply_weights`` for one network on one module: the delta is computed against the module's
    current weight (so (IA)^3 and DoRA see earlier networks, as in A1111), in float32, and added in float32 before
    casting back to the weight's dtype -- float8 too (FP8 weight: the layer-wise casting hooks compute with it in
    the model's dtype). With option cache_fp16_weight a float8 layer carries float16 copies of its original weight
    and bias (``fp16_weight`` / ``fp16_bias``, A1111's names): the ``first`` network on the module starts from
    them rather than from their float8 rounding (later ones add to the current weight, so that several networks
    add up; A1111 restarts each from the copy and keeps only the last)."""
    weight = module.weight
    fp16_weight = getattr(module, "fp16_weight", None) if first else None
    source = fp16_weight if fp16_weight is not None else weight.detach()
    orig = source.to(device=weight.device, dtype=torch.float32)
    updown, ex_bias = net_module.calc_updown(orig, module, multiplier, dyn_dim)
    if orig.dim() == 4 and orig.shape[1] == 9 and updown.dim() == 4 and updown.shape[1] == 4:
        # inpainting model: zero-pad the 4-channel delta to the UNet's 9 input channels (A1111 does the same)
        updown = torch.nn.functional.pad(updown, (0, 0, 0, 0, 0, 5))
    weight.copy_((orig + updown).to(weight.dtype))
    if ex_bias is not None:
        bias = getattr(module, "bias", None)
        if bias is None:
            module.bias = torch.nn.Parameter(ex_bias.to(device=weight.device, dtype=weight.dtype), requires_grad=False)
        else:
            fp16_bias = getattr(module, "fp16_bias", None) if fp16_weight is not None else None
            base = (fp16_bias if fp16_bias is not None else bias.detach()).to(device=bias.device, dtype=torch.float32)
            bias.copy_((base + ex_bias.reshape(bias.shape)).to(bias.dtype))


@contextlib.contextmanager
def apply_networks(components, activations: Sequence[NetworkActivation],
                   registry: LoraRegistry) -> Iterator[AppliedNetworks]:
    """Merge the networks of ``activations`` into ``components`` for the body, then restore the weights exactly.

    A1111 ``load_networks`` + ``network_apply_weights``: names resolve by file name or alias (a miss rescans the
    folders once, then is reported in ``missing`` and skipped, as A1111's "Lora not found"); files load through
    the registry's cache; for every matched module weight += updown * scale * multiplier, the text-encoder
    multiplier on text encoders and the UNet multiplier on the UNet, networks in order. A module whose delta does
    not fit (e.g. an SD1 LoRA on SDXL) is skipped and counted, as A1111's "Networks with errors: name (count)".
    On exit (also when the body raises) every touched weight and bias is copied back from its backup.
    """
    result = AppliedNetworks()
    backups = _Backups()
    try:
        _apply(components, activations, registry, result, backups)
        yield result
    finally:
        backups.restore()


def _apply(components, activations, registry: LoraRegistry, result: AppliedNetworks, backups: _Backups) -> None:
    infos = [registry.resolve(a.name) for a in activations]
    if any(i is None for i in infos):
        registry.refresh()  # A1111 load_networks rescans when a name is unknown
        infos = [registry.resolve(a.name) for a in activations]
    parts = _components_of(components)
    error_counts: dict[str, int] = {}
    for activation, info in zip(activations, infos):
        if info is None:
            result.missing.append(activation.name)
            continue
        try:
            net = registry.load(info, components)
        except NetworkLoadError as e:
            logger.error("%s", e)
            result.errors.append(f"Failed to load network {activation.name}: {e}")
            continue
        result.applied.append((info, activation))
        result.networks.append(net)
        try:
            short = registry.shorthash(info)
        except OSError as e:  # the file vanished or is unreadable after loading: no hash, as A1111's empty hash
            logger.warning("cannot hash %s: %s", info.path, e)
            short = ""
        result.hashes.append((activation.name, short))
        with torch.no_grad():
            for (comp_name, path), net_module in net.modules.items():
                multiplier = activation.unet_multiplier if comp_name == UNET else activation.te_multiplier
                if multiplier == 0:
                    continue  # updown * 0 adds nothing: skip the work (A1111 computes and adds zeros)
                try:
                    module = parts[comp_name].get_submodule(path)
                    first = backups.save(module)
                    _patch_module(module, net_module, multiplier, activation.dyn_dim, first)
                except (RuntimeError, KeyError, AttributeError) as e:
                    logger.debug("Network %s layer %s.%s: %s", info.name, comp_name, path, e)
                    error_counts[activation.name] = error_counts.get(activation.name, 0) + 1
    registry.cache.trim(keep=result.networks)
    if error_counts:
        result.errors.append("Networks with errors: " + ", ".join(f"{k} ({v})" for k, v in error_counts.items()))
