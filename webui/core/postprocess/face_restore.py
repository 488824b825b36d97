"""Face restoration as A1111 v1.10.1 does it: GFPGAN and CodeFormer, on faces found by RetinaFace and blended back
through a ParseNet face mask.

Reproduces ``modules/face_restoration_utils.py`` (``restore_with_face_helper``, ``CommonFaceRestoration``),
``modules/gfpgan_model.py`` and ``modules/codeformer_model.py``, and the parts of facexlib's ``FaceRestoreHelper`` that
they use (``retinaface_resnet50`` detection with threshold 0.97 on the image resized to 640 px on its short side,
eye-distance filter 5 px, similarity transform onto the 512 px FFHQ five-point template, paste-back through the
``parsenet`` mask blurred twice with a 101 px Gaussian). facexlib itself is not used: its package imports tracking
and numba code we do not need, and it downloads weights when they are missing. Here the weights are read from the
model folders only (A1111's layout: ``detection_Resnet50_Final.pth`` and ``parsing_parsenet.pth`` in models/GFPGAN,
where A1111 has facexlib put them; models/Codeformer is searched too), and a missing file is a clear error naming
the folder and the file, never a download.

The restoration networks are loaded through spandrel (GFPGAN) and spandrel_extra_arches (CodeFormer).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

#: A1111's face restorers in the order /sdapi/v1/face-restorers lists them (shared.face_restorers).
FACE_RESTORERS = ("CodeFormer", "GFPGAN")

DETECTION_WEIGHTS = "detection_Resnet50_Final.pth"
PARSING_WEIGHTS = "parsing_parsenet.pth"

#: Where A1111 would download the models from (named in errors, never fetched).
GFPGAN_URL = "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth"
CODEFORMER_URL = "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth"
DETECTION_URL = "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth"
PARSING_URL = "https://github.com/xinntao/facexlib/releases/download/v0.2.2/parsing_parsenet.pth"

# facexlib FaceRestoreHelper: the five FFHQ landmarks of a 512x512 face (eyes, nose, mouth corners).
FACE_TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                              [201.26117, 371.41043], [313.08905, 371.15118]])
FACE_SIZE = 512
# facexlib parsenet labels kept as "face" in the paste-back mask (background, neck, cloth, hair, hat are not).
MASK_COLORMAP = (0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 0, 255, 0, 0, 0)
DETECTION_THRESHOLD = 0.97  # FaceRestoreHelper.get_face_landmarks_5
NMS_THRESHOLD = 0.4
DETECTION_RESIZE = 640  # A1111 restore_with_face_helper: resize=640
EYE_DIST_THRESHOLD = 5  # A1111 restore_with_face_helper: eye_dist_threshold=5
BORDER_GREY = (135, 133, 132)


class FaceRestoreUnavailable(RuntimeError):
    """A face restorer cannot run because a file is missing or unreadable; the message names the folder and the
    files expected. (A1111 downloads them; we never do.)"""


class UnknownFaceRestorer(LookupError):
    def __init__(self, name: str):
        super().__init__(f"unknown face restoration model {name!r}; valid: {', '.join(FACE_RESTORERS)}")
        self.name = name

    def __str__(self) -> str:
        return self.args[0]


# ---------------------------------------------------------------------------------------------------------------------
# networks (state-dict compatible with facexlib's weights)


def _build_retinaface():
    """facexlib RetinaFace('resnet50'): torchvision ResNet-50 up to layer4, FPN, three SSH blocks, and class / box /
    landmark heads with two anchors per location. Module names match detection_Resnet50_Final.pth."""
    import torch
    import torch.nn.functional as F
    import torchvision
    from torch import nn
    from torchvision.models._utils import IntermediateLayerGetter

    def conv_bn(inp, oup, stride=1, leaky=0.0):
        return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup),
                             nn.LeakyReLU(negative_slope=leaky, inplace=True))

    def conv_bn_no_relu(inp, oup, stride=1):
        return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup))

    def conv_bn1x1(inp, oup, stride=1, leaky=0.0):
        return nn.Sequential(nn.Conv2d(inp, oup, 1, stride, padding=0, bias=False), nn.BatchNorm2d(oup),
                             nn.LeakyReLU(negative_slope=leaky, inplace=True))

    class SSH(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            leaky = 0.1 if cout <= 64 else 0.0
            self.conv3X3 = conv_bn_no_relu(cin, cout // 2)
            self.conv5X5_1 = conv_bn(cin, cout // 4, leaky=leaky)
            self.conv5X5_2 = conv_bn_no_relu(cout // 4, cout // 4)
            self.conv7X7_2 = conv_bn(cout // 4, cout // 4, leaky=leaky)
            self.conv7x7_3 = conv_bn_no_relu(cout // 4, cout // 4)

        def forward(self, x):
            c3 = self.conv3X3(x)
            c5_1 = self.conv5X5_1(x)
            c5 = self.conv5X5_2(c5_1)
            c7 = self.conv7x7_3(self.conv7X7_2(c5_1))
            return F.relu(torch.cat([c3, c5, c7], dim=1))

    class FPN(nn.Module):
        def __init__(self, cins, cout):
            super().__init__()
            leaky = 0.1 if cout <= 64 else 0.0
            self.output1 = conv_bn1x1(cins[0], cout, leaky=leaky)
            self.output2 = conv_bn1x1(cins[1], cout, leaky=leaky)
            self.output3 = conv_bn1x1(cins[2], cout, leaky=leaky)
            self.merge1 = conv_bn(cout, cout, leaky=leaky)
            self.merge2 = conv_bn(cout, cout, leaky=leaky)

        def forward(self, xs):
            o1, o2, o3 = self.output1(xs[0]), self.output2(xs[1]), self.output3(xs[2])
            o2 = self.merge2(o2 + F.interpolate(o3, size=[o2.size(2), o2.size(3)], mode="nearest"))
            o1 = self.merge1(o1 + F.interpolate(o2, size=[o1.size(2), o1.size(3)], mode="nearest"))
            return [o1, o2, o3]

    class Head(nn.Module):
        def __init__(self, cin, anchors, width):
            super().__init__()
            self.width = width
            self.conv1x1 = nn.Conv2d(cin, anchors * width, kernel_size=(1, 1), stride=1, padding=0)

        def forward(self, x):
            out = self.conv1x1(x).permute(0, 2, 3, 1).contiguous()
            return out.view(out.shape[0], -1, self.width)

    class RetinaFace(nn.Module):
        def __init__(self):
            super().__init__()
            backbone = torchvision.models.resnet50(weights=None)
            self.body = IntermediateLayerGetter(backbone, {"layer2": 1, "layer3": 2, "layer4": 3})
            self.fpn = FPN([512, 1024, 2048], 256)
            self.ssh1, self.ssh2, self.ssh3 = SSH(256, 256), SSH(256, 256), SSH(256, 256)
            self.ClassHead = nn.ModuleList([Head(256, 2, 2) for _ in range(3)])
            self.BboxHead = nn.ModuleList([Head(256, 2, 4) for _ in range(3)])
            self.LandmarkHead = nn.ModuleList([Head(256, 2, 10) for _ in range(3)])

        def forward(self, x):
            fpn = self.fpn(list(self.body(x).values()))
            feats = [self.ssh1(fpn[0]), self.ssh2(fpn[1]), self.ssh3(fpn[2])]
            loc = torch.cat([self.BboxHead[i](f) for i, f in enumerate(feats)], dim=1)
            conf = torch.cat([self.ClassHead[i](f) for i, f in enumerate(feats)], dim=1)
            landms = torch.cat([self.LandmarkHead[i](f) for i, f in enumerate(feats)], dim=1)
            return loc, F.softmax(conf, dim=-1), landms

    return RetinaFace()


def _build_parsenet():
    """facexlib ParseNet(in_size=512, out_size=512, parsing_ch=19) (from PSFRGAN): module names match
    parsing_parsenet.pth."""
    import torch.nn.functional as F
    from torch import nn

    class NormLayer(nn.Module):
        def __init__(self, channels, norm_type="bn"):
            super().__init__()
            self.norm_type = norm_type
            if norm_type == "bn":
                self.norm = nn.BatchNorm2d(channels, affine=True)

        def forward(self, x):
            return self.norm(x) if self.norm_type == "bn" else x

    class ConvLayer(nn.Module):
        def __init__(self, cin, cout, kernel_size=3, scale="none", norm_type="none", relu_type="none", bias=True):
            super().__init__()
            if norm_type == "bn":
                bias = False
            self.scale = scale
            self.relu_type = relu_type
            self.reflection_pad = nn.ReflectionPad2d(int(np.ceil((kernel_size - 1.0) / 2)))
            self.conv2d = nn.Conv2d(cin, cout, kernel_size, 2 if scale == "down" else 1, bias=bias)
            self.norm = NormLayer(cout, norm_type)

        def forward(self, x):
            if self.scale == "up":
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            out = self.norm(self.conv2d(self.reflection_pad(x)))
            return F.leaky_relu(out, 0.2) if self.relu_type == "leakyrelu" else out

    class ResidualBlock(nn.Module):
        def __init__(self, cin, cout, scale="none"):
            super().__init__()
            # facexlib: an identity lambda, or a conv when the shape changes (its weights are "shortcut_func.*").
            self.shortcut_func = None if (scale == "none" and cin == cout) else ConvLayer(cin, cout, 3, scale)
            first, second = {"down": ("none", "down"), "up": ("up", "none"), "none": ("none", "none")}[scale]
            self.conv1 = ConvLayer(cin, cout, 3, first, norm_type="bn", relu_type="leakyrelu")
            self.conv2 = ConvLayer(cout, cout, 3, second, norm_type="bn")

        def forward(self, x):
            identity = x if self.shortcut_func is None else self.shortcut_func(x)
            return identity + self.conv2(self.conv1(x))

    class ParseNet(nn.Module):
        def __init__(self, in_size=512, out_size=512, min_feat_size=32, base_ch=64, parsing_ch=19, res_depth=10):
            super().__init__()
            clip = lambda c: max(32, min(c, 256))
            min_feat_size = min(in_size, min_feat_size)
            down_steps = int(np.log2(in_size // min_feat_size))
            up_steps = int(np.log2(out_size // min_feat_size))
            encoder = [ConvLayer(3, base_ch, 3)]
            head = base_ch
            for _ in range(down_steps):
                encoder.append(ResidualBlock(clip(head), clip(head * 2), scale="down"))
                head *= 2
            body = [ResidualBlock(clip(head), clip(head)) for _ in range(res_depth)]
            decoder = []
            for _ in range(up_steps):
                decoder.append(ResidualBlock(clip(head), clip(head // 2), scale="up"))
                head //= 2
            self.encoder = nn.Sequential(*encoder)
            self.body = nn.Sequential(*body)
            self.decoder = nn.Sequential(*decoder)
            self.out_img_conv = ConvLayer(clip(head), 3)
            self.out_mask_conv = ConvLayer(clip(head), parsing_ch)

        def forward(self, x):
            feat = self.encoder(x)
            x = self.decoder(feat + self.body(feat))
            return self.out_mask_conv(x), self.out_img_conv(x)

    return ParseNet()


def _load_weights(module, path: str):
    """Weights only (torch's safe unpickler); facexlib's files may carry a ``module.`` prefix (DataParallel)."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    module.load_state_dict(state, strict=True)
    return module.eval()


# ---------------------------------------------------------------------------------------------------------------------
# detection maths (facexlib retinaface / retinaface_utils)

RETINAFACE_MIN_SIZES = ((16, 32), (64, 128), (256, 512))
RETINAFACE_STEPS = (8, 16, 32)
RETINAFACE_VARIANCE = (0.1, 0.2)
RETINAFACE_MEAN_BGR = (104.0, 117.0, 123.0)


def prior_boxes(height: int, width: int) -> np.ndarray:
    """facexlib PriorBox: (cx, cy, w, h) anchors, relative to the image, two sizes per cell of each of the three
    feature maps (strides 8, 16, 32), rows then columns."""
    anchors = []
    for k, step in enumerate(RETINAFACE_STEPS):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        for i, j in product(range(fh), range(fw)):
            for min_size in RETINAFACE_MIN_SIZES[k]:
                anchors += [(j + 0.5) * step / width, (i + 0.5) * step / height, min_size / width, min_size / height]
    return np.asarray(anchors, dtype=np.float32).reshape(-1, 4)


def decode_boxes(loc: np.ndarray, priors: np.ndarray, variances=RETINAFACE_VARIANCE) -> np.ndarray:
    """facexlib decode: offsets -> (x1, y1, x2, y2), relative to the image."""
    centers = priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:]
    sizes = priors[:, 2:] * np.exp(loc[:, 2:] * variances[1])
    return np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)


def decode_landmarks(pre: np.ndarray, priors: np.ndarray, variances=RETINAFACE_VARIANCE) -> np.ndarray:
    """facexlib decode_landm: five (x, y) points per anchor, relative to the image."""
    return np.concatenate([priors[:, :2] + pre[:, 2 * i: 2 * i + 2] * variances[0] * priors[:, 2:]
                           for i in range(5)], axis=1)


def nms(dets: np.ndarray, threshold: float) -> list[int]:
    """facexlib py_cpu_nms (torchvision.ops.nms on x1, y1, x2, y2, score)."""
    import torch
    import torchvision

    if len(dets) == 0:
        return []
    keep = torchvision.ops.nms(torch.from_numpy(np.ascontiguousarray(dets[:, :4], dtype=np.float32)),
                               torch.from_numpy(np.ascontiguousarray(dets[:, 4], dtype=np.float32)), threshold)
    return keep.tolist()


def retinaface_detect(net, image_bgr: np.ndarray, conf_threshold: float = DETECTION_THRESHOLD,
                      nms_threshold: float = NMS_THRESHOLD) -> np.ndarray:
    """facexlib RetinaFace.detect_faces (use_origin_size): rows of x1, y1, x2, y2, score, then five landmarks."""
    import torch

    device = next(net.parameters()).device
    h, w = image_bgr.shape[:2]
    x = torch.from_numpy(image_bgr.astype(np.float32).transpose(2, 0, 1)).unsqueeze(0).to(device)
    x = x - torch.tensor(RETINAFACE_MEAN_BGR, device=device).view(1, 3, 1, 1)
    with torch.no_grad():
        loc, conf, landms = net(x)
    priors = prior_boxes(h, w)
    boxes = decode_boxes(loc[0].float().cpu().numpy(), priors) * np.array([w, h, w, h], dtype=np.float32)
    landmarks = decode_landmarks(landms[0].float().cpu().numpy(), priors) * np.array([w, h] * 5, dtype=np.float32)
    scores = conf[0].float().cpu().numpy()[:, 1]
    inds = np.where(scores > conf_threshold)[0]
    boxes, landmarks, scores = boxes[inds], landmarks[inds], scores[inds]
    order = scores.argsort()[::-1]
    boxes, landmarks, scores = boxes[order], landmarks[order], scores[order]
    dets = np.hstack((boxes, scores[:, None])).astype(np.float32, copy=False)
    keep = nms(dets, nms_threshold)
    return np.concatenate((dets[keep, :], landmarks[keep]), axis=1) if keep else np.zeros((0, 15), np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# the face helper (facexlib FaceRestoreHelper as A1111 uses it: upscale 1, 512 px faces, parse mask)


Detector = Callable[[np.ndarray], np.ndarray]  # BGR uint8 image -> (N, 15) detections
Parser = Callable[[Any], Any]  # normalized 1x3x512x512 RGB tensor -> 1x19x512x512 label logits
RestoreFace = Callable[[Any], Any]  # normalized 1x3x512x512 RGB tensor in [-1, 1] -> same


def find_faces(image_bgr: np.ndarray, detect: Detector) -> list[np.ndarray]:
    """FaceRestoreHelper.get_face_landmarks_5(only_center_face=False, resize=640, eye_dist_threshold=5): detect on
    the image resized (Lanczos) to 640 px on its short side; faces whose eyes are closer than 5 px are dropped.
    Returns each face's five landmarks (5x2) in image coordinates."""
    import cv2

    h, w = image_bgr.shape[:2]
    scale = min(h, w) / DETECTION_RESIZE
    small = cv2.resize(image_bgr, (int(w / scale), int(h / scale)), interpolation=cv2.INTER_LANCZOS4)
    faces = []
    for bbox in detect(small) * scale:
        eye_dist = np.linalg.norm([bbox[5] - bbox[7], bbox[6] - bbox[8]])
        if eye_dist < EYE_DIST_THRESHOLD:
            continue
        faces.append(np.array([[bbox[i], bbox[i + 1]] for i in range(5, 15, 2)]))
    return faces


def align_face(image_bgr: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FaceRestoreHelper.align_warp_face: the similarity transform (cv2 LMEDS) taking the landmarks onto the FFHQ
    template, and the 512x512 face it cuts out (grey border). Returns (face, affine)."""
    import cv2

    affine = cv2.estimateAffinePartial2D(landmarks, FACE_TEMPLATE_512, method=cv2.LMEDS)[0]
    face = cv2.warpAffine(image_bgr, affine, (FACE_SIZE, FACE_SIZE), borderMode=cv2.BORDER_CONSTANT,
                          borderValue=BORDER_GREY)
    return face, affine


def face_mask(restored_face_bgr: np.ndarray, parse: Parser, device: Any = None) -> np.ndarray:
    """The paste-back mask of FaceRestoreHelper.paste_faces_to_input_image (use_parse): ParseNet labels -> face or
    not (MASK_COLORMAP), Gaussian blur 101 px / sigma 11 twice, 10 px border cleared, in [0, 1], 512x512."""
    import cv2
    import torch

    face_input = cv2.resize(restored_face_bgr, (512, 512), interpolation=cv2.INTER_LINEAR)
    t = torch.from_numpy(face_input[:, :, ::-1].astype(np.float32).transpose(2, 0, 1).copy() / 255.0)
    t = ((t - 0.5) / 0.5).unsqueeze(0)
    if device is not None:
        t = t.to(device)
    with torch.no_grad():
        out = parse(t)
    labels = out.argmax(dim=1).squeeze().cpu().numpy()
    mask = np.zeros(labels.shape)
    for idx, color in enumerate(MASK_COLORMAP):
        mask[labels == idx] = color
    mask = cv2.GaussianBlur(mask, (101, 101), 11)
    mask = cv2.GaussianBlur(mask, (101, 101), 11)
    thres = 10
    mask[:thres, :] = 0
    mask[-thres:, :] = 0
    mask[:, :thres] = 0
    mask[:, -thres:] = 0
    return mask / 255.0


def paste_face(background_bgr: np.ndarray, restored_face_bgr: np.ndarray, affine: np.ndarray,
               mask: np.ndarray) -> np.ndarray:
    """FaceRestoreHelper.paste_faces_to_input_image for one face (upscale factor 1): the restored face and its mask
    warped back with the inverse transform and blended over the background. Float result."""
    import cv2

    h, w = background_bgr.shape[:2]
    inverse = cv2.invertAffineTransform(affine)
    inv_restored = cv2.warpAffine(restored_face_bgr, inverse, (w, h))
    mask = cv2.resize(mask, restored_face_bgr.shape[:2])
    mask = cv2.warpAffine(mask, inverse, (w, h), flags=3)
    soft = mask[:, :, None]
    return soft * inv_restored + (1 - soft) * background_bgr


def restore_with_face_helper(np_image: np.ndarray, restore_face: RestoreFace, *, detect: Detector, parse: Parser,
                             device: Any = None) -> np.ndarray:
    """A1111 face_restoration_utils.restore_with_face_helper: RGB uint8 in, RGB uint8 out, same size.

    Each face found is aligned to 512x512, turned into a [-1, 1] RGB tensor, restored, turned back (truncated to
    uint8 as A1111 does) and pasted back through its parse mask. A face whose inference fails is pasted back as it
    was (A1111 reports and goes on).
    """
    import cv2
    import torch

    image_bgr = np.ascontiguousarray(np_image[:, :, :3][:, :, ::-1])
    result = image_bgr.astype(np.float64)
    faces = find_faces(image_bgr, detect)
    log.debug("Found %d faces, restoring", len(faces))
    pasted = []
    for landmarks in faces:
        cropped, affine = align_face(image_bgr, landmarks)
        t = torch.from_numpy(cropped[:, :, ::-1].astype(np.float32).transpose(2, 0, 1).copy() / 255.0)
        t = ((t - 0.5) / 0.5).unsqueeze(0)
        if device is not None:
            t = t.to(device)
        try:
            with torch.no_grad():
                t = restore_face(t)
        except Exception:
            log.exception("Failed face-restoration inference")
        out = t.squeeze(0).float().detach().cpu().clamp_(-1, 1)
        out = ((out + 1) / 2).numpy().transpose(1, 2, 0)[:, :, ::-1]  # RGB -> BGR
        restored = (out * 255.0).astype("uint8")
        pasted.append((restored, affine))
    for restored, affine in pasted:
        result = paste_face(result, restored, affine, face_mask(restored, parse, device))
    img = result.astype(np.uint8)[:, :, ::-1]
    if img.shape[:2] != np_image.shape[:2]:
        img = cv2.resize(img, (np_image.shape[1], np_image.shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(img)


# ---------------------------------------------------------------------------------------------------------------------
# the restorers


@dataclass(frozen=True)
class FaceRestoreFolders:
    """models/GFPGAN and models/Codeformer (or --gfpgan-models-path / --codeformer-models-path)."""

    gfpgan: str
    codeformer: str

    @classmethod
    def under(cls, models_dir: str, gfpgan: str | None = None, codeformer: str | None = None) -> FaceRestoreFolders:
        return cls(gfpgan or os.path.join(models_dir, "GFPGAN"), codeformer or os.path.join(models_dir, "Codeformer"))

    @classmethod
    def from_config(cls, config: Any) -> FaceRestoreFolders:
        extra = getattr(config, "extra", lambda name, default=None: default)
        return cls.under(config.models_dir, extra("gfpgan_models_path"), extra("codeformer_models_path"))


def _pth_files(folder: str) -> list[str]:
    from webui.core.postprocess.upscalers import model_files

    return model_files(folder, (".pth",))


class FaceRestorers:
    """GFPGAN and CodeFormer, with the detector and parser they share, loaded on first use and kept.

    Only the queue's worker thread calls :meth:`restore`. ``device`` is where the networks run (A1111's
    device_gfpgan / device_codeformer).
    """

    def __init__(self, folders: FaceRestoreFolders, *, device: Any = None):
        self.folders = folders
        self.device = device
        self._nets: dict[str, Any] = {}
        self._lock = threading.RLock()

    @classmethod
    def from_config(cls, config: Any, plan: Any = None) -> FaceRestorers:
        """For a webui Config: its folders, the plan's device, or the CPU with ``--use-cpu gfpgan``/``codeformer``/
        ``all`` (A1111's device_gfpgan and device_codeformer; one device serves both here)."""
        import torch

        device = getattr(plan, "device", None)
        if device is None or config.uses_cpu_for("gfpgan") or config.uses_cpu_for("codeformer"):
            device = torch.device("cpu")
        return cls(FaceRestoreFolders.from_config(config), device=device)

    # -- listing -----------------------------------------------------------------------------------------------------

    @staticmethod
    def names() -> list[str]:
        return list(FACE_RESTORERS)

    @staticmethod
    def api_list() -> list[dict[str, Any]]:
        """GET /sdapi/v1/face-restorers: both, always (``cmd_dir`` is null in A1111 v1.10.1)."""
        return [{"name": name, "cmd_dir": None} for name in FACE_RESTORERS]

    # -- files -------------------------------------------------------------------------------------------------------

    def model_file(self, name: str) -> str:
        """The model file A1111 would use: GFPGAN, the first .pth in models/GFPGAN whose name contains "GFPGAN";
        CodeFormer, the first .pth in models/Codeformer. Raises FaceRestoreUnavailable naming what to put where."""
        if name == "GFPGAN":
            files = [p for p in _pth_files(self.folders.gfpgan) if "GFPGAN" in os.path.basename(p)]
            if not files:
                raise FaceRestoreUnavailable(
                    f"GFPGAN: no model file in {self.folders.gfpgan}; expected a .pth whose name contains 'GFPGAN' "
                    f"(GFPGANv1.4.pth from {GFPGAN_URL}), plus {DETECTION_WEIGHTS} and {PARSING_WEIGHTS}. "
                    "Nothing is downloaded by this server.")
            return files[0]
        if name == "CodeFormer":
            files = _pth_files(self.folders.codeformer)
            files = [p for p in files if os.path.basename(p) not in (DETECTION_WEIGHTS, PARSING_WEIGHTS)]
            if not files:
                raise FaceRestoreUnavailable(
                    f"CodeFormer: no model file in {self.folders.codeformer}; expected a .pth (codeformer-v0.1.0.pth "
                    f"from {CODEFORMER_URL}), plus {DETECTION_WEIGHTS} and {PARSING_WEIGHTS} in "
                    f"{self.folders.gfpgan}. Nothing is downloaded by this server.")
            return files[0]
        raise UnknownFaceRestorer(name)

    def helper_file(self, filename: str, url: str) -> str:
        """detection_Resnet50_Final.pth / parsing_parsenet.pth: models/GFPGAN (where A1111 has facexlib save them),
        else models/Codeformer."""
        for folder in (self.folders.gfpgan, self.folders.codeformer):
            for path in _pth_files(folder):
                if os.path.basename(path) == filename:
                    return path
        raise FaceRestoreUnavailable(
            f"face detection needs {filename} (from {url}) in {self.folders.gfpgan} or {self.folders.codeformer}; "
            "it is not there. Nothing is downloaded by this server.")

    def check(self, name: str) -> None:
        """Raise FaceRestoreUnavailable (naming folder and files) unless every file ``name`` needs is present."""
        self.model_file(name)
        self.helper_file(DETECTION_WEIGHTS, DETECTION_URL)
        self.helper_file(PARSING_WEIGHTS, PARSING_URL)

    # -- networks ----------------------------------------------------------------------------------------------------

    def _device(self):
        import torch

        return torch.device(self.device) if self.device is not None else torch.device("cpu")

    def _get(self, key: str, build: Callable[[], Any]):
        with self._lock:
            net = self._nets.get(key)
        if net is None:
            net = build()
            with self._lock:
                self._nets[key] = net
        return net.to(self._device())

    def detector(self):
        path = self.helper_file(DETECTION_WEIGHTS, DETECTION_URL)
        return self._get("detection", lambda: self._read(_build_retinaface(), path))

    def parser(self):
        path = self.helper_file(PARSING_WEIGHTS, PARSING_URL)
        return self._get("parsing", lambda: self._read(_build_parsenet(), path))

    @staticmethod
    def _read(module, path: str):
        try:
            return _load_weights(module, path)
        except Exception as e:
            raise FaceRestoreUnavailable(
                f"{path}: not readable as {os.path.basename(path)} ({type(e).__name__}: {e})") from e

    def network(self, name: str):
        """The restoration network (the torch module inside spandrel's descriptor), as A1111's load_net."""
        from webui.core.postprocess.upscalers import UpscalerLoadError, load_spandrel_model

        path = self.model_file(name)
        expected = {"GFPGAN": "GFPGAN", "CodeFormer": "CodeFormer"}[name]

        def build():
            try:
                descriptor = load_spandrel_model(path, device="cpu", expected_architecture=expected)
            except UpscalerLoadError as e:
                hint = " (CodeFormer needs the spandrel_extra_arches package)" if name == "CodeFormer" else ""
                raise FaceRestoreUnavailable(f"{name}: {e}{hint}") from e
            if descriptor.architecture.name != expected:
                raise FaceRestoreUnavailable(
                    f"{name}: {path} is a {descriptor.architecture.name} model, not {expected}")
            model = descriptor.model
            if name == "GFPGAN":
                model.different_w = True  # A1111 gfpgan_model.load_net (spandrel PR 81)
            return model.eval()

        return self._get(f"{name}:{path}", build)

    def unload(self) -> None:
        with self._lock:
            self._nets.clear()

    def offload(self) -> None:
        """Option face_restoration_unload: move the networks to the CPU after use."""
        with self._lock:
            for net in self._nets.values():
                net.to("cpu")

    # -- restoring ---------------------------------------------------------------------------------------------------

    def restore(self, image: Image.Image, name: str, *, weight: float | None = None,
                settings: Any = None) -> Image.Image:
        """Restore the faces of ``image`` with GFPGAN or CodeFormer; RGB result of the same size.

        ``weight`` is CodeFormer's fidelity weight w (0 = strongest effect; A1111 defaults it to option
        code_former_weight). Raises FaceRestoreUnavailable when a file is missing, UnknownFaceRestorer for another
        name.
        """
        if name not in FACE_RESTORERS:
            raise UnknownFaceRestorer(name)
        self.check(name)
        net = self.network(name)
        detector = self.detector()
        parser = self.parser()
        if name == "CodeFormer":
            if weight is None:
                weight = float(_setting(settings, "code_former_weight", 0.5))
            w = float(weight)

            def restore_face(t):
                return net(t, weight=w, adain=True)[0]
        else:
            def restore_face(t):
                return net(t, return_rgb=False)[0]

        np_image = np.array(image.convert("RGB"), dtype=np.uint8)
        try:
            out = restore_with_face_helper(
                np_image, restore_face,
                detect=lambda img: retinaface_detect(detector, img),
                parse=lambda t: parser(t)[0],
                device=self._device(),
            )
        finally:
            if _setting(settings, "face_restoration_unload", False):
                self.offload()
        return Image.fromarray(out)

    def restore_faces(self, image: Image.Image, settings: Any) -> Image.Image:
        """A1111 modules.face_restoration.restore_faces (txt2img/img2img ``restore_faces``): the model named by
        option face_restoration_model, CodeFormer with option code_former_weight."""
        name = _setting(settings, "face_restoration_model", "CodeFormer")
        return self.restore(image, name, settings=settings)


def _setting(settings: Any, key: str, default: Any) -> Any:
    from webui.core.postprocess.upscalers import read_option

    return read_option(settings, key, default)


def missing_files(restorers: FaceRestorers, names: Iterable[str] = FACE_RESTORERS) -> dict[str, str]:
    """For a UI notice: each restorer that cannot run, with the reason."""
    out = {}
    for name in names:
        try:
            restorers.check(name)
        except FaceRestoreUnavailable as e:
            out[name] = str(e)
    return out


__all__: Sequence[str] = (
    "FACE_RESTORERS",
    "FaceRestoreFolders",
    "FaceRestoreUnavailable",
    "FaceRestorers",
    "UnknownFaceRestorer",
    "align_face",
    "decode_boxes",
    "decode_landmarks",
    "face_mask",
    "find_faces",
    "missing_files",
    "paste_face",
    "prior_boxes",
    "restore_with_face_helper",
    "retinaface_detect",
)
