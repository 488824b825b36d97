"""A1111 ``modules.images``: ``save_image`` and ``image_grid`` on our image writer (A1111's names, patterns,
metadata, atomic writes) with the running app's options."""

from __future__ import annotations

from webui.compat import binding
from webui.core.io import images as _images

_MODULE = "modules.images"


def image_grid(imgs, batch_size: int = 1, rows=None):
    """A1111 ``images.image_grid``: rows from the argument, else from options n_rows / grid_prevent_empty_spots."""
    opts = binding.current().settings
    return _images.image_grid(list(imgs), batch_size, rows, n_rows=int(opts.get("n_rows")),
                              grid_prevent_empty_spots=bool(opts.get("grid_prevent_empty_spots")))


def save_image(image, path, basename, seed=None, prompt=None, extension="png", info=None, short_filename=False,
               no_prompt=False, grid=False, pnginfo_section_name="parameters", p=None, existing_info=None,
               forced_filename=None, suffix="", save_to_dirs=None):
    """A1111 ``images.save_image``: returns (full path, None). ``info`` is written as the infotext when option
    enable_pnginfo is on. ``forced_filename`` names the file exactly (no number, no pattern)."""
    import os

    opts = binding.current().settings
    if pnginfo_section_name != "parameters" or existing_info or suffix:
        raise binding.missing(_MODULE, "save_image(pnginfo_section_name/existing_info/suffix)")
    text = info if opts.get("enable_pnginfo") else None
    fmt = extension.lstrip(".")
    if forced_filename:
        os.makedirs(path, exist_ok=True)
        full = os.path.join(path, f"{forced_filename}.{fmt}")
        return _images.save_image_atomic(image, full, fmt, text, jpeg_quality=int(opts.get("jpeg_quality"))), None
    if grid:
        saved = _images.save_grid(
            image, path, seed, prompt, text, fmt, grid_save_to_dirs=bool(opts.get("grid_save_to_dirs"))
            if save_to_dirs is None else save_to_dirs, grid_extended_filename=not short_filename,
            save_to_dirs=bool(opts.get("save_to_dirs")),
            directories_filename_pattern=opts.get("directories_filename_pattern") or "[date]",
            samples_filename_pattern=opts.get("samples_filename_pattern") or "", basename=basename or "grid",
            add_number=bool(opts.get("save_images_add_number")), jpeg_quality=int(opts.get("jpeg_quality")))
        return saved, None
    saved = _images.save_generated_image(
        image, path, seed, None if no_prompt else prompt, text, fmt, basename=basename or "",
        save_to_dirs=bool(opts.get("save_to_dirs")) if save_to_dirs is None else save_to_dirs,
        directories_filename_pattern=opts.get("directories_filename_pattern") or "[date]",
        samples_filename_pattern=opts.get("samples_filename_pattern") or "",
        add_number=bool(opts.get("save_images_add_number")), jpeg_quality=int(opts.get("jpeg_quality")))
    return saved, None


def __getattr__(name: str):
    raise binding.missing(_MODULE, name)
