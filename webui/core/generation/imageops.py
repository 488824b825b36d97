"""The image half of img2img, inpainting and hires fix, as A1111 v1.10.1 does it. Pure functions, no models.

Reproduces:

* ``modules/images.py``: ``resize_image`` (modes 0 Just resize, 1 Crop and resize, 2 Resize and fill), ``flatten``,
  (``image_grid`` lives in webui.core.io.images).
* ``modules/masking.py``: ``get_crop_region_v2``, ``get_crop_region``, ``expand_crop_region``, ``fill``.
* ``modules/processing.py``: ``create_binary_mask``, the mask blur, ``overlay_images`` / ``paste_to`` /
  ``mask_for_overlay`` and the init image of ``StableDiffusionProcessingImg2Img.init`` (``prepare_inpaint``,
  ``prepare_init_image``), the latent mask of the same function (``latent_masks``), ``uncrop`` / ``apply_overlay``,
  ``setup_color_correction`` / ``apply_color_correction``, the pixel-side math of ``txt2img_image_conditioning`` and
  ``inpainting_image_conditioning`` (the VAE is a callable handed in), and
  ``StableDiffusionProcessingTxt2Img.__post_init__`` / ``calculate_target_resolution`` (``hires_target``) with
  ``old_hires_fix_first_pass_dimensions`` and the latent truncation of ``sample_hr_pass``.
* ``modules/shared.py`` ``latent_upscale_modes`` and the ``torch.nn.functional.interpolate`` call of
  ``sample_hr_pass`` (``upscale_latent``).
* ``modules/sd_samplers_common.py`` ``setup_img2img_steps`` (``img2img_steps``).

A1111 reads options from its global ``opts`` inside these functions (``upscaler_for_img2img``,
``img2img_background_color``, ``n_rows``, ``grid_background_color`` ...); here they are arguments with A1111's
defaults. OpenCV is imported only by the functions that need it (mask blur and colour correction use
``cv2.GaussianBlur`` / ``cv2.cvtColor`` as A1111 does, since their 8-bit fixed-point results are what A1111 users get).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps

__all__ = [
    "LANCZOS",
    "LATENT_UPSCALE_DEFAULT_MODE",
    "LATENT_UPSCALE_MODES",
    "OPT_F",
    "RESIZE_MODES",
    "HiresTarget",
    "InpaintPrep",
    "Upscaler",
    "apply_color_correction",
    "apply_overlay",
    "blur_mask",
    "create_binary_mask",
    "expand_crop_region",
    "fill",
    "flatten",
    "get_crop_region",
    "get_crop_region_v2",
    "hires_target",
    "img2img_steps",
    "inpainting_image_conditioning",
    "latent_masks",
    "old_hires_fix_first_pass_dimensions",
    "prepare_init_image",
    "prepare_inpaint",
    "resize_image",
    "setup_color_correction",
    "truncate_latent",
    "txt2img_image_conditioning",
    "uncrop",
    "upscale_latent",
]

LANCZOS = Image.Resampling.LANCZOS
OPT_F = 8  # A1111 opt_f: pixels per latent cell

RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")

# modules/shared.py latent_upscale_modes: name -> (torch interpolate mode, antialias); the names of
# /sdapi/v1/latent-upscale-modes and of the latent entries of the Hires upscaler dropdown, in A1111's order.
LATENT_UPSCALE_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
# shared.latent_upscale_default_mode: the mode of a hires pass whose hr_upscaler is None.
LATENT_UPSCALE_DEFAULT_MODE = "Latent"

Upscaler = Callable[[Image.Image, float], Image.Image]
"""An img2img upscaler: ``upscaler(img, scale) -> img`` (A1111 ``upscaler.scaler.upscale(img, scale, data_path)``)."""


def _cv2():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - the dependency is declared; this names it when it is missing
        raise ImportError("mask blur and color correction need OpenCV: pip install opencv-python-headless") from e
    return cv2


# ---------------------------------------------------------------------------------------------------------------------
# images.py


def resize_image(
    resize_mode: int, im: Image.Image, width: int, height: int, upscaler: Upscaler | None = None
) -> Image.Image:
    """A1111 ``images.resize_image``.

    0 Just resize: stretch to width x height. 1 Crop and resize: scale to cover, centre, crop the excess.
    Any other mode (2 Resize and fill, and 3, which A1111's function also sends down this branch): scale to fit,
    centre, and fill the bands by stretching the image's first and last row (or column). Modes 1 and 2 return an RGB
    image whatever the input mode (A1111 pastes onto ``Image.new("RGB")``), so an "L" mask comes back RGB.

    A1111 never resizes an init image with mode 3 ("Just resize (latent upscale)"): img2img encodes it at its own size
    and interpolates the latent; see ``prepare_init_image``. Masks do go through here with mode 3.

    ``upscaler`` plays A1111's ``upscaler_for_img2img``: None (A1111's default) resizes with LANCZOS; otherwise, for a
    non-"L" image that must grow, ``upscaler(img, scale)`` runs first with scale = max(w / img.w, h / img.h), then
    LANCZOS to the exact size when the upscaler's size differs.
    """

    def resize(im: Image.Image, w: int, h: int) -> Image.Image:
        if upscaler is None or im.mode == "L":
            return im.resize((w, h), resample=LANCZOS)

        scale = max(w / im.width, h / im.height)
        if scale > 1.0:
            im = upscaler(im, scale)
        if im.width != w or im.height != h:
            im = im.resize((w, h), resample=LANCZOS)
        return im

    if resize_mode == 0:
        return resize(im, width, height)

    ratio = width / height
    src_ratio = im.width / im.height

    if resize_mode == 1:
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width

        resized = resize(im, src_w, src_h)
        res = Image.new("RGB", (width, height))
        res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        return res

    src_w = width if ratio < src_ratio else im.width * height // im.height
    src_h = height if ratio >= src_ratio else im.height * width // im.width

    resized = resize(im, src_w, src_h)
    res = Image.new("RGB", (width, height))
    res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))

    if ratio < src_ratio:
        fill_height = height // 2 - src_h // 2
        if fill_height > 0:
            res.paste(resized.resize((width, fill_height), box=(0, 0, width, 0)), box=(0, 0))
            res.paste(
                resized.resize((width, fill_height), box=(0, resized.height, width, resized.height)),
                box=(0, fill_height + src_h),
            )
    elif ratio > src_ratio:
        fill_width = width // 2 - src_w // 2
        if fill_width > 0:
            res.paste(resized.resize((fill_width, height), box=(0, 0, 0, height)), box=(0, 0))
            res.paste(
                resized.resize((fill_width, height), box=(resized.width, 0, resized.width, height)),
                box=(fill_width + src_w, 0),
            )

    return res


def flatten(img: Image.Image, bgcolor: str = "#ffffff") -> Image.Image:
    """A1111 ``images.flatten``: RGBA transparency composited over ``bgcolor`` (option ``img2img_background_color``,
    default "#ffffff"); always returns RGB."""
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, bgcolor)
        background.paste(img, mask=img)
        img = background

    return img.convert("RGB")


def create_binary_mask(image: Image.Image, round: bool = True) -> Image.Image:
    """A1111 ``processing.create_binary_mask``: an RGBA mask with real transparency uses its alpha channel
    (thresholded at >128 when ``round``, the ``mask_round`` option); anything else is converted to "L" as is."""
    if image.mode == "RGBA" and image.getextrema()[-1] != (255, 255):
        if round:
            return image.split()[-1].convert("L").point(lambda x: 255 if x > 128 else 0)
        return image.split()[-1].convert("L")
    return image.convert("L")


def blur_mask(mask: Image.Image, blur_x: float, blur_y: float) -> Image.Image:
    """The mask blur of A1111 ``StableDiffusionProcessingImg2Img.init``: a horizontal then a vertical
    ``cv2.GaussianBlur`` with kernel size ``2 * int(2.5 * sigma + 0.5) + 1`` and sigma = the blur; 0 skips an axis."""
    if blur_x > 0:
        cv2 = _cv2()
        kernel_size = 2 * int(2.5 * blur_x + 0.5) + 1
        mask = Image.fromarray(cv2.GaussianBlur(np.array(mask), (kernel_size, 1), blur_x))
    if blur_y > 0:
        cv2 = _cv2()
        kernel_size = 2 * int(2.5 * blur_y + 0.5) + 1
        mask = Image.fromarray(cv2.GaussianBlur(np.array(mask), (1, kernel_size), blur_y))
    return mask


def get_crop_region_v2(mask: Image.Image | np.ndarray, pad: int = 0) -> tuple[int, int, int, int] | None:
    """A1111 ``masking.get_crop_region_v2``: the box (x1, y1, x2, y2) around the mask's non-zero pixels, grown by
    ``pad`` on every side and clipped to the mask; None for an all-black mask."""
    mask = mask if isinstance(mask, Image.Image) else Image.fromarray(mask)
    box = mask.getbbox()
    if not box:
        return None
    x1, y1, x2, y2 = box
    if not pad:
        return box
    return max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, mask.size[0]), min(y2 + pad, mask.size[1])


def get_crop_region(mask: Image.Image | np.ndarray, pad: int = 0) -> tuple[int, int, int, int]:
    """A1111 ``masking.get_crop_region``: as ``get_crop_region_v2``, but an all-black mask gives the (inverted,
    usually invalid) box (w - pad, h - pad, pad, pad) clipped to the mask, as the pre-1.9 function did."""
    mask = mask if isinstance(mask, Image.Image) else Image.fromarray(mask)
    box = get_crop_region_v2(mask, pad)
    if box:
        return box
    x1, y1 = mask.size
    x2 = y2 = 0
    return max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, mask.size[0]), min(y2 + pad, mask.size[1])


def expand_crop_region(
    crop_region: tuple[int, int, int, int],
    processing_width: int,
    processing_height: int,
    image_width: int,
    image_height: int,
) -> tuple[int, int, int, int]:
    """A1111 ``masking.expand_crop_region``: grow the crop box along its short side to the processing aspect ratio,
    centred, shifted back inside the image where it sticks out (and clipped where the image is too small)."""
    x1, y1, x2, y2 = crop_region

    ratio_crop_region = (x2 - x1) / (y2 - y1)
    ratio_processing = processing_width / processing_height

    if ratio_crop_region > ratio_processing:
        desired_height = (x2 - x1) / ratio_processing
        desired_height_diff = int(desired_height - (y2 - y1))
        y1 -= desired_height_diff // 2
        y2 += desired_height_diff - desired_height_diff // 2
        if y2 >= image_height:
            diff = y2 - image_height
            y2 -= diff
            y1 -= diff
        if y1 < 0:
            y2 -= y1
            y1 -= y1
        y2 = min(image_height, y2)
    else:
        desired_width = (y2 - y1) * ratio_processing
        desired_width_diff = int(desired_width - (x2 - x1))
        x1 -= desired_width_diff // 2
        x2 += desired_width_diff - desired_width_diff // 2
        if x2 >= image_width:
            diff = x2 - image_width
            x2 -= diff
            x1 -= diff
        if x1 < 0:
            x2 -= x1
            x1 -= x1
        x2 = min(image_width, x2)

    return x1, y1, x2, y2


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111 ``masking.fill`` (inpainting_fill 0 "fill"): the masked area painted with ever finer blurs of the
    unmasked colours (premultiplied alpha, radii 256, 64, 16, 4, 2, 0)."""
    image_mod = Image.new("RGBA", (image.width, image.height))

    image_masked = Image.new("RGBa", (image.width, image.height))
    image_masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))

    image_masked = image_masked.convert("RGBa")

    for radius, repeats in [(256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)]:
        blurred = image_masked.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            image_mod.alpha_composite(blurred)

    return image_mod.convert("RGB")


# ---------------------------------------------------------------------------------------------------------------------
# img2img init


@dataclass
class InpaintPrep:
    """What A1111 ``StableDiffusionProcessingImg2Img.init`` derives from one init image and the mask.

    image: the init image ready for the VAE (RGB): flattened, resized (or cropped to the mask's region and resized
        with "Only masked"), filled when ``inpainting_fill`` is 0. At width x height, except with resize mode 3
        (``latent_resize``), where A1111 keeps the image's own size.
    mask: A1111's ``image_mask`` at the processing size (blurred; "L" or, after resize modes 1/2/3 or "Only masked",
        RGB with equal channels, as A1111 has it): the inpainting-model conditioning mask, and ``latent_mask``.
    latent_mask: the mask ``latent_masks`` turns into A1111's ``p.mask`` / ``p.nmask`` (A1111's ``latent_mask``,
        which is ``image_mask`` unless a script sets one).
    mask_for_overlay: A1111's ``mask_for_overlay`` (the "-mask" output of ``return_mask`` / ``save_mask``).
    overlay: the RGBA image A1111 keeps in ``overlay_images`` and ``apply_overlay`` composites over the result: the
        init image where the mask is black, transparent where it is white.
    paste_to: (x, y, w, h) where "Only masked" pastes the result back (``p.paste_to``); None otherwise.
    crop_region: the expanded crop box (x1, y1, x2, y2) of "Only masked"; None otherwise.
    latent_resize: resize mode 3: the caller interpolates the init latent to (height // 8, width // 8) with
        ``upscale_latent(latent, width, height, "Latent")`` (A1111: ``F.interpolate(..., mode="bilinear")``).
    inpaint_full_res: "Only masked" in effect (False when the mask was blank: A1111 then runs plain img2img).
    extra_generation_params: the infotext entries this step adds, in A1111's order ("Mask mode", "Mask blur",
        "Inpaint area", "Masked area padding", "Masked content"); "Denoising strength" comes before them and is the
        caller's.
    comments: A1111's comments (the blank-mask notice).
    """

    image: Image.Image
    mask: Image.Image | None = None
    latent_mask: Image.Image | None = None
    mask_for_overlay: Image.Image | None = None
    overlay: Image.Image | None = None
    paste_to: tuple[int, int, int, int] | None = None
    crop_region: tuple[int, int, int, int] | None = None
    latent_resize: bool = False
    inpaint_full_res: bool = False
    extra_generation_params: dict[str, Any] = field(default_factory=dict)
    comments: tuple[str, ...] = ()


def prepare_init_image(
    image: Image.Image,
    *,
    width: int,
    height: int,
    resize_mode: int,
    background_color: str = "#ffffff",
    upscaler: Upscaler | None = None,
) -> InpaintPrep:
    """An img2img init image without a mask, as A1111 ``StableDiffusionProcessingImg2Img.init`` makes it:
    ``flatten`` on ``img2img_background_color``, then ``resize_image`` unless resize mode 3 (then the image keeps its
    size and ``latent_resize`` is set)."""
    _check_resize_mode(resize_mode)
    image = flatten(image, background_color)
    if resize_mode != 3:
        image = resize_image(resize_mode, image, width, height, upscaler)
    return InpaintPrep(image=image, latent_resize=resize_mode == 3)


BLANK_MASK_COMMENT = 'Unable to perform "Inpaint Only mask" because mask is blank, switch to img2img mode.'
MASKED_CONTENT = {0: "fill", 1: None, 2: "latent noise", 3: "latent nothing"}


def _check_resize_mode(resize_mode: int) -> None:
    if resize_mode not in (0, 1, 2, 3):
        raise ValueError(f"resize_mode must be one of 0, 1, 2, 3 ({', '.join(RESIZE_MODES)}), got {resize_mode!r}")


def prepare_inpaint(
    image: Image.Image,
    mask: Image.Image,
    *,
    width: int,
    height: int,
    resize_mode: int,
    mask_blur_x: float,
    mask_blur_y: float,
    mask_round: bool,
    invert: bool | int,
    inpaint_full_res: bool,
    padding: int,
    fill_mode: int,
    background_color: str = "#ffffff",
    upscaler: Upscaler | None = None,
) -> InpaintPrep:
    """The mask and init-image steps of A1111 ``StableDiffusionProcessingImg2Img.init`` for one init image.

    Mask: ``create_binary_mask`` (alpha or "L", thresholded when ``mask_round``), inverted for
    ``inpainting_mask_invert``, ``blur_mask``. Then either "Only masked" (``inpaint_full_res``): the box around the
    mask plus ``padding`` (``get_crop_region_v2``), grown to the processing aspect (``expand_crop_region``); the mask
    and the image are cropped to it and brought to width x height with resize mode 2, and the result is pasted back
    at ``paste_to``; a blank mask turns this into plain img2img (no mask at all) as A1111 does. Or "Whole picture":
    the mask is resized with ``resize_mode`` and doubled (clipped at 255) for the overlay.

    Image: ``flatten``, ``resize_image`` (not for "Only masked", which crops first, nor for mode 3), the overlay
    (the init image where the overlay mask is black), then the crop, and ``fill`` unless ``fill_mode`` is 1
    ("original"; A1111 fills for 2 and 3 as well); modes 2 "latent noise" and 3 "latent nothing" then act on the
    latent (``latent_masks``).

    As in A1111, a mask whose size differs from the image is resized to the image for the overlay, and the "Only
    masked" crop box, found on the mask, is applied to the image as it is. Resize mode 3 with "Whole picture" works in
    A1111 only when the init image already has the processing size (otherwise ``fill`` and the final overlay fail on
    the size mismatch); here that case raises ValueError with that explanation.
    """
    _check_resize_mode(resize_mode)
    if fill_mode not in MASKED_CONTENT:
        raise ValueError(
            f"inpainting_fill must be 0 (fill), 1 (original), 2 (latent noise) or 3 (latent nothing), got {fill_mode!r}"
        )

    extra: dict[str, Any] = {}
    comments: list[str] = []
    crop_region = None
    paste_to = None

    image_mask: Image.Image | None = create_binary_mask(mask, round=mask_round)

    if invert:
        image_mask = ImageOps.invert(image_mask)
        extra["Mask mode"] = "Inpaint not masked"

    image_mask = blur_mask(image_mask, mask_blur_x, mask_blur_y)

    if (mask_blur_x > 0 or mask_blur_y > 0) and mask_blur_x == mask_blur_y:
        # A1111 records p.mask_blur, which is None (so absent from the infotext) unless x and y are equal
        extra["Mask blur"] = mask_blur_x

    if inpaint_full_res:
        mask_for_overlay = image_mask
        mask_l = image_mask.convert("L")
        crop_region = get_crop_region_v2(mask_l, padding)
        if crop_region:
            crop_region = expand_crop_region(crop_region, width, height, mask_l.width, mask_l.height)
            x1, y1, x2, y2 = crop_region
            image_mask = resize_image(2, mask_l.crop(crop_region), width, height)
            paste_to = (x1, y1, x2 - x1, y2 - y1)
            extra["Inpaint area"] = "Only masked"
            extra["Masked area padding"] = padding
        else:
            crop_region = None
            image_mask = None
            mask_for_overlay = None
            inpaint_full_res = False
            comments.append(BLANK_MASK_COMMENT)
    else:
        image_mask = resize_image(resize_mode, image_mask, width, height)
        np_mask = np.clip(np.array(image_mask).astype(np.float32) * 2, 0, 255).astype(np.uint8)
        mask_for_overlay = Image.fromarray(np_mask)

    latent_mask = image_mask

    image = flatten(image, background_color)

    if crop_region is None and resize_mode != 3:
        image = resize_image(resize_mode, image, width, height, upscaler)

    overlay = None
    if image_mask is not None:
        if resize_mode == 3 and crop_region is None and image.size != (width, height):
            raise ValueError(
                f"resize mode 3 (Just resize (latent upscale)) with a mask needs an init image of the processing size "
                f"{width}x{height} (got {image.width}x{image.height}) unless 'Only masked' is used; "
                "A1111 fails here too"
            )
        if mask_for_overlay.size != (image.width, image.height):
            mask_for_overlay = resize_image(resize_mode, mask_for_overlay, image.width, image.height, upscaler)
        image_masked = Image.new("RGBa", (image.width, image.height))
        image_masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask_for_overlay.convert("L")))
        overlay = image_masked.convert("RGBA")

    if crop_region is not None:
        image = image.crop(crop_region)
        image = resize_image(2, image, width, height, upscaler)

    if image_mask is not None:
        if fill_mode != 1:
            # A1111 fills for "latent noise" and "latent nothing" too (the inpainting-model conditioning sees it)
            image = fill(image, latent_mask)
        if MASKED_CONTENT[fill_mode] is not None:
            extra["Masked content"] = MASKED_CONTENT[fill_mode]

    return InpaintPrep(
        image=image,
        mask=image_mask,
        latent_mask=latent_mask,
        mask_for_overlay=mask_for_overlay,
        overlay=overlay,
        paste_to=paste_to,
        crop_region=crop_region,
        latent_resize=resize_mode == 3,
        inpaint_full_res=inpaint_full_res,
        extra_generation_params=extra,
        comments=tuple(comments),
    )


def latent_masks(
    latent_mask: Image.Image, latent_shape: Sequence[int], mask_round: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """A1111's ``p.mask`` and ``p.nmask`` (float32, shape (C, h, w)) from ``InpaintPrep.latent_mask``.

    ``latent_shape`` is the init latent's (C, h, w) (or (B, C, h, w)). The mask goes to RGB, is resized to (w, h)
    with PIL's default filter (bicubic), its first channel / 255 is rounded when ``mask_round`` and tiled over the
    channels. nmask is 1 where to repaint; A1111 blends ``samples * nmask + init_latent * mask`` after sampling,
    and starts from ``init_latent * mask + noise * nmask`` ("latent noise", noise from the first image's seed) or
    ``init_latent * mask`` ("latent nothing").
    """
    channels, lat_h, lat_w = latent_shape[-3:]
    latmask = latent_mask.convert("RGB").resize((lat_w, lat_h))
    latmask = np.moveaxis(np.array(latmask, dtype=np.float32), 2, 0) / 255
    latmask = latmask[0]
    if mask_round:
        latmask = np.around(latmask)
    latmask = np.tile(latmask[None], (channels, 1, 1))
    return torch.asarray(1.0 - latmask), torch.asarray(latmask)


def uncrop(image: Image.Image, dest_size: tuple[int, int], paste_loc: tuple[int, int, int, int]) -> Image.Image:
    """A1111 ``processing.uncrop``: the result of an "Only masked" pass brought back (resize mode 1) to its box in a
    transparent canvas of the original size."""
    x, y, w, h = paste_loc
    base_image = Image.new("RGBA", dest_size)
    image = resize_image(1, image, w, h)
    base_image.paste(image, (x, y))
    return base_image


def apply_overlay(
    image: Image.Image, paste_loc: tuple[int, int, int, int] | None, overlay: Image.Image | None
) -> tuple[Image.Image, Image.Image]:
    """A1111 ``processing.apply_overlay``: uncrop (when ``paste_loc``) and composite the init image's unmasked part
    over the result. Returns (image, original_denoised_image), the latter before compositing (A1111 uses it for
    the mask composite output)."""
    if overlay is None:
        return image, image.copy()

    if paste_loc is not None:
        image = uncrop(image, (overlay.width, overlay.height), paste_loc)

    original_denoised_image = image.copy()

    image = image.convert("RGBA")
    image.alpha_composite(overlay)
    image = image.convert("RGB")

    return image, original_denoised_image


# ---------------------------------------------------------------------------------------------------------------------
# color correction


def setup_color_correction(image: Image.Image) -> np.ndarray:
    """A1111 ``processing.setup_color_correction``: the init image (as it goes to the VAE, after ``fill``) in OpenCV's
    8-bit LAB, the histogram target of ``apply_color_correction``."""
    cv2 = _cv2()
    return cv2.cvtColor(np.asarray(image.copy()), cv2.COLOR_RGB2LAB)


def _match_cumulative_cdf(source: np.ndarray, template: np.ndarray) -> np.ndarray:
    # skimage.exposure.histogram_matching._match_cumulative_cdf (scikit-image 0.21, A1111's pin), unsigned-int branch
    src_lookup = source.reshape(-1)
    src_counts = np.bincount(src_lookup)
    tmpl_counts = np.bincount(template.reshape(-1))

    tmpl_values = np.nonzero(tmpl_counts)[0]
    tmpl_counts = tmpl_counts[tmpl_values]

    src_quantiles = np.cumsum(src_counts) / source.size
    tmpl_quantiles = np.cumsum(tmpl_counts) / template.size

    interp_a_values = np.interp(src_quantiles, tmpl_quantiles, tmpl_values)
    return interp_a_values[src_lookup].reshape(source.shape)


def _match_histograms(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    # skimage.exposure.match_histograms(image, reference, channel_axis=2) on uint8: per channel, stored back into a
    # uint8 array (numpy truncates the interpolated values)
    matched = np.empty(image.shape, dtype=image.dtype)
    for channel in range(image.shape[-1]):
        matched[..., channel] = _match_cumulative_cdf(image[..., channel], reference[..., channel])
    return matched


def _luminosity_blend(background: Image.Image, foreground: Image.Image) -> Image.Image:
    """``blendmodes.blend.blendLayers(background, foreground, BlendType.LUMINOSITY)`` (blendmodes 2022, A1111's pin)
    for opaque images: the background's colours with the foreground's luminosity (0.299/0.587/0.114), brought back
    into [0, 1] as ``_setLum`` does, then ``(x * 255).astype(uint8)``. Vectorised; the per-pixel arithmetic is the
    same, in the same order."""
    fg = np.array(foreground.convert("RGBA")) / 255
    bg = np.array(background.convert("RGBA")) / 255
    bg_alpha = bg[:, :, 3]
    fg_alpha = fg[:, :, 3]
    combined_alpha = bg_alpha * fg_alpha
    bg_color = bg[:, :, 0:3]
    fg_color = fg[:, :, 0:3]

    def lum(c: np.ndarray) -> np.ndarray:
        return (c[:, :, 0] * 0.299) + (c[:, :, 1] * 0.587) + (c[:, :, 2] * 0.114)

    colours = bg_color.copy()
    delta = lum(fg_color) - lum(colours)
    colours += delta[:, :, None]
    new_lum = lum(colours)[:, :, None]
    min_c = np.min(colours, axis=2)[:, :, None]
    max_c = np.max(colours, axis=2)[:, :, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        colours = np.where(min_c < 0, new_lum + (((colours - new_lum) * new_lum) / (new_lum - min_c)), colours)
        colours = np.where(max_c > 1, new_lum + (((colours - new_lum) * (1 - new_lum)) / (max_c - new_lum)), colours)

    color_components = (
        (bg_alpha - combined_alpha)[:, :, None] * bg_color
        + (fg_alpha - combined_alpha)[:, :, None] * fg_color
        + combined_alpha[:, :, None] * colours
    )
    alpha_component = bg_alpha + fg_alpha - combined_alpha
    out = np.clip(np.dstack((color_components, alpha_component)), a_min=0, a_max=1)
    return Image.fromarray((out * 255).astype(np.uint8))


def apply_color_correction(correction: np.ndarray, original_image: Image.Image) -> Image.Image:
    """A1111 ``processing.apply_color_correction``: match the generated image's LAB histograms to the init image's
    (``skimage.exposure.match_histograms``), back to RGB, then keep those colours under the generated image's own
    luminosity (``blendLayers(..., BlendType.LUMINOSITY)``). Returns RGB."""
    cv2 = _cv2()
    lab = cv2.cvtColor(np.asarray(original_image), cv2.COLOR_RGB2LAB)
    image = Image.fromarray(cv2.cvtColor(_match_histograms(lab, correction), cv2.COLOR_LAB2RGB).astype("uint8"))
    image = _luminosity_blend(image, original_image)
    return image.convert("RGB")


# ---------------------------------------------------------------------------------------------------------------------
# inpainting-model conditioning (the pixel side; the VAE is the caller's)

Encoder = Callable[[torch.Tensor], torch.Tensor]
"""``encode(images)``: images in [-1, 1], (B, 3, H, W) -> scaled latents (A1111
``get_first_stage_encoding(encode_first_stage(x))``)."""


def txt2img_image_conditioning(
    batch_size: int, width: int, height: int, encode: Encoder, *, device=None, dtype=None
) -> torch.Tensor:
    """A1111 ``txt2img_image_conditioning`` for inpainting models (9-channel UNets, and SDXL inpaint): a fully masked
    image (all 0.5 in [0, 1], i.e. 0 in [-1, 1]) encoded, with a channel of ones (the mask) in front: (B, 5, h, w).
    Also the hires pass's conditioning when ``inpainting_mask_weight`` is 1."""
    x = torch.zeros(batch_size, 3, height, width, device=device)
    image_conditioning = encode(x)
    image_conditioning = torch.nn.functional.pad(image_conditioning, (0, 0, 0, 0, 1, 0), value=1.0)
    return image_conditioning.to(dtype) if dtype is not None else image_conditioning


def inpainting_image_conditioning(
    source_image: torch.Tensor,
    latent_size: tuple[int, int],
    encode: Encoder,
    image_mask: Image.Image | torch.Tensor | None = None,
    *,
    mask_weight: float = 1.0,
    round_image_mask: bool = True,
) -> torch.Tensor:
    """A1111 ``StableDiffusionProcessing.inpainting_image_conditioning``.

    ``source_image``: the init batch in [-1, 1], (B, 3, H, W). ``latent_size``: the latent's (h, w). ``image_mask``:
    ``InpaintPrep.mask`` ("L"/RGB, /255, rounded to 0/1 when ``round_image_mask`` = ``mask_round``) or a tensor used
    as is; None means all ones (hires passes with ``mask_weight`` < 1). The masked image
    ``lerp(source, source * (1 - mask), mask_weight)`` (``inpainting_mask_weight``, "Conditional mask weight") is
    encoded; the mask, interpolated (nearest) to the latent size, goes in front: (B, 1 + C, h, w).
    """
    if image_mask is not None:
        if torch.is_tensor(image_mask):
            conditioning_mask = image_mask
        else:
            conditioning_mask = np.array(image_mask.convert("L")).astype(np.float32) / 255.0
            conditioning_mask = torch.from_numpy(conditioning_mask[None, None])
            if round_image_mask:
                conditioning_mask = torch.round(conditioning_mask)
    else:
        conditioning_mask = source_image.new_ones(1, 1, *source_image.shape[-2:])

    conditioning_mask = conditioning_mask.to(device=source_image.device, dtype=source_image.dtype)
    conditioning_image = torch.lerp(source_image, source_image * (1.0 - conditioning_mask), mask_weight)
    conditioning_image = encode(conditioning_image)

    conditioning_mask = torch.nn.functional.interpolate(conditioning_mask, size=tuple(latent_size))
    conditioning_mask = conditioning_mask.expand(conditioning_image.shape[0], -1, -1, -1)
    return torch.cat([conditioning_mask.to(conditioning_image.dtype), conditioning_image], dim=1)


# ---------------------------------------------------------------------------------------------------------------------
# hires fix


def upscale_latent(
    latent: torch.Tensor, width: int, height: int, mode_name: str = LATENT_UPSCALE_DEFAULT_MODE
) -> torch.Tensor:
    """A1111 ``sample_hr_pass`` latent upscale: ``F.interpolate(samples, size=(height // 8, width // 8), mode,
    antialias)`` with the mode of ``LATENT_UPSCALE_MODES[mode_name]``. Also img2img resize mode 3 with "Latent"
    (plain bilinear)."""
    if mode_name not in LATENT_UPSCALE_MODES:
        raise ValueError(f"unknown latent upscale mode {mode_name!r}; choose one of: {', '.join(LATENT_UPSCALE_MODES)}")
    mode, antialias = LATENT_UPSCALE_MODES[mode_name]
    return torch.nn.functional.interpolate(
        latent, size=(height // OPT_F, width // OPT_F), mode=mode, antialias=antialias
    )


@dataclass(frozen=True)
class HiresTarget:
    """Sizes of a txt2img hires fix (A1111 ``StableDiffusionProcessingTxt2Img`` after ``calculate_target_resolution``).

    width, height: the first pass (A1111's ``p.width`` / ``p.height``: the infotext "Size").
    target_width, target_height: the upscale size (``hr_upscale_to_x`` / ``_y``) the latent or image is scaled to.
    resize_x, resize_y: ``hr_resize_x`` / ``_y`` as used (the old-behaviour option overwrites them).
    truncate_x, truncate_y: latent cells cut after the upscale when both resize sizes are given (crop to the aspect);
        see ``truncate_latent``. final_width / final_height: the second pass's output size.
    infotext: {"Hires upscale": scale} or {"Hires resize": "WxH"}.
    """

    width: int
    height: int
    target_width: int
    target_height: int
    resize_x: int
    resize_y: int
    truncate_x: int = 0
    truncate_y: int = 0
    infotext: dict[str, Any] = field(default_factory=dict)

    @property
    def final_width(self) -> int:
        return (self.target_width // OPT_F - self.truncate_x) * OPT_F

    @property
    def final_height(self) -> int:
        return (self.target_height // OPT_F - self.truncate_y) * OPT_F


def old_hires_fix_first_pass_dimensions(width: int, height: int) -> tuple[int, int]:
    """A1111 ``old_hires_fix_first_pass_dimensions``: the first pass at about 512x512 pixels, multiples of 64."""
    desired_pixel_count = 512 * 512
    actual_pixel_count = width * height
    scale = math.sqrt(desired_pixel_count / actual_pixel_count)
    width = math.ceil(scale * width / 64) * 64
    height = math.ceil(scale * height / 64) * 64
    return width, height


def hires_target(
    width: int,
    height: int,
    *,
    scale: float = 2.0,
    resize_x: int = 0,
    resize_y: int = 0,
    firstphase_width: int = 0,
    firstphase_height: int = 0,
    use_old_hires_fix_width_height: bool = False,
) -> HiresTarget:
    """A1111's hires sizes: ``StableDiffusionProcessingTxt2Img.__post_init__`` then ``calculate_target_resolution``.

    Legacy ``firstphase_width`` / ``firstphase_height`` (either non-zero): the first pass runs at that size and the
    requested width x height is dropped (A1111 stores it as the target, then ``calculate_target_resolution``
    overwrites it). ``use_old_hires_fix_width_height``: width x height is the final size (as hr_resize_x/y) and the
    first pass is ``old_hires_fix_first_pass_dimensions``. Then: no resize -> target = int(size * scale); one resize
    side 0 -> the other keeps the first pass's aspect (integer division); both -> cover the box, then truncate the
    excess latent cells ((upscaled - target) // 8).
    """
    if firstphase_width != 0 or firstphase_height != 0:
        width, height = firstphase_width, firstphase_height
    if width <= 0 or height <= 0:
        raise ValueError(
            f"hires fix first pass size must be positive, got {width}x{height} "
            "(firstphase_width / firstphase_height set only in part?)"
        )

    if use_old_hires_fix_width_height:
        resize_x, resize_y = width, height
        width, height = old_hires_fix_first_pass_dimensions(width, height)

    truncate_x = truncate_y = 0
    if resize_x == 0 and resize_y == 0:
        infotext: dict[str, Any] = {"Hires upscale": scale}
        target_x = int(width * scale)
        target_y = int(height * scale)
    else:
        infotext = {"Hires resize": f"{resize_x}x{resize_y}"}
        if resize_y == 0:
            target_x = resize_x
            target_y = resize_x * height // width
        elif resize_x == 0:
            target_x = resize_y * width // height
            target_y = resize_y
        else:
            src_ratio = width / height
            dst_ratio = resize_x / resize_y
            if src_ratio < dst_ratio:
                target_x = resize_x
                target_y = resize_x * height // width
            else:
                target_x = resize_y * width // height
                target_y = resize_y
            truncate_x = (target_x - resize_x) // OPT_F
            truncate_y = (target_y - resize_y) // OPT_F

    return HiresTarget(
        width=width,
        height=height,
        target_width=target_x,
        target_height=target_y,
        resize_x=resize_x,
        resize_y=resize_y,
        truncate_x=truncate_x,
        truncate_y=truncate_y,
        infotext=infotext,
    )


def truncate_latent(samples: torch.Tensor, truncate_x: int, truncate_y: int) -> torch.Tensor:
    """A1111 ``sample_hr_pass``: cut ``truncate_y // 2`` rows on top and ``(truncate_y + 1) // 2`` at the bottom (same
    for columns) of the upscaled latent, before the second pass's noise is made."""
    return samples[
        :,
        :,
        truncate_y // 2 : samples.shape[2] - (truncate_y + 1) // 2,
        truncate_x // 2 : samples.shape[3] - (truncate_x + 1) // 2,
    ]


# ---------------------------------------------------------------------------------------------------------------------
# img2img steps


def img2img_steps(steps: int, denoising_strength: float, fix_steps: bool) -> tuple[int, int]:
    """A1111 ``sd_samplers_common.setup_img2img_steps`` -> (steps, t_enc).

    The sampler builds a ``steps``-long schedule and runs its last ``t_enc + 1`` steps (k-diffusion:
    ``sigmas[steps - t_enc - 1:]``). Default: steps stays, t_enc = int(min(strength, 0.999) * steps).
    ``fix_steps`` (option ``img2img_fix_steps``, and always for hires second passes, which A1111 calls with explicit
    steps): steps = int(steps / min(strength, 0.999)) (0 when strength is 0) and t_enc = steps - 1, so exactly the
    requested number of steps runs.
    """
    if fix_steps:
        requested_steps = steps
        steps = int(requested_steps / min(denoising_strength, 0.999)) if denoising_strength > 0 else 0
        t_enc = requested_steps - 1
    else:
        t_enc = int(min(denoising_strength, 0.999) * steps)
    return steps, t_enc
