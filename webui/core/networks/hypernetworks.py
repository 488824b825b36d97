"""A1111 hypernetworks (``modules/hypernetworks/hypernetwork.py``) on a diffusers UNet, for one request.

A hypernetwork is a ``.pt`` pickle: ``{context width (int): (state dict for k, state dict for v), ...}`` plus its
build options (``layer_structure``, ``activation_func``, ``is_layer_norm``, ``dropout_structure`` ...). Each state
dict holds one ``HypernetworkModule``: a small Linear/activation/LayerNorm/Dropout stack whose output is added back,
``x + stack(x) * multiplier``. A1111 runs it inside every attention module of the UNet (its hijacked
``CrossAttention.forward`` in ``sd_hijack_optimizations``): the context (the text embeddings for cross-attention, the
image tokens themselves for self-attention, ``context = default(context, x)``) is transformed separately for the key
and for the value before ``to_k`` / ``to_v``, by each active hypernetwork in turn, using the layers for the context's
width (``context.shape[2]``). That is why A1111 hypernetworks carry sizes 320/640/1280 besides 768: those act on the
self-attention of the blocks with that many channels.

Here, instead of A1111's patched ``forward`` and its global ``shared.loaded_hypernetworks``, ``apply_hypernetworks``
installs a wrapping attention processor on the UNet's attention modules for the duration of a request and puts the
original processors back afterwards. Nothing is done at import time; the registry and the cache are owned by the
caller.
"""

from __future__ import annotations

import builtins
import copy
import glob
import inspect
import logging
import os
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import torch

logger = logging.getLogger(__name__)

# A1111 HypernetworkModule.activation_dict: these names first ("swish" is Hardswish there), then every class of
# torch.nn.modules.activation under its lower-cased class name.
_NAMED_ACTIVATIONS = {
    "linear": torch.nn.Identity,
    "relu": torch.nn.ReLU,
    "leakyrelu": torch.nn.LeakyReLU,
    "elu": torch.nn.ELU,
    "swish": torch.nn.Hardswish,
    "tanh": torch.nn.Tanh,
    "sigmoid": torch.nn.Sigmoid,
}


class HypernetworkLoadError(ValueError):
    """A hypernetwork file could not be read or does not describe a hypernetwork; the message names the file."""


def activation_class(name: str) -> type[torch.nn.Module]:
    """The activation module A1111's ``HypernetworkModule.activation_dict`` maps ``name`` to."""
    if name in _NAMED_ACTIVATIONS:
        return _NAMED_ACTIVATIONS[name]
    module = torch.nn.modules.activation
    for cls_name, cls in inspect.getmembers(module, inspect.isclass):
        if cls.__module__ == module.__name__ and cls_name.lower() == name:
            return cls
    raise ValueError(f"hypernetwork uses an unsupported activation function: {name}")


def parse_dropout_structure(layer_structure, use_dropout: bool, last_layer_dropout: bool) -> list[float]:
    """A1111 ``parse_dropout_structure``: the dropout probabilities of files saved before ``dropout_structure``
    existed. ``[1, 2, 2, 1]`` with dropout -> ``[0, 0.3, 0, 0]``, or ``[0, 0.3, 0.3, 0]`` with last-layer dropout."""
    if layer_structure is None:
        layer_structure = [1, 2, 1]
    if not use_dropout:
        return [0] * len(layer_structure)
    return [0] + [0.3] * (len(layer_structure) - 3) + [0.3 if last_layer_dropout else 0] + [0]


class HypernetworkModule(torch.nn.Module):
    """One of the two (key, value) transforms of a hypernetwork for one context width (A1111 ``HypernetworkModule``).

    The layer order is A1111's, so the state dict keys (``linear.<index>.weight``) of its files match: for each step
    of ``layer_structure`` a Linear, then the activation (not after the last Linear unless ``activate_output``), then
    LayerNorm when ``add_layer_norm``, then Dropout where ``dropout_structure[i + 1] > 0``.
    """

    def __init__(
        self,
        dim: int,
        layer_structure: Sequence[float],
        activation_func: str | None = None,
        add_layer_norm: bool = False,
        activate_output: bool = False,
        dropout_structure: Sequence[float] | None = None,
    ):
        super().__init__()
        if layer_structure[0] != 1 or layer_structure[-1] != 1:
            raise ValueError(f"layer structure must start and end with 1, got {list(layer_structure)}")
        n = len(layer_structure)
        layers: list[torch.nn.Module] = []
        for i in range(n - 1):
            layers.append(torch.nn.Linear(int(dim * layer_structure[i]), int(dim * layer_structure[i + 1])))
            if not (activation_func in (None, "linear") or (i >= n - 2 and not activate_output)):
                layers.append(activation_class(activation_func)())
            if add_layer_norm:
                layers.append(torch.nn.LayerNorm(int(dim * layer_structure[i + 1])))
            if dropout_structure is not None and dropout_structure[i + 1] > 0:
                if not 0 < dropout_structure[i + 1] < 1:
                    raise ValueError(f"dropout probability must be 0 or in (0, 1), got {dropout_structure[i + 1]}")
                layers.append(torch.nn.Dropout(p=dropout_structure[i + 1]))
        self.linear = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, multiplier: float = 1.0) -> torch.Tensor:
        # A1111: `x + self.linear(x) * (self.multiplier if not self.training else 1)`; we only run in eval mode and
        # pass the multiplier per call instead of storing it on a shared module.
        return x + self.linear(x) * multiplier


# A1111 HypernetworkModule.fix_old_state_dict: the first (NovelAI-era) files named the two Linears linear1/linear2.
_OLD_KEYS = {
    "linear1.bias": "linear.0.bias",
    "linear1.weight": "linear.0.weight",
    "linear2.bias": "linear.1.bias",
    "linear2.weight": "linear.1.weight",
}


def _fix_old_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {_OLD_KEYS.get(k, k): v for k, v in sd.items()}


@dataclass(eq=False)
class Hypernetwork:
    """A loaded hypernetwork file (A1111 ``Hypernetwork`` after ``load``), on the CPU in float32, in eval mode.

    ``layers`` maps a context width to its (key, value) modules. Treat it as read-only: cached instances are shared
    between requests. ``layers_for(device, dtype)`` gives the copies that run inside the UNet.
    """

    name: str
    filename: str
    layers: dict[int, tuple[HypernetworkModule, HypernetworkModule]]
    layer_structure: list[float]
    activation_func: str | None
    weight_init: str
    add_layer_norm: bool
    use_dropout: bool
    activate_output: bool
    last_layer_dropout: bool
    dropout_structure: list[float]
    step: int
    sd_checkpoint: str | None
    sd_checkpoint_name: str | None
    optional_info: str | None = None
    _placed: dict = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def sizes(self) -> list[int]:
        """The context widths this hypernetwork has layers for (A1111's "Modules" when creating one)."""
        return sorted(self.layers)

    def layers_for(self, device: torch.device, dtype: torch.dtype) -> dict[int, tuple[HypernetworkModule, ...]]:
        """The layers on ``device`` in ``dtype`` (the UNet's), copied once and kept with this hypernetwork, as A1111
        keeps its loaded hypernetworks on the device; the CPU float32 originals stay untouched."""
        key = (torch.device(device), dtype)
        with self._lock:
            placed = self._placed.get(key)
            if placed is None:
                placed = {
                    size: tuple(copy.deepcopy(m).to(device=device, dtype=dtype).eval() for m in pair)
                    for size, pair in self.layers.items()
                }
                self._placed[key] = placed
            return placed


def _file_error(path: str, reason: str) -> HypernetworkLoadError:
    return HypernetworkLoadError(f"cannot load hypernetwork {path}: {reason}")


def load_hypernetwork(path: str | os.PathLike) -> Hypernetwork:
    """Read an A1111 hypernetwork ``.pt`` (A1111 ``Hypernetwork.load``), with A1111's defaults for keys older files
    lack. Only tensors and plain containers are unpickled (``weights_only=True``); the ``.optim`` sidecar, which only
    training reads, is ignored. Anything unreadable raises ``HypernetworkLoadError`` naming the file."""
    path = os.path.abspath(os.fspath(path))
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle refusals, truncated files, not a torch file at all
        raise _file_error(path, f"{type(e).__name__}: {e}") from e
    if not isinstance(data, dict):
        raise _file_error(path, f"expected a dict, found {type(data).__name__}")

    layer_structure = list(data.get("layer_structure") or [1, 2, 1])
    activation_func = data.get("activation_func", None)
    add_layer_norm = bool(data.get("is_layer_norm", False))
    dropout_structure = data.get("dropout_structure", None)
    use_dropout = bool(dropout_structure is not None and any(dropout_structure)) or bool(data.get("use_dropout", False))
    activate_output = bool(data.get("activate_output", True))
    last_layer_dropout = bool(data.get("last_layer_dropout", False))
    if dropout_structure is None:
        dropout_structure = parse_dropout_structure(layer_structure, use_dropout, last_layer_dropout)
    dropout_structure = list(dropout_structure)

    layers: dict[int, tuple[HypernetworkModule, HypernetworkModule]] = {}
    for size, pair in data.items():
        if type(size) is not int:  # A1111: `if type(size) == int`; the other keys are the options above
            continue
        try:
            if len(pair) != 2:
                raise ValueError(f"expected 2 state dicts (k, v), found {len(pair)}")
            modules = []
            for sd in pair:
                module = HypernetworkModule(
                    size, layer_structure, activation_func, add_layer_norm, activate_output, dropout_structure
                )
                module.load_state_dict(_fix_old_state_dict(sd))
                module.eval().requires_grad_(False)
                modules.append(module)
        except Exception as e:
            raise _file_error(path, f"layers for size {size}: {e}") from e
        layers[size] = (modules[0], modules[1])

    return Hypernetwork(
        name=data.get("name") or os.path.splitext(os.path.basename(path))[0],
        filename=path,
        layers=layers,
        layer_structure=layer_structure,
        activation_func=activation_func,
        weight_init=data.get("weight_initialization", "Normal"),
        add_layer_norm=add_layer_norm,
        use_dropout=use_dropout,
        activate_output=activate_output,
        last_layer_dropout=last_layer_dropout,
        dropout_structure=dropout_structure,
        step=data.get("step", 0) or 0,
        sd_checkpoint=data.get("sd_checkpoint", None),
        sd_checkpoint_name=data.get("sd_checkpoint_name", None),
        optional_info=data.get("optional_info", None),
    )


class HypernetworkCache:
    """A small LRU of loaded hypernetworks keyed by (path, mtime, size): a file rewritten on disk (retrained) is
    read again. A1111 keeps the previous request's hypernetworks loaded (``load_hypernetworks``' already_loaded)."""

    def __init__(self, max_entries: int = 4):
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, Hypernetwork] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, path: str | os.PathLike) -> Hypernetwork:
        path = os.path.abspath(os.fspath(path))
        try:
            st = os.stat(path)
        except OSError as e:
            raise _file_error(path, str(e)) from e
        key = (path, st.st_mtime_ns, st.st_size)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        hn = load_hypernetwork(path)
        with self._lock:
            for old in [k for k in self._entries if k[0] == path]:
                del self._entries[old]
            self._entries[key] = hn
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return hn

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass(frozen=True)
class HypernetworkInfo:
    """A hypernetwork file on disk: ``name`` is its file stem, what ``<hypernet:name:…>`` and the API use."""

    name: str
    path: str


class HypernetworkRegistry:
    """The hypernetwork files of ``--hypernetwork-dir`` (A1111 ``list_hypernetworks``), scanned by ``refresh()``.

    A1111 keys its table by file stem, so of two files with the same stem in different subfolders the later one in
    scan order wins, keeping the first one's position. ``load`` reads through this registry's ``HypernetworkCache``.
    """

    def __init__(self, dirs: Sequence[str | os.PathLike], cache: HypernetworkCache | None = None):
        self.dirs = [os.path.abspath(os.fspath(d)) for d in dirs]
        self.cache = cache if cache is not None else HypernetworkCache()
        self._items: dict[str, HypernetworkInfo] = {}

    def refresh(self) -> builtins.list[HypernetworkInfo]:
        items: dict[str, HypernetworkInfo] = {}
        for folder in self.dirs:
            # A1111: sorted(glob.iglob(os.path.join(path, '**/*.pt'), recursive=True), key=str.lower)
            for filename in sorted(glob.iglob(os.path.join(folder, "**/*.pt"), recursive=True), key=str.lower):
                name = os.path.splitext(os.path.basename(filename))[0]
                if name != "None":  # A1111: "Prevent a hypothetical None.pt from being listed"
                    items[name] = HypernetworkInfo(name=name, path=filename)
        self._items = items
        return self.list()

    def list(self) -> builtins.list[HypernetworkInfo]:
        return builtins.list(self._items.values())

    def names(self) -> builtins.list[str]:
        return builtins.list(self._items)

    def resolve(self, name: str) -> HypernetworkInfo | None:
        """Exact file-stem lookup, as A1111's ``shared.hypernetworks.get(name)``; None when unknown."""
        return self._items.get(name)

    def api_listing(self) -> builtins.list[dict[str, str]]:
        """``GET /sdapi/v1/hypernetworks`` items (A1111 ``Api.get_hypernetworks``)."""
        return [{"name": info.name, "path": info.path} for info in self._items.values()]

    def load(self, info: HypernetworkInfo) -> Hypernetwork:
        return self.cache.load(info.path)


def activations_from_params(
    params: Sequence[Any], registry: HypernetworkRegistry
) -> tuple[list[tuple[HypernetworkInfo, float]], list[str]]:
    """``<hypernet:name:multiplier>`` tags -> (hypernetwork, multiplier) pairs in prompt order, and the unknown names.

    A1111 ``ExtraNetworkHypernet.activate``: the name is the first argument, the multiplier the second
    (``float``), 1.0 when absent; named arguments mean nothing to hypernetworks. Unknown names are skipped there
    (``load_hypernetwork`` returns None) -- here they are returned so the caller can report them. A multiplier that is
    not a number raises ValueError, as A1111's ``float()`` does.
    """
    found: list[tuple[HypernetworkInfo, float]] = []
    missing: list[str] = []
    for p in params:
        positional = tuple(p.positional)
        if not positional:
            raise ValueError("<hypernet:...> needs a hypernetwork name")
        name = positional[0]
        try:
            multiplier = float(positional[1]) if len(positional) > 1 else 1.0
        except ValueError as e:
            raise ValueError(f"<hypernet:{name}:{positional[1]}>: the multiplier must be a number") from e
        info = registry.resolve(name)
        if info is None:
            missing.append(name)
        else:
            found.append((info, multiplier))
    return found, missing


def prompt_tag_for_setting(
    sd_hypernetwork: str | None, params: Sequence[Any], registry: HypernetworkRegistry, default_multiplier: float
) -> str | None:
    """The tag A1111 appends to every prompt for the "Add hypernetwork to prompt" setting (``sd_hypernetwork``):
    ``<hypernet:{name}:{extra_networks_default_multiplier}>``, unless the setting is "None", names no known file, or
    the prompt already has a tag for it (``ExtraNetworkHypernet.activate``). The caller appends it to the prompts
    (so it lands in the infotext, as in A1111) and adds it to the tags it activates."""
    if not sd_hypernetwork or sd_hypernetwork == "None" or registry.resolve(sd_hypernetwork) is None:
        return None
    if any(tuple(p.positional)[:1] == (sd_hypernetwork,) for p in params):
        return None
    return f"<hypernet:{sd_hypernetwork}:{default_multiplier}>"


# --- inside the UNet ---------------------------------------------------------------------------------------------

# Per context width, the (key module, value module, multiplier) of each active hypernetwork, in activation order.
_Chain = tuple[tuple[HypernetworkModule, HypernetworkModule, float], ...]


class _HypernetProjection:
    """``to_k`` or ``to_v`` of one attention module with the hypernetwork transforms in front of it:
    ``linear(hn_n(...hn_1(context)))`` when the context's width has layers, the plain projection otherwise."""

    __slots__ = ("_linear", "_chain", "_which")

    def __init__(self, linear: torch.nn.Module, chain: Mapping[int, _Chain], which: int):
        self._linear = linear
        self._chain = chain
        self._which = which  # 0: key, 1: value (A1111's hypernetwork_layers[0] / [1])

    def __call__(self, context: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        # A1111 apply_hypernetworks / apply_single_hypernetwork: layers chosen by context.shape[2]; each hypernetwork
        # transforms the previous one's result.
        for modules in self._chain.get(context.shape[-1], ()):
            module, multiplier = modules[self._which], modules[2]
            context = module(context.to(module.linear[0].weight.dtype), multiplier).to(context.dtype)
        return self._linear(context, *args, **kwargs)

    def __getattr__(self, name: str):  # .weight, .in_features ... of the real projection
        return getattr(self._linear, name)


class _HypernetAttentionView:
    """The attention module as the wrapped processor sees it: the module itself, except that ``to_k`` and ``to_v``
    run the hypernetworks first. Every other attribute and method is the module's own."""

    __slots__ = ("_attn", "to_k", "to_v")

    def __init__(self, attn: torch.nn.Module, chain: Mapping[int, _Chain]):
        self._attn = attn
        self.to_k = _HypernetProjection(attn.to_k, chain, 0)
        self.to_v = _HypernetProjection(attn.to_v, chain, 1)

    def __getattr__(self, name: str):
        return getattr(self._attn, name)


class HypernetworkAttnProcessor:
    """An attention processor that runs the module's original processor (its maths untouched: SDPA, upcasting,
    masks) with the hypernetworks applied to the context for the key and for the value separately, before
    ``to_k`` / ``to_v`` -- A1111's ``context_k, context_v = apply_hypernetworks(...)`` in its attention forward."""

    def __init__(self, original: Any, chain: Mapping[int, _Chain]):
        self.original = original
        self.chain = chain

    # Same parameters as diffusers' AttnProcessor2_0, so Attention.forward passes the same cross_attention_kwargs.
    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        if temb is not None:
            kwargs["temb"] = temb
        return self.original(
            _HypernetAttentionView(attn, self.chain),
            hidden_states,
            *args,
            encoder_hidden_states=encoder_hidden_states,
            attention_mask=attention_mask,
            **kwargs,
        )


def _attention_modules(unet: torch.nn.Module) -> list[torch.nn.Module]:
    from diffusers.models.attention_processor import Attention

    return [m for m in unet.modules() if isinstance(m, Attention)]


def _context_width(attn: torch.nn.Module) -> int | None:
    to_k = getattr(attn, "to_k", None)
    return getattr(to_k, "in_features", None)


@contextmanager
def apply_hypernetworks(
    unet: torch.nn.Module, activations: Sequence[tuple[Hypernetwork, float]], device: torch.device | None = None
) -> Iterator[None]:
    """Run ``unet`` with these hypernetworks (each with its ``<hypernet:name:multiplier>``) inside the block.

    Every attention module whose context width (``to_k``'s input: the text width for cross-attention, the block's
    channels for self-attention) has layers in some active hypernetwork gets a ``HypernetworkAttnProcessor`` around
    its current processor; on leaving -- also by an exception -- each module gets back the very processor object it
    had. The hypernetwork layers run in the UNet's dtype on ``device``, the device the UNet computes on: under
    --medvram/--lowvram the UNet rests on the CPU between calls, so ``unet.device`` is not that device.
    """
    if not activations:
        yield
        return
    device, dtype = (device if device is not None else unet.device), unet.dtype
    layers = [(hypernetwork.layers_for(device, dtype), multiplier) for hypernetwork, multiplier in activations]
    with apply_hypernetwork_layers(unet, layers):
        yield


@contextmanager
def apply_hypernetwork_layers(
    unet: torch.nn.Module,
    layers: Sequence[tuple[Mapping[int, Sequence[HypernetworkModule]], float]],
) -> Iterator[None]:
    """:func:`apply_hypernetworks` for layers given as they are (``{size: (module_k, module_v)}`` with a multiplier):
    the modules run as given, on their own device and dtype -- training passes the very modules it trains."""
    chains: dict[int, list[tuple[HypernetworkModule, HypernetworkModule, float]]] = {}
    for by_size, multiplier in layers:
        for size, (module_k, module_v) in by_size.items():
            chains.setdefault(size, []).append((module_k, module_v, float(multiplier)))
    chain: dict[int, _Chain] = {size: tuple(c) for size, c in chains.items()}
    if not chain:
        yield
        return

    targets = [m for m in _attention_modules(unet) if _context_width(m) in chain]
    for attn in targets:
        if getattr(attn, "fused_projections", False):
            raise ValueError("hypernetworks need separate to_k/to_v projections; unfuse the UNet's QKV projections")
    originals = [(attn, attn.processor) for attn in targets]
    try:
        for attn, processor in originals:
            attn.set_processor(HypernetworkAttnProcessor(processor, chain))
        yield
    finally:
        for attn, processor in originals:
            attn.set_processor(processor)
