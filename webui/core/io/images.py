"""Image files and metadata as A1111 writes and reads them.

PNG text chunks, JPEG/WebP EXIF UserComment (piexif), A1111's output file names and sequence numbers, atomic saves,
batch grids (``image_grid``, ``save_grid``), and the API's base64 encoding and decoding. PIL and piexif only; no
torch.

Reproduces A1111 v1.10.1 ``modules/api/api.py`` (``encode_pil_to_base64``, ``decode_base64_to_image``) and
``modules/images.py`` (``save_image``, ``save_image_with_geninfo``, ``FilenameGenerator``,
``get_next_sequence_number``, ``sanitize_filename_part``, ``read_info_from_image``, ``read``/``fix_image``,
``image_grid``).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import hashlib
import io
import json
import math
import os
import re
import string
from dataclasses import dataclass
from typing import Any, Mapping

import piexif
import piexif.helper
from PIL import Image, ImageOps, PngImagePlugin

from webui.core.io.files import atomic_write


class InvalidImageFormat(ValueError):
    """An output format other than png, jpg, jpeg, webp (A1111: 500 "Invalid image format")."""

    def __init__(self, fmt: str):
        super().__init__(f"Invalid image format: {fmt!r}; valid formats are: png, jpg, jpeg, webp")
        self.format = fmt


class InvalidImage(ValueError):
    """A base64 (or data URL) string that does not decode to an image (A1111: "Invalid encoded image")."""

    def __init__(self, message: str = "Invalid encoded image"):
        super().__init__(message)


OUTPUT_FORMATS = ("png", "jpg", "jpeg", "webp")

# ---------------------------------------------------------------------------------------------------------------------
# encoding


def _exif_user_comment(text: str) -> bytes:
    return piexif.dump({"Exif": {piexif.ExifIFD.UserComment: piexif.helper.UserComment.dump(text, encoding="unicode")}})


def _to_rgb_for_lossy(image: Image.Image, fmt: str) -> Image.Image:
    """A1111: RGBA/P -> RGB before JPEG/WebP (api.encode_pil_to_base64); I;16 scaled down (save_image_with_geninfo)."""
    if image.mode in ("RGBA", "P", "LA", "PA"):
        return image.convert("RGB")
    if image.mode == "I;16":
        return image.point(lambda p: p * 0.0038910505836576).convert("RGB" if fmt == "webp" else "L")
    return image


def encode_image(
    image: Image.Image,
    fmt: str,
    infotext: str | None,
    jpeg_quality: int = 80,
    webp_lossless: bool = False,
    exif_always: bool = True,
) -> bytes:
    """Encode ``image`` as ``fmt`` (png, jpg, jpeg, webp; case-insensitive) with the infotext as metadata.

    PNG: every str->str entry of ``image.info`` becomes a text chunk, and ``infotext`` (when not None) the
    ``parameters`` chunk. JPEG/WebP: RGBA/P converted to RGB; the infotext (else ``image.info['parameters']``, else "")
    goes in the EXIF UserComment, UTF-16 "unicode" encoding, as A1111's API always writes it; with
    ``exif_always=False`` (A1111's saved files: save_image_with_geninfo) a None infotext writes no EXIF at all.
    ``jpeg_quality`` is option jpeg_quality; WebP is lossy unless ``webp_lossless`` (A1111 v1.10.1's API is always
    lossy; its saved files honour the option). Raises InvalidImageFormat for any other format.
    """
    kind = fmt.lower()
    out = io.BytesIO()
    if kind == "png":
        chunks = {k: v for k, v in (image.info or {}).items() if isinstance(k, str) and isinstance(v, str)}
        if infotext is not None:
            chunks["parameters"] = infotext
        pnginfo = None
        if chunks:
            pnginfo = PngImagePlugin.PngInfo()
            for k, v in chunks.items():
                pnginfo.add_text(k, v)
        image.save(out, format="PNG", pnginfo=pnginfo)
    elif kind in ("jpg", "jpeg", "webp"):
        extra: dict[str, Any] = {}
        if infotext is not None or exif_always:
            text = infotext if infotext is not None else image.info.get("parameters")
            extra["exif"] = _exif_user_comment(text if isinstance(text, str) else "")
        rgb = _to_rgb_for_lossy(image, kind)
        if kind == "webp":
            rgb.save(out, format="WEBP", quality=jpeg_quality, lossless=webp_lossless, **extra)
        else:
            rgb.save(out, format="JPEG", quality=jpeg_quality, **extra)
    else:
        raise InvalidImageFormat(fmt)
    return out.getvalue()


def encode_base64(
    image: Image.Image,
    fmt: str = "png",
    infotext: str | None = None,
    jpeg_quality: int = 80,
    webp_lossless: bool = False,
) -> str:
    """A1111 api.encode_pil_to_base64: raw base64 (no ``data:`` prefix) of ``encode_image``."""
    data = encode_image(image, fmt, infotext, jpeg_quality=jpeg_quality, webp_lossless=webp_lossless)
    return base64.b64encode(data).decode("ascii")


# ---------------------------------------------------------------------------------------------------------------------
# decoding and reading


def fix_image(image: Image.Image) -> Image.Image:
    """A1111 images.fix_image: apply EXIF orientation; palette/RGB PNGs with a transparency chunk -> RGBA."""
    try:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGB", "P") and isinstance(image.info.get("transparency"), bytes):
            image = image.convert("RGBA")
    except Exception:
        pass
    return image


def read_image(data: bytes) -> Image.Image:
    """A1111 images.read on bytes: open with PIL (any readable format), decode fully, then ``fix_image``."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return fix_image(image)


def decode_base64_image(encoding: str) -> Image.Image:
    """A1111 api.decode_base64_to_image, minus URLs (spec §4.2 steps 2-3).

    A ``data:image/...;base64,`` prefix is stripped the way A1111 does it (text after the first ';', then after the
    first ',' in that part); base64 is decoded non-strictly (characters outside the alphabet are dropped, bad padding
    fails). Raises InvalidImage("Invalid encoded image") on any failure.
    """
    try:
        if encoding.startswith("data:image/"):
            encoding = encoding.split(";")[1].split(",")[1]
        data = base64.b64decode(encoding)
        return read_image(data)
    except Exception as e:  # A1111: any failure -> "Invalid encoded image"
        raise InvalidImage() from e


# image.info keys A1111 drops from png-info's `items` (images.IGNORED_INFO_KEYS).
IGNORED_INFO_KEYS = frozenset({
    "jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "exif",
    "loop", "background", "timestamp", "duration", "progressive", "progression",
    "icc_profile", "chromaticity", "photoshop",
})


def read_info_from_image(
    image: Image.Image, samplers_map: Mapping[str, str] | None = None
) -> tuple[str | None, dict[str, Any]]:
    """A1111 images.read_info_from_image -> (infotext or None, remaining info items).

    The PNG ``parameters`` chunk; an EXIF UserComment (JPEG/WebP) overrides it when non-empty; else a GIF ``comment``.
    Technical keys (IGNORED_INFO_KEYS) are dropped from the items. NovelAI PNGs are converted to A1111's format;
    ``samplers_map`` maps a lower-case sampler name or alias (NovelAI writes "k_euler_ancestral") to A1111's name,
    "Euler a" when not found.
    """
    items = dict(image.info or {})
    geninfo = items.pop("parameters", None)

    if "exif" in items:
        exif_data = items["exif"]
        try:
            exif = piexif.load(exif_data)
        except Exception:
            # A1111 catches OSError (not valid EXIF, so piexif tried it as a file name); any failure means no comment.
            exif = None
        exif_comment = (exif or {}).get("Exif", {}).get(piexif.ExifIFD.UserComment, b"")
        try:
            exif_comment = piexif.helper.UserComment.load(exif_comment)
        except ValueError:
            exif_comment = exif_comment.decode("utf8", errors="ignore")
        if exif_comment:
            geninfo = exif_comment
    elif "comment" in items:  # GIF
        comment = items["comment"]
        geninfo = comment.decode("utf8", errors="ignore") if isinstance(comment, bytes) else comment

    for key in IGNORED_INFO_KEYS:
        items.pop(key, None)

    if items.get("Software", None) == "NovelAI":
        try:
            info = json.loads(items["Comment"])
            sampler = (samplers_map or {}).get(info["sampler"], "Euler a")
            geninfo = (
                f"{items['Description']}\n"
                f"Negative prompt: {info['uc']}\n"
                f"Steps: {info['steps']}, Sampler: {sampler}, CFG scale: {info['scale']}, Seed: {info['seed']}, "
                f"Size: {image.width}x{image.height}, Clip skip: 2, ENSD: 31337"
            )
        except Exception:
            pass  # A1111 reports the error and keeps what it had

    return geninfo, items


# ---------------------------------------------------------------------------------------------------------------------
# saving


def save_image_atomic(
    image: Image.Image,
    path: str | os.PathLike[str],
    fmt: str,
    infotext: str | None,
    **kw: Any,
) -> str:
    """Encode (``encode_image``, keyword args passed on) and write ``path`` atomically; returns the path.

    The bytes go through ``atomic_write`` (A1111 writes ``<name>.tmp`` and renames it), so a reader or a killed
    process never sees half a file. Creates the folder.
    As in A1111's saved files, a JPEG/WebP saved without infotext carries no EXIF (``exif_always`` False).
    """
    path = os.fspath(path)
    kw.setdefault("exif_always", False)
    data = encode_image(image, fmt, infotext, **kw)
    atomic_write(path, data)
    return path


# A1111 images.py: characters replaced by '_' in file name parts (without --unix-filenames-sanitization).
INVALID_FILENAME_CHARS = '#<>:"/\\|?*\n\r\t'
UNIX_INVALID_FILENAME_CHARS = "/"
_INVALID_PREFIX = " "
_INVALID_POSTFIX = " ."
_re_nonletters = re.compile(r"[\s" + string.punctuation + "]+")
_re_pattern = re.compile(r"(.*?)(?:\[([^\[\]]+)\]|$)")
_re_pattern_arg = re.compile(r"(.*)<([^>]*)>$")


def sanitize_filename_part(
    text: str | None,
    replace_spaces: bool = True,
    max_length: int = 128,
    invalid_chars: str = INVALID_FILENAME_CHARS,
) -> str | None:
    """A1111 images.sanitize_filename_part: spaces -> '_' (optional), invalid characters -> '_', leading spaces
    dropped, cut to ``max_length`` (flag --filenames-max-length, 128), trailing spaces and dots dropped."""
    if text is None:
        return None
    if replace_spaces:
        text = text.replace(" ", "_")
    text = text.translate({ord(x): "_" for x in invalid_chars})
    text = text.lstrip(_INVALID_PREFIX)[:max_length]
    return text.rstrip(_INVALID_POSTFIX)


def next_sequence_number(folder: str | os.PathLike[str], basename: str = "") -> int:
    """A1111 images.get_next_sequence_number: 1 + the largest leading number among files named
    ``[basename-]NNNN...`` in ``folder``; 0 for an empty or missing folder."""
    result = -1
    if basename != "":
        basename = f"{basename}-"
    prefix_length = len(basename)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        names = []
    for name in names:
        if name.startswith(basename):
            parts = os.path.splitext(name[prefix_length:])[0].split("-")
            try:
                result = max(int(parts[0]), result)
            except ValueError:
                pass
    return result + 1


@dataclass(frozen=True)
class FilenameContext:
    """What A1111's FilenameGenerator may put in a file or folder name. None = unknown: the ``[tag]`` stays as text."""

    seed: int | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    sampler: str | None = None
    model_hash: str | None = None
    model_name: str | None = None
    denoising_strength: float | None = None
    clip_skip: int | None = None
    job_timestamp: str | None = None
    user: str | None = None
    basename: str = ""
    date: _dt.datetime | None = None
    max_prompt_words: int = 8  # option directories_max_prompt_words
    max_length: int = 128  # flag --filenames-max-length
    image_bytes: bytes | None = None  # for [image_hash]


_SKIP = object()  # A1111 NOTHING_AND_SKIP_PREVIOUS_TEXT


def _replacement(ctx: FilenameContext, tag: str, args: list[str]) -> Any:
    """One A1111 FilenameGenerator replacement; None leaves ``[tag]`` in the name."""
    now = ctx.date or _dt.datetime.now()

    def clean(text: str | None, spaces: bool = True) -> str | None:
        return sanitize_filename_part(text, replace_spaces=spaces, max_length=ctx.max_length)

    def str_hash(text: str | None) -> str | None:
        if text is None:
            return None
        length = int(args[0]) if args and args[0] != "" else 8
        return hashlib.sha256(text.encode()).hexdigest()[0:length]

    if tag == "basename":
        return ctx.basename or "img"
    if tag == "seed":
        return ctx.seed if ctx.seed is not None else ""
    if tag == "steps":
        return ctx.steps
    if tag == "cfg":
        return ctx.cfg_scale
    if tag == "width":
        return ctx.width
    if tag == "height":
        return ctx.height
    if tag == "sampler":
        return clean(ctx.sampler, False)
    if tag == "model_hash":
        return ctx.model_hash
    if tag == "model_name":
        return clean(ctx.model_name, False)
    if tag == "date":
        return now.strftime("%Y-%m-%d")
    if tag == "datetime":
        fmt = args[0] if args and args[0] != "" else "%Y%m%d%H%M%S"
        try:
            text = now.strftime(fmt)
        except (ValueError, TypeError):
            text = now.strftime("%Y%m%d%H%M%S")
        return clean(text, False)
    if tag == "job_timestamp":
        return ctx.job_timestamp
    if tag == "prompt_hash":
        return str_hash(ctx.prompt)
    if tag == "negative_prompt_hash":
        return str_hash(ctx.negative_prompt)
    if tag == "full_prompt_hash":
        if ctx.prompt is None or ctx.negative_prompt is None:
            return None
        return str_hash(f"{ctx.prompt} {ctx.negative_prompt}")
    if tag == "prompt":
        return clean(ctx.prompt)
    if tag == "prompt_spaces":
        return clean(ctx.prompt, False)
    if tag == "prompt_words":
        words = [x for x in _re_nonletters.split(ctx.prompt or "") if x] or ["empty"]
        return clean(" ".join(words[0 : ctx.max_prompt_words]), False)
    if tag == "clip_skip":
        return ctx.clip_skip
    if tag == "denoising":
        return ctx.denoising_strength if ctx.denoising_strength else _SKIP
    if tag == "user":
        return ctx.user
    if tag == "none":
        return ""
    if tag == "image_hash":
        if ctx.image_bytes is None:
            return None
        length = int(args[0]) if args and args[0] != "" else None
        return hashlib.sha256(ctx.image_bytes).hexdigest()[0:length]
    return None


def apply_filename_pattern(pattern: str, ctx: FilenameContext) -> str:
    """A1111 FilenameGenerator.apply: replace ``[tag]`` / ``[tag<arg>...]``; unknown or unavailable tags stay as
    written. Supports basename, seed, steps, cfg, width, height, sampler, model_hash, model_name, date,
    datetime<fmt>, job_timestamp, prompt_hash, negative_prompt_hash, full_prompt_hash, prompt, prompt_spaces,
    prompt_words, clip_skip, denoising, user, none, image_hash."""
    res = ""
    for m in _re_pattern.finditer(pattern):
        text, tag = m.groups()
        if tag is None:
            res += text
            continue
        args: list[str] = []
        while True:
            am = _re_pattern_arg.match(tag)
            if am is None:
                break
            tag, arg = am.groups()
            args.insert(0, arg)
        try:
            replacement = _replacement(ctx, tag.lower(), args)
        except Exception:
            replacement = None
        if replacement is _SKIP:
            continue
        if replacement is not None:
            res += text + str(replacement)
            continue
        res += f"{text}[{tag}]"
    return res


def _save_numbered(
    image: Image.Image,
    path: str,
    fmt: str,
    infotext: str | None,
    ctx: FilenameContext,
    *,
    basename: str,
    decoration: str,
    add_number: bool,
    **kw: Any,
) -> str:
    """The naming tail of A1111 images.save_image: ``[basename-]NNNN[-decoration].ext`` (5 digits without a
    basename, 4 with), or just ``decoration.ext`` without a number; cut to the file system's name limit; atomic."""
    os.makedirs(path, exist_ok=True)
    decoration = apply_filename_pattern(decoration, ctx)
    number = add_number or decoration == ""
    if decoration != "" and number:
        decoration = f"-{decoration}"

    if number:
        count = next_sequence_number(path, basename)
        fullfn = ""
        for i in range(500):
            fn = f"{count + i:05}" if basename == "" else f"{basename}-{count + i:04}"
            fullfn = os.path.join(path, f"{fn}{decoration}.{fmt}")
            if not os.path.exists(fullfn):
                break
    else:
        fullfn = os.path.join(path, f"{decoration}.{fmt}")

    # A1111 cuts the name to the file system's limit (statvfs f_namemax), keeping the extension.
    stem, ext = os.path.splitext(os.path.basename(fullfn))
    if hasattr(os, "statvfs"):
        max_len = os.statvfs(path).f_namemax
        stem = stem[: max_len - max(4, len(ext))]
    fullfn = os.path.join(path, stem + ext)

    return save_image_atomic(image, fullfn, fmt, infotext, **kw)


def _prepare(image: Image.Image, fmt: str, seed, prompt, basename: str, date, context) -> tuple[str, FilenameContext]:
    fmt = fmt.lower()
    if fmt not in OUTPUT_FORMATS:
        raise InvalidImageFormat(fmt)
    # A1111: JPEG over 65535 px or WebP over 16383 px is saved as PNG
    if (image.height > 65535 or image.width > 65535) and fmt in ("jpg", "jpeg") or (
        image.height > 16383 or image.width > 16383
    ) and fmt == "webp":
        fmt = "png"
    base = context or FilenameContext()
    ctx = dataclasses.replace(
        base,
        seed=seed,
        prompt=prompt,
        basename=basename,
        date=date or base.date or _dt.datetime.now(),
        width=base.width if base.width is not None else image.width,
        height=base.height if base.height is not None else image.height,
    )
    return fmt, ctx


def _folder(outdir, save_to_dirs: bool, directories_filename_pattern: str, ctx: FilenameContext) -> str:
    path = os.fspath(outdir)
    if save_to_dirs:
        dirname = apply_filename_pattern(directories_filename_pattern or "[prompt_words]", ctx)
        path = os.path.join(path, dirname.lstrip(" ").rstrip("\\ /"))
    return path


def save_generated_image(
    image: Image.Image,
    outdir: str | os.PathLike[str],
    seed: int | None,
    prompt: str | None,
    infotext: str | None,
    fmt: str = "png",
    date: _dt.datetime | None = None,
    *,
    basename: str = "",
    save_to_dirs: bool = True,
    directories_filename_pattern: str = "[date]",
    samples_filename_pattern: str = "",
    add_number: bool = True,
    context: FilenameContext | None = None,
    **kw: Any,
) -> str:
    """Save a generated image where and as A1111's images.save_image names it; returns the full path.

    Defaults are A1111's options: ``save_to_dirs`` (True) puts it in ``outdir/<directories_filename_pattern>`` (the
    ``[date]``, YYYY-MM-DD); the file name is ``samples_filename_pattern``, or when empty ``[seed]`` with
    save_to_dirs and ``[seed]-[prompt_spaces]`` without; ``add_number`` (save_images_add_number) prefixes the
    5-digit sequence number: ``outdir/2024-01-31/00000-123.png``, then ``00001-...``. With ``basename`` the number is
    ``basename-NNNN``. JPEG over 65535 px or WebP over 16383 px is saved as PNG, as in A1111. ``context`` fills the
    other pattern tags; ``kw`` goes to ``encode_image`` (jpeg_quality, webp_lossless). Written atomically.
    """
    fmt, ctx = _prepare(image, fmt, seed, prompt, basename, date, context)
    path = _folder(outdir, save_to_dirs, directories_filename_pattern, ctx)
    if seed is None:
        decoration = ""
    elif save_to_dirs:
        decoration = samples_filename_pattern or "[seed]"
    else:
        decoration = samples_filename_pattern or "[seed]-[prompt_spaces]"
    return _save_numbered(image, path, fmt, infotext, ctx, basename=basename, decoration=decoration,
                          add_number=add_number, **kw)


def save_grid(
    grid: Image.Image,
    outdir: str | os.PathLike[str],
    seed: int | None,
    prompt: str | None,
    infotext: str | None,
    fmt: str = "png",
    date: _dt.datetime | None = None,
    *,
    grid_save_to_dirs: bool = True,
    grid_extended_filename: bool = False,
    save_to_dirs: bool = True,
    directories_filename_pattern: str = "[date]",
    samples_filename_pattern: str = "",
    add_number: bool = True,
    context: FilenameContext | None = None,
    basename: str = "grid",
    **kw: Any,
) -> str:
    """Save a batch grid as A1111's processing does: ``images.save_image(grid, outpath_grids, "grid",
    all_seeds[0], all_prompts[0], opts.grid_format, info=infotext(use_main_prompt=True),
    short_filename=not opts.grid_extended_filename, grid=True)``; returns the full path.

    ``outdir`` is option outdir_grids or outdir_txt2img_grids / outdir_img2img_grids (``outputs/txt2img-grids``),
    ``fmt`` option grid_format. The folder follows ``grid_save_to_dirs`` (``[date]`` sub-folder by default); the
    name is ``grid-NNNN.png``, and with ``grid_extended_filename`` ``grid-NNNN-<samples pattern>``, whose default
    depends on option ``save_to_dirs`` as for single images (A1111 reads that option there, not grid_save_to_dirs).
    ``basename`` is the name's prefix: scripts save theirs as ``xyz_grid-NNNN`` / ``prompt_matrix-NNNN``; their
    ``short_filename=False`` is ``grid_extended_filename=True`` here.
    """
    fmt, ctx = _prepare(grid, fmt, seed, prompt, basename, date, context)
    path = _folder(outdir, grid_save_to_dirs, directories_filename_pattern, ctx)
    if not grid_extended_filename or seed is None:
        decoration = ""
    elif save_to_dirs:
        decoration = samples_filename_pattern or "[seed]"
    else:
        decoration = samples_filename_pattern or "[seed]-[prompt_spaces]"
    return _save_numbered(grid, path, fmt, infotext, ctx, basename=basename, decoration=decoration,
                          add_number=add_number, **kw)


# ---------------------------------------------------------------------------------------------------------------------
# grids


def grid_rows(count: int, batch_size: int = 1, *, n_rows: int = -1, grid_prevent_empty_spots: bool = False) -> int:
    """A1111 images.image_grid's row count: option ``n_rows`` (> 0 that many, 0 the batch size, -1 automatic:
    round(sqrt(count)), or with ``grid_prevent_empty_spots`` the largest divisor of count up to floor(sqrt(count))),
    never more than ``count``."""
    if n_rows > 0:
        rows = n_rows
    elif n_rows == 0:
        rows = batch_size
    elif grid_prevent_empty_spots:
        rows = math.floor(math.sqrt(count))
        while count % rows != 0:
            rows -= 1
    else:
        rows = round(math.sqrt(count))
    return min(rows, count)


def image_grid(
    imgs: list[Image.Image],
    batch_size: int = 1,
    rows: int | None = None,
    *,
    n_rows: int = -1,
    grid_prevent_empty_spots: bool = False,
) -> Image.Image:
    """A1111 images.image_grid: the images left to right, top to bottom, each cell the size of the first image, on
    black, in RGB. ``rows`` given wins; else ``grid_rows`` from the options (``n_rows``, ``grid_prevent_empty_spots``).
    A1111's image_grid_callback (extensions changing rows/cols) is not offered."""
    if not imgs:
        raise ValueError("image_grid needs at least one image")
    if rows is None:
        rows = grid_rows(len(imgs), batch_size, n_rows=n_rows, grid_prevent_empty_spots=grid_prevent_empty_spots)
    rows = min(rows, len(imgs))
    cols = math.ceil(len(imgs) / rows)
    w, h = imgs[0].size
    grid = Image.new("RGB", size=(cols * w, rows * h), color="black")
    for i, img in enumerate(imgs):
        grid.paste(img, box=(i % cols * w, i // cols * h))
    return grid
