"""Extras' "postprocessing for training" (A1111 v1.10 ``scripts/postprocessing_split_oversized.py``,
``postprocessing_focal_crop.py`` with ``modules/textual_inversion/autocrop.py``, ``postprocessing_autosized_crop.py``
and ``postprocessing_create_flipped_copies.py``): pure image functions; ``extras.py`` runs them in A1111's order
after Upscale/GFPGAN/CodeFormer, each on every image the earlier ones produced.

The focal-point crop weighs three points of interest: corners (OpenCV ``goodFeaturesToTrack``), the most
entropic window, and faces. Faces are found only with a detector model file present: A1111's YuNet ONNX file in
``models/opencv`` (A1111 downloads it; nothing is downloaded here), else OpenCV's Haar cascades when the installed
OpenCV ships them. Without either, the face weight is ignored and :func:`face_detector` says why.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageOps

#: A1111 autocrop: the YuNet file name it uses with OpenCV >= 4.8 (and the older one for older OpenCV)
YUNET_FILES = ("face_detection_yunet_2023mar.onnx", "face_detection_yunet_2022mar.onnx")
FLIP_OPTIONS = ("Horizontal", "Vertical", "Both")


# -- split oversized ----------------------------------------------------------------------------------------------


def split_pic(image: Image.Image, inverse_xy: bool, width: int, height: int, overlap_ratio: float) -> list:
    """A1111 ``split_pic``: resize to the target's short side, then overlapping target-sized tiles along the long
    side."""
    if inverse_xy:
        from_w, from_h = image.height, image.width
        to_w, to_h = height, width
    else:
        from_w, from_h = image.width, image.height
        to_w, to_h = width, height
    h = from_h * to_w // from_w
    image = image.resize((h, to_w)) if inverse_xy else image.resize((to_w, h))
    split_count = math.ceil((h - to_h * overlap_ratio) / (to_h * (1.0 - overlap_ratio)))
    # A1111 divides by split_count - 1; one tile (an image barely over the target) is just the first crop
    y_step = (h - to_h) / (split_count - 1) if split_count > 1 else 0
    tiles = []
    for i in range(max(1, split_count)):
        y = int(y_step * i)
        tiles.append(image.crop((y, 0, y + to_h, to_w)) if inverse_xy else image.crop((0, y, to_w, y + to_h)))
    return tiles


def split_oversized(image: Image.Image, width: int, height: int, threshold: float, overlap_ratio: float) -> list | None:
    """A1111 "Split oversized images": the tiles when the image is more elongated than the target by more than
    ``threshold``, else None (the image stays as it is)."""
    if not width or not height:
        return None
    if image.height > image.width:
        ratio = (image.width * height) / (image.height * width)
        inverse_xy = False
    else:
        ratio = (image.height * width) / (image.width * height)
        inverse_xy = True
    if ratio >= 1.0 or ratio > threshold:
        return None
    return split_pic(image, inverse_xy, width, height, overlap_ratio)


# -- auto-sized crop ------------------------------------------------------------------------------------------------


def center_crop(image: Image.Image, w: int, h: int) -> Image.Image:
    iw, ih = image.size
    if ih / h < iw / w:
        sw = w * ih / h
        box = (iw - sw) / 2, 0, iw - (iw - sw) / 2, ih
    else:
        sh = h * iw / w
        box = 0, (ih - sh) / 2, iw, ih - (ih - sh) / 2
    return image.resize((w, h), Image.Resampling.LANCZOS, box)


def multicrop_pic(image: Image.Image, mindim: int, maxdim: int, minarea: int, maxarea: int, objective: str,
                  threshold: float) -> Image.Image | None:
    """A1111 "Auto-sized crop": the size (multiples of 64 from ``mindim`` to ``maxdim``, area within bounds, aspect
    error within ``threshold``) with the largest area ("Maximize area") or the smallest error, centre-cropped to it;
    None when no size qualifies."""
    iw, ih = image.size

    def err(w, h):
        x = iw / ih / (w / h)
        return 1 - (x if x < 1 else 1 / x)

    sizes = [(w, h) for w in range(int(mindim), int(maxdim) + 1, 64) for h in range(int(mindim), int(maxdim) + 1, 64)
             if minarea <= w * h <= maxarea and err(w, h) <= threshold]
    if not sizes:
        return None
    wh = max(sizes, key=lambda wh: (wh[0] * wh[1], -err(*wh))[::1 if objective == "Maximize area" else -1])
    return center_crop(image, *wh)


# -- flipped copies -------------------------------------------------------------------------------------------------


def flipped_copies(image: Image.Image, options) -> list[Image.Image]:
    out = []
    if "Horizontal" in options:
        out.append(ImageOps.mirror(image))
    if "Vertical" in options:
        out.append(image.transpose(Image.Transpose.FLIP_TOP_BOTTOM))
    if "Both" in options:
        out.append(image.transpose(Image.Transpose.FLIP_TOP_BOTTOM).transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    return out


# -- auto focal point crop (A1111 autocrop.py) ------------------------------------------------------------------------


@dataclass
class PointOfInterest:
    x: float
    y: float
    weight: float = 1.0
    size: float = 10


@dataclass
class FaceDetector:
    kind: str | None  # "yunet", "haar" or None
    path: str | None
    note: str | None = None  # why faces are not looked for


def face_detector(models_dir: str) -> FaceDetector:
    """Which face detector the face weight can use: A1111's YuNet file in ``models/opencv``, else OpenCV's own Haar
    cascades when installed, else none (with a note naming the file and the folder)."""
    folder = os.path.join(models_dir, "opencv")
    for name in YUNET_FILES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return FaceDetector("yunet", path)
    try:
        import cv2

        cascade = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        if os.path.isfile(cascade):
            return FaceDetector("haar", cascade)
    except (ImportError, AttributeError):
        pass
    return FaceDetector(None, None, f"Auto focal point crop: face weight ignored: no face detector model file (put "
                                    f"{YUNET_FILES[0]} into {folder})")


def _corner_points(im: Image.Image) -> list[PointOfInterest]:
    import cv2

    grayscale = im.convert("L")
    ImageDraw.Draw(grayscale).rectangle([0, im.height * .9, im.width, im.height], fill="#999")  # watermarks
    points = cv2.goodFeaturesToTrack(np.array(grayscale), maxCorners=100, qualityLevel=0.04,
                                     minDistance=min(grayscale.width, grayscale.height) * 0.06,
                                     useHarrisDetector=False)
    if points is None:
        return []
    return [PointOfInterest(*p.ravel(), size=4, weight=1 / len(points)) for p in points]


def _image_entropy(im: Image.Image) -> float:
    band = np.asarray(im.convert("1"), dtype=np.uint8)
    hist, _ = np.histogram(band, bins=range(256))
    hist = hist[hist > 0]
    return float(-np.log2(hist / hist.sum()).sum())


def _entropy_points(im: Image.Image, crop_width: int, crop_height: int) -> list[PointOfInterest]:
    if im.height < im.width:
        move_idx, move_max = [0, 2], im.size[0]
    elif im.height > im.width:
        move_idx, move_max = [1, 3], im.size[1]
    else:
        return []
    e_max = 0.0
    crop_current = [0, 0, crop_width, crop_height]
    crop_best = crop_current
    while crop_current[move_idx[1]] < move_max:
        e = _image_entropy(im.crop(tuple(crop_current)))
        if e > e_max:
            e_max, crop_best = e, list(crop_current)
        crop_current[move_idx[0]] += 4
        crop_current[move_idx[1]] += 4
    return [PointOfInterest(int(crop_best[0] + crop_width / 2), int(crop_best[1] + crop_height / 2), size=25)]


def _face_points(im: Image.Image, detector: FaceDetector) -> list[PointOfInterest]:
    import cv2

    if detector.kind == "yunet":
        det = cv2.FaceDetectorYN.create(detector.path, "", (im.width, im.height), 0.9, 0.3, 5000)
        faces = det.detect(np.array(im))[1]
        if faces is None:
            return []
        return [PointOfInterest(int(f[0] + f[2] * 0.5), int(f[1] + f[3] * 0.33), size=f[2], weight=1 / len(faces))
                for f in faces]
    if detector.kind == "haar":
        gray = cv2.cvtColor(np.array(im), cv2.COLOR_BGR2GRAY)
        minsize = int(min(im.width, im.height) * 0.05)
        faces = cv2.CascadeClassifier(detector.path).detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=7, minSize=(minsize, minsize), flags=cv2.CASCADE_SCALE_IMAGE)
        return [PointOfInterest(f[0] + f[2] // 2, f[1] + f[3] // 2, size=f[2], weight=1 / len(faces)) for f in faces]
    return []


def _centroid(pois: list[PointOfInterest]) -> PointOfInterest:
    return PointOfInterest(sum(p.x for p in pois) / len(pois), sum(p.y for p in pois) / len(pois))


def focal_point(im: Image.Image, crop_width: int, crop_height: int, face_weight: float, entropy_weight: float,
                edges_weight: float, detector: FaceDetector) -> PointOfInterest:
    """A1111 ``focal_point``: the weighted average of the corner, entropy and face centroids (weights renormalised
    over the kinds that found anything)."""
    groups = [
        (_corner_points(im) if edges_weight > 0 else [], edges_weight),
        (_entropy_points(im, crop_width, crop_height) if entropy_weight > 0 else [], entropy_weight),
        (_face_points(im, detector) if face_weight > 0 else [], face_weight),
    ]
    total = sum(w for pts, w in groups if pts)
    pois = []
    for pts, w in groups:
        if pts:
            c = _centroid(pts)
            c.weight = w / total
            pois.append(c)
    weight = sum(p.weight for p in pois)
    x = sum(p.x * p.weight for p in pois)
    y = sum(p.y * p.weight for p in pois)
    return PointOfInterest(round(weight and x / weight), round(weight and y / weight))


def focal_crop(im: Image.Image, crop_width: int, crop_height: int, *, face_weight: float = 0.9,
               entropy_weight: float = 0.15, edges_weight: float = 0.5, detector: FaceDetector | None = None,
               debug: bool = False) -> list[Image.Image]:
    """A1111 ``autocrop.crop_image``: scale so the target fits the short side, crop around the focal point (kept in
    the frame); with ``debug`` also the scaled image with the crop drawn on it."""
    detector = detector or FaceDetector(None, None)
    scale_by = 1.0
    if im.width > im.height:
        scale_by = crop_height / im.height
    elif im.height > im.width or crop_width >= crop_height:
        scale_by = crop_width / im.width
    else:
        scale_by = crop_height / im.height
    im = im.resize((int(im.width * scale_by), int(im.height * scale_by)))
    focus = focal_point(im, crop_width, crop_height, face_weight, entropy_weight, edges_weight, detector)
    x1 = min(max(0, focus.x - crop_width // 2), im.width - crop_width)
    y1 = min(max(0, focus.y - crop_height // 2), im.height - crop_height)
    x1, y1 = max(0, x1), max(0, y1)
    crop = (x1, y1, x1 + crop_width, y1 + crop_height)
    results = [im.crop(crop)]
    if debug:
        im_debug = im.copy()
        ImageDraw.Draw(im_debug).rectangle([crop[0], crop[1], crop[2] - 1, crop[3] - 1], outline="#0F0")
        results.append(im_debug)
    return results
