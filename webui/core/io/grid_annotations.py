"""Grid legends: A1111 ``modules/images.py`` ``GridAnnotation``, ``draw_grid_annotations`` and ``draw_prompt_matrix``
(what the X/Y/Z plot and prompt matrix scripts draw around their grids). Pillow only.

Font: A1111 draws with its bundled Roboto (or option ``font``). We download nothing: the font is Pillow's own
scalable default (``ImageFont.load_default(size=...)``, a FreeTypeFont when Pillow has FreeType), so the layout
rules (font size ``(width + height) // 25``, wrapping, shrinking a line until it fits) are A1111's while the glyph
shapes differ. Colours are options ``grid_text_active_color`` / ``grid_text_inactive_color`` /
``grid_background_color`` when the option schema has them, else A1111's defaults (black, #999999, white).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from PIL import Image, ImageColor, ImageDraw, ImageFont

#: A1111's defaults of the grid colour options.
DEFAULT_COLORS = {
    "grid_text_active_color": "#000000",
    "grid_text_inactive_color": "#999999",
    "grid_background_color": "#ffffff",
}


class GridAnnotation:
    """One line of a legend: ``text``, drawn struck through and grey when not ``is_active`` (A1111 GridAnnotation)."""

    def __init__(self, text: str = "", is_active: bool = True):
        self.text = text
        self.is_active = is_active
        self.size: tuple[int, int] | None = None
        self.allowed_width: int = 0

    def __repr__(self) -> str:
        return f"GridAnnotation({self.text!r}, is_active={self.is_active})"


def get_font(fontsize: int):
    """A1111 images.get_font, on the font Pillow ships (no download; see the module docstring)."""
    size = max(1, int(fontsize))
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: no scalable default font
        return ImageFont.load_default()


def grid_colors(get: Callable[[str], Any] | None = None) -> tuple[tuple, tuple, tuple]:
    """(active, inactive, background) RGB from the options getter (a missing or empty option: A1111's default)."""

    def color(key: str):
        value = None
        if get is not None:
            try:
                value = get(key)
            except Exception:  # the option is not in this schema
                value = None
        return ImageColor.getcolor(value or DEFAULT_COLORS[key], "RGB")

    return color("grid_text_active_color"), color("grid_text_inactive_color"), color("grid_background_color")


def _text_width(drawing: ImageDraw.ImageDraw, text: str, font) -> float:
    # A1111 (Pillow 9.5) uses multiline_textsize, gone from Pillow 10; the bbox's width is the same measure.
    bbox = drawing.multiline_textbbox((0, 0), text, font=font)
    return bbox[2] - bbox[0]


def draw_grid_annotations(im: Image.Image, width: int, height: int, hor_texts: list[list[GridAnnotation]],
                          ver_texts: list[list[GridAnnotation]], margin: int = 0, *,
                          get_option: Callable[[str], Any] | None = None) -> Image.Image:
    """A1111 images.draw_grid_annotations: the grid ``im`` of ``width`` x ``height`` cells with a legend row on top
    (``hor_texts``, one list of lines per column) and a legend column on the left (``ver_texts``, one per row),
    cells spaced by ``margin`` pixels. ``hor_texts`` / ``ver_texts`` are rewrapped in place, as in A1111."""
    color_active, color_inactive, color_background = grid_colors(get_option)

    def wrap(drawing, text, font, line_length):
        lines = [""]
        for word in text.split():
            line = f"{lines[-1]} {word}".strip()
            if drawing.textlength(line, font=font) <= line_length:
                lines[-1] = line
            else:
                lines.append(word)
        return lines

    def draw_texts(drawing, draw_x, draw_y, lines, initial_fnt, initial_fontsize):
        for line in lines:
            fnt = initial_fnt
            fontsize = initial_fontsize
            while _text_width(drawing, line.text, fnt) > line.allowed_width and fontsize > 0:
                fontsize -= 1
                fnt = get_font(fontsize)
            drawing.multiline_text((draw_x, draw_y + line.size[1] / 2), line.text, font=fnt,
                                   fill=color_active if line.is_active else color_inactive, anchor="mm", align="center")

            if not line.is_active:
                drawing.line((draw_x - line.size[0] // 2, draw_y + line.size[1] // 2, draw_x + line.size[0] // 2,
                              draw_y + line.size[1] // 2), fill=color_inactive, width=4)

            draw_y += line.size[1] + line_spacing

    fontsize = (width + height) // 25
    line_spacing = fontsize // 2

    fnt = get_font(fontsize)

    pad_left = 0 if sum([sum([len(line.text) for line in lines]) for lines in ver_texts]) == 0 else width * 3 // 4

    cols = im.width // width
    rows = im.height // height

    if cols != len(hor_texts):
        raise ValueError(f"bad number of horizontal texts: {len(hor_texts)}; must be {cols}")
    if rows != len(ver_texts):
        raise ValueError(f"bad number of vertical texts: {len(ver_texts)}; must be {rows}")

    calc_img = Image.new("RGB", (1, 1), color_background)
    calc_d = ImageDraw.Draw(calc_img)

    for texts, allowed_width in zip(hor_texts + ver_texts, [width] * len(hor_texts) + [pad_left] * len(ver_texts)):
        items = [] + texts
        texts.clear()

        for line in items:
            wrapped = wrap(calc_d, line.text, fnt, allowed_width)
            texts += [GridAnnotation(x, line.is_active) for x in wrapped]

        for line in texts:
            bbox = calc_d.multiline_textbbox((0, 0), line.text, font=fnt)
            line.size = (bbox[2] - bbox[0], bbox[3] - bbox[1])
            line.allowed_width = allowed_width

    hor_text_heights = [sum([line.size[1] + line_spacing for line in lines]) - line_spacing for lines in hor_texts]
    ver_text_heights = [sum([line.size[1] + line_spacing for line in lines]) - line_spacing * len(lines)
                        for lines in ver_texts]

    pad_top = 0 if sum(hor_text_heights) == 0 else max(hor_text_heights) + line_spacing * 2

    result = Image.new("RGB", (im.width + pad_left + margin * (cols - 1), im.height + pad_top + margin * (rows - 1)),
                       color_background)

    for row in range(rows):
        for col in range(cols):
            cell = im.crop((width * col, height * row, width * (col + 1), height * (row + 1)))
            result.paste(cell, (pad_left + (width + margin) * col, pad_top + (height + margin) * row))

    d = ImageDraw.Draw(result)

    for col in range(cols):
        x = pad_left + (width + margin) * col + width / 2
        y = pad_top / 2 - hor_text_heights[col] / 2

        draw_texts(d, x, y, hor_texts[col], fnt, fontsize)

    for row in range(rows):
        x = pad_left / 2
        y = pad_top + (height + margin) * row + height / 2 - ver_text_heights[row] / 2

        draw_texts(d, x, y, ver_texts[row], fnt, fontsize)

    return result


def prompt_matrix_annotations(all_prompts: list[str]) -> tuple[list[list[GridAnnotation]], list[list[GridAnnotation]]]:
    """The legends of a prompt matrix (A1111 draw_prompt_matrix): the variable parts (``all_prompts[1:]``) split in
    a horizontal half (the first ceil(n/2)) and a vertical half; cell ``pos`` shows part ``i`` active when bit ``i``
    of ``pos`` is set."""
    prompts = all_prompts[1:]
    boundary = math.ceil(len(prompts) / 2)

    prompts_horiz = prompts[:boundary]
    prompts_vert = prompts[boundary:]

    hor_texts = [[GridAnnotation(x, is_active=pos & (1 << i) != 0) for i, x in enumerate(prompts_horiz)]
                 for pos in range(1 << len(prompts_horiz))]
    ver_texts = [[GridAnnotation(x, is_active=pos & (1 << i) != 0) for i, x in enumerate(prompts_vert)]
                 for pos in range(1 << len(prompts_vert))]
    return hor_texts, ver_texts


def draw_prompt_matrix(im: Image.Image, width: int, height: int, all_prompts: list[str], margin: int = 0, *,
                       get_option: Callable[[str], Any] | None = None) -> Image.Image:
    """A1111 images.draw_prompt_matrix: ``all_prompts`` is the prompt split at ``|`` (its first part is the fixed
    one); legends as ``prompt_matrix_annotations``."""
    hor_texts, ver_texts = prompt_matrix_annotations(all_prompts)
    return draw_grid_annotations(im, width, height, hor_texts, ver_texts, margin, get_option=get_option)
