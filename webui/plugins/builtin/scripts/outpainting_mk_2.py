"""A1111 ``scripts/outpainting_mk_2.py`` (v1.10.1): "Outpainting mk2", img2img only.

For each chosen direction in turn (left, right, up, down) the image grows by its share of "Pixels to expand" (the
total rounded up to a multiple of 64, split as A1111 splits it); the new strip is filled with noise shaped like the
image's spectrum and colour histogram (``get_matched_noise``, from g-diffuser-bot, deterministic: its generator is
seeded with 0), and a region of at most the request's width x height at that edge is inpainted with "original" masked
content and mask blur ``4 * Mask blur``. Outputs: the grown images (a grid first when option return_grid is on and
there is more than one).

Difference from A1111: A1111 also sets ``p.latent_mask`` (the strip's rectangle shrunk by ``2 * mask_blur``), which
our engine does not take; the latent mask is the (blurred) image mask, as for any inpainting request.
"""

from __future__ import annotations

import math

import numpy as np

from webui.plugins.builtin.scripts.poor_mans_outpainting import DIRECTIONS, check_directions
from webui.plugins.scripts import Script, ScriptArg, ScriptError

TITLE = "Outpainting mk2"
INFO_HTML = ("<p style=\"margin-bottom:0.75em\">Recommended settings: Sampling Steps: 80-100, Sampler: Euler a, "
             "Denoising strength: 0.8</p>")


# this function is taken from https://github.com/parlance-zz/g-diffuser-bot (by way of A1111)
def get_matched_noise(_np_src_image, np_mask_rgb, noise_q=1, color_variation=0.05):
    import skimage.exposure

    # helper fft routines that keep ortho normalization and auto-shift before and after fft
    def _fft2(data):
        if data.ndim > 2:  # has channels
            out_fft = np.zeros((data.shape[0], data.shape[1], data.shape[2]), dtype=np.complex128)
            for c in range(data.shape[2]):
                c_data = data[:, :, c]
                out_fft[:, :, c] = np.fft.fft2(np.fft.fftshift(c_data), norm="ortho")
                out_fft[:, :, c] = np.fft.ifftshift(out_fft[:, :, c])
        else:  # one channel
            out_fft = np.zeros((data.shape[0], data.shape[1]), dtype=np.complex128)
            out_fft[:, :] = np.fft.fft2(np.fft.fftshift(data), norm="ortho")
            out_fft[:, :] = np.fft.ifftshift(out_fft[:, :])
        return out_fft

    def _ifft2(data):
        if data.ndim > 2:  # has channels
            out_ifft = np.zeros((data.shape[0], data.shape[1], data.shape[2]), dtype=np.complex128)
            for c in range(data.shape[2]):
                c_data = data[:, :, c]
                out_ifft[:, :, c] = np.fft.ifft2(np.fft.fftshift(c_data), norm="ortho")
                out_ifft[:, :, c] = np.fft.ifftshift(out_ifft[:, :, c])
        else:  # one channel
            out_ifft = np.zeros((data.shape[0], data.shape[1]), dtype=np.complex128)
            out_ifft[:, :] = np.fft.ifft2(np.fft.fftshift(data), norm="ortho")
            out_ifft[:, :] = np.fft.ifftshift(out_ifft[:, :])
        return out_ifft

    def _get_gaussian_window(width, height, std=3.14, mode=0):
        window_scale_x = float(width / min(width, height))
        window_scale_y = float(height / min(width, height))
        window = np.zeros((width, height))
        x = (np.arange(width) / width * 2. - 1.) * window_scale_x
        for y in range(height):
            fy = (y / height * 2. - 1.) * window_scale_y
            if mode == 0:
                window[:, y] = np.exp(-(x ** 2 + fy ** 2) * std)
            else:
                window[:, y] = (1 / ((x ** 2 + 1.) * (fy ** 2 + 1.))) ** (std / 3.14)  # hey wait a minute that's not gaussian
        return window

    def _get_masked_window_rgb(np_mask_grey, hardness=1.):
        np_mask_rgb = np.zeros((np_mask_grey.shape[0], np_mask_grey.shape[1], 3))
        if hardness != 1.:
            hardened = np_mask_grey[:] ** hardness
        else:
            hardened = np_mask_grey[:]
        for c in range(3):
            np_mask_rgb[:, :, c] = hardened[:]
        return np_mask_rgb

    width = _np_src_image.shape[0]
    height = _np_src_image.shape[1]
    num_channels = _np_src_image.shape[2]

    np_mask_grey = np.sum(np_mask_rgb, axis=2) / 3.
    img_mask = np_mask_grey > 1e-6
    ref_mask = np_mask_grey < 1e-3

    windowed_image = _np_src_image * (1. - _get_masked_window_rgb(np_mask_grey))
    windowed_image /= np.max(windowed_image)
    windowed_image += np.average(_np_src_image) * np_mask_rgb  # fill the masked area with the average unmasked colour

    src_fft = _fft2(windowed_image)  # get feature statistics from masked src img
    src_dist = np.absolute(src_fft)
    src_phase = src_fft / src_dist

    # create a generator with a static seed to make outpainting deterministic / only follow global seed
    rng = np.random.default_rng(0)

    noise_window = _get_gaussian_window(width, height, mode=1)  # start with simple gaussian noise
    noise_rgb = rng.random((width, height, num_channels))
    noise_grey = np.sum(noise_rgb, axis=2) / 3.
    noise_rgb *= color_variation  # the colorfulness of the starting noise is blended to greyscale with a parameter
    for c in range(num_channels):
        noise_rgb[:, :, c] += (1. - color_variation) * noise_grey

    noise_fft = _fft2(noise_rgb)
    for c in range(num_channels):
        noise_fft[:, :, c] *= noise_window
    noise_rgb = np.real(_ifft2(noise_fft))
    shaped_noise_fft = _fft2(noise_rgb)
    shaped_noise_fft[:, :, :] = np.absolute(shaped_noise_fft[:, :, :]) ** 2 * (src_dist ** noise_q) * src_phase  # perform the actual shaping

    brightness_variation = 0.  # color_variation
    contrast_adjusted_np_src = _np_src_image[:] * (brightness_variation + 1.) - brightness_variation * 2.

    # scikit-image is used for histogram matching, very convenient!
    shaped_noise = np.real(_ifft2(shaped_noise_fft))
    shaped_noise -= np.min(shaped_noise)
    shaped_noise /= np.max(shaped_noise)
    shaped_noise[img_mask, :] = skimage.exposure.match_histograms(shaped_noise[img_mask, :] ** 1., contrast_adjusted_np_src[ref_mask, :], channel_axis=1)
    shaped_noise = _np_src_image[:] * (1. - np_mask_rgb) + shaped_noise * np_mask_rgb

    matched_noise = shaped_noise[:]
    return np.clip(matched_noise, 0., 1.)


class ScriptOutpaintingMk2(Script):
    def title(self):
        return TITLE

    def show(self, is_img2img):
        return is_img2img

    def ui(self, is_img2img):
        if not is_img2img:
            return None
        return [
            ScriptArg(None, INFO_HTML, "html"),
            ScriptArg("Pixels to expand", 128, "slider", minimum=8, maximum=256, step=8),
            ScriptArg("Mask blur", 8, "slider", minimum=0, maximum=64, step=1),
            ScriptArg("Outpainting direction", list(DIRECTIONS), "checkboxgroup", choices=list(DIRECTIONS)),
            ScriptArg("Fall-off exponent (lower=higher detail)", 1.0, "slider", minimum=0.0, maximum=4.0, step=0.01),
            ScriptArg("Color variation", 0.05, "slider", minimum=0.0, maximum=1.0, step=0.01),
        ]

    def run(self, p, _, pixels, mask_blur, direction, noise_q, color_variation):
        from PIL import Image, ImageDraw

        from webui.core.generation.processing import Processed, process_images
        from webui.core.io.images import image_grid
        from webui.plugins.builtin.scripts.common import expanded_canvas, save_script_image

        if not p.init_images:
            raise ScriptError(TITLE, "needs an init image")
        direction = check_directions(TITLE, direction)
        pixels, mask_blur = int(pixels), int(mask_blur)
        noise_q, color_variation = float(noise_q), float(color_variation)
        initial_seed_and_info = [None, None, None]

        process_width = p.width
        process_height = p.height

        p.inpaint_full_res = False
        p.inpainting_fill = 1
        p.do_not_save_samples = True
        p.do_not_save_grid = True

        left = pixels if "left" in direction else 0
        right = pixels if "right" in direction else 0
        up = pixels if "up" in direction else 0
        down = pixels if "down" in direction else 0

        mask_blur_x = mask_blur if left > 0 or right > 0 else 0
        mask_blur_y = mask_blur if up > 0 or down > 0 else 0
        p.mask_blur_x = mask_blur_x * 4
        p.mask_blur_y = mask_blur_y * 4

        init_img = p.init_images[0]
        target_w, target_h, left, right, up, down = expanded_canvas(init_img, left, right, up, down)

        def expand(init, count, expand_pixels, is_left=False, is_right=False, is_top=False, is_bottom=False):
            is_horiz = is_left or is_right
            is_vert = is_top or is_bottom
            pixels_horiz = expand_pixels if is_horiz else 0
            pixels_vert = expand_pixels if is_vert else 0

            images_to_process = []
            output_images = []
            for n in range(count):
                res_w = init[n].width + pixels_horiz
                res_h = init[n].height + pixels_vert
                process_res_w = math.ceil(res_w / 64) * 64
                process_res_h = math.ceil(res_h / 64) * 64

                img = Image.new("RGB", (process_res_w, process_res_h))
                img.paste(init[n], (pixels_horiz if is_left else 0, pixels_vert if is_top else 0))
                mask = Image.new("RGB", (process_res_w, process_res_h), "white")
                draw = ImageDraw.Draw(mask)
                draw.rectangle((
                    expand_pixels + mask_blur_x if is_left else 0,
                    expand_pixels + mask_blur_y if is_top else 0,
                    mask.width - expand_pixels - mask_blur_x if is_right else res_w,
                    mask.height - expand_pixels - mask_blur_y if is_bottom else res_h,
                ), fill="black")

                np_image = (np.asarray(img) / 255.0).astype(np.float64)
                np_mask = (np.asarray(mask) / 255.0).astype(np.float64)
                noised = get_matched_noise(np_image, np_mask, noise_q, color_variation)
                output_images.append(Image.fromarray(np.clip(noised * 255., 0., 255.).astype(np.uint8), mode="RGB"))

                target_width = min(process_width, init[n].width + pixels_horiz) if is_horiz else img.width
                target_height = min(process_height, init[n].height + pixels_vert) if is_vert else img.height
                p.width = target_width if is_horiz else img.width
                p.height = target_height if is_vert else img.height

                crop_region = (
                    0 if is_left else output_images[n].width - target_width,
                    0 if is_top else output_images[n].height - target_height,
                    target_width if is_left else output_images[n].width,
                    target_height if is_top else output_images[n].height,
                )
                mask = mask.crop(crop_region)
                p.image_mask = mask

                image_to_process = output_images[n].crop(crop_region)
                images_to_process.append(image_to_process)

            p.init_images = images_to_process
            proc = process_images(p)

            if initial_seed_and_info[0] is None:
                initial_seed_and_info[0] = proc.seed
                initial_seed_and_info[1] = proc.info
                initial_seed_and_info[2] = proc.base_info

            for n in range(count):
                output_images[n].paste(proc.images[n], (
                    0 if is_left else output_images[n].width - proc.images[n].width,
                    0 if is_top else output_images[n].height - proc.images[n].height))
                output_images[n] = output_images[n].crop((0, 0, res_w, res_h))
            return output_images

        batch_count = p.n_iter
        batch_size = p.batch_size
        p.n_iter = 1
        all_processed_images = []
        for _i in range(batch_count):
            imgs = [init_img] * batch_size
            if left > 0:
                imgs = expand(imgs, batch_size, left, is_left=True)
            if right > 0:
                imgs = expand(imgs, batch_size, right, is_right=True)
            if up > 0:
                imgs = expand(imgs, batch_size, up, is_top=True)
            if down > 0:
                imgs = expand(imgs, batch_size, down, is_bottom=True)
            all_processed_images += imgs

        all_images = all_processed_images
        opts = p.opts
        combined_grid_image = image_grid(all_processed_images, n_rows=int(opts.get("n_rows") or -1),
                                         grid_prevent_empty_spots=bool(opts.get("grid_prevent_empty_spots")))
        unwanted_grid_because_of_img_count = len(all_processed_images) < 2 and bool(opts.get("grid_only_if_multiple"))
        if opts.get("return_grid") and not unwanted_grid_because_of_img_count:
            all_images = [combined_grid_image] + all_processed_images

        seed, info, base_info = initial_seed_and_info
        res = Processed(p, all_images, seed, info, base_info=base_info)
        for img in all_processed_images:
            save_script_image(p, img, res.seed, p.prompt, res.info)
        if not unwanted_grid_because_of_img_count:
            save_script_image(p, combined_grid_image, res.seed, p.prompt, res.info, grid=True)
        return res
