"""A1111 ``scripts/sd_upscale.py`` (v1.10.1): "SD upscale", img2img only.

The init image is upscaled by "Scale Factor" with the chosen upscaler (A1111 ``Upscaler.upscale``: the size rounded
down to a multiple of 8; "None" leaves the image as it is), cut into tiles of the request's width x height that
overlap by "Tile overlap" (``webui.core.io.tiles.split_grid``), each tile goes through img2img (``batch_size`` tiles
per call, seed + 1 per call), and the tiles are blended back together (``combine_grid``). One image per batch count,
seeds ``seed + n``. Infotext: "SD upscale overlap", "SD upscale upscaler".

The upscaler radio sends its index (gradio type="index") into A1111's ``shared.sd_upscalers``, which is our upscaler
registry's list (None, Lanczos, Nearest, then the model files); a name is accepted too. The radio and
``/script-info`` list that registry (``choices_from="upscalers"``), as A1111's UI lists ``shared.sd_upscalers``;
``run`` reads the live list again, so an index means the same upscaler as in A1111.
"""

from __future__ import annotations

import math

from webui.plugins.scripts import Script, ScriptArg, ScriptError

TITLE = "SD upscale"
INFO_HTML = ("<p style=\"margin-bottom:0.75em\">Will upscale the image by the selected scale factor; use width and "
             "height sliders to set tile size</p>")
BUILTIN_UPSCALERS = ["None", "Lanczos", "Nearest"]


def _upscalers(p) -> list:
    registry = getattr(p.engine, "upscalers", None)
    if registry is None:
        from webui.core.postprocess.upscalers import BUILTIN_UPSCALERS as infos

        return list(infos)
    return list(registry.list(p.opts))


class ScriptSDUpscale(Script):
    def title(self):
        return TITLE

    def show(self, is_img2img):
        return is_img2img

    def ui(self, is_img2img):
        return [
            ScriptArg(None, INFO_HTML, "html"),
            ScriptArg("Tile overlap", 64, "slider", minimum=0, maximum=256, step=16),
            ScriptArg("Upscaler", BUILTIN_UPSCALERS[0], "radio", choices=list(BUILTIN_UPSCALERS), type="index",
                      choices_from="upscalers"),
            ScriptArg("Scale Factor", 2, "slider", minimum=0, maximum=4, step=1),
        ]

    def run(self, p, _, overlap, upscaler_index, scale_factor):
        from PIL import Image

        from webui.core.generation.processing import Processed, process_images
        from webui.core.io.tiles import combine_grid, split_grid
        from webui.plugins.builtin.scripts.common import fix_seed, save_script_image

        if not p.init_images:
            raise ScriptError(TITLE, "needs an init image")
        upscalers = _upscalers(p)
        names = [u.name for u in upscalers]
        if isinstance(upscaler_index, str) and upscaler_index in names:
            upscaler = upscalers[names.index(upscaler_index)]
        else:
            try:
                upscaler = upscalers[int(upscaler_index)]
            except (TypeError, ValueError, IndexError):
                raise ScriptError(TITLE, f"Upscaler: {upscaler_index!r} is neither an index 0..{len(names) - 1} "
                                         f"nor a name; upscalers: {', '.join(names)}") from None
        overlap = int(overlap)
        scale_factor = float(scale_factor)

        fix_seed(p)
        p.extra_generation_params["SD upscale overlap"] = overlap
        p.extra_generation_params["SD upscale upscaler"] = upscaler.name

        initial_info = None
        base_info = None
        seed = p.seed
        init_img = p.init_images[0]

        if upscaler.name != "None":
            if scale_factor <= 0:
                raise ScriptError(TITLE, f"Scale Factor must be above 0 with upscaler {upscaler.name!r}")
            img = p.engine.upscalers.upscale_by(init_img, upscaler, scale_factor, p.opts) \
                if getattr(p.engine, "upscalers", None) is not None else _pil_upscale(init_img, upscaler.name,
                                                                                      scale_factor)
        else:
            img = init_img

        try:
            grid = split_grid(img, tile_w=p.width, tile_h=p.height, overlap=overlap)
        except ValueError as e:
            raise ScriptError(TITLE, f"Tile overlap: {e} (the tile is the request's width x height)") from None

        batch_size = p.batch_size
        upscale_count = p.n_iter
        p.n_iter = 1
        p.do_not_save_grid = True
        p.do_not_save_samples = True

        work = []
        for _y, _h, row in grid.tiles:
            for tiledata in row:
                work.append(tiledata[2])

        batch_count = math.ceil(len(work) / batch_size)
        result_images = []
        for n in range(upscale_count):
            start_seed = seed + n
            p.seed = start_seed
            work_results = []
            for i in range(batch_count):
                p.batch_size = batch_size
                p.init_images = work[i * batch_size:(i + 1) * batch_size]
                processed = process_images(p)
                if initial_info is None:
                    initial_info = processed.info
                    base_info = processed.base_info
                p.seed = processed.seed + 1
                work_results += processed.images
                if p.progress is not None and p.progress.interrupted:
                    break

            image_index = 0
            for _y, _h, row in grid.tiles:
                for tiledata in row:
                    tiledata[2] = (work_results[image_index] if image_index < len(work_results)
                                   else Image.new("RGB", (p.width, p.height)))
                    image_index += 1

            combined_image = combine_grid(grid)
            result_images.append(combined_image)
            save_script_image(p, combined_image, start_seed, p.prompt, initial_info)
            if p.progress is not None and p.progress.interrupted:
                break

        return Processed(p, result_images, seed, initial_info, base_info=base_info)


def _pil_upscale(image, name: str, scale: float):
    """Without an upscaler registry: Lanczos / Nearest by A1111's Upscaler.upscale size rule."""
    from PIL import Image

    w, h = int(image.width * scale // 8 * 8), int(image.height * scale // 8 * 8)
    return image.resize((w, h), Image.NEAREST if name == "Nearest" else Image.LANCZOS)
