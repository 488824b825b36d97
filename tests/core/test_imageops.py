"""webui.core.generation.imageops against numbers worked out by hand from A1111 v1.10.1's code (images.py, masking.py,
processing.py, sd_samplers_common.py, shared.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from webui.core.generation import imageops as io

LANCZOS = Image.Resampling.LANCZOS


def gradient(w: int, h: int) -> Image.Image:
    """An RGB image whose every pixel differs from its neighbours (so crops and offsets are visible)."""
    x = np.arange(w)[None, :].repeat(h, 0)
    y = np.arange(h)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([(x * 7) % 256, (y * 5) % 256, (x * 3 + y * 11) % 256], -1).astype(np.uint8))


def rect_mask(w: int, h: int, box: tuple[int, int, int, int]) -> Image.Image:
    m = Image.new("L", (w, h), 0)
    m.paste(255, box)
    return m


def arr(im: Image.Image) -> np.ndarray:
    return np.array(im).astype(np.int32)


# ---------------------------------------------------------------------------------------------------------------------
# resize_image


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize(
    "src,dst", [((37, 23), (64, 48)), ((23, 37), (64, 48)), ((37, 23), (40, 64)), ((51, 51), (64, 40))]
)
def test_resize_image_gives_requested_size_from_odd_inputs(mode, src, dst):
    out = io.resize_image(mode, gradient(*src), *dst)
    assert out.size == dst
    assert out.mode == "RGB"


def test_just_resize_is_a_plain_lanczos_stretch():
    im = gradient(37, 23)
    assert np.array_equal(arr(io.resize_image(0, im, 64, 48)), arr(im.resize((64, 48), LANCZOS)))
    mask = Image.new("L", (37, 23), 200)
    assert io.resize_image(0, mask, 64, 48).mode == "L"  # mode 0 keeps the mode; 1 and 2 paste onto RGB
    assert io.resize_image(2, mask, 64, 48).mode == "RGB"


def test_crop_and_resize_centres_the_crop():
    # 37x23 -> 64x48: ratio 1.333 <= 1.609, so src_h = 48 and src_w = 37 * 48 // 23 = 77, pasted at x = 32 - 38 = -6
    im = gradient(37, 23)
    out = io.resize_image(1, im, 64, 48)
    expected = im.resize((77, 48), LANCZOS).crop((6, 0, 70, 48))
    assert np.array_equal(arr(out), arr(expected))
    # 23x37 -> 64x48: ratio 1.333 > 0.62, so src_w = 64 and src_h = 37 * 64 // 23 = 102, pasted at y = 24 - 51 = -27
    im = gradient(23, 37)
    out = io.resize_image(1, im, 64, 48)
    expected = im.resize((64, 102), LANCZOS).crop((0, 27, 64, 75))
    assert np.array_equal(arr(out), arr(expected))


def test_resize_and_fill_pastes_centred_and_stretches_the_edges_into_the_bands():
    # 37x23 -> 64x48: src_w = 64, src_h = 23 * 64 // 37 = 39, pasted at y = 24 - 19 = 5; bands of 24 - 19 = 5 rows
    im = gradient(37, 23)
    out = arr(io.resize_image(2, im, 64, 48))
    resized = arr(im.resize((64, 39), LANCZOS))
    assert np.array_equal(out[5:44], resized)
    # top band: every row is the same (the first row stretched); bottom band (rows 44..47) the last row
    assert all(np.array_equal(out[r], out[0]) for r in range(5))
    assert all(np.array_equal(out[r], out[44]) for r in range(44, 48))
    # PIL samples the zero-height box at the edge: the edge row, up to the filter's rounding
    assert np.abs(out[0] - resized[0]).max() <= 8
    assert np.abs(out[47] - resized[-1]).max() <= 8

    # 23x37 -> 64x48: src_h = 48, src_w = 23 * 48 // 37 = 29, pasted at x = 32 - 14 = 18; bands of 18 columns
    im = gradient(23, 37)
    out = arr(io.resize_image(2, im, 64, 48))
    resized = arr(im.resize((29, 48), LANCZOS))
    assert np.array_equal(out[:, 18:47], resized)
    assert all(np.array_equal(out[:, c], out[:, 0]) for c in range(18))
    assert all(np.array_equal(out[:, c], out[:, 47]) for c in range(47, 64))
    assert np.abs(out[:, 0] - resized[:, 0]).max() <= 8
    assert np.abs(out[:, 63] - resized[:, -1]).max() <= 8
    # same aspect: no bands, a plain resize
    im = gradient(30, 20)
    assert np.array_equal(arr(io.resize_image(2, im, 60, 40)), arr(im.resize((60, 40), LANCZOS)))


def test_mode_3_falls_into_resize_and_fill_as_in_a1111():
    im = gradient(37, 23)
    assert np.array_equal(arr(io.resize_image(3, im, 64, 48)), arr(io.resize_image(2, im, 64, 48)))


def test_upscaler_is_called_only_to_enlarge_non_mask_images():
    calls = []

    def upscaler(img, scale):
        calls.append((img.size, scale))
        return img.resize((int(img.width * scale), int(img.height * scale)), Image.Resampling.NEAREST)

    im = gradient(20, 10)
    out = io.resize_image(0, im, 64, 32, upscaler)
    assert calls == [((20, 10), 3.2)]
    # the upscaler's 64x32 is already the size: no LANCZOS pass after it
    assert np.array_equal(arr(out), arr(im.resize((64, 32), Image.Resampling.NEAREST)))

    calls.clear()
    io.resize_image(0, gradient(80, 40), 64, 32, upscaler)  # shrinking
    io.resize_image(0, Image.new("L", (20, 10)), 64, 32, upscaler)  # masks: LANCZOS only
    assert calls == []

    # upscaler result of another size is brought to the exact size with LANCZOS; mode 1 asks for its cover size
    out = io.resize_image(1, gradient(20, 10), 30, 30, lambda img, s: calls.append(s) or img.resize((64, 32)))
    assert calls == [3.0] and out.size == (30, 30)


# ---------------------------------------------------------------------------------------------------------------------
# flatten, grid


def test_flatten_composites_alpha_over_the_background_colour():
    im = Image.new("RGBA", (2, 1))
    im.putpixel((0, 0), (200, 10, 20, 0))
    im.putpixel((1, 0), (200, 10, 20, 255))
    out = io.flatten(im, "#ffffff")
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 0)) == (200, 10, 20)
    assert io.flatten(im, "#000000").getpixel((0, 0)) == (0, 0, 0)
    assert io.flatten(Image.new("L", (1, 1), 77), "#ffffff").getpixel((0, 0)) == (77, 77, 77)


def test_create_binary_mask():
    rgba = Image.new("RGBA", (4, 1), (0, 0, 0, 0))
    for x, a in enumerate((0, 128, 129, 255)):
        rgba.putpixel((x, 0), (0, 0, 0, a))
    assert list(io.create_binary_mask(rgba).getdata()) == [0, 0, 255, 255]  # alpha > 128
    assert list(io.create_binary_mask(rgba, round=False).getdata()) == [0, 128, 129, 255]
    opaque = Image.new("RGBA", (1, 1), (100, 100, 100, 255))  # no transparency: the colour, converted to L
    assert list(io.create_binary_mask(opaque).getdata()) == [100]
    grey = Image.new("L", (1, 1), 100)  # "L" masks are not thresholded, round or not
    assert list(io.create_binary_mask(grey).getdata()) == [100]


def test_blur_mask_per_axis_with_a1111_kernel():
    m = Image.new("L", (21, 21), 0)
    m.paste(255, (10, 0, 11, 21))  # one white column
    # sigma 1: kernel 2 * int(2.5 + 0.5) + 1 = 7 taps, exp(-d^2 / 2) normalised, times 255: 102, 62, 14, 1
    out = np.array(io.blur_mask(m, 1, 0))
    assert out[5].tolist() == [0] * 7 + [1, 14, 62, 102, 62, 14, 1] + [0] * 7
    assert all(np.array_equal(out[r], out[5]) for r in range(21))
    assert np.array_equal(np.array(io.blur_mask(m, 0, 3)), np.array(m))  # a vertical blur leaves a column alone
    # the vertical blur of a white row gives the same profile
    row = Image.new("L", (21, 21), 0)
    row.paste(255, (0, 10, 21, 11))
    assert np.array(io.blur_mask(row, 0, 1))[:, 4].tolist() == [0] * 7 + [1, 14, 62, 102, 62, 14, 1] + [0] * 7
    # sigma 4: 2 * int(10.5) + 1 = 21 taps: reaches 10 px away (255 * 0.0044 -> 1), nothing at 11
    wide = Image.new("L", (41, 3), 0)
    wide.paste(255, (20, 0, 21, 3))
    prof = np.array(io.blur_mask(wide, 4, 0))[1]
    assert prof[10] == 1 and prof[30] == 1 and prof[9] == 0 and prof[31] == 0
    assert io.blur_mask(m, 0, 0) is m


def test_crop_region_v2_and_legacy():
    m = rect_mask(512, 512, (100, 200, 140, 220))
    assert io.get_crop_region_v2(m) == (100, 200, 140, 220)
    assert io.get_crop_region_v2(m, 32) == (68, 168, 172, 252)
    assert io.get_crop_region_v2(np.array(m), 32) == (68, 168, 172, 252)
    corner = rect_mask(512, 512, (0, 0, 10, 10))
    assert io.get_crop_region_v2(corner, 32) == (0, 0, 42, 42)
    blank = Image.new("L", (512, 512), 0)
    assert io.get_crop_region_v2(blank, 32) is None
    assert io.get_crop_region(blank) == (512, 512, 0, 0)
    assert io.get_crop_region(blank, 32) == (480, 480, 32, 32)
    assert io.get_crop_region(m, 32) == (68, 168, 172, 252)


def test_expand_crop_region_to_processing_aspect():
    box = (68, 168, 172, 252)  # 104 x 84
    # square: taller by int(104 - 84) = 20, 10 each side
    assert io.expand_crop_region(box, 512, 512, 512, 512) == (68, 158, 172, 262)
    # 512x768: desired height 104 * 1.5 = 156, diff 72
    assert io.expand_crop_region(box, 512, 768, 512, 512) == (68, 132, 172, 288)
    # 768x512: wider: 84 * 1.5 = 126, diff 22
    assert io.expand_crop_region(box, 768, 512, 512, 512) == (57, 168, 183, 252)
    # off the left edge: moved right
    assert io.expand_crop_region((0, 0, 42, 42), 1024, 512, 100, 60) == (0, 0, 84, 42)
    # off the right edge: moved left
    assert io.expand_crop_region((80, 0, 100, 10), 1024, 256, 100, 100) == (60, 0, 100, 10)
    # image too small for the aspect: clipped
    assert io.expand_crop_region((0, 0, 10, 10), 512, 128, 20, 20) == (0, 0, 20, 10)


def test_fill_keeps_unmasked_pixels_and_paints_the_masked_ones():
    im = Image.new("RGB", (64, 64), (200, 40, 10))
    im.paste((0, 0, 0), (20, 20, 40, 40))
    mask = rect_mask(64, 64, (20, 20, 40, 40))
    out = arr(io.fill(im, mask))
    assert np.array_equal(out[:20], arr(im)[:20])
    # the black hole is painted with the surrounding colour
    assert np.abs(out[30, 30] - [200, 40, 10]).max() <= 6


# ---------------------------------------------------------------------------------------------------------------------
# prepare_inpaint / apply_overlay


def test_prepare_inpaint_only_masked_on_a_small_mask_in_a_big_image():
    init = gradient(301, 203)
    mask = rect_mask(301, 203, (100, 50, 140, 70))
    prep = io.prepare_inpaint(
        init,
        mask,
        width=64,
        height=64,
        resize_mode=0,
        mask_blur_x=0,
        mask_blur_y=0,
        mask_round=True,
        invert=False,
        inpaint_full_res=True,
        padding=8,
        fill_mode=1,
    )
    # box (100, 50, 140, 70) + 8 = (92, 42, 148, 78): 56 x 36, made square: 20 more rows, 10 each side
    assert prep.crop_region == (92, 32, 148, 88)
    assert prep.paste_to == (92, 32, 56, 56)
    assert prep.inpaint_full_res
    assert prep.image.size == (64, 64)
    assert np.array_equal(arr(prep.image), arr(init.crop((92, 32, 148, 88)).resize((64, 64), LANCZOS)))
    assert prep.mask.size == (64, 64) and prep.mask.mode == "RGB"  # resize mode 2 output, as A1111
    assert prep.latent_mask is prep.mask
    # the mask's box maps 56 -> 64: (8, 18, 48, 38) * 64/56 ~ (9, 21, 55, 43)
    cm = np.array(prep.mask.convert("L"))
    assert cm[32, 32] == 255 and cm[5, 5] == 0 and cm[32, 60] == 0
    assert prep.mask_for_overlay.size == (301, 203)
    assert prep.overlay.size == (301, 203) and prep.overlay.mode == "RGBA"
    alpha = np.array(prep.overlay)[:, :, 3]
    assert alpha[60, 120] == 0 and alpha[10, 10] == 255 and alpha[60, 99] == 255
    assert prep.extra_generation_params == {"Inpaint area": "Only masked", "Masked area padding": 8}
    assert not prep.latent_resize

    # the pass's output goes back at paste_to; outside the mask the init image is untouched
    result = Image.new("RGB", (64, 64), (1, 2, 3))
    final, before = io.apply_overlay(result, prep.paste_to, prep.overlay)
    assert final.size == (301, 203) and final.mode == "RGB"
    f = arr(final)
    assert f[60, 120].tolist() == [1, 2, 3]
    outside = alpha == 255
    assert np.array_equal(f[outside], arr(init)[outside])
    assert before.mode == "RGBA" and before.getpixel((10, 10))[3] == 0  # uncropped, not composited


def test_prepare_inpaint_only_masked_fill_paints_inside_only():
    init = gradient(301, 203)
    mask = rect_mask(301, 203, (100, 50, 140, 70))
    kw = {
        "width": 64,
        "height": 64,
        "resize_mode": 0,
        "mask_blur_x": 0,
        "mask_blur_y": 0,
        "mask_round": True,
        "invert": False,
        "inpaint_full_res": True,
        "padding": 8,
    }
    orig = io.prepare_inpaint(init, mask, fill_mode=1, **kw)
    filled = io.prepare_inpaint(init, mask, fill_mode=0, **kw)
    assert filled.extra_generation_params["Masked content"] == "fill"
    m = np.array(orig.mask.convert("L"))
    a, b = arr(orig.image), arr(filled.image)
    assert np.array_equal(a[m == 0], b[m == 0])
    assert not np.array_equal(a[m == 255], b[m == 255])
    # A1111 fills for latent noise / latent nothing too
    assert np.array_equal(arr(io.prepare_inpaint(init, mask, fill_mode=2, **kw).image), b)
    assert (
        io.prepare_inpaint(init, mask, fill_mode=3, **kw).extra_generation_params["Masked content"] == "latent nothing"
    )


def test_prepare_inpaint_whole_picture():
    init = gradient(301, 203)
    mask = rect_mask(301, 203, (100, 50, 140, 70))
    prep = io.prepare_inpaint(
        init,
        mask,
        width=96,
        height=64,
        resize_mode=0,
        mask_blur_x=4,
        mask_blur_y=4,
        mask_round=True,
        invert=False,
        inpaint_full_res=False,
        padding=32,
        fill_mode=1,
    )
    blurred = io.blur_mask(mask, 4, 4)
    expected_mask = blurred.resize((96, 64), LANCZOS)
    assert np.array_equal(np.array(prep.mask), np.array(expected_mask))
    assert np.array_equal(np.array(prep.mask_for_overlay), np.clip(np.array(expected_mask).astype(int) * 2, 0, 255))
    assert prep.paste_to is None and prep.crop_region is None and not prep.inpaint_full_res
    assert np.array_equal(arr(prep.image), arr(init.resize((96, 64), LANCZOS)))
    assert prep.overlay.size == (96, 64)
    assert prep.extra_generation_params == {"Mask blur": 4}

    final, _ = io.apply_overlay(Image.new("RGB", (96, 64), (9, 9, 9)), prep.paste_to, prep.overlay)
    keep = np.array(prep.mask_for_overlay) == 0
    assert np.array_equal(arr(final)[keep], arr(prep.image)[keep])
    assert np.array(prep.mask_for_overlay)[19, 38] == 255
    assert arr(final)[19, 38].tolist() == [9, 9, 9]  # mask centre (120, 60) * (96/301, 64/203)

    inv = io.prepare_inpaint(
        init,
        mask,
        width=96,
        height=64,
        resize_mode=0,
        mask_blur_x=2,
        mask_blur_y=3,
        mask_round=True,
        invert=True,
        inpaint_full_res=False,
        padding=0,
        fill_mode=1,
    )
    assert inv.extra_generation_params == {"Mask mode": "Inpaint not masked"}  # unequal blur: no "Mask blur"
    assert np.array(inv.mask)[19, 38] <= 5 and np.array(inv.mask)[2, 2] == 255

    # crop-and-resize mode resizes the mask the same way as the image
    crop = io.prepare_inpaint(
        init,
        mask,
        width=64,
        height=64,
        resize_mode=1,
        mask_blur_x=0,
        mask_blur_y=0,
        mask_round=True,
        invert=False,
        inpaint_full_res=False,
        padding=0,
        fill_mode=1,
    )
    assert np.array_equal(np.array(crop.mask), np.array(io.resize_image(1, mask, 64, 64)))


def test_prepare_inpaint_blank_mask_only_masked_falls_back_to_img2img():
    init = gradient(100, 60)
    prep = io.prepare_inpaint(
        init,
        Image.new("L", (100, 60), 0),
        width=64,
        height=64,
        resize_mode=1,
        mask_blur_x=4,
        mask_blur_y=4,
        mask_round=True,
        invert=False,
        inpaint_full_res=True,
        padding=32,
        fill_mode=0,
    )
    assert prep.mask is None and prep.overlay is None and prep.mask_for_overlay is None and prep.paste_to is None
    assert not prep.inpaint_full_res
    assert prep.comments == (io.BLANK_MASK_COMMENT,)
    assert np.array_equal(arr(prep.image), arr(io.resize_image(1, init, 64, 64)))
    assert "Masked content" not in prep.extra_generation_params


def test_prepare_inpaint_mask_of_another_size_and_alpha_masks():
    init = gradient(120, 80)
    mask = rect_mask(60, 40, (20, 10, 40, 30))  # half size
    prep = io.prepare_inpaint(
        init,
        mask,
        width=64,
        height=64,
        resize_mode=0,
        mask_blur_x=0,
        mask_blur_y=0,
        mask_round=True,
        invert=False,
        inpaint_full_res=False,
        padding=0,
        fill_mode=1,
    )
    assert prep.mask.size == (64, 64) and prep.overlay.size == (64, 64)
    rgba = Image.new("RGBA", (120, 80), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 255), (40, 20, 80, 60))
    a = io.prepare_inpaint(
        init,
        rgba,
        width=64,
        height=64,
        resize_mode=0,
        mask_blur_x=0,
        mask_blur_y=0,
        mask_round=True,
        invert=False,
        inpaint_full_res=True,
        padding=0,
        fill_mode=1,
    )
    assert a.crop_region == (40, 20, 80, 60)


def test_prepare_inpaint_mode_3():
    init = gradient(96, 64)
    mask = rect_mask(96, 64, (30, 20, 60, 40))
    prep = io.prepare_inpaint(
        init,
        mask,
        width=96,
        height=64,
        resize_mode=3,
        mask_blur_x=0,
        mask_blur_y=0,
        mask_round=True,
        invert=False,
        inpaint_full_res=False,
        padding=0,
        fill_mode=1,
    )
    assert prep.latent_resize and prep.image.size == (96, 64)
    with pytest.raises(ValueError, match="resize mode 3"):
        io.prepare_inpaint(
            gradient(100, 60),
            rect_mask(100, 60, (30, 20, 60, 40)),
            width=96,
            height=64,
            resize_mode=3,
            mask_blur_x=0,
            mask_blur_y=0,
            mask_round=True,
            invert=False,
            inpaint_full_res=False,
            padding=0,
            fill_mode=1,
        )
    full = io.prepare_inpaint(
        gradient(100, 60),
        rect_mask(100, 60, (30, 20, 60, 40)),
        width=96,
        height=64,
        resize_mode=3,
        mask_blur_x=0,
        mask_blur_y=0,
        mask_round=True,
        invert=False,
        inpaint_full_res=True,
        padding=0,
        fill_mode=1,
    )
    assert full.image.size == (96, 64) and full.paste_to is not None
    with pytest.raises(ValueError, match="resize_mode"):
        io.prepare_init_image(init, width=64, height=64, resize_mode=4)


def test_prepare_init_image():
    im = Image.new("RGBA", (37, 23), (10, 20, 30, 0))
    p = io.prepare_init_image(im, width=64, height=48, resize_mode=2)
    assert p.image.size == (64, 48) and p.image.getpixel((30, 20)) == (255, 255, 255) and not p.latent_resize
    p3 = io.prepare_init_image(im, width=64, height=48, resize_mode=3, background_color="#000000")
    assert p3.image.size == (37, 23) and p3.latent_resize and p3.image.getpixel((0, 0)) == (0, 0, 0)


def test_latent_masks():
    m = rect_mask(64, 64, (0, 0, 32, 64))  # left half white
    mask, nmask = io.latent_masks(m.convert("RGB"), (4, 8, 8), mask_round=True)
    assert mask.shape == (4, 8, 8) and mask.dtype == torch.float32
    assert torch.equal(nmask[:, :, :4], torch.ones(4, 8, 4)) and torch.equal(nmask[:, :, 4:], torch.zeros(4, 8, 4))
    assert torch.equal(mask, 1 - nmask)
    grey = Image.new("L", (64, 64), 100)
    _, n = io.latent_masks(grey, (1, 4, 16, 16), mask_round=False)
    assert n.shape == (4, 16, 16) and torch.allclose(n, torch.full((4, 16, 16), 100 / 255))
    _, n = io.latent_masks(grey, (4, 16, 16), mask_round=True)
    assert torch.equal(n, torch.zeros(4, 16, 16))


def test_apply_overlay_without_overlay_returns_a_copy():
    im = gradient(8, 8)
    a, b = io.apply_overlay(im, None, None)
    assert a is im and b is not im and np.array_equal(arr(a), arr(b))


# ---------------------------------------------------------------------------------------------------------------------
# colour correction


def _setlum_reference(colours: np.ndarray, new_lum: np.ndarray) -> np.ndarray:
    """blendmodes 2022 ``_setLum``, literally (per-pixel loop), the reference for the vectorised blend."""

    def lum(c):
        return (c[:, :, 0] * 0.299) + (c[:, :, 1] * 0.587) + (c[:, :, 2] * 0.114)

    c = colours.copy()
    d = new_lum - lum(c)
    c[:, :, 0] += d
    c[:, :, 1] += d
    c[:, :, 2] += d
    L = lum(c)
    mn, mx = np.min(c, axis=2), np.max(c, axis=2)
    for i in range(c.shape[0]):
        for j in range(c.shape[1]):
            col = c[i][j]
            nl = L[i, j]
            if mn[i, j] < 0:
                c[i][j] = nl + (((col - nl) * nl) / (nl - mn[i, j]))
            if mx[i, j] > 1:
                c[i][j] = nl + (((col - nl) * (1 - nl)) / (mx[i, j] - nl))
    return c


def test_luminosity_blend_by_hand_and_against_blendmodes_loop():
    def px(rgb):
        return Image.new("RGB", (1, 1), rgb)

    # in range: (100, 50, 200) takes grey 120's luminosity: + (120 - 82.05) -> (137.95, 87.95, 237.95) -> truncated
    assert io._luminosity_blend(px((100, 50, 200)), px((120, 120, 120))).getpixel((0, 0)) == (137, 87, 237, 255)
    # below 0: (10, 10, 250) to luminosity 20 -> (-7.36, -7.36, 232.64), pulled in: (0, 0, 20 + 212.64 * 20 / 27.36)
    assert io._luminosity_blend(px((10, 10, 250)), px((20, 20, 20))).getpixel((0, 0)) == (0, 0, 175, 255)
    rng = np.random.default_rng(3)
    bg = rng.integers(0, 256, (12, 17, 3), dtype=np.uint8)
    fg = (rng.integers(0, 256, (12, 17, 3)) * [1, 0.2, 0.9]).astype(np.uint8)
    ref = _setlum_reference(bg / 255, ((fg / 255) * [0.299, 0.587, 0.114]).sum(-1))
    ref = np.clip(ref, 0, 1)
    assert ref.min() == 0 or ref.max() == 1
    expected = (ref * 255).astype(np.uint8)
    out = np.array(io._luminosity_blend(Image.fromarray(bg), Image.fromarray(fg)))
    lum = lambda c: (c[:, :, 0] * 0.299) + (c[:, :, 1] * 0.587) + (c[:, :, 2] * 0.114)
    # the test's per-channel sum differs from _lum's order by rounding only; compare with _lum's own order
    ref2 = np.clip(_setlum_reference(bg / 255, lum(fg / 255)), 0, 1)
    assert np.array_equal(out[:, :, :3], (ref2 * 255).astype(np.uint8))
    assert np.abs(out[:, :, :3].astype(int) - expected).max() <= 1
    assert (out[:, :, 3] == 255).all()


def test_match_histograms_by_hand():
    # source values 10 (x2), 20 (x2); template 0, 100, 200, 250: quantiles 0.5, 1.0 against 0.25, 0.5, 0.75, 1.0
    src = np.array([[10, 10, 20, 20]], dtype=np.uint8)[:, :, None]
    tmpl = np.array([[0, 100, 200, 250]], dtype=np.uint8)[:, :, None]
    assert io._match_histograms(src, tmpl)[0, :, 0].tolist() == [100, 100, 250, 250]
    # interpolated values are truncated into uint8: src quantiles 1/3, 2/3, 1 on template (0 | 255): 0, 85, 170, 255
    src = np.array([[1, 2, 3]], dtype=np.uint8)[:, :, None]
    tmpl = np.array([[0, 255, 255, 255]], dtype=np.uint8)[:, :, None]  # quantiles 0.25 -> 0, 1.0 -> 255
    # 1/3: 0 + (1/3 - 0.25) / 0.75 * 255 = 28.33 -> 28; 2/3: 141.67 -> 141
    assert io._match_histograms(src, tmpl)[0, :, 0].tolist() == [28, 141, 255]


def test_color_correction_pulls_colours_back_to_the_init_image():
    init = gradient(64, 48)
    corr = io.setup_color_correction(init)
    assert corr.shape == (48, 64, 3) and corr.dtype == np.uint8
    cast = Image.fromarray(np.clip(arr(init) + [60, -30, 0], 0, 255).astype(np.uint8))
    fixed = io.apply_color_correction(corr, cast)
    assert fixed.mode == "RGB" and fixed.size == init.size
    before = np.abs(arr(cast).mean((0, 1)) - arr(init).mean((0, 1))).sum()
    after = np.abs(arr(fixed).mean((0, 1)) - arr(init).mean((0, 1))).sum()
    assert after < before / 3
    # an image corrected against itself keeps (almost) its colours
    same = io.apply_color_correction(corr, init)
    assert np.abs(arr(same) - arr(init)).mean() < 3


# ---------------------------------------------------------------------------------------------------------------------
# inpainting-model conditioning


def fake_encode(x: torch.Tensor) -> torch.Tensor:
    """A stand-in VAE: 8x8 average pooling, 4 channels (the 3 colours and their mean)."""
    pooled = torch.nn.functional.avg_pool2d(x, 8)
    return torch.cat([pooled, pooled.mean(1, keepdim=True)], 1)


def test_txt2img_image_conditioning():
    c = io.txt2img_image_conditioning(2, 64, 48, fake_encode, dtype=torch.float16)
    assert c.shape == (2, 5, 6, 8) and c.dtype == torch.float16
    assert torch.equal(c[:, 0], torch.ones(2, 6, 8, dtype=torch.float16))
    assert torch.equal(c[:, 1:], torch.zeros(2, 4, 6, 8, dtype=torch.float16))  # 0.5 grey in [0, 1] = 0


def test_inpainting_image_conditioning():
    src = torch.full((2, 3, 64, 64), 0.5)
    mask = rect_mask(64, 64, (0, 0, 32, 64))
    c = io.inpainting_image_conditioning(src, (8, 8), fake_encode, mask)
    assert c.shape == (2, 5, 8, 8)
    assert torch.equal(c[:, 0, :, :4], torch.ones(2, 8, 4)) and torch.equal(c[:, 0, :, 4:], torch.zeros(2, 8, 4))
    assert torch.equal(c[:, 1:, :, :4], torch.zeros(2, 4, 8, 4))  # masked part blanked
    assert torch.allclose(c[:, 1:, :, 4:], torch.full((2, 4, 8, 4), 0.5))
    # mask weight 0.25: lerp(src, 0, 0.25) = 0.375 under the mask
    c = io.inpainting_image_conditioning(src, (8, 8), fake_encode, mask, mask_weight=0.25)
    assert torch.allclose(c[:, 1:, :, :4], torch.full((2, 4, 8, 4), 0.375))
    # grey mask 100/255 rounds to 0 unless round_image_mask is off; no mask = all ones
    grey = Image.new("L", (64, 64), 100)
    assert torch.equal(io.inpainting_image_conditioning(src, (8, 8), fake_encode, grey)[:, 0], torch.zeros(2, 8, 8))
    c = io.inpainting_image_conditioning(src, (8, 8), fake_encode, grey, round_image_mask=False)
    assert torch.allclose(c[:, 0], torch.full((2, 8, 8), 100 / 255))
    c = io.inpainting_image_conditioning(src, (8, 8), fake_encode, None, mask_weight=0.5)
    assert torch.equal(c[:, 0], torch.ones(2, 8, 8)) and torch.allclose(c[:, 1:], torch.full((2, 4, 8, 8), 0.25))


# ---------------------------------------------------------------------------------------------------------------------
# hires fix


def test_latent_upscale_modes_table():
    assert list(io.LATENT_UPSCALE_MODES) == [
        "Latent",
        "Latent (antialiased)",
        "Latent (bicubic)",
        "Latent (bicubic antialiased)",
        "Latent (nearest)",
        "Latent (nearest-exact)",
    ]
    assert io.LATENT_UPSCALE_MODES["Latent (bicubic antialiased)"] == ("bicubic", True)
    assert io.LATENT_UPSCALE_DEFAULT_MODE == "Latent"


@pytest.mark.parametrize("name", list(io.LATENT_UPSCALE_MODES))
def test_upscale_latent_shapes(name):
    lat = torch.randn(2, 4, 8, 12, generator=torch.Generator().manual_seed(0))
    out = io.upscale_latent(lat, 200, 136, name)
    assert out.shape == (2, 4, 17, 25)  # (136 // 8, 200 // 8)
    mode, aa = io.LATENT_UPSCALE_MODES[name]
    assert torch.equal(out, torch.nn.functional.interpolate(lat, size=(17, 25), mode=mode, antialias=aa))


def test_upscale_latent_nearest_repeats_and_rejects_unknown_modes():
    lat = torch.arange(6.0).reshape(1, 1, 2, 3)
    out = io.upscale_latent(lat, 48, 32, "Latent (nearest)")
    assert out[0, 0].tolist() == [[0, 0, 1, 1, 2, 2]] * 2 + [[3, 3, 4, 4, 5, 5]] * 2
    with pytest.raises(ValueError, match="Latent \\(nearest-exact\\)"):
        io.upscale_latent(lat, 48, 32, "Lanczos")


def test_hires_target_scale():
    t = io.hires_target(512, 512, scale=2)
    assert (t.width, t.height, t.target_width, t.target_height) == (512, 512, 1024, 1024)
    assert t.infotext == {"Hires upscale": 2} and (t.truncate_x, t.truncate_y) == (0, 0)
    t = io.hires_target(512, 768, scale=1.3)  # int(665.6), int(998.4)
    assert (t.target_width, t.target_height) == (665, 998)
    assert (t.final_width, t.final_height) == (664, 992)


def test_hires_target_resize_one_side():
    t = io.hires_target(512, 768, scale=2, resize_x=1000)
    assert (t.target_width, t.target_height) == (1000, 1500)  # 1000 * 768 // 512
    assert t.infotext == {"Hires resize": "1000x0"}
    t = io.hires_target(512, 768, scale=2, resize_y=1000)
    assert (t.target_width, t.target_height) == (666, 1000)  # 1000 * 512 // 768
    assert t.infotext == {"Hires resize": "0x1000"} and (t.truncate_x, t.truncate_y) == (0, 0)


def test_hires_target_resize_both_crops():
    t = io.hires_target(512, 768, resize_x=1024, resize_y=1024)  # taller: cover width, cut rows
    assert (t.target_width, t.target_height, t.truncate_x, t.truncate_y) == (1024, 1536, 0, 64)
    assert (t.final_width, t.final_height) == (1024, 1024)
    assert t.infotext == {"Hires resize": "1024x1024"}
    t = io.hires_target(768, 512, resize_x=1024, resize_y=1024)
    assert (t.target_width, t.target_height, t.truncate_x, t.truncate_y) == (1536, 1024, 64, 0)
    t = io.hires_target(512, 512, resize_x=1000, resize_y=600)
    assert (t.target_width, t.target_height, t.truncate_x, t.truncate_y) == (1000, 1000, 0, 50)
    assert (t.final_width, t.final_height) == (1000, 600)
    lat = torch.zeros(1, 4, 125, 125)
    assert io.truncate_latent(lat, t.truncate_x, t.truncate_y).shape == (1, 4, 75, 125)


def test_truncate_latent_takes_the_extra_cell_from_the_end():
    lat = torch.arange(20.0).reshape(1, 1, 1, 20).expand(1, 1, 3, 20)
    out = io.truncate_latent(lat, 9, 1)  # cols 4 .. 20 - 5, rows 0 .. 3 - 1
    assert out.shape == (1, 1, 2, 11) and out[0, 0, 0].tolist() == list(range(4, 15))


def test_hires_target_legacy_firstphase_and_old_behaviour():
    t = io.hires_target(1024, 1024, scale=2, firstphase_width=512, firstphase_height=384)
    assert (t.width, t.height, t.target_width, t.target_height) == (512, 384, 1024, 768)
    with pytest.raises(ValueError):
        io.hires_target(1024, 1024, firstphase_width=512)
    # old behaviour: 1024x768 is the final size; first pass sqrt(512*512 / (1024*768)) scaled up to multiples of 64
    assert io.old_hires_fix_first_pass_dimensions(1024, 768) == (640, 448)
    t = io.hires_target(1024, 768, scale=2, use_old_hires_fix_width_height=True)
    assert (t.width, t.height) == (640, 448) and (t.resize_x, t.resize_y) == (1024, 768)
    # 640/448 >= 1024/768: cover the height, 768 * 640 // 448 = 1097 wide, (1097 - 1024) // 8 = 9 cells cut
    assert (t.target_width, t.target_height, t.truncate_x, t.truncate_y) == (1097, 768, 9, 0)
    assert t.infotext == {"Hires resize": "1024x768"}


# ---------------------------------------------------------------------------------------------------------------------
# img2img steps


@pytest.mark.parametrize(
    "steps,strength,fix,expected",
    [
        (20, 0.75, False, (20, 15)),
        (20, 0.75, True, (26, 19)),  # int(20 / 0.75)
        (20, 1.0, False, (20, 19)),  # min(1, 0.999) * 20 = 19.98
        (20, 1.0, True, (20, 19)),  # int(20 / 0.999)
        (20, 0.0, False, (20, 0)),
        (20, 0.0, True, (0, 19)),
        (30, 0.33, False, (30, 9)),
        (30, 0.33, True, (90, 29)),  # int(90.9)
        (25, 0.5, True, (50, 24)),
    ],
)
def test_img2img_steps(steps, strength, fix, expected):
    assert io.img2img_steps(steps, strength, fix) == expected
    s, t_enc = expected
    if fix and strength > 0:
        assert s - (s - t_enc - 1) == steps  # exactly the requested steps run
    assert math.isfinite(s)
