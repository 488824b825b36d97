"""Where a generation's images go: the grid of a multi-image job and the saved files (A1111's folders, names and
metadata), with the on_before_image_saved / on_image_saved hooks around each write."""

from __future__ import annotations

from webui.core.io import files
from webui.core.io.images import save_generated_image


def output_dir(p, grid: bool = False) -> str:
    """This job's samples (or grids) folder, by A1111's rule (``webui.core.io.files.output_dir``)."""
    kind = "img2img" if p.request.mode != "txt2img" else "txt2img"
    return files.output_dir(p.opts.get, kind, p.services.paths.data_dir, grid=grid)


def save_image(p, image, index: int, text: str) -> str:
    """Save image ``index`` of the job with its infotext (when enable_pnginfo) as A1111 names it."""
    opts = p.opts
    params = SavedImageParams(image=image, filename=None, pnginfo={"parameters": text}, index=index)
    p.call_hook("on_before_image_saved", params=params)
    text = params.pnginfo.get("parameters", text)
    path = save_generated_image(
        params.image,
        output_dir(p),
        p.all_seeds[index],
        p.all_prompts[index],
        text if opts.get("enable_pnginfo") else None,
        fmt=opts.get("samples_format"),
        save_to_dirs=bool(opts.get("save_to_dirs")),
        directories_filename_pattern=opts.get("directories_filename_pattern") or "[date]",
        # The issue's NNNNN-SEED-PROMPT naming: A1111's "[seed]-[prompt_spaces]" pattern when none is set.
        samples_filename_pattern=opts.get("samples_filename_pattern") or "[seed]-[prompt_spaces]",
        add_number=bool(opts.get("save_images_add_number")),
        jpeg_quality=int(opts.get("jpeg_quality")),
    )
    params.filename = path
    p.call_hook("on_image_saved", params=params)
    return path


def make_grid(p, images, infotexts):
    """A1111 image_grid of the job's images, carrying the first image's infotext."""
    from webui.core.io.images import image_grid

    opts = p.opts
    grid = image_grid(images, batch_size=p.batch_size, n_rows=int(opts.get("n_rows") or -1),
                      grid_prevent_empty_spots=bool(opts.get("grid_prevent_empty_spots")))
    text = infotexts[0] if infotexts else ""
    grid.info["parameters"] = text
    return grid, text


def save_grid(p, grid, text) -> str:
    """A1111 saves the grid of a multi-image job as outputs/<mode>-grids/<date>/grid-NNNN.png."""
    from webui.core.io.images import save_grid as write

    opts = p.opts
    return write(
        grid, output_dir(p, grid=True), p.all_seeds[0], p.all_prompts[0], text if opts.get("enable_pnginfo") else None,
        fmt=opts.get("grid_format") or "png", grid_save_to_dirs=bool(opts.get("grid_save_to_dirs")),
        grid_extended_filename=bool(opts.get("grid_extended_filename")), save_to_dirs=bool(opts.get("save_to_dirs")),
        directories_filename_pattern=opts.get("directories_filename_pattern") or "[date]",
        samples_filename_pattern=opts.get("samples_filename_pattern") or "", jpeg_quality=int(opts.get("jpeg_quality")),
    )


class SavedImageParams:
    """A1111 script_callbacks.ImageSaveParams: the image about to be (or just) saved, its file name once written,
    and its PNG text chunks; ``index`` is the image's place in the job."""

    def __init__(self, image, filename, pnginfo, index):
        self.image = image
        self.filename = filename
        self.pnginfo = pnginfo
        self.index = index
