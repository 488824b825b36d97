"""ControlNet preprocessors ("modules") as sd-webui-controlnet v1.1.455 defines and runs them.

The table reproduces the extension's registry (scripts/supported_preprocessor.py, scripts/preprocessor/
model_free_preprocessors.py and legacy/preprocessor_compiled.py): internal name, UI label ("alias"), sliders with
their ranges and defaults, sort priority and tags. ``/controlnet/module_list`` and the unit parser read it.

The model-free ones are written here after the extension's functions (legacy/processor.py). The ones that run a
network use the maintained ``controlnet_aux`` package (the same annotator code the extension vendors) with weights
read from the extension's folder layout, ``<annotator_dir>/<subfolder>/<file>``
(extensions/sd-webui-controlnet/annotator/downloads/...): nothing is downloaded. Every network preprocessor runs on
the image the extension gives it (``resize_image_with_pad``: shortest side to the resolution, edges padded to a
multiple of 64) and its padding is removed afterwards, as the extension's wrappers do; controlnet_aux's own resizing
is then the identity (its target size equals the padded size).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from webui.core.controlnet.errors import ControlNetError


@dataclass(frozen=True)
class Slider:
    """The extension's PreprocessorParameter: an API slider ``{name, value, min, max, step}``."""

    label: str = "EMPTY_LABEL"
    minimum: float = 0.0
    maximum: float = 1.0
    step: float = 0.01
    value: float = 0.5
    visible: bool = True

    def api_json(self) -> dict:
        return {"name": self.label, "value": self.value, "min": self.minimum, "max": self.maximum, "step": self.step}


#: The extension's class default ``Preprocessor.slider_resolution``. Its legacy preprocessors set ``self.resolution``
#: instead of ``self.slider_resolution``, so every legacy one keeps this default (range check and API sliders alike).
DEFAULT_RESOLUTION = Slider(label="Resolution", minimum=64, maximum=2048, value=512, step=8, visible=True)
HIDDEN = Slider(visible=False)


@dataclass(frozen=True)
class Weights:
    """Annotator weight files under ``<annotator_dir>/<folder>/`` (the extension's annotator/downloads layout)."""

    folder: str
    files: tuple[str, ...]


@dataclass(frozen=True)
class Preprocessor:
    name: str
    label: str
    run: Callable[..., np.ndarray]
    slider_resolution: Slider = DEFAULT_RESOLUTION
    slider_1: Slider = HIDDEN
    slider_2: Slider = HIDDEN
    slider_3: Slider = HIDDEN
    priority: int = 0
    tags: tuple[str, ...] = ()
    weights: Weights | None = None
    model_free: bool = False  # the extension's do_not_need_model (False for every image preprocessor)
    # Preprocessors that take the image with the inpaint mask as its alpha (none here; kept for the input rule).
    is_inpaint: bool = False

    def sliders(self) -> list[Slider]:
        return [s for s in (self.slider_resolution, self.slider_1, self.slider_2, self.slider_3) if s.visible]


# ---------------------------------------------------------------------------------------------------------------
# Image helpers (annotator/util.py, legacy/processor.py)


def HWC3(x: np.ndarray) -> np.ndarray:
    """annotator.util.HWC3: gray -> RGB, RGBA composited over white."""
    if x.dtype != np.uint8:
        raise ControlNetError(f"control image must be 8-bit, got {x.dtype}")
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or x.shape[2] not in (1, 3, 4):
        raise ControlNetError(f"control image must have 1, 3 or 4 channels, got shape {x.shape}")
    c = x.shape[2]
    if c == 3:
        return x
    if c == 1:
        return np.concatenate([x, x, x], axis=2)
    color = x[:, :, 0:3].astype(np.float32)
    alpha = x[:, :, 3:4].astype(np.float32) / 255.0
    return (color * alpha + 255.0 * (1.0 - alpha)).clip(0, 255).astype(np.uint8)


def pad64(x: int) -> int:
    return int(np.ceil(float(x) / 64.0) * 64 - x)


def safer_memory(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.copy()).copy()


def resize_image_with_pad(input_image: np.ndarray, resolution: float):
    """legacy/processor.py resize_image_with_pad: shortest side to ``resolution`` (cubic up, area down), then pad
    right/bottom by edge replication to multiples of 64. Returns the padded image and ``remove_pad``."""
    img = HWC3(input_image)
    h_raw, w_raw, _ = img.shape
    k = float(resolution) / float(min(h_raw, w_raw))
    interpolation = cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA
    h_target = int(np.round(float(h_raw) * k))
    w_target = int(np.round(float(w_raw) * k))
    img = cv2.resize(img, (w_target, h_target), interpolation=interpolation)
    img_padded = np.pad(img, [[0, pad64(h_target)], [0, pad64(w_target)], [0, 0]], mode="edge")

    def remove_pad(x):
        return safer_memory(x[:h_target, :w_target])

    return safer_memory(img_padded), remove_pad


def nms(x: np.ndarray, t: float, s: float) -> np.ndarray:
    """annotator.util.nms (the scribble preprocessors' thinning)."""
    x = cv2.GaussianBlur(x.astype(np.float32), (0, 0), s)
    f1 = np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=np.uint8)
    f2 = np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]], dtype=np.uint8)
    f3 = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.uint8)
    f4 = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=np.uint8)
    y = np.zeros_like(x)
    for f in (f1, f2, f3, f4):
        np.putmask(y, cv2.dilate(x, kernel=f) == x, x)
    z = np.zeros_like(y, dtype=np.uint8)
    z[y > t] = 255
    return z


def _scribble(result: np.ndarray) -> np.ndarray:
    """scribble_hed / scribble_pidinet post-processing on the unpadded soft edge map."""
    result = nms(result, 127, 3.0)
    result = cv2.GaussianBlur(result, (0, 0), 3.0)
    result[result > 4] = 255
    result[result < 255] = 0
    return result


# ---------------------------------------------------------------------------------------------------------------
# Model-free preprocessors


def _none(img, res, a, b, ctx):
    return img


def _invert(img, res, a, b, ctx):
    return 255 - HWC3(img)


def _canny(img, res, a, b, ctx):
    """PreprocessorCanny: cv2.Canny(low=int(threshold_a), high=int(threshold_b)) on the padded image, as RGB."""
    img, remove_pad = resize_image_with_pad(img, res)
    return remove_pad(cv2.cvtColor(cv2.Canny(img, int(a), int(b)), cv2.COLOR_GRAY2RGB))


def _blur_gaussian(img, res, a, b, ctx):
    img, remove_pad = resize_image_with_pad(img, res)
    return cv2.GaussianBlur(remove_pad(img), (0, 0), float(a))


def _scribble_xdog(img, res, a, b, ctx):
    img, remove_pad = resize_image_with_pad(img, res)
    g1 = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.5)
    g2 = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 5.0)
    dog = (255 - np.min(g2 - g1, axis=2)).clip(0, 255).astype(np.uint8)
    result = np.zeros_like(img, dtype=np.uint8)
    result[2 * (255 - dog) > a] = 255
    return remove_pad(result)


def _threshold(img, res, a, b, ctx):
    img, remove_pad = resize_image_with_pad(img, res)
    result = np.zeros_like(img, dtype=np.uint8)
    result[np.min(img, axis=2) > a] = 255
    return remove_pad(result)


def _tile_resample(img, res, a, b, ctx):
    """tile_resample: downsample by ``threshold_a`` (area); below 1.1 the image is used as it is."""
    img = HWC3(img)
    if a < 1.1:
        return img
    h, w, _ = img.shape
    return cv2.resize(img, (int(float(w) / float(a)), int(float(h) / float(a))), interpolation=cv2.INTER_AREA)


def _color(img, res, a, b, ctx):
    """t2ia_color_grid (annotator/color): shortest side to ``res``, then a 64x coarser cubic grid, nearest up."""
    img = HWC3(img)
    h, w = img.shape[:2]
    if h < w:
        new_h, new_w = int(res), round(w / h * res)
    else:
        new_w, new_h = int(res), round(h / w * res)
    img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA)
    h, w = img.shape[:2]
    grid = cv2.resize(img, (w // 64, h // 64), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_NEAREST)


def _lineart_standard(img, res, a, b, ctx):
    img, remove_pad = resize_image_with_pad(img, res)
    x = img.astype(np.float32)
    g = cv2.GaussianBlur(x, (0, 0), 6.0)
    intensity = np.min(g - x, axis=2).clip(0, 255)
    intensity /= max(16, np.median(intensity[intensity > 8]))
    intensity *= 127
    return remove_pad(intensity.clip(0, 255).astype(np.uint8))


# ---------------------------------------------------------------------------------------------------------------
# Network preprocessors (controlnet_aux)


@dataclass
class AnnotatorContext:
    """Where annotator weights live and the detectors already built (one per weights folder), owned by the caller's
    registry: no module-level model cache."""

    annotator_dir: str | None
    device: Any = "cpu"
    detectors: dict = field(default_factory=dict)

    def weights_dir(self, weights: Weights) -> str:
        if not self.annotator_dir:
            raise ControlNetError(
                f"preprocessor weights {weights.folder}/{weights.files[0]} are needed, but no annotator folder is set "
                "(extensions/sd-webui-controlnet/annotator/downloads)"
            )
        folder = os.path.join(self.annotator_dir, weights.folder)
        for name in weights.files:
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                raise ControlNetError(
                    f"preprocessor weights not found: {path} (the sd-webui-controlnet annotator layout; nothing is "
                    "downloaded, put the file there)"
                )
        return folder

    def detector(self, key: str, weights: Weights, build: Callable[[str], Any]):
        det = self.detectors.get(key)
        if det is None:
            folder = self.weights_dir(weights)
            try:
                det = build(folder)
            except ControlNetError:
                raise
            except Exception as e:  # a corrupt or foreign weights file
                raise ControlNetError(f"could not load preprocessor weights from {folder}: {e}") from e
            if hasattr(det, "to"):
                det = det.to(self.device) or det
            self.detectors[key] = det
        return det


def _aux(key: str, weights: Weights, build: Callable[[str], Any], call: Callable[[Any, np.ndarray, int], np.ndarray],
         post: Callable[[np.ndarray], np.ndarray] | None = None):
    """A network preprocessor: pad as the extension does, run the controlnet_aux detector at the padded size (its own
    resize is then the identity), remove the padding, then ``post`` (scribble thinning)."""

    def run(img, res, a, b, ctx: AnnotatorContext):
        det = ctx.detector(key, weights, build)
        padded, remove_pad = resize_image_with_pad(img, res)
        size = min(padded.shape[:2])
        out = call(det, padded, size, a, b)
        out = remove_pad(out)
        return post(out) if post is not None else out

    return run


def _gray(x: np.ndarray) -> np.ndarray:
    return x[:, :, 0] if x.ndim == 3 else x


def _hed_build(folder):
    from controlnet_aux.hed import HEDdetector

    return HEDdetector.from_pretrained(folder, filename="ControlNetHED.pth")


def _pidi_build(folder):
    from controlnet_aux.pidi import PidiNetDetector

    return PidiNetDetector.from_pretrained(folder, filename="table5_pidinet.pth")


def _midas_build(folder):
    from controlnet_aux.midas import MidasDetector

    return MidasDetector.from_pretrained(folder, model_type="dpt_hybrid", filename="dpt_hybrid-midas-501f0c75.pt")


def _lineart_build(folder):
    from controlnet_aux.lineart import LineartDetector

    return LineartDetector.from_pretrained(folder, filename="sk_model.pth", coarse_filename="sk_model2.pth")


def _lineart_anime_build(folder):
    from controlnet_aux.lineart_anime import LineartAnimeDetector

    return LineartAnimeDetector.from_pretrained(folder, filename="netG.pth")


def _mlsd_build(folder):
    from controlnet_aux.mlsd import MLSDdetector

    return MLSDdetector.from_pretrained(folder, filename="mlsd_large_512_fp32.pth")


def _openpose_build(folder):
    from controlnet_aux.open_pose import OpenposeDetector

    return OpenposeDetector.from_pretrained(folder)


def _normalbae_build(folder):
    from controlnet_aux.normalbae import NormalBaeDetector

    return NormalBaeDetector.from_pretrained(folder, filename="scannet.pt")


def _zoe_build(folder):
    from controlnet_aux.zoe import ZoeDetector

    return ZoeDetector.from_pretrained(folder, filename="ZoeD_M12_N.pt")


def _leres_build(folder):
    from controlnet_aux.leres import LeresDetector

    return LeresDetector.from_pretrained(folder, filename="res101.pth", pix2pix_filename="latest_net_G.pth")


_HED = Weights("hed", ("ControlNetHED.pth",))
_PIDI = Weights("pidinet", ("table5_pidinet.pth",))
_MIDAS = Weights("midas", ("dpt_hybrid-midas-501f0c75.pt",))
_LINEART = Weights("lineart", ("sk_model.pth", "sk_model2.pth"))
_LINEART_ANIME = Weights("lineart_anime", ("netG.pth",))
_MLSD = Weights("mlsd", ("mlsd_large_512_fp32.pth",))
_OPENPOSE = Weights("openpose", ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"))
_NORMAL_BAE = Weights("normal_bae", ("scannet.pt",))
_ZOE = Weights("zoedepth", ("ZoeD_M12_N.pt",))
_LERES = Weights("leres", ("res101.pth", "latest_net_G.pth"))


def _hed_call(safe: bool):
    return lambda det, img, size, a, b: _gray(det(img, detect_resolution=size, image_resolution=size, safe=safe,
                                                 output_type="np"))


def _pidi_call(safe: bool = False, apply_filter: bool = False):
    return lambda det, img, size, a, b: _gray(det(img, detect_resolution=size, image_resolution=size, safe=safe,
                                                 apply_filter=apply_filter, output_type="np"))


def _lineart_call(coarse: bool):
    """controlnet_aux returns ``255 - line``: the extension's "applied auto inversion" of the lineart models."""
    return lambda det, img, size, a, b: _gray(det(img, coarse=coarse, detect_resolution=size, image_resolution=size,
                                                 output_type="np"))


def _openpose_call(body: bool, hand: bool, face: bool):
    return lambda det, img, size, a, b: det(img, detect_resolution=size, image_resolution=size, include_body=body,
                                            include_hand=hand, include_face=face, output_type="np")


# ---------------------------------------------------------------------------------------------------------------
# The table


def _r(label, minimum, maximum, value, step=0.01):
    return Slider(label=label, minimum=minimum, maximum=maximum, value=value, step=step)


def _table() -> tuple[Preprocessor, ...]:
    return (
        Preprocessor("none", "none", _none, priority=10, tags=("InstructP2P",)),
        Preprocessor("canny", "canny", _canny, slider_1=_r("Low Threshold", 1, 255, 100, 1),
                     slider_2=_r("High Threshold", 1, 255, 200, 1), priority=100, tags=("Canny",)),
        Preprocessor("invert", "invert (from white bg & black line)", _invert, slider_resolution=HIDDEN,
                     priority=20, tags=("Canny", "Lineart", "Scribble", "MLSD")),
        Preprocessor("blur_gaussian", "blur_gaussian", _blur_gaussian, slider_1=_r("Sigma", 0.01, 64.0, 9.0),
                     tags=("Tile",)),
        Preprocessor("scribble_xdog", "scribble_xdog", _scribble_xdog, slider_1=_r("XDoG Threshold", 1, 64, 32),
                     tags=("Scribble", "SparseCtrl")),
        # legacy preprocessors (preprocessor_compiled.py): name, label, sliders, priority, tags
        Preprocessor("threshold", "threshold", _threshold, slider_1=_r("Binarization Threshold", 0, 255, 127)),
        Preprocessor("tile_resample", "tile_resample", _tile_resample,
                     slider_1=_r("Down Sampling Rate", 1.0, 8.0, 1.0, 0.01), priority=100, tags=("Tile",)),
        Preprocessor("color", "t2ia_color_grid", _color, tags=("T2I-Adapter",)),
        Preprocessor("lineart_standard", "lineart_standard (from white bg & black line)", _lineart_standard,
                     priority=100, tags=("Lineart",)),
        Preprocessor("hed", "softedge_hed", _aux("hed", _HED, _hed_build, _hed_call(False)), tags=("SoftEdge",),
                     weights=_HED),
        Preprocessor("hed_safe", "softedge_hedsafe", _aux("hed", _HED, _hed_build, _hed_call(True)),
                     tags=("SoftEdge",), weights=_HED),
        Preprocessor("scribble_hed", "scribble_hed", _aux("hed", _HED, _hed_build, _hed_call(False), _scribble),
                     tags=("Scribble", "SparseCtrl"), weights=_HED),
        Preprocessor("pidinet", "softedge_pidinet", _aux("pidinet", _PIDI, _pidi_build, _pidi_call()), priority=100,
                     tags=("SoftEdge",), weights=_PIDI),
        Preprocessor("pidinet_safe", "softedge_pidisafe", _aux("pidinet", _PIDI, _pidi_build, _pidi_call(safe=True)),
                     tags=("SoftEdge",), weights=_PIDI),
        Preprocessor("pidinet_scribble", "scribble_pidinet",
                     _aux("pidinet", _PIDI, _pidi_build, _pidi_call(), _scribble), priority=100,
                     tags=("Scribble", "SparseCtrl"), weights=_PIDI),
        Preprocessor("pidinet_sketch", "t2ia_sketch_pidi",
                     _aux("pidinet", _PIDI, _pidi_build, _pidi_call(apply_filter=True)), tags=("T2I-Adapter",),
                     weights=_PIDI),
        Preprocessor("depth", "depth_midas",
                     _aux("midas", _MIDAS, _midas_build,
                          lambda det, img, size, a, b: _gray(det(img, a=np.pi * 2.0, detect_resolution=size,
                                                                 image_resolution=size, output_type="np"))),
                     priority=100, tags=("Depth",), weights=_MIDAS),
        Preprocessor("normal_map", "normal_midas",
                     _aux("midas", _MIDAS, _midas_build,
                          lambda det, img, size, a, b: det(img, a=np.pi * 2.0, bg_th=a, depth_and_normal=True,
                                                           detect_resolution=size, image_resolution=size,
                                                           output_type="np")[1]),
                     slider_1=_r("Normal Background Threshold", 0.0, 1.0, 0.4), tags=("NormalMap",), weights=_MIDAS),
        Preprocessor("lineart", "lineart_realistic",
                     _aux("lineart", _LINEART, _lineart_build,
                          _lineart_call(False)),
                     tags=("Lineart",), weights=_LINEART),
        Preprocessor("lineart_coarse", "lineart_coarse",
                     _aux("lineart", _LINEART, _lineart_build,
                          _lineart_call(True)),
                     tags=("Lineart",), weights=_LINEART),
        Preprocessor("lineart_anime", "lineart_anime",
                     _aux("lineart_anime", _LINEART_ANIME, _lineart_anime_build,
                          lambda det, img, size, a, b: _gray(det(img, detect_resolution=size,
                                                                 image_resolution=size, output_type="np"))),
                     tags=("Lineart",), weights=_LINEART_ANIME),
        Preprocessor("mlsd", "mlsd",
                     _aux("mlsd", _MLSD, _mlsd_build,
                          lambda det, img, size, a, b: _gray(det(img, thr_v=a, thr_d=b, detect_resolution=size,
                                                                 image_resolution=size, output_type="np"))),
                     slider_1=_r("MLSD Value Threshold", 0.01, 2.0, 0.1), slider_2=_r("MLSD Distance Threshold",
                                                                                      0.01, 20.0, 0.1),
                     priority=100, tags=("MLSD",), weights=_MLSD),
        Preprocessor("openpose", "openpose", _aux("openpose", _OPENPOSE, _openpose_build,
                                                  _openpose_call(True, False, False)),
                     tags=("OpenPose",), weights=_OPENPOSE),
        Preprocessor("openpose_face", "openpose_face", _aux("openpose", _OPENPOSE, _openpose_build,
                                                            _openpose_call(True, False, True)),
                     tags=("OpenPose",), weights=_OPENPOSE),
        Preprocessor("openpose_faceonly", "openpose_faceonly", _aux("openpose", _OPENPOSE, _openpose_build,
                                                                    _openpose_call(False, False, True)),
                     tags=("OpenPose",), weights=_OPENPOSE),
        Preprocessor("openpose_full", "openpose_full", _aux("openpose", _OPENPOSE, _openpose_build,
                                                            _openpose_call(True, True, True)),
                     priority=100, tags=("OpenPose",), weights=_OPENPOSE),
        Preprocessor("openpose_hand", "openpose_hand", _aux("openpose", _OPENPOSE, _openpose_build,
                                                            _openpose_call(True, True, False)),
                     tags=("OpenPose",), weights=_OPENPOSE),
        Preprocessor("normal_bae", "normal_bae",
                     _aux("normal_bae", _NORMAL_BAE, _normalbae_build,
                          lambda det, img, size, a, b: det(img, detect_resolution=size, image_resolution=size,
                                                           output_type="np")),
                     priority=100, tags=("NormalMap",), weights=_NORMAL_BAE),
        Preprocessor("depth_zoe", "depth_zoe",
                     _aux("zoe", _ZOE, _zoe_build,
                          lambda det, img, size, a, b: _gray(det(img, detect_resolution=size, image_resolution=size,
                                                                 output_type="np"))),
                     tags=("Depth",), weights=_ZOE),
        Preprocessor("depth_leres", "depth_leres",
                     _aux("leres", _LERES, _leres_build,
                          lambda det, img, size, a, b: _gray(det(img, thr_a=a, thr_b=b, boost=False,
                                                                 detect_resolution=size, image_resolution=size,
                                                                 output_type="np"))),
                     slider_1=_r("Remove Near %", 0, 100, 0, 0.1), slider_2=_r("Remove Background %", 0, 100, 0, 0.1),
                     tags=("Depth",), weights=_LERES),
        Preprocessor("depth_leres++", "depth_leres++",
                     _aux("leres", _LERES, _leres_build,
                          lambda det, img, size, a, b: _gray(det(img, thr_a=a, thr_b=b, boost=True,
                                                                 detect_resolution=size, image_resolution=size,
                                                                 output_type="np"))),
                     slider_1=_r("Remove Near %", 0, 100, 0, 0.1), slider_2=_r("Remove Background %", 0, 100, 0, 0.1),
                     tags=("Depth",), weights=_LERES),
    )


#: Every preprocessor, in registration order. A constant: built once from code, never mutated.
PREPROCESSORS: tuple[Preprocessor, ...] = _table()
_BY_LABEL = {p.label: p for p in PREPROCESSORS}
_BY_NAME = {p.name: p for p in PREPROCESSORS}


def get_preprocessor(module: str) -> Preprocessor | None:
    """Preprocessor.get_preprocessor: by UI label first, then by internal name (both are accepted as ``module``)."""
    return _BY_LABEL.get(module, _BY_NAME.get(module))


def sorted_preprocessors() -> list[Preprocessor]:
    """Preprocessor.get_sorted_preprocessors: "none" first, then by zero-padded priority + label, descending."""
    rest = [p for p in PREPROCESSORS if p.label != "none"]
    return [_BY_LABEL["none"]] + sorted(rest, key=lambda p: str(p.priority).zfill(8) + p.label, reverse=True)


def module_list(alias_names: bool = False) -> list[str]:
    """external_code.get_modules: internal names, or UI labels with ``alias_names``."""
    return [p.label if alias_names else p.name for p in sorted_preprocessors()]


def module_detail(alias_names: bool = False) -> dict[str, dict]:
    """external_code.get_modules_detail: ``{module: {"model_free", "sliders": [visible sliders' api_json]}}``."""
    out = {}
    for module in module_list(alias_names):
        p = get_preprocessor(module)
        out[module] = {"model_free": p.model_free, "sliders": [s.api_json() for s in p.sliders()]}
    return out


def module_choices() -> str:
    return ", ".join(module_list(True))


def run_preprocessor(p: Preprocessor, image: np.ndarray, resolution: float, threshold_a: float, threshold_b: float,
                     ctx: AnnotatorContext) -> np.ndarray:
    """The extension's ``preprocessor.cached_call(img, resolution, slider_1, slider_2)`` -> the detected map
    (HWC3'd as the legacy wrapper does)."""
    out = p.run(image, resolution, threshold_a, threshold_b, ctx)
    return HWC3(np.ascontiguousarray(out).astype(np.uint8) if out.dtype != np.uint8 else out)


# ---------------------------------------------------------------------------------------------------------------
# Control map sizing (scripts/controlnet.py Script.detectmap_proc, external_code.pixel_perfect_resolution)

RESIZE, INNER_FIT, OUTER_FIT = 0, 1, 2  # Just Resize, Crop and Resize, Resize and Fill


def pixel_perfect_resolution(image: np.ndarray, target_h: int, target_w: int, resize_mode: int) -> int:
    """external_code.pixel_perfect_resolution: the preprocessor resolution that maps the input's shortest side onto
    the target without resampling twice (min of the two scales for Resize and Fill, max otherwise)."""
    raw_h, raw_w = image.shape[:2]
    k0 = float(target_h) / float(raw_h)
    k1 = float(target_w) / float(raw_w)
    k = min(k0, k1) if resize_mode == OUTER_FIT else max(k0, k1)
    return int(np.round(k * float(min(raw_h, raw_w))))


def _unique_rows(data: np.ndarray) -> np.ndarray:
    """scripts/utils.get_unique_axis0."""
    arr = np.asanyarray(data)
    arr = arr[np.lexsort(arr.T)]
    keep = np.empty(len(arr), dtype=np.bool_)
    keep[:1] = True
    keep[1:] = np.any(arr[:-1, :] != arr[1:, :], axis=-1)
    return arr[keep]


_THIN_RAW = [np.array([[-1, -1, -1], [0, 1, 0], [1, 1, 1]], dtype=np.int32),
             np.array([[0, -1, -1], [1, 1, -1], [0, 1, 0]], dtype=np.int32)]
_PRUNE_RAW = [np.array([[-1, -1, -1], [-1, 1, -1], [0, 0, -1]], dtype=np.int32),
              np.array([[-1, -1, -1], [-1, 1, -1], [-1, 0, 0]], dtype=np.int32)]
_THIN = [np.rot90(x, k=k, axes=(0, 1)) for k in range(4) for x in _THIN_RAW]
_PRUNE = [np.rot90(x, k=k, axes=(0, 1)) for k in range(4) for x in _PRUNE_RAW]


def _thin_once(x, kernels):
    done = True
    for k in kernels:
        objects = np.where(cv2.morphologyEx(x, cv2.MORPH_HITMISS, k) > 127)
        x[objects] = 0
        if objects[0].shape[0] > 0:
            done = False
    return x, done


def lvmin_thin(x: np.ndarray, prunings: bool = True) -> np.ndarray:
    """scripts/lvminthin.lvmin_thin: Lvmin's edge thinning of binary maps after upscaling."""
    y = x
    for _ in range(32):
        y, done = _thin_once(y, _THIN)
        if done:
            break
    if prunings:
        y, _ = _thin_once(y, _PRUNE)
    return y


def nake_nms(x: np.ndarray) -> np.ndarray:
    f1 = np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=np.uint8)
    f2 = np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]], dtype=np.uint8)
    f3 = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.uint8)
    f4 = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=np.uint8)
    y = np.zeros_like(x)
    for f in (f1, f2, f3, f4):
        np.putmask(y, cv2.dilate(x, kernel=f) == x, x)
    return y


def high_quality_resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Lvmin's control-map resize (detectmap_proc.high_quality_resize): nearest for few-colour maps (segmentation),
    area down / cubic up otherwise, and binary edge maps re-binarised (Otsu) and thinned. ``size`` is (w, h)."""
    inpaint_mask = None
    if x.ndim == 3 and x.shape[2] == 4:
        inpaint_mask = x[:, :, 3]
        x = x[:, :, 0:3]
    if x.shape[0] != size[1] or x.shape[1] != size[0]:
        new_size_is_smaller = (size[0] * size[1]) < (x.shape[0] * x.shape[1])
        new_size_is_bigger = (size[0] * size[1]) > (x.shape[0] * x.shape[1])
        unique_color_count = len(_unique_rows(x.reshape(-1, x.shape[2])))
        is_one_pixel_edge = False
        is_binary = False
        if unique_color_count == 2:
            is_binary = np.min(x) < 16 and np.max(x) > 240
            if is_binary:
                xc = cv2.erode(x, np.ones(shape=(3, 3), dtype=np.uint8), iterations=1)
                xc = cv2.dilate(xc, np.ones(shape=(3, 3), dtype=np.uint8), iterations=1)
                one_pixel_edge_count = np.where(xc < x)[0].shape[0]
                all_edge_count = np.where(x > 127)[0].shape[0]
                is_one_pixel_edge = one_pixel_edge_count * 2 > all_edge_count
        if 2 < unique_color_count < 200:
            interpolation = cv2.INTER_NEAREST
        elif new_size_is_smaller:
            interpolation = cv2.INTER_AREA
        else:
            interpolation = cv2.INTER_CUBIC
        y = cv2.resize(x, size, interpolation=interpolation)
        if inpaint_mask is not None:
            inpaint_mask = cv2.resize(inpaint_mask, size, interpolation=interpolation)
        if is_binary:
            y = np.mean(y.astype(np.float32), axis=2).clip(0, 255).astype(np.uint8)
            if is_one_pixel_edge:
                y = nake_nms(y)
                _, y = cv2.threshold(y, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
                y = lvmin_thin(y, prunings=new_size_is_bigger)
            else:
                _, y = cv2.threshold(y, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
            y = np.stack([y] * 3, axis=2)
    else:
        y = x
    if inpaint_mask is not None:
        inpaint_mask = (inpaint_mask > 127).astype(np.float32) * 255.0
        inpaint_mask = inpaint_mask[:, :, None].clip(0, 255).astype(np.uint8)
        y = np.concatenate([y, inpaint_mask], axis=2)
    return y


def detectmap_proc(detected_map: np.ndarray, resize_mode: int, h: int, w: int) -> np.ndarray:
    """Script.detectmap_proc: the detected map fitted to the generation size (h, w) by the unit's resize mode --
    Just Resize stretches; Crop and Resize scales to cover and crops the centre; Resize and Fill scales to fit and
    fills the border with the median edge colour. Returns the uint8 [h, w, C] map (the hint is map / 255)."""
    detected_map = HWC3(detected_map)
    if resize_mode == RESIZE:
        return safer_memory(high_quality_resize(detected_map, (w, h)))
    old_h, old_w, _ = detected_map.shape
    k0 = float(h) / float(old_h)
    k1 = float(w) / float(old_w)

    def safeint(x):
        return int(np.round(x))

    if resize_mode == OUTER_FIT:
        k = min(k0, k1)
        borders = np.concatenate([detected_map[0, :, :], detected_map[-1, :, :], detected_map[:, 0, :],
                                  detected_map[:, -1, :]], axis=0)
        border_color = np.median(borders, axis=0).astype(detected_map.dtype)
        background = np.tile(border_color[None, None], [h, w, 1])
        detected_map = high_quality_resize(detected_map, (safeint(old_w * k), safeint(old_h * k)))
        new_h, new_w, _ = detected_map.shape
        pad_h = max(0, (h - new_h) // 2)
        pad_w = max(0, (w - new_w) // 2)
        background[pad_h:pad_h + new_h, pad_w:pad_w + new_w] = detected_map
        return safer_memory(background)
    k = max(k0, k1)
    detected_map = high_quality_resize(detected_map, (safeint(old_w * k), safeint(old_h * k)))
    new_h, new_w, _ = detected_map.shape
    pad_h = max(0, (new_h - h) // 2)
    pad_w = max(0, (new_w - w) // 2)
    return safer_memory(detected_map[pad_h:pad_h + h, pad_w:pad_w + w])
