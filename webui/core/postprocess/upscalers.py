"""Upscalers as A1111 v1.10.1 has them: None, Lanczos, Nearest, and model files loaded with spandrel.

Model files are found in models/ESRGAN, models/RealESRGAN, models/SwinIR, models/DAT and models/HAT (each folder
overridable by its A1111 flag) and named as A1111 names them: the file's stem (``modelloader.friendly_name``), and for
Real-ESRGAN (and DAT) files that match one of A1111's built-in definitions, the built-in's name (``R-ESRGAN 4x+`` for
``RealESRGAN_x4plus.pth``) when it is enabled in option ``realesrgan_enabled_models`` / ``dat_enabled_models``.
Nothing is ever downloaded: a built-in whose file is absent is not listed, and asking for it says which file to put
in which folder.

The upscale itself reproduces ``modules/upscaler.py`` (``Upscaler.upscale``: apply the model up to three times until
the target is reached, then a Lanczos resize to the exact target, which is rounded down to a multiple of 8) and
``modules/upscaler_utils.py`` (``upscale_with_model``: the image is cut into ``ESRGAN_tile`` tiles overlapping by
``ESRGAN_tile_overlap`` pixels, each tile goes through the model in BGR order as A1111 feeds it, and the tiles are
pasted back with A1111's linear blend in the overlaps, ``images.split_grid`` / ``images.combine_grid``).
Hires fix uses the same entry point, :meth:`UpscalerRegistry.upscale` with ``size=``, which is A1111's
``images.resize_image(0, ...)`` with an upscaler.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from webui.core.io.tiles import Grid, combine_grid, split_grid

log = logging.getLogger(__name__)

LANCZOS = Image.Resampling.LANCZOS
NEAREST = Image.Resampling.NEAREST

#: File types a model upscaler folder may hold. A1111 lists .pt/.pth (Real-ESRGAN: .pth only); spandrel also reads
#: .safetensors and .ckpt, the form many current upscalers are published in, so we list those too.
MODEL_EXTENSIONS = (".pt", ".pth", ".ckpt", ".safetensors")

#: How many loaded upscaler models stay in memory (extras may blend two model upscalers per image).
DEFAULT_CACHE_SIZE = 2


# ---------------------------------------------------------------------------------------------------------------------
# the families (A1111's Upscaler subclasses) as data


@dataclass(frozen=True)
class Family:
    """One A1111 ``Upscaler`` subclass: its ``name`` (also the folder under models/), its ``model_name`` (what
    /sdapi/v1/upscalers shows as ``model_name``), the ``scale`` it lists for a local file, the options holding its tile
    size and overlap, whether A1111 asks for half precision (``prefer_half``), and its ``--<x>-models-path`` flag."""

    name: str
    model_name: str | None
    listed_scale: float | None
    tile_option: str
    overlap_option: str
    prefer_half: bool
    flag: str
    tiling: str = "grid"  # "grid": upscaler_utils.upscale_with_model; "weighted": upscaler_utils.tiled_upscale_2


FAMILIES: tuple[Family, ...] = (
    # esrgan_model.UpscalerESRGAN: every file listed with scale 4, loaded in float32.
    Family("ESRGAN", "ESRGAN_4x", 4.0, "ESRGAN_tile", "ESRGAN_tile_overlap", False, "esrgan_models_path"),
    # realesrgan_model.UpscalerRealESRGAN: only the built-in definitions; tiles of ESRGAN_tile.
    Family("RealESRGAN", None, 4.0, "ESRGAN_tile", "ESRGAN_tile_overlap", True, "realesrgan_models_path"),
    # swinir_model.UpscalerSwinIR: SWIN_tile / SWIN_tile_overlap, weighted tiles in torch (tiled_upscale_2).
    Family("SwinIR", "SwinIR 4x", 4.0, "SWIN_tile", "SWIN_tile_overlap", True, "swinir_models_path", "weighted"),
    # dat_model.UpscalerDAT: local files listed with scale None; DAT_tile / DAT_tile_overlap.
    Family("DAT", None, None, "DAT_tile", "DAT_tile_overlap", True, "dat_models_path"),
    # hat_model.UpscalerHAT: listed with scale 4; HAT_tile / HAT_tile_overlap.
    Family("HAT", None, 4.0, "HAT_tile", "HAT_tile_overlap", False, "hat_models_path"),
)
FAMILIES_BY_NAME = {f.name: f for f in FAMILIES}

#: Tile options that A1111 has beside ESRGAN_tile; when our option table lacks one, the ESRGAN value is used.
TILE_DEFAULTS = {"ESRGAN_tile": 192, "ESRGAN_tile_overlap": 8}


class BuiltIn(NamedTuple):
    """An upscaler A1111 lists by download URL; here it is listed only when its file is in the family's folder."""

    name: str
    family: str
    url: str
    scale: float
    enabled_option: str | None  # the option whose list must contain ``name`` (None: always)

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_RELEASES = "https://github.com/xinntao/Real-ESRGAN/releases/download"
_RE = "realesrgan_enabled_models"
_DAT = "https://huggingface.co/w-e-w/DAT/resolve/main/experiments/pretrained_models/DAT"

#: A1111 realesrgan_model.get_realesrgan_models (all six, in A1111's order: GET /sdapi/v1/realesrgan-models),
#: dat_model.get_dat_models, and the ESRGAN / SwinIR defaults.
REALESRGAN_MODELS: tuple[BuiltIn, ...] = (
    BuiltIn("R-ESRGAN General 4xV3", "RealESRGAN", f"{_RELEASES}/v0.2.5.0/realesr-general-x4v3.pth", 4, _RE),
    BuiltIn("R-ESRGAN General WDN 4xV3", "RealESRGAN", f"{_RELEASES}/v0.2.5.0/realesr-general-wdn-x4v3.pth", 4, _RE),
    BuiltIn("R-ESRGAN AnimeVideo", "RealESRGAN", f"{_RELEASES}/v0.2.5.0/realesr-animevideov3.pth", 4, _RE),
    BuiltIn("R-ESRGAN 4x+", "RealESRGAN", f"{_RELEASES}/v0.1.0/RealESRGAN_x4plus.pth", 4, _RE),
    BuiltIn("R-ESRGAN 4x+ Anime6B", "RealESRGAN", f"{_RELEASES}/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth", 4, _RE),
    BuiltIn("R-ESRGAN 2x+", "RealESRGAN", f"{_RELEASES}/v0.2.1/RealESRGAN_x2plus.pth", 2, _RE),
)
DAT_MODELS: tuple[BuiltIn, ...] = (
    BuiltIn("DAT x2", "DAT", f"{_DAT}/DAT_x2.pth", 2, "dat_enabled_models"),
    BuiltIn("DAT x3", "DAT", f"{_DAT}/DAT_x3.pth", 3, "dat_enabled_models"),
    BuiltIn("DAT x4", "DAT", f"{_DAT}/DAT_x4.pth", 4, "dat_enabled_models"),
)
#: Names A1111 lists when their folder is empty; their files, once downloaded, are listed under the file's stem.
DEFAULT_DOWNLOADS: tuple[BuiltIn, ...] = (
    BuiltIn("ESRGAN_4x", "ESRGAN", "https://github.com/cszn/KAIR/releases/download/v1.0/ESRGAN.pth", 4, None),
    BuiltIn("SwinIR 4x", "SwinIR", "https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/"
            "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth", 4, None),
)


def friendly_name(path: str) -> str:
    """A1111 modelloader.friendly_name: the file name without folder and extension."""
    return os.path.splitext(os.path.basename(path))[0]


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def model_files(folder: str, extensions: Iterable[str]) -> list[str]:
    """A1111 modelloader.load_models / util.walk_files: files under ``folder`` (recursively, links followed) with one
    of ``extensions``, folders and files in natural order."""
    if not folder or not os.path.isdir(folder):
        return []
    allowed = {e.lower() for e in extensions}
    out = []
    for root, _dirs, files in sorted(os.walk(folder, followlinks=True), key=lambda x: _natural_key(x[0])):
        for name in sorted(files, key=_natural_key):
            if os.path.splitext(name)[1].lower() in allowed:
                full = os.path.join(root, name)
                if os.path.isfile(full) and full not in out:
                    out.append(full)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# errors


class UpscalerNotFound(LookupError):
    """An upscaler name that is not in the list. A1111 raises ``AssertionError("could not find upscaler named X")``
    (extras) or ``Exception`` (hires fix); we say the same and add the valid names, and for one of A1111's
    download-on-demand models, which file to put where."""

    def __init__(self, name: str | None, choices: Iterable[str], hint: str | None = None):
        self.name = name
        self.choices = list(choices)
        self.hint = hint
        message = (f"could not find upscaler named {name or '<empty string>'}; "
                   f"valid upscalers: {', '.join(self.choices)}")
        if hint:
            message += f". {hint}"
        super().__init__(message)

    def __str__(self) -> str:  # LookupError would repr() the message
        return self.args[0]


class UpscalerLoadError(RuntimeError):
    """A model file that spandrel cannot load (not a supported architecture, or not an image-to-image model)."""


# ---------------------------------------------------------------------------------------------------------------------
# the list


@dataclass(frozen=True)
class UpscalerInfo:
    """One entry of A1111's ``shared.sd_upscalers`` (``UpscalerData``): what /sdapi/v1/upscalers lists."""

    name: str
    family: str  # "None", "Lanczos", "Nearest" or a Family name
    path: str | None = None  # the local model file (A1111's data_path)
    scale: float | None = 4.0  # as A1111 lists it (UpscalerData's default 4); the real scale comes from the model
    model_name: str | None = None

    @property
    def is_model(self) -> bool:
        return self.path is not None

    def api_item(self) -> dict[str, Any]:
        """The /sdapi/v1/upscalers item (api.py get_upscalers): ``model_url`` is always null in A1111."""
        return {
            "name": self.name,
            "model_name": self.model_name,
            "model_path": self.path,
            "model_url": None,
            "scale": None if self.scale is None else float(self.scale),
        }


BUILTIN_UPSCALERS: tuple[UpscalerInfo, ...] = (
    UpscalerInfo("None", "None"),
    UpscalerInfo("Lanczos", "Lanczos"),
    UpscalerInfo("Nearest", "Nearest"),
)


def realesrgan_models_api() -> list[dict[str, Any]]:
    """GET /sdapi/v1/realesrgan-models: A1111's six Real-ESRGAN definitions, enabled or not, with their URLs."""
    return [{"name": m.name, "path": m.url, "scale": int(m.scale)} for m in REALESRGAN_MODELS]


def read_option(settings: Any, key: str, default: Any = None) -> Any:
    """An option from a Settings object (or a plain mapping); ``default`` when the key is not registered or unset."""
    if settings is None:
        return default
    getter = getattr(settings, "get", None)
    try:
        value = getter(key) if getter is not None else settings[key]
    except (KeyError, AttributeError):
        return default
    return default if value is None else value


# ---------------------------------------------------------------------------------------------------------------------
# running a model on an image (A1111 upscaler_utils)


def pil_image_to_torch_bgr(image: Image.Image):
    """A1111 upscaler_utils.pil_image_to_torch_bgr: RGB -> BGR, CHW, [0, 1] float64 tensor."""
    import torch

    arr = np.array(image.convert("RGB"))[:, :, ::-1]
    arr = np.ascontiguousarray(np.transpose(arr, (2, 0, 1))) / 255
    return torch.from_numpy(arr)


def torch_bgr_to_pil_image(tensor) -> Image.Image:
    """A1111 upscaler_utils.torch_bgr_to_pil_image: clamp to [0, 1], x255, round, BGR -> RGB."""
    if tensor.ndim == 4:
        if tensor.shape[0] != 1:
            raise ValueError(f"{tuple(tensor.shape)} does not look like an image")
        tensor = tensor[0]
    elif tensor.ndim != 3:
        raise ValueError(f"{tuple(tensor.shape)} does not look like an image")
    arr = tensor.detach().float().cpu().clamp_(0, 1).numpy()
    arr = (255.0 * np.moveaxis(arr, 0, 2)).round().astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(arr[:, :, ::-1]), "RGB")


def _param_of(model) -> tuple[Any, Any]:
    import torch

    module = getattr(model, "model", model)
    for p in getattr(module, "parameters", lambda: ())():
        return p.device, p.dtype
    return torch.device("cpu"), torch.float32  # a plain function: run on the CPU in float32


def upscale_pil_patch(model: Callable, image: Image.Image) -> Image.Image:
    """A1111 upscaler_utils.upscale_pil_patch: one image (or tile) through the model, on the model's device/dtype."""
    import torch

    device, dtype = _param_of(model)
    with torch.inference_mode():
        tensor = pil_image_to_torch_bgr(image).unsqueeze(0).to(device=device, dtype=dtype)
        return torch_bgr_to_pil_image(model(tensor))


def upscale_with_model(
    model: Callable,
    image: Image.Image,
    *,
    tile_size: int,
    tile_overlap: int = 0,
    should_stop: Callable[[], bool] | None = None,
) -> Image.Image:
    """A1111 upscaler_utils.upscale_with_model: one pass of ``model`` over ``image``, in tiles when ``tile_size`` > 0.

    Deviation, on purpose: a tile is never larger than the image (A1111 pads a small image's tile with black, which
    darkens its edges); an image no larger than one tile is upscaled whole. On interrupt the input comes back, as in
    A1111.
    """
    tile_w, tile_h = min(tile_size, image.width), min(tile_size, image.height)
    if tile_size <= 0 or (tile_w >= image.width and tile_h >= image.height):
        return upscale_pil_patch(model, image)
    overlap = max(0, min(tile_overlap, tile_w - 1, tile_h - 1))
    grid = split_grid(image, tile_w, tile_h, overlap)
    newtiles = []
    scale_factor = 1
    for y, h, row in grid.tiles:
        newrow = []
        for x, w, tile in row:
            if should_stop is not None and should_stop():
                return image
            output = upscale_pil_patch(model, tile)
            scale_factor = output.width // tile.width
            newrow.append([x * scale_factor, w * scale_factor, output])
        newtiles.append([y * scale_factor, h * scale_factor, newrow])
    newgrid = Grid(newtiles, grid.tile_w * scale_factor, grid.tile_h * scale_factor, grid.image_w * scale_factor,
                   grid.image_h * scale_factor, grid.overlap * scale_factor)
    return combine_grid(newgrid)


def tiled_upscale_2(img, model: Callable, *, tile_size: int, tile_overlap: int, scale: int,
                    should_stop: Callable[[], bool] | None = None):
    """A1111 upscaler_utils.tiled_upscale_2 (SwinIR): tiles cut and averaged in torch, every overlapping output
    weighted equally."""
    import torch

    _b, _c, h, w = img.size()
    tile_size = min(tile_size, h, w)
    if tile_size <= 0:
        return model(img)
    stride = max(1, tile_size - tile_overlap)
    h_idx_list = list(range(0, h - tile_size, stride)) + [h - tile_size]
    w_idx_list = list(range(0, w - tile_size, stride)) + [w - tile_size]
    result = None
    weights = None
    for h_idx in h_idx_list:
        for w_idx in w_idx_list:
            if should_stop is not None and should_stop():
                break
            out_patch = model(img[..., h_idx: h_idx + tile_size, w_idx: w_idx + tile_size])
            if result is None:
                result = torch.zeros(out_patch.shape[0], out_patch.shape[1], h * scale, w * scale,
                                     device=out_patch.device, dtype=out_patch.dtype)
                weights = torch.zeros_like(result)
            region = (..., slice(h_idx * scale, (h_idx + tile_size) * scale),
                      slice(w_idx * scale, (w_idx + tile_size) * scale))
            result[region].add_(out_patch)
            weights[region].add_(1)
    if result is None:
        return model(img)
    return result.div_(weights.clamp_(min=1))


def upscale_swinir(model, image: Image.Image, *, tile_size: int, tile_overlap: int, scale: int,
                   should_stop: Callable[[], bool] | None = None, window_size: int = 8) -> Image.Image:
    """A1111 swinir_model.upscale: reflect-pad to a multiple of the window, weighted tiles, crop, BGR as A1111."""
    import torch

    device, dtype = _param_of(model)
    with torch.inference_mode():
        img = pil_image_to_torch_bgr(image).unsqueeze(0).to(device=device, dtype=dtype)
        _, _, h_old, w_old = img.size()
        h_pad = (h_old // window_size + 1) * window_size - h_old
        w_pad = (w_old // window_size + 1) * window_size - w_old
        img = torch.cat([img, torch.flip(img, [2])], 2)[:, :, : h_old + h_pad, :]
        img = torch.cat([img, torch.flip(img, [3])], 3)[:, :, :, : w_old + w_pad]
        output = tiled_upscale_2(img, model, tile_size=tile_size, tile_overlap=tile_overlap, scale=scale,
                                 should_stop=should_stop)
        output = output[..., : h_old * scale, : w_old * scale]
        return torch_bgr_to_pil_image(output)


# ---------------------------------------------------------------------------------------------------------------------
# loading (A1111 modelloader.load_spandrel_model)


def spandrel_registry():
    """spandrel's architectures plus spandrel_extra_arches' (CodeFormer, ...) when that package is installed, in a
    registry of our own: spandrel's global registry is left as it is."""
    import spandrel

    registry = spandrel.MAIN_REGISTRY.copy()
    try:
        import spandrel_extra_arches
    except ImportError:
        return registry
    registry.add(*spandrel_extra_arches.EXTRA_REGISTRY, ignore_duplicates=True)
    return registry


def read_state_dict(path: str) -> dict:
    """The tensors of a model file, read without running pickled code: .safetensors with safetensors; .pth/.ckpt
    through spandrel's restricted unpickler; .pt with torch's weights-only unpickler (never as TorchScript, which
    spandrel would try first). Wrapped state dicts (``params_ema``, ``state_dict``, ...) are unwrapped."""
    import spandrel
    import torch

    ext = os.path.splitext(path)[1].lower()
    if ext == ".pt":
        state = torch.load(path, map_location="cpu", weights_only=True)
        return spandrel.canonicalize_state_dict(state)
    return spandrel.ModelLoader(device="cpu").load_state_dict_from_file(path)


def load_spandrel_model(path: str, *, device: Any = None, half: bool = False, registry: Any = None,
                        expected_architecture: str | None = None):
    """A1111 modelloader.load_spandrel_model: the file's architecture is detected from its keys by spandrel; half
    precision only when asked and the architecture supports it; eval mode. Raises UpscalerLoadError for a file
    spandrel does not recognise."""
    import spandrel
    import torch

    try:
        state = read_state_dict(path)
        loader = spandrel.ModelLoader(device="cpu", registry=registry or spandrel_registry())
        descriptor = loader.load_from_state_dict(state)
    except spandrel.UnsupportedModelError as e:
        raise UpscalerLoadError(f"{path}: not a model architecture spandrel knows ({e})") from e
    except Exception as e:
        raise UpscalerLoadError(f"{path}: could not be read as a model file: {type(e).__name__}: {e}") from e
    arch = descriptor.architecture.name
    if expected_architecture and arch != expected_architecture:
        log.warning("Model %r is not a %r model (got %r)", path, expected_architecture, arch)
    if half and descriptor.supports_half:
        descriptor.model.half()
    descriptor.to(torch.device(device) if device is not None else torch.device("cpu"))
    descriptor.model.eval()
    return descriptor


# ---------------------------------------------------------------------------------------------------------------------
# the registry


@dataclass(frozen=True)
class UpscalerFolders:
    """Where each family's files live: models/<Family> unless its A1111 flag names another folder."""

    folders: tuple[tuple[str, str], ...]

    @classmethod
    def under(cls, models_dir: str, overrides: Mapping[str, str | None] | None = None) -> UpscalerFolders:
        """``overrides`` maps a family name ("ESRGAN", "RealESRGAN", ...) to the folder its flag gives, if any."""
        overrides = overrides or {}
        return cls(tuple((f.name, overrides.get(f.name) or os.path.join(models_dir, f.name)) for f in FAMILIES))

    @classmethod
    def from_config(cls, config: Any) -> UpscalerFolders:
        """From a webui Config: --esrgan-models-path, --realesrgan-models-path, --swinir-models-path,
        --dat-models-path (A1111's flags), else under --models-dir."""
        extra = getattr(config, "extra", lambda name, default=None: default)
        overrides = {
            "ESRGAN": getattr(config, "esrgan_models_path", None),
            "RealESRGAN": extra("realesrgan_models_path"),
            "SwinIR": extra("swinir_models_path"),
            "DAT": extra("dat_models_path"),
            "HAT": extra("hat_models_path"),
        }
        return cls.under(config.models_dir, overrides)

    def get(self, family: str) -> str:
        return dict(self.folders)[family]


class UpscalerRegistry:
    """The upscaler list and the loaded upscaler models.

    ``refresh()`` scans the folders (A1111 does it at start-up and on "Reload UI"); ``list(settings)`` gives the
    upscalers in A1111's order (None, Lanczos, Nearest, then the rest by name, case-insensitively); ``upscale`` runs
    one. Loaded models are kept (at most ``cache_size``, least recently used dropped), keyed by file, device and
    precision. Models run on ``device``; ``half`` allows float16 where A1111 asks for it (not with --no-half).
    Only the queue's worker thread calls ``upscale``; listing is safe from any thread.
    """

    def __init__(self, folders: UpscalerFolders, *, device: Any = None, half: bool = False,
                 cache_size: int = DEFAULT_CACHE_SIZE):
        self.folders = folders
        self.device = device
        self.half = half
        self.cache_size = max(1, cache_size)
        self._files: dict[str, list[str]] | None = None
        self._models: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.RLock()

    @classmethod
    def from_config(cls, config: Any, plan: Any = None) -> UpscalerRegistry:
        """The registry for a webui Config: its folders; the device plan's device, float16 where the plan runs half
        (A1111: not with --no-half), the CPU with ``--use-cpu esrgan`` or ``all`` (A1111's device_esrgan)."""
        import torch

        device = getattr(plan, "device", None)
        if device is None or config.uses_cpu_for("esrgan"):
            device = torch.device("cpu")
        half = getattr(plan, "dtype", None) == torch.float16 and device.type != "cpu"
        return cls(UpscalerFolders.from_config(config), device=device, half=half)

    # -- listing -----------------------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Scan the model folders again."""
        files = {}
        for family in FAMILIES:
            files[family.name] = model_files(self.folders.get(family.name), MODEL_EXTENSIONS)
        with self._lock:
            self._files = files

    def _scanned(self) -> dict[str, list[str]]:
        with self._lock:
            if self._files is None:
                self.refresh()
            return self._files  # type: ignore[return-value]

    def list(self, settings: Any = None) -> list[UpscalerInfo]:
        """A1111 shared.sd_upscalers, built as modelloader.load_upscalers does, from the files found.

        ``settings`` supplies realesrgan_enabled_models and dat_enabled_models (their defaults when None).
        """
        files = self._scanned()
        found: list[UpscalerInfo] = []
        for family in FAMILIES:
            paths = files.get(family.name, [])
            if family.name == "RealESRGAN":
                found += self._builtins(REALESRGAN_MODELS, paths, settings, family)
                # Files that match no definition: A1111 ignores them; we list them under their stem, as the other
                # families list theirs, since spandrel loads any Real-ESRGAN variant.
                known = {b.filename.lower() for b in REALESRGAN_MODELS}
                found += [UpscalerInfo(friendly_name(p), family.name, p, family.listed_scale, family.model_name)
                          for p in paths if os.path.basename(p).lower() not in known]
                continue
            found += [UpscalerInfo(friendly_name(p), family.name, p, family.listed_scale, family.model_name)
                      for p in paths]
            if family.name == "DAT":
                found += self._builtins(DAT_MODELS, paths, settings, family)
        found.sort(key=lambda u: u.name.lower())
        return [*BUILTIN_UPSCALERS, *found]

    @staticmethod
    def _builtins(defs: Iterable[BuiltIn], paths: list[str], settings: Any, family: Family) -> list[UpscalerInfo]:
        """A1111 realesrgan_model / dat_model: a definition whose file (by the URL's file name; A1111 matches the end
        of the path) is present, and whose name is enabled in its option."""
        out = []
        for b in defs:
            default = _default_option(b.enabled_option)
            if b.enabled_option and b.name not in (read_option(settings, b.enabled_option, default) or []):
                continue
            local = next((p for p in paths if p.endswith(b.filename)), None)
            if local is not None:
                out.append(UpscalerInfo(b.name, family.name, local, b.scale, family.model_name))
        return out

    def names(self, settings: Any = None) -> list[str]:
        return [u.name for u in self.list(settings)]

    def api_list(self, settings: Any = None) -> list[dict[str, Any]]:
        """GET /sdapi/v1/upscalers."""
        return [u.api_item() for u in self.list(settings)]

    def find(self, name: str | None, settings: Any = None) -> UpscalerInfo:
        """The upscaler called ``name`` (exactly, as A1111 compares); raises UpscalerNotFound with the valid names."""
        for attempt in range(2):
            upscalers = self.list(settings)
            for u in upscalers:
                if u.name == name:
                    return u
            if attempt == 0:
                self.refresh()  # a file added since the last scan is found without a restart
        raise UpscalerNotFound(name, [u.name for u in upscalers], self._hint(name))

    def _hint(self, name: str | None) -> str | None:
        for b in (*REALESRGAN_MODELS, *DAT_MODELS, *DEFAULT_DOWNLOADS):
            if b.name == name:
                folder = self.folders.get(b.family)
                if b.enabled_option and any(p.endswith(b.filename) for p in self._scanned().get(b.family, [])):
                    return f"Its file is in {folder}: add {name!r} to option {b.enabled_option} to use it"
                return (f"A1111 downloads {name!r} on first use; this server downloads nothing: put {b.filename} "
                        f"(from {b.url}) in {folder}")
        return None

    # -- models ------------------------------------------------------------------------------------------------------

    def load(self, info: UpscalerInfo):
        """The spandrel model of a model upscaler, loaded once and kept (LRU of ``cache_size``)."""
        if info.path is None:
            raise ValueError(f"{info.name} is not a model upscaler")
        family = FAMILIES_BY_NAME[info.family]
        half = bool(self.half and family.prefer_half)
        key = (os.path.abspath(info.path), str(self.device), half)
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model
        if not os.path.isfile(info.path):
            raise UpscalerLoadError(f"upscaler {info.name!r}: model file {info.path} is missing; refresh the list")
        expected = "ESRGAN" if family.name == "RealESRGAN" else family.name
        model = load_spandrel_model(info.path, device=self.device, half=half, expected_architecture=expected)
        if getattr(model, "purpose", None) not in ("SR", "Restoration"):
            raise UpscalerLoadError(f"{info.path}: a {model.architecture.name} model ({model.purpose}), not an "
                                    "upscaler")
        with self._lock:
            self._models[key] = model
            while len(self._models) > self.cache_size:
                self._models.popitem(last=False)
        return model

    def unload(self) -> None:
        """Drop every loaded upscaler model."""
        with self._lock:
            self._models.clear()

    # -- upscaling ---------------------------------------------------------------------------------------------------

    def do_upscale(self, image: Image.Image, info: UpscalerInfo, scale: float, settings: Any = None,
                   should_stop: Callable[[], bool] | None = None) -> Image.Image:
        """One pass of an upscaler (A1111 ``Upscaler.do_upscale``): Lanczos/Nearest resize by ``scale``; a model
        multiplies the size by its own scale; None returns the image."""
        if info.family == "None":
            return image
        if info.family == "Lanczos":
            return image.resize((int(image.width * scale), int(image.height * scale)), resample=LANCZOS)
        if info.family == "Nearest":
            return image.resize((int(image.width * scale), int(image.height * scale)), resample=NEAREST)
        family = FAMILIES_BY_NAME[info.family]
        model = self.load(info)
        tile = int(read_option(settings, family.tile_option,
                               read_option(settings, "ESRGAN_tile", TILE_DEFAULTS["ESRGAN_tile"])))
        overlap = int(read_option(settings, family.overlap_option,
                              read_option(settings, "ESRGAN_tile_overlap", TILE_DEFAULTS["ESRGAN_tile_overlap"])))
        if family.tiling == "weighted":
            return upscale_swinir(model, image, tile_size=tile, tile_overlap=overlap, scale=int(model.scale),
                                  should_stop=should_stop)
        return upscale_with_model(model, image, tile_size=tile, tile_overlap=overlap, should_stop=should_stop)

    def upscale_by(self, image: Image.Image, info: UpscalerInfo, scale: float, settings: Any = None,
                   should_stop: Callable[[], bool] | None = None) -> Image.Image:
        """A1111 ``Upscaler.upscale(img, scale)``: the target is W*scale x H*scale rounded down to a multiple of 8;
        the upscaler runs up to three times, stopping once the image reaches the target (or stops growing); a
        Lanczos resize then gives the exact target."""
        dest_w = max(1, int((image.width * scale) // 8 * 8))
        dest_h = max(1, int((image.height * scale) // 8 * 8))
        for _ in range(3):
            shape = (image.width, image.height)
            image = self.do_upscale(image, info, scale, settings, should_stop)
            if shape == (image.width, image.height):
                break
            if image.width >= dest_w and image.height >= dest_h:
                break
            if should_stop is not None and should_stop():
                break
        if image.width != dest_w or image.height != dest_h:
            image = image.resize((dest_w, dest_h), resample=LANCZOS)
        return image

    def upscale(
        self,
        image: Image.Image,
        name: str | None,
        *,
        scale: float | None = None,
        size: tuple[int, int] | None = None,
        settings: Any = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Image.Image:
        """Upscale ``image`` with the upscaler called ``name``; give exactly one of ``scale`` or ``size``.

        ``scale``: A1111's ``Upscaler.upscale`` (extras "Scale by"): the result is floor(W*scale/8)*8 x
        floor(H*scale/8)*8.
        ``size=(w, h)``: A1111's ``images.resize_image(0, image, w, h, upscaler_name)`` (hires fix, img2img "Just
        resize"): with None (or a greyscale image) a Lanczos resize straight to w x h; otherwise the upscaler runs
        with factor max(w/W, h/H) when that is above 1, and a Lanczos resize gives exactly w x h.
        ``settings`` supplies ESRGAN_tile / ESRGAN_tile_overlap (and the other families' tile options) and the
        enabled built-in models; ``should_stop`` is polled between tiles (interrupt).
        Raises UpscalerNotFound (with the valid names) for an unknown name, UpscalerLoadError for a bad file.
        """
        if (scale is None) == (size is None):
            raise ValueError("give exactly one of scale or size")
        if size is None:
            info = self.find(name, settings)
            return self.upscale_by(image, info, float(scale), settings, should_stop)  # type: ignore[arg-type]
        w, h = int(size[0]), int(size[1])
        if name is None or name == "None" or image.mode == "L":
            return image.resize((w, h), resample=LANCZOS)
        info = self.find(name, settings)
        factor = max(w / image.width, h / image.height)
        if factor > 1.0:
            image = self.upscale_by(image, info, factor, settings, should_stop)
        if image.width != w or image.height != h:
            image = image.resize((w, h), resample=LANCZOS)
        return image

    def upscale_to(self, image: Image.Image, name: str | None, width: int, height: int, settings: Any = None,
                   should_stop: Callable[[], bool] | None = None) -> Image.Image:
        """Hires fix / img2img "Just resize": A1111 ``images.resize_image(0, image, width, height, upscaler_name)``,
        i.e. ``upscale(image, name, size=(width, height), ...)``."""
        return self.upscale(image, name, size=(width, height), settings=settings, should_stop=should_stop)


def _default_option(key: str | None) -> Any:
    if key is None:
        return None
    from webui.core.settings import OPTIONS_BY_KEY

    option = OPTIONS_BY_KEY.get(key)
    return option.default if option is not None else None
