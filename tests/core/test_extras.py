"""Upscalers and the Extras tab (webui.core.postprocess.upscalers, webui.core.postprocess.extras), against A1111 v1.10.1's rules.

Tiny random ESRGAN / Real-ESRGAN files in their real key layouts (tests/fixtures/upscalers.py) are detected and run
by spandrel on the CPU. Expected values come from A1111's code: Upscaler.upscale (model up to three times, then
Lanczos to floor(W*scale/8)*8), images.resize_image for a target size, split_grid/combine_grid tiles, the
postprocessing scripts' infotext keys and the extras file names.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch.nn.functional as F
from PIL import Image, PngImagePlugin

from tests.fixtures.upscalers import write_esrgan, write_realesrgan
from webui.core.postprocess.extras import (
    EXTRAS_BATCH,
    EXTRAS_DIRECTORY,
    EXTRAS_SINGLE,
    ExtrasInputError,
    ExtrasOptions,
    limit_size_by_one_dimention,
    operation_order,
    plaintext_to_html,
    postprocessing_infotext,
    run_extras,
)
from webui.core.postprocess.face_restore import FaceRestoreFolders, FaceRestorers, FaceRestoreUnavailable
from webui.core.io.images import read_info_from_image
from webui.core.settings import Settings
from webui.core.io.tiles import split_grid
from webui.core.postprocess.upscalers import (
    LANCZOS,
    NEAREST,
    UpscalerFolders,
    UpscalerLoadError,
    UpscalerNotFound,
    UpscalerRegistry,
    realesrgan_models_api,
    upscale_pil_patch,
    upscale_with_model,
)

UNTILED = {"ESRGAN_tile": 0, "ESRGAN_tile_overlap": 8}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("upscaler-models")
    write_esrgan(str(root / "ESRGAN" / "4x_tiny.pth"), 4, seed=1)
    write_esrgan(str(root / "ESRGAN" / "2x_tiny.safetensors"), 2, seed=2)
    (root / "ESRGAN" / "broken.pth").write_bytes(b"not a model")
    (root / "ESRGAN" / "readme.txt").write_text("ignored: not a model file type")
    write_realesrgan(str(root / "RealESRGAN" / "RealESRGAN_x4plus.pth"), 4, seed=3)
    write_realesrgan(str(root / "RealESRGAN" / "RealESRGAN_x2plus.pth"), 2, seed=4)
    return str(root)


@pytest.fixture(scope="module")
def registry(models_dir):
    return UpscalerRegistry(UpscalerFolders.under(models_dir), device="cpu")


@pytest.fixture(scope="module")
def restorers(tmp_path_factory):
    return FaceRestorers(FaceRestoreFolders.under(str(tmp_path_factory.mktemp("no-face-models"))), device="cpu")


def random_image(w=64, h=64, seed=0, mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).convert(mode)


def same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))


# -- listing ---------------------------------------------------------------------------------------------------------


def test_upscaler_list_shape_and_order(registry, models_dir):
    esrgan, realesrgan = os.path.join(models_dir, "ESRGAN"), os.path.join(models_dir, "RealESRGAN")
    builtin = {"model_name": None, "model_path": None, "model_url": None, "scale": 4.0}
    assert registry.api_list() == [
        {"name": "None", **builtin},
        {"name": "Lanczos", **builtin},
        {"name": "Nearest", **builtin},
        # then by name, case-insensitively; ESRGAN files are listed with A1111's scale 4 and model_name ESRGAN_4x
        {"name": "2x_tiny", "model_name": "ESRGAN_4x", "model_path": os.path.join(esrgan, "2x_tiny.safetensors"),
         "model_url": None, "scale": 4.0},
        {"name": "4x_tiny", "model_name": "ESRGAN_4x", "model_path": os.path.join(esrgan, "4x_tiny.pth"),
         "model_url": None, "scale": 4.0},
        {"name": "broken", "model_name": "ESRGAN_4x", "model_path": os.path.join(esrgan, "broken.pth"),
         "model_url": None, "scale": 4.0},
        # the Real-ESRGAN file takes its built-in name; R-ESRGAN 2x+ is not in realesrgan_enabled_models by default
        {"name": "R-ESRGAN 4x+", "model_name": None, "model_path": os.path.join(realesrgan, "RealESRGAN_x4plus.pth"),
         "model_url": None, "scale": 4.0},
    ]


def test_enabled_realesrgan_models_option(registry):
    settings = Settings(values={"realesrgan_enabled_models": ["R-ESRGAN 2x+"]})
    names = registry.names(settings)
    assert "R-ESRGAN 2x+" in names and "R-ESRGAN 4x+" not in names
    item = next(i for i in registry.api_list(settings) if i["name"] == "R-ESRGAN 2x+")
    assert item["scale"] == 2.0


def test_realesrgan_models_listing():
    assert [(m["name"], m["scale"]) for m in realesrgan_models_api()] == [
        ("R-ESRGAN General 4xV3", 4), ("R-ESRGAN General WDN 4xV3", 4), ("R-ESRGAN AnimeVideo", 4),
        ("R-ESRGAN 4x+", 4), ("R-ESRGAN 4x+ Anime6B", 4), ("R-ESRGAN 2x+", 2)]
    assert realesrgan_models_api()[3]["path"].endswith("/RealESRGAN_x4plus.pth")


def test_unknown_upscaler_lists_the_valid_ones(registry):
    with pytest.raises(UpscalerNotFound) as e:
        registry.find("nope")
    assert str(e.value).startswith("could not find upscaler named nope; valid upscalers: None, Lanczos, Nearest, ")
    assert "4x_tiny" in e.value.choices
    with pytest.raises(UpscalerNotFound, match="put RealESRGAN_x4plus_anime_6B.pth .* in .*RealESRGAN"):
        registry.find("R-ESRGAN 4x+ Anime6B")  # enabled by default, but its file is absent: nothing is downloaded
    with pytest.raises(UpscalerNotFound, match="add 'R-ESRGAN 2x\\+' to option realesrgan_enabled_models"):
        registry.find("R-ESRGAN 2x+")


def test_a_file_added_later_is_found_without_restart(tmp_path):
    reg = UpscalerRegistry(UpscalerFolders.under(str(tmp_path)))
    assert reg.names() == ["None", "Lanczos", "Nearest"]
    write_esrgan(str(tmp_path / "ESRGAN" / "late.pth"), 2)
    assert reg.find("late").family == "ESRGAN"


# -- PIL upscalers ---------------------------------------------------------------------------------------------------


def test_lanczos_x2_of_64_is_128(registry):
    img = random_image()
    out = registry.upscale(img, "Lanczos", scale=2)
    assert out.size == (128, 128)
    assert same(out, img.resize((128, 128), LANCZOS))


def test_nearest_x2(registry):
    img = random_image()
    assert same(registry.upscale(img, "Nearest", scale=2), img.resize((128, 128), NEAREST))


def test_target_rounded_down_to_multiple_of_8(registry):
    # Upscaler.upscale: dest = floor(70 * 1.5 / 8) * 8 = 104; Lanczos makes 105 first, then resizes to 104.
    img = random_image(70, 70)
    out = registry.upscale(img, "Lanczos", scale=1.5)
    assert out.size == (104, 104)
    assert same(out, img.resize((105, 105), LANCZOS).resize((104, 104), LANCZOS))


def test_size_target_with_none_is_one_lanczos_resize(registry):
    img = random_image()
    assert same(registry.upscale(img, "None", size=(100, 75)), img.resize((100, 75), LANCZOS))


# -- model upscalers -------------------------------------------------------------------------------------------------


def test_spandrel_detects_the_tiny_models(registry):
    m4 = registry.load(registry.find("4x_tiny"))
    m2 = registry.load(registry.find("2x_tiny"))
    r4 = registry.load(registry.find("R-ESRGAN 4x+"))
    r2 = registry.load(registry.find("R-ESRGAN 2x+", Settings(values={"realesrgan_enabled_models": ["R-ESRGAN 2x+"]})))
    assert [(m.architecture.name, m.scale) for m in (m4, m2, r4, r2)] == [
        ("ESRGAN", 4), ("ESRGAN", 2), ("ESRGAN", 4), ("ESRGAN", 2)]
    assert registry.load(registry.find("R-ESRGAN 4x+")) is r4  # kept: the two most recently used stay loaded
    assert registry.load(registry.find("4x_tiny")) is not m4  # dropped when the third and fourth were loaded


def test_bad_model_file_is_a_clear_error(registry):
    with pytest.raises(UpscalerLoadError, match="broken.pth"):
        registry.upscale(random_image(), "broken", scale=2)


def test_esrgan_upscales_by_its_scale(registry):
    img = random_image()
    model = registry.load(registry.find("4x_tiny"))
    out = registry.upscale(img, "4x_tiny", scale=4, settings=UNTILED)
    assert out.size == (256, 256)
    assert same(out, upscale_pil_patch(model, img))  # one pass, no resize
    assert np.asarray(out).std() > 20  # the tiny model's output follows its input


def test_esrgan_to_an_arbitrary_target(registry):
    img = random_image(32, 32)
    model = registry.load(registry.find("4x_tiny"))
    once = upscale_pil_patch(model, img)
    # scale 2 with a 4x model: one pass (128 >= 64), then Lanczos down to 64
    assert same(registry.upscale(img, "4x_tiny", scale=2, settings=UNTILED), once.resize((64, 64), LANCZOS))
    # size=(50, 40) is images.resize_image(0, ...): factor max(50/32, 40/32) = 1.5625 -> Upscaler.upscale makes
    # floor(50/8)*8 = 48 square, then Lanczos to exactly 50x40
    out = registry.upscale(img, "4x_tiny", size=(50, 40), settings=UNTILED)
    assert out.size == (50, 40)
    assert same(out, once.resize((48, 48), LANCZOS).resize((50, 40), LANCZOS))
    assert same(registry.upscale_to(img, "4x_tiny", 50, 40, UNTILED), out)  # the hires-fix entry point
    # a smaller target never runs the model: one Lanczos resize
    assert same(registry.upscale_to(img, "4x_tiny", 24, 16, UNTILED), img.resize((24, 16), LANCZOS))


def test_repeated_scale_rule(registry):
    img = random_image(16, 16, seed=5)
    model = registry.load(registry.find("2x_tiny"))
    p1 = upscale_pil_patch(model, img)
    p2 = upscale_pil_patch(model, p1)
    p3 = upscale_pil_patch(model, p2)
    # x4 with a 2x model: two passes, exactly 64
    assert same(registry.upscale(img, "2x_tiny", scale=4, settings=UNTILED), p2)
    # x16: at most three passes (128), then Lanczos up to 256
    assert same(registry.upscale(img, "2x_tiny", scale=16, settings=UNTILED), p3.resize((256, 256), LANCZOS))


class Counting:
    """A model wrapper counting the tiles it is given."""

    def __init__(self, model):
        self.model = model.model
        self.inner = model
        self.calls = 0

    def __call__(self, t):
        self.calls += 1
        return self.inner(t)


def test_tiled_equals_untiled_within_tolerance(registry):
    img = random_image(48, 48)
    model = Counting(registry.load(registry.find("4x_tiny")))
    whole = np.asarray(upscale_with_model(model, img, tile_size=0)).astype(int)
    model.calls = 0
    tiled = np.asarray(upscale_with_model(model, img, tile_size=24, tile_overlap=8)).astype(int)
    assert model.calls == 9  # ceil((48 - 8) / (24 - 8)) = 3 columns and 3 rows
    diff = np.abs(whole - tiled)
    # Tiles see less context at their edges (A1111's tiling has the same property); the seams are blended.
    assert diff.mean() < 2.5 and np.percentile(diff, 99) < 30
    assert diff.max() > 0  # they were tiled
    # the settings path: ESRGAN_tile / ESRGAN_tile_overlap
    via_settings = registry.upscale(img, "4x_tiny", scale=4, settings={"ESRGAN_tile": 24, "ESRGAN_tile_overlap": 8})
    assert np.array_equal(np.asarray(via_settings), tiled)
    # a tile as large as the image is no tiling at all
    assert np.array_equal(np.asarray(upscale_with_model(model, img, tile_size=48, tile_overlap=8)), whole)


def test_tile_grid_reassembles_exactly():
    """split_grid/combine_grid with per-pixel 'models': identity and 2x nearest give back exact results."""
    img = random_image(70, 50, seed=3)
    assert same(upscale_with_model(lambda t: t, img, tile_size=24, tile_overlap=8), img)
    nearest2x = upscale_with_model(lambda t: F.interpolate(t, scale_factor=2, mode="nearest"), img, tile_size=24,
                                   tile_overlap=8)
    assert same(nearest2x, img.resize((140, 100), NEAREST))
    grid = split_grid(img, 24, 24, 8)
    assert [y for y, _, _ in grid.tiles] == [0, 13, 26]  # rows spread evenly, the last one ending at the edge
    assert [x for x, _, _ in grid.tiles[0][2]] == [0, 15, 30, 46]


# -- extras ----------------------------------------------------------------------------------------------------------


def extras(registry, restorers, opts, tmp_path=None, settings=None, **kw):
    return run_extras(kw.pop("mode", EXTRAS_SINGLE), opts, upscalers=registry, restorers=restorers,
                      settings=settings, data_dir=str(tmp_path or "."), save_output=tmp_path is not None, **kw)


def test_extras_single_two_upscalers_blended(registry, restorers):
    img = random_image()
    opts = ExtrasOptions(upscaling_resize=2, upscaler_1="Lanczos", upscaler_2="Nearest",
                         extras_upscaler_2_visibility=0.3)
    result = extras(registry, restorers, opts, image=img)
    expected = Image.blend(img.resize((128, 128), LANCZOS), img.resize((128, 128), NEAREST), 0.3)
    assert same(result.images[0], expected)
    assert result.infotext == ("Postprocess upscale by: 2, Postprocess upscaler: Lanczos, "
                               "Postprocess upscaler 2: Nearest")
    assert result.html_info == f"<p>{result.infotext}</p>"
    assert result.images[0].info == {"postprocessing": result.infotext}


def test_extras_model_upscaler_blended_with_lanczos(registry, restorers):
    img = random_image(32, 32)
    model = registry.load(registry.find("4x_tiny"))
    opts = ExtrasOptions(upscaling_resize=2, upscaler_1="4x_tiny", upscaler_2="Lanczos",
                         extras_upscaler_2_visibility=0.5)
    result = extras(registry, restorers, opts, image=img, settings=Settings(values={"ESRGAN_tile": 0}))
    first = upscale_pil_patch(model, img).resize((64, 64), LANCZOS)
    assert same(result.images[0], Image.blend(first, img.resize((64, 64), LANCZOS), 0.5))
    assert result.infotext == ("Postprocess upscale by: 2, Postprocess upscaler: 4x_tiny, "
                               "Postprocess upscaler 2: Lanczos")


def test_second_upscaler_at_zero_visibility_is_not_used(registry, restorers):
    img = random_image()
    result = extras(registry, restorers, ExtrasOptions(upscaler_1="Lanczos", upscaler_2="Nearest"), image=img)
    assert same(result.images[0], img.resize((128, 128), LANCZOS))
    assert result.infotext == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"


def test_scale_to_with_crop(registry, restorers):
    img = random_image()
    opts = ExtrasOptions(resize_mode=1, upscaling_resize_w=100, upscaling_resize_h=80, upscaler_1="Lanczos")
    result = extras(registry, restorers, opts, image=img)
    out = np.asarray(result.images[0])
    assert result.images[0].size == (100, 80)
    assert result.infotext == ("Postprocess upscale to: 100x80, Postprocess crop to: 100x80, "
                               "Postprocess upscaler: Lanczos")
    # factor max(100/64, 80/64) -> a 96x96 upscale (multiple of 8), centred on a black 100x80 canvas at (2, -8)
    up = np.asarray(img.resize((int(64 * 1.5625),) * 2, LANCZOS).resize((96, 96), LANCZOS))
    assert (out[:, :2] == 0).all() and (out[:, 98:] == 0).all()
    assert np.array_equal(out[:, 2:98], up[8:88])


def test_scale_to_without_crop_keeps_aspect(registry, restorers):
    opts = ExtrasOptions(resize_mode=1, upscaling_resize_w=128, upscaling_resize_h=80, upscaling_crop=False,
                         upscaler_1="Lanczos")
    result = extras(registry, restorers, opts, image=random_image())
    assert result.images[0].size == (128, 128)
    assert result.infotext == "Postprocess upscale to: 128x80, Postprocess upscaler: Lanczos"


def test_max_side_length(registry, restorers):
    assert limit_size_by_one_dimention(256, 128, 128) == (128, 64)
    opts = ExtrasOptions(upscaling_resize=4, max_side_length=128, upscaler_1="Lanczos")
    result = extras(registry, restorers, opts, image=random_image(64, 32))
    assert result.images[0].size == (128, 64)
    assert result.infotext == "Postprocess upscale by: 4, Max side length: 128, Postprocess upscaler: Lanczos"


def test_infotext_format():
    info = {"Postprocess upscale by": 2.5, "Postprocess upscaler": "4x, sharp: v2", "Same": "Same", "Skipped": None}
    assert postprocessing_infotext(info) == 'Postprocess upscale by: 2.5, Postprocess upscaler: "4x, sharp: v2", Same'
    assert plaintext_to_html("a <b>\nc") == "<p>a &lt;b&gt;<br>\nc</p>"


def test_operation_order_option():
    # Caption and Split oversized images share order 4000: A1111 then sorts by name
    training = ["Caption", "Split oversized images", "Auto focal point crop", "Auto-sized crop",
                "Create flipped copies"]
    assert operation_order() == ["Upscale", "GFPGAN", "CodeFormer", *training]
    assert operation_order({"postprocessing_operation_order": ["CodeFormer", "Upscale"]}) == [
        "CodeFormer", "Upscale", "GFPGAN", *training]


def test_nothing_to_do_keeps_the_image_and_its_chunks(registry, restorers):
    img = random_image()
    img.info["parameters"] = "a cat\nSteps: 20, Seed: 1"
    result = extras(registry, restorers, ExtrasOptions(), image=img)
    assert same(result.images[0], img) and result.images[0] is not img
    assert result.html_info == "<p></p>"
    assert result.images[0].info == {"parameters": "a cat\nSteps: 20, Seed: 1", "postprocessing": ""}
    assert img.info == {"parameters": "a cat\nSteps: 20, Seed: 1"}  # the input is untouched


def test_unknown_upscaler_in_extras(registry, restorers):
    with pytest.raises(UpscalerNotFound, match="could not find upscaler named nope"):
        extras(registry, restorers, ExtrasOptions(upscaler_1="Lanczos", upscaler_2="nope"), image=random_image())


def test_rgba_input_stays_rgba_with_lanczos(registry, restorers):
    result = extras(registry, restorers, ExtrasOptions(upscaler_1="Lanczos"), image=random_image(mode="RGBA"))
    assert result.images[0].mode == "RGBA" and result.images[0].size == (128, 128)


# -- saving ----------------------------------------------------------------------------------------------------------


def png_with_parameters(text: str) -> Image.Image:
    import io

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    buf = io.BytesIO()
    random_image().save(buf, "PNG", pnginfo=info)
    buf.seek(0)
    return Image.open(buf)


def test_single_image_saved_with_a1111_names_and_chunks(registry, restorers, tmp_path):
    img = png_with_parameters("a dog\nSteps: 20")
    opts = ExtrasOptions(upscaler_1="Lanczos")
    first = extras(registry, restorers, opts, tmp_path, image=img)
    second = extras(registry, restorers, opts, tmp_path, image=img)
    outdir = tmp_path / "outputs" / "extras-images"
    assert first.saved == [str(outdir / "00000.png")] and second.saved == [str(outdir / "00001.png")]
    with Image.open(first.saved[0]) as saved:
        assert saved.size == (128, 128)
        assert saved.text == {"parameters": "a dog\nSteps: 20",
                              "postprocessing": "Postprocess upscale by: 2, Postprocess upscaler: Lanczos",
                              "extras": "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"}


def test_batch_uses_original_names_and_jpeg_exif(registry, restorers, tmp_path):
    settings = Settings(values={"samples_format": "jpg"})
    images = [(random_image(seed=1), "holiday.png"), (random_image(seed=2), None)]
    result = extras(registry, restorers, ExtrasOptions(upscaler_1="Nearest"), tmp_path, settings=settings,
                    mode=EXTRAS_BATCH, image_folder=images)
    outdir = tmp_path / "outputs" / "extras-images"
    assert result.saved == [str(outdir / "holiday.jpg"), str(outdir / "00000.jpg")]
    with Image.open(result.saved[0]) as saved:
        text, _ = read_info_from_image(saved)
    assert text == "Postprocess upscale by: 2, Postprocess upscaler: Nearest"
    numbered = extras(registry, restorers, ExtrasOptions(upscaler_1="Nearest"), tmp_path,
                      settings=Settings(values={"use_original_name_batch": False}), mode=EXTRAS_BATCH,
                      image_folder=images[:1])
    assert numbered.saved == [str(outdir / "00001.png")]


def test_directory_mode(registry, restorers, tmp_path):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    random_image(seed=1).save(src / "b.png")
    random_image(seed=2).save(src / "a.png")
    (src / "notes.txt").write_text("not an image: skipped")
    opts = ExtrasOptions(upscaler_1="Lanczos", show_extras_results=False)
    result = extras(registry, restorers, opts, tmp_path, mode=EXTRAS_DIRECTORY, input_dir=str(src),
                    output_dir=str(dst))
    assert result.images == []  # show_extras_results off
    assert sorted(os.listdir(dst)) == ["a.png", "b.png"]
    with Image.open(dst / "a.png") as a:
        assert a.size == (128, 128)
    with pytest.raises(ExtrasInputError, match="hide-ui-dir-config"):
        extras(registry, restorers, opts, tmp_path, mode=EXTRAS_DIRECTORY, input_dir=str(src),
               hide_ui_dir_config=True)
    with pytest.raises(ExtrasInputError, match="input directory not selected"):
        extras(registry, restorers, opts, tmp_path, mode=EXTRAS_DIRECTORY)


# -- face restoration through extras ---------------------------------------------------------------------------------


def test_face_restore_without_models_is_a_clear_error(registry, restorers):
    with pytest.raises(FaceRestoreUnavailable) as e:
        extras(registry, restorers, ExtrasOptions(gfpgan_visibility=0.5), image=random_image())
    message = str(e.value)
    assert restorers.folders.gfpgan in message and "GFPGANv1.4.pth" in message
    assert "detection_Resnet50_Final.pth" in message and "parsing_parsenet.pth" in message
    with pytest.raises(FaceRestoreUnavailable, match="CodeFormer: no model file in .*Codeformer"):
        extras(registry, restorers, ExtrasOptions(codeformer_visibility=1.0), image=random_image())


# -- the API handlers ------------------------------------------------------------------------------------------------


@pytest.fixture
def client(registry, restorers, tmp_path):
    from types import SimpleNamespace

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from webui.api.errors import install_error_handlers
    from webui.api.handlers import extras as handlers
    from webui.core.queue import JobQueue

    app = FastAPI()
    install_error_handlers(app)
    for path, method, handler, model in handlers.ROUTE_ROWS:
        app.router.add_api_route(path, handler, methods=[method], response_model=model)
    queue = JobQueue()
    app.state.webui = SimpleNamespace(settings=Settings(values={"ESRGAN_tile": 0}), queue=queue,
                                      config=SimpleNamespace(data_dir=str(tmp_path)), upscalers=registry,
                                      face_restorers=restorers)
    with TestClient(app) as c:
        yield c
    queue.stop() if hasattr(queue, "stop") else None


def b64(image: Image.Image) -> str:
    from webui.core.io.images import encode_base64

    return encode_base64(image, "png")


def test_api_extra_single_image(client):
    from webui.core.io.images import decode_base64_image

    img = random_image()
    r = client.post("/sdapi/v1/extra-single-image", json={"image": b64(img), "upscaler_1": "Lanczos"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["html_info"] == "<p>Postprocess upscale by: 2, Postprocess upscaler: Lanczos</p>"
    out = decode_base64_image(body["image"])
    assert same(out, img.resize((128, 128), LANCZOS))
    assert out.info["postprocessing"] == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"


def test_api_extra_batch_images(client):
    images = [random_image(16, 16, seed=1), random_image(24, 16, seed=2)]
    r = client.post("/sdapi/v1/extra-batch-images", json={
        "imageList": [{"data": b64(im), "name": f"{i}.png"} for i, im in enumerate(images)],
        "upscaler_1": "4x_tiny", "upscaling_resize": 4})
    assert r.status_code == 200, r.text
    from webui.core.io.images import decode_base64_image

    assert [decode_base64_image(x).size for x in r.json()["images"]] == [(64, 64), (96, 64)]
    # a JSON 4 for a float field is 4.0, as in A1111 (pydantic v1 coerces it too; only the default stays 2)
    assert r.json()["html_info"] == "<p>Postprocess upscale by: 4.0, Postprocess upscaler: 4x_tiny</p>"


def test_api_errors(client):
    img = b64(random_image())
    r = client.post("/sdapi/v1/extra-single-image", json={"image": img, "upscaler_1": "nope"})
    assert r.status_code == 400
    assert r.json()["errors"] == "could not find upscaler named nope" and "Lanczos" in r.json()["detail"]
    r = client.post("/sdapi/v1/extra-single-image", json={"image": img, "gfpgan_visibility": 1})
    assert r.status_code == 400 and "GFPGANv1.4.pth" in r.json()["detail"]
    r = client.post("/sdapi/v1/extra-single-image", json={"image": img, "gfpgan_visibility": 2})
    assert r.status_code == 422  # 0 <= visibility <= 1
    r = client.post("/sdapi/v1/extra-single-image", json={"image": img, "resize_mode": 2})
    assert r.status_code == 422
    r = client.post("/sdapi/v1/extra-batch-images", json={"upscaler_1": "Lanczos"})
    assert r.status_code == 422  # imageList is required


def test_api_listings(client, registry):
    assert client.get("/sdapi/v1/upscalers").json() == registry.api_list()
    assert client.get("/sdapi/v1/face-restorers").json() == [{"name": "CodeFormer", "cmd_dir": None},
                                                            {"name": "GFPGAN", "cmd_dir": None}]
    items = client.get("/sdapi/v1/realesrgan-models").json()
    assert len(items) == 6
    assert items[-1] == {"name": "R-ESRGAN 2x+", "scale": 2, "path": realesrgan_models_api()[-1]["path"]}
