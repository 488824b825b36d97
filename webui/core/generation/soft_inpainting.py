"""Soft inpainting, the math of A1111 1.10's built-in extension (extensions-builtin/soft-inpainting/scripts/
soft_inpainting.py): the per-step latent blend by a schedule-biased mask (``get_modified_nmask`` + ``latent_blend``)
and, after decoding, the overlay whose opacity follows how much each region changed (``apply_adaptive_masks``).

Pure functions on tensors, arrays and PIL images; the always-on script that calls them is
``webui.plugins.builtin.scripts.soft_inpainting``. The arithmetic follows A1111's operation for operation (float64
magnitudes, in-place order) so that equal inputs give equal latents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class SoftInpaintingSettings:
    """A1111 SoftInpaintingSettings, in its argument order; the defaults are A1111's ``default`` (ints where it has
    them: /script-info and an infotext made from defaults show ``1``, not ``1.0``)."""

    mask_blend_power: float = 1
    mask_blend_scale: float = 0.5
    inpaint_detail_preservation: float = 4
    composite_mask_influence: float = 0
    composite_difference_threshold: float = 0.5
    composite_difference_contrast: float = 2

    def add_generation_params(self, dest: dict) -> None:
        dest[ENABLED_GEN_PARAM_LABEL] = True
        for name, label in GEN_PARAM_LABELS.items():
            dest[label] = getattr(self, name)


ENABLED_GEN_PARAM_LABEL = "Soft inpainting enabled"
#: A1111 gen_param_labels: the infotext keys, in order.
GEN_PARAM_LABELS = {
    "mask_blend_power": "Soft inpainting schedule bias",
    "mask_blend_scale": "Soft inpainting preservation strength",
    "inpaint_detail_preservation": "Soft inpainting transition contrast boost",
    "composite_mask_influence": "Soft inpainting mask influence",
    "composite_difference_threshold": "Soft inpainting difference threshold",
    "composite_difference_contrast": "Soft inpainting difference contrast",
}


def _float64(t: torch.Tensor) -> torch.dtype:
    """A1111 torch_utils.float64: float32 on MPS, which has no float64."""
    return torch.float32 if t.device.type == "mps" else torch.float64


def latent_blend(settings: SoftInpaintingSettings, a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A1111 latent_blend: a -> b by ``t`` per latent pixel, the vectors' magnitudes interpolated separately as
    (|a|^d (1 - t) + |b|^d t)^(1/d), d = ``inpaint_detail_preservation`` (biased towards the larger magnitude)."""
    if len(t.shape) == 3:
        t2 = t.unsqueeze(0)  # [C, h, w] -> [1, C, h, w]
        t3 = t[0].unsqueeze(0).unsqueeze(0)  # [1, 1, h, w]
    else:
        t2 = t
        t3 = t[:, 0][:, None]
    one_minus_t2 = 1 - t2
    one_minus_t3 = 1 - t3

    image_interp = a * one_minus_t2
    image_interp.add_(b * t2)
    result_type = image_interp.dtype

    current_magnitude = torch.norm(image_interp, p=2, dim=1, keepdim=True).to(_float64(image_interp)).add_(0.00001)
    detail = settings.inpaint_detail_preservation
    a_magnitude = torch.norm(a, p=2, dim=1, keepdim=True).to(_float64(a)).pow_(detail) * one_minus_t3
    b_magnitude = torch.norm(b, p=2, dim=1, keepdim=True).to(_float64(b)).pow_(detail) * t3
    desired_magnitude = a_magnitude
    desired_magnitude.add_(b_magnitude).pow_(1 / detail)

    scaling = desired_magnitude
    scaling.div_(current_magnitude)
    image_interp.mul_(scaling.to(result_type))
    return image_interp


def get_modified_nmask(settings: SoftInpaintingSettings, nmask: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A1111 get_modified_nmask: nmask ** (sigma ** schedule bias * preservation strength), the repaint mask of this
    step (as if the original had been blended in that many times)."""
    return torch.pow(nmask, (sigma**settings.mask_blend_power) * settings.mask_blend_scale)


def soft_blend(settings: SoftInpaintingSettings, init_latent: torch.Tensor, current_latent: torch.Tensor,
               nmask: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The per-step blend of A1111's Script.on_mask_blend (sigma is the batch's; A1111 takes its first value)."""
    return latent_blend(settings, init_latent, current_latent, get_modified_nmask(settings, nmask, sigma[0]))


# -- the pixel composite ----------------------------------------------------------------------------------------------

def get_gaussian_kernel(stddev_radius: float = 1.0, max_radius: int = 2) -> tuple[np.ndarray, int]:
    """A1111 get_gaussian_kernel: a (2r+1)^2 gaussian, tapered to 0 one pixel beyond ``max_radius``, 1 at the centre."""

    def gaussian(sqr_mag):
        return math.exp(-sqr_mag / (stddev_radius * stddev_radius))

    zero_radius = max_radius + 1.0
    gauss_zero = gaussian(zero_radius * zero_radius)
    gauss_kernel_scale = 1 / (1 - gauss_zero)
    size = max_radius * 2 + 1
    kernel = np.zeros((size, size))
    for index in np.ndindex(kernel.shape):
        c = np.array(index) - max_radius
        x = gaussian(c[0] ** 2.0 + c[1] ** 2.0)
        x -= gauss_zero
        x *= gauss_kernel_scale
        kernel[index] = max(0.0, x)
    return kernel, max_radius


def weighted_histogram_filter(img: np.ndarray, kernel: np.ndarray, kernel_center: int, percentile_min: float = 0.0,
                              percentile_max: float = 1.0, min_width: float = 1.0) -> np.ndarray:
    """A1111 weighted_histogram_filter, vectorised: per pixel, the kernel-weighted neighbours (cut at the border)
    sorted by value and stacked by weight; the weighted mean of the part of the stack between the two percentiles
    (widened to ``min_width``). Neighbours outside the image take weight 0, which leaves every sum unchanged, and
    the stable sort keeps A1111's order for equal values, so the result equals A1111's pixel loop."""
    h, w = img.shape
    kh, kw = kernel.shape
    values, weights = [], []
    src = img.astype(np.float64)
    for ky in range(kh):  # A1111 visits the window in row-major order
        for kx in range(kw):
            dy, dx = ky - kernel_center, kx - kernel_center
            v = np.zeros((h, w))
            m = np.zeros((h, w))
            ys, ye = max(0, -dy), min(h, h - dy)
            xs, xe = max(0, -dx), min(w, w - dx)
            if ys < ye and xs < xe:
                v[ys:ye, xs:xe] = src[ys + dy : ye + dy, xs + dx : xe + dx]
                m[ys:ye, xs:xe] = kernel[ky, kx]
            values.append(v)
            weights.append(m)
    values = np.stack(values, axis=-1)
    weights = np.stack(weights, axis=-1)
    order = np.argsort(values, axis=-1, kind="stable")
    values = np.take_along_axis(values, order, axis=-1)
    weights = np.take_along_axis(weights, order, axis=-1)
    top = np.cumsum(weights, axis=-1)  # each element's window_max (sequential sums, as A1111's loop)
    bottom = top - weights
    bottom[..., 1:] = top[..., :-1]
    bottom[..., 0] = 0.0
    total = top[..., -1]

    window_min = total * percentile_min
    window_max = total * percentile_max
    narrow = (window_max - window_min) < min_width
    center = (window_min + window_max) / 2
    nmin = np.where(narrow, center - min_width / 2, window_min)
    nmax = np.where(narrow, center + min_width / 2, window_max)
    over = narrow & (nmax > total)
    nmin = np.where(over, total - min_width, nmin)
    nmax = np.where(over, total, nmax)
    under = narrow & (nmin < 0)
    nmin = np.where(under, 0.0, nmin)
    nmax = np.where(under, min_width, nmax)

    lo, hi = nmin[..., None], nmax[..., None]
    overlap = np.minimum(hi, top) - np.maximum(lo, bottom)
    inside = (lo < top) & (hi > bottom)
    wts = np.where(inside, overlap, 0.0)
    value = np.cumsum(values * wts, axis=-1)[..., -1]
    value_weight = np.cumsum(wts, axis=-1)[..., -1]
    out = np.where(value_weight != 0, value / np.where(value_weight != 0, value_weight, 1.0), 0.0)
    return out.astype(img.dtype)


def smootherstep(x):
    return x * x * x * (x * (6 * x - 15) + 10)


def apply_adaptive_masks(settings: SoftInpaintingSettings, nmask: torch.Tensor, latent_orig: torch.Tensor,
                         latent_processed: torch.Tensor, overlay_images: list, width: int, height: int,
                         paste_to) -> list:
    """A1111 apply_adaptive_masks: per image, where the latent changed little (filtered distance below the
    threshold, scaled by the mask with ``composite_mask_influence``) the original shows through; the overlay images
    are replaced in place by the original with that opacity, and the masks are returned (A1111 masks_for_overlay)."""
    from PIL import Image, ImageFilter, ImageOps

    from webui.core.generation import imageops

    latent_mask = nmask[0].float() if len(nmask.shape) == 3 else nmask[:, 0].float()
    mask_scalar = 1 - (torch.clamp(latent_mask, min=0, max=1) ** (settings.mask_blend_scale / 2))
    mask_scalar = 0.5 * (1 - settings.composite_mask_influence) + mask_scalar * settings.composite_mask_influence
    mask_scalar = (mask_scalar / (1.00001 - mask_scalar)).cpu().numpy()

    latent_distance = torch.norm(latent_processed - latent_orig.to(latent_processed), p=2, dim=1)
    kernel, kernel_center = get_gaussian_kernel(stddev_radius=1.5, max_radius=2)

    masks_for_overlay = []
    for i, (distance_map, overlay_image) in enumerate(zip(latent_distance, overlay_images)):
        converted = distance_map.float().cpu().numpy()
        converted = weighted_histogram_filter(converted, kernel, kernel_center, percentile_min=0.9,
                                              percentile_max=1, min_width=1)
        converted = weighted_histogram_filter(converted, kernel, kernel_center, percentile_min=0.25,
                                              percentile_max=0.75, min_width=1)
        if len(mask_scalar.shape) == 3:
            scalar = mask_scalar[i] if mask_scalar.shape[0] > i else mask_scalar[0]
        else:
            scalar = mask_scalar
        half_weighted_distance = settings.composite_difference_threshold * scalar
        converted = converted / half_weighted_distance
        converted = 1 / (1 + converted**settings.composite_difference_contrast)
        converted = smootherstep(converted)
        converted = 1 - converted
        converted = (255.0 * converted).astype(np.uint8)
        mask_image = Image.fromarray(converted)
        mask_image = imageops.resize_image(2, mask_image, width, height)
        mask_image = imageops.create_binary_mask(mask_image, round=False)
        mask_image = mask_image.filter(ImageFilter.GaussianBlur(radius=4))  # anti-aliasing, as A1111
        if paste_to is not None:
            mask_image = imageops.uncrop(mask_image, (overlay_image.width, overlay_image.height), paste_to)
        masks_for_overlay.append(mask_image)

        image_masked = Image.new("RGBa", (overlay_image.width, overlay_image.height))
        image_masked.paste(overlay_image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask_image.convert("L")))
        overlay_images[i] = image_masked.convert("RGBA")
    return masks_for_overlay


def original_overlays(init_images: list, *, background_color: str, paste_to, resize_mode: int, width: int,
                      height: int, batch_size: int) -> list:
    """A1111 Script.post_sample's rebuilt overlay images: the init images flattened (and resized unless "Only
    masked" or resize mode 3), uncut, one per image of the batch."""
    from webui.core.generation import imageops

    overlays = []
    for img in init_images:
        image = imageops.flatten(img, background_color)
        if paste_to is None and resize_mode != 3:
            image = imageops.resize_image(resize_mode, image, width, height)
        overlays.append(image.convert("RGBA"))
    if len(init_images) == 1:
        overlays = overlays * batch_size
    return overlays
