"""The Extras tab and /sdapi/v1/extra-*: upscale (two upscalers blended), GFPGAN, CodeFormer; one image, a batch of
images, or a folder; infotext and saving as A1111 v1.10.1 does them.

Reproduces ``modules/postprocessing.py`` (``run_postprocessing``, ``run_extras``),
``scripts/postprocessing_upscale.py`` (``ScriptPostprocessingUpscale``), ``scripts/postprocessing_gfpgan.py`` and
``scripts/postprocessing_codeformer.py``. The upscalers are :mod:`webui.core.postprocess.upscalers`, the face restorers
:mod:`webui.core.postprocess.face_restore`. Plain functions on plain values; the API handler and the UI tab call
:func:`run_extras`.
"""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from webui.core.postprocess.face_restore import FaceRestorers
from webui.core.io.images import (
    OUTPUT_FORMATS,
    InvalidImageFormat,
    fix_image,
    next_sequence_number,
    read_image,
    read_info_from_image,
    save_image_atomic,
)
from webui.core.io import files
from webui.core.io.infotext import quote
from webui.core.postprocess.upscalers import UpscalerRegistry, read_option
from webui.core.settings import OPTIONS_BY_KEY

log = logging.getLogger(__name__)

#: A1111's postprocessing scripts and their ``order`` (the order they run in unless option
#: postprocessing_operation_order says otherwise).
POSTPROCESSING_ORDER = (("Upscale", 1000), ("GFPGAN", 2000), ("CodeFormer", 3000), ("Caption", 4000),
                        ("Split oversized images", 4000), ("Auto focal point crop", 4010), ("Auto-sized crop", 4020),
                        ("Create flipped copies", 4030))
#: A1111 "Caption" (scripts/postprocessing_caption.py): its choices -> the interrogate model names
CAPTION_OPTIONS = {"Deepbooru": "deepdanbooru", "BLIP": "blip"}

#: Image file types read from a batch folder (A1111 shared.listfiles takes every file and skips what PIL cannot read).
EXTRAS_SINGLE, EXTRAS_BATCH, EXTRAS_DIRECTORY = 0, 1, 2


class ExtrasInputError(ValueError):
    """A bad extras request that A1111 answers with an AssertionError (no image, no input folder, ...)."""


@dataclass(frozen=True)
class ExtrasOptions:
    """The Extras tab's values under A1111's API names (models.ExtrasBaseRequest), A1111's defaults.

    ``resize_mode`` 0 is "Scale by" (``upscaling_resize``, with ``max_side_length`` when not 0), 1 "Scale to"
    (``upscaling_resize_w`` x ``upscaling_resize_h``, centre-cropped when ``upscaling_crop``). ``upscale_first`` is
    accepted and ignored, as in A1111 (the order is Upscale, GFPGAN, CodeFormer).
    """

    resize_mode: int = 0
    show_extras_results: bool = True
    gfpgan_visibility: float = 0.0
    codeformer_visibility: float = 0.0
    codeformer_weight: float = 0.0
    upscaling_resize: float = 2
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str | None = "None"
    upscaler_2: str | None = "None"
    extras_upscaler_2_visibility: float = 0.0
    upscale_first: bool = False
    max_side_length: int = 0
    # A1111's "postprocessing for training" scripts (Extras tab only: A1111's API does not take them); the crops
    # and splits aim at the Upscale section's target size (scale to, or the image scaled by)
    split_enabled: bool = False
    split_threshold: float = 0.5
    split_overlap_ratio: float = 0.2
    focal_enabled: bool = False
    focal_face_weight: float = 0.9
    focal_entropy_weight: float = 0.15
    focal_edges_weight: float = 0.5
    focal_debug: bool = False
    autosized_enabled: bool = False
    autosized_mindim: int = 384
    autosized_maxdim: int = 768
    autosized_minarea: int = 64 * 64
    autosized_maxarea: int = 640 * 640
    autosized_objective: str = "Maximize area"
    autosized_threshold: float = 0.1
    flip_enabled: bool = False
    flip_options: tuple = ("Horizontal",)
    caption_enabled: bool = False
    caption_options: tuple = ("Deepbooru",)


@dataclass(frozen=True)
class ExtrasImage:
    """One processed image: the image (its ``info`` carries the PNG chunks it will be encoded with), its
    postprocessing infotext, the name it came with, and where it was saved (None when not saved)."""

    image: Image.Image
    infotext: str
    name: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class ExtrasResult:
    """What run_postprocessing returns: the images to show, all processed images, and ``html_info`` (the last
    image's infotext as A1111's plaintext_to_html writes it)."""

    images: list[Image.Image]
    processed: list[ExtrasImage] = field(default_factory=list)
    infotext: str = ""
    comments: list[str] = field(default_factory=list)  # e.g. why the focal crop's face weight was ignored

    @property
    def html_info(self) -> str:
        return plaintext_to_html(self.infotext)

    @property
    def saved(self) -> list[str]:
        return [p.path for p in self.processed if p.path]


# ---------------------------------------------------------------------------------------------------------------------
# infotext


def postprocessing_infotext(info: dict[str, Any]) -> str:
    """A1111 run_postprocessing: ``k: v`` pairs joined with ", " (a value equal to its key is written alone; values
    with ',', ':' or a newline are JSON-quoted; None is left out)."""
    return ", ".join(k if k == v else f"{k}: {quote(v)}" for k, v in info.items() if v is not None)


def plaintext_to_html(text: str, classname: str | None = None) -> str:
    """A1111 ui_common.plaintext_to_html: HTML-escaped lines joined with ``<br>`` and a newline, in ``<p>``."""
    content = "<br>\n".join(html.escape(x) for x in text.split("\n"))
    return f"<p class='{classname}'>{content}</p>" if classname else f"<p>{content}</p>"


# ---------------------------------------------------------------------------------------------------------------------
# the operations (scripts_postprocessing.ScriptPostprocessing.process of each script)


def limit_size_by_one_dimention(w: float, h: float, limit: int) -> tuple[int, int]:
    """A1111 postprocessing_upscale.limit_size_by_one_dimention (sic): shrink (w, h) so its long side is ``limit``."""
    if h > w and h > limit:
        w = limit * w // h
        h = limit
    elif w > limit:
        h = limit * h // w
        w = limit
    return int(w), int(h)


def _upscale_once(image: Image.Image, info: dict, name: str, opts: ExtrasOptions, upscalers: UpscalerRegistry,
                  settings: Any, should_stop: Callable[[], bool] | None) -> Image.Image:
    """ScriptPostprocessingUpscale.upscale: the factor (and its infotext keys), the upscaler, the crop."""
    mode = opts.resize_mode
    upscale_by = opts.upscaling_resize
    to_w, to_h, crop = opts.upscaling_resize_w, opts.upscaling_resize_h, opts.upscaling_crop
    if mode == 1:
        upscale_by = max(to_w / image.width, to_h / image.height)
        info["Postprocess upscale to"] = f"{to_w}x{to_h}"
    else:
        info["Postprocess upscale by"] = upscale_by
        if opts.max_side_length != 0 and max(*image.size) * upscale_by > opts.max_side_length:
            mode = 1
            crop = False
            to_w, to_h = limit_size_by_one_dimention(image.width * upscale_by, image.height * upscale_by,
                                                     opts.max_side_length)
            upscale_by = max(to_w / image.width, to_h / image.height)
            info["Max side length"] = opts.max_side_length
    image = upscalers.upscale(image, name, scale=upscale_by, settings=settings, should_stop=should_stop)
    if mode == 1 and crop:
        cropped = Image.new("RGB", (to_w, to_h))
        cropped.paste(image, box=(to_w // 2 - image.width // 2, to_h // 2 - image.height // 2))
        image = cropped
        info["Postprocess crop to"] = f"{image.width}x{image.height}"
    return image


def apply_upscale(image: Image.Image, info: dict, opts: ExtrasOptions, upscalers: UpscalerRegistry, settings: Any,
                  should_stop: Callable[[], bool] | None = None) -> Image.Image:
    """ScriptPostprocessingUpscale.process: upscaler 1 (nothing when "None"), then upscaler 2 from the same input,
    blended in with ``extras_upscaler_2_visibility``. Unknown names raise UpscalerNotFound (A1111: AssertionError
    "could not find upscaler named X")."""
    name_1 = None if opts.upscaler_1 in (None, "None") else opts.upscaler_1
    upscaler_1 = upscalers.find(name_1, settings) if name_1 is not None else None
    if upscaler_1 is None:
        return image
    name_2 = None if opts.upscaler_2 in (None, "None") else opts.upscaler_2
    upscaler_2 = upscalers.find(name_2, settings) if name_2 is not None else None

    upscaled = _upscale_once(image, info, upscaler_1.name, opts, upscalers, settings, should_stop)
    info["Postprocess upscaler"] = upscaler_1.name
    if upscaler_2 is not None and opts.extras_upscaler_2_visibility > 0:
        second = _upscale_once(image, info, upscaler_2.name, opts, upscalers, settings, should_stop)
        if upscaled.mode != second.mode:
            second = second.convert(upscaled.mode)
        upscaled = Image.blend(upscaled, second, opts.extras_upscaler_2_visibility)
        info["Postprocess upscaler 2"] = upscaler_2.name
    return upscaled


def apply_gfpgan(image: Image.Image, info: dict, opts: ExtrasOptions, restorers: FaceRestorers,
                 settings: Any) -> Image.Image:
    """ScriptPostprocessingGfpGan.process: restore, blend with ``gfpgan_visibility`` when below 1."""
    if opts.gfpgan_visibility == 0:
        return image
    source = image.convert("RGB")
    res = restorers.restore(source, "GFPGAN", settings=settings)
    if opts.gfpgan_visibility < 1.0:
        res = Image.blend(source, res, opts.gfpgan_visibility)
    info["GFPGAN visibility"] = round(opts.gfpgan_visibility, 3)
    return res


def apply_codeformer(image: Image.Image, info: dict, opts: ExtrasOptions, restorers: FaceRestorers,
                     settings: Any) -> Image.Image:
    """ScriptPostprocessingCodeFormer.process: restore with weight ``codeformer_weight``, blend with
    ``codeformer_visibility`` when below 1."""
    if opts.codeformer_visibility == 0:
        return image
    source = image.convert("RGB")
    res = restorers.restore(source, "CodeFormer", weight=opts.codeformer_weight, settings=settings)
    if opts.codeformer_visibility < 1.0:
        res = Image.blend(source, res, opts.codeformer_visibility)
    info["CodeFormer visibility"] = round(opts.codeformer_visibility, 3)
    info["CodeFormer weight"] = round(opts.codeformer_weight, 3)
    return res


def operation_order(settings: Any = None) -> list[str]:
    """ScriptPostprocessingRunner.scripts_in_preferred_order: names listed in option postprocessing_operation_order
    first, in that order, the rest by their ``order``; option postprocessing_disable_in_extras removes some."""
    preferred = list(read_option(settings, "postprocessing_operation_order", []) or [])
    disabled = set(read_option(settings, "postprocessing_disable_in_extras", []) or [])
    scripts = [(name, order, i) for i, (name, order) in enumerate(POSTPROCESSING_ORDER) if name not in disabled]

    def score(name: str) -> int:
        return preferred.index(name) if name in preferred else len(POSTPROCESSING_ORDER)

    return [name for name, order, i in sorted(scripts, key=lambda s: (score(s[0]), s[1], s[0], s[2]))]


@dataclass
class PostprocessedImage:
    """A1111 scripts_postprocessing.PostprocessedImage: one image in the run, its info dict, the name tags its file
    gets, whether later operations skip it, and the extra images an operation made from it."""

    image: Image.Image
    info: dict[str, Any] = field(default_factory=dict)
    nametags: list[str] = field(default_factory=list)
    disable_processing: bool = False
    extra_images: list = field(default_factory=list)
    caption: str | None = None  # the Caption step's text, written to NAME.txt beside the saved image

    def create_copy(self, image: Image.Image, nametags: list[str] | None = None,
                    disable_processing: bool = False) -> "PostprocessedImage":
        return PostprocessedImage(image, dict(self.info), self.nametags + list(nametags or ()), disable_processing)


def target_size(image: Image.Image, opts: ExtrasOptions) -> tuple[int, int]:
    """A1111 Upscale ``process_firstpass``: ``pp.shared.target_width/height``, which the training scripts aim at."""
    if opts.resize_mode == 1:
        return int(opts.upscaling_resize_w), int(opts.upscaling_resize_h)
    w, h = int(image.width * opts.upscaling_resize), int(image.height * opts.upscaling_resize)
    return limit_size_by_one_dimention(w, h, opts.max_side_length)


def _training_op(name: str, pp: PostprocessedImage, opts: ExtrasOptions, target: tuple[int, int], detector,
                 interrogators=None) -> None:
    from webui.core.postprocess import training_prep as tp

    width, height = target
    if name == "Caption" and opts.caption_enabled:
        # A1111 postprocessing_caption: DeepBooru tags, then the BLIP caption alone (its generate_caption, not the
        # CLIP ranking), joined to any caption so far; copies made later (split tiles, flips) start without one
        unknown = [o for o in opts.caption_options if o not in CAPTION_OPTIONS]
        if unknown:
            raise ExtrasInputError(f"Caption: unknown option(s) {', '.join(map(repr, unknown))}; choices: "
                                   f"{', '.join(CAPTION_OPTIONS)}")
        if interrogators is None:
            raise ExtrasInputError("Caption: this run has no interrogators")
        captions = [pp.caption]
        if "Deepbooru" in opts.caption_options:
            captions.append(interrogators.deepbooru().tag(pp.image))
        if "BLIP" in opts.caption_options:
            captions.append(interrogators.clip().generate_caption(pp.image.convert("RGB")))
        pp.caption = ", ".join(x for x in captions if x)
    elif name == "Split oversized images" and opts.split_enabled:
        tiles = tp.split_oversized(pp.image, width, height, opts.split_threshold, opts.split_overlap_ratio)
        if tiles:
            pp.image = tiles[0]
            pp.extra_images = [pp.create_copy(x) for x in tiles[1:]]
    elif name == "Auto focal point crop" and opts.focal_enabled and width and height:
        result, *others = tp.focal_crop(pp.image, width, height, face_weight=opts.focal_face_weight,
                                        entropy_weight=opts.focal_entropy_weight,
                                        edges_weight=opts.focal_edges_weight, detector=detector,
                                        debug=opts.focal_debug)
        pp.image = result
        pp.extra_images = [pp.create_copy(x, nametags=["focal-crop-debug"], disable_processing=True) for x in others]
    elif name == "Auto-sized crop" and opts.autosized_enabled:
        cropped = tp.multicrop_pic(pp.image, opts.autosized_mindim, opts.autosized_maxdim, opts.autosized_minarea,
                                   opts.autosized_maxarea, opts.autosized_objective, opts.autosized_threshold)
        if cropped is not None:
            pp.image = cropped
        else:
            log.info("skipped %dx%d image (can't find suitable size within error threshold)", *pp.image.size)
    elif name == "Create flipped copies" and opts.flip_enabled:
        pp.extra_images.extend(tp.flipped_copies(pp.image, opts.flip_options))


def postprocess_all(
    image: Image.Image,
    opts: ExtrasOptions,
    *,
    upscalers: UpscalerRegistry,
    restorers: FaceRestorers,
    settings: Any = None,
    should_stop: Callable[[], bool] | None = None,
    models_dir: str | None = None,
    comments: list[str] | None = None,
    interrogators: Any = None,
) -> list[PostprocessedImage]:
    """A1111 ``ScriptPostprocessingRunner.run``: each operation in order over every image so far (the split tiles and
    flipped copies made by one operation go through the later ones); the first item is the input's own result."""
    target = target_size(image, opts)
    detector = None
    if opts.focal_enabled and opts.focal_face_weight > 0:
        from webui.core.postprocess.training_prep import face_detector

        detector = face_detector(models_dir or "models")
        if detector.note:
            log.warning(detector.note)
            if comments is not None and detector.note not in comments:
                comments.append(detector.note)
    all_images = [PostprocessedImage(image)]
    for name in operation_order(settings):
        if should_stop is not None and should_stop():
            break
        for pp in list(all_images):
            if not pp.disable_processing:
                if name == "Upscale":
                    pp.image = apply_upscale(pp.image, pp.info, opts, upscalers, settings, should_stop)
                elif name == "GFPGAN":
                    pp.image = apply_gfpgan(pp.image, pp.info, opts, restorers, settings)
                elif name == "CodeFormer":
                    pp.image = apply_codeformer(pp.image, pp.info, opts, restorers, settings)
                else:
                    _training_op(name, pp, opts, target, detector, interrogators)
            for extra in pp.extra_images:
                all_images.append(extra if isinstance(extra, PostprocessedImage) else pp.create_copy(extra))
            pp.extra_images = []
    return all_images


def postprocess_image(
    image: Image.Image,
    opts: ExtrasOptions,
    *,
    upscalers: UpscalerRegistry,
    restorers: FaceRestorers,
    settings: Any = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[Image.Image, dict[str, Any]]:
    """scripts_postproc.run on one image, first result only: the image and its info dict (A1111's ``pp.info``, in
    the order the keys were set)."""
    first = postprocess_all(image, opts, upscalers=upscalers, restorers=restorers, settings=settings,
                            should_stop=should_stop)[0]
    return first.image, first.info


# ---------------------------------------------------------------------------------------------------------------------
# saving


def save_extras_image(image: Image.Image, outdir: str, infotext: str, existing_info: dict[str, Any], *,
                      settings: Any = None, basename: str = "", forced_filename: str | None = None,
                      suffix: str = "") -> str:
    """A1111 images.save_image as run_postprocessing calls it (short_filename, no_prompt, pnginfo section "extras"):
    no sub-folder; ``NNNNN.png`` (``basename-NNNN`` with a basename) unless ``forced_filename`` (the original name,
    option use_original_name_batch). PNG: the input's chunks plus ``postprocessing`` and ``extras`` (both the
    infotext); JPEG/WebP: the infotext in the EXIF UserComment. Option save_txt writes NAME.txt beside it."""
    fmt = str(read_option(settings, "samples_format", "png")).lower()
    if fmt not in OUTPUT_FORMATS:
        raise InvalidImageFormat(fmt)
    if (image.height > 65535 or image.width > 65535) and fmt in ("jpg", "jpeg") or (
            image.height > 16383 or image.width > 16383) and fmt == "webp":
        fmt = "png"
    os.makedirs(outdir, exist_ok=True)
    if forced_filename is None:
        decoration = suffix
        add_number = bool(read_option(settings, "save_images_add_number", True)) or decoration == ""
        if decoration != "" and add_number:
            decoration = f"-{decoration}"
        if add_number:
            count = next_sequence_number(outdir, basename)
            fullfn = ""
            for i in range(500):
                fn = f"{count + i:05}" if basename == "" else f"{basename}-{count + i:04}"
                fullfn = os.path.join(outdir, f"{fn}{decoration}.{fmt}")
                if not os.path.exists(fullfn):
                    break
        else:
            fullfn = os.path.join(outdir, f"{decoration}.{fmt}")
    else:
        fullfn = os.path.join(outdir, f"{forced_filename}.{fmt}")

    enable_pnginfo = bool(read_option(settings, "enable_pnginfo", True))
    to_save = image.copy()
    if fmt == "png":
        chunks = {k: v for k, v in (existing_info or {}).items() if isinstance(k, str)}
        chunks["extras"] = infotext
        to_save.info = {k: str(v) for k, v in chunks.items()} if enable_pnginfo else {}
        text = None
    else:
        to_save.info = {}
        text = infotext
    save_image_atomic(to_save, fullfn, fmt, text, jpeg_quality=int(read_option(settings, "jpeg_quality", 80)),
                      webp_lossless=bool(read_option(settings, "webp_lossless", False)))
    if read_option(settings, "save_txt", False) and infotext is not None:
        with open(os.path.splitext(fullfn)[0] + ".txt", "w", encoding="utf8") as f:
            f.write(f"{infotext}\n")
    return fullfn


def write_caption(image_path: str, caption: str, action: str = "Ignore") -> str | None:
    """A1111 run_postprocessing's caption file: NAME.txt beside the saved image. Option
    postprocessing_existing_caption_action decides what happens to a caption file already there: Ignore (replace it),
    Keep (leave it), Prepend (old text first) or Append (old text last), joined by a space. Returns the path written,
    or None when the result is empty."""
    caption_filename = os.path.splitext(image_path)[0] + ".txt"
    existing = ""
    try:
        with open(caption_filename, encoding="utf8") as f:
            existing = f.read().strip()
    except FileNotFoundError:
        pass
    if action == "Prepend" and existing:
        text = f"{existing} {caption}"
    elif action == "Append" and existing:
        text = f"{caption} {existing}"
    elif action == "Keep" and existing:
        text = existing
    else:
        text = caption
    text = text.strip()
    if not text:
        return None
    with open(caption_filename, "w", encoding="utf8") as f:
        f.write(text)
    return caption_filename


# ---------------------------------------------------------------------------------------------------------------------
# running


Source = tuple[Any, "str | None"]  # (PIL image or file path, name or None)


def list_image_files(input_dir: str) -> list[str]:
    """A1111 shared.listfiles: the folder's files (not sub-folders), sorted; unreadable ones are skipped later."""
    return [os.path.join(input_dir, f) for f in sorted(os.listdir(input_dir), key=str.lower)
            if os.path.isfile(os.path.join(input_dir, f))]


def run_postprocessing(
    sources: Iterable[Source],
    opts: ExtrasOptions,
    *,
    upscalers: UpscalerRegistry,
    restorers: FaceRestorers,
    settings: Any = None,
    outdir: str | None = None,
    save_output: bool = True,
    show_results: bool = True,
    progress: Any = None,
    models_dir: str | None = None,
    interrogators: Any = None,
) -> ExtrasResult:
    """A1111 postprocessing.run_postprocessing over ``sources`` ((image or path, name) pairs).

    For each: read (a path that is not an image is skipped), converted to RGB unless RGB/RGBA, its PNG info kept;
    the operations run; the infotext is built; with option enable_pnginfo the image's ``info`` becomes the input's
    chunks plus ``postprocessing``; saved to ``outdir`` when ``save_output`` (the original name, when given and
    option use_original_name_batch, else the next number); returned when ``show_results``. ``progress`` (the queue's
    ProgressTracker) gets job_count, textinfo and the current image, and its interrupt stops the run.
    """
    items = list(sources)
    should_stop = (lambda: progress.interrupted) if progress is not None else None
    if progress is not None:
        progress.job = "extras"
        progress.job_count = len(items)
    outputs: list[Image.Image] = []
    processed: list[ExtrasImage] = []
    comments: list[str] = []
    infotext = ""
    for index, (placeholder, name) in enumerate(items):
        if progress is not None:
            progress.job_no = index  # A1111 state.nextjob()
            progress.job = "extras"
            progress.textinfo = name
            progress.skipped = False
            if progress.interrupted:
                break
        if isinstance(placeholder, str):
            try:
                with open(placeholder, "rb") as f:
                    image_data = read_image(f.read())
            except (OSError, ValueError, Image.DecompressionBombError) as e:  # A1111 skips what it cannot read
                log.info("extras: skipping %s: %s", placeholder, e)
                continue
        else:
            image_data = placeholder
        image_data = image_data if image_data.mode in ("RGBA", "RGB") else image_data.convert("RGB")

        parameters, existing_pnginfo = read_info_from_image(image_data)
        if parameters:
            existing_pnginfo["parameters"] = parameters

        results = postprocess_all(image_data, opts, upscalers=upscalers, restorers=restorers, settings=settings,
                                  should_stop=should_stop, models_dir=models_dir, comments=comments,
                                  interrogators=interrogators)
        if progress is not None and progress.skipped:
            continue
        for number, pp in enumerate(results):
            result = pp.image
            if result is image_data:
                result = image_data.copy()  # the caller's image is never changed

            infotext = postprocessing_infotext(pp.info)
            chunks = {k: v for k, v in existing_pnginfo.items() if isinstance(k, str) and isinstance(v, str)}
            if read_option(settings, "enable_pnginfo", True):
                chunks["postprocessing"] = infotext
                result.info = dict(chunks)
            else:
                result.info = {}
            if progress is not None:
                progress.current_image = result

            path = None
            if save_output:
                if outdir is None:
                    raise ValueError("run_postprocessing: outdir is required when save_output is true")
                suffix = "-".join(pp.nametags)
                if read_option(settings, "use_original_name_batch", True) and name:
                    basename = os.path.splitext(os.path.basename(name))[0]
                    # the tiles and copies of one input get -1, -2 ... so they do not overwrite each other
                    forced = basename + (f"-{number}" if number else "") + (f"-{suffix}" if suffix else "")
                else:
                    basename, forced = "", None
                path = save_extras_image(result, outdir, infotext, chunks, settings=settings, basename=basename,
                                         forced_filename=forced, suffix=suffix)
                if pp.caption:
                    write_caption(path, pp.caption, read_option(settings, "postprocessing_existing_caption_action",
                                                                "Ignore"))
            processed.append(ExtrasImage(result, infotext, name, path))
            if show_results:
                outputs.append(result)
    return ExtrasResult(outputs, processed, infotext, comments)


def run_extras(
    extras_mode: int,
    opts: ExtrasOptions,
    *,
    upscalers: UpscalerRegistry,
    restorers: FaceRestorers,
    settings: Any = None,
    data_dir: str = ".",
    image: Image.Image | None = None,
    image_folder: Sequence[tuple[Image.Image, str | None]] = (),
    input_dir: str = "",
    output_dir: str = "",
    save_output: bool = True,
    hide_ui_dir_config: bool = False,
    progress: Any = None,
    models_dir: str | None = None,
    interrogators: Any = None,
) -> ExtrasResult:
    """A1111 postprocessing.run_extras / run_postprocessing's input modes.

    ``extras_mode`` 0: ``image``; 1: ``image_folder`` ((image, original file name or None) pairs: uploads); 2: every
    file of ``input_dir`` (refused with --hide-ui-dir-config), written to ``output_dir`` when given, shown only with
    ``opts.show_extras_results``. Output goes to ``output_dir`` (mode 2) or option outdir_samples /
    outdir_extras_samples under ``data_dir``. Raises ExtrasInputError when the input is missing.
    """
    if extras_mode == EXTRAS_BATCH:
        sources: list[Source] = [(fix_image(img), name or None) for img, name in image_folder]
    elif extras_mode == EXTRAS_DIRECTORY:
        if hide_ui_dir_config:
            raise ExtrasInputError("--hide-ui-dir-config option must be disabled")
        if not input_dir:
            raise ExtrasInputError("input directory not selected")
        if not os.path.isdir(input_dir):
            raise ExtrasInputError(f"input directory {input_dir!r} does not exist")
        sources = [(path, path) for path in list_image_files(input_dir)]
    else:
        if image is None:
            raise ExtrasInputError("image not selected")
        sources = [(image, None)]
    if extras_mode == EXTRAS_DIRECTORY and output_dir != "":
        outpath = output_dir
    else:
        outpath = files.output_dir(lambda key: read_option(settings, key, OPTIONS_BY_KEY[key].default), "extras",
                                   data_dir)
    show = extras_mode != EXTRAS_DIRECTORY or opts.show_extras_results
    return run_postprocessing(sources, opts, upscalers=upscalers, restorers=restorers, settings=settings,
                              outdir=outpath, save_output=save_output, show_results=show, progress=progress,
                              models_dir=models_dir or os.path.join(data_dir, "models"), interrogators=interrogators)
