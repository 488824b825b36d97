"""What the built-in selectable scripts share: the plugin that puts a script's ``p.extra_generation_params`` in the
job's infotext, saving a script's own images as A1111's scripts do, and turning a result's images into PIL."""

from __future__ import annotations

from webui.plugins.hooks import hookimpl


class ScriptExtraParams:
    """A1111 scripts set ``p.extra_generation_params[...]`` before ``process_images(p)`` and the entries appear in
    every infotext of the run. ``Processing.to_request`` sends them in ``extension_args["extra_generation_params"]``;
    this plugin's process hook puts them first among the job's extra entries (a script sets them before processing
    adds its own, so A1111 lists them first), the job's own values winning for a key both have."""

    @hookimpl
    def process(self, p):
        extras = p.request.extension_args.get("extra_generation_params")
        if not extras:
            return
        own = dict(p.extra_generation_params)
        p.extra_generation_params.clear()
        p.extra_generation_params.update(extras)
        p.extra_generation_params.update(own)


def save_script_image(p, image, seed, prompt, info, *, grid: bool = False) -> str | None:
    """A1111 ``images.save_image(image, p.outpath_samples / p.outpath_grids, "" / "grid", seed, prompt, ...)`` for the
    images a script assembles itself (SD upscale's result, a loopback grid, outpainted images), when the job saves:
    A1111 checks only ``opts.samples_save`` / ``opts.grid_save``; the API's ``save_images: false`` (our
    ``do_not_save_samples``) keeps script images unsaved too, as it does for every other image of an API job."""
    from webui.core.io import images as io_images

    opts = p.opts
    if not p._request.save_images:
        return None
    if grid:
        if not opts.get("grid_save"):
            return None
        return io_images.save_grid(
            image, p.outpath_grids, seed, prompt, info if opts.get("enable_pnginfo") else None,
            fmt=opts.get("grid_format") or "png", grid_save_to_dirs=bool(opts.get("grid_save_to_dirs")),
            grid_extended_filename=bool(opts.get("grid_extended_filename")), save_to_dirs=bool(opts.get("save_to_dirs")),
            directories_filename_pattern=opts.get("directories_filename_pattern") or "[date]",
            samples_filename_pattern=opts.get("samples_filename_pattern") or "",
            jpeg_quality=int(opts.get("jpeg_quality")),
        )
    if not opts.get("samples_save"):
        return None
    return io_images.save_generated_image(
        image, p.outpath_samples, seed, prompt, info if opts.get("enable_pnginfo") else None,
        fmt=opts.get("samples_format"), save_to_dirs=bool(opts.get("save_to_dirs")),
        directories_filename_pattern=opts.get("directories_filename_pattern") or "[date]",
        samples_filename_pattern=opts.get("samples_filename_pattern") or "[seed]-[prompt_spaces]",
        add_number=bool(opts.get("save_images_add_number")), jpeg_quality=int(opts.get("jpeg_quality")),
    )


def fix_seed(p) -> None:
    """A1111 ``processing.fix_seed``: a random seed/subseed (-1, None or "") drawn now, so that every
    ``process_images`` of the script starts from a known seed."""
    import random

    def fixed(seed):
        if seed is None or seed == "" or seed == -1:
            return int(random.randrange(4294967294))
        return int(seed)

    p.seed = fixed(p.seed)
    p.subseed = fixed(p.subseed)


def expanded_canvas(image, left: int, right: int, up: int, down: int) -> tuple[int, int, int, int, int, int]:
    """The outpainting scripts' canvas (A1111 outpainting_mk_2 / poor_mans_outpainting): the image grown by the asked
    pixels, rounded up to multiples of 64, the extra split between the sides that grow. Returns
    ``(target_w, target_h, left, right, up, down)``."""
    import math

    target_w = math.ceil((image.width + left + right) / 64) * 64
    target_h = math.ceil((image.height + up + down) / 64) * 64
    if left > 0:
        left = left * (target_w - image.width) // (left + right)
    if right > 0:
        right = target_w - image.width - left
    if up > 0:
        up = up * (target_h - image.height) // (up + down)
    if down > 0:
        down = target_h - image.height - up
    return target_w, target_h, left, right, up, down
