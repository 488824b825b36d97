"""A1111 ``scripts/poor_mans_outpainting.py`` (v1.10.1): "Poor man's outpainting", img2img only.

The init image is pasted into a canvas grown by "Pixels to expand" in each chosen direction (then rounded up to a
multiple of 64, the extra split between opposite sides as A1111 splits it); the canvas, the mask (white = the new
border, minus ``2 * mask_blur`` pixels) are cut into tiles of the request's width x height overlapping by the
expansion (``webui.core.io.tiles.split_grid``); every tile that touches the new border is inpainted, seed + 1 per
tile, and the tiles are pasted back (``combine_grid``). The result is one image of the grown size.

Difference from A1111: A1111 also sets ``p.latent_mask`` (the same rectangle shrunk by ``mask_blur // 2``), which
our engine does not take; the latent mask is the (blurred) image mask, as for any inpainting request.
"""

from __future__ import annotations


from webui.plugins.scripts import Script, ScriptArg, ScriptError

TITLE = "Poor man's outpainting"
FILL_CHOICES = ["fill", "original", "latent noise", "latent nothing"]
DIRECTIONS = ["left", "right", "up", "down"]


def fill_index(value) -> int:
    """The radio's value (type="index": its position; the choice's text accepted too)."""
    if isinstance(value, str) and value in FILL_CHOICES:
        return FILL_CHOICES.index(value)
    try:
        index = int(value)
    except (TypeError, ValueError):
        index = -1
    if not 0 <= index < len(FILL_CHOICES):
        raise ScriptError(TITLE, f"Masked content: {value!r} is not one of 0..3 ({', '.join(FILL_CHOICES)})")
    return index


def check_directions(title: str, direction) -> list[str]:
    direction = [direction] if isinstance(direction, str) else list(direction or [])
    unknown = [d for d in direction if d not in DIRECTIONS]
    if unknown:
        raise ScriptError(title, f"Outpainting direction: unknown {', '.join(map(repr, unknown))}; "
                                 f"choices: {', '.join(DIRECTIONS)}")
    return direction


class ScriptPoorMansOutpainting(Script):
    def title(self):
        return TITLE

    def show(self, is_img2img):
        return is_img2img

    def ui(self, is_img2img):
        if not is_img2img:
            return None
        return [
            ScriptArg("Pixels to expand", 128, "slider", minimum=8, maximum=256, step=8),
            ScriptArg("Mask blur", 4, "slider", minimum=0, maximum=64, step=1),
            ScriptArg("Masked content", "fill", "radio", choices=list(FILL_CHOICES), type="index"),
            ScriptArg("Outpainting direction", list(DIRECTIONS), "checkboxgroup", choices=list(DIRECTIONS)),
        ]

    def run(self, p, pixels, mask_blur, inpainting_fill, direction):
        from PIL import Image, ImageDraw

        from webui.core.generation.processing import Processed, process_images
        from webui.core.io.tiles import combine_grid, split_grid
        from webui.plugins.builtin.scripts.common import expanded_canvas, save_script_image

        if not p.init_images:
            raise ScriptError(TITLE, "needs an init image")
        direction = check_directions(TITLE, direction)
        pixels, mask_blur = int(pixels), int(mask_blur)
        initial_seed = None
        initial_info = None
        base_info = None

        p.mask_blur = mask_blur * 2
        p.inpainting_fill = fill_index(inpainting_fill)
        p.inpaint_full_res = False

        left = pixels if "left" in direction else 0
        right = pixels if "right" in direction else 0
        up = pixels if "up" in direction else 0
        down = pixels if "down" in direction else 0

        init_img = p.init_images[0]
        target_w, target_h, left, right, up, down = expanded_canvas(init_img, left, right, up, down)

        img = Image.new("RGB", (target_w, target_h))
        img.paste(init_img, (left, up))

        mask = Image.new("L", (img.width, img.height), "white")
        draw = ImageDraw.Draw(mask)
        draw.rectangle((
            left + (mask_blur * 2 if left > 0 else 0),
            up + (mask_blur * 2 if up > 0 else 0),
            mask.width - right - (mask_blur * 2 if right > 0 else 0),
            mask.height - down - (mask_blur * 2 if down > 0 else 0),
        ), fill="black")

        try:
            grid = split_grid(img, tile_w=p.width, tile_h=p.height, overlap=pixels)
            grid_mask = split_grid(mask, tile_w=p.width, tile_h=p.height, overlap=pixels)
        except ValueError as e:
            raise ScriptError(TITLE, f"Pixels to expand: {e} (the tile is the request's width x height)") from None

        p.n_iter = 1
        p.batch_size = 1
        p.do_not_save_grid = True
        p.do_not_save_samples = True

        work = []
        work_mask = []
        work_results = []
        for (y, h, row), (_, _, row_mask) in zip(grid.tiles, grid_mask.tiles):
            for tiledata, tiledata_mask in zip(row, row_mask):
                x, w = tiledata[0:2]
                if x >= left and x + w <= img.width - right and y >= up and y + h <= img.height - down:
                    continue
                work.append(tiledata[2])
                work_mask.append(tiledata_mask[2])

        for i in range(len(work)):
            p.init_images = [work[i]]
            p.image_mask = work_mask[i]
            processed = process_images(p)
            if initial_seed is None:
                initial_seed = processed.seed
                initial_info = processed.info
                base_info = processed.base_info
            p.seed = processed.seed + 1
            work_results += processed.images
            if p.progress is not None and p.progress.interrupted:
                break

        image_index = 0
        for y, h, row in grid.tiles:
            for tiledata in row:
                x, w = tiledata[0:2]
                if x >= left and x + w <= img.width - right and y >= up and y + h <= img.height - down:
                    continue
                tiledata[2] = (work_results[image_index] if image_index < len(work_results)
                               else Image.new("RGB", (p.width, p.height)))
                image_index += 1

        combined_image = combine_grid(grid)
        save_script_image(p, combined_image, initial_seed, p.prompt, initial_info)
        return Processed(p, [combined_image], initial_seed, initial_info, base_info=base_info)
