"""External VAEs as A1111 v1.10.1 chooses and uses them (``modules/sd_vae.py``).

- :func:`resolve_vae` is A1111's ``resolve_vae``: ``--vae-path``, then the ``sd_vae`` setting when it overrides
  per-model preferences, then the checkpoint's user metadata (``<checkpoint>.json`` ``"vae"``), then a VAE whose
  file name starts with the checkpoint's name ("found near the checkpoint"), then the setting. ``None`` (and an
  ``Automatic`` that finds nothing) means the VAE baked into the checkpoint.
- :func:`load_vae_file` reads a standalone VAE file in any layout users have (LDM keys with or without
  ``first_stage_model.``, extra ``model_ema.*``/``loss.*`` keys that A1111 drops, or diffusers keys) into its own
  ``AutoencoderKL``. A1111 overwrites the checkpoint's VAE weights in place and keeps a copy to restore; we keep a
  separate module instead and swap it in for one request (:func:`use_vae`), so the checkpoint's own VAE is never
  written to and switching back costs nothing.
- :func:`vae_infotext` gives A1111's ``VAE hash`` / ``VAE`` infotext entries.

Nothing happens at import and nothing is global: the engine owns one :class:`VaeCache`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from webui.core.models.registry import HashCache, VaeRegistry

logger = logging.getLogger(__name__)

AUTOMATIC_NAMES = ("Automatic", "auto")  # A1111 is_automatic: "auto" for people with old config
NONE_NAME = "None"
VAE_PREFIX = "first_stage_model."
_VAE_PARTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
VAE_HASH_LENGTH = 10  # A1111 get_loaded_vae_hash: sha256[0:10]

# A1111 source strings (VaeResolution.source), shown in its console and kept for ours.
SOURCE_COMMANDLINE = "from commandline argument"
SOURCE_SETTINGS = "specified in settings"
SOURCE_USER_METADATA = "from user metadata"
SOURCE_NEAR_CHECKPOINT = "found near the checkpoint"


class VaeLoadError(Exception):
    """A VAE file could not be loaded; the message names the file and the reason."""


# ---------------------------------------------------------------------------------------------------------------
# Choosing the VAE


@dataclass(frozen=True)
class VaeResolution:
    """A1111 ``VaeResolution``: ``path`` of the VAE file to use, or None for the checkpoint's own VAE, and the
    ``source`` A1111 reports. ``resolved`` is False where A1111's own resolution fell through (the checkpoint's VAE
    by default); ``warning`` carries the text A1111 prints for an unknown ``sd_vae`` name."""

    source: str | None = None
    path: str | None = None
    resolved: bool = True
    warning: str | None = None
    choices: tuple[str, ...] = field(default=(), compare=False)

    @property
    def is_checkpoint_vae(self) -> bool:
        return self.path is None

    @property
    def name(self) -> str | None:
        """The name A1111 shows for the loaded VAE (``get_loaded_vae_name``): the file name with extension."""
        return os.path.basename(self.path) if self.path else None


def is_automatic(option: str | None) -> bool:
    return option in AUTOMATIC_NAMES


def checkpoint_user_metadata(checkpoint_filename: str) -> dict:
    """A1111 ``extra_networks.get_user_metadata``: ``<checkpoint without extension>.json`` (written by the Extra
    Networks "edit metadata" dialog), or {} when missing or unreadable."""
    path = os.path.splitext(checkpoint_filename)[0] + ".json"
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError) as e:
        logger.error("reading extra network user metadata from %s: %s", path, e)
        return {}


def _choices(registry: VaeRegistry) -> tuple[str, ...]:
    return ("Automatic", NONE_NAME, *registry.names())


def _from_setting(option: str | None, registry: VaeRegistry) -> VaeResolution:
    """A1111 ``resolve_vae_from_setting``."""
    if option == NONE_NAME:
        return VaeResolution()
    found = registry.resolve(option) if option and not is_automatic(option) else None
    if found is not None:
        return VaeResolution(SOURCE_SETTINGS, found.filename)
    warning = None
    choices: tuple[str, ...] = ()
    if not is_automatic(option):
        choices = _choices(registry)
        # A1111's console text, then the valid names (house rule: fail with choices).
        warning = f"Couldn't find VAE named {option}; using None instead (choices: {', '.join(choices)})"
        logger.warning(warning)
    return VaeResolution(resolved=False, warning=warning, choices=choices)


def _from_user_metadata(checkpoint_filename: str, registry: VaeRegistry) -> VaeResolution:
    """A1111 ``resolve_vae_from_user_metadata``."""
    vae = checkpoint_user_metadata(checkpoint_filename).get("vae")
    if vae is not None and vae != "Automatic":
        if vae == NONE_NAME:
            return VaeResolution()
        found = registry.resolve(vae)
        if found is not None:
            return VaeResolution(SOURCE_USER_METADATA, found.filename)
    return VaeResolution(resolved=False)


def resolve_vae(
    checkpoint_filename: str,
    sd_vae_option: str | None,
    vae_registry: VaeRegistry,
    *,
    overrides_per_model_preferences: bool = True,
    vae_path: str | None = None,
) -> VaeResolution:
    """A1111 ``sd_vae.resolve_vae`` for the checkpoint file ``checkpoint_filename``.

    ``sd_vae_option`` is the ``sd_vae`` setting ("Automatic", "None" or a name from ``/sdapi/v1/sd-vae``),
    ``overrides_per_model_preferences`` the ``sd_vae_overrides_per_model_preferences`` setting (default True),
    ``vae_path`` the ``--vae-path`` flag. An unknown name resolves to the checkpoint's VAE with a ``warning`` that
    lists the choices, as A1111 warns and falls back.
    """
    if vae_path is not None:
        return VaeResolution(SOURCE_COMMANDLINE, os.path.abspath(vae_path))
    if overrides_per_model_preferences and not is_automatic(sd_vae_option):
        return _from_setting(sd_vae_option, vae_registry)
    res = _from_user_metadata(checkpoint_filename, vae_registry)
    if res.resolved:
        return res
    near = vae_registry.near_checkpoint(checkpoint_filename)
    if near is not None and (not overrides_per_model_preferences or is_automatic(sd_vae_option)):
        return VaeResolution(SOURCE_NEAR_CHECKPOINT, near.filename)
    return _from_setting(sd_vae_option, vae_registry)


# ---------------------------------------------------------------------------------------------------------------
# Loading a VAE file

_OLD_DIFFUSERS_ATTENTION = re.compile(r"(mid_block\.attentions\.0\.)(query|key|value|proj_attn)\.")
_OLD_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _ldm_vae_keys(sd: dict[str, torch.Tensor], path: str) -> dict[str, torch.Tensor]:
    """Any user layout -> ``first_stage_model.``-prefixed LDM keys (what ``vae_config_from_ldm`` and diffusers'
    ``convert_ldm_vae_checkpoint`` read). Keys outside the autoencoder (A1111's dropped ``loss.*`` and
    ``model_ema.*``, or a whole checkpoint's UNet) are left out."""
    prefixed = {k[len(VAE_PREFIX):]: v for k, v in sd.items() if k.startswith(VAE_PREFIX)}
    bare = prefixed if prefixed else sd
    vae = {k: v for k, v in bare.items() if k.startswith(_VAE_PARTS)}
    if not vae:
        raise VaeLoadError(f"{path}: no VAE weights in this file (encoder.*/decoder.* keys); is it a VAE?")
    if any(k.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for k in vae):
        vae = _diffusers_to_ldm(vae)
    return {VAE_PREFIX + k: v for k, v in vae.items()}


def _diffusers_to_ldm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers-format VAE (``diffusion_pytorch_model.safetensors`` renamed) -> LDM keys, so that one converter
    and one config reader serve every layout. Older diffusers files name the attention ``query/key/value/
    proj_attn``."""
    from webui.core.models.ldm_layout import vae_to_ldm

    renamed = {
        _OLD_DIFFUSERS_ATTENTION.sub(lambda m: m.group(1) + _OLD_ATTENTION_NAMES[m.group(2)] + ".", k): v
        for k, v in sd.items()
    }
    levels = len({k.split(".")[2] for k in renamed if k.startswith("encoder.down_blocks.")})
    out = vae_to_ldm(renamed, {"block_out_channels": [0] * levels})
    return {k[len(VAE_PREFIX):]: v for k, v in out.items()}


def load_vae_file(path: str, arch: str, plan) -> Any:
    """A standalone VAE file -> a diffusers ``AutoencoderKL`` on ``plan.device`` in ``plan.vae_dtype``.

    Offline: the config comes from the tensor shapes (``loader.vae_config_from_ldm``) with the scaling factor of
    ``arch`` (SDXL 0.13025, else 0.18215); pickles go through ``loader.read_state_dict`` (weights only). Raises
    :class:`VaeLoadError` naming the file.
    """
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    from webui.core.models.loader import CheckpointLoadError, _materialise, read_state_dict, vae_config_from_ldm

    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise VaeLoadError(f"VAE file not found: {path}")
    try:
        sd = read_state_dict(path)
    except CheckpointLoadError as e:
        raise VaeLoadError(f"cannot read VAE {path}: {e}") from e
    ldm = _ldm_vae_keys(sd, path)
    del sd
    try:
        config = vae_config_from_ldm(ldm, arch)
        diffusers_sd = convert_ldm_vae_checkpoint(ldm, config)
        vae = _materialise(lambda: AutoencoderKL(**config), diffusers_sd, "VAE", path)
    except CheckpointLoadError as e:
        raise VaeLoadError(f"cannot load VAE {path}: {e}") from e
    except (KeyError, RuntimeError, ValueError, IndexError) as e:
        raise VaeLoadError(f"{path}: not a loadable VAE ({type(e).__name__}: {e})") from e
    # torch.nn.Module.to, not diffusers' override (its fp32-module warning does not apply to our own casts)
    torch.nn.Module.to(vae, plan.device, plan.vae_dtype)
    # safetensors' load_file maps the file: tensors that stayed on the CPU in their dtype would still be views of
    # it, so a VAE file replaced in place would change (or, truncated, crash) the cached module. Own the memory.
    with torch.no_grad():
        for t in (*vae.parameters(), *vae.buffers()):
            if t.device.type == "cpu":
                t.data = t.data.clone()
    return vae


class VaeCache:
    """Loaded external VAEs by file, least recently used first out; ``max_items`` bounds memory (A1111 keeps the
    one VAE it loaded until another is chosen, which ``max_items=1`` reproduces; 0 loads on every use).

    A file replaced on disk (new mtime or size) is loaded again. Thread-safe; a load runs under the lock, so two
    callers never read the same file twice.
    """

    def __init__(self, max_items: int = 1, loader: Callable[[str, str, Any], Any] = load_vae_file):
        self.max_items = max(0, int(max_items))
        self._loader = loader
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple, Any] = OrderedDict()

    @staticmethod
    def _key(path: str, arch: str, plan) -> tuple:
        st = os.stat(path)
        return (os.path.abspath(path), st.st_mtime_ns, st.st_size, arch, str(plan.device), str(plan.vae_dtype))

    def get(self, path: str, arch: str, plan) -> Any:
        """The VAE module of ``path``, loading it (through ``load_vae_file``) if not cached."""
        try:
            key = self._key(path, arch, plan)
        except OSError as e:
            raise VaeLoadError(f"VAE file not found: {path} ({e})") from e
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            vae = self._loader(path, arch, plan)
            if self.max_items:
                # drop stale versions of the same file first, then the least recently used
                for old in [k for k in self._items if k[0] == key[0]]:
                    del self._items[old]
                self._items[key] = vae
                while len(self._items) > self.max_items:
                    self._items.popitem(last=False)
            return vae

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


@contextlib.contextmanager
def use_vae(components, vae) -> Iterator[Any]:
    """For the block, ``components.vae`` is ``vae`` (an external VAE), then the checkpoint's own again, also on
    error. ``vae=None`` leaves the checkpoint's VAE in place. Yields the VAE in use.

    A reference swap, not a weight copy (A1111 loads the file's weights into the model's VAE and restores a saved
    copy): the checkpoint's VAE is never written to. A VAE whose latent channels differ from the checkpoint's
    (e.g. a 16-channel VAE on an SD model) is refused, where A1111's strict ``load_state_dict`` fails.
    """
    if vae is None:
        yield components.vae
        return
    own = components.vae
    own_channels = getattr(getattr(own, "config", None), "latent_channels", None)
    new_channels = getattr(getattr(vae, "config", None), "latent_channels", None)
    if own_channels is not None and new_channels is not None and own_channels != new_channels:
        raise VaeLoadError(
            f"this VAE has {new_channels} latent channels but the checkpoint's model uses {own_channels}; "
            "it belongs to another model family"
        )
    components.vae = vae
    try:
        yield vae
    finally:
        components.vae = own


def vae_infotext(
    resolution: VaeResolution | None,
    hash_cache: HashCache | None,
    *,
    no_hashing: bool = False,
    add_hash: bool = True,
    add_name: bool = True,
) -> dict[str, str]:
    """A1111's infotext entries for an external VAE, in its order: ``VAE hash`` (first 10 hex of the file's
    sha256, ``get_loaded_vae_hash``) and ``VAE`` (the file name with extension, ``get_loaded_vae_name``); {} for the
    checkpoint's own VAE. ``add_hash``/``add_name`` are the ``add_vae_hash_to_info``/``add_vae_name_to_info``
    settings; with ``no_hashing`` (``--no-hashing``) the hash appears only if already cached, as in A1111.

    The hash is cached under ``vae/<file name>``; A1111 caches every VAE under the one title ``vae``, which makes
    it report a stale hash after switching to an older file.
    """
    if resolution is None or resolution.path is None:
        return {}
    out: dict[str, str] = {}
    if add_hash:
        cache = hash_cache if hash_cache is not None else HashCache(None)
        title = "vae/" + os.path.basename(resolution.path)
        sha = cache.sha256_from_cache(resolution.path, title) if no_hashing else cache.sha256(resolution.path, title)
        if sha:
            out["VAE hash"] = sha[0:VAE_HASH_LENGTH]
    if add_name:
        out["VAE"] = os.path.basename(resolution.path)
    return out
