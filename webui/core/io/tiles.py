"""A1111 ``modules/images.py`` tiles: ``Grid``, ``split_grid`` and ``combine_grid``, which SD upscale and Poor man's
outpainting cut an image into overlapping tiles with and paste the processed tiles back with.

``split_grid`` spreads tiles of ``tile_w`` x ``tile_h`` evenly so that neighbours overlap by at least ``overlap``
pixels, the last row and column ending at the image's edge; ``combine_grid`` pastes them back, blending each tile into
its left and upper neighbour over the first ``overlap`` pixels with a linear ramp (0 -> 255), as A1111 does.
PIL and numpy only.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from PIL import Image


class Grid(NamedTuple):
    """A1111 ``images.Grid``: ``tiles`` is ``[[y, h, [[x, w, tile], ...]], ...]`` (rows top to bottom, each row's
    tiles left to right; the lists are mutable so that a script can put processed tiles in place)."""

    tiles: list
    tile_w: int
    tile_h: int
    image_w: int
    image_h: int
    overlap: int


def split_grid(image: Image.Image, tile_w: int = 512, tile_h: int = 512, overlap: int = 64) -> Grid:
    """A1111 ``images.split_grid``. At least one row and column (A1111 computes zero for an image smaller than one
    tile minus the overlap, and then pastes nothing). ``overlap`` must be smaller than both tile sides."""
    if overlap >= tile_w or overlap >= tile_h:
        raise ValueError(f"tile overlap ({overlap}) must be smaller than the tile size ({tile_w}x{tile_h})")
    w, h = image.size
    non_overlap_width = tile_w - overlap
    non_overlap_height = tile_h - overlap
    cols = max(1, math.ceil((w - overlap) / non_overlap_width))
    rows = max(1, math.ceil((h - overlap) / non_overlap_height))
    dx = (w - tile_w) / (cols - 1) if cols > 1 else 0
    dy = (h - tile_h) / (rows - 1) if rows > 1 else 0

    grid = Grid([], tile_w, tile_h, w, h, overlap)
    for row in range(rows):
        row_images = []
        y = int(row * dy)
        if y + tile_h >= h:
            y = h - tile_h
        for col in range(cols):
            x = int(col * dx)
            if x + tile_w >= w:
                x = w - tile_w
            tile = image.crop((x, y, x + tile_w, y + tile_h))
            row_images.append([x, tile_w, tile])
        grid.tiles.append([y, tile_h, row_images])
    return grid


def combine_grid(grid: Grid) -> Image.Image:
    """A1111 ``images.combine_grid``: the tiles pasted back into an RGB image of the grid's size, each tile after
    the first of its row blended into its left neighbour over ``overlap`` columns and each row after the first into
    the row above over ``overlap`` rows (a linear 0..255 ramp as the paste mask). With no overlap (A1111 divides by
    zero there) the tiles are pasted as they are."""
    overlap = grid.overlap

    def make_mask_image(r: np.ndarray) -> Image.Image:
        r = r * 255 / overlap
        return Image.fromarray(r.astype(np.uint8), "L")

    if overlap > 0:
        mask_w = make_mask_image(np.arange(overlap, dtype=np.float32).reshape((1, overlap)).repeat(grid.tile_h, axis=0))
        mask_h = make_mask_image(np.arange(overlap, dtype=np.float32).reshape((overlap, 1)).repeat(grid.image_w, axis=1))

    combined_image = Image.new("RGB", (grid.image_w, grid.image_h))
    for y, h, row in grid.tiles:
        combined_row = Image.new("RGB", (grid.image_w, h))
        for x, w, tile in row:
            if x == 0 or overlap == 0:
                combined_row.paste(tile, (x, 0))
                continue
            combined_row.paste(tile.crop((0, 0, overlap, h)), (x, 0), mask=mask_w)
            combined_row.paste(tile.crop((overlap, 0, w, h)), (x + overlap, 0))
        if y == 0 or overlap == 0:
            combined_image.paste(combined_row, (0, y))
            continue
        combined_image.paste(combined_row.crop((0, 0, combined_row.width, overlap)), (0, y), mask=mask_h)
        combined_image.paste(combined_row.crop((0, overlap, combined_row.width, h)), (0, y + overlap))
    return combined_image
