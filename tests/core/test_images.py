"""A1111 image files: metadata in PNG/JPEG/WebP, base64 for the API, file names, sequence numbers, atomic saves."""

from __future__ import annotations

import base64
import datetime
import io
import os

import piexif
import piexif.helper
import pytest
from PIL import Image, PngImagePlugin

from webui.core.io.images import (
    FilenameContext,
    InvalidImage,
    InvalidImageFormat,
    apply_filename_pattern,
    decode_base64_image,
    encode_base64,
    encode_image,
    grid_rows,
    image_grid,
    next_sequence_number,
    read_info_from_image,
    sanitize_filename_part,
    save_generated_image,
    save_grid,
    save_image_atomic,
)
from webui.core.io.infotext import parse_generation_parameters

INFOTEXT = (
    'a cat, "quoted", ünïcødé\nNegative prompt: dog: bad\n'
    'Steps: 20, Sampler: Euler, CFG scale: 7.0, Seed: 123, Size: 64x48, Lora hashes: "a: 1, b: 2", Version: v1.10.1'
)
DATE = datetime.datetime(2024, 7, 27, 12, 30, 45)


def make_image(mode="RGB", size=(64, 48)):
    img = Image.new(mode, size)
    if mode in ("RGB", "RGBA"):
        px = img.load()
        for x in range(size[0]):
            for y in range(size[1]):
                px[x, y] = (x * 4, y * 5, 100) + ((200,) if mode == "RGBA" else ())
    return img


def reopen(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


# --- encode / read metadata --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, pil_format", [("png", "PNG"), ("jpg", "JPEG"), ("jpeg", "JPEG"), ("webp", "WEBP"),
                                             ("PNG", "PNG"), ("JPG", "JPEG")])
def test_metadata_round_trip(fmt, pil_format):
    data = encode_image(make_image(), fmt, INFOTEXT)
    img = reopen(data)
    assert img.format == pil_format
    assert img.size == (64, 48)
    geninfo, items = read_info_from_image(img)
    assert geninfo == INFOTEXT
    assert "exif" not in items and "parameters" not in items
    parsed = parse_generation_parameters(geninfo)
    assert parsed["Prompt"] == 'a cat, "quoted", ünïcødé'
    assert parsed["Negative prompt"] == "dog: bad"
    assert parsed["Lora hashes"] == "a: 1, b: 2"
    assert (parsed["Size-1"], parsed["Size-2"]) == ("64", "48")


def test_png_is_lossless_and_infotext_is_a_parameters_text_chunk():
    src = make_image()
    img = reopen(encode_image(src, "png", INFOTEXT))
    assert img.text == {"parameters": INFOTEXT}
    assert img.tobytes() == src.tobytes()


def test_png_keeps_other_string_info_and_skips_non_strings():
    src = make_image()
    src.info["postprocessing"] = "Postprocess upscale by: 2"
    src.info["dpi"] = (72, 72)
    img = reopen(encode_image(src, "png", None))
    assert img.text == {"postprocessing": "Postprocess upscale by: 2"}
    geninfo, items = read_info_from_image(img)
    assert geninfo is None
    assert items["postprocessing"] == "Postprocess upscale by: 2"


def test_png_without_infotext_has_no_chunks():
    img = reopen(encode_image(make_image(), "png", None))
    assert getattr(img, "text", {}) == {}
    assert read_info_from_image(img) == (None, {})


def test_png_infotext_replaces_an_existing_parameters_chunk():
    src = make_image()
    src.info["parameters"] = "old"
    assert reopen(encode_image(src, "png", "new")).text == {"parameters": "new"}
    assert reopen(encode_image(src, "png", None)).text == {"parameters": "old"}


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
@pytest.mark.parametrize("mode", ["RGBA", "P"])
def test_lossy_formats_convert_rgba_and_palette_to_rgb(fmt, mode):
    img = reopen(encode_image(make_image(mode), fmt, "x"))
    assert img.mode == "RGB"
    assert read_info_from_image(img)[0] == "x"


def test_exif_user_comment_is_unicode_encoded():
    img = reopen(encode_image(make_image(), "jpg", INFOTEXT))
    raw = piexif.load(img.info["exif"])["Exif"][piexif.ExifIFD.UserComment]
    assert raw.startswith(b"UNICODE\x00")
    assert piexif.helper.UserComment.load(raw) == INFOTEXT


def test_jpeg_quality_and_webp_lossless():
    src = make_image()
    small = encode_image(src, "jpg", None, jpeg_quality=10)
    big = encode_image(src, "jpg", None, jpeg_quality=95)
    assert len(small) < len(big)
    lossless = reopen(encode_image(src, "webp", "x", webp_lossless=True))
    assert lossless.tobytes() == src.tobytes()
    assert read_info_from_image(lossless)[0] == "x"


def test_jpeg_without_infotext_reads_as_none():
    img = reopen(encode_image(make_image(), "jpeg", None))
    assert "exif" in img.info  # the API (encode_pil_to_base64) always writes a UserComment, empty here
    assert read_info_from_image(img) == (None, {})


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
def test_saved_lossy_file_without_infotext_has_no_exif(tmp_path, fmt):
    # A1111 save_image_with_geninfo inserts EXIF only when there is an infotext (enable_pnginfo and geninfo)
    src = make_image()
    src.info["parameters"] = "stale"
    path = save_image_atomic(src, tmp_path / f"x.{fmt}", fmt, None)
    with Image.open(path) as img:
        assert "exif" not in img.info
        assert read_info_from_image(img) == (None, {})


@pytest.mark.parametrize("fmt", ["avif", "gif", "bmp", "", "tiff"])
def test_invalid_format(fmt):
    with pytest.raises(InvalidImageFormat, match="Invalid image format"):
        encode_image(make_image(), fmt, None)
    assert issubclass(InvalidImageFormat, ValueError)


def test_read_info_ignores_technical_keys_and_reads_gif_comment():
    img = make_image()
    img.info.update({"dpi": (72, 72), "jfif": 1, "loop": 0, "extras": "x", "comment": b"gif text"})
    geninfo, items = read_info_from_image(img)
    assert geninfo == "gif text"
    assert items == {"extras": "x", "comment": b"gif text"}


def test_read_info_novelai():
    img = make_image()
    img.info.update({
        "Software": "NovelAI",
        "Description": "a cat",
        "Comment": '{"uc": "bad", "steps": 28, "sampler": "k_euler", "scale": 11, "seed": 42}',
    })
    geninfo, _ = read_info_from_image(img, samplers_map={"k_euler": "Euler"})
    assert geninfo == ("a cat\nNegative prompt: bad\nSteps: 28, Sampler: Euler, CFG scale: 11, Seed: 42, "
                       "Size: 64x48, Clip skip: 2, ENSD: 31337")
    assert "Sampler: Euler a," in read_info_from_image(img)[0]


# --- base64 ------------------------------------------------------------------------------------------------------


def test_encode_base64_is_raw_base64_of_encode_image():
    src = make_image()
    s = encode_base64(src, "png", INFOTEXT)
    assert isinstance(s, str) and not s.startswith("data:")
    assert base64.b64decode(s, validate=True) == encode_image(src, "png", INFOTEXT)


@pytest.mark.parametrize("prefix", ["", "data:image/png;base64,", "data:image/jpeg;base64,"])
def test_decode_base64_with_and_without_data_url(prefix):
    src = make_image()
    img = decode_base64_image(prefix + encode_base64(src, "png", INFOTEXT))
    assert img.size == (64, 48)
    assert img.tobytes() == src.tobytes()
    assert read_info_from_image(img)[0] == INFOTEXT


def test_decode_base64_is_not_strict_about_foreign_characters():
    s = encode_base64(make_image(), "png", None)
    noisy = "\n".join(s[i:i + 60] for i in range(0, len(s), 60)) + "!!"
    assert decode_base64_image(noisy).size == (64, 48)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "not an image",
        base64.b64encode(b"hello world, not an image").decode(),
        "abc",  # bad padding
        "data:image/png,abc",  # no ';' -> A1111 IndexError
        "data:image/png;base64;x",  # no ',' in the segment after ';'
        "data:text/plain;base64," + base64.b64encode(b"x").decode(),
    ],
)
def test_decode_bad_base64_raises_invalid_image(bad):
    with pytest.raises(InvalidImage, match="^Invalid encoded image$"):
        decode_base64_image(bad)
    assert issubclass(InvalidImage, ValueError)


def test_decode_truncated_image_raises_invalid_image():
    data = encode_image(make_image(), "png", None)
    with pytest.raises(InvalidImage):
        decode_base64_image(base64.b64encode(data[: len(data) // 2]).decode())


def test_decode_applies_exif_orientation_and_png_transparency():
    src = make_image(size=(64, 48))
    exif = piexif.dump({"0th": {piexif.ImageIFD.Orientation: 6}})  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    src.save(buf, format="JPEG", exif=exif)
    img = decode_base64_image(base64.b64encode(buf.getvalue()).decode())
    assert img.size == (48, 64)

    pal = Image.new("P", (4, 4))
    pal.putpalette([0, 0, 0, 255, 0, 0])
    buf = io.BytesIO()
    pal.save(buf, format="PNG", transparency=b"\x00\x80")  # per-entry alpha: info["transparency"] is bytes
    assert decode_base64_image(base64.b64encode(buf.getvalue()).decode()).mode == "RGBA"


# --- file names --------------------------------------------------------------------------------------------------


def test_sanitize_filename_part():
    assert sanitize_filename_part("a cat") == "a_cat"
    assert sanitize_filename_part("a cat", replace_spaces=False) == "a cat"
    assert sanitize_filename_part('  a<b>c:d"e/f\\g|h?i*j#k\nl\rm\tn') == "__a_b_c_d_e_f_g_h_i_j_k_l_m_n"
    assert sanitize_filename_part("  lead and trail . .", replace_spaces=False) == "lead and trail"
    assert sanitize_filename_part("x" * 200) == "x" * 128
    assert sanitize_filename_part("x" * 200, max_length=10) == "x" * 10
    assert sanitize_filename_part("a/b:c", invalid_chars="/") == "a_b:c"
    assert sanitize_filename_part(None) is None


def test_next_sequence_number(tmp_path):
    assert next_sequence_number(tmp_path / "missing") == 0
    assert next_sequence_number(tmp_path) == 0
    for name in ["00000-1.png", "00007-2-a cat.png", "notanumber.png", "00003.txt", ".tmp123.tmp"]:
        (tmp_path / name).write_bytes(b"")
    assert next_sequence_number(tmp_path) == 8
    assert next_sequence_number(tmp_path, "grid") == 0
    (tmp_path / "grid-0004-1.png").write_bytes(b"")
    assert next_sequence_number(tmp_path, "grid") == 5


def test_apply_filename_pattern():
    ctx = FilenameContext(seed=7, prompt="a (big) cat, on: mat", steps=20, cfg_scale=7.0, width=64, height=48,
                          sampler="DPM++ 2M", date=DATE, negative_prompt="bad")
    assert apply_filename_pattern("[seed]-[prompt_spaces]", ctx) == "7-a (big) cat, on_ mat"
    assert apply_filename_pattern("[seed]-[prompt]", ctx) == "7-a_(big)_cat,_on__mat"
    assert apply_filename_pattern("[prompt_words]", ctx) == "a big cat on mat"
    assert apply_filename_pattern("[date]/[datetime<%H%M>]", ctx) == "2024-07-27/1230"
    assert apply_filename_pattern("[datetime]", ctx) == "20240727123045"
    assert apply_filename_pattern("[steps]x[cfg] [width]x[height] [sampler]", ctx) == "20x7.0 64x48 DPM++ 2M"
    assert apply_filename_pattern("[prompt_hash<4>]", ctx) == __import__("hashlib").sha256(
        ctx.prompt.encode()).hexdigest()[:4]
    assert apply_filename_pattern("[seed]-[denoising]", ctx) == "7"  # skipped with the text before it
    assert apply_filename_pattern("[seed]-[denoising]", FilenameContext(seed=7, denoising_strength=0.5)) == "7-0.5"
    assert apply_filename_pattern("[unknown]-[model_hash]", ctx) == "[unknown]-[model_hash]"
    assert apply_filename_pattern("[none]", ctx) == ""
    assert apply_filename_pattern("[SEED]", ctx) == "7"


def test_save_generated_image_a1111_default_names(tmp_path):
    img = make_image()
    p1 = save_generated_image(img, tmp_path, 123, "a cat", INFOTEXT, date=DATE)
    p2 = save_generated_image(img, tmp_path, 124, "a cat", INFOTEXT, date=DATE)
    day = tmp_path / "2024-07-27"
    # save_to_dirs (default true) -> file pattern "[seed]" in a [date] folder
    assert p1 == str(day / "00000-123.png")
    assert p2 == str(day / "00001-124.png")
    assert sorted(os.listdir(day)) == ["00000-123.png", "00001-124.png"]
    with Image.open(p1) as saved:
        assert read_info_from_image(saved)[0] == INFOTEXT


def test_save_generated_image_without_dirs_uses_seed_and_prompt_spaces(tmp_path):
    img = make_image()
    p1 = save_generated_image(img, tmp_path, 123, "a cat: on/mat", "x", save_to_dirs=False)
    p2 = save_generated_image(img, tmp_path, 5, "a cat", "x", fmt="jpg", save_to_dirs=False)
    assert p1 == str(tmp_path / "00000-123-a cat_ on_mat.png")
    assert p2 == str(tmp_path / "00001-5-a cat.jpg")
    with Image.open(p2) as saved:
        assert saved.format == "JPEG"
        assert read_info_from_image(saved)[0] == "x"


def test_save_generated_image_patterns_basename_and_no_number(tmp_path):
    img = make_image()
    p = save_generated_image(img, tmp_path, 1, "a cat", None, date=DATE, samples_filename_pattern="[seed]-[prompt]",
                             directories_filename_pattern="[date]-[prompt_words]")
    assert p == str(tmp_path / "2024-07-27-a cat" / "00000-1-a_cat.png")
    p = save_generated_image(img, tmp_path, 1, "a", None, save_to_dirs=False, basename="grid")
    assert p == str(tmp_path / "grid-0000-1-a.png")
    p = save_generated_image(img, tmp_path, 9, "b", None, save_to_dirs=False, add_number=False)
    assert p == str(tmp_path / "9-b.png")
    p = save_generated_image(img, tmp_path / "n", None, "b", None, save_to_dirs=False, add_number=False)
    assert p == str(tmp_path / "n" / "00000.png")  # empty name -> numbered anyway
    # A1111 quirk kept: any entry starting with digits counts, folders included ("2024-07-27-a cat" -> 2024)
    assert next_sequence_number(tmp_path) == 2025
    with pytest.raises(InvalidImageFormat):
        save_generated_image(img, tmp_path, 1, "a", None, fmt="gif")


def test_save_generated_image_truncates_long_prompts(tmp_path):
    p = save_generated_image(make_image(), tmp_path, 1, "x" * 300, None, save_to_dirs=False)
    assert os.path.basename(p) == "00000-1-" + "x" * 128 + ".png"


# --- atomic save -------------------------------------------------------------------------------------------------


def test_save_image_atomic_creates_folder_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "a" / "b" / "img.webp"
    out = save_image_atomic(make_image(), target, "webp", INFOTEXT, jpeg_quality=90)
    assert out == str(target)
    assert os.listdir(target.parent) == ["img.webp"]
    with Image.open(target) as img:
        assert read_info_from_image(img)[0] == INFOTEXT
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    # overwrite in place
    save_image_atomic(make_image(), target, "webp", "second")
    assert os.listdir(target.parent) == ["img.webp"]
    with Image.open(target) as img:
        assert read_info_from_image(img)[0] == "second"


def test_save_image_atomic_failure_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "img.png"
    save_image_atomic(make_image(), target, "png", "old")
    before = target.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_image_atomic(make_image(), target, "png", "new")
    assert os.listdir(tmp_path) == ["img.png"]
    assert target.read_bytes() == before


def test_save_image_atomic_bad_format_writes_nothing(tmp_path):
    with pytest.raises(InvalidImageFormat):
        save_image_atomic(make_image(), tmp_path / "x.gif", "gif", None)
    assert os.listdir(tmp_path) == []


def test_png_text_chunk_written_like_pil_pnginfo():
    # what A1111 writes: a tEXt/iTXt chunk named "parameters" readable by any PNG tool through PIL's .text
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", INFOTEXT)
    buf = io.BytesIO()
    make_image().save(buf, format="PNG", pnginfo=info)
    assert encode_image(make_image(), "png", INFOTEXT) == buf.getvalue()


# --- files A1111 and others wrote --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
def test_reads_files_written_the_a1111_way_piexif_insert(tmp_path, fmt):
    # A1111 save_image_with_geninfo saves the JPEG/WebP first, then piexif.insert()s the EXIF UserComment
    path = str(tmp_path / f"a1111.{fmt}")
    make_image().save(path, format="JPEG" if fmt == "jpg" else "WEBP", quality=80)
    exif = piexif.dump({"Exif": {piexif.ExifIFD.UserComment: piexif.helper.UserComment.dump(INFOTEXT,
                                                                                             encoding="unicode")}})
    piexif.insert(exif, path)
    with Image.open(path) as img:
        assert read_info_from_image(img) == (INFOTEXT, {})


def test_comfyui_png_chunks_are_listed_as_items():
    # A1111 has no ComfyUI reader: its "prompt"/"workflow" chunks show up in png-info's items, the infotext is None
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", '{"3": {"class_type": "KSampler", "inputs": {"seed": 5}}}')
    info.add_text("workflow", '{"nodes": []}')
    buf = io.BytesIO()
    make_image().save(buf, format="PNG", pnginfo=info)
    geninfo, items = read_info_from_image(reopen(buf.getvalue()))
    assert geninfo is None
    assert items == {"prompt": '{"3": {"class_type": "KSampler", "inputs": {"seed": 5}}}', "workflow": '{"nodes": []}'}


# --- third-party readers parse our files ---------------------------------------------------------------------------

READER_TEXT = (
    'a red fox, "snow", ünïcødé\nNegative prompt: blurry, lowres\n'
    "Steps: 23, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 4242, Size: 64x48, "
    'Model hash: 6ce0161689, Model: tiny-sd15, Lora hashes: "a: 1, b: 2", Version: v1.10.1'
)


def _assert_readers_parse(path, prompt, negative, seed, steps, sampler):
    sd_parsers = pytest.importorskip("sd_parsers", reason="test extra: pip install sd-parsers")
    reader_mod = pytest.importorskip("sd_prompt_reader.image_data_reader",
                                     reason="test extra: pip install sd-prompt-reader")
    with Image.open(path) as img:
        info = sd_parsers.ParserManager().parse(img)
    assert info is not None and info.generator.name == "AUTOMATIC1111"
    sampler_info = info.samplers[0]
    assert sampler_info.name == sampler
    assert [p.value for p in sampler_info.prompts] == [prompt]
    assert [p.value for p in sampler_info.negative_prompts] == [negative]
    assert sampler_info.parameters["seed"] == str(seed)
    assert sampler_info.parameters["steps"] == str(steps)

    reader = reader_mod.ImageDataReader(str(path))
    assert reader.tool == "A1111 webUI"
    assert reader.positive == prompt
    assert reader.negative == negative
    assert reader.parameter["seed"] == str(seed)
    assert reader.parameter["steps"] == str(steps)
    assert reader.parameter["sampler"] == sampler


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_third_party_readers_parse_saved_files(tmp_path, fmt):
    path = save_generated_image(make_image(), tmp_path, 4242, "a red fox", READER_TEXT, fmt=fmt, date=DATE)
    _assert_readers_parse(path, 'a red fox, "snow", ünïcødé', "blurry, lowres", 4242, 23, "DPM++ 2M")


def test_third_party_readers_parse_engine_output(data_dir):
    from webui.config import parse
    from webui.core.types import GenerationRequest
    from webui.state import build_state

    state = build_state(parse(["--nowebui", "--data-dir", str(data_dir)]), create_demo=False)
    for fmt in ("png", "jpg", "webp"):
        res = state.engine.generate(GenerationRequest(
            prompt="a cat, sitting", negative_prompt="dog", steps=2, width=64, height=64, seed=77,
            sampler_name="Euler", save_images=True, override_settings={"samples_format": fmt}))
        (path,) = res.saved_paths
        assert path.endswith("." + fmt)
        _assert_readers_parse(path, "a cat, sitting", "dog", 77, 2, "Euler")


# --- grids -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "count, batch_size, n_rows, prevent, rows",
    [
        (4, 1, -1, False, 2),  # round(sqrt(4))
        (3, 1, -1, False, 2),  # round(1.73)
        (6, 1, -1, False, 2),  # round(2.449)
        (7, 1, -1, True, 1),  # floor(sqrt 7) = 2 does not divide 7 -> 1
        (6, 1, -1, True, 2),
        (8, 4, 0, False, 4),  # 0: the batch size
        (2, 1, 3, False, 2),  # never more rows than images
        (9, 1, 3, False, 3),
    ],
)
def test_grid_rows_a1111_n_rows_semantics(count, batch_size, n_rows, prevent, rows):
    assert grid_rows(count, batch_size, n_rows=n_rows, grid_prevent_empty_spots=prevent) == rows


def test_image_grid_layout_and_black_fill():
    tiles = [Image.new("RGB", (8, 6), (40 * i, 10, 200)) for i in range(1, 6)]
    grid = image_grid(tiles)  # 5 images: round(sqrt 5) = 2 rows, 3 columns
    assert grid.size == (24, 12) and grid.mode == "RGB"
    for i in range(5):
        assert grid.getpixel((i % 3 * 8 + 3, i // 3 * 6 + 2)) == (40 * (i + 1), 10, 200)
    assert grid.getpixel((20, 10)) == (0, 0, 0)  # the empty cell is black
    assert image_grid(tiles, rows=1).size == (40, 6)
    assert image_grid(tiles[:4], batch_size=4, n_rows=0).size == (8, 24)  # n_rows 0: rows = batch size (4)
    rgba = [Image.new("RGBA", (4, 4), (255, 0, 0, 128))]
    assert image_grid(rgba).mode == "RGB"
    with pytest.raises(ValueError):
        image_grid([])


def test_save_grid_a1111_names(tmp_path):
    grid = image_grid([make_image(), make_image()])
    out = tmp_path / "outputs" / "txt2img-grids"
    p1 = save_grid(grid, out, 123, "a cat", INFOTEXT, date=DATE)
    p2 = save_grid(grid, out, 124, "a cat", INFOTEXT, date=DATE)
    assert p1 == str(out / "2024-07-27" / "grid-0000.png")  # short name: grid_extended_filename off
    assert p2 == str(out / "2024-07-27" / "grid-0001.png")
    with Image.open(p1) as saved:
        assert saved.size == (128, 48)
        assert read_info_from_image(saved)[0] == INFOTEXT
    p3 = save_grid(grid, out, 123, "a cat", None, "jpg", date=DATE, grid_extended_filename=True)
    assert p3 == str(out / "2024-07-27" / "grid-0002-123.jpg")
    # the extended name follows option save_to_dirs (not grid_save_to_dirs), as in A1111
    p4 = save_grid(grid, out, 123, "a cat", None, date=DATE, grid_extended_filename=True, save_to_dirs=False)
    assert p4 == str(out / "2024-07-27" / "grid-0003-123-a cat.png")
    p5 = save_grid(grid, out, 9, "x", None, grid_save_to_dirs=False)
    assert p5 == str(out / "grid-0000.png")
