"""Embeddings stored in preview images, as A1111's ``image_embedding.py`` writes them.

A1111's trainer, with "Save images with embedding in PNG chunks", saves ``image_embeddings/<name>-<step>.png``: the
preview with a caption drawn over it, the embedding hidden in two strips left and right of the picture (zlib'd JSON,
low and high nibbles, masked with a fixed LCG, decorated with dots), and the same data in the ``sd-ti-embedding``
text chunk. The readers are in ``webui.core.networks.embeddings`` (``embedding_from_b64``,
``extract_image_data_embed``); these are the writers.
"""

from __future__ import annotations

import base64
import json
import zlib
from math import cos

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from webui.core.networks.embeddings import _lcg  # the same masking stream the reader uses


class _EmbeddingEncoder(json.JSONEncoder):
    """A1111 ``EmbeddingEncoder``: tensors as ``{"TORCHTENSOR": nested lists}``."""

    def default(self, obj):
        if isinstance(obj, torch.Tensor):
            return {"TORCHTENSOR": obj.cpu().detach().numpy().tolist()}
        return json.JSONEncoder.default(self, obj)


def embedding_to_b64(data: dict) -> bytes:
    """A1111 ``embedding_to_b64``: the value of the ``sd-ti-embedding`` PNG text chunk."""
    return base64.b64encode(json.dumps(data, cls=_EmbeddingEncoder).encode())


def _xor_block(block: np.ndarray) -> np.ndarray:
    g = _lcg()
    mask = np.array([next(g) for _ in range(int(np.prod(block.shape)))]).astype(np.uint8).reshape(block.shape)
    return np.bitwise_xor(block.astype(np.uint8), mask & 0x0F)


def _style_block(block: np.ndarray, sequence) -> np.ndarray:
    """A1111 ``style_block``: a pattern of dots in the high nibbles, which the reader masks away."""
    im = Image.new("RGB", (block.shape[1], block.shape[0]))
    draw = ImageDraw.Draw(im)
    i = 0
    for x in range(-6, im.size[0], 8):
        for yi, y in enumerate(range(-6, im.size[1], 8)):
            offset = 4 if yi % 2 == 0 else 0
            shade = int(sequence[i % len(sequence)])
            i += 1
            draw.ellipse((x + offset, y, x + 6 + offset, y + 6), fill=(shade, shade, shade))
    fg = np.array(im).astype(np.uint8) & 0xF0
    return block ^ fg


def insert_image_data_embed(image: Image.Image, data: dict) -> Image.Image:
    """A1111 ``insert_image_data_embed``: ``image`` between two strips holding ``data``, one black column apart."""
    d = 3
    compressed = zlib.compress(json.dumps(data, cls=_EmbeddingEncoder).encode(), level=9)
    raw = np.frombuffer(compressed, np.uint8).copy()
    high, low = raw >> 4, raw & 0x0F
    h = image.size[1]
    next_size = low.shape[0] + (h - (low.shape[0] % h))
    next_size = next_size + ((h * d) - (next_size % (h * d)))
    low = np.resize(low, next_size).reshape((h, -1, d))
    high = np.resize(high, next_size).reshape((h, -1, d))
    edge = next(iter(data["string_to_param"].values())).cpu().detach().numpy().tolist()[0][:1024]
    peak = np.max(np.abs(edge)) or 1.0  # A1111 divides by it; an all-zero embedding would give NaN dots
    edge = (np.abs(edge) / peak * 255).astype(np.uint8)
    low = _xor_block(_style_block(low, sequence=edge))
    high = _xor_block(_style_block(high, sequence=edge[::-1]))
    im_low, im_high = Image.fromarray(low, mode="RGB"), Image.fromarray(high, mode="RGB")
    background = Image.new("RGB", (image.size[0] + im_low.size[0] + im_high.size[0] + 2, image.size[1]), (0, 0, 0))
    background.paste(im_low, (0, 0))
    background.paste(image, (im_low.size[0] + 1, 0))
    background.paste(im_high, (im_low.size[0] + 1 + image.size[0] + 1, 0))
    return background


def _font(size: int, textfont: str | None):
    if textfont:
        try:
            return ImageFont.truetype(textfont, size)
        except OSError:
            pass
    # A1111 ships a TrueType font; Pillow's bundled scalable default font stands in for it
    return ImageFont.load_default(size=size)


def caption_image_overlay(srcimage: Image.Image, title: str, footer_left: str, footer_mid: str, footer_right: str,
                          textfont: str | None = None) -> Image.Image:
    """A1111 ``caption_image_overlay``: darkened top and bottom, the title top left, three footers below."""
    image = srcimage.copy()
    fontsize = 32
    factor = 1.5
    gradient = Image.new("RGBA", (1, image.size[1]), color=(0, 0, 0, 0))
    for y in range(image.size[1]):
        mag = 1 - cos(y / image.size[1] * factor)
        mag = max(mag, 1 - cos((image.size[1] - y) / image.size[1] * factor * 1.1))
        gradient.putpixel((0, y), (0, 0, 0, int(mag * 255)))
    image = Image.alpha_composite(image.convert("RGBA"), gradient.resize(image.size))
    draw = ImageDraw.Draw(image)
    font = _font(fontsize, textfont)
    padding = 10

    def width(text, f):
        return max(1, draw.textbbox((0, 0), text, font=f)[2])

    fontsize = max(1, min(int(fontsize * (((image.size[0] * 0.75) - (padding * 4)) / width(title, font))), 72))
    font = _font(fontsize, textfont)
    draw.text((padding, padding), title, anchor="lt", font=font, fill=(255, 255, 255, 230))
    sizes = [min(int(fontsize * (((image.size[0] / 3) - padding) / width(t, font))), 72)
             for t in (footer_left, footer_mid, footer_right)]
    font = _font(max(1, min(sizes)), textfont)
    draw.text((padding, image.size[1] - padding), footer_left, anchor="ls", font=font, fill=(255, 255, 255, 230))
    draw.text((image.size[0] / 2, image.size[1] - padding), footer_mid, anchor="ms", font=font,
              fill=(255, 255, 255, 230))
    draw.text((image.size[0] - padding, image.size[1] - padding), footer_right, anchor="rs", font=font,
              fill=(255, 255, 255, 230))
    return image
